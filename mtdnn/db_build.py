"""Building a training database from aligned faces (tools/build_db.py is the command): the
hold-out and shuffle plan, the records for the LMDB writer, the inputs' content keys (a rerun
on the same inputs changes nothing), and the build in ``OUT.partial`` swapped into place.

:func:`build` takes a :class:`BuildOptions`; the writers are :mod:`mtdnn.db`, the manifests
:mod:`mtdnn.manifest`.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mtdnn import datasets, db, manifest
from mtdnn.paper import PAPER_ATTRIBUTES
from mtdnn.images import ImageError, load_image
from mtdnn.records import escape_field, read_failures, write_failures
from mtdnn.vote import majority_vote

# Chosen by bench/bench_db.py (see its docstring): raw pixels are lossless and read ~4.5x faster
# than JPEG and ~11x faster than PNG through Caffe's Data layer; JPEG is 5.6x smaller on disk.
DEFAULT_ENCODING = "raw"
FAILURES = "failures.txt"


@dataclass
class BuildOptions:
    """One database build (tools/build_db.py's options, its help says what each does)."""
    out: Path
    images: Path | None = None             # an aligned folder-per-identity tree, or
    list: Path | None = None               # a 'path label' list, paths below ``root``
    root: Path | None = None
    attributes: Path | None = None         # at most one of these three attribute sources
    celeba_attributes: Path | None = None
    placeholder_attributes: int | None = None
    vote: bool = False
    attribute_names: str | None = None     # comma-separated
    val_per_identity: int = 1
    min_images: int = 1
    seed: int = 0
    encoding: str = DEFAULT_ENCODING
    force: bool = False


def load_samples(options: BuildOptions) -> tuple[list[datasets.Sample], Path]:
    if options.images:
        return datasets.read_identity_folders(options.images), options.images
    if not options.root:
        raise datasets.DatasetError("--list needs --root (the folder its paths are relative to)")
    return datasets.read_image_list(options.list, root=options.root), options.root


def load_attributes(options: BuildOptions, samples) -> tuple[np.ndarray | None, list[str]]:
    names = [n for n in (options.attribute_names or "").split(",") if n]
    if options.placeholder_attributes is not None:
        m = options.placeholder_attributes
        if m < 1 or (names and len(names) != m):
            raise datasets.DatasetError(f"--placeholder-attributes {m} needs M >= 1 (and M --attribute-names)")
        return np.zeros((len(samples), m), np.float32), names or [f"attr{k}" for k in range(m)]
    if options.attributes:
        values = datasets.read_attribute_matrix(options.attributes, n_rows=len(samples), scores=options.vote)
        if names and len(names) != values.shape[1]:
            raise datasets.DatasetError(f"{options.attributes}: {values.shape[1]} columns but {len(names)} --attribute-names")
        return values, names or [f"attr{k}" for k in range(values.shape[1])]
    if options.celeba_attributes:
        table = datasets.read_celeba_attributes(options.celeba_attributes).select(names or PAPER_ATTRIBUTES)
        row = {f: i for i, f in enumerate(table.files)}
        missing = [s.path for s in samples if Path(s.path).name not in row]
        if missing:
            raise datasets.DatasetError(f"{options.celeba_attributes}: no row for {len(missing)} image(s), first {missing[0]!r}")
        return table.values[[row[Path(s.path).name] for s in samples]].astype(np.float32), table.names
    return None, names


def plan(samples, attributes, options, hashes=None):
    """Record indices of the train and val splits, the labels, the identity names and the
    groups of byte-identical images (``hashes``: sha256 of every sample's file). An image with
    a byte-identical copy under another name is never held out, so it and its copy both stay
    in training (a copy in val would test on a training image)."""
    keep = manifest.drop_small_identities([s.identity for s in samples], options.min_images)
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        raise datasets.DatasetError(f"no identity has {options.min_images} or more images")
    names = datasets.identity_names([samples[i] for i in kept])
    labels = np.full(len(samples), -1, np.int64)
    labels[kept] = datasets.assign_labels([samples[i] for i in kept], names)
    groups = duplicate_groups([hashes[i] for i in kept]) if hashes is not None else []
    eligible = np.ones(len(kept), bool)
    for group in groups:
        eligible[group] = False
    val_mask = manifest.holdout(labels[kept], options.val_per_identity, options.seed, eligible=eligible)
    train = manifest.shuffled(kept[~val_mask], options.seed)
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


def input_keys(options: BuildOptions, samples, root: Path, hashes: list[str]) -> dict:
    """What the database is made from, by content: the images (relative path, identity and
    sha256 of the bytes of every input image), the attribute source's bytes, the options.
    Equal keys: the same database (build_db's rerun then leaves the folder, labels included,
    as it is); a moved image folder with the same files is the same input."""
    import hashlib

    from mtdnn.fileio import content_key
    h = hashlib.sha256()
    for s, digest in zip(samples, hashes):
        h.update(f"{escape_field(s.path)}\t{escape_field(s.identity)}\t{digest}\n".encode("utf-8"))
    source = options.attributes or options.celeba_attributes
    if source is not None:
        attributes = f"{'celeba' if options.celeba_attributes else 'matrix'} sha256 {content_key(source)['sha256']}"
    elif options.placeholder_attributes is not None:
        attributes = f"placeholder {options.placeholder_attributes}"
    else:
        attributes = None
    return {"images": f"{len(samples)} images, sha256 {h.hexdigest()}", "attributes": attributes,
            "attribute_names": options.attribute_names, "vote": options.vote, "seed": options.seed,
            "val_per_identity": options.val_per_identity, "min_images": options.min_images, "encoding": options.encoding}


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


def build(options: BuildOptions) -> dict:
    """Build ``options.out`` (locked against a second run; busy: OutputBusy); raises
    :class:`UpToDate` when it exists and was built from the same inputs."""
    from mtdnn.fileio import OutputLock
    with OutputLock(options.out):  # the lock file is manifest.build_lock(options.out); busy: OutputBusy, exit 1
        return _build(options)


def _check_existing(out: Path, inputs: dict, force: bool) -> None:
    """Refuse to replace a database built from other inputs (or say it is up to date)."""
    before = existing_inputs(out)
    if before == inputs and not force:
        problems = manifest.database_problems(out, check_lock=False)
        if not problems:
            raise UpToDate()
        raise FileExistsError(f"{out} was built from the same inputs but is incomplete ({problems[0]}); "
                              f"pass --force to rebuild it")
    if not force:
        if before is None:
            why = "it records no input keys (built by an older build_db or damaged)"
        else:
            why = "its inputs differ: " + "; ".join(f"{k} {before.get(k)!r} -> {v!r}"
                                                   for k, v in inputs.items() if before.get(k) != v)
        raise FileExistsError(f"{out} exists and {why}; pass --force to replace it (its attribute "
                              f"labels go with it), or choose another output folder")


def _vote(attributes, attr_names, samples):
    """(the identities' majority labels, what the vote changed) for --vote."""
    if attributes is None:
        raise datasets.DatasetError("--vote needs attributes (--attributes or --celeba-attributes)")
    result = majority_vote(attributes, [s.identity for s in samples])
    return result.labels.astype(np.float32), {"changed": dict(zip(attr_names, result.changed.tolist())),
                                              "changed_total": result.changed_total}


def _write_split(stage: Path, split: str, idx, samples, root, labels, names, attributes, attr_names,
                 options: BuildOptions, shape_box: list, failed: dict, build_info: dict):
    """One split's LMDB, attribute HDF5 and manifest into ``stage``; (records, img/s)."""
    start = time.time()
    n = db.write_image_lmdb(stage / f"{split}_lmdb", tqdm(
        records(samples, idx, labels, root, shape_box, failed), total=len(idx), unit="img",
        desc=f"{split} lmdb"), encoded=options.encoding)
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
        split, paths, labels[idx], names, f"{split}_lmdb", hdf5, options.encoding, shape_box[0],
        attr_names if attributes is not None else [], split_attrs, build_info))
    return n, rate


