"""ROC, TAR at FAR rules and the running top-k, on hand-checked cases."""
import numpy as np
import pytest

from mtdnn.evaluation.roc import TopK, matlab_round, roc_curve, tar_at_far, thin_roc

GEN = [0.9, 0.8, 0.3]
IMP = [0.85, 0.2, 0.1, 0.0]


def test_matlab_round_halves_up():
    assert [matlab_round(x) for x in (0.5, 1.5, 2.5, 0.49, -0.5)] == [1, 2, 3, 0, -1]


def test_roc_curve_hand_case():
    far, tar, thr = roc_curve(GEN, IMP)
    assert thr[0] == np.inf and far[0] == 0 and tar[0] == 0
    pts = dict(zip(thr[1:], zip(far[1:], tar[1:])))
    assert pts[0.9] == (0.0, 1 / 3)
    assert pts[0.85] == (0.25, 1 / 3)
    assert pts[0.3] == (0.25, 1.0)
    assert pts[0.0] == (1.0, 1.0)


@pytest.mark.parametrize("far,tar,thr,achieved", [
    (0.25, 1 / 3, 0.85, 0.25),   # k = 1: threshold = highest impostor, accepted with >=
    (0.5, 1.0, 0.2, 0.5),        # k = 2
    (0.1, 1 / 3, None, 0.0),     # k = round(0.4) = 0: only scores above every impostor
])
def test_tar_kth_rule(far, tar, thr, achieved):
    r = tar_at_far(GEN, IMP, 4, far, "kth")
    assert r["tar"] == pytest.approx(tar) and r["far_achieved"] == achieved
    if thr is not None:
        assert r["threshold"] == thr
    else:
        assert r["threshold"] > 0.85


def test_tar_kth_with_tied_impostors_reports_achieved_far():
    r = tar_at_far([0.5, 0.4], [0.5, 0.5, 0.5, 0.1], 4, 0.25, "kth")
    assert r["tar"] == 0.5 and r["far_achieved"] == 0.75


def test_tar_interp_rule():
    # ROC points (0, 1/3) (0.25, 1/3) (0.5, 1) ...: halfway between 0.25 and 0.5 -> 2/3
    assert tar_at_far(GEN, IMP, 4, 0.375, "interp")["tar"] == pytest.approx(2 / 3)
    assert tar_at_far(GEN, IMP, 4, 0.0, "interp")["tar"] == pytest.approx(1 / 3)


def test_tar_needs_enough_top_scores():
    with pytest.raises(ValueError, match="only 2 kept"):
        tar_at_far(GEN, [0.85, 0.2], 100, 0.05, "kth")
    with pytest.raises(ValueError, match="unknown TAR rule"):
        tar_at_far(GEN, IMP, 4, 0.1, "nearest")


def test_tar_with_top_only_equals_full():
    rng = np.random.default_rng(0)
    gen, imp = rng.normal(1, 1, 500), rng.normal(0, 1, 20000)
    top = np.sort(imp)[-300:]
    for far in (1e-3, 5e-3, 1e-2):
        for rule in ("kth", "interp"):
            assert tar_at_far(gen, top, imp.size, far, rule)["tar"] == \
                tar_at_far(gen, imp, imp.size, far, rule)["tar"]


def test_topk_matches_sort():
    rng = np.random.default_rng(1)
    t = TopK(50)
    allv = []
    for _ in range(20):
        v = rng.standard_normal(rng.integers(0, 40)).astype(np.float32)
        allv.append(v)
        t.push(v[v > t.threshold])  # pre-filtering by the threshold loses nothing
    ref = np.sort(np.concatenate(allv))[::-1][:50]
    np.testing.assert_array_equal(t.sorted_desc(), ref)


def test_thin_roc_keeps_ends_and_order():
    far = np.r_[0, np.sort(np.random.default_rng(2).random(5000))]
    tar = np.sqrt(far)
    f, t = thin_roc(far, tar, 100)
    assert f[0] == 0 and f[-1] == far[-1] and len(f) <= 102 and np.all(np.diff(f) >= 0)
