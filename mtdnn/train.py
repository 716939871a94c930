"""Run folders for the paper's two-phase training (Sec. 4.4): checks, resume, logs.

``tools/train.py`` (``make train``) is the command line; this module does the work::

    from mtdnn.train import train
    train("runs/fast", "fast", "work/casia-db", overrides={"width": 0.25}, gpus="0,1")

A *run folder* (default ``runs/<model>``) holds everything of one training run:

    run.json                        the model, its options, the data, a fingerprint of each
                                    phase's net and solver, and which phases are finished
    train_val*.prototxt, deploy.prototxt, solver_{pretrain,finetune}.prototxt, readme.md
                                    rendered by mtdnn.netgen.render_model (paths relative to the
                                    run folder, the working directory of `caffe train`;
                                    the LMDB paths are absolute)
    train_attributes.h5.txt, test_attributes.h5.txt
                                    the HDF5Data list files, naming the database's .h5 files
                                    where the database is now (rewritten on every run)
    pretrain.log, finetune.log      the stderr of `caffe train` (appended to on resume)
    <phase>.train.csv, <phase>.test.csv, <phase>.png   the logs as tables and curves
    pretrain_iter_N.caffemodel/.solverstate, finetune_iter_N...   the snapshots
    model_card.json                 written when the run finishes: how to use the final weights
                                    (mtdnn.card, docs/model_card.md; the evaluators add to it)

Phases: pre-training (``solver_pretrain.prototxt``, lambda1 = 0), then fine-tuning
(``solver_finetune.prototxt``) from the last pre-training weights (``-weights``).
A phase whose final snapshot exists and which ``run.json`` records as finished is skipped;
a phase with ``.solverstate`` snapshots continues from the newest readable one
(``-snapshot``); a snapshot pair that is not whole (a kill or power cut while Caffe wrote it)
is named, set aside as ``*.damaged`` and the one before it is used. Before anything runs, the
rendered nets are fingerprinted (sha256 of the parsed prototxt without data sources and batch
sizes) and compared with the fingerprints recorded when the snapshots were made, and the
database with the one they were trained on (by content: its manifests' checksums, not its
path): a run folder whose snapshots come from other data or another net
(other model, width, identities, attributes, lambda, ...) or another solver (learning rates,
momentum, decay, seed, ...; not the schedule's length, nor the display, snapshot and test
intervals) is refused, and nothing in it is touched: a finished run is never passed off as
one of other settings. Bad input (no model of that name, a missing or inconsistent database, too little
free disk space, another train.py on the same folder, a Caffe failure, an interruption)
raises :class:`TrainError` whose message says what to do; rerunning the same command
continues from the last good state.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .paths import REPO

PHASES = ("pretrain", "finetune")
STATE_FILE = "run.json"
LOCK_FILE = ".train.lock"
# Space kept free beyond the snapshots' estimate (logs, plots, the file system's own needs).
DISK_MARGIN = 200 * 2**20


class TrainError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


# --------------------------------------------------------------------------- the database

@dataclass
class Database:
    """A tools/build_db.py folder: train/val LMDBs, HDF5 attribute lists, manifests."""
    root: Path
    train_lmdb: Path
    train_hdf5: Path | None     # the .h5 attribute files themselves (absolute)
    val_lmdb: Path | None
    val_hdf5: Path | None
    train_count: int
    val_count: int
    identities: int
    attribute_names: list
    key: dict | None = None     # what the data is, by content (see database_key)

    def render_params(self) -> dict:
        """The data parameters of mtdnn.netgen.render_model. The attribute files are given through
        the run folder's own HDF5Data list files (RUN_SOURCES, written by :func:`prepare` for
        the database's current place), so a copied or moved database is read where it is."""
        p = {"train_lmdb": self.train_lmdb, "test_lmdb": self.val_lmdb or self.train_lmdb,
             "identities": self.identities}
        if self.train_hdf5:
            p["train_hdf5"], p["test_hdf5"] = RUN_SOURCES
        return p

    def sources(self) -> dict[str, Path]:
        """``{run folder list file name: .h5 it names}``."""
        if not self.train_hdf5:
            return {}
        return dict(zip(RUN_SOURCES, (self.train_hdf5, self.val_hdf5 if self.val_lmdb else self.train_hdf5)))


