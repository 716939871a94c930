"""Aligning MegaFace distractors and FaceScrub probes with the devkit's face boxes and landmarks.

The MegaFace challenge ships, beside every distractor photo and every photo of its FaceScrub
set, a ``<image>.json`` with the face the challenge means: ``bounding_box`` {x, y, width,
height} (pixels) and, on many, ``landmarks`` keyed by index (``{"0": {"x", "y"}, ...}``; read
by :func:`mtdnn.datasets.read_megaface_meta`). MTCNN finds no face in some of these photos and
another face than the meant one in others (group photos). The field's preparations fall back
on the devkit's data there: insightface's ``align_megaface.py`` / ``align_facescrub.py`` and
Feng Wang's FaceVerification (``dataset/Megaface/align_megaface_failures.m``) keep MTCNN's face
when its box overlaps the devkit's by an IoU above 0.3, else run MTCNN's last net on the
devkit's box and keep its points when its face score is at least 0.3, else crop the devkit's
box to the crop's aspect ratio. Both also use the devkit's 3-point landmarks (two eyes and the
nose; FaceVerification's notes call them the most accurate information given and the 5-point
ones "totally wrong"), and both try them *before* MTCNN.

:func:`find_face` does the same with MTCNN first, as every other image of this project is
aligned (so a face MTCNN finds where the devkit says is aligned exactly like an LFW or
CASIA-WebFace face), and the devkit's data only where MTCNN fails or picks another face:

1. ``mtcnn``: the MTCNN face with the highest IoU with the devkit box, if above 0.3
   (:data:`IOU_MIN`); without a devkit box (no JSON), MTCNN's face by the usual rule;
2. ``devkit-landmarks``: the devkit's 3 points (eyes ordered left to right in the image, then
   the nose, index "2"), fitted to the template's first three points;
3. ``onet-in-box``: MTCNN's O-Net on the devkit box (:meth:`mtdnn.mtcnn.MTCNN.detect_in_box`),
   its 5 points if its face score is at least 0.3 (:data:`FORCE_SCORE_MIN`);
4. ``box-crop``: the devkit box, centred, cut to the crop's aspect ratio (its full height).

Each fallback is recorded with why MTCNN was not used (``no face`` or ``face elsewhere``,
IoU <= 0.3), as ``method<TAB>reason`` per image in ``OUT/devkit_cases.txt`` by
``tools/align_faces.py --devkit-boxes``, and counted in its last lines. Cases 2 and 4 have no
detected landmarks: the landmarks file gets the 5 points that the transform maps onto the
template (its inverse applied to the template), so a rerun crops the same face.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from . import align, datasets
from .fileio import atomic_write_text, escape_field, unescape_field
from .records import read_lines
from .mtcnn import select_face

IOU_MIN = 0.3          # insightface and FaceVerification: MTCNN's face must overlap the box more
FORCE_SCORE_MIN = 0.3  # both: O-Net's face score on the given box must be at least this
METHODS = ("mtcnn", "devkit-landmarks", "onet-in-box", "box-crop")
CASES_FILE = "devkit_cases.txt"


def iou(box_xyxy, box_xywh) -> float:
    """Intersection over union of an (x1, y1, x2, y2) box and an (x, y, width, height) one."""
    ax1, ay1, ax2, ay2 = (float(v) for v in box_xyxy[:4])
    bx1, by1 = float(box_xywh[0]), float(box_xywh[1])
    bx2, by2 = bx1 + float(box_xywh[2]), by1 + float(box_xywh[3])
    iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return float(inter / union) if union > 0 else 0.0


def implied_points(matrix: np.ndarray, crop: str = "112x96") -> np.ndarray:
    """The 5 image points that the image -> crop ``matrix`` maps onto the template."""
    template, _ = align.template_for(crop)
    return align.apply(align.invert(matrix), template)


def box_crop_matrix(box, crop: str = "112x96") -> np.ndarray:
    """The image -> crop matrix that cuts the devkit box, centred, to the crop's aspect ratio:
    the box's full height, a width of height x W / H (insightface's and FaceVerification's
    last resort)."""
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        raise ValueError(f"the devkit box needs a positive width and height, got {tuple(box)}")
    out_h, out_w = align.template_for(crop)[1]
    scale = out_h / h
    x0 = x + (w - h * out_w / out_h) / 2
    # pixel edges: the box's [x0, x0 + h W/H) x [y, y + h) becomes the crop's [0, W) x [0, H)
    return np.array([[scale, 0.0, -x0 * scale + 0.5 * scale - 0.5],
                     [0.0, scale, -y * scale + 0.5 * scale - 0.5]])


def devkit_eyes_nose(points) -> np.ndarray | None:
    """The devkit's 3 landmarks as (left eye, right eye, nose) in image order, or None when
    the image has another number of them (the 5-point ones are not used, see the module
    docstring). Index "2" is the nose; the two eyes (indices "0" and "1") are ordered by x."""
    if points is None or len(points) != 3:
        return None
    eyes = sorted(points[:2].tolist(), key=lambda p: p[0])
    return np.array(eyes + [points[2].tolist()], dtype=np.float64)


def read_meta(image_path) -> dict | None:
    """The devkit JSON beside ``image_path`` (:func:`mtdnn.datasets.read_megaface_meta`), or
    None when there is none. A malformed one raises DatasetError (a problem of that image)."""
    if not Path(str(image_path) + ".json").is_file():
        return None
    return datasets.read_megaface_meta(image_path)


def find_face(detector, image: np.ndarray, meta: dict | None, rule: str = "center",
              max_side: int | None = 2000, crop: str = "112x96"):
    """The face to align and how it was found: ``(points 5 x 2 (0-based), method, reason)``,
    or None when there is neither an MTCNN face nor a devkit box. See the module docstring."""
    box = meta.get("box") if meta else None
    found = detector.detect_scaled(image, max_side)
    if box is None:
        if len(found) == 0:
            return None
        k = select_face(found, image.shape, rule)
        return found.points[k].copy(), "mtcnn", "no devkit box"
    if len(found):
        overlaps = [iou(b, box) for b in found.boxes]
        k = int(np.argmax(overlaps))
        if overlaps[k] > IOU_MIN:
            return found.points[k].copy(), "mtcnn", ""
        reason = f"face elsewhere (IoU {overlaps[k]:.2f})"
    else:
        reason = "no face"
    template, _ = align.template_for(crop)
    three = devkit_eyes_nose(meta.get("points"))
    if three is not None:
        try:
            matrix, _ = align.cp2tform_similarity(three, template[:3])
            return implied_points(matrix, crop), "devkit-landmarks", reason
        except ValueError:  # coincident points: not usable
            pass
    score, points = detector.detect_in_box(image, box)
    if score >= FORCE_SCORE_MIN:
        return points, "onet-in-box", reason
    return implied_points(box_crop_matrix(box, crop), crop), "box-crop", reason


# --------------------------------------------------------------------------- the cases record

def read_cases(path) -> dict[str, str]:
    """{image: 'method<TAB>reason'} of a cases file (missing file: empty)."""
    out = {}
    path = Path(path)
    if path.is_file():
        for _, line in read_lines(path, comments=True):  # the one record reader (mtdnn/records.py)
            if "\t" in line:
                rel, case = line.split("\t", 1)
                method, _, reason = case.partition("\t")  # a case without a reason lost its tab to the strip
                out[unescape_field(rel)] = f"{method}\t{reason}"
    return out


def write_cases(path, cases: dict[str, str]) -> None:
    """The cases file, sorted, replaced atomically."""
    atomic_write_text(path, "# path<TAB>method<TAB>why MTCNN's face was not used (mtdnn/devkit_align.py)\n"
                      + "".join(f"{escape_field(k)}\t{cases[k]}\n" for k in sorted(cases)))


def case_counts(cases: dict[str, str], paths=None) -> dict:
    """Counts per method and per reason MTCNN was not used, over ``paths`` (default all)."""
    chosen = [cases[p] for p in (cases if paths is None else paths) if p in cases]
    methods = Counter(c.split("\t", 1)[0] for c in chosen)
    reasons = Counter((c.split("\t", 1) + [""])[1].split(" (", 1)[0] for c in chosen
                      if not c.startswith("mtcnn"))
    return {"methods": {m: methods.get(m, 0) for m in METHODS}, "fallback_reasons": dict(reasons)}


def format_counts(counts: dict) -> str:
    """One line: how many faces each method gave and why the fallbacks were needed."""
    m = counts["methods"]
    text = ", ".join(f"{m[k]} {k}" for k in METHODS)
    why = ", ".join(f"{n} {r}" for r, n in sorted(counts["fallback_reasons"].items()))
    return f"faces by method: {text}" + (f" (MTCNN not used: {why})" if why else "")
