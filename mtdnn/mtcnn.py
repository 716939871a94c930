"""MTCNN face detection and 5 landmarks (Zhang et al. 2016) on pycaffe, OpenCV's DNN or ONNX Runtime (``mtdnn.inference``).

A line-by-line port of the authors' MATLAB ``detect_face.m`` (MTCNNv1: P-Net, R-Net, O-Net)
plus the optional fourth stage of ``detect_face_v2.m`` (det4, the landmark refinement net),
run on the released Caffe models (``det1..det4``).

Which way round the networks see the image. The models were trained and released from
MATLAB, whose Caffe interface hands a MATLAB H x W x C array to a blob as if it were
W x H x C: the networks see every image **transposed** (Caffe's height axis runs along the
image's x). So, like the classic Python ports, this module feeds ``image.transpose`` (blob
``C x W x H``), in RGB channel order (MATLAB's ``imread``), scaled (x - 127.5) / 128, and reads
the output maps back transposed, exactly as ``generateBoundingBox`` does in MATLAB. Checked
on real LFW faces (``tests/test_mtcnn.py``): fed this way the left eye comes out left of the
right eye, both eyes above the nose and the mouth below it, and the points agree with the
reference SphereFace alignment to about a pixel; fed untransposed, the same nets find far
fewer faces and put the points in the wrong places (``transpose=False`` exists for that check).

Resampling. MATLAB's ``imResample(..., 'bilinear')`` (Piotr's toolbox) averages over the
exact source area when shrinking and interpolates bilinearly when enlarging; OpenCV's
``INTER_AREA`` / ``INTER_LINEAR`` are those two (``resize='matlab'``, the default).
``resize='linear'`` is what the DuinoDu Python port does (always bilinear, aliasing when
shrinking).

Coordinates. Internally all box arithmetic is MATLAB's 1-based arithmetic (``fix``, ``+1``
widths, ``pad``), so the numbers match the MATLAB code; :meth:`MTCNN.detect` returns boxes and
points in 0-based pixel coordinates (OpenCV's: the top-left pixel centre is (0, 0)), i.e. the
MATLAB values minus 1, which is what :mod:`mtdnn.align` takes.

Several faces. :func:`select_face` picks one deterministically: the box whose centre is
nearest the image centre (SphereFace's rule), or the largest box; ties go to the higher score.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .paths import data_path

DEFAULT_MINSIZE = 20
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.9)
DEFAULT_FACTOR = 0.85  # SphereFace's choice; the MTCNN demo uses 0.709
MIN_SIDE = 12  # P-Net's receptive field: smaller images cannot hold a face


@dataclass
class Detections:
    """All faces found in one image.

    ``boxes``: N x 5 (x1, y1, x2, y2, score), 0-based. ``points``: N x 5 x 2 (x, y), 0-based,
    in the order left eye, right eye, nose, left mouth corner, right mouth corner (image left).
    """
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2)))

    def __len__(self) -> int:
        return len(self.boxes)


# --------------------------------------------------------------------------- pure helpers

def pyramid_scales(height: int, width: int, minsize: float = DEFAULT_MINSIZE,
                   factor: float = DEFAULT_FACTOR) -> list[float]:
    """The scales of the image pyramid: 12/minsize times factor^k while the short side
    stays >= 12 px."""
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    m = 12.0 / minsize
    minl = min(height, width) * m
    scales = []
    while minl >= 12:
        scales.append(m * factor ** len(scales))
        minl *= factor
    return scales


def generate_boxes(prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net output maps (in image orientation: ``prob`` H' x W', ``reg`` 4 x H' x W') to
    candidate boxes N x 9: (x1, y1, x2, y2, score, dx1, dy1, dx2, dy2), 1-based as in MATLAB.

    Candidates come in MATLAB's ``find`` order on the transposed map (row-major here), which
    matters only for exact score ties in NMS.
    """
    stride, cell = 2, 12
    ys, xs = np.nonzero(prob >= threshold)
    if len(ys) == 0:
        return np.zeros((0, 9))
    q = np.stack([xs, ys], axis=1).astype(np.float64)  # 0-based cell index = MATLAB index - 1
    top_left = np.fix((stride * q + 1) / scale)
    bottom_right = np.fix((stride * q + cell) / scale)
    return np.hstack([top_left, bottom_right, prob[ys, xs][:, None], reg[:, ys, xs].T])