# the HDF5Data list files train.py writes into the run folder (Caffe's working directory)
RUN_SOURCES = ("train_attributes.h5.txt", "test_attributes.h5.txt")


def database_key(manifests: dict) -> dict | None:
    """What a database holds, by content: per split the record order and attribute checksums
    of its manifest (None without manifests). The same key wherever the folder lives."""
    if not manifests:
        return None
    return {split: {"order_sha256": m.get("order_sha256"), "attributes_sha256": m.get("attributes_sha256")}
            for split, m in sorted(manifests.items())}


BUILD_HINT = ("build one with tools/align_faces.py, tools/build_db.py and tools/label_attributes.py "
              "(see docs/demo.md), or pass --data (make train DATA=...) pointing at a "
              "tools/build_db.py output folder")


def find_database(root) -> Database:
    """Read a tools/build_db.py output folder; TrainError naming what is missing."""
    from .db import lmdb_count
    from .manifest import ManifestError, database_problems
    root = Path(root).resolve()
    if not root.is_dir():
        raise TrainError(f"no training database at {root}: {BUILD_HINT}")
    try:
        problems = database_problems(root)
    except ManifestError as e:  # a staged folder, or one tools/build_db.py is writing
        raise TrainError(str(e)) from None
    if problems and (root / "train_manifest.json").is_file():
        raise TrainError(f"{problems[0]} (check it with tools/check_db.py {root})")
    manifests = {}
    for split in ("train", "val"):
        path = root / f"{split}_manifest.json"
        if path.is_file():
            try:
                manifests[split] = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise TrainError(f"{path} is not valid JSON ({e}): rebuild the database with "
                                 f"tools/build_db.py --force") from None
    # the LMDBs the manifests name (a labelled copy made with label_attributes.py --out names
    # the original database's)
    train_lmdb = root / manifests.get("train", {}).get("lmdb", "train_lmdb")
    if not (train_lmdb / "data.mdb").is_file():
        raise TrainError(f"{root} holds no train_lmdb/data.mdb, so it is not a training database: {BUILD_HINT}")
    train_count = lmdb_count(train_lmdb)
    if train_count == 0:
        raise TrainError(f"{train_lmdb} holds no records: {BUILD_HINT}")
    val_lmdb = root / manifests.get("val", {}).get("lmdb", "val_lmdb")
    val_count = lmdb_count(val_lmdb) if (val_lmdb / "data.mdb").is_file() else 0
    if "train" in manifests:
        m = manifests["train"]
        identities = int(m.get("num_identities") or len(m.get("identities", [])))
        names = list(m.get("attribute_names") or [])
        if int(m.get("count", train_count)) != train_count:
            raise TrainError(f"{train_lmdb} holds {train_count} records but its manifest says {m['count']}: "
                             f"the database is damaged; check it with tools/check_db.py {root} and rebuild it")
    else:  # no manifest: the labels tell the number of identities
        from .db import read_lmdb_index
        identities = 1 + max(label for _, label, _ in read_lmdb_index(train_lmdb))
        names = []
    hdf5 = {s: _attribute_file(root, s, manifests.get(s)) for s in ("train", "val")}
    if hdf5["train"] and val_count and not hdf5["val"]:
        raise TrainError(f"{root} has training attributes but no val_attributes.h5 for its {val_count} held-out "
                         f"images: the database is incomplete; check it with tools/check_db.py {root}")
    return Database(root=root, train_lmdb=train_lmdb, train_hdf5=hdf5["train"],
                    val_lmdb=val_lmdb if val_count else None, val_hdf5=hdf5["val"] if val_count else None,
                    train_count=train_count, val_count=val_count, identities=identities,
                    attribute_names=names, key=database_key(manifests))


