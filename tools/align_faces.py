#!/usr/bin/env python3
r"""Detect faces with MTCNN and align them to 112x96 (SphereFace's 5-point template).

    tools/align_faces.py SRC OUT [--people peopleDevTrain.txt | --list FILE] [--workers 2]

SRC is a folder of images (searched recursively) or, with --list, the root the list's paths are
relative to. OUT receives the aligned crops under the same relative paths, plus

  OUT/landmarks.txt   path and the 10 numbers x1 y1 ... x5 y5 (left eye, right eye, nose,
                      left mouth, right mouth; 0-based pixel coordinates in the source image)
  OUT/failures.txt    path<TAB>reason for every image that could not be aligned (undecodable,
                      truncated, empty, missing, too small, no face, ...)

Both files hold one record per line, in the project's one record format (mtdnn/records.py): a
backslash, tab, line break or other control character in a name or message is written as an
escape (\\, \t, \n, \f, \x1c, \u2028, ...), and bytes of a name that is not UTF-8 as \xNN; a
--list is read the same way.

Crop names: the input's path with the suffix of --ext. `--ext keep` keeps .jpg .jpeg .png .bmp
.ppm .tif .tiff .webp and writes PNG for anything else (.pgm, .gif, names without an image
suffix such as Yale's subject01.glasses -> subject01.glasses.png), and says so. Where two
inputs would get one crop name (x.jpg and x.png with --ext png), the one whose name would change
keeps its full name (x.jpg.png), and the run says so; a clash left after that is refused.

In tree mode every file with an image suffix (.jpg .jpeg .png .bmp .ppm .pgm .tif .tiff .webp
.gif) is taken, and a file with another name when its content is an image; other files, hidden
ones, broken links and unreadable folders are reported, never dropped silently.

The run is resumable: an image whose crop exists and whose landmarks are recorded is skipped,
as is an image already in failures.txt (unless --retry-failed). Every crop is written to a
temporary file and renamed into place. Where a photo holds several faces, the one nearest the
image centre is kept (--select largest for the largest). See mtdnn/mtcnn.py and mtdnn/align.py.

MegaFace distractors and FaceScrub probes (--devkit-boxes): the devkit's <image>.json beside
each image gives the face the challenge means; where MTCNN finds no face or none overlapping
that box (IoU <= 0.3), its 3 landmarks, MTCNN's O-Net on the box, or the box itself align the
face instead, as the MegaFace preparations of insightface and FaceVerification do. Each
image's case goes to OUT/devkit_cases.txt and the last lines count them (mtdnn/devkit_align.py).

A problem of one image is recorded in failures.txt and the run goes on. A problem of the
machine (disk full, I/O error, output not writable) or any error while saving a crop stops
the run with a message and is never recorded as a failure of the image: rerun the same command
after fixing it. The last line says how many images were aligned, failed or unreadable; the
exit status is 1 when any image was not aligned, unless --allow-failures (docs/reliability.md).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from mtdnn import datasets, devkit_align, inference  # noqa: E402
from mtdnn.cli import bad_input, run_tool  # noqa: E402
from mtdnn.fileio import MachineError, OutputLock, atomic_write_text, is_machine_error  # noqa: E402
from mtdnn.images import (ACCEPTED, IMAGE_EXTENSIONS, ImageError, load_image, save_image,  # noqa: E402
                          scan_images)
from mtdnn.records import escape_field, read_failures, read_lines, unescape_field, write_failures, write_lines  # noqa: E402
from mtdnn.caffe.run import blas_threads_env  # noqa: E402

# Suffixes that --ext keep writes as they are; any other input is written as PNG (OpenCV cannot
# write a colour crop as .pgm, and .gif would reduce it to 256 colours).
KEEP_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

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
    p.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.9),
                   help="face score thresholds of the P-, R- and O-Net stages (default 0.6 0.7 0.9)")
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
    p.add_argument("--devkit-boxes", action="store_true",
                   help="MegaFace / FaceScrub devkit: read the <image>.json beside each image and use its "
                        "face box (and 3 landmarks) where MTCNN finds no face or another one; each "
                        "image's case in OUT/devkit_cases.txt, counted at the end (mtdnn/devkit_align.py)")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when some images could not be aligned (they are still listed in "
                        "failures.txt and counted in the last line)")
    inference.add_arguments(p, "MTCNN's nets")
    args = p.parse_args(argv)
    inference.check_arguments(p, args)
    return args


# --------------------------------------------------------------------------- inputs

def input_paths(args):
    """(relative paths to align in a deterministic order, the tree scan or None); duplicates
    are reported and dropped."""
    scan = None
    if args.people:
        paths = [s.path for s in datasets.lfw_people_samples(args.people)]
    elif args.list:
        paths = []  # names that are not UTF-8 come back as os.fsdecode gives them
        for _, line in read_lines(args.list, comments=True):
            parts = line.rsplit(None, 1)
            paths.append(unescape_field(parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line))
    else:
        scan = scan_images(args.src, exclude=[args.out])
        paths = scan.paths
        for rel, reason in scan.problems:
            print(f"warning: {escape_field(rel)}: {reason}", file=sys.stderr)
    seen, unique = set(), []
    for rel in paths:
        if rel in seen:
            print(f"warning: {escape_field(rel)} is listed more than once; aligned once", file=sys.stderr)
            continue
        seen.add(rel)
        unique.append(rel)
    if not unique:
        skipped = f"; {scan.summary()}" if scan and scan.summary() else ""
        bad_input(f"no images to align in {args.list or args.people or args.src}{skipped}. "
                  f"Accepted: {ACCEPTED}")
    return unique, scan


def output_path(rel: str, ext: str) -> str:
    """The crop name of input ``rel`` for ``--ext`` (see the module help)."""
    suffix = Path(rel).suffix
    if ext == "keep":
        target = suffix if suffix.lower() in KEEP_SUFFIXES else ".png"
    else:
        target = "." + ext
    if suffix == target:
        return rel
    return (rel[:-len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else rel) + target


def _shared(out: dict[str, str]) -> dict[str, list[str]]:
    """{crop name: inputs} for the names more than one input would get."""
    by_name: dict[str, list[str]] = {}
    for rel, name in out.items():
        by_name.setdefault(name, []).append(rel)
    return {name: rels for name, rels in by_name.items() if len(rels) > 1}


def output_paths(paths: list[str], ext: str) -> dict[str, str]:
    """{input: crop name} for every input; names two inputs would share are resolved by keeping
    the full input name (x.jpg -> x.jpg.png), clashes left after that are refused."""
    out = {rel: output_path(rel, ext) for rel in paths}
    renamed = [rel for rels in _shared(out).values() for rel in rels if out[rel] != rel]
    for rel in renamed:
        out[rel] = rel + Path(out[rel]).suffix
    clashes = _shared(out)
    if clashes:
        listing = "\n".join(f"  {escape_field(k)} <- {', '.join(map(escape_field, v))}" for k, v in sorted(clashes.items()))
        bad_input(f"{len(clashes)} crop name(s) would be written by more than one input:\n"
                  f"{listing}\nrename those inputs, or align them into separate folders")
    if renamed:
        print(f"note: {len(renamed)} input(s) would share a crop name with another one and keep their full "
              f"name instead, e.g. {escape_field(renamed[0])} -> {escape_field(out[renamed[0]])}", file=sys.stderr)
    converted = sorted({Path(rel).suffix.lower() if Path(rel).suffix.lower() in IMAGE_EXTENSIONS
                        else "suffix-less" for rel in paths
                        if ext == "keep" and Path(out[rel]).suffix != Path(rel).suffix})
    if converted:
        print(f"note: crops of {', '.join(converted)} input are written as PNG (--ext keep writes only "
              f"{' '.join(KEEP_SUFFIXES)} as they are)", file=sys.stderr)
    return out


def read_landmarks(path: Path) -> dict[str, str]:
    """{path: line} of a landmarks file; malformed (e.g. cut-off) lines are ignored."""
    out = {}
    if path.is_file():
        for _, line in read_lines(path, comments=True):
            parts = line.rsplit(None, 10)
            if len(parts) != 11:
                continue
            try:
                [float(v) for v in parts[1:]]
            except ValueError:
                continue
            out[unescape_field(parts[0])] = line
    return out


def write_records(landmarks_path: Path, failures_path: Path, done: dict, failed: dict) -> None:
    """Both record files, sorted and de-duplicated, each replaced atomically."""
    write_lines(landmarks_path, (done[k] + "\n" for k in sorted(done)), header=LANDMARKS_HEADER)
    write_failures(failures_path, failed)


# --------------------------------------------------------------------------- work (in workers)

_STATE = {}


def init_worker(config: dict) -> None:
    """Load this process's own nets."""
    import cv2
    cv2.setNumThreads(1)
    from mtdnn import onnx_export
    onnx_export.set_num_threads(1)  # likewise for ONNX Runtime (--engine onnxruntime / auto)
    from mtdnn.mtcnn import MTCNN
    _STATE["config"] = config
    _STATE["detector"] = MTCNN(config["models"], minsize=config["minsize"], thresholds=config["thresholds"],
                               factor=config["factor"], refine_landmarks=config["refine"],
                               resize=config["resize"], engine=config.get("engine", "auto"), gpu=config.get("gpu"))