def nms(boxes: np.ndarray, threshold: float, method: str = "Union") -> np.ndarray:
    """MATLAB ``nms``: indices of the kept boxes, highest score first. Overlap is
    intersection over union (``'Union'``) or over the smaller area (``'Min'``); boxes
    overlapping a kept one by more than ``threshold`` are dropped. Coordinates are taken
    as float64; one compiled loop (numba) does MATLAB's arithmetic, element by element."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=int)
    if method not in ("Union", "Min"):
        raise ValueError(f"method must be 'Union' or 'Min', got {method!r}")
    x1, y1, x2, y2, s = (np.ascontiguousarray(boxes[:, k], dtype=np.float64) for k in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s, kind="stable")  # MATLAB's sort is stable; the last one is taken first
    return _nms_kernel()(x1, y1, x2, y2, area, order, float(threshold), method == "Min").astype(int)


@functools.cache
def _nms_kernel():
    """The greedy loop of :func:`nms`, compiled on first use (cached on disk by numba). The
    boxes still in play are the ones ``alive`` in ``order``; each step takes the last of them
    (the highest score) and drops the others whose overlap with it is not <= ``threshold``."""
    from numba import njit

    def kernel(x1, y1, x2, y2, area, order, threshold, use_min):
        n = order.shape[0]
        alive = np.ones(n, np.bool_)
        pick = np.empty(n, np.int64)
        k = 0
        for a in range(n - 1, -1, -1):
            if not alive[a]:
                continue
            i = order[a]
            pick[k] = i
            k += 1
            for b in range(a):
                if not alive[b]:
                    continue
                j = order[b]
                w = np.maximum(0.0, np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]) + 1)
                h = np.maximum(0.0, np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]) + 1)
                inter = w * h
                if use_min:
                    overlap = inter / np.minimum(area[i], area[j])
                else:
                    overlap = inter / (area[i] + area[j] - inter)
                if not overlap <= threshold:
                    alive[b] = False
        return pick[:k]

    # x / 0 as in numpy (inf or nan, no exception). The disk cache spares each alignment worker
    # the compile (about 1.4 s); where no cache folder is writable numba refuses to cache, and
    # the loop is compiled in memory instead.
    try:
        return njit(cache=True, nogil=True, error_model="numpy")(kernel)
    except RuntimeError:
        return njit(cache=False, nogil=True, error_model="numpy")(kernel)


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Calibrate boxes by the regression offsets (fractions of the +1 width/height)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] += reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return boxes


def rerec(boxes: np.ndarray) -> np.ndarray:
    """Make boxes square (side = the longer side, same centre)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes[:, 0] += w * 0.5 - side * 0.5
    boxes[:, 1] += h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
    return boxes


def pad(boxes: np.ndarray, width: int, height: int):
    """MATLAB ``pad``: for integer 1-based boxes, the 1-based ranges to copy from the image
    (``y..ey``, ``x..ex``) into a zero patch of ``tmph x tmpw`` (``dy..edy``, ``dx..edx``)."""
    boxes = boxes[:, :4].astype(np.int64)
    tmpw = boxes[:, 2] - boxes[:, 0] + 1
    tmph = boxes[:, 3] - boxes[:, 1] + 1
    dx, dy = np.ones_like(tmpw), np.ones_like(tmph)
    edx, edy = tmpw.copy(), tmph.copy()
    x, y, ex, ey = boxes[:, 0].copy(), boxes[:, 1].copy(), boxes[:, 2].copy(), boxes[:, 3].copy()
    k = ex > width
    edx[k] = -ex[k] + width + tmpw[k]
    ex[k] = width
    k = ey > height
    edy[k] = -ey[k] + height + tmph[k]
    ey[k] = height
    k = x < 1
    dx[k] = 2 - x[k]
    x[k] = 1
    k = y < 1
    dy[k] = 2 - y[k]
    y[k] = 1
    return dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph


