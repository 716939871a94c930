"""tools/build_db.py + tools/check_db.py + mtdnn.manifest on real aligned LFW faces: splits,
order, attributes, Caffe's Data and HDF5Data layers reading in step, tampering caught, bad input."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from mtdnn import db, manifest
from mtdnn.datasets import read_image_list
from mtdnn.paths import data_path

TOOLS = Path(__file__).resolve().parent.parent / "tools"
REF = data_path("lfw", "lfw-112x96")


def run(tool, *args):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, str(TOOLS / tool), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small aligned tree: 8 people with 1..many images from the reference alignment."""
    root = tmp_path_factory.mktemp("tree")
    listed = read_image_list(data_path("lfw", "lfw-112x96_list.txt"))
    people = {}
    for s in listed:
        people.setdefault(s.path.split("/")[0], []).append(s.path)
    chosen = ["Aaron_Peirsol", "Abdullah", "Abdullah_Gul", "Adrien_Brody", "Aaron_Eckhart",
              "Aaron_Guiel", "Abdoulaye_Wade", "Abdel_Nasser_Assidi"]
    for name in chosen:
        for rel in people[name][:6]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REF / rel, root / rel)
    return root


def counts(tree):
    return {p.name: len(list(p.iterdir())) for p in tree.iterdir()}


