"""Watch a training run: a face verification check on the newest snapshot every N iterations.

insightface tests its model on LFW, CFP and AgeDB every 2,000 batches (``verbose`` of
``arcface_torch``); a Caffe run gives only its loss until it ends. Here ``tools/train.py``
(``--watch-every N``, default 2000) makes Caffe snapshot at least every N iterations, and
when a snapshot of an iteration that is a multiple of N (or the last of a phase) is whole,
a separate process (``python -m mtdnn.watch``) extracts the features of a held-out pair
list's images with the deploy net and that snapshot, and scores the pairs:

    accuracy   10-fold accuracy over the pairs (sphereface rule of mtdnn.evaluation.lfw:
               threshold and feature mean from 9 folds, tested on the 10th; the folds
               interleave the matched and the mismatched pairs), as insightface's check does

The default pair list is LFW View 1's pairsDevTest (people never in View 1's training set)
with the images aligned to 112x96; pass your own (``--watch-pairs``, LFW pairs format, and
``--watch-images``, the folder of aligned crops). Pairs whose image is missing count as
errors. Each check adds a row to ``<run>/verification.csv`` (phase, iteration, accuracy, std,
pairs, missing pairs, seconds, the weights, an error if the check failed) and redraws the
phase's curves with the accuracy in a fourth panel (``tools/plot_log.py`` draws it too while
training runs). The check runs beside the training (one at a time; a snapshot that comes
while one runs waits, only the newest is kept waiting) and never stops it: a failed check is
logged and recorded with its error. Snapshots that Caffe wrote only for a check (not on the
run's own snapshot interval, not the last) are deleted once checked and a newer one exists.

Cost: one check is a forward pass of each image of the list and its mirror image
(pairsDevTest: 1,000 pairs, 1,715 images); N training iterations are N x batch forward and
backward passes (about 3 forward passes each), so on a GPU a check every 2,000 iterations
of batch 40 costs about 3,430 / (2,000 x 40 x 3) = 1.4 % of the training's compute, plus the
start of the process (measured on CPU at demo scale in docs/watch.md).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CSV_NAME = "verification.csv"
COLUMNS = ("phase", "iteration", "accuracy", "std", "pairs", "missing_pairs", "seconds", "weights", "error")
DEFAULT_EVERY = 2000
_SOLVERSTATE = re.compile(r"Snapshotting solver state to binary proto file (\S+\.solverstate)")
_ITER = re.compile(r"_iter_(\d+)\.solverstate$")


class WatchError(ValueError):
    """The watch cannot be set up (bad input); the message says what to do."""


# --------------------------------------------------------------------------- the check itself

def interleaved_folds(same: np.ndarray, k: int = 10) -> np.ndarray:
    """Fold of each pair: the matched pairs dealt 0, 1, ..., k-1, 0, ... in order, the
    mismatched likewise, so every fold holds both kinds in the list's proportion."""
    same = np.asarray(same, bool)
    folds = np.empty(len(same), int)
    for kind in (True, False):
        idx = np.flatnonzero(same == kind)
        folds[idx] = np.arange(len(idx)) % k
    return folds


def pair_accuracy(features, names, pairs_path) -> dict:
    """10-fold accuracy (sphereface rule) of the pairs of ``pairs_path`` from the features of
    ``names``; pairs with a missing image count as errors."""
    from mtdnn.evaluation.lfw import pair_rows, read_pairs, ten_fold_accuracy
    pairs = read_pairs(pairs_path)
    if len(pairs) < 20:
        raise WatchError(f"{pairs_path} holds {len(pairs)} pairs: a 10-fold check needs at least 20")
    r1, r2, present, absent = pair_rows(pairs, names, "wrong")
    same = np.array([p.same for p in pairs])
    res = ten_fold_accuracy(features, r1, r2, same, interleaved_folds(same), present, "sphereface")
    return {"accuracy": res["accuracy"], "std": res["std"], "pairs": len(pairs),
            "missing_pairs": int((~present).sum()), "missing_images": absent}


def pair_images(pairs_path, images: Path) -> list[str]:
    """The images of the pair list that exist below ``images`` (relative paths)."""
    from mtdnn.evaluation.lfw import read_pairs
    wanted = sorted({name for p in read_pairs(pairs_path) for name in (p.image1, p.image2)})
    return [n for n in wanted if (Path(images) / n).is_file()]


