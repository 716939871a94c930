"""BLUFR: the real config's structure, EvalROC / OpenSetROC hand cases and a brute-force check."""
import numpy as np
import pytest

from mtdnn.evaluation.blufr import (VERI_FAR_POINTS, eval_roc, evaluate_blufr, far_point_index, load_blufr_config,
                                    open_set_roc, pair_scores, roc_from_scores)
from mtdnn.evaluation.lfw import read_people
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


def tiny_config(names, labels, gallery, probe):
    """A one-trial config over all ``names``: every image is a test image."""
    idx = np.arange(len(names))
    return {"image_names": list(names), "labels": np.asarray(labels),
            "trials": [{"test": idx, "gallery": np.asarray(gallery), "probe": np.asarray(probe)}]}


def test_veri_far_1e7_is_not_read_at_9e8():
    """3,163 images, one genuine pair (two copies of e0) and two impostor scores of exactly 1
    (a third copy under another label): 5,000,702 impostor pairs, so FAR 9e-8 gives k =
    round(0.45) = 0 (accept only above the top impostor: TAR 0) and FAR 1e-7 gives k =
    round(0.50007) = 1 (threshold 1: TAR 1). numpy's isclose with its default atol 1e-8 took
    the 9e-8 point for 1e-7."""
    rng = np.random.default_rng(0)
    n = 3163
    x = rng.standard_normal((n, 16))
    x[:3] = 0
    x[:3, 0] = 1                      # a1, a2 (label 0) and q (label 1) are e0
    labels = np.r_[0, 0, np.arange(1, n - 1)]
    names = [f"P{i}_0001" for i in range(n)]
    cfg = tiny_config(names, labels, gallery=[0], probe=np.arange(1, n))
    res = evaluate_blufr(x.astype(np.float32), names, cfg, veri_far=1e-7, progress=False)
    assert res["verification"]["tar_mean"] == 1.0
    res = evaluate_blufr(x.astype(np.float32), names, cfg, veri_far=9e-8, progress=False)
    assert res["verification"]["tar_mean"] == 0.0
    points, i = far_point_index(VERI_FAR_POINTS, 1e-7)
    assert points[i] == 1e-7 and far_point_index(VERI_FAR_POINTS, 2.5e-8)[0][-1] == 2.5e-8


def test_scores_are_float64():
    """g1, g2 (one person) and i (another): cos(g1, g2) exceeds cos(g1, i) by 2e-8, below float32's
    resolution there (both round to the same float32). At FAR 0 the threshold lies above the top
    impostor: float64 scores accept the genuine pair and detect the genuine probe; float32 ones
    tied them and accepted nothing."""
    t = np.float32(0.5) + np.float32(2 ** -24)
    x = np.array([[1, 0], [1, 0.5], [1, -t]], np.float32)
    cfg = tiny_config(["G_0001", "G_0002", "I_0001"], [1, 1, 2], gallery=[0], probe=[1, 2])
    res = evaluate_blufr(x, cfg["image_names"], cfg, veri_far=0, osi_far=0, progress=False)
    assert res["verification"]["tar_mean"] == 1.0 and res["open_set"]["dir_mean"] == 1.0
    gen, imp = pair_scores(x / np.linalg.norm(x, axis=1, keepdims=True), [1, 1, 2])
    assert gen.dtype == np.float64 and imp.dtype == np.float64


def test_exclude_people_leaves_their_images_out(config):
    names, labels = lfw_names_labels()
    rng = np.random.default_rng(1)
    c = rng.standard_normal((labels.max() + 1, 32))
    feats = (c[labels] + 0.8 * rng.standard_normal((len(labels), 32))).astype(np.float32)
    cfg = {**config, "trials": config["trials"][:1]}
    people = {p for p, _ in read_people(data_path("lfw", "peopleDevTrain.txt"))}  # 4,038 people
    res = evaluate_blufr(feats, names, cfg, exclude_people=people, progress=False)
    out = np.array([n.rsplit("_", 1)[0] in people for n in cfg["image_names"]])
    assert res["standard"] is False and res["excluded_people"] == 4038 and res["excluded_images"] == out.sum()
    assert "not the standard BLUFR figure" in res["protocol"]
    ref_trial = {k: v[~out[v]] for k, v in cfg["trials"][0].items()}
    ref = evaluate_blufr(feats, names, {**cfg, "trials": [ref_trial]}, progress=False)
    assert ref["standard"] is True
    assert res["verification"]["tar_per_trial"] == ref["verification"]["tar_per_trial"]
    assert res["open_set"]["dir_per_trial"] == ref["open_set"]["dir_per_trial"]
    # the reported figure is mean - std, with mean and std beside it
    v = res["verification"]
    assert v["tar_mean_minus_std"] == v["tar_mean"] - v["tar_std"] and "mean - std" in res["reported"]


def test_config_with_an_image_twice_is_refused(tmp_path):
    """A trial whose test set lists one image twice pairs it with itself (a sure genuine match);
    an image both in the gallery and among the probes finds itself. Both are refused."""
    from scipy.io import loadmat, savemat
    m = {k: v for k, v in loadmat(str(data_path("lfw", "blufr", "blufr_lfw_config.mat"))).items()
         if not k.startswith("__")}
    for key, change, said in (("testIndex", lambda v: np.r_[v.ravel(), v.ravel()[:1]][:, None], "test lists image"),
                              ("probIndex", lambda v: np.r_[v.ravel(), m["galIndex"][0, 0].ravel()[:1]][:, None],
                               "is both in the gallery and a probe")):
        bad = {k: v.copy() for k, v in m.items()}
        cell = bad[key].copy()
        cell[0, 0] = change(cell[0, 0])
        bad[key] = cell
        savemat(str(tmp_path / "bad.mat"), bad)
        with pytest.raises(ValueError, match=f"bad.mat: trial 1.*{said}"):
            load_blufr_config(tmp_path / "bad.mat")
