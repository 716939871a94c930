"""Read what Caffe's tools write: the log of `caffe train` (glog lines on stderr) as training and
test records (:func:`parse_caffe_log`), the lines that say why it failed (:func:`caffe_errors`),
and the averages of `caffe time` (:func:`parse_caffe_time`).

The lines used (Caffe 1.0's solver.cpp):

    Iteration 20 (3.1 iter/s, 6.4s/20 iters), loss = 4.61
        Train net output #0: loss_attr = 0.52 (* 0.1 = 0.052 loss)
    Iteration 20, lr = 0.01
    Iteration 40, Testing net (#0)
        Test net output #0: accuracy = 0.05
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

_ITER_LOSS = re.compile(r"Iteration (\d+) .*?, loss = ([-+\w.]+)")
_TRAIN_OUT = re.compile(r"Train net output #\d+: (\S+) = ([-+\w.]+)")
_LR = re.compile(r"Iteration (\d+), lr = ([-+\w.]+)")
_TESTING = re.compile(r"Iteration (\d+), Testing net")
_TEST_OUT = re.compile(r"Test net output #\d+: (\S+) = ([-+\w.]+)")
_ERROR_LINE = re.compile(r"^(F\d{4} |E\d{4} )|Check failed|Error|error:|No space left|"
                         r"Aborted|what\(\)|Cannot |cannot |Failed|failed")
_TIME = {"forward": re.compile(r"Average Forward pass: ([\d.]+) ms"),
         "backward": re.compile(r"Average Backward pass: ([\d.]+) ms")}


@dataclass
class CaffeLog:
    """Training rows (iteration, loss, lr and each train output) and test rows."""
    train: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)

    def column(self, name: str, test: bool = False) -> tuple[list[int], list[float]]:
        """(iterations, values) of one column, skipping rows that lack it."""
        rows = [r for r in (self.test if test else self.train) if name in r]
        return [r["iteration"] for r in rows], [r[name] for r in rows]

    def names(self, test: bool = False) -> list[str]:
        """Column names other than ``iteration``, in order of first appearance."""
        seen = dict.fromkeys(k for r in (self.test if test else self.train) for k in r)
        seen.pop("iteration", None)
        return list(seen)


def parse_caffe_log(text: str) -> CaffeLog:
    """Parse the text of a Caffe training log."""
    log = CaffeLog()
    row = None  # the row that output lines attach to
    for line in text.splitlines():
        if m := _ITER_LOSS.search(line):
            row = {"iteration": int(m[1]), "loss": float(m[2])}
            log.train.append(row)
        elif (m := _TRAIN_OUT.search(line)) and row is not None and row in log.train:
            row[m[1]] = float(m[2])
        elif m := _LR.search(line):
            if log.train and log.train[-1]["iteration"] == int(m[1]):
                log.train[-1]["lr"] = float(m[2])
        elif m := _TESTING.search(line):
            row = {"iteration": int(m[1])}
            log.test.append(row)
        elif (m := _TEST_OUT.search(line)) and log.test and row is log.test[-1]:
            row[m[1]] = float(m[2])
    return log


def write_csv(rows: list[dict], path: Path) -> Path:
    """Write records with the union of their keys as columns (``iteration`` first)."""
    names = list(dict.fromkeys(k for r in rows for k in r)) or ["iteration"]
    with atomic_write(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def _scale_note(ax, values) -> str:
    """A log y axis when a few large values (e.g. the loss of an untrained net at iteration 0,
    70,000 against 10 after) would flatten the rest of a panel; returns what the title says."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if v.size < 3 or (v > 0).sum() < v.size:
        return ""
    if v.max() > 100 * np.median(v):
        ax.set_yscale("log")
        fmt = lambda x: f"{x:,.0f}" if x >= 100 else f"{x:.3g}"  # noqa: E731
        return f"\n(log scale: max {fmt(v.max())} vs median {fmt(np.median(v))})"
    return ""


def plot_curves(log: CaffeLog, path: Path, title: str = "", verification=None) -> Path:
    """One PNG: training losses (total and each task), test outputs, learning rate, and with
    ``verification`` = (iterations, accuracies) of the watch (mtdnn.watch) a fourth panel.
    A panel whose largest values would flatten the others is drawn on a log axis, said in its title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 4 if verification and verification[0] else 3
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    values = []
    for name in log.names():
        if name != "lr":
            axes[0].plot(*log.column(name), label=name)
            values += log.column(name)[1]
    axes[0].set(title="training loss" + _scale_note(axes[0], values), xlabel="iteration")
    values = []
    for name in log.names(test=True):
        axes[1].plot(*log.column(name, test=True), marker="o", label=name)
        values += log.column(name, test=True)[1]
    axes[1].set(title="test outputs" + _scale_note(axes[1], values), xlabel="iteration")
    axes[2].plot(*log.column("lr"))
    axes[2].set(title="learning rate", xlabel="iteration", yscale="log" if log.column("lr")[1] else "linear")
    if panels == 4:
        its, acc = verification
        axes[3].plot(its, [100 * a for a in acc], marker="o", color="C3")
        axes[3].set(title="verification accuracy (watch, %)", xlabel="iteration", ylabel="%")
        axes[3].grid(True, alpha=0.3)
    for ax in axes[:2]:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).stem + ".partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return Path(path)


def caffe_errors(log_text: str, limit: int = 12) -> str:
    """The lines of a Caffe log that say why it failed (glog F/E lines, checks, errors)."""
    lines = [ln for ln in log_text.splitlines() if _ERROR_LINE.search(ln) and "Iteration" not in ln]
    if not lines:
        lines = log_text.splitlines()[-limit:]
    return "\n".join("    " + ln for ln in lines[-limit:])


def parse_caffe_time(log: str) -> tuple[float, float]:
    """Average forward and backward milliseconds of a `caffe time` log; ValueError without them."""
    found = [rx.search(log) for rx in _TIME.values()]
    if not all(found):
        raise ValueError("no 'Average Forward/Backward pass' line in caffe time's log")
    return float(found[0].group(1)), float(found[1].group(1))
