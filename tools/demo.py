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
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn.demo import (DemoError, DemoInputError, Runner, Stage, aligned_images, celeba_missing,  # noqa: E402
                        fmt_time, lfw_pair_images, lfw_photo_folder, lfw_train_people_images, person, subset_pairs)
from mtdnn.evaluation.roc import tar_text  # noqa: E402
from mtdnn.watch import read_rows as watch_rows  # noqa: E402
from mtdnn.fileio import OutputBusy, OutputLock, atomic_write_text  # noqa: E402
from mtdnn.records import read_names, write_names  # noqa: E402
from mtdnn.paths import REPO, data_root  # noqa: E402
from mtdnn.caffe.run import blas_threads_env  # noqa: E402

TOOLS = REPO / "tools"


def _attr_figures(a: dict) -> str:
    """Accuracy (balanced accuracy), flagged *chance* when the balanced accuracy is <= 50 %."""
    return (f"{100 * a['accuracy']:.2f} ({100 * a['balanced_accuracy']:.2f})"
            + (" *chance*" if a["balanced_accuracy"] <= 0.5 else ""))


def _attr_extra(a: dict | None, key: str) -> str:
    ex = (a or {}).get("extra") or {}
    if key == "auc":
        return "-" if ex.get("auc") is None else f"{ex['auc']:.3f}"
    v = (ex.get("val_threshold") or {}).get("accuracy")
    return "-" if v is None else f"{100 * v:.2f}"
PY = sys.executable


@dataclass(frozen=True)
class Plan:
    lfw_min_images: int = 4         # peopleDevTrain people with >= this many images are aligned whole
    max_people: int | None = None   # quick: only the first people ...
    max_per_person: int | None = None  # ... and this many images each
    pairs_per_class: int | None = None  # quick: the first k matched + k mismatched pairs
    probe_people: int = 0           # quick: also align this many peopleDevTest people (probes)
    min_images: int = 4             # identities with fewer aligned images are not trained on
    lfw_minsize: float = 40         # MTCNN minsize for the LFW photos (faces are all larger)
    celeba_images: int = 2000
    moon_iters: int = 500
    moon_width: float = 0.125
    moon_batch: int = 32
    model: str = "fast"
    width: float = 0.125
    batch: int = 32
    iters: int = 1000               # pre-training + fine-tuning, split 70/30
    mirror: str = "concat"          # features: none, concat (SphereFace) or sum
    pretrain_lr: float = 0.05
    finetune_lr: float = 0.01
    lambda1: float = 1.0
    seed: int = 1                   # the solvers' random_seed: the same weights, the same figures
    threads: int = 1                # BLAS threads of the multi-task net's Caffe and of the feature extraction
    snapshot: int = 100
    test_interval: int = 100        # validation passes (the generator's default, 2000 scaled, would be every 12)
    watch: int = 350                # a verification check on pairsDevTest every N iterations (train.py --watch; 0: none)
    workers: int = 2


FULL = Plan()
QUICK = Plan(lfw_min_images=30, max_people=8, max_per_person=10, pairs_per_class=15, probe_people=4, min_images=4,
             celeba_images=300, moon_iters=40, moon_batch=16, batch=16, iters=45, mirror="none", snapshot=20,
             test_interval=15, watch=0)


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


