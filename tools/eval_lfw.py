#!/usr/bin/env python3
"""LFW verification from extracted features: View 2 10-fold accuracy, View 1, ROC, TAR@FAR.

    python tools/eval_lfw.py --features runs/full/features/lfw_fc5 --out runs/full/eval

Rules (--rule): sphereface (default; expects features extracted with --mirror concat: mean of
the 9 training folds subtracted, cosine, threshold grid -1:1e-4:1, ties -> mean of the best)
or insightface (L2-normalised, squared euclidean distance, thresholds 0:0.01:4).
Images are matched by file name (Name_0001). A pair whose image has no feature is an error
naming it, or with --missing wrong an error in its fold, reported in the JSON.
Writes OUT/lfw.json and OUT/lfw_roc.png. When the features were extracted with the final weights
of a run folder that has a model card (RUN/model_card.json, docs/model_card.md), the figures and
the View 1 threshold with its feature mean are recorded there (--no-card: not).
"""
import argparse
from pathlib import Path

from mtdnn.card import record_lfw
from mtdnn.cli import run_tool
from mtdnn.evaluation.features_io import load_features
from mtdnn.evaluation.lfw import RULES, evaluate_lfw
from mtdnn.evaluation.plots import plot_roc
from mtdnn.fileio import OutputLock, atomic_write_json
from mtdnn.paths import data_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True, help="feature prefix (PREFIX.npy + PREFIX.names.txt)")
    ap.add_argument("--pairs", type=Path, help="View 2 pairs.txt (default: data lfw/pairs.txt)")
    ap.add_argument("--view1", nargs=2, type=Path, metavar=("DEVTRAIN", "DEVTEST"),
                    help="View 1 pairs files (default: data lfw/pairsDevTrain.txt pairsDevTest.txt)")
    ap.add_argument("--no-view1", action="store_true", help="skip View 1")
    ap.add_argument("--no-view2", action="store_true",
                    help="View 1 only (a model trained on peopleDevTrain: View 2's folds hold those people)")
    ap.add_argument("--rule", choices=RULES, default="sphereface", help="scoring rule: sphereface (default; training folds' mean subtracted, cosine) or insightface (L2-normalised, distance); see mtdnn/evaluation/lfw.py")
    ap.add_argument("--missing", choices=("error", "wrong"), default="error", help="pairs with a missing image: stop (error, default) or count them wrong")
    ap.add_argument("--far", type=float, nargs="+", default=[1e-3], help="FARs for TAR (default 1e-3)")
    ap.add_argument("--label", default=None, help="curve label in the plot")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--no-card", action="store_true",
                    help="do not record the figures and the View 1 threshold in the model card of the run "
                         "whose weights made the features (docs/model_card.md)")
    a = ap.parse_args(argv)
    lock = OutputLock(a.out / "lfw")  # noqa: F841 - held while main runs: the same evaluation twice on OUT stops

    feats, names, _ = load_features(a.features)
    if a.no_view1 and a.no_view2:
        raise ValueError("--no-view1 and --no-view2 leave nothing to evaluate")
    pairs = None if a.no_view2 else a.pairs or data_path("lfw", "pairs.txt")
    view1 = None if a.no_view1 else tuple(a.view1 or (data_path("lfw", "pairsDevTrain.txt"),
                                                     data_path("lfw", "pairsDevTest.txt")))
    res = evaluate_lfw(feats, names, pairs, rule=a.rule, missing=a.missing, view1=view1,
                       fars=a.far)
    res["features"] = str(a.features)
    mean = res.get("view1", {}).pop("feature_mean", None)
    atomic_write_json(a.out / "lfw.json", res, indent=1)
    # the ROC of View 2's held-out fold scores, or of View 1's pairsDevTest when View 2 is skipped
    roc, title, which = ((res, "LFW View 2 ROC (held-out fold scores)", "") if pairs is not None
                         else (res["view1"], "LFW View 1 ROC (pairsDevTest)", "View 1 "))
    plot_roc({a.label or Path(a.features).name: (roc["roc"]["far"], roc["roc"]["tar"])}, a.out / "lfw_roc.png", title)
    if pairs is not None:
        print(f"LFW View 2 ({a.rule}): {100 * res['accuracy']:.2f} +- {100 * res['std']:.2f} %"
              f"  ({res['n_missing_pairs']} of {res['n_pairs']} pairs missing)")
    for t in roc["tar_at_far"]:
        print(f"  {which}TAR @ FAR {t['far']:g}: {100 * t['tar']:.2f} %  ({t['rule']})")
    if "view1" in res:
        print(f"LFW View 1: {100 * res['view1']['accuracy']:.2f} % (threshold {res['view1']['threshold']:.4f} from DevTrain)")
    print(f"-> {a.out / 'lfw.json'}")
    if not a.no_card:
        print("model card: " + record_lfw(a.features, res, mean, a.out / "lfw.json"))


if __name__ == "__main__":
    run_tool(main, interrupt_hint="no result file was written (earlier ones are as they were); rerun the same command")
