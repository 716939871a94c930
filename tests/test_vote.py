"""mtdnn.vote: per-identity majority vote, its tie rule and the change counts."""
import numpy as np
import pytest

from mtdnn.vote import majority_vote, own_predictions


def test_majority_wins_and_changes_are_counted():
    # identity a: 3 images, attribute 0 votes +,+,- ; attribute 1 votes -,-,-
    # identity b: 2 images, attribute 0 votes -,- ; attribute 1 votes +,-  (tie)
    scores = np.array([[0.9, -0.2], [0.1, -0.5], [-0.8, -0.1],
                       [-0.3, 0.7], [-0.2, -0.1]])
    ids = ["a", "a", "a", "b", "b"]
    r = majority_vote(scores, ids)
    assert r.labels.dtype == np.int8
    assert r.labels.tolist() == [[1, -1], [1, -1], [1, -1], [-1, 1], [-1, 1]]
    # changed: image 2 attr 0 (- -> +); image 4 attr 1 (- -> +: tie, mean score +0.3 > 0)
    assert r.changed.tolist() == [1, 1] and r.changed_total == 2


def test_tie_goes_to_sign_of_mean_score_then_negative():
    r = majority_vote([0.2, -0.9], [7, 7])  # 1 vote each, mean -0.35
    assert r.labels.tolist() == [-1, -1] and r.changed_total == 1
    r = majority_vote([0.9, -0.2], [7, 7])  # mean +0.35
    assert r.labels.tolist() == [1, 1]
    r = majority_vote([1, -1], [7, 7])  # +-1 predictions: mean exactly 0 -> -1
    assert r.labels.tolist() == [-1, -1] and r.changed.tolist() == [1]
    r = majority_vote([0.0, 0.0, 0.5, -0.5], [1, 1, 1, 1])  # zero scores abstain; tie; mean 0
    assert r.labels.tolist() == [-1] * 4


def test_zero_scores_do_not_vote():
    # votes: one +, no -, two abstentions -> +
    r = majority_vote([0.0, 0.0, 0.3], ["x", "x", "x"])
    assert r.labels.tolist() == [1, 1, 1]
    assert r.changed_total == 2  # the two zeros were -1 on their own


def test_single_image_identity_keeps_its_prediction():
    scores = np.array([[0.4, -2.0, 0.0], [-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    r = majority_vote(scores, ["solo", "pair", "pair"])
    assert r.labels[0].tolist() == own_predictions(scores[0]).tolist() == [1, -1, -1]
    assert r.changed_total == 0


def test_plus_minus_one_predictions_and_shapes():
    preds = np.array([[1, 1], [1, -1], [-1, -1], [1, -1]])
    r = majority_vote(preds, np.array([0, 0, 0, 1]))
    assert r.labels.tolist() == [[1, -1]] * 3 + [[1, -1]]
    assert r.changed.tolist() == [1, 1]
    with pytest.raises(ValueError, match="N x M"):
        majority_vote(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="finite"):
        majority_vote([np.nan], [0])
