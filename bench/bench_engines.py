#!/usr/bin/env python3
"""Forward time of OpenCV's DNN against pycaffe on the same nets and inputs (mtdnn.inference).

    python bench/bench_engines.py                       # Full, Fast (batch 40), MTCNN's stages
    python bench/bench_engines.py --batch 40 --rounds 5 --photos 60

- Full- and Fast-Model deploy nets (--width, seeded random weights with BatchNorm statistics:
  the time does not depend on training) on a batch of real aligned LFW faces, up to fc5.
- MTCNN's P-, R-, O-Net (and det4): every batch the cascade sends to each net while it
  detects the faces of --photos LFW photos, recorded once and replayed through both engines.

The engines run interleaved (caffe, opencv, caffe, opencv, ...) so that a busy machine
slows both alike; each figure is the median over --rounds, and the ratio is pycaffe's time
over OpenCV's. Both engines use all cores (OpenBLAS threads for pycaffe, OpenCV's own pool).
The largest output difference (scale-relative, as in mtdnn.inference.RTOL) is printed too.
Figures only, no pass/fail.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GLOG_minloglevel", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from generate import render_model  # noqa: E402
from mtdnn import inference  # noqa: E402
from mtdnn import mtcnn as m  # noqa: E402
from mtdnn.datasets import list_images  # noqa: E402
from mtdnn.features import preprocess  # noqa: E402
from mtdnn.paths import data_path  # noqa: E402


def interleaved(runs: dict, rounds: int) -> dict:
    """{engine: median seconds} of the callables in ``runs``, called in turn ``rounds`` times."""
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def report(name: str, items: int, unit: str, t: dict, diff: float | None = None) -> float:
    """Print one line of times, rates and the pycaffe / OpenCV ratio; returns the ratio."""
    ratio = t["caffe"] / t["opencv"]
    print(f"{name:<24} pycaffe {t['caffe']:7.3f} s ({items / t['caffe']:7.1f} {unit}/s)   "
          f"opencv {t['opencv']:7.3f} s ({items / t['opencv']:7.1f} {unit}/s)   ratio {ratio:4.2f}x"
          + ("" if diff is None else f"   max difference {diff:.1e}"), flush=True)
    return ratio


def bench_model(variant: str, width: float, batch: np.ndarray, rounds: int, tmp: Path) -> float:
    folder = tmp / variant
    render_model(folder, variant, width=width, check_paths=False)
    deploy = folder / "deploy.prototxt"
    weights = inference.save_random_weights(deploy, folder / "random.caffemodel")
    nets = {e: inference.load(deploy, weights, engine=e, outputs=["fc5"]) for e in ("caffe", "opencv")}
    if nets["opencv"].engine != "opencv":
        print(f"{variant}: OpenCV not usable: {nets['opencv'].note}")
        return float("nan")
    out = {e: n.forward(batch)["fc5"] for e, n in nets.items()}  # warm-up (and the outputs)
    t = interleaved({e: (lambda n=n: n.forward(batch)) for e, n in nets.items()}, rounds)
    return report(f"{variant} x{width:g} batch {len(batch)}", len(batch), "img", t,
                  inference.difference(out["opencv"], out["caffe"]))


def bench_mtcnn(photos: int, rounds: int) -> dict:
    src = data_path("lfw", "lfw-deepfunneled")
    paths = list_images(src)
    paths = paths[::max(1, len(paths) // photos)][:photos]
    dets = {e: m.MTCNN(engine=e, refine_landmarks=True) for e in ("caffe", "opencv")}
    dets["caffe"].recorded = {}
    for p in paths:
        dets["caffe"].detect(cv2.imread(str(src / p)))
    recorded, dets["caffe"].recorded = dets["caffe"].recorded, None  # stop recording before the replay
    ratios = {}
    total = {"caffe": 0.0, "opencv": 0.0}
    for attr, name in (("pnet", "det1"), ("rnet", "det2"), ("onet", "det3"), ("lnet", "det4")):
        nets = {e: getattr(d, attr) for e, d in dets.items()}
        if nets["opencv"].engine != "opencv":
            print(f"MTCNN {name}: OpenCV not usable: {nets['opencv'].note}")
            continue
        batches = recorded.get(name, [])
        run = {e: (lambda b, e=e: dets[e]._forward(nets[e], b)) for e in nets}  # as the cascade calls it
        diff = max(inference.difference(run["opencv"](b)[o], run["caffe"](b)[o])
                   for b in batches for o in nets["caffe"].outputs)
        t = interleaved({e: (lambda e=e: [run[e](b) for b in batches]) for e in nets}, rounds)
        for e in total:
            total[e] += t[e]
        ratios[name] = report(f"MTCNN {name} ({len(batches)} calls)", len(paths), "photo", t, diff)
    ratios["all"] = report(f"MTCNN nets, {len(paths)} photos", len(paths), "photo", total)
    return ratios


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=40, help="faces per forward of Full/Fast (default 40)")
    ap.add_argument("--width", type=float, default=1.0, help="width of the Full/Fast nets (default 1: the paper's)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds per engine (default 3)")
    ap.add_argument("--photos", type=int, default=40, help="LFW photos whose MTCNN inputs are replayed (default 40)")
    ap.add_argument("--skip", choices=("models", "mtcnn"), action="append", default=[], help="leave a part out")
    a = ap.parse_args(argv)
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (a busy machine slows both engines; "
          f"they run interleaved), OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    if "models" not in a.skip:
        aligned = data_path("lfw", "lfw-112x96")
        paths = list_images(aligned)
        batch = preprocess([cv2.imread(str(aligned / p)) for p in paths[::max(1, len(paths) // a.batch)][:a.batch]])
        with tempfile.TemporaryDirectory() as tmp:
            for variant in ("full", "fast"):
                bench_model(variant, a.width, batch, a.rounds, Path(tmp))
    if "mtcnn" not in a.skip:
        bench_mtcnn(a.photos, a.rounds)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
