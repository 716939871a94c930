"""MOON's domain-adaptive re-weighting (Rudd et al., ECCV 2016) and the CelebA training data.

Re-weighting, exactly as implemented (``tests/test_moon.py`` checks a hand-computed case).
For attribute j let ``p_j`` be the fraction of positives among the training (source) samples
whose label is known, and ``t_j`` the wanted (target) positive fraction. MOON weights the
squared error of a positive sample by ``t_j / p_j`` and of a negative one by
``(1 - t_j) / (1 - p_j)``, so that the weighted source looks like the target; both are then
divided by the larger of the two, so the larger weight is 1 (as in MOON: the class that the
source under-represents keeps weight 1, the other is down-weighted)::

    w+_j = (t_j / p_j) / max(t_j / p_j, (1 - t_j) / (1 - p_j))
    w-_j = ((1 - t_j) / (1 - p_j)) / max(...)

A sample whose label is unknown (0) gets weight 0. The loss is
``sum_ij w_ij (pred_ij - target_ij)^2 / (2N)``; the net gets ``sqrt(w)`` (HDF5 dataset
``attr_weight``) and multiplies both prediction and target by it (``mtdnn.netgen.moon``).

Target distributions (:func:`target_rates`): ``balanced`` (t = 0.5: MOON's choice for balanced
accuracy), ``source`` (t = p: every weight 1, the plain Euclidean loss), explicit rates
``Name=0.3,...`` or ``0.1,0.2,...`` (one per attribute), or a JSON file ``{"Name": rate}``: the
positive rates of the dataset to be labelled when they are known or estimated.

CelebA data: :func:`celeba_table` reads the attribute, identity and partition files (through
``mtdnn.datasets``) and checks them against each other; :func:`split_by_identity` holds out
whole identities (the 10,000 images here are all in CelebA's train partition; an identity in
both halves would leak); :func:`write_moon_hdf5` writes the targets and weights.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from . import datasets

TARGET_DATASET, WEIGHT_DATASET = "attr_target", "attr_weight"


class MoonError(ValueError):
    """Bad input to the MOON data preparation; the message names the problem."""


# --------------------------------------------------------------------------- re-weighting

def positive_rates(labels) -> np.ndarray:
    """Per column, the fraction of +1 among the known (non-zero) labels of an N x M matrix
    in {-1, 0, +1}. Raises MoonError when a column has no known label."""
    labels = np.asarray(labels)
    known = (labels != 0).sum(axis=0)
    if labels.ndim != 2 or (known == 0).any():
        raise MoonError(f"every attribute needs known labels; known per column: {known.tolist()}")
    return (labels == 1).sum(axis=0) / known


def class_weights(source, target) -> tuple[np.ndarray, np.ndarray]:
    """MOON's (w+, w-) per attribute for source positive rates ``source`` and target rates
    ``target`` (module docstring); the larger of the two is 1."""
    p = np.asarray(source, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise MoonError(f"{p.size} source rates but {t.size} target rates")
    if not ((p > 0) & (p < 1)).all():
        raise MoonError(f"every source rate must lie strictly between 0 and 1 (an attribute needs "
                        f"positive and negative training samples), got {p.tolist()}")
    if not ((t >= 0) & (t <= 1)).all():
        raise MoonError(f"target rates must lie in [0, 1], got {t.tolist()}")
    pos, neg = t / p, (1 - t) / (1 - p)
    top = np.maximum(pos, neg)
    return pos / top, neg / top


def sample_weights(labels, w_pos, w_neg) -> np.ndarray:
    """N x M weights: w+ for +1, w- for -1, 0 for unknown (0) labels."""
    labels = np.asarray(labels)
    return np.where(labels > 0, w_pos, np.where(labels < 0, w_neg, 0.0)).astype(np.float32)


def target_rates(spec, names: Sequence[str], source) -> np.ndarray:
    """Target positive rates from ``spec`` (see the module docstring) for attributes ``names``;
    ``source``: the source rates (for ``source``)."""
    names = list(names)
    source = np.asarray(source, dtype=np.float64)
    spec = str(spec).strip()
    if spec == "balanced":
        return np.full(len(names), 0.5)
    if spec == "source":
        return source.copy()
    if spec.endswith(".json"):
        path = Path(spec)
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise MoonError(f"target distribution {path}: {e}") from None
        if not isinstance(mapping, dict):
            raise MoonError(f"target distribution {path}: expected a JSON object {{name: rate}}")
        items = list(mapping.items())
    elif "=" in spec:
        items = [tuple(part.split("=", 1)) for part in spec.split(",") if part.strip()]
    else:
        values = [v for v in spec.split(",") if v.strip()]
        if len(values) != len(names):
            raise MoonError(f"target distribution {spec!r}: expected 'balanced', 'source', "
                            f"Name=rate pairs, a .json file, or {len(names)} rates (one per attribute)")
        items = list(zip(names, values))
    rates = {}
    for name, value in items:
        name = str(name).strip()
        if name not in names:
            raise MoonError(f"target distribution: {name!r} is not one of the trained attributes "
                            f"({', '.join(names)})")
        try:
            rates[name] = float(value)
        except (TypeError, ValueError):
            raise MoonError(f"target distribution: rate of {name} is not a number: {value!r}") from None
        if not 0 <= rates[name] <= 1:
            raise MoonError(f"target distribution: rate of {name} must lie in [0, 1], got {rates[name]}")
    missing = [n for n in names if n not in rates]
    if missing:
        raise MoonError(f"target distribution: no rate for {', '.join(missing)}")
    return np.array([rates[n] for n in names])


# --------------------------------------------------------------------------- HDF5

def write_moon_hdf5(path, targets, weights, extra: dict | None = None) -> Path:
    """Write ``attr_target`` (N x M float32 targets) and ``attr_weight`` (N x M float32, the
    square root of ``weights``) to ``path``, atomically, and the HDF5Data list file
    ``path + '.txt'`` (absolute path; returned). ``extra``: more per-row datasets (e.g.
    ``paths``: list of str)."""
    path = Path(path)
    targets = np.asarray(targets, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float64)
    if targets.ndim != 2 or targets.shape != weights.shape:
        raise MoonError(f"{path}: targets {targets.shape} and weights {weights.shape} must be one N x M shape")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise MoonError(f"{path}: weights must be finite and >= 0")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        f.create_dataset(TARGET_DATASET, data=targets)
        f.create_dataset(WEIGHT_DATASET, data=np.sqrt(weights).astype(np.float32))
        for name, values in (extra or {}).items():
            if len(values) != len(targets):
                raise MoonError(f"{path}: extra dataset {name!r} has {len(values)} rows, not {len(targets)}")
            if len(values) and isinstance(values[0], str):
                f.create_dataset(name, data=list(values), dtype=h5py.string_dtype("utf-8"))
            else:
                f.create_dataset(name, data=np.asarray(values))
    os.replace(tmp, path)
    from .db import write_source  # refuses a path Caffe would cut at white space
    return write_source(path.with_name(path.name + ".txt"), [path.resolve()])


def read_moon_hdf5(path) -> tuple[np.ndarray, np.ndarray]:
    """(targets, weights) of a file written by :func:`write_moon_hdf5` (weights squared back)."""
    with h5py.File(path, "r") as f:
        return f[TARGET_DATASET][...], f[WEIGHT_DATASET][...].astype(np.float64) ** 2


# --------------------------------------------------------------------------- CelebA

@dataclass
class CelebaTable:
    """CelebA images with attributes ``values`` (N x M in {-1, 0, 1}, columns ``names``),
    ``identities`` (N str) and ``partitions`` (N int, 0/1/2; all 0 when no partition file)."""
    files: list[str]
    names: list[str]
    values: np.ndarray
    identities: np.ndarray
    partitions: np.ndarray


def celeba_table(attr_file, identity_file, names: Sequence[str], partition_file=None) -> CelebaTable:
    """Read CelebA's ``list_attr_celeba.txt`` restricted to ``names`` (which must be in its
    header), with each image's identity from ``identity_CelebA.txt`` and, if given, its split.
    Raises MoonError for an attribute name not in the header, or an image of the attribute
    file without an identity (or split)."""
    try:
        table = datasets.read_celeba_attributes(attr_file)
        unknown = [n for n in names if n not in table.names]
        if unknown:
            raise MoonError(f"{attr_file}: attribute(s) {', '.join(unknown)} not in its header "
                            f"({', '.join(table.names)})")
        table = table.select(list(names))
        ids = datasets.read_celeba_identities(identity_file)
        parts = datasets.read_celeba_partition(partition_file) if partition_file else None
    except datasets.DatasetError as e:
        raise MoonError(str(e)) from None
    for what, mapping, path in (("identity", ids, identity_file), ("partition", parts, partition_file)):
        if mapping is None:
            continue
        missing = [f for f in table.files if f not in mapping]
        if missing:
            raise MoonError(f"{path}: no {what} for {len(missing)} image(s) of {attr_file}, first {missing[0]!r}")
    return CelebaTable(list(table.files), list(table.names), table.values,
                       np.array([str(ids[f]) for f in table.files]),
                       np.array([parts[f] if parts else 0 for f in table.files], dtype=np.int64))


def split_by_identity(identities: Sequence[str], heldout_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out images: whole identities drawn in a seeded random order until
    at least ``heldout_fraction`` of the images are held out (no identity on both sides)."""
    if not 0 < heldout_fraction < 1:
        raise MoonError(f"held-out fraction must lie strictly between 0 and 1, got {heldout_fraction}")
    identities = np.asarray(identities)
    names, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise MoonError("splitting by identity needs at least two identities")
    order = np.random.default_rng(seed).permutation(len(names))
    take = np.cumsum(counts[order]) <= heldout_fraction * len(identities)
    take[0] = True  # at least one identity
    take[-1] = False  # at least one identity left for training
    chosen = np.zeros(len(names), bool)
    chosen[order[take]] = True
    return chosen[inverse]


def check_images(files: Sequence[str], image_dir) -> list[str]:
    """Files of the table that are missing from ``image_dir``."""
    image_dir = Path(image_dir)
    return [f for f in files if not (image_dir / f).is_file()]
