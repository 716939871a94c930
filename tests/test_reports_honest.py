"""Reports that do not overstate (issue 24, item 5; item 6's extra columns): TAR cells out of
range below 1/(impostor pairs), no bold for toy scale and the scale on every row, balanced
accuracy <= 50 % flagged, AUC and a validation threshold as extra columns, a log axis for a
panel flattened by a first loss, the figure of faces. Small files in the real formats, real
CelebA labels and images."""
import json
import subprocess
import sys

import numpy as np
import pytest

from mtdnn.paper import GROUPS
from mtdnn.evaluation.attributes import (attribute_accuracy, auc, choose_threshold, format_table,
                                         read_celeba_attributes)
from mtdnn.evaluation.features_io import write_names
from mtdnn.evaluation.megaface import evaluate_megaface
from mtdnn.evaluation.report import build_report, collect_runs
from mtdnn.evaluation.roc import far_in_range, tar_at_far, tar_text
from mtdnn.paths import REPO, data_path


def test_tar_below_one_over_impostors_is_out_of_range():
    gen, imp = np.linspace(0, 1, 50), np.linspace(-1, 0.5, 1000)
    t = tar_at_far(gen, imp, imp.size, 1e-4)          # 1e-4 x 1,000 = 0.1 impostor pairs
    assert t["n_impostor"] == 1000 and t["in_range"] is False
    assert tar_text(t) == "out of range (FAR < 1/1,000)"
    t = tar_at_far(gen, imp, imp.size, 1e-2)          # 10 impostor pairs: a measurement
    assert t["in_range"] is True and tar_text(t) == f"{100 * t['tar']:.2f}"
    # results written before n_impostor was recorded: the caller's count decides
    old = {"far": 1e-6, "tar": 0.3}
    assert tar_text(old) == "30.00" and tar_text(old, 57_134).startswith("out of range")
    assert far_in_range(1e-6, 1_000_000) and not far_in_range(1e-6, 999_999)


@pytest.fixture()
def stand_in_run(tmp_path):
    """A run folder with an identification.json as tools/eval_identification.py writes it
    (evaluate_megaface on small random features: 2,000 distractors) and an attributes.json on
    real CelebA labels with one attribute at chance."""
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(10), 4)
    probes = (rng.standard_normal((10, 16))[ids] + 0.5 * rng.standard_normal((40, 16))).astype(np.float32)
    res = evaluate_megaface(probes, ids, rng.standard_normal((2000, 16)).astype(np.float32), sizes=(100, 2000),
                            far_targets=(1e-6, 1e-3), progress=False)
    res.update({"kind": "identification"})
    run = tmp_path / "runs" / "fast"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "identification.json").write_text(json.dumps(res))
    images, attrs, labels = read_celeba_attributes(data_path("celeba", "list_attr_celeba.txt"))
    names = list(GROUPS["all"])
    y = labels[:300][:, [attrs.index(a) for a in names]].astype(float)
    scores = y * 0.5 + 0.3 * rng.standard_normal(y.shape)
    scores[:, names.index("Male")] = 1.0 + 0.1 * y[:, names.index("Male")]   # shifted: all "male", ranks well
    r = attribute_accuracy(scores, y, names)
    r["n_images"] = 300
    (run / "eval" / "attributes.json").write_text(json.dumps(r))
    return tmp_path / "runs", res


