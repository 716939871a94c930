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
5. OUT/{train_val,deploy,solver}.prototxt (mtdnn.netgen.moon), then `caffe train`, log in
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
import os
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # evaluation in pycaffe: see --threads

from mtdnn import attribute_labels as al  # noqa: E402
from mtdnn import inference, moon, moon_train  # noqa: E402
from mtdnn.cli import run_tool  # noqa: E402
from mtdnn.fileio import OutputLock  # noqa: E402
from mtdnn.evaluation.attributes import format_table  # noqa: E402
from mtdnn.images import ImageError  # noqa: E402
from mtdnn.moon_train import PRESETS, MoonOptions  # noqa: E402
from mtdnn.train import TrainError  # noqa: E402


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


def main(argv=None) -> int:
    args = parse_args(argv)
    inference.require_gpu_build(args.gpu)  # a refused request leaves nothing behind, not even the lock file
    lock = OutputLock(args.out)  # noqa: F841 - held while main runs: a second run on OUT stops at once
    res = moon_train.run(MoonOptions(**{f.name: getattr(args, f.name) for f in fields(MoonOptions)}))
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
    run_tool(main, bad=(moon.MoonError, al.LabelError, inference.EngineError, ImageError, FileNotFoundError,
                        TrainError),
             interrupt_hint="the aligned crops, the CelebA database and the snapshots written so far are kept; "
                            "rerun the same command to continue")
