"""Inference on a Caffe deploy net with one of three engines, on the CPU or a GPU.

    >>> net = load("models/full/deploy.prototxt", "w.caffemodel", outputs=["fc5"])  # engine "auto"
    >>> net.engine                                    # 'onnxruntime' or 'opencv' (verified) or 'caffe'
    >>> feats = net.forward(batch)["fc5"]             # batch: N x C x H x W float32

Engines:

- ``caffe``: pycaffe, the reference (and the only training engine). CPU or GPU (``gpu=N``).
- ``opencv``: OpenCV's DNN module reading the same prototxt and caffemodel
  (``cv2.dnn.readNetFromCaffe``), CPU only: the pip wheel has no CUDA backend. On this
  project's nets it runs the forward pass 2-4x faster than pycaffe on the CPU
  (``bench/bench_engines.py``).
- ``onnxruntime``: ONNX Runtime (CPU) on the net converted to ONNX in memory by
  :mod:`mtdnn.onnx_export` (the graph ``tools/export_onnx.py`` writes). On this project's
  nets it is the fastest of the three on the CPU (``bench/bench_engines.py``).
- ``auto`` (the default): the first of :data:`AUTO_ORDER` (ONNX Runtime, then OpenCV: the
  faster first) that reads the net and passes the check below, else ``caffe``; always
  ``caffe`` on a GPU and for nets without weights (only Caffe draws its fillers).

**Verified for the net.** :func:`load` with ``opencv`` or ``onnxruntime`` also loads the net
in pycaffe and runs one small seeded batch (uniform in [-1, 1], the range of the preprocessed
pixels) through both; every requested output must agree within :data:`RTOL`
(:func:`difference`). A layer the engine cannot read, a failing forward or a larger
difference makes :func:`load` fall back (``auto``: to the next engine, at last pycaffe) and
say why on stderr: never silently different numbers. ``net.engine`` and
``net.note`` tell what was chosen.

**Checked at export instead.** Where ``tools/export_onnx.py --run`` has recorded a checked ONNX
export of the same files (``exported=``, :mod:`mtdnn.exported`; the check ran on real crops
against pycaffe then), ``onnxruntime`` (and ``auto`` where pycaffe cannot be imported) opens it
without importing pycaffe, once the SHA-256s of the ONNX file, deploy and weights match the
record; otherwise :class:`StaleExport`, naming the command that rewrites it.

**GPU.** ``gpu=N`` runs pycaffe on GPU N. A Caffe built without CUDA cannot (it would abort
inside Caffe): :func:`use_device` raises :class:`GpuUnavailable` first, with the command that
builds the GPU one. :func:`caffe_has_cuda` tells which build is installed.
"""
from __future__ import annotations

import os
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .caffe.cuda import caffe_has_cuda  # the one CUDA probe (also used by name: inference.caffe_has_cuda)

ENGINES = ("auto", "caffe", "opencv", "onnxruntime")
# What ``auto`` tries on the CPU, in this order, before pycaffe: the faster engine first.
# Measured with bench/bench_engines.py (interleaved, ratios): ONNX Runtime ahead of OpenCV on
# the Full- and Fast-Model (2.2x and 2.0x at batch 40) and on MTCNN's R-Net, O-Net and det4;
# MTCNN's P-Net, many small calls, is the exception (mtdnn.mtcnn.AUTO_ORDERS).
AUTO_ORDER = ("onnxruntime", "opencv")
ENGINE_NAMES = {"caffe": "pycaffe", "opencv": "OpenCV", "onnxruntime": "ONNX Runtime"}

