"""Feature files: the project's ``.npy`` + names format and the MegaFace devkit ``.bin`` format.

Project format (written by ``tools/extract_features.py``): for an output prefix ``P``,
``P.npy`` holds float32 N x D features, ``P.names.txt`` the N image names (one per line, the
image paths of the input list, escaped as every record file: ``mtdnn/records.py``), ``P.labels.npy`` the labels when the list had them and
``P.meta.json`` how they were made.

Devkit format: one file per image, ``<name><suffix>.bin``: four int32 (rows = D, cols = 1,
stride = 4, type = 5 i.e. OpenCV's CV_32F) then D float32, little-endian.

Every reader checks what it reads and raises ``ValueError`` naming the file and the problem.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

BIN_HEADER = np.dtype("<i4")
CV_32F = 5


# ---------------------------------------------------------------------------- project format
def feature_paths(prefix) -> dict:
    """The files of a feature set named by its prefix (``P`` or ``P.npy``)."""
    prefix = str(prefix)
    if prefix.endswith(".npy"):
        prefix = prefix[:-4]
    if prefix.endswith(("/", os.sep)) or Path(prefix).name in ("", ".", "..") or Path(prefix).is_dir():
        # 'DIR/' would be the hidden files DIR/.npy, DIR/.names.txt, ...
        raise ValueError(f"{prefix!r} is a folder, not a feature prefix: the files are PREFIX.npy, PREFIX.names.txt, "
                         f"...; give a prefix inside it, e.g. {os.path.join(prefix, 'lfw_fc5')}")
    return {"features": Path(prefix + ".npy"), "names": Path(prefix + ".names.txt"),
            "labels": Path(prefix + ".labels.npy"), "meta": Path(prefix + ".meta.json")}


# One name per line, escaped as every record file (mtdnn/records.py), written atomically.
from mtdnn.records import read_names, write_names  # noqa: E402,F401


def load_features(prefix, *, dim: int | None = None, mmap: bool = False):
    """Read a feature set written by ``extract_features``.

    Returns ``(features, names, labels)``; ``labels`` is None when the set has none.
    Raises ValueError when the names do not match the rows, or ``dim`` is given and differs.
    """
    p = feature_paths(prefix)
    for key in ("features", "names"):
        if not p[key].exists():
            raise FileNotFoundError(f"{p[key]} does not exist (feature set {prefix})")
    x = np.load(p["features"], mmap_mode="r" if mmap else None)
    if x.ndim != 2:
        raise ValueError(f"{p['features']}: expected a 2-D N x D array, got shape {x.shape}")
    names = read_names(p["names"])
    if len(names) != x.shape[0]:
        raise ValueError(f"{p['features']} has {x.shape[0]} rows but {p['names']} "
                         f"has {len(names)} names")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{p['features']}: features of dimension {x.shape[1]}, expected {dim}")
    labels = np.load(p["labels"]) if p["labels"].exists() else None
    if labels is not None and len(labels) != len(names):
        raise ValueError(f"{p['labels']} has {len(labels)} labels for {len(names)} names")
    return x, names, labels


def load_meta(prefix) -> dict:
    p = feature_paths(prefix)["meta"]
    return json.loads(p.read_text()) if p.exists() else {}


# ---------------------------------------------------------------------------- provenance
# What must agree between feature sets that an evaluator compares with each other (probes
# against distractors): the settings that extract_features records in ``P.meta.json``.
MAKING = (("weights_sha256", "model weights (sha256)"), ("deploy_sha256", "deploy net (sha256)"),
          ("blob", "blob"), ("mirror", "mirror mode"), ("l2norm", "L2 normalisation"),
          ("dim", "dimension"))


def feature_making(prefix) -> dict | None:
    """How a feature set was made (:data:`MAKING` from its ``meta.json``, plus the
    preprocessing and input size), or None for a set without one (a devkit ``.bin`` folder, a
    set written by another program)."""
    if Path(prefix).is_dir():
        return None
    meta = load_meta(prefix)
    if not meta:
        return None
    s = meta.get("settings", {})
    out = {k: s[k] for k, _ in MAKING if k in s}  # what an older meta does not record is not compared
    out.update({k: meta[k] for k in ("preprocess", "input_size") if k in meta})
    return out


def check_same_making(sets: dict, *, accept: bool = False, log=None) -> list[str]:
    """Refuse feature sets made differently: ``sets`` is ``{role: prefix}`` (e.g. probes and
    distractors); every pair is compared on what their ``meta.json`` records (:data:`MAKING`,
    preprocessing, input size). Features of two models, of two blobs, with and without mirror
    images or normalisation can have the same dimension and still be compared without any
    error: a wrong figure. Raises ValueError naming the sets and what differs, unless
    ``accept``: then every difference is printed (``log``, default stderr) and returned, for the
    result to record. Sets without a ``meta.json`` cannot be checked: that is said too. Sets
    extracted without weights (Caffe's random fillers, drawn anew on every load) never match."""
    import sys
    log = log or (lambda m: print(m, file=sys.stderr))
    labels = dict(MAKING, preprocess="preprocessing", input_size="input size")
    made = {role: feature_making(prefix) for role, prefix in sets.items()}
    notes = [f"{role} {sets[role]}: no meta.json, so how it was made (model, blob, mirror, normalisation) "
             f"is not checked" for role, m in made.items() if m is None]
    known = [(role, m) for role, m in made.items() if m is not None]
    problems = []
    for role, m in known:
        if "weights_sha256" in m and m["weights_sha256"] is None:
            problems.append(f"{role} {sets[role]} was extracted without --weights (random filler weights, "
                            f"other ones on every run)")
    for (ra, a), (rb, b) in zip(known, known[1:]):
        diff = [f"{labels[k]}: {a[k]!r} vs {b[k]!r}" for k in labels if k in a and k in b and a[k] != b[k]]
        if diff:
            problems.append(f"{ra} {sets[ra]} and {rb} {sets[rb]} were made differently ({'; '.join(diff)})")
    for note in notes:
        log(f"warning: {note}")
    if problems and not accept:
        raise ValueError("; ".join(problems) + ": extract every set with the same net, weights, blob, --mirror "
                         "and --l2norm (--accept-mismatch compares them anyway, and says so in the result)")
    for p in problems:
        log(f"warning: --accept-mismatch: {p}")
    return problems


def check_distinct_sets(prefixes: dict) -> None:
    """Refuse one feature set given twice (``{role: prefix}``): the same file, or a copy of its
    features under another name (same size and sha256): its rows would count twice."""
    from mtdnn.fileio import sha256_file
    files = {role: Path(prefix) if Path(prefix).is_dir() else feature_paths(prefix)["features"]
             for role, prefix in prefixes.items()}
    files = {role: p for role, p in files.items() if p.exists()}
    roles = list(files)
    for i, a in enumerate(roles):
        for b in roles[i + 1:]:
            pa, pb = files[a], files[b]
            if pa.resolve() == pb.resolve():
                how = "is"
            elif pa.is_file() and pb.is_file() and pa.stat().st_size == pb.stat().st_size \
                    and sha256_file(pa) == sha256_file(pb):
                how = "holds the same features as"
            else:
                continue
            raise ValueError(f"{b} {prefixes[b]} {how} {a} {prefixes[a]}: its images would count twice; "
                             f"give every feature set once")


# ---------------------------------------------------------------------------- checks
def check_features(x, source: str = "features", *, first_row: int = 0,
                   names: Sequence[str] | None = None) -> np.ndarray:
    """``x`` as a C-contiguous float32 2-D array; ValueError on NaN/inf rows or zero-norm rows.

    A zero or non-finite feature has no direction, so no similarity can rank it: it is an
    error rather than a silent zero score. ``first_row`` offsets the row numbers in messages;
    ``names`` (one per row of ``x``) adds the first bad row's name.
    """
    def where(rows):
        return f"first row {rows[0] + first_row}" + (f" ({names[rows[0]]})" if names is not None else "")

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D N x D array, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{source}: {len(rows)} feature row(s) hold NaN or inf, {where(rows)}")
    zero = ~(np.abs(x) > 0).any(axis=1)
    if zero.any():
        rows = np.flatnonzero(zero)
        raise ValueError(f"{source}: {len(rows)} feature row(s) have zero norm, {where(rows)}")
    return x


def l2_normalize(x, source: str = "features", *, first_row: int = 0) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32), after ``check_features``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        check_features(x, source, first_row=first_row)
    # one pass: a NaN or inf makes the (float64) norm non-finite, a zero row a zero norm;
    # check_features names the first bad row then
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    if not (np.isfinite(norms).all() and norms.all()):
        check_features(x, source, first_row=first_row)
    return x / norms.astype(np.float32)[:, None]