def test_build_and_check(tree, tmp_path):
    n = sum(counts(tree).values())
    attrs = np.where(np.random.default_rng(0).random((n, 3)) > 0.5, 1, -1).astype(np.float32)
    np.save(tmp_path / "attrs.npy", attrs)
    out = tmp_path / "db"
    r = run("build_db.py", out, "--images", tree, "--attributes", tmp_path / "attrs.npy",
            "--attribute-names", "a,b,c", "--seed", "3")
    assert r.returncode == 0, r.stderr
    train = json.loads((out / "train_manifest.json").read_text())
    val = json.loads((out / "val_manifest.json").read_text())
    multi = [k for k, v in counts(tree).items() if v >= 2]
    assert val["count"] == len(multi) and train["count"] == n - len(multi)
    assert sorted(train["identities"]) == train["identities"] and train["num_identities"] == 8
    assert {train["identities"][l] for l in val["labels"]} == set(multi)  # one per identity with >= 2
    assert not set(train["paths"]) & set(val["paths"])
    assert train["paths"] != sorted(train["paths"])  # shuffled
    # The HDF5 rows are the attribute rows of the same images, in record order.
    order = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.jpg"))
    h = db.read_attribute_hdf5(out / "train_attributes.h5")
    assert np.array_equal(h, attrs[[order.index(p) for p in train["paths"]]])
    # the HDF5Data list names the .h5 relative to the database, so the folder is self-contained
    assert (out / "train_attributes.h5.txt").read_text() == "train_attributes.h5\n"
    # Labels and pixels in the LMDB: the image at record k is the file train["paths"][k].
    for k, (image, label) in enumerate(db.read_image_lmdb(out / "train_lmdb")):
        assert label == train["labels"][k] == train["identities"].index(train["paths"][k].split("/")[0])
        if k < 3:
            assert np.array_equal(image, cv2.imread(str(tree / train["paths"][k])))
    r = run("check_db.py", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("OK") == 2

    # Other inputs: the existing output is kept without --force, and the refusal says what differs.
    r = run("build_db.py", out, "--images", tree)
    assert r.returncode == 2 and "--force" in r.stderr and "attributes 'matrix sha256" in r.stderr
    assert (out / "train_attributes.h5").is_file()
    r = run("build_db.py", tmp_path / "db2", "--images", tree, "--attributes", tmp_path / "attrs.npy",
            "--attribute-names", "a,b,c", "--seed", "3")
    assert json.loads((tmp_path / "db2" / "train_manifest.json").read_text())["order_sha256"] == train["order_sha256"]


def test_caffe_layers_read_in_step(tree, tmp_path, monkeypatch):
    """Caffe's Data (LMDB) and HDF5Data layers deliver the same images' labels batch by batch
    (the list file's relative name is opened from Caffe's working directory: the database)."""
    import caffe
    out = tmp_path / "db"
    n = sum(counts(tree).values())
    np.save(tmp_path / "a.npy", np.ones((n, 2), np.float32))
    assert run("build_db.py", out, "--images", tree, "--attributes", tmp_path / "a.npy",
               "--encoding", "png").returncode == 0
    m = json.loads((out / "train_manifest.json").read_text())
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(f"""
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{out / 'train_lmdb'}" backend: LMDB batch_size: 5 }} }}
layer {{ name: "attr" type: "HDF5Data" top: "attributes" top: "labels"
  hdf5_data_param {{ source: "{out / 'train_attributes.h5.txt'}" batch_size: 5 }} }}
""")
    monkeypatch.chdir(out)
    net = caffe.Net(str(net_file), caffe.TEST)
    for b in range(3 * m["count"] // 5):  # several passes, wrapping around
        net.forward()
        want = [m["labels"][(b * 5 + k) % m["count"]] for k in range(5)]
        assert net.blobs["label"].data.tolist() == want
        assert net.blobs["labels"].data.ravel().tolist() == want
    assert net.blobs["data"].data.shape == (5, 3, 112, 96)


def test_check_db_names_the_first_bad_record(tree, tmp_path):
    out = tmp_path / "db"
    assert run("build_db.py", out, "--images", tree, "--val-per-identity", "0").returncode == 0
    assert not (out / "val_manifest.json").exists()
    m = json.loads((out / "train_manifest.json").read_text())
    # Rewrite record 4 with a different label.
    env = lmdb.open(str(out / "train_lmdb"), map_size=1 << 30)
    with env.begin(write=True) as txn:
        key = f"{4:08d}_{m['paths'][4]}".encode()
        image, label = db.datum_to_image(txn.get(key))
        txn.put(key, db.image_to_datum(image, (label + 1) % 8))
    env.close()
    r = run("check_db.py", out / "train_manifest.json")
    assert r.returncode == 1  # a check that finds a bad record fails (1); bad input is 2
    assert f"record 4 ('{m['paths'][4]}'): label" in r.stderr
    # A database whose records are in another order: the first differing record is named.
    other = tmp_path / "db_other"
    assert run("build_db.py", other, "--images", tree, "--val-per-identity", "0", "--seed", "9").returncode == 0
    with pytest.raises(manifest.ManifestError, match=r"record 0 .*the LMDB holds"):
        manifest.verify(out / "train_manifest.json", lmdb_path=other / "train_lmdb")
    # An edited manifest is caught by its own checksum.
    m["labels"][0] = (m["labels"][0] + 1) % 8
    (tmp_path / "edited.json").write_text(json.dumps(m))
    with pytest.raises(manifest.ManifestError, match="order_sha256"):
        manifest.verify(tmp_path / "edited.json", lmdb_path=out / "train_lmdb")


def test_list_input_min_images_and_celeba_attributes(tmp_path):
    celeba = data_path("celeba")
    ids = (celeba / "identity_CelebA.txt").read_text().split("\n")[:400]
    listing = tmp_path / "celeba_list.txt"
    listing.write_text("".join(f"{l.split()[0]} {l.split()[1]}\n" for l in ids if l))
    out = tmp_path / "db"
    r = run("build_db.py", out, "--list", listing, "--root", celeba / "img_align_celeba_89x109",
            "--celeba-attributes", celeba / "list_attr_celeba.txt", "--min-images", "2", "--encoding", "jpg")
    assert r.returncode == 0, r.stderr
    t = json.loads((out / "train_manifest.json").read_text())
    v = json.loads((out / "val_manifest.json").read_text())
    assert t["attribute_names"] == ["Narrow_Eyes", "Big_Nose", "Pointy_Nose", "Chubby", "Double_Chin",
                                    "High_Cheekbones", "Male"]
    assert t["image_shape"] == [109, 89, 3] and t["encoding"] == "jpg"
    per_id = {}
    for l in t["labels"] + v["labels"]:
        per_id[l] = per_id.get(l, 0) + 1
    assert min(per_id.values()) >= 2 and len(per_id) == t["num_identities"] == v["count"]
    assert int(t["identities"][0]) < int(t["identities"][-1])  # numeric identity order
    assert run("check_db.py", out).returncode == 0


def test_bad_input_is_named_and_nothing_is_lost(tree, tmp_path):
    out = tmp_path / "db"
    assert run("build_db.py", out, "--images", tree).returncode == 0
    before = (out / "train_manifest.json").read_text()
    n = sum(counts(tree).values())

    (tmp_path / "bad.txt").write_text("1 -1\n" * (n - 1) + "1 2\n")
    r = run("build_db.py", out, "--images", tree, "--attributes", tmp_path / "bad.txt", "--force")
    assert r.returncode == 2 and f"bad.txt, line {n}: attribute value '2'" in r.stderr
    (tmp_path / "cols.txt").write_text("1 -1\n" * (n - 1) + "1\n")
    r = run("build_db.py", out, "--images", tree, "--attributes", tmp_path / "cols.txt", "--force")
    assert r.returncode == 2 and f"cols.txt, line {n}: expected 2 attribute values, got 1" in r.stderr
    np.save(tmp_path / "short.npy", np.ones((3, 2)))
    r = run("build_db.py", out, "--images", tree, "--attributes", tmp_path / "short.npy", "--force")
    assert r.returncode == 2 and f"3 attribute rows for {n} images" in r.stderr

    # A bad image is a problem of that image: it is named and left out, the run goes on, and the
    # last line and the exit status say so (0 with --allow-failures).
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    victim = sorted(broken.rglob("*.jpg"))[5]
    victim.write_bytes(victim.read_bytes()[:300])
    odd = sorted(broken.rglob("*.jpg"))[7]
    cv2.imwrite(str(odd), np.zeros((50, 50, 3), np.uint8))
    partial = tmp_path / "db_partial_input"
    r = run("build_db.py", partial, "--images", broken)
    assert r.returncode == 1 and "truncated" in r.stderr and "wrong size" in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("incomplete: 2 image(s) left out")
    left_out = (partial / "failures.txt").read_text().splitlines()
    rel = {p.relative_to(broken).as_posix() for p in (victim, odd)}
    assert {line.split("\t")[0] for line in left_out} == rel
    kept = [p for s in ("train", "val") for p in json.loads((partial / f"{s}_manifest.json").read_text())["paths"]]
    assert len(kept) == n - 2 and not rel & set(kept)
    assert run("check_db.py", partial).returncode == 0
    r = run("build_db.py", partial, "--images", broken, "--allow-failures")  # rerun: up to date, still incomplete
    assert r.returncode == 0 and "up to date" in r.stderr and "incomplete: 2 image(s)" in r.stderr

    listing = tmp_path / "l.txt"
    listing.write_text("Aaron_Peirsol/Aaron_Peirsol_0001.jpg 0\nNobody/Nobody_0001.jpg 1\n")
    r = run("build_db.py", out, "--list", listing, "--root", tree, "--force")
    assert r.returncode == 2 and "Nobody_0001.jpg" in r.stderr and "missing" in r.stderr
    listing.write_text("Aaron_Peirsol/Aaron_Peirsol_0001.jpg 0\nAaron_Peirsol/Aaron_Peirsol_0001.jpg 0\n")
    r = run("build_db.py", out, "--list", listing, "--root", tree, "--force")
    assert r.returncode == 2 and "duplicate path" in r.stderr
    r = run("build_db.py", out, "--images", tmp_path / "empty_dir", "--force")
    assert r.returncode == 2 and "not a folder" in r.stderr

    # After all these failures the first database is intact and still checks.
    assert (out / "train_manifest.json").read_text() == before
    assert not (tmp_path / "db.partial").exists()
    assert run("check_db.py", out).returncode == 0


def test_split_planning_is_pure_and_seeded():
    labels = np.array([0, 0, 0, 1, 2, 2])
    a = manifest.holdout(labels, 1, seed=5)
    assert a.tolist() == manifest.holdout(labels, 1, seed=5).tolist()
    assert a.sum() == 2 and not a[3]  # identity 1 has one image: stays in training
    assert manifest.holdout(labels, 0).sum() == 0
    assert manifest.drop_small_identities(["x", "x", "y"], 2).tolist() == [True, True, False]
    assert sorted(manifest.shuffled(np.arange(10), 1)) == list(range(10))
    assert run("build_db.py", "--help").returncode == 0 and run("check_db.py", "--help").returncode == 0


def test_vote_scores_and_placeholder(tree, tmp_path):
    paths = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.jpg"))
    scores = np.random.default_rng(1).normal(size=(len(paths), 2)).astype(np.float32)
    np.save(tmp_path / "scores.npy", scores)
    r = run("build_db.py", tmp_path / "raw", "--images", tree, "--attributes", tmp_path / "scores.npy")
    assert r.returncode == 2 and "is not -1, 0 or 1" in r.stderr  # scores need --vote
    out = tmp_path / "voted"
    r = run("build_db.py", out, "--images", tree, "--attributes", tmp_path / "scores.npy", "--vote")
    assert r.returncode == 0, r.stderr
    assert "majority vote changed" in r.stderr
    t = json.loads((out / "train_manifest.json").read_text())
    attrs = db.read_attribute_hdf5(out / "train_attributes.h5")
    for label in set(t["labels"]):
        rows = attrs[[k for k, l in enumerate(t["labels"]) if l == label]]
        assert set(np.unique(rows)) <= {-1, 1} and (rows == rows[0]).all()  # one label per identity
    assert t["build"]["majority_vote"]["changed_total"] > 0
    out = tmp_path / "placeholder"
    r = run("build_db.py", out, "--images", tree, "--placeholder-attributes", "7")
    assert r.returncode == 0, r.stderr
    assert db.read_attribute_hdf5(out / "val_attributes.h5").shape[1] == 7
    assert run("check_db.py", out).returncode == 0


def _fail(r, text, status=1):
    """check_db's failed checks, a machine fault or a busy folder exit 1; bad input or usage 2."""
    assert r.returncode == status and text in r.stderr, r.stdout + r.stderr


def test_copied_or_moved_database_is_self_contained(tree, tmp_path):
    """A copy reads its own attribute rows, a moved one stays usable; a list file naming another
    database's .h5 (what the absolute path did in a copy) or nothing is caught by check_db."""
    out = tmp_path / "db"
    assert run("build_db.py", out, "--images", tree, "--placeholder-attributes", "2").returncode == 0
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    moved = tmp_path / "moved"
    os.rename(out, moved)
    for folder in (copy, moved):
        r = run("check_db.py", folder)
        assert r.returncode == 0 and r.stdout.count("OK") == 2, r.stderr
        assert db.read_source(folder / "train_attributes.h5.txt") == [folder / "train_attributes.h5"]
    # the copy's list naming the original's file (the old absolute path), a missing target, no list
    (copy / "train_attributes.h5.txt").write_text(f"{moved / 'train_attributes.h5'}\n")
    _fail(run("check_db.py", copy), "not this database's train_attributes.h5")
    (copy / "train_attributes.h5.txt").write_text(f"{out / 'train_attributes.h5'}\n")
    _fail(run("check_db.py", copy), "which does not exist (a moved database?)")
    (copy / "train_attributes.h5.txt").unlink()  # a kill before the list file was written
    _fail(run("check_db.py", copy), "HDF5Data list file not found")


def test_two_builds_on_one_folder_are_refused(tree, tmp_path):
    from mtdnn.fileio import exclusive_lock
    out = tmp_path / "db"
    assert run("build_db.py", out, "--images", tree).returncode == 0
    with exclusive_lock(manifest.build_lock(out)):  # what a running build_db holds
        r = run("build_db.py", out, "--images", tree, "--seed", "4", "--force")
        _fail(r, f"is being written by another run (pid {os.getpid()}")
        _fail(run("check_db.py", out), f"another run is writing it now (pid {os.getpid()}")
    assert json.loads((out / "train_manifest.json").read_text())["build"]["seed"] == 0
    assert run("check_db.py", out).returncode == 0


def test_check_db_checks_everything_caffe_reads(tree, tmp_path):
    out = tmp_path / "db"
    assert run("build_db.py", out, "--images", tree, "--placeholder-attributes", "2").returncode == 0
    m = json.loads((out / "train_manifest.json").read_text())

    # an HDF5 'paths' dataset shorter than the records (the old check compared pairwise)
    bad = tmp_path / "short"
    shutil.copytree(out, bad)
    import h5py
    with h5py.File(bad / "train_attributes.h5", "a") as f:
        paths = f["paths"][:-1]
        del f["paths"]
        f.create_dataset("paths", data=paths)
    _fail(run("check_db.py", bad), f"dataset 'paths' holds {m['count'] - 1} rows, the LMDB {m['count']} records")

    # a record whose image has another shape than the manifest's
    bad = tmp_path / "shape"
    shutil.copytree(out, bad)
    env = lmdb.open(str(bad / "train_lmdb"), map_size=1 << 30)
    with env.begin(write=True) as txn:
        key = f"{2:08d}_{m['paths'][2]}".encode()
        _, label = db.datum_to_image(txn.get(key))
        txn.put(key, db.image_to_datum(np.zeros((100, 96, 3), np.uint8), label))
    env.close()
    _fail(run("check_db.py", bad), f"record 2 ('{m['paths'][2]}'): image of shape [100, 96, 3], manifest says [112, 96, 3]")

    # a missing val manifest, and a staged folder
    bad = tmp_path / "noval"
    shutil.copytree(out, bad)
    (bad / "val_manifest.json").unlink()
    _fail(run("check_db.py", bad), "no val_manifest.json")
    staged = tmp_path / "db2.partial"
    shutil.copytree(out, staged)
    r = run("check_db.py", staged)
    _fail(r, "working copy of tools/build_db.py")
    assert "OK" not in r.stdout
    assert run("check_db.py", out).returncode == 0


def test_byte_identical_images_stay_in_one_split(tmp_path):
    """Two people whose two images are copies of each other: neither copy is held out
    (before, one went to val and its copy stayed in training), and the copies are reported."""
    root = tmp_path / "tree"
    src = sorted((REF / "Aaron_Peirsol").iterdir())
    for person, files in (("A", [src[0], src[0]]), ("B", src[1:4])):
        (root / person).mkdir(parents=True)
        for k, f in enumerate(files):
            shutil.copyfile(f, root / person / f"{person}_{k}.jpg")
    for seed in range(4):
        out = tmp_path / f"db{seed}"
        r = run("build_db.py", out, "--images", root, "--seed", seed)
        assert r.returncode == 0 and "byte-identical" in r.stderr and "A/A_0.jpg = A/A_1.jpg" in r.stderr, r.stderr
        t = json.loads((out / "train_manifest.json").read_text())
        v = json.loads((out / "val_manifest.json").read_text())
        assert {"A/A_0.jpg", "A/A_1.jpg"} <= set(t["paths"]) and len(v["paths"]) == 1
        assert t["build"]["duplicates"] == [["A/A_0.jpg", "A/A_1.jpg"]]


def test_rerun_with_the_same_inputs_is_up_to_date(tree, tmp_path):
    """The documented preparation block reruns: build_db leaves a database built from the same
    inputs as it is (the labels written into it since included) wherever the images now live;
    other inputs are refused, naming what differs."""
    out = tmp_path / "db"
    args = ["--images", tree, "--placeholder-attributes", "2", "--attribute-names", "x,y"]
    assert run("build_db.py", out, *args).returncode == 0
    # what tools/label_attributes.py does afterwards: labels in the HDF5 file and the manifest
    labels = np.ones((json.loads((out / "train_manifest.json").read_text())["count"], 2), np.float32)
    with __import__("h5py").File(out / "train_attributes.h5", "a") as f:
        f["attributes"][...] = labels
    m = json.loads((out / "train_manifest.json").read_text())
    m["attributes_sha256"] = manifest.attributes_checksum(labels)
    manifest.write_manifest(out / "train_manifest.json", m)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    moved = tmp_path / "tree-moved"
    shutil.copytree(tree, moved)
    for images in (tree, moved):
        r = run("build_db.py", out, *args[:1], images, *args[2:])
        assert r.returncode == 0 and "up to date" in r.stderr, r.stderr
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == files
    # one image's bytes changed: refused without --force, saying so
    victim = sorted(moved.rglob("*.jpg"))[0]
    victim.write_bytes(sorted(moved.rglob("*.jpg"))[1].read_bytes())
    r = run("build_db.py", out, "--images", moved, *args[2:])
    _fail(r, "its inputs differ: images", 2)
    r = run("build_db.py", out, *args, "--seed", "2")
    _fail(r, "seed 0 -> 2", 2)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == files


def test_full_disk_stops_with_a_machine_error(tree, tmp_path):
    """A write that fails for the machine (the file-size limit: EFBIG, as a full disk gives
    ENOSPC) stops the build with exit 1 and a message that says so, not a traceback; the old
    database and no staging folder are left."""
    import resource
    import signal
    out = tmp_path / "db"
    assert run("build_db.py", out, "--images", tree).returncode == 0
    before = (out / "train_manifest.json").read_text()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
    env = dict(os.environ, GLOG_minloglevel="2")
    r = subprocess.run([sys.executable, str(TOOLS / "build_db.py"), str(out), "--images", str(tree), "--seed", "5",
                        "--force"], capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit)
    _fail(r, "a problem of the machine")
    assert "Traceback" not in r.stderr
    assert (out / "train_manifest.json").read_text() == before and not (tmp_path / "db.partial").exists()


def test_the_reference_size_is_the_one_most_images_have(tmp_path):
    """Was: the first image written set the size, so an odd first image left out all the others."""
    from mtdnn import datasets, db_build
    from mtdnn.fileio import sha256_file
    listed = read_image_list(data_path("lfw", "lfw-112x96_list.txt"))
    people = {}
    for s in listed:
        people.setdefault(s.path.split("/")[0], []).append(s.path)
    tree = tmp_path / "tree"
    for name in sorted(people)[:6]:
        for rel in people[name][:3]:
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REF / rel, tree / rel)
    samples = datasets.read_identity_folders(tree)
    options = db_build.BuildOptions(out=tmp_path / "db", images=tree, min_images=1, val_per_identity=1, seed=0)
    train, *_ = db_build.plan(samples, None, options, [sha256_file(tree / s.path) for s in samples])
    first = samples[train[0]].path  # the first record written: make it the odd one
    cv2.imwrite(str(tree / first), cv2.resize(cv2.imread(str(tree / first)), (250, 250)))
    out = tmp_path / "db"
    r = run("build_db.py", out, "--images", tree)
    assert r.returncode == 1 and "incomplete: 1 image(s) left out" in r.stderr, r.stderr
    assert list(records_of(out / "failures.txt")) == [first]
    assert "wrong size (250x250, most of the images are 96x112)" in r.stderr
    assert json.loads((out / "train_manifest.json").read_text())["image_shape"] == [112, 96, 3]


def records_of(path):
    from mtdnn.records import read_failures
    return read_failures(path)