def _attribute_file(root: Path, split: str, m: dict | None) -> Path | None:
    """The .h5 attribute file of a split: the one its manifest names, inside the database
    (never the target of an old absolute list file, which may be another database's)."""
    name = (m or {}).get("hdf5") or f"{split}_attributes.h5"
    path = root / name
    return path if path.is_file() else None


# --------------------------------------------------------------------------- phases and snapshots

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


def read_phases(run_dir: Path) -> list[Phase]:
    from .prototxt import read_solver
    phases = []
    for name in PHASES:
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
    from .weights import WeightsError, blob_dims, incomplete_blob, parse_weights, weights_layers
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


def _pair(phase: Phase, it: int) -> list[Path]:
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
        set_aside(_pair(phase, it), log)
    return None


# --------------------------------------------------------------------------- disk space

def snapshot_bytes(net: Path) -> int:
    """Bytes of one snapshot pair (.caffemodel + SGD .solverstate) of ``net``: 4 bytes per
    learned value and BatchNorm statistic, plus the same again for the momentum history."""
    from .netstats import summarize
    stats = summarize(net)
    return 4 * (2 * stats.total_params + stats.total_stats) + 64 * 1024


def needed_bytes(phases: list[Phase], start_iters: dict) -> int:
    total, cache = 0, {}
    for phase in phases:
        if phase.net not in cache:
            cache[phase.net] = snapshot_bytes(phase.net)
        left = phase.max_iter - start_iters.get(phase.name, 0)
        if left <= 0:
            continue
        count = (left // phase.snapshot if phase.snapshot else 0) + 1  # + the final one
        total += count * cache[phase.net]
    return total


def check_disk(run_dir: Path, need: int, reserve: int = 0) -> None:
    free = shutil.disk_usage(run_dir).free
    if free < need + reserve + DISK_MARGIN:
        raise TrainError(
            f"not enough disk space for the snapshots: {free / 2**30:.2f} GiB free on the file system of "
            f"{run_dir}, about {(need + reserve + DISK_MARGIN) / 2**30:.2f} GiB needed "
            f"({need / 2**30:.2f} GiB of snapshots, {DISK_MARGIN / 2**20:.0f} MiB margin"
            + (f", {reserve / 2**30:.2f} GiB --min-free" if reserve else "") +
            "). Free some space or choose a run folder on another disk (--run / RUN=), or snapshot "
            "less often (--snapshot); then rerun: finished snapshots are kept and reused")


# --------------------------------------------------------------------------- running caffe

def caffe_binary(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    here = Path(sys.executable).parent / "caffe"
    found = str(here) if here.is_file() else shutil.which("caffe")
    if not found:
        raise TrainError("no caffe binary beside this Python or on PATH: run `make setup`, or pass --caffe")
    return found


def binary_has_cuda(binary: str) -> bool | None:
    """Whether the caffe binary was built with CUDA: a CUDA build loads the CUDA runtime or
    cuBLAS (``ldd`` lists libcaffe's dependencies too); None when that cannot be told (no
    ``ldd``, a wrapper script)."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if "=>" not in out:
        return None
    return re.search(r"/lib(cudart|cublas)[^/\s]*\.so", out) is not None


_ERROR_LINE = re.compile(r"^(F\d{4} |E\d{4} )|Check failed|Error|error:|No space left|"
                         r"Aborted|what\(\)|Cannot |cannot |Failed|failed")


def caffe_errors(log_text: str, limit: int = 12) -> str:
    """The lines of a Caffe log that say why it failed (glog F/E lines, checks, errors)."""
    lines = [ln for ln in log_text.splitlines() if _ERROR_LINE.search(ln) and "Iteration" not in ln]
    if not lines:
        lines = log_text.splitlines()[-limit:]
    return "\n".join("    " + ln for ln in lines[-limit:])


def blas_threads_env(threads: int) -> dict[str, str]:
    """The variables that fix a process's BLAS thread count (OpenBLAS, OpenMP builds, MKL):
    Caffe's reductions add in an order that depends on it, so its results do too."""
    return {v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def run_caffe(cmd: list[str], cwd: Path, log_path: Path, phase: Phase, start_iter: int,
              threads: int | None = None, progress: bool = True, on_line=None) -> tuple[int, str]:
    """Run `caffe train`, appending its stderr to ``log_path`` and drawing a progress bar of
    the iterations; returns (exit status, the text it wrote this time). SIGINT/SIGTERM are
    passed on to Caffe, which snapshots and stops (``-sigint_effect stop``)."""
    from tqdm import tqdm
    env = {**os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"}
    if threads:
        env.update(blas_threads_env(threads))
    pattern = re.compile(r"Iteration (\d+) .*?loss = ([-+\w.]+)")
    written = []
    with open(log_path, "a") as logf, tqdm(total=phase.max_iter, initial=start_iter, unit="it",
                                           desc=phase.name, dynamic_ncols=True, disable=not progress,
                                           file=sys.stdout) as bar:
        header = (f"### tools/train.py {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)} (cwd {cwd})\n")
        logf.write(header)
        logf.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, errors="replace", preexec_fn=_die_with_parent)
        previous = {}

        def forward(signum, frame):  # let Caffe snapshot and stop, then report
            proc.send_signal(signal.SIGINT)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous[sig] = signal.signal(sig, forward)
            except ValueError:  # not the main thread
                pass
        try:
            for line in proc.stdout:
                logf.write(line)
                written.append(line)
                if on_line is not None:
                    on_line(line)
                if m := pattern.search(line):
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


def _die_with_parent() -> None:
    """In the child: be killed when train.py dies (even by SIGKILL), so that no orphaned
    Caffe keeps writing snapshots while a rerun starts another one."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def write_curves(phase: Phase) -> None:
    """<phase>.train.csv, <phase>.test.csv and <phase>.png beside the log (tools/plot_log.py)."""
    from .caffe_log import parse_caffe_log, plot_curves, write_csv
    if not phase.log.is_file():
        return
    log = parse_caffe_log(phase.log.read_text(errors="replace"))
    stem = phase.log.with_suffix("")
    write_csv(log.train, stem.with_suffix(".train.csv"))
    write_csv(log.test, stem.with_suffix(".test.csv"))
    if log.train:
        from .watch import phase_curve
        plot_curves(log, stem.with_suffix(".png"), title=f"{phase.log.parent.name}: {phase.name}",
                    verification=phase_curve(phase.log.parent, phase.name))


# --------------------------------------------------------------------------- the run

class RunLock:
    """An exclusive lock on a run folder, so that two train.py never write the same snapshots."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._held = None

    def __enter__(self):
        from .fileio import LockHeld, exclusive_lock
        held = exclusive_lock(self.path)
        try:
            held.__enter__()
        except LockHeld as e:
            raise TrainError(f"another tools/train.py is training in {self.path.parent} "
                             f"({e.holder}; it holds {self.path}); wait for it, or stop it first") from None
        self._held = held
        return self

    def __exit__(self, *exc):
        self._held.__exit__(None, None, None)


def _read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def _write_state(run_dir: Path, state: dict) -> None:
    from .fileio import atomic_write_text
    atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=1, default=str) + "\n")


def _snapshot_files(run_dir: Path) -> list[Path]:
    return sorted(p for pat in ("*.solverstate", "*_iter_*.caffemodel") for p in run_dir.glob(pat))


def _describe(opts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(opts.items()) if v is not None) or "(none)"


def _changes(state: dict, model: str, overrides: dict, database: Database) -> str:
    """What differs between the recorded run and the one asked for, in words."""
    old = {"model": state.get("model"), **state.get("overrides", {}), "identities": state.get("identities")}
    new = {"model": model, **{k: v for k, v in overrides.items() if v is not None}}
    new.setdefault("identities", database.identities)
    diff = [f"{k} {old.get(k, 'default')} -> {new.get(k, 'default')}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    return ("made with " + ", ".join(diff)) if diff else "the generator's templates changed since they were made"


def prepare(run_dir: Path, model: str, database: Database, overrides: dict, restart: bool,
            log=print) -> tuple[dict, list[Phase]]:
    """Render the model into ``run_dir`` after checking that the snapshots there (if any)
    come from the same nets; returns (state, phases)."""
    import tempfile

    from mtdnn.netgen import GenerateError, render_model
    params = {**database.render_params(), "test_images": database.val_count or database.train_count}
    given_ids = overrides.get("identities")
    if given_ids is not None and given_ids < database.identities:
        raise TrainError(f"--identities {given_ids} is smaller than the {database.identities} identities "
                         f"of {database.root}: labels would fall outside the classifier; leave it out "
                         f"(the database's count is used)")
    params.update({k: v for k, v in overrides.items() if v is not None})
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=run_dir))
    try:
        from .db import caffe_readable, write_source
        for name, h5 in database.sources().items():  # the run's own list files: the database as it is now
            # (a path with a space goes through a link in the run folder: Caffe reads the list word by word)
            write_source(staging / name, [caffe_readable(h5, staging / name.removesuffix(".txt"))])
        try:
            # the model is named after the run folder, whatever the staging folder's name
            render_model(staging, variant=model, name=params.pop("name", run_dir.resolve().name), **params)
        except GenerateError as e:
            hint = ""
            if "attributes of shape" in str(e):
                hint = (" (label a copy of the database with the model's attributes: "
                        "tools/label_attributes.py --attributes ... --out DIR, then --data DIR)")
            raise TrainError(f"cannot render model {model!r}: {e}{hint}") from None
        staged = read_phases(staging)
        fingerprints = {p.name: net_fingerprint(p.net.read_text()) for p in staged}
        solvers = {p.name: solver_fingerprint(p.solver.read_text()) for p in staged}

        state = _read_state(run_dir)
        existing = _snapshot_files(run_dir)
        # what made the snapshots, in this version's fingerprints (before the new files replace the old)
        old_nets = {p.name: recorded_fingerprint(state, "nets", p.name, run_dir / p.net.name) for p in staged}
        if existing and not restart:
            if not state.get("nets"):
                raise TrainError(
                    f"{run_dir} holds snapshots ({existing[0].name}, ...) but no {STATE_FILE} saying which net "
                    f"made them, so they cannot be resumed safely. Train into a new run folder "
                    f"(--run / RUN=runs/NAME), or pass --restart to delete them and start over")
            old_key = state.get("database_key")
            if old_key and database.key and old_key != database.key:
                raise TrainError(
                    f"{run_dir} holds snapshots ({existing[0].name}, ...) trained on other data than "
                    f"{database.root} holds (its manifests' record order or attribute checksums differ from "
                    f"the database recorded in {STATE_FILE}, {state.get('database')}). Nothing was changed. "
                    f"Train into a new run folder (--run / RUN=runs/NAME), or pass --restart to start over")
            for p in staged:
                has = [f for f in existing if f.name.startswith(Path(p.prefix).name + "_iter_")]
                # runs recorded before solvers were: the solver files beside their snapshots made them
                old_solver = (recorded_fingerprint(state, "solvers", p.name, run_dir / p.solver.name)
                              if state.get("solvers") else
                              solver_fingerprint((run_dir / p.solver.name).read_text())
                              if (run_dir / p.solver.name).is_file() else None)
                differs = ("of a different net" if old_nets[p.name] != fingerprints[p.name] else
                           "made with a different solver" if old_solver != solvers[p.name] else None)
                if has and differs:
                    raise TrainError(
                        f"{run_dir} holds {p.name} snapshots ({has[-1].name}, ...) {differs} "
                        f"({_changes(state, model, overrides, database)}). Nothing was changed. Train into "
                        f"a new run folder (--run / RUN=runs/NAME), or pass --restart to delete this "
                        f"folder's snapshots and logs and start over")
        if restart:
            for f in existing + [run_dir / f"{n}{s}" for n in PHASES
                                 for s in (".log", ".train.csv", ".test.csv", ".png")]:
                if f.exists():
                    f.unlink()
            if existing:
                log(f"--restart: deleted {len(existing)} snapshot file(s) and the logs in {run_dir}")
            state = {}
        for f in sorted(staging.iterdir()):
            os.replace(f, run_dir / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    phases = read_phases(run_dir)
    done = state.get("phases", {}) if not restart else {}
    for name, info in done.items():  # a phase recorded with version-1 fingerprints of the same net
        if name in old_nets and info.get("net") == state.get("nets", {}).get(name) and old_nets[name] == fingerprints[name]:
            info["net"] = fingerprints[name]
    state = {"name": run_dir.resolve().name, "model": model,
             "overrides": {k: v for k, v in overrides.items() if v is not None},
             "data": {k: str(v) if isinstance(v, Path) else v for k, v in database.render_params().items()},
             "database": str(database.root), "identities": params["identities"],
             "train_images": database.train_count, "val_images": database.val_count,
             "nets": fingerprints, "solvers": solvers, "fingerprint_version": FINGERPRINT_VERSION,
             "database_key": database.key, "phases": done}
    _write_state(run_dir, state)
    return state, phases


def phase_done(state: dict, phase: Phase, log=print) -> bool:
    """Whether ``phase`` finished with these settings and its final snapshot is whole (a
    damaged one is named and set aside: the phase then continues from the snapshot before)."""
    info = state.get("phases", {}).get(phase.name, {})
    if not (bool(info.get("done")) and info.get("max_iter") == phase.max_iter
            and info.get("net") == state["nets"][phase.name]
            and phase.final_weights.is_file()):
        return False
    solverstate = phase.final_weights.with_suffix(".solverstate")
    problem = (snapshot_problem(phase, phase.max_iter, solverstate) if solverstate.is_file()
               else (f"{phase.final_weights.name} {p}" if (p := weights_problem(phase.final_weights)) else None))
    if problem:
        log(f"[{phase.name}] finished before, but {problem}: the phase is not finished")
        set_aside(_pair(phase, phase.max_iter), log)
        return False
    return True


def train(run_dir, model: str, data, overrides: dict | None = None, *, gpus: str | None = None,
          restart: bool = False, phases=PHASES, caffe: str | None = None, threads: int | None = None,
          min_free: int = 0, progress: bool = True, log=print, watch=None) -> dict:
    """Train (or continue training) ``model`` in ``run_dir`` on the database ``data``.
    Returns the run's state (``run.json``): ``weights`` is the final fine-tuned caffemodel.
    ``watch``: an :class:`mtdnn.watch.Watch` that checks snapshots on a pair list while Caffe runs."""
    from mtdnn.netgen import ALIASES, VARIANTS
    overrides = dict(overrides or {})
    if model not in VARIANTS and model not in ALIASES:
        raise TrainError(f"no model {model!r}: use one of {', '.join(VARIANTS)} "
                         f"(or an alias: {', '.join(ALIASES)}); see `python -m generate list`")
    run_dir = Path(run_dir)
    database = find_database(data)
    binary = caffe_binary(caffe)
    if gpus is not None and not re.fullmatch(r"(all|\d+(,\d+)*)", gpus):
        raise TrainError(f"--gpu {gpus!r}: give GPU ids separated by commas (0 or 0,1) or 'all'")
    if gpus is not None and binary_has_cuda(binary) is False:
        raise TrainError(f"--gpu {gpus}: {binary} was built without CUDA (CPU only); build the GPU one with "
                         f"`CAFFE_GPU=1 make setup` (README, GPU), or leave out --gpu to train on the CPU")
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        state, all_phases = prepare(run_dir, model, database, overrides, restart, log=log)
        if watch is not None:  # snapshots at least every watch.every iterations
            all_phases = watch.attach(run_dir, all_phases)
        log(f"run folder {run_dir}: model {model} ({_describe(state['overrides'])}), "
            f"{database.train_count} training / {database.val_count} validation images of "
            f"{database.identities} identities from {database.root}")
        todo = [p for p in all_phases if p.name in phases]

        # which phases are finished, where the others start, and the disk space that needs
        finished, snaps = set(), {}
        for phase in todo:
            if phase_done(state, phase, log):
                finished.add(phase.name)
            else:
                snaps[phase.name] = latest_good_snapshot(phase, log=log)
        starts = {name: snap[0] if snap else 0 for name, snap in snaps.items()}
        check_disk(run_dir, needed_bytes([p for p in todo if p.name not in finished], starts), min_free)

        for phase in todo:
            if phase.name in finished:
                log(f"[{phase.name}] finished before: {phase.final_weights.name} (skipped)")
                continue
            cmd = [binary, "train", "-solver", phase.solver.name]
            snap = snaps[phase.name]
            if snap:
                cmd += ["-snapshot", snap[1].name]
                what = f"continuing from iteration {snap[0]} ({snap[1].name})"
            elif phase.name == "finetune":
                pre = next(p for p in all_phases if p.name == "pretrain")
                if not (pre.name in finished or phase_done(state, pre, log)):
                    raise TrainError(f"fine-tuning starts from the pre-trained weights {pre.final_weights}, "
                                     f"which do not exist or are not whole: run the pretrain phase first (--phase all; it "
                                     f"continues from its last good snapshot)")
                cmd += ["-weights", pre.final_weights.name]
                what = f"from the pre-trained weights {pre.final_weights.name}"
            else:
                what = "from scratch"
            if gpus is not None:
                cmd += ["-gpu", gpus]
            log(f"[{phase.name}] {phase.max_iter} iterations, {what}; log {phase.log}")
            log(f"  (cd {run_dir} && {' '.join(cmd)})")
            t0 = time.time()
            try:
                rc, text = run_caffe(cmd, run_dir, phase.log, phase, starts[phase.name], threads, progress,
                                     on_line=(lambda line, ph=phase: watch.on_line(ph, line)) if watch else None)
                if watch is not None and rc == 0:
                    watch.finish_phase(phase)  # the last snapshot's check too
            finally:
                if watch is not None:
                    watch.close()  # a check still running when Caffe failed or was interrupted
                try:
                    write_curves(phase)
                except Exception as e:  # noqa: BLE001 - curves must not hide the real outcome
                    log(f"  warning: no curves from {phase.log}: {e}")
            stopped = latest_good_snapshot(phase, log=lambda *_: None)
            at = f"iteration {stopped[0]}" if stopped else "the start (no snapshot yet)"
            if rc != 0:
                if rc in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGHUP, 130, 143):
                    why = "was interrupted"
                elif rc < 0:
                    why = f"failed (killed by {signal.Signals(-rc).name})"
                else:
                    why = f"failed (exit status {rc})"
                raise TrainError(
                    f"caffe train {why} in the {phase.name} phase; Caffe said:\n{caffe_errors(text)}\n"
                    f"  full log: {phase.log}\n"
                    f"Fix the cause and rerun the same command: it continues from {at}")
            if not phase.final_weights.is_file():
                raise TrainError(f"caffe train stopped before the end of {phase.name} "
                                 f"({phase.final_weights.name} was not written; log {phase.log}). "
                                 f"Rerun the same command to continue from {at}")
            info = state["phases"].get(phase.name, {})
            state["phases"][phase.name] = {
                "done": True, "max_iter": phase.max_iter, "net": state["nets"][phase.name],
                "weights": phase.final_weights.name,
                "seconds": round((info.get("seconds", 0) if snap else 0) + time.time() - t0, 1),
                "resumed_from": snap[0] if snap else info.get("resumed_from")}
            _write_state(run_dir, state)
            log(f"[{phase.name}] done in {time.time() - t0:.0f} s: {phase.final_weights}")
        fine = next(p for p in all_phases if p.name == "finetune")
        if fine.final_weights.is_file() and phase_done(state, fine, log=lambda *_: None):
            state["weights"] = fine.final_weights.name
            state["deploy"] = "deploy.prototxt"
            _write_state(run_dir, state)
            from .card import write_card  # the model card (docs/model_card.md): how to use these weights
            log(f"model card: {write_card(run_dir, state, database.attribute_names)}")
        return state


def default_run_dir(model: str) -> Path:
    return REPO / "runs" / model