# ---------------------------------------------------------------------------- names
def image_key(name: str) -> str:
    """The key an image is matched by across lists: its file name without folders or
    extension (``Aaron_Eckhart/Aaron_Eckhart_0001.jpg`` -> ``Aaron_Eckhart_0001``).
    LFW, BLUFR and CelebA name every image uniquely this way."""
    return PurePosixPath(name.replace("\\", "/")).stem


def name_index(names: Sequence[str], source: str = "names", key=image_key) -> dict:
    """``{key(name): row}``; ValueError naming a duplicate key."""
    index: dict = {}
    for row, name in enumerate(names):
        k = key(name)
        if k in index:
            raise ValueError(f"{source}: image {k!r} appears twice (rows {index[k]} and {row})")
        index[k] = row
    return index


def lookup(index: dict, keys: Sequence[str], source: str = "features") -> np.ndarray:
    """Rows of ``keys`` in ``index``; ValueError naming the unknown ones."""
    missing = [k for k in keys if k not in index]
    if missing:
        raise ValueError(f"{source}: {len(missing)} image(s) not found, e.g. "
                         f"{', '.join(missing[:5])}")
    return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))


# ---------------------------------------------------------------------------- devkit .bin
def bin_path(root, name: str, suffix: str) -> Path:
    """Where the devkit expects the feature of image ``name``: ``root/<name><suffix>.bin``
    (``suffix`` may or may not already end in ``.bin``)."""
    if not suffix.endswith(".bin"):
        suffix += ".bin"
    return Path(root) / (name + suffix)