def align_one(task):
    """``('ok', rel, line)``, ``('fail', rel, reason)`` for a problem of the image, ``('error',
    rel, reason)`` for an unexpected error while aligning it (recorded, retried on every run), or
    ``('stop', rel, message)`` for a problem of the machine or of saving the crop; never raises."""
    from mtdnn import align
    from mtdnn.mtcnn import MIN_SIDE
    rel, out_name = task
    cfg, detector = _STATE["config"], _STATE["detector"]
    try:
        image = load_image(Path(cfg["src"]) / rel)
        if min(image.shape[:2]) < MIN_SIDE:
            return "fail", rel, f"too small: {image.shape[1]}x{image.shape[0]} px (MTCNN needs >= {MIN_SIDE})"
        case = None
        if cfg.get("devkit"):  # (points, method, reason) or None
            found = devkit_align.find_face(detector, image, devkit_align.read_meta(Path(cfg["src"]) / rel),
                                           cfg["select"], cfg["max_side"], cfg["crop"])
        else:  # (points, box) or None
            found = detector.detect_one(image, cfg["select"], cfg["max_side"])
        if found is None:
            return "fail", rel, "no face found"
        points = found[0]
        if cfg.get("devkit"):
            case = f"{found[1]}\t{found[2]}"
        crop = align.align_face(image, points, cfg["crop"])
    except ImageError as e:
        return "fail", rel, str(e).split(": ", 1)[1]
    except datasets.DatasetError as e:  # a malformed devkit JSON of this image
        return "fail", rel, str(e)
    except (MemoryError, MachineError) as e:
        return "stop", rel, f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - one bad image must not stop a 500k-image run
        if is_machine_error(e):
            return "stop", rel, f"{e.strerror or e} while reading the image"
        return "error", rel, f"error: {type(e).__name__}: {e}"
    target = Path(cfg["out"]) / out_name
    try:
        save_image(target, crop, cfg["quality"])
    except Exception as e:  # noqa: BLE001 - never a property of the image
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        return "stop", rel, f"cannot save {target}: {reason}"
    line = escape_field(rel) + " " + " ".join(f"{v:.3f}" for v in points.reshape(-1))
    return ("ok", rel, line) if case is None else ("ok", rel, line, case)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.workers < 1:
        bad_input("--workers must be >= 1")
    if not args.src.is_dir():
        bad_input(f"{args.src} is not a folder")
    if args.out.exists() and not args.out.is_dir():
        bad_input(f"the output {args.out} is not a folder; name a new or existing folder")
    try:
        with OutputLock(args.out):  # two runs on one OUT: the second stops at once, naming the first
            return run(args)
    except OSError as e:
        if not is_machine_error(e):
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror}{where}: the run stopped; nothing was recorded as a failure of an image. "
              f"Fix the output folder (free space, permissions) and rerun the same command: it resumes.",
              file=sys.stderr)
        return 1


