#!/usr/bin/env python3
"""The small-scale reproduction: with and without the attribute task, Full vs Fast blocks,
under identical budgets and several seeds, on the demo's real data; a table with confidence
intervals and a verdict on each of the paper's claims.

    tools/demo.py                                   # first: the data, MOON labels and LMDB
    tools/reproduce.py --out docs/reproduction      # then: 4 models x 3 seeds, about 2 h
    tools/reproduce.py --seeds 1 --models fast,fast_noattr --out /tmp/r   # a smaller one

It reuses the demo's work folder (--demo-work): its training LMDB of View 1's training
people labelled by MOON (per-identity vote), its aligned CelebA images and MOON's held-out
CelebA list. It aligns the whole of LFW (13,233 photos; the demo's crops are reused) because
BLUFR needs every image. Then, for every model and seed (--jobs of them at a time, each with
one BLAS thread), with the project's tools:

  train.py (pre-train, fine-tune; --seed is the solvers' random_seed) -> extract_features.py
  (fc5 of every LFW and CelebA image, attr_pred of MOON's held-out CelebA images) ->
  eval_lfw.py (View 1: threshold on pairsDevTrain, accuracy on pairsDevTest), eval_blufr.py
  (without the training people: --exclude peopleDevTrain), eval_identification.py (LFW probes outside the training people, CelebA distractors),
  eval_attributes.py.

Every run lives in WORK/runs/<model>_s<seed> with its log (reproduce.log) and stage markers,
so a rerun continues where it stopped. Finally OUT/README.md (tables, verdicts, commands),
OUT/results.json and OUT/reproduction.png are written from whatever runs have finished.

Every figure is measured on people the models never saw (mtdnn/reproduce.py): BLUFR's test
sets hold the View 1 training people, so BLUFR is evaluated without them and reported as
mean - std; a BLUFR figure on all of LFW is never reported. --from-results rebuilds the
report from an earlier results.json when the run folders are gone (figures the current rules
do not accept are dropped). The attribute labels are MOON's, so the multi-task net is
compared with its own teacher.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from mtdnn.cli import run_tool
from mtdnn.paths import REPO, data_root
from mtdnn.pipeline import PY, PipelineError, PipelineInputError
from mtdnn.reproduce import Study, align_all_lfw, check_demo, run_all, run_one
from mtdnn.reproduce_report import write_report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-work", type=Path, default=REPO / "work" / "demo",
                   help="the demo's work folder (default %(default)s)")
    p.add_argument("--work", type=Path, default=REPO / "work" / "repro", help="work folder (default %(default)s)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "reproduction",
                   help="where the report goes (default %(default)s)")
    p.add_argument("--data", type=Path, help="data folder (default $MTDNN_DATA or data/ in the repository; make data fills it)")
    p.add_argument("--models", default="fast,fast_noattr,full,full_noattr", help="default %(default)s")
    p.add_argument("--seeds", default="1,2,3", help="solver random_seeds (default %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one BLAS thread each (default 2)")
    p.add_argument("--lfw-minsize", type=float, default=40, help="MTCNN minsize for LFW, as the demo's (default 40)")
    g = p.add_argument_group("the budget every model gets (the demo's, with 600 iterations instead of 400)")
    g.add_argument("--width", type=float, default=0.125, help="width multiplier of every layer (default 0.125)")
    g.add_argument("--batch", type=int, default=32, help="training batch (default 32)")
    g.add_argument("--iters", type=int, default=600, help="pre-training + fine-tuning, split 70/30 (default 600)")
    g.add_argument("--pretrain-lr", type=float, default=0.05, help="pre-training base learning rate (default 0.05)")
    g.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning base learning rate (default 0.01)")
    g.add_argument("--lambda1", type=float, default=1.0, help="attribute loss weight while fine-tuning (default 1.0)")
    p.add_argument("--report-only", action="store_true", help="only write the report from finished runs")
    p.add_argument("--from-results", type=Path, metavar="RESULTS_JSON",
                   help="with --report-only: take the per-run figures (and MOON's) from an earlier results.json "
                        "instead of the run folders (figures the current rules do not accept are dropped)")
    p.add_argument("--note", action="append", default=[], help="a line for the report's Notes section (repeatable)")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "SEED"), help=argparse.SUPPRESS)  # a child's run
    return p.parse_args(argv)


def study_of(args) -> Study:
    return Study(data=args.data or data_root(), demo=args.demo_work, work=args.work,
                 models=[m for m in args.models.split(",") if m], seeds=[int(s) for s in args.seeds.split(",") if s],
                 jobs=args.jobs, lfw_minsize=args.lfw_minsize, width=args.width, batch=args.batch, iters=args.iters,
                 pretrain_lr=args.pretrain_lr, finetune_lr=args.finetune_lr, lambda1=args.lambda1)


def child(study: Study, model: str, seed: int) -> list:
    """This tool again, for one (model, seed): the study's options passed on."""
    st = study
    return [PY, __file__, "--one", model, str(seed), "--demo-work", str(st.demo), "--work", str(st.work),
            "--data", str(st.data), "--jobs", str(st.jobs), "--width", str(st.width), "--batch", str(st.batch),
            "--iters", str(st.iters), "--pretrain-lr", str(st.pretrain_lr), "--finetune-lr", str(st.finetune_lr),
            "--lambda1", str(st.lambda1)]


def recorded_command(argv: list[str]) -> str:
    """The run's command for the report: without --report-only, --note and --from-results."""
    words, skip = [], False
    for x in argv:
        if skip or x in ("--report-only", "--note", "--from-results"):
            skip = x in ("--note", "--from-results")
            continue
        words.append(x)
    return "tools/reproduce.py " + " ".join(shlex.quote(x) for x in words)


def main(argv=None) -> int:
    args = parse_args(argv)
    study = study_of(args)
    if args.one:
        return run_one(study, args.one[0], int(args.one[1]))
    if args.from_results and not args.report_only:
        raise PipelineInputError("--from-results goes with --report-only")
    command = recorded_command(argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    if not args.report_only:
        check_demo(study)
        align_all_lfw(study)
        run_all(study, lambda m, s: child(study, m, s))
    path = write_report(study, args.out, command, None if args.report_only else time.time() - t0, args.note,
                        args.from_results)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    run_tool(main, bad=(PipelineInputError,), stop=(PipelineError,),
             interrupt_hint="rerun the same command to continue (finished stages are reused)")
