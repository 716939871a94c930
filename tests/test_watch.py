"""Watching a training run (tools/train.py --watch): a verification check on a pair list runs
on the snapshots while Caffe trains, its accuracy lands in RUN/verification.csv and in the
curves; the checks' own snapshots are removed once checked; a check that fails is recorded and
training goes on. Real Caffe, real aligned LFW faces, a pair list in LFW's format."""
import csv
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from mtdnn.paths import REPO, data_path
from mtdnn.watch import append_row, interleaved_folds, pair_accuracy, phase_curve

TOOL = REPO / "tools" / "train.py"
SMALL = ["--model", "fast", "--width", "0.125", "--batch", "8", "--display", "1", "--test-interval", "1000",
         "--seed", "1", "--threads", "1"]


def _people():
    by = defaultdict(list)
    for line in data_path("lfw", "lfw-112x96_list.txt").read_text().splitlines():
        if line.strip():
            path, label = line.split()
            by[label].append(path)
    return sorted(by.values(), key=lambda v: (-len(v), v[0]))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A database of 4 people x 6 aligned LFW faces, and a View 1-format pair list of 12
    matched + 12 mismatched pairs of 24 other people (the people the net never sees)."""
    root = tmp_path_factory.mktemp("watch")
    people = _people()
    train, held = people[:4], people[10:34]
    (root / "list.txt").write_text("".join(f"{p} {i}\n" for i, imgs in enumerate(train) for p in sorted(imgs)[:6]))
    out = subprocess.run([sys.executable, str(REPO / "tools" / "build_db.py"), "--list", str(root / "list.txt"),
                          "--root", str(data_path("lfw", "lfw-112x96")), "--placeholder-attributes", "7",
                          str(root / "db")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    name = lambda p: p.split("/")[0]  # noqa: E731
    num = lambda p: int(p.rsplit("_", 1)[1].split(".")[0])  # noqa: E731
    matched = [f"{name(v[0])}\t{num(v[0])}\t{num(v[1])}" for v in held[:12]]
    mismatched = [f"{name(held[12 + k][0])}\t{num(held[12 + k][0])}\t{name(held[(13 + k) % 24][0])}\t"
                  f"{num(held[(13 + k) % 24][0])}" for k in range(12)]
    (root / "pairs.txt").write_text("12\n" + "\n".join(matched + mismatched) + "\n")
    return root


def train(*args):
    return subprocess.run([sys.executable, str(TOOL), "--quiet", *map(str, args)], capture_output=True, text=True)


def test_checks_write_their_rows_and_curves_on_a_tiny_run(small, tmp_path):
    run = tmp_path / "run"
    out = train(*SMALL, "--db", small / "db", "--run", run, "--pretrain-iter", 4, "--finetune-iter", 4,
                "--snapshot", 4, "--watch", 2, "--watch-pairs", small / "pairs.txt",
                "--watch-images", data_path("lfw", "lfw-112x96"))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = list(csv.DictReader(open(run / "verification.csv")))
    # every 2 iterations of each phase: 2 and 4 (the last)
    assert [(r["phase"], int(r["iteration"])) for r in rows] == [("pretrain", 2), ("pretrain", 4),
                                                                ("finetune", 2), ("finetune", 4)], rows
    for r in rows:
        assert not r["error"], r
        assert 0 <= float(r["accuracy"]) <= 1 and int(r["pairs"]) == 24 and int(r["missing_pairs"]) == 0
    assert "[watch] pretrain iteration 2: pairs.txt accuracy" in out.stdout
    # the snapshots Caffe wrote only for a check are gone; the run's own (every 4) stay
    assert not (run / "pretrain_iter_2.caffemodel").exists() and not (run / "finetune_iter_2.solverstate").exists()
    assert (run / "pretrain_iter_4.caffemodel").is_file() and (run / "finetune_iter_4.caffemodel").is_file()
    # the solver was told to snapshot every 2 (gcd of 4 and 2) for this run
    assert "snapshot: 2" in (run / "solver_pretrain.prototxt").read_text()
    assert phase_curve(run, "finetune")[0] == [2, 4]
    # the curves have the fourth panel: plot_log says it read the checks
    plot = subprocess.run([sys.executable, str(REPO / "tools" / "plot_log.py"), str(run / "finetune.log")],
                          capture_output=True, text=True, cwd=REPO)
    assert plot.returncode == 0, plot.stderr
    assert "2 verification checks" in plot.stdout and (run / "finetune.png").stat().st_size > 0


def test_intervals_that_do_not_divide_each_other(small, tmp_path):
    """Own snapshots every 4, a check every 3: Caffe snapshots every 1 (the gcd); only the
    run's own snapshots (4, and the last, 6) stay, the checks are at 3 and 6."""
    run = tmp_path / "run"
    out = train(*SMALL, "--db", small / "db", "--run", run, "--pretrain-iter", 6, "--finetune-iter", 1,
                "--snapshot", 4, "--watch", 3, "--watch-pairs", small / "pairs.txt",
                "--watch-images", data_path("lfw", "lfw-112x96"), "--phase", "pretrain")
    assert out.returncode == 0, out.stdout + out.stderr
    assert phase_curve(run, "pretrain")[0] == [3, 6]
    assert sorted(p.name for p in run.glob("pretrain_iter_*.caffemodel")) == ["pretrain_iter_4.caffemodel",
                                                                             "pretrain_iter_6.caffemodel"]


