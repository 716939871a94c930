"""Attribute accuracy: hand-checked figures, the real CelebA label file, bad input."""
import numpy as np
import pytest

from mtdnn.paper import CELEBA_ATTRIBUTES, GROUPS
from mtdnn.evaluation.attributes import attribute_accuracy, format_table, read_celeba_attributes
from mtdnn.paths import data_path


def test_hand_case():
    labels = np.array([[1, -1], [1, -1], [-1, -1], [-1, 1]])
    scores = np.array([[0.3, -1], [-0.2, -0.5], [-1, 0.1], [0.0, 2]])  # 0.0 predicts -1
    r = attribute_accuracy(scores, labels, ["A", "B"])
    a, b = r["attributes"]
    assert a["accuracy"] == 0.75 and a["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)
    assert a["majority_baseline"] == 0.5 and a["positive_rate"] == 0.5
    assert b["accuracy"] == 0.75 and b["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert b["majority_baseline"] == 0.75 and r["mean_accuracy"] == 0.75
    assert "MOON" in format_table(r)


def test_all_one_class_has_balanced_accuracy_of_the_present_class():
    r = attribute_accuracy(np.array([[1.0], [-1.0]]), np.array([[1], [1]]), ["A"])
    assert r["attributes"][0]["balanced_accuracy"] == 0.5 and r["attributes"][0]["majority_baseline"] == 1


def test_bad_input():
    with pytest.raises(ValueError, match="must be -1 or \\+1, found 0 at row 1, column 0"):
        attribute_accuracy(np.zeros((2, 1)), np.array([[1], [0]]), ["A"])
    with pytest.raises(ValueError, match="1 prediction row\\(s\\) hold NaN"):
        attribute_accuracy(np.array([[np.nan], [1]]), np.array([[1], [1]]), ["A"])
    with pytest.raises(ValueError, match="shape \\(2, 2\\) for labels of shape \\(2, 1\\)"):
        attribute_accuracy(np.zeros((2, 2)), np.ones((2, 1)), ["A"])
    with pytest.raises(ValueError, match="1 score columns for 2 attribute names"):
        attribute_accuracy(np.zeros((2, 1)), np.ones((2, 1)), ["A", "B"])


def test_real_celeba_labels_and_paper_attributes():
    images, attrs, labels = read_celeba_attributes(data_path("celeba", "list_attr_celeba.txt"))
    assert len(images) == 10000 and images[0] == "000001.jpg" and tuple(attrs) == CELEBA_ATTRIBUTES
    cols = [attrs.index(a) for a in GROUPS["all"]]
    # positive rates over the 10,000 images here (data/README.md): Male 42.2 %, Chubby 5.9 %
    rates = dict(zip(GROUPS["all"], (labels[:, cols] == 1).mean(0)))
    assert rates["Male"] == pytest.approx(0.422, abs=0.001) and rates["Chubby"] == pytest.approx(0.059, abs=0.001)
    # the majority baseline of a perfect-label run is 1 - min(rate, 1 - rate)
    r = attribute_accuracy(labels[:, cols].astype(float), labels[:, cols], GROUPS["all"])
    assert all(a["accuracy"] == 1 for a in r["attributes"])
    assert r["attributes"][-1]["majority_baseline"] == pytest.approx(1 - rates["Male"])


def test_count_line_mismatch(tmp_path):
    p = tmp_path / "attr.txt"
    p.write_text("2\nA B\n000001.jpg 1 -1\n")
    with pytest.raises(ValueError, match="attr.txt: the first line says 2 images, found 1"):
        read_celeba_attributes(p)


# --------------------------------------------------------------------------- a user's FaceScrub subset

def write_tsv(path, lines):
    path.write_text("".join("\t".join(map(str, l)) + "\n" for l in lines), encoding="utf-8")
    return path


def test_a_labelled_facescrub_subset_with_three_annotators_is_voted(tmp_path):
    from mtdnn.evaluation.attributes import read_labelled_subset
    p = write_tsv(tmp_path / "facescrub_attributes.tsv", [
        ["# 3 FaceScrub images, Male given, Chubby voted by three annotators"],
        ["image", "Male", "Chubby:1", "Chubby:2", "Chubby:3"],
        ["Aaron Eckhart/Aaron_Eckhart_1.png", 1, 1, -1, -1],
        ["Adriana Barraza/Adriana_Barraza_4.png", -1, 1, 1, -1],
        ["Adam Brody/Adam_Brody_7.png", 1, -1, -1, -1]])
    images, names, labels = read_labelled_subset(p)
    assert images[0] == "Aaron Eckhart/Aaron_Eckhart_1.png" and names == ["Male", "Chubby"]
    assert labels.tolist() == [[1, -1], [-1, 1], [1, -1]]
    # label and votes together must agree
    both = write_tsv(tmp_path / "both.tsv", [["image", "Male", "Male:1", "Male:2", "Male:3"],
                                              ["a.png", 1, 1, 1, -1], ["b.png", 1, -1, -1, 1]])
    with pytest.raises(ValueError, match="both.tsv, line 3: Male is 1 but its annotators voted -1"):
        read_labelled_subset(both)


@pytest.mark.parametrize("lines, message", [
    ([["image", "Male:1", "Male:2"], ["a.png", 1, 1]], "line 1: Male needs the annotator columns Male:1, Male:2, Male:3"),
    ([["image", "Male"], ["a.png", 0]], "line 2, column Male: expected -1 or 1, got '0'"),
    ([["image", "Male"], ["a.png", 1], ["a.png", -1]], "line 3: image 'a.png' repeated"),
    ([["image", "Male"], ["a.png", 1, 1]], "line 2: 3 tab-separated fields for 2 columns"),
    ([["file", "Male"], ["a.png", 1]], "line 1: the header must start with 'image'"),
    ([["image", "Male"]], "a header but no labelled image"),
])
def test_a_malformed_subset_is_refused_naming_the_line(tmp_path, lines, message):
    from mtdnn.evaluation.attributes import read_labelled_subset
    with pytest.raises(ValueError, match=message):
        read_labelled_subset(write_tsv(tmp_path / "s.tsv", lines))
