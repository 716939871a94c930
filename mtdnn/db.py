"""Caffe training inputs: an image LMDB of ``Datum`` records and the HDF5 attribute file beside it.

Caffe's ``Data`` layer reads the LMDB in key order and its ``HDF5Data`` layer reads the HDF5
rows in order; with neither shuffling and both holding the same records in the same order,
batch k of one is batch k of the other (checked by ``tests/test_caffe_train.py``).
Both writers build their output under a temporary name and rename it into place, so an
interrupted run never leaves something that looks complete.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import h5py
import lmdb
import numpy as np

ATTRIBUTE_DATASET = "attributes"  # the HDF5 dataset name, and so the HDF5Data layer's top blob


def _caffe_pb2():
    from caffe.proto import caffe_pb2  # imported late: only what touches Datum needs pycaffe
    return caffe_pb2


def record_key(index: int) -> bytes:
    """LMDB key of record ``index``: zero-padded, so key order is record order."""
    return b"%08d" % index


ENCODINGS = {False: None, True: ".png", "raw": None, "png": ".png", "jpg": ".jpg"}


def image_to_datum(image: np.ndarray, label: int, encoded=False, jpeg_quality: int = 95) -> bytes:
    """Serialize an HxWx3 uint8 BGR image and its label as a Caffe ``Datum``.

    ``encoded``: ``False`` / ``'raw'`` stores raw CxHxW pixels; ``True`` / ``'png'`` stores PNG
    bytes (lossless); ``'jpg'`` JPEG bytes at ``jpeg_quality`` (lossy). Caffe's Data layer
    decodes encoded records with OpenCV.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {image.dtype} {image.shape}")
    if encoded not in ENCODINGS:
        raise ValueError(f"encoded must be one of {list(ENCODINGS)}, got {encoded!r}")
    datum = _caffe_pb2().Datum()
    datum.label = int(label)
    datum.height, datum.width, datum.channels = image.shape
    suffix = ENCODINGS[encoded]
    if suffix is not None:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix == ".jpg" else []
        ok, buf = cv2.imencode(suffix, image, params)
        if not ok:
            raise ValueError("OpenCV could not encode the image")
        datum.data = buf.tobytes()
        datum.encoded = True
    else:
        datum.data = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    return datum.SerializeToString()


def datum_to_image(raw: bytes) -> tuple[np.ndarray, int]:
    """Inverse of :func:`image_to_datum`: (HxWx3 uint8 BGR image, label)."""
    datum = _caffe_pb2().Datum()
    datum.ParseFromString(raw)
    if datum.encoded:
        image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR)
    else:
        image = np.frombuffer(datum.data, np.uint8).reshape(
            datum.channels, datum.height, datum.width).transpose(1, 2, 0)
    return image, datum.label


def _prepare(path: Path, force: bool) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True (--force) to overwrite it")
    tmp = path.with_name(path.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    return tmp


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)


def write_image_lmdb(path: Path, records: Iterable[tuple], encoded=False,
                     force: bool = False, map_size: int = 1 << 40, commit_every: int = 1000) -> int:
    """Write ``(image, label)`` records to a new LMDB at ``path``; returns the record count.

    A record may carry a third element, its name (e.g. the image path): the key is then
    ``%08d_<name>`` as Caffe's ``convert_imageset`` writes it, so the LMDB itself says which
    image each record is (see :func:`read_lmdb_index`); key order stays record order.
    A failed write (disk full, I/O error) raises :class:`mtdnn.fileio.MachineError`, leaving
    nothing behind.
    """
    path = Path(path)
    tmp = _prepare(path, force)
    count = 0
    env = lmdb.open(str(tmp), map_size=map_size, subdir=True, meminit=False, map_async=True)
    try:
        txn = env.begin(write=True)
        for count, record in enumerate(records, 1):
            image, label = record[0], record[1]
            key = record_key(count - 1)
            if len(record) > 2:
                key += b"_" + str(record[2]).encode("utf-8")
            if len(key) > 511:  # LMDB's default maximum key size
                raise ValueError(f"record {count - 1}: name too long for an LMDB key: {record[2]!r}")
            txn.put(key, image_to_datum(image, label, encoded))
            if count % commit_every == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.commit()
        env.sync()
    except lmdb.Error as e:  # writing failed: the disk is full, the file too large, an I/O error
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)
        from .fileio import MachineError
        raise MachineError(f"{path}: writing the LMDB failed ({e})") from None
    except BaseException:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    env.close()
    _replace(tmp, path)
    return count


def read_image_lmdb(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(image, label)`` in record order."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: no LMDB folder here")
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for _, raw in txn.cursor():
                yield datum_to_image(raw)
    finally:
        env.close()


def lmdb_count(path: Path) -> int:
    """Number of records in the LMDB at ``path``."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def _datums(path: Path):
    """Yield ``(key, Datum)`` of every record in key order (one Datum object, reused)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: no LMDB folder here")
    datum = _caffe_pb2().Datum()
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for key, raw in txn.cursor():
                datum.ParseFromString(raw)
                yield key.decode("utf-8", "replace"), datum
    finally:
        env.close()


