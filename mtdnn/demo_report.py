"""The demo's report, ``WORK/report.md`` (the ``summary`` stage of :class:`mtdnn.demo.Demo`):
data sizes, models, results, plots, stage times and the paper's tables (``WORK/results.md``,
written by tools/report.py), from the JSON files the tools wrote; ``WORK/timings.json`` beside it.

A section is a function from the demo to its lines; :func:`write_report` puts them in order.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .demo import CELEBA_STAGES, aligned_images
from .fileio import atomic_write_text
from .paths import REPO
from .pipeline import fmt_time


def _load(path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {}


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


def data_section(d) -> list[str]:
    """The title, the run's line and the data sizes."""
    train_m, val_m = _load(d.db / "train_manifest.json"), _load(d.db / "val_manifest.json")
    moon_images = _load(d.moon / "moon.json").get("images", {})
    moon_split = _load(d.moon / "moon.json").get("split", "?")
    lines = [f"# Demo report{' (quick mode: NOT the View 1 protocol, tiny sizes)' if d.quick else ''}", "",
             f"Wang et al., ICMR 2017, reproduced at toy scale on CPU by `tools/demo.py"
             f"{' --quick' if d.quick else ''}` on {time.strftime('%Y-%m-%d %H:%M')} "
             f"({os.cpu_count()} CPU cores, data {d.data}).", "",
             "## Data", ""]
    wanted = (d.lists / "lfw_align.txt").read_text().split()
    n_feat = len((d.lists / "lfw_features.txt").read_text().split())
    rows = [
        ("LFW photos aligned (MTCNN + 5 points)", f"{len(aligned_images(d.lfw_aligned, wanted)[0])} of {len(wanted)}"),
        ("LFW images with features (View 1 pairs, people outside peopleDevTrain)", f"{n_feat}"),
        ("training set (peopleDevTrain people with >= %d aligned images)" % d.plan.min_images,
         f"{train_m.get('count', '?')} images, {train_m.get('num_identities', '?')} identities"),
        ("validation (one image per identity)", f"{val_m.get('count', '?')} images"),
        ("CelebA images for MOON", "skipped (no CelebA)" if d.recognition_only else
         f"{moon_images.get('aligned', '?')} aligned of {moon_images.get('attribute_file', '?')}; "
         f"{moon_images.get('train', '?')} train, {moon_images.get('evaluation', '?')} held out ({moon_split})"),
        ("View 1 pairs", f"threshold from {d.view1[0].name}, accuracy on {d.view1[1].name}"),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
    if d.recognition_only:
        lines += ["## Skipped", "", f"Without CelebA: {d.skipped_note()}.", "",
                  "| stage | state |", "|---|---|"] + [f"| {n} | skipped (no CelebA) |" for n in CELEBA_STAGES] + [""]
    return lines


def models_section(d) -> list[str]:
    p, rel = d.plan, lambda q: os.path.relpath(q, d.work)  # noqa: E731
    lines = ["## Models", ""]
    lines += [] if d.recognition_only else [
        f"- MOON: Fast trunk at width {p.moon_width}, batch {p.moon_batch}, {p.moon_iters} iterations "
        f"(`{rel(d.moon)}`; curves `{rel(d.moon / 'train.png')}`)."]
    lines += [f"- Multi-task net: `{p.model}` at width {p.width}, batch {p.batch}, "
              f"{d.pretrain_iter} pre-training (lr {p.pretrain_lr}, lambda1 = 0) + {d.finetune_iter} "
              f"fine-tuning iterations (lr {p.finetune_lr}, lambda1 = {0 if d.recognition_only else p.lambda1}), "
              f"{_load(d.run / 'run.json').get('identities', '?')} identities (`{rel(d.run)}`).", ""]
    return lines


def verification_lines(d) -> list[str]:
    lfw = _load(d.eval / "lfw.json")
    if not lfw.get("view1"):
        return []
    v, subset = lfw["view1"], "a subset of " if d.plan.pairs_per_class else ""
    return [f"**LFW View 1**: accuracy **{100 * v['accuracy']:.2f} %** on {subset}pairsDevTest (chance "
            f"50 %), threshold {v.get('threshold', float('nan')):.4f} chosen on {subset}pairsDevTrain, "
            f"{lfw.get('rule', '?')} rule.", ""]


def identification_lines(d) -> list[str]:
    from .evaluation.roc import tar_text
    ident = _load(d.eval / "identification.json")
    if not ident.get("results"):
        return []
    fars = ident["results"][0]["tar_at_far"]
    lines = [f"**Identification stand-in** (not MegaFace): {ident.get('n_probes')} probe images of "
             f"{ident.get('n_identities')} peopleDevTest people; distractors: CelebA + one-image LFW people.",
             "", "| distractors | rank-1 (%) | " + " | ".join(f"TAR @ FAR {t['far']:g} (%)" for t in fars) + " |",
             "|---|---|" + "---|" * len(fars)]
    for s in ident["results"]:
        lines.append(f"| {s['distractors']:,} | {100 * s['rank1']:.2f} | " +
                     " | ".join(tar_text(t, s.get("n_impostor_pairs")) for t in s["tar_at_far"]) + " |")
    return lines + ["", "A TAR at a FAR below 1 / (impostor pairs) cannot be measured on this many pairs "
                    "(not one false accept is allowed): such cells say *out of range*.", ""]


def attribute_lines(d) -> list[str]:
    attr = _load(d.eval / "attributes.json")
    if not attr.get("attributes"):
        return []
    moon_by = {a["name"]: a for a in _load(d.moon / "eval" / "attributes.json").get("attributes", [])}
    lines = [f"**Attributes** on {attr['attributes'][0].get('n', '?')} held-out CelebA images "
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
    faces = write_faces(d)
    if faces:
        rel = os.path.relpath(faces, d.work)
        lines += ["**Faces**: input photos, their aligned crops and the multi-task net's attribute "
                  "scores (decision / true label):", "", f"![{rel}]({rel})", ""]
    return lines


def write_faces(d) -> Path | None:
    """WORK/faces.png: held-out CelebA photos, their crops and the net's predicted attributes."""
    from .demo import attribute_faces
    from .moon_train import celeba_image_folder
    from .evaluation.plots import plot_face_montage
    pred = d.features / "celeba_heldout_attr"
    photos = celeba_image_folder(d.data / "celeba")
    if not Path(f"{pred}.npy").is_file() or photos is None:
        return None
    faces = attribute_faces(pred, d.data / "celeba" / "list_attr_celeba.txt", photos, d.celeba_aligned, count=8)
    return plot_face_montage(faces, d.work / "faces.png")


def watch_and_plot_lines(d) -> list[str]:
    from .watch import read_rows
    rel = lambda q: os.path.relpath(q, d.work)  # noqa: E731
    checks = [r for r in read_rows(d.run) if r.get("accuracy")]
    lines = []
    if checks:
        lines += [f"**Watched training** (`tools/train.py --watch {d.plan.watch}`): accuracy on "
                  f"{d.view1[1].name} (10-fold) of the snapshots while the net trained: "
                  + ", ".join(f"{r['phase']} {r['iteration']}: {100 * float(r['accuracy']):.2f} %" for r in checks)
                  + f" (`{rel(d.run / 'verification.csv')}`; the fourth panel of the curves).", ""]
    plots = sorted(p for p in d.work.joinpath("runs").rglob("*.png"))
    return lines + ["## Plots", ""] + [f"![{rel(q)}]({rel(q)})" for q in plots] + [""]


def stages_section(d, timings: list[dict], start: float) -> list[str]:
    w = d.work
    total_run = sum(t["seconds"] or 0 for t in timings if not t["reused"])
    lines = ["## Stages", "",
             f"Wall time of this run: {fmt_time(time.time() - start)} (stages run now: "
             f"{fmt_time(total_run)}; reused stages show the time they took when they ran).", "",
             "| # | stage | seconds | reused | command |", "|---|---|---|---|---|"]
    for i, t in enumerate(timings, 1):
        cmd = t["command"].replace(str(w) + "/", "").replace(str(REPO) + "/", "").replace("|", "\\|")
        lines.append(f"| {i} | {t['stage']} | {t['seconds'] or 0:.0f} | {'yes' if t['reused'] else ''} | "
                     f"`{cmd}` |")
    return lines


def paper_section(d) -> list[str]:
    w = d.work
    lines = ["", "## The paper's tables", "",
             f"`{os.path.relpath(w / 'results.md', w)}` (tools/report.py) puts these figures next to the paper's; "
             "its tables follow. Our numbers come from a tiny network trained for minutes on a few "
             "thousand LFW images, not from CASIA-WebFace for a day: they show that the pipeline "
             "works end to end, not the paper's accuracy.", ""]
    results = (w / "results.md").read_text() if (w / "results.md").is_file() else ""
    return lines + ["#" + ln if ln.startswith("#") else ln for ln in results.splitlines()[1:]]


def write_report(d) -> str:
    """WORK/report.md and WORK/timings.json of the demo ``d`` (its runner's timings so far)."""
    timings = d.runner.timings
    lines = (data_section(d) + models_section(d) + ["## Results", ""] + verification_lines(d)
             + identification_lines(d) + attribute_lines(d) + watch_and_plot_lines(d)
             + stages_section(d, timings, d.runner.start) + paper_section(d))
    atomic_write_text(d.work / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(d.work / "timings.json", json.dumps(timings, indent=1) + "\n")
    return f"report: {d.work / 'report.md'}"
