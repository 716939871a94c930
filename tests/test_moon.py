"""MOON: the re-weighting (hand-checked), CelebA data preparation on the real files, and the
rendered nets in pycaffe: the loss Caffe computes is MOON's weighted squared error."""
import json
import os
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

from mtdnn.netgen.moon import MoonSpec, moon_files, render_moon
from mtdnn.netgen.spec import GenerateError
from mtdnn import db, moon
from mtdnn.paper import PAPER_ATTRIBUTES
from mtdnn.paths import REPO, data_path

CELEBA = data_path("celeba")


# --------------------------------------------------------------------------- re-weighting

def test_class_weights_hand_checked():
    # p = 0.2, t = 0.5: t/p = 2.5, (1-t)/(1-p) = 0.625 -> divided by 2.5: w+ = 1, w- = 0.25
    # p = 0.8, t = 0.5: 0.625 and 2.5 -> w+ = 0.25, w- = 1
    # p = 0.1, t = 0.3: 3 and 0.7/0.9 = 0.7778 -> w+ = 1, w- = 0.7778 / 3 = 0.259259
    # p = 0.4, t = 0.4: 1 and 1
    w_pos, w_neg = moon.class_weights([0.2, 0.8, 0.1, 0.4], [0.5, 0.5, 0.3, 0.4])
    np.testing.assert_allclose(w_pos, [1, 0.25, 1, 1])
    np.testing.assert_allclose(w_neg, [0.25, 1, 0.7 / 0.9 / 3, 1])


def test_weighted_source_has_the_target_positive_share():
    rng = np.random.default_rng(0)
    p, t = rng.uniform(0.02, 0.98, 50), rng.uniform(0, 1, 50)
    w_pos, w_neg = moon.class_weights(p, t)
    np.testing.assert_allclose(p * w_pos / (p * w_pos + (1 - p) * w_neg), t)
    assert np.allclose(np.maximum(w_pos, w_neg), 1)


def test_sample_weights_and_rates_with_unknown_labels():
    labels = np.array([[1, -1], [-1, 0], [-1, 1], [-1, 1]])
    rates = moon.positive_rates(labels)
    np.testing.assert_allclose(rates, [0.25, 2 / 3])  # the 0 is not counted
    w = moon.sample_weights(labels, np.array([1.0, 0.5]), np.array([0.3, 1.0]))
    np.testing.assert_allclose(w, [[1, 1], [0.3, 0], [0.3, 0.5], [0.3, 0.5]])
    with pytest.raises(moon.MoonError, match="known labels"):
        moon.positive_rates(np.array([[1, 0], [-1, 0]]))


@pytest.mark.parametrize("p, t, match", [([0.0], [0.5], "strictly between"), ([1.0], [0.5], "strictly between"),
                                         ([0.3], [1.5], r"\[0, 1\]"), ([0.3, 0.2], [0.5], "target rates")])
def test_class_weights_bad_input(p, t, match):
    with pytest.raises(moon.MoonError, match=match):
        moon.class_weights(p, t)


def test_target_rates(tmp_path):
    names, src = ["Male", "Chubby"], [0.4, 0.06]
    assert moon.target_rates("balanced", names, src).tolist() == [0.5, 0.5]
    assert moon.target_rates("source", names, src).tolist() == src
    assert moon.target_rates("Chubby=0.1, Male=0.7", names, src).tolist() == [0.7, 0.1]
    assert moon.target_rates("0.7,0.1", names, src).tolist() == [0.7, 0.1]
    (tmp_path / "t.json").write_text(json.dumps({"Male": 0.9, "Chubby": 0.2}))
    assert moon.target_rates(str(tmp_path / "t.json"), names, src).tolist() == [0.9, 0.2]
    for spec, match in [("Male=0.7", "no rate for Chubby"), ("Male=0.7,Bald=0.1,Chubby=0", "'Bald' is not"),
                        ("Male=2,Chubby=0", r"in \[0, 1\]"), ("0.5", "2 rates"), ("Male=x,Chubby=0", "not a number"),
                        (str(tmp_path / "missing.json"), "missing.json")]:
        with pytest.raises(moon.MoonError, match=match):
            moon.target_rates(spec, names, src)


def test_moon_hdf5_round_trip(tmp_path):
    y = np.array([[1, -1], [-1, 0]], np.float32)
    w = np.array([[1, 0.25], [0.36, 0]])
    source = moon.write_moon_hdf5(tmp_path / "m.h5", y, w, extra={"paths": ["a.jpg", "b.jpg"]})
    assert source.read_text().strip() == str((tmp_path / "m.h5").resolve())
    with h5py.File(tmp_path / "m.h5") as f:
        np.testing.assert_allclose(f["attr_weight"][...], [[1, 0.5], [0.6, 0]])  # sqrt of the weights
        assert [p.decode() for p in f["paths"][...]] == ["a.jpg", "b.jpg"]
    targets, weights = moon.read_moon_hdf5(tmp_path / "m.h5")
    np.testing.assert_array_equal(targets, y)
    np.testing.assert_allclose(weights, w, rtol=1e-6)
    with pytest.raises(moon.MoonError, match="one N x M shape"):
        moon.write_moon_hdf5(tmp_path / "bad.h5", y, w[:1])
    with pytest.raises(moon.MoonError, match=">= 0"):
        moon.write_moon_hdf5(tmp_path / "bad.h5", y, -w)