def read_lmdb_index(path: Path) -> Iterator[tuple[str, int, bool]]:
    """Yield ``(key, label, encoded)`` of every record in key order without decoding images."""
    for key, datum in _datums(path):
        yield key, datum.label, datum.encoded


def write_attribute_hdf5(path: Path, attributes: np.ndarray, force: bool = False,
                         extra: dict | None = None, relative_source: bool = False) -> Path:
    """Write an N x M attribute matrix as float32 to ``path`` (.h5) and the one-line list
    file that Caffe's ``HDF5Data`` layer takes as ``source`` (``path`` + ``.txt``, returned).

    The list file names the .h5 by its absolute path, or with ``relative_source`` by its bare
    file name: Caffe opens a relative name from its working directory, so such a list is read
    from its own folder (a database stays valid when it is copied or moved; ``tools/train.py``
    writes the run's own list files, see :func:`write_source`).

    ``extra``: more datasets to store beside it, e.g. ``{"paths": [...], "labels": [...]}``
    so the file says which image each row belongs to; ``HDF5Data`` reads only the datasets
    named by its tops, so they cost nothing in training.
    """
    path = Path(path)
    attributes = np.asarray(attributes, dtype=np.float32)
    if attributes.ndim != 2:
        raise ValueError(f"{path}: attributes must be N x M, got shape {attributes.shape}")
    tmp = _prepare(path, force)
    with h5py.File(tmp, "w") as f:
        f.create_dataset(ATTRIBUTE_DATASET, data=attributes)
        for name, values in (extra or {}).items():
            values = list(values) if not isinstance(values, np.ndarray) else values
            if len(values) != len(attributes):
                raise ValueError(f"{path}: extra dataset {name!r} has {len(values)} rows, not {len(attributes)}")
            if len(values) and isinstance(values[0], str):
                f.create_dataset(name, data=values, dtype=h5py.string_dtype("utf-8"))
            else:
                f.create_dataset(name, data=np.asarray(values))
    _replace(tmp, path)
    return write_source(path.with_name(path.name + ".txt"), [path.name if relative_source else path.resolve()])


def write_source(source: Path, h5_files) -> Path:
    """Write an ``HDF5Data`` list file (one .h5 path a line) atomically; returns its path.

    Caffe reads these files word by word (``source_file >> name``): a path with white space
    would be cut into pieces that name no file, and the training would abort in the middle
    (e.g. when fine-tuning starts). Such a path is refused here (ValueError), before Caffe."""
    from .fileio import atomic_write_text
    from .records import caffe_list_problem
    for p in h5_files:  # Caffe reads this file, by its own rules (mtdnn/records.py)
        if caffe_list_problem(str(p)):
            raise ValueError(f"{source}: {caffe_list_problem(str(p))}")
    return atomic_write_text(source, "".join(f"{p}\n" for p in h5_files))


def caffe_readable(path: Path, link: Path) -> str:
    """A name of ``path`` that Caffe reads whole from an ``HDF5Data`` list: its absolute path,
    or where that holds white space, ``link``'s bare name (a symbolic link to it made at
    ``link``; Caffe must run in the folder where ``link`` will be)."""
    name = str(Path(path).resolve())
    if not any(c.isspace() for c in name):
        return name
    if any(c.isspace() for c in link.name):
        raise ValueError(f"{link.name!r}: a link name with white space")
    link.unlink(missing_ok=True)
    link.symlink_to(Path(path).resolve())
    return link.name


def read_source(source: Path) -> list[Path]:
    """The .h5 files an ``HDF5Data`` list file names; relative names are taken from the list's
    own folder (where a database's list file is valid)."""
    source = Path(source)
    from .records import read_lines
    lines = [ln for _, ln in read_lines(source)]
    return [Path(ln) if os.path.isabs(ln) else source.parent / ln for ln in lines]


def read_lmdb_records(path: Path) -> Iterator[tuple[str, int, tuple | None]]:
    """Yield ``(key, label, shape)`` of every record in key order: ``shape`` is the HxWxC of
    the image that Caffe's Data layer will get (encoded records are decoded), or None when the
    record cannot be decoded or its raw pixels do not fill its stated shape."""
    for key, datum in _datums(path):
        if datum.encoded:
            image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR)
            shape = None if image is None else tuple(image.shape)
        else:
            shape = (datum.height, datum.width, datum.channels)
            if len(datum.data) != datum.height * datum.width * datum.channels or not len(datum.data):
                shape = None
        yield key, datum.label, shape


def read_attribute_hdf5(path: Path) -> np.ndarray:
    """The N x M float32 attribute matrix written by :func:`write_attribute_hdf5`."""
    with h5py.File(path, "r") as f:
        if ATTRIBUTE_DATASET not in f:
            raise ValueError(f"{path}: no '{ATTRIBUTE_DATASET}' dataset (found {list(f)})")
        return f[ATTRIBUTE_DATASET][...]
