"""BLUFR: the real config's structure, EvalROC / OpenSetROC hand cases and a brute-force check."""
import numpy as np
import pytest

from mtdnn.evaluation.blufr import (VERI_FAR_POINTS, eval_roc, evaluate_blufr, load_blufr_config,
                                    open_set_roc, pair_scores, roc_from_scores)
from mtdnn.paths import data_path


@pytest.fixture(scope="module")
def config():
    return load_blufr_config(data_path("lfw", "blufr", "blufr_lfw_config.mat"))


def lfw_names_labels():
    lines = [l.split() for l in data_path("lfw", "lfw-112x96_list.txt").read_text().splitlines()]
    return [l[0] for l in lines], np.array([int(l[1]) for l in lines])


def test_real_config_structure(config):
    assert len(config["image_names"]) == 13233 and len(config["trials"]) == 10
    assert config["image_names"][0] == "Aaron_Eckhart_0001.jpg"
    assert len(np.unique(config["labels"])) == 5749
    for t in config["trials"]:
        test, gal, probe = set(t["test"]), set(t["gallery"]), set(t["probe"])
        assert gal | probe == test and not gal & probe
        assert len(gal) == 1000 and len(np.unique(config["labels"][t["gallery"]])) == 1000
        assert not set(t["train"]) & test
    t1 = config["trials"][0]  # blufr_lfw_config_info.txt, set 1
    assert len(t1["train"]) == 2952 and len(t1["test"]) == 10281
    gen = np.isin(config["labels"][t1["probe"]], config["labels"][t1["gallery"]])
    assert (gen.sum(), (~gen).sum()) == (4832, 4449)


def test_config_labels_agree_with_the_lfw_list(config):
    names, labels = lfw_names_labels()
    person = {n.split("/")[-1]: n.split("/")[0] for n in names}
    people = {}
    for name, lab in zip(config["image_names"], config["labels"]):
        people.setdefault(lab, set()).add(person[name])
    assert all(len(v) == 1 for v in people.values())


def test_eval_roc_hand_case():
    s = np.zeros((5, 5))
    for (i, j), v in {(0, 1): 0.9, (2, 3): 0.4, (0, 2): 0.5, (0, 3): 0.1, (0, 4): 0.2, (1, 2): 0.3,
                      (1, 3): 0.6, (1, 4): 0.0, (2, 4): -0.1, (3, 4): 0.05}.items():
        s[i, j] = s[j, i] = v
    vr, far = eval_roc(s, [1, 1, 2, 2, 3], np.array([0, 0.125, 0.25, 0.5, 1]))
    # 8 impostors 0.6 0.5 0.3 0.2 ...; FAR 0 -> threshold (0.6 + 0.9) / 2
    np.testing.assert_allclose(vr, [0.5, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(far, [0, 0.125, 0.25, 0.5, 1])


def test_blockwise_pair_scores_equal_the_matrix_route():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 60, 300)
    gen, imp = pair_scores(x, labels, block=37)
    assert gen.size + imp.size == 300 * 299 // 2
    a = roc_from_scores(gen, imp)
    b = eval_roc(x @ x.T, labels)
    np.testing.assert_allclose(a[0], b[0]) and np.testing.assert_allclose(a[1], b[1])
    assert len(a[0]) == len(VERI_FAR_POINTS)


def test_far_zero_threshold_is_above_float32_impostors():
    # no genuine score above the top impostor: FAR 0 must still reject that impostor's score
    vr, _ = roc_from_scores(np.float32([0.5, 0.2]), np.float32([0.5, 0.1]), np.array([0.0]))
    assert vr[0] == 0


def test_open_set_hand_case_with_ties():
    # gallery labels 1 2 3; probes 1, 2, 9 (impostor), 8 (impostor), 3
    score = np.array([[0.8, 0.3, 0.5, 0.1, 0.7],
                      [0.9, 0.7, 0.2, 0.6, 0.2],
                      [0.1, 0.7, 0.1, 0.3, 0.7]])
    d, far = open_set_roc(score, [1, 2, 3], [1, 2, 9, 8, 3], np.array([0, 0.5, 1]), np.array([1, 2]))
    # ranks: probe 1 -> 2 (0.9 ahead); probe 2 -> 1 (tie with a later gallery entry);
    # probe 3 -> 2 (tie with an earlier gallery entry ranks first); all detected
    np.testing.assert_allclose(d, [[1 / 3] * 3, [1, 1, 1]])
    np.testing.assert_allclose(far, [0, 0.5, 1])


def test_open_set_matches_brute_force():
    rng = np.random.default_rng(0)
    gl = np.arange(30)
    pl = rng.integers(0, 45, 200)
    score = np.round(rng.random((30, 200)), 2)  # rounded: many ties
    score[pl[None, :] == gl[:, None]] += 0.3
    fars, ranks = np.array([0.01, 0.1, 0.5]), np.array([1, 2, 5])
    d, _ = open_set_roc(score, gl, pl, fars, ranks)
    gen = np.isin(pl, gl)
    imp = np.sort(score[:, ~gen].max(0))[::-1]
    ref = np.zeros((3, 3))
    for j in np.flatnonzero(gen):
        order = np.argsort(-score[:, j], kind="stable")  # MATLAB's stable descending sort
        rank = 1 + int(np.flatnonzero(gl[order] == pl[j])[0])
        g = score[gl == pl[j], j].max()
        for fi, f in enumerate(fars):
            thr = imp[int(np.floor(f * len(imp) + 0.5)) - 1]
            ref[:, fi] += (g >= thr) & (rank <= ranks)
    np.testing.assert_allclose(d, ref / gen.sum())


def test_evaluate_blufr_on_two_trials(config):
    names, labels = lfw_names_labels()
    rng = np.random.default_rng(0)
    c = rng.standard_normal((labels.max() + 1, 32))
    feats = (c[labels] + 0.8 * rng.standard_normal((len(labels), 32))).astype(np.float32)
    cfg = {**config, "trials": config["trials"][:2]}
    res = evaluate_blufr(feats, names, cfg, progress=False)
    v, o = res["verification"], res["open_set"]
    assert res["n_trials"] == 2 and len(v["tar_per_trial"]) == 2
    assert 0.5 < v["tar_mean"] <= 1 and 0.3 < o["dir_mean"] <= 1
    assert v["tar_std"] == pytest.approx(np.std(v["tar_per_trial"], ddof=1))
    assert v["tar_mean_minus_std"] == pytest.approx(v["tar_mean"] - v["tar_std"])
    with pytest.raises(ValueError, match="1 image\\(s\\) not found, e.g. Aaron_Eckhart_0001"):
        evaluate_blufr(feats[1:], names[1:], cfg, progress=False)
