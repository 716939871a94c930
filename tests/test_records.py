"""One record format, one escaping rule (mtdnn/records.py, docs/reliability.md): names holding
every character ``str.splitlines`` splits at, tabs, edge spaces and bytes that are not UTF-8
go through every tool that writes or reads a list or record file and come back exactly.

Real LFW faces, real MTCNN, real Caffe (build_db's LMDB, a small deploy for extract_features)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mtdnn import attribute_labels as al
from mtdnn import datasets, features, records
from mtdnn.evaluation.features_io import load_features
from mtdnn.paths import REPO, data_path

TOOLS = REPO / "tools"
LFW = data_path("lfw", "lfw-deepfunneled")
CROPS = data_path("lfw", "lfw-112x96")
# Every character str.splitlines splits at, a tab, a backslash, edge spaces, bytes that are not UTF-8.
SEPARATORS = ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
NAMES = (["ff\x0cfeed.jpg", "tab\there.jpg", "back\\slash\\n.jpg", " edge .jpg", os.fsdecode(b"caf\xe9.jpg")]
         + [f"s{i}{c}x.jpg" for i, c in enumerate(SEPARATORS)])


def run(tool, *args):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, str(TOOLS / tool), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def test_escaped_fields_never_break_a_line_or_a_field():
    for name in NAMES + ["", "  ", "a  b", "\\x41", "\t\n", "\x00\x7f\xa0\u3000"]:
        field = records.escape_field(name)
        assert records.unescape_field(field) == name
        assert len(field.split("\n")) == 1 and field.splitlines() in ([field], [])
        assert field == field.strip() and all(c == " " or not c.isspace() for c in field)
        field.encode("utf-8")  # always UTF-8 text
    assert records.escape_field("Aaron_Eckhart/Aaron_Eckhart_0001.jpg") == "Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
    # the older rule's files read the same
    assert records.unescape_field("a\\\\b\\tc\\xe9") == "a\\b\tc" + os.fsdecode(b"\xe9")


def test_lists_and_failures_round_trip(tmp_path):
    samples = [datasets.Sample(n, str(i)) for i, n in enumerate(NAMES)]
    datasets.write_image_list(tmp_path / "list.txt", samples)
    assert datasets.read_image_list(tmp_path / "list.txt") == samples
    paths, labels = features.read_image_list(tmp_path / "list.txt")
    assert paths == NAMES and labels.tolist() == list(range(len(NAMES)))
    records.write_failures(tmp_path / "failures.txt", {n: f"why {n}" for n in NAMES})
    assert records.read_failures(tmp_path / "failures.txt") == {n: f"why {n}" for n in NAMES}


def test_label_attributes_scores_name_every_row(tmp_path):
    """label_attributes wrote names raw: a name with \\f made 'N rows but N+1 names' for every reader."""
    scores = np.arange(len(NAMES) * 2, dtype=np.float32).reshape(-1, 2)
    al.write_scores(tmp_path / "scores", scores, NAMES)
    x, names, _ = load_features(tmp_path / "scores")
    assert names == NAMES and np.array_equal(x, scores)


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    """LFW photos under the odd names (one folder), for align_faces."""
    src = tmp_path_factory.mktemp("odd_photos")
    people = sorted(p for p in LFW.iterdir() if p.is_dir())[:len(NAMES)]
    for name, person in zip(NAMES, people):
        shutil.copyfile(next(person.iterdir()), src / name)
    return src


def test_align_faces_records_every_name_once(photo_tree, tmp_path):
    out = tmp_path / "aligned"
    r = run("align_faces.py", photo_tree, out, "--workers", "1", "--allow-failures")
    assert r.returncode == 0, r.stderr
    tool = _align_tool()
    done = tool.read_landmarks(out / "landmarks.txt")
    aligned = set(done)
    assert aligned | set(records.read_failures(out / "failures.txt")) == set(NAMES)
    assert len(aligned) >= len(NAMES) - 2 and all((out / n).is_file() for n in aligned)
    lines = [ln for ln in (out / "landmarks.txt").read_bytes().split(b"\n") if ln and not ln.startswith(b"#")]
    assert len(lines) == len(aligned)  # no phantom records
    again = run("align_faces.py", photo_tree, out, "--workers", "1", "--allow-failures")
    assert again.returncode == 0 and f"{len(NAMES)} already done or failed, 0 to align" in again.stderr, again.stderr
    # the same names as a --list (escaped, as every list the tools write) are the same images
    records.write_names(tmp_path / "list.txt", NAMES)
    listed = run("align_faces.py", photo_tree, out, "--list", tmp_path / "list.txt", "--allow-failures")
    assert f"{len(NAMES)} already done or failed, 0 to align" in listed.stderr, listed.stderr


def _align_tool():
    from mtdnn import alignment
    return alignment


@pytest.fixture(scope="module")
def crop_tree(tmp_path_factory):
    """Aligned 112x96 crops: identity folders and image names holding the odd characters."""
    root = tmp_path_factory.mktemp("odd_crops")
    people = [p for p in sorted(CROPS.iterdir()) if p.is_dir() and len(list(p.iterdir())) >= 2][:len(NAMES)]
    for k, (name, person) in enumerate(zip(NAMES, people)):
        folder = root / (name.replace(".jpg", "") if k % 2 else person.name)
        folder.mkdir()
        for src in sorted(person.iterdir())[:2]:
            shutil.copyfile(src, folder / (name if k % 2 == 0 else src.name))
            name = "2" + name  # the second image of the folder under another odd name
    return root


def tree_names(root):
    return sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                  for d, _, files in os.walk(root) for f in files)


@pytest.mark.parametrize("utf8", [True, False], ids=["utf8", "not-utf8"])
def test_build_db_keeps_every_name(crop_tree, tmp_path, utf8):
    """Was: a non-UTF-8 name stopped build_db with a codec error naming no file; a name with \\f
    left out of the database made every rerun die with an IndexError (it miscounted them)."""
    tree = tmp_path / "tree"
    shutil.copytree(crop_tree, tree)
    for d, _, files in os.walk(tree):
        for f in files:
            if utf8 and "\udce9" in f:  # this run: only names that are UTF-8
                os.unlink(os.path.join(d, f))
    bad = "AAA\f" + ("\u2029" if utf8 else os.fsdecode(b"\xff"))  # an identity folder whose images cannot be read
    (tree / bad).mkdir()
    for n in ("e\x1c1.jpg", "e\u20282.jpg"):
        (tree / bad / n).write_bytes(b"")
    names = tree_names(tree)
    out = tmp_path / "db"
    r = run("build_db.py", out, "--images", tree, "--placeholder-attributes", "2")
    assert r.returncode == 1 and "incomplete: 2 image(s) left out" in r.stderr, r.stderr
    train = json.loads((out / "train_manifest.json").read_text())
    val = json.loads((out / "val_manifest.json").read_text())
    kept = [records.unescape_field(p) for p in train["paths"] + val["paths"]]
    left_out = records.read_failures(out / "failures.txt")
    assert sorted(kept + list(left_out)) == names and len(left_out) == 2
    assert all(why.startswith(str(tree / p)) for p, why in left_out.items())
    assert run("check_db.py", out).returncode == 0
    again = run("build_db.py", out, "--images", tree, "--placeholder-attributes", "2")
    assert again.returncode == 1 and "is up to date" in again.stderr, again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith("incomplete: 2 image(s) left out"), again.stderr


def test_extract_features_names_every_row(crop_tree, tmp_path):
    from test_extract_features import DEPLOY
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    features.load_net(tmp_path / "deploy.prototxt").caffe_net().save(str(tmp_path / "w.caffemodel"))
    r = run("extract_features.py", "--deploy", tmp_path / "deploy.prototxt", "--weights", tmp_path / "w.caffemodel",
            "--tree", crop_tree, "--out", tmp_path / "f", "--quiet")
    assert r.returncode == 0, r.stderr
    x, names, _ = load_features(tmp_path / "f")
    assert names == tree_names(crop_tree) and len(x) == len(names)
    # and as a --list written by the one writer
    datasets.write_image_list(tmp_path / "list.txt", [datasets.Sample(n, "0") for n in names])
    r = run("extract_features.py", "--deploy", tmp_path / "deploy.prototxt", "--weights", tmp_path / "w.caffemodel",
            "--list", tmp_path / "list.txt", "--root", crop_tree, "--out", tmp_path / "g", "--quiet")
    assert r.returncode == 0, r.stderr
    y, ynames, _ = load_features(tmp_path / "g")
    assert ynames == names and np.allclose(x, y, atol=1e-6)


def test_caffe_read_lists_refuse_what_caffe_would_cut(tmp_path):
    from mtdnn import db
    db.write_source(tmp_path / "ok.txt", [tmp_path / "a.h5"])
    for bad in ("with space.h5", "line\u2028break.h5", os.fsdecode(b"\xff.h5")):
        with pytest.raises(ValueError, match="Caffe reads this list file word by word"):
            db.write_source(tmp_path / "bad.txt", [tmp_path / bad])
    assert not (tmp_path / "bad.txt").exists()
