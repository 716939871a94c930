"""mtdnn.inference: OpenCV's DNN, ONNX Runtime and pycaffe give the same outputs (within
inference.RTOL) on real faces for the Full- and Fast-Model (seeded random weights saved by
pycaffe) and for MTCNN's four released nets; auto picks ONNX Runtime; the engine check falls
back (auto: ONNX Runtime, OpenCV, pycaffe), saying why, for a layer an engine cannot run, for
one it computes differently and for a missing onnxruntime; a CPU-only Caffe refuses --gpu in
every tool with the command that builds the GPU one."""
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mtdnn.netgen import render_model
from mtdnn import inference
from mtdnn import mtcnn as m
from mtdnn.datasets import list_images
from mtdnn.features import preprocess
from mtdnn.paths import REPO, data_path

ALIGNED = data_path("lfw", "lfw-112x96")
PHOTOS = data_path("lfw", "lfw-deepfunneled")


@pytest.fixture(scope="module")
def crops():
    """12 real aligned LFW faces, preprocessed as for extraction."""
    paths = list_images(ALIGNED)[::1100][:12]
    return preprocess([cv2.imread(str(ALIGNED / p)) for p in paths])


@pytest.mark.parametrize("engine", ["opencv", "onnxruntime"])
@pytest.mark.parametrize("variant", ["full", "fast"])
def test_engine_equals_caffe_on_recognition_nets(variant, engine, crops, tmp_path):
    render_model(tmp_path, variant, width=0.25, check_paths=False)
    deploy = tmp_path / "deploy.prototxt"
    weights = inference.save_random_weights(deploy, tmp_path / "w.caffemodel")
    blobs = ["fc5", "attr_pred"]  # the feature and the attribute scores
    ref = inference.load(deploy, weights, engine="caffe", outputs=blobs)
    net = inference.load(deploy, weights, engine=engine, outputs=blobs)
    assert (ref.engine, net.engine) == ("caffe", engine), net.note
    want, got = ref.forward(crops), net.forward(crops)
    for blob in blobs:
        assert want[blob].shape == got[blob].shape == (len(crops), *ref.blob_shape(blob))
        assert np.abs(want[blob]).max() > 0.1  # not a degenerate net
        d = inference.difference(got[blob], want[blob])
        assert d <= inference.RTOL
        print(f"{variant} {engine}: {blob} difference {d:.1e}")
    # The bound is not vacuous: the features of two different faces differ far more.
    assert inference.difference(got["fc5"][1:], want["fc5"][:-1]) > 100 * inference.RTOL


def test_auto_picks_onnxruntime_then_opencv(tmp_path, monkeypatch):
    """auto takes the first engine of AUTO_ORDER that passes; without onnxruntime it says so
    (with the install command) and takes OpenCV; asked for explicitly, a missing onnxruntime is
    a usage error."""
    render_model(tmp_path, "fast", width=0.125, check_paths=False)
    deploy = tmp_path / "deploy.prototxt"
    weights = inference.save_random_weights(deploy, tmp_path / "w.caffemodel")
    said = []
    net = inference.load(deploy, weights, outputs=["fc5"], log=said.append)
    assert net.engine == "onnxruntime" and not said
    assert re.fullmatch(r"ONNX Runtime, checked against pycaffe: max difference \S+ \(bound 2e-04\)", net.note)
    with pytest.raises(inference.EngineError, match="keeps no pycaffe net"):
        net.caffe_net()
    det = m.MTCNN(refine_landmarks=True, engine="auto")  # P-Net: OpenCV is the faster there
    assert [n.engine for n in (det.pnet, det.rnet, det.onet, det.lnet)] == ["opencv"] + ["onnxruntime"] * 3
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    net = inference.load(deploy, weights, outputs=["fc5"], log=said.append)
    assert net.engine == "opencv"
    assert "ONNX Runtime not used for deploy.prototxt: onnxruntime is not installed: pip install" in said[0]
    assert said[0].endswith("; trying OpenCV")
    with pytest.raises(inference.EngineError, match="onnxruntime is not installed: pip install onnx==1.22.0"):
        inference.load(deploy, weights, engine="onnxruntime")


