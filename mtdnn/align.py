"""Five-point face alignment as the SphereFace (MATLAB) pipeline does it.

SphereFace aligns with ``cp2tform(points, template, 'similarity')`` and ``imtransform``.
MATLAB's fit is *not* the least-squares fit from image to template that OpenCV's
``estimateAffinePartial2D`` or scikit-image's ``SimilarityTransform`` make:

1. it fits the similarity the other way round, from the template to the image points
   (``Tinv``), by least squares, and inverts it to get ``T`` (image -> template);
2. it fits a second time with the template's x mirrored (a reflective similarity) and keeps
   whichever of the two has the smaller forward error ``||T(points) - template||``.

``imtransform`` then samples output pixel (x, y) at ``Tinv(x, y)`` bilinearly, with 0 outside.

Coordinates. The template is published in MATLAB's 1-based pixel coordinates. Everything in
this module takes and returns **0-based** coordinates (OpenCV's: the centre of the top-left
pixel is (0, 0)); :data:`TEMPLATE_112x96` is the published template minus 1. A similarity has
a free translation, so shifting both point sets by the same 1 px gives exactly the same fit:
fitting in 0-based coordinates and warping with ``cv2.warpAffine`` (which also samples pixel
centres at integer 0-based positions) reproduces MATLAB's 1-based computation exactly
(``tests/test_align.py`` checks this against a 1-based evaluation).
"""
from __future__ import annotations

import cv2
import numpy as np

# SphereFace's 5-point template for a 112 (H) x 96 (W) crop, MATLAB 1-based (x, y):
# left eye, right eye, nose tip, left mouth corner, right mouth corner ("left" = image left).
TEMPLATE_112x96_MATLAB = np.array([
    [30.2946, 51.6963],
    [65.5318, 51.5014],
    [48.0252, 71.7366],
    [33.5493, 92.3655],
    [62.7299, 92.2041]])
TEMPLATE_112x96 = TEMPLATE_112x96_MATLAB - 1.0

CROP_SIZES = {"112x96": (112, 96), "112x112": (112, 112)}


def template_for(crop: str = "112x96") -> tuple[np.ndarray, tuple[int, int]]:
    """The 0-based 5-point template and the (H, W) size of a crop named ``'112x96'`` or
    ``'112x112'`` (the 112x96 template shifted right by 8 px, as insightface does)."""
    if crop not in CROP_SIZES:
        raise ValueError(f"unknown crop {crop!r}; choose one of {sorted(CROP_SIZES)}")
    shift = (CROP_SIZES[crop][1] - 96) / 2.0
    return TEMPLATE_112x96 + [shift, 0.0], CROP_SIZES[crop]


def _as_points(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape == (10,):  # MTCNN's x1..x5, y1..y5 layout
        points = points.reshape(2, 5).T
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise ValueError(f"expected K x 2 points (K >= 2), got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points must be finite")
    return points


def fit_nonreflective(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``dst ~ s R src + t`` (rotation, uniform scale, translation;
    no reflection) as a 2x3 matrix. Raises ValueError for degenerate (coincident) points."""
    src, dst = _as_points(src), _as_points(dst)
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} source points but {len(dst)} destination points")
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    # Unknowns r = (a, b, tx, ty) with dst_x = a x + b y + tx, dst_y = -b x + a y + ty:
    # MATLAB's findNonreflectiveSimilarity system, rows for u then rows for v.
    X = np.block([[x[:, None], y[:, None], one[:, None], zero[:, None]],
                  [y[:, None], -x[:, None], zero[:, None], one[:, None]]])
    U = np.concatenate([dst[:, 0], dst[:, 1]])
    if np.linalg.matrix_rank(X) < 4 or np.ptp(dst, axis=0).max() < 1e-9:
        raise ValueError("similarity fit needs two distinct points on each side")
    a, b, tx, ty = np.linalg.lstsq(X, U, rcond=None)[0]
    # MATLAB: Tinv = [a -b 0; b a 0; tx ty 1] acting on row vectors [x y 1].
    return np.array([[a, b, tx], [-b, a, ty]])


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def apply(matrix: np.ndarray, points) -> np.ndarray:
    """Apply a 2x3 affine matrix to K x 2 points."""
    points = _as_points(points)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def cp2tform_similarity(points, template) -> tuple[np.ndarray, bool]:
    """MATLAB ``cp2tform(points, template, 'similarity')``.

    Returns ``(T, reflected)``: ``T`` is the 2x3 matrix mapping image points to template
    coordinates, ``reflected`` says the reflective solution won. Both candidates are fitted
    from template to image (``Tinv``) and inverted; the one with the smaller forward error
    ``norm(T(points) - template)`` is kept (ties go to the non-reflective one, as in MATLAB).
    """
    points, template = _as_points(points), _as_points(template)
    tinv1 = fit_nonreflective(template, points)
    t1 = invert(tinv1)
    mirror = np.array([-1.0, 1.0])
    # Fit to the template mirrored in x, then undo the mirror: T2 = M . T2r.
    tinv2r = fit_nonreflective(template * mirror, points)
    t2 = np.diag(mirror) @ invert(tinv2r)
    # MATLAB's norm() of a matrix is its largest singular value (python ports use Frobenius).
    err1 = np.linalg.norm(apply(t1, points) - template, 2)
    err2 = np.linalg.norm(apply(t2, points) - template, 2)
    return (t1, False) if err1 <= err2 else (t2, True)


def similarity_to_template(points, crop: str = "112x96") -> tuple[np.ndarray, bool]:
    """The image -> crop 2x3 matrix for 0-based image ``points`` (5 x 2, or MTCNN's 10-vector)."""
    template, _ = template_for(crop)
    return cp2tform_similarity(points, template)


def warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear warp of ``image`` by the image -> crop ``matrix`` into an (H, W) = ``size``
    crop, sampling each crop pixel at the inverse transform (imtransform), 0 outside."""
    h, w = size
    return cv2.warpAffine(image, invert(matrix), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_face(image: np.ndarray, points, crop: str = "112x96") -> np.ndarray:
    """Align one face: ``image`` (H x W x C uint8) and its 5 landmarks (0-based, left eye,
    right eye, nose, left mouth, right mouth) to a 112x96 (or 112x112) crop."""
    matrix, _ = similarity_to_template(points, crop)
    return warp(image, matrix, template_for(crop)[1])


def template_error(points, crop: str = "112x96") -> float:
    """Mean Euclidean distance (px) of 5 crop-space landmarks from the template."""
    template, _ = template_for(crop)
    return float(np.linalg.norm(_as_points(points) - template, axis=1).mean())
