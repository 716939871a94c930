#!/usr/bin/env python3
"""Attribute prediction accuracy (the paper's Tab. 4) from extracted predictions.

    python tools/extract_features.py --deploy models/full/deploy.prototxt --weights W \\
        --blob attr_pred --tree aligned/celeba --out runs/full/features/celeba_attr
    python tools/eval_attributes.py --predictions runs/full/features/celeba_attr --out runs/full/eval

Predictions are matched to CelebA's list_attr_celeba.txt by file name; column j of the
predictions is attribute j of --attributes (default the paper's 7 in the order of Tab. 4,
which is the order of the attr_pred outputs). A score > 0 predicts +1. Prints accuracy,
balanced accuracy and the majority-class baseline next to MOON and the paper, and writes
OUT/attributes.json. An attribute whose balanced accuracy is <= 50 % is flagged (chance).

Extra columns, marked as not the paper's: the AUC of the scores and the accuracy with a
threshold per attribute chosen on validation data -- --val-predictions (images labelled in the
same label file, none of them evaluated), else each half of the evaluated images (even/odd
rows) decided with the threshold chosen on the other half.
"""
import argparse
from pathlib import Path

import numpy as np

from generate.attributes import parse_attributes
from mtdnn.cli import run_tool
from mtdnn.evaluation.attributes import attribute_accuracy, format_table, read_celeba_attributes
from mtdnn.evaluation.features_io import image_key, load_features, lookup, name_index
from mtdnn.fileio import atomic_write_json
from mtdnn.paths import data_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", required=True, help="prediction prefix (PREFIX.npy N x A + names)")
    ap.add_argument("--labels", type=Path, help="list_attr_celeba.txt (default: data celeba/)")
    ap.add_argument("--attributes", default="all",
                    help="names of the prediction columns, comma-separated, or a group (default all)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (OUT/attributes.json)")
    ap.add_argument("--val-predictions", help="predictions of validation images (same format) on which the "
                                              "extra column's thresholds are chosen (default: the other half "
                                              "of the evaluated images)")
    a = ap.parse_args(argv)

    names = parse_attributes(a.attributes)
    scores, pnames, _ = load_features(a.predictions)
    images, attrs, labels = read_celeba_attributes(a.labels or data_path("celeba", "list_attr_celeba.txt"))
    cols = [attrs.index(n) for n in names]
    name_index(pnames, f"{a.predictions}.names.txt")  # an image predicted twice is an error, as elsewhere
    rows = lookup(name_index(images, "CelebA labels"), [image_key(n) for n in pnames],
                  "predicted images among the CelebA labels")
    val = None
    if a.val_predictions:
        vscores, vnames, _ = load_features(a.val_predictions)
        overlap = set(map(image_key, vnames)) & set(map(image_key, pnames))
        if overlap:
            raise ValueError(f"{len(overlap)} image(s) of --val-predictions are also evaluated, e.g. "
                             f"{sorted(overlap)[0]}: validation images must be others")
        vrows = lookup(name_index(images, "CelebA labels"), [image_key(n) for n in vnames],
                       "validation images among the CelebA labels")
        val = (np.asarray(vscores), labels[vrows][:, cols])
    res = attribute_accuracy(np.asarray(scores), labels[rows][:, cols], names, val=val)
    res.update({"predictions": str(a.predictions), "n_images": len(pnames),
                "val_predictions": a.val_predictions})
    atomic_write_json(a.out / "attributes.json", res, indent=1)
    print(format_table(res))
    print(f"-> {a.out / 'attributes.json'}")


if __name__ == "__main__":
    run_tool(main)
