"""LFW verification: View 2 ten-fold accuracy, View 1 accuracy, ROC and TAR at FAR.

Two rules for the 10-fold accuracy:

``sphereface`` (default; the 112x96 Caffe lineage's ``evaluation.m``): the input features
    are those of the image and its mirror concatenated (``--mirror concat`` at extraction);
    for each fold the mean of the features of both images of every pair in the 9 training
    folds is subtracted, features are L2-normalised, the score is the cosine; the threshold
    is chosen on the grid -1:1e-4:1 maximising accuracy on the 9 training folds (a matched
    pair is right when score > t, a mismatched one when score < t), ties resolved by the
    mean of the best thresholds, then applied to the held-out fold. Std over folds is
    MATLAB's (ddof=1).
``insightface`` (``recognition/arcface_torch/eval/verification.py``): L2-normalised features
    (``--mirror sum`` at extraction there), squared euclidean distance, thresholds
    0:0.01:4, a pair predicted matched when distance < t, the first best threshold on the 9
    training folds; std is numpy's (ddof=0).

A pair whose image has no feature raises ValueError naming the image (``missing="error"``)
or, with ``missing="wrong"``, takes no part in the choice of thresholds and the feature mean
and counts as an error in its test fold; the missing images are listed in the result.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Sequence

import numpy as np

from mtdnn.datasets import read_lfw_pairs, read_lfw_people

from .features_io import check_features, image_key, name_index
from .roc import roc_curve, tar_at_far, thin_roc

RULES = ("sphereface", "insightface")


@dataclass(frozen=True)
class Pair:
    image1: str   # relative path, ``Name/Name_0001.jpg``
    image2: str
    same: bool
    fold: int

    @property
    def keys(self) -> tuple[str, str]:
        """The two images' keys, ``Name_0001`` (LFW's file names without extension)."""
        return image_key(self.image1), image_key(self.image2)


def read_pairs(path) -> list[Pair]:
    """LFW pairs files (``mtdnn.datasets.read_lfw_pairs``) as a flat list of ``Pair``.
    View 2 ``pairs.txt``: 10 folds (fold = 0..9) of 300 matched then 300 mismatched pairs;
    View 1 ``pairsDevTrain/Test.txt``: one fold (fold = 0)."""
    return [Pair(a, b, bool(same), f) for f, fold in enumerate(read_lfw_pairs(path))
            for a, b, same in fold]


def lfw_person(name: str) -> str:
    """The person of an LFW image: ``Aaron_Eckhart/Aaron_Eckhart_0001.jpg`` or
    ``Aaron_Eckhart_0001.jpg`` -> ``Aaron_Eckhart``."""
    p = PurePosixPath(name.replace("\\", "/"))
    return p.parent.name if p.parent.name else re.sub(r"_\d+$", "", p.stem)


def read_people(path) -> list[tuple[str, int]]:
    """LFW people files (View 1 or View 2, all folds) as ``(name, n_images)``."""
    return [entry for fold in read_lfw_people(path) for entry in fold]


def split_lfw(names, min_images=4, exclude=()):
    """The identification stand-in's split of LFW images (``tools/eval_identification.py``):
    indices of the probe images (people with at least ``min_images`` images), their person,
    and indices of the images of one-image people (distractors); people in ``exclude`` are
    in neither."""
    people = np.array([lfw_person(n) for n in names])
    uniq, inv, count = np.unique(people, return_inverse=True, return_counts=True)
    excluded = np.isin(people, list(exclude))
    probe = np.flatnonzero((count[inv] >= min_images) & ~excluded)
    single = np.flatnonzero((count[inv] == 1) & ~excluded)
    return probe, people[probe], single


def pair_rows(pairs: Sequence[Pair], names: Sequence[str], missing: str = "error"):
    """Feature rows of the pairs' images, matched by file name without extension.

    Returns ``(rows1, rows2, present, missing_images)``; rows of absent images are -1.
    """
    if missing not in ("error", "wrong"):
        raise ValueError(f"missing must be 'error' or 'wrong', not {missing!r}")
    index = name_index(names, "feature names")
    k1 = [p.keys[0] for p in pairs]
    k2 = [p.keys[1] for p in pairs]
    r1 = np.array([index.get(k, -1) for k in k1])
    r2 = np.array([index.get(k, -1) for k in k2])
    absent = sorted({k for k, r in zip(k1 + k2, np.r_[r1, r2]) if r < 0})
    if absent and missing == "error":
        raise ValueError(f"{len(absent)} LFW image(s) of the pairs have no feature, e.g. "
                         f"{', '.join(absent[:5])} (use missing='wrong' to count those pairs "
                         f"as errors)")
    return r1, r2, (r1 >= 0) & (r2 >= 0), absent


# ---------------------------------------------------------------------------- rules
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sphereface_scores(f1, f2, mean):
    """Cosine of the mean-subtracted features (rows of f1 and f2 are the pairs' images)."""
    return np.einsum("ij,ij->i", _unit(f1 - mean), _unit(f2 - mean))


def pair_scores(f1, f2, rule: str, mean=None):
    """Each pair's score under ``rule`` (rows of f1 and f2 are the pairs' images): 'sphereface',
    the cosine after subtracting ``mean``; 'insightface', the squared distance of the unit
    vectors. The evaluators and the model card's users (mtdnn.facemodel) score with this."""
    if rule == "sphereface":
        return sphereface_scores(f1, f2, 0 if mean is None else mean)
    return np.sum((_unit(f1) - _unit(f2)) ** 2, axis=1)


def sphereface_threshold(scores, same, n_steps: int = 10000) -> float:
    """Best threshold on the grid (-n:n)/n: accuracy counts same pairs with score > t and
    different pairs with score < t; ties -> mean of the best thresholds."""
    thr = np.arange(-n_steps, n_steps + 1) / n_steps
    acc = _accuracies(scores, same, thr, "gt")
    return float(np.mean(thr[acc == acc.max()]))


def insightface_threshold(dist, same, step: float = 0.01, top: float = 4.0) -> float:
    """First threshold of 0:step:top maximising accuracy with 'matched' = distance < t."""
    thr = np.arange(0, top, step)
    acc = _accuracies(-dist, same, -thr, "gt_or_eq_neg")
    return float(thr[np.argmax(acc)])


def _accuracies(scores, same, thr, mode):
    """Accuracy at every threshold from sorted scores (O((n + T) log n), not O(nT))."""
    s_same = np.sort(scores[same])
    s_diff = np.sort(scores[~same])
    if mode == "gt":      # same right when s > t, diff right when s < t
        right = (s_same.size - np.searchsorted(s_same, thr, "right")
                 + np.searchsorted(s_diff, thr, "left"))
    else:                 # scores = -dist, t = -thr: same right when dist < thr i.e. s > t,
        right = (s_same.size - np.searchsorted(s_same, thr, "right")   # diff right when
                 + np.searchsorted(s_diff, thr, "right"))              # dist >= thr: s <= t
    return right / scores.size


def training_mean(feats, r1, r2, train):
    """The sphereface rule's feature mean: over both images of every pair in ``train``."""
    return np.concatenate([feats[r1[train]], feats[r2[train]]]).mean(axis=0)


def _fold_scores(feats, r1, r2, present, train, rule):
    """Scores of all present pairs with the statistics of the training pairs ``train``."""
    f1 = np.zeros((len(r1), feats.shape[1]))
    f2 = np.zeros_like(f1)
    f1[present], f2[present] = feats[r1[present]], feats[r2[present]]
    mean = training_mean(feats, r1, r2, train & present) if rule == "sphereface" else None
    s = np.full(len(r1), np.nan)
    s[present] = pair_scores(f1[present], f2[present], rule, mean)
    return s


def _choose(values, same, rule):
    return sphereface_threshold(values, same) if rule == "sphereface" else \
        insightface_threshold(values, same)


def _right(values, same, thr, rule):
    """Per pair: is the decision right? Pairs without a score (NaN) are wrong."""
    with np.errstate(invalid="ignore"):
        if rule == "sphereface":
            return np.where(same, values > thr, values < thr) & ~np.isnan(values)
        return np.where(same, values < thr, values >= thr) & ~np.isnan(values)


def ten_fold_accuracy(features, rows1, rows2, same, folds, present=None, rule="sphereface"):
    """LFW View 2 accuracy per fold (see the module doc for the two rules).

    Returns a dict with ``accuracy`` (mean), ``std``, per-fold ``fold_accuracy`` and
    ``fold_threshold``, and ``scores``: every pair's held-out score as a similarity
    (cosine, or minus the squared distance for insightface; NaN for missing pairs).
    """
    if rule not in RULES:
        raise ValueError(f"unknown LFW rule {rule!r}: use one of {', '.join(RULES)}")
    feats = check_features(features, "LFW features").astype(np.float64)
    same = np.asarray(same, dtype=bool)
    folds = np.asarray(folds)
    present = np.ones(len(same), dtype=bool) if present is None else np.asarray(present)
    accs, thrs = [], []
    held_out = np.full(len(same), np.nan)
    for f in np.unique(folds):
        test, train = folds == f, folds != f
        v = _fold_scores(feats, rows1, rows2, present, train, rule)
        t = train & present
        thr = _choose(v[t], same[t], rule)
        accs.append(float(np.mean(_right(v[test], same[test], thr, rule))))
        thrs.append(thr)
        held_out[test] = v[test] if rule == "sphereface" else -v[test]
    accs = np.array(accs)
    return {"rule": rule, "accuracy": float(accs.mean()),
            "std": float(accs.std(ddof=1 if rule == "sphereface" else 0)),
            "fold_accuracy": accs.tolist(), "fold_threshold": thrs, "scores": held_out}


def view1_accuracy(features, train, test, rule="sphereface", fars=None):
    """LFW View 1: threshold (and, for sphereface, feature mean) from pairsDevTrain,
    accuracy on pairsDevTest. ``train`` and ``test`` are ``(rows1, rows2, same, present)``.
    With ``fars``, also the ROC of the pairsDevTest scores and TAR at those FARs."""
    feats = check_features(features, "LFW features").astype(np.float64)
    r1 = np.r_[train[0], test[0]]
    r2 = np.r_[train[1], test[1]]
    same = np.r_[train[2], test[2]].astype(bool)
    present = np.r_[train[3], test[3]].astype(bool)
    is_train = np.r_[np.ones(len(train[0]), bool), np.zeros(len(test[0]), bool)]
    v = _fold_scores(feats, r1, r2, present, is_train, rule)
    t = is_train & present
    thr = _choose(v[t], same[t], rule)
    out = {"rule": rule, "threshold": thr,
           "train_accuracy": float(np.mean(_right(v[is_train], same[is_train], thr, rule))),
           "accuracy": float(np.mean(_right(v[~is_train], same[~is_train], thr, rule))),
           "n_train_pairs": int(t.sum()), "n_test_pairs": int((~is_train).sum())}
    if rule == "sphereface":  # what a new pair's features need before the threshold applies (model card)
        out["feature_mean"] = training_mean(feats, r1, r2, t)
    if fars is not None:  # similarities: cosine, or minus the squared distance (insightface)
        out.update(verification_roc(v[~is_train] if rule == "sphereface" else -v[~is_train], same[~is_train], fars))
    return out


def verification_roc(scores, same, fars=(1e-3, 1e-2)):
    """ROC of the scored pairs (missing pairs left out) and TAR at ``fars`` (rule ``kth``)."""
    ok = ~np.isnan(scores)
    gen, imp = scores[ok & same], scores[ok & ~same]
    far, tar, _ = roc_curve(gen, imp)
    far, tar = thin_roc(far, tar)
    return {"roc": {"far": far.tolist(), "tar": tar.tolist()},
            "tar_at_far": [tar_at_far(gen, imp, imp.size, f, "kth") for f in fars]}


def evaluate_lfw(features, names, pairs_path, *, rule="sphereface", missing="error",
                 view1: tuple | None = None, fars=(1e-3,)) -> dict:
    """Everything ``tools/eval_lfw.py`` reports, from features and their image names.

    ``view1``: optional ``(pairsDevTrain path, pairsDevTest path)``. ``pairs_path`` None: View 1
    only (for a model trained on View 1's training people, whose View 2 figure would be tainted).
    """
    missing_rule = "missing pairs counted as errors" if missing == "wrong" else "missing images are an error"
    if pairs_path is None:
        if view1 is None:
            raise ValueError("nothing to evaluate: give the View 2 pairs file or the View 1 files")
        out = {"kind": "lfw", "protocol": "LFW View 1 only", "rule": rule, "missing_rule": missing_rule,
               "missing_images": []}
    else:
        pairs = read_pairs(pairs_path)
        r1, r2, present, absent = pair_rows(pairs, names, missing)
        same = np.array([p.same for p in pairs])
        folds = np.array([p.fold for p in pairs])
        res = ten_fold_accuracy(features, r1, r2, same, folds, present, rule)
        scores = res.pop("scores")
        out = {"kind": "lfw", "protocol": "LFW View 2, 10-fold, unrestricted", "pairs": str(pairs_path),
               **res, "n_pairs": len(pairs), "n_missing_pairs": int((~present).sum()),
               "missing_rule": missing_rule, "missing_images": absent}
        out.update(verification_roc(scores, same, fars))
    if view1 is not None:
        parts = []
        for path in view1:
            pp = read_pairs(path)
            a, b, ok, miss = pair_rows(pp, names, missing)
            parts.append((a, b, np.array([p.same for p in pp]), ok))
            out.setdefault("missing_images", [])
            out["missing_images"] = sorted(set(out["missing_images"]) | set(miss))
        out["view1"] = {"train": str(view1[0]), "test": str(view1[1]),
                        **view1_accuracy(features, parts[0], parts[1], rule, fars=fars)}
    return out
