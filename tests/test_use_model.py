"""Using a trained model on real faces: the model card (train.py writes it, eval_lfw.py adds the
threshold and feature mean), tools/verify.py on LFW photos, tools/attributes.py, tools/embed.py,
the mtdnn.FaceModel API on arrays and paths, a photo without a face, a photo with two faces,
and a run folder without a card.

One demo-sized Fast-Model (width 0.125, 6 LFW people, 10 iterations) is trained in the module
fixture; its threshold is chosen on 30 pairs of pairsDevTrain and tested on 30 of pairsDevTest
(features of the reference 112x96 crops), as the demo does at full size."""
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtdnn.card import CARD_FILE, CardError, MEAN_FILE, load_card
from mtdnn.demo import lfw_pair_images, subset_pairs
from mtdnn.evaluation.lfw import read_pairs
from mtdnn.facemodel import FaceModel, NoFace
from mtdnn.fileio import sha256_file
from mtdnn.paths import REPO, data_path

TOOLS = REPO / "tools"


def tool(name, *args, check=True):
    out = subprocess.run([sys.executable, str(TOOLS / name), *map(str, args)], capture_output=True, text=True,
                         env={**__import__("os").environ, "GLOG_minloglevel": "2"})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, the card as training wrote it, the View 1 subset files, lfw.json)."""
    root = tmp_path_factory.mktemp("use")
    by_label = defaultdict(list)
    for line in data_path("lfw", "lfw-112x96_list.txt").read_text().splitlines():
        if line.strip():
            path, label = line.split()
            by_label[label].append(path)
    people = sorted(by_label, key=lambda k: (-len(by_label[k]), k))[:6]
    (root / "list.txt").write_text("".join(f"{p} {i}\n" for i, k in enumerate(people) for p in sorted(by_label[k])[:8]))
    crops = data_path("lfw", "lfw-112x96")
    tool("build_db.py", "--list", root / "list.txt", "--root", crops, "--placeholder-attributes", 7, root / "db")
    run = root / "run"
    tool("train.py", "--quiet", "--model", "fast", "--width", 0.125, "--batch", 8, "--display", 1,
         "--test-interval", 1000, "--seed", 1, "--db", root / "db", "--run", run,
         "--pretrain-iter", 6, "--finetune-iter", 4)
    card_after_training = json.loads((run / CARD_FILE).read_text())
    dtr, dte = root / "pairsDevTrain_subset.txt", root / "pairsDevTest_subset.txt"
    subset_pairs(data_path("lfw", "pairsDevTrain.txt"), dtr, 15)
    subset_pairs(data_path("lfw", "pairsDevTest.txt"), dte, 15)
    images = sorted(set(lfw_pair_images(dtr)) | set(lfw_pair_images(dte)))
    (root / "features.txt").write_text("".join(i + "\n" for i in images))
    tool("extract_features.py", "--deploy", run / "deploy.prototxt", "--weights", run / "finetune_iter_4.caffemodel",
         "--list", root / "features.txt", "--root", crops, "--mirror", "concat", "--out", root / "feats" / "lfw",
         "--quiet")
    out = tool("eval_lfw.py", "--features", root / "feats" / "lfw", "--view1", dtr, dte, "--no-view2",
               "--out", run / "eval")
    assert "model card: recorded in" in out.stdout and "with the verification threshold" in out.stdout
    return {"run": run, "card0": card_after_training, "dtr": dtr, "dte": dte, "root": root,
            "lfw": json.loads((run / "eval" / "lfw.json").read_text())}


@pytest.fixture(scope="module")
def model(trained):
    return FaceModel.load(trained["run"])


def photo(name: str, n: int) -> Path:
    return data_path("lfw", "lfw-deepfunneled", name, f"{name}_{n:04d}.jpg")


def test_training_writes_the_card(trained):
    run, card = trained["run"], trained["card0"]
    assert card["weights"] == {"file": "finetune_iter_4.caffemodel",
                               "sha256": sha256_file(run / "finetune_iter_4.caffemodel"),
                               "bytes": (run / "finetune_iter_4.caffemodel").stat().st_size}
    assert card["deploy"]["sha256"] == sha256_file(run / "deploy.prototxt")
    assert card["input"]["shape_chw"] == [3, 112, 96] and card["input"]["pixel_scale"] == 0.0078125
    assert card["features"]["blob"] == "fc5" and card["features"]["mirror"] == "concat"
    assert card["features"]["dim"] == 2 * 128   # fc5 of width 0.125, image + mirror image
    assert len(card["attributes"]["names"]) == 7 and "score > 0" in card["attributes"]["rule"]
    assert card["verification"] is None and card["evaluations"] == {}


def test_eval_lfw_records_the_threshold_and_the_feature_mean(trained):
    run, lfw = trained["run"], trained["lfw"]
    card = load_card(run)
    v = card["verification"]
    assert v["threshold"] == lfw["view1"]["threshold"]
    assert v["chosen_on"] == trained["dtr"].name and v["n_pairs_chosen_on"] == 30
    assert v["tested_on"] == trained["dte"].name and v["accuracy_tested_on"] == lfw["view1"]["accuracy"]
    assert v["feature_mean"]["sha256"] == sha256_file(run / MEAN_FILE)
    assert np.load(run / MEAN_FILE).shape == (256,)
    assert card["evaluations"]["lfw"]["view1"]["accuracy"] == lfw["view1"]["accuracy"]
    assert "feature_mean" not in lfw["view1"]   # the vector goes beside the card, not into lfw.json


def test_the_api_applies_the_card_as_the_evaluation_did(trained, model):
    """The card's threshold and mean applied to a new pair give the evaluator's own answers: on
    the held-out pairsDevTest subset (the same reference crops), FaceModel.compare's accuracy
    is the one lfw.json reports."""
    crops = data_path("lfw", "lfw-112x96")
    pairs = read_pairs(trained["dte"])
    right = [model.compare(crops / p.image1, crops / p.image2, aligned=True).same == p.same for p in pairs]
    assert np.mean(right) == pytest.approx(trained["lfw"]["view1"]["accuracy"], abs=1e-12)


def test_verify_on_lfw_photos(trained):
    """Raw LFW photos (detected and aligned in memory): each answer is the score against the
    card's threshold; a photo against itself scores 1; the exit status says same / different."""
    run, root = trained["run"], trained["root"]
    pairs = read_pairs(trained["dte"])
    chosen = [p for p in pairs if p.same][:2] + [p for p in pairs if not p.same][:2]
    lfw = data_path("lfw", "lfw-deepfunneled")
    (root / "mine.txt").write_text("".join(f"{p.image1} {p.image2}\n" for p in chosen))
    out = tool("verify.py", "--pairs", root / "mine.txt", "--root", lfw, "--run", run)
    threshold = load_card(run)["verification"]["threshold"]
    rows = [ln.split("\t") for ln in out.stdout.splitlines() if not ln.startswith("#")]
    assert len(rows) == 4 and f"threshold {threshold:.4f}" in out.stdout
    for answer, score, a, b, _ in rows:
        assert answer == ("same" if float(score) > threshold else "different"), (answer, score)
    one = tool("verify.py", lfw / chosen[0].image1, lfw / chosen[0].image2, "--run", run, check=False)
    assert one.returncode == (0 if rows[0][0] == "same" else 3), one.stdout + one.stderr
    assert f"score {rows[0][1]}" in one.stdout and "chosen on pairsDevTrain_subset.txt (30 pairs" in one.stdout
    self_pair = tool("verify.py", lfw / chosen[0].image1, lfw / chosen[0].image1, "--run", run, check=False)
    assert "score 1.0000" in self_pair.stdout
    assert self_pair.returncode == (0 if threshold < 1 else 3)


