"""MegaFace evaluator: hand-checked ties, brute-force agreement, devkit lists, noise lists, errors."""
import json

import numpy as np
import pytest

from mtdnn.evaluation.megaface import (RowSubset, brute_force_megaface, clean_probes, evaluate_megaface,
                                       evaluate_with_noise_lists, megaface_list_size,
                                       nested_distractor_order, noise_mask, probe_gallery_pairs,
                                       read_facescrub_list, read_megaface_list, read_noise_list)
from mtdnn.paths import data_path

# a1, a2 of identity a; b1, b2 of identity b (2-D, not normalised: exact dot products)
PROBES = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], np.float32)
IDS = ["a", "a", "b", "b"]
DISTR = np.array([[0.9, 0.1], [0, 0.8]], np.float32)


def run(p, ids, d, sizes, **kw):
    kw.setdefault("progress", False)
    return evaluate_megaface(p, ids, d, sizes, **kw)


def test_hand_case_with_a_tie():
    r = run(PROBES, IDS, DISTR, [1, 2], normalize=False, far_targets=[1 / 8, 2 / 8, 3 / 8],
            cmc_ranks=[1, 2, 3])
    one, two = r["results"]
    # size 1 (d1): (a1->a2) 0.8 < s(a1,d1) 0.9 -> rank 2; the other three pairs rank 1
    assert one["rank1"] == 0.75 and one["cmc"]["rate"] == [0.75, 1.0, 1.0]
    # size 2 adds d2: s(b1,d2) = 0.8 = s(b1,b2): the tie counts against the probe
    assert two["rank1"] == 0.5 and two["cmc"]["rate"] == [0.5, 1.0, 1.0]
    # impostors at size 2: 0.9 0.78 0.64 0.62 0.48 0.1 0 0.8; genuine 0.8, 0.8
    t = {x["far"]: x for x in two["tar_at_far"]}
    assert t[1 / 8]["tar"] == 0.0 and t[1 / 8]["threshold"] == pytest.approx(0.9)
    assert t[2 / 8]["tar"] == 1.0 and t[2 / 8]["threshold"] == pytest.approx(0.8)
    assert r["n_probe_gallery_pairs"] == 4 and r["n_genuine_pairs"] == 2
    assert two["n_impostor_pairs"] == 8 and "pessimistic" in r["tie_rule"]


def test_probe_gallery_pairs():
    p, g, off = probe_gallery_pairs(np.array([0, 1, 0, 0, 1]))
    pairs = set(zip(p.tolist(), g.tolist()))
    assert pairs == {(0, 2), (0, 3), (2, 0), (2, 3), (3, 0), (3, 2), (1, 4), (4, 1)}
    assert off.tolist() == [0, 2, 3, 5, 7, 8]


@pytest.mark.parametrize("seed,chunk", [(0, 7), (1, 64), (2, 1000)])
def test_agrees_with_brute_force_on_random_features(seed, chunk):
    rng = np.random.default_rng(seed)
    n, dim, N = 40, 8, 300
    ids = rng.integers(0, 6, n)
    ids[:6] = np.arange(6)
    ids[6:12] = np.arange(6)  # every identity has >= 2 images
    p = rng.standard_normal((n, dim)).astype(np.float32)
    p[ids == 0] += 2 * rng.standard_normal(dim).astype(np.float32)  # one easy identity
    d = rng.standard_normal((N, dim)).astype(np.float32)
    sizes = [10, 50, 300]
    r = run(p, ids, d, sizes, chunk_size=chunk, far_targets=[1e-3, 1e-2],
            cmc_ranks=np.arange(1, N + 2), roc_topk=50)
    for s, res in zip(sizes, r["results"]):
        r1, ranks, tar = brute_force_megaface(p, ids, d, s, 1e-2)
        assert res["rank1"] == pytest.approx(r1)
        cmc_ref = [np.mean(ranks <= k) for k in range(1, N + 2)]
        np.testing.assert_allclose(res["cmc"]["rate"], cmc_ref)
        assert res["tar_at_far"][1]["tar"] == pytest.approx(tar)


