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
raises :class:`TrainError` whose message says what to do (a failed or interrupted `caffe train`:
:class:`TrainStopped`); rerunning the same command continues from the last good state.

The phases run through a :class:`mtdnn.caffe.engine.TrainingEngine` (`caffe train`, the only
engine); the snapshot checks and fingerprints are mtdnn.caffe.snapshots.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .caffe.engine import CaffeEngine, TrainingEngine
from .caffe.log import parse_caffe_log, plot_curves, write_csv
from .caffe.run import TrainError, TrainStopped, failure_reason
from .caffe.snapshots import (FINGERPRINT_VERSION, PHASES, Phase, latest_good_snapshot, net_fingerprint,
                              read_phases, recorded_fingerprint, set_aside, snapshot_bytes, snapshot_files,
                              snapshot_pair, snapshot_problem, solver_fingerprint, weights_problem)
from .paths import REPO

STATE_FILE = "run.json"
LOCK_FILE = ".train.lock"
# Space kept free beyond the snapshots' estimate (logs, plots, the file system's own needs).
DISK_MARGIN = 200 * 2**20


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
              "(see docs/demo.md), or pass --db (make train DB=...) pointing at a "
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


# --------------------------------------------------------------------------- disk space

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


def write_curves(phase: Phase) -> None:
    """<phase>.train.csv, <phase>.test.csv and <phase>.png beside the log (tools/plot_log.py)."""
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
    given_ids = overrides.get("identities")
    if given_ids is not None and given_ids < database.identities:
        raise TrainError(f"--identities {given_ids} is smaller than the {database.identities} identities "
                         f"of {database.root}: labels would fall outside the classifier; leave it out "
                         f"(the database's count is used)")
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=run_dir))
    try:
        params = _render(staging, run_dir, model, database, overrides)
        staged = read_phases(staging)
        fingerprints = {p.name: net_fingerprint(p.net.read_text()) for p in staged}
        solvers = {p.name: solver_fingerprint(p.solver.read_text()) for p in staged}
        state = _read_state(run_dir)
        existing = snapshot_files(run_dir)
        # what made the snapshots, in this version's fingerprints (before the new files replace the old)
        old_nets = {p.name: recorded_fingerprint(state, "nets", p.name, run_dir / p.net.name) for p in staged}
        if existing and not restart:
            _check_resumable(run_dir, state, existing, staged, (old_nets, fingerprints, solvers),
                             _changes(state, model, overrides, database), database)
        if restart:
            _delete_run(run_dir, existing, log)
            state = {}
        for f in sorted(staging.iterdir()):
            os.replace(f, run_dir / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

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
    return state, read_phases(run_dir)


def _render(staging: Path, run_dir: Path, model: str, database: Database, overrides: dict) -> dict:
    """The run's HDF5Data list files (the database as it is now) and the model rendered for this
    data into ``staging``; returns the rendering parameters."""
    from mtdnn.netgen import GenerateError, render_model
    from mtdnn.netgen.spec import AttributeCountError

    from .db import caffe_readable, write_source
    params = {**database.render_params(), "test_images": database.val_count or database.train_count}
    params.update({k: v for k, v in overrides.items() if v is not None})
    for name, h5 in database.sources().items():
        # (a path with a space goes through a link in the run folder: Caffe reads the list word by word)
        write_source(staging / name, [caffe_readable(h5, staging / name.removesuffix(".txt"))])
    try:
        # the model is named after the run folder, whatever the staging folder's name
        render_model(staging, variant=model, name=params.pop("name", run_dir.resolve().name), **params)
    except GenerateError as e:
        hint = ""
        if isinstance(e, AttributeCountError):
            hint = (" (label a copy of the database with the model's attributes: "
                    "tools/label_attributes.py --attributes ... --out DIR, then --db DIR)")
        raise TrainError(f"cannot render model {model!r}: {e}{hint}") from None
    return params


NEW_RUN = "Train into a new run folder (--run / RUN=runs/NAME), or pass --restart"


def _check_resumable(run_dir: Path, state: dict, existing: list[Path], staged: list[Phase],
                     prints: tuple[dict, dict, dict], changes: str, database: Database) -> None:
    """TrainError unless the snapshots in ``run_dir`` were made by the staged nets and solvers
    (``prints``: the recorded nets', the staged nets' and solvers' fingerprints) on this data."""
    old_nets, fingerprints, solvers = prints
    if not state.get("nets"):
        raise TrainError(
            f"{run_dir} holds snapshots ({existing[0].name}, ...) but no {STATE_FILE} saying which net "
            f"made them, so they cannot be resumed safely. {NEW_RUN} to delete them and start over")
    old_key = state.get("database_key")
    if old_key and database.key and old_key != database.key:
        raise TrainError(
            f"{run_dir} holds snapshots ({existing[0].name}, ...) trained on other data than "
            f"{database.root} holds (its manifests' record order or attribute checksums differ from "
            f"the database recorded in {STATE_FILE}, {state.get('database')}). Nothing was changed. "
            f"{NEW_RUN} to start over")
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
                f"{run_dir} holds {p.name} snapshots ({has[-1].name}, ...) {differs} ({changes}). Nothing was "
                f"changed. {NEW_RUN} to delete this folder's snapshots and logs and start over")


