#!/usr/bin/env python3
"""Check and measure Caffe on an NVIDIA GPU (make gpu-check): one command, about 10 minutes.

    tools/gpu_check.py [--gpu 0] [--out docs/gpu] [--skip train extract]

Steps; each one's result or the reason it failed goes into the report and the run goes on:

  device    caffe device_query -gpu N
  cudnnlog  one short caffe time of the Fast-Model with cuDNN's own logging on (CUDNN_LOGLEVEL_DBG=2,
            warnings and errors, to a file): the libraries cuDNN could not load (libcublasLt,
            libnvrtc, libcuda: cuDNN 9 dlopens them when an engine needs them) and its error count
  gtest     Caffe's GPU gtests of the layer types the project's nets use, cuDNN ones included
            (the gtest binary `make gpu-check` builds: PREFIX.build/build/test/test.testbin)
  compare   GPU vs CPU forward + backward of the Full- and Fast-Model train nets (data layers
            replaced by Input blobs, Dropout removed) with the same weights and the same batch:
            the largest relative difference of every loss, fc5 and every parameter gradient
  time      caffe time -gpu N of the Full-Model at batch 40 and 256 and the Fast-Model at
            batch 48 (forward + backward img/s; peak GPU memory from nvidia-smi), float
            convolutions in FMA math (docker/patches/30-...); the Full-Model at batch 40 once more
            with CAFFE_CUDNN_TF32=1 (TF32 allowed on Ampere and newer), to show what it changes
  train     300 iterations of tools/train.py (Full-Model, 210 pre-training + 90 fine-tuning,
            batch 40, on the GPU) on a database built from the data folder's aligned LFW
  extract   tools/extract_features.py --gpu N img/s on the aligned LFW images

It writes OUT/<gpu name>.json (every figure) and OUT/<gpu name>.md (a table). With no NVIDIA
GPU (no nvidia-smi, or it lists none) it says so, writes nothing and exits 0. Exit status 1
when any step failed (the report still written), 2 for bad usage. The steps are
mtdnn/caffe/gpu_check.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn.caffe.gpu_check import STEPS, CheckOptions, caffe_build, find_gpus, render_markdown, run_checks, safe_name  # noqa: E402,E501
from mtdnn.cli import FAILURE, bad_input, run_tool  # noqa: E402
from mtdnn.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from mtdnn.paths import REPO  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", type=int, default=0, help="index of the GPU checked (default 0)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "gpu", help="report folder (default docs/gpu)")
    ap.add_argument("--skip", nargs="+", choices=STEPS, default=[], help="steps to leave out")
    ap.add_argument("--iterations", type=int, default=10, help="caffe time iterations (default 10)")
    ap.add_argument("--tolerance", type=float, default=1e-2,
                    help="largest relative GPU-vs-CPU difference that passes (default 1e-2)")
    ap.add_argument("--nvidia-smi", default="nvidia-smi", help="the nvidia-smi command (default: from PATH)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    gpus = find_gpus(args.nvidia_smi)
    if not gpus:
        print("gpu_check: no NVIDIA GPU here (nvidia-smi is missing or lists none): nothing to check, "
              "no report written.")
        return 0
    gpu = next((g for g in gpus if g["index"] == args.gpu), None)
    if gpu is None:
        bad_input(f"--gpu {args.gpu}: no such GPU (nvidia-smi lists {[g['index'] for g in gpus]})")
    build = caffe_build()
    if not build.startswith("GPU"):
        print(f"gpu_check: Caffe here is {build}: build the GPU one first (CAFFE_GPU=1 make setup).", file=sys.stderr)
        return FAILURE
    report = run_checks(CheckOptions(args.gpu, args.iterations, args.tolerance), gpu, args.skip,
                        log=lambda msg: print(msg, flush=True))
    base = args.out / safe_name(gpu["name"])
    atomic_write_json(base.parent / f"{base.name}.json", report)
    atomic_write_text(base.parent / f"{base.name}.md", render_markdown(report))
    failed = [n for n, s in report["steps"].items() if not s["ok"]]
    print(f"gpu_check: report {base}.json and .md; "
          + (f"{len(failed)} step(s) failed: {', '.join(failed)}" if failed else "every step passed"))
    return FAILURE if failed else 0


if __name__ == "__main__":
    run_tool(main)