@pytest.mark.parametrize("engine", ["opencv", "onnxruntime"])
def test_engine_equals_caffe_on_mtcnn(engine, tmp_path):
    photos = [PHOTOS / p for p in list_images(PHOTOS)[::1700][:6]]
    images = [cv2.imread(str(p)) for p in photos]
    ref = m.MTCNN(engine="caffe", refine_landmarks=True)
    ref.recorded = {}  # every batch sent to each net: the real inputs
    fast = m.MTCNN(engine=engine, refine_landmarks=True)
    names = ("det1", "det2", "det3", "det4")
    ref_nets = (ref.pnet, ref.rnet, ref.onet, ref.lnet)
    fast_nets = (fast.pnet, fast.rnet, fast.onet, fast.lnet)
    assert [n.engine for n in ref_nets] == ["caffe"] * 4
    assert [n.engine for n in fast_nets] == [engine] * 4, [n.note for n in fast_nets]
    found = [(ref.detect(im), fast.detect(im)) for im in images]
    # Every net on every real input it got: equal outputs within the bound.
    for name, a, b in zip(names, ref_nets, fast_nets):
        batches = ref.recorded[name]
        assert batches, name
        for blob in batches:
            want, got = a.forward(blob), b.forward(blob)
            for out in a.outputs:
                assert inference.difference(got[out], want[out]) <= inference.RTOL, (name, out)
    # And the same faces and landmarks come out.
    for (want, got), path in zip(found, photos):
        assert len(want) == len(got) >= 1, path
        np.testing.assert_allclose(got.points, want.points, atol=0.01)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=0.01)


