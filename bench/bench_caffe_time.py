#!/usr/bin/env python3
"""Training speed on the CPU: `caffe time` forward and backward of the Full- and Fast-Model,
with the project's CPU patch of Caffe and without it, in the same run.

Each model's fine-tune train_val net (both task heads) is timed at the paper's batch size
(40 Full, 48 Fast; `demo` is the net `make demo` trains: the Fast-Model at width 0.125 with
430 identities, batch 32) with its data layers replaced by Input blobs, and printed as images/s
next to GFLOP per image (forward, from the deploy net) and the achieved GFLOP/s
(backward counted as twice the forward FLOPs). docker/patches/10-cpu-conv-prelu.patch keeps
Caffe's original CPU code behind MTDNN_CAFFE_CPU_PATCH=0: each model is timed both ways,
alternating, and the ratio of the two is printed ("patched/original" speed-up).

    python bench/bench_caffe_time.py [--models full fast demo] [--iterations 3]
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # before pycaffe loads: no per-layer log
from mtdnn.caffe import netstats  # noqa: E402
from mtdnn.demo import FULL  # noqa: E402
from mtdnn.caffe.run import caffe_time as run_caffe_time, timing_net  # noqa: E402
from mtdnn.netgen.render import render_model  # noqa: E402
from mtdnn.paper import PAPER_ATTRIBUTES  # noqa: E402
from mtdnn.paths import REPO  # noqa: E402

PAPER_BATCH = {"full": 40, "fast": 48}
NUM_ATTRIBUTES = len(PAPER_ATTRIBUTES)  # the attribute head's outputs (bench_blas.py reads it)
DEMO_IDENTITIES = 430  # the identities of the full demo's training set (docs/demo.md)


def render_demo_net(folder: Path) -> int:
    """Render the multi-task net `make demo` trains (model, width and batch from mtdnn.demo's
    full plan) into ``folder``; returns its batch size."""
    plan = FULL
    render_model(folder, variant=plan.model, width=plan.width, identities=DEMO_IDENTITIES, batch=plan.batch)
    return plan.batch


def caffe_time(model: Path, iterations: int, patched: bool = True, env: dict | None = None) -> tuple[float, float]:
    """Average forward and backward milliseconds that `caffe time` reports (the environment,
    ``env`` or this process's, is kept, OPENBLAS_CORETYPE included; ``patched=False`` runs
    Caffe's original CPU code)."""
    env = {**(os.environ if env is None else env), "MTDNN_CAFFE_CPU_PATCH": "1" if patched else "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return run_caffe_time(model, iterations, env=env)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["full", "fast", "demo"],
                    help="folders under models/, or demo (the Fast-Model at width 0.125, batch 32)")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="times each model is timed with and without the CPU patch, alternating")
    args = ap.parse_args(argv)

    rows, speedups = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = REPO / "models" / name
            batch = PAPER_BATCH.get(name, 40)
            if name == "demo":
                folder = Path(tmp) / "demo"
                batch = render_demo_net(folder)
            timed = timing_net(folder / "train_val.prototxt", batch, Path(tmp) / f"{name}_time.prototxt")
            gflop = netstats.summarize(folder / "deploy.prototxt").total_flops / 1e9
            times = {True: [], False: []}
            for r in range(args.repeats):
                for patched in (False, True):
                    print(f"timing {name} (batch {batch}, {args.iterations} iterations, "
                          f"{'patched' if patched else 'original'} CPU code, round {r + 1}) ...", flush=True)
                    times[patched].append(caffe_time(timed, args.iterations, patched))
            fwd_ms, bwd_ms = min(times[True], key=sum)
            fwd0, bwd0 = min(times[False], key=sum)
            rows.append((name, batch, gflop, fwd_ms, bwd_ms))
            speedups.append((name, fwd0, bwd0, fwd_ms, bwd_ms))

    print(f"\n{'model':6} {'batch':>5} {'GFLOP/img':>9} {'fwd ms':>8} {'bwd ms':>8} "
          f"{'fwd img/s':>9} {'train img/s':>11} {'fwd GFLOP/s':>11} {'train GFLOP/s':>13}")
    for name, batch, gflop, fwd, bwd in rows:
        fwd_rate, train_rate = batch / (fwd / 1e3), batch / ((fwd + bwd) / 1e3)
        print(f"{name:6} {batch:5d} {gflop:9.2f} {fwd:8.0f} {bwd:8.0f} {fwd_rate:9.2f} {train_rate:11.2f} "
              f"{fwd_rate * gflop:11.1f} {train_rate * 3 * gflop:13.1f}")
    print("\nCPU patch (best of each; original = MTDNN_CAFFE_CPU_PATCH=0, the unpatched Caffe code):")
    print(f"{'model':6} {'orig fwd ms':>11} {'orig bwd ms':>11} {'patched fwd':>11} {'patched bwd':>11} "
          f"{'fwd ratio':>9} {'step ratio':>10}")
    for name, f0, b0, f1, b1 in speedups:
        print(f"{name:6} {f0:11.0f} {b0:11.0f} {f1:11.0f} {b1:11.0f} {f0 / f1:9.2f} {(f0 + b0) / (f1 + b1):10.2f}")
    paper_rows = {r[0]: r for r in rows if r[0] in PAPER_BATCH}
    if len(paper_rows) == 2:
        (_, b1, g1, f1, k1), (_, b2, g2, f2, k2) = paper_rows["full"], paper_rows["fast"]
        print(f"\nper-iteration time ratio full/fast: {(f1 + k1) / (f2 + k2):.2f} "
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