def check(deploy, weights, pairs_path, images, *, gpu: int | None = None, batch_size: int = 64) -> dict:
    """One check: features (fc5 of the image and its mirror image, concatenated) of the pair
    list's images with ``weights``, then :func:`pair_accuracy`."""
    from mtdnn.features import extract_features, load_net
    t0 = time.time()
    names = pair_images(pairs_path, images)
    if not names:
        raise WatchError(f"none of the images of {pairs_path} is below {images}")
    net = load_net(deploy, weights, blob="fc5", engine="caffe", gpu=gpu)
    feats = extract_features(net, names, images, blob="fc5", batch_size=batch_size, mirror="concat",
                             progress=False)
    out = pair_accuracy(feats, names, pairs_path)
    out["seconds"] = round(time.time() - t0, 2)
    out["images"] = len(names)
    return out


# --------------------------------------------------------------------------- the run folder's table

def read_rows(run_dir) -> list[dict]:
    path = Path(run_dir) / CSV_NAME
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(run_dir, row: dict) -> Path:
    from mtdnn.fileio import atomic_write_text
    rows = read_rows(run_dir) + [{k: row.get(k, "") for k in COLUMNS}]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(Path(run_dir) / CSV_NAME, buf.getvalue())


def phase_curve(run_dir, phase: str) -> tuple[list[int], list[float]]:
    """(iterations, accuracies) of the successful checks of ``phase``, in iteration order
    (the last check of an iteration counts, e.g. after a resume)."""
    by_iter = {}
    for r in read_rows(run_dir):
        if r.get("phase") == phase and r.get("accuracy") not in ("", None) and not r.get("error"):
            by_iter[int(r["iteration"])] = float(r["accuracy"])
    its = sorted(by_iter)
    return its, [by_iter[i] for i in its]


# --------------------------------------------------------------------------- beside `caffe train`

