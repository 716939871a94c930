"""Readers for the face datasets the project uses, in the formats of their distributions.

Each reader returns plain Python data (lists of :class:`Sample`, numpy arrays) and raises
:class:`DatasetError` naming the file and the 1-based line for malformed input.

| dataset | reader | layout |
|---|---|---|
| CASIA-WebFace | :func:`read_casia_webface`, :func:`read_identity_folders` | ``root/<identity>/<image>`` (a folder per identity); a cleaning list (:mod:`mtdnn.clean_list`) |
| CelebA | :func:`read_celeba_attributes`, :func:`read_celeba_identities`, :func:`read_celeba_partition`, :func:`read_celeba_landmarks`, :func:`celeba_samples` | ``img_align_celeba/``, ``list_attr_celeba.txt``, ``identity_CelebA.txt``, ``list_eval_partition.txt``, ``list_landmarks_align_celeba.txt`` |
| LFW | :func:`read_lfw_people`, :func:`lfw_people_samples`, :func:`read_lfw_pairs` | ``people*.txt`` (View 1 and View 2), ``pairs*.txt``, ``<name>/<name>_%04d.jpg`` |
| FaceScrub / MegaFace | :func:`read_megaface_list`, :func:`read_megaface_meta` | devkit template lists (JSON with ``path`` and optional ``id``), one ``<image>.json`` per image |
| any | :func:`read_image_list`, :func:`write_image_list` | ``path label`` per line |
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .fileio import read_json
from .images import scan_images
from .records import escape_field, read_lines, record_line, unescape_field, write_lines


class DatasetError(ValueError):
    """Malformed dataset input; the message names the file (and line)."""


@dataclass(frozen=True)
class Sample:
    """One image: ``path`` relative to its dataset root (``/`` separators) and its identity."""
    path: str
    identity: str


def _where(path, line_no=None) -> str:
    return f"{path}, line {line_no}" if line_no is not None else str(path)


def _lines(path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers (:func:`mtdnn.records.read_lines`:
    split at ``\\n`` only; bytes that are not UTF-8 kept as ``os.fsdecode`` gives them)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    return read_lines(path)


def _int(token: str, path, line_no, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DatasetError(f"{_where(path, line_no)}: {what} must be an integer, got {token!r}") from None


# --------------------------------------------------------------------------- labels

def identity_names(samples: Iterable[Sample]) -> list[str]:
    """The sorted distinct identities (numerically when all are integers): label k is the
    k-th name."""
    names = {s.identity for s in samples}
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def assign_labels(samples: Sequence[Sample], names: Sequence[str] | None = None) -> np.ndarray:
    """Integer label of every sample: its identity's index in ``names`` (default
    :func:`identity_names`)."""
    names = identity_names(samples) if names is None else names
    index = {n: i for i, n in enumerate(names)}
    try:
        return np.array([index[s.identity] for s in samples], dtype=np.int64)
    except KeyError as e:
        raise DatasetError(f"identity {e.args[0]!r} is not in the identity list") from None


def check_unique(samples: Sequence[Sample], source) -> None:
    """Raise DatasetError naming the first path that occurs twice."""
    seen = {}
    for i, s in enumerate(samples):
        if s.path in seen:
            raise DatasetError(f"{source}: duplicate path {s.path!r} (records {seen[s.path] + 1} and {i + 1})")
        seen[s.path] = i


def missing_files(samples: Iterable[Sample], root) -> list[str]:
    """Paths of the samples that do not exist below ``root``."""
    root = Path(root)
    return [s.path for s in samples if not (root / s.path).is_file()]


# --------------------------------------------------------------------------- folders, lists

def _say(message: str) -> None:
    print(message, file=sys.stderr)


def list_images(root, report=_say) -> list[str]:
    """All images below ``root`` by the one tree scan (:func:`mtdnn.images.scan_images`: its
    rule for links and hidden entries), as sorted relative ``/`` paths; a broken link or
    unreadable file is listed too (it becomes a missing or failed image, never a silent gap).
    ``report`` gets one line naming what was skipped (default: printed to stderr); an
    unreadable folder raises."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    scan = scan_images(root)
    folders = [f"{escape_field(rel)}: {why}" for rel, why in scan.unreadable_folders]
    if folders:
        raise DatasetError(f"{root}: cannot read {'; '.join(folders)}: fix the permissions or move it out of the tree")
    if not scan.paths:
        raise DatasetError(f"{root}: no images found" + (f" ({scan.summary()})" if scan.summary() else ""))
    if scan.not_images and report is not None:
        shown = ", ".join(f"{escape_field(rel)} ({why})" for rel, why in scan.not_images[:5])
        report(f"note: {root}: {len(scan.not_images)} entr{'y' if len(scan.not_images) == 1 else 'ies'} "
               f"skipped ({scan.skipped_kinds()}): {shown}" + (", ..." if len(scan.not_images) > 5 else ""))
    return sorted(scan.paths + [rel for rel, _ in scan.problems])


