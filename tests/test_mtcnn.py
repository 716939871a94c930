"""mtdnn.mtcnn: the MATLAB helpers on hand-checked cases, and the real Caffe cascade on real
LFW photos: which way round the nets take their input, landmark geometry, agreement with the
reference SphereFace alignment, face selection, images without faces."""
import cv2
import numpy as np
import pytest

from mtdnn import align
from mtdnn import mtcnn as m
from mtdnn.datasets import lfw_people_samples
from mtdnn.paths import data_path

LFW = data_path("lfw", "lfw-deepfunneled")
REF = data_path("lfw", "lfw-112x96")


@pytest.fixture(scope="module")
def detector():
    return m.MTCNN()


@pytest.fixture(scope="module")
def sample_paths():
    samples = lfw_people_samples(data_path("lfw", "peopleDevTest.txt"))
    return [s.path for s in samples[::150]]  # 25 people spread over the alphabet


# --------------------------------------------------------------------------- pure helpers

def test_pyramid_scales():
    scales = m.pyramid_scales(250, 250, 20, 0.85)
    assert scales[0] == pytest.approx(0.6)
    assert np.allclose(np.diff(np.log(scales)), np.log(0.85))
    assert 250 * scales[-1] >= 12 > 250 * scales[-1] * 0.85
    assert m.pyramid_scales(20, 300, 20, 0.85) == m.pyramid_scales(20, 20, 20, 0.85) == [0.6]
    assert m.pyramid_scales(19, 19, 20, 0.85) == []
    with pytest.raises(ValueError):
        m.pyramid_scales(100, 100, 20, 1.2)


def test_nms_union_and_min():
    boxes = np.array([[0, 0, 9, 9, 0.9],     # area 100
                      [1, 1, 10, 10, 0.8],   # IoU with 0: 81 / 119 = 0.68
                      [0, 0, 4, 4, 0.95],    # inside 0: IoU 25/100, Min-overlap 1
                      [50, 50, 59, 59, 0.5]], float)
    assert m.nms(boxes, 0.5, "Union").tolist() == [2, 0, 3]
    assert m.nms(boxes, 0.7, "Union").tolist() == [2, 0, 1, 3]
    # Min: box 2 lies inside box 0 (overlap 1) -> 0 dropped; box 1 meets
    # box 2 on 4x4 = 16 px of its 25 (0.64) -> kept
    assert m.nms(boxes, 0.7, "Min").tolist() == [2, 1, 3]
    assert m.nms(np.zeros((0, 5)), 0.5).tolist() == []
    with pytest.raises(ValueError):
        m.nms(boxes, 0.5, "IoU")


def _nms_matlab(boxes, threshold, method):
    """MATLAB's nms as array operations: the loop the compiled nms must equal."""
    x1, y1, x2, y2, s = (boxes[:, k] for k in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s, kind="stable")
    pick = []
    with np.errstate(divide="ignore", invalid="ignore"):
        while len(order):
            i, rest = order[-1], order[:-1]
            pick.append(i)
            w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
            h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
            inter = w * h
            overlap = inter / (np.minimum(area[i], area[rest]) if method == "Min"
                               else area[i] + area[rest] - inter)
            order = rest[overlap <= threshold]
    return pick


@pytest.mark.parametrize("method", ["Union", "Min"])
def test_nms_equals_matlab_on_random_boxes(method):
    """Clusters of overlapping boxes, tied scores, degenerate and inverted boxes (zero or
    negative areas: x / 0 gives inf or nan as in numpy, and a nan overlap drops the box)."""
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 120))
        centres = rng.uniform(0, 200, (int(rng.integers(1, 6)), 2))
        xy = rng.uniform(0, 200, (n, 2)) if trial % 3 == 0 else \
            centres[rng.integers(0, len(centres), n)] + rng.normal(0, 8, (n, 2))
        if trial % 4 == 0:  # whole pixels, as MTCNN's boxes: widths of 0 or less (x2 = x1 - 1, ...)
            xy, size = np.fix(xy), rng.integers(-3, 8, (n, 2)).astype(float)
        else:
            size = rng.uniform(10, 60, (n, 2))
        score = rng.integers(0, 5, n) / 4 if trial % 2 else rng.uniform(0, 1, n)
        boxes = np.column_stack([xy, xy + size, score])
        for threshold in (0.3, 0.5, 0.7):
            assert m.nms(boxes, threshold, method).tolist() == _nms_matlab(boxes, threshold, method), \
                (trial, threshold)


