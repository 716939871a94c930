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

An image that cannot be read or has another size than most of them is left out, named with the
reason in OUT/failures.txt, and the run goes on; the last line says "incomplete" and the exit
status is 1 then, unless --allow-failures. Everything is built in OUT.partial and moved into
place at the end; a failed run leaves OUT as it
was. Rerunning on an existing OUT built from the same inputs (the images' bytes, names and
identities, the attribute file's bytes, the options) says it is up to date and changes nothing
(attribute labels written since by tools/label_attributes.py included); with other inputs it
stops and says what differs; --force rebuilds it in either case. Two runs on one OUT: the second stops at
once (lock file .OUT.lock beside it). Byte-identical images under two names are reported and
kept in training, so no image is validated against its own copy. Each HDF5Data list file
(*_attributes.h5.txt) names its .h5 relative to the database folder, so a copied or moved
database stays self-contained (tools/train.py writes the run's own list files).
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
from mtdnn.cli import run_tool  # noqa: E402
from mtdnn.records import escape_field, read_failures, write_failures  # noqa: E402
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
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 when images had to be left out (unreadable, another size); they are listed in "
                        "OUT/failures.txt either way")
    p.add_argument("--force", action="store_true",
                   help="rebuild OUT even when it is up to date, or replace one built from other inputs "
                        "(without it, such a rerun stops); its attribute labels go with it")
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


def plan(samples, attributes, args, hashes=None):
    """Record indices of the train and val splits, the labels, the identity names and the
    groups of byte-identical images (``hashes``: sha256 of every sample's file). An image with
    a byte-identical copy under another name is never held out, so it and its copy both stay
    in training (a copy in val would test on a training image)."""
    keep = manifest.drop_small_identities([s.identity for s in samples], args.min_images)
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        raise datasets.DatasetError(f"no identity has {args.min_images} or more images")
    names = datasets.identity_names([samples[i] for i in kept])
    labels = np.full(len(samples), -1, np.int64)
    labels[kept] = datasets.assign_labels([samples[i] for i in kept], names)
    groups = duplicate_groups([hashes[i] for i in kept]) if hashes is not None else []
    eligible = np.ones(len(kept), bool)
    for group in groups:
        eligible[group] = False
    val_mask = manifest.holdout(labels[kept], args.val_per_identity, args.seed, eligible=eligible)
    train = manifest.shuffled(kept[~val_mask], args.seed)
    val = kept[val_mask]
    val = val[np.lexsort(([samples[i].path for i in val], labels[val]))]  # val: by label, then path
    return train, val, labels, names, [[escape_field(samples[kept[i]].path) for i in g] for g in groups]


def duplicate_groups(hashes) -> list[list[int]]:
    """Indices of the items that share a hash, one list per hash seen more than once."""
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        by_hash.setdefault(h, []).append(i)
    return [g for g in by_hash.values() if len(g) > 1]


def records(samples, indices, labels, root: Path, shape_box: list, failed: dict):
    """(image, label, path) for the LMDB writer; all images must share one shape, ``shape_box[0]``
    (the most common size, :func:`hash_images`; the first image's when none is given). An image
    that cannot be read or has another shape is left out and recorded in ``failed`` (index:
    reason); the run goes on."""
    for i in indices:
        s = samples[i]
        try:
            image = load_image(root / s.path)
            if not shape_box:
                shape_box.append(image.shape)
            elif image.shape != shape_box[0]:
                raise ImageError(root / s.path, "wrong size", f"{image.shape[1]}x{image.shape[0]}, most of the "
                                                             f"images are {shape_box[0][1]}x{shape_box[0][0]}")
        except ImageError as e:
            failed[int(i)] = str(e)
            continue
        yield image, int(labels[i]), escape_field(s.path)  # the database names images as record files do


def input_keys(args, samples, root: Path, hashes: list[str]) -> dict:
    """What the database is made from, by content: the images (relative path, identity and
    sha256 of the bytes of every input image), the attribute source's bytes, the options.
    Equal keys: the same database (build_db's rerun then leaves the folder, labels included,
    as it is); a moved image folder with the same files is the same input."""
    import hashlib

    from mtdnn.fileio import content_key
    h = hashlib.sha256()
    for s, digest in zip(samples, hashes):
        h.update(f"{escape_field(s.path)}\t{escape_field(s.identity)}\t{digest}\n".encode("utf-8"))
    source = args.attributes or args.celeba_attributes
    if source is not None:
        attributes = f"{'celeba' if args.celeba_attributes else 'matrix'} sha256 {content_key(source)['sha256']}"
    elif args.placeholder_attributes is not None:
        attributes = f"placeholder {args.placeholder_attributes}"
    else:
        attributes = None
    return {"images": f"{len(samples)} images, sha256 {h.hexdigest()}", "attributes": attributes,
            "attribute_names": args.attribute_names, "vote": args.vote, "seed": args.seed,
            "val_per_identity": args.val_per_identity, "min_images": args.min_images, "encoding": args.encoding}


def existing_inputs(out: Path) -> dict | None:
    """The input keys recorded in an existing database (None: none recorded or unreadable)."""
    try:
        return manifest.read_manifest(out / "train_manifest.json").get("build", {}).get("inputs")
    except manifest.ManifestError:
        return None


def hash_images(samples, root: Path) -> tuple[list[str], tuple | None]:
    """sha256 of every image's bytes, and the reference shape (H, W, 3): the size most of the
    images have, read from their headers (Pillow), so one odd image is what is left out, not
    everything but it (ties: the size seen first). None when no header could be read."""
    import hashlib
    import io
    from collections import Counter

    from PIL import Image
    hashes, sizes = [], Counter()
    for s in tqdm(samples, unit="img", desc="hash", leave=False):
        data = (root / s.path).read_bytes()
        hashes.append(hashlib.sha256(data).hexdigest())
        try:
            with Image.open(io.BytesIO(data)) as im:
                sizes[im.size] += 1  # (W, H); unreadable headers are left to load_image's verdict
        except Exception:  # noqa: BLE001 - any header Pillow cannot read: that image fails later, named
            pass
    if not sizes:
        return hashes, None
    (w, h), _ = sizes.most_common(1)[0]
    return hashes, (h, w, 3)


class UpToDate(Exception):
    """The database exists and was built from the same inputs."""


def build(args) -> dict:
    from mtdnn.fileio import OutputLock
    with OutputLock(args.out):  # the lock file is manifest.build_lock(args.out); busy: OutputBusy, exit 1
        return _build(args)


def _build(args) -> dict:
    samples, root = load_samples(args)
    attributes, attr_names = load_attributes(args, samples)
    missing = datasets.missing_files(samples, root)
    if missing:
        raise datasets.DatasetError(f"{len(missing)} image(s) missing below {root}, first {missing[0]!r}")
    out = args.out
    old = out.with_name(out.name + ".old")
    if not out.exists() and old.is_dir():  # killed between the two renames of the swap below
        os.replace(old, out)
        print(f"restored {out} from {old} (a build was stopped while replacing it)", file=sys.stderr)
    hashes, reference = hash_images(samples, root)
    inputs = input_keys(args, samples, root, hashes)
    if out.exists():
        before = existing_inputs(out)
        if before == inputs and not args.force:
            problems = manifest.database_problems(out, check_lock=False)
            if not problems:
                raise UpToDate()
            raise FileExistsError(f"{out} was built from the same inputs but is incomplete ({problems[0]}); "
                                  f"pass --force to rebuild it")
        if not args.force:
            if before is None:
                why = "it records no input keys (built by an older build_db or damaged)"
            else:
                why = "its inputs differ: " + "; ".join(f"{k} {before.get(k)!r} -> {v!r}"
                                                       for k, v in inputs.items() if before.get(k) != v)
            raise FileExistsError(f"{out} exists and {why}; pass --force to replace it (its attribute "
                                  f"labels go with it), or choose another output folder")
    vote_info = None
    if args.vote:
        if attributes is None:
            raise datasets.DatasetError("--vote needs attributes (--attributes or --celeba-attributes)")
        result = majority_vote(attributes, [s.identity for s in samples])
        attributes = result.labels.astype(np.float32)
        vote_info = {"changed": dict(zip(attr_names, result.changed.tolist())), "changed_total": result.changed_total}
    train, val, labels, names, duplicates = plan(samples, attributes, args, hashes)

    stage = out.with_name(out.name + ".partial")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    splits = [split for split, idx in (("train", train), ("val", val)) if split == "train" or len(idx)]
    build_info = {"source": str(root.resolve()), "seed": args.seed, "val_per_identity": args.val_per_identity,
                  "min_images": args.min_images, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "input_images": len(samples), "majority_vote": vote_info, "splits": splits,
                  "duplicates": duplicates, "inputs": inputs}
    shape_box, summary, failed = [reference] if reference else [], {}, {}
    try:
        for split, idx in (("train", train), ("val", val)):
            if split not in splits:
                continue
            start = time.time()
            n = db.write_image_lmdb(stage / f"{split}_lmdb", tqdm(
                records(samples, idx, labels, root, shape_box, failed), total=len(idx), unit="img",
                desc=f"{split} lmdb"), encoded=args.encoding)
            rate = n / max(time.time() - start, 1e-9)
            idx = np.array([i for i in idx if int(i) not in failed], np.int64)
            if n == 0:
                raise datasets.DatasetError(f"no image of the {split} split could be used; first problem: "
                                            f"{next(iter(failed.values()))}")
            paths = [escape_field(samples[i].path) for i in idx]
            split_attrs = None
            hdf5 = None
            if attributes is not None:
                split_attrs = attributes[idx]
                hdf5 = f"{split}_attributes.h5"
                db.write_attribute_hdf5(stage / hdf5, split_attrs, extra={"paths": paths, "labels": labels[idx]},
                                        relative_source=True)
            manifest.write_manifest(stage / f"{split}_manifest.json", manifest.make_manifest(
                split, paths, labels[idx], names, f"{split}_lmdb", hdf5, args.encoding, shape_box[0],
                attr_names if attributes is not None else [], split_attrs, build_info))
            summary[split] = (n, rate)
        # the images left out, one "path<TAB>reason" a line (empty: none); reruns repeat them
        write_failures(stage / FAILURES, {samples[i].path: why for i, why in failed.items()})
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    # Swap the finished folder in; only now is an old OUT given up.
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old)
    else:
        os.replace(stage, out)
    return {"identities": len(names), "summary": summary, "dropped": int((labels < 0).sum()), "vote": vote_info,
            "duplicates": duplicates, "failed": len(failed)}


