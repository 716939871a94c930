#!/usr/bin/env python3
"""Train a model of the paper with Caffe: pre-training, then fine-tuning (Sec. 4.4).

    tools/train.py --model full --db work/casia-db                     # runs/full, CPU
    tools/train.py --model fast --db work/casia-db --gpus 0,1          # two GPUs (NCCL)
    tools/train.py --model fast --db work/lfw-db --run runs/small \\
        --width 0.25 --batch 32 --pretrain-iter 2000 --finetune-iter 1000   # small scale
    make train MODEL=fast DB=work/casia-db GPUS=0,1 RUN=runs/fast ARGS="--width 0.5"

--db is a tools/build_db.py output folder (train_lmdb, val_lmdb, train/val_attributes.h5.txt,
manifests) whose attributes were filled in by tools/label_attributes.py; the number of
identities and of held-out images (test_iter) are read from it.

The run folder (--run, default runs/<model>) receives the model rendered for this data
(mtdnn.netgen.render_model: train_val*.prototxt, deploy.prototxt, the two solvers, readme.md),
run.json (model, options, data, net fingerprints, finished phases), each phase's log
(pretrain.log, finetune.log: Caffe's stderr) with its curves (<phase>.train.csv, .test.csv,
.png), the snapshots pretrain_iter_N / finetune_iter_N (.caffemodel, .solverstate), and when the
run finishes its model card model_card.json (docs/model_card.md: what tools/verify.py and
mtdnn.FaceModel read).

  1. pre-training:  caffe train -solver solver_pretrain.prototxt                  (lambda1 = 0)
  2. fine-tuning:   caffe train -solver solver_finetune.prototxt -weights pretrain_iter_<last>.caffemodel

Rerunning the same command continues where it stopped: a finished phase is skipped, an
unfinished one continues from its newest whole snapshot pair (-snapshot; a pair cut short by
a kill or power cut is named and set aside as *.damaged). Ctrl-C makes Caffe write a snapshot
and stop. A run folder whose snapshots come from another net or solver (other model or
options, learning rates, --seed; not the number of iterations, --batch, the database's place,
nor --display, --snapshot or --test-interval) or from other data (the database's manifests
differ) is refused untouched (use a new --run, or --restart to start over).
The free disk space is checked against the snapshots the run will write before it starts.

Watching a run (--watch [N], N default 2000 as insightface's verification interval): every N
iterations, and at the end of each phase, a face verification check runs on the newest
snapshot beside the training: 10-fold accuracy on a held-out pair list (--watch-pairs, default
LFW View 1's pairsDevTest, whose people are not in View 1's training set; --watch-images, the
aligned crops it names, default the data folder's lfw/lfw-112x96). Each check adds a row to
RUN/verification.csv and the accuracy is drawn beside the loss curves (<phase>.png;
tools/plot_log.py --follow shows it while training runs). Caffe then snapshots at least every
N iterations; snapshots written only for a check are deleted once checked. See mtdnn/watch.py
for what a check costs (about 1.4 % of the GPU training's compute at N = 2000, batch 40).
Exit status: 0 done, 1 training stopped (Caffe failed or was interrupted; a fault of the machine),
2 bad input, 130 Ctrl-C outside Caffe.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn.cli import run_tool  # noqa: E402
from mtdnn.paths import REPO  # noqa: E402
from mtdnn.train import PHASES, TrainError, TrainStopped, train  # noqa: E402
from mtdnn.watch import DEFAULT_EVERY, Watch, WatchError  # noqa: E402

DEFAULT_DATA = REPO / "work" / "casia-db"

# (flag, ModelSpec field, type, help): the small-scale options passed to mtdnn.netgen.render_model
OVERRIDES = [
    ("--width", "width", float, "width multiplier of every conv and fc layer (paper 1)"),
    ("--identities", "identities", int, "identity classes (default: the database's count)"),
    ("--attributes", "attributes", str, "CelebA names or a group (default: the model's)"),
    ("--block", "block", str, "residual block type: full, fast, variants (default: the model's)"),
    ("--config", "config", int, "last-layer configuration 1, 2 or 3 (default: the model's)"),
    ("--batch", "batch", int, "training batch per GPU (paper 40 Full, 48 Fast)"),
    ("--test-batch", "test_batch", int, "test batch (default: --batch)"),
    ("--test-images", "test_images", int, "held-out images the test net covers (default: all of val)"),
    ("--pretrain-iter", "pretrain_iter", int, "pre-training iterations (paper 70000); lr steps, test, "
                                              "display and snapshot intervals scale with it"),
    ("--finetune-iter", "finetune_iter", int, "fine-tuning iterations (paper 30000), scaled likewise"),
    ("--pretrain-lr", "pretrain_lr", float, "pre-training base_lr (paper 0.01)"),
    ("--finetune-lr", "finetune_lr", float, "fine-tuning base_lr (paper 0.001)"),
    ("--lambda1", "lambda1", float, "attribute loss weight when fine-tuning (paper 0.1)"),
    ("--lambda2", "lambda2", float, "identity loss weight (paper 1)"),
    ("--snapshot", "snapshot", int, "snapshot interval of both phases (default 10000 scaled)"),
    ("--test-interval", "test_interval", int, "test interval of both phases (default 2000 scaled)"),
    ("--display", "display", int, "display interval of both phases (default 100 scaled)"),
    ("--seed", "random_seed", int, "the solvers' random_seed: weight fillers, dropout (default: time-based)"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="full", help="variant of models/ or alias (python -m generate list); "
                                                    "default %(default)s")
    p.add_argument("--db", type=Path, default=DEFAULT_DATA,
                   help="training database: a tools/build_db.py output folder (default %(default)s)")
    p.add_argument("--run", type=Path, help="run folder (default runs/<model>)")
    p.add_argument("--gpus", help="GPU ids for `caffe train -gpu` (0, 0,1 or all); default: CPU")
    p.add_argument("--phase", choices=PHASES + ("all",), default="all", help="run only one phase (default all)")
    p.add_argument("--restart", action="store_true",
                   help="delete the run folder's snapshots and logs and start over")
    p.add_argument("--caffe", help="caffe binary (default: beside this Python, else on PATH)")
    p.add_argument("--threads", type=int, help="BLAS threads of Caffe on CPU (default: OpenBLAS's choice)")
    p.add_argument("--min-free", type=float, default=0.0, metavar="GB",
                   help="disk space to keep free beyond the snapshots' estimate (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    w = p.add_argument_group("watching the run (a verification check every N iterations; off unless --watch)")
    w.add_argument("--watch", type=int, nargs="?", const=DEFAULT_EVERY, metavar="N",
                   help=f"check the newest snapshot every N iterations and at the end of each phase "
                        f"(N default {DEFAULT_EVERY}); rows in RUN/verification.csv")
    w.add_argument("--watch-pairs", type=Path, help="pair list, LFW pairs format (default: the data "
                                                    "folder's lfw/pairsDevTest.txt, LFW View 1)")
    w.add_argument("--watch-images", type=Path, help="folder of the aligned crops the pairs name (default: "
                                                     "the data folder's lfw/lfw-112x96)")
    g = p.add_argument_group("model options (passed to mtdnn.netgen.render_model; unset: the model's values)")
    for flag, field, typ, text in OVERRIDES:
        g.add_argument(flag, dest=field, type=typ, help=text)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {field: getattr(args, field) for _, field, _, _ in OVERRIDES}
    run = args.run or REPO / "runs" / args.model
    t0 = time.time()
    watch = None
    if args.watch is not None:
        from mtdnn.paths import data_path
        watch = Watch(args.watch, args.watch_pairs or data_path("lfw", "pairsDevTest.txt", must_exist=False),
                      args.watch_images or data_path("lfw", "lfw-112x96", must_exist=False),
                      gpu=None if args.gpus is None else int(args.gpus.replace("all", "0").split(",")[0]),
                      threads=args.threads or 1, log=lambda msg: print(msg, flush=True))
    state = train(run, args.model, args.db, overrides, gpus=args.gpus, restart=args.restart,
                  phases=PHASES if args.phase == "all" else (args.phase,), caffe=args.caffe,
                  threads=args.threads, min_free=int(args.min_free * 2**30), progress=not args.quiet,
                  log=lambda msg: print(msg, flush=True), watch=watch)
    if state.get("weights"):
        print(f"done in {time.time() - t0:.0f} s: {run / state['weights']} (deploy: {run / state['deploy']})")
    else:
        print(f"done in {time.time() - t0:.0f} s: phase(s) {args.phase} of {run}")
    return 0


if __name__ == "__main__":
    # TrainStopped (Caffe failed or was interrupted): 1; bad input: 2; a read-only or full run
    # folder: 1 with a message that blames the machine, no traceback
    run_tool(main, bad=(TrainError, WatchError, ValueError, FileNotFoundError), stop=(TrainStopped,),
             interrupt_hint="rerun the same command to continue from the last snapshot in the run folder")
