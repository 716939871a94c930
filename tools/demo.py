#!/usr/bin/env python3
"""The main job end to end on real data, on CPU (make demo): raw LFW and CelebA photos in,
a trained multi-task model and a report with plots out.

    tools/demo.py                       # full demo, about 11 min on 2 CPU cores
    tools/demo.py --quick               # the same pipeline, much smaller (a few minutes; tests)
    tools/demo.py --work /tmp/demo --data /path/to/data
    tools/demo.py --redo train          # redo one stage and everything after it

Stages (each one is a call of the project's tool, printed before it runs, or a little glue
that writes the lists the next tool reads); a rerun reuses every finished stage:

   1 moon                 tools/train_attributes.py: align CelebA, train MOON, held-out accuracy
                          (in the background: its Caffe uses one thread, the next stages the other core)
   2 lists                glue: which LFW images to align, the View 1 pairs files
   3 align_lfw            tools/align_faces.py: MTCNN + 5-point alignment of those LFW photos
   4 train_list           glue: the aligned LFW images of View 1's training people
   5 build_db             tools/build_db.py: train/val LMDB + HDF5 (one image per identity held out)
   6 label                tools/label_attributes.py: MOON scores, per-identity vote, HDF5 labels
   7 check_db             tools/check_db.py: LMDB and HDF5 in the same order, labels in range
   8 train                tools/train.py: pre-training, then fine-tuning (reduced width)
   9 extract_lfw          tools/extract_features.py: fc5 of the LFW images the evaluations use
  10 extract_celeba       tools/extract_features.py: fc5 of the aligned CelebA images
  11 attr_list            glue: MOON's held-out CelebA images
  12 extract_attributes   tools/extract_features.py: attr_pred of those images
  13 eval_lfw             tools/eval_lfw.py: LFW View 1 (threshold from pairsDevTrain, tested on pairsDevTest)
  14 eval_identification  tools/eval_identification.py: MegaFace-style stand-in (LFW probes, CelebA distractors)
  15 eval_attributes      tools/eval_attributes.py: attribute accuracy of the multi-task net (Tab. 4)
  16 report               tools/report.py: the paper's tables next to ours (WORK/results.md)
  17 summary              glue: WORK/report.md (data sizes, stage times, results, plots)

Data sizes of the full demo, chosen from rates measured on this 2-core machine (a fresh
`make demo`, 2026-12-03): MTCNN alignment of the 250x250 LFW photos at minsize 40 with 2
workers 43 img/s and MOON (Fast trunk, width 0.125, batch 32, 1 thread) 2.4 it/s, side by
side; the multi-task Fast-Model at width 0.125, batch 32, 1 BLAS thread, 2.5 it/s with its
validation passes and snapshots. MOON trains in the background, on the core its one-thread
Caffe leaves to the LFW alignment. This machine has run twice as slow on other days.

- LFW View 1 protocol: the model trains only on peopleDevTrain people; the threshold is chosen
  on pairsDevTrain and the accuracy measured on pairsDevTest. Aligned: every image of
  pairsDevTrain and pairsDevTest (4,992) plus all images of the peopleDevTrain people with
  >= 4 images (--lfw-min-images): 8,825 photos, about 3.5 min (with MOON beside it). MTCNN's
  minsize is 40 px here (--lfw-minsize; the SphereFace setting is 20): every LFW face is
  larger, and the smaller pyramid is 1.6x faster (the 5 points move by 2 px on average,
  about MTCNN's own re-detection error).
- Training set: the aligned images of peopleDevTrain people with >= 4 of them (--min-images):
  430 identities, 4,964 images, one image of each held out (validation).
- MOON: the first 2,000 CelebA images (--celeba-images), identities split 80/20, 500
  iterations (--moon-iters), about 3.5 min in the background.
- Multi-task net: the Fast-Model (--model) at width 0.125 (--width), batch 32, 700 pre-training
  + 300 fine-tuning iterations (--iters 1000, split 70/30 as in the paper), about 7 min;
  learning rates 0.05 then 0.01 and lambda1 = 1 (the paper's 0.01 / 0.001 / 0.1 are for
  100,000 iterations; with 1,000 the attribute head would not move). Seeded (--seed 1, the
  solvers' random_seed; MOON's is train_attributes.py's default 0): a rerun gives the same net.
  OpenBLAS threads are fixed too (--threads 1 for training and extraction, as for MOON and
  the labelling): Caffe's gradients change with the thread count, which OpenBLAS would
  otherwise take from the machine. One thread is also the faster here: this thin net's
  GEMMs are small, and a second OpenBLAS thread gave an erratic 1.4-3.1 it/s against a
  steady 2.6-2.9 with one (120 pre-training iterations, twice each, 2026-12-03).
- Watched (--watch 350; 0: off): at iterations 350 and 700 of pre-training and 300 of
  fine-tuning, the snapshot's 10-fold accuracy on pairsDevTest, computed beside Caffe on the
  other core (tools/train.py --watch, docs/watch.md); in the report and the curves.
- Features: fc5 of the image and of its mirror image, concatenated (--mirror concat, as
  SphereFace does; 'none' takes half the time).
- Identification stand-in: probes are the peopleDevTest people with >= 4 aligned images,
  distractors the aligned CelebA images and the one-image LFW people; attribute accuracy on
  MOON's held-out CelebA images (never seen by either net).

--quick: 8 training people x 10 images, 4 peopleDevTest people x 10 images (identification
probes), the first 15 matched + 15 mismatched pairs of each View 1 file (so its LFW figure is
NOT View 1's), 300 CelebA images, 40 MOON and 30+15 multi-task
iterations: the whole pipeline in a few minutes, for tests (tests/test_demo.py).

Outputs, all in WORK (default work/demo, git-ignored): lfw-112x96/, celeba-112x96/ (aligned
crops), lfw-db/, runs/moon/, runs/<model>_w<width>/ (run folder with eval/), features/,
results.md (tools/report.py) and report.md; .done/<stage>.json are the stage markers.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from mtdnn.cli import run_tool
from mtdnn.demo import FULL, QUICK, Demo, Plan
from mtdnn.fileio import OutputLock
from mtdnn.paths import REPO, data_root
from mtdnn.pipeline import PipelineError, PipelineInputError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small pipeline (a few minutes; for tests)")
    p.add_argument("--work", type=Path, default=REPO / "work" / "demo", help="work folder (default %(default)s)")
    p.add_argument("--data", type=Path, help="data folder with lfw/, celeba/, mtcnn/ (default $MTDNN_DATA "
                                             "or data/ in the repository; make data fills it)")
    p.add_argument("--redo", metavar="STAGE", help="redo this stage and every stage after it")
    p.add_argument("--quiet-tools", action="store_true", help="hide the tools' standard output (not their errors)")
    p.add_argument("--no-celeba", action="store_true",
                   help="run the recognition half alone even when CelebA is there (done anyway without it): "
                        "no MOON, no attribute labels, no attribute tables (they are marked skipped)")
    g = p.add_argument_group("sizes (default: the full plan above; --quick changes them)")
    for f in Plan.__dataclass_fields__.values():
        flag = "--" + f.name.replace("_", "-")
        typ = {"int": int, "float": float, "str": str}.get(str(f.type).split(" |")[0], int)
        g.add_argument(flag, type=typ, metavar={int: "N", float: "X", str: "NAME"}[typ],
                       help=f"default {getattr(FULL, f.name)} (--quick: {getattr(QUICK, f.name)})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    changes = {k: getattr(args, k) for k in Plan.__dataclass_fields__ if getattr(args, k, None) is not None}
    plan = replace(QUICK if args.quick else FULL, **changes)
    with OutputLock(args.work.resolve()):  # a second demo on the same work folder stops at once, naming the first
        demo = Demo(plan, args.work, args.data or data_root(), quick=args.quick, no_celeba=args.no_celeba)
        return demo.main(args.redo, args.quiet_tools)


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    run_tool(main, bad=(PipelineInputError,), stop=(PipelineError,),
             interrupt_hint="rerun the same command to continue (finished stages are reused)")