def test_report_marks_out_of_range_cells_and_writes_scale_without_bold(stand_in_run):
    root, res = stand_in_run
    last = res["results"][-1]
    assert last["n_impostor_pairs"] == 40 * 2000 and not last["tar_at_far"][0]["in_range"]
    md = build_report(*[collect_runs(root)[0]])
    # Tab. 3's cell and the per-size table: 1e-6 with 80,000 impostor pairs is out of range
    assert "| ours: Fast-Model (fast) | yes | Small | out of range (FAR < 1/80,000) | " \
           "stand-in, 2,000 distractors (toy scale) |" in md
    assert "**ours" not in md
    per_size = md[md.index("identification (stand-in)"):]
    assert "| 2,000 |" in per_size and "out of range (FAR < 1/80,000)" in per_size
    assert "out of range (FAR < 1/4,000)" in per_size  # 100 distractors: 4,000 impostor pairs
    # every row of Tab. 2 and 3 says its scale
    for table in ("Tab. 2:", "Tab. 3:"):
        body = md[md.index(table):].split("\n\n")[1].splitlines()[2:]
        assert body and all("distractors" in row.split("|")[-2] for row in body), body
    # Tab. 4: the shifted Male is flagged chance; the extra columns say they are extra
    male = next(line for line in md.splitlines() if line.startswith("| Male |"))
    assert "*chance: bal. acc. 50.00*" in male
    assert "fast: AUC (extra)" in md and "fast: acc. at val. threshold (extra)" in md
    cells = [c.strip() for c in male.split("|")[1:-1]]
    assert float(cells[4]) > 0.9  # the shifted head still ranks men above women
    assert "fast (300 images, CelebA: stand-in)" in md


def test_full_scale_megaface_figure_may_be_bold(stand_in_run):
    """Only MegaFace at the paper's 1M distractors is bold (a megaface.json's shape, by hand)."""
    root, _ = stand_in_run
    mf = {"kind": "megaface", "runs": {"original": {"n_probes": 3530, "n_identities": 80, "results": [
        {"distractors": 1_000_000, "rank1": 0.70, "n_impostor_pairs": 3_530_000_000,
         "tar_at_far": [{"far": 1e-6, "tar": 0.6, "rule": "kth"}]}]}}}
    run = root / "full"
    run.mkdir()
    (run / "megaface.json").write_text(json.dumps(mf))
    md = build_report(collect_runs(root)[0])
    assert "| **ours: Full-Model** (full) | yes | Small | 70.00 | MegaFace, 1,000,000 distractors |" in md
    assert "| **ours: Full-Model** (full) | yes | Small | 60.00 |" in md  # 1e-6 x 3.5e9: a measurement


def test_auc_threshold_and_chance_flag_by_hand():
    assert auc([0.1, 0.4, 0.35, 0.8], [-1, -1, 1, 1]) == 0.75
    assert auc([1, 1], [1, 1]) is None
    assert auc([0.5, 0.5], [1, -1]) == 0.5  # a tie counts half
    # scores shifted up by 1: the best threshold sits between the classes, not at 0
    assert choose_threshold([0.6, 0.7, 1.4, 1.5], [-1, -1, 1, 1]) == pytest.approx(1.05)
    # ties of accuracy: the threshold nearest 0
    assert choose_threshold([-1.0, 1.0], [-1, 1]) == 0.0
    scores = np.array([[0.6], [0.7], [1.4], [1.5], [0.65], [1.45]])
    labels = np.array([[-1], [-1], [1], [1], [-1], [1]])
    r = attribute_accuracy(scores, labels, ["A"])["attributes"][0]
    assert r["accuracy"] == 0.5 and r["balanced_accuracy"] == 0.5 and r["chance"]
    assert r["predicted_positive_rate"] == 1.0 and r["extra"]["auc"] == 1.0
    # each half decided with the threshold of the other: every decision right
    assert r["extra"]["val_threshold"]["accuracy"] == 1.0
    # a given validation set: its threshold (1.0) is used
    v = attribute_accuracy(scores, labels, ["A"], val=(np.array([[0.9], [1.1]]), np.array([[-1], [1]])))
    assert v["attributes"][0]["extra"]["val_threshold"]["threshold"] == pytest.approx(1.0)
    assert v["attributes"][0]["extra"]["val_threshold"]["chosen_on"] == "validation set"
    text = format_table(attribute_accuracy(scores, labels, ["A"]))
    assert "no better than chance" in text and "extra (not the paper's figures)" in text


