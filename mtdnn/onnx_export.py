"""Caffe deploy nets as ONNX models, and ONNX Runtime sessions of them.

    >>> model = convert("models/full/deploy.prototxt", "w.caffemodel", outputs=["fc5", "attr_pred"])
    >>> onnx.save(model, "full.onnx")                  # or tools/export_onnx.py --run RUN
    >>> sess = session(model)                          # onnxruntime.InferenceSession, CPU

The graph is built with the ``onnx`` package's helper API, layer by layer, from the deploy
prototxt (parsed with ``caffe_pb2``: kernel sizes, strides, pads, pooling mode, epsilons,
axes) and the weights of a pycaffe net of it (``caffe.Net``: the blobs after Caffe's own
upgrade of old formats, and each blob's shape). The layer types of this project's nets:

=================  =========================================================================
Caffe              ONNX
=================  =========================================================================
Input / input:     the graph input, batch axis named ``N`` (and height and width ``H``, ``W``
                   for fully convolutional nets such as MTCNN's P-Net)
Convolution        Conv (pads, strides, dilations, groups; bias if ``bias_term``)
BatchNorm + Scale  one BatchNormalization: Caffe's mean and variance divided by its moving
                   average factor, its ``eps``, and the Scale's factors and biases (an in-place
                   Scale right after the BatchNorm; otherwise the two are emitted apart,
                   the Scale as Mul + Add)
PReLU              PRelu (slopes shaped to broadcast over the channel axis)
ReLU, Sigmoid,     Relu (LeakyRelu with a ``negative_slope``), Sigmoid, Tanh
TanH
Eltwise            Add / Sum (with ``coeff``: Mul by each coefficient first), Mul, Max
InnerProduct       Flatten (from Caffe's axis 1) + Gemm (transB)
Pooling            MaxPool / AveragePool with Caffe's ceiling rounding (``ceil_mode``),
                   AveragePool counting the padding as Caffe does; global pooling
Softmax            Softmax over Caffe's axis
Slice, Concat      Split (sizes from the blob shapes), Concat
Dropout            Identity (Caffe's dropout does nothing at test time)
Flatten            Flatten
=================  =========================================================================

Any other layer type (or an option this table does not cover) raises
:class:`UnsupportedLayer` naming the layer: never a silently different net. Caffe's in-place
layers (``conv1`` written by Convolution, BatchNorm, Scale and PReLU in turn) become separate
ONNX values; the value a Caffe blob holds at the end of the net keeps the blob's name, so
``fc5`` and ``attr_pred`` are the graph outputs of those names. Only the layers the requested
outputs depend on are converted.

The opset is :data:`OPSET` (21): recent, and read by ONNX Runtime 1.18 and later; the operators
used here have kept their meaning in every opset since (newer versions of Conv, MaxPool,
Flatten, Identity only add data types).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

OPSET = 21
PRODUCER = "mtdnn.onnx_export"
INSTALL_HINT = "pip install onnx==1.22.0 onnxruntime==1.32.0 (the pins of requirements.txt)"


class UnsupportedLayer(ValueError):
    """A layer (type or option) with no ONNX conversion here."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(f"the onnx package is not installed: {INSTALL_HINT}") from None
    return onnx


def _caffe_net(deploy: Path, weights: Path | None):
    from .inference import _import_caffe
    caffe = _import_caffe()
    caffe.set_mode_cpu()
    return caffe.Net(str(deploy), caffe.TEST, **({} if weights is None else {"weights": str(weights)}))


def _pair(param, name: str, default: int, h_name: str | None = None, w_name: str | None = None) -> list[int]:
    """Caffe's (h, w) of a repeated ``name`` field or of ``name_h`` / ``name_w``."""
    h_name, w_name = h_name or f"{name}_h", w_name or f"{name}_w"
    if param.HasField(h_name) or param.HasField(w_name):
        return [int(getattr(param, h_name)), int(getattr(param, w_name))]
    values = getattr(param, name)
    values = [values] if isinstance(values, int) else list(values)  # pooling's are scalars
    if len(values) > 2:
        raise UnsupportedLayer(f"{name} with {len(values)} values (2-D layers only)")
    if not values:
        return [default, default]
    return [int(values[0]), int(values[-1])]


