#!/usr/bin/env python3
"""Baseline training speed: `caffe time` forward and backward of the Full- and Fast-Model.

Each model's fine-tune train_val net (both task heads) is timed at the paper's batch size
(40 Full, 48 Fast) with its data layers replaced by Input blobs, and printed as images/s
next to GFLOP per image (forward, from the deploy net) and the achieved GFLOP/s
(backward counted as twice the forward FLOPs).

    python bench/bench_caffe_time.py [--models full fast] [--iterations 3]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # before pycaffe loads: no per-layer log
from mtdnn import netstats  # noqa: E402
from mtdnn.paths import REPO  # noqa: E402
from mtdnn.prototxt import read_net, with_input_layers, write_prototxt

PAPER_BATCH = {"full": 40, "fast": 48}
NUM_ATTRIBUTES = 7


def caffe_time(model: Path, iterations: int) -> tuple[float, float]:
    """Average forward and backward milliseconds that `caffe time` reports."""
    out = subprocess.run(["caffe", "time", "-model", str(model), "-iterations", str(iterations)],
                         capture_output=True, text=True, env={"GLOG_minloglevel": "0", "PATH":
                                                              str(Path(sys.executable).parent)})
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"caffe time failed on {model}:\n{log[-3000:]}")
    fwd = float(re.search(r"Average Forward pass: ([\d.]+) ms", log).group(1))
    bwd = float(re.search(r"Average Backward pass: ([\d.]+) ms", log).group(1))
    return fwd, bwd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["full", "fast"], help="folders under models/")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    args = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = REPO / "models" / name
            batch = PAPER_BATCH.get(name, 40)
            net = with_input_layers(read_net(folder / "train_val.prototxt"), "TRAIN",
                                    {"data": (batch, 3, 112, 96), "label": (batch,),
                                     "attributes": (batch, NUM_ATTRIBUTES)})
            timed = write_prototxt(net, Path(tmp) / f"{name}_time.prototxt")
            gflop = netstats.summarize(folder / "deploy.prototxt").total_flops / 1e9
            print(f"timing {name} (batch {batch}, {args.iterations} iterations) ...", flush=True)
            fwd_ms, bwd_ms = caffe_time(timed, args.iterations)
            rows.append((name, batch, gflop, fwd_ms, bwd_ms))

    print(f"\n{'model':6} {'batch':>5} {'GFLOP/img':>9} {'fwd ms':>8} {'bwd ms':>8} "
          f"{'fwd img/s':>9} {'train img/s':>11} {'fwd GFLOP/s':>11} {'train GFLOP/s':>13}")
    for name, batch, gflop, fwd, bwd in rows:
        fwd_rate, train_rate = batch / (fwd / 1e3), batch / ((fwd + bwd) / 1e3)
        print(f"{name:6} {batch:5d} {gflop:9.2f} {fwd:8.0f} {bwd:8.0f} {fwd_rate:9.2f} {train_rate:11.2f} "
              f"{fwd_rate * gflop:11.1f} {train_rate * 3 * gflop:13.1f}")
    if len(rows) == 2:
        (_, b1, g1, f1, k1), (_, b2, g2, f2, k2) = rows
        print(f"\nper-iteration time ratio {rows[0][0]}/{rows[1][0]}: {(f1 + k1) / (f2 + k2):.2f} "
              f"(FLOP ratio {b1 * g1 / (b2 * g2):.2f}; paper: 17 h / 14 h = 1.21)")
    # Paper: Full-Model 17 h for 70k + 30k iterations of 40 images on one TITAN X.
    paper_rate = 100_000 * 40 / (17 * 3600)
    for name, batch, _, fwd, bwd in rows:
        if name == "full":
            rate = batch / ((fwd + bwd) / 1e3)
            print(f"paper (TITAN X): Full-Model {paper_rate:.0f} images/s in training; here {rate:.2f} "
                  f"(x{paper_rate / rate:.0f} slower); the paper's 100k iterations would take "
                  f"{100_000 * 40 / rate / 86400:.0f} days here")


if __name__ == "__main__":
    main()