# The bound of the engine check (and of tests/test_inference.py): for every output blob,
# max |opencv - caffe| <= RTOL * max |caffe| over the batch. Why 2e-4: both engines compute
# the same float32 arithmetic in different orders (OpenCV packs its own GEMM and Winograd
# 3x3 convolutions, folds BatchNorm + Scale into the convolution weights, fuses PReLU).
# float32's unit roundoff is 6e-8; a dot product of length K reordered moves by about
# sqrt(K) * 6e-8 (4e-6 for this project's largest K = 512 * 9) and at worst K * 6e-8
# (2.8e-4); these errors add up over the depth of the net. Measured here on real LFW crops:
# 1.5e-6 on the Full- and Fast-Model (random weights, fc5), 2e-5 on MTCNN's P-Net, <= 2e-6
# on R-, O-Net and det4; issue 13 measured 5e-5 on a trained Full-Model. ONNX Runtime does
# the same kind of reordering (its own GEMM, BatchNorm folded into the convolutions, NCHWc
# blocked layouts), so the same bound applies; measured on the same inputs: 1.2e-6 (fc5) and
# 2e-6 (attr_pred) on the Full- and Fast-Model, <= 1.8e-6 on MTCNN's four nets; on 200 LFW
# crops (tools/export_onnx.py) 9.2e-7 (fc5) and 5.4e-7 (attr_pred) on the demo's trained
# Fast-Model (OpenCV: 9.0e-7, 6.3e-7), 6.8e-7 on its trained MOON net. 2e-4 leaves 4x
# room above the largest of these, and it stays far below what a layer computed differently
# gives (a misread BatchNorm epsilon, PReLU slope, pooling rounding or weight layout moves
# outputs by 1e-2 and more of their scale).
RTOL = 2e-4
CHECK_BATCH = 2
CHECK_SEED = 0
GPU_BUILD_HINT = ("this Caffe was built without CUDA (CPU only); build the GPU one with "
                  "`CAFFE_GPU=1 make setup`, or leave out --gpu to run on the CPU")


class EngineError(ValueError):
    """A request the installed engines cannot serve (bad engine name, OpenCV on a GPU, ...)."""


class GpuUnavailable(EngineError):
    """A GPU was asked of a Caffe built without CUDA."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _import_caffe():
    os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe's first import
    import caffe
    return caffe


# --------------------------------------------------------------------------- devices

def require_gpu_build(gpu: int | None) -> None:
    """Raise :class:`GpuUnavailable` when ``gpu`` is set and Caffe has no CUDA."""
    if gpu is None:
        return
    if gpu < 0:
        raise EngineError(f"--gpu {gpu}: a GPU id is a number >= 0")
    if not caffe_has_cuda():
        raise GpuUnavailable(f"--gpu {gpu}: {GPU_BUILD_HINT}")


def use_device(gpu: int | None) -> None:
    """Put pycaffe on the CPU (``None``) or on GPU ``gpu`` (refused for a CPU-only Caffe)."""
    caffe = _import_caffe()
    require_gpu_build(gpu)
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_mode_gpu()
        caffe.set_device(gpu)


def check_request(engine: str, gpu: int | None, weights: bool = True) -> None:
    """Raise :class:`EngineError` for a request no installed engine can serve (a tool calls
    this before its real work): an unknown engine, OpenCV on a GPU or without weights, a GPU
    of a CPU-only Caffe."""
    if engine not in ENGINES:
        raise EngineError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if gpu is not None and engine == "opencv":
        raise EngineError("--engine opencv runs on the CPU only (OpenCV's pip wheel has no CUDA "
                          "backend); use --engine caffe (the default with --gpu) or leave out --gpu")
    if gpu is not None and engine == "onnxruntime":
        raise EngineError("--engine onnxruntime runs on the CPU only (the onnxruntime wheel has no CUDA "
                          "provider); use --engine caffe (the default with --gpu) or leave out --gpu")
    if not weights and engine in ("opencv", "onnxruntime"):
        raise EngineError(f"--engine {engine} needs weights (a caffemodel): only Caffe draws its fillers")
    if engine == "onnxruntime":
        from . import onnx_export
        missing = onnx_export.available()
        if missing:
            raise EngineError(f"--engine onnxruntime: {missing}; or use --engine auto")
    require_gpu_build(gpu)


def save_random_weights(deploy, out, seed: int = 1) -> Path:
    """Save seeded weights of ``deploy`` to ``out`` (tests and benchmarks: engine equality
    and speed do not depend on training): Caffe's fillers, plus BatchNorm statistics and
    Scale factors and biases that are not the identity, so every parameter matters."""
    caffe = _import_caffe()
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    net = caffe.Net(str(deploy), caffe.TEST)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            shape = layer.blobs[0].data.shape
            layer.blobs[0].data[...] = rng.normal(0, 0.1, shape)
            layer.blobs[1].data[...] = rng.uniform(0.5, 2, shape)
            layer.blobs[2].data[...] = 1
        elif layer.type == "Scale":
            layer.blobs[0].data[...] = rng.uniform(0.8, 1.2, layer.blobs[0].data.shape)
            if len(layer.blobs) > 1:
                layer.blobs[1].data[...] = rng.normal(0, 0.1, layer.blobs[1].data.shape)
    net.save(str(out))
    return Path(out)


def add_arguments(parser, subject: str = "the net") -> None:
    """The tools' --engine and --gpu options (checked by :func:`mtdnn.cli.check_engine`)."""
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help=f"inference engine of {subject}: onnxruntime or opencv (CPU, checked against pycaffe "
                             f"on load), caffe, or auto (default: onnxruntime, else opencv, whichever passes its "
                             f"check first, else caffe; caffe with --gpu)")
    parser.add_argument("--gpu", type=int, help=f"run {subject} with pycaffe on this GPU (needs a GPU build "
                                                f"of Caffe: CAFFE_GPU=1 make setup)")