class _Builder:
    """The graph under construction: nodes, initializers and the ONNX name of each Caffe blob."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.inits = [], []
        self.value = {}  # Caffe blob -> the ONNX value it holds now
        self.inputs = set()  # graph input names: a layer writing in place on one gets a new name

    def const(self, name: str, array, dtype=np.float32) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs) -> None:
        self.nodes.append(self.helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))


def _channel_shaped(array: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast over an N x C x ... blob of ``rank`` axes."""
    return np.asarray(array, np.float32).reshape(-1, *([1] * (rank - 2)))


def _needed(layers, outputs: Sequence[str]) -> set:
    """Names of the layers the blobs ``outputs`` (their values at the end of the net) depend on."""
    want, keep = set(outputs), set()
    for name, _type, bottoms, tops in reversed(layers):
        if want & set(tops):
            keep.add(name)
            want -= set(tops)
            want |= set(bottoms)
    return keep


def convert(deploy, weights=None, *, net=None, outputs: Sequence[str] | None = None,
            opset: int = OPSET, name: str | None = None):
    """The ONNX model (``onnx.ModelProto``, checked by ``onnx.checker``) of ``deploy`` with the
    weights of ``net`` (a pycaffe net of it) or of ``weights`` (a caffemodel; omitted: Caffe's
    fillers). ``outputs``: the blobs the graph gives (default: the net's final outputs)."""
    from .prototxt import read_net
    onnx = _onnx()
    deploy = Path(deploy)
    if net is None:
        net = _caffe_net(deploy, None if weights is None else Path(weights))
    param = read_net(deploy)
    outputs = list(outputs) if outputs else list(net.outputs)
    plan = _plan(deploy, param, net, outputs)
    g = _Builder(onnx)
    g.value[plan.input] = plan.input
    g.inputs.add(plan.input)
    _emit_layers(g, plan, deploy, net)
    model = _model(g, plan, outputs, name or param.name or deploy.stem, opset, deploy)
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass
class _Plan:
    """What :func:`convert` converts: the layers the outputs need, in order, and the blobs."""
    layers: list            # (name, type, bottoms, tops)
    by_name: dict           # layer name -> its LayerParameter (TEST phase)
    last_writer: dict       # blob -> the last kept layer writing it
    shapes: dict            # blob -> its shape in the pycaffe net
    input: str
    fixed: bool             # the net has a fixed input size (InnerProduct, Flatten, Reshape)


def _plan(deploy: Path, param, net, outputs: list) -> _Plan:
    from .prototxt import in_phase
    if len(param.layers):
        raise UnsupportedLayer(f"{deploy}: the old V1 'layers' format; upgrade it with Caffe's "
                               f"upgrade_net_proto_text first")
    for blob in outputs:
        if blob not in net.blobs:
            raise KeyError(f"the net has no blob {blob!r}; blobs: {', '.join(net.blobs)}")
    if len(net.inputs) != 1:
        raise UnsupportedLayer(f"{deploy}: {len(net.inputs)} inputs; one input blob is supported")
    layers = [(n, layer.type, list(net.bottom_names[n]), list(net.top_names[n]))
              for n, layer in zip(net._layer_names, net.layers)]
    keep = _needed(layers, outputs)
    layers = [l for l in layers if l[0] in keep]
    last_writer = {top: lname for lname, _t, _b, tops in layers for top in tops}
    return _Plan(layers, {lp.name: lp for lp in param.layer if in_phase(lp, "TEST")}, last_writer,
                 {b: tuple(v.data.shape) for b, v in net.blobs.items()}, net.inputs[0],
                 any(t in ("InnerProduct", "Flatten", "Reshape") for _n, t, _b, _t in layers))