def test_attributes_of_a_photo(trained, model):
    p = photo("Abdullah_Gul", 13)
    out = tool("attributes.py", p, "--run", trained["run"])
    api = model.attributes(p)
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.split()[:1] and ln.split()[0] in api]
    assert [r[0] for r in rows] == list(api) and len(rows) == 7
    for name, score, sign, word in rows:
        assert float(score) == pytest.approx(api[name], abs=5e-4)
        assert (sign, word) == (("+1", "yes") if float(score) > 0 else ("-1", "no"))
    assert "sign rule: score > 0" in out.stdout and "one face" in out.stdout


def test_the_api_on_an_image_array_and_a_path(model):
    p = photo("Abdullah_Gul", 14)
    image = cv2.imread(str(p))
    f_path, f_array = model.embed(p), model.embed(image)
    assert f_path.shape == (256,) and np.array_equal(f_path, f_array)
    assert model.attributes(p) == model.attributes(image)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert model.embed(grey).shape == (256,)
    c = model.compare(p, image)
    assert c.score == pytest.approx(1.0, abs=1e-6) and c.same == (c.threshold < 1)
    with pytest.raises(ValueError, match="uint8"):
        model.embed(image.astype(np.float32))


def test_embed_tool_writes_features_and_lists_what_it_could_not(trained, model, tmp_path):
    blank = tmp_path / "wall.jpg"
    cv2.imwrite(str(blank), np.tile(np.linspace(60, 200, 320, dtype=np.uint8)[None, :, None], (240, 1, 3)))
    p1, p2 = photo("Abdullah_Gul", 13), photo("Abdullah_Gul", 14)
    out = tool("embed.py", p1, blank, p2, "--run", trained["run"], "--out", tmp_path / "mine", check=False)
    assert out.returncode == 1 and "1 of 3 photo(s) left out" in out.stdout
    assert f"{blank}: no face found" in out.stdout
    feats = np.load(tmp_path / "mine.npy")
    assert (tmp_path / "mine.names.txt").read_text().split() == [str(p1), str(p2)]
    assert np.allclose(feats, [model.embed(p1), model.embed(p2)], rtol=0, atol=1e-4 * np.abs(feats).max())
    meta = json.loads((tmp_path / "mine.meta.json").read_text())
    assert meta["settings"]["mirror"] == "concat" and meta["failed"] == 1
    assert str(blank) in (tmp_path / "mine.failures.txt").read_text()