def test_a_failing_check_is_recorded_and_training_goes_on(small, tmp_path):
    """Crops of another size than the net's input: the check fails, the run does not."""
    crops = tmp_path / "crops"
    pairs = (small / "pairs.txt").read_text().split()
    import cv2
    for line in (small / "pairs.txt").read_text().splitlines()[1:]:
        f = line.split("\t")
        for who, n in ((f[0], f[1]), (f[0], f[2])) if len(f) == 3 else ((f[0], f[1]), (f[2], f[3])):
            p = crops / who / f"{who}_{int(n):04d}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), np.zeros((20, 20, 3), np.uint8))
    assert pairs
    run = tmp_path / "run"
    out = train(*SMALL, "--db", small / "db", "--run", run, "--pretrain-iter", 2, "--finetune-iter", 2,
                "--watch", 2, "--watch-pairs", small / "pairs.txt", "--watch-images", crops)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = list(csv.DictReader(open(run / "verification.csv")))
    assert len(rows) == 2 and all(r["error"] and not r["accuracy"] for r in rows), rows
    assert "check of pretrain_iter_2.caffemodel failed" in out.stdout
    assert (run / "finetune_iter_2.caffemodel").is_file()


def test_bad_watch_input_is_refused_before_training(small, tmp_path):
    out = train(*SMALL, "--db", small / "db", "--run", tmp_path / "run", "--watch", 2,
                "--watch-pairs", tmp_path / "nope.txt", "--watch-images", data_path("lfw", "lfw-112x96"))
    assert out.returncode == 2 and "no pair list" in out.stderr and "leave out --watch" in out.stderr
    assert not (tmp_path / "run").exists()


def test_pair_accuracy_folds_and_missing_images():
    same = np.array([True] * 20 + [False] * 20)
    folds = interleaved_folds(same)
    assert all((folds[same] == f).sum() == 2 and (folds[~same] == f).sum() == 2 for f in range(10))
    # features that separate the pairs perfectly: matched pairs share a direction
    rng = np.random.default_rng(0)
    names, rows = [], []
    lines = []
    for k in range(20):
        a = rng.normal(size=8)
        names += [f"P{k}/P{k}_0001.jpg", f"P{k}/P{k}_0002.jpg"]
        rows += [a, a + 0.01 * rng.normal(size=8)]
        lines.append(f"P{k}\t1\t2")
    for k in range(20):
        lines.append(f"P{k}\t1\tP{(k + 1) % 20}\t1")
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pairs.txt"
        path.write_text("20\n" + "\n".join(lines) + "\n")
        res = pair_accuracy(np.array(rows), names, path)
        assert res["accuracy"] == 1.0 and res["missing_pairs"] == 0
        # the second image of person 0 missing: its matched pair counts as an error
        res = pair_accuracy(np.array(rows[:1] + rows[2:]), names[:1] + names[2:], path)
        assert res["missing_pairs"] == 1 and res["accuracy"] == pytest.approx(39 / 40)


def test_rows_append_and_the_last_check_of_an_iteration_counts(tmp_path):
    append_row(tmp_path, {"phase": "pretrain", "iteration": 2, "accuracy": "0.6"})
    append_row(tmp_path, {"phase": "pretrain", "iteration": 4, "error": "boom"})
    append_row(tmp_path, {"phase": "pretrain", "iteration": 2, "accuracy": "0.7"})
    assert phase_curve(tmp_path, "pretrain") == ([2], [0.7])
    assert phase_curve(tmp_path, "finetune") == ([], [])