def test_agrees_with_brute_force_with_many_ties():
    # small integer features, not normalised: scores are exact and tie often
    rng = np.random.default_rng(5)
    p = rng.integers(-1, 2, (30, 3)).astype(np.float32)
    p[np.abs(p).sum(1) == 0] = 1
    d = rng.integers(-1, 2, (200, 3)).astype(np.float32)
    d[np.abs(d).sum(1) == 0] = 1
    ids = np.arange(30) % 5
    r = run(p, ids, d, [20, 200], normalize=False, chunk_size=33, far_targets=[0.05, 0.2],
            cmc_ranks=np.arange(1, 202))
    for res in r["results"]:
        r1, ranks, tar = brute_force_megaface(p, ids, d, res["distractors"], 0.2, normalize=False)
        assert res["rank1"] == r1
        np.testing.assert_allclose(res["cmc"]["rate"], [np.mean(ranks <= k) for k in range(1, 202)])
        assert res["tar_at_far"][1]["tar"] == tar


def test_chunking_and_roc_are_consistent():
    rng = np.random.default_rng(3)
    p = rng.standard_normal((50, 16)).astype(np.float32)
    ids = np.arange(50) % 10
    p += 1.5 * rng.standard_normal((10, 16)).astype(np.float32)[ids]
    d = rng.standard_normal((2000, 16)).astype(np.float32)
    a = run(p, ids, d, [100, 2000], chunk_size=2000)["results"]
    b = run(p, ids, d, [100, 2000], chunk_size=97, roc_topk=20)["results"]
    for x, y in zip(a, b):
        assert x["rank1"] == y["rank1"] and x["cmc"] == y["cmc"]
        # GEMM blocking differs with the chunk size: scores agree to float32 rounding
        assert [t["tar"] for t in x["tar_at_far"]] == [t["tar"] for t in y["tar_at_far"]]
        assert x["tar_at_far"][0]["threshold"] == pytest.approx(y["tar_at_far"][0]["threshold"])
        far, tar = np.array(y["roc"]["far"]), np.array(y["roc"]["tar"])
        assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= -1e-12)
        assert far[-1] == pytest.approx(1.0) and tar[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_parallel_chunks_give_the_one_worker_result(monkeypatch, workers):
    """Chunks scored in parallel, each with the top-k threshold known when it started, give
    exactly what one worker scoring them in order gives (and the brute force's rank-1)."""
    from mtdnn.evaluation import megaface
    rng = np.random.default_rng(5)
    p = rng.standard_normal((40, 8)).astype(np.float32)
    ids = np.arange(40) % 8
    p += 1.2 * rng.standard_normal((8, 8)).astype(np.float32)[ids]
    d = rng.standard_normal((3000, 8)).astype(np.float32)
    kw = dict(chunk_size=101, roc_topk=30, far_targets=[1e-3, 1e-2], cmc_ranks=[1, 2, 5, 50])
    monkeypatch.setattr(megaface, "_threads", lambda: (1, 1))
    one = run(p, ids, d, [10, 500, 3000], **kw)["results"]
    monkeypatch.setattr(megaface, "_threads", lambda: (workers, 1))
    many = run(p, ids, d, [10, 500, 3000], **kw)["results"]
    assert many == one
    assert one[-1]["rank1"] == brute_force_megaface(p, ids, d, 3000, 1e-3)[0]


def test_bad_inputs_are_clear_errors():
    d = np.random.default_rng(0).standard_normal((20, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="single image, e.g. c"):
        run(np.r_[PROBES, [[1, 1]]], IDS + ["c"], d, [10])
    r = run(np.r_[PROBES, [[1, 1]]], IDS + ["c"], d, [10], singletons="drop")
    assert r["singleton_identities_dropped"] == ["c"] and r["n_probes"] == 4
    with pytest.raises(ValueError, match="probe 'x' is listed twice \\(rows 0 and 2\\)"):
        run(PROBES, IDS, d, [10], probe_names=["x", "y", "x", "z"])
    bad = d.copy()
    bad[13] = np.nan
    with pytest.raises(ValueError, match="distractor features: 1 feature row.*first row 13"):
        run(PROBES, IDS, bad, [10, 20], chunk_size=4)
    bad[13] = 0
    with pytest.raises(ValueError, match="zero norm, first row 13"):
        run(PROBES, IDS, bad, [20])
    zp = PROBES.copy()
    zp[1] = 0
    with pytest.raises(ValueError, match="probe features: 1 feature row.*zero norm"):
        run(zp, IDS, d, [10])
    with pytest.raises(ValueError, match="dimension 3, probe features 2"):
        run(PROBES, IDS, np.ones((5, 3), np.float32), [5])
    with pytest.raises(ValueError, match="size 30 asked but only 20"):
        run(PROBES, IDS, d, [10, 30])
    with pytest.raises(ValueError, match="3 probe ids for 4"):
        run(PROBES, IDS[:3], d, [10])


def test_devkit_lists(tmp_path):
    fs = tmp_path / "facescrub_features_list.json"
    fs.write_text(json.dumps({"path": ["A/A_1.png", "A/A_2.png"], "id": ["A", "A"]}))
    assert read_facescrub_list(fs) == (["A/A_1.png", "A/A_2.png"], ["A", "A"])
    fs.write_text(json.dumps({"path": ["A/A_1.png"], "id": []}))
    with pytest.raises(ValueError, match="'id' must be a list as long as 'path'"):
        read_facescrub_list(fs)
    lists = {}
    for n, paths in ((2, ["x", "y"]), (4, ["y", "z", "x", "w"])):
        p = tmp_path / f"megaface_features_list.json_{n}_1"
        p.write_text(json.dumps({"path": paths}))
        assert megaface_list_size(p) == n
        lists[n] = read_megaface_list(p)
    order, sizes = nested_distractor_order(lists)
    assert order == ["x", "y", "z", "w"] and sizes == [2, 4]
    with pytest.raises(ValueError, match="size 2 is not contained in the list of size 4"):
        nested_distractor_order({2: ["x", "q"], 4: ["y", "z", "x", "w"]})
    with pytest.raises(ValueError, match="size 3 holds 2 paths"):
        nested_distractor_order({3: ["x", "q"]})
    with pytest.raises(ValueError, match="_<size>_<set>"):
        megaface_list_size(tmp_path / "list.json")


def test_published_noise_lists():
    fs = read_noise_list(data_path("megaface", "facescrub_noises.txt"))
    mf = read_noise_list(data_path("megaface", "megaface_noises.txt"))
    assert len(fs) == 605 and len(mf) == 719
    assert fs[0] == "Aaron_Eckhart_136.png" and not any(x.startswith("#") for x in fs + mf)
    names = ["Aaron_Eckhart/Aaron_Eckhart_136.png", "Aaron_Eckhart/Aaron_Eckhart_1.png",
             "FlickrFinal2/" + mf[0], mf[1], "375/other.jpg"]
    assert noise_mask(names, fs + mf).tolist() == [True, False, True, True, False]


def test_noise_removal_equals_evaluating_the_clean_sets():
    rng = np.random.default_rng(4)
    p = rng.standard_normal((24, 8)).astype(np.float32)
    ids = np.arange(24) % 4
    d = rng.standard_normal((100, 8)).astype(np.float32)
    pn = [f"P{i % 4}/P{i % 4}_{i}.png" for i in range(24)]
    dn = [f"1/{i}.jpg" for i in range(100)]
    out = evaluate_with_noise_lists(p, ids, pn, d, dn, [10, 100], noise=("keep", "removed"), progress=False,
                                    probe_noise=["P1_5.png"], distractor_noise=["1/3.jpg", "1/50.jpg"])
    clean = out["noise_removed"]
    keep = np.array([i != 5 for i in range(24)])
    dkeep = np.array([i not in (3, 50) for i in range(100)])
    ref = run(p[keep], ids[keep], d[dkeep], [9, 98])
    assert [r["distractors"] for r in clean["results"]] == [9, 98]
    assert [r["nominal_distractors"] for r in clean["results"]] == [10, 100]
    assert [r["rank1"] for r in clean["results"]] == [r["rank1"] for r in ref["results"]]
    assert clean["probes_removed"] == ["P1/P1_5.png"] and clean["n_distractors_removed"] == 2
    assert out["original"]["results"][1]["rank1"] == run(p, ids, d, [100])["results"][0]["rank1"]
    assert RowSubset(d, [3, 1])[0:2].tolist() == d[[3, 1]].tolist()


@pytest.mark.parametrize("chunk", [3, 16, 1000])
def test_a_distractor_identical_to_a_gallery_image_ties_against_the_probe(chunk):
    """Copies of gallery images among the distractors: for every pair (j, i) whose gallery image
    i has a copy, the copy scores exactly s(j, i) and the pessimistic rule ranks it above i, so
    the pair is never rank 1. Small chunks take another BLAS path than the probe-probe product
    (here ~90 % of such scores differed in the last bit), which turned ties into hits."""
    rng = np.random.default_rng(0)
    n, dim = 60, 512
    ids = np.arange(n) % 6
    p = (rng.standard_normal((n, dim)) + 3 * rng.standard_normal((6, dim))[ids]).astype(np.float32)
    gallery_copies = np.arange(0, n, 7)
    d = np.r_[p[gallery_copies], rng.standard_normal((40, dim))].astype(np.float32)
    r = run(p, ids, d, [len(gallery_copies), len(d)], chunk_size=chunk, cmc_ranks=[1, 2, 3],
            far_targets=[0.01])
    pairs = [(j, i) for j in range(n) for i in range(n) if i != j and ids[i] == ids[j]]
    copied = np.array([i in gallery_copies or j in gallery_copies for j, i in pairs])
    for res in r["results"]:
        r1, ranks, tar = brute_force_megaface(p, ids, d, res["distractors"], 0.01)
        assert np.all(ranks[copied] >= 2)
        assert res["rank1"] == r1 and res["cmc"]["rate"] == [np.mean(ranks <= k) for k in (1, 2, 3)]
        assert res["tar_at_far"][0]["tar"] == tar


def test_cleaned_megaface_by_hand():
    """The published cleaning (insightface's remove_noises.py), worked by hand.

    Probes (3-D, unit norm): identity A: a1 = (1, 0, 0), a2 = (0.8, 0.6, 0) and a3 = (0, 0, 1),
    which is on the noise list; identity B: b1 = (0, 1, 0), b2 = (0, 0.6, 0.8). Distractors:
    d1 = (1, 0, 0), on the noise list (a copy of a1), and d2 = (0, 0.8, 0.6).

    cleaned: a3 becomes normalise(a1 + a2 + u), |u| <= 0.001 per dimension, i.e. about
    (1.8, 0.6, 0) / 1.897 = (0.9487, 0.3162, 0); d1 stays counted but scores -inf.
    Pairs (probe, gallery) and their scores against d2, the only distractor left in reach:
      (a1, a2) 0.8 vs s(a1, d2) = 0       -> rank 1
      (a1, a3) 0.9487 vs 0                -> rank 1
      (a2, a1) 0.8 vs s(a2, d2) = 0.48    -> rank 1
      (a2, a3) 0.8 * 0.9487 + 0.6 * 0.3162 = 0.9487 vs 0.48 -> rank 1
      (a3, a1) 0.9487, (a3, a2) 0.9487 vs s(a3, d2) = 0.3162 * 0.8 = 0.2530 -> rank 1
      (b1, b2) 0.6 vs s(b1, d2) = 0.8    -> rank 2
      (b2, b1) 0.6 vs s(b2, d2) = 0.48 + 0.48 = 0.96 -> rank 2
    rank-1 = 6 / 8 = 0.75 with 2 distractors (nominal and actual). Impostor pairs: 5 probes x 2 =
    10; scores 0.96, 0.8, 0.48, 0.2530, 0 and five -inf. FAR 1/10: threshold 0.96, genuine pairs
    (a1,a2) 0.8, (a1,a3) 0.9487, (a2,a3) 0.9487, (b1,b2) 0.6 -> TAR 0; FAR 3/10: threshold 0.48
    -> TAR 4/4 = 1.
    removed: a3 and d1 left out: pairs (a1,a2), (a2,a1) rank 1 and (b1,b2), (b2,b1) rank 2 ->
    rank-1 2/4 = 0.5 with 1 distractor (nominal 2).
    as given: d1 = a1 outranks or ties every A pair (s(a2, d1) = 0.8 = s(a2, a1): a tie, counted
    against the probe) and a3 scores 0 with its mates -> rank-1 0.
    """
    probes = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1], [0, 1, 0], [0, 0.6, 0.8]], np.float32)
    ids = ["A", "A", "A", "B", "B"]
    names = ["A/A_1.png", "A/A_2.png", "A/A_3.png", "B/B_1.png", "B/B_2.png"]
    d = np.array([[1, 0, 0], [0, 0.8, 0.6]], np.float32)
    out = evaluate_with_noise_lists(probes, ids, names, d, ["1/d1.jpg", "1/d2.jpg"], [2],
                                    noise=("keep", "cleaned", "removed"), probe_noise=["A_3.png"],
                                    distractor_noise=["1/d1.jpg"], far_targets=[0.1, 0.3], progress=False)
    c = out["cleaned"]
    assert c["noise_variant"] == "cleaned" and "remove_noises.py" in c["noise_procedure"]
    r = c["results"][0]
    assert r["rank1"] == 0.75 and r["distractors"] == 2 and r["nominal_distractors"] == 2
    assert r["n_impostor_pairs"] == 10 and r["n_noisy_distractors"] == 1
    assert [t["tar"] for t in r["tar_at_far"]] == [0.0, 1.0]
    assert r["tar_at_far"][0]["threshold"] == pytest.approx(0.96, abs=1e-6)
    assert r["tar_at_far"][1]["threshold"] == pytest.approx(0.48, abs=1e-6)
    assert c["probes_replaced"] == ["A/A_3.png"] and c["n_probes"] == 5
    rm = out["noise_removed"]["results"][0]
    assert rm["rank1"] == 0.5 and rm["distractors"] == 1 and rm["nominal_distractors"] == 2
    assert out["noise_removed"]["noise_variant"] == "noise_removed"
    assert out["original"]["results"][0]["rank1"] == 0.0
    # the replacement itself: normalise(a1 + a2 + u)
    cp = clean_probes(probes, ids, [False, False, True, False, False])
    np.testing.assert_allclose(cp[2], [1.8 / np.sqrt(3.6), 0.6 / np.sqrt(3.6), 0], atol=1e-3)
    np.testing.assert_array_equal(cp[[0, 1, 3, 4]], probes[[0, 1, 3, 4]])
    with pytest.raises(ValueError, match="has no clean image"):
        clean_probes(probes, ids, [False, False, False, True, True])


def test_roc_grid_counts_are_exact_at_the_thresholds():
    """The k / 256 grid: a cosine exactly on a threshold counts at it, one float below it does not,
    -inf (an ignored distractor) counts nowhere, a hair beyond +-1 stays in range."""
    from mtdnn.evaluation.megaface import GRID_STEPS, _scan_scores
    t = (np.arange(-GRID_STEPS, GRID_STEPS + 1) / GRID_STEPS).astype(np.float32)
    rng = np.random.default_rng(0)
    s = np.r_[t, np.nextafter(t, np.float32(-2)), np.nextafter(t, np.float32(2)),
              rng.uniform(-1, 1, 1000).astype(np.float32), [-np.inf, np.float32(1.0000001), np.float32(-1.0000001)]]
    s = s.astype(np.float32).reshape(1, -1)
    hist = _scan_scores(s, np.inf, np.full(1, np.inf, np.float32), grid=True)[0]
    grid_ge = np.cumsum(hist[::-1])[::-1][1:]
    np.testing.assert_array_equal(grid_ge, [(s >= x).sum() for x in t])
