"""Attribute prediction accuracy (the paper's Tab. 4) from scores and {-1, +1} labels.

A score > 0 predicts +1, otherwise -1 (the attribute head regresses targets in {-1, +1}).
Per attribute: accuracy, balanced accuracy (mean of the true positive and true negative
rates), and the majority-class baseline (the accuracy of always predicting the more
frequent label of the evaluated set) so that an accuracy can be read against it. An
attribute whose balanced accuracy is at or below 50 % is flagged (``chance``): its accuracy,
however high, comes from the label balance, not from the face.

Extra figures, not the paper's (its Tab. 4 uses the sign rule above), kept apart in every
table: ``auc``, the area under the ROC of the scores (how well they rank positives above
negatives, whatever the threshold), and ``val_threshold``, the accuracy with a threshold per
attribute chosen on validation data (the one that maximises accuracy there; ties: the one
nearest 0) instead of 0 -- with no validation set given, the evaluated images are split in
two halves (even and odd rows) and each half is decided with the threshold chosen on the
other. Both tell a head whose scores are shifted (ranks well, thresholds badly) from one that
does not tell the classes apart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mtdnn import datasets
from mtdnn.paper import TABLE_4
from mtdnn.records import read_lines


def read_celeba_attributes(path):
    """CelebA ``list_attr_celeba.txt`` (read by ``mtdnn.datasets.read_celeba_attributes``) as
    ``(image_names, attribute_names, labels int8 N x A)``; every label must be -1 or +1."""
    table = datasets.read_celeba_attributes(path)
    return table.files, table.names, check_labels(table.values, str(path))


ANNOTATORS = 3  # the paper's Tab. 4 protocol: three annotators, majority vote


def read_labelled_subset(path):
    """A user's own hand-labelled images (the paper's Tab. 4 protocol: 1,000 FaceScrub images,
    three annotators, majority vote) as ``(image_names, attribute_names, labels int8 N x A)``.

    Tab-separated text; ``#`` lines are comments; the first other line names the columns:
    ``image``, then per attribute either its name (e.g. ``Male``: the label) or three annotator
    columns ``Male:1``, ``Male:2``, ``Male:3`` (the label is their majority), or both (then the
    label must equal the vote). Values are -1 or 1. Image names are matched to the predictions
    by file name without folders or extension, as CelebA's are. ValueError names the line of
    a bad value, a missing annotator column, a label that contradicts its vote, a repeated
    image or column."""
    path = Path(path)
    rows = read_lines(path, comments=True)  # the one record reader: split at \n only (mtdnn/records.py)
    if not rows:
        raise ValueError(f"{path}: empty; expected a header line 'image<TAB>attribute...' and one line an image")
    columns, names, votes = _labelled_header(path, *rows[0])
    images, labels, seen = [], [], {}
    for line_no, line in rows[1:]:
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != len(columns):
            raise ValueError(f"{path}, line {line_no}: {len(cells)} tab-separated fields for {len(columns)} columns")
        if cells[0] in seen:
            raise ValueError(f"{path}, line {line_no}: image {cells[0]!r} repeated (first on line {seen[cells[0]]})")
        seen[cells[0]] = line_no
        images.append(cells[0])
        labels.append(_labelled_row(f"{path}, line {line_no}", dict(zip(columns[1:], cells[1:])), names, votes))
    if not images:
        raise ValueError(f"{path}: a header but no labelled image")
    return images, names, np.array(labels, dtype=np.int8)


def _labelled_header(path, head_no: int, head: str):
    """(columns, attribute names, {name: its annotator columns}) of a labelled subset's header."""
    columns = [c.strip() for c in head.split("\t")]
    if columns[0] != "image" or len(set(columns)) != len(columns):
        raise ValueError(f"{path}, line {head_no}: the header must start with 'image' and name each column "
                         f"once (tab-separated), got {columns}")
    names, votes = [], {}
    for c in columns[1:]:
        name, _, k = c.partition(":")
        if name not in names:
            names.append(name)
        if k:
            votes.setdefault(name, []).append(c)
    for name, cols in votes.items():
        if sorted(cols) != [f"{name}:{k}" for k in range(1, ANNOTATORS + 1)]:
            raise ValueError(f"{path}, line {head_no}: {name} needs the annotator columns "
                             f"{', '.join(f'{name}:{k}' for k in range(1, ANNOTATORS + 1))}, got {', '.join(cols)}")
    missing = [n for n in names if n not in columns and n not in votes]
    if missing:
        raise ValueError(f"{path}, line {head_no}: no label column for {', '.join(missing)}")
    return columns, names, votes


