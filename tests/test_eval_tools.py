"""The evaluation CLIs end to end on small inputs: files in, JSON and PNG out, report."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from mtdnn.paper import GROUPS
from mtdnn.evaluation.attributes import read_celeba_attributes
from mtdnn.evaluation.features_io import write_bin, write_names
from mtdnn.evaluation.lfw import read_people
from mtdnn.evaluation.megaface import read_noise_list
from mtdnn.paths import REPO, data_path
from faults import nothing_written

TOOLS = ["extract_features", "eval_lfw", "eval_megaface", "eval_blufr", "eval_identification",
         "eval_attributes", "report"]


def tool(name, *args, ok=True):
    r = subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, args)],
                       capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("name", TOOLS)
def test_help(name):
    assert "usage" in tool(name, "--help").stdout


@pytest.mark.parametrize("name", ["bench_megaface", "bench_extract"])
def test_bench_help(name):
    r = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout


@pytest.fixture(scope="module")
def lfw_feats(tmp_path_factory):
    """Synthetic features (identity centre + noise) for every real LFW image name."""
    d = tmp_path_factory.mktemp("feats")
    lines = [l.split() for l in data_path("lfw", "lfw-112x96_list.txt").read_text().splitlines()]
    names, labels = [l[0] for l in lines], np.array([int(l[1]) for l in lines])
    rng = np.random.default_rng(0)
    c = rng.standard_normal((labels.max() + 1, 32))
    np.save(d / "lfw.npy", (c[labels] + 1.0 * rng.standard_normal((len(labels), 32))).astype(np.float32))
    write_names(d / "lfw.names.txt", names)
    np.save(d / "lfw.labels.npy", labels)
    np.save(d / "celeba.npy", rng.standard_normal((500, 32)).astype(np.float32))
    write_names(d / "celeba.names.txt", [f"{i:06d}.jpg" for i in range(1, 501)])
    return d


def test_eval_lfw_cli(lfw_feats, tmp_path):
    r = tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", tmp_path, "--label", "synthetic")
    res = json.loads((tmp_path / "lfw.json").read_text())
    assert res["kind"] == "lfw" and 0.9 < res["accuracy"] <= 1 and "view1" in res
    assert (tmp_path / "lfw_roc.png").stat().st_size > 1000 and "LFW View 2 (sphereface)" in r.stdout


def test_eval_lfw_view1_only(lfw_feats, tmp_path):
    """--no-view2: a model trained on peopleDevTrain gets View 1 alone, with its own ROC."""
    r = tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", tmp_path, "--no-view2")
    res = json.loads((tmp_path / "lfw.json").read_text())
    assert res["protocol"] == "LFW View 1 only" and "accuracy" not in res and "LFW View 2" not in r.stdout
    v = res["view1"]
    assert 0.9 < v["accuracy"] <= 1 and v["roc"]["tar"][-1] == 1 and v["tar_at_far"][0]["far"] == 1e-3
    assert (tmp_path / "lfw_roc.png").stat().st_size > 1000 and "View 1 TAR @ FAR 0.001" in r.stdout
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "eval_lfw.py"), "--features", str(lfw_feats / "lfw"),
                          "--out", str(tmp_path), "--no-view1", "--no-view2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "leave nothing to evaluate" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_identification_cli(lfw_feats, tmp_path):
    tool("eval_identification", "--lfw", lfw_feats / "lfw", "--distractors", lfw_feats / "celeba",
         "--exclude", data_path("lfw", "peopleDevTrain.txt"), "--out", tmp_path, "--quiet")
    res = json.loads((tmp_path / "identification.json").read_text())
    # View 1 train and test people are all 5,749: the test people decide both roles
    test_people = read_people(data_path("lfw", "peopleDevTest.txt"))
    assert res["kind"] == "identification" and "not MegaFace" in res["protocol"]
    assert res["n_identities"] == sum(n >= 4 for _, n in test_people)
    assert res["n_probes"] == sum(n for _, n in test_people if n >= 4)
    sizes = [r["distractors"] for r in res["results"]]
    assert sizes[:3] == [10, 100, 1000] and sizes[-1] == 500 + sum(n == 1 for _, n in test_people)
    assert all(0 <= r["rank1"] <= 1 for r in res["results"])
    assert (tmp_path / "identification_cmc.png").exists() and (tmp_path / "identification_roc.png").exists()


def test_eval_megaface_cli_devkit_files(tmp_path):
    rng = np.random.default_rng(0)
    fs_noise = read_noise_list(data_path("megaface", "facescrub_noises.txt"))
    mf_noise = read_noise_list(data_path("megaface", "megaface_noises.txt"))
    ids = ["Aaron_Eckhart"] * 4 + ["B"] * 4 + ["C"] * 4
    paths = [f"{i}/{i}_{k}.png" for k, i in enumerate(ids)]
    paths[0] = "Aaron_Eckhart/" + fs_noise[0]  # a published noisy probe
    centres = {i: rng.standard_normal(16) for i in set(ids)}
    for p, i in zip(paths, ids):
        write_bin(tmp_path / "fs" / f"{p}_x.bin", centres[i] + 0.5 * rng.standard_normal(16))
    (tmp_path / "facescrub_features_list.json").write_text(json.dumps({"path": paths, "id": ids}))
    dpaths = [mf_noise[0]] + [f"9/{k}.jpg" for k in range(1, 30)]
    for p in dpaths:
        write_bin(tmp_path / "mf" / f"{p}_x.bin", rng.standard_normal(16))
    for n in (10, 30):
        (tmp_path / f"megaface_features_list.json_{n}_1").write_text(json.dumps({"path": dpaths[:n][::-1]}))
    r = tool("eval_megaface", "--probes", tmp_path / "fs", "--probe-list", tmp_path / "facescrub_features_list.json",
             "--distractors", tmp_path / "mf", "--distractor-lists", tmp_path / "megaface_features_list.json_10_1",
             tmp_path / "megaface_features_list.json_30_1", "--suffix", "_x", "--far", "1e-2",
             "--noise", "keep", "cleaned", "removed", "--out", tmp_path / "out", "--quiet")
    res = json.loads((tmp_path / "out" / "megaface.json").read_text())["runs"]
    assert [x["distractors"] for x in res["original"]["results"]] == [10, 30]
    cleaned = res["cleaned"]  # the published cleaning: the probe replaced, the distractor kept in the count
    assert cleaned["noise_variant"] == "cleaned" and cleaned["probes_replaced"] == [paths[0]]
    assert cleaned["n_probes"] == 12 and [x["distractors"] for x in cleaned["results"]] == [10, 30]
    assert [x["n_noisy_distractors"] for x in cleaned["results"]] == [1, 1]
    removed = res["noise_removed"]
    assert removed["probes_removed"] == [paths[0]] and removed["n_probes"] == 11
    assert [x["distractors"] for x in removed["results"]] == [9, 29]
    assert [x["nominal_distractors"] for x in removed["results"]] == [10, 30]
    for prefix in ("megaface", "megaface_cleaned", "megaface_removed"):
        assert (tmp_path / "out" / f"{prefix}_roc.png").exists()
    assert "rank-1" in r.stdout and "MegaFace (cleaned: the published cleaning" in r.stdout
    # the same features as .npy + names give the same figures
    feats = np.stack([np.fromfile(tmp_path / "mf" / f"{p}_x.bin", "<f4")[4:] for p in dpaths])
    np.save(tmp_path / "d.npy", feats[::-1])
    write_names(tmp_path / "d.names.txt", dpaths[::-1])
    tool("eval_megaface", "--probes", tmp_path / "fs", "--probe-list", tmp_path / "facescrub_features_list.json",
         "--distractors", tmp_path / "d", "--distractor-lists", tmp_path / "megaface_features_list.json_10_1",
         tmp_path / "megaface_features_list.json_30_1", "--suffix", "_x", "--far", "1e-2", "--noise", "keep",
         "--out", tmp_path / "out2", "--quiet")
    res2 = json.loads((tmp_path / "out2" / "megaface.json").read_text())["runs"]
    assert [x["rank1"] for x in res2["original"]["results"]] == [x["rank1"] for x in res["original"]["results"]]
    # a list naming an image without a feature is an error naming it
    bad = tmp_path / "megaface_features_list.json_10_1"
    bad.write_text(json.dumps({"path": dpaths[:9] + ["9/none.jpg"]}))
    r = tool("eval_megaface", "--probes", tmp_path / "fs", "--probe-list", tmp_path / "facescrub_features_list.json",
             "--distractors", tmp_path / "d", "--distractor-lists", bad, "--suffix", "_x", "--noise", "keep",
             "--out", tmp_path / "out3", "--quiet", ok=False)
    assert r.returncode == 2 and "9/none.jpg" in r.stderr


def test_eval_blufr_cli_on_a_two_trial_config(lfw_feats, tmp_path):
    m = loadmat(str(data_path("lfw", "blufr", "blufr_lfw_config.mat")))
    small = {k: (v[:2] if k in ("trainIndex", "testIndex", "galIndex", "probIndex") else v)
             for k, v in m.items() if not k.startswith("__")}
    savemat(str(tmp_path / "two.mat"), small)
    r = tool("eval_blufr", "--features", lfw_feats / "lfw", "--config", tmp_path / "two.mat",
             "--out", tmp_path, "--quiet")
    res = json.loads((tmp_path / "blufr.json").read_text())
    assert res["kind"] == "blufr" and res["n_trials"] == 2 and 0 < res["verification"]["tar_mean"] <= 1
    assert "BLUFR verification TAR @ FAR 0.001" in r.stdout and (tmp_path / "blufr_roc.png").exists()
    v = res["verification"]
    assert f"{100 * v['tar_mean_minus_std']:.2f} % (mean - std; mean {100 * v['tar_mean']:.2f}" in r.stdout
    assert res["standard"] is True


def test_eval_attributes_cli_and_report(lfw_feats, tmp_path):
    images, attrs, labels = read_celeba_attributes(data_path("celeba", "list_attr_celeba.txt"))
    cols = [attrs.index(a) for a in GROUPS["all"]]
    y = labels[:200][:, cols].astype(np.float32)
    y[:20, 0] *= -1  # 20 wrong Narrow_Eyes predictions
    np.save(tmp_path / "attr.npy", y * 0.7)
    write_names(tmp_path / "attr.names.txt", [f"celeba/{n}" for n in images[:200]])
    run = tmp_path / "runs" / "full"
    r = tool("eval_attributes", "--predictions", tmp_path / "attr", "--out", run)
    res = json.loads((run / "attributes.json").read_text())
    acc = {a["name"]: a["accuracy"] for a in res["attributes"]}
    assert acc["Narrow_Eyes"] == pytest.approx(0.9) and acc["Male"] == 1.0
    assert "Narrow_Eyes" in r.stdout and "MOON" in r.stdout
    assert "CelebA: a stand-in for the paper's 1,000 hand-labelled FaceScrub images" in r.stdout
    assert res["stand_in"] is True
    tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", run, "--no-view1")
    tool("report", tmp_path / "runs")
    md = (tmp_path / "runs" / "report.md").read_text()
    assert "Tab. 4" in md and "| Narrow_Eyes | 83.40 | 85.60 | 90.00" in md
    assert re.search(r"full \([\d,]+ images, CelebA: stand-in\)", md) and "three annotators, majority vote" in md
    assert "| Full-Block | 77.74 | 98.15 | - |" in md and "[lfw_roc.png](full/lfw_roc.png)" in md


def test_report_names_an_unreadable_result_and_fails(lfw_feats, tmp_path):
    """A truncated lfw.json (what a full disk left before writes were atomic) is named with the
    reason; the report is not written unless --allow-broken, which lists it in the report."""
    run = tmp_path / "runs" / "full"
    tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", run, "--no-view1")
    good = (run / "lfw.json").read_text()
    (run / "lfw.json").write_text(good[:len(good) // 2])
    (run / "blufr.json").write_bytes(b"\xff\xfe not utf-8")
    r = tool("report", tmp_path / "runs", ok=False)
    assert r.returncode == 1 and not (tmp_path / "runs" / "report.md").exists()
    assert f"{run / 'lfw.json'}: JSONDecodeError" in r.stderr and f"{run / 'blufr.json'}: UnicodeDecodeError" in r.stderr
    assert "--allow-broken" in r.stderr
    (run / "attributes.json").write_text(json.dumps({"kind": "attributes", "attributes": []}))
    r = tool("report", tmp_path / "runs", "--allow-broken")
    md = (tmp_path / "runs" / "report.md").read_text()
    assert "2 unreadable result file(s) left out" in r.stdout and f"- unreadable: {run / 'lfw.json'}" in md


def test_eval_identification_names_bad_rows_in_their_file(lfw_feats, tmp_path):
    """Bad rows are reported by their row in the input file and their name (not their position
    after the seeded shuffle); duplicates and a dimension mismatch are clear errors."""
    celeba = np.load(lfw_feats / "celeba.npy")
    names = [f"{i:06d}.jpg" for i in range(1, 501)]
    bad = celeba.copy()
    bad[123] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    write_names(tmp_path / "bad.names.txt", names)
    args = ["--lfw", lfw_feats / "lfw", "--exclude", data_path("lfw", "peopleDevTrain.txt"), "--out", tmp_path,
            "--quiet", "--distractors"]
    r = tool("eval_identification", *args, tmp_path / "bad", ok=False)
    assert r.returncode == 2 and "bad.npy: 1 feature row(s) hold NaN or inf, first row 123 (000124.jpg)" in r.stderr
    assert "Traceback" not in r.stderr
    np.save(tmp_path / "dup.npy", celeba)
    write_names(tmp_path / "dup.names.txt", names[:-1] + [names[0]])
    r = tool("eval_identification", *args, tmp_path / "dup", ok=False)
    assert r.returncode == 2 and "image '000001' appears twice (rows 0 and 499)" in r.stderr
    np.save(tmp_path / "wide.npy", np.ones((500, 48), np.float32))
    write_names(tmp_path / "wide.names.txt", names)
    r = tool("eval_identification", *args, tmp_path / "wide", ok=False)
    assert r.returncode == 2 and "wide.npy: features of dimension 48, but the LFW features" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "identification.json").exists()


def test_eval_attributes_refuses_duplicate_names(tmp_path):
    images, attrs, labels = read_celeba_attributes(data_path("celeba", "list_attr_celeba.txt"))
    np.save(tmp_path / "attr.npy", np.ones((3, len(GROUPS["all"])), np.float32))
    write_names(tmp_path / "attr.names.txt", [images[0], images[1], images[0]])
    r = tool("eval_attributes", "--predictions", tmp_path / "attr", "--out", tmp_path, ok=False)
    assert r.returncode == 2 and "appears twice (rows 0 and 2)" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 96 KB tmpfs (a real disk that fills up); skipped where it cannot be mounted."""
    import shutil
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_leaves_the_earlier_results_whole(lfw_feats, small_disk):
    """eval_lfw on a full disk: it stops with a message that blames the disk, and the lfw.json and
    lfw_roc.png of the earlier run are left whole (they used to be truncated in place)."""
    out = small_disk / "eval"
    tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", out, "--no-view1")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".lock"}  # the run's lock says who ran last
    with open(small_disk / "filler", "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    r = tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", out, "--no-view1", "--far", "1e-2", ok=False)
    assert r.returncode == 1 and "No space left on device" in r.stderr
    assert "not of the input" in r.stderr and "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".lock"} == before
    json.loads(before["lfw.json"])


