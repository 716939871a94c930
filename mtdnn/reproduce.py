"""The small-scale reproduction's arithmetic (``tools/reproduce.py``): one row of figures per
trained run, mean and spread per model over seeds, and paired differences between models
with a t confidence interval, so that a difference can be told from seed noise.

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
from pathlib import Path

import numpy as np

# (key, title): the figures of one run, all fractions in [0, 1]
MEASURES = [
    ("lfw_view1", "LFW View 1 accuracy"),
    ("blufr_unseen_tar", "BLUFR TAR @ FAR 0.1 %, unseen people (mean − std)"),
    ("blufr_unseen_dir", "BLUFR DIR @ FAR 1 %, rank 1, unseen people (mean − std)"),
    ("ident_rank1", "identification rank-1 (largest distractor set)"),
    ("attr_accuracy", "attribute accuracy (mean of 7)"),
    ("attr_balanced", "attribute balanced accuracy (mean of 7)"),
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
