"""The small-scale reproduction (``tools/reproduce.py``): its study (:class:`Study`: models,
seeds, one budget), the stage list of one run (train, extract, evaluate, with the tools of
:mod:`mtdnn.pipeline`), the runs side by side, and its arithmetic: one row of figures per
trained run, mean and spread per model over seeds, and paired differences between models
with a t confidence interval, so that a difference can be told from seed noise. The report
(OUT/README.md, results.json, reproduction.png) is :mod:`mtdnn.reproduce_report`.

A run folder holds ``eval/lfw.json``, ``eval/blufr.json``, ``eval/identification.json`` and
``eval/attributes.json`` as the eval tools write them.

Every figure is measured on people the model never saw: the models are trained on LFW View 1's
training people (peopleDevTrain), and View 1's test pairs, the identification stand-in's
probes (--exclude peopleDevTrain) and the held-out CelebA attribute images are outside that
set. BLUFR's test sets hold nearly all of LFW, so a BLUFR figure is taken only from a
``blufr.json`` evaluated without the training people (``eval_blufr.py --exclude``; it says
``"standard": false``); one on all of LFW (as the reproduction of 2026-11-29 measured, 63 to
94 % of its genuine pairs from the 188 training people) is never read, so a report rebuilt
from old results cannot bring it back. BLUFR figures are its mean - std over the trials.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .paper import PAPER_ATTRIBUTES
from .pipeline import (PipelineError, Runner, Stage, eval_attributes_cmd, eval_identification_cmd, eval_lfw_cmd,
                       extract_cmd, fmt_time, tool, tool_stage)

# (key, title): the figures of one run, all fractions in [0, 1]
MEASURES = [
    ("lfw_view1", "LFW View 1 accuracy"),
    ("blufr_unseen_tar", "BLUFR TAR @ FAR 0.1 %, unseen people (mean − std)"),
    ("blufr_unseen_dir", "BLUFR DIR @ FAR 1 %, rank 1, unseen people (mean − std)"),
    ("ident_rank1", "identification rank-1 (largest distractor set)"),
    ("attr_accuracy", f"attribute accuracy (mean of {len(PAPER_ATTRIBUTES)})"),
    ("attr_balanced", f"attribute balanced accuracy (mean of {len(PAPER_ATTRIBUTES)})"),
]


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {}


def run_figures(run: Path) -> dict:
    """The figures of one run folder (a missing evaluation leaves its keys out)."""
    ev = Path(run) / "eval"
    lfw, blufr = _load(ev / "lfw.json"), _load(ev / "blufr.json")
    ident, attr = _load(ev / "identification.json"), _load(ev / "attributes.json")
    out = {}
    if "view1" in lfw:
        out["lfw_view1"] = lfw["view1"]["accuracy"]
    if blufr and blufr.get("standard") is False and blufr.get("excluded_people", 0) > 0:
        out["blufr_unseen_tar"] = blufr["verification"]["tar_mean_minus_std"]
        out["blufr_unseen_dir"] = blufr["open_set"]["dir_mean_minus_std"]
    if ident.get("results"):
        out["ident_rank1"] = ident["results"][-1]["rank1"]
        out["ident_distractors"] = ident["results"][-1]["distractors"]
    if attr.get("attributes"):
        out["attr_accuracy"] = float(np.mean([a["accuracy"] for a in attr["attributes"]]))
        out["attr_balanced"] = float(np.mean([a["balanced_accuracy"] for a in attr["attributes"]]))
    return out


def figures_from_results(results: dict) -> dict[str, dict[int, dict]]:
    """``{model: {seed: figures}}`` from a ``results.json`` written by ``tools/reproduce.py``,
    keeping only the figures of ``MEASURES`` (and the identification set size): a figure the
    current rules do not accept (e.g. BLUFR on all of LFW, stored as ``blufr_tar``) is dropped."""
    keep = {k for k, _ in MEASURES} | {"ident_distractors"}
    return {m: {int(seed): {k: v for k, v in f.items() if k in keep} for seed, f in by_seed.items()}
            for m, by_seed in results["runs"].items()}


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean; (mean, nan, nan) for fewer than 2."""
    from scipy import stats
    v = np.asarray(values, dtype=float)
    mean = float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def summarise(runs: dict[str, dict[int, dict]]) -> dict:
    """``{model: {seed: figures}}`` -> ``{model: {measure: {mean, std, n, values}}}``."""
    out = {}
    for model, by_seed in runs.items():
        out[model] = {}
        for key, _ in MEASURES:
            vals = [f[key] for _, f in sorted(by_seed.items()) if key in f]
            if vals:
                out[model][key] = {"mean": float(np.mean(vals)), "n": len(vals), "values": vals,
                                   "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")}
    return out


