"""mtdnn.align: MATLAB cp2tform('similarity') fit, reflection, 0/1-based warping."""
import cv2
import numpy as np
import pytest
from scipy import ndimage

from mtdnn import align
from mtdnn.paths import data_path

SQUARE = np.array([[-1.0, -1], [1, -1], [1, 1], [-1, 1]])


def test_template_is_sphereface_minus_one():
    assert np.allclose(align.TEMPLATE_112x96 + 1, [[30.2946, 51.6963], [65.5318, 51.5014],
                                                    [48.0252, 71.7366], [33.5493, 92.3655],
                                                    [62.7299, 92.2041]])
    t112, size = align.template_for("112x112")
    assert size == (112, 112) and np.allclose(t112 - align.TEMPLATE_112x96, [[8, 0]] * 5)
    with pytest.raises(ValueError, match="unknown crop"):
        align.template_for("64x64")


def test_identity_and_exact_similarity():
    t, refl = align.similarity_to_template(align.TEMPLATE_112x96)
    assert not refl and np.allclose(t, [[1, 0, 0], [0, 1, 0]])
    points = 2 * align.TEMPLATE_112x96 + [10, 20]
    t, refl = align.similarity_to_template(points)
    assert not refl and np.allclose(t, [[0.5, 0, -5], [0, 0.5, -10]])
    # MTCNN's 10-vector layout (x1..x5, y1..y5) is accepted too.
    t10, _ = align.similarity_to_template(np.concatenate([points[:, 0], points[:, 1]]))
    assert np.allclose(t10, t)


def test_least_squares_runs_from_template_to_image_hand_checked():
    # Template: the unit square; image points: the square x2 with one corner moved 1 px right.
    # Normal equations by hand (template centred, sum x^2+y^2 = 8):
    #   a = sum(x u + y v) / 8 = 17/8, b = sum(y u - x v) / 8 = 1/8, t = mean(points) = (0.25, 0)
    points = 2 * SQUARE
    points[2, 0] += 1
    t, refl = align.cp2tform_similarity(points, SQUARE)
    tinv = np.array([[2.125, 0.125, 0.25], [-0.125, 2.125, 0.0]])
    assert not refl
    assert np.allclose(align.invert(t), tinv)
    # The opposite direction (image -> template, what OpenCV / skimage fit) differs.
    direct = align.fit_nonreflective(points, SQUARE)
    assert not np.allclose(direct, t, atol=1e-3)


def test_reflection_is_tried_and_chosen_when_better():
    mirrored = SQUARE * [-1, 1] + [[0.0, 0], [0, 0], [0.2, 0], [0, 0]]  # a mirror image, slightly noisy
    t, refl = align.cp2tform_similarity(mirrored, SQUARE)
    assert refl
    assert np.linalg.det(t[:, :2]) < 0  # orientation flips
    assert np.abs(align.apply(t, mirrored) - SQUARE).max() < 0.2
    t_plain, refl_plain = align.cp2tform_similarity(SQUARE * 3, SQUARE)
    assert not refl_plain and np.linalg.det(t_plain[:, :2]) > 0


def test_degenerate_points_are_rejected():
    with pytest.raises(ValueError, match="two distinct points"):
        align.cp2tform_similarity(np.zeros((5, 2)), align.TEMPLATE_112x96)
    with pytest.raises(ValueError, match="K x 2"):
        align.similarity_to_template(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="finite"):
        align.similarity_to_template(np.full((5, 2), np.nan))


def test_warp_matches_a_1_based_matlab_evaluation():
    """Fit and sample in MATLAB's 1-based coordinates by hand; our 0-based path must agree."""
    image = cv2.imread(str(data_path("lfw", "lfw-deepfunneled", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg")))
    points0 = np.array([[104.3, 113.1], [146.8, 112.4], [125.2, 136.0], [106.9, 157.5], [144.7, 158.2]])
    crop = align.align_face(image, points0)
    assert crop.shape == (112, 96, 3) and crop.dtype == np.uint8
    # MATLAB: Tinv fitted on 1-based points / template; imtransform samples output pixel
    # (x, y) = (1..96, 1..112) at Tinv(x, y), 1-based in the source.
    t1, _ = align.cp2tform_similarity(points0 + 1, align.TEMPLATE_112x96_MATLAB)
    tinv1 = align.invert(t1)
    ys, xs = np.mgrid[1:113, 1:97].astype(np.float64)
    src_x = tinv1[0, 0] * xs + tinv1[0, 1] * ys + tinv1[0, 2]
    src_y = tinv1[1, 0] * xs + tinv1[1, 1] * ys + tinv1[1, 2]
    ref = np.stack([ndimage.map_coordinates(image[:, :, c].astype(np.float64), [src_y - 1, src_x - 1],
                                            order=1, mode="constant") for c in range(3)], axis=2)
    # cv2's bilinear weights are 5-bit fixed point: allow a couple of grey levels.
    assert np.abs(crop.astype(np.float64) - ref).max() <= 3
    assert np.abs(crop.astype(np.float64) - ref).mean() < 0.5
    # A 1 px error in the convention would be far larger.
    shifted = align.align_face(image, points0 + 1)
    assert np.abs(shifted.astype(np.float64) - ref).mean() > 3


def test_112x112_crop_is_the_112x96_crop_widened():
    image = cv2.imread(str(data_path("lfw", "lfw-deepfunneled", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg")))
    points = np.array([[104.3, 113.1], [146.8, 112.4], [125.2, 136.0], [106.9, 157.5], [144.7, 158.2]])
    narrow = align.align_face(image, points)
    wide = align.align_face(image, points, crop="112x112")
    assert wide.shape == (112, 112, 3)
    assert np.abs(wide[:, 8:104].astype(int) - narrow).max() <= 1


def test_template_error():
    assert align.template_error(align.TEMPLATE_112x96) == 0
    assert align.template_error(align.TEMPLATE_112x96 + [3, 4]) == pytest.approx(5)