def one_layer_net(tmp_path, layer: str):
    deploy = tmp_path / "net.prototxt"
    deploy.write_text('name: "one"\n'
                      'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                      f'layer {{ name: "out" bottom: "data" top: "out" {layer} }}\n')
    return deploy, inference.save_random_weights(deploy, tmp_path / "net.caffemodel")


@pytest.mark.parametrize("layer, reason", [
    ('type: "Embed" embed_param { num_output: 4 input_dim: 10 }', 'cannot run it .*type "Embed"'),
    # OpenCV's importer ignores log_param: log(x) instead of Caffe's log(x + 2).
    ('type: "Log" log_param { shift: 2 }', "blob out differs from pycaffe's"),
])
def test_unsupported_or_different_layer_falls_back_to_caffe(tmp_path, layer, reason):
    deploy, weights = one_layer_net(tmp_path, layer)
    kind = re.search(r'type: "(\w+)"', layer).group(1)
    onnx_reason = f"ONNX Runtime not used for net.prototxt: cannot convert it to ONNX .*layer out \\(type {kind}\\)"
    said = []
    for engine in ("auto", "opencv", "onnxruntime"):
        net = inference.load(deploy, weights, engine=engine, log=said.append)
        assert net.engine == "caffe"
        assert "running pycaffe" in said[-1]
        assert re.search(onnx_reason if engine == "onnxruntime" else reason, said[-1]), said[-1]
        if engine == "auto":  # ONNX Runtime first, then OpenCV
            assert re.search(onnx_reason, said[-2]) and said[-2].endswith("trying OpenCV")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    assert net.forward(x)["out"].shape[0] == 2  # and pycaffe runs it


def test_mismatch_beyond_the_bound_falls_back(tmp_path, crops, monkeypatch):
    """Fault injection: with a zero bound, the Full-Model's float reordering is a mismatch."""
    render_model(tmp_path, "full", width=0.125, check_paths=False)
    deploy = tmp_path / "deploy.prototxt"
    weights = inference.save_random_weights(deploy, tmp_path / "w.caffemodel")
    monkeypatch.setattr(inference, "RTOL", 0.0)
    said = []
    net = inference.load(deploy, weights, outputs=["fc5"], log=said.append)
    assert net.engine == "caffe" and len(said) == 2
    for text, engine, then in zip(said, ("ONNX Runtime", "OpenCV"), ("trying OpenCV", "running pycaffe")):
        assert text.startswith(f"inference: {engine} not used for deploy.prototxt: blob fc5 differs from pycaffe's")
        assert text.endswith(then)


def test_opencv_nets_kept_per_input_shape(tmp_path):
    """max_shapes planned OpenCV nets, least recently used one re-planned: same numbers."""
    deploy, weights = one_layer_net(tmp_path, 'type: "Convolution" convolution_param { num_output: 4 '
                                              'kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } }')
    ref = inference.load(deploy, weights, engine="caffe")
    net = inference.load(deploy, weights, engine="opencv", max_shapes=2)
    rng = np.random.default_rng(0)
    for n, h in [(1, 8), (3, 8), (2, 12), (1, 8), (3, 8), (5, 9), (2, 12)]:
        x = rng.uniform(-1, 1, (n, 3, h, h + 2)).astype(np.float32)
        want, got = ref.forward(x)["out"], net.forward(x)["out"]
        assert got.shape == want.shape and inference.difference(got, want) <= inference.RTOL
        assert len(net._cv) <= 2 and next(reversed(net._cv)) == x.shape


def test_requests_no_engine_can_serve(tmp_path):
    deploy, weights = one_layer_net(tmp_path, 'type: "ReLU"')
    with pytest.raises(inference.EngineError, match="engine must be one of"):
        inference.load(deploy, weights, engine="torch")
    for engine in ("opencv", "onnxruntime"):
        with pytest.raises(inference.EngineError, match="CPU only"):
            inference.load(deploy, weights, engine=engine, gpu=0)
        with pytest.raises(inference.EngineError, match="needs weights"):
            inference.load(deploy, None, engine=engine)
    assert inference.load(deploy).engine == "caffe"  # fillers: pycaffe
    for engine, name in (("opencv", "OpenCV"), ("onnxruntime", "ONNX Runtime")):
        net = inference.load(deploy, weights, engine=engine)
        with pytest.raises(KeyError, match=f"data were not checked on the {name} engine"):
            net.forward(np.zeros((1, 3, 8, 8), np.float32), ["out", "data"])


# --------------------------------------------------------------------------- GPU requests

def test_cuda_detection_agrees_with_the_linker():
    """Two independent answers: the libraries mapped after importing pycaffe, and ldd."""
    import caffe
    so = caffe._caffe.__file__
    ldd = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
    libcaffe = re.search(r"libcaffe\S* => (\S+)", ldd).group(1)
    linked = subprocess.run(["ldd", libcaffe], capture_output=True, text=True).stdout
    assert inference.caffe_has_cuda() == ("libcublas" in linked), linked


cpu_only = pytest.mark.skipif(inference.caffe_has_cuda(), reason="this Caffe has CUDA")


@cpu_only
def test_cpu_only_caffe_refuses_a_gpu(tmp_path):
    deploy, weights = one_layer_net(tmp_path, 'type: "ReLU"')
    with pytest.raises(inference.GpuUnavailable, match=re.escape("CAFFE_GPU=1 make setup")):
        inference.load(deploy, weights, gpu=0)
    with pytest.raises(inference.GpuUnavailable):
        m.MTCNN(gpu=0)


@cpu_only
@pytest.mark.parametrize("tool, args", [
    ("extract_features.py", ["--deploy", "D", "--tree", "T", "--out", "O"]),
    ("align_faces.py", ["SRC", "OUT"]),
    ("label_attributes.py", ["--model", "M", "--tree", "T", "--scores", "S"]),
    ("train_attributes.py", ["--out", "O"]),
])
def test_tools_refuse_a_gpu_on_a_cpu_only_caffe(tool, args, tmp_path):
    """Each tool stops before any work (exit 2) and says how to build the GPU Caffe."""
    args = [str(tmp_path / a) if a.isupper() else a for a in args]
    r = subprocess.run([sys.executable, str(REPO / "tools" / tool), *args, "--gpu", "0"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "built without CUDA" in r.stderr and "CAFFE_GPU=1 make setup" in r.stderr
    assert "Check failed" not in r.stderr and not list(tmp_path.iterdir())  # nothing started