def _emit_layers(g: "_Builder", plan: _Plan, deploy: Path, net) -> None:
    """The nodes of every planned layer (a Scale absorbed into its BatchNorm is skipped)."""
    skip = set()
    for i, (lname, ltype, bottoms, tops) in enumerate(plan.layers):
        if lname in skip or ltype == "Input":
            continue
        if ltype == "Split":  # inserted by Caffe where a blob feeds several layers: the same value
            for top in tops:
                g.value[top] = g.value[bottoms[0]]
            continue
        lp = plan.by_name.get(lname)
        if lp is None:
            raise UnsupportedLayer(f"{deploy}: layer {lname} is in the pycaffe net but not in the prototxt")
        following = plan.layers[i + 1] if i + 1 < len(plan.layers) else None
        layer = _Layer(g, lp, ltype, bottoms, tops, net, plan, following, skip)
        try:
            emitter = _EMITTERS.get(ltype)
            if emitter is None:
                raise UnsupportedLayer("no ONNX conversion for this layer type")
            emitter(layer)
        except UnsupportedLayer as e:
            raise UnsupportedLayer(f"{deploy.name}: layer {lname} (type {ltype}): {e}") from None


def _model(g: "_Builder", plan: _Plan, outputs: list, name: str, opset: int, deploy: Path):
    """The model of the built graph, its outputs under the blobs' names."""
    helper, T = g.onnx.helper, g.onnx.TensorProto
    shapes = plan.shapes
    out_info = []
    for blob in outputs:
        if blob not in g.value:
            raise KeyError(f"blob {blob!r} is an input, not computed by a layer")
        if g.value[blob] != blob:  # e.g. a top of Caffe's Split: the value under the blob's name
            g.node("Identity", [g.value[blob]], [blob], f"{blob}.output")
        dims = ["N", *shapes[blob][1:]] if plan.fixed or len(shapes[blob]) == 2 else \
            ["N", shapes[blob][1], *([None] * (len(shapes[blob]) - 2))]
        out_info.append(helper.make_tensor_value_info(blob, T.FLOAT, dims))
    in_shape = shapes[plan.input]
    in_dims = ["N", *in_shape[1:]] if plan.fixed else ["N", in_shape[1], "H", "W"]
    graph = helper.make_graph(g.nodes, name, [helper.make_tensor_value_info(plan.input, T.FLOAT, in_dims)],
                              out_info, initializer=g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name=PRODUCER, doc_string=f"converted from Caffe's {deploy.name}")


class _Layer:
    """One Caffe layer being converted: its parameters, weights, input values and outputs."""

    def __init__(self, g, lp, ltype, bottoms, tops, net, plan: _Plan, following, skip):
        self.g, self.lp, self.type, self.bottoms, self.tops = g, lp, ltype, bottoms, tops
        self.name, self.net, self.plan, self.following, self.skip = lp.name, net, plan, following, skip
        self.blobs = ([np.asarray(b.data, np.float32) for b in net.params[lp.name]]
                      if lp.name in net.params else [])
        self.x = [g.value[b] for b in bottoms]
        self.rank = len(plan.shapes[bottoms[0]]) if bottoms else 0

    def out(self, top: str, writer: str | None = None) -> str:
        """The ONNX value for ``top`` written by ``writer`` (default this layer): the blob's own
        name when it is the last write of it, else ``top/writer``."""
        writer = writer or self.name
        value = top if self.plan.last_writer[top] == writer and top not in self.g.inputs else f"{top}/{writer}"
        self.g.value[top] = value
        return value

    def node(self, op: str, inputs=None, **attrs) -> None:
        """One node from this layer's inputs (default) to its first top."""
        self.g.node(op, self.x if inputs is None else inputs, [self.out(self.tops[0])], self.name, **attrs)


