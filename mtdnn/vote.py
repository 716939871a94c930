"""Per-identity majority vote of attribute labels (Sec. 3.2 of the paper).

A classifier predicts the attributes of every training image; all images of one identity then
get that identity's majority label, since attributes such as Big_Nose or Male belong to the
person, not to one photo.

Rules (``tests/test_vote.py``):

- an image's own prediction is the sign of its score: +1 for score > 0, -1 for score < 0;
  a score of exactly 0 casts no vote;
- the identity's label is the sign with more votes;
- a tie (equal votes, including no votes) goes to the sign of the mean score of the
  identity's images; if that mean is exactly 0 too (e.g. one +1 and one -1 prediction), the
  label is -1: each of the paper's seven attributes is positive in under half of CelebA, so
  "absent" is the likelier label;
- an identity with a single image keeps its own prediction (a zero score gives -1, as above).

Inputs may be raw scores (any real numbers) or +-1 predictions alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VoteResult:
    """``labels``: N x M int8 in {-1, +1}; ``changed``: per-attribute count (M) of images whose
    label differs from their own prediction; ``changed_total``: their sum."""
    labels: np.ndarray
    changed: np.ndarray
    changed_total: int


def own_predictions(scores: np.ndarray) -> np.ndarray:
    """Each image's own +-1 label: the sign of its score, 0 counting as -1."""
    return np.where(np.asarray(scores) > 0, 1, -1).astype(np.int8)


def majority_vote(scores, identities) -> VoteResult:
    """Give every image its identity's majority label.

    ``scores``: N x M (or N) attribute scores or +-1 predictions; ``identities``: N identity
    labels of any hashable type. Returns a :class:`VoteResult`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    squeeze = scores.ndim == 1
    if squeeze:
        scores = scores[:, None]
    identities = np.asarray(identities)
    if scores.ndim != 2 or len(identities) != len(scores):
        raise ValueError(f"scores must be N x M with N = {len(identities)} identities, got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    _, group = np.unique(identities, return_inverse=True)
    n_groups = group.max() + 1 if len(group) else 0
    # Per identity and attribute: votes for +1 minus votes for -1, and the sum of scores.
    margin = np.zeros((n_groups, scores.shape[1]))
    total = np.zeros((n_groups, scores.shape[1]))
    np.add.at(margin, group, np.sign(scores))
    np.add.at(total, group, scores)
    tie_break = np.where(total > 0, 1, -1)
    voted = np.where(margin > 0, 1, np.where(margin < 0, -1, tie_break)).astype(np.int8)
    labels = voted[group]
    changed = (labels != own_predictions(scores)).sum(axis=0)
    if squeeze:
        labels = labels[:, 0]
    return VoteResult(labels, changed, int(changed.sum()))
