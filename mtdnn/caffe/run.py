"""Running Caffe's command-line tool: where it is, `caffe train` with a log and a progress bar,
`caffe time`, and the variables that fix its BLAS threads."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .log import parse_caffe_time


class TrainError(RuntimeError):
    """Training cannot go on because of its input or settings; the message says why and what
    to do (tools exit with status 2)."""


class TrainStopped(TrainError):
    """`caffe train` failed or was interrupted: the run stopped (tools exit with status 1);
    rerunning the same command continues from the last good snapshot."""


class CaffeTimeFailed(RuntimeError):
    """`caffe time` exited with an error or printed no averages; ``rc`` and ``log`` say how."""

    def __init__(self, model, rc: int, log: str):
        super().__init__(f"caffe time failed on {model}:\n{log[-3000:]}")
        self.rc, self.log = rc, log


def caffe_binary(explicit: str | None = None) -> str:
    """``explicit``, else the `caffe` beside this Python (the venv's), else the one on PATH."""
    if explicit:
        return explicit
    here = Path(sys.executable).parent / "caffe"
    found = str(here) if here.is_file() else shutil.which("caffe")
    if not found:
        raise TrainError("no caffe binary beside this Python or on PATH: run `make setup`, or pass --caffe")
    return found


def blas_threads_env(threads: int) -> dict[str, str]:
    """The variables that fix a process's BLAS thread count (OpenBLAS, OpenMP builds, MKL):
    Caffe's reductions add in an order that depends on it, so its results do too."""
    return {v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def caffe_time(model, iterations: int, *, gpu: int | None = None, env: dict | None = None,
               binary: str = "caffe", timeout: float | None = None) -> tuple[float, float]:
    """Average forward and backward milliseconds of `caffe time -model MODEL` (on GPU ``gpu``,
    else the CPU) in the environment ``env`` (default this process's) with Caffe's log on;
    :class:`CaffeTimeFailed` when it fails or times out (rc 124)."""
    cmd = [binary, "time", "-model", str(model), "-iterations", str(iterations)]
    if gpu is not None:
        cmd += ["-gpu", str(gpu)]
    env = {**(os.environ if env is None else env), "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CaffeTimeFailed(model, 124, f"timed out after {timeout} s") from None
    log = out.stdout + out.stderr
    try:
        if out.returncode == 0:
            return parse_caffe_time(log)
    except ValueError:
        pass
    raise CaffeTimeFailed(model, out.returncode, log)


_ITERATION = re.compile(r"Iteration (\d+) .*?loss = ([-+\w.]+)")


def run_caffe(cmd: list[str], cwd: Path, log_path: Path, phase, start_iter: int,
              threads: int | None = None, progress: bool = True, on_line=None) -> tuple[int, str]:
    """Run `caffe train` for ``phase`` (a :class:`~.snapshots.Phase`), appending its stderr to
    ``log_path`` and drawing a progress bar of the iterations; returns (exit status, the text it
    wrote this time). SIGINT/SIGTERM/SIGHUP are passed on to Caffe, which snapshots and stops
    (``-sigint_effect stop``)."""
    from tqdm import tqdm
    env = {**os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"}
    if threads:
        env.update(blas_threads_env(threads))
    written = []
    with open(log_path, "a") as logf, tqdm(total=phase.max_iter, initial=start_iter, unit="it",
                                           desc=phase.name, dynamic_ncols=True, disable=not progress,
                                           file=sys.stdout) as bar:
        logf.write(f"### tools/train.py {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)} (cwd {cwd})\n")
        logf.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, errors="replace", preexec_fn=_die_with_parent)
        previous = _forward_signals(proc)
        try:
            for line in proc.stdout:
                logf.write(line)
                written.append(line)
                if on_line is not None:
                    on_line(line)
                if m := _ITERATION.search(line):
                    bar.update(max(0, int(m[1]) - bar.n))
                    bar.set_postfix(loss=m[2])
            rc = proc.wait()
            if rc == 0 and phase.final_weights.is_file():
                bar.update(phase.max_iter - bar.n)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return rc, "".join(written)


def _forward_signals(proc) -> dict:
    """Pass SIGINT, SIGTERM and SIGHUP on to ``proc`` as SIGINT (Caffe snapshots and stops);
    returns the handlers they replaced (none off the main thread)."""
    previous = {}

    def forward(signum, frame):
        proc.send_signal(signal.SIGINT)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread
            pass
    return previous


def _die_with_parent() -> None:
    """In the child: be killed when train.py dies (even by SIGKILL), so that no orphaned
    Caffe keeps writing snapshots while a rerun starts another one."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def failure_reason(rc: int) -> str:
    """What a nonzero exit status of `caffe train` says, in words."""
    if rc in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGHUP, 130, 143):
        return "was interrupted"
    if rc < 0:
        return f"failed (killed by {signal.Signals(-rc).name})"
    return f"failed (exit status {rc})"


def timing_net(train_val: Path, batch: int, out: Path, *, dropout: bool = True) -> Path:
    """``train_val``'s TRAIN net with Input blobs for its data (``batch`` images of 3 x 112 x 96,
    labels, the paper's attributes), as `caffe time` or a forward + backward without data needs;
    ``dropout=False`` leaves its Dropout layers out. Written to ``out``, returned."""
    from ..paper import PAPER_ATTRIBUTES
    from ..prototxt import read_net, with_input_layers, write_prototxt
    net = with_input_layers(read_net(train_val), "TRAIN",
                            {"data": (batch, 3, 112, 96), "label": (batch,),
                             "attributes": (batch, len(PAPER_ATTRIBUTES))})
    if not dropout:
        for i in reversed(range(len(net.layer))):
            if net.layer[i].type == "Dropout":
                del net.layer[i]
    return write_prototxt(net, out)
