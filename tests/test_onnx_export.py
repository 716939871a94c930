"""mtdnn.onnx_export and tools/export_onnx.py: each Caffe layer type and option the converter
takes gives pycaffe's numbers in ONNX Runtime; one it does not take is refused by name; the
tool writes a model of a run folder (seeded random weights: no trained model in a test) whose
outputs, read back by plain onnxruntime, equal pycaffe's on real aligned LFW crops within
inference.RTOL, with a card that says how to feed it; a check beyond the bound writes nothing."""
import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest

from mtdnn.netgen import render_model
from mtdnn import inference
from mtdnn import onnx_export as ox
from mtdnn.datasets import list_images
from mtdnn.features import preprocess
from mtdnn.fileio import sha256_file
from mtdnn.paths import REPO, data_path

TOOL = REPO / "tools" / "export_onnx.py"
ALIGNED = data_path("lfw", "lfw-112x96")

G = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'
NETS = {
    "conv_group_pad_stride_dilation": (
        (1, 6, 9, 10),
        f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "out" convolution_param {{ num_output: 4 '
        f'kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride_h: 2 stride_w: 1 dilation: 2 group: 2 {G} }} }}'),
    "conv_no_bias_bn_alone": (
        (2, 3, 8, 8),
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 5 '
        'kernel_size: 3 bias_term: false weight_filler { type: "gaussian" std: 0.5 } } }\n'
        'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "out" batch_norm_param { eps: 0.001 } }'),
    "bn_scale_in_place_prelu_shared": (
        (2, 3, 8, 8),
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n'
        'layer { name: "sc" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }\n'
        'layer { name: "pr" type: "PReLU" bottom: "data" top: "out" prelu_param { channel_shared: true '
        'filler { type: "constant" value: 0.3 } } }'),
    "scale_alone_relu_leaky_sigmoid_tanh": (
        (2, 3, 5, 4),
        'layer { name: "sc" type: "Scale" bottom: "data" top: "s" scale_param { bias_term: false } }\n'
        'layer { name: "r" type: "ReLU" bottom: "s" top: "r" relu_param { negative_slope: 0.1 } }\n'
        'layer { name: "sg" type: "Sigmoid" bottom: "r" top: "sg" }\n'
        'layer { name: "t" type: "TanH" bottom: "s" top: "t" }\n'
        'layer { name: "d" type: "Dropout" bottom: "t" top: "t" dropout_param { dropout_ratio: 0.5 } }\n'
        'layer { name: "e" type: "Eltwise" bottom: "sg" bottom: "t" top: "out" }'),
    "slice_eltwise_ops_concat": (
        (2, 4, 6, 6),
        'layer { name: "sl" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { axis: 1 slice_point: 2 } }\n'
        'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" eltwise_param { coeff: 0.5 coeff: -2 } }\n'
        'layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" top: "p" eltwise_param { operation: PROD } }\n'
        'layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "m" eltwise_param { operation: MAX } }\n'
        'layer { name: "cat" type: "Concat" bottom: "s" bottom: "p" bottom: "m" bottom: "a" top: "out" }'),
    "pool_max_ceil_pad": (
        (2, 3, 8, 9),
        'layer { name: "p" type: "Pooling" bottom: "data" top: "out" pooling_param { pool: MAX kernel_size: 3 '
        'stride: 2 pad: 1 } }'),
    "pool_ave_ceil": (
        (2, 3, 9, 8),
        'layer { name: "p" type: "Pooling" bottom: "data" top: "out" pooling_param { pool: AVE kernel_size: 3 '
        'stride: 2 } }'),
    "pool_ave_pad": (
        (2, 3, 9, 8),
        'layer { name: "p" type: "Pooling" bottom: "data" top: "out" pooling_param { pool: AVE kernel_size: 3 '
        'stride: 2 pad: 1 } }'),
    "pool_global_ave": (
        (2, 3, 7, 5),
        'layer { name: "p" type: "Pooling" bottom: "data" top: "out" pooling_param { pool: AVE global_pooling: true } }'),
    "ip_on_4d_softmax_ip_transposed_flatten": (
        (3, 2, 4, 5),
        f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 6 {G} }} }}\n'
        'layer { name: "sm" type: "Softmax" bottom: "ip" top: "sm" }\n'
        'layer { name: "f" type: "Flatten" bottom: "data" top: "f" }\n'
        'layer { name: "ipt" type: "InnerProduct" bottom: "f" top: "ipt" inner_product_param { num_output: 6 '
        'transpose: true bias_term: false weight_filler { type: "gaussian" std: 0.5 } } }\n'
        'layer { name: "e" type: "Eltwise" bottom: "sm" bottom: "ipt" top: "out" }'),
}