def test_nms_compiles_where_no_cache_folder_is_writable(monkeypatch):
    """A read-only checkout and home: numba refuses cache=True (RuntimeError, no locator);
    nms compiles in memory instead of failing (numba's locator list emptied to play it)."""
    import numba.core.caching as caching
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    m._nms_kernel.cache_clear()
    try:
        boxes = np.array([[0, 0, 9, 9, 0.9], [1, 1, 10, 10, 0.8], [50, 50, 59, 59, 0.5]])
        assert m.nms(boxes, 0.5).tolist() == [0, 2]
    finally:
        m._nms_kernel.cache_clear()


def test_generate_boxes_bbreg_rerec_pad():
    prob = np.zeros((3, 4))
    prob[1, 2] = 0.8  # row (y) 1, column (x) 2
    reg = np.zeros((4, 3, 4))
    reg[:, 1, 2] = [0.1, 0.2, 0.3, 0.4]
    b = m.generate_boxes(prob, reg, 0.5, 0.6)
    # MATLAB, 1-based cell (x=3, y=2): fix((2*(q-1)+1)/s), fix((2*(q-1)+12)/s)
    assert b.tolist() == [[10, 6, 32, 28, 0.8, 0.1, 0.2, 0.3, 0.4]]
    assert m.bbreg(np.array([[0, 0, 9, 19, 1.0]]), np.array([[0.1, 0.1, -0.1, 0.0]])).tolist() == \
        [[1, 2, 8, 19, 1.0]]
    assert m.rerec(np.array([[0, 0, 10, 20, 1.0]])).tolist() == [[-5, 0, 15, 20, 1.0]]
    dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph = m.pad(np.array([[-2, 3, 12, 17]]), 10, 15)
    # a 15x15 box sticking out left (by 3 px) and right (2 px) and bottom (2 px)
    assert (tmpw[0], tmph[0]) == (15, 15)
    assert (x[0], ex[0], dx[0], edx[0]) == (1, 10, 4, 13)
    assert (y[0], ey[0], dy[0], edy[0]) == (3, 15, 1, 13)


def test_padded_size_bounds_the_waste():
    sizes = {n: m.padded_size(n) for n in range(1, 200)}
    assert [sizes[n] for n in (1, 2, 3, 5, 9, 16, 17, 33)] == [1, 2, 4, 8, 16, 16, 32, 48]
    assert all(n <= p <= max(2 * n, n + m.PAD_BATCH - 1) for n, p in sizes.items())
    assert len(set(sizes.values())) <= m.KEEP_SHAPES  # 200 crops need few planned shapes


def test_crop_patches_zero_pads_outside():
    image = np.full((10, 10, 3), 200, np.float32)
    patch = m.crop_patches(image, np.array([[-9.0, 1, 10, 20]]), 20)[0]  # 20x20, left half outside
    assert patch.shape == (20, 20, 3)
    assert patch[:10, :10].max() == 0 and patch[:10, 10:].min() == 200 and patch[10:].max() == 0


def test_select_face_rules():
    d = m.Detections(np.array([[0, 0, 99, 99, 0.99],     # large, top-left
                               [90, 90, 109, 109, 0.9],  # small, centred
                               [90, 90, 109, 109, 0.95]]), np.zeros((3, 5, 2)))
    assert m.select_face(d, (200, 200, 3), "center") == 2  # tie on distance: higher score
    assert m.select_face(d, (200, 200, 3), "largest") == 0
    with pytest.raises(ValueError, match="no face"):
        m.select_face(m.Detections(), (10, 10, 3))
    with pytest.raises(ValueError):
        m.select_face(d, (200, 200, 3), "first")


# --------------------------------------------------------------------------- real Caffe, real faces

def _geometry_ok(points):
    le, re, nose, lm, rm = points
    return (le[0] < re[0] and lm[0] < rm[0] and max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])
            and le[0] < nose[0] < re[0])


