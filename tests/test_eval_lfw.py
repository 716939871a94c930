"""LFW: parsers on the real files, both 10-fold rules against literal ports, missing images."""
import hashlib

import numpy as np
import pytest

from mtdnn.evaluation.lfw import (evaluate_lfw, insightface_threshold, pair_rows, read_pairs,
                                  read_people, sphereface_threshold, ten_fold_accuracy,
                                  view1_accuracy)
from mtdnn.paths import data_path


def lfw_names_labels():
    lines = [l.split() for l in data_path("lfw", "lfw-112x96_list.txt").read_text().splitlines()]
    return [l[0] for l in lines], np.array([int(l[1]) for l in lines])


def synthetic_features(labels, dim=64, noise=1.0, seed=0):
    """Identity centre + noise: a stand-in for a trained net's features."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((labels.max() + 1, dim))
    return (c[labels] + noise * rng.standard_normal((len(labels), dim))).astype(np.float32)


def test_real_pairs_and_people_files():
    path = data_path("lfw", "pairs.txt")
    assert hashlib.md5(path.read_bytes()).hexdigest() == "9f1ba174e4e1c508ff7cdf10ac338a7d"
    pairs = read_pairs(path)
    assert len(pairs) == 6000
    folds = np.array([p.fold for p in pairs])
    same = np.array([p.same for p in pairs])
    assert np.bincount(folds).tolist() == [600] * 10
    assert all(same[folds == f][:300].all() and not same[folds == f][300:].any() for f in range(10))
    assert pairs[0].keys[0].endswith("_0001") or pairs[0].keys[0][-5] == "_"
    train, test = read_pairs(data_path("lfw", "pairsDevTrain.txt")), read_pairs(data_path("lfw", "pairsDevTest.txt"))
    assert (len(train), sum(p.same for p in train)) == (2200, 1100)
    assert (len(test), sum(p.same for p in test)) == (1000, 500)
    ptrain, ptest = read_people(data_path("lfw", "peopleDevTrain.txt")), read_people(data_path("lfw", "peopleDevTest.txt"))
    assert (len(ptrain), sum(n for _, n in ptrain)) == (4038, 9525)
    assert (len(ptest), sum(n for _, n in ptest)) == (1711, 3708)
    assert not {n for n, _ in ptrain} & {n for n, _ in ptest}


def test_parser_errors(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("1\t1\nA\t1\t2\n")
    with pytest.raises(ValueError, match="pairs.txt: header says 1 x 2 x 1 pairs, found 1 lines"):
        read_pairs(p)
    p.write_text("1\nA\t1\tB\t2\nA\t1\t2\n")
    with pytest.raises(ValueError, match="line 2: expected a 'name i j' pair"):
        read_pairs(p)
    people = tmp_path / "people.txt"
    people.write_text("2\nA\t3\nB\t1\n")
    assert read_people(people) == [("A", 3), ("B", 1)]
    people.write_text("2\n1\nA\t3\n1\nB\t1\n")  # View 2 layout: sets, then count + lines per set
    assert read_people(people) == [("A", 3), ("B", 1)]


def test_sphereface_threshold_hand_case():
    # accuracy 1 for every t in (0.1, 0.8): grid points 0.1001 .. 0.7999, mean 0.45
    s, same = np.array([0.9, 0.8, 0.1, -0.2]), np.array([True, True, False, False])
    assert sphereface_threshold(s, same) == pytest.approx(0.45)
    # a score equal to the threshold is wrong for both kinds of pair: t = 0.5 is the one
    # grid point with accuracy 0, all others give 0.5, so the mean moves just below 0
    t = sphereface_threshold(np.array([0.5, 0.5]), np.array([True, False]))
    assert t == pytest.approx(-0.5 / 20000)


def test_insightface_threshold_hand_case():
    d, same = np.array([0.1, 0.5, 1.0, 2.0]), np.array([True, True, False, False])
    assert insightface_threshold(d, same) == pytest.approx(0.51)  # first of 0.51 .. 1.00


def matlab_get_threshold(scores, flags, thr_num):
    """Literal port of SphereFace evaluation.m getThreshold / getAccuracy."""
    thresholds = np.arange(-thr_num, thr_num + 1) / thr_num
    t = thresholds[:, None]  # every threshold at once: the loop of the .m file, broadcast
    acc = (np.sum(scores[flags] > t, 1) + np.sum(scores[~flags] < t, 1)) / len(scores)
    return np.mean(thresholds[acc == acc.max()])


def insightface_roc(emb1, emb2, issame, n_folds=10):
    """Literal port of insightface calculate_roc's accuracy (consecutive folds, no PCA)."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(emb1 - emb2), 1)
    folds = np.array_split(np.arange(len(issame)), n_folds)
    accs = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(issame)), test)
        acc_train = [np.mean(np.less(dist[train], t) == issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(acc_train))]
        accs.append(np.mean(np.less(dist[test], best) == issame[test]))
    return np.mean(accs), np.std(accs)


