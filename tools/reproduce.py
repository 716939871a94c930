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
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn.demo import DemoError, Runner, Stage, fmt_time  # noqa: E402
from mtdnn.fileio import atomic_write_text  # noqa: E402
from mtdnn.paths import REPO, data_root  # noqa: E402
from mtdnn.reproduce import (figures_from_results, format_differences, format_summary, measured,  # noqa: E402
                             paired_difference, run_figures, summarise)

TOOLS = REPO / "tools"
PY = sys.executable
# (a, b, measures): the paper's claims, as paired differences a - b
CLAIMS = [
    ("fast", "fast_noattr", ("lfw_view1", "blufr_unseen_tar", "blufr_unseen_dir", "ident_rank1")),  # Tab. 2, 3, 7
    ("full", "full_noattr", ("lfw_view1", "blufr_unseen_tar", "blufr_unseen_dir", "ident_rank1")),  # likewise
    ("full", "fast", ("lfw_view1", "blufr_unseen_tar", "blufr_unseen_dir", "ident_rank1", "attr_accuracy")),  # Tab. 5
]


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


class Reproduction:
    def __init__(self, args):
        self.args = args
        self.data = (args.data or data_root()).resolve()
        self.demo = args.demo_work.resolve()
        self.work = args.work.resolve()
        self.lfw_aligned = self.work / "lfw-112x96"
        self.celeba_aligned = self.demo / "celeba-112x96"
        self.db = self.demo / "lfw-db"
        self.heldout = self.demo / "lists" / "celeba_heldout.txt"
        self.models = [m for m in args.models.split(",") if m]
        self.seeds = [int(s) for s in args.seeds.split(",") if s]
        self.pretrain_iter = max(1, round(args.iters * 0.7))
        self.finetune_iter = max(1, args.iters - self.pretrain_iter)
        self.env = {"MTDNN_DATA": str(self.data), "GLOG_minloglevel": "2", "PYTHONUNBUFFERED": "1"}

    def run_dir(self, model: str, seed: int) -> Path:
        return self.work / "runs" / f"{model}_s{seed}"

    # ------------------------------------------------------------------ shared inputs

    def check_demo(self) -> None:
        need = [self.demo / ".done" / "check_db.json", self.demo / ".done" / "attr_list.json", self.heldout,
                self.celeba_aligned, self.demo / "lfw-112x96" / "landmarks.txt"]
        missing = [str(p) for p in need if not p.exists()]
        if missing:
            raise DemoError(f"the demo's work folder {self.demo} is not complete (missing {', '.join(missing)}): "
                            f"run `make demo` (or tools/demo.py --work {self.demo}) first")

    def align_all_lfw(self) -> None:
        """Every LFW photo aligned (BLUFR needs all 13,233): the demo's crops reused, the rest aligned."""
        if not self.lfw_aligned.exists():
            tmp = self.lfw_aligned.with_name(self.lfw_aligned.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(self.demo / "lfw-112x96"), str(tmp)], check=True)
            for log in tmp.glob("*.txt"):  # crops are hard links; the logs align_faces appends to are copies
                shutil.copyfile(self.demo / "lfw-112x96" / log.name, log.with_suffix(".copy"))
                os.replace(log.with_suffix(".copy"), log)
            os.replace(tmp, self.lfw_aligned)
        Runner(self.work).run([Stage("align_all_lfw", "Align all of LFW (the demo's crops reused)",
                                     cmd=[PY, TOOLS / "align_faces.py", self.data / "lfw" / "lfw-deepfunneled",
                                          self.lfw_aligned, "--workers", 2, "--minsize", self.args.lfw_minsize,
                                          "--allow-failures"],
                                     env=self.env)])

    # ------------------------------------------------------------------ one run

    def stages(self, model: str, seed: int) -> list[Stage]:
        a, run = self.args, self.run_dir(model, seed)
        feats, ev = run / "features", run / "eval"
        from mtdnn.netgen import ALIASES, VARIANTS
        attributes = bool(VARIANTS[ALIASES.get(model, model)].attributes)
        extract = [PY, TOOLS / "extract_features.py", "--deploy", run / "deploy.prototxt", "--weights",
                   run / f"finetune_iter_{self.finetune_iter}.caffemodel", "--quiet"]
        S = lambda name, title, cmd: Stage(name, title, cmd=cmd, env=self.env, tool=cmd[1])  # noqa: E731
        lfw = self.data / "lfw"
        stages = [
            S("train", f"Train {model} (seed {seed})",
              [PY, TOOLS / "train.py", "--model", model, "--data", self.db, "--run", run, "--quiet",
               "--threads", 1 if a.jobs > 1 else 2, "--seed", seed, "--width", a.width, "--batch", a.batch,
               "--pretrain-iter", self.pretrain_iter, "--finetune-iter", self.finetune_iter,
               "--pretrain-lr", a.pretrain_lr, "--finetune-lr", a.finetune_lr, "--lambda1", a.lambda1,
               "--snapshot", max(1, a.iters // 6), "--test-interval", max(1, a.iters // 6),
               "--display", max(1, min(20, a.iters // 30))]),
            S("extract_lfw", "fc5 of every aligned LFW image",
              extract + ["--tree", self.lfw_aligned, "--out", feats / "lfw_fc5"]),
            S("extract_celeba", "fc5 of the aligned CelebA images (distractors)",
              extract + ["--tree", self.celeba_aligned, "--out", feats / "celeba_fc5"]),
            S("eval_lfw", "LFW View 1", [PY, TOOLS / "eval_lfw.py", "--features", feats / "lfw_fc5",
                                         "--view1", lfw / "pairsDevTrain.txt", lfw / "pairsDevTest.txt",
                                         "--label", run.name, "--out", ev]),
            S("eval_blufr", "BLUFR without the training people",
              [PY, TOOLS / "eval_blufr.py", "--features", feats / "lfw_fc5", "--quiet",
               "--exclude", lfw / "peopleDevTrain.txt", "--label", run.name, "--out", ev]),
            S("eval_identification", "Identification stand-in",
              [PY, TOOLS / "eval_identification.py", "--lfw", feats / "lfw_fc5", "--distractors",
               feats / "celeba_fc5", "--exclude", lfw / "peopleDevTrain.txt", "--label", run.name, "--quiet",
               "--out", ev]),
        ]
        if attributes:
            stages += [
                S("extract_attributes", "attr_pred of MOON's held-out CelebA images",
                  extract + ["--list", self.heldout, "--root", self.celeba_aligned, "--blob", "attr_pred",
                             "--out", feats / "celeba_heldout_attr"]),
                S("eval_attributes", "Attribute accuracy",
                  [PY, TOOLS / "eval_attributes.py", "--predictions", feats / "celeba_heldout_attr",
                   "--labels", self.data / "celeba" / "list_attr_celeba.txt", "--out", ev]),
            ]
        return stages

    def run_one(self, model: str, seed: int) -> int:
        run = self.run_dir(model, seed)
        run.mkdir(parents=True, exist_ok=True)
        if self.args.jobs > 1:
            self.env["OPENBLAS_NUM_THREADS"] = "1"
        Runner(run).run(self.stages(model, seed))
        return 0

    def run_all(self) -> None:
        """Every (model, seed) as a child process, --jobs at a time, seed-major so that whole seeds finish first."""
        t0 = time.time()

        def child(ms: tuple[str, int]) -> str | None:
            m, s = ms
            run = self.run_dir(m, s)
            run.mkdir(parents=True, exist_ok=True)
            print(f"== {fmt_time(time.time() - t0)} start {run.name}: log {run / 'reproduce.log'}", flush=True)
            start = time.time()
            with open(run / "reproduce.log", "a") as log:
                rc = subprocess.run([PY, __file__, "--one", m, str(s)] + self.passthrough(), stdout=log,
                                    stderr=subprocess.STDOUT).returncode
            status = "done" if rc == 0 else f"FAILED (status {rc})"
            print(f"== {fmt_time(time.time() - t0)} {run.name} {status} in {fmt_time(time.time() - start)}", flush=True)
            return run.name if rc else None

        with ThreadPoolExecutor(self.args.jobs) as pool:  # map hands out the runs in order
            failed = [name for name in pool.map(child, [(m, s) for s in self.seeds for m in self.models]) if name]
        if failed:
            print(f"reproduce.py: {len(failed)} run(s) failed: {', '.join(failed)}; see their reproduce.log, fix "
                  f"the cause and rerun (finished stages are reused)", file=sys.stderr)

    def passthrough(self) -> list[str]:
        a = self.args
        return ["--demo-work", str(self.demo), "--work", str(self.work), "--data", str(self.data),
                "--jobs", str(a.jobs), "--width", str(a.width), "--batch", str(a.batch), "--iters", str(a.iters),
                "--pretrain-lr", str(a.pretrain_lr), "--finetune-lr", str(a.finetune_lr),
                "--lambda1", str(a.lambda1)]

    # ------------------------------------------------------------------ the report

    def report(self, command: str, wall: float | None) -> Path:
        if self.args.from_results:
            earlier = json.loads(self.args.from_results.read_text())
            runs = {m: by_seed for m, by_seed in figures_from_results(earlier).items() if m in self.models}
            runs = {m: {s: f for s, f in by_seed.items() if s in self.seeds} for m, by_seed in runs.items()}
            moon_acc, moon_bal = earlier["moon"]["attr_accuracy"], earlier["moon"]["attr_balanced"]
            moon_images = earlier["moon"].get("images")
            wall, command = earlier.get("wall_seconds"), earlier.get("command", command)
        else:
            runs = {m: {} for m in self.models}
            for m in self.models:
                for s in self.seeds:
                    figures = run_figures(self.run_dir(m, s))
                    if figures:
                        runs[m][s] = figures
            moon = json.loads((self.demo / "runs" / "moon" / "eval" / "attributes.json").read_text())
            moon_acc = sum(r["accuracy"] for r in moon["attributes"]) / len(moon["attributes"])
            moon_bal = sum(r["balanced_accuracy"] for r in moon["attributes"]) / len(moon["attributes"])
            moon_images = moon.get("images")
        summary = summarise(runs)
        diffs = [d for a, b, keys in CLAIMS for k in keys if (d := paired_difference(runs, a, b, k))]
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        results = {"command": command, "wall_seconds": wall, "budget": self.budget(), "runs": runs,
                   "summary": summary, "differences": diffs,
                   "moon": {"attr_accuracy": moon_acc, "attr_balanced": moon_bal, "images": moon_images}}
        atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
        self.plot(runs, out / "reproduction.png")
        lines = ["# Small-scale reproduction", "",
                 "Generated by `tools/reproduce.py` from the run folders' eval/*.json; do not edit by hand.", "",
                 "## Command", "", "```", "make demo   # the data: aligned LFW/CelebA, MOON labels, LFW View 1 LMDB",
                 command, "```", ""]
        if wall:
            lines += [f"Wall time of that command: {fmt_time(wall)} (min:s) on {os.cpu_count()} CPU cores.", ""]
        lines += ["## Budget (identical for every model)", ""] + [f"- {k}: {v}" for k, v in self.budget().items()]
        lines += ["", "## Results (mean ± standard deviation over seeds, %)", ""] + format_summary(summary)
        lines += ["", f"MOON, the attribute teacher (single-task, Fast trunk, trained on CelebA): attribute accuracy "
                      f"{100 * moon_acc:.2f} %, balanced {100 * moon_bal:.2f} % on the same held-out CelebA images.",
                  "", "![per-seed figures](reproduction.png)", "",
                  "## The paper's claims at this scale", "",
                  "Paired by seed (the same seed gives both models the same solver random_seed); 95 % Student t "
                  "interval of the mean difference. 'not distinguishable' means the interval contains 0.", ""]
        lines += format_differences(diffs)
        shown = measured(runs)
        lines += ["", "## Per run", "", "| run | " + " | ".join(t for _, t in shown) + " |",
                  "|---|" + "---|" * len(shown)]
        for m, by_seed in runs.items():
            for s, f in sorted(by_seed.items()):
                lines.append(f"| {m}_s{s} | " + " | ".join(f"{100 * f[k]:.2f}" if k in f else "-"
                                                            for k, _ in shown) + " |")
        if self.args.note:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.args.note]
        lines += ["", "## Caveats", "",
                  "- Tiny networks (width 1/8) trained for minutes on ~3,600 images of 188 LFW people, not "
                  "CASIA-WebFace for 100,000 iterations: the absolute figures say nothing about the paper's.",
                  "- Every figure is on people the models never saw: LFW View 1's test pairs (pairsDevTest "
                  "people, disjoint from the peopleDevTrain training people), the identification stand-in "
                  "(probes and LFW distractors outside peopleDevTrain, CelebA distractors) and the held-out "
                  "CelebA attribute images. BLUFR's test sets hold nearly all of LFW, including the 188 "
                  "training people (63 to 94 % of the genuine pairs of every trial): BLUFR is reported only "
                  "when evaluated without the peopleDevTrain people (eval_blufr.py --exclude), as mean − std "
                  "over its trials.",
                  "- The identification stand-in is not MegaFace (see tools/eval_identification.py --help).",
                  "- With two or three seeds the t interval is wide, and with several measures and comparisons "
                  "one interval in twenty excludes 0 by chance (no correction for multiple comparisons): "
                  "a single 'better' verdict is weak evidence unless the other measures agree.",
                  "- The attribute labels of the training set are MOON's predictions voted per identity, so the "
                  "multi-task net learns from its teacher; Tab. 4's claim is compared with that teacher. The "
                  "attribute figures use CelebA's labels on held-out CelebA images, a stand-in for the paper's "
                  "1,000 FaceScrub images labelled by three annotators (majority vote).",
                  "- The learning rates (0.05 / 0.01) and lambda1 = 1 differ from the paper's (0.01 / 0.001, "
                  "0.1), which belong to a 100,000-iteration schedule (docs/demo.md)."]
        atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
        return out / "README.md"

    def budget(self) -> dict:
        a = self.args
        return {"width": a.width, "batch": a.batch, "pretrain_iter": self.pretrain_iter,
                "finetune_iter": self.finetune_iter, "pretrain_lr": a.pretrain_lr, "finetune_lr": a.finetune_lr,
                "lambda1": a.lambda1, "seeds": self.seeds, "models": self.models,
                "training data": str(self.db.relative_to(self.demo.parent)) if self.db.is_relative_to(
                    self.demo.parent) else str(self.db)}

    @staticmethod
    def plot(runs: dict, path: Path) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        shown = measured(runs)
        rows = (len(shown) + 2) // 3
        fig, axes = plt.subplots(rows, 3, figsize=(11, 3.4 * rows), squeeze=False)
        models = list(runs)
        for ax in axes.ravel()[len(shown):]:
            ax.set_visible(False)
        for ax, (key, title) in zip(axes.ravel(), shown):
            for i, m in enumerate(models):
                vals = [100 * f[key] for f in runs[m].values() if key in f]
                if vals:
                    ax.scatter([i] * len(vals), vals, s=18, color=f"C{i}")  # a model keeps its colour in every panel
                    ax.hlines(sum(vals) / len(vals), i - 0.3, i + 0.3, color="k")
            ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
            ax.set_title(title, fontsize=8)
            ax.set_ylabel("%", fontsize=8)
        fig.suptitle("small-scale reproduction: a dot per seed, the bar is the mean", fontsize=9)
        fig.tight_layout()
        tmp = path.with_name(path.stem + ".partial.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    rep = Reproduction(args)
    try:
        if args.one:
            return rep.run_one(args.one[0], int(args.one[1]))
        words, skip = [], False  # the run's command: without --report-only and the notes
        if args.from_results and not args.report_only:
            print("reproduce.py: error: --from-results goes with --report-only", file=sys.stderr)
            return 2
        for x in (argv if argv is not None else sys.argv[1:]):
            if skip or x in ("--report-only", "--note", "--from-results"):
                skip = x in ("--note", "--from-results")
                continue
            words.append(x)
        command = "tools/reproduce.py " + " ".join(shlex.quote(x) for x in words)
        t0 = time.time()
        if not args.report_only:
            rep.check_demo()
            rep.align_all_lfw()
            rep.run_all()
        path = rep.report(command, None if args.report_only else time.time() - t0)
        print(f"report: {path}")
        return 0
    except DemoError as e:
        print(f"reproduce.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reproduce.py: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