def _labelled_row(where: str, cells: dict, names, votes) -> list[int]:
    """One image's labels (a column's value, else its annotators' majority) from ``{column: text}``."""
    value = {}
    for c, v in cells.items():
        if v not in ("-1", "1"):
            raise ValueError(f"{where}, column {c}: expected -1 or 1, got {v!r}")
        value[c] = int(v)
    row = []
    for name in names:
        voted = None
        if name in votes:
            voted = 1 if sum(value[c] for c in votes[name]) > 0 else -1
        label = value.get(name, voted)
        if voted is not None and label != voted:
            raise ValueError(f"{where}: {name} is {label} but its annotators voted {voted}")
        row.append(label)
    return row


def check_labels(labels, source: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    bad = ~np.isin(labels, (-1, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{source}: labels must be -1 or +1, found {labels[r, c].item()!r} "
                         f"at row {r}, column {c}")
    return labels.astype(np.int8)


def _rates(pred, y) -> tuple[float, float]:
    """(accuracy, balanced accuracy) of {-1, +1} decisions ``pred`` against labels ``y``."""
    pos, neg = y == 1, y == -1
    tpr = float(np.mean(pred[pos] == 1)) if pos.any() else float("nan")
    tnr = float(np.mean(pred[neg] == -1)) if neg.any() else float("nan")
    return float(np.mean(pred == y)), float(np.nanmean([tpr, tnr]))


def auc(scores, labels) -> float | None:
    """Area under the ROC of ``scores`` for labels in {-1, +1} (the Mann-Whitney statistic,
    ties counted half); None when one class is absent."""
    from scipy.stats import rankdata
    y = np.asarray(labels) == 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def choose_threshold(scores, labels) -> float:
    """The threshold t (score > t predicts +1) that maximises the accuracy on ``scores``:
    midpoints between consecutive distinct scores and both ends; ties -> the one nearest 0."""
    scores, y = np.asarray(scores, float), np.asarray(labels)
    s = np.unique(scores)
    cands = np.r_[s[0] - 1.0, (s[:-1] + s[1:]) / 2, s[-1]]
    neg, pos = np.sort(scores[y == -1]), np.sort(scores[y == 1])
    right = np.searchsorted(neg, cands, "right") + pos.size - np.searchsorted(pos, cands, "right")
    best = cands[right == right.max()]
    return float(best[np.argmin(np.abs(best))])


def val_threshold_rates(scores, labels, val=None) -> dict:
    """Accuracy and balanced accuracy of one attribute with a threshold chosen on validation
    data: ``val`` = (scores, labels), or None for the two-halves rule of the module doc."""
    scores, labels = np.asarray(scores, float), np.asarray(labels)
    if val is not None:
        t = choose_threshold(*val)
        acc, bal = _rates(np.where(scores > t, 1, -1), labels)
        return {"accuracy": acc, "balanced_accuracy": bal, "threshold": t, "chosen_on": "validation set"}
    half = np.arange(len(scores)) % 2
    pred, thr = np.empty(len(scores), int), []
    for h in (0, 1):
        other = half != h
        if not other.any():
            return {"accuracy": None, "balanced_accuracy": None, "threshold": None,
                    "chosen_on": "the other half (too few images)"}
        t = choose_threshold(scores[other], labels[other])
        pred[half == h] = np.where(scores[half == h] > t, 1, -1)
        thr.append(t)
    acc, bal = _rates(pred, labels)
    return {"accuracy": acc, "balanced_accuracy": bal, "threshold": thr,
            "chosen_on": "the other half of the evaluated images (even/odd rows)"}


def attribute_accuracy(scores, labels, names: Sequence[str], val=None) -> dict:
    """Per-attribute accuracy, balanced accuracy and majority baseline; extra: AUC and the
    accuracy at a threshold chosen on validation data (module doc).

    scores: N x A predictions (threshold 0); labels: N x A in {-1, +1}; names: A names;
    val: optional (scores, labels) of validation images (M x A each).
    Returns ``{"attributes": [{name, accuracy, balanced_accuracy, majority_baseline,
    positive_rate, predicted_positive_rate, chance, n, extra: {auc, val_threshold}}],
    "mean_accuracy": ...}``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = check_labels(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores of shape {scores.shape} for labels of shape {labels.shape}")
    if scores.shape[1] != len(names):
        raise ValueError(f"{scores.shape[1]} score columns for {len(names)} attribute names")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).any(axis=1).sum())} prediction row(s) "
                         f"hold NaN or inf")
    if scores.shape[0] == 0:
        raise ValueError("no predictions")
    if val is not None:
        val = (np.asarray(val[0], dtype=np.float64), check_labels(val[1], "validation labels"))
        if val[0].shape != val[1].shape or val[0].shape[1:] != scores.shape[1:]:
            raise ValueError(f"validation scores of shape {val[0].shape} for labels of shape {val[1].shape} "
                             f"and {scores.shape[1]} attributes")
    pred = np.where(scores > 0, 1, -1)
    rows = []
    for a, name in enumerate(names):
        y, p = labels[:, a], pred[:, a]
        pos, neg = y == 1, y == -1
        acc, bal = _rates(p, y)
        rows.append({"name": name, "accuracy": acc, "balanced_accuracy": bal,
                     "majority_baseline": float(max(pos.mean(), neg.mean())),
                     "positive_rate": float(pos.mean()), "predicted_positive_rate": float(np.mean(p == 1)),
                     "chance": bool(bal <= 0.5), "n": int(len(y)),
                     "extra": {"auc": auc(scores[:, a], y),
                               "val_threshold": val_threshold_rates(
                                   scores[:, a], y, None if val is None else (val[0][:, a], val[1][:, a]))}})
    return {"kind": "attributes", "threshold": "score > 0 predicts +1",
            "extra": "auc and val_threshold are not the paper's figures (its rule is the sign of the score)",
            "attributes": rows, "mean_accuracy": float(np.mean([r["accuracy"] for r in rows]))}


def format_table(result: dict) -> str:
    """A plain-text table of ``attribute_accuracy``'s result, with the paper's Tab. 4."""
    head = (f"{'attribute':<18}{'acc %':>8}{'bal. %':>8}{'major. %':>10}{'MOON %':>8}{'paper %':>9}"
            f"   | extra: {'AUC':>6}{'acc@val-thr %':>15}")
    lines = [head, "-" * len(head)]
    if result.get("protocol"):
        lines.insert(0, result["protocol"])
    for r in result["attributes"]:
        moon, paper = TABLE_4.get(r["name"], (float("nan"),) * 2)
        ex = r.get("extra", {})
        vt = (ex.get("val_threshold") or {}).get("accuracy")
        lines.append(f"{r['name']:<18}{100 * r['accuracy']:8.2f}{100 * r['balanced_accuracy']:8.2f}"
                     f"{100 * r['majority_baseline']:10.2f}{moon:8.2f}{paper:9.2f}"
                     f"   |        {_num(ex.get('auc'), 1, 4):>6}{_num(vt, 100, 2):>15}"
                     + ("   <- balanced accuracy <= 50 %: no better than chance" if r.get("chance") else ""))
    lines.append(f"{'mean':<18}{100 * result['mean_accuracy']:8.2f}")
    lines.append("extra (not the paper's figures): AUC of the scores; accuracy with a threshold chosen on "
                 f"{_chosen_on(result)} instead of 0")
    return "\n".join(lines)


def _num(x, scale, digits) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def _chosen_on(result: dict) -> str:
    rows = result.get("attributes") or [{}]
    return ((rows[0].get("extra") or {}).get("val_threshold") or {}).get("chosen_on", "validation data")
