"""Verification ROC curves and TAR at a given FAR, shared by the LFW, MegaFace and BLUFR evaluators.

Scores are similarities: a pair is accepted when its score is >= the threshold.
Two rules for TAR at a target FAR, named in every result that uses them:

``kth``    the threshold is the k-th highest impostor score with k = round(FAR * n_impostor)
           (rounding halves up, as MATLAB's ``round``); TAR = fraction of genuine scores >= it.
           With k = 0 only scores above the highest impostor are accepted. This is BLUFR's
           ``EvalROC`` rule. With tied impostor scores the achieved FAR can exceed k/n, so the
           achieved FAR is reported too.
``interp`` TAR linearly interpolated at FAR on the exact ROC, whose points are the
           (FAR, TAR) pairs of every distinct impostor score taken as threshold, starting at
           (0, fraction of genuine scores above the highest impostor).
"""
from __future__ import annotations

import math

import numpy as np

TAR_RULES = {
    "kth": "threshold = k-th highest impostor score, k = round(FAR * n_impostor) (BLUFR EvalROC); "
           "accept score >= threshold; k = 0 accepts only scores above every impostor",
    "interp": "TAR linearly interpolated at FAR between the exact ROC points of all distinct "
              "impostor-score thresholds",
}


def matlab_round(x: float) -> int:
    """Round half away from zero (MATLAB's ``round``), not Python's half-to-even."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def count_ge(sorted_values: np.ndarray, thresholds) -> np.ndarray:
    """How many of the ascending ``sorted_values`` are >= each threshold."""
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="left")


def count_gt(sorted_values: np.ndarray, thresholds) -> np.ndarray:
    """How many of the ascending ``sorted_values`` are > each threshold."""
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="right")


def roc_curve(genuine, impostor):
    """Exact ROC: ``(far, tar, thresholds)`` at every distinct score, thresholds descending.

    The first point is at threshold +inf (FAR 0, TAR 0); accept means score >= threshold.
    """
    gen = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    imp = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    if gen.size == 0 or imp.size == 0:
        raise ValueError(f"ROC needs genuine and impostor scores, got {gen.size} and {imp.size}")
    thr = np.unique(np.concatenate([gen, imp]))[::-1]
    far = count_ge(imp, thr) / imp.size
    tar = count_ge(gen, thr) / gen.size
    return np.r_[0.0, far], np.r_[0.0, tar], np.r_[np.inf, thr]


def tar_at_far(genuine, impostor_top, n_impostor: int, far: float, rule: str = "kth") -> dict:
    """TAR at ``far`` from the genuine scores and the highest impostor scores.

    ``impostor_top`` needs only the highest impostor scores (any order), at least
    round(far * n_impostor) of them (``kth``) or enough to reach ``far`` (``interp``);
    ``n_impostor`` is the number of all impostor pairs. Returns a dict with ``tar``,
    ``threshold``, ``far`` (asked), ``far_achieved`` and ``rule``.
    """
    if rule not in TAR_RULES:
        raise ValueError(f"unknown TAR rule {rule!r}: use one of {', '.join(TAR_RULES)}")
    gen = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    top = np.sort(np.asarray(impostor_top, dtype=np.float64).ravel())  # ascending
    if gen.size == 0 or n_impostor <= 0 or top.size == 0:
        raise ValueError("TAR at FAR needs genuine scores and impostor scores")
    if not 0 <= far <= 1:
        raise ValueError(f"FAR {far} is not in [0, 1]")
    k = matlab_round(far * n_impostor)
    if k > top.size:
        raise ValueError(f"FAR {far:g} needs the {k} highest of {n_impostor} impostor scores, "
                         f"only {top.size} kept")
    if rule == "kth":
        if k == 0:
            thr = top[-1]
            tar = count_gt(gen, thr) / gen.size
            achieved = 0.0
            thr = float(np.nextafter(thr, np.inf))
        else:
            thr = top[-k]
            tar = count_ge(gen, thr) / gen.size
            achieved = count_ge(top, thr) / n_impostor
        return {"far": far, "tar": float(tar), "threshold": float(thr),
                "far_achieved": float(achieved), "rule": rule, "n_impostor": int(n_impostor),
                "in_range": far_in_range(far, n_impostor)}
    # interp: the exact ROC restricted to the kept impostors
    thr = np.unique(top)[::-1]
    fars = np.r_[0.0, count_ge(top, thr) / n_impostor]
    tars = np.r_[count_gt(gen, top[-1]) / gen.size, count_ge(gen, thr) / gen.size]
    if far > fars[-1] and top.size < n_impostor:
        raise ValueError(f"FAR {far:g} is beyond the {top.size} kept impostor scores")
    return {"far": far, "tar": float(np.interp(far, fars, tars)), "threshold": None,
            "far_achieved": far, "rule": rule, "n_impostor": int(n_impostor),
            "in_range": far_in_range(far, n_impostor)}


def far_in_range(far: float, n_impostor: int) -> bool:
    """Whether a FAR can be measured with ``n_impostor`` impostor pairs: below 1 / n_impostor
    not one false accept is allowed, so a "TAR at that FAR" is TAR at FAR 0 under another
    name (the demo's 1e-6 with 2,597 x 22 impostor pairs)."""
    return far * n_impostor >= 1


def tar_text(t: dict, n_impostor: int | None = None, digits: int = 2) -> str:
    """A TAR-at-FAR result (:func:`tar_at_far`) as a table cell: the TAR in %, or *out of
    range* when its FAR is below 1 / (number of impostor pairs) (``n_impostor`` from the
    result, else the given one; results written before it was recorded with neither are
    printed as they are)."""
    n = t.get("n_impostor", n_impostor)
    if n and not far_in_range(t["far"], n):
        return f"out of range (FAR < 1/{n:,})"
    return f"{100 * t['tar']:.{digits}f}"


def thin_roc(far, tar, n_points: int = 400, far_min: float | None = None):
    """A subset of ROC points, spread evenly in log FAR, for plots and JSON (keeps both ends)."""
    far = np.asarray(far, dtype=np.float64)
    tar = np.asarray(tar, dtype=np.float64)
    if far.size <= n_points:
        return far, tar
    pos = far[far > 0]
    lo = far_min or (pos.min() if pos.size else 1e-12)
    targets = np.logspace(np.log10(lo), np.log10(max(far.max(), lo)), n_points)
    idx = np.unique(np.r_[0, np.clip(np.searchsorted(far, targets), 0, far.size - 1), far.size - 1])
    return far[idx], tar[idx]


class TopK:
    """The k largest values seen so far, fed in batches (a running top-k).

    ``threshold`` is the smallest kept value once k are kept (-inf before): a new value can
    only enter when it is above it, so callers can pre-filter candidates cheaply.
    """

    def __init__(self, k: int, dtype=np.float32):
        if k <= 0:
            raise ValueError("TopK needs k >= 1")
        self.k = int(k)
        self.values = np.empty(0, dtype=dtype)
        self.threshold = -np.inf

    def push(self, candidates) -> None:
        c = np.asarray(candidates, dtype=self.values.dtype).ravel()
        if c.size == 0:
            return
        v = np.concatenate([self.values, c])
        if v.size > self.k:
            v = np.partition(v, v.size - self.k)[v.size - self.k:]
        self.values = v
        if v.size == self.k:
            self.threshold = float(v.min())

    def sorted_desc(self) -> np.ndarray:
        return np.sort(self.values)[::-1]
