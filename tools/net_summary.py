#!/usr/bin/env python3
"""Print a Caffe net's per-layer output shapes, parameters and FLOPs per image, and the totals.

    tools/net_summary.py models/full/deploy.prototxt
    tools/net_summary.py models/full/train_val.prototxt --upto fc5 --brief   # the trunk and fc5

FLOPs count Convolution and InnerProduct only (a multiply-add = 2 FLOPs); parameters are the
learned blobs, BatchNorm statistics counted apart. A train_val net is read without its data:
its images become an Input of --input-shape and its loss and accuracy layers are dropped.
See mtdnn/caffe/netstats.py.
"""
import argparse
from pathlib import Path

from mtdnn.caffe import netstats
from mtdnn.cli import run_tool


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prototxt", type=Path, help="a net (deploy or train_val)")
    ap.add_argument("--phase", choices=("TRAIN", "TEST"), default="TEST", help="default: %(default)s")
    ap.add_argument("--input-shape", default="3,112,96", help="C,H,W of the image input of data layers "
                                                              "(default: %(default)s)")
    ap.add_argument("--upto", metavar="NAME", help="count only the layers up to the last one named NAME or "
                                                   "writing blob NAME (fc5: the trunk and fc5 with its BatchNorm, "
                                                   "Scale and PReLU)")
    ap.add_argument("--brief", action="store_true", help="list only Input, Convolution, InnerProduct, "
                                                         "Pooling and Eltwise rows (totals count all)")
    args = ap.parse_args(argv)
    if not args.prototxt.is_file():
        ap.error(f"{args.prototxt} does not exist")
    try:
        shape = tuple(int(v) for v in args.input_shape.split(","))
        assert len(shape) == 3 and min(shape) > 0
    except (ValueError, AssertionError):
        ap.error(f"--input-shape must be C,H,W positive integers, got {args.input_shape!r}")
    try:
        stats = netstats.summarize(args.prototxt, args.phase, shape)
        if args.upto:
            stats = stats.upto(args.upto)
    except (ValueError, KeyError) as e:
        ap.error(str(e).strip("'\""))
    print(netstats.format_table(stats, all_layers=not args.brief))
    return 0


if __name__ == "__main__":
    run_tool(main)