def test_eval_attributes_on_a_labelled_facescrub_subset(tmp_path):
    """The paper's protocol with a user's own labels: predictions for 4 FaceScrub probes, 3 of
    them hand-labelled (annotator columns voted); the output and the report say which labels."""
    names = ["Aaron_Eckhart/Aaron_Eckhart_1.png", "Aaron_Eckhart/Aaron_Eckhart_2.png",
             "Adam_Brody/Adam_Brody_7.png", "Adam_Brody/Adam_Brody_9.png"]
    np.save(tmp_path / "attr.npy", np.array([[0.5, 0.9], [-0.2, 0.3], [0.4, -0.8], [1.0, 1.0]], np.float32))
    write_names(tmp_path / "attr.names.txt", names)
    lines = ["image\tChubby\tMale:1\tMale:2\tMale:3",
             "Aaron_Eckhart/Aaron_Eckhart_1.png\t1\t1\t1\t-1",
             "Aaron_Eckhart/Aaron_Eckhart_2.png\t1\t1\t1\t1",
             "Adam_Brody/Adam_Brody_7.png\t1\t-1\t1\t-1"]
    (tmp_path / "labels.tsv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "runs" / "full"
    r = tool("eval_attributes", "--predictions", tmp_path / "attr", "--facescrub-labels", tmp_path / "labels.tsv",
             "--attributes", "Chubby,Male", "--out", run)
    res = json.loads((run / "attributes.json").read_text())
    acc = {a["name"]: a["accuracy"] for a in res["attributes"]}
    assert res["n_images"] == 3 and res["stand_in"] is False
    assert acc["Chubby"] == pytest.approx(2 / 3) and acc["Male"] == 1.0
    assert "hand-labelled FaceScrub images (the paper's Tab. 4 protocol)" in r.stdout
    tool("report", tmp_path / "runs")
    assert "full (3 images, hand-labelled FaceScrub)" in (tmp_path / "runs" / "report.md").read_text()
    r = tool("eval_attributes", "--predictions", tmp_path / "attr", "--facescrub-labels", tmp_path / "nothing.tsv",
             "--out", run, ok=False)
    assert r.returncode == 2 and "nothing.tsv" in r.stderr


# ---------------------------------------------------------------------------- what is compared
def _feature_set(prefix, feats, names, labels=None, **settings):
    """A feature set as tools/extract_features.py writes it: .npy, .names.txt, .meta.json (its
    "settings" block; the values default to one model's, ``settings`` changes some)."""
    np.save(f"{prefix}.npy", feats)
    write_names(f"{prefix}.names.txt", names)
    if labels is not None:
        np.save(f"{prefix}.labels.npy", labels)
    made = {"n": len(names), "dim": feats.shape[1], "blob": "fc5", "mirror": "none", "l2norm": False,
            "deploy_sha256": "d" * 64, "weights_sha256": "w" * 64, **settings}
    (Path(f"{prefix}.meta.json")).write_text(json.dumps({"settings": made, "input_size": [112, 96],
                                                        "preprocess": "(x - 127.5) * 0.0078125, BGR, NCHW"}))


def test_feature_sets_made_differently_are_refused(lfw_feats, tmp_path):
    """Probes with --mirror sum against distractors with --mirror none (same dimension) were
    compared without a word; other weights or --l2norm likewise. Every evaluator that combines
    feature sets refuses them naming what differs; --accept-mismatch compares them, says so
    and records it in the result."""
    keep = slice(0, 3000)  # a part of LFW is enough, and quick
    lfw, celeba = np.load(lfw_feats / "lfw.npy")[keep], np.load(lfw_feats / "celeba.npy")
    lnames = (lfw_feats / "lfw.names.txt").read_text().split()[keep]
    cnames = [f"{i:06d}.jpg" for i in range(1, 501)]
    _feature_set(tmp_path / "probe", lfw, lnames, np.load(lfw_feats / "lfw.labels.npy")[keep], mirror="sum")
    _feature_set(tmp_path / "same", celeba, cnames, mirror="sum")
    _feature_set(tmp_path / "other", celeba, cnames)
    _feature_set(tmp_path / "weights", celeba, cnames, mirror="sum", weights_sha256="v" * 64, l2norm=True)
    ident = ["--lfw", tmp_path / "probe", "--exclude", data_path("lfw", "peopleDevTrain.txt"), "--quiet",
             "--sizes", "10", "100"]
    mega = ["--probes", tmp_path / "probe", "--singletons", "drop", "--noise", "keep", "--quiet", "--sizes", "10"]
    for name, args in (("eval_identification", ident + ["--distractors"]), ("eval_megaface", mega + ["--distractors"])):
        out = tmp_path / name
        r = tool(name, *args, tmp_path / "other", "--out", out, ok=False)
        assert r.returncode == 2 and "mirror mode: 'sum' vs 'none'" in r.stderr and "--accept-mismatch" in r.stderr
        assert "Traceback" not in r.stderr and nothing_written(out)
        r = tool(name, *args, tmp_path / "weights", "--out", out, ok=False)
        assert r.returncode == 2 and "model weights (sha256)" in r.stderr and "L2 normalisation: False vs True" in r.stderr
        tool(name, *args, tmp_path / "same", "--out", out)  # made alike: evaluated
        r = tool(name, *args, tmp_path / "other", "--out", out, "--accept-mismatch")
        assert "warning: --accept-mismatch" in r.stderr and "mirror mode" in r.stderr
        res = json.loads(next(out.glob("*.json")).read_text())
        assert "mirror mode: 'sum' vs 'none'" in res["settings_mismatch_accepted"][0]
    # a set without meta.json is compared, with a warning that it could not be checked
    r = tool("eval_identification", *ident, "--distractors", lfw_feats / "celeba", "--out", tmp_path / "nometa")
    assert f"{lfw_feats / 'celeba'}: no meta.json" in r.stderr


def test_one_feature_set_twice_and_a_name_twice_are_refused(lfw_feats, tmp_path):
    """The same distractor set given twice to eval_identification counted every image twice
    (24,069 "distractors", 10,000 of them copies), also as a copy under another name; a
    MegaFace distractor prefix holding one name twice was taken as it was."""
    import shutil
    for ext in ("npy", "names.txt"):
        shutil.copy(lfw_feats / f"celeba.{ext}", tmp_path / f"copy.{ext}")
    args = ["--lfw", lfw_feats / "lfw", "--exclude", data_path("lfw", "peopleDevTrain.txt"), "--quiet",
            "--out", tmp_path / "out"]
    r = tool("eval_identification", *args, "--distractors", lfw_feats / "celeba", lfw_feats / "celeba", ok=False)
    assert r.returncode == 2 and f"distractor set 2 {lfw_feats / 'celeba'} is distractor set 1" in r.stderr
    r = tool("eval_identification", *args, "--distractors", lfw_feats / "celeba", tmp_path / "copy", ok=False)
    assert r.returncode == 2 and "holds the same features as distractor set 1" in r.stderr
    r = tool("eval_identification", *args, "--distractors", lfw_feats / "lfw", ok=False)
    assert r.returncode == 2 and "is LFW set" in r.stderr and nothing_written(tmp_path / "out")

    celeba = np.load(lfw_feats / "celeba.npy")
    np.save(tmp_path / "dup.npy", celeba)
    write_names(tmp_path / "dup.names.txt", [f"{i:06d}.jpg" for i in range(1, 500)] + ["./000007.jpg"])
    r = tool("eval_megaface", "--probes", lfw_feats / "lfw", "--distractors", tmp_path / "dup", "--singletons", "drop",
             "--noise", "keep", "--quiet", "--out", tmp_path / "mf", ok=False)
    assert r.returncode == 2 and "dup.names.txt: image '000007.jpg' appears twice (rows 6 and 499)" in r.stderr
    r = tool("eval_megaface", "--probes", lfw_feats / "lfw", "--distractors", lfw_feats / "lfw", "--singletons", "drop",
             "--noise", "keep", "--quiet", "--out", tmp_path / "mf", ok=False)
    assert r.returncode == 2 and "distractors" in r.stderr and "is probes" in r.stderr


def test_report_refuses_two_results_of_one_kind(lfw_feats, tmp_path):
    """eval/lfw.json and eval_old/lfw.json in one run: the last in sorted order won without a
    word (50.00 shown instead of the run's figure). Now every candidate is named with its
    figure and none is picked; --exclude leaves the stale one out."""
    run = tmp_path / "runs" / "full"
    tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", run / "eval", "--no-view1")
    res = json.loads((run / "eval" / "lfw.json").read_text())
    (run / "eval_old").mkdir()
    (run / "eval_old" / "lfw.json").write_text(json.dumps({**res, "accuracy": 0.5}))
    (run / "eval_old" / "lfw_roc.png").write_bytes((run / "eval" / "lfw_roc.png").read_bytes())
    r = tool("report", tmp_path / "runs", ok=False)
    good = f"{100 * res['accuracy']:.2f}"
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "runs" / "report.md").exists()
    assert f"lfw: eval/lfw.json (accuracy {good} %), eval_old/lfw.json (accuracy 50.00 %)" in r.stderr
    assert "--exclude" in r.stderr
    tool("report", tmp_path / "runs", "--exclude", "eval_old/*")
    md = (tmp_path / "runs" / "report.md").read_text()
    assert f"| full | {good} ±" in md and "50.00 ±" not in md and "eval_old" not in md


@pytest.fixture
def read_only(tmp_path):
    """A read-only file system (tests/faults.py); skipped where it cannot be mounted."""
    from faults import read_only_disk
    with read_only_disk(tmp_path / "ro") as mnt:
        yield mnt


def test_read_only_output_is_a_message_not_a_traceback(lfw_feats, tmp_path, read_only):
    """report.py on a read-only output printed a traceback, and atomic_write's cleanup (removing
    a temporary file that was never made: EROFS too) hid the first error under a second one."""
    run = tmp_path / "runs" / "full"
    tool("eval_lfw", "--features", lfw_feats / "lfw", "--out", run, "--no-view1")
    r = tool("report", tmp_path / "runs", "--out", read_only / "report.md", ok=False)
    assert r.returncode == 1 and "Read-only file system" in r.stderr and "not of the input" in r.stderr
    assert "Traceback" not in r.stderr and "During handling" not in r.stderr
    r = tool("eval_lfw", "--features", lfw_feats / "lfw", "--no-view1", "--out", read_only / "eval", ok=False)
    assert r.returncode == 1 and "Read-only file system" in r.stderr and "Traceback" not in r.stderr, r.stderr