def paired_difference(runs: dict[str, dict[int, dict]], a: str, b: str, key: str) -> dict | None:
    """``a - b`` on the seeds both models finished: mean, 95 % t interval and a verdict."""
    seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    diffs = [runs[a][s][key] - runs[b][s][key] for s in seeds if key in runs[a][s] and key in runs[b][s]]
    if not diffs:
        return None
    mean, low, high = t_interval(diffs)
    if math.isnan(low):
        verdict = "one seed only: cannot be told from noise"
    elif low > 0:
        verdict = f"{a} better"
    elif high < 0:
        verdict = f"{b} better"
    else:
        verdict = "not distinguishable from seed noise"
    return {"a": a, "b": b, "measure": key, "n": len(diffs), "diffs": diffs, "mean": mean,
            "ci95": [low, high], "verdict": verdict}


def pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def measured(runs: dict[str, dict[int, dict]]) -> list[tuple[str, str]]:
    """The ``MEASURES`` that at least one run has (a table shows no column of dashes only)."""
    return [(k, t) for k, t in MEASURES if any(k in f for by_seed in runs.values() for f in by_seed.values())]


def format_summary(summary: dict) -> list[str]:
    """Markdown table: a row per model, mean +- std (n seeds) per measure, in %."""
    measures = [(k, t) for k, t in MEASURES if any(k in m for m in summary.values())]
    keys = [k for k, _ in measures]
    lines = ["| model | " + " | ".join(t for _, t in measures) + " |", "|---|" + "---|" * len(keys)]
    for model, m in summary.items():
        cells = [f"{pct(m[k]['mean'])} ± {pct(m[k]['std'])} (n={m[k]['n']})" if k in m else "-" for k in keys]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def format_differences(diffs: list[dict]) -> list[str]:
    titles = dict(MEASURES)
    lines = ["| comparison | measure | mean difference (points) | 95 % CI | seeds | verdict |",
             "|---|---|---|---|---|---|"]
    for d in diffs:
        lines.append(f"| {d['a']} − {d['b']} | {titles.get(d['measure'], d['measure'])} | {100 * d['mean']:+.2f} | "
                     f"[{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}] | {d['n']} | {d['verdict']} |")
    return lines


# --------------------------------------------------------------------------- the study and its runs

# (a, b, measures): the paper's claims, as paired differences a - b
CLAIMS = [
    ("fast", "fast_noattr", ("lfw_view1", "blufr_unseen_tar", "blufr_unseen_dir", "ident_rank1")),  # Tab. 2, 3, 7
    ("full", "full_noattr", ("lfw_view1", "blufr_unseen_tar", "blufr_unseen_dir", "ident_rank1")),  # likewise
    ("full", "fast", ("lfw_view1", "blufr_unseen_tar", "blufr_unseen_dir", "ident_rank1", "attr_accuracy")),  # Tab. 5
]