def _convolution(L: _Layer) -> None:
    cp = L.lp.convolution_param
    if cp.axis != 1:
        raise UnsupportedLayer("axis other than 1")
    kernel = _pair(cp, "kernel_size", 0, "kernel_h", "kernel_w")
    pads, strides = _pair(cp, "pad", 0), _pair(cp, "stride", 1)
    dil = list(cp.dilation) or [1]
    inputs = [L.x[0], L.g.const(f"{L.name}.W", L.blobs[0])]
    if cp.bias_term:
        inputs.append(L.g.const(f"{L.name}.b", L.blobs[1]))
    L.node("Conv", inputs, kernel_shape=kernel, pads=pads * 2, strides=strides,
           dilations=[int(dil[0]), int(dil[-1])], group=int(cp.group))


def _batch_norm(L: _Layer) -> None:
    """BatchNormalization, with the in-place per-channel Scale right after it absorbed."""
    bp = L.lp.batch_norm_param
    if bp.HasField("use_global_stats") and not bp.use_global_stats:
        raise UnsupportedLayer("use_global_stats: false (batch statistics at test time)")
    factor = float(L.blobs[2].ravel()[0])
    factor = 0.0 if factor == 0 else 1.0 / factor
    mean, var = L.blobs[0] * factor, L.blobs[1] * factor
    channels = mean.shape[0]
    gamma, beta, writer = np.ones(channels, np.float32), np.zeros(channels, np.float32), L.name
    f, top = L.following, L.tops[0]
    if f is not None and f[1] == "Scale" and f[2] == [top] and f[3] == [top]:
        sp = L.net.params[f[0]]
        gamma = np.asarray(sp[0].data, np.float32)
        if len(sp) > 1:
            beta = np.asarray(sp[1].data, np.float32)
        writer = f[0]
        L.skip.add(writer)
        if gamma.shape != mean.shape:
            raise UnsupportedLayer(f"Scale {writer} is not per channel")
    c = L.g.const
    L.g.node("BatchNormalization", [L.x[0], c(f"{L.name}.gamma", gamma), c(f"{L.name}.beta", beta),
                                    c(f"{L.name}.mean", mean), c(f"{L.name}.var", var)],
             [L.out(top, writer)], L.name, epsilon=float(bp.eps))


def _scale(L: _Layer) -> None:
    sp = L.lp.scale_param
    if len(L.bottoms) != 1 or sp.axis != 1 or sp.num_axes != 1:
        raise UnsupportedLayer("only a learned per-channel Scale (one bottom, axis 1, num_axes 1)")
    y = L.g.const(f"{L.name}.gamma", _channel_shaped(L.blobs[0], L.rank))
    if len(L.blobs) > 1:
        mul = f"{L.tops[0]}/{L.name}.mul"
        L.g.node("Mul", [L.x[0], y], [mul], f"{L.name}.mul")
        L.node("Add", [mul, L.g.const(f"{L.name}.beta", _channel_shaped(L.blobs[1], L.rank))])
    else:
        L.node("Mul", [L.x[0], y])


def _prelu(L: _Layer) -> None:
    L.node("PRelu", [L.x[0], L.g.const(f"{L.name}.slope", _channel_shaped(L.blobs[0], L.rank))])


def _relu(L: _Layer) -> None:
    slope = float(L.lp.relu_param.negative_slope)
    if slope:
        L.node("LeakyRelu", alpha=slope)
    else:
        L.node("Relu")


def _eltwise(L: _Layer) -> None:
    ep = L.lp.eltwise_param
    op = ep.EltwiseOp.Name(ep.operation)
    coeff, x = list(ep.coeff), L.x
    if coeff and op != "SUM":
        raise UnsupportedLayer("coeff with an operation other than SUM")
    if coeff and any(c != 1 for c in coeff):
        scaled = []
        for k, (v, c) in enumerate(zip(x, coeff)):
            scaled.append(f"{L.tops[0]}/{L.name}.in{k}")
            L.g.node("Mul", [v, L.g.const(f"{L.name}.coeff{k}", np.float32(c))], [scaled[-1]], f"{L.name}.coeff{k}")
        x = scaled
    onnx_op = {"SUM": "Sum", "PROD": "Mul", "MAX": "Max"}[op]
    if onnx_op == "Sum" and len(x) == 2:
        onnx_op = "Add"
    if onnx_op == "Mul" and len(x) > 2:
        raise UnsupportedLayer("PROD of more than two blobs")
    L.node(onnx_op, x)