def resample(image: np.ndarray, height: int, width: int, method: str = "matlab") -> np.ndarray:
    """Resize to (height, width): MATLAB imResample's behaviour (area average when shrinking,
    bilinear when enlarging) for ``'matlab'``, plain bilinear for ``'linear'``."""
    if method == "matlab":
        shrink = height <= image.shape[0] and width <= image.shape[1]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    elif method == "linear":
        interp = cv2.INTER_LINEAR
    else:
        raise ValueError(f"resize must be 'matlab' or 'linear', got {method!r}")
    return cv2.resize(image, (int(width), int(height)), interpolation=interp)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int, method: str = "matlab") -> np.ndarray:
    """Cut integer 1-based ``boxes`` out of ``image`` (zero outside it) and resize each to
    ``size x size``: N x size x size x C float32."""
    height, width = image.shape[:2]
    dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph = pad(boxes, width, height)
    out = np.zeros((len(boxes), size, size, image.shape[2]), np.float32)
    for k in range(len(boxes)):
        if tmpw[k] < 1 or tmph[k] < 1:
            continue
        tmp = np.zeros((tmph[k], tmpw[k], image.shape[2]), np.float32)
        if ey[k] >= y[k] and ex[k] >= x[k] and edy[k] >= dy[k] and edx[k] >= dx[k]:
            tmp[dy[k] - 1:edy[k], dx[k] - 1:edx[k]] = image[y[k] - 1:ey[k], x[k] - 1:ex[k]]
        out[k] = resample(tmp, size, size, method)
    return out


def normalize(pixels: np.ndarray) -> np.ndarray:
    """MTCNN's input scaling: (x - 127.5) / 128."""
    return (pixels.astype(np.float32) - 127.5) * 0.0078125


