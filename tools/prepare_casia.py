#!/usr/bin/env python3
r"""CASIA-WebFace before alignment: apply a cleaning list, and count what each step keeps.

    tools/prepare_casia.py /data/CASIA-WebFace --clean-list /data/cleaned_list.txt --out work/casia-clean.txt
    tools/align_faces.py /data/CASIA-WebFace work/casia-112x96 --list work/casia-clean.txt
    tools/prepare_casia.py /data/CASIA-WebFace --clean-list /data/cleaned_list.txt --out work/casia-clean.txt \
        --aligned work/casia-112x96          # the counts again, with the aligned step

SRC is the CASIA-WebFace download (a folder per identity). --clean-list is a cleaning list
(the cleaned CASIA-WebFace list the field uses, 'identity\image label' lines, or a path a
line, or SphereFace-style 'path label x1 y1 ... x5 y5'; mtdnn/clean_list.py): only its images
are kept. OUT receives the kept images as 'path identity' lines, the input of
tools/align_faces.py --list; OUT.counts.json the images and identities each step keeps
(as found, kept by the list, and with --aligned the crops in that aligned tree) beside the
paper's figures (494,414 / 10,575 as published; roughly 0.44M / 10,575 after its cleaning,
detection and alignment), and the SHA-256 of the list used. The table is printed too.

Listed images that the download lacks are counted and the first few named (another copy of
the dataset); a list none of whose images are in SRC is refused (exit 2: wrong folder or
list). Without --clean-list every image is kept and only the counts are made.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtdnn import clean_list, datasets
from mtdnn.cli import bad_input, run_tool
from mtdnn.fileio import atomic_write_json, atomic_write_text, escape_field, sha256_file


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="CASIA-WebFace folder (one sub-folder per identity)")
    p.add_argument("--clean-list", type=Path, help="cleaning list: the images to keep (default: keep all)")
    p.add_argument("--out", type=Path, required=True,
                   help="list of the kept images ('path identity'), for tools/align_faces.py --list; "
                        "the counts go to OUT.counts.json")
    p.add_argument("--aligned", type=Path, help="aligned tree of these images (tools/align_faces.py's output): "
                                                "count the detected and aligned step too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    raw = datasets.read_identity_folders(a.src)
    cleaning = None
    if a.clean_list:
        cleaning = clean_list.apply_clean_list(raw, clean_list.read_clean_list(a.clean_list))
        if not cleaning.kept:
            bad_input(f"none of the {len(cleaning.absent):,} images of {a.clean_list} is in {a.src}: "
                      f"name the CASIA-WebFace folder the list's paths are relative to")
        if cleaning.absent:
            print(f"warning: {len(cleaning.absent):,} listed image(s) are not in {a.src}, e.g. "
                  f"{', '.join(escape_field(s.path) for s in cleaning.absent[:3])}", file=sys.stderr)
    kept = cleaning.kept if cleaning else raw
    aligned = datasets.read_identity_folders(a.aligned) if a.aligned else None
    rows = clean_list.step_counts(raw, cleaning, aligned)
    atomic_write_text(a.out, "".join(f"{s.path} {s.identity}\n" for s in kept))
    report = {"source": str(a.src), "clean_list": str(a.clean_list) if a.clean_list else None,
              "clean_list_sha256": sha256_file(a.clean_list) if a.clean_list else None,
              "steps": rows, "listed_but_absent": len(cleaning.absent) if cleaning else 0,
              "dropped_by_the_list": len(cleaning.dropped) if cleaning else 0}
    counts_path = Path(str(a.out) + ".counts.json")
    atomic_write_json(counts_path, report, indent=1)
    print(clean_list.format_steps(rows))
    print(f"-> {a.out} ({len(kept):,} images), {counts_path}")
    return 0


if __name__ == "__main__":
    run_tool(main)
