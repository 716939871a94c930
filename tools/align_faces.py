#!/usr/bin/env python3
"""Detect faces with MTCNN and align them to 112x96 (SphereFace's 5-point template).

    tools/align_faces.py SRC OUT [--people peopleDevTrain.txt | --list FILE] [--workers 2]

SRC is a folder of images (searched recursively) or, with --list, the root the list's paths are
relative to. OUT receives the aligned crops under the same relative paths, plus

  OUT/landmarks.txt   path and the 10 numbers x1 y1 ... x5 y5 (left eye, right eye, nose,
                      left mouth, right mouth; 0-based pixel coordinates in the source image)
  OUT/failures.txt    path<TAB>reason for every image that was skipped (undecodable, truncated,
                      empty, missing, too small, no face, ...)

The run is resumable: an image whose crop exists and whose landmarks are recorded is skipped,
as is an image already in failures.txt (unless --retry-failed). Every crop is written to a
temporary file and renamed into place. Where a photo holds several faces, the one nearest the
image centre is kept (--select largest for the largest). See mtdnn/mtcnn.py and mtdnn/align.py.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from mtdnn.cli import bad_input  # noqa: E402
from mtdnn import datasets  # noqa: E402
from mtdnn.images import ImageError, atomic_write_bytes, load_image, save_image  # noqa: E402

LANDMARKS_HEADER = "# path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 (left eye, right eye, nose, left mouth, right mouth; 0-based)\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="folder of input images (or the root of --list paths)")
    p.add_argument("out", type=Path, help="output folder for the aligned tree")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--list", type=Path, help="file of relative image paths ('path' or 'path label' lines)")
    sel.add_argument("--people", type=Path, help="LFW people file (e.g. peopleDevTrain.txt): only its images")
    p.add_argument("--workers", type=int, default=2, help="worker processes, each with its own nets (default 2)")
    p.add_argument("--crop", choices=("112x96", "112x112"), default="112x96", help="crop size (HxW)")
    p.add_argument("--select", choices=("center", "largest"), default="center",
                   help="which face to keep when there are several (default: nearest the centre)")
    p.add_argument("--models", type=Path, default=None, help="MTCNN model folder (default $MTDNN_DATA/mtcnn)")
    p.add_argument("--minsize", type=float, default=20, help="smallest face searched, in pixels (default 20)")
    p.add_argument("--factor", type=float, default=0.85, help="image pyramid scale step (default 0.85)")
    p.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.9), help="P-Net, R-Net, O-Net score thresholds (default 0.6 0.7 0.9)")
    p.add_argument("--refine-landmarks", action="store_true", help="run det4 (MTCNN v2) on the 5 points")
    p.add_argument("--resize", choices=("matlab", "linear"), default="matlab",
                   help="pyramid resampling: MATLAB imResample (default) or plain bilinear")
    p.add_argument("--max-side", type=int, default=2000,
                   help="detect on a copy shrunk to this longer side for bigger photos (default 2000)")
    p.add_argument("--ext", choices=("keep", "jpg", "png"), default="keep",
                   help="output format: the input's extension (default), or force jpg / png")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the crops (default 95)")
    p.add_argument("--landmarks", type=Path, help="landmarks file (default OUT/landmarks.txt)")
    p.add_argument("--failures", type=Path, help="failures file (default OUT/failures.txt)")
    p.add_argument("--retry-failed", action="store_true", help="try again the images in the failures file")
    p.add_argument("--limit", type=int, help="only the first N images of the (sorted) input")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- inputs

def input_paths(args) -> list[str]:
    """Relative paths to align, in a deterministic order, duplicates reported and dropped."""
    if args.people:
        paths = [s.path for s in datasets.lfw_people_samples(args.people)]
    elif args.list:
        paths = []
        for line in args.list.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            paths.append(parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line)
    else:
        paths = datasets.list_images(args.src)
    seen, unique = set(), []
    for rel in paths:
        if rel in seen:
            print(f"warning: {rel} is listed more than once; aligned once", file=sys.stderr)
            continue
        seen.add(rel)
        unique.append(rel)
    if not unique:
        bad_input(f"no images to align in {args.list or args.people or args.src}")
    return unique[:args.limit] if args.limit else unique


def output_path(rel: str, ext: str) -> str:
    return rel if ext == "keep" else str(Path(rel).with_suffix("." + ext).as_posix())


def read_landmarks(path: Path) -> dict[str, str]:
    """{path: line} of a landmarks file; malformed (e.g. cut-off) lines are ignored."""
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.rsplit(None, 10)
            if line.startswith("#") or len(parts) != 11:
                continue
            try:
                [float(v) for v in parts[1:]]
            except ValueError:
                continue
            out[parts[0]] = line
    return out


def read_failures(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "\t" in line and not line.startswith("#"):
                rel, reason = line.split("\t", 1)
                out[rel] = reason
    return out


# --------------------------------------------------------------------------- work (in workers)

_STATE = {}


def init_worker(config: dict) -> None:
    """Load this process's own nets."""
    import cv2
    cv2.setNumThreads(1)
    from mtdnn.mtcnn import MTCNN
    _STATE["config"] = config
    _STATE["detector"] = MTCNN(config["models"], minsize=config["minsize"], thresholds=config["thresholds"],
                               factor=config["factor"], refine_landmarks=config["refine"],
                               resize=config["resize"])


