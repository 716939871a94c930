#!/usr/bin/env python3
"""BLUFR on LFW (Liao et al. 2014): verification TAR at FAR 0.1 % over all test pairs and
open-set identification DIR at rank 1, FAR 1 %, reported as mean - std over the 10 trials
(BLUFR's figure; mean and std are printed and stored too).

    python tools/eval_blufr.py --features runs/full/features/lfw_fc5 --out runs/full/eval

The config's 13,233 images are matched to the features by file name (Name_0001); all must
be present. Scores are float64 cosines of L2-normalised features; thresholds follow BLUFR's
MATLAB EvalROC / OpenSetROC.

BLUFR's test sets hold nearly all of LFW. For a model trained on LFW people (the demo and the
small-scale reproduction train on View 1's training people) give --exclude with those
people: their images are left out of every trial, and the result is marked as a figure on
unseen people rather than the standard BLUFR figure.
Writes OUT/blufr.json and OUT/blufr_roc.png.
"""
import argparse
from pathlib import Path

from mtdnn.card import record_evaluation
from mtdnn.cli import run_tool
from mtdnn.evaluation.blufr import evaluate_blufr
from mtdnn.evaluation.features_io import load_features
from mtdnn.evaluation.lfw import read_people
from mtdnn.evaluation.plots import plot_roc
from mtdnn.fileio import OutputLock, atomic_write_json
from mtdnn.paths import data_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True, help="LFW feature prefix")
    ap.add_argument("--config", type=Path, help="blufr_lfw_config.mat (default: data lfw/blufr/)")
    ap.add_argument("--veri-far", type=float, default=1e-3, help="verification FAR for the TAR (default 1e-3, BLUFR's 0.1 %%)")
    ap.add_argument("--osi-far", type=float, default=1e-2, help="open-set identification FAR for the DIR (default 1e-2)")
    ap.add_argument("--rank", type=int, default=1, help="identification rank for the DIR (default 1)")
    ap.add_argument("--exclude", type=Path, nargs="*", default=[],
                    help="LFW people files (e.g. peopleDevTrain.txt) whose images are left out of every "
                         "trial: the people a model was trained on")
    ap.add_argument("--label", default=None, help="name of the model in the outputs (default: the feature prefix)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (blufr.json and plots)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    a = ap.parse_args(argv)
    lock = OutputLock(a.out / "blufr")  # noqa: F841 - held while main runs: the same evaluation twice on OUT stops

    feats, names, _ = load_features(a.features)
    cfg = a.config or data_path("lfw", "blufr", "blufr_lfw_config.mat")
    exclude = {p for f in a.exclude for p, _ in read_people(f)}
    res = evaluate_blufr(feats, names, cfg, veri_far=a.veri_far, osi_far=a.osi_far, rank=a.rank,
                         exclude_people=exclude, progress=not a.quiet)
    res["features"] = str(a.features)
    res["excluded_people_files"] = [str(p) for p in a.exclude]
    atomic_write_json(a.out / "blufr.json", res, indent=1)
    label = a.label or Path(a.features).name
    v, o = res["verification"], res["open_set"]
    plot_roc({f"{label} verification": (v["roc"]["far"], v["roc"]["tar"]),
              f"{label} open-set rank {a.rank}": (o["roc"]["far"], o["roc"]["dir"])},
             a.out / "blufr_roc.png", "BLUFR on LFW (mean of 10 trials)", "TAR / DIR")
    if not res["standard"]:
        print(f"without the images of {res['excluded_people']} excluded people ({res['excluded_images']} images): "
              f"not the standard BLUFR figure")
    print(f"BLUFR verification TAR @ FAR {a.veri_far:g}: {100 * v['tar_mean_minus_std']:.2f} % "
          f"(mean - std; mean {100 * v['tar_mean']:.2f}, std {100 * v['tar_std']:.2f})")
    print(f"BLUFR open-set DIR @ FAR {a.osi_far:g}, rank {a.rank}: {100 * o['dir_mean_minus_std']:.2f} % "
          f"(mean - std; mean {100 * o['dir_mean']:.2f}, std {100 * o['dir_std']:.2f})")
    print(f"-> {a.out / 'blufr.json'}")
    print("model card: " + record_evaluation(a.features, "blufr", {
        "file": str(a.out / "blufr.json"), "standard": res["standard"],
        "verification_tar_mean_minus_std": v["tar_mean_minus_std"], "veri_far": a.veri_far,
        "open_set_dir_mean_minus_std": o["dir_mean_minus_std"], "osi_far": a.osi_far, "rank": a.rank}))


if __name__ == "__main__":
    run_tool(main, interrupt_hint="no result file was written (earlier ones are as they were); rerun the same command")