# --------------------------------------------------------------------------- CelebA files

def test_celeba_table_reads_the_real_files():
    t = moon.celeba_table(CELEBA / "list_attr_celeba.txt", CELEBA / "identity_CelebA.txt", PAPER_ATTRIBUTES,
                          CELEBA / "list_eval_partition.txt")
    assert len(t.files) == 10000 and t.names == list(PAPER_ATTRIBUTES) and t.values.shape == (10000, 7)
    assert t.files[0] == "000001.jpg" and t.identities[0] == "2880" and (t.partitions == 0).all()
    # positive rates over the 10,000 images (docs/data.md): Male 42.2 %, Double_Chin 4.7 %
    rates = moon.positive_rates(t.values)
    assert round(100 * rates[6], 1) == 42.2 and round(100 * rates[4], 1) == 4.7
    assert moon.check_images(t.files[:50], CELEBA / "img_align_celeba_89x109") == []


def test_celeba_table_bad_input(tmp_path):
    with pytest.raises(moon.MoonError, match="Big_Noze not in its header"):
        moon.celeba_table(CELEBA / "list_attr_celeba.txt", CELEBA / "identity_CelebA.txt", ["Male", "Big_Noze"])
    ids = (CELEBA / "identity_CelebA.txt").read_text().splitlines()
    (tmp_path / "ids.txt").write_text("\n".join(ids[:4] + ids[5:]) + "\n")  # 000005.jpg has no identity
    with pytest.raises(moon.MoonError, match="no identity for 1 image.*000005.jpg"):
        moon.celeba_table(CELEBA / "list_attr_celeba.txt", tmp_path / "ids.txt", ["Male"])
    assert moon.check_images(["000001.jpg", "999999.jpg"], CELEBA / "img_align_celeba_89x109") == ["999999.jpg"]


def test_split_by_identity_keeps_identities_whole():
    t = moon.celeba_table(CELEBA / "list_attr_celeba.txt", CELEBA / "identity_CelebA.txt", ["Male"])
    held = moon.split_by_identity(t.identities, 0.2, seed=3)
    assert not set(t.identities[held]) & set(t.identities[~held])
    assert 0.19 < held.mean() <= 0.2
    np.testing.assert_array_equal(held, moon.split_by_identity(t.identities, 0.2, seed=3))
    assert not np.array_equal(held, moon.split_by_identity(t.identities, 0.2, seed=4))
    with pytest.raises(moon.MoonError, match="strictly between"):
        moon.split_by_identity(t.identities, 1.0)
    with pytest.raises(moon.MoonError, match="two identities"):
        moon.split_by_identity(["a", "a"], 0.5)


# --------------------------------------------------------------------------- the nets

N_FACES = 24


@pytest.fixture(scope="module")
def celeba_faces(tmp_path_factory):
    """LMDB of N_FACES real CelebA faces aligned with the project's MTCNN + template, and the
    MOON HDF5 of their 7 paper attributes (balanced target)."""
    from mtdnn.align import align_face
    from mtdnn.mtcnn import MTCNN
    root = tmp_path_factory.mktemp("moon_faces")
    t = moon.celeba_table(CELEBA / "list_attr_celeba.txt", CELEBA / "identity_CelebA.txt", PAPER_ATTRIBUTES)
    det, records, rows = MTCNN(), [], []
    for i, f in enumerate(t.files):
        found = det.detect_one(cv2.imread(str(CELEBA / "img_align_celeba_89x109" / f)))
        if found is not None:
            records.append((align_face(cv2.imread(str(CELEBA / "img_align_celeba_89x109" / f)), found[0]), 0, f))
            rows.append(i)
        if len(records) == N_FACES:
            break
    db.write_image_lmdb(root / "lmdb", records)
    y = t.values[rows]
    w_pos, w_neg = moon.class_weights(moon.positive_rates(t.values), [0.5] * 7)
    source = moon.write_moon_hdf5(root / "moon.h5", y, moon.sample_weights(y, w_pos, w_neg))
    return root, source, y, moon.sample_weights(y, w_pos, w_neg)