def test_a_photo_without_a_face(trained, model, tmp_path):
    blank = tmp_path / "wall.jpg"
    cv2.imwrite(str(blank), np.tile(np.linspace(60, 200, 320, dtype=np.uint8)[None, :, None], (240, 1, 3)))
    with pytest.raises(NoFace, match="wall.jpg: no face found"):
        model.embed(blank)
    out = tool("verify.py", photo("Abdullah_Gul", 13), blank, "--run", trained["run"], check=False)
    assert out.returncode == 2 and "wall.jpg: no face found" in out.stderr
    out = tool("attributes.py", blank, photo("Abdullah_Gul", 13), "--run", trained["run"], check=False)
    assert out.returncode == 2 and "wall.jpg: no face found" in out.stdout and "one face" in out.stdout


def test_a_photo_with_two_faces_names_the_face_used(trained, model, tmp_path):
    """Two LFW photos side by side, the right one shrunk: the tool says 2 faces and which one
    it used; --select largest takes the left (larger) face, whose features are those of the
    left photo alone up to the detector's sub-pixel differences."""
    left, right = cv2.imread(str(photo("Abdullah_Gul", 13))), cv2.imread(str(photo("Aaron_Peirsol", 1)))
    right = cv2.resize(right, (200, 200), interpolation=cv2.INTER_AREA)
    both = np.zeros((250, 450, 3), np.uint8)
    both[:, :250], both[25:225, 250:] = left, right
    path = tmp_path / "two.jpg"
    cv2.imwrite(str(path), both, [cv2.IMWRITE_JPEG_QUALITY, 98])
    largest = FaceModel.load(trained["run"], select="largest")
    face = largest.face(path)
    assert face.n_faces == 2 and face.box[2] < 250      # the left face
    assert "2 faces; using face" in face.describe() and "(largest)" in face.describe()
    alone, in_both = largest.embed(left), largest.embed(path)
    cos = alone @ in_both / (np.linalg.norm(alone) * np.linalg.norm(in_both))
    assert cos > 0.9
    centre = model.face(path)
    assert centre.n_faces == 2 and "(nearest the centre)" in centre.describe()
    out = tool("verify.py", path, photo("Abdullah_Gul", 13), "--run", trained["run"], "--select", "largest",
               check=False)
    assert out.returncode in (0, 3) and "two.jpg: 2 faces; using face" in out.stdout


