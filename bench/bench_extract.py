#!/usr/bin/env python3
"""Images/s of feature extraction (pycaffe forward up to fc5, batched, real aligned LFW images).

    python bench/bench_extract.py                                  # models/full and models/fast
    python bench/bench_extract.py models/full/deploy.prototxt --weights W --mirror concat

Weights default to the deploy net's fillers (random): timing does not depend on them.
One batch is run first to warm up, then --images images are timed (image loading included).
"""
import argparse
import os
import time
from pathlib import Path

from mtdnn.features import extract_features, load_net, read_image_list
from mtdnn.paths import REPO, data_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("deploy", nargs="*", type=Path, help="deploy prototxt(s) (default models/full and models/fast)")
    ap.add_argument("--weights", type=Path, help="caffemodel (default: the fillers' random weights; timing does not depend on them)")
    ap.add_argument("--blob", default="fc5", help="blob to extract (default fc5)")
    ap.add_argument("--images", type=int, default=64, help="images to time (default 64)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    ap.add_argument("--mirror", choices=("none", "concat", "sum"), default="none", help="add the flipped image's features (default none)")
    a = ap.parse_args(argv)
    deploys = a.deploy or [p for p in (REPO / "models/full/deploy.prototxt", REPO / "models/fast/deploy.prototxt")
                           if p.exists()]
    if not deploys:
        raise SystemExit("no deploy prototxt given and none under models/")
    paths, _ = read_image_list(data_path("lfw", "lfw-112x96_list.txt"))
    root = data_path("lfw", "lfw-112x96")
    warm, timed = paths[:a.batch_size], paths[a.batch_size:a.batch_size + a.images]
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cores {os.cpu_count()}")
    for deploy in deploys:
        net = load_net(deploy, a.weights)
        extract_features(net, warm, root, blob=a.blob, batch_size=a.batch_size, mirror=a.mirror, progress=False)
        t = time.perf_counter()
        f = extract_features(net, timed, root, blob=a.blob, batch_size=a.batch_size, mirror=a.mirror,
                             progress=False)
        dt = time.perf_counter() - t
        print(f"{deploy}: {len(timed)} images, batch {a.batch_size}, mirror {a.mirror}: {dt:.2f} s, "
              f"{len(timed) / dt:.2f} images/s, features {f.shape[1]}-d")


if __name__ == "__main__":
    main()
