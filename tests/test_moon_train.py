"""tools/train_attributes.py end to end on 240 real CelebA images: MTCNN alignment, the split by
identity, LMDB + HDF5 in step, `caffe train` lowering MOON's loss, the held-out evaluation, the
rerun that skips what is done, and bad input."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mtdnn import db
from mtdnn.caffe.log import parse_caffe_log
from mtdnn.paths import REPO, data_path

TOOL = REPO / "tools" / "train_attributes.py"
LIMIT, ITERS = 240, 60
# lr 0.002: at batch 16 the Euclidean head on a BN trunk diverges at 0.01 and above
ARGS = ["--limit", str(LIMIT), "--iters", str(ITERS), "--batch", "16", "--lr", "0.002"]


def train(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("moon_train")
    out = train("--out", str(root / "run"), "--aligned", str(root / "aligned"), *ARGS)
    assert out.returncode == 0, out.stderr[-3000:]
    return root, out


def test_training_run(run):
    root, out = run
    r = root / "run"
    meta = json.loads((r / "moon.json").read_text())
    assert meta["attributes"] == ["Narrow_Eyes", "Big_Nose", "Pointy_Nose", "Chubby", "Double_Chin",
                                  "High_Cheekbones", "Male"]
    assert meta["target"] == "balanced" and meta["model"]["backbone"] == "fast"
    n = meta["images"]
    assert n["attribute_file"] == LIMIT and n["aligned"] + n["dropped"] == LIMIT and n["dropped"] < 10
    assert n["train"] + n["test_net"] == n["aligned"] and n["test_net"] == n["evaluation"]
    # MOON weights toward a balanced target: the larger of w+ and w- is 1, w+ p = w- (1 - p)
    p, w_pos, w_neg = (np.array(meta[k]) for k in ("source_rates", "w_pos", "w_neg"))
    np.testing.assert_allclose(np.maximum(w_pos, w_neg), 1)
    np.testing.assert_allclose(w_pos * p, w_neg * (1 - p))
    # the HDF5 rows are the LMDB's records, and the held-out identities are not trained on
    ids = {}
    for split in ("train", "val"):
        keys = [k for k, _, _ in db.read_lmdb_index(r / "data" / f"{split}_lmdb")]
        with h5py.File(r / "data" / f"{split}_moon.h5") as f:
            paths = [p.decode() for p in f["paths"][...]]
            ids[split] = {i.decode() for i in f["identities"][...]}
            assert f["attr_target"].shape == f["attr_weight"].shape == (len(paths), 7)
            w = f["attr_weight"][...] ** 2
            y = f["attr_target"][...]
            np.testing.assert_allclose(w, np.where(y > 0, w_pos, w_neg), rtol=1e-6)
        assert [k.split("_", 1)[1] for k in keys] == paths
    assert not ids["train"] & ids["val"]
    # caffe trained: the weighted loss went down, a model and its curves are there
    log = parse_caffe_log((r / "train.log").read_text())
    _, loss = log.column("attr_loss")
    assert len(loss) == ITERS and np.mean(loss[-10:]) < 0.8 * np.mean(loss[:10])
    assert (r / "moon.caffemodel").is_file() and (r / "train.png").is_file()
    # the held-out evaluation
    res = json.loads((r / "eval" / "attributes.json").read_text())
    assert [a["name"] for a in res["attributes"]] == meta["attributes"]
    assert res["images"] == n["evaluation"] and "by identity" in res["split"]
    for a in res["attributes"]:
        assert 0 <= a["accuracy"] <= 1 and a["majority_baseline"] >= 0.5
    vote = res["after_vote"]["attributes"]
    assert [a["name"] for a in vote] == meta["attributes"] and all(0.5 <= a["ceiling_accuracy"] <= 1 for a in vote)
    assert "after the per-identity vote" in out.stdout
    assert "majority" in out.stdout.lower() or "major." in out.stdout


def test_rerun_skips_what_is_done(run):
    root, _ = run
    out = train("--out", str(root / "run"), "--aligned", str(root / "aligned"), *ARGS)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "reusing" in out.stderr and "skipped" in out.stderr
    assert f"{LIMIT} images: {LIMIT} already done or failed" in out.stderr


def test_bad_input(run, tmp_path):
    root, _ = run
    base = ["--out", str(tmp_path / "r"), "--aligned", str(root / "aligned"), "--limit", str(LIMIT)]
    out = train(*base, "--attributes", "Male,Big_Noze")
    assert out.returncode == 2 and "Big_Noze" in out.stderr and "Traceback" not in out.stderr
    out = train(*base, "--split", "official")
    assert out.returncode == 2 and "partitions 0, 1 and 2" in out.stderr
    (tmp_path / "few").mkdir()  # an image folder that lacks images of the attribute file
    out = train(*base, "--images", str(tmp_path / "few"))
    assert out.returncode == 2 and f"{LIMIT} image(s) of list_attr_celeba.txt missing" in out.stderr
    # an attribute file whose header lacks a requested name
    celeba = tmp_path / "celeba"
    celeba.mkdir()
    src = data_path("celeba")
    lines = (src / "list_attr_celeba.txt").read_text().splitlines()
    (celeba / "list_attr_celeba.txt").write_text("\n".join(lines).replace("Narrow_Eyes", "Narrow_Eyez") + "\n")
    (celeba / "identity_CelebA.txt").write_text((src / "identity_CelebA.txt").read_text())
    out = train(*base, "--celeba", str(celeba), "--images", str(src / "img_align_celeba_89x109"))
    assert out.returncode == 2 and "Narrow_Eyes not in its header" in out.stderr
    out = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--target" in out.stdout and "balanced" in out.stdout


def test_out_with_a_space_is_refused_up_front(tmp_path):
    """Caffe reads the HDF5Data list files (written into OUT/data) word by word: an OUT with a
    space would be cut after aligning and building everything. Refused before any work."""
    out = tmp_path / "moon run"
    r = subprocess.run([sys.executable, str(TOOL), "--out", str(out), "--limit", "10"], capture_output=True, text=True)
    assert r.returncode == 2 and "holds white space" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_align_takes_the_records_of_odd_names_in_process(tmp_path):
    """Was: MOON ran tools/align_faces.py as a subprocess and re-parsed its landmarks.txt. Now
    it takes align_images' records: a name with a tab, a backslash or a byte that is not UTF-8
    (escaped in the record files) comes back as the file's own name."""
    import os
    import shutil

    from mtdnn import moon_train
    from mtdnn.records import read_lines, unescape_field
    faces = sorted(data_path("lfw", "lfw-deepfunneled", "Aaron_Peirsol").glob("*.jpg"))[:3]
    names = ["a\tb.jpg", "back\\slash.jpg", os.fsdecode(b"caf\xe9.jpg")]
    images = tmp_path / "images"
    images.mkdir()
    for face, name in zip(faces, names):
        shutil.copyfile(face, images / name)
    ok, failed = moon_train.align(names, images, tmp_path / "aligned", workers=1)
    assert ok == names and failed == {}
    recorded = [unescape_field(line.rsplit(None, 10)[0])
                for _, line in read_lines(tmp_path / "aligned" / "landmarks.txt", comments=True)]
    assert sorted(recorded) == sorted(names) and all((tmp_path / "aligned" / n).is_file() for n in names)
