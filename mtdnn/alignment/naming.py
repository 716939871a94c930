"""Crop names: the input's path with the suffix of ``--ext`` (tools/align_faces.py's help)."""
from __future__ import annotations

import sys
from pathlib import Path

from mtdnn.images import IMAGE_EXTENSIONS
from mtdnn.records import escape_field

from .options import AlignInputError

# Suffixes that --ext keep writes as they are; any other input is written as PNG (OpenCV cannot
# write a colour crop as .pgm, and .gif would reduce it to 256 colours).
KEEP_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def output_path(rel: str, ext: str) -> str:
    """The crop name of input ``rel`` for ``--ext`` (see the module help)."""
    suffix = Path(rel).suffix
    if ext == "keep":
        target = suffix if suffix.lower() in KEEP_SUFFIXES else ".png"
    else:
        target = "." + ext
    if suffix == target:
        return rel
    return (rel[:-len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else rel) + target


def _shared(out: dict[str, str]) -> dict[str, list[str]]:
    """{crop name: inputs} for the names more than one input would get."""
    by_name: dict[str, list[str]] = {}
    for rel, name in out.items():
        by_name.setdefault(name, []).append(rel)
    return {name: rels for name, rels in by_name.items() if len(rels) > 1}


def output_paths(paths: list[str], ext: str) -> dict[str, str]:
    """{input: crop name} for every input; names two inputs would share are resolved by keeping
    the full input name (x.jpg -> x.jpg.png), clashes left after that are refused
    (:class:`AlignInputError`)."""
    out = {rel: output_path(rel, ext) for rel in paths}
    renamed = [rel for rels in _shared(out).values() for rel in rels if out[rel] != rel]
    for rel in renamed:
        out[rel] = rel + Path(out[rel]).suffix
    clashes = _shared(out)
    if clashes:
        listing = "\n".join(f"  {escape_field(k)} <- {', '.join(map(escape_field, v))}" for k, v in sorted(clashes.items()))
        raise AlignInputError(f"{len(clashes)} crop name(s) would be written by more than one input:\n"
                              f"{listing}\nrename those inputs, or align them into separate folders")
    if renamed:
        print(f"note: {len(renamed)} input(s) would share a crop name with another one and keep their full "
              f"name instead, e.g. {escape_field(renamed[0])} -> {escape_field(out[renamed[0]])}", file=sys.stderr)
    converted = sorted({Path(rel).suffix.lower() if Path(rel).suffix.lower() in IMAGE_EXTENSIONS
                        else "suffix-less" for rel in paths
                        if ext == "keep" and Path(out[rel]).suffix != Path(rel).suffix})
    if converted:
        print(f"note: crops of {', '.join(converted)} input are written as PNG (--ext keep writes only "
              f"{' '.join(KEEP_SUFFIXES)} as they are)", file=sys.stderr)
    return out
