"""Every generated net instantiates in pycaffe (TRAIN and TEST) with the paper's shapes and
block counts, trains a step on real LMDB/HDF5 input that stays aligned, and costs what
design.md says (mtdnn.caffe.netstats)."""
import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
import caffe  # noqa: E402

from mtdnn import netgen as generate  # noqa: E402
from mtdnn.netgen import render_model  # noqa: E402
from mtdnn.netgen.render import MODELS  # noqa: E402
from mtdnn import db  # noqa: E402
from mtdnn.caffe import netstats  # noqa: E402
from mtdnn.prototxt import read_net  # noqa: E402

GROUPS = [(1, 3, 64, (54, 46)), (2, 4, 128, (26, 22)), (3, 6, 256, (12, 10)), (4, 3, 512, (5, 4))]
CONVS = {"full": 3, "fast": 2, "variants": 2}
BATCH = {"full": 40, "fast": 48, "variants": 40}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 4-record LMDB and, for each attribute count, an HDF5 list file of 4 rows."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 112, 96, 3), dtype=np.uint8)
    db.write_image_lmdb(root / "lmdb", zip(images, [3, 1, 2, 0]))
    sources, rows = {}, {}
    for m in {len(s.attributes) for s in generate.VARIANTS.values()} | {2}:
        rows[m] = rng.choice([-1.0, 1.0], (4, m)).astype(np.float32)
        sources[m] = db.write_attribute_hdf5(root / f"attr{m}.h5", rows[m]) if m else None
    return root / "lmdb", sources, rows


def render_with_data(name, out, data):
    lmdb, sources, _ = data
    spec = generate.VARIANTS[name]
    hdf5 = {"train_hdf5": sources[len(spec.attributes)]} if spec.attributes else {}
    render_model(out, variant=name, train_lmdb=lmdb, **hdf5)
    return spec


@pytest.mark.parametrize("name", sorted(generate.VARIANTS))
def test_every_net_instantiates_with_the_paper_shapes(name, data, tmp_path):
    """A copy of the committed folder that reads the tiny data: it differs from models/ only
    in the data source lines, so what is instantiated here is what is committed."""
    spec = render_with_data(name, tmp_path / name, data)
    for path in sorted((tmp_path / name).glob("*.prototxt")):
        mine = [ln for ln in path.read_text().splitlines() if "source:" not in ln]
        committed = [ln for ln in (MODELS / name / path.name).read_text().splitlines() if "source:" not in ln]
        assert mine == committed, path.name

    m, batch = len(spec.attributes), BATCH[spec.block]
    nets = [("deploy.prototxt", caffe.TEST)]
    for file in ["train_val.prototxt"] + (["train_val_pretrain.prototxt"] if m else []):
        nets += [(file, caffe.TRAIN), (file, caffe.TEST)]
    for file, phase in nets:
        net = caffe.Net(str(tmp_path / name / file), phase)
        n = 1 if file == "deploy.prototxt" else batch
        shapes = {k: v.data.shape for k, v in net.blobs.items()}
        assert shapes["data"] == (n, 3, 112, 96)
        assert shapes["pool1"] == (n, 64, 54, 46)
        for g, blocks, channels, hw in GROUPS:
            assert shapes[f"res{g}_{blocks}"] == (n, channels, *hw)
            assert f"res{g}_{blocks + 1}" not in shapes
        assert shapes["fc5"] == (n, 1024)
        assert shapes.get("attr_pred") == ((n, m) if m and "pretrain" not in file else None)
        if file == "deploy.prototxt":
            assert not any("loss" in k or k in ("label", "id_fc") for k in shapes)
            # fc5 is an output only where nothing reads it; it is always readable as a blob
            assert "attr_pred" in net.outputs if m else net.outputs == ["fc5"]
            out = net.forward(blobs=["fc5"])
            assert out["fc5"].shape == (1, 1024) and np.isfinite(out["fc5"]).all()
        else:
            assert shapes["label"] == (n,) and shapes["id_fc"] == (n, 10575)
            assert ("attributes" in shapes) == ("attr_pred" in shapes)
            assert ("id_accuracy" in shapes) == (phase == caffe.TEST)
        del net


