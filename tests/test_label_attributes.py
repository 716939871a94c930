"""Attribute labelling (mtdnn.attribute_labels, tools/label_attributes.py) on real LFW faces:
scores in LMDB record order, the per-identity vote over all splits, HDF5 rows in the
manifest's order, bad input. The classifier is a MOON net with seeded random weights: these
tests check the plumbing; tests/test_moon_train.py trains a real one."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mtdnn.netgen.moon import render_moon
from mtdnn import attribute_labels as al
from mtdnn import db, manifest
from mtdnn.paper import PAPER_ATTRIBUTES
from mtdnn.features import preprocess
from mtdnn.paths import REPO, data_path
from mtdnn.vote import majority_vote

# 4 people with several images (capped at 6) and 2 with a single image (their own prediction stands)
PEOPLE = {"Abdullah_Gul": 6, "Zico": 3, "Aaron_Peirsol": 4, "Colin_Powell": 6, "AJ_Cook": 1, "Aaron_Eckhart": 1}
TOOL = REPO / "tools" / "label_attributes.py"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A MOON run folder (deploy.prototxt, moon.caffemodel, moon.json) with random weights and
    unit BatchNorm statistics, so scores vary from image to image. Caffe's own RNG draws the
    fillers: seed 1 gives weights whose vote changes 12 labels of these 21 images (not all
    seeds change some: seed 3 changes 3, and an unseeded net may change none)."""
    import caffe
    caffe.set_mode_cpu()
    run = tmp_path_factory.mktemp("moon_model")
    render_moon(run, backbone="fast", width=0.125, blocks="1,1,1,1", attributes="all")
    caffe.set_random_seed(1)
    net = caffe.Net(str(run / "deploy.prototxt"), caffe.TEST)
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "BatchNorm":
            layer.blobs[0].data[...] = 0
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
    net.save(str(run / "moon.caffemodel"))
    (run / "moon.json").write_text(json.dumps({"attributes": list(PAPER_ATTRIBUTES), "target": "balanced"}))
    return run


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw_tree")
    src = data_path("lfw", "lfw-112x96")
    for person, n in PEOPLE.items():
        (root / person).mkdir()
        for k in range(1, n + 1):
            shutil.copy(src / person / f"{person}_{k:04d}.jpg", root / person)
    return root