@pytest.mark.parametrize("backbone, width", [("fast", 0.25), ("vgg16", 0.125)])
def test_caffe_loss_is_moons_weighted_squared_error(celeba_faces, tmp_path, backbone, width):
    import caffe
    root, source, y, w = celeba_faces
    caffe.set_mode_cpu()
    render_moon(tmp_path, backbone=backbone, width=width, blocks="1,1,1,1" if backbone == "fast" else None,
                batch=12, iters=10, train_lmdb=root / "lmdb", train_hdf5=source, test_images=12,
                absolute_paths=True)
    net = caffe.Net(str(tmp_path / "train_val.prototxt"), caffe.TRAIN)
    for k in range(2):  # two batches: rows 0-11, then 12-23, the HDF5 in step with the LMDB
        net.forward()
        pred = net.blobs["attr_pred"].data.copy()
        np.testing.assert_array_equal(net.blobs["attr_target"].data, y[12 * k:12 * (k + 1)])
        wk = w[12 * k:12 * (k + 1)]
        expected = (wk * (pred - y[12 * k:12 * (k + 1)]) ** 2).sum() / (2 * 12)
        assert net.blobs["attr_loss"].data == pytest.approx(expected, rel=1e-4)
        assert net.blobs["attr_mse"].data == pytest.approx(((pred - y[12 * k:12 * (k + 1)]) ** 2).sum() / 24, rel=1e-4)
        net.backward()  # d loss / d pred = w (pred - target) / N
        np.testing.assert_allclose(net.blobs["attr_pred"].diff, wk * (pred - y[12 * k:12 * (k + 1)]) / 12,
                                   rtol=1e-4, atol=1e-6)
    test = caffe.Net(str(tmp_path / "train_val.prototxt"), caffe.TEST)
    test.forward()
    pred = test.blobs["attr_pred"].data
    assert test.blobs["attr_accuracy"].data == pytest.approx(np.mean(pred * y[:12] > 0))
    deploy = caffe.Net(str(tmp_path / "deploy.prototxt"), caffe.TEST)
    assert deploy.blobs["data"].data.shape == (1, 3, 112, 96) and deploy.blobs["attr_pred"].data.shape == (1, 7)
    assert "label" in net.blobs and "silence_label" in net._layer_names


def test_rendered_files_and_defaults(tmp_path):
    files = moon_files(MoonSpec(backbone="vgg16", attributes=("Male", "Chubby")))
    assert set(files) == {"train_val.prototxt", "deploy.prototxt", "solver.prototxt"}
    tv = files["train_val.prototxt"]
    assert tv.count('type: "Convolution"') == 13 and "num_output: 4096" in tv and "BatchNorm" in tv
    assert "attributes: Male, Chubby" in tv.replace("attribute(s), ", "attributes: ")
    solver = files["solver.prototxt"]
    assert "max_iter: 20000" in solver and "stepvalue: 10000" in solver and "stepvalue: 15000" in solver
    plain = moon_files(MoonSpec(backbone="vgg16", batchnorm=False))["train_val.prototxt"]
    assert "BatchNorm" not in plain and plain.count("bias_filler") == 13 + 3
    fast = moon_files(MoonSpec())["train_val.prototxt"]
    assert fast.count('type: "Eltwise"') == 16 + 3  # 3+4+6+3 Fast-Blocks; pred*w, target*w, pred*target
    assert "num_output: 256" in fast  # fc 1024 x 0.25


@pytest.mark.parametrize("params, match", [
    (dict(backbone="resnet"), "backbone"), (dict(attributes="Male,Big_Noze"), "Big_Noze"),
    (dict(attributes=()), "at least one"), (dict(blocks="1,1"), "4 integers"),
    (dict(batch=0), "positive integer"), (dict(iters=10, steps="5,20"), "steps"),
    (dict(width=-1.0), "positive number"), (dict(height=100), "112x96"), (dict(foo=1), "unknown")])
def test_bad_parameters(tmp_path, params, match):
    with pytest.raises(GenerateError, match=match):
        render_moon(tmp_path, **params)


def test_data_paths_are_checked(celeba_faces, tmp_path):
    root, source, y, w = celeba_faces
    with pytest.raises(GenerateError, match="does not exist"):
        render_moon(tmp_path, train_lmdb=tmp_path / "nothing")
    moon.write_moon_hdf5(tmp_path / "short.h5", y[:5], w[:5])
    with pytest.raises(GenerateError, match="holds 5 attribute rows but --train-lmdb holds 24"):
        render_moon(tmp_path, train_lmdb=root / "lmdb", train_hdf5=tmp_path / "short.h5.txt")
    with pytest.raises(GenerateError, match="the net predicts 2"):
        render_moon(tmp_path, attributes="Male,Chubby", train_lmdb=root / "lmdb", train_hdf5=source)
    db.write_attribute_hdf5(tmp_path / "plain.h5", y)  # a recognition-net HDF5: no attr_target/attr_weight
    with pytest.raises(GenerateError, match="attr_target"):
        render_moon(tmp_path, train_hdf5=tmp_path / "plain.h5.txt")


def test_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "generate.moon", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True)
    out = run("--help")
    assert out.returncode == 0 and "--backbone" in out.stdout and "Narrow_Eyes" in out.stdout
    out = run("--out", str(tmp_path / "m"), "--backbone", "vgg16", "--width", "0.5", "--iters", "100")
    assert out.returncode == 0, out.stderr
    assert "num_output: 2048" in (tmp_path / "m" / "train_val.prototxt").read_text()
    out = run("--out", str(tmp_path / "m"), "--attributes", "Big_Noze")
    assert out.returncode == 2 and "Big_Noze" in out.stderr and "Traceback" not in out.stderr