@pytest.mark.parametrize("name", sorted(generate.VARIANTS))
def test_blocks_and_layers_match_the_paper(name):
    spec = generate.VARIANTS[name]
    net = read_net(MODELS / name / "deploy.prototxt")
    layers = {l.name: l for l in net.layer}
    assert len(layers) == len(net.layer)  # names are unique
    convs = [l for l in net.layer if l.type == "Convolution"]
    for g, blocks, channels, _ in GROUPS:
        sums = [l for l in net.layer if l.type == "Eltwise" and l.name.startswith(f"res{g}_")]
        assert len(sums) == blocks
        for b in range(1, blocks + 1):
            block = [c for c in convs if c.name.startswith(f"res{g}_{b}_")]
            road = [c for c in block if "_conv" in c.name]
            bypass = [c for c in block if c.name.endswith("_bypass")]
            assert len(road) == CONVS[spec.block] and len(bypass) == (spec.block == "variants")
            for c in block:
                p = c.convolution_param
                assert (p.num_output, list(p.kernel_size), list(p.stride), list(p.pad)) == (channels, [3], [1], [1])
            s = layers[f"res{g}_{b}"]
            assert s.eltwise_param.operation == 1  # SUM
            assert list(s.bottom) == [bypass[0].name if bypass else
                                      (f"res{g}_{b - 1}" if b > 1 else ("pool1" if g == 1 else f"pool{g}")),
                                      road[-1].name]
    for i, width in enumerate([32, 64, 128, 256, 512], 1):  # stem and transitions: pad 0
        p = layers[f"conv{i}"].convolution_param
        assert (p.num_output, list(p.pad)) == (width, [0])
    for i in range(1, 5):
        p = layers[f"pool{i}"].pooling_param
        assert (p.pool, p.kernel_size, p.stride) == (0, 2, 2)  # MAX
    # every conv and fc (except the linear outputs) is followed by BatchNorm, Scale, PReLU in place
    for l in net.layer:
        if l.type in ("Convolution", "InnerProduct") and l.name not in ("attr_pred", "id_fc"):
            bn, sc, pr = layers[l.name + "_bn"], layers[l.name + "_scale"], layers[l.name + "_prelu"]
            assert (bn.type, sc.type, pr.type) == ("BatchNorm", "Scale", "PReLU")
            assert all(list(x.bottom) == list(x.top) == [l.name] for x in (bn, sc, pr))
            assert [p.lr_mult for p in bn.param] == [0, 0, 0] and sc.scale_param.bias_term
    assert not any(l.type == "Dropout" for l in net.layer)
    head = {1: ("attr_fc", "fc5"), 2: ("attr_pred", "fc5"), 3: ("attr_fc5", "res4_3")}
    if spec.attributes:
        layer, bottom = head[spec.config]
        assert list(layers[layer].bottom) == [bottom]
        assert list(layers["fc5"].bottom) == ["res4_3"]


def test_one_training_step_reads_aligned_images_labels_and_attributes(data, tmp_path):
    """A tiny model trained for a step: the batch holds LMDB records 0-1 and HDF5 rows 0-1."""
    lmdb, sources, rows = data
    render_model(tmp_path / "run", variant="fast", width=0.125, identities=4, attributes="Male,Big_Nose",
                 batch=2, train_lmdb=lmdb, train_hdf5=sources[2], finetune_iter=4, absolute_paths=True)
    solver = caffe.get_solver(str(tmp_path / "run" / "solver_finetune.prototxt"))
    solver.step(1)
    net = solver.net
    assert list(net.blobs["label"].data) == [3, 1]
    assert np.array_equal(net.blobs["attributes"].data, rows[2][:2])
    assert np.isfinite(net.blobs["id_loss"].data) and np.isfinite(net.blobs["attr_loss"].data)
    assert float(net.blobs["attr_loss"].data) > 0
    solver.step(1)
    assert list(net.blobs["label"].data) == [2, 0]
    assert np.array_equal(net.blobs["attributes"].data, rows[2][2:])


