#!/usr/bin/env python3
"""Build Caffe training inputs from aligned faces: train/val image LMDBs, HDF5 attributes, manifests.

    tools/build_db.py OUT --images ALIGNED_TREE [--celeba-attributes list_attr_celeba.txt | --attributes A.npy]

Input: an aligned folder-per-identity tree (--images) or a 'path label' list (--list, paths below
--root). One image of every identity that has at least two is held out for validation (seeded;
Sec. 4.4 of the paper), identities with fewer than --min-images images are dropped, the training
records are shuffled (seeded) and the splits are written to OUT:

  OUT/train_lmdb, OUT/val_lmdb                 Caffe Datum records, label = identity index,
                                               key %08d_<image path>
  OUT/train_attributes.h5 (+ .h5.txt)          float32 N x M attributes in the same order
  OUT/val_attributes.h5 (+ .h5.txt)            (the .txt is the HDF5Data layer's 'source')
  OUT/train_manifest.json, OUT/val_manifest.json   counts, identities, attribute names,
                                               record paths, order checksum (tools/check_db.py)

Attributes: --attributes gives a matrix (.npy, .h5, .txt) with one row per input image in the
input's order (the list's order, or the sorted paths of the tree); --celeba-attributes takes a
CelebA list_attr_celeba.txt and matches rows by file name. Values must be -1, 0 or 1, except
with --vote, which first gives every image its identity's majority label (mtdnn.vote; raw
classifier scores allowed). --placeholder-attributes M writes M columns of 0 ("unknown") for
data that has no attribute labels yet (e.g. LFW), so the two-input pipeline can be run.

Example: LFW View 1 training people, raw photos to a Caffe-ready database (about 8 min here):

  tools/align_faces.py $MTDNN_DATA/lfw/lfw-deepfunneled work/lfw-devtrain-112x96 \
      --people $MTDNN_DATA/lfw/peopleDevTrain.txt \
  && tools/build_db.py work/lfw-devtrain-db --images work/lfw-devtrain-112x96 \
      --placeholder-attributes 7 --attribute-names Narrow_Eyes,Big_Nose,Pointy_Nose,Chubby,Double_Chin,High_Cheekbones,Male \
  && tools/check_db.py work/lfw-devtrain-db

Everything is built in OUT.partial and moved into place at the end: an existing OUT is replaced
only with --force, and a failed run leaves it as it was.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mtdnn import datasets, db, manifest  # noqa: E402
from mtdnn.images import ImageError, load_image  # noqa: E402
from mtdnn.vote import majority_vote  # noqa: E402

# Chosen by bench/bench_db.py (see its docstring): raw pixels are lossless and read ~4.5x faster
# than JPEG and ~11x faster than PNG through Caffe's Data layer; JPEG is 5.6x smaller on disk.
DEFAULT_ENCODING = "raw"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="aligned folder-per-identity tree")
    src.add_argument("--list", type=Path, help="'path label' list (paths relative to --root)")
    p.add_argument("--root", type=Path, help="root of the --list paths")
    att = p.add_mutually_exclusive_group()
    att.add_argument("--attributes", type=Path, help=".npy/.h5/.txt attribute matrix in the input's order")
    att.add_argument("--celeba-attributes", type=Path, help="CelebA list_attr_celeba.txt (rows matched by file name)")
    att.add_argument("--placeholder-attributes", type=int, metavar="M",
                     help="no labels yet: M columns of 0 ('unknown'), so the HDF5 side of the pipeline exists")
    p.add_argument("--vote", action="store_true",
                   help="majority-vote the attributes per identity first (mtdnn.vote; --attributes may then "
                        "hold raw classifier scores)")
    p.add_argument("--attribute-names", help="comma-separated names (CelebA default: the paper's seven)")
    p.add_argument("--val-per-identity", type=int, default=1, help="held-out images per identity (default 1; 0: no val)")
    p.add_argument("--min-images", type=int, default=1, help="drop identities with fewer images (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hold-out and the shuffle (default 0)")
    p.add_argument("--encoding", choices=("raw", "png", "jpg"), default=DEFAULT_ENCODING,
                   help=f"Datum storage (default {DEFAULT_ENCODING}; jpg is lossy)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    return p.parse_args(argv)


def load_samples(args) -> tuple[list[datasets.Sample], Path]:
    if args.images:
        return datasets.read_identity_folders(args.images), args.images
    if not args.root:
        raise datasets.DatasetError("--list needs --root (the folder its paths are relative to)")
    return datasets.read_image_list(args.list, root=args.root), args.root


def load_attributes(args, samples) -> tuple[np.ndarray | None, list[str]]:
    names = [n for n in (args.attribute_names or "").split(",") if n]
    if args.placeholder_attributes is not None:
        m = args.placeholder_attributes
        if m < 1 or (names and len(names) != m):
            raise datasets.DatasetError(f"--placeholder-attributes {m} needs M >= 1 (and M --attribute-names)")
        return np.zeros((len(samples), m), np.float32), names or [f"attr{k}" for k in range(m)]
    if args.attributes:
        values = datasets.read_attribute_matrix(args.attributes, n_rows=len(samples), scores=args.vote)
        if names and len(names) != values.shape[1]:
            raise datasets.DatasetError(f"{args.attributes}: {values.shape[1]} columns but {len(names)} --attribute-names")
        return values, names or [f"attr{k}" for k in range(values.shape[1])]
    if args.celeba_attributes:
        table = datasets.read_celeba_attributes(args.celeba_attributes).select(names or datasets.PAPER_ATTRIBUTES)
        row = {f: i for i, f in enumerate(table.files)}
        missing = [s.path for s in samples if Path(s.path).name not in row]
        if missing:
            raise datasets.DatasetError(f"{args.celeba_attributes}: no row for {len(missing)} image(s), first {missing[0]!r}")
        return table.values[[row[Path(s.path).name] for s in samples]].astype(np.float32), table.names
    return None, names


def plan(samples, attributes, args):
    """Record indices of the train and val splits, the labels and the identity names."""
    keep = manifest.drop_small_identities([s.identity for s in samples], args.min_images)
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        raise datasets.DatasetError(f"no identity has {args.min_images} or more images")
    names = datasets.identity_names([samples[i] for i in kept])
    labels = np.full(len(samples), -1, np.int64)
    labels[kept] = datasets.assign_labels([samples[i] for i in kept], names)
    val_mask = manifest.holdout(labels[kept], args.val_per_identity, args.seed)
    train = manifest.shuffled(kept[~val_mask], args.seed)
    val = kept[val_mask]
    val = val[np.lexsort(([samples[i].path for i in val], labels[val]))]  # val: by label, then path
    return train, val, labels, names


def records(samples, indices, labels, root: Path, shape_box: list):
    """(image, label, path) for the LMDB writer; all images must share one shape."""
    for i in indices:
        s = samples[i]
        image = load_image(root / s.path)
        if not shape_box:
            shape_box.append(image.shape)
        elif image.shape != shape_box[0]:
            raise ImageError(root / s.path, "wrong size",
                             f"{image.shape[1]}x{image.shape[0]}, the others are {shape_box[0][1]}x{shape_box[0][0]}")
        yield image, int(labels[i]), s.path


def build(args) -> dict:
    samples, root = load_samples(args)
    attributes, attr_names = load_attributes(args, samples)
    missing = datasets.missing_files(samples, root)
    if missing:
        raise datasets.DatasetError(f"{len(missing)} image(s) missing below {root}, first {missing[0]!r}")
    vote_info = None
    if args.vote:
        if attributes is None:
            raise datasets.DatasetError("--vote needs attributes (--attributes or --celeba-attributes)")
        result = majority_vote(attributes, [s.identity for s in samples])
        attributes = result.labels.astype(np.float32)
        vote_info = {"changed": dict(zip(attr_names, result.changed.tolist())), "changed_total": result.changed_total}
    train, val, labels, names = plan(samples, attributes, args)

    out = args.out
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    stage = out.with_name(out.name + ".partial")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    build_info = {"source": str(root.resolve()), "seed": args.seed, "val_per_identity": args.val_per_identity,
                  "min_images": args.min_images, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "input_images": len(samples), "majority_vote": vote_info}
    shape_box, summary = [], {}
    try:
        for split, idx in (("train", train), ("val", val)):
            if split == "val" and len(idx) == 0:
                continue
            start = time.time()
            n = db.write_image_lmdb(stage / f"{split}_lmdb", tqdm(
                records(samples, idx, labels, root, shape_box), total=len(idx), unit="img", desc=f"{split} lmdb"),
                encoded=args.encoding)
            rate = n / max(time.time() - start, 1e-9)
            paths = [samples[i].path for i in idx]
            split_attrs = None
            hdf5 = None
            if attributes is not None:
                split_attrs = attributes[idx]
                hdf5 = f"{split}_attributes.h5"
                db.write_attribute_hdf5(stage / hdf5, split_attrs, extra={"paths": paths, "labels": labels[idx]})
            manifest.write_manifest(stage / f"{split}_manifest.json", manifest.make_manifest(
                split, paths, labels[idx], names, f"{split}_lmdb", hdf5, args.encoding, shape_box[0],
                attr_names if attributes is not None else [], split_attrs, build_info))
            summary[split] = (n, rate)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    # Swap the finished folder in; only now is an old OUT given up.
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old)
    else:
        os.replace(stage, out)
    for source in out.glob("*_attributes.h5.txt"):  # HDF5Data wants the final absolute path
        tmp = source.with_name(source.name + ".partial")
        tmp.write_text(f"{source.with_suffix('').resolve()}\n")
        os.replace(tmp, source)
    return {"identities": len(names), "summary": summary, "dropped": int((labels < 0).sum()), "vote": vote_info}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = build(args)
    except (datasets.DatasetError, ImageError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2  # bad input
    for split, (n, rate) in result["summary"].items():
        print(f"{split}: {n} records ({rate:.0f} img/s written)", file=sys.stderr)
    if result["vote"]:
        print(f"majority vote changed {result['vote']['changed_total']} labels: {result['vote']['changed']}",
              file=sys.stderr)
    print(f"{result['identities']} identities, {result['dropped']} images dropped (--min-images); "
          f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