def test_transposed_input_is_the_right_way_round(detector, sample_paths):
    """Fed transposed (as MATLAB does) the nets find every face with sane landmarks;
    fed the other way round they miss most faces and misplace the points."""
    wrong = m.MTCNN(transpose=False)
    right_ok = wrong_ok = 0
    for rel in sample_paths:
        image = cv2.imread(str(LFW / rel))
        found = detector.detect(image)
        assert len(found), rel
        points = found.points[m.select_face(found, image.shape)]
        right_ok += _geometry_ok(points)
        # the chosen face is the one in the middle of the 250x250 photo
        assert np.all(np.abs(points.mean(0) - 125) < 40), rel
        other = wrong.detect(image)
        wrong_ok += len(other) > 0 and _geometry_ok(other.points[m.select_face(other, image.shape)])
    assert right_ok == len(sample_paths)
    assert wrong_ok < len(sample_paths) // 2


def test_alignment_agrees_with_the_reference(detector, sample_paths):
    """Our crops vs the reference SphereFace crops of the same photos: the same detector run
    on both crops finds landmarks about a pixel apart."""
    gaps = []
    for rel in sample_paths:
        image = cv2.imread(str(LFW / rel))
        found = detector.detect(image)
        crop = align.align_face(image, found.points[m.select_face(found, image.shape)])
        ref = cv2.imread(str(REF / rel))
        a, b = detector.detect(crop), detector.detect(ref)
        if len(a) and len(b):
            pa, pb = a.points[m.select_face(a, crop.shape)], b.points[m.select_face(b, ref.shape)]
            gaps.append(np.linalg.norm(pa - pb, axis=1).mean())
    assert len(gaps) >= len(sample_paths) - 1
    assert np.mean(gaps) < 2.0, gaps


def test_landmark_refinement_stays_close(detector, sample_paths):
    refined = m.MTCNN(refine_landmarks=True)
    for rel in sample_paths[:5]:
        image = cv2.imread(str(LFW / rel))
        a, b = detector.detect(image), refined.detect(image)
        assert np.array_equal(a.boxes, b.boxes)
        assert 0 < np.abs(a.points - b.points).max() < 10
        assert _geometry_ok(b.points[m.select_face(b, image.shape)])


def test_several_faces_center_or_largest(detector):
    """Two real faces on one canvas: 'center' picks the one in the middle, 'largest' the big one."""
    small = cv2.imread(str(LFW / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"))
    big = cv2.resize(cv2.imread(str(LFW / "Colin_Powell/Colin_Powell_0001.jpg")), (400, 400))
    canvas = np.full((500, 1000, 3), 128, np.uint8)
    canvas[125:375, 375:625] = small            # centre of the canvas
    canvas[50:450, 590:990] = big               # right, larger (overlap only on background)
    canvas[125:375, 375:625] = small            # pasted again on top of the overlap
    found = detector.detect(canvas)
    assert len(found) >= 2
    centre = found.boxes[m.select_face(found, canvas.shape, "center")]
    largest = found.boxes[m.select_face(found, canvas.shape, "largest")]
    assert 375 < (centre[0] + centre[2]) / 2 < 625
    assert (largest[0] + largest[2]) / 2 > 650


def test_no_face_tiny_and_odd_images(detector):
    assert len(detector.detect(np.full((250, 250, 3), 127, np.uint8))) == 0
    rng = np.random.default_rng(0)
    assert len(detector.detect(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))) == 0
    assert len(detector.detect(np.zeros((8, 8, 3), np.uint8))) == 0
    face = cv2.imread(str(LFW / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"))
    wide = cv2.copyMakeBorder(face, 0, 0, 300, 300, cv2.BORDER_CONSTANT)  # 250 x 850
    assert len(detector.detect(wide)) == 1
    with pytest.raises(ValueError, match="H x W x 3"):
        detector.detect(np.zeros((50, 50), np.uint8))


def test_missing_model_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="det1.prototxt"):
        m.MTCNN(tmp_path)


def test_huge_image_is_searched_shrunk_and_mapped_back(detector):
    face = cv2.imread(str(LFW / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"))
    points, box = detector.detect_one(face)
    huge = cv2.resize(face, (2500, 2500), interpolation=cv2.INTER_LINEAR)  # 10x
    big_points, big_box = detector.detect_one(huge, max_side=250)  # searched at 250x250 again
    # pixel centres: x_huge + 0.5 = 10 (x + 0.5)
    assert np.abs(big_points - ((points + 0.5) * 10 - 0.5)).max() < 10  # within 1 px of the small scale
    assert big_box[2] - big_box[0] == pytest.approx(10 * (box[2] - box[0]), rel=0.05)
    assert detector.detect_one(np.full((300, 300, 3), 50, np.uint8)) is None
