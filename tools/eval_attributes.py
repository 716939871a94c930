#!/usr/bin/env python3
"""Attribute prediction accuracy (the paper's Tab. 4) from extracted predictions.

    python tools/extract_features.py --deploy models/full/deploy.prototxt --weights W \\
        --blob attr_pred --tree aligned/celeba --out runs/full/features/celeba_attr
    python tools/eval_attributes.py --predictions runs/full/features/celeba_attr --out runs/full/eval

Predictions are matched to CelebA's list_attr_celeba.txt by file name; column j of the
predictions is attribute j of --attributes (default the paper's 7 in the order of Tab. 4,
which is the order of the attr_pred outputs). A score > 0 predicts +1. Prints accuracy,
balanced accuracy and the majority-class baseline next to MOON and the paper, and writes
OUT/attributes.json.
"""
import argparse
from pathlib import Path

import numpy as np

from generate.attributes import parse_attributes
from mtdnn.card import record_evaluation
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
    a = ap.parse_args(argv)

    names = parse_attributes(a.attributes)
    scores, pnames, _ = load_features(a.predictions)
    images, attrs, labels = read_celeba_attributes(a.labels or data_path("celeba", "list_attr_celeba.txt"))
    cols = [attrs.index(n) for n in names]
    name_index(pnames, f"{a.predictions}.names.txt")  # an image predicted twice is an error, as elsewhere
    rows = lookup(name_index(images, "CelebA labels"), [image_key(n) for n in pnames],
                  "predicted images among the CelebA labels")
    res = attribute_accuracy(np.asarray(scores), labels[rows][:, cols], names)
    res.update({"predictions": str(a.predictions), "n_images": len(pnames)})
    atomic_write_json(a.out / "attributes.json", res, indent=1)
    print(format_table(res))
    print(f"-> {a.out / 'attributes.json'}")
    print("model card: " + record_evaluation(a.predictions, "attributes", {
        "file": str(a.out / "attributes.json"), "n_images": len(pnames),
        "accuracy": {r["name"]: r["accuracy"] for r in res["attributes"]},
        "balanced_accuracy": {r["name"]: r["balanced_accuracy"] for r in res["attributes"]}}))


if __name__ == "__main__":
    run_tool(main)
