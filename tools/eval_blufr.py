#!/usr/bin/env python3
"""BLUFR on LFW (Liao et al. 2014): verification TAR at FAR 0.1 % over all test pairs and
open-set identification DIR at rank 1, FAR 1 %, mean and std over the 10 trials.

    python tools/eval_blufr.py --features runs/full/features/lfw_fc5 --out runs/full/eval

The config's 13,233 images are matched to the features by file name (Name_0001); all must
be present. Scores are cosines of L2-normalised features; thresholds follow BLUFR's MATLAB
EvalROC / OpenSetROC. Also reported: BLUFR's headline figure mean - std.
Writes OUT/blufr.json and OUT/blufr_roc.png.
"""
import argparse
import json
import sys
from pathlib import Path

from mtdnn.cli import bad_input
from mtdnn.evaluation.blufr import evaluate_blufr
from mtdnn.evaluation.features_io import load_features
from mtdnn.evaluation.plots import plot_roc
from mtdnn.paths import data_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True, help="LFW feature prefix")
    ap.add_argument("--config", type=Path, help="blufr_lfw_config.mat (default: data lfw/blufr/)")
    ap.add_argument("--veri-far", type=float, default=1e-3, help="verification FAR for the TAR (default 1e-3, BLUFR's 0.1 %%)")
    ap.add_argument("--osi-far", type=float, default=1e-2, help="open-set identification FAR for the DIR (default 1e-2)")
    ap.add_argument("--rank", type=int, default=1, help="identification rank for the DIR (default 1)")
    ap.add_argument("--label", default=None, help="name of the model in the outputs (default: the feature prefix)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (blufr.json and plots)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    a = ap.parse_args(argv)

    feats, names, _ = load_features(a.features)
    cfg = a.config or data_path("lfw", "blufr", "blufr_lfw_config.mat")
    res = evaluate_blufr(feats, names, cfg, veri_far=a.veri_far, osi_far=a.osi_far, rank=a.rank,
                         progress=not a.quiet)
    res["features"] = str(a.features)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "blufr.json").write_text(json.dumps(res, indent=1))
    label = a.label or Path(a.features).name
    v, o = res["verification"], res["open_set"]
    plot_roc({f"{label} verification": (v["roc"]["far"], v["roc"]["tar"]),
              f"{label} open-set rank {a.rank}": (o["roc"]["far"], o["roc"]["dir"])},
             a.out / "blufr_roc.png", "BLUFR on LFW (mean of 10 trials)", "TAR / DIR")
    print(f"BLUFR verification TAR @ FAR {a.veri_far:g}: {100 * v['tar_mean']:.2f} +- "
          f"{100 * v['tar_std']:.2f} %  (mean - std {100 * v['tar_mean_minus_std']:.2f})")
    print(f"BLUFR open-set DIR @ FAR {a.osi_far:g}, rank {a.rank}: {100 * o['dir_mean']:.2f} +- "
          f"{100 * o['dir_std']:.2f} %  (mean - std {100 * o['dir_mean_minus_std']:.2f})")
    print(f"-> {a.out / 'blufr.json'}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, FileNotFoundError) as e:  # bad input: the message, no traceback
        bad_input(e)