def random_pairs(seed=0, n=600):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 40, 400)
    feats = synthetic_features(labels, 16, 2.0, seed)
    same = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    r1, r2 = [], []
    for s in same:
        while True:
            i, j = rng.integers(0, 400, 2)
            if i != j and (labels[i] == labels[j]) == s:
                break
        r1.append(i), r2.append(j)
    folds = np.tile(np.repeat(np.arange(10), n // 20), 2)
    return feats, np.array(r1), np.array(r2), same, folds


def test_sphereface_rule_matches_literal_port():
    feats, r1, r2, same, folds = random_pairs(1)
    res = ten_fold_accuracy(feats, r1, r2, same, folds, rule="sphereface")
    f = feats.astype(np.float64)
    accs = []
    for k in range(10):
        tr, te = folds != k, folds == k
        mu = np.concatenate([f[r1[tr]], f[r2[tr]]]).mean(0)
        a, b = f[r1] - mu, f[r2] - mu
        s = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        t = matlab_get_threshold(s[tr], same[tr], 10000)
        assert res["fold_threshold"][k] == pytest.approx(t)
        accs.append((np.sum(s[te & same] > t) + np.sum(s[te & ~same] < t)) / te.sum())
    np.testing.assert_allclose(res["fold_accuracy"], accs)
    assert res["std"] == pytest.approx(np.std(accs, ddof=1))


def test_insightface_rule_matches_literal_port():
    feats, r1, r2, same, folds = random_pairs(2)
    order = np.argsort(folds, kind="stable")  # insightface folds are consecutive
    r1, r2, same, folds = r1[order], r2[order], same[order], folds[order]
    res = ten_fold_accuracy(feats, r1, r2, same, folds, rule="insightface")
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    acc, std = insightface_roc(unit[r1].astype(np.float64), unit[r2].astype(np.float64), same)
    assert res["accuracy"] == pytest.approx(acc) and res["std"] == pytest.approx(std)


def test_missing_images_error_or_wrong():
    names, labels = lfw_names_labels()
    feats = synthetic_features(labels, noise=0.3)
    gone = "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"   # in matched pairs of pairs.txt
    keep = [i for i, n in enumerate(names) if n != gone]
    sub_f, sub_n = feats[keep], [names[i] for i in keep]
    with pytest.raises(ValueError, match="1 LFW image\\(s\\) of the pairs have no feature, e.g. Aaron_Peirsol_0001"):
        evaluate_lfw(sub_f, sub_n, data_path("lfw", "pairs.txt"))
    full = evaluate_lfw(feats, names, data_path("lfw", "pairs.txt"))
    res = evaluate_lfw(sub_f, sub_n, data_path("lfw", "pairs.txt"), missing="wrong")
    pairs = read_pairs(data_path("lfw", "pairs.txt"))
    hit = [p for p in pairs if "Aaron_Peirsol_0001" in p.keys]
    assert res["n_missing_pairs"] == len(hit) > 0 and res["missing_images"] == ["Aaron_Peirsol_0001"]
    assert full["accuracy"] > 0.99  # easy synthetic features: the missing pairs are the errors
    lost = np.bincount([p.fold for p in hit], minlength=10) / 600
    np.testing.assert_allclose(res["fold_accuracy"], np.array(full["fold_accuracy"]) - lost, atol=2 / 600)


def test_evaluate_lfw_on_real_pairs_with_synthetic_features():
    names, labels = lfw_names_labels()
    res = evaluate_lfw(synthetic_features(labels, noise=1.2), names, data_path("lfw", "pairs.txt"),
                       view1=(data_path("lfw", "pairsDevTrain.txt"), data_path("lfw", "pairsDevTest.txt")))
    assert 0.9 < res["accuracy"] < 1 and len(res["fold_accuracy"]) == 10
    assert res["n_missing_pairs"] == 0 and 0.9 < res["view1"]["accuracy"] <= 1
    assert res["tar_at_far"][0]["far"] == 1e-3 and res["tar_at_far"][0]["rule"] == "kth"
    assert res["roc"]["far"][0] == 0 and res["roc"]["tar"][-1] == 1
    shuffled = np.random.default_rng(0).permutation(len(names))  # row order must not matter
    res2 = evaluate_lfw(synthetic_features(labels, noise=1.2)[shuffled], [names[i] for i in shuffled],
                        data_path("lfw", "pairs.txt"))
    assert res2["accuracy"] == res["accuracy"]


def test_view1_uses_devtrain_statistics_only():
    feats, r1, r2, same, _ = random_pairs(3, 400)
    train = (r1[:200], r2[:200], same[:200], np.ones(200, bool))
    test = (r1[200:], r2[200:], same[200:], np.ones(200, bool))
    a = view1_accuracy(feats, train, test)
    # changing the test pairs' features must not move the threshold
    feats2 = feats.copy()
    feats2[np.setdiff1d(np.r_[r1[200:], r2[200:]], np.r_[r1[:200], r2[:200]])] *= 3
    assert view1_accuracy(feats2, train, test)["threshold"] == a["threshold"]
    r1b, r2b, ok, miss = pair_rows(read_pairs(data_path("lfw", "pairsDevTest.txt")),
                                   lfw_names_labels()[0])
    assert ok.all() and not miss and len(r1b) == 1000


def test_nan_features_and_unknown_rule_are_errors():
    feats, r1, r2, same, folds = random_pairs(4)
    feats[r1[0]] = np.nan
    with pytest.raises(ValueError, match="LFW features: 1 feature row\\(s\\) hold NaN"):
        ten_fold_accuracy(feats, r1, r2, same, folds)
    with pytest.raises(ValueError, match="unknown LFW rule 'cosine'"):
        ten_fold_accuracy(feats, r1, r2, same, folds, rule="cosine")
    with pytest.raises(ValueError, match="missing must be 'error' or 'wrong'"):
        pair_rows([], [], missing="skip")


@pytest.mark.parametrize("pair, said", [
    ("Aaron_Eckhart\t1\t1", "image Aaron_Eckhart/Aaron_Eckhart_0001.jpg with itself"),
    ("Abel_Pacheco\t1\tAbel_Pacheco\t1", "with itself as a mismatched pair"),
    ("Abel_Pacheco\t1\tAbel_Pacheco\t2", "two images of Abel_Pacheco as a mismatched pair")])
def test_pairs_of_one_image_are_refused(tmp_path, pair, said):
    """A matched pair of an image with itself is a sure match, and a "mismatched" pair of one
    image (or of one person) is a wrong label: both were scored as given. The reader refuses
    them naming the line (eval_lfw: exit 2, no result)."""
    same, diff = ("Aaron_Eckhart\t1\t2", "Abel_Pacheco\t1\tAkhmed_Zakayev\t1")
    lines = [pair, diff] if pair.count("\t") == 2 else [same, pair]
    p = tmp_path / "pairs.txt"
    p.write_text("1\n" + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"line {2 + lines.index(pair)}: .*{said}"):
        read_pairs(p)
    import subprocess
    import sys
    from mtdnn.paths import REPO
    np.save(tmp_path / "f.npy", np.eye(6, dtype=np.float32)[:6])
    (tmp_path / "f.names.txt").write_text("".join(f"{n}\n" for n in (
        "Aaron_Eckhart_0001.jpg", "Aaron_Eckhart_0002.jpg", "Abel_Pacheco_0001.jpg", "Abel_Pacheco_0002.jpg",
        "Akhmed_Zakayev_0001.jpg", "x_0001.jpg")))
    r = subprocess.run([sys.executable, str(REPO / "tools" / "eval_lfw.py"), "--features", str(tmp_path / "f"),
                        "--no-view2", "--view1", str(p), str(p), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr
    from faults import nothing_written
    assert nothing_written(tmp_path / "out")