# --------------------------------------------------------------------------- the net

def difference(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref|: the scale-relative difference the engine check bounds."""
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = float(np.abs(np.asarray(got, np.float64) - ref).max()) if ref.size else 0.0
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))


class Net:
    """A deploy net ready for inference; build it with :func:`load`.

    ``engine``: 'caffe', 'opencv' or 'onnxruntime'; ``note``: why (the check's largest difference, or the
    reason for falling back); ``input_shape``: C x H x W of the deploy's input;
    ``outputs``: the blobs :meth:`forward` returns by default.
    """

    def __init__(self, deploy: Path, input_name: str, shapes: dict, last_writer: dict,
                 outputs: Sequence[str], caffe_net=None, layers: Sequence[str] = ()):
        self._caffe, self.deploy, self.input_name = caffe_net, Path(deploy), input_name
        self.input_shape = tuple(shapes[input_name])
        self._shapes, self._last_writer, self._layers = dict(shapes), dict(last_writer), list(layers)
        self.outputs = tuple(outputs)
        for name in self.outputs:
            self.blob_shape(name)
        self.engine, self.note = "caffe", ""
        # OpenCV re-plans a net for every new input shape (tens of ms for MTCNN's R-Net):
        # up to max_shapes nets of the same files are kept, one per input shape.
        self.max_shapes, self._weights, self._cv = 1, None, OrderedDict()
        self._ort = None  # the ONNX Runtime session (engine 'onnxruntime')

    @classmethod
    def of_caffe(cls, caffe_net, deploy: Path, outputs: Sequence[str] | None) -> "Net":
        """The net of a pycaffe net (engine 'caffe' until a check moves it)."""
        last_writer = {}
        for layer, tops in caffe_net.top_names.items():
            for top in tops:
                last_writer[top] = layer  # in-place BN / Scale / PReLU: the last one wins
        shapes = {name: tuple(b.data.shape[1:]) for name, b in caffe_net.blobs.items()}
        return cls(deploy, caffe_net.inputs[0], shapes, last_writer, outputs or caffe_net.outputs,
                   caffe_net, caffe_net._layer_names)

    @classmethod
    def of_session(cls, sess, deploy: Path, outputs: Sequence[str] | None, note: str) -> "Net":
        """The net of an ONNX Runtime session of a checked export (no pycaffe); dimensions the
        graph leaves free (batch, P-Net's height and width) are None."""
        dims = lambda shape: tuple(d if isinstance(d, int) else None for d in shape[1:])  # noqa: E731
        inp = sess.get_inputs()[0]
        shapes = {inp.name: dims(inp.shape), **{o.name: dims(o.shape) for o in sess.get_outputs()}}
        net = cls(deploy, inp.name, shapes, {o.name: o.name for o in sess.get_outputs()},
                  outputs or [o.name for o in sess.get_outputs()])
        net.engine, net.note, net._ort = "onnxruntime", note, sess
        return net

    def blob_shape(self, name: str) -> tuple:
        """Shape of blob ``name`` per input (without the batch axis) at the deploy's input size."""
        if name not in self._shapes:
            raise KeyError(f"the net has no blob {name!r}; blobs: {', '.join(self._shapes)}")
        if name not in self._last_writer:
            raise KeyError(f"blob {name!r} is an input, not computed by a layer")
        return self._shapes[name]

    def forward(self, batch: np.ndarray, blobs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run an N x C x H x W float32 batch; ``{blob: N x ... float32 array}`` (own copies)."""
        blobs = tuple(blobs) if blobs else self.outputs
        for name in blobs:
            self.blob_shape(name)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.engine != "caffe":
            missing = [b for b in blobs if b not in self.outputs]
            if missing:
                raise KeyError(f"blob(s) {', '.join(missing)} were not checked on the "
                               f"{ENGINE_NAMES[self.engine]} engine; "
                               f"load the net with outputs={list(self.outputs) + missing}")
        if self.engine == "onnxruntime":
            return dict(zip(blobs, self._ort.run(list(blobs), {self.input_name: batch})))
        if self.engine == "opencv":
            cv_net = self._opencv_for(batch.shape)
            cv_net.setInput(batch)
            return dict(zip(blobs, cv_net.forward([self._last_writer[b] for b in blobs])))
        return _caffe_forward(self._caffe, batch, blobs,
                              max(self._layers.index(self._last_writer[b]) for b in blobs))

    def _opencv_for(self, shape) -> "cv2.dnn.Net":
        """The OpenCV net planned for ``shape``: a kept one, a new one while fewer than
        max_shapes are kept, else the least recently used one (which re-plans)."""
        cv_net = self._cv.pop(shape, None)
        if cv_net is None:
            if len(self._cv) < self.max_shapes:
                cv_net = _read_opencv(self.deploy, self._weights)
            else:
                cv_net = self._cv.pop(next(iter(self._cv)))
        self._cv[shape] = cv_net
        return cv_net

    def caffe_net(self):
        """The pycaffe net (Caffe engine only), e.g. to save its weights."""
        if self._caffe is None:
            raise EngineError(f"the {ENGINE_NAMES[self.engine]} engine keeps no pycaffe net")
        return self._caffe


def _caffe_forward(net, batch: np.ndarray, blobs, end: int) -> dict[str, np.ndarray]:
    name = net.inputs[0]
    if net.blobs[name].data.shape != batch.shape:
        net.blobs[name].reshape(*batch.shape)
        net.reshape()
    net.blobs[name].data[...] = batch
    net.forward(end=net._layer_names[end])
    return {b: np.array(net.blobs[b].data, dtype=np.float32) for b in blobs}


def load(deploy, weights=None, *, engine: str = "auto", gpu: int | None = None,
         outputs: Sequence[str] | None = None, check_shape: Sequence[int] | None = None,
         max_shapes: int = 1, log: Callable[[str], None] = _stderr,
         auto_order: Sequence[str] = AUTO_ORDER, exported=None) -> Net:
    """A :class:`Net` of ``deploy`` (+ ``weights``; omitted: pycaffe's fillers) on ``engine``.

    ``outputs``: the blobs to return and to check (default: the net's final outputs).
    ``check_shape``: N x C x H x W of the engine check's batch (default: CHECK_BATCH of the
    deploy's input). ``gpu``: pycaffe on that GPU (engine 'caffe'). An OpenCV or ONNX Runtime
    net that fails the check falls back (``auto``: to the next engine of :data:`AUTO_ORDER`,
    at last to pycaffe); ``log`` says why. ``max_shapes``: OpenCV nets kept
    planned for that many input shapes (memory: one copy of the weights each; for small
    nets fed batches of changing shapes, like MTCNN's). ``auto_order``: the engines ``auto``
    tries, the fastest for this net first (default :data:`AUTO_ORDER`).

    ``exported``: the checked ONNX export of these files (:class:`mtdnn.exported.Exported`,
    recorded by ``tools/export_onnx.py``). Engine 'onnxruntime', and 'auto' where pycaffe
    cannot be imported, open it without pycaffe once its SHA-256s match the files (a stale
    one raises :class:`StaleExport`); without one, pycaffe is needed and a missing pycaffe is an
    :class:`EngineError` naming the command that writes the export.
    """
    check_request(engine, gpu, weights is not None)
    deploy = Path(deploy)
    for path in (deploy, weights):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: not found")
    if _from_export(engine, gpu, weights, exported):
        return _open_exported(deploy, Path(weights), exported, outputs)
    caffe = _import_caffe_for(engine, deploy, exported)
    use_device(gpu)
    net = _reference(caffe, deploy, weights, outputs)
    net.max_shapes = max(1, max_shapes)
    if engine == "caffe" or (engine == "auto" and (gpu is not None or weights is None)):
        net.note = "pycaffe " + ("on GPU %d" % gpu if gpu is not None else "on the CPU")
        return net
    shape = tuple(check_shape) if check_shape else (CHECK_BATCH, *net.input_shape)
    return _check_engines(net, Path(weights), shape, tuple(auto_order) if engine == "auto" else (engine,), log)


class StaleExport(EngineError):
    """A recorded ONNX export that no longer matches its Caffe files (or its check's bound)."""


def caffe_missing() -> str | None:
    """None when pycaffe can be imported, else why not."""
    try:
        _import_caffe()
    except ImportError as e:
        return str(e) or type(e).__name__
    return None


def _from_export(engine: str, gpu, weights, exported) -> bool:
    """Whether :func:`load` opens the recorded export: 'onnxruntime' with one recorded, 'auto'
    with one recorded where pycaffe cannot be imported (always on the CPU, with weights)."""
    if gpu is not None or weights is None or exported is None or exported.onnx is None:
        return False
    return engine == "onnxruntime" or (engine == "auto" and caffe_missing() is not None)


def _import_caffe_for(engine: str, deploy: Path, exported):
    """pycaffe, or an :class:`EngineError` saying what to run where it cannot be imported."""
    why = caffe_missing()
    if why is None:
        return _import_caffe()
    if exported is not None and engine in ("auto", "onnxruntime"):
        raise EngineError(f"{deploy}: pycaffe cannot be imported ({why}) and no checked ONNX export of this net "
                          f"is recorded: run `{exported.command}` once where pycaffe is installed (make setup); "
                          f"then engine 'onnxruntime' (or 'auto') runs it without pycaffe")
    hint = f", or run `{exported.command}` where it is and use engine 'onnxruntime'" if exported is not None else ""
    what = ("the caffe engine is pycaffe" if engine == "caffe" else
            f"the {engine} engine is checked against pycaffe when the net is loaded")
    raise EngineError(f"{deploy}: {what}, and pycaffe cannot be imported ({why}): install it with "
                      f"`make setup`{hint}")


def _reference(caffe, deploy: Path, weights, outputs) -> Net:
    """The pycaffe net of ``deploy`` with ``weights`` checked against it first."""
    from .prototxt import read_net
    from .weights import check_weights, layers_feeding
    read_net(deploy)  # a syntax error named here, not Caffe's abort
    ref = caffe.Net(str(deploy), caffe.TEST)
    if weights is not None:  # checked against the net in Python first: Caffe aborts on a mismatch
        needed = layers_feeding(ref.top_names, ref.bottom_names, outputs or ref.outputs)
        check_weights(weights, {name: [b.data.shape for b in blobs] for name, blobs in ref.params.items()},
                      f"the net {deploy}", required=needed)
        ref.copy_from(str(weights))
    return Net.of_caffe(ref, deploy, outputs)


def _check_engines(net: Net, weights: Path, shape, tries: tuple, log) -> Net:
    """Move ``net`` to the first engine of ``tries`` that passes the check against pycaffe
    (else it stays on pycaffe); ``net.note`` and ``log`` say what happened."""
    deploy = net.deploy
    for k, name in enumerate(tries):
        then = f"trying {ENGINE_NAMES[tries[k + 1]]}" if k + 1 < len(tries) else "running pycaffe"
        try:
            worst = _CHECKED[name](net, weights, shape)
        except _Mismatch as e:
            net.note = f"{ENGINE_NAMES[name]} not used for {deploy.name}: {e}; {then}"
            log(f"inference: {net.note}")
            continue
        net.engine, net._caffe = name, None
        net.note = (f"{'OpenCV DNN' if name == 'opencv' else ENGINE_NAMES[name]}, checked against pycaffe: "
                    f"max difference {worst:.1e} (bound {RTOL:.0e})")
        return net
    return net


def _open_exported(deploy: Path, weights: Path, exp, outputs) -> Net:
    """The :class:`Net` of the checked export ``exp`` in ONNX Runtime, without pycaffe."""
    from . import exported as ex, onnx_export
    why = ex.stale_reason(exp, deploy, weights, outputs)
    if why:
        raise StaleExport(f"{deploy}: its ONNX export cannot be used: {why}; rerun `{exp.command}` "
                          f"(it converts the net again and checks it against pycaffe)")
    check = exp.record["check"]
    note = (f"ONNX Runtime on {exp.onnx.name}, checked against pycaffe at export on {check.get('what')}: "
            f"max difference {max(check['max_difference'].values()):.1e} (bound {RTOL:.0e})")
    return Net.of_session(onnx_export.session(exp.onnx), deploy, outputs, note)


class _Mismatch(Exception):
    pass


def _cv_reason(e) -> str:
    """The readable part of a cv2.error: 'Can't create layer "x" of type "Embed" ...'."""
    text = " ".join(str(e).split())
    m = re.search(r"error: \([^)]*\) (.*)", text)
    return m.group(1) if m else text


def _read_opencv(deploy: Path, weights: Path):
    import cv2
    cv_net = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return cv_net


def _check_batch(net: Net, shape) -> tuple[np.ndarray, dict]:
    """The check's seeded batch and pycaffe's outputs for it (the net is still on Caffe)."""
    x = np.random.default_rng(CHECK_SEED).uniform(-1, 1, shape).astype(np.float32)
    return x, net.forward(x)


def _compare(engine: str, got: dict, want: dict) -> float:
    """The largest difference over the outputs; raises _Mismatch past :data:`RTOL`."""
    worst = 0.0
    for name, ref in want.items():
        if got[name].shape != ref.shape:
            raise _Mismatch(f"blob {name}: {ENGINE_NAMES[engine]} gives shape {got[name].shape}, "
                            f"pycaffe {ref.shape}")
        d = difference(got[name], ref)
        if not d <= RTOL:
            raise _Mismatch(f"blob {name} differs from pycaffe's by {d:.1e} of its scale (bound {RTOL:.0e})")
        worst = max(worst, d)
    return worst


def _checked_opencv(net: Net, weights: Path, shape) -> float:
    """Put ``net`` on OpenCV after the check (its largest difference); raises _Mismatch with the reason."""
    import cv2
    try:
        cv_net = _read_opencv(net.deploy, weights)
    except cv2.error as e:
        raise _Mismatch(f"OpenCV cannot read it ({_cv_reason(e)})") from None
    x, want = _check_batch(net, shape)
    try:
        cv_net.setInput(x)
        got = dict(zip(net.outputs, cv_net.forward([net._last_writer[b] for b in net.outputs])))
    except cv2.error as e:
        raise _Mismatch(f"OpenCV cannot run it ({_cv_reason(e)})") from None
    worst = _compare("opencv", got, want)
    net._weights = weights
    net._cv[tuple(shape)] = cv_net
    return worst


def _checked_onnxruntime(net: Net, weights: Path, shape) -> float:
    """Put ``net`` on ONNX Runtime after the check (its largest difference); raises _Mismatch
    with the reason: onnx/onnxruntime missing, a layer without conversion, a failing forward."""
    from . import onnx_export
    missing = onnx_export.available()
    if missing:
        raise _Mismatch(missing)
    try:
        model = onnx_export.convert(net.deploy, net=net._caffe, outputs=net.outputs)
    except onnx_export.UnsupportedLayer as e:
        raise _Mismatch(f"cannot convert it to ONNX ({e})") from None
    x, want = _check_batch(net, shape)
    try:
        sess = onnx_export.session(model)
        got = dict(zip(net.outputs, sess.run(list(net.outputs), {net.input_name: x})))
    except Exception as e:  # onnxruntime's own error types (Fail, InvalidGraph, RuntimeException, ...)
        if type(e).__module__.split(".")[0] != "onnxruntime":
            raise
        raise _Mismatch(f"ONNX Runtime cannot run it ({' '.join(str(e).split())[:300]})") from None
    worst = _compare("onnxruntime", got, want)
    net._ort = sess
    return worst


_CHECKED = {"opencv": _checked_opencv, "onnxruntime": _checked_onnxruntime}
