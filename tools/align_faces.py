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
image centre is kept (--select largest for the largest). See mtdnn/mtcnn.py and mtdnn/align.py;
the library of this command is mtdnn/alignment/.

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
import sys
from dataclasses import fields
from pathlib import Path

from mtdnn import devkit_align, inference
from mtdnn.alignment import AlignInputError, AlignOptions, AlignResult, align_images
from mtdnn.cli import check_engine, run_tool
from mtdnn.fileio import is_machine_error
from mtdnn.records import escape_field


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
    check_engine(p, args.engine, args.gpu)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        options = AlignOptions(**{f.name: getattr(args, f.name) for f in fields(AlignOptions)})  # same names
        return report(align_images(options), args.allow_failures)
    except OSError as e:
        if not is_machine_error(e):
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror}{where}: the run stopped; nothing was recorded as a failure of an image. "
              f"Fix the output folder (free space, permissions) and rerun the same command: it resumes.",
              file=sys.stderr)
        return 1


def report(r: AlignResult, allow_failures: bool) -> int:
    """The closing lines and the exit status."""
    out, paths, scan = r.options.out, r.paths, r.scan
    if r.stopped:
        print(f"error: stopped at {escape_field(r.stopped[0])}: {r.stopped[1]}. This is a problem of the machine "
              f"or the output, not of the image: nothing was recorded as its failure. Fix it and rerun "
              f"the same command: the {r.new_ok} crops of this run are kept and the run resumes.", file=sys.stderr)
        return 1
    rate = (r.new_ok + r.new_fail) / r.elapsed if r.elapsed > 0 else 0.0
    print(f"aligned {r.new_ok}, failed {r.new_fail} in {r.elapsed:.1f} s ({rate:.1f} img/s)", file=sys.stderr)
    n_ok, n_failed = len(r.aligned()), len(r.failures())
    unreadable = len(scan.problems) if scan else 0
    not_images = len(scan.not_images) if scan else 0
    parts = [f"{n_ok} of {len(paths)} images aligned"]
    if n_failed:
        parts.append(f"{n_failed} failed (listed in {r.options.failures_path})")
    if unreadable:
        parts.append(f"{unreadable} unreadable (named above)")
    if not_images:
        parts.append(f"{not_images} entries skipped as not images ({scan.skipped_kinds()})")
    if r.options.devkit_boxes:
        print(devkit_align.format_counts(devkit_align.case_counts(r.cases, paths))
              + f" ({out / devkit_align.CASES_FILE})", file=sys.stderr)
    if n_failed or unreadable or n_ok < len(paths):
        status = 0 if allow_failures else 1
        print(f"incomplete: {', '.join(parts)}" + ("" if status == 0 else
              "; exit status 1 (--allow-failures accepts failed images)"), file=sys.stderr)
        return status
    print(f"done: {', '.join(parts)} -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_tool(main, bad=(AlignInputError,),
             interrupt_hint="the crops aligned so far and their records in landmarks.txt and "
                            "failures.txt are kept; rerun the same command to resume")