def read_identity_folders(root, report=_say) -> list[Sample]:
    """A folder-per-identity tree (CASIA-WebFace, LFW, an aligned tree): the identity of an
    image is its top-level folder (found by :func:`list_images`; ``report`` as there). Raises
    DatasetError when there are no images or images sit directly in ``root``."""
    paths = list_images(root, report)
    loose = [p for p in paths if "/" not in p]
    if loose:
        raise DatasetError(f"{root}: {len(loose)} image(s) outside any identity folder, e.g. {loose[0]!r}")
    return [Sample(p, p.split("/", 1)[0]) for p in paths]


def read_casia_webface(root, clean_list=None) -> list[Sample]:
    """CASIA-WebFace (``root/<identity>/<image>``); with ``clean_list`` (a cleaning list,
    :mod:`mtdnn.clean_list`) only the listed images present in ``root``, in tree order. The
    paper cleans CASIA-WebFace with such a list before detection (Sec. 4.5)."""
    samples = read_identity_folders(root)
    if clean_list is None:
        return samples
    from .clean_list import apply_clean_list, read_clean_list
    kept = apply_clean_list(samples, read_clean_list(clean_list)).kept
    if not kept:
        raise DatasetError(f"{clean_list}: none of its images is in {root}")
    return kept


def read_image_list(path, root=None) -> list[Sample]:
    """A ``path label`` list (label: any token, usually an integer identity). Paths may contain
    spaces (the label is the last field). With ``root``, every file must exist below it.
    Raises DatasetError naming the line of a malformed entry, a duplicate, or a missing file."""
    samples, seen = [], {}
    for line_no, line in _lines(path):
        if line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DatasetError(f"{_where(path, line_no)}: expected 'path label', got {line!r}")
        rel, label = unescape_field(parts[0]), unescape_field(parts[1])
        if rel in seen:
            raise DatasetError(f"{_where(path, line_no)}: duplicate path {rel!r} (first on line {seen[rel]})")
        seen[rel] = line_no
        samples.append(Sample(rel, label))
    if not samples:
        raise DatasetError(f"{path}: the list is empty")
    if root is not None:
        missing = missing_files(samples, root)
        if missing:
            raise DatasetError(f"{path}: {len(missing)} listed file(s) missing below {root}, "
                               f"first {missing[0]!r} (line {seen[missing[0]]})")
    return samples


def write_image_list(path, samples: Iterable[Sample], labels: Iterable | None = None) -> None:
    """Write ``path label`` lines (labels default to the identities), names escaped
    (:mod:`mtdnn.records`), atomically."""
    samples = list(samples)
    labels = [s.identity for s in samples] if labels is None else list(labels)
    write_lines(path, (record_line(s.path, l, sep=" ") for s, l in zip(samples, labels)))


# --------------------------------------------------------------------------- LFW

def lfw_image_path(name: str, number: int, suffix: str = ".jpg") -> str:
    """``name/name_%04d.jpg``, LFW's file naming."""
    return f"{name}/{name}_{int(number):04d}{suffix}"