def align_one(rel: str):
    """``('ok', rel, line)`` or ``('fail', rel, reason)``; never raises."""
    from mtdnn import align
    from mtdnn.mtcnn import MIN_SIDE
    cfg, detector = _STATE["config"], _STATE["detector"]
    try:
        image = load_image(Path(cfg["src"]) / rel)
        if min(image.shape[:2]) < MIN_SIDE:
            return "fail", rel, f"too small: {image.shape[1]}x{image.shape[0]} px (MTCNN needs >= {MIN_SIDE})"
        found = detector.detect_one(image, cfg["select"], cfg["max_side"])
        if found is None:
            return "fail", rel, "no face found"
        points, _ = found
        crop = align.align_face(image, points, cfg["crop"])
        save_image(Path(cfg["out"]) / output_path(rel, cfg["ext"]), crop, cfg["quality"])
        return "ok", rel, rel + " " + " ".join(f"{v:.3f}" for v in points.reshape(-1))
    except ImageError as e:
        return "fail", rel, str(e).split(": ", 1)[1]
    except Exception as e:  # noqa: BLE001 - one bad image must not stop a 500k-image run
        return "fail", rel, f"error: {type(e).__name__}: {e}"


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.workers < 1:
        bad_input("--workers must be >= 1")
    if not args.src.is_dir():
        bad_input(f"{args.src} is not a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    landmarks_path = args.landmarks or args.out / "landmarks.txt"
    failures_path = args.failures or args.out / "failures.txt"
    try:
        paths = input_paths(args)
    except datasets.DatasetError as e:
        bad_input(f"{e}")

    done = read_landmarks(landmarks_path)
    failed = read_failures(failures_path)
    if args.retry_failed:
        failed = {}
    todo = [rel for rel in paths
            if rel not in failed
            and not (rel in done and (args.out / output_path(rel, args.ext)).is_file())]
    print(f"{len(paths)} images: {len(paths) - len(todo)} already done or failed, {len(todo)} to align "
          f"with {args.workers} worker(s)", file=sys.stderr)

    config = dict(src=str(args.src), out=str(args.out), models=args.models, minsize=args.minsize,
                  thresholds=tuple(args.thresholds), factor=args.factor, refine=args.refine_landmarks,
                  resize=args.resize, select=args.select, max_side=args.max_side, crop=args.crop,
                  ext=args.ext, quality=args.quality)
    new_ok = new_fail = 0
    start = time.time()
    if not landmarks_path.is_file():
        atomic_write_bytes(landmarks_path, LANDMARKS_HEADER.encode())
    with open(landmarks_path, "a", encoding="utf-8") as log:
        pool = None
        if args.workers == 1 or len(todo) <= 1:
            init_worker(config)
            results = map(align_one, todo)
        else:
            # One BLAS thread per worker: the workers are the parallelism. Spawned, not forked,
            # so no worker inherits a half-initialised BLAS or Caffe.
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = "1"
            pool = mp.get_context("spawn").Pool(args.workers, init_worker, (config,))
            results = pool.imap_unordered(align_one, todo, chunksize=4)
        try:
            for status, rel, info in tqdm(results, total=len(todo), unit="img", smoothing=0.05,
                                          desc="align", dynamic_ncols=True):
                if status == "ok":
                    log.write(info + "\n")
                    log.flush()
                    done[rel] = info
                    failed.pop(rel, None)
                    new_ok += 1
                else:
                    failed[rel] = info
                    new_fail += 1
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            # Final, sorted, de-duplicated files, replaced atomically.
            atomic_write_bytes(landmarks_path, (LANDMARKS_HEADER + "".join(
                done[k] + "\n" for k in sorted(done))).encode())
            atomic_write_bytes(failures_path, "".join(
                f"{k}\t{failed[k]}\n" for k in sorted(failed)).encode())
    elapsed = time.time() - start
    rate = (new_ok + new_fail) / elapsed if elapsed > 0 else 0.0
    print(f"aligned {new_ok}, failed {new_fail} in {elapsed:.1f} s ({rate:.1f} img/s); "
          f"totals: {len(done)} aligned, {len(failed)} failed -> {failures_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