def _inner_product(L: _Layer) -> None:
    ip = L.lp.inner_product_param
    if ip.axis != 1:
        raise UnsupportedLayer("axis other than 1")
    flat = L.x[0]
    if L.rank > 2:
        flat = f"{L.tops[0]}/{L.name}.flat"
        L.g.node("Flatten", L.x, [flat], f"{L.name}.flatten", axis=1)
    inputs = [flat, L.g.const(f"{L.name}.W", L.blobs[0])]
    if ip.bias_term:
        inputs.append(L.g.const(f"{L.name}.b", L.blobs[1]))
    L.node("Gemm", inputs, transB=0 if ip.transpose else 1)


def _pooling(L: _Layer) -> None:
    pp = L.lp.pooling_param
    kind = pp.PoolMethod.Name(pp.pool)
    if kind not in ("MAX", "AVE"):
        raise UnsupportedLayer(f"pool: {kind}")
    if hasattr(pp, "round_mode") and pp.HasField("round_mode") and pp.RoundMode.Name(pp.round_mode) != "CEIL":
        raise UnsupportedLayer("round_mode other than CEIL")
    if pp.global_pooling:
        L.node("GlobalMaxPool" if kind == "MAX" else "GlobalAveragePool")
        return
    kernel = _pair(pp, "kernel_size", 0, "kernel_h", "kernel_w")
    pads, strides = _pair(pp, "pad", 0), _pair(pp, "stride", 1)
    kw = dict(kernel_shape=kernel, pads=pads * 2, strides=strides, ceil_mode=1)
    if kind == "MAX":
        L.node("MaxPool", **kw)
    else:
        L.node("AveragePool", count_include_pad=1, **kw)


def _flatten(L: _Layer) -> None:
    fp = L.lp.flatten_param
    if fp.end_axis not in (-1, L.rank - 1):
        raise UnsupportedLayer("end_axis other than the last")
    L.node("Flatten", axis=int(fp.axis))


def _concat(L: _Layer) -> None:
    cp = L.lp.concat_param
    axis = int(cp.concat_dim) if cp.HasField("concat_dim") else int(cp.axis)
    L.g.node("Concat", L.x, [L.out(t) for t in L.tops], L.name, axis=axis)


def _slice(L: _Layer) -> None:
    sp = L.lp.slice_param
    axis = int(sp.slice_dim) if sp.HasField("slice_dim") else int(sp.axis)
    sizes = [L.plan.shapes[t][axis] for t in L.tops]
    L.g.node("Split", [L.x[0], L.g.const(f"{L.name}.split", np.array(sizes), np.int64)],
             [L.out(t) for t in L.tops], L.name, axis=axis)


_EMITTERS = {
    "Convolution": _convolution, "BatchNorm": _batch_norm, "Scale": _scale, "PReLU": _prelu, "ReLU": _relu,
    "Sigmoid": lambda L: L.node("Sigmoid"), "TanH": lambda L: L.node("Tanh"), "Eltwise": _eltwise,
    "InnerProduct": _inner_product, "Pooling": _pooling, "Flatten": _flatten, "Concat": _concat, "Slice": _slice,
    "Softmax": lambda L: L.node("Softmax", axis=int(L.lp.softmax_param.axis)),
    "Dropout": lambda L: L.node("Identity"),  # Caffe's dropout does nothing at test time
}


# --------------------------------------------------------------------------- ONNX Runtime

def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"onnxruntime is not installed: {INSTALL_HINT}") from None
    return onnxruntime


def available() -> str | None:
    """None when ONNX Runtime and onnx can be imported, else why not (with the install command)."""
    try:
        _onnx(), _ort()
    except ImportError as e:
        return str(e)
    return None


_THREADS = [None]


