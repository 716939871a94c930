"""The record order of a training database, and the check that an LMDB / HDF5 pair follows it.

``tools/build_db.py`` writes, per split, an image LMDB (Caffe ``Datum`` records keyed
``%08d_<image path>``), an HDF5 attribute file whose rows are the same images in the same
order (with ``paths`` and ``labels`` datasets beside ``attributes``) and a manifest JSON:

    {"format": "mtdnn-db-manifest/1", "split": "train", "count": N,
     "lmdb": "train_lmdb", "hdf5": "train_attributes.h5" | null, "encoding": "raw",
     "image_shape": [112, 96, 3], "identities": [name of label 0, ...],
     "attribute_names": [...], "paths": [...], "labels": [...],
     "order_sha256": sha256 of the lines "path<TAB>label\\n" in record order,
     "attributes_sha256": sha256 of the N x M float32 matrix | null, "build": {...}}

:func:`verify` checks the pair against its manifest (counts, order, labels, attribute values)
and raises :class:`ManifestError` naming the first bad record. The split planning used by the
builder (dropping small identities, one held-out image per identity, seeded shuffling) is here
too, as pure functions.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

FORMAT = "mtdnn-db-manifest/1"


class ManifestError(ValueError):
    """A database does not match its manifest (or the manifest is malformed)."""


# --------------------------------------------------------------------------- checksums

def order_checksum(paths: Sequence[str], labels: Sequence[int]) -> str:
    """sha256 of the record order: ``path<TAB>label\\n`` per record."""
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    h = hashlib.sha256()
    for path, label in zip(paths, labels):
        h.update(f"{path}\t{int(label)}\n".encode("utf-8"))
    return h.hexdigest()


def attributes_checksum(attributes: np.ndarray) -> str:
    """sha256 of an attribute matrix as C-ordered float32 (shape included)."""
    a = np.ascontiguousarray(np.asarray(attributes, dtype=np.float32))
    return hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest()


# --------------------------------------------------------------------------- split planning

def drop_small_identities(identities: Sequence[str], min_images: int) -> np.ndarray:
    """Boolean mask of the records whose identity has at least ``min_images`` images."""
    identities = np.asarray(identities)
    names, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
    return counts[inverse] >= min_images


def holdout(labels: Sequence[int], per_identity: int = 1, seed: int = 0, eligible=None) -> np.ndarray:
    """Boolean mask of validation records: ``per_identity`` images of every identity, drawn
    with a seeded generator, and only from identities that keep at least one training image
    (an identity with a single image stays in training: the paper holds out "one image of
    every identity" to validate identities it trains on). ``eligible``: a boolean mask of the
    records that may be held out (default all); an identity with too few eligible records
    keeps them all in training."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    if per_identity <= 0:
        return val
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        candidates = group if eligible is None else group[np.asarray(eligible)[group]]
        if len(group) > per_identity and len(candidates) >= per_identity:
            val[rng.choice(candidates, per_identity, replace=False)] = True
    return val


def shuffled(indices: np.ndarray, seed: int) -> np.ndarray:
    """``indices`` in a seeded random order (a different stream from :func:`holdout`'s)."""
    return np.asarray(indices)[np.random.default_rng([seed, 1]).permutation(len(indices))]


# --------------------------------------------------------------------------- manifest files

def make_manifest(split: str, paths: Sequence[str], labels: Sequence[int], identities: Sequence[str],
                  lmdb: str, hdf5: str | None, encoding: str, image_shape, attribute_names=(),
                  attributes: np.ndarray | None = None, build: dict | None = None) -> dict:
    """The manifest dictionary of one split (see the module docstring)."""
    labels = [int(l) for l in labels]
    return {
        "format": FORMAT, "split": split, "count": len(paths), "lmdb": lmdb, "hdf5": hdf5,
        "encoding": encoding, "image_shape": list(image_shape),
        "num_identities": len(identities), "identities": list(identities),
        "attribute_names": list(attribute_names),
        "order_sha256": order_checksum(paths, labels),
        "attributes_sha256": None if attributes is None else attributes_checksum(attributes),
        "build": build or {}, "paths": list(paths), "labels": labels,
    }


def write_manifest(path, manifest: dict) -> None:
    """Write a manifest atomically (temporary file, then rename)."""
    from .fileio import atomic_write_json
    atomic_write_json(path, manifest, indent=1)


def read_manifest(path) -> dict:
    """Read and sanity-check a manifest; raises ManifestError naming the file."""
    from .fileio import read_json
    path = Path(path)
    m = read_json(path, ManifestError, missing="manifest not found")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError(f"{path}: not an {FORMAT} manifest")
    missing = [k for k in ("count", "lmdb", "paths", "labels", "identities", "order_sha256") if k not in m]
    if missing:
        raise ManifestError(f"{path}: missing field(s) {missing}")
    if not len(m["paths"]) == len(m["labels"]) == m["count"]:
        raise ManifestError(f"{path}: count {m['count']} but {len(m['paths'])} paths and {len(m['labels'])} labels")
    if order_checksum(m["paths"], m["labels"]) != m["order_sha256"]:
        raise ManifestError(f"{path}: its paths/labels do not match its own order_sha256 (edited or corrupt)")
    return m


# --------------------------------------------------------------------------- verification

def _record(m: dict, i: int) -> str:
    return f"record {i} ({m['paths'][i]!r})" if i < len(m["paths"]) else f"record {i}"


def verify(manifest_path, lmdb_path=None, hdf5_path=None, progress=None, check_hdf5: bool = True) -> dict:
    """Check an LMDB (and its HDF5, if the manifest names one) against a manifest.

    Checks: equal counts; LMDB key ``%08d_<path>`` and label of every record equal the
    manifest's, in order (so the order checksum recomputed from the LMDB matches); every
    record decodes to the manifest's ``image_shape``; labels in ``[0, num_identities)``;
    every HDF5 dataset has one row per record, ``paths`` / ``labels`` rows equal,
    ``attributes`` N x M with M attribute names and the manifest's checksum; the HDF5Data list
    file beside it (``<hdf5>.txt``) names exactly that file, inside the database (a copied or
    moved database must not read another one's rows). ``check_hdf5=False`` checks the LMDB
    side only. Raises ManifestError naming the first bad record; returns a summary dict.
    ``progress`` wraps the record iterator (e.g. tqdm).
    """
    from . import db

    manifest_path = Path(manifest_path)
    m = read_manifest(manifest_path)
    base = manifest_path.parent
    lmdb_path = Path(lmdb_path) if lmdb_path else base / m["lmdb"]
    n_ids = len(m["identities"])
    for i, label in enumerate(m["labels"]):
        if not 0 <= label < n_ids:
            raise ManifestError(f"{manifest_path}: {_record(m, i)}: label {label} outside [0, {n_ids})")

    if not lmdb_path.is_dir():
        raise ManifestError(f"{lmdb_path}: LMDB not found")
    count = db.lmdb_count(lmdb_path)
    if count != m["count"]:
        raise ManifestError(f"{lmdb_path}: {count} records, manifest says {m['count']}")
    shape = tuple(m["image_shape"]) if m.get("image_shape") else None
    records = db.read_lmdb_records(lmdb_path)
    if progress is not None:
        records = progress(records, total=count)
    paths, labels = [], []
    for i, (key, label, got_shape) in enumerate(records):
        index, _, name = key.partition("_")
        if index != f"{i:08d}":
            raise ManifestError(f"{lmdb_path}: {_record(m, i)}: key {key!r} out of order")
        if name != m["paths"][i]:
            raise ManifestError(f"{lmdb_path}: {_record(m, i)}: the LMDB holds {name!r} here")
        if label != m["labels"][i]:
            raise ManifestError(f"{lmdb_path}: {_record(m, i)}: label {label}, manifest says {m['labels'][i]}")
        if not 0 <= label < n_ids:
            raise ManifestError(f"{lmdb_path}: {_record(m, i)}: label {label} outside [0, {n_ids})")
        if got_shape is None:
            raise ManifestError(f"{lmdb_path}: {_record(m, i)}: the image cannot be decoded (damaged record)")
        if shape is not None and got_shape != shape:
            raise ManifestError(f"{lmdb_path}: {_record(m, i)}: image of shape {list(got_shape)}, "
                                f"manifest says {list(shape)} (Caffe needs one shape)")
        paths.append(name)
        labels.append(label)
    if order_checksum(paths, labels) != m["order_sha256"]:  # cannot differ after the loop; kept as the contract
        raise ManifestError(f"{lmdb_path}: order checksum differs from the manifest's")

    summary = {"split": m.get("split"), "count": count, "identities": n_ids, "lmdb": str(lmdb_path), "hdf5": None}
    if check_hdf5 and (m.get("hdf5") or hdf5_path):
        summary.update(_verify_hdf5(m, Path(hdf5_path) if hdf5_path else base / m["hdf5"], count))
        if not hdf5_path:
            _verify_source(base, base / (m["hdf5"] + ".txt"), base / m["hdf5"])
    return summary


def _verify_hdf5(m: dict, hdf5_path: Path, count: int) -> dict:
    import h5py

    from . import db
    if not hdf5_path.is_file():
        raise ManifestError(f"{hdf5_path}: HDF5 file not found")
    with h5py.File(hdf5_path, "r") as f:
        if db.ATTRIBUTE_DATASET not in f:
            raise ManifestError(f"{hdf5_path}: no '{db.ATTRIBUTE_DATASET}' dataset")
        for name in f:
            rows = len(f[name]) if isinstance(f[name], h5py.Dataset) and f[name].shape else None
            if rows != count:
                raise ManifestError(f"{hdf5_path}: dataset '{name}' holds {rows} rows, the LMDB {count} records")
        attrs = f[db.ATTRIBUTE_DATASET][...]
        h_paths = [p.decode() if isinstance(p, bytes) else p for p in f["paths"][...]] if "paths" in f else None
        h_labels = f["labels"][...].tolist() if "labels" in f else None
    if attrs.ndim != 2:
        raise ManifestError(f"{hdf5_path}: attributes of shape {attrs.shape}, expected {count} x M")
    names = m.get("attribute_names") or []
    if names and attrs.shape[1] != len(names):
        raise ManifestError(f"{hdf5_path}: {attrs.shape[1]} attribute columns, manifest names {len(names)}")
    for what, rows, expected in (("path", h_paths, m["paths"]), ("label", h_labels, m["labels"])):
        if rows is None:
            raise ManifestError(f"{hdf5_path}: no '{what}s' dataset to check the row order with")
        for i, (got, want) in enumerate(zip(rows, expected)):
            if got != want:
                raise ManifestError(f"{hdf5_path}: {_record(m, i)}: row holds {what} {got!r}")
    bad = np.argwhere(~np.isfinite(attrs))
    if len(bad):
        raise ManifestError(f"{hdf5_path}: {_record(m, int(bad[0][0]))}: non-finite attribute")
    if m.get("attributes_sha256") and attributes_checksum(attrs) != m["attributes_sha256"]:
        raise ManifestError(f"{hdf5_path}: attribute values differ from the manifest's checksum")
    return {"hdf5": str(hdf5_path), "attributes": int(attrs.shape[1])}


def _verify_source(base: Path, source: Path, h5: Path) -> None:
    """The HDF5Data list file must name ``h5`` (this database's own file) and nothing else."""
    from .db import read_source
    fix = (f"rewrite it with the file's own name (echo {h5.name} > {source}; tools/train.py writes "
           f"the run's list files itself) or rebuild the database")
    if not source.is_file():
        raise ManifestError(f"{source}: HDF5Data list file not found; {fix}")
    targets = read_source(source)
    if len(targets) != 1:
        raise ManifestError(f"{source}: names {len(targets)} .h5 files, expected exactly {h5.name}; {fix}")
    target = targets[0]
    if not target.is_file():
        raise ManifestError(f"{source}: names {target}, which does not exist (a moved database?); {fix}")
    if not os.path.samefile(target, h5) or not target.resolve().is_relative_to(base.resolve()):
        raise ManifestError(f"{source}: names {target}, not this database's {h5.name} "
                            f"(a copied database would train on the original's rows); {fix}")


# --------------------------------------------------------------------------- whole databases

STAGING_SUFFIXES = (".partial", ".old")


def build_lock(out) -> Path:
    """The lock file of ``tools/build_db.py`` for the output folder ``out`` (beside it, since
    ``out`` itself is replaced by a rename)."""
    from .fileio import output_lock_path
    return output_lock_path(out)  # the one lock file of every tool's output


def database_problems(folder, check_lock: bool = True) -> list[str]:
    """Problems of a build_db output folder as a whole (not of one split's records): a missing
    manifest of a split that was built (a missing val manifest is one), an LMDB no manifest
    describes. A staged or half-built folder, or one a build is still writing, raises
    ManifestError: nothing in it is worth checking (``check_lock=False``: the caller is
    that build)."""
    from .fileio import lock_held
    folder = Path(folder)
    if folder.name.endswith(STAGING_SUFFIXES):
        raise ManifestError(f"{folder} is a working copy of tools/build_db.py (a build that was interrupted "
                            f"or is still running), not a database: rebuild it, and use the folder without "
                            f"{folder.suffix}")
    if check_lock and lock_held(build_lock(folder)):
        from .fileio import lock_holder
        raise ManifestError(f"{folder}: another run is writing it now ({lock_holder(build_lock(folder))}; "
                            f"{build_lock(folder)} is held); check it when that run has finished")
    problems = []
    if not (folder / "train_manifest.json").is_file():
        problems.append(f"{folder}: no train_manifest.json (not a complete tools/build_db.py database)")
        return problems
    try:
        build = read_manifest(folder / "train_manifest.json").get("build") or {}
    except ManifestError as e:
        return [str(e)]
    splits = build.get("splits") or (["train", "val"] if build.get("val_per_identity", 1) else ["train"])
    for split in splits:
        if not (folder / f"{split}_manifest.json").is_file():
            problems.append(f"{folder}: no {split}_manifest.json, though the database was built with a "
                            f"{split} split: the database is incomplete; rebuild it")
    for lmdb_dir in sorted(folder.glob("*_lmdb")):
        split = lmdb_dir.name[:-len("_lmdb")]
        if not (folder / f"{split}_manifest.json").is_file() and split not in splits:
            problems.append(f"{lmdb_dir}: an LMDB that no manifest describes (tools/train.py would read it)")
    return problems