def _delete_run(run_dir: Path, existing: list[Path], log) -> None:
    """--restart: the snapshots, logs and curves of both phases go."""
    for f in existing + [run_dir / f"{n}{s}" for n in PHASES for s in (".log", ".train.csv", ".test.csv", ".png")]:
        if f.exists():
            f.unlink()
    if existing:
        log(f"--restart: deleted {len(existing)} snapshot file(s) and the logs in {run_dir}")

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
        set_aside(snapshot_pair(phase, phase.max_iter), log)
        return False
    return True



def train(run_dir, model: str, data, overrides: dict | None = None, *, gpus: str | None = None,
          restart: bool = False, phases=PHASES, caffe: str | None = None, threads: int | None = None,
          min_free: int = 0, progress: bool = True, log=print, watch=None,
          engine: TrainingEngine | None = None) -> dict:
    """Train (or continue training) ``model`` in ``run_dir`` on the database ``data``.
    Returns the run's state (``run.json``): ``weights`` is the final fine-tuned caffemodel.
    ``watch``: an :class:`mtdnn.watch.Watch` that checks snapshots on a pair list while Caffe runs.
    ``engine``: what runs the phases (default `caffe train` of ``caffe``, :class:`CaffeEngine`)."""
    from mtdnn.netgen import ALIASES, VARIANTS
    overrides = dict(overrides or {})
    if model not in VARIANTS and model not in ALIASES:
        raise TrainError(f"no model {model!r}: use one of {', '.join(VARIANTS)} "
                         f"(or an alias: {', '.join(ALIASES)}); see `python -m generate list`")
    run_dir = Path(run_dir)
    database = find_database(data)
    engine = engine or CaffeEngine(caffe)
    engine.check(gpus)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        state, all_phases = prepare(run_dir, model, database, overrides, restart, log=log)
        if watch is not None:  # snapshots at least every watch.every iterations
            all_phases = watch.attach(run_dir, all_phases)
        log(f"run folder {run_dir}: model {model} ({_describe(state['overrides'])}), "
            f"{database.train_count} training / {database.val_count} validation images of "
            f"{database.identities} identities from {database.root}")
        todo = [p for p in all_phases if p.name in phases]
        finished, snaps = _plan(state, todo, run_dir, min_free, log)
        run = _PhaseRun(engine, run_dir, state, all_phases, gpus, threads, progress, log, watch)
        for phase in todo:
            if phase.name in finished:
                log(f"[{phase.name}] finished before: {phase.final_weights.name} (skipped)")
            else:
                run.run(phase, snaps[phase.name], finished)
        fine = next(p for p in all_phases if p.name == "finetune")
        if fine.final_weights.is_file() and phase_done(state, fine, log=lambda *_: None):
            state["weights"] = fine.final_weights.name
            state["deploy"] = "deploy.prototxt"
            _write_state(run_dir, state)
            from .card import write_card  # the model card (docs/model_card.md): how to use these weights
            log(f"model card: {write_card(run_dir, state, database.attribute_names)}")
        return state


