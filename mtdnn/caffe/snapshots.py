"""A training run's phases and their snapshot pairs, and the fingerprints that tell whether
snapshots fit a net and a solver.

A *phase* is one `caffe train` of a solver (pre-training, fine-tuning); its snapshots are pairs
PREFIX_iter_N.caffemodel + .solverstate beside the solver. :func:`latest_good_snapshot` is the
newest whole pair (:func:`snapshot_problem`: Caffe writes the weights first and fsyncs neither,
so a kill or power cut can leave either cut short); a damaged pair is set aside as
``*.damaged`` (:func:`set_aside`), never deleted. :func:`net_fingerprint` and
:func:`solver_fingerprint` are sha256 of the parsed prototxt without what does not change the
learning (data sources, batch sizes, the schedule's length, log and snapshot intervals).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

PHASES = ("pretrain", "finetune")


@dataclass
class Phase:
    name: str
    solver: Path        # in the run folder
    net: Path           # the solver's net, in the run folder
    max_iter: int
    prefix: str         # snapshot prefix, relative to the run folder
    snapshot: int       # snapshot interval (0: none)

    @property
    def final_weights(self) -> Path:
        return self.solver.parent / f"{self.prefix}_iter_{self.max_iter}.caffemodel"

    @property
    def log(self) -> Path:
        return self.solver.parent / f"{self.name}.log"

    def snapshots(self) -> list[tuple[int, Path]]:
        """(iteration, .solverstate) of this phase, newest first."""
        pattern = re.compile(re.escape(Path(self.prefix).name) + r"_iter_(\d+)\.solverstate$")
        found = []
        folder = (self.solver.parent / self.prefix).parent
        for p in folder.glob(f"{Path(self.prefix).name}_iter_*.solverstate"):
            if m := pattern.match(p.name):
                found.append((int(m[1]), p))
        return sorted(found, reverse=True)

    def weights(self) -> list[Path]:
        folder = (self.solver.parent / self.prefix).parent
        return sorted(folder.glob(f"{Path(self.prefix).name}_iter_*.caffemodel"))


def read_phases(run_dir: Path, names=PHASES) -> list[Phase]:
    """The phases of a run folder, from its solver_<name>.prototxt files."""
    from ..prototxt import read_solver
    phases = []
    for name in names:
        solver = run_dir / f"solver_{name}.prototxt"
        s = read_solver(solver)
        net = Path(s.net)
        phases.append(Phase(name, solver, net if net.is_absolute() else run_dir / net, int(s.max_iter),
                            s.snapshot_prefix, int(s.snapshot)))
    return phases


FINGERPRINT_VERSION = 3  # 1: line-based (missed fields that share a line); 2: parsed prototxt;
#                         3: without the net's name (the run folder's name: a renamed folder is the same net)


def _legacy_fingerprint(text: str, left_out: tuple) -> str:
    """Version 1: sha256 of a prototxt's lines without comments, blank lines and the lines whose
    key is in ``left_out`` (kept to recognise run folders recorded with it)."""
    kept = [line for line in (raw.split("#", 1)[0].strip() for raw in text.splitlines())
            if line and line.split(":", 1)[0].strip() not in left_out]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()


def _message_fingerprint(message) -> str:
    from google.protobuf import text_format
    return hashlib.sha256(text_format.MessageToString(message).encode()).hexdigest()


# per-layer data parameters whose source and batch size are not part of the net
DATA_PARAMS = ("data_param", "hdf5_data_param", "image_data_param", "window_data_param")


def net_fingerprint(text: str, keep_name: bool = False) -> str:
    """sha256 of a net prototxt parsed as Caffe does (caffe_pb2 text format: comments and
    layout do not count) without its name (the run folder's), data sources and batch sizes: two
    nets with the same fingerprint have the same layers and parameters, so their snapshots are
    interchangeable (the folder may be renamed, the data may have moved, the batch may differ).
    ``keep_name``: version 2's fingerprint, which kept the name."""
    from google.protobuf import text_format

    from caffe.proto import caffe_pb2
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    if not keep_name:
        net.ClearField("name")
    for layer in net.layer:
        for field in DATA_PARAMS:
            if layer.HasField(field):
                getattr(layer, field).ClearField("source")
                getattr(layer, field).ClearField("batch_size")
    return _message_fingerprint(net)


# solver fields left out of its fingerprint: what is logged or saved, and the schedule's length
# (a longer or shorter schedule continues from the last snapshot; a finished phase of another
# length is not finished, see phase_done)
SOLVER_FREE = ("net", "train_net", "test_iter", "test_interval", "test_initialization", "display", "average_loss",
               "snapshot", "snapshot_prefix", "snapshot_format", "snapshot_after_train", "solver_mode", "device_id",
               "max_iter", "stepvalue", "stepsize")


def solver_fingerprint(text: str) -> str:
    """sha256 of a parsed solver prototxt without the SOLVER_FREE fields: two solvers with the
    same fingerprint learn alike (same learning rates, momentum, decay, seed, ...)."""
    from google.protobuf import text_format

    from caffe.proto import caffe_pb2
    solver = text_format.Parse(text, caffe_pb2.SolverParameter())
    for field in SOLVER_FREE:
        solver.ClearField(field)
    return _message_fingerprint(solver)


FINGERPRINTS = {"nets": (net_fingerprint, ("source", "batch_size")), "solvers": (solver_fingerprint, SOLVER_FREE)}


def recorded_fingerprint(state: dict, kind: str, name: str, old_file: Path) -> str | None:
    """The fingerprint (of the current version) of what made a phase's snapshots: from
    run.json, or for a run recorded with version 1, from the file it rendered then (still in
    the run folder), when that file's version-1 fingerprint is the recorded one."""
    recorded = state.get(kind, {}).get(name)
    if state.get("fingerprint_version") == FINGERPRINT_VERSION or recorded is None:
        return recorded
    if state.get("fingerprint_version") == 2:  # the same parse, with the net's name
        if kind == "solvers":
            return recorded
        if old_file.is_file() and net_fingerprint(old_file.read_text(), keep_name=True) == recorded:
            return net_fingerprint(old_file.read_text())
        return recorded
    fingerprint, left_out = FINGERPRINTS[kind]
    if old_file.is_file() and _legacy_fingerprint(old_file.read_text(), left_out) == recorded:
        return fingerprint(old_file.read_text())
    return recorded


def weights_problem(weights: Path, solverstate=None) -> str | None:
    """Why a .caffemodel cannot be used (None: it can): it does not parse, a blob holds fewer
    values than its shape (a file cut short), or its blobs are not those that the
    .solverstate's history (one blob per learned parameter, in order) says."""
    from ..weights import WeightsError, blob_dims, incomplete_blob, parse_weights, weights_layers
    if not weights.is_file():
        return "missing"
    try:
        net = parse_weights(weights)
    except WeightsError as e:
        return str(e).removeprefix(f"{weights}: ")
    problem = incomplete_blob(net)
    if problem:
        return problem
    shapes = [blob_dims(b) for blobs in weights_layers(net).values() for b in blobs]
    if solverstate is not None and not len(solverstate.history):  # Caffe's SGD restores one per parameter
        return (f"holds {len(shapes)} parameter blobs, its .solverstate no history blobs (cut short, or not "
                f"written by Caffe's SGD solver): Caffe would abort on resuming it")
    if solverstate is not None:
        history = [blob_dims(h) for h in solverstate.history]
        if len(history) % len(shapes) or history != shapes * (len(history) // len(shapes)):  # SGD 1x, Adam 2x
            return (f"holds {len(shapes)} parameter blobs, its .solverstate {len(history)} history blobs "
                    f"of other shapes (cut short, or of another net)")
    return None


def snapshot_problem(phase: Phase, it: int, path: Path) -> str | None:
    """Why the snapshot pair of iteration ``it`` (``path``: its .solverstate) cannot be resumed
    from: the .solverstate does not parse or is of another iteration, it names another
    .caffemodel, or that .caffemodel is damaged (:func:`weights_problem`). Caffe writes the
    weights first and neither file is fsync'ed, so a power cut can leave either cut short."""
    from caffe.proto import caffe_pb2
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
        return f"{path.name} is damaged ({type(e).__name__})"
    expected = f"{Path(phase.prefix).name}_iter_{it}.caffemodel"
    if state.iter != it or Path(state.learned_net).name != expected:
        return f"{path.name} is damaged (it says iteration {state.iter}, weights {state.learned_net!r})"
    weights = path.with_name(expected)
    problem = weights_problem(weights, state)
    return f"{weights.name} {problem}" if problem else None


def set_aside(paths, log=print) -> list[Path]:
    """Rename damaged snapshot files to ``<name>.damaged`` (``.damaged2``, ... when that exists;
    kept for inspection, never deleted);
    returns the new paths."""
    moved = []
    for p in paths:
        if p.is_file():
            target, n = p.with_name(p.name + ".damaged"), 1
            while target.exists():  # an earlier damaged copy is kept too
                n += 1
                target = p.with_name(f"{p.name}.damaged{n}")
            os.replace(p, target)
            moved.append(target)
    if moved:
        log(f"  set aside: {', '.join(m.name for m in moved)} (delete them when you no longer need them)")
    return moved


def snapshot_pair(phase: Phase, it: int) -> list[Path]:
    folder = (phase.solver.parent / phase.prefix).parent
    stem = f"{Path(phase.prefix).name}_iter_{it}"
    return [folder / f"{stem}.caffemodel", folder / f"{stem}.solverstate"]


def latest_good_snapshot(phase: Phase, log=print) -> tuple[int, Path] | None:
    """The newest snapshot pair that is whole (:func:`snapshot_problem`); a damaged newer pair
    (a kill or power cut while Caffe wrote it) is named and set aside, and the one before is
    tried."""
    for it, path in phase.snapshots():
        problem = snapshot_problem(phase, it, path)
        if problem is None:
            return it, path
        log(f"  {problem}: skipped; the snapshot before it is used")
        set_aside(snapshot_pair(phase, it), log)
    return None


def snapshot_bytes(net: Path) -> int:
    """Bytes of one snapshot pair (.caffemodel + SGD .solverstate) of ``net``: 4 bytes per
    learned value and BatchNorm statistic, plus the same again for the momentum history."""
    from .netstats import summarize
    stats = summarize(net)
    return 4 * (2 * stats.total_params + stats.total_stats) + 64 * 1024


def snapshot_files(run_dir: Path) -> list[Path]:
    """Every snapshot file of a run folder (both phases, any iteration)."""
    return sorted(p for pat in ("*.solverstate", "*_iter_*.caffemodel") for p in run_dir.glob(pat))
