#!/usr/bin/env python3
"""Attribute labels for a face recognition training set from a trained MOON classifier (Sec. 3.2).

    tools/label_attributes.py --model work/moon/cpu --db work/moon/lfw-devtrain-db
    tools/label_attributes.py --model work/moon/cpu --tree ALIGNED_TREE --scores OUT/scores

--db DB: a database of tools/build_db.py (build it with --placeholder-attributes 7 when the
data has no attribute labels yet). Every split (train_lmdb, val_lmdb, ...) is scored in its
LMDB record order, every identity gets the majority label of all its images over all splits
(mtdnn.vote: ties go to the sign of the mean score, then to -1; an identity with a single
image keeps its own prediction), and each split's HDF5 file is written in the LMDB's record
order through its manifest:

  DB/<split>_attributes.h5 (+ .h5.txt)   'attributes' = voted labels in {-1, +1} (what the
                                         multi-task net trains on), beside 'scores', 'own'
                                         (each image's own prediction), 'paths', 'labels'
  DB/<split>_manifest.json               attribute names and checksum updated, then verified
  DB/<split>_attribute_scores.npy        raw scores (+ .names.txt, .meta.json)
  DB/attribute_labels.json               how many labels the vote changed, per attribute

A rerun with the same classifier (by the content of its weights), attributes and --mirror
on the same records says the labels are up to date and changes nothing (--force: label again);
labels made otherwise are replaced only with --force (a file half-written by an interrupted run is replaced); --out writes everything to another folder instead (manifests there point at DB's
LMDBs).

--tree DIR (or --list FILE --root DIR): score aligned images only: --scores P writes P.npy
(rows in the sorted order of the tree, or the list's order), P.names.txt and P.meta.json,
and with --vote the voted labels P.voted.npy (identity = top folder, or the list's label).
tools/build_db.py --attributes P.npy --vote and tools/eval_attributes.py --predictions P
read these files.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
# One BLAS thread: as fast as two for these nets here, and far faster when the cores are shared.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from mtdnn.paper import parse_attributes  # noqa: E402
from mtdnn import attribute_labels as al  # noqa: E402
from mtdnn.evaluation.features_io import feature_paths  # noqa: E402
from mtdnn import datasets, inference  # noqa: E402
from mtdnn.cli import check_engine, run_tool  # noqa: E402
from mtdnn.fileio import OutputLock  # noqa: E402
from mtdnn.images import ImageError  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="trained MOON run folder (tools/train_attributes.py --out)")
    p.add_argument("--weights", type=Path, help="other weights than MODEL/moon.caffemodel")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", type=Path, help="tools/build_db.py folder: label it through its manifests")
    src.add_argument("--tree", type=Path, help="aligned folder-per-identity tree: scores only")
    src.add_argument("--list", type=Path, help="'path label' list of aligned images (with --root): scores only")
    p.add_argument("--root", type=Path, help="root of the --list paths")
    p.add_argument("--out", type=Path, help="--db: output folder (default: DB itself)")
    p.add_argument("--scores", type=Path, help="--tree/--list: output prefix of the scores")
    p.add_argument("--vote", action="store_true", help="--tree/--list: also write PREFIX.voted.npy")
    p.add_argument("--attributes", help="a subset of the model's attributes, in this order (default: all of them)")
    p.add_argument("--batch", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--mirror", choices=("none", "sum"), default="none",
                   help="add the flipped image's scores (default none, as in training evaluation)")
    inference.add_arguments(p, "the classifier")
    p.add_argument("--force", action="store_true", help="--db: label again even when up to date, and replace labels made by another classifier")
    args = p.parse_args(argv)
    check_engine(p, args.engine, args.gpu)
    return args


def run(args) -> int:
    if args.batch < 1:
        raise al.LabelError("--batch must be >= 1")
    names = None
    if args.attributes:
        try:
            names = list(parse_attributes(args.attributes))
        except ValueError as e:
            raise al.LabelError(str(e)) from None
    if args.db is None and not args.scores:
        raise al.LabelError("--tree/--list need --scores PREFIX")
    if args.scores:
        try:
            feature_paths(args.scores)  # a folder ('DIR/') is refused before anything is scored
        except ValueError as e:
            raise al.LabelError(f"--scores: {e}") from None
    # the output's lock (for a database the one build_db takes): a second run on it stops at once
    lock = OutputLock(args.scores if args.db is None else args.out or args.db)  # noqa: F841
    net, meta = al.load_classifier(args.model, args.weights, args.gpu, args.engine)
    model_info = {"model": str(args.model.resolve()),
                  "weights": str((args.weights or args.model / al.WEIGHTS_FILE).resolve()),
                  "key": al.model_key(args.model, args.weights)}
    if args.db is not None:
        summary = al.label_database(args.db, net, meta, args.out, names, force=args.force,
                                    batch_size=args.batch, mirror=args.mirror, model_info=model_info)
        if summary.get("up_to_date"):
            print(f"{summary['out']} is up to date: labelled before by the same classifier (by content), "
                  f"attributes and --mirror; nothing was changed")
            return 0
        print(al.format_vote(summary))
        print(f"-> {Path(summary['out']) / 'attribute_labels.json'}")
        return 0

    if args.tree is not None:
        samples = datasets.read_identity_folders(args.tree)
        root = args.tree
    else:
        if args.root is None:
            raise al.LabelError("--list needs --root")
        samples = datasets.read_image_list(args.list, root=args.root)
        root = args.root
    cols = al.columns(meta, names)
    names = [meta["attributes"][c] for c in cols]
    paths = [s.path for s in samples]
    scores = al.score_paths(net, paths, root, batch_size=args.batch, mirror=args.mirror)[:, cols]
    info = {"attributes": names, "mirror": args.mirror, **model_info}
    out = al.write_scores(args.scores, scores, paths, info)
    print(f"-> {out} ({len(paths)} x {len(names)} scores)")
    if args.vote:
        labels, summary = al.vote_summary(scores, [s.identity for s in samples], names)
        voted = al.save_npy(Path(str(out)[:-len(".npy")] + ".voted.npy"), labels)
        al._write_json(voted.with_name(voted.name[:-len(".npy")] + ".json"), {**summary, **info})
        print(al.format_vote(summary))
        print(f"-> {voted}")
    return 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    run_tool(main, bad=(al.LabelError, datasets.DatasetError, ImageError, FileExistsError),
             interrupt_hint="no label or score file was left half written (earlier ones are as they were); "
                            "rerun the same command to label again",
             machine_hint="a problem of the machine, not of the images: free space or fix the output's "
                          "permissions, then rerun; nothing half-written was left")