def run(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    landmarks_path = args.landmarks or args.out / "landmarks.txt"
    failures_path = args.failures or args.out / "failures.txt"
    try:
        paths, scan = input_paths(args)
    except datasets.DatasetError as e:
        bad_input(e)
    names = output_paths(paths, args.ext)
    if args.limit:
        paths = paths[:args.limit]

    done = read_landmarks(landmarks_path)
    failed = read_failures(failures_path)
    if args.retry_failed:
        failed = {}
    # "error: ..." records are unexpected errors, not properties of the image: tried again.
    todo = [rel for rel in paths
            if (rel not in failed or failed[rel].startswith("error:"))
            and not (rel in done and (args.out / names[rel]).is_file())]
    print(f"{len(paths)} images: {len(paths) - len(todo)} already done or failed, {len(todo)} to align "
          f"with {args.workers} worker(s)", file=sys.stderr)

    config = dict(src=str(args.src), out=str(args.out), models=args.models, minsize=args.minsize,
                  thresholds=tuple(args.thresholds), factor=args.factor, refine=args.refine_landmarks,
                  resize=args.resize, select=args.select, max_side=args.max_side, crop=args.crop,
                  quality=args.quality, engine=args.engine, gpu=args.gpu, devkit=args.devkit_boxes)
    cases_path = args.out / devkit_align.CASES_FILE
    cases = devkit_align.read_cases(cases_path) if args.devkit_boxes else {}
    new_ok = new_fail = 0
    stopped = None
    start = time.time()
    if not landmarks_path.is_file():
        atomic_write_text(landmarks_path, LANDMARKS_HEADER)
    with open(landmarks_path, "a", encoding="utf-8") as log:
        pool = None
        tasks = [(rel, names[rel]) for rel in todo]
        if args.workers == 1 or len(todo) <= 1:
            init_worker(config)
            results = map(align_one, tasks)
        else:
            # One BLAS thread per worker: the workers are the parallelism. Spawned, not forked,
            # so no worker inherits a half-initialised BLAS or Caffe.
            os.environ.update(blas_threads_env(1))
            # Workers start with Ctrl-C ignored (inherited through exec): the main process alone
            # handles it, so a Ctrl-C while they import prints no traceback of theirs.
            sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                pool = mp.get_context("spawn").Pool(args.workers, init_worker, (config,))
            finally:
                signal.signal(signal.SIGINT, sigint)
            results = pool.imap_unordered(align_one, tasks, chunksize=4)
        try:
            for status, rel, info, *case in tqdm(results, total=len(todo), unit="img", smoothing=0.05,
                                          desc="align", dynamic_ncols=True):
                if status == "stop":
                    stopped = (rel, info)
                    break
                if status == "ok":
                    log.write(info + "\n")
                    log.flush()
                    done[rel] = info
                    failed.pop(rel, None)
                    new_ok += 1
                    if case:
                        cases[rel] = case[0]
                else:
                    failed[rel] = info
                    new_fail += 1
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            # Final, sorted, de-duplicated files, replaced atomically (when anything changed).
            if new_ok or new_fail or args.retry_failed:
                write_records(landmarks_path, failures_path, done, failed)
                if args.devkit_boxes:
                    devkit_align.write_cases(cases_path, cases)
    if stopped:
        print(f"error: stopped at {escape_field(stopped[0])}: {stopped[1]}. This is a problem of the machine "
              f"or the output, not of the image: nothing was recorded as its failure. Fix it and rerun "
              f"the same command: the {new_ok} crops of this run are kept and the run resumes.", file=sys.stderr)
        return 1
    elapsed = time.time() - start
    rate = (new_ok + new_fail) / elapsed if elapsed > 0 else 0.0
    print(f"aligned {new_ok}, failed {new_fail} in {elapsed:.1f} s ({rate:.1f} img/s)", file=sys.stderr)
    n_ok = sum(1 for rel in paths if rel in done and (args.out / names[rel]).is_file())
    n_failed = sum(1 for rel in paths if rel in failed)
    unreadable = len(scan.problems) if scan else 0
    not_images = len(scan.not_images) if scan else 0
    parts = [f"{n_ok} of {len(paths)} images aligned"]
    if n_failed:
        parts.append(f"{n_failed} failed (listed in {failures_path})")
    if unreadable:
        parts.append(f"{unreadable} unreadable (named above)")
    if not_images:
        parts.append(f"{not_images} entries skipped as not images ({scan.skipped_kinds()})")
    if args.devkit_boxes:
        print(devkit_align.format_counts(devkit_align.case_counts(cases, paths)) + f" ({cases_path})",
              file=sys.stderr)
    if n_failed or unreadable or n_ok < len(paths):
        status = 0 if args.allow_failures else 1
        print(f"incomplete: {', '.join(parts)}" + ("" if status == 0 else
              "; exit status 1 (--allow-failures accepts failed images)"), file=sys.stderr)
        return status
    print(f"done: {', '.join(parts)} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_tool(main, bad=(), interrupt_hint="the crops aligned so far and their records in landmarks.txt and "
                                          "failures.txt are kept; rerun the same command to resume")