@dataclass
class Study:
    """Models x seeds under one budget, on a finished demo's work folder (each field is an option
    of tools/reproduce.py, whose defaults are the study of docs/reproduction: --demo-work, --work,
    --data, --models, --seeds, --jobs, --lfw-minsize, --width, ...)."""
    data: Path
    demo: Path                      # the demo's work folder: its LMDB, aligned CelebA, MOON's held-out list
    work: Path                      # the runs: WORK/runs/<model>_s<seed>, WORK/lfw-112x96
    models: list
    seeds: list
    jobs: int                       # runs at a time, one BLAS thread each
    lfw_minsize: float              # MTCNN minsize for LFW, as the demo's
    width: float
    batch: int
    iters: int                      # pre-training + fine-tuning, split 70/30
    pretrain_lr: float
    finetune_lr: float
    lambda1: float

    def __post_init__(self):
        self.data, self.demo, self.work = Path(self.data).resolve(), Path(self.demo).resolve(), Path(self.work).resolve()
        self.lfw_aligned = self.work / "lfw-112x96"
        self.celeba_aligned = self.demo / "celeba-112x96"
        self.db = self.demo / "lfw-db"
        self.heldout = self.demo / "lists" / "celeba_heldout.txt"
        self.pretrain_iter = max(1, round(self.iters * 0.7))
        self.finetune_iter = max(1, self.iters - self.pretrain_iter)
        self.env = {"MTDNN_DATA": str(self.data), "GLOG_minloglevel": "2", "PYTHONUNBUFFERED": "1"}

    def run_dir(self, model: str, seed: int) -> Path:
        return self.work / "runs" / f"{model}_s{seed}"

    def budget(self) -> dict:
        """What every model gets (the report's Budget section and results.json)."""
        return {"width": self.width, "batch": self.batch, "pretrain_iter": self.pretrain_iter,
                "finetune_iter": self.finetune_iter, "pretrain_lr": self.pretrain_lr,
                "finetune_lr": self.finetune_lr, "lambda1": self.lambda1, "seeds": list(self.seeds),
                "models": list(self.models),
                "training data": str(self.db.relative_to(self.demo.parent)) if self.db.is_relative_to(
                    self.demo.parent) else str(self.db)}


def check_demo(study: Study) -> None:
    """The demo's outputs the study reads are there, else a :class:`PipelineError` saying to run it."""
    demo = study.demo
    need = [demo / ".done" / "check_db.json", demo / ".done" / "attr_list.json", study.heldout,
            study.celeba_aligned, demo / "lfw-112x96" / "landmarks.txt"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise PipelineError(f"the demo's work folder {demo} is not complete (missing {', '.join(missing)}): "
                            f"run `make demo` (or tools/demo.py --work {demo}) first")


def align_all_lfw(study: Study) -> None:
    """Every LFW photo aligned (BLUFR needs all 13,233): the demo's crops reused, the rest aligned."""
    aligned, demo_crops = study.lfw_aligned, study.demo / "lfw-112x96"
    if not aligned.exists():
        tmp = aligned.with_name(aligned.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(demo_crops), str(tmp)], check=True)
        for log in tmp.glob("*.txt"):  # crops are hard links; the logs align_faces appends to are copies
            shutil.copyfile(demo_crops / log.name, log.with_suffix(".copy"))
            os.replace(log.with_suffix(".copy"), log)
        os.replace(tmp, aligned)
    Runner(study.work).run([tool_stage(
        "align_all_lfw", "Align all of LFW (the demo's crops reused)",
        tool("align_faces", study.data / "lfw" / "lfw-deepfunneled", aligned, "--workers", 2,
             "--minsize", study.lfw_minsize, "--allow-failures"), study.env)])