def write_bin(path, feature) -> None:
    """Write one feature vector in the devkit's format (creating folders)."""
    v = np.ascontiguousarray(feature, dtype="<f4").ravel()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(np.array([v.size, 1, 4, CV_32F], dtype=BIN_HEADER).tobytes())
        f.write(v.tobytes())


def read_bin(path, dim: int | None = None) -> np.ndarray:
    """One devkit feature vector; ValueError naming the file on a bad header, size or dim."""
    raw = Path(path).read_bytes()
    if len(raw) < 16:
        raise ValueError(f"{path}: {len(raw)} bytes, shorter than the 16-byte header")
    rows, cols, stride, typ = np.frombuffer(raw[:16], dtype=BIN_HEADER)
    if cols != 1 or stride != 4 or typ != CV_32F or rows <= 0:
        raise ValueError(f"{path}: header rows={rows} cols={cols} stride={stride} type={typ}, "
                         f"expected cols=1 stride=4 type={CV_32F} (CV_32F)")
    if len(raw) != 16 + 4 * rows:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {16 + 4 * rows} for {rows} floats")
    if dim is not None and rows != dim:
        raise ValueError(f"{path}: feature of dimension {rows}, expected {dim}")
    return np.frombuffer(raw[16:], dtype="<f4").astype(np.float32)


def read_bin_features(root, names: Sequence[str], suffix: str, *, progress: bool = True,
                      desc: str = "read .bin") -> np.ndarray:
    """Stack the devkit features of ``names`` (N x D float32); all must have the same D."""
    from tqdm import tqdm
    out = None
    for i, name in enumerate(tqdm(names, desc=desc, unit="file", disable=not progress)):
        p = bin_path(root, name, suffix)
        if not p.exists():
            raise FileNotFoundError(f"{p}: feature file of {name!r} not found")
        v = read_bin(p, None if out is None else out.shape[1])
        if out is None:
            out = np.empty((len(names), v.size), dtype=np.float32)
        out[i] = v
    if out is None:
        raise ValueError(f"no feature names given for {root}")
    return out


def devkit_name(path: str) -> str:
    """An image path as the devkit's lists and the feature sets are matched on: ``/`` folders,
    no leading ``./``."""
    return path.replace("\\", "/").removeprefix("./")


def load_feature_set(src, names: Sequence[str] | None, suffix: str, what: str, progress: bool = True):
    """The features of ``names`` (or of the whole set when None) from a project feature prefix
    or a folder of devkit ``.bin`` files (``<name><suffix>.bin``; it needs ``names``), in the
    order of ``names``: (features, names, labels or None). A name twice in the set is an error
    (its image would count twice), as is a name the set lacks."""
    if Path(src).is_dir():
        if names is None:
            raise ValueError(f"{src} is a folder of .bin files: give the {what} list too")
        return read_bin_features(src, names, suffix, progress=progress, desc=f"{what} .bin"), names, None
    feats, fnames, labels = load_features(src, mmap=True)
    index = name_index(fnames, f"{src}.names.txt", key=devkit_name)
    if names is None:
        return feats, fnames, labels
    rows = lookup(index, [devkit_name(n) for n in names], f"{what} features {src}")
    if np.all(rows == np.arange(len(fnames))):
        return feats, names, None
    return np.asarray(feats[rows]), names, None