def read_lfw_people(path) -> list[list[tuple[str, int]]]:
    """An LFW people file as folds of ``(name, n_images)``.

    View 1 (``peopleDevTrain.txt``): a count line then that many ``name<TAB>n`` lines: one fold.
    View 2 (``people.txt``): a fold-count line, then per fold a count line and its lines.
    """
    lines = _lines(path)
    if not lines:
        raise DatasetError(f"{path}: empty people file")
    entries = []
    for line_no, line in lines:
        parts = line.split()
        if len(parts) == 1:
            entries.append((line_no, None, _int(parts[0], path, line_no, "a count line")))
        elif len(parts) == 2:
            n = _int(parts[1], path, line_no, "the image count")
            if n < 1:
                raise DatasetError(f"{_where(path, line_no)}: image count must be >= 1, got {n}")
            entries.append((line_no, parts[0], n))
        else:
            raise DatasetError(f"{_where(path, line_no)}: expected 'name<TAB>count' or a count, got {line!r}")
    first_no, first_name, first = entries[0]
    if first_name is not None:
        raise DatasetError(f"{_where(path, first_no)}: the first line must be a count")
    body = entries[1:]
    if all(name is not None for _, name, _ in body):  # View 1
        if len(body) != first:
            raise DatasetError(f"{path}: header says {first} people, found {len(body)}")
        return [[(name, n) for _, name, n in body]]
    folds, i = [], 0  # View 2
    for _ in range(first):
        if i >= len(body) or body[i][1] is not None:
            where = _where(path, body[i][0]) if i < len(body) else str(path)
            raise DatasetError(f"{where}: expected the count line of fold {len(folds) + 1}")
        count = body[i][2]
        fold = body[i + 1:i + 1 + count]
        if len(fold) != count or any(name is None for _, name, _ in fold):
            raise DatasetError(f"{_where(path, body[i][0])}: fold {len(folds) + 1} should list {count} people")
        folds.append([(name, n) for _, name, n in fold])
        i += 1 + count
    if i != len(body):
        raise DatasetError(f"{_where(path, body[i][0])}: unexpected line after {first} folds")
    return folds


def lfw_people_samples(path, suffix: str = ".jpg") -> list[Sample]:
    """Every image of every person of an LFW people file (all folds), in file order."""
    return [Sample(lfw_image_path(name, k, suffix), name)
            for fold in read_lfw_people(path) for name, n in fold for k in range(1, n + 1)]


def read_lfw_pairs(path) -> list[list[tuple[str, str, bool]]]:
    """An LFW pairs file as folds of ``(image_a, image_b, same)`` relative paths.

    First line ``folds<TAB>n`` (View 2) or ``n`` (View 1: one fold); each fold has n matched
    (``name i j``) then n mismatched (``name1 i name2 j``) lines. (LFW evaluation itself lives
    in ``mtdnn.evaluation``; this reader serves data preparation and tests.)
    """
    lines = _lines(path)
    if not lines:
        raise DatasetError(f"{path}: empty pairs file")
    head = lines[0][1].split()
    if len(head) == 1:
        n_folds, n = 1, _int(head[0], path, lines[0][0], "the pair count")
    elif len(head) == 2:
        n_folds, n = (_int(t, path, lines[0][0], "the header") for t in head)
    else:
        raise DatasetError(f"{_where(path, lines[0][0])}: expected 'folds<TAB>pairs' or 'pairs'")
    body = lines[1:]
    if len(body) != n_folds * 2 * n:
        raise DatasetError(f"{path}: header says {n_folds} x 2 x {n} pairs, found {len(body)} lines")
    folds = []
    for f in range(n_folds):
        fold = []
        for k, (line_no, line) in enumerate(body[f * 2 * n:(f + 1) * 2 * n]):
            parts = line.split()
            same = k < n
            if same and len(parts) == 3:
                a = lfw_image_path(parts[0], _int(parts[1], path, line_no, "image number"))
                b = lfw_image_path(parts[0], _int(parts[2], path, line_no, "image number"))
            elif not same and len(parts) == 4:
                a = lfw_image_path(parts[0], _int(parts[1], path, line_no, "image number"))
                b = lfw_image_path(parts[2], _int(parts[3], path, line_no, "image number"))
            else:
                kind = "'name i j'" if same else "'name1 i name2 j'"
                raise DatasetError(f"{_where(path, line_no)}: expected a {kind} pair, got {line!r}")
            if a == b or (not same and parts[0] == parts[2]):  # a sure 'same' or a wrong 'mismatched'
                raise DatasetError(f"{_where(path, line_no)}: {line.strip()!r} pairs "
                                   + (f"image {a} with itself" if a == b else f"two images of {parts[0]}")
                                   + ("" if same else " as a mismatched pair") + ": not a pair LFW's protocol has")
            fold.append((a, b, same))
        folds.append(fold)
    return folds


# --------------------------------------------------------------------------- CelebA

