"""Feature extraction with real pycaffe on real aligned LFW images: against a direct
``net.forward``, mirror modes, resumption, devkit .bin files, bad images, the CLI."""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mtdnn import features as F
from mtdnn.evaluation.features_io import bin_path, load_features, read_bin
from mtdnn.paths import REPO, data_path

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 112 dim: 96 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 5 stride: 2
    weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc5" type: "InnerProduct" bottom: "pool1" top: "fc5"
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.05 }
    bias_filler { type: "constant" value: 0.2 } } }
layer { name: "fc5_relu" type: "PReLU" bottom: "fc5" top: "fc5" }
layer { name: "head" type: "InnerProduct" bottom: "fc5" top: "head"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.05 } } }
"""
IMAGES = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
          "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg",
          "Abdullah_Gul/Abdullah_Gul_0001.jpg"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "deploy.prototxt").write_text(DEPLOY)
    net = F.load_net(d / "deploy.prototxt")  # random weights from the fillers
    net.caffe_net().save(str(d / "tiny.caffemodel"))
    return d / "deploy.prototxt", d / "tiny.caffemodel"


@pytest.fixture(scope="module")
def root():
    return data_path("lfw", "lfw-112x96")


def direct_forward(deploy, weights, image):
    """The reference: one image through a fresh net by hand."""
    import caffe
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    x = ((image.astype(np.float32) - 127.5) / 128).transpose(2, 0, 1)[None]
    net.blobs["data"].data[...] = x
    net.forward()
    return net.blobs["fc5"].data[0].copy()


def test_matches_direct_forward_with_mirror_modes(tiny, root):
    net = F.load_net(*tiny)
    imgs = [cv2.imread(str(root / p)) for p in IMAGES[:2]]
    ref = np.array([direct_forward(*tiny, im) for im in imgs])
    ref_flip = np.array([direct_forward(*tiny, im[:, ::-1].copy()) for im in imgs])
    assert not np.allclose(ref, ref_flip)
    kw = dict(root=root, batch_size=2, progress=False)
    np.testing.assert_allclose(F.extract_features(net, IMAGES[:2], **kw), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(F.extract_features(net, IMAGES[:2], mirror="concat", **kw),
                               np.c_[ref, ref_flip], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(F.extract_features(net, IMAGES[:2], mirror="sum", **kw),
                               ref + ref_flip, rtol=1e-4, atol=1e-5)
    unit = F.extract_features(net, IMAGES[:2], mirror="sum", l2norm=True, **kw)
    np.testing.assert_allclose(unit, (ref + ref_flip) / np.linalg.norm(ref + ref_flip, axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no blob 'fc7'"):
        F.extract_features(net, IMAGES[:2], blob="fc7", **kw)


def test_resume_after_interruption(tiny, root, tmp_path):
    net = F.load_net(*tiny)
    out = tmp_path / "feats" / "lfw"
    full = F.extract_features(net, IMAGES, root=root, mirror="concat", progress=False)
    seen = []

    def crash_after_first(done):
        seen.append(done)
        if len(seen) == 1:
            raise KeyboardInterrupt

    kw = dict(root=root, labels=[0, 1, 1, 2, 3], mirror="concat", batch_size=2, progress=False,
              bin_dir=tmp_path / "bin", bin_suffix="_tiny")
    with pytest.raises(KeyboardInterrupt):
        F.extract_to_file(net, IMAGES, out, on_batch=crash_after_first, **kw)
    assert not (tmp_path / "feats" / "lfw.npy").exists()
    assert json.loads((tmp_path / "feats" / "lfw.progress.json").read_text())["done"] == 2
    # other settings must not continue someone else's partial file
    with pytest.raises(ValueError, match="started with other inputs or settings"):
        F.extract_to_file(net, IMAGES, out, **{**kw, "mirror": "sum"})
    meta = F.extract_to_file(net, IMAGES, out, on_batch=seen.append, **kw)
    assert seen == [2, 4, 5] and meta["rows_last_run"] == 3  # continued after row 2
    x, names, labels = load_features(out)
    np.testing.assert_allclose(x, full, rtol=1e-4, atol=1e-5)
    assert names == IMAGES and labels.tolist() == [0, 1, 1, 2, 3] and x.dtype == np.float32
    assert not (tmp_path / "feats" / "lfw.progress.json").exists()
    assert not (tmp_path / "feats" / "lfw.npy.partial").exists()
    for p, row in zip(IMAGES, x):
        np.testing.assert_array_equal(read_bin(bin_path(tmp_path / "bin", p, "_tiny")), row)
    assert F.extract_to_file(net, IMAGES, out, **kw).get("skipped")  # complete: nothing to do
    assert F.extract_to_file(net, IMAGES, out, restart=True, **kw)["rows_last_run"] == 5


def test_bad_images_are_named(tiny, tmp_path):
    net = F.load_net(*tiny)
    cv2.imwrite(str(tmp_path / "small.jpg"), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="small.jpg: image is 100x100 \\(HxW\\), the net expects aligned 112x96"):
        F.extract_features(net, ["small.jpg"], tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="nothere.jpg: cannot read"):
        F.extract_features(net, ["nothere.jpg"], tmp_path, progress=False)
    (tmp_path / "list.txt").write_text("a.jpg 1\nb.jpg\n")
    with pytest.raises(ValueError, match="some lines have a label and some do not"):
        F.read_image_list(tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("a.jpg\nb.jpg\n")
    assert F.read_image_list(tmp_path / "list.txt") == (["a.jpg", "b.jpg"], None)
    (tmp_path / "list.txt").write_text("a.jpg bob\nb.jpg alice\nc.jpg bob\n")
    paths, labels = F.read_image_list(tmp_path / "list.txt")
    assert paths == ["a.jpg", "b.jpg", "c.jpg"] and labels.tolist() == [1, 0, 1]


def test_cli_list_and_tree(tiny, root, tmp_path):
    tool = str(REPO / "tools" / "extract_features.py")
    (tmp_path / "list.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(IMAGES[:3])))
    r = subprocess.run([sys.executable, tool, "--deploy", str(tiny[0]), "--weights", str(tiny[1]),
                        "--list", str(tmp_path / "list.txt"), "--root", str(root), "--mirror", "concat",
                        "--batch-size", "2", "--out", str(tmp_path / "a"), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    x, names, labels = load_features(tmp_path / "a")
    assert x.shape == (3, 16) and names == IMAGES[:3] and labels.tolist() == [0, 1, 2]
    tree = tmp_path / "tree"
    for p in IMAGES[:3]:
        (tree / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / p, tree / p)
    r = subprocess.run([sys.executable, tool, "--deploy", str(tiny[0]), "--weights", str(tiny[1]),
                        "--tree", str(tree), "--out", str(tmp_path / "b"), "--quiet", "--l2norm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    y, ynames, ylabels = load_features(tmp_path / "b")
    assert ynames == sorted(IMAGES[:3]) and ylabels is None
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y[ynames.index(IMAGES[0])], x[0, :8] / np.linalg.norm(x[0, :8]), rtol=1e-4, atol=1e-5)