def select_face(detections: Detections, image_shape, rule: str = "center") -> int:
    """Index of the one face to keep: ``'center'`` = box centre nearest the image centre,
    ``'largest'`` = largest box area; exact ties go to the higher score, then the lower index.
    Raises ValueError when there is no face."""
    if len(detections) == 0:
        raise ValueError("no face to select")
    boxes = detections.boxes
    if rule == "center":
        height, width = image_shape[:2]
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 - (width - 1) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 - (height - 1) / 2
        key = cx ** 2 + cy ** 2
    elif rule == "largest":
        key = -(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    else:
        raise ValueError(f"rule must be 'center' or 'largest', got {rule!r}")
    return int(np.lexsort((np.arange(len(boxes)), -boxes[:, 4], key))[0])


# --------------------------------------------------------------------------- the detector

# The engine check's input per net (N x C x W x H, transposed): P-Net on a small pyramid
# level rather than its 12 x 12 deploy shape, so the check covers a whole output map.
CHECK_SHAPES = {"det1": (1, 3, 64, 48), "det2": (4, 3, 24, 24), "det3": (4, 3, 48, 48), "det4": (2, 15, 24, 24)}
# OpenCV re-plans a net for every new input shape (about 30 ms for an R-Net batch, as long as
# the forward itself): batches of crops are padded with zeros to a power of two up to
# PAD_BATCH, then to a multiple of PAD_BATCH, and each net keeps up to KEEP_SHAPES planned
# shapes (pyramid levels and padded batch sizes).
PAD_BATCH, KEEP_SHAPES = 16, 32
# The engines --engine auto tries per net, the fastest first (inference.AUTO_ORDER for the
# others). P-Net runs hundreds of small calls per photo, where OpenCV was a little faster than
# ONNX Runtime (0.73x-0.97x in interleaved runs of bench/bench_engines.py and of the recorded
# P-Net calls of 20 LFW photos, one and two threads); ONNX Runtime was 1.2-2.6x OpenCV on
# R-Net and 1.7-1.9x on O-Net.
AUTO_ORDERS = {"det1": ("opencv", "onnxruntime")}


def padded_size(n: int) -> int:
    """The batch size a batch of ``n`` crops is padded to on OpenCV (at most 2x, or +15)."""
    return 1 << (n - 1).bit_length() if n <= PAD_BATCH else -(-n // PAD_BATCH) * PAD_BATCH


def _load_net(folder: Path, name: str, engine: str = "auto", gpu: int | None = None, exported=None):
    """Net ``name`` of ``folder`` (``exported``: an :class:`mtdnn.exported.ExportIndex` of checked
    ONNX exports, which :func:`mtdnn.inference.load` opens without pycaffe)."""
    from . import inference
    proto, model = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
    for path in (proto, model):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MTCNN model file missing (expected det1..det4 "
                                    f".prototxt/.caffemodel in {folder})")
    return inference.load(proto, model, engine=engine, gpu=gpu, check_shape=CHECK_SHAPES[name],
                          max_shapes=KEEP_SHAPES, auto_order=AUTO_ORDERS.get(name, inference.AUTO_ORDER),
                          exported=exported.find(model) if exported is not None else None)


class MTCNN:
    """The MTCNN cascade; its nets run on ``engine`` (``mtdnn.inference``: auto, caffe, opencv
    or onnxruntime), pycaffe on GPU ``gpu`` if given; ``exported``: checked ONNX exports of the
    nets (:class:`mtdnn.exported.ExportIndex`, keyed by the caffemodels' SHA-256) that ONNX
    Runtime runs without pycaffe.

    >>> det = MTCNN()                        # models from data_path('mtcnn')
    >>> found = det.detect(bgr_image)        # Detections, 0-based
    """

    def __init__(self, model_dir=None, minsize: float = DEFAULT_MINSIZE,
                 thresholds=DEFAULT_THRESHOLDS, factor: float = DEFAULT_FACTOR,
                 refine_landmarks: bool = False, resize: str = "matlab", transpose: bool = True,
                 engine: str = "auto", gpu: int | None = None, exported=None):
        folder = Path(model_dir) if model_dir is not None else data_path("mtcnn")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must be three numbers, got {thresholds}")
        if minsize < MIN_SIDE:
            raise ValueError(f"minsize must be >= {MIN_SIDE}, got {minsize}")
        resample(np.zeros((2, 2, 3), np.uint8), 1, 1, resize)  # validates `resize`
        self.minsize, self.thresholds, self.factor = float(minsize), tuple(thresholds), float(factor)
        self.refine_landmarks, self.resize, self.transpose = refine_landmarks, resize, transpose
        self.pnet, self.rnet, self.onet = (_load_net(folder, n, engine, gpu, exported) for n in ("det1", "det2", "det3"))
        self.lnet = _load_net(folder, "det4", engine, gpu, exported) if refine_landmarks else None
        self.recorded = None  # set to {} to keep every input batch per net name (tests, benchmarks)

    # Blob layout: N x C x W x H (transposed, see the module docstring) or N x C x H x W.
    def _to_blob(self, batch: np.ndarray) -> np.ndarray:
        return batch.transpose(0, 3, 2, 1) if self.transpose else batch.transpose(0, 3, 1, 2)

    def _map_to_image(self, maps: np.ndarray) -> np.ndarray:
        return maps.swapaxes(-1, -2) if self.transpose else maps

    def _forward(self, net, blob: np.ndarray) -> dict:
        if self.recorded is not None:
            self.recorded.setdefault(net.deploy.stem, []).append(blob)
        n = len(blob)
        if net.engine != "opencv" or padded_size(n) == n:
            return net.forward(blob)
        pad = np.zeros((padded_size(n) - n, *blob.shape[1:]), blob.dtype)
        return {k: v[:n] for k, v in net.forward(np.concatenate([blob, pad])).items()}

    def detect(self, image: np.ndarray) -> Detections:
        """All faces in an H x W x 3 uint8 **BGR** image (as cv2.imread gives)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
        rgb = image[:, :, ::-1].astype(np.float32)  # MATLAB's imread order
        boxes, points = self._detect_matlab(rgb)
        if len(boxes) == 0:
            return Detections()
        boxes = boxes.copy()
        boxes[:, :4] -= 1.0
        return Detections(boxes, points - 1.0)

    def detect_one(self, image: np.ndarray, rule: str = "center", max_side: int | None = 2000):
        """The one face to align: ``(points 5 x 2, box (x1, y1, x2, y2, score))``, 0-based,
        chosen by :func:`select_face`, or None when there is no face.

        Images whose longer side exceeds ``max_side`` are searched on a copy shrunk to that
        size (area averaging) and the results scaled back: the pyramid of a 6000 px photo
        costs minutes, and faces in such photos are far above ``minsize`` anyway.
        """
        found = self.detect_scaled(image, max_side)
        if len(found) == 0:
            return None
        k = select_face(found, image.shape, rule)
        return found.points[k].copy(), found.boxes[k].copy()

    def detect_scaled(self, image: np.ndarray, max_side: int | None = 2000) -> Detections:
        """:meth:`detect` on a copy shrunk to ``max_side`` (see :meth:`detect_one`), boxes
        and points mapped back to ``image``'s pixels."""
        scale = 1.0
        if max_side is not None and max(image.shape[:2]) > max_side:
            scale = max_side / max(image.shape[:2])
            image = cv2.resize(image, (max(1, round(image.shape[1] * scale)),
                                       max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        found = self.detect(image)
        if scale != 1.0 and len(found):  # pixel centres: x_full + 0.5 = (x_small + 0.5) / scale
            found.points = (found.points + 0.5) / scale - 0.5
            found.boxes = found.boxes.copy()
            found.boxes[:, :4] = (found.boxes[:, :4] + 0.5) / scale - 0.5
        return found

    def detect_in_box(self, image: np.ndarray, box) -> tuple[float, np.ndarray]:
        """O-Net alone on a given face box (x, y, width, height; 0-based), made square as the
        cascade makes its boxes: ``(face score, points 5 x 2)``, 0-based. For a box that comes
        from elsewhere (the MegaFace devkit's) where the full cascade found no face in it; the
        'force detect' of the MegaFace preparations of insightface and of Feng Wang's
        FaceVerification, which accept the points when the score is at least 0.3."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
        x, y, w, h = (float(v) for v in box)
        if not (w > 0 and h > 0) or not np.isfinite([x, y, w, h]).all():
            raise ValueError(f"the box needs a positive width and height, got {tuple(box)}")
        rgb = image[:, :, ::-1].astype(np.float32)
        boxes = np.fix(rerec(np.array([[x + 1, y + 1, x + w, y + h, 0.0]]))[:, :4])  # 1-based
        out = self._forward(self.onet, self._to_blob(normalize(crop_patches(rgb, boxes, 48, self.resize))))
        pts = out["conv6-3"][0]
        bw, bh = boxes[0, 2] - boxes[0, 0] + 1, boxes[0, 3] - boxes[0, 1] + 1
        points = np.stack([bw * pts[0:5] + boxes[0, 0] - 1, bh * pts[5:10] + boxes[0, 1] - 1], axis=1)
        return float(out["prob1"][0, 1]), points - 1.0

    def _detect_matlab(self, img: np.ndarray):
        """The MATLAB function body (detect_face.m), its three stages in turn: 1-based N x 5
        boxes and N x 5 x 2 points."""
        empty = (np.zeros((0, 5)), np.zeros((0, 5, 2)))
        if min(img.shape[:2]) < MIN_SIDE:
            return empty
        boxes = self._stage_pnet(img)
        if len(boxes):
            boxes = self._stage_rnet(img, boxes)
        if len(boxes) == 0:
            return empty
        boxes, points = self._stage_onet(img, boxes)
        if len(boxes) and self.lnet is not None:
            points = self._refine(img, boxes, points)
        return (boxes, points) if len(boxes) else empty

    def _stage_pnet(self, img: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the pyramid; candidate boxes, calibrated, squared, integer (N x 5)."""
        h, w = img.shape[:2]
        total = []
        for scale in pyramid_scales(h, w, self.minsize, self.factor):
            hs, ws = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            data = normalize(resample(img, hs, ws, self.resize))[None]
            out = self._forward(self.pnet, self._to_blob(data))
            prob = self._map_to_image(out["prob1"][0, 1])
            reg = self._map_to_image(out["conv4-2"][0])
            boxes = generate_boxes(prob, reg, scale, self.thresholds[0])
            boxes = boxes[nms(boxes, 0.5, "Union")]
            if len(boxes):
                total.append(boxes)
        if not total:
            return np.zeros((0, 5))
        boxes = np.vstack(total)
        boxes = boxes[nms(boxes, 0.7, "Union")]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = np.column_stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                                 boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                                 boxes[:, 4]])
        boxes = rerec(boxes)
        boxes[:, :4] = np.fix(boxes[:, :4])
        return boxes

    def _stage_rnet(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24 x 24 crops; the boxes it keeps, calibrated and squared."""
        data = normalize(crop_patches(img, boxes, 24, self.resize))
        out = self._forward(self.rnet, self._to_blob(data))
        score = out["prob1"][:, 1]
        keep = score > self.thresholds[1]
        boxes = np.column_stack([boxes[keep, :4], score[keep]])
        reg = out["conv5-2"][keep]
        if len(boxes) == 0:
            return boxes
        pick = nms(boxes, 0.7, "Union")
        return rerec(bbreg(boxes[pick], reg[pick]))

    def _stage_onet(self, img: np.ndarray, boxes: np.ndarray):
        """Stage 3: O-Net on 48 x 48 crops: boxes, scores, 5 points."""
        boxes = np.fix(boxes)
        data = normalize(crop_patches(img, boxes, 48, self.resize))
        out = self._forward(self.onet, self._to_blob(data))
        score = out["prob1"][:, 1]
        keep = score > self.thresholds[2]
        boxes = np.column_stack([boxes[keep, :4], score[keep]])
        reg, pts = out["conv6-2"][keep], out["conv6-3"][keep]
        if len(boxes) == 0:
            return boxes, np.zeros((0, 5, 2))
        bw = boxes[:, 2] - boxes[:, 0] + 1
        bh = boxes[:, 3] - boxes[:, 1] + 1
        px = bw[:, None] * pts[:, 0:5] + boxes[:, 0:1] - 1
        py = bh[:, None] * pts[:, 5:10] + boxes[:, 1:2] - 1
        boxes = bbreg(boxes, reg)
        pick = nms(boxes, 0.7, "Min")
        return boxes[pick], np.stack([px[pick], py[pick]], axis=2)

    def _refine(self, img: np.ndarray, boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Stage 4 (detect_face_v2.m): det4 moves each point within a patch a quarter of the
        box wide around it; moves over 0.35 patch widths are ignored. (The MATLAB code pads
        these patches against variables that by then hold box sizes; the image size is used
        here, which is what the padding is for.)"""
        h, w = img.shape[:2]
        side = np.maximum(boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1)
        patchw = np.fix(0.25 * side)
        patchw[patchw % 2 == 1] += 1
        data = np.zeros((len(boxes), 24, 24, 15), np.float32)
        for k in range(5):
            x = np.fix(points[:, k, 0] - 0.5 * patchw)
            y = np.fix(points[:, k, 1] - 0.5 * patchw)
            patch_boxes = np.column_stack([x, y, x + patchw, y + patchw])
            data[..., 3 * k:3 * k + 3] = crop_patches(img, patch_boxes, 24, self.resize)
        out = self._forward(self.lnet, self._to_blob(normalize(data)))
        refined = points.copy()
        for k in range(5):
            off = out[f"fc5_{k + 1}"].copy()
            off[np.any(np.abs(off - 0.5) > 0.35, axis=1)] = 0.5
            refined[:, k, 0] = points[:, k, 0] - 0.5 * patchw + off[:, 0] * patchw
            refined[:, k, 1] = points[:, k, 1] - 0.5 * patchw + off[:, 1] * patchw
        return refined
