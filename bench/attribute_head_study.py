#!/usr/bin/env python3
"""Why the multi-task net's attribute head is shifted against its MOON teacher (issue 24,
item 6): fine-tuning variants x solver seeds from a finished demo's pre-trained weights.

    python bench/attribute_head_study.py --demo work/demo --out /tmp/study \\
        --variant base:300:1 --variant long:900:1 --variant lambda3:300:3 --seeds 1,2,3

A finished demo work folder (tools/demo.py) is read, never written: its training database
(lfw-db: the LFW View 1 training people with MOON's voted labels), its multi-task run folder
(the pre-trained weights pretrain_iter_N.caffemodel and the options the demo trained with),
MOON's held-out CelebA images and scores. Each variant NAME:FINETUNE_ITER:LAMBDA1 and seed S
is rendered with the demo's options and those three changed (tools/train.py's renderer,
mtdnn.train.prepare, into OUT/NAME_sS), fine-tuned from the demo's pre-trained weights with
`caffe train -solver solver_finetune.prototxt -weights PRETRAINED` (one BLAS thread, as the
demo), its attr_pred extracted on MOON's held-out CelebA images and scored against CelebA's
labels: the paper's sign rule, balanced accuracy, AUC, accuracy at a threshold chosen on the
other half (mtdnn.evaluation.attributes), the positive rate it predicts and its median score.
The demo's own run is the variant whose options and seed are the demo's: its weights are
scored, not trained again. Only fine-tuning varies with the seed (the pre-trained weights are
the demo's, seed 1). A finished (variant, seed) is reused on a rerun (OUT/NAME_sS/result.json).

Without training, the balance of the labels: per attribute the positive rate of MOON's own
predictions on the training images, after the per-identity vote (what the head regresses),
of the CelebA held-out labels, and of MOON's predictions there. Writes OUT/study.md and
OUT/study.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn.evaluation.attributes import attribute_accuracy, read_celeba_attributes  # noqa: E402
from mtdnn.evaluation.features_io import image_key, load_features, lookup, name_index, read_names  # noqa: E402
from mtdnn.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from mtdnn.paths import REPO, data_path  # noqa: E402

SHOWN = ("Pointy_Nose", "High_Cheekbones", "Male")  # the examples


def find_run(demo: Path) -> Path:
    runs = [p.parent for p in (demo / "runs").glob("*/run.json") if p.parent.name != "moon"]
    if len(runs) != 1:
        raise SystemExit(f"{demo}/runs holds {len(runs)} multi-task run folders; expected one")
    return runs[0]


def score(scores: np.ndarray, names: list, labels_file: Path, attributes: list) -> dict:
    images, attrs, labels = read_celeba_attributes(labels_file)
    rows = lookup(name_index(images, "CelebA labels"), [image_key(n) for n in names], "held-out images")
    truth = labels[rows][:, [attrs.index(a) for a in attributes]]
    res = attribute_accuracy(scores, truth, attributes)
    for a, r in zip(range(len(attributes)), res["attributes"]):
        r["median_score_negatives"] = float(np.median(scores[truth[:, a] == -1, a])) if (truth[:, a] == -1).any() else None
        r["mean_score"] = float(scores[:, a].mean())
        r["median_score_positives"] = float(np.median(scores[truth[:, a] == 1, a])) if (truth[:, a] == 1).any() else None
    return res


def train_variant(out: Path, run: Path, state: dict, db: Path, iters: int, lambda1: float, seed: int,
                  threads: int, pretrained: Path | None = None) -> Path:
    """Fine-tune one variant from the demo's pre-trained weights; returns the final weights."""
    from mtdnn.caffe.run import caffe_binary, run_caffe
    from mtdnn.train import find_database, prepare
    overrides = {**state["overrides"], "finetune_iter": iters, "lambda1": lambda1, "random_seed": seed}
    _, phases = prepare(out, state["model"], find_database(db), overrides, restart=True, log=lambda *_: None)
    fine = next(p for p in phases if p.name == "finetune")  # (restart: an interrupted variant starts over)
    pre = pretrained or run / state["phases"]["pretrain"]["weights"]
    cmd = [caffe_binary(), "train", "-solver", fine.solver.name, "-weights", str(pre.resolve())]
    t0 = time.time()
    rc, text = run_caffe(cmd, out, fine.log, fine, 0, threads, progress=False)
    if rc != 0 or not fine.final_weights.is_file():
        raise SystemExit(f"caffe train failed in {out} (exit {rc}); log {fine.log}")
    (out / "train_seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    return fine.final_weights


def extract(deploy: Path, weights: Path, names_file: Path, root: Path, prefix: Path, threads: int) -> None:
    import subprocess

    from mtdnn.caffe.run import blas_threads_env
    cmd = [sys.executable, str(REPO / "tools" / "extract_features.py"), "--deploy", str(deploy), "--weights",
           str(weights), "--list", str(names_file), "--root", str(root), "--blob", "attr_pred", "--out",
           str(prefix), "--restart"]
    r = subprocess.run(cmd, env={**os.environ, **blas_threads_env(threads)}, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"extraction failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")


def verify(demo: Path, weights: Path, own: bool, folder: Path, run: Path) -> dict:
    """The recognition side: 10-fold accuracy on LFW View 1's pairsDevTest with the demo's own
    crops (mtdnn.watch.check: fc5 of image and mirror, sphereface rule)."""
    from mtdnn.watch import check
    deploy = (run if own else folder) / "deploy.prototxt"
    res = check(deploy, weights, data_path("lfw", "pairsDevTest.txt"), demo / "lfw-112x96")
    res.pop("missing_images", None)
    return res


def label_balance(demo: Path, labels_file: Path, attributes: list, moon_heldout) -> list[dict]:
    """Positive rates per attribute: MOON's own on the training images, after the vote, CelebA
    held-out truth, MOON's predictions on the held-out images."""
    info = json.loads((demo / "lfw-db" / "attribute_labels.json").read_text())
    per = {a["name"]: a for a in info["attributes"]}  # mtdnn.attribute_labels.vote_summary
    rows = []
    for j, name in enumerate(attributes):
        a, m = per[name], moon_heldout["attributes"][j]
        rows.append({"name": name, "moon_own_train": a["own_positive_rate"], "voted_train": a["voted_positive_rate"],
                     "celeba_heldout_truth": m["positive_rate"], "moon_heldout_predicted": m["predicted_positive_rate"]})
    return rows


def summarise(results: dict, variants: list, seeds: list) -> list[dict]:
    out = []
    for name, iters, lam in variants:
        got = [results[(name, s)] for s in seeds if (name, s) in results]
        if not got:
            continue
        def stat(f):
            v = np.array([f(r) for r in got], float)
            return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        row = {"variant": name, "finetune_iter": iters, "lambda1": lam, "seeds": [s for s in seeds if (name, s) in results],
               "sign_accuracy": stat(lambda r: r["mean_accuracy"]),
               "balanced_accuracy": stat(lambda r: np.mean([a["balanced_accuracy"] for a in r["attributes"]])),
               "auc": stat(lambda r: np.mean([a["extra"]["auc"] for a in r["attributes"]])),
               "val_threshold_accuracy": stat(lambda r: np.mean([a["extra"]["val_threshold"]["accuracy"]
                                                                 for a in r["attributes"]])),
               "chance_attributes": stat(lambda r: sum(a["chance"] for a in r["attributes"])),
               "lfw_devtest": stat(lambda r: (r.get("verification") or {}).get("accuracy", np.nan))}
        for attr in SHOWN:
            row[f"{attr}_predicted_positive"] = stat(
                lambda r: next(a for a in r["attributes"] if a["name"] == attr)["predicted_positive_rate"])
        row["Male_median_score_women"] = stat(
            lambda r: next(a for a in r["attributes"] if a["name"] == "Male")["median_score_negatives"])
        out.append(row)
    return out


def per_attribute(results: dict, variants: list, seeds: list, balance: list, moon: dict) -> list[str]:
    """Per attribute and variant (mean over the seeds): the predicted positive rate and the mean
    score, beside the voted labels' positive rate p and 2p - 1, the mean of the targets that
    a Euclidean loss pulls an uninformed head to."""
    lines = ["", "## Per attribute: predicted positive rate % / mean score (mean over the seeds)", "",
             "| attribute | voted p % | 2p - 1 | CelebA truth % | MOON | "
             + " | ".join(v[0] for v in variants) + " |", "|---|---|---|---|---|" + "---|" * len(variants)]
    for j, b in enumerate(balance):
        m = moon["attributes"][j]
        cells = []
        for name, _, _ in variants:
            got = [results[(name, s)]["attributes"][j] for s in seeds if (name, s) in results]
            cells.append("-" if not got else f"{100 * np.mean([g['predicted_positive_rate'] for g in got]):.1f} / "
                                             f"{np.mean([g['mean_score'] for g in got]):+.2f}")
        lines.append(f"| {b['name']} | {100 * b['voted_train']:.2f} | {2 * b['voted_train'] - 1:+.2f} | "
                     f"{100 * b['celeba_heldout_truth']:.2f} | {100 * m['predicted_positive_rate']:.1f} / "
                     f"{m['mean_score']:+.2f} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: list, moon: dict, balance: list, n_images: int) -> str:
    pm = lambda v, d=2, k=100: f"{k * v[0]:.{d}f} ± {k * v[1]:.{d}f}"  # noqa: E731
    lines = [f"# Attribute head vs MOON: fine-tuning variants (held-out CelebA, {n_images} images)", "",
             "Mean ± std over the seeds of the mean over the 7 attributes; sign = the paper's rule (score > 0); "
             "AUC and the validation threshold are extra figures, not the paper's.", "",
             "| variant | fine-tuning iters | lambda1 | seeds | sign accuracy % | balanced % | AUC | "
             "acc. at val. threshold % (extra) | attributes at chance | LFW pairsDevTest 10-fold % | " +
             " | ".join(f"{a} predicted positive %" for a in SHOWN) + " | Male median score of women |",
             "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(SHOWN) + "---|"]
    for r in summary:
        lines.append(f"| {r['variant']} | {r['finetune_iter']} | {r['lambda1']:g} | {','.join(map(str, r['seeds']))} | "
                     f"{pm(r['sign_accuracy'])} | {pm(r['balanced_accuracy'])} | {pm(r['auc'], 3, 1)} | "
                     f"{pm(r['val_threshold_accuracy'])} | {pm(r['chance_attributes'], 1, 1)} | {pm(r['lfw_devtest'])} | "
                     + " | ".join(pm(r[f"{a}_predicted_positive"], 1) for a in SHOWN)
                     + f" | {pm(r['Male_median_score_women'], 2, 1)} |")
    ma = moon["attributes"]
    lines.append(f"| MOON (teacher) | - | - | - | {100 * moon['mean_accuracy']:.2f} | "
                 f"{100 * np.mean([a['balanced_accuracy'] for a in ma]):.2f} | "
                 f"{np.mean([a['extra']['auc'] for a in ma]):.3f} | "
                 f"{100 * np.mean([a['extra']['val_threshold']['accuracy'] for a in ma]):.2f} | "
                 f"{sum(a['chance'] for a in ma)} | - | "
                 + " | ".join(f"{100 * next(a for a in ma if a['name'] == s)['predicted_positive_rate']:.1f}"
                              for s in SHOWN)
                 + f" | {next(a for a in ma if a['name'] == 'Male')['median_score_negatives']:.2f} |")
    lines += ["", "## Balance of the labels (no training)", "",
              "| attribute | MOON's own on the training images % | voted (the head's targets) % | "
              "CelebA held-out truth % | MOON predicted on held-out % |", "|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for b in balance:
        lines.append(f"| {b['name']} | {f(b['moon_own_train'])} | {f(b['voted_train'])} | "
                     f"{f(b['celeba_heldout_truth'])} | {f(b['moon_heldout_predicted'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, required=True, help="a finished tools/demo.py work folder (read only)")
    ap.add_argument("--out", type=Path, required=True, help="study folder")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:FINETUNE_ITER:LAMBDA1",
                    help="a fine-tuning variant (repeatable)")
    ap.add_argument("--seeds", default="1,2,3", help="solver seeds of the fine-tuning (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1, as the demo)")
    ap.add_argument("--data", type=Path, help="data folder (default $MTDNN_DATA or data/)")
    ap.add_argument("--pretrained", type=Path, help="a copy of the demo's pre-trained weights (default: "
                                                     "the demo run folder's pretrain_iter_N.caffemodel)")
    ap.add_argument("--only-summary", action="store_true", help="write the tables from the finished runs only")
    a = ap.parse_args(argv)
    if a.data:
        os.environ["MTDNN_DATA"] = str(a.data)
    demo, out = a.demo.resolve(), a.out.resolve()
    run = find_run(demo)
    state = json.loads((run / "run.json").read_text())
    variants = [(v.split(":")[0], int(v.split(":")[1]), float(v.split(":")[2])) for v in a.variant]
    seeds = [int(s) for s in a.seeds.split(",")]
    labels_file = data_path("celeba", "list_attr_celeba.txt")
    # MOON's held-out CelebA images (what the demo's attr_list stage lists), in the study folder
    names = read_names(demo / "runs" / "moon" / "eval" / "heldout_scores.names.txt")
    heldout = out / "celeba_heldout.txt"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(heldout, "".join(n + "\n" for n in names))
    attributes = [n for n in json.loads((demo / "lfw-db" / "train_manifest.json").read_text())["attribute_names"]]
    moon_scores, moon_names, _ = load_features(demo / "runs" / "moon" / "eval" / "heldout_scores")
    moon = score(np.asarray(moon_scores), list(moon_names), labels_file, attributes)
    results = {}
    ov = state["overrides"]
    for name, iters, lam in variants:
        for s in seeds:
            folder = out / f"{name}_s{s}"
            if (folder / "result.json").is_file():
                res = json.loads((folder / "result.json").read_text())
                if "verification" not in res and not a.only_summary:  # results of before it was measured
                    res["verification"] = verify(demo, Path(res["weights"]), res["reused_demo_weights"], folder, run)
                    atomic_write_json(folder / "result.json", res, indent=1)
                results[(name, s)] = res
                continue
            if a.only_summary:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            own = (iters == ov.get("finetune_iter") and lam == ov.get("lambda1") and s == ov.get("random_seed"))
            if own and not state.get("phases", {}).get("finetune", {}).get("done"):
                state = json.loads((run / "run.json").read_text())  # the demo may have finished it since
                if not state.get("phases", {}).get("finetune", {}).get("done"):
                    print(f"{name} seed {s}: the demo's own fine-tuning is not finished yet: skipped", flush=True)
                    continue
            t0 = time.time()
            if own:  # the demo's own fine-tuning: score its weights
                weights, deploy = run / state["phases"]["finetune"]["weights"], run / "deploy.prototxt"
            else:
                weights = train_variant(folder, run, state, demo / "lfw-db", iters, lam, s, a.threads,
                                        a.pretrained.resolve() if a.pretrained else None)
                deploy = folder / "deploy.prototxt"
            extract(deploy, weights, heldout, demo / "celeba-112x96", folder / "heldout_attr", a.threads)
            sc, nm, _ = load_features(folder / "heldout_attr")
            res = score(np.asarray(sc), list(nm), labels_file, attributes)
            res.update({"variant": name, "finetune_iter": iters, "lambda1": lam, "seed": s, "weights": str(weights),
                        "reused_demo_weights": own, "seconds": round(time.time() - t0, 1),
                        "verification": verify(demo, weights, own, folder, run)})
            atomic_write_json(folder / "result.json", res, indent=1)
            results[(name, s)] = res
            print(f"{name} seed {s}: sign {100 * res['mean_accuracy']:.2f} %, "
                  f"AUC {np.mean([x['extra']['auc'] for x in res['attributes']]):.3f} ({res['seconds']:.0f} s)",
                  flush=True)
    summary = summarise(results, variants, seeds)
    balance = label_balance(demo, labels_file, attributes, moon)
    atomic_write_json(out / "study.json", {"variants": summary, "moon": moon, "balance": balance}, indent=1)
    atomic_write_text(out / "study.md", markdown(summary, moon, balance, len(names))
                      + "\n".join(per_attribute(results, variants, seeds, balance, moon)) + "\n")
    print(f"-> {out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
