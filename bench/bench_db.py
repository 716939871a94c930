#!/usr/bin/env python3
"""LMDB build and read rates for raw vs PNG vs JPEG Datum records (figures only, no pass/fail).

For N aligned 112x96 faces (default 2,000 of the reference LFW alignment) and each encoding:
write rate (decode the source JPEG + serialize + LMDB put, images/s), size on disk (bytes per
image and the projection for CASIA-WebFace's 494,414 images), and read rate through Caffe's own
Data layer (a net with only a Data layer, the training transform: scale 1/128, mean 127.5,
mirror; ``net.forward()`` timed, images/s).

Measured here (2 shared cores, 2,000 reference-aligned LFW faces, batch 40, page cache warm;
two runs agreed within 5 %):

    encoding   write img/s  bytes/img  CASIA GB  Data-layer read img/s
    raw              3,400     32,836      16.2       ~45,000
    png              2,600     22,372      11.1        ~4,000
    jpg (q95)        9,400      5,837       2.9       ~10,000

PNG is dominated (larger than JPEG, slower than raw on both sides). Raw is the default of
tools/build_db.py: lossless, the fastest to read by a factor of 4.5 and needing no decoder at
training time; its cost is disk (16 GB for CASIA-WebFace). Every encoding reads far faster than
the nets train (Full-Model ~3.6 img/s on these CPUs, ~65 img/s per TITAN X), so --encoding jpg
(a second lossy generation on top of the aligned JPEGs, 5.6x smaller) is the choice when disk
is short.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn import db  # noqa: E402
from mtdnn.datasets import read_image_list  # noqa: E402
from mtdnn.images import load_image  # noqa: E402
from mtdnn.paths import data_path  # noqa: E402

CASIA = 494_414


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_rate(lmdb_path: Path, n: int, batch: int, workdir: Path) -> float:
    """Images/s through a net made of one training-style Data layer."""
    import caffe
    proto = workdir / "data_only.prototxt"
    proto.write_text(f"""
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ mirror: true mean_value: 127.5 scale: 0.0078125 }}
  data_param {{ source: "{lmdb_path}" backend: LMDB batch_size: {batch} }} }}
""")
    net = caffe.Net(str(proto), caffe.TRAIN)
    net.forward()  # warm-up: the prefetch thread fills its queue
    steps = max(1, n // batch)
    start = time.time()
    for _ in range(steps):
        net.forward()
    return steps * batch / (time.time() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=2000, help="images to use (default 2000)")
    p.add_argument("--batch", type=int, default=40, help="Data layer batch size (default 40)")
    p.add_argument("--root", type=Path, default=None, help="aligned tree (default: the reference LFW 112x96)")
    args = p.parse_args(argv)
    root = args.root or data_path("lfw", "lfw-112x96")
    samples = read_image_list(data_path("lfw", "lfw-112x96_list.txt"))[:args.limit] if args.root is None else None
    if samples is None:
        from mtdnn.datasets import read_identity_folders
        samples = read_identity_folders(root)[:args.limit]
    paths = [root / s.path for s in samples]
    for p_ in paths:  # warm the page cache so the first encoding is not penalised
        p_.read_bytes()
    print(f"{len(paths)} images from {root}, Data-layer batch {args.batch}")
    print(f"{'encoding':10s} {'write img/s':>12s} {'bytes/img':>10s} {'CASIA GB':>9s} {'read img/s':>11s}")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        for encoding in ("raw", "png", "jpg"):
            out = tmp / f"{encoding}_lmdb"
            start = time.time()
            n = db.write_image_lmdb(out, ((load_image(p_), i % 1000, p_.name) for i, p_ in enumerate(paths)),
                                    encoded=encoding)
            write = n / (time.time() - start)
            size = folder_bytes(out) / n
            read = read_rate(out, n, args.batch, tmp)
            print(f"{encoding:10s} {write:12.0f} {size:10.0f} {size * CASIA / 1e9:9.1f} {read:11.0f}")
            shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
