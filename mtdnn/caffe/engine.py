"""The seam where a training engine plugs into mtdnn.train.

mtdnn.train owns the run folder: the database, rendering the nets (mtdnn.netgen), run.json,
the lock, the disk-space check, which phases are finished and where each one continues. What
it asks of the engine that trains is :class:`TrainingEngine`: check the devices, say the
command of one phase, run it (log, progress, Ctrl-C) and say why it failed. :class:`CaffeEngine`
is the only engine; another one (say a PyTorch trainer of the same nets) would implement these
four methods and also read the solver files and write snapshot pairs that mtdnn.caffe.snapshots
understands, or bring its own equivalents of Phase and latest_good_snapshot.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Protocol

from .cuda import binary_has_cuda
from .log import caffe_errors
from .run import TrainError, caffe_binary, run_caffe
from .snapshots import Phase

GPU_LIST = re.compile(r"(all|\d+(,\d+)*)")


class TrainingEngine(Protocol):
    """What mtdnn.train.train needs from the engine that runs the phases of a run folder."""

    def check(self, gpus: str | None) -> None:
        """Raise TrainError (bad input) when ``gpus`` ("0", "0,1", "all"; None: the CPU) cannot
        be used by this engine here."""

    def command(self, phase: Phase, *, snapshot: Path | None, weights: Path | None,
                gpus: str | None) -> list[str]:
        """The command that trains ``phase`` in the run folder (its working directory): from
        ``snapshot`` (continue), from ``weights`` (initialise), or from scratch."""

    def run(self, cmd: list[str], phase: Phase, run_dir: Path, *, start: int, threads: int | None,
            progress: bool, on_line: Callable[[str], None] | None) -> tuple[int, str]:
        """Run ``cmd``, appending its log to ``phase.log``; returns (exit status, this run's log)."""

    def errors(self, log_text: str) -> str:
        """The lines of a failed run's log that say why."""


class CaffeEngine:
    """`caffe train` of the binary ``binary`` (default: :func:`~.run.caffe_binary`)."""

    def __init__(self, binary: str | None = None):
        self.binary = caffe_binary(binary)

    def check(self, gpus: str | None) -> None:
        if gpus is None:
            return
        if not GPU_LIST.fullmatch(gpus):
            raise TrainError(f"--gpus {gpus!r}: give GPU ids separated by commas (0 or 0,1) or 'all'")
        if binary_has_cuda(self.binary) is False:
            raise TrainError(f"--gpus {gpus}: {self.binary} was built without CUDA (CPU only); build the GPU "
                             f"one with `CAFFE_GPU=1 make setup` (README, GPU), or leave out --gpus to train "
                             f"on the CPU")

    def command(self, phase: Phase, *, snapshot: Path | None = None, weights: Path | None = None,
                gpus: str | None = None) -> list[str]:
        cmd = [self.binary, "train", "-solver", phase.solver.name]
        if snapshot is not None:
            cmd += ["-snapshot", snapshot.name]
        elif weights is not None:
            cmd += ["-weights", weights.name]
        if gpus is not None:
            cmd += ["-gpu", gpus]
        return cmd

    def run(self, cmd, phase, run_dir, *, start=0, threads=None, progress=True, on_line=None):
        return run_caffe(cmd, run_dir, phase.log, phase, start, threads, progress, on_line=on_line)

    def errors(self, log_text: str) -> str:
        return caffe_errors(log_text)