def _swap_in(stage: Path, out: Path, old: Path) -> None:
    """Move the finished folder into place; only now is an old ``out`` given up."""
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old)
    else:
        os.replace(stage, out)


def _build(options: BuildOptions) -> dict:
    samples, root = load_samples(options)
    attributes, attr_names = load_attributes(options, samples)
    missing = datasets.missing_files(samples, root)
    if missing:
        raise datasets.DatasetError(f"{len(missing)} image(s) missing below {root}, first {missing[0]!r}")
    out = options.out
    old = out.with_name(out.name + ".old")
    if not out.exists() and old.is_dir():  # killed between the two renames of the swap below
        os.replace(old, out)
        print(f"restored {out} from {old} (a build was stopped while replacing it)", file=sys.stderr)
    hashes, reference = hash_images(samples, root)
    inputs = input_keys(options, samples, root, hashes)
    if out.exists():
        _check_existing(out, inputs, options.force)
    vote_info = None
    if options.vote:
        attributes, vote_info = _vote(attributes, attr_names, samples)
    train, val, labels, names, duplicates = plan(samples, attributes, options, hashes)

    stage = out.with_name(out.name + ".partial")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    splits = [split for split, idx in (("train", train), ("val", val)) if split == "train" or len(idx)]
    build_info = {"source": str(root.resolve()), "seed": options.seed, "val_per_identity": options.val_per_identity,
                  "min_images": options.min_images, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "input_images": len(samples), "majority_vote": vote_info, "splits": splits,
                  "duplicates": duplicates, "inputs": inputs}
    shape_box, summary, failed = [reference] if reference else [], {}, {}
    try:
        for split, idx in (("train", train), ("val", val)):
            if split in splits:
                summary[split] = _write_split(stage, split, idx, samples, root, labels, names, attributes,
                                              attr_names, options, shape_box, failed, build_info)
        # the images left out, one "path<TAB>reason" a line (empty: none); reruns repeat them
        write_failures(stage / FAILURES, {samples[i].path: why for i, why in failed.items()})
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _swap_in(stage, out, old)
    return {"identities": len(names), "summary": summary, "dropped": int((labels < 0).sum()), "vote": vote_info,
            "duplicates": duplicates, "failed": len(failed)}


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
