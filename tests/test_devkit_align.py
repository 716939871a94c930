"""MegaFace / FaceScrub alignment with the devkit's boxes and landmarks (mtdnn/devkit_align.py,
tools/align_faces.py --devkit-boxes): real LFW photos, the real MTCNN, and per-image JSON files
in the devkit's format ({"bounding_box": {"x", "y", "width", "height"}, "landmarks": {"0": {"x",
"y"}, ...}}, as insightface's and FaceVerification's MegaFace scripts read them)."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mtdnn import align, datasets, devkit_align
from mtdnn.mtcnn import MTCNN
from mtdnn.paths import REPO, data_path

LFW = data_path("lfw", "lfw-deepfunneled")
PHOTO = LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
pytestmark = pytest.mark.skipif(not PHOTO.is_file() or not data_path("mtcnn", "det3.caffemodel").is_file(),
                                reason=f"needs {PHOTO} and the MTCNN models (make data)")


@pytest.fixture(scope="module")
def detector():
    return MTCNN()


@pytest.fixture(scope="module")
def blind():
    """The same nets with an O-Net threshold no face reaches: the cascade finds nothing."""
    return MTCNN(thresholds=(0.6, 0.7, 1.0))


@pytest.fixture(scope="module")
def photo(detector):
    image = cv2.imread(str(PHOTO))
    points, box = detector.detect_one(image)
    return image, points, box


def devkit_json(image_path, box, points=None):
    """Write <image>.json as the devkit does; landmarks keyed "0" (right eye in the image),
    "1" (left eye), "2" (nose), the way FaceVerification maps them."""
    data = {"bounding_box": dict(zip(("x", "y", "width", "height"), map(float, box))),
            "full_image_path": f"FlickrFinal2/{image_path.name}"}
    if points is not None:
        data["landmarks"] = {str(k): {"x": float(x), "y": float(y)} for k, (x, y) in enumerate(points)}
    (image_path.parent / (image_path.name + ".json")).write_text(json.dumps(data))


def xywh(box):
    return (box[0], box[1], box[2] - box[0], box[3] - box[1])


def test_iou_and_the_box_crop_geometry():
    assert devkit_align.iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert devkit_align.iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert devkit_align.iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    m = devkit_align.box_crop_matrix((50, 40, 120, 140))  # 140 high -> 120 wide at 112x96
    # the box's outer pixel edges become the crop's
    np.testing.assert_allclose(align.apply(m, [[49.5, 39.5], [169.5, 179.5]]), [[-0.5, -0.5], [95.5, 111.5]])
    assert devkit_align.devkit_eyes_nose(np.zeros((5, 2))) is None
    three = devkit_align.devkit_eyes_nose(np.array([[60, 50], [30, 51], [45, 70.0]]))
    assert three.tolist() == [[30, 51], [60, 50], [45, 70]]


def test_the_mtcnn_face_on_the_devkit_box_is_kept(detector, photo, tmp_path):
    image, points, box = photo
    path = tmp_path / "a.jpg"
    devkit_json(path, np.add(xywh(box), (4, -3, 6, 5)), points[[1, 0, 2]])
    meta = devkit_align.read_meta(path)
    found, method, reason = devkit_align.find_face(detector, image, meta)
    assert (method, reason) == ("mtcnn", "")
    np.testing.assert_array_equal(found, points)
    # no JSON at all: MTCNN's face by the usual rule, said so
    found, method, reason = devkit_align.find_face(detector, image, devkit_align.read_meta(tmp_path / "b.jpg"))
    assert (method, reason) == ("mtcnn", "no devkit box") and np.array_equal(found, points)


def test_a_face_elsewhere_is_aligned_by_the_devkit_landmarks(detector, photo):
    image, points, _ = photo
    meta = {"box": (0.0, 0.0, 40.0, 40.0), "points": points[[1, 0, 2]]}  # right eye first, as "0"
    found, method, reason = devkit_align.find_face(detector, image, meta)
    assert method == "devkit-landmarks" and reason.startswith("face elsewhere (IoU 0.00")
    # the implied 5 points give exactly the 3-point fit of the given eyes and nose to the template
    template, _ = align.template_for("112x96")
    np.testing.assert_allclose(align.similarity_to_template(found)[0],
                               align.cp2tform_similarity(points[:3], template[:3])[0], atol=1e-9)
    assert np.abs(found[:3] - points[:3]).max() < 3.0  # and the fit's residual is small on a real face
    same, _, _ = devkit_align.find_face(detector, image, dict(meta, points=points[:3]))  # index order
    np.testing.assert_allclose(same, found)
    # in the 3-point crop MTCNN's eyes and nose land within 2.5 px of the template; its mouth
    # corners do not (about 8 px high on this face): 3 points say nothing of the mouth
    matrix, _ = align.similarity_to_template(found)
    err = np.linalg.norm(align.apply(matrix, points) - template, axis=1)
    assert err[:3].max() < 2.5 and err[3:].min() > 5


def test_no_face_falls_back_on_onet_in_the_box(blind, detector, photo):
    image, points, box = photo
    assert len(blind.detect(image)) == 0
    found, method, reason = devkit_align.find_face(blind, image, {"box": xywh(box), "points": None})
    assert (method, reason) == ("onet-in-box", "no face")
    assert np.abs(found - points).max() < 3.0


def test_no_face_and_no_face_in_the_box_crops_the_box(blind):
    image = np.full((300, 300, 3), (0, 255, 0), np.uint8)
    image[40:180, 50:170] = (0, 0, 255)  # the box (50, 40, 120, 140): 140 high, 120 = 140 * 96 / 112 wide
    score, _ = blind.detect_in_box(image, (50, 40, 120, 140))
    assert score < devkit_align.FORCE_SCORE_MIN
    found, method, reason = devkit_align.find_face(blind, image, {"box": (50, 40, 120, 140), "points": None})
    assert (method, reason) == ("box-crop", "no face")
    crop = align.align_face(image, found)
    assert crop.shape == (112, 96, 3)
    assert (crop[1:-1, 1:-1] == (0, 0, 255)).all()


def run_align(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "align_faces.py"), *map(str, args)],
                          capture_output=True, text=True, env=dict(os.environ, GLOG_minloglevel="2"), timeout=300)


def test_the_tool_counts_each_case_and_resumes(photo, tmp_path):
    image, points, box = photo
    src = tmp_path / "FlickrFinal2" / "123@N00"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "1_face.jpg"), image)
    devkit_json(src / "1_face.jpg", xywh(box))
    cv2.imwrite(str(src / "2_wall.jpg"), np.full((200, 200, 3), 90, np.uint8))
    devkit_json(src / "2_wall.jpg", (40, 30, 96, 112))
    cv2.imwrite(str(src / "3_bad.jpg"), image)
    (src / "3_bad.jpg.json").write_text('{"bounding_box": {"x": 1}}')
    out = tmp_path / "aligned"
    r = run_align(tmp_path / "FlickrFinal2", out, "--devkit-boxes", "--workers", "1")
    assert r.returncode == 1, r.stderr  # 3_bad failed
    cases = devkit_align.read_cases(out / devkit_align.CASES_FILE)
    assert cases == {"123@N00/1_face.jpg": "mtcnn\t", "123@N00/2_wall.jpg": "box-crop\tno face"}
    assert "faces by method: 1 mtcnn, 0 devkit-landmarks, 0 onet-in-box, 1 box-crop (MTCNN not used: 1 no face)" \
        in r.stderr
    failures = (out / "failures.txt").read_text()
    assert "123@N00/3_bad.jpg\t" in failures and "malformed bounding_box" in failures
    assert (out / "123@N00" / "2_wall.jpg").is_file()
    # rerun: nothing to do, the counts come from the record
    r = run_align(tmp_path / "FlickrFinal2", out, "--devkit-boxes", "--workers", "1", "--allow-failures")
    assert r.returncode == 0 and "0 to align" in r.stderr
    assert "1 mtcnn, 0 devkit-landmarks, 0 onet-in-box, 1 box-crop" in r.stderr


def test_the_devkit_json_format_is_read(tmp_path):
    """The fields the scripts of the field read: bounding_box x/y/width/height, landmarks by index."""
    path = tmp_path / "x.jpg"
    devkit_json(path, (10.5, 20, 100, 120), [[70, 50], [40, 52], [55, 80]])
    meta = datasets.read_megaface_meta(path)
    assert meta["box"] == (10.5, 20, 100, 120)
    assert devkit_align.devkit_eyes_nose(meta["points"]).tolist() == [[40, 52], [70, 50], [55, 80]]
