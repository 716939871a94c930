#!/usr/bin/env python3
"""Build Caffe training inputs from aligned faces: train/val image LMDBs, HDF5 attributes, manifests.

    tools/build_db.py OUT --images ALIGNED_TREE [--celeba-attributes list_attr_celeba.txt | --attributes A.npy]

Input: an aligned folder-per-identity tree (--images) or a 'path label' list (--list, paths below
--root). One image of every identity that has at least two is held out for validation (seeded;
Sec. 4.4 of the paper), identities with fewer than --min-images images are dropped, the training
records are shuffled (seeded) and the splits are written to OUT:

  OUT/train_lmdb, OUT/val_lmdb                 Caffe Datum records, label = identity index,
                                               key %08d_<image path>
  OUT/train_attributes.h5 (+ .h5.txt)          float32 N x M attributes in the same order
  OUT/val_attributes.h5 (+ .h5.txt)            (the .txt is the HDF5Data layer's 'source')
  OUT/train_manifest.json, OUT/val_manifest.json   counts, identities, attribute names,
                                               record paths, order checksum (tools/check_db.py)

Attributes: --attributes gives a matrix (.npy, .h5, .txt) with one row per input image in the
input's order (the list's order, or the sorted paths of the tree); --celeba-attributes takes a
CelebA list_attr_celeba.txt and matches rows by file name. Values must be -1, 0 or 1, except
with --vote, which first gives every image its identity's majority label (mtdnn.vote; raw
classifier scores allowed). --placeholder-attributes M writes M columns of 0 ("unknown") for
data that has no attribute labels yet (e.g. LFW), so the two-input pipeline can be run.

Example: LFW View 1 training people, raw photos to a Caffe-ready database (about 8 min here):

  tools/align_faces.py $MTDNN_DATA/lfw/lfw-deepfunneled work/lfw-devtrain-112x96 \
      --people $MTDNN_DATA/lfw/peopleDevTrain.txt \
  && tools/build_db.py work/lfw-devtrain-db --images work/lfw-devtrain-112x96 \
      --placeholder-attributes 7 --attribute-names Narrow_Eyes,Big_Nose,Pointy_Nose,Chubby,Double_Chin,High_Cheekbones,Male \
  && tools/check_db.py work/lfw-devtrain-db

An image that cannot be read or has another size than most of them is left out, named with the
reason in OUT/failures.txt, and the run goes on; the last line says "incomplete" and the exit
status is 1 then, unless --allow-failures. Everything is built in OUT.partial and moved into
place at the end; a failed run leaves OUT as it
was. Rerunning on an existing OUT built from the same inputs (the images' bytes, names and
identities, the attribute file's bytes, the options) says it is up to date and changes nothing
(attribute labels written since by tools/label_attributes.py included); with other inputs it
stops and says what differs; --force rebuilds it in either case. Two runs on one OUT: the second stops at
once (lock file .OUT.lock beside it). Byte-identical images under two names are reported and
kept in training, so no image is validated against its own copy. Each HDF5Data list file
(*_attributes.h5.txt) names its .h5 relative to the database folder, so a copied or moved
database stays self-contained (tools/train.py writes the run's own list files).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn import datasets, manifest  # noqa: E402
from mtdnn.cli import run_tool  # noqa: E402
from mtdnn.db_build import (DEFAULT_ENCODING, FAILURES, BuildOptions, UpToDate, build, failure_count,  # noqa: E402
                            last_line)
from mtdnn.images import ImageError  # noqa: E402
from mtdnn.records import escape_field, read_failures  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="aligned folder-per-identity tree")
    src.add_argument("--list", type=Path, help="'path label' list (paths relative to --root)")
    p.add_argument("--root", type=Path, help="root of the --list paths")
    att = p.add_mutually_exclusive_group()
    att.add_argument("--attributes", type=Path, help=".npy/.h5/.txt attribute matrix in the input's order")
    att.add_argument("--celeba-attributes", type=Path, help="CelebA list_attr_celeba.txt (rows matched by file name)")
    att.add_argument("--placeholder-attributes", type=int, metavar="M",
                     help="no labels yet: M columns of 0 ('unknown'), so the HDF5 side of the pipeline exists")
    p.add_argument("--vote", action="store_true",
                   help="majority-vote the attributes per identity first (mtdnn.vote; --attributes may then "
                        "hold raw classifier scores)")
    p.add_argument("--attribute-names", help="comma-separated names (CelebA default: the paper's seven)")
    p.add_argument("--val-per-identity", type=int, default=1, help="held-out images per identity (default 1; 0: no val)")
    p.add_argument("--min-images", type=int, default=1, help="drop identities with fewer images (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hold-out and the shuffle (default 0)")
    p.add_argument("--encoding", choices=("raw", "png", "jpg"), default=DEFAULT_ENCODING,
                   help=f"Datum storage (default {DEFAULT_ENCODING}; jpg is lossy)")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 when images had to be left out (unreadable, another size); they are listed in "
                        "OUT/failures.txt either way")
    p.add_argument("--force", action="store_true",
                   help="rebuild OUT even when it is up to date, or replace one built from other inputs "
                        "(without it, such a rerun stops); its attribute labels go with it")
    return p.parse_args(argv)


def options(args) -> BuildOptions:
    """The library's options from the parsed command line (the same names)."""
    return BuildOptions(**{f.name: getattr(args, f.name) for f in fields(BuildOptions)})


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = build(options(args))
    except UpToDate:
        print(f"{args.out} is up to date (built from the same images, attributes and options); "
              f"nothing was changed", file=sys.stderr)
        line, status = last_line(args.out, failure_count(args.out), args.allow_failures)
        print(line, file=sys.stderr)
        return status
    for split, (n, rate) in result["summary"].items():
        print(f"{split}: {n} records ({rate:.0f} img/s written)", file=sys.stderr)
    if result["vote"]:
        print(f"majority vote changed {result['vote']['changed_total']} labels: {result['vote']['changed']}",
              file=sys.stderr)
    if result["duplicates"]:
        shown = "; ".join(" = ".join(g) for g in result["duplicates"][:5])
        print(f"{len(result['duplicates'])} group(s) of byte-identical images under different names, each kept "
              f"in training (never held out): {shown}" + (" ..." if len(result["duplicates"]) > 5 else "")
              + " (all in the manifests' build.duplicates)", file=sys.stderr)
    print(f"{result['identities']} identities, {result['dropped']} images dropped (--min-images); "
          f"written to {args.out}", file=sys.stderr)
    if result["failed"]:
        listed = list(read_failures(args.out / FAILURES).values())
        for why in listed[:10]:
            print(f"left out: {escape_field(why)}", file=sys.stderr)
        if len(listed) > 10:
            print(f"left out: ... ({len(listed) - 10} more in {args.out / FAILURES})", file=sys.stderr)
    line, status = last_line(args.out, result["failed"], args.allow_failures)
    print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    run_tool(main, bad=(datasets.DatasetError, ImageError, FileExistsError, ValueError, manifest.ManifestError),
             interrupt_hint="the output folder was left as it was (the unfinished build in OUT.partial is "
                            "removed); rerun the same command to build it",
             machine_hint="a problem of the machine, not of the images: free space on the output's disk or fix "
                          "its permissions, then rerun; the output folder was left as it was")
