"""The README's picture: one photo through the whole model, from real data.

:func:`overview` runs a trained run folder (:class:`mtdnn.FaceModel`) on a photo and two others
(one of the same person, one of someone else) and returns plain data: the face it found, the
aligned crop, the identity head's scores against the two others at the card's threshold, and
the attribute head's scores. :func:`plot_overview` draws that data as one PNG:
input photo -> aligned crop -> the two heads' outputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mtdnn.evaluation.plots import _plt, _save


def overview(model, photo, same, other) -> dict:
    """What ``model`` (a :class:`mtdnn.FaceModel`) makes of ``photo``: its face (box, points,
    crop), the comparisons with ``same`` and ``other`` and the attribute scores."""
    from mtdnn.images import load_image
    face = model.face(photo)
    rows = []
    for label, path in (("same person", same), ("someone else", other)):
        c = model.compare(face, path)
        rows.append({"label": label, "photo": str(path), "score": c.score, "same": c.same})
    return {"photo": str(photo), "image": load_image(photo), "box": face.box, "points": face.points,
            "crop": face.crop, "comparisons": rows, "threshold": model.verification["threshold"],
            "rule": model.verification["rule"], "attributes": model.attributes(face)}


def _bgr(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[:, :, ::-1])


def _photo_panel(ax, data: dict) -> None:
    ax.imshow(_bgr(data["image"]))
    x1, y1, x2, y2 = data["box"][:4]
    ax.add_patch(_plt().Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
    ax.plot(data["points"][:, 0], data["points"][:, 1], "o", color="red", ms=3)
    ax.set_title("input photo\n(MTCNN box, 5 points)", fontsize=9)
    ax.axis("off")


def _identity_panel(ax, data: dict) -> None:
    rows = data["comparisons"]
    ax.barh([r["label"] for r in rows], [r["score"] for r in rows],
            color=["tab:green" if r["same"] else "tab:gray" for r in rows])
    ax.axvline(data["threshold"], color="k", ls="--", lw=1)
    ax.set_title(f"identity head: fc5 feature,\n{data['rule']} score vs. two other photos", fontsize=9)
    ax.set_xlabel(f"score (dashed: the card's threshold {data['threshold']:.3f})", fontsize=8)
    ax.tick_params(labelsize=8)


def _attribute_panel(ax, data: dict) -> None:
    names, scores = list(data["attributes"]), np.array(list(data["attributes"].values()))
    ax.barh(names, scores, color=np.where(scores > 0, "tab:blue", "tab:orange"))
    ax.axvline(0, color="k", lw=1)
    ax.invert_yaxis()
    ax.set_title("attribute head: 7 scores\n(> 0: present)", fontsize=9)
    ax.tick_params(labelsize=8)


def plot_overview(data: dict, path, title: str) -> Path:
    """One row: the photo with its detection, the aligned crop, the identity and attribute heads."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1.3, 0.7, 1.4, 1.4]})
    _photo_panel(axes[0], data)
    axes[1].imshow(_bgr(data["crop"]))
    axes[1].set_title("aligned crop\n112 x 96", fontsize=9)
    axes[1].axis("off")
    _identity_panel(axes[2], data)
    _attribute_panel(axes[3], data)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return Path(path)