@dataclass
class Watch:
    """Runs the checks of one training run (see the module doc). ``every``: iterations between
    checks; ``pairs``: LFW-format pair list; ``images``: folder of the aligned crops."""
    every: int
    pairs: Path
    images: Path
    gpu: int | None = None
    threads: int | None = 1
    log: object = print
    run_dir: Path | None = None
    _proc: subprocess.Popen | None = None
    _running: tuple | None = None          # (phase, iteration, weights, started)
    _pending: tuple | None = None          # (phase, iteration, weights)
    _checked: set = field(default_factory=set)
    _own_snapshots: dict = field(default_factory=dict)   # phase name -> the run's own interval

    def __post_init__(self):
        if self.every < 1:
            raise WatchError(f"--watch-every {self.every}: give a number of iterations >= 1")
        self.pairs, self.images = Path(self.pairs), Path(self.images)
        if not self.pairs.is_file():
            raise WatchError(f"no pair list {self.pairs}: pass --watch-pairs (LFW pairs format) or leave out --watch")
        if not self.images.is_dir():
            raise WatchError(f"no folder of aligned images {self.images}: pass --watch-images (the crops the "
                             f"pair list names, e.g. tools/align_faces.py's output) or leave out --watch")
        if not pair_images(self.pairs, self.images):
            raise WatchError(f"none of the images of {self.pairs} is below {self.images}: pass the folder of "
                             f"the aligned crops (--watch-images) or leave out --watch")

    # ---- set up: snapshots at least every `every` iterations
    def attach(self, run_dir: Path, phases: list) -> list:
        """Make each phase's solver snapshot at gcd(its interval, every) iterations; returns
        the phases as read again from the solvers, with the run's own snapshot interval for
        the disk-space estimate (the checks' snapshots are deleted as they are checked: at
        most two more pairs on disk at a time)."""
        from dataclasses import replace

        from mtdnn.prototxt import read_solver, write_prototxt
        from mtdnn.caffe.snapshots import read_phases
        self.run_dir = Path(run_dir)
        for p in phases:
            self._own_snapshots[p.name] = p.snapshot
            want = math.gcd(p.snapshot, self.every) if p.snapshot else self.every
            if want != p.snapshot:
                solver = read_solver(p.solver)
                solver.snapshot = want
                write_prototxt(solver, p.solver)
        return [replace(p, snapshot=self._own_snapshots[p.name]) for p in read_phases(self.run_dir)]

    def wanted(self, phase, iteration: int) -> bool:
        return iteration % self.every == 0 or iteration == phase.max_iter

    # ---- fed with every line Caffe writes
    def on_line(self, phase, line: str) -> None:
        self.poll()
        m = _SOLVERSTATE.search(line)
        if not m or not (it := _ITER.search(m[1])):
            return
        iteration = int(it[1])
        if not self.wanted(phase, iteration):
            return
        weights = self.run_dir / Path(m[1]).name.replace(".solverstate", ".caffemodel")
        self._pending = (phase, iteration, weights)
        self.poll()

    def poll(self) -> None:
        """Record a finished check; start the waiting one."""
        if self._proc is not None and self._proc.poll() is not None:
            self._record()
        if self._proc is None and self._pending is not None:
            self._start(*self._pending)
            self._pending = None

    def finish_phase(self, phase) -> None:
        """Wait for the checks of ``phase`` (the last snapshot's included) and record them."""
        while self._proc is not None or self._pending is not None:
            if self._proc is not None:
                self._proc.wait()
            self.poll()
        self._prune(phase, keep_newest=True)
        try:
            from mtdnn.train import write_curves
            write_curves(phase)
        except Exception as e:  # noqa: BLE001 - curves must not hide the training's outcome
            self.log(f"  warning: no curves for {phase.name}: {e}")

    def close(self) -> None:
        """Stop a running check (training was interrupted or failed)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = self._pending = None

    # ---- internals
    def _start(self, phase, iteration, weights) -> None:
        cmd = [sys.executable, "-m", "mtdnn.watch", "--deploy", str(self.run_dir / "deploy.prototxt"),
               "--weights", str(weights), "--pairs", str(self.pairs), "--images", str(self.images)]
        if self.gpu is not None:
            cmd += ["--gpu", str(self.gpu)]
        env = {**os.environ, "GLOG_minloglevel": "2",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                              os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        if self.threads:
            from mtdnn.caffe.run import blas_threads_env
            env.update(blas_threads_env(self.threads))
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self._running = (phase, iteration, weights, time.time())

    def _record(self) -> None:
        phase, iteration, weights, started = self._running
        out, err = self._proc.communicate()
        rc = self._proc.returncode
        self._proc = self._running = None
        row = {"phase": phase.name, "iteration": iteration, "weights": weights.name,
               "seconds": round(time.time() - started, 2)}
        try:
            res = json.loads(out.strip().splitlines()[-1]) if rc == 0 and out.strip() else None
        except json.JSONDecodeError:
            res = None
        if res is None:
            why = (err.strip().splitlines() or [f"exit status {rc}"])[-1]
            row["error"] = why
            self.log(f"  [watch] check of {weights.name} failed: {why} (training goes on)")
        else:
            row.update({k: res[k] for k in ("accuracy", "std", "pairs", "missing_pairs")})
            row["accuracy"], row["std"] = f"{res['accuracy']:.6f}", f"{res['std']:.6f}"
            self.log(f"  [watch] {phase.name} iteration {iteration}: {self.pairs.name} accuracy "
                     f"{100 * res['accuracy']:.2f} % ({res['pairs']} pairs, {res['missing_pairs']} missing; "
                     f"{row['seconds']:.0f} s)")
        append_row(self.run_dir, row)
        self._checked.add((phase.name, iteration))
        self._prune(phase, keep_newest=True)
        try:
            from mtdnn.train import write_curves
            write_curves(phase)
        except Exception:  # noqa: BLE001 - the end of the phase redraws and reports
            pass

    def _prune(self, phase, keep_newest: bool) -> None:
        """Delete the snapshot pairs that Caffe wrote only for the watch (not on the run's own
        interval, not the last of the phase) once checked, or at once when no check wants them
        (the gcd of the two intervals makes some), except the newest pair."""
        own = self._own_snapshots.get(phase.name, 0)
        snaps = phase.snapshots()
        newest = snaps[0][0] if snaps else None
        for it, state in snaps:
            if keep_newest and it == newest:
                continue
            done = (phase.name, it) in self._checked or not self.wanted(phase, it)
            if done and it != phase.max_iter and not (own and it % own == 0):
                for p in (state, state.with_suffix(".caffemodel")):
                    if p.is_file():
                        p.unlink()


# --------------------------------------------------------------------------- python -m mtdnn.watch

def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="One verification check of a snapshot (run by tools/train.py "
                                             "--watch-every; prints one JSON line)")
    ap.add_argument("--deploy", required=True, type=Path, help="deploy.prototxt of the run")
    ap.add_argument("--weights", required=True, type=Path, help="the snapshot's .caffemodel")
    ap.add_argument("--pairs", required=True, type=Path, help="pair list, LFW pairs format")
    ap.add_argument("--images", required=True, type=Path, help="folder of the aligned crops it names")
    ap.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    a = ap.parse_args(argv)
    res = check(a.deploy, a.weights, a.pairs, a.images, gpu=a.gpu)
    res.pop("missing_images", None)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    from mtdnn.cli import run_tool
    run_tool(main)