FAILURES = "failures.txt"


def failure_count(out: Path) -> int:
    path = out / FAILURES
    return len(read_failures(path))


def last_line(out: Path, failed: int, allow: bool) -> tuple[str, int]:
    """The closing line and exit status: a database that left images out says so."""
    if not failed:
        return f"done: {out}", 0
    return (f"incomplete: {failed} image(s) left out of {out} (unreadable or of another size), listed in "
            f"{out / FAILURES}" + ("" if allow else "; fix or remove them and rebuild (--force), or pass "
                                                    "--allow-failures to accept the database without them"),
            0 if allow else 1)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = build(args)
    except UpToDate:
        print(f"{args.out} is up to date (built from the same images, attributes and options); "
              f"nothing was changed", file=sys.stderr)
        line, status = last_line(args.out, failure_count(args.out), args.allow_failures)
        print(line, file=sys.stderr)
        return status
    for split, (n, rate) in result["summary"].items():
        print(f"{split}: {n} records ({rate:.0f} img/s written)", file=sys.stderr)
    if result["vote"]:
        print(f"majority vote changed {result['vote']['changed_total']} labels: {result['vote']['changed']}",
              file=sys.stderr)
    if result["duplicates"]:
        shown = "; ".join(" = ".join(g) for g in result["duplicates"][:5])
        print(f"{len(result['duplicates'])} group(s) of byte-identical images under different names, each kept "
              f"in training (never held out): {shown}" + (" ..." if len(result["duplicates"]) > 5 else "")
              + " (all in the manifests' build.duplicates)", file=sys.stderr)
    print(f"{result['identities']} identities, {result['dropped']} images dropped (--min-images); "
          f"written to {args.out}", file=sys.stderr)
    if result["failed"]:
        listed = list(read_failures(args.out / FAILURES).values())
        for why in listed[:10]:
            print(f"left out: {escape_field(why)}", file=sys.stderr)
        if len(listed) > 10:
            print(f"left out: ... ({len(listed) - 10} more in {args.out / FAILURES})", file=sys.stderr)
    line, status = last_line(args.out, result["failed"], args.allow_failures)
    print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    run_tool(main, bad=(datasets.DatasetError, ImageError, FileExistsError, ValueError, manifest.ManifestError),
             interrupt_hint="the output folder was left as it was (the unfinished build in OUT.partial is "
                            "removed); rerun the same command to build it",
             machine_hint="a problem of the machine, not of the images: free space on the output's disk or fix "
                          "its permissions, then rerun; the output folder was left as it was")