def set_num_threads(threads: int | None) -> None:
    """Intra-op threads of the sessions made from now on (None: ONNX Runtime's default, one per
    physical core); what ``cv2.setNumThreads`` is for OpenCV (tools/align_faces.py's worker
    processes take one each)."""
    _THREADS[0] = threads


def session(model, threads: int | None = None):
    """An ONNX Runtime CPU session of ``model`` (a ModelProto, its bytes or a file path);
    ``threads``: intra-op threads (default: :func:`set_num_threads`'s)."""
    ort = _ort()
    threads = threads or _THREADS[0]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    # Idle threads sleep instead of spinning: on shared cores spinning took the time of the
    # working threads (MTCNN's P-Net, 2 busy cores: 347 ms against 441 ms spinning).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = int(threads)
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)):
        model = str(model)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def versions() -> dict:
    """The onnx and onnxruntime versions in use (for cards and benchmark headers)."""
    return {"onnx": _onnx().__version__, "onnxruntime": _ort().__version__}



# --------------------------------------------------------------------------- export with a card

CARD_FORMAT, CARD_VERSION = "mtdnn-onnx-card", 1
CHECK_IMAGES = 200
CHECK_CHUNK = 40  # images per forward of the export's check


class ExportError(RuntimeError):
    """The converted model does not give pycaffe's outputs within the bound: nothing is written."""


def card_path(onnx_file) -> Path:
    """The card written beside ``onnx_file``: ``model.onnx`` -> ``model.onnx.json``."""
    return Path(str(onnx_file) + ".json")


def face_input(shape) -> dict | None:
    """How to feed a face recognition net of input ``shape`` (C, H, W): aligned crops of
    mtdnn.align, BGR, scaled as in training (mtdnn.features); None for other inputs."""
    from .features import PIXEL_MEAN, PIXEL_SCALE
    if tuple(shape) != (3, 112, 96):
        return None
    return {"image": "a face aligned to 112 x 96 (H x W) by 5 points on SphereFace's template "
                     "(tools/align_faces.py, mtdnn.align)",
            "layout": "NCHW", "channels": "BGR (as cv2.imread gives)",
            "normalisation": f"(pixel - {PIXEL_MEAN}) * {PIXEL_SCALE}", "mean": PIXEL_MEAN, "scale": PIXEL_SCALE}


MTCNN_INPUT = {"image": "MTCNN's input (mtdnn.mtcnn): image pyramid levels (det1) or box crops "
                        "(det2 24 x 24, det3 48 x 48, det4 five 24 x 24 patches stacked on channels)",
               "layout": "N x C x W x H: the image TRANSPOSED (the nets were trained from MATLAB)",
               "channels": "RGB", "normalisation": "(pixel - 127.5) * 0.0078125", "mean": 127.5,
               "scale": 0.0078125}


def seeded_inputs(shape, count: int = CHECK_IMAGES) -> np.ndarray:
    """``count`` x ``shape`` seeded uniform inputs in [-1, 1] (the range of the preprocessed pixels)."""
    from .inference import CHECK_SEED
    return np.random.default_rng(CHECK_SEED).uniform(-1, 1, (count, *shape)).astype(np.float32)