class Demo:
    def __init__(self, args):
        plan = QUICK if args.quick else FULL
        changes = {k: getattr(args, k) for k in Plan.__dataclass_fields__ if getattr(args, k, None) is not None}
        self.plan = replace(plan, **changes)
        self.quick = args.quick
        self.work = args.work.resolve()
        self.lock = OutputLock(self.work)  # a second demo on the same work folder stops at once, naming the first
        self.data = (args.data or data_root()).resolve()
        self.env = {"MTDNN_DATA": str(self.data), "GLOG_minloglevel": "2", "PYTHONUNBUFFERED": "1"}
        p = self.plan
        # A fixed number of BLAS threads, not the machine's core count: Caffe's reductions (BatchNorm
        # statistics, bias gradients) add in an order that depends on it, so the figures would too.
        self.blas_env = {**self.env, **blas_threads_env(p.threads)}
        w = self.work
        self.lists = w / "lists"
        self.lfw_aligned = w / "lfw-112x96"
        self.celeba_aligned = w / "celeba-112x96"
        self.db = w / "lfw-db"
        self.runs = w / "runs"
        self.moon = self.runs / "moon"
        self.run = self.runs / f"{p.model}_w{p.width:g}"
        self.eval = self.run / "eval"
        self.features = w / "features"
        self.pretrain_iter = max(1, round(p.iters * 0.7))
        self.finetune_iter = max(1, p.iters - self.pretrain_iter)
        self.lfw_photos = lfw_photo_folder(self.data)
        self.celeba_missing = [] if args.no_celeba else celeba_missing(self.data)
        self.recognition_only = args.no_celeba or bool(self.celeba_missing)
        if p.pairs_per_class:
            self.view1 = (self.lists / "pairsDevTrain_subset.txt", self.lists / "pairsDevTest_subset.txt")
        else:
            self.view1 = (self.data / "lfw" / "pairsDevTrain.txt", self.data / "lfw" / "pairsDevTest.txt")

    # ----------------------------------------------------------------- checks and glue

    def check_inputs(self) -> None:
        need = [self.lfw_photos, self.data / "lfw" / "peopleDevTrain.txt",
                self.data / "lfw" / "peopleDevTest.txt", self.data / "lfw" / "pairsDevTrain.txt",
                self.data / "lfw" / "pairsDevTest.txt", self.data / "mtcnn" / "det1.caffemodel"]
        missing = [str(p) for p in need if not p.exists()]
        if missing:
            raise DemoInputError(f"the data folder {self.data} lacks {', '.join(missing)}: run `make data` "
                            f"(docs/data.md), or pass --data (or set MTDNN_DATA) pointing at the folder "
                            f"holding lfw/, celeba/ and mtcnn/")
        caffe = Path(PY).parent / "caffe"
        if not caffe.is_file() and not shutil.which("caffe"):
            raise DemoError("no caffe binary beside this Python or on PATH: run `make setup` first")
        self.work.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.work).free
        want = (0.3 if self.quick else 2.0) * 2**30
        if free < want:
            raise DemoError(f"only {free / 2**30:.2f} GiB free for the work folder {self.work}; the demo needs "
                            f"about {want / 2**30:.1f} GiB: free some space or pass --work on another disk")

    def write_lists(self) -> str:
        p = self.plan
        lfw = self.data / "lfw"
        if p.pairs_per_class:
            subset_pairs(lfw / "pairsDevTrain.txt", self.view1[0], p.pairs_per_class)
            subset_pairs(lfw / "pairsDevTest.txt", self.view1[1], p.pairs_per_class)
        pair_imgs = sorted(set(lfw_pair_images(self.view1[0])) | set(lfw_pair_images(self.view1[1])))
        train_imgs = lfw_train_people_images(lfw / "peopleDevTrain.txt", p.lfw_min_images, p.max_people,
                                             p.max_per_person)
        probe_imgs = lfw_train_people_images(lfw / "peopleDevTest.txt", 1, p.probe_people, p.max_per_person) \
            if p.probe_people else []
        images = sorted(set(pair_imgs) | set(train_imgs) | set(probe_imgs))
        missing = [i for i in images if not (self.lfw_photos / i).is_file()]
        if missing:
            raise DemoInputError(f"{len(missing)} LFW photo(s) named by the lists are missing from "
                            f"{self.lfw_photos}, e.g. {missing[0]}")
        atomic_write_text(self.lists / "lfw_align.txt", "".join(i + "\n" for i in images))
        return (f"{len(images)} LFW photos to align: {len(pair_imgs)} of the View 1 pairs, "
                f"{len(train_imgs)} of {len({person(i) for i in train_imgs})} training people"
                + (f", {len(probe_imgs)} of {p.probe_people} peopleDevTest people" if probe_imgs else ""))

    def write_train_list(self) -> str:
        from mtdnn.datasets import read_lfw_people
        wanted = (self.lists / "lfw_align.txt").read_text().split()
        have, missing = aligned_images(self.lfw_aligned, wanted)
        train_people = {name for fold in read_lfw_people(self.data / "lfw" / "peopleDevTrain.txt") for name, _ in fold}
        train = [i for i in have if person(i) in train_people]
        # features: what the evaluations read, i.e. the View 1 pairs' images (threshold and test)
        # and every image of people outside peopleDevTrain (identification probes and distractors)
        pairs = set(lfw_pair_images(self.view1[0])) | set(lfw_pair_images(self.view1[1]))
        features = [i for i in have if i in pairs or person(i) not in train_people]
        atomic_write_text(self.lists / "lfw_train.txt", "".join(f"{i} {person(i)}\n" for i in train))
        atomic_write_text(self.lists / "lfw_features.txt", "".join(i + "\n" for i in features))
        return (f"{len(have)} aligned LFW images ({len(missing)} without a face): {len(train)} of peopleDevTrain "
                f"people (training candidates), {len(features)} for the evaluations")

    def write_attr_list(self) -> str:
        names = read_names(self.moon / "eval" / "heldout_scores.names.txt")  # the one record format
        write_names(self.lists / "celeba_heldout.txt", names)
        return f"{len(names)} held-out CelebA images"

    # ----------------------------------------------------------------- stages

    def stages(self) -> list[Stage]:
        p, w = self.plan, self.work
        tool = lambda name: TOOLS / name  # noqa: E731
        lfw = self.data / "lfw"
        weights = self.run / f"finetune_iter_{self.finetune_iter}.caffemodel"
        deploy = self.run / "deploy.prototxt"
        extract = [PY, tool("extract_features.py"), "--deploy", deploy, "--weights", weights, "--restart"]
        eval_lfw = [PY, tool("eval_lfw.py"), "--features", self.features / "lfw_fc5",
                    "--view1", *self.view1, "--missing", "wrong", "--out", self.eval]
        if self._has_flag("eval_lfw.py", "--no-view2"):
            eval_lfw.insert(-2, "--no-view2")
        S = lambda name, title, cmd=None, env=None, **kw: Stage(name, title, cmd=cmd, env=env or self.env,  # noqa: E731
                                                                tool=cmd[1] if cmd else None, **kw)
        stages = [
            S("moon", "Train the MOON attribute classifier on CelebA",
              [PY, tool("train_attributes.py"), "--out", self.moon, "--aligned", self.celeba_aligned,
               "--celeba", self.data / "celeba", "--limit", p.celeba_images, "--iters", p.moon_iters,
               "--width", p.moon_width, "--batch", p.moon_batch, "--workers", p.workers],
              background=True),  # first: it needs nothing of LFW, so other LFW sizes reuse it; one-thread Caffe,
            # so LFW alignment and the LMDB use the other core
            S("lists", "Choose the LFW images to align and the View 1 pairs", func=self.write_lists,
              describe=f"write {self.lists / 'lfw_align.txt'}"
              + (f" and the View 1 subsets {self.view1[0].name}, {self.view1[1].name}" if p.pairs_per_class else ""),
              outputs=(self.lists / "lfw_align.txt",) + (self.view1 if p.pairs_per_class else ())),
            S("align_lfw", "Align the LFW photos (MTCNN + 5 points)",
              [PY, tool("align_faces.py"), self.lfw_photos, self.lfw_aligned,
               "--list", self.lists / "lfw_align.txt", "--workers", p.workers, "--minsize", p.lfw_minsize,
               "--allow-failures"]),
            S("train_list", "List the aligned training images", func=self.write_train_list,
              describe=f"write {self.lists / 'lfw_train.txt'} and {self.lists / 'lfw_features.txt'}",
              outputs=(self.lists / "lfw_train.txt", self.lists / "lfw_features.txt")),
            S("build_db", "Build the training LMDB + HDF5",
              [PY, tool("build_db.py"), self.db, "--list", self.lists / "lfw_train.txt",
               "--root", self.lfw_aligned, "--placeholder-attributes", 7, "--min-images", p.min_images,
               "--force"]),
            S("label", "Label the training set with MOON (vote per identity)",
              [PY, tool("label_attributes.py"), "--model", self.moon, "--db", self.db, "--force"],
              after=("moon",)),
            S("check_db", "Check the LMDB/HDF5 order", [PY, tool("check_db.py"), self.db]),
            S("train", "Train the multi-task net (pre-train, fine-tune)",
              [PY, tool("train.py"), "--model", p.model, "--data", self.db, "--run", self.run,
               "--width", p.width, "--batch", p.batch, "--pretrain-iter", self.pretrain_iter,
               "--finetune-iter", self.finetune_iter, "--pretrain-lr", p.pretrain_lr,
               "--finetune-lr", p.finetune_lr, "--lambda1", p.lambda1, "--seed", p.seed, "--threads", p.threads,
               "--snapshot", p.snapshot,
               "--test-interval", p.test_interval,
               "--display", max(1, min(20, p.iters // 30))]
              + (["--watch", p.watch, "--watch-pairs", self.view1[1], "--watch-images", self.lfw_aligned]
                 if p.watch else []),
              restart_flag="--restart"),  # other sizes or data: train afresh, not on from old snapshots
            S("extract_lfw", "Extract LFW features (fc5)",
              extract + ["--list", self.lists / "lfw_features.txt", "--root", self.lfw_aligned,
                         "--mirror", p.mirror, "--out", self.features / "lfw_fc5"], env=self.blas_env),
            S("extract_celeba", "Extract CelebA distractor features",
              extract + ["--tree", self.celeba_aligned, "--mirror", p.mirror, "--out", self.features / "celeba_fc5"], env=self.blas_env),
            S("attr_list", "List MOON's held-out CelebA images", func=self.write_attr_list,
              describe=f"write {self.lists / 'celeba_heldout.txt'}", outputs=(self.lists / "celeba_heldout.txt",)),
            S("extract_attributes", "Predict attributes on held-out CelebA",
              extract + ["--list", self.lists / "celeba_heldout.txt", "--root", self.celeba_aligned,
                         "--blob", "attr_pred", "--out", self.features / "celeba_heldout_attr"], env=self.blas_env),
            S("eval_lfw", "LFW View 1 verification", eval_lfw),
            S("eval_identification", "Identification (MegaFace-style stand-in)",
              [PY, tool("eval_identification.py"), "--lfw", self.features / "lfw_fc5",
               "--distractors", self.features / "celeba_fc5", "--exclude", lfw / "peopleDevTrain.txt",
               "--label", self.run.name, "--out", self.eval]),
            S("eval_attributes", "Attribute accuracy (Tab. 4)",
              [PY, tool("eval_attributes.py"), "--predictions", self.features / "celeba_heldout_attr",
               "--labels", self.data / "celeba" / "list_attr_celeba.txt", "--out", self.eval]),
            S("report", "The paper's tables next to ours",
              [PY, tool("report.py"), self.runs, "--out", w / "results.md"]),
            S("summary", "Write the demo report", func=self.write_summary,
              describe=f"write {self.work / 'report.md'}"),
        ]
        return self.without_celeba(stages) if self.recognition_only else stages

    # ----------------------------------------------------------------- without CelebA (issue 20, item 7)

    CELEBA_STAGES = ("moon", "label", "extract_celeba", "attr_list", "extract_attributes", "eval_identification",
                     "eval_attributes")

    def without_celeba(self, stages: list[Stage]) -> list[Stage]:
        """The recognition half alone: the stages that read CelebA or MOON are left out (the
        report lists them as skipped), the net trains with lambda1 = 0 in both phases (its
        attribute labels stay build_db's placeholders, which a zero weight ignores)."""
        out = []
        for s in stages:
            if s.name in self.CELEBA_STAGES:
                continue
            if s.name == "train":
                cmd = list(s.cmd)
                cmd[cmd.index("--lambda1") + 1] = 0
                s = replace(s, cmd=cmd)
            out.append(s)
        return out

    def skipped_note(self) -> str:
        why = "--no-celeba" if not self.celeba_missing else f"CelebA is not in {self.data / 'celeba'} " \
            f"({', '.join(self.celeba_missing)})"
        return (f"{why}: the recognition half runs alone. Skipped: {', '.join(self.CELEBA_STAGES)} (MOON, the "
                f"attribute labels, the identification stand-in whose distractors are CelebA images, the "
                f"attribute tables); the net trains without the attribute loss (lambda1 = 0). `make data-demo` "
                f"fetches CelebA (docs/data.md)")

    @staticmethod
    def _has_flag(tool: str, flag: str) -> bool:
        path = TOOLS / tool
        return path.is_file() and flag in path.read_text()

    # ----------------------------------------------------------------- the report

    def write_summary(self) -> str:
        from mtdnn.demo import fmt_time as ft
        w = self.work
        rel = lambda p: os.path.relpath(p, w)  # noqa: E731
        load = lambda p: json.loads(Path(p).read_text()) if Path(p).is_file() else {}  # noqa: E731
        lfw, ident, attr = load(self.eval / "lfw.json"), load(self.eval / "identification.json"), \
            load(self.eval / "attributes.json")
        moon_attr, moon_meta = load(self.moon / "eval" / "attributes.json"), load(self.moon / "moon.json")
        train_m, val_m = load(self.db / "train_manifest.json"), load(self.db / "val_manifest.json")
        state = load(self.run / "run.json")
        p = self.plan
        lines = [f"# Demo report{' (quick mode: NOT the View 1 protocol, tiny sizes)' if self.quick else ''}", "",
                 f"Wang et al., ICMR 2017, reproduced at toy scale on CPU by `tools/demo.py"
                 f"{' --quick' if self.quick else ''}` on {time.strftime('%Y-%m-%d %H:%M')} "
                 f"({os.cpu_count()} CPU cores, data {self.data}).", "",
                 "## Data", ""]
        n_align = len((self.lists / "lfw_align.txt").read_text().split())
        n_have = len(aligned_images(self.lfw_aligned, (self.lists / "lfw_align.txt").read_text().split())[0])
        n_feat = len((self.lists / "lfw_features.txt").read_text().split())
        rows = [
            ("LFW photos aligned (MTCNN + 5 points)", f"{n_have} of {n_align}"),
            ("LFW images with features (View 1 pairs, people outside peopleDevTrain)", f"{n_feat}"),
            ("training set (peopleDevTrain people with >= %d aligned images)" % p.min_images,
             f"{train_m.get('count', '?')} images, {train_m.get('num_identities', '?')} identities"),
            ("validation (one image per identity)", f"{val_m.get('count', '?')} images"),
            ("CelebA images for MOON", "skipped (no CelebA)" if self.recognition_only else
             f"{moon_meta.get('images', {}).get('aligned', '?')} aligned of "
                                       f"{moon_meta.get('images', {}).get('attribute_file', '?')}; "
                                       f"{moon_meta.get('images', {}).get('train', '?')} train, "
                                       f"{moon_meta.get('images', {}).get('evaluation', '?')} held out "
                                       f"({moon_meta.get('split', '?')})"),
            ("View 1 pairs", f"threshold from {self.view1[0].name}, accuracy on {self.view1[1].name}"),
        ]
        lines += ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
        if self.recognition_only:
            lines += ["## Skipped", "", f"Without CelebA: {self.skipped_note()}.", "",
                      "| stage | state |", "|---|---|"] + [f"| {n} | skipped (no CelebA) |" for n in self.CELEBA_STAGES] + [""]
        lines += ["## Models", ""]
        lines += [] if self.recognition_only else [
                  f"- MOON: Fast trunk at width {p.moon_width}, batch {p.moon_batch}, {p.moon_iters} iterations "
                  f"(`{rel(self.moon)}`; curves `{rel(self.moon / 'train.png')}`)."]
        lines += [f"- Multi-task net: `{p.model}` at width {p.width}, batch {p.batch}, "
                  f"{self.pretrain_iter} pre-training (lr {p.pretrain_lr}, lambda1 = 0) + {self.finetune_iter} "
                  f"fine-tuning iterations (lr {p.finetune_lr}, lambda1 = {0 if self.recognition_only else p.lambda1}), "
                  f"{state.get('identities', '?')} identities (`{rel(self.run)}`).", ""]

        lines += ["## Results", ""]
        if lfw.get("view1"):
            v = lfw["view1"]
            subset = "a subset of " if p.pairs_per_class else ""
            lines += [f"**LFW View 1**: accuracy **{100 * v['accuracy']:.2f} %** on {subset}pairsDevTest (chance "
                      f"50 %), threshold {v.get('threshold', float('nan')):.4f} chosen on {subset}pairsDevTrain, "
                      f"{lfw.get('rule', '?')} rule.", ""]
        if ident.get("results"):
            lines += [f"**Identification stand-in** (not MegaFace): {ident.get('n_probes')} probe images of "
                      f"{ident.get('n_identities')} peopleDevTest people; distractors: CelebA + one-image LFW people.",
                      "", "| distractors | rank-1 (%) | " + " | ".join(
                          f"TAR @ FAR {t['far']:g} (%)" for t in ident["results"][0]["tar_at_far"]) + " |",
                      "|---|---|" + "---|" * len(ident["results"][0]["tar_at_far"])]
            for s in ident["results"]:
                lines.append(f"| {s['distractors']:,} | {100 * s['rank1']:.2f} | " +
                             " | ".join(tar_text(t, s.get("n_impostor_pairs")) for t in s["tar_at_far"]) + " |")
            lines += ["", "A TAR at a FAR below 1 / (impostor pairs) cannot be measured on this many pairs "
                      "(not one false accept is allowed): such cells say *out of range*.", ""]
        if attr.get("attributes"):
            moon_by = {a["name"]: a for a in moon_attr.get("attributes", [])}
            lines += [f"**Attributes** on {attr['attributes'][0].get('n', '?')} held-out CelebA images "
                      f"(the paper's rule, score > 0 predicts +1; balanced accuracy in brackets, *chance* when it "
                      f"is <= 50 %). The columns marked *extra* are not the paper's figures: AUC of the scores, "
                      f"and accuracy with a threshold chosen on the other half of the images instead of 0:", "",
                      "| attribute | multi-task net | MOON (its teacher) | majority class | net AUC (extra) | "
                      "MOON AUC (extra) | net acc. at val. threshold (extra) | MOON acc. at val. threshold (extra) |",
                      "|---|---|---|---|---|---|---|---|"]
            for a in attr["attributes"]:
                m = moon_by.get(a["name"])
                lines.append(f"| {a['name']} | {_attr_figures(a)} | " + (_attr_figures(m) if m else "-")
                             + f" | {100 * a['majority_baseline']:.2f} | "
                             + " | ".join(_attr_extra(x, k) for k in ("auc", "val_threshold") for x in (a, m)) + " |")
            lines.append("")
            faces = self.write_faces()
            if faces:
                lines += [f"**Faces**: input photos, their aligned crops and the multi-task net's attribute "
                          "scores (decision / true label):", "", f"![{rel(faces)}]({rel(faces)})", ""]

        checks = [r for r in watch_rows(self.run) if r.get("accuracy")]
        if checks:
            lines += [f"**Watched training** (`tools/train.py --watch {p.watch}`): accuracy on "
                      f"{self.view1[1].name} (10-fold) of the snapshots while the net trained: "
                      + ", ".join(f"{r['phase']} {r['iteration']}: {100 * float(r['accuracy']):.2f} %" for r in checks)
                      + f" (`{rel(self.run / 'verification.csv')}`; the fourth panel of the curves).", ""]
        plots = sorted(p for p in w.joinpath("runs").rglob("*.png"))
        lines += ["## Plots", ""] + [f"![{rel(q)}]({rel(q)})" for q in plots] + [""]

        timings = self.runner.timings
        total_run = sum(t["seconds"] or 0 for t in timings if not t["reused"])
        lines += ["## Stages", "",
                  f"Wall time of this run: {ft(time.time() - self.runner.start)} (stages run now: "
                  f"{ft(total_run)}; reused stages show the time they took when they ran).", "",
                  "| # | stage | seconds | reused | command |", "|---|---|---|---|---|"]
        for i, t in enumerate(timings, 1):
            cmd = t["command"].replace(str(w) + "/", "").replace(str(REPO) + "/", "").replace("|", "\\|")
            lines.append(f"| {i} | {t['stage']} | {t['seconds'] or 0:.0f} | {'yes' if t['reused'] else ''} | "
                         f"`{cmd}` |")
        lines += ["", "## The paper's tables", "",
                  f"`{rel(w / 'results.md')}` (tools/report.py) puts these figures next to the paper's; "
                  "its tables follow. Our numbers come from a tiny network trained for minutes on a few "
                  "thousand LFW images, not from CASIA-WebFace for a day: they show that the pipeline "
                  "works end to end, not the paper's accuracy.", ""]
        results = (w / "results.md").read_text() if (w / "results.md").is_file() else ""
        lines += ["#" + ln if ln.startswith("#") else ln for ln in results.splitlines()[1:]]
        atomic_write_text(w / "report.md", "\n".join(lines) + "\n")
        atomic_write_text(w / "timings.json", json.dumps(timings, indent=1) + "\n")
        return f"report: {w / 'report.md'}"

    def write_faces(self) -> Path | None:
        """WORK/faces.png: held-out CelebA photos, their crops and the net's predicted attributes."""
        from mtdnn.demo import attribute_faces
        from mtdnn.evaluation.plots import plot_face_montage
        pred = self.features / "celeba_heldout_attr"
        photos = self.data / "celeba" / "img_align_celeba_89x109"
        if not Path(f"{pred}.npy").is_file() or not photos.is_dir():
            return None
        faces = attribute_faces(pred, self.data / "celeba" / "list_attr_celeba.txt", photos,
                                self.celeba_aligned, count=8)
        return plot_face_montage(faces, self.work / "faces.png")

    # ----------------------------------------------------------------- main

    def main(self, redo: str | None, quiet_tools: bool) -> int:
        self.check_inputs()
        self.runner = Runner(self.work, quiet_tools=quiet_tools)
        stages = self.stages()
        if redo:
            self.runner.forget_from(stages, redo)
        print(f"demo{' (quick)' if self.quick else ''}: work folder {self.work}, data {self.data}, "
              f"LFW photos {self.lfw_photos.name}/", flush=True)
        if self.recognition_only:
            print(f"demo: {self.skipped_note()}", flush=True)
        self.runner.run(stages)
        total = time.time() - self.runner.start
        print(f"demo finished in {fmt_time(total)}: {self.work / 'report.md'}", flush=True)
        return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return Demo(args).main(args.redo, args.quiet_tools)
    except (DemoError, OutputBusy) as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, DemoInputError) else 1
    except KeyboardInterrupt:
        print("demo.py: interrupted; rerun the same command to continue (finished stages are reused)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
