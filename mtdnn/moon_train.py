"""MOON on CelebA (Sec. 3.2 of the paper): the steps of tools/train_attributes.py.

:func:`run` aligns CelebA with the recognition data's MTCNN and template, splits it, builds the
LMDB + HDF5 inputs, trains with `caffe train` and evaluates on the held-out images;
:class:`MoonOptions` holds the tool's options (tools/train_attributes.py --help says what each
one means). Every step is resumable: rerunning skips what is done. The alignment is
:func:`mtdnn.alignment.align_images`, called in this process.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mtdnn.paper import parse_attributes
from mtdnn.netgen.moon import render_moon
from mtdnn.netgen.spec import GenerateError

from . import attribute_labels as al
from . import db, inference, moon
from .caffe.log import parse_caffe_log, plot_curves
from .evaluation.attributes import attribute_accuracy
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from .images import load_image
from .paths import REPO, data_root
from .records import escape_field
from .vote import majority_vote

PRESETS = {
    "cpu": dict(backbone="fast", width=0.25, blocks="1,1,1,1", batch=32, iters=3000, lr=0.01),
    "gpu": dict(backbone="vgg16", width=1.0, blocks=None, batch=64, iters=20000, lr=0.01),
}


@dataclass
class MoonOptions:
    """One MOON training run (tools/train_attributes.py's options; its --help says what each does).
    ``backbone`` .. ``lr`` left None take the preset's value."""
    out: Path
    celeba: Path | None = None
    images: Path | None = None
    aligned: Path | None = None
    attributes: str = "all"
    target: str = "balanced"
    split: str = "auto"
    heldout: float = 0.2
    seed: int = 0
    limit: int | None = None
    workers: int = 2
    preset: str = "cpu"
    backbone: str | None = None
    width: float | None = None
    blocks: str | None = None
    batch: int | None = None
    iters: int | None = None
    lr: float | None = None
    gpu: int | None = None
    caffe: str | None = None
    threads: int = 1
    mirror: str = "none"
    retrain: bool = False


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- steps

CELEBA_IMAGE_FOLDERS = ("img_align_celeba", "img_align_celeba_89x109")  # the release, its half-size copy


def celeba_image_folder(celeba: Path) -> Path | None:
    """CelebA's aligned photos in the CelebA folder ``celeba``: the release's folder, else the
    half-size copy; None when neither is there."""
    return next((celeba / n for n in CELEBA_IMAGE_FOLDERS if (celeba / n).is_dir()), None)


def celeba_inputs(options: MoonOptions):
    celeba = options.celeba or data_root() / "celeba"
    images = options.images or celeba_image_folder(celeba)
    if images is None:
        raise moon.MoonError(f"{celeba}: no img_align_celeba folder; give --images")
    if not images.is_dir():
        raise moon.MoonError(f"{images}: not a folder")
    part = celeba / "list_eval_partition.txt"
    return celeba, images, part if part.is_file() else None


def align(table_files, images: Path, aligned: Path, workers: int) -> tuple[list[str], dict]:
    """Align the files (resumable, :func:`mtdnn.alignment.align_images`); (aligned files,
    {file: failure}), taken from the run's records (never re-parsed from its files)."""
    from .alignment import AlignInputError, AlignOptions, align_images
    aligned.mkdir(parents=True, exist_ok=True)
    listing = aligned / "celeba_list.txt"
    text = "".join(escape_field(f) + "\n" for f in table_files)
    if not listing.is_file() or listing.read_text(encoding="utf-8") != text:
        atomic_write_text(listing, text)
    log(f"align: {images} -> {aligned} ({workers} worker(s); records in {aligned / 'landmarks.txt'})")
    try:
        result = align_images(AlignOptions(src=images, out=aligned, list=listing, workers=workers))
    except AlignInputError as e:
        raise moon.MoonError(f"alignment: {e}") from None
    if result.stopped:
        raise moon.MoonError(f"alignment stopped at {escape_field(result.stopped[0])}: {result.stopped[1]}. "
                             f"A problem of the machine or the output, not of the image: fix it and rerun; "
                             f"the crops aligned so far are kept")
    wanted = set(table_files)
    done = set(result.aligned())
    return [f for f in table_files if f in done], {f: r for f, r in result.failed.items() if f in wanted}


def plan_split(table: moon.CelebaTable, keep: np.ndarray, mode: str, heldout: float, seed: int):
    """(train indices, test-net indices, evaluation indices, split description)."""
    present = set(table.partitions[keep].tolist())
    if mode == "official" or (mode == "auto" and {1, 2} <= present):
        if not {0, 1, 2} <= present:
            raise moon.MoonError(f"--split official needs images of partitions 0, 1 and 2; these cover {sorted(present)}")
        idx = np.flatnonzero(keep)
        parts = table.partitions[idx]
        return idx[parts == 0], idx[parts == 1], idx[parts == 2], "official CelebA partitions (train 0, val 1, test 2)"
    idx = np.flatnonzero(keep)
    held = moon.split_by_identity(table.identities[idx], heldout, seed)
    n_ids = len(set(table.identities[idx[held]]))
    desc = (f"by identity (seed {seed}): {n_ids} identities held out, "
            f"{len(set(table.identities[idx])) - n_ids} for training")
    return idx[~held], idx[held], idx[held], desc


def build_data(out: Path, table, aligned: Path, train, test, names, target_spec, seed):
    """OUT/data: LMDBs and MOON HDF5 files; reused when the plan is unchanged."""
    data = out / "data"
    order = train[np.random.default_rng([seed, 2]).permutation(len(train))]
    y_train = table.values[order]
    source = moon.positive_rates(y_train)
    target = moon.target_rates(target_spec, names, source)
    w_pos, w_neg = moon.class_weights(source, target)
    plan = {"train": [table.files[i] for i in order], "test": [table.files[i] for i in test],
            "attributes": list(names), "target": target.tolist(), "aligned": str(aligned.resolve())}
    digest = hashlib.sha256(json.dumps(plan).encode()).hexdigest()
    info = {"source_rates": source.tolist(), "target_rates": target.tolist(),
            "w_pos": w_pos.tolist(), "w_neg": w_neg.tolist(), "plan_sha256": digest}
    done_file = data / "plan.json"
    if done_file.is_file() and json.loads(done_file.read_text()).get("plan_sha256") == digest:
        log(f"data: reusing {data}")
        return data, info
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    for split, idx in (("train", order), ("val", test)):
        files = [table.files[i] for i in idx]
        y = table.values[idx]

        def records():
            for f, i in zip(files, idx):
                yield load_image(aligned / f), 0, f
        db.write_image_lmdb(data / f"{split}_lmdb", tqdm(records(), total=len(files), unit="img",
                                                        desc=f"{split} lmdb", dynamic_ncols=True))
        moon.write_moon_hdf5(data / f"{split}_moon.h5", y, moon.sample_weights(y, w_pos, w_neg),
                             extra={"paths": files, "identities": [str(v) for v in table.identities[idx]]})
    atomic_write_json(done_file, {**info, "train": len(order), "val": len(test)}, indent=1)
    return data, info


def train(out: Path, options: MoonOptions, iters: int) -> Path:
    """`caffe train` in OUT through the project's one Caffe runner (mtdnn.caffe.run.run_caffe: log in
    OUT/train.log, progress bar, Ctrl-C passed on to Caffe); returns the final snapshot."""
    from .caffe.log import caffe_errors
    from .caffe.run import caffe_binary, run_caffe
    from .caffe.snapshots import Phase
    phase = Phase("train", out / "solver.prototxt", out / "train_val.prototxt", iters, "moon", 0)
    cmd = [caffe_binary(options.caffe), "train", "-solver", phase.solver.name]
    if options.gpu is not None:
        cmd += ["-gpu", str(options.gpu)]
    log("train: " + " ".join(cmd) + f"  (log: {phase.log})")
    phase.log.unlink(missing_ok=True)  # a new training: the curves are of this run only
    rc, text = run_caffe(cmd, out, phase.log, phase, 0, threads=options.threads)
    if rc != 0:
        raise moon.MoonError(f"caffe train failed (exit {rc}); see {phase.log}:\n{caffe_errors(text)}")
    if not phase.final_weights.is_file():
        raise moon.MoonError(f"{phase.final_weights} was not written; see {phase.log}")
    return phase.final_weights


def evaluate(out: Path, table, evaluation, names, options: MoonOptions, split_desc: str) -> dict:
    net, meta = al.load_classifier(out, gpu=options.gpu)
    files = [table.files[i] for i in evaluation]
    aligned = Path(meta["aligned"])
    scores = al.score_paths(net, files, aligned, mirror=options.mirror, desc="evaluate")
    al.write_scores(out / "eval" / "heldout_scores", scores, files, {"attributes": names, "mirror": options.mirror})
    truth, ids = table.values[evaluation], table.identities[evaluation]
    res = attribute_accuracy(scores, truth, names)
    res.update({"model": str(out), "images": len(files), "identities": len(set(ids.tolist())),
                "split": split_desc, "mirror": options.mirror, "target": meta["target"],
                "beats_majority_baseline_in_balanced_accuracy": {
                    r["name"]: r["balanced_accuracy"] > 0.5 for r in res["attributes"]}})
    # Sec. 3.2's vote on the held-out identities: the voted labels against each image's own
    # CelebA label, and the ceiling of any per-identity label (the vote of the true labels).
    voted, summary = al.vote_summary(scores, ids, names)
    ceiling = majority_vote(truth, ids).labels
    res["after_vote"] = {
        "changed_total": summary["changed_total"],
        "images_of_multi_image_identities": summary["images_of_multi_image_identities"],
        "attributes": [{"name": a["name"], "accuracy": a["accuracy"], "balanced_accuracy": a["balanced_accuracy"],
                        "changed": v["changed"], "ceiling_accuracy": c["accuracy"]}
                       for a, v, c in zip(attribute_accuracy(voted, truth, names)["attributes"],
                                          summary["attributes"],
                                          attribute_accuracy(ceiling, truth, names)["attributes"])]}
    atomic_write_json(out / "eval" / "attributes.json", res, indent=1)
    return res


# --------------------------------------------------------------------------- main

def model_settings(options: MoonOptions) -> dict:
    """The preset's model and training settings with the options that override them."""
    preset = dict(PRESETS[options.preset])
    for key in ("backbone", "width", "blocks", "batch", "iters", "lr"):
        if getattr(options, key) is not None:
            preset[key] = getattr(options, key)
    if preset["backbone"] == "vgg16":
        preset["blocks"] = None
    return preset


def attribute_names(options: MoonOptions) -> list[str]:
    """The attributes to train; refused up front: none, or an output path Caffe would cut."""
    try:
        names = list(parse_attributes(options.attributes))
    except ValueError as e:
        raise moon.MoonError(str(e)) from None
    if not names:
        raise moon.MoonError("--attributes: at least one attribute")
    if any(c.isspace() for c in str(options.out.resolve())):  # up front, not after aligning and building
        raise moon.MoonError(f"--out {str(options.out.resolve())!r} holds white space: Caffe reads the HDF5Data list "
                             f"files it writes there word by word and would cut the path; choose a folder without")
    return names


def celeba_images(options: MoonOptions, names):
    """(CelebA's folder, its image folder, the attribute table of the images to use)."""
    celeba, images, part_file = celeba_inputs(options)
    table = moon.celeba_table(celeba / "list_attr_celeba.txt", celeba / "identity_CelebA.txt", names, part_file)
    if options.limit:
        table = moon.CelebaTable(table.files[:options.limit], table.names, table.values[:options.limit],
                                 table.identities[:options.limit], table.partitions[:options.limit])
    missing = moon.check_images(table.files, images)
    if missing:
        raise moon.MoonError(f"{len(missing)} image(s) of list_attr_celeba.txt missing from {images}, "
                             f"first {missing[0]!r} (use --limit for a subset)")
    return celeba, images, table


def train_or_reuse(out: Path, options: MoonOptions, preset: dict, meta: dict) -> None:
    """Train unless OUT holds final weights of the same data and model (then reused, unless
    --retrain); ``meta`` gets the training time, and is written to OUT."""
    final = out / al.WEIGHTS_FILE
    meta_path = out / al.META_FILE
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    same = {k: previous.get(k) for k in ("attributes", "plan_sha256", "model", "target")} == \
        {k: meta.get(k) for k in ("attributes", "plan_sha256", "model", "target")}
    if final.is_file() and same and not options.retrain:
        log(f"train: {final} exists for this data and model; skipped (--retrain to train again)")
        meta["train_seconds"] = previous.get("train_seconds")
    else:
        final.unlink(missing_ok=True)
        t0 = time.time()
        snap = train(out, options, preset["iters"])
        atomic_write_bytes(final, snap.read_bytes())
        meta["train_seconds"] = round(time.time() - t0, 1)
        try:
            plot_curves(parse_caffe_log((out / "train.log").read_text()), out / "train.png",
                        title=f"MOON on CelebA ({preset['backbone']}, width {preset['width']})")
        except Exception as e:  # noqa: BLE001 - a plot must not fail a finished training
            log(f"warning: no training curves: {e}")
    atomic_write_json(meta_path, meta, indent=1)


def run(options: MoonOptions) -> dict:
    """Align, split, build, train and evaluate (each step resumable); the evaluation's results."""
    start = time.time()
    inference.require_gpu_build(options.gpu)  # before hours of work: a CPU-only Caffe cannot take -gpu
    preset = model_settings(options)
    names = attribute_names(options)
    celeba, images, table = celeba_images(options, names)
    aligned = options.aligned or REPO / "work" / f"celeba-112x96-{images.name}"
    ok, failed = align(table.files, images, aligned, options.workers)
    keep = np.isin(table.files, ok)
    log(f"aligned: {len(ok)} of {len(table.files)} images; {len(failed)} dropped (no face found etc.: "
        f"{aligned / 'failures.txt'})")
    train_idx, test_idx, eval_idx, split_desc = plan_split(table, keep, options.split, options.heldout, options.seed)
    log(f"split {split_desc}: {len(train_idx)} training, {len(test_idx)} test-net, {len(eval_idx)} evaluation images")

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    data, weights = build_data(out, table, aligned, train_idx, test_idx, names, options.target, options.seed)
    try:
        render_moon(out, absolute_paths=True, backbone=preset["backbone"], width=preset["width"],
                    blocks=preset["blocks"], attributes=names, batch=preset["batch"], iters=preset["iters"],
                    base_lr=preset["lr"], test_images=len(test_idx), random_seed=options.seed,
                    train_lmdb=data / "train_lmdb", train_hdf5=data / "train_moon.h5.txt",
                    test_lmdb=data / "val_lmdb", test_hdf5=data / "val_moon.h5.txt")
    except GenerateError as e:
        raise moon.MoonError(str(e)) from None
    meta = {"attributes": names, "run_dir": str(out.resolve()), "weights": str((out / al.WEIGHTS_FILE).resolve()),
            "deploy": str((out / al.DEPLOY_FILE).resolve()), "aligned": str(aligned.resolve()),
            "crop": "112x96 (MTCNN + SphereFace 5-point template, tools/align_faces.py)",
            "target": options.target, **weights, "split": split_desc, "seed": options.seed,
            "images": {"attribute_file": len(table.files), "aligned": len(ok), "dropped": len(failed),
                       "train": len(train_idx), "test_net": len(test_idx), "evaluation": len(eval_idx)},
            "preset": options.preset, "model": preset, "celeba": str(celeba.resolve()),
            "images_dir": str(images.resolve())}
    train_or_reuse(out, options, preset, meta)

    res = evaluate(out, table, eval_idx, names, options, split_desc)
    res["train_seconds"] = meta["train_seconds"]
    res["total_seconds"] = round(time.time() - start, 1)
    atomic_write_json(out / "eval" / "attributes.json", res, indent=1)
    return res
