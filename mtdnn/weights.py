"""Check a ``.caffemodel`` against the net it is loaded into, in Python, before Caffe sees it.

Caffe reads weights with ``CHECK`` macros: a file cut short, a layer with another number of
blobs or a blob of another shape ends the process with ``SIGABRT`` (exit 134) and a stack
trace, naming neither the file nor, often, the layer. :func:`check_weights` parses the file
with ``caffe_pb2`` and compares it with the net's learned blobs as Caffe's
``Net::CopyTrainedLayersFrom`` will, and raises :class:`WeightsError` (a ``ValueError``: the
input is wrong, exit status 2) naming the file and the layer:

- the file does not parse, or a blob holds fewer values than its shape (cut short);
- a layer of the net with learned blobs has no layer of that name in the file (Caffe would
  keep its random fillers without a word: features of an untrained layer);
- a layer holds another number of blobs, or a blob of another shape, than the net's.

Layers of the file that the net does not have are ignored, as Caffe does (a training net's
classifier when the deploy stops at ``fc5``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class WeightsError(ValueError):
    """A ``.caffemodel`` that cannot be loaded into the net; the message names file and layer."""


def blob_dims(blob) -> list[int]:
    """A ``BlobProto``'s shape: ``shape.dim``, or the legacy num, channels, height, width."""
    if blob.HasField("shape"):
        return list(blob.shape.dim)
    if _legacy(blob):
        return [blob.num, blob.channels, blob.height, blob.width]
    return []  # a 0-axis blob (one value, e.g. a channel-shared PReLU slope): Caffe writes no shape


def _legacy(blob) -> bool:
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def parse_weights(path):
    """The ``NetParameter`` of a ``.caffemodel``; :class:`WeightsError` when it does not parse."""
    from google.protobuf.message import DecodeError

    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(Path(path).read_bytes())
    except (DecodeError, RuntimeError, ValueError) as e:
        raise WeightsError(f"{path}: does not parse as a Caffe model ({type(e).__name__}: cut short, or not a "
                           f".caffemodel?)") from None
    return net


def weights_layers(net) -> dict:
    """``{layer name: [BlobProto, ...]}`` of a parsed model (new-style and V1 layers)."""
    return {layer.name: list(layer.blobs) for layer in list(net.layer) + list(net.layers) if len(layer.blobs)}


def incomplete_blob(net, need_blobs: bool = True) -> str | None:
    """Why the blobs of a parsed model are not whole (None: they are): a blob with fewer values
    than its shape (a file cut short at a blob boundary still parses), or, with ``need_blobs``
    (a net that learns something), no blob at all."""
    layers = weights_layers(net)
    for name, blobs in layers.items():
        for blob in blobs:
            n, want = len(blob.data) + len(blob.double_data), int(np.prod(blob_dims(blob)))
            if n != want:
                return f"layer {name!r} holds {n} of its {want} values (cut short)"
    if not layers and need_blobs:
        return "holds no learned parameters (cut short?)"
    return None


def _fits(net_shape, blob) -> bool:
    """Caffe's ``Blob::ShapeEquals``: legacy 4-D dims compare with the shape padded by ones."""
    shape = list(net_shape)
    if _legacy(blob):
        return len(shape) <= 4 and [1] * (4 - len(shape)) + shape == blob_dims(blob)
    return shape == list(blob.shape.dim)


def check_weights(weights, net_params: dict, net_name: str = "the net", required=None) -> None:
    """Raise :class:`WeightsError` unless ``weights`` loads into a net whose learned blobs are
    ``net_params`` (``{layer name: [shape, ...]}``, e.g. from pycaffe's ``net.params``).
    ``required``: the layers the weights must hold (default: all of ``net_params``); a layer
    left out may be missing (it keeps its filler values: e.g. the attribute head when only fc5
    is asked of a pre-training snapshot), but where the weights hold it, its shapes must fit
    (Caffe copies every layer it finds by name and aborts on a mismatch)."""
    weights = Path(weights)
    if not weights.is_file():
        raise WeightsError(f"{weights}: not found")
    net = parse_weights(weights)
    problem = incomplete_blob(net, need_blobs=bool(net_params))
    if problem:
        raise WeightsError(f"{weights}: {problem}")
    have = weights_layers(net)
    missing = [name for name in net_params if name not in have and (required is None or name in required)]
    if missing:
        raise WeightsError(f"{weights} has no weights for {len(missing)} layer(s) of {net_name}, e.g. "
                           f"{', '.join(repr(m) for m in missing[:3])}: they would keep random filler values. "
                           f"Are these the weights of this net (same model, width, layer names)?")
    for name, shapes in net_params.items():
        if name not in have:
            continue
        blobs = have[name]
        if len(blobs) != len(shapes):
            raise WeightsError(f"{weights}: layer {name!r} holds {len(blobs)} blob(s), {net_name} has {len(shapes)}: "
                               f"weights of another net?")
        for j, (shape, blob) in enumerate(zip(shapes, blobs)):
            if not _fits(shape, blob):
                raise WeightsError(f"{weights}: layer {name!r} blob {j} has shape {blob_dims(blob)}, {net_name} "
                                   f"expects {list(shape)}: weights of another net (model, width, classes or "
                                   f"input size)?")


def layers_feeding(top_names: dict, bottom_names: dict, outputs) -> set:
    """The layers whose results reach the blobs ``outputs``, from pycaffe's ``net.top_names`` /
    ``net.bottom_names`` (layer name -> blob names, in the net's order)."""
    wanted, layers = set(outputs), set()
    for name in reversed(list(top_names)):
        if wanted & set(top_names[name]):
            layers.add(name)
            wanted |= set(bottom_names.get(name, ()))
    return layers