def test_a_run_folder_without_a_card(trained, tmp_path):
    run = tmp_path / "old_run"
    run.mkdir()
    for f in ("run.json", "deploy.prototxt", "finetune_iter_4.caffemodel"):
        shutil.copy(trained["run"] / f, run / f)
    with pytest.raises(CardError, match="has no model_card.json.*rerun the same tools/train.py"):
        FaceModel.load(run)
    out = tool("verify.py", photo("Abdullah_Gul", 13), photo("Abdullah_Gul", 14), "--run", run, check=False)
    assert out.returncode == 2 and "has no model_card.json" in out.stderr and "Traceback" not in out.stderr
    # a card without a threshold yet: the decision is refused with what to run
    card = dict(trained["card0"])
    (run / CARD_FILE).write_text(json.dumps(card))
    out = tool("verify.py", photo("Abdullah_Gul", 13), photo("Abdullah_Gul", 14), "--run", run, check=False)
    assert out.returncode == 2 and "no verification threshold yet" in out.stderr and "tools/eval_lfw.py" in out.stderr


def test_evaluating_other_weights_leaves_the_card_alone(trained, tmp_path):
    run, root = trained["run"], trained["root"]
    before = (run / CARD_FILE).read_text()
    tool("extract_features.py", "--deploy", run / "deploy.prototxt", "--weights", run / "pretrain_iter_6.caffemodel",
         "--list", root / "features.txt", "--root", data_path("lfw", "lfw-112x96"), "--mirror", "concat",
         "--out", tmp_path / "pre", "--quiet")
    out = tool("eval_lfw.py", "--features", tmp_path / "pre", "--view1", trained["dtr"], trained["dte"], "--no-view2",
               "--out", tmp_path / "eval")
    assert "is of other weights than these features (pretrain_iter_6.caffemodel): the card is left as it is" in out.stdout
    assert (run / CARD_FILE).read_text() == before


def test_the_readme_python_lines_run(trained, tmp_path):
    """README's Python lines, as written but for the run folder (the demo's, here this module's)
    and the data folder, run in a fresh interpreter from the repository root (no PYTHONPATH:
    as a notebook started there would)."""
    import os
    import re
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Use the trained model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "work/demo/runs/fast_w0.125" in code and "mtdnn.FaceModel.load" in code
    # the photos: LFW's original release where the data folder has it, else its deep-funneled one
    photos = data_path("lfw", "lfw", must_exist=False)
    photos = photos if photos.is_dir() else data_path("lfw", "lfw-deepfunneled")
    assert '"data/lfw/lfw/' in code
    code = code.replace("work/demo/runs/fast_w0.125", str(trained["run"])).replace(
        '"data/lfw/lfw/', f'"{photos}/').replace('"data/', f'"{data_path()}/')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**env, "GLOG_minloglevel": "2"})
    assert out.returncode == 0, out.stderr
    assert re.search(r"Comparison\(score=-?[\d.]+, same=(True|False), threshold=", out.stdout), out.stdout
    assert "'attr6':" in out.stdout


# --------------------------------------------------------------------------- without pycaffe

NO_CAFFE = 'import sys; sys.modules["caffe"] = None  # import caffe fails from here on\n'


def no_caffe_env(tmp_path) -> dict:
    """The environment of a process where ``import caffe`` fails: a ``caffe`` package first on
    PYTHONPATH that raises ImportError (the tools' own processes)."""
    import os
    shim = tmp_path / "shim" / "caffe"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('raise ImportError("pycaffe hidden by the test")\n')
    path = os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "GLOG_minloglevel": "2"}