@pytest.mark.parametrize("name, params_m, flops_g, head_flops_g", [
    ("full", 46.0, 8.28, 8.31), ("fast", 34.7, 5.93, 5.95)])
def test_netstats_reproduce_design_md(name, params_m, flops_g, head_flops_g):
    """design.md: 46.0 M / 34.7 M parameters without the identity classifier (the trunk and
    fc5), and 8.31 / 5.95 GFLOP per image forward, which is the training net's forward with
    its identity classifier (conv + fc multiply-adds; the trunk alone is 8.28 / 5.93)."""
    deploy = netstats.summarize(MODELS / name / "deploy.prototxt")
    trunk = deploy.upto("fc5")
    assert round(trunk.total_params / 1e6, 1) == params_m
    assert round(trunk.total_flops / 1e9, 2) == flops_g
    train = netstats.summarize(MODELS / name / "train_val.prototxt")
    assert round(train.total_flops / 1e9, 2) == head_flops_g
    # the heads: attribute g + W_a, and the 10,575-way identity classifier
    assert deploy.total_params - trunk.total_params == 1024 * 1024 + 3 * 1024 + 1024 * 7 + 7
    assert train.total_params - deploy.total_params == 1024 * 10575 + 10575
    shapes = {s.name: s.tops[0][1] for s in deploy.layers}
    assert shapes["res4_3"] == (512, 5, 4) and shapes["fc5"] == (1024,)
    assert {s.type for s in deploy.layers if s.flops} == {"Convolution", "InnerProduct"}


def test_caffe_train_pretrains_and_finetunes_in_a_run_folder(data, tmp_path, monkeypatch):
    """The run-folder convention end to end with the `caffe` command: placeholders linked to
    data, pre-training snapshot, fine-tuning from it by layer name (attribute head added)."""
    import subprocess
    import sys
    lmdb, sources, _ = data
    run = tmp_path / "run"
    render_model(run, variant="full", width=0.125, identities=4, attributes="Male,Big_Nose", batch=2,
                 test_images=4, pretrain_iter=2, finetune_iter=2)
    (run / "data").mkdir()
    for split in ("train", "val"):
        (run / "data" / f"casia_{split}_lmdb").symlink_to(lmdb)
        (run / "data" / f"casia_{split}_attributes.txt").symlink_to(sources[2])
    caffe_bin = str(os.path.join(os.path.dirname(sys.executable), "caffe"))
    for args in (["-solver", "solver_pretrain.prototxt"],
                 ["-solver", "solver_finetune.prototxt", "-weights", "pretrain_iter_2.caffemodel"]):
        out = subprocess.run([caffe_bin, "train", *args], cwd=run, capture_output=True, text=True,
                             env={**os.environ, "GLOG_minloglevel": "0"})
        assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "pretrain_iter_2.caffemodel").is_file() and (run / "finetune_iter_2.caffemodel").is_file()
    assert "attr_loss" in out.stderr and "with loss weight 0.1" in out.stderr
    # -weights copies by layer name: the trunk comes from the pre-trained model, the head is new
    monkeypatch.chdir(run)  # the nets' data paths are relative to the run folder
    pre = caffe.Net(str(run / "train_val_pretrain.prototxt"), caffe.TEST, weights=str(run / "pretrain_iter_2.caffemodel"))
    fine = caffe.Net(str(run / "train_val.prototxt"), caffe.TEST, weights=str(run / "pretrain_iter_2.caffemodel"))
    for layer in ("conv1", "res4_3_conv3", "fc5", "id_fc"):
        assert np.array_equal(pre.params[layer][0].data, fine.params[layer][0].data)
    assert "attr_fc" not in pre.params and "attr_fc" in fine.params
