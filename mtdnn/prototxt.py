"""Reading and rewriting Caffe prototxt files with caffe_pb2 (protobuf text format)."""
from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

DATA_LAYER_TYPES = ("Data", "HDF5Data", "ImageData", "Input")


def _caffe_pb2():
    from caffe.proto import caffe_pb2
    return caffe_pb2


def _read(path: Path, message, what: str):
    try:
        text_format.Merge(Path(path).read_text(), message)
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a valid Caffe {what}: {e}") from None
    return message


def read_net(path: Path):
    """Parse a NetParameter prototxt; a syntax error names the file."""
    return _read(path, _caffe_pb2().NetParameter(), "net")


def read_solver(path: Path):
    """Parse a SolverParameter prototxt; a syntax error names the file."""
    return _read(path, _caffe_pb2().SolverParameter(), "solver")


def write_prototxt(message, path: Path) -> Path:
    """Write a protobuf message as text format."""
    Path(path).write_text(text_format.MessageToString(message))
    return Path(path)


def in_phase(layer, phase: str) -> bool:
    """Whether ``layer`` is in the net of ``phase`` ('TRAIN' or 'TEST'), by its include/exclude rules."""
    pb = _caffe_pb2()
    want = pb.Phase.Value(phase)
    if layer.include:
        return any(not r.HasField("phase") or r.phase == want for r in layer.include)
    return not any(r.HasField("phase") and r.phase == want for r in layer.exclude)


def with_input_layers(net, phase: str, shapes: dict[str, tuple[int, ...]]):
    """The ``phase`` part of ``net`` with its data layers replaced by one ``Input`` layer.

    ``shapes`` maps each data top (e.g. ``data``, ``label``, ``attributes``) to its shape.
    Used to time or inspect a train_val net without its LMDB/HDF5 sources; Caffe fills
    Input blobs with zeros, which are valid labels.
    """
    pb = _caffe_pb2()
    layers = [layer for layer in net.layer if in_phase(layer, phase)]
    data_tops = list(dict.fromkeys(t for l in layers if l.type in DATA_LAYER_TYPES for t in l.top))
    missing = [t for t in data_tops if t not in shapes]
    if missing:
        raise ValueError(f"no shape given for data blob(s) {missing}")
    out = pb.NetParameter(name=net.name)
    inp = out.layer.add(name="input", type="Input", top=data_tops)
    for top in data_tops:
        inp.input_param.shape.add(dim=list(shapes[top]))
    for layer in layers:
        if layer.type not in DATA_LAYER_TYPES:
            kept = out.layer.add()
            kept.CopyFrom(layer)
            del kept.include[:]
            del kept.exclude[:]
    return out
