"""CASIA-WebFace cleaning lists: which images of the download training keeps (the paper's Sec. 4.5).

The paper cleans CASIA-WebFace with a published annotation list (its footnote 3,
http://zyb.im/research/mm16.html) before detection and alignment, and ends with "roughly 0.44M
remaining images of 10,575 unique identities" (Sec. 4.5) of the 494,414 images of 10,575 people
it starts from (Sec. 4.1). No copy of that list could be found. The list the field uses is the
cleaned CASIA-WebFace list (``cleaned_list.txt``): one kept image a line, ``<identity>\\<image>
<label>`` with Windows separators, e.g. ``0000045\\001.jpg 0``. It is the list insightface's
``get_dataset_webface`` reads (as ``<root>_clean_list.txt``); it circulates on Baidu Pan with no
stable address or published checksum, so the project cannot fetch it for you (``tools/
fetch_data.py --only casia-clean-list`` says where to put your copy, docs/data.md).

:func:`read_clean_list` reads that format and its relatives: a path alone, ``path label``, and
SphereFace-style landmark lists (``path label x1 y1 ... x5 y5``); ``\\`` or ``/`` separators.
An image's identity is its top folder (as :func:`mtdnn.datasets.read_identity_folders` gives
it), so the kept images keep the labels of the raw tree; a list whose label column gives one
folder two labels is refused (it would merge or split people). :func:`apply_clean_list` and
:func:`step_counts` say how many images and identities each preparation step keeps, beside the
paper's figures (``tools/prepare_casia.py`` prints and writes them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .datasets import DatasetError, Sample, _lines, _where

# The paper's figures: CASIA-WebFace as published (Sec. 4.1) and after cleaning, detection and
# alignment (Sec. 4.5: "roughly 0.44M ... of 10,575 unique identities").
PAPER_RAW = (494_414, 10_575)
PAPER_PREPARED = (440_000, 10_575)


def _normalise(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def read_clean_list(path) -> list[Sample]:
    """The kept images of a cleaning list, in list order (see the module docstring).

    Raises DatasetError naming the line of a malformed entry (not 1, 2 or 12 fields, a
    non-numeric label or coordinate, a path outside an identity folder), a duplicate, a folder
    given two labels, or an empty list."""
    samples, seen, label_of = [], {}, {}
    for line_no, line in _lines(path):
        if line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (1, 2, 12):
            raise DatasetError(f"{_where(path, line_no)}: expected 'path', 'path label' or 'path label' "
                               f"and 10 landmark coordinates, got {len(parts)} fields")
        rel = _normalise(parts[0])
        if "/" not in rel.strip("/"):
            raise DatasetError(f"{_where(path, line_no)}: {parts[0]!r} is not inside an identity folder "
                               f"('<identity>/<image>')")
        try:
            [float(v) for v in parts[2:]]
            label = int(parts[1]) if len(parts) > 1 else None
        except ValueError:
            raise DatasetError(f"{_where(path, line_no)}: non-numeric label or coordinate in {line!r}") from None
        if rel in seen:
            raise DatasetError(f"{_where(path, line_no)}: duplicate path {rel!r} (first on line {seen[rel]})")
        seen[rel] = line_no
        identity = rel.split("/", 1)[0]
        if label is not None:
            first = label_of.setdefault(identity, (label, line_no))
            if first[0] != label:
                raise DatasetError(f"{_where(path, line_no)}: folder {identity!r} has label {label} here "
                                   f"but {first[0]} on line {first[1]}")
        samples.append(Sample(rel, identity))
    if not samples:
        raise DatasetError(f"{path}: the list is empty")
    return samples


@dataclass
class Cleaning:
    """The raw tree filtered by a list: ``kept`` (in the tree and listed), ``dropped`` (in the
    tree, not listed) and ``absent`` (listed, not in the tree: another copy of the dataset)."""
    kept: list
    dropped: list
    absent: list


def apply_clean_list(raw: Sequence[Sample], listed: Sequence[Sample]) -> Cleaning:
    """Filter the raw samples by the listed ones (matched by relative path)."""
    keep = {s.path for s in listed}
    have = {s.path for s in raw}
    return Cleaning(kept=[s for s in raw if s.path in keep], dropped=[s for s in raw if s.path not in keep],
                    absent=[s for s in listed if s.path not in have])


def _stem(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path


def counts(samples: Sequence[Sample]) -> tuple[int, int]:
    """(images, identities)."""
    return len(samples), len({s.identity for s in samples})


def step_counts(raw: Sequence[Sample], cleaning: Cleaning | None = None,
                aligned: Sequence[Sample] | None = None) -> list[dict]:
    """Images and identities after each step, with the paper's figure where it gives one."""
    rows = [{"step": "CASIA-WebFace as found", "images": counts(raw)[0], "identities": counts(raw)[1],
             "paper": "494,414 images, 10,575 identities (Sec. 4.1)"}]
    kept = raw
    if cleaning is not None:
        kept = cleaning.kept
        rows.append({"step": "kept by the cleaning list", "images": counts(kept)[0],
                     "identities": counts(kept)[1], "paper": "not given"})
    if aligned is not None:
        wanted = {_stem(s.path) for s in kept}  # crops may carry another suffix (--ext png)
        done = [s for s in aligned if _stem(s.path) in wanted]
        rows.append({"step": "detected and aligned", "images": counts(done)[0], "identities": counts(done)[1],
                     "paper": "roughly 0.44M images, 10,575 identities (Sec. 4.5)"})
    return rows


def format_steps(rows: list[dict]) -> str:
    """A plain-text table of :func:`step_counts`."""
    head = f"{'step':<28}{'images':>10}{'identities':>12}  paper"
    return "\n".join([head, "-" * len(head)] + [f"{r['step']:<28}{r['images']:>10,}{r['identities']:>12,}  {r['paper']}"
                                                 for r in rows])