def small_net(tmp_path, shape, layers: str):
    deploy = tmp_path / "net.prototxt"
    dims = " ".join(f"dim: {d}" for d in shape)
    deploy.write_text(f'name: "small"\nlayer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
                      f"{layers}\n")
    return deploy, inference.save_random_weights(deploy, tmp_path / "net.caffemodel")


@pytest.mark.parametrize("name", NETS)
def test_each_layer_type_gives_caffes_numbers(name, tmp_path):
    shape, layers = NETS[name]
    deploy, weights = small_net(tmp_path, shape, layers)
    ref = inference.load(deploy, weights, engine="caffe", outputs=["out"])
    x = np.random.default_rng(3).uniform(-2, 2, shape).astype(np.float32)
    want = ref.forward(x)["out"]
    model = ox.convert(deploy, weights, outputs=["out"])
    assert model.opset_import[0].version == ox.OPSET
    got = ox.session(model).run(["out"], {"data": x})[0]
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.1
    assert inference.difference(got, want) <= inference.RTOL, inference.difference(got, want)


@pytest.mark.parametrize("layer, what", [
    ('type: "Embed" embed_param { num_output: 4 input_dim: 10 }', "no ONNX conversion for this layer type"),
    ('type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 2 }', "no ONNX conversion"),
    ('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 }', "pool: STOCHASTIC"),
    ('type: "InnerProduct" inner_product_param { num_output: 2 axis: 2 }', "axis other than 1"),
])
def test_a_layer_without_conversion_is_refused_by_name(tmp_path, layer, what):
    deploy, weights = small_net(tmp_path, (1, 3, 8, 8), f'layer {{ name: "odd" bottom: "data" top: "out" {layer} }}')
    with pytest.raises(ox.UnsupportedLayer, match=f"net.prototxt: layer odd \\(type \\w+\\): {what}"):
        ox.convert(deploy, weights)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as tools/train.py leaves it (run.json, deploy.prototxt, final weights):
    the Full-Model at width 0.25 with seeded random weights."""
    run = tmp_path_factory.mktemp("run") / "full_w0.25"
    render_model(run, "full", width=0.25, check_paths=False)
    inference.save_random_weights(run / "deploy.prototxt", run / "finetune_iter_10.caffemodel")
    (run / "run.json").write_text(json.dumps({"name": run.name, "model": "full", "overrides": {"width": 0.25},
                                              "weights": "finetune_iter_10.caffemodel", "deploy": "deploy.prototxt"}))
    return run


def tool(*args, cwd=None):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_export_of_a_run_folder_equals_caffe_on_real_faces(run_folder):
    r = tool("--run", run_folder, "--check-images", 60)
    assert r.returncode == 0, r.stderr
    out, card_file = run_folder / "model.onnx", run_folder / "model.onnx.json"
    assert f"wrote {out}" in r.stdout and "60 aligned crops of lfw-112x96" in r.stdout
    card = json.loads(card_file.read_text())
    assert card["format"] == "mtdnn-onnx-card" and card["onnx"]["sha256"] == sha256_file(out)
    assert card["onnx"]["opset"] == ox.OPSET and card["onnx"]["onnxruntime"] == onnxruntime.__version__
    assert card["source"]["weights"] == {"file": "finetune_iter_10.caffemodel",
                                         "sha256": sha256_file(run_folder / "finetune_iter_10.caffemodel")}
    assert card["input"]["shape"] == ["N", 3, 112, 96] and card["input"]["channels"].startswith("BGR")
    assert card["input"]["normalisation"] == "(pixel - 127.5) * 0.0078125"
    assert list(card["outputs"]) == ["fc5", "attr_pred"]
    assert card["outputs"]["fc5"]["shape"] == ["N", 256] and card["outputs"]["attr_pred"]["shape"] == ["N", 7]
    assert card["outputs"]["attr_pred"]["attributes"][-1] == "Male"
    assert card["check"]["inputs"] == 60 and max(card["check"]["max_difference"].values()) <= inference.RTOL
    # The file alone, in plain onnxruntime, on other real crops than the check's, as the card says.
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props == {"mtdnn.input": card["input"], "mtdnn.outputs": card["outputs"]}
    paths = list_images(ALIGNED)[7::400][:24]
    images = [cv2.imread(str(ALIGNED / p)) for p in paths]
    x = ((np.stack(images).astype(np.float32) - card["input"]["mean"]) * card["input"]["scale"]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(x, preprocess(images))
    sess = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = dict(zip(["fc5", "attr_pred"], sess.run(["fc5", "attr_pred"], {card["input"]["name"]: x})))
    ref = inference.load(run_folder / "deploy.prototxt", run_folder / "finetune_iter_10.caffemodel",
                         engine="caffe", outputs=["fc5", "attr_pred"])
    want = ref.forward(x)
    for blob in ("fc5", "attr_pred"):
        d = inference.difference(got[blob], want[blob])
        print(f"{blob}: {d:.1e}")
        assert d <= inference.RTOL
        assert inference.difference(got[blob][1:], want[blob][:-1]) > 100 * inference.RTOL  # faces differ more


def test_a_check_beyond_the_bound_writes_nothing(run_folder, tmp_path, monkeypatch):
    """Fault injection: with a zero bound the float reordering of ONNX Runtime is a mismatch."""
    monkeypatch.setattr(inference, "RTOL", 0.0)
    with pytest.raises(ox.ExportError, match=r"differs from pycaffe beyond the bound fc5 .*nothing written"):
        ox.export(run_folder / "deploy.prototxt", run_folder / "finetune_iter_10.caffemodel", tmp_path / "m.onnx",
                  outputs=["fc5"], check_inputs=lambda shape: (ox.seeded_inputs(shape, 8), "8 seeded inputs"))
    assert not list(tmp_path.iterdir())


def test_export_refuses_bad_input(run_folder, tmp_path):
    """Exit 2 with what to do: an unfinished run, a folder that is no run, a layer without conversion."""
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text(json.dumps({"name": "unfinished", "model": "full"}))
    r = tool("--run", unfinished)
    assert r.returncode == 2 and "the run is not finished" in r.stderr and "--weights" in r.stderr
    r = tool("--run", tmp_path)
    assert r.returncode == 2 and "has no run.json" in r.stderr
    deploy, weights = small_net(tmp_path, (1, 3, 8, 8),
                                'layer { name: "odd" type: "Embed" bottom: "data" top: "out" '
                                'embed_param { num_output: 4 input_dim: 10 } }')
    r = tool("--deploy", deploy, "--weights", weights, "--out", tmp_path / "x.onnx")
    assert r.returncode == 2 and "layer odd (type Embed)" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_mtcnn_export(tmp_path):
    """MTCNN's four nets to ONNX: their cards say the transposed RGB input; P-Net takes any image size."""
    r = tool("--mtcnn", "--out-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("det1", "det2", "det3", "det4"):
        card = json.loads((tmp_path / f"{name}.onnx.json").read_text())
        assert "TRANSPOSED" in card["input"]["layout"] and card["input"]["channels"] == "RGB"
        assert max(card["check"]["max_difference"].values()) <= inference.RTOL
    assert json.loads((tmp_path / "det1.onnx.json").read_text())["input"]["shape"] == ["N", 3, "H", "W"]
    assert list(json.loads((tmp_path / "det3.onnx.json").read_text())["outputs"]) == ["conv6-2", "conv6-3", "prob1"]