def tool_without_caffe(env, name, *args):
    return subprocess.run([sys.executable, str(TOOLS / name), *map(str, args)], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def exported_run(trained, tmp_path_factory):
    """A copy of the trained run, exported by tools/export_onnx.py --run (net and MTCNN)."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained["run"], run)
    out = subprocess.run([sys.executable, str(TOOLS / "export_onnx.py"), "--run", str(run), "--check-images", "40"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "model card: recorded in" in out.stdout
    return run


def test_export_is_recorded_in_the_run_card(exported_run):
    card = load_card(exported_run)
    net = card["onnx"]["net"]
    assert net["file"] == "model.onnx" and net["sha256"] == sha256_file(exported_run / "model.onnx")
    assert net["weights_sha256"] == card["weights"]["sha256"] and net["deploy_sha256"] == card["deploy"]["sha256"]
    assert net["outputs"] == ["fc5", "attr_pred"] and net["check"]["inputs"] == 40
    by_sha = card["onnx"]["mtcnn"]
    assert sorted(r["net"] for r in by_sha.values()) == ["det1", "det2", "det3", "det4"]
    for sha, r in by_sha.items():
        assert sha == sha256_file(data_path("mtcnn", f"{r['net']}.caffemodel"))
        assert r["sha256"] == sha256_file(exported_run / r["file"])


def test_the_api_without_pycaffe_gives_caffes_answers(trained, exported_run, tmp_path):
    """In a process where ``import caffe`` fails, FaceModel.load (auto) runs the recorded
    exports in ONNX Runtime: embed, compare and attributes on raw photos (MTCNN included) and on
    aligned crops agree with pycaffe's within the bounds of the tests above."""
    from mtdnn.inference import RTOL, difference
    crops = data_path("lfw", "lfw-112x96")
    pairs = read_pairs(trained["dte"])[:6]
    p1, p2 = photo("Abdullah_Gul", 13), photo("Abdullah_Gul", 14)
    code = NO_CAFFE + f"""
import json, numpy as np, mtdnn
from mtdnn.evaluation.lfw import read_pairs
m = mtdnn.FaceModel.load({str(exported_run)!r})
crops, pairs = {str(crops)!r}, read_pairs({str(trained["dte"])!r})[:6]
out = {{"engine": m.net.engine, "note": m.net.note,
       "mtcnn": [n.engine for n in (m.detector.pnet, m.detector.rnet, m.detector.onet)],
       "embed": m.embed({str(p1)!r}).tolist(), "attributes": m.attributes({str(p1)!r}),
       "compare": [m.compare(crops + "/" + p.image1, crops + "/" + p.image2, aligned=True).score for p in pairs],
       "photos": m.compare({str(p1)!r}, {str(p2)!r}).score,
       "caffe": [k for k, v in sys.modules.items() if k.startswith("caffe") and v is not None]}}
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=no_caffe_env(tmp_path))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["engine"] == "onnxruntime" and "checked against pycaffe at export" in got["note"]
    assert got["mtcnn"] == ["onnxruntime"] * 3 and got["caffe"] == []
    ref = FaceModel.load(exported_run, engine="caffe")
    want = ref.embed(p1)
    assert np.allclose(got["embed"], want, rtol=0, atol=1e-4 * np.abs(want).max())
    for name, score in ref.attributes(p1).items():
        assert got["attributes"][name] == pytest.approx(score, abs=5e-4)
    scores = [ref.compare(crops / p.image1, crops / p.image2, aligned=True).score for p in pairs]
    assert difference(np.array(got["compare"]), np.array(scores)) <= RTOL
    assert got["photos"] == pytest.approx(ref.compare(p1, p2).score, abs=1e-4)


def test_the_tools_without_pycaffe(trained, exported_run, model, tmp_path):
    """tools/verify.py, attributes.py and embed.py --engine onnxruntime where pycaffe cannot be
    imported: the answers of the pycaffe-run model of the same weights."""
    env = no_caffe_env(tmp_path)
    lfw = data_path("lfw", "lfw-deepfunneled")
    pairs = read_pairs(trained["dte"])
    chosen = [p for p in pairs if p.same][:2] + [p for p in pairs if not p.same][:2]
    for p in chosen:
        out = tool_without_caffe(env, "verify.py", lfw / p.image1, lfw / p.image2, "--run", exported_run,
                                 "--engine", "onnxruntime")
        c = model.compare(lfw / p.image1, lfw / p.image2)
        assert out.returncode == (0 if c.same else 3), out.stdout + out.stderr
        score = re.search(r"^score (\S+) ", out.stdout, re.M).group(1)
        assert float(score) == pytest.approx(c.score, abs=2e-4), out.stdout
    p1, p2 = photo("Abdullah_Gul", 13), photo("Abdullah_Gul", 14)
    out = tool_without_caffe(env, "attributes.py", p1, "--run", exported_run, "--engine", "onnxruntime")
    assert out.returncode == 0, out.stderr
    api = model.attributes(p1)
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.split()[:1] and ln.split()[0] in api]
    assert len(rows) == 7 and all(float(s) == pytest.approx(api[n], abs=5e-4) for n, s, *_ in rows)
    out = tool_without_caffe(env, "embed.py", p1, p2, "--run", exported_run, "--engine", "onnxruntime",
                             "--out", tmp_path / "mine")
    assert out.returncode == 0, out.stdout + out.stderr
    feats = np.load(tmp_path / "mine.npy")
    assert np.allclose(feats, [model.embed(p1), model.embed(p2)], rtol=0, atol=1e-4 * np.abs(feats).max())


def test_without_pycaffe_a_stale_or_missing_export_is_refused(trained, exported_run, tmp_path):
    """No export recorded (the trained run itself): the message names the command to run. A
    retrained run (other weights, the card rewritten as tools/train.py does): the export is
    stale and refused, with the command that rewrites it."""
    from mtdnn.card import write_card
    env = no_caffe_env(tmp_path)
    p1 = photo("Abdullah_Gul", 13)
    out = tool_without_caffe(env, "embed.py", p1, "--run", trained["run"], "--out", tmp_path / "x")
    assert out.returncode == 2 and "pycaffe cannot be imported" in out.stderr, out.stderr
    assert f"run `tools/export_onnx.py --run {trained['run']}`" in out.stderr and "Traceback" not in out.stderr
    stale = tmp_path / "stale"
    shutil.copytree(exported_run, stale)
    shutil.copy(stale / "pretrain_iter_6.caffemodel", stale / "finetune_iter_4.caffemodel")  # "retrained"
    state = json.loads((stale / "run.json").read_text())
    write_card(stale, state, load_card(exported_run)["attributes"]["names"])
    for engine in ("onnxruntime", "auto"):
        out = tool_without_caffe(env, "embed.py", p1, "--run", stale, "--engine", engine, "--out", tmp_path / "y")
        assert out.returncode == 2, out.stdout + out.stderr
        assert "the weights" in out.stderr and "changed after the export" in out.stderr
        assert f"rerun `tools/export_onnx.py --run {stale}`" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "y.npy").exists()


def test_overview_draws_the_models_answers(trained, model, tmp_path):
    """tools/overview.py (the README's picture): the scores it prints are FaceModel.compare's
    for the same person and for someone else, the attribute scores are the model's, and the PNG
    is written; a photo without a face is bad input (exit 2) and writes nothing."""
    a, b, c = photo("Abdullah_Gul", 13), photo("Abdullah_Gul", 14), photo("Amanda_Bynes", 1)
    out = tool("overview.py", "--run", trained["run"], "--photo", a, "--same", b, "--other", c,
               "--out", tmp_path / "o.png")
    assert (tmp_path / "o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for label, other in (("same person", b), ("someone else", c)):
        cmp = model.compare(a, other)
        assert f"{label}: {other}: score {cmp.score:.4f} -> {cmp.answer}" in out.stdout
    shown = out.stdout.split("attributes: ", 1)[1].strip().split(", ")
    assert shown == [f"{k} {v:+.2f}" for k, v in model.attributes(a).items()] and len(shown) == 7
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    bad = tool("overview.py", "--run", trained["run"], "--photo", blank, "--same", b, "--other", c,
               "--out", tmp_path / "no.png", check=False)
    assert bad.returncode == 2 and "no face" in bad.stderr and not (tmp_path / "no.png").exists()
