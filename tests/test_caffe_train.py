"""Real Caffe training on real faces: `caffe train` on a small multi-task model lowers its loss,
and the LMDB image layer and the HDF5 attribute layer stay in step over several epochs."""
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtdnn.netgen import render_model
from mtdnn import db
from mtdnn.caffe.log import parse_caffe_log
from mtdnn.paths import data_path

PEOPLE, PER_PERSON = 6, 8  # 48 aligned LFW faces of the 6 people with the most images


def lfw_faces():
    """(image, identity) of PER_PERSON aligned faces for each of the PEOPLE largest identities."""
    by_label = defaultdict(list)
    for line in data_path("lfw", "lfw-112x96_list.txt").read_text().split("\n"):
        if line.strip():
            path, label = line.split()
            by_label[int(label)].append(path)
    biggest = sorted(by_label, key=lambda k: (-len(by_label[k]), k))[:PEOPLE]
    root = data_path("lfw", "lfw-112x96")
    records = [(cv2.imread(str(root / p)), identity)
               for identity, label in enumerate(biggest) for p in sorted(by_label[label])[:PER_PERSON]]
    assert all(image is not None and image.shape == (112, 96, 3) for image, _ in records)
    order = np.random.default_rng(0).permutation(len(records))  # shuffled once, as build_db does
    return [records[i] for i in order]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """LMDB of the faces; HDF5 of two attributes fixed per identity (LFW has no attribute labels,
    so these are learnable stand-ins: person k's bits of k)."""
    root = tmp_path_factory.mktemp("faces")
    records = lfw_faces()
    identities = np.array([identity for _, identity in records])
    db.write_image_lmdb(root / "lmdb", records)
    attributes = np.stack([(identities & 1) * 2 - 1, (identities >> 1 & 1) * 2 - 1], axis=1)
    return root, identities, db.write_attribute_hdf5(root / "attr.h5", attributes)


def test_caffe_train_lowers_the_loss_on_real_faces(faces, tmp_path):
    root, _, attr_source = faces
    run = tmp_path / "run"
    render_model(run, variant="fast", width=0.25, identities=PEOPLE, attributes="Male,Big_Nose", batch=12,
                 finetune_iter=60, finetune_lr=0.01, lambda1=0.5, display=1, test_interval=1000, random_seed=1,
                 train_lmdb=root / "lmdb", train_hdf5=attr_source, test_images=12)
    out = subprocess.run([str(Path(sys.executable).parent / "caffe"), "train", "-solver", "solver_finetune.prototxt"],
                         cwd=run, capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    log = parse_caffe_log(out.stderr)
    _, loss = log.column("loss")
    _, id_loss = log.column("id_loss")
    _, attr_loss = log.column("attr_loss")
    assert len(loss) == 60 and np.all(np.isfinite(loss))
    first, last = np.mean(loss[:10]), np.mean(loss[-10:])
    print(f"loss: first 10 iterations {first:.3f}, last 10 {last:.3f}")
    assert last < 0.7 * first
    assert np.mean(id_loss[-10:]) < np.mean(id_loss[:10])
    assert np.mean(attr_loss[-10:]) < np.mean(attr_loss[:10])
    assert (run / "finetune_iter_60.caffemodel").is_file()


def test_image_and_attribute_layers_stay_aligned_over_epochs(faces, tmp_path):
    """A test-only attribute channel carries each record's index; over 4 epochs of batches
    that do not divide the record count, every batch's labels match the indices it carries."""
    import caffe
    root, identities, _ = faces
    n, batch = len(identities), 10
    index_channel = np.stack([np.arange(n), identities], axis=1)
    source = db.write_attribute_hdf5(tmp_path / "index.h5", index_channel)
    render_model(tmp_path / "run", variant="fast", width=0.125, identities=PEOPLE, attributes="Male,Big_Nose",
                 batch=batch, finetune_iter=1000, train_lmdb=root / "lmdb", train_hdf5=source,
                 test_images=n, absolute_paths=True)
    solver = caffe.get_solver(str(tmp_path / "run" / "solver_finetune.prototxt"))
    net = solver.net
    for step in range(4 * n // batch + 1):
        net.forward()  # the data layers run first: each forward is one new batch
        expected = (np.arange(batch) + step * batch) % n
        assert np.array_equal(net.blobs["attributes"].data[:, 0], expected), f"batch {step}"
        assert np.array_equal(net.blobs["label"].data, identities[expected]), f"batch {step}"
        assert np.array_equal(net.blobs["attributes"].data[:, 1], net.blobs["label"].data)
