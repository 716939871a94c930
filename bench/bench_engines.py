#!/usr/bin/env python3
"""Forward time of OpenCV's DNN and ONNX Runtime against pycaffe on the same nets and inputs (mtdnn.inference).

    python bench/bench_engines.py                       # Full, Fast (batch 40), MTCNN's stages
    python bench/bench_engines.py --batch 40 --rounds 5 --photos 60
    python bench/bench_engines.py --engines caffe onnxruntime --skip mtcnn

- Full- and Fast-Model deploy nets (--width, seeded random weights with BatchNorm statistics:
  the time does not depend on training) on a batch of real aligned LFW faces, up to fc5.
- MTCNN's P-, R-, O-Net (and det4): every batch the cascade sends to each net while it
  detects the faces of --photos LFW photos, recorded once and replayed through both engines.

The engines run interleaved (caffe, opencv, onnxruntime, caffe, ...) so that a busy machine
slows all alike; each figure is the median over --rounds, and each ratio is pycaffe's time
over the engine's (and ONNX Runtime's against OpenCV's: "ort/cv"). All engines use all
cores (OpenBLAS threads for pycaffe, OpenCV's and ONNX Runtime's own pools). The largest
output difference from pycaffe (scale-relative, as in mtdnn.inference.RTOL) is printed too.
Figures only, no pass/fail.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mtdnn.netgen import render_model  # noqa: E402
from mtdnn import inference  # noqa: E402
from mtdnn import mtcnn as m  # noqa: E402
from mtdnn import onnx_export  # noqa: E402
from mtdnn.datasets import list_images  # noqa: E402
from mtdnn.features import preprocess  # noqa: E402
from mtdnn.paths import data_path  # noqa: E402

ENGINES = ("caffe", "opencv", "onnxruntime")


def interleaved(runs: dict, rounds: int) -> dict:
    """{engine: median seconds} of the callables in ``runs``, called in turn ``rounds`` times."""
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def report(name: str, items: int, unit: str, t: dict, diff: dict | None = None) -> dict:
    """Print one line of times, rates and the ratios to pycaffe (and of ONNX Runtime to OpenCV);
    returns ``{engine: pycaffe time / engine time}`` (plus ``'ort/cv'``)."""
    ratios = {e: t["caffe"] / t[e] for e in t if e != "caffe"}
    if "opencv" in t and "onnxruntime" in t:
        ratios["ort/cv"] = t["opencv"] / t["onnxruntime"]
    parts = [f"{e} {t[e]:7.3f} s ({items / t[e]:7.1f} {unit}/s" + (")" if e == "caffe" else f", {ratios[e]:4.2f}x)")
             for e in t]
    print(f"{name:<24} " + "   ".join(parts)
          + (f"   onnxruntime/opencv {ratios['ort/cv']:4.2f}x" if "ort/cv" in ratios else "")
          + ("" if not diff else "   max difference " + ", ".join(f"{e} {d:.1e}" for e, d in diff.items())),
          flush=True)
    return ratios


def usable(nets: dict, what: str) -> dict:
    """The nets whose engine is the one asked for (a failed check fell back to pycaffe: said, left out)."""
    for e, n in list(nets.items()):
        if n.engine != e:
            print(f"{what}: {e} not usable: {n.note}")
            del nets[e]
    return nets


def bench_model(variant: str, width: float, batch: np.ndarray, rounds: int, tmp: Path, engines) -> dict:
    folder = tmp / variant
    render_model(folder, variant, width=width, check_paths=False)
    deploy = folder / "deploy.prototxt"
    weights = inference.save_random_weights(deploy, folder / "random.caffemodel")
    nets = usable({e: inference.load(deploy, weights, engine=e, outputs=["fc5"]) for e in engines}, variant)
    out = {e: n.forward(batch)["fc5"] for e, n in nets.items()}  # warm-up (and the outputs)
    t = interleaved({e: (lambda n=n: n.forward(batch)) for e, n in nets.items()}, rounds)
    return report(f"{variant} x{width:g} batch {len(batch)}", len(batch), "img", t,
                  {e: inference.difference(out[e], out["caffe"]) for e in nets if e != "caffe"})


def bench_mtcnn(photos: int, rounds: int, engines) -> dict:
    src = data_path("lfw", "lfw-deepfunneled")
    paths = list_images(src)
    paths = paths[::max(1, len(paths) // photos)][:photos]
    dets = {e: m.MTCNN(engine=e, refine_landmarks=True) for e in engines}
    dets["caffe"].recorded = {}
    for p in paths:
        dets["caffe"].detect(cv2.imread(str(src / p)))
    recorded, dets["caffe"].recorded = dets["caffe"].recorded, None  # stop recording before the replay
    ratios = {}
    total = {}
    for attr, name in (("pnet", "det1"), ("rnet", "det2"), ("onet", "det3"), ("lnet", "det4")):
        nets = usable({e: getattr(d, attr) for e, d in dets.items()}, f"MTCNN {name}")
        batches = recorded.get(name, [])
        run = {e: (lambda b, e=e: dets[e]._forward(nets[e], b)) for e in nets}  # as the cascade calls it
        diff = {e: max(inference.difference(run[e](b)[o], run["caffe"](b)[o])
                       for b in batches for o in nets["caffe"].outputs) for e in nets if e != "caffe"}
        t = interleaved({e: (lambda e=e: [run[e](b) for b in batches]) for e in nets}, rounds)
        for e in t:
            total[e] = total.get(e, 0.0) + t[e]
        ratios[name] = report(f"MTCNN {name} ({len(batches)} calls)", len(paths), "photo", t, diff)
    ratios["all"] = report(f"MTCNN nets, {len(paths)} photos", len(paths), "photo",
                           {e: v for e, v in total.items() if all(e in r or e == "caffe" for r in ratios.values())})
    return ratios


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=40, help="faces per forward of Full/Fast (default 40)")
    ap.add_argument("--width", type=float, default=1.0, help="width of the Full/Fast nets (default 1: the paper's)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds per engine (default 3)")
    ap.add_argument("--photos", type=int, default=40, help="LFW photos whose MTCNN inputs are replayed (default 40)")
    ap.add_argument("--skip", choices=("models", "mtcnn"), action="append", default=[], help="leave a part out")
    ap.add_argument("--engines", nargs="+", choices=ENGINES[1:], default=list(ENGINES),
                    help="engines to time besides pycaffe (default: all; pycaffe is always timed)")
    a = ap.parse_args(argv)
    engines = ["caffe"] + [e for e in a.engines if e != "caffe"]
    ort = onnx_export.available() or f"onnxruntime {onnx_export.versions()['onnxruntime']}"
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (a busy machine slows all engines; "
          f"they run interleaved), OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads, {ort}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    if "models" not in a.skip:
        aligned = data_path("lfw", "lfw-112x96")
        paths = list_images(aligned)
        batch = preprocess([cv2.imread(str(aligned / p)) for p in paths[::max(1, len(paths) // a.batch)][:a.batch]])
        with tempfile.TemporaryDirectory() as tmp:
            for variant in ("full", "fast"):
                bench_model(variant, a.width, batch, a.rounds, Path(tmp), engines)
    if "mtcnn" not in a.skip:
        bench_mtcnn(a.photos, a.rounds, engines)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