@pytest.fixture()
def database(tree, tmp_path):
    """A tools/build_db.py database of the tree with placeholder attributes (train + val)."""
    out = tmp_path / "db"
    rc = subprocess.run([sys.executable, str(REPO / "tools" / "build_db.py"), str(out), "--images", str(tree),
                         "--placeholder-attributes", "7", "--attribute-names", ",".join(PAPER_ATTRIBUTES)],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    return out


def direct_scores(model, lmdb_path):
    """attr_pred of every record by a plain pycaffe forward, one image at a time."""
    import caffe
    net = caffe.Net(str(model / "deploy.prototxt"), caffe.TEST, weights=str(model / "moon.caffemodel"))
    out = []
    for image, _ in db.read_image_lmdb(lmdb_path):
        net.blobs["data"].data[...] = preprocess([image])
        out.append(net.forward()["attr_pred"][0].copy())
    return np.array(out)


def test_label_database_in_place(model, database):
    net, meta = al.load_classifier(model)
    summary = al.label_database(database, net, meta, batch_size=5, progress=False)
    ms = {s: manifest.read_manifest(database / f"{s}_manifest.json") for s in ("train", "val")}
    scores, ids, rows = [], [], []
    for split, m in ms.items():
        manifest.verify(database / f"{split}_manifest.json")  # checksum of the new labels included
        with h5py.File(database / m["hdf5"]) as f:
            assert [p.decode() for p in f["paths"][...]] == m["paths"]  # rows in the LMDB's record order
            s = direct_scores(model, database / m["lmdb"])
            np.testing.assert_allclose(f["scores"][...], s, rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(f["own"][...], np.where(s > 0, 1, -1))
            rows.append(f["attributes"][...])
        scores.append(s)
        ids += [m["identities"][label] for label in m["labels"]]
        assert m["attribute_names"] == list(PAPER_ATTRIBUTES)
    expected = majority_vote(np.concatenate(scores), ids)  # one vote over train and val together
    np.testing.assert_array_equal(np.concatenate(rows), expected.labels)
    assert summary["changed_total"] == expected.changed_total > 0  # the vote did change labels
    assert [a["changed"] for a in summary["attributes"]] == expected.changed.tolist()
    assert summary["images"] == 21 and summary["identities"] == 6 and summary["single_image_identities"] == 2
    # a single-image identity keeps its own prediction
    k = ids.index("AJ_Cook")
    np.testing.assert_array_equal(np.concatenate(rows)[k], np.where(np.concatenate(scores)[k] > 0, 1, -1))
    # every identity has one label per attribute
    all_rows = np.concatenate(rows)
    for person in PEOPLE:
        assert len({tuple(r) for r, i in zip(all_rows, ids) if i == person}) == 1
    assert json.loads((database / "attribute_labels.json").read_text())["changed_total"] == expected.changed_total
    assert (database / "train_attribute_scores.npy").is_file()
    # labels that are not placeholders are replaced only with force
    with pytest.raises(al.LabelError, match="already holds attribute labels"):
        al.label_database(database, net, meta, progress=False)
    al.label_database(database, net, meta, force=True, progress=False)


def test_label_database_elsewhere_and_subset(model, database, tmp_path):
    net, meta = al.load_classifier(model)
    out = tmp_path / "labels"
    summary = al.label_database(database, net, meta, out_dir=out, names=["Male", "Big_Nose"], progress=False)
    assert [a["name"] for a in summary["attributes"]] == ["Male", "Big_Nose"]
    assert not db.read_attribute_hdf5(database / "train_attributes.h5").any()  # the database is untouched
    m = manifest.read_manifest(out / "train_manifest.json")
    assert os.path.isabs(m["lmdb"]) and m["attribute_names"] == ["Male", "Big_Nose"]
    manifest.verify(out / "train_manifest.json")
    with h5py.File(out / "train_attributes.h5") as f:
        full = direct_scores(model, database / "train_lmdb")
        np.testing.assert_allclose(f["scores"][...], full[:, [6, 1]], rtol=1e-4, atol=1e-5)
    assert (out / "train_attributes.h5.txt").read_text() == "train_attributes.h5\n"  # self-contained


def test_bad_input(model, database, tmp_path):
    net, meta = al.load_classifier(model)
    with pytest.raises(al.LabelError, match="does not predict Bald"):
        al.label_database(database, net, meta, names=["Male", "Bald"], progress=False)
    with pytest.raises(al.LabelError, match="no <split>_manifest.json"):
        al.label_database(tmp_path, net, meta, progress=False)
    with pytest.raises(al.LabelError, match="no images to score"):
        al.score_images(net, [], 0)
    with pytest.raises(al.LabelError, match="112x96"):
        al.score_images(net, [np.zeros((109, 89, 3), np.uint8)], 1, progress=False)
    with pytest.raises(al.LabelError, match="no predictions"):
        al.vote_summary(np.zeros((0, 7)), [], PAPER_ATTRIBUTES)
    with pytest.raises(al.LabelError, match="not found"):
        al.load_classifier(tmp_path)
    # an LMDB that no longer matches its manifest is refused before anything is written
    shutil.rmtree(database / "val_lmdb")
    shutil.copytree(database / "train_lmdb", database / "val_lmdb")
    with pytest.raises(al.LabelError, match="val_lmdb"):
        al.label_database(database, net, meta, progress=False)
    assert not db.read_attribute_hdf5(database / "train_attributes.h5").any()


def test_command_line(model, tree, database, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, str(TOOL), "--model", str(model), *a],  # noqa: E731
                                    capture_output=True, text=True)
    out = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--db" in out.stdout and "single" in out.stdout
    out = run("--tree", str(tree), "--scores", str(tmp_path / "s"), "--vote", "--batch", "4")
    assert out.returncode == 0, out.stderr
    names = (tmp_path / "s.names.txt").read_text().split()
    assert names == sorted(names) and len(names) == 21  # the tree's sorted order, as build_db reads it
    scores, voted = np.load(tmp_path / "s.npy"), np.load(tmp_path / "s.voted.npy")
    assert scores.shape == voted.shape == (21, 7)
    np.testing.assert_array_equal(voted, majority_vote(scores, [n.split("/")[0] for n in names]).labels)
    out = run("--db", str(database))
    assert out.returncode == 0, out.stderr
    assert "the vote changed" in out.stdout and "2 with a single image" in out.stdout
    check = subprocess.run([sys.executable, str(REPO / "tools" / "check_db.py"), str(database)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count("OK") == 2, check.stderr
    for args, message in [(("--db", str(database), "--mirror", "sum"), "--force"), (("--db", str(database), "--attributes", "Big_Noze"), "Big_Noze"),
                          (("--tree", str(tree)), "--scores"), (("--db", str(tmp_path)), "manifest")]:
        out = run(*args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_scores_feed_eval_attributes(model, tmp_path):
    """Scores of CelebA images in the feature format are read by tools/eval_attributes.py;
    images that the attribute file does not list are an error there."""
    celeba = data_path("celeba", "img_align_celeba_89x109")
    names = [f"{i:06d}.jpg" for i in range(1, 41)]
    net, meta = al.load_classifier(model)
    import cv2
    images = [cv2.resize(cv2.imread(str(celeba / n)), (96, 112)) for n in names]  # stand-in crops
    al.write_scores(tmp_path / "p", al.score_images(net, images, len(images), progress=False), names)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "tools" / "eval_attributes.py"), "--predictions",
                          str(tmp_path / "p"), "--out", str(tmp_path / "e")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert len(json.loads((tmp_path / "e" / "attributes.json").read_text())["attributes"]) == 7
    al.write_scores(tmp_path / "q", np.zeros((1, 7)), ["Zico/Zico_0001.jpg"])
    out = subprocess.run([sys.executable, str(REPO / "tools" / "eval_attributes.py"), "--predictions",
                          str(tmp_path / "q"), "--out", str(tmp_path / "e")], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "not found" in out.stderr


def _files(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def test_rerun_is_up_to_date_keyed_on_the_weights_content(model, database, tmp_path):
    """The documented preparation block reruns: the same classifier (by content, wherever its
    folder is) on the same records leaves the labels as they are; retrained weights at the same
    path are another classifier, whose labels replace these only with --force."""
    import caffe
    copy = tmp_path / "moon"
    shutil.copytree(model, copy)
    run = lambda m, *a: subprocess.run([sys.executable, str(TOOL), "--model", str(m), "--db", str(database), *a],  # noqa: E731
                                       capture_output=True, text=True)
    assert run(model).returncode == 0
    before = _files(database)
    out = run(copy)
    assert out.returncode == 0 and "up to date" in out.stdout, out.stdout + out.stderr
    assert _files(database) == before
    net = caffe.Net(str(copy / "deploy.prototxt"), caffe.TEST, weights=str(copy / "moon.caffemodel"))
    net.params[list(net.params)[0]][0].data[...] *= 0.5  # "retrained" into the same file
    net.save(str(copy / "moon.caffemodel"))
    out = run(copy)
    assert out.returncode == 2 and "another classifier" in out.stderr and "--force" in out.stderr
    assert _files(database) == before
    out = run(copy, "--force")
    assert out.returncode == 0 and "the vote changed" in out.stdout, out.stderr


def test_interrupted_labelling_is_redone(model, database):
    """A run killed between a split's HDF5 file and its manifest leaves a file that does not
    match the manifest: the rerun (without --force) relabels instead of refusing."""
    m = manifest.read_manifest(database / "train_manifest.json")
    with h5py.File(database / "train_attributes.h5", "a") as f:
        f["attributes"][...] = 1  # the new labels written, the manifest not yet
    out = subprocess.run([sys.executable, str(TOOL), "--model", str(model), "--db", str(database)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    manifest.verify(database / "train_manifest.json")
    assert manifest.read_manifest(database / "train_manifest.json")["order_sha256"] == m["order_sha256"]


def test_full_disk_is_a_machine_error_and_leaves_nothing(model, tree, tmp_path):
    """A write that fails for the machine (here: the file-size limit, EFBIG, as a full disk
    gives ENOSPC) stops the run with a message that says so, exit 1, and no partial file."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
    out = subprocess.run([sys.executable, str(TOOL), "--model", str(model), "--tree", str(tree),
                          "--scores", str(tmp_path / "s")], capture_output=True, text=True, preexec_fn=limit)
    assert out.returncode == 1 and "problem of the machine" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == [".s.lock"]  # only the run's lock (mtdnn.fileio.OutputLock)


def test_tree_read_error_of_the_machine_is_not_an_image_failure(model, tree, tmp_path, monkeypatch, capsys):
    """An I/O error (EIO, injected where the crop's bytes are read) in `--tree` mode was
    reported as a failure of that image (bad input, exit 2); it is the machine's: exit 1 and a
    message that says so, nothing written."""
    import errno
    from pathlib import Path

    import runpy
    victim = sorted(tree.rglob("*.jpg"))[3]
    real = Path.read_bytes

    def read_bytes(self):
        if self == victim:
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(sys, "argv", [str(TOOL), "--model", str(model), "--tree", str(tree), "--scores",
                                      str(tmp_path / "s")])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(TOOL), run_name="__main__")  # the tool as run, in this process
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Input/output error" in err and "problem of the machine" in err, err
    assert not list(tmp_path.glob("s.*"))


def test_truncated_weights_and_a_scores_folder_are_named(model, tree, tmp_path):
    """A truncated moon.caffemodel ended in Caffe's abort (exit 134); `--scores DIR/` wrote
    hidden files. Both are refused with a message naming the file, exit 2."""
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    w = copy / "moon.caffemodel"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    out = subprocess.run([sys.executable, str(TOOL), "--model", str(copy), "--tree", str(tree),
                          "--scores", str(tmp_path / "s")], capture_output=True, text=True)
    assert out.returncode == 2 and f"{w}: " in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "Check failed" not in out.stderr
    (tmp_path / "scores").mkdir()
    out = subprocess.run([sys.executable, str(TOOL), "--model", str(model), "--tree", str(tree),
                          "--scores", f"{tmp_path / 'scores'}/"], capture_output=True, text=True)
    assert out.returncode == 2 and "is a folder, not a feature prefix" in out.stderr, out.stderr
    assert not list((tmp_path / "scores").iterdir())


def test_out_of_memory_decoding_a_tree_image_is_the_machines(model, tree, tmp_path, monkeypatch, capsys):
    """A machine error while `--tree` reads an image was reported as a failure of the image:
    here OpenCV cannot allocate the 1.2 GB a 20000 x 20000 PNG decodes to (a real limit: the
    process's address space is capped 600 MB above its size). It stops the run as the
    machine's problem (exit 1), not as an undecodable image (bad input, exit 2)."""
    import resource
    import runpy

    import cv2
    copy = tmp_path / "tree"
    shutil.copytree(tree, copy)
    ok, buf = cv2.imencode(".png", np.zeros((20000, 20000), np.uint8))
    (copy / "Zico" / "huge.png").write_bytes(buf.tobytes())
    monkeypatch.setattr(sys, "argv", [str(TOOL), "--model", str(model), "--tree", str(copy), "--scores",
                                      str(tmp_path / "s")])
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + 600 * 2**20, hard))
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(TOOL), run_name="__main__")  # the tool as run, in this process
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "huge.png: out of memory" in err and "problem of the machine" in err, err
    assert not list(tmp_path.glob("s.*"))
