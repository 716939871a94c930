"""Per-layer output shapes, parameter counts and FLOPs of a Caffe net, per image.

Shapes and parameter blobs come from pycaffe (``caffe.Net``) instantiated with a batch of
one. What is counted:

- FLOPs: Convolution and InnerProduct only, a multiply-add counted as 2 FLOPs
  (``2 * Cin/group * kh * kw * Cout * Hout * Wout`` and ``2 * K * N``). Bias additions,
  BatchNorm, Scale, PReLU, Eltwise, Pooling, Dropout, Softmax and losses are *not* counted;
  in the Full-Model they would add about 6 FLOPs per activation, some 0.03 GFLOP (0.3 %).
- Parameters: the learned blobs of every layer (weights, biases, Scale's gamma and beta,
  PReLU's slopes). BatchNorm's mean, variance and moving-average factor are statistics,
  counted apart (``stats``).

A train_val net needs no data: its data layers become an ``Input`` of the image blob
(``--input-shape``, default 3x112x96) and the layers that read labels or attributes
(losses, accuracy) are dropped; they have neither parameters nor counted FLOPs.

Figures (``tools/net_summary.py``, see ``tests/test_nets.py``): the Full-Model's trunk up to
``fc5`` has 46.05 M parameters and costs 8.284 GFLOP; with its identity classifier
(10,575 classes) and attribute head the training forward costs 8.308 GFLOP. The Fast-Model:
34.72 M and 5.928 GFLOP, 5.951 GFLOP with both heads. design.md's 46.0 M / 34.7 M and
8.31 / 5.95 GFLOP are these two readings (parameters without any head, FLOPs with both).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import import_pycaffe
from ..prototxt import DATA_LAYER_TYPES, in_phase, read_net, write_prototxt

STAT_LAYERS = ("BatchNorm",)
FLOP_LAYERS = ("Convolution", "InnerProduct")
BRIEF_LAYERS = FLOP_LAYERS + ("Input", "Pooling", "Eltwise")


@dataclass
class LayerStats:
    name: str
    type: str
    tops: list            # [(blob name, per-image shape tuple)]
    params: int           # learned values
    stats: int            # BatchNorm statistics
    flops: int            # per image, multiply-add = 2


@dataclass
class NetStats:
    layers: list = field(default_factory=list)

    def upto(self, name: str) -> "NetStats":
        """The layers up to the last one named ``name`` or writing blob ``name``: ``fc5``
        includes fc5's in-place BatchNorm, Scale and PReLU. KeyError if there is none."""
        hits = [i for i, s in enumerate(self.layers)
                if s.name == name or any(t == name for t, _ in s.tops)]
        if not hits:
            raise KeyError(f"no layer or blob {name!r} in the net")
        return NetStats(self.layers[:hits[-1] + 1])

    @property
    def total_params(self) -> int:
        return sum(s.params for s in self.layers)

    @property
    def total_stats(self) -> int:
        return sum(s.stats for s in self.layers)

    @property
    def total_flops(self) -> int:
        return sum(s.flops for s in self.layers)


def per_image_net(path: Path, phase: str = "TEST", input_shape=(3, 112, 96)):
    """The ``phase`` net of ``path`` as a NetParameter with a batch of one and no data
    sources: data layers become one Input of ``data`` (their first top) and layers that
    read their other tops (labels, attributes) are dropped, transitively."""
    from caffe.proto import caffe_pb2
    net = read_net(path)
    out = caffe_pb2.NetParameter(name=net.name)
    dropped, image_tops = set(), []
    for layer in net.layer:
        if not in_phase(layer, phase):
            continue
        if layer.type in DATA_LAYER_TYPES and layer.type != "Input":
            if layer.top and layer.top[0] not in image_tops and layer.type != "HDF5Data":
                image_tops.append(layer.top[0])
            dropped.update(layer.top[1:] if layer.type != "HDF5Data" else layer.top)
            continue
        if any(b in dropped for b in layer.bottom):
            dropped.update(layer.top)
            continue
        kept = out.layer.add()
        kept.CopyFrom(layer)
        del kept.include[:], kept.exclude[:]
        if layer.type == "Input":
            for shape in kept.input_param.shape:
                if shape.dim:
                    shape.dim[0] = 1
    if image_tops:
        inp = caffe_pb2.LayerParameter(name="input", type="Input", top=image_tops)
        for _ in image_tops:
            inp.input_param.shape.add(dim=[1, *input_shape])
        layers = [inp] + list(out.layer)
        del out.layer[:]
        out.layer.extend(layers)
    for legacy in (net.input, net.input_shape, net.input_dim):
        if len(legacy):
            raise ValueError(f"{path}: legacy net-level inputs are not supported; use an Input layer")
    return out


def summarize(path, phase: str = "TEST", input_shape=(3, 112, 96)) -> NetStats:
    """Instantiate ``path`` in pycaffe (batch 1) and count per layer; see the module doc."""
    caffe = import_pycaffe()
    param = per_image_net(Path(path), phase, input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        net = caffe.Net(str(write_prototxt(param, Path(tmp) / "net.prototxt")), caffe.TEST)
    stats = NetStats()
    for name, layer in zip(net._layer_names, net.layers):
        tops = [(t, tuple(net.blobs[t].data.shape[1:])) for t in net.top_names[name]]
        sizes = [b.data.size for b in layer.blobs]
        learned = 0 if layer.type in STAT_LAYERS else sum(sizes)
        flops = 0
        if layer.type in FLOP_LAYERS and layer.blobs:
            # weight blob: (Cout, Cin/group, kh, kw) or (N, K); one output = fan-in MACs
            fan_in = math.prod(layer.blobs[0].data.shape[1:])
            flops = 2 * fan_in * math.prod(tops[0][1])
        stats.layers.append(LayerStats(name, layer.type, tops, learned,
                                       sum(sizes) - learned, flops))
    return stats


def format_table(stats: NetStats, all_layers: bool = True) -> str:
    """A text table: layer, type, output shape, parameters, MFLOP; then the totals."""
    rows = [f"{'layer':24s} {'type':16s} {'output (per image)':22s} {'params':>12s} {'MFLOP':>10s}"]
    for s in stats.layers:
        if not all_layers and s.type not in BRIEF_LAYERS:
            continue
        shape = " ".join("x".join(map(str, shape)) or "1" for _, shape in s.tops)
        rows.append(f"{s.name:24s} {s.type:16s} {shape:22s} {s.params:12,d} {s.flops / 1e6:10.2f}")
    rows.append(f"total: {stats.total_params:,d} learned parameters ({stats.total_params / 1e6:.2f} M), "
                f"{stats.total_stats:,d} BatchNorm statistics, "
                f"{stats.total_flops / 1e9:.3f} GFLOP per image (conv + fc, multiply-add = 2)")
    return "\n".join(rows)
