#!/usr/bin/env python3
"""Attribute prediction accuracy (the paper's Tab. 4) from extracted predictions.

    python tools/extract_features.py --deploy models/full/deploy.prototxt --weights W \\
        --blob attr_pred --tree aligned/celeba --out runs/full/features/celeba_attr
    python tools/eval_attributes.py --predictions runs/full/features/celeba_attr --out runs/full/eval

Labels. The paper (Sec. 4.3) evaluates on 1,000 FaceScrub images labelled by three annotators
(majority vote); the paper gives no copy of that set. --facescrub-labels reads such a set of your own
(tab-separated: a header 'image<TAB>Narrow_Eyes<TAB>...', one line an image, values -1 or 1;
per attribute its label or three annotator columns 'Name:1 Name:2 Name:3', voted; see
docs/attributes.md). Without it, CelebA's list_attr_celeba.txt is the stand-in, and the output
says so.

Predictions are matched to the labels by file name; column j of the
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
import sys
from pathlib import Path

import numpy as np

from mtdnn.paper import parse_attributes
from mtdnn.card import record_evaluation
from mtdnn.cli import run_tool
from mtdnn.evaluation.attributes import (attribute_accuracy, format_table, read_celeba_attributes,
                                         read_labelled_subset)
from mtdnn.evaluation.features_io import image_key, load_features, lookup, name_index
from mtdnn.fileio import OutputLock, atomic_write_json
from mtdnn.paths import data_path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", required=True, help="prediction prefix (PREFIX.npy N x A + names)")
    labels = ap.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=Path, help="list_attr_celeba.txt (default: data celeba/): the stand-in")
    labels.add_argument("--facescrub-labels", type=Path,
                        help="your hand-labelled FaceScrub images (the paper's protocol; format above)")
    ap.add_argument("--attributes", default="all",
                    help="names of the prediction columns, comma-separated, or a group (default all)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (OUT/attributes.json)")
    ap.add_argument("--val-predictions", help="predictions of validation images (same format) on which the "
                                              "extra column's thresholds are chosen (default: the other half "
                                              "of the evaluated images)")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    lock = OutputLock(a.out / "attributes")  # noqa: F841 - held while main runs: the same evaluation twice on OUT stops

    names = parse_attributes(a.attributes)
    scores, pnames, _ = load_features(a.predictions)
    if a.facescrub_labels:
        images, attrs, labels = read_labelled_subset(a.facescrub_labels)
        source, protocol = "FaceScrub labels", (f"labels: {a.facescrub_labels}, hand-labelled FaceScrub images "
                                                f"(the paper's Tab. 4 protocol)")
    else:
        label_file = a.labels or data_path("celeba", "list_attr_celeba.txt")
        images, attrs, labels = read_celeba_attributes(label_file)
        source, protocol = "CelebA labels", (f"labels: {label_file}, CelebA: a stand-in for the paper's "
                                             f"1,000 hand-labelled FaceScrub images (three annotators, majority vote)")
    unknown = [n for n in names if n not in attrs]
    if unknown:
        raise ValueError(f"{source}: no column for {', '.join(unknown)} (it has {', '.join(attrs)})")
    cols = [attrs.index(n) for n in names]
    name_index(pnames, f"{a.predictions}.names.txt")  # an image predicted twice is an error, as elsewhere
    index = name_index(images, source)
    keys = [image_key(n) for n in pnames]
    if a.facescrub_labels:  # a labelled subset: the predictions of its images (a FaceScrub-wide run)
        pick = [i for i, k in enumerate(keys) if k in index]
        if not pick:
            raise ValueError(f"none of the {len(keys)} predicted images is in {a.facescrub_labels}")
        scores, keys = np.asarray(scores)[pick], [keys[i] for i in pick]
        missing = len(images) - len(pick)
        if missing:
            print(f"warning: {missing} labelled image(s) have no prediction", file=sys.stderr)
    rows = lookup(index, keys, f"predicted images among the {source}")
    val = None
    if a.val_predictions:
        vscores, vnames, _ = load_features(a.val_predictions)
        overlap = set(map(image_key, vnames)) & set(keys)
        if overlap:
            raise ValueError(f"{len(overlap)} image(s) of --val-predictions are also evaluated, e.g. "
                             f"{sorted(overlap)[0]}: validation images must be others")
        vrows = lookup(index, [image_key(n) for n in vnames], f"validation images among the {source}")
        val = (np.asarray(vscores), labels[vrows][:, cols])
    res = attribute_accuracy(np.asarray(scores), labels[rows][:, cols], names, val=val)
    res.update({"predictions": str(a.predictions), "n_images": len(keys), "protocol": protocol,
                "labels": str(a.facescrub_labels or label_file),
                "stand_in": not a.facescrub_labels, "val_predictions": a.val_predictions})
    atomic_write_json(a.out / "attributes.json", res, indent=1)
    print(format_table(res))
    print(f"-> {a.out / 'attributes.json'}")
    print("model card: " + record_evaluation(a.predictions, "attributes", {
        "file": str(a.out / "attributes.json"), "n_images": len(pnames),
        "accuracy": {r["name"]: r["accuracy"] for r in res["attributes"]},
        "balanced_accuracy": {r["name"]: r["balanced_accuracy"] for r in res["attributes"]}}))


if __name__ == "__main__":
    run_tool(main, interrupt_hint="no result file was written (earlier ones are as they were); rerun the same command")
