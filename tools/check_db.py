#!/usr/bin/env python3
"""Check training LMDB / HDF5 pairs against their manifests (written by tools/build_db.py).

    tools/check_db.py OUT                 every *_manifest.json in OUT
    tools/check_db.py OUT/train_manifest.json [--lmdb PATH] [--hdf5 PATH]

Checks everything Caffe will read: equal counts, the same record order (key %08d_<path> and
label of every record, so the order checksum), every record's image shape against the
manifest, labels in range, every HDF5 dataset's length, the HDF5 rows' paths/labels and the
attribute checksum, and that each HDF5Data list file (*_attributes.h5.txt) names the
database's own .h5. For a folder: every split that was built has its manifest (a missing val
manifest is an error), and a staged (*.partial, *.old) or still-building folder is refused.
Any mismatch is an error naming the first bad record; the exit status is 1 then.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from tqdm import tqdm  # noqa: E402

from mtdnn.cli import run_tool  # noqa: E402
from mtdnn.manifest import ManifestError, database_problems, verify  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", type=Path, help="a build_db.py output folder or one manifest JSON")
    p.add_argument("--lmdb", type=Path, help="check this LMDB instead of the one the manifest names")
    p.add_argument("--hdf5", type=Path, help="check this HDF5 file instead of the one the manifest names")
    args = p.parse_args(argv)
    manifests = sorted(args.target.glob("*_manifest.json")) if args.target.is_dir() else [args.target]
    if args.target.is_dir() and (args.lmdb or args.hdf5):
        print("error: --lmdb/--hdf5 need a single manifest", file=sys.stderr)
        return 2
    status = 0
    if args.target.is_dir():
        try:
            problems = database_problems(args.target)
        except ManifestError as e:
            print(f"FAIL {e}", file=sys.stderr)
            return 1
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        status = 1 if problems else 0
    elif not args.target.exists():
        print(f"error: {args.target}: not found", file=sys.stderr)
        return 2
    for path in manifests:
        try:
            s = verify(path, args.lmdb, args.hdf5,
                       progress=lambda it, total: tqdm(it, total=total, unit="rec", desc=path.name, leave=False))
        except ManifestError as e:
            print(f"FAIL {path}: {e}", file=sys.stderr)
            status = 1
            continue
        extra = f", {s['attributes']} attributes in {s['hdf5']}" if s["hdf5"] else ""
        print(f"OK   {path}: {s['count']} records, {s['identities']} identities{extra}")
    return status


if __name__ == "__main__":
    run_tool(main, bad=(), interrupt_hint="check_db only reads, nothing was changed; rerun it to check again")
