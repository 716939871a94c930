#!/usr/bin/env python3
"""Images/s of feature extraction (forward up to fc5, batched, real aligned LFW images), with
pycaffe, OpenCV's DNN and ONNX Runtime (mtdnn.inference), interleaved in one run, and the ratios.

    python bench/bench_extract.py                                  # models/full and models/fast
    python bench/bench_extract.py models/full/deploy.prototxt --weights W --mirror concat

Weights default to seeded random ones (mtdnn.inference.save_random_weights): timing does not
depend on them. One batch per engine is run first to warm up, then --images images are timed
(image loading included), the engines alternating for --rounds rounds (a busy machine slows
both alike); the figures are the medians.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mtdnn import inference
from mtdnn.features import extract_features, load_net, read_image_list
from mtdnn.paths import REPO, data_path

ENGINES = ("caffe", "opencv", "onnxruntime")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("deploy", nargs="*", type=Path, help="deploy prototxt(s) (default models/full and models/fast)")
    ap.add_argument("--weights", type=Path, help="caffemodel (default: seeded random weights)")
    ap.add_argument("--blob", default="fc5", help="blob to extract (default fc5)")
    ap.add_argument("--images", type=int, default=64, help="timed images per round (default 64)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per forward (default 16)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timed rounds per engine (default 2)")
    ap.add_argument("--mirror", choices=("none", "concat", "sum"), default="none", help="as in extract_features.py")
    a = ap.parse_args(argv)
    deploys = a.deploy or [p for p in (REPO / "models/full/deploy.prototxt", REPO / "models/fast/deploy.prototxt")
                           if p.exists()]
    if not deploys:
        raise SystemExit("no deploy prototxt given and none under models/")
    paths, _ = read_image_list(data_path("lfw", "lfw-112x96_list.txt"))
    root = data_path("lfw", "lfw-112x96")
    warm, timed = paths[:a.batch_size], paths[a.batch_size:a.batch_size + a.images]
    kw = dict(blob=a.blob, batch_size=a.batch_size, mirror=a.mirror, progress=False)
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    with tempfile.TemporaryDirectory() as tmp:
        for deploy in deploys:
            weights = a.weights or inference.save_random_weights(deploy, Path(tmp) / "random.caffemodel")
            nets = {e: load_net(deploy, weights, blob=a.blob, engine=e) for e in ENGINES}
            for e, net in list(nets.items()):
                if net.engine != e:
                    print(f"{deploy}: {e} not usable: {net.note}")
                    del nets[e]
            feats, times = {}, {e: [] for e in nets}
            for e, net in nets.items():
                extract_features(net, warm, root, **kw)
            for _ in range(a.rounds):
                for e, net in nets.items():
                    t = time.perf_counter()
                    feats[e] = extract_features(net, timed, root, **kw)
                    times[e].append(time.perf_counter() - t)
            rate = {e: len(timed) / float(np.median(times[e])) for e in nets}
            print(f"{deploy}: {len(timed)} images, batch {a.batch_size}, mirror {a.mirror}, "
                  f"{feats['caffe'].shape[1]}-d: pycaffe {rate['caffe']:.2f} images/s, " + ", ".join(
                      f"{e} {rate[e]:.2f} images/s ({rate[e] / rate['caffe']:.2f}x, max difference "
                      f"{inference.difference(feats[e], feats['caffe']):.1e})" for e in nets if e != "caffe")
                  + (f"; onnxruntime/opencv {rate['onnxruntime'] / rate['opencv']:.2f}x"
                     if "opencv" in rate and "onnxruntime" in rate else ""), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
