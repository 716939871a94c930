"""mtdnn.datasets and mtdnn.images: readers on the real files, formats without data here on
small files written in their documented formats, and every kind of bad input."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from mtdnn import datasets as ds
from mtdnn.paper import PAPER_ATTRIBUTES
from mtdnn.images import ImageError, load_image, save_image
from mtdnn.paths import data_path


# --------------------------------------------------------------------------- LFW (real files)

def test_lfw_view1_people_real():
    folds = ds.read_lfw_people(data_path("lfw", "peopleDevTrain.txt"))
    assert len(folds) == 1 and len(folds[0]) == 4038
    samples = ds.lfw_people_samples(data_path("lfw", "peopleDevTrain.txt"))
    assert len(samples) == 9525
    assert samples[0] == ds.Sample("AJ_Cook/AJ_Cook_0001.jpg", "AJ_Cook")
    assert ds.missing_files(samples, data_path("lfw", "lfw-deepfunneled")) == []
    test = {s.identity for s in ds.lfw_people_samples(data_path("lfw", "peopleDevTest.txt"))}
    assert len(test) == 1711 and not test & {s.identity for s in samples}


def test_lfw_view2_people_format(tmp_path):
    f = tmp_path / "people.txt"
    f.write_text("2\n2\nA\t1\nB\t2\n1\nC\t3\n")
    assert ds.read_lfw_people(f) == [[("A", 1), ("B", 2)], [("C", 3)]]
    f.write_text("2\n2\nA\t1\nB\t2\n2\nC\t3\n")
    with pytest.raises(ds.DatasetError, match="fold 2 should list 2 people"):
        ds.read_lfw_people(f)
    f.write_text("3\nA\t1\nB\tx\n")
    with pytest.raises(ds.DatasetError, match=r"people.txt, line 3: the image count"):
        ds.read_lfw_people(f)


def test_lfw_pairs_real():
    folds = ds.read_lfw_pairs(data_path("lfw", "pairs.txt"))
    assert len(folds) == 10 and all(len(f) == 600 for f in folds)
    assert sum(same for f in folds for _, _, same in f) == 3000
    dev = ds.read_lfw_pairs(data_path("lfw", "pairsDevTest.txt"))
    assert len(dev) == 1 and len(dev[0]) == 1000
    a, b, same = dev[0][0]
    assert same and a.split("/")[0] == b.split("/")[0]


def test_identity_folders_on_the_reference_tree():
    samples = ds.read_identity_folders(data_path("lfw", "lfw-112x96"))
    assert len(samples) == 13233
    listed = ds.read_image_list(data_path("lfw", "lfw-112x96_list.txt"))
    assert [s.path for s in samples] == sorted(s.path for s in listed)
    labels = ds.assign_labels(listed)
    assert labels.max() + 1 == 5749
    by_path = {s.path: s.identity for s in samples}
    assert all(by_path[s.path] == s.path.split("/")[0] for s in listed)


def test_identity_folders_bad_input(tmp_path):
    with pytest.raises(ds.DatasetError, match="no images found"):
        ds.read_identity_folders(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ds.DatasetError, match="no images found"):
        ds.read_identity_folders(tmp_path)
    cv2.imwrite(str(tmp_path / "loose.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ds.DatasetError, match="outside any identity folder"):
        ds.read_identity_folders(tmp_path)
    with pytest.raises(ds.DatasetError, match="not a folder"):
        ds.read_identity_folders(tmp_path / "nope")


def test_casia_layout(tmp_path):
    for ident, n in (("0000045", 2), ("0000099", 1)):
        for k in range(1, n + 1):
            (tmp_path / ident).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / ident / f"{k:03d}.jpg"), np.zeros((8, 8, 3), np.uint8))
    samples = ds.read_identity_folders(tmp_path)
    assert [s.path for s in samples] == ["0000045/001.jpg", "0000045/002.jpg", "0000099/001.jpg"]
    assert ds.assign_labels(samples).tolist() == [0, 0, 1]


# --------------------------------------------------------------------------- plain lists

def test_image_list_bad_input(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("a/1.jpg 0\na/2.jpg 0\na/1.jpg 1\n")
    with pytest.raises(ds.DatasetError, match=r"line 3: duplicate path 'a/1.jpg' \(first on line 1\)"):
        ds.read_image_list(f)
    f.write_text("a/1.jpg 0\njust_a_path\n")
    with pytest.raises(ds.DatasetError, match="line 2: expected 'path label'"):
        ds.read_image_list(f)
    f.write_text("")
    with pytest.raises(ds.DatasetError, match="empty"):
        ds.read_image_list(f)
    f.write_text("Aaron_Peirsol/Aaron_Peirsol_0001.jpg 0\nNobody/Nobody_0001.jpg 1\n")
    with pytest.raises(ds.DatasetError, match=r"1 listed file\(s\) missing .*Nobody_0001.jpg' \(line 2\)"):
        ds.read_image_list(f, root=data_path("lfw", "lfw-112x96"))
    with pytest.raises(ds.DatasetError, match="file not found"):
        ds.read_image_list(tmp_path / "nope.txt")


def test_image_list_round_trip_with_spaces(tmp_path):
    samples = [ds.Sample("my photos/x 1.jpg", "3"), ds.Sample("b.png", "10")]
    ds.write_image_list(tmp_path / "l.txt", samples)
    assert ds.read_image_list(tmp_path / "l.txt") == samples
    assert ds.identity_names(samples) == ["3", "10"]  # numeric order


# --------------------------------------------------------------------------- CelebA

def test_celeba_real_files():
    attrs = ds.read_celeba_attributes(data_path("celeba", "list_attr_celeba.txt"))
    assert attrs.values.shape == (10000, 40) and len(attrs.names) == 40
    paper = attrs.select(PAPER_ATTRIBUTES)
    male_rate = (paper.values[:, -1] == 1).mean()
    assert male_rate == pytest.approx(0.422, abs=0.001)  # data README: 42.2 % over these 10,000
    assert attrs.names[23] == "Narrow_Eyes"  # column 24, 1-based
    ids = ds.read_celeba_identities(data_path("celeba", "identity_CelebA.txt"))
    assert len(ids) == 10000 and len(set(ids.values())) == 5429
    part = ds.read_celeba_partition(data_path("celeba", "list_eval_partition.txt"))
    assert set(part.values()) == {0}
    samples = ds.celeba_samples(data_path("celeba", "identity_CelebA.txt"),
                                data_path("celeba", "list_eval_partition.txt"), split=0,
                                image_dir=data_path("celeba", "img_align_celeba_89x109"))
    assert len(samples) == 10000 and samples[0].path == "000001.jpg"


def _attr_file(tmp_path, rows, count=None, names=("A", "B", "C")):
    f = tmp_path / "list_attr_celeba.txt"
    f.write_text(f"{len(rows) if count is None else count}\n{' '.join(names)}\n" + "".join(r + "\n" for r in rows))
    return f


def test_celeba_attribute_bad_input(tmp_path):
    ok = ds.read_celeba_attributes(_attr_file(tmp_path, ["1.jpg 1 -1  1", "2.jpg -1 0 1"]))
    assert ok.values.tolist() == [[1, -1, 1], [-1, 0, 1]]
    with pytest.raises(ds.DatasetError, match=r"list_attr_celeba.txt, line 4: expected 3 attribute values, got 2"):
        ds.read_celeba_attributes(_attr_file(tmp_path, ["1.jpg 1 -1 1", "2.jpg -1 1"]))
    with pytest.raises(ds.DatasetError, match=r"line 3: attribute value '2' is not -1, 0 or 1"):
        ds.read_celeba_attributes(_attr_file(tmp_path, ["1.jpg 1 2 1"]))
    with pytest.raises(ds.DatasetError, match=r"line 3: attribute value '0.5'"):
        ds.read_celeba_attributes(_attr_file(tmp_path, ["1.jpg 1 0.5 1"]))
    with pytest.raises(ds.DatasetError, match="says 5 images, found 1"):
        ds.read_celeba_attributes(_attr_file(tmp_path, ["1.jpg 1 1 1"], count=5))
    with pytest.raises(ds.DatasetError, match="duplicate file"):
        ds.read_celeba_attributes(_attr_file(tmp_path, ["1.jpg 1 1 1", "1.jpg 1 1 1"]))
    with pytest.raises(ds.DatasetError, match="unknown attribute"):
        ok.select(["Male"])


def test_celeba_landmarks_and_identity_format(tmp_path):
    f = tmp_path / "list_landmarks_align_celeba.txt"
    f.write_text("2\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                 "rightmouth_x rightmouth_y\n000001.jpg 69 109 106 113 77 142 73 152 108 154\n"
                 "000002.jpg 69 110 107 112 81 135 70 151 108 153\n")
    files, pts = ds.read_celeba_landmarks(f)
    assert files == ["000001.jpg", "000002.jpg"] and pts.shape == (2, 5, 2)
    assert pts[0, 2].tolist() == [77, 142]
    f.write_text("1\na b c d e f g h i j\n000001.jpg 69 109 106\n")
    with pytest.raises(ds.DatasetError, match="line 3: expected a file and 10 coordinates, got 3"):
        ds.read_celeba_landmarks(f)
    g = tmp_path / "identity_CelebA.txt"
    g.write_text("000001.jpg 2880\n000002.jpg x\n")
    with pytest.raises(ds.DatasetError, match="identity_CelebA.txt, line 2: identity must be an integer"):
        ds.read_celeba_identities(g)
    p = tmp_path / "list_eval_partition.txt"
    p.write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(ds.DatasetError, match="line 2: partition must be 0, 1 or 2"):
        ds.read_celeba_partition(p)


# --------------------------------------------------------------------------- attribute matrices

def test_attribute_matrix_files(tmp_path):
    m = np.array([[1, -1], [0, 1]], np.float32)
    np.save(tmp_path / "a.npy", m)
    assert np.array_equal(ds.read_attribute_matrix(tmp_path / "a.npy", n_rows=2), m)
    (tmp_path / "a.txt").write_text("# header\n1 -1\n0 1\n")
    assert np.array_equal(ds.read_attribute_matrix(tmp_path / "a.txt"), m)
    (tmp_path / "b.txt").write_text("1 -1\n0 1 1\n")
    with pytest.raises(ds.DatasetError, match=r"b.txt, line 2: expected 2 attribute values, got 3"):
        ds.read_attribute_matrix(tmp_path / "b.txt")
    np.save(tmp_path / "c.npy", np.array([[1, 0.3]]))
    with pytest.raises(ds.DatasetError, match=r"c.npy: row 1, column 2: value .*0.3"):
        ds.read_attribute_matrix(tmp_path / "c.npy")
    with pytest.raises(ds.DatasetError, match="2 attribute rows for 3 images"):
        ds.read_attribute_matrix(tmp_path / "a.npy", n_rows=3)


# --------------------------------------------------------------------------- MegaFace / FaceScrub

def test_megaface_devkit_formats(tmp_path):
    (tmp_path / "facescrub_features_list.json").write_text(json.dumps(
        {"id": ["Aaron_Eckhart", "Aaron_Eckhart", "Adam_Brody"],
         "path": ["Aaron_Eckhart/Aaron_Eckhart_134.png", "Aaron_Eckhart/Aaron_Eckhart_2.png",
                  "Adam_Brody/Adam_Brody_7.png"]}))
    probes = ds.read_megaface_list(tmp_path / "facescrub_features_list.json")
    assert [s.identity for s in probes] == ["Aaron_Eckhart", "Aaron_Eckhart", "Adam_Brody"]
    (tmp_path / "megaface_features_list.json_10_1").write_text(json.dumps(
        {"path": ["123@N00/456_789.jpg", "999@N01/1_2.jpg"]}))
    distractors = ds.read_megaface_list(tmp_path / "megaface_features_list.json_10_1")
    assert [s.identity for s in distractors] == ["123@N00", "999@N01"]
    (tmp_path / "bad.json").write_text(json.dumps({"path": ["a.jpg", "a.jpg"]}))
    with pytest.raises(ds.DatasetError, match="duplicate path 'a.jpg'"):
        ds.read_megaface_list(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text("{not json")
    with pytest.raises(ds.DatasetError, match="bad2.json: not valid JSON"):
        ds.read_megaface_list(tmp_path / "bad2.json")
    (tmp_path / "bad3.json").write_text(json.dumps({"path": ["a"], "id": [1, 2]}))
    with pytest.raises(ds.DatasetError, match="'id' must be a list as long"):
        ds.read_megaface_list(tmp_path / "bad3.json")

    image = tmp_path / "456_789.jpg"
    (tmp_path / "456_789.jpg.json").write_text(json.dumps(
        {"bounding_box": {"x": 10.5, "y": 20, "width": 100, "height": 120},
         "landmarks": {"1": {"x": 70, "y": 50}, "0": {"x": 40, "y": 52}, "2": {"x": 55, "y": 80}},
         "full_image_path": "x"}))
    meta = ds.read_megaface_meta(image)
    assert meta["box"] == (10.5, 20, 100, 120)
    assert meta["points"].tolist() == [[40, 52], [70, 50], [55, 80]]
    (tmp_path / "x.jpg.json").write_text(json.dumps({"bounding_box": {"x": 1}}))
    with pytest.raises(ds.DatasetError, match="malformed bounding_box"):
        ds.read_megaface_meta(tmp_path / "x.jpg")
    with pytest.raises(ds.DatasetError, match="file not found"):
        ds.read_megaface_meta(tmp_path / "none.jpg")


# --------------------------------------------------------------------------- image loading

REAL = ("lfw", "lfw-deepfunneled", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg")


def test_load_image_good_and_converted(tmp_path):
    image = load_image(data_path(*REAL))
    assert image.shape == (250, 250, 3) and image.dtype == np.uint8
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    g = load_image(tmp_path / "grey.png")
    assert g.shape == (250, 250, 3) and np.array_equal(g[:, :, 0], g[:, :, 2])
    cv2.imwrite(str(tmp_path / "deep.png"), image.astype(np.uint16) * 257)
    assert np.abs(load_image(tmp_path / "deep.png").astype(int) - image).max() <= 1
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([image, np.full((250, 250), 255, np.uint8)]))
    assert np.array_equal(load_image(tmp_path / "alpha.png"), image)
    Image.fromarray(image[:, :, ::-1]).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = load_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (250, 250, 3) and np.abs(cmyk.astype(int) - image).mean() < 8


def test_load_image_bad_files(tmp_path):
    data = data_path(*REAL).read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8" + bytes(range(256)) * 20 + b"\xff\xd9")
    (tmp_path / "text.jpg").write_text("not an image")
    ok, png = cv2.imencode(".png", np.zeros((30, 30, 3), np.uint8))
    (tmp_path / "trunc.png").write_bytes(png.tobytes()[:-20])
    for name, reason in (("empty.jpg", "empty file"), ("trunc.jpg", "truncated"),
                         ("corrupt.jpg", "undecodable"), ("text.jpg", "undecodable"),
                         ("trunc.png", "truncated"), ("missing.jpg", "missing")):
        with pytest.raises(ImageError, match=reason) as e:
            load_image(tmp_path / name)
        assert e.value.reason == reason and name in str(e.value)
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path / "folder.jpg")
    save_image(tmp_path / "big.png", np.zeros((200, 300, 3), np.uint8))
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png", max_pixels=50_000)
    assert not list(tmp_path.glob(".*.tmp"))  # save_image leaves no temporary behind