def test_eval_attributes_val_predictions(tmp_path):
    images, attrs, labels = read_celeba_attributes(data_path("celeba", "list_attr_celeba.txt"))
    cols = [attrs.index(a) for a in GROUPS["all"]]
    y = labels[:200][:, cols].astype(np.float32)
    np.save(tmp_path / "test.npy", y * 0.3 + 0.5)    # every score > 0: the sign rule says +1 always
    write_names(tmp_path / "test.names.txt", images[:200])
    yv = labels[200:300][:, cols].astype(np.float32)
    np.save(tmp_path / "val.npy", yv * 0.3 + 0.5)
    write_names(tmp_path / "val.names.txt", images[200:300])
    tool = [sys.executable, str(REPO / "tools" / "eval_attributes.py"), "--predictions", str(tmp_path / "test"),
            "--out", str(tmp_path / "out")]
    r = subprocess.run(tool + ["--val-predictions", str(tmp_path / "val")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "out" / "attributes.json").read_text())
    male = next(a for a in res["attributes"] if a["name"] == "Male")
    assert male["chance"] and male["extra"]["val_threshold"]["accuracy"] == 1.0
    assert male["extra"]["auc"] == 1.0 and "no better than chance" in r.stdout
    # validation images that are also evaluated are refused
    r = subprocess.run(tool + ["--val-predictions", str(tmp_path / "test")], capture_output=True, text=True)
    assert r.returncode == 2 and "validation images must be others" in r.stderr


def test_first_loss_that_flattens_a_panel_gets_a_log_axis(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtdnn.caffe.log import _scale_note, parse_caffe_log, plot_curves
    fig, ax = plt.subplots()
    note = _scale_note(ax, [70_000.0, 9.1, 8.7, 8.2])
    assert ax.get_yscale() == "log" and "log scale" in note and "70,000" in note
    fig2, ax2 = plt.subplots()
    assert _scale_note(ax2, [9.1, 8.7, 8.2]) == "" and ax2.get_yscale() == "linear"
    log = parse_caffe_log(
        "Iteration 0, Testing net (#0)\n    Test net output #0: loss_id = 70000 (* 1 = 70000 loss)\n"
        "Iteration 0 (0 iter/s, 1s/1 iters), loss = 70000\n"
        "Iteration 10, Testing net (#0)\n    Test net output #0: loss_id = 9.1 (* 1 = 9.1 loss)\n"
        "Iteration 20, Testing net (#0)\n    Test net output #0: loss_id = 8.5 (* 1 = 8.5 loss)\n"
        "Iteration 10 (1 iter/s, 1s/1 iters), loss = 9\n")
    assert plot_curves(log, tmp_path / "c.png", verification=([10, 20], [0.6, 0.7])).stat().st_size > 0


def test_figure_of_faces_from_real_celeba_photos_and_crops(tmp_path):
    from mtdnn.demo import attribute_faces
    from mtdnn.evaluation.plots import plot_face_montage
    images, attrs, labels = read_celeba_attributes(data_path("celeba", "list_attr_celeba.txt"))
    names = list(GROUPS["all"])
    y = labels[:4][:, [attrs.index(a) for a in names]].astype(np.float32)
    np.save(tmp_path / "attr.npy", y * 0.4)
    write_names(tmp_path / "attr.names.txt", images[:4])
    photos = data_path("celeba", "img_align_celeba_89x109")
    crops = tmp_path / "crops"  # a crop missing: the figure says so in its box
    crops.mkdir()
    faces = attribute_faces(tmp_path / "attr", data_path("celeba", "list_attr_celeba.txt"), photos, crops, count=3)
    assert len(faces) == 3 and faces[0]["photo"] == photos / images[0]
    assert "Male" in faces[0]["text"] and " ok" in faces[0]["text"]
    path = plot_face_montage(faces, tmp_path / "faces.png")
    assert path.stat().st_size > 10_000
