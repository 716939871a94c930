#!/usr/bin/env python3
"""Train the MOON facial attribute classifier on CelebA (Sec. 3.2 of the paper) with Caffe.

    tools/train_attributes.py --out work/moon/cpu                  # CPU preset, the data here
    tools/train_attributes.py --out runs/moon_vgg16 --preset gpu --gpu 0 \\
        --celeba /data/celeba --images /data/celeba/img_align_celeba   # all 202,599 images

Steps, each resumable (rerunning the command skips what is done):

1. read list_attr_celeba.txt (the --attributes must be in its header), identity_CelebA.txt and
   list_eval_partition.txt; every image of the attribute file must exist in --images;
2. detect and align every image with the recognition data's MTCNN and 112x96 template
   (tools/align_faces.py, into --aligned; images without a face are dropped and counted);
3. split: CelebA's official partitions when the images cover val/test (train on 0, test net
   on 1, evaluate on 2), otherwise (the 10,000 images here are all partition 0) whole
   identities are held out (--heldout, seeded); the held-out images are the test net's and
   the evaluation's (the final snapshot is used, no model selection on them);
4. OUT/data: image LMDBs (train shuffled, seeded) and HDF5 files of targets in {-1, +1} and
   sqrt of MOON's weights toward --target (mtdnn.moon), in the LMDBs' record order;
5. OUT/{train_val,deploy,solver}.prototxt (generate.moon), then `caffe train`, log in
   OUT/train.log (curves: OUT/train.png); the final weights are OUT/moon.caffemodel and
   OUT/moon.json says what the model is;
6. evaluation on the held-out images: accuracy, balanced accuracy and the majority-class
   baseline per attribute (mtdnn.evaluation.attributes), printed and in OUT/eval/attributes.json,
   scores in OUT/eval/heldout_scores.npy (+ .names.txt).

Presets: cpu = Fast-Model trunk at width 0.25 with one Fast-Block per group, batch 32, 3000
iterations; gpu = VGG-16 (+ BatchNorm) at full width, batch 64, 20000 iterations. Any of
--backbone/--width/--blocks/--batch/--iters/--lr overrides the preset.
Then label a recognition database with tools/label_attributes.py --model OUT --db DB.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # evaluation in pycaffe: see --threads

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from generate.attributes import parse_attributes  # noqa: E402
from generate.moon import render_moon  # noqa: E402
from generate.spec import GenerateError  # noqa: E402
from mtdnn import attribute_labels as al  # noqa: E402
from mtdnn import db, inference, moon  # noqa: E402
from mtdnn.caffe_log import parse_caffe_log, plot_curves  # noqa: E402
from mtdnn.evaluation.attributes import attribute_accuracy, format_table  # noqa: E402
from mtdnn.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from mtdnn.images import ImageError, load_image  # noqa: E402
from mtdnn.paths import REPO, data_root  # noqa: E402
from mtdnn.vote import majority_vote  # noqa: E402

PRESETS = {
    "cpu": dict(backbone="fast", width=0.25, blocks="1,1,1,1", batch=32, iters=3000, lr=0.01),
    "gpu": dict(backbone="vgg16", width=1.0, blocks=None, batch=64, iters=20000, lr=0.01),
}
ALIGN = REPO / "tools" / "align_faces.py"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder (created)")
    g = p.add_argument_group("data")
    g.add_argument("--celeba", type=Path, help="folder of CelebA's list files (default $MTDNN_DATA/celeba)")
    g.add_argument("--images", type=Path, help="CelebA image folder (default: img_align_celeba or "
                                               "img_align_celeba_89x109 in --celeba)")
    g.add_argument("--aligned", type=Path, help="aligned-crop cache (default work/celeba-112x96-<images folder name>)")
    g.add_argument("--attributes", default="all", help="CelebA names (comma-separated) or a group (default all: the paper's 7)")
    g.add_argument("--target", default="balanced",
                   help="MOON target distribution: balanced (default), source (no re-weighting), "
                        "Name=rate,... , M rates, or a .json {name: rate}")
    g.add_argument("--split", choices=("auto", "official", "identity"), default="auto",
                   help="auto: official when the images cover CelebA's val and test partitions")
    g.add_argument("--heldout", type=float, default=0.2, help="identity split: held-out image fraction (default 0.2)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split, the shuffle and Caffe (default 0)")
    g.add_argument("--limit", type=int, help="only the first N images of the attribute file (tests, demos)")
    g.add_argument("--workers", type=int, default=2, help="alignment worker processes (default 2)")
    g = p.add_argument_group("model and training (override the preset)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="default: cpu")
    g.add_argument("--backbone", choices=("fast", "vgg16"), help="network: the Fast-Model trunk or MOON's VGG-16")
    g.add_argument("--width", type=float, help="width multiplier of every layer")
    g.add_argument("--blocks", help="fast: Fast-Blocks per group, e.g. 3,4,6,3 (the Fast-Model's)")
    g.add_argument("--batch", type=int, help="training batch")
    g.add_argument("--iters", type=int, help="training iterations")
    g.add_argument("--lr", type=float, help="base learning rate (x0.1 at 50%% and 75%% of --iters)")
    g.add_argument("--gpu", type=int, help="train (caffe train -gpu N) and score on this GPU (needs a GPU build "
                                           "of Caffe: CAFFE_GPU=1 make setup)")
    g.add_argument("--caffe", default=None, help="caffe binary (default: beside this Python, else on PATH)")
    g.add_argument("--threads", type=int, default=1,
                   help="BLAS threads of caffe (default 1: as fast as 2 for these small nets here, and "
                        "robust when other jobs share the cores)")
    p.add_argument("--mirror", choices=("none", "sum"), default="none",
                   help="evaluation: add the flipped image's scores (default none)")
    p.add_argument("--retrain", action="store_true", help="train again even if OUT/moon.caffemodel exists")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- steps

def celeba_inputs(args):
    celeba = args.celeba or data_root() / "celeba"
    images = args.images
    if images is None:
        for name in ("img_align_celeba", "img_align_celeba_89x109"):
            if (celeba / name).is_dir():
                images = celeba / name
                break
        else:
            raise moon.MoonError(f"{celeba}: no img_align_celeba folder; give --images")
    if not images.is_dir():
        raise moon.MoonError(f"{images}: not a folder")
    part = celeba / "list_eval_partition.txt"
    return celeba, images, part if part.is_file() else None


def align(table_files, images: Path, aligned: Path, workers: int) -> tuple[list[str], dict]:
    """Align the files (resumable, tools/align_faces.py); (aligned files, {file: failure})."""
    aligned.mkdir(parents=True, exist_ok=True)
    listing = aligned / "celeba_list.txt"
    text = "".join(f + "\n" for f in table_files)
    if not listing.is_file() or listing.read_text() != text:
        atomic_write_text(listing, text)
    cmd = [sys.executable, str(ALIGN), str(images), str(aligned), "--list", str(listing),
           "--workers", str(workers), "--allow-failures"]  # faceless images are counted below
    log("align: " + " ".join(cmd))
    if subprocess.run(cmd).returncode != 0:
        raise moon.MoonError("tools/align_faces.py failed (see above)")
    done = set()
    for line in (aligned / "landmarks.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            done.add(line.rsplit(None, 10)[0])
    failed = {}
    fail_file = aligned / "failures.txt"
    if fail_file.is_file():
        for line in fail_file.read_text().splitlines():
            if "\t" in line:
                f, reason = line.split("\t", 1)
                failed[f] = reason
    wanted = set(table_files)
    return [f for f in table_files if f in done and (aligned / f).is_file()], \
        {f: r for f, r in failed.items() if f in wanted}


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


def caffe_binary(args) -> str:
    if args.caffe:
        return args.caffe
    here = Path(sys.executable).parent / "caffe"
    found = str(here) if here.is_file() else shutil.which("caffe")
    if not found:
        raise moon.MoonError("no caffe binary beside this Python or on PATH; give --caffe")
    return found


def train(out: Path, args, iters: int) -> Path:
    """`caffe train` in OUT; the log goes to OUT/train.log; returns the final snapshot."""
    cmd = [caffe_binary(args), "train", "-solver", str((out / "solver.prototxt").resolve())]
    if args.gpu is not None:
        cmd += ["-gpu", str(args.gpu)]
    log("train: " + " ".join(cmd) + f"  (log: {out / 'train.log'})")
    env = {**os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1",
           "OPENBLAS_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    pattern = re.compile(r"Iteration (\d+) .*loss = ([-+\w.]+)")
    with open(out / "train.log", "w", buffering=1) as logf, tqdm(total=iters, unit="it", desc="train", dynamic_ncols=True) as bar:
        proc = subprocess.Popen(cmd, cwd=out, stderr=subprocess.PIPE, stdout=logf, text=True, env=env)
        for line in proc.stderr:
            logf.write(line)
            if m := pattern.search(line):
                bar.update(int(m[1]) - bar.n)
                bar.set_postfix(loss=m[2])
        rc = proc.wait()
        bar.update(iters - bar.n if rc == 0 else 0)
    if rc != 0:
        raise moon.MoonError(f"caffe train failed (exit {rc}); see {out / 'train.log'}")
    snap = out / f"moon_iter_{iters}.caffemodel"
    if not snap.is_file():
        raise moon.MoonError(f"{snap} was not written; see {out / 'train.log'}")
    return snap


def evaluate(out: Path, table, evaluation, names, args, split_desc: str) -> dict:
    net, meta = al.load_classifier(out, gpu=args.gpu)
    files = [table.files[i] for i in evaluation]
    aligned = Path(meta["aligned"])
    scores = al.score_paths(net, files, aligned, mirror=args.mirror, desc="evaluate")
    al.write_scores(out / "eval" / "heldout_scores", scores, files, {"attributes": names, "mirror": args.mirror})
    truth, ids = table.values[evaluation], table.identities[evaluation]
    res = attribute_accuracy(scores, truth, names)
    res.update({"model": str(out), "images": len(files), "identities": len(set(ids.tolist())),
                "split": split_desc, "mirror": args.mirror, "target": meta["target"],
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
    al._write_json(out / "eval" / "attributes.json", res)
    return res


# --------------------------------------------------------------------------- main

def run(args) -> dict:
    start = time.time()
    inference.require_gpu_build(args.gpu)  # before hours of work: a CPU-only Caffe cannot take -gpu
    preset = dict(PRESETS[args.preset])
    for key in ("backbone", "width", "blocks", "batch", "iters", "lr"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    if preset["backbone"] == "vgg16":
        preset["blocks"] = None
    try:
        names = list(parse_attributes(args.attributes))
    except ValueError as e:
        raise moon.MoonError(str(e)) from None
    if not names:
        raise moon.MoonError("--attributes: at least one attribute")
    celeba, images, part_file = celeba_inputs(args)
    table = moon.celeba_table(celeba / "list_attr_celeba.txt", celeba / "identity_CelebA.txt", names, part_file)
    if args.limit:
        table = moon.CelebaTable(table.files[:args.limit], table.names, table.values[:args.limit],
                                 table.identities[:args.limit], table.partitions[:args.limit])
    missing = moon.check_images(table.files, images)
    if missing:
        raise moon.MoonError(f"{len(missing)} image(s) of list_attr_celeba.txt missing from {images}, "
                             f"first {missing[0]!r} (use --limit for a subset)")
    aligned = args.aligned or REPO / "work" / f"celeba-112x96-{images.name}"
    ok, failed = align(table.files, images, aligned, args.workers)
    keep = np.isin(table.files, ok)
    log(f"aligned: {len(ok)} of {len(table.files)} images; {len(failed)} dropped (no face found etc.: "
        f"{aligned / 'failures.txt'})")
    train_idx, test_idx, eval_idx, split_desc = plan_split(table, keep, args.split, args.heldout, args.seed)
    log(f"split {split_desc}: {len(train_idx)} training, {len(test_idx)} test-net, {len(eval_idx)} evaluation images")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data, weights = build_data(out, table, aligned, train_idx, test_idx, names, args.target, args.seed)
    try:
        render_moon(out, absolute_paths=True, backbone=preset["backbone"], width=preset["width"],
                    blocks=preset["blocks"], attributes=names, batch=preset["batch"], iters=preset["iters"],
                    base_lr=preset["lr"], test_images=len(test_idx), random_seed=args.seed,
                    train_lmdb=data / "train_lmdb", train_hdf5=data / "train_moon.h5.txt",
                    test_lmdb=data / "val_lmdb", test_hdf5=data / "val_moon.h5.txt")
    except GenerateError as e:
        raise moon.MoonError(str(e)) from None

    final = out / al.WEIGHTS_FILE
    meta_path = out / al.META_FILE
    meta = {"attributes": names, "run_dir": str(out.resolve()), "weights": str(final.resolve()),
            "deploy": str((out / al.DEPLOY_FILE).resolve()), "aligned": str(aligned.resolve()),
            "crop": "112x96 (MTCNN + SphereFace 5-point template, tools/align_faces.py)",
            "target": args.target, **weights, "split": split_desc, "seed": args.seed,
            "images": {"attribute_file": len(table.files), "aligned": len(ok), "dropped": len(failed),
                       "train": len(train_idx), "test_net": len(test_idx), "evaluation": len(eval_idx)},
            "preset": args.preset, "model": preset, "celeba": str(celeba.resolve()), "images_dir": str(images.resolve())}
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    same = {k: previous.get(k) for k in ("attributes", "plan_sha256", "model", "target")} == \
        {k: meta.get(k) for k in ("attributes", "plan_sha256", "model", "target")}
    if final.is_file() and same and not args.retrain:
        log(f"train: {final} exists for this data and model; skipped (--retrain to train again)")
        meta["train_seconds"] = previous.get("train_seconds")
    else:
        final.unlink(missing_ok=True)
        t0 = time.time()
        snap = train(out, args, preset["iters"])
        shutil.copyfile(snap, final.with_name(final.name + ".partial"))
        os.replace(final.with_name(final.name + ".partial"), final)
        meta["train_seconds"] = round(time.time() - t0, 1)
        try:
            plot_curves(parse_caffe_log((out / "train.log").read_text()), out / "train.png",
                        title=f"MOON on CelebA ({preset['backbone']}, width {preset['width']})")
        except Exception as e:  # noqa: BLE001 - a plot must not fail a finished training
            log(f"warning: no training curves: {e}")
    al._write_json(meta_path, meta)

    res = evaluate(out, table, eval_idx, names, args, split_desc)
    res["train_seconds"] = meta["train_seconds"]
    res["total_seconds"] = round(time.time() - start, 1)
    al._write_json(out / "eval" / "attributes.json", res)
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        res = run(args)
    except (moon.MoonError, al.LabelError, inference.EngineError, ImageError, FileNotFoundError) as e:
        print(f"train_attributes.py: error: {e}", file=sys.stderr)
        return 2
    print(f"held-out evaluation: {res['images']} images of {res['identities']} identities ({res['split']})")
    print(format_table(res))
    v = res["after_vote"]
    print(f"after the per-identity vote ({v['images_of_multi_image_identities']} held-out images belong to "
          f"identities with 2+ images; {v['changed_total']} labels changed):")
    print(f"{'attribute':<18}{'acc %':>8}{'bal. %':>8}{'changed':>9}{'ceiling %':>11}")
    for a in v["attributes"]:
        print(f"{a['name']:<18}{100 * a['accuracy']:8.2f}{100 * a['balanced_accuracy']:8.2f}{a['changed']:9d}"
              f"{100 * a['ceiling_accuracy']:11.2f}")
    for r in res["attributes"]:
        if r["balanced_accuracy"] <= 0.5:
            print(f"NOTE: {r['name']}: balanced accuracy {100 * r['balanced_accuracy']:.2f} % does not beat the "
                  f"majority-class baseline (50 %)")
    print(f"-> {args.out / 'eval' / 'attributes.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
