"""PNG plots of the evaluators' results: ROC (paper Fig. 7 style), CMC (Fig. 6 style),
rank-1 against the number of distractors. Each takes ``{label: curve}`` so runs can be overlaid."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mtdnn.fileio import atomic_write_bytes


def _plt():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    """The PNG is rendered in memory and written atomically: a full disk or a kill never
    leaves half a plot under the final name."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    finally:
        _plt().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str, legend: str = "lower right"):
    """The shared end of the curve plots: rates in [0, 1], labels, grid, legend, written."""
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    return _save(fig, path)


def plot_roc(curves: dict, path, title: str = "ROC", ylabel: str = "True accept rate",
             far_min: float | None = None):
    """Log-FAR ROC; ``curves`` = {label: (far, tar)} with rates in [0, 1]."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    lo = 1.0
    for label, (far, tar) in curves.items():
        far, tar = np.asarray(far, float), np.asarray(tar, float)
        ok = far > 0
        if ok.any():
            lo = min(lo, far[ok].min())
            ax.semilogx(far[ok], tar[ok], label=label)
    ax.set_xlim(far_min or lo, 1)
    return _finish(fig, ax, path, "False accept rate", ylabel, title)


def plot_cmc(curves: dict, path, title: str = "CMC"):
    """Log-rank CMC; ``curves`` = {label: (ranks, rates)}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (rank, rate) in curves.items():
        ax.semilogx(rank, rate, label=label)
    return _finish(fig, ax, path, "Rank", "Identification rate", title)


def plot_rank1_vs_distractors(curves: dict, path, title: str = "Rank-1 vs distractors"):
    """``curves`` = {label: (sizes, rank1)}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (sizes, r1) in curves.items():
        ax.semilogx(sizes, r1, marker="o", label=label)
    return _finish(fig, ax, path, "Number of distractors", "Rank-1 identification rate", title, "lower left")


def plot_megaface(result: dict, out_dir, prefix: str = "megaface", label: str = "ours") -> list:
    """The three MegaFace plots of one ``evaluate_megaface`` result (largest set for CMC/ROC)."""
    last = result["results"][-1]
    n = last["distractors"]
    return [
        plot_cmc({label: (last["cmc"]["rank"], last["cmc"]["rate"])},
                 Path(out_dir) / f"{prefix}_cmc.png", f"CMC with {n:,} distractors"),
        plot_roc({label: (last["roc"]["far"], last["roc"]["tar"])},
                 Path(out_dir) / f"{prefix}_roc.png", f"ROC with {n:,} distractors"),
        plot_rank1_vs_distractors(
            {label: ([r["distractors"] for r in result["results"]],
                     [r["rank1"] for r in result["results"]])},
            Path(out_dir) / f"{prefix}_rank1.png"),
    ]


def plot_face_montage(faces: list, path, title: str = "Input photos, aligned crops, predicted attributes"):
    """A figure of faces: per face (a column) the input photo, its aligned crop and a text
    block. ``faces`` = [{"photo": path, "crop": path, "text": str}] (a missing image is drawn
    as an empty box saying so)."""
    from mtdnn.images import load_image
    plt = _plt()
    n = len(faces)
    if n == 0:
        raise ValueError("no faces to draw")
    fig, axes = plt.subplots(3, n, figsize=(2.1 * n, 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1, 1.15]})
    for j, face in enumerate(faces):
        for i, key in enumerate(("photo", "crop")):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            try:
                ax.imshow(load_image(face[key])[:, :, ::-1])  # BGR -> RGB
            except (OSError, ValueError) as e:
                ax.text(0.5, 0.5, f"no {key}:\n{type(e).__name__}", ha="center", va="center", fontsize=7)
            if j == 0:
                ax.set_ylabel("input photo" if key == "photo" else "aligned 112x96", fontsize=8)
        ax = axes[2][j]
        ax.axis("off")
        ax.text(0, 1, face.get("text", ""), va="top", ha="left", fontsize=6.5, family="monospace",
                transform=ax.transAxes)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
