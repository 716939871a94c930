"""Folders in trees: one scan (mtdnn.images.scan_images) for every tool that walks a folder,
one rule for links and hidden entries, and a word for whatever it skips (docs/reliability.md).

The rule: hidden entries are skipped; links to files are followed; a link to a folder outside
the tree is followed like a folder, a link to a folder inside the tree is skipped (that folder
is taken under its own name), whatever order the system lists them in. Real LFW images, real
build_db, align_faces and extract_features."""
import json
import os
import shutil
import subprocess
import sys

from mtdnn import datasets
from mtdnn.evaluation.features_io import load_features
from mtdnn.images import scan_images
from mtdnn.paths import REPO, data_path

TOOLS = REPO / "tools"
EXPECTED = ["A/a1.jpg", "A/a2.jpg", "B/b1.jpg", "B/b2.jpg", "C/c1.jpg", "C/c2.jpg"]
SKIPPED = {".Trash-0/": "hidden folder", "A/.thumbnails/": "hidden folder",
           "0link/": "link to a folder inside the tree", "Zlink/": "link to a folder inside the tree"}


def make_tree(tmp_path, source):
    """A/ and C/ real folders; B a link to a folder outside the tree; 0link and Zlink links to A
    (listed before and after it); a trash folder and a thumbnails folder, both hidden."""
    people = [p for p in sorted(source.iterdir()) if p.is_dir() and len(list(p.iterdir())) >= 2]
    files = [f for person in people[:5] for f in sorted(person.iterdir())[:2]]
    root, outside = tmp_path / "tree", tmp_path / "outside" / "B"
    for rel, src in zip(["A/a1.jpg", "A/a2.jpg", "outside/B/b1.jpg", "outside/B/b2.jpg", "C/c1.jpg", "C/c2.jpg",
                         ".Trash-0/T/t1.jpg", ".Trash-0/T/t2.jpg", "A/.thumbnails/x.jpg"], files + files):
        dst = (tmp_path / rel) if rel.startswith("outside") else root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    (root / "B").symlink_to(outside, target_is_directory=True)
    (root / "0link").symlink_to(root / "A", target_is_directory=True)
    (root / "Zlink").symlink_to("A", target_is_directory=True)  # a relative link
    return root


def run(tool, *args):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, str(TOOLS / tool), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def test_the_scan_rule(tmp_path):
    root = make_tree(tmp_path, data_path("lfw", "lfw-112x96"))
    scan = scan_images(root)
    assert scan.paths == EXPECTED
    assert dict(scan.not_images) == SKIPPED and not scan.problems
    notes = []
    assert [s.path for s in datasets.read_identity_folders(root, report=notes.append)] == EXPECTED
    assert len(notes) == 1 and "4 entries skipped" in notes[0] and ".Trash-0/" in notes[0], notes
    (root / "C" / "up").symlink_to(tmp_path, target_is_directory=True)  # a link to a folder above the tree
    scan = scan_images(root)
    assert scan.paths == EXPECTED and dict(scan.not_images) == {**SKIPPED, "C/up/": "link to a folder above the tree"}


def test_build_db_takes_linked_identities_and_skips_hidden_folders(tmp_path):
    """Was: the linked identity B dropped without a word, .Trash-0 an identity, A/.thumbnails/x.jpg one of A's."""
    root = make_tree(tmp_path, data_path("lfw", "lfw-112x96"))
    r = run("build_db.py", tmp_path / "db", "--images", root)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "db" / "train_manifest.json").read_text())
    v = json.loads((tmp_path / "db" / "val_manifest.json").read_text())
    assert m["identities"] == ["A", "B", "C"] and sorted(m["paths"] + v["paths"]) == EXPECTED
    assert "4 entries skipped (hidden folder: 2, link to a folder inside the tree: 2)" in r.stderr, r.stderr


def test_align_faces_takes_each_folder_once_under_its_own_name(tmp_path):
    """Was: of a folder and a link to it, whichever the system listed first."""
    root = make_tree(tmp_path, data_path("lfw", "lfw-deepfunneled"))
    out = tmp_path / "aligned"
    r = run("align_faces.py", root, out, "--workers", "1")
    assert r.returncode == 0, r.stderr
    crops = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
                   if f.endswith(".jpg"))
    assert crops == EXPECTED
    assert "4 entries skipped as not images (hidden folder: 2, link to a folder inside the tree: 2)" in r.stderr


def test_extract_features_tree_is_the_same_scan(tmp_path):
    from mtdnn import features
    from test_extract_features import DEPLOY
    root = make_tree(tmp_path, data_path("lfw", "lfw-112x96"))
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    features.load_net(tmp_path / "deploy.prototxt").caffe_net().save(str(tmp_path / "w.caffemodel"))
    r = run("extract_features.py", "--deploy", tmp_path / "deploy.prototxt", "--weights", tmp_path / "w.caffemodel",
            "--tree", root, "--out", tmp_path / "f", "--quiet")
    assert r.returncode == 0, r.stderr
    assert load_features(tmp_path / "f")[1] == EXPECTED
    assert "4 entries skipped" in r.stderr and "0link/ (link to a folder inside the tree)" in r.stderr, r.stderr