@dataclass
class Attributes:
    """An attribute table: ``names`` (M), ``files`` (N) and ``values`` N x M int8 in {-1, 0, 1}."""
    names: list[str]
    files: list[str]
    values: np.ndarray

    def select(self, names: Sequence[str]) -> "Attributes":
        """The same table restricted to (and ordered by) ``names``."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise DatasetError(f"unknown attribute(s) {unknown}; known: {', '.join(self.names)}")
        cols = [self.names.index(n) for n in names]
        return Attributes(list(names), self.files, self.values[:, cols])


def _check_values(values: list[str], path, line_no, m: int) -> list[int]:
    if len(values) != m:
        raise DatasetError(f"{_where(path, line_no)}: expected {m} attribute values, got {len(values)}")
    out = []
    for v in values:
        try:
            x = int(v)
        except ValueError:
            x = None
        if x not in (-1, 0, 1):
            raise DatasetError(f"{_where(path, line_no)}: attribute value {v!r} is not -1, 0 or 1")
        out.append(x)
    return out


def read_celeba_attributes(path) -> Attributes:
    """``list_attr_celeba.txt``: a count line, a header of attribute names, then ``file v1 .. vM``
    with values in {-1, 1} (0 accepted as 'unknown'). Checks the count, the column count of
    every line, the values and duplicate files, naming the line of the first problem."""
    lines = _lines(path)
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and a header line")
    count = _int(lines[0][1], path, lines[0][0], "the first line (image count)")
    names = lines[1][1].split()
    if len(set(names)) != len(names):
        raise DatasetError(f"{_where(path, lines[1][0])}: repeated attribute names in the header")
    files, rows, seen = [], [], {}
    for line_no, line in lines[2:]:
        parts = line.split()
        if parts[0] in seen:
            raise DatasetError(f"{_where(path, line_no)}: duplicate file {parts[0]!r} (first on line {seen[parts[0]]})")
        seen[parts[0]] = line_no
        rows.append(_check_values(parts[1:], path, line_no, len(names)))
        files.append(parts[0])
    if len(files) != count:
        raise DatasetError(f"{path}: the first line says {count} images, found {len(files)}")
    return Attributes(names, files, np.array(rows, dtype=np.int8).reshape(len(files), len(names)))


def _two_column(path, what: str) -> list[tuple[str, int]]:
    out, seen = [], {}
    for line_no, line in _lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{_where(path, line_no)}: expected 'file {what}', got {line!r}")
        if parts[0] in seen:
            raise DatasetError(f"{_where(path, line_no)}: duplicate file {parts[0]!r} (first on line {seen[parts[0]]})")
        seen[parts[0]] = line_no
        out.append((parts[0], _int(parts[1], path, line_no, what)))
    return out


def read_celeba_identities(path) -> dict[str, int]:
    """``identity_CelebA.txt``: ``file identity`` lines -> {file: identity}."""
    return dict(_two_column(path, "identity"))


def read_celeba_partition(path) -> dict[str, int]:
    """``list_eval_partition.txt``: ``file 0|1|2`` (train / val / test) -> {file: split}."""
    out = _two_column(path, "partition")
    for (f, p), (line_no, _) in zip(out, _lines(path)):
        if p not in (0, 1, 2):
            raise DatasetError(f"{_where(path, line_no)}: partition must be 0, 1 or 2, got {p}")
    return dict(out)


def read_celeba_landmarks(path) -> tuple[list[str], np.ndarray]:
    """``list_landmarks_align_celeba.txt``: count, header of 10 names, then ``file`` and 10
    integers (left eye, right eye, nose, left mouth, right mouth, x y each) -> files, N x 5 x 2."""
    lines = _lines(path)
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and a header line")
    count = _int(lines[0][1], path, lines[0][0], "the first line (image count)")
    if len(lines[1][1].split()) != 10:
        raise DatasetError(f"{_where(path, lines[1][0])}: the header should name 10 coordinates")
    files, rows = [], []
    for line_no, line in lines[2:]:
        parts = line.split()
        if len(parts) != 11:
            raise DatasetError(f"{_where(path, line_no)}: expected a file and 10 coordinates, got {len(parts) - 1}")
        files.append(parts[0])
        rows.append([_int(v, path, line_no, "a coordinate") for v in parts[1:]])
    if len(files) != count:
        raise DatasetError(f"{path}: the first line says {count} images, found {len(files)}")
    return files, np.array(rows, dtype=np.float64).reshape(-1, 5, 2)


def celeba_samples(identity_file, partition_file=None, split: int | None = None,
                   image_dir=None) -> list[Sample]:
    """CelebA images with their identities, optionally only one split (0 train, 1 val,
    2 test) and only the files present in ``image_dir``."""
    identities = read_celeba_identities(identity_file)
    files = list(identities)
    if split is not None:
        if partition_file is None:
            raise ValueError("a split needs the partition file")
        part = read_celeba_partition(partition_file)
        files = [f for f in files if part.get(f) == split]
    if image_dir is not None:
        present = {p.name for p in Path(image_dir).iterdir()}
        files = [f for f in files if f in present]
    return [Sample(f, str(identities[f])) for f in files]


# --------------------------------------------------------------------------- MegaFace / FaceScrub

def read_megaface_list(path) -> list[Sample]:
    """A MegaFace devkit template list (``facescrub_features_list.json``,
    ``megaface_features_list.json_<size>_<set>``): JSON ``{"path": [...], "id": [...]}``.
    Without ``id`` the identity is the first folder of the path (FaceScrub's
    ``<name>/<image>``; MegaFace's ``<flickr user>/...``)."""
    path = Path(path)
    data = read_json(path, DatasetError)
    if not isinstance(data, dict) or not isinstance(data.get("path"), list):
        raise DatasetError(f"{path}: expected a JSON object with a 'path' list")
    paths = data["path"]
    ids = data.get("id")
    if ids is not None and (not isinstance(ids, list) or len(ids) != len(paths)):
        raise DatasetError(f"{path}: 'id' must be a list as long as 'path' ({len(paths)})")
    if not all(isinstance(p, str) and p for p in paths):
        raise DatasetError(f"{path}: every 'path' entry must be a non-empty string")
    samples = [Sample(p, str(ids[i]) if ids is not None else p.split("/", 1)[0])
               for i, p in enumerate(paths)]
    check_unique(samples, path)
    return samples


def read_megaface_meta(image_path) -> dict:
    """The per-image JSON beside a MegaFace / FaceScrub devkit image (``<image>.json``):
    ``{"box": (x, y, w, h) or None, "points": K x 2 array or None}`` from its
    ``bounding_box`` {x, y, width, height} and ``landmarks`` {"0": {x, y}, ...}."""
    meta_path = Path(str(image_path) + ".json")
    data = read_json(meta_path, DatasetError)
    box = points = None
    try:
        if "bounding_box" in data:
            b = data["bounding_box"]
            box = tuple(float(b[k]) for k in ("x", "y", "width", "height"))
        if data.get("landmarks"):
            marks = data["landmarks"]
            points = np.array([[float(marks[k]["x"]), float(marks[k]["y"])]
                               for k in sorted(marks, key=int)])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{meta_path}: malformed bounding_box / landmarks ({e!r})") from None
    return {"box": box, "points": points}


# --------------------------------------------------------------------------- attribute matrices

def read_attribute_matrix(path, n_rows: int | None = None, scores: bool = False) -> np.ndarray:
    """Per-image attributes in list order from ``.npy``, ``.h5`` (dataset ``attributes``) or
    ``.txt`` (one line of M values per image, ``#`` comments): N x M float32, every value in
    {-1, 0, 1} (any finite value with ``scores=True``, e.g. classifier outputs to be voted).
    Raises DatasetError naming the file (and line / row) of the first bad value."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    if suffix == ".npy":
        values = np.load(path, allow_pickle=False)
    elif suffix in (".h5", ".hdf5"):
        from .db import read_attribute_hdf5
        values = read_attribute_hdf5(path)
    elif suffix == ".txt":
        rows, m = [], None
        for line_no, line in _lines(path):
            if line.startswith("#"):
                continue
            parts = line.split()
            m = len(parts) if m is None else m
            if scores:
                if len(parts) != m:
                    raise DatasetError(f"{_where(path, line_no)}: expected {m} attribute values, got {len(parts)}")
                try:
                    rows.append([float(v) for v in parts])
                except ValueError:
                    raise DatasetError(f"{_where(path, line_no)}: non-numeric attribute score in {line!r}") from None
            else:
                rows.append(_check_values(parts, path, line_no, m))
        values = np.array(rows, dtype=np.float32).reshape(len(rows), m or 0)
    else:
        raise DatasetError(f"{path}: attributes must be .npy, .h5 or .txt")
    values = np.asarray(values)
    if values.ndim != 2:
        raise DatasetError(f"{path}: attributes must be an N x M matrix, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number):
        raise DatasetError(f"{path}: attributes must be numbers, got {values.dtype}")
    bad = np.argwhere(~np.isfinite(values) if scores else ~np.isin(values, (-1, 0, 1)))
    if len(bad):
        r, c = bad[0]
        what = "is not finite" if scores else "is not -1, 0 or 1"
        raise DatasetError(f"{path}: row {r + 1}, column {c + 1}: value {values[r, c]!r} {what}")
    if n_rows is not None and len(values) != n_rows:
        raise DatasetError(f"{path}: {len(values)} attribute rows for {n_rows} images")
    return values.astype(np.float32)