def run_stages(study: Study, model: str, seed: int, env: dict) -> list[Stage]:
    """The stage list of one run: train, extract (fc5 of every LFW and CelebA image, attr_pred of
    MOON's held-out images when the model has the attribute head) and the evaluations."""
    from .netgen import ALIASES, VARIANTS
    st, run = study, study.run_dir(model, seed)
    feats, ev, lfw = run / "features", run / "eval", study.data / "lfw"
    extract = lambda source, out, **kw: extract_cmd(  # noqa: E731
        run / "deploy.prototxt", run / f"finetune_iter_{st.finetune_iter}.caffemodel", "--quiet", source, out, **kw)
    stages = [
        tool_stage("train", f"Train {model} (seed {seed})", tool(
            "train", "--model", model, "--db", st.db, "--run", run, "--quiet", "--threads", 1 if st.jobs > 1 else 2,
            "--seed", seed, "--width", st.width, "--batch", st.batch, "--pretrain-iter", st.pretrain_iter,
            "--finetune-iter", st.finetune_iter, "--pretrain-lr", st.pretrain_lr, "--finetune-lr", st.finetune_lr,
            "--lambda1", st.lambda1, "--snapshot", max(1, st.iters // 6), "--test-interval", max(1, st.iters // 6),
            "--display", max(1, min(20, st.iters // 30))), env),
        tool_stage("extract_lfw", "fc5 of every aligned LFW image",
                   extract(["--tree", st.lfw_aligned], feats / "lfw_fc5"), env),
        tool_stage("extract_celeba", "fc5 of the aligned CelebA images (distractors)",
                   extract(["--tree", st.celeba_aligned], feats / "celeba_fc5"), env),
        tool_stage("eval_lfw", "LFW View 1", eval_lfw_cmd(
            feats / "lfw_fc5", (lfw / "pairsDevTrain.txt", lfw / "pairsDevTest.txt"), ev, "--label", run.name), env),
        tool_stage("eval_blufr", "BLUFR without the training people", tool(
            "eval_blufr", "--features", feats / "lfw_fc5", "--quiet", "--exclude", lfw / "peopleDevTrain.txt",
            "--label", run.name, "--out", ev), env),
        tool_stage("eval_identification", "Identification stand-in", eval_identification_cmd(
            feats / "lfw_fc5", feats / "celeba_fc5", lfw / "peopleDevTrain.txt", run.name, ev, quiet=True), env),
    ]
    if VARIANTS[ALIASES.get(model, model)].attributes:
        stages += [
            tool_stage("extract_attributes", "attr_pred of MOON's held-out CelebA images",
                       extract(["--list", st.heldout, "--root", st.celeba_aligned], feats / "celeba_heldout_attr",
                               blob="attr_pred"), env),
            tool_stage("eval_attributes", "Attribute accuracy", eval_attributes_cmd(
                feats / "celeba_heldout_attr", study.data / "celeba" / "list_attr_celeba.txt", ev), env),
        ]
    return stages


def run_one(study: Study, model: str, seed: int) -> int:
    """One (model, seed) in this process: its stages, reused where finished (its run folder's markers)."""
    run = study.run_dir(model, seed)
    run.mkdir(parents=True, exist_ok=True)
    env = {**study.env, **({"OPENBLAS_NUM_THREADS": "1"} if study.jobs > 1 else {})}
    Runner(run).run(run_stages(study, model, seed, env))
    return 0


def run_all(study: Study, child: Callable[[str, int], list]) -> list[str]:
    """Every (model, seed) as a child process ``child(model, seed)`` (its output in the run's
    reproduce.log), --jobs at a time, seed-major so that whole seeds finish first; returns the
    names of the runs that failed."""
    t0 = time.time()

    def one(ms: tuple[str, int]) -> str | None:
        m, s = ms
        run = study.run_dir(m, s)
        run.mkdir(parents=True, exist_ok=True)
        print(f"== {fmt_time(time.time() - t0)} start {run.name}: log {run / 'reproduce.log'}", flush=True)
        start = time.time()
        with open(run / "reproduce.log", "a") as log:
            rc = subprocess.run([str(c) for c in child(m, s)], stdout=log, stderr=subprocess.STDOUT).returncode
        status = "done" if rc == 0 else f"FAILED (status {rc})"
        print(f"== {fmt_time(time.time() - t0)} {run.name} {status} in {fmt_time(time.time() - start)}", flush=True)
        return run.name if rc else None

    with ThreadPoolExecutor(study.jobs) as pool:  # map hands out the runs in order
        failed = [name for name in pool.map(one, [(m, s) for s in study.seeds for m in study.models]) if name]
    if failed:
        print(f"{Path(sys.argv[0]).name}: {len(failed)} run(s) failed: {', '.join(failed)}; see their reproduce.log, "
              f"fix the cause and rerun (finished stages are reused)", file=sys.stderr)
    return failed
