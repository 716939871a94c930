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


# --------------------------------------------------------------------------- tools/align_faces.py

def _run_align(*args):
    import os
    import subprocess
    import sys
    from pathlib import Path
    tool = Path(__file__).resolve().parent.parent / "tools" / "align_faces.py"
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, str(tool), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def _landmark_lines(path):
    return [l for l in path.read_text().splitlines() if not l.startswith("#")]


def test_align_faces_tool_bad_input_and_resume(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    lfw = data_path("lfw", "lfw-deepfunneled")
    person = src / "Aaron_Peirsol"
    person.mkdir(parents=True)
    for k in (1, 2, 3):
        (person / f"Aaron_Peirsol_000{k}.jpg").write_bytes((lfw / "Aaron_Peirsol" / f"Aaron_Peirsol_000{k}.jpg").read_bytes())
    grey = cv2.cvtColor(cv2.imread(str(person / "Aaron_Peirsol_0001.jpg")), cv2.COLOR_BGR2GRAY)
    odd = src / "Odd"
    odd.mkdir()
    cv2.imwrite(str(odd / "grey.png"), grey)
    (odd / "empty.jpg").write_bytes(b"")
    data = (person / "Aaron_Peirsol_0002.jpg").read_bytes()
    (odd / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (odd / "corrupt.jpg").write_bytes(b"\xff\xd8garbage\xff\xd9")
    cv2.imwrite(str(odd / "blank.jpg"), np.full((200, 200, 3), 90, np.uint8))
    cv2.imwrite(str(odd / "tiny.png"), np.zeros((8, 8, 3), np.uint8))

    r = _run_align(src, out, "--workers", "2")
    assert r.returncode == 1, r.stderr  # some images failed: not all that was asked for
    assert "img/s" in r.stderr  # the progress bar with its rate
    assert r.stderr.strip().splitlines()[-1].startswith("incomplete: 4 of 9 images aligned, 5 failed")
    crops = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) + \
        sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert crops == ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
                     "Aaron_Peirsol/Aaron_Peirsol_0003.jpg", "Odd/grey.png"]
    assert cv2.imread(str(out / crops[0])).shape == (112, 96, 3)
    lines = _landmark_lines(out / "landmarks.txt")
    assert len(lines) == 4 and all(len(l.split()) == 11 for l in lines)
    failures = dict(l.split("\t") for l in (out / "failures.txt").read_text().splitlines())
    assert set(failures) == {"Odd/empty.jpg", "Odd/truncated.jpg", "Odd/corrupt.jpg", "Odd/blank.jpg", "Odd/tiny.png"}
    assert failures["Odd/empty.jpg"] == "empty file"
    assert failures["Odd/truncated.jpg"].startswith("truncated")
    assert failures["Odd/corrupt.jpg"].startswith("undecodable")
    assert failures["Odd/blank.jpg"] == "no face found"
    assert failures["Odd/tiny.png"].startswith("too small")

    # Resume: nothing to do; a deleted crop is redone; the rest is kept untouched.
    mtime = (out / crops[1]).stat().st_mtime_ns
    (out / crops[0]).unlink()
    r = _run_align(src, out, "--workers", "1", "--allow-failures")
    assert r.returncode == 0, r.stderr
    assert "1 to align" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("incomplete: 4 of 9 images aligned, 5 failed")
    assert (out / crops[0]).is_file() and (out / crops[1]).stat().st_mtime_ns == mtime
    assert len(_landmark_lines(out / "landmarks.txt")) == 4
    assert not list(out.rglob(".*.tmp"))


def test_align_faces_tool_list_and_people(tmp_path):
    out = tmp_path / "out"
    listing = tmp_path / "list.txt"
    listing.write_text("Aaron_Peirsol/Aaron_Peirsol_0001.jpg 3\nNobody/Nobody_0001.jpg 4\n"
                       "Aaron_Peirsol/Aaron_Peirsol_0001.jpg 3\n")
    r = _run_align(data_path("lfw", "lfw-deepfunneled"), out, "--list", listing, "--workers", "1",
                   "--crop", "112x112", "--ext", "png")
    assert r.returncode == 1, r.stderr  # Nobody_0001.jpg is missing
    assert "listed more than once" in r.stderr
    assert cv2.imread(str(out / "Aaron_Peirsol/Aaron_Peirsol_0001.png")).shape == (112, 112, 3)
    assert (out / "failures.txt").read_text() == "Nobody/Nobody_0001.jpg\tmissing\n"

    people = tmp_path / "people.txt"
    people.write_text("2\nAaron_Peirsol\t2\nAJ_Cook\t1\n")
    r = _run_align(data_path("lfw", "lfw-deepfunneled"), tmp_path / "out2", "--people", people, "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert len(_landmark_lines(tmp_path / "out2" / "landmarks.txt")) == 3

    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run_align(empty, tmp_path / "out3")
    assert r.returncode == 2 and "no images to align" in r.stderr
    assert _run_align("--help").returncode == 0