def _plan(state: dict, todo: list[Phase], run_dir: Path, min_free: int, log) -> tuple[set, dict]:
    """Which phases are finished, the snapshot each other one continues from (None: none), and
    whether the disk holds the snapshots they will write (TrainError if not)."""
    finished, snaps = set(), {}
    for phase in todo:
        if phase_done(state, phase, log):
            finished.add(phase.name)
        else:
            snaps[phase.name] = latest_good_snapshot(phase, log=log)
    starts = {name: snap[0] if snap else 0 for name, snap in snaps.items()}
    check_disk(run_dir, needed_bytes([p for p in todo if p.name not in finished], starts), min_free)
    return finished, snaps


@dataclass
class _PhaseRun:
    """Runs one phase after another through ``engine`` and records each in run.json."""
    engine: TrainingEngine
    run_dir: Path
    state: dict
    all_phases: list
    gpus: str | None
    threads: int | None
    progress: bool
    log: object
    watch: object

    def run(self, phase: Phase, snap, finished: set) -> None:
        log, watch = self.log, self.watch
        weights = None
        if snap:
            what = f"continuing from iteration {snap[0]} ({snap[1].name})"
        elif phase.name == "finetune":
            weights = self._pretrained(finished)
            what = f"from the pre-trained weights {weights.name}"
        else:
            what = "from scratch"
        cmd = self.engine.command(phase, snapshot=snap[1] if snap else None, weights=weights, gpus=self.gpus)
        log(f"[{phase.name}] {phase.max_iter} iterations, {what}; log {phase.log}")
        log(f"  (cd {self.run_dir} && {' '.join(cmd)})")
        t0 = time.time()
        try:
            rc, text = self.engine.run(cmd, phase, self.run_dir, start=snap[0] if snap else 0,
                                       threads=self.threads, progress=self.progress,
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
        self._check_outcome(phase, rc, text)
        info = self.state["phases"].get(phase.name, {})
        self.state["phases"][phase.name] = {
            "done": True, "max_iter": phase.max_iter, "net": self.state["nets"][phase.name],
            "weights": phase.final_weights.name,
            "seconds": round((info.get("seconds", 0) if snap else 0) + time.time() - t0, 1),
            "resumed_from": snap[0] if snap else info.get("resumed_from")}
        _write_state(self.run_dir, self.state)
        log(f"[{phase.name}] done in {time.time() - t0:.0f} s: {phase.final_weights}")

    def _pretrained(self, finished: set) -> Path:
        """The pre-training's final weights, which fine-tuning starts from (TrainError if not whole)."""
        pre = next(p for p in self.all_phases if p.name == "pretrain")
        if not (pre.name in finished or phase_done(self.state, pre, self.log)):
            raise TrainError(f"fine-tuning starts from the pre-trained weights {pre.final_weights}, "
                             f"which do not exist or are not whole: run the pretrain phase first (--phase all; it "
                             f"continues from its last good snapshot)")
        return pre.final_weights

    def _check_outcome(self, phase: Phase, rc: int, text: str) -> None:
        """TrainStopped when the engine failed, was interrupted or stopped before the last snapshot."""
        stopped = latest_good_snapshot(phase, log=lambda *_: None)
        at = f"iteration {stopped[0]}" if stopped else "the start (no snapshot yet)"
        if rc != 0:
            raise TrainStopped(
                f"caffe train {failure_reason(rc)} in the {phase.name} phase; Caffe said:\n"
                f"{self.engine.errors(text)}\n  full log: {phase.log}\n"
                f"Fix the cause and rerun the same command: it continues from {at}")
        if not phase.final_weights.is_file():
            raise TrainStopped(f"caffe train stopped before the end of {phase.name} "
                               f"({phase.final_weights.name} was not written; log {phase.log}). "
                               f"Rerun the same command to continue from {at}")


def default_run_dir(model: str) -> Path:
    return REPO / "runs" / model