def compare(model, net, batch: np.ndarray, outputs: Sequence[str], chunk: int = CHECK_CHUNK) -> dict:
    """``{blob: max |onnxruntime - pycaffe| / max |pycaffe|}`` over ``batch`` (run in chunks;
    :func:`mtdnn.inference.difference`), for ``model`` in ONNX Runtime and the pycaffe ``net``."""
    from .inference import _caffe_forward, difference
    sess = session(model)
    last = {top: layer for layer, tops in net.top_names.items() for top in tops}  # in-place: the last one
    end = max(list(net._layer_names).index(last[b]) for b in outputs)
    got, want = {b: [] for b in outputs}, {b: [] for b in outputs}
    for k in range(0, len(batch), chunk):
        x = np.ascontiguousarray(batch[k:k + chunk], np.float32)
        for b, v in _caffe_forward(net, x, outputs, end).items():
            want[b].append(v)
        for b, v in zip(outputs, sess.run(list(outputs), {net.inputs[0]: x})):
            if v.shape != want[b][-1].shape:
                raise ExportError(f"blob {b}: ONNX Runtime gives shape {v.shape}, pycaffe {want[b][-1].shape}")
            got[b].append(v)
    return {b: difference(np.concatenate(got[b]), np.concatenate(want[b])) for b in outputs}


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies below it (a run folder's own files), else absolute."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def export(deploy, weights, out, *, outputs=None, check_inputs=None, output_info: dict | None = None,
           input_info: dict | None = None, source: dict | None = None, opset: int = OPSET) -> dict:
    """Convert ``deploy`` + ``weights`` to ONNX, check it through ONNX Runtime against pycaffe
    and, when every output is within :data:`mtdnn.inference.RTOL`, write ``out`` and its card
    (:func:`card_path`) atomically; returns the card. A larger difference raises
    :class:`ExportError` and writes nothing.

    ``outputs``: the blobs the graph gives, or a function of the net's blob names that picks
    them (default: the net's final outputs). ``check_inputs``: a function of the input shape
    (C, H, W) giving (preprocessed N x C x H x W batch, what it is) or None, for which the check
    uses :data:`CHECK_IMAGES` seeded uniform inputs. The card describes the input (:func:`face_input`
    for 112 x 96 face nets, ``input_info``), each output (``output_info``) and the ``source``."""
    from .fileio import atomic_write_bytes, atomic_write_json, sha256_file
    from .inference import RTOL
    deploy, weights, out = Path(deploy), Path(weights), Path(out)
    for path in (deploy, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found")
    net = _caffe_net(deploy, weights)
    if callable(outputs):
        outputs = outputs(list(net.blobs))
    model = convert(deploy, net=net, outputs=outputs, opset=opset)
    outputs = [o.name for o in model.graph.output]
    in_shape = tuple(net.blobs[net.inputs[0]].data.shape[1:])
    given = check_inputs(in_shape) if check_inputs else None
    batch, check_source = given if given else (seeded_inputs(in_shape), None)
    diffs = compare(model, net, batch, outputs)
    bad = {b: d for b, d in diffs.items() if not d <= RTOL}
    if bad:
        raise ExportError("the ONNX model differs from pycaffe beyond the bound " + ", ".join(
            f"{b} {d:.1e}" for b, d in bad.items()) + f" (bound {RTOL:.0e}); nothing written. This is a "
            f"conversion fault: please report it with the deploy prototxt")
    dims = lambda vi: [d.dim_param or d.dim_value or None for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    described = {
        "input": {"name": net.inputs[0], "shape": dims(model.graph.input[0]),
                  **(face_input(in_shape) or input_info or {})},
        "outputs": {o.name: {"shape": dims(o), **(output_info or {}).get(o.name, {})} for o in model.graph.output}}
    # The model carries how to feed it too, for whoever gets the .onnx without its card.
    _onnx().helper.set_model_props(model, {f"mtdnn.{k}": json.dumps(v) for k, v in described.items()})
    data = model.SerializeToString()
    card = {
        "format": CARD_FORMAT, "version": CARD_VERSION,
        "onnx": {"file": out.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                 "opset": opset, "ir_version": model.ir_version, "producer": PRODUCER, **versions()},
        "source": {"deploy": {"file": _relative(deploy, out.parent), "sha256": sha256_file(deploy)},
                   "weights": {"file": _relative(weights, out.parent), "sha256": sha256_file(weights)},
                   **(source or {})},
        **described,
        "check": {"what": check_source or f"{len(batch)} seeded uniform inputs in [-1, 1]",
                  "inputs": len(batch), "engine": f"onnxruntime {versions()['onnxruntime']} (CPU)",
                  "rule": "per output blob: max |onnxruntime - pycaffe| / max |pycaffe| over the inputs",
                  "bound": RTOL, "max_difference": {b: float(f"{d:.3g}") for b, d in diffs.items()}},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    atomic_write_json(card_path(out), card)
    return card
