"""Feature extraction with real pycaffe on real aligned LFW images: against a direct
``net.forward``, mirror modes, resumption, devkit .bin files, bad images, the CLI."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mtdnn import features as F
from mtdnn.evaluation.features_io import bin_path, load_features, read_bin
from mtdnn.paths import REPO, data_path

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 112 dim: 96 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 5 stride: 2
    weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc5" type: "InnerProduct" bottom: "pool1" top: "fc5"
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.05 }
    bias_filler { type: "constant" value: 0.2 } } }
layer { name: "fc5_relu" type: "PReLU" bottom: "fc5" top: "fc5" }
layer { name: "head" type: "InnerProduct" bottom: "fc5" top: "head"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.05 } } }
"""
IMAGES = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
          "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg",
          "Abdullah_Gul/Abdullah_Gul_0001.jpg"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "deploy.prototxt").write_text(DEPLOY)
    net = F.load_net(d / "deploy.prototxt")  # random weights from the fillers
    net.caffe_net().save(str(d / "tiny.caffemodel"))
    return d / "deploy.prototxt", d / "tiny.caffemodel"


@pytest.fixture(scope="module")
def root():
    return data_path("lfw", "lfw-112x96")


def direct_forward(deploy, weights, image):
    """The reference: one image through a fresh net by hand."""
    import caffe
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    x = ((image.astype(np.float32) - 127.5) / 128).transpose(2, 0, 1)[None]
    net.blobs["data"].data[...] = x
    net.forward()
    return net.blobs["fc5"].data[0].copy()


def test_matches_direct_forward_with_mirror_modes(tiny, root):
    net = F.load_net(*tiny)
    imgs = [cv2.imread(str(root / p)) for p in IMAGES[:2]]
    ref = np.array([direct_forward(*tiny, im) for im in imgs])
    ref_flip = np.array([direct_forward(*tiny, im[:, ::-1].copy()) for im in imgs])
    assert not np.allclose(ref, ref_flip)
    kw = dict(root=root, batch_size=2, progress=False)
    np.testing.assert_allclose(F.extract_features(net, IMAGES[:2], **kw), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(F.extract_features(net, IMAGES[:2], mirror="concat", **kw),
                               np.c_[ref, ref_flip], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(F.extract_features(net, IMAGES[:2], mirror="sum", **kw),
                               ref + ref_flip, rtol=1e-4, atol=1e-5)
    unit = F.extract_features(net, IMAGES[:2], mirror="sum", l2norm=True, **kw)
    np.testing.assert_allclose(unit, (ref + ref_flip) / np.linalg.norm(ref + ref_flip, axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no blob 'fc7'"):
        F.extract_features(net, IMAGES[:2], blob="fc7", **kw)


def test_resume_after_interruption(tiny, root, tmp_path):
    net = F.load_net(*tiny)
    out = tmp_path / "feats" / "lfw"
    full = F.extract_features(net, IMAGES, root=root, mirror="concat", progress=False)
    seen = []

    def crash_after_first(done):
        seen.append(done)
        if len(seen) == 1:
            raise KeyboardInterrupt

    kw = dict(root=root, labels=[0, 1, 1, 2, 3], mirror="concat", batch_size=2, progress=False,
              bin_dir=tmp_path / "bin", bin_suffix="_tiny")
    with pytest.raises(KeyboardInterrupt):
        F.extract_to_file(net, IMAGES, out, on_batch=crash_after_first, **kw)
    assert not (tmp_path / "feats" / "lfw.npy").exists()
    assert json.loads((tmp_path / "feats" / "lfw.progress.json").read_text())["done"] == 2
    # other settings must not continue someone else's partial file
    with pytest.raises(ValueError, match="started with other inputs or settings"):
        F.extract_to_file(net, IMAGES, out, **{**kw, "mirror": "sum"})
    meta = F.extract_to_file(net, IMAGES, out, on_batch=seen.append, **kw)
    assert seen == [2, 4, 5] and meta["rows_last_run"] == 3  # continued after row 2
    x, names, labels = load_features(out)
    np.testing.assert_allclose(x, full, rtol=1e-4, atol=1e-5)
    assert names == IMAGES and labels.tolist() == [0, 1, 1, 2, 3] and x.dtype == np.float32
    assert not (tmp_path / "feats" / "lfw.progress.json").exists()
    assert not (tmp_path / "feats" / "lfw.npy.partial").exists()
    for p, row in zip(IMAGES, x):
        np.testing.assert_array_equal(read_bin(bin_path(tmp_path / "bin", p, "_tiny")), row)
    assert F.extract_to_file(net, IMAGES, out, **kw).get("skipped")  # complete: nothing to do
    assert F.extract_to_file(net, IMAGES, out, restart=True, **kw)["rows_last_run"] == 5


def test_bad_images_are_named(tiny, tmp_path):
    net = F.load_net(*tiny)
    cv2.imwrite(str(tmp_path / "small.jpg"), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="small.jpg: wrong size \\(100x100 \\(HxW\\), the net expects aligned 112x96"):
        F.extract_features(net, ["small.jpg"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="nothere.jpg: missing"):
        F.extract_features(net, ["nothere.jpg"], tmp_path, progress=False)
    (tmp_path / "list.txt").write_text("a.jpg 1\nb.jpg\n")
    with pytest.raises(ValueError, match="some lines have a label and some do not"):
        F.read_image_list(tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("a.jpg\nb.jpg\n")
    assert F.read_image_list(tmp_path / "list.txt") == (["a.jpg", "b.jpg"], None)
    (tmp_path / "list.txt").write_text("a.jpg bob\nb.jpg alice\nc.jpg bob\n")
    paths, labels = F.read_image_list(tmp_path / "list.txt")
    assert paths == ["a.jpg", "b.jpg", "c.jpg"] and labels.tolist() == [1, 0, 1]


def test_cli_list_and_tree(tiny, root, tmp_path):
    tool = str(REPO / "tools" / "extract_features.py")
    (tmp_path / "list.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(IMAGES[:3])))
    r = subprocess.run([sys.executable, tool, "--deploy", str(tiny[0]), "--weights", str(tiny[1]),
                        "--list", str(tmp_path / "list.txt"), "--root", str(root), "--mirror", "concat",
                        "--batch-size", "2", "--out", str(tmp_path / "a"), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    x, names, labels = load_features(tmp_path / "a")
    assert x.shape == (3, 16) and names == IMAGES[:3] and labels.tolist() == [0, 1, 2]
    tree = tmp_path / "tree"
    for p in IMAGES[:3]:
        (tree / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / p, tree / p)
    r = subprocess.run([sys.executable, tool, "--deploy", str(tiny[0]), "--weights", str(tiny[1]),
                        "--tree", str(tree), "--out", str(tmp_path / "b"), "--quiet", "--l2norm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    y, ynames, ylabels = load_features(tmp_path / "b")
    assert ynames == sorted(IMAGES[:3]) and ylabels is None
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y[ynames.index(IMAGES[0])], x[0, :8] / np.linalg.norm(x[0, :8]), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- reliability (docs/reliability.md)

TOOL = str(REPO / "tools" / "extract_features.py")


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, timeout=300)


def save_new_weights(deploy, path):
    """Other random weights (the fillers draw anew) saved at ``path``: a 'retrained' model."""
    F.load_net(deploy).caffe_net().save(str(path))


@pytest.fixture
def weights(tiny, tmp_path):
    deploy, w = tiny
    shutil.copy(w, tmp_path / "model.caffemodel")
    return deploy, tmp_path / "model.caffemodel"


def test_retrained_weights_at_the_same_path_are_not_reused(weights, root, tmp_path):
    deploy, w = weights
    (tmp_path / "list.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(IMAGES)))
    cmd = ["--deploy", deploy, "--weights", w, "--list", tmp_path / "list.txt", "--root", root,
           "--out", tmp_path / "f", "--quiet"]
    assert run_tool(*cmd).returncode == 0
    first, _, _ = load_features(tmp_path / "f")
    r = run_tool(*cmd)
    assert r.returncode == 0 and "complete with these settings" in r.stdout
    save_new_weights(deploy, w)  # retrained into the same run folder
    r = run_tool(*cmd)
    assert r.returncode == 0, r.stderr
    assert "complete" not in r.stdout and "5 extracted this run" in r.stdout
    again, _, _ = load_features(tmp_path / "f")
    ref = np.array([direct_forward(deploy, w, cv2.imread(str(root / IMAGES[0])))])
    np.testing.assert_allclose(again[:1], ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(first, again)
    meta = json.loads((tmp_path / "f.meta.json").read_text())
    assert meta["settings"]["weights_sha256"] == F.source_keys(deploy, w)["weights_sha256"]
    assert meta["sources"]["weights"] == str(w.resolve())


def test_resume_after_the_weights_changed_is_refused(weights, root, tmp_path):
    deploy, w = weights
    (tmp_path / "list.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(IMAGES)))
    paths, labels = F.read_image_list(tmp_path / "list.txt")
    info = {**F.source_keys(deploy, w, tmp_path / "list.txt"), "root": str(root.resolve())}

    def stop(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # what the tool leaves when killed after one batch
        F.extract_to_file(F.load_net(deploy, w), paths, tmp_path / "f", root=root, labels=labels,
                          batch_size=2, info=info, progress=False, on_batch=stop)
    save_new_weights(deploy, w)
    cmd = ["--deploy", deploy, "--weights", w, "--list", tmp_path / "list.txt", "--root", root,
           "--out", tmp_path / "f", "--batch-size", 2, "--quiet"]
    r = run_tool(*cmd)
    assert r.returncode == 2 and "changed: weights_sha256" in r.stderr and "--restart" in r.stderr
    assert not (tmp_path / "f.npy").exists()
    r = run_tool(*cmd, "--restart")
    assert r.returncode == 0, r.stderr
    x, _, _ = load_features(tmp_path / "f")
    ref = np.array([direct_forward(deploy, w, cv2.imread(str(root / p))) for p in IMAGES])
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-5)  # every row from the new weights


def test_bad_crops_are_failures_of_those_images(tiny, root, tmp_path):
    tree = tmp_path / "tree"
    for p in IMAGES[:3]:
        (tree / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / p, tree / p)
    data = (root / IMAGES[3]).read_bytes()
    (tree / "cut" / "truncated.jpg").parent.mkdir()
    (tree / "cut" / "truncated.jpg").write_bytes(data[:len(data) // 2])  # libjpeg pads it with grey
    cv2.imwrite(str(tree / "cut" / "big.jpg"), np.zeros((120, 100, 3), np.uint8))
    shutil.copy(root / IMAGES[4], tree / os.fsdecode(b"caf\xe9.jpg"))  # cv2.imread segfaults on it
    (tree / "cut" / "dead.jpg").symlink_to(tree / "gone.jpg")  # a broken link
    cmd = ["--deploy", tiny[0], "--weights", tiny[1], "--tree", tree, "--out", tmp_path / "f", "--quiet"]
    r = run_tool(*cmd)
    assert r.returncode == 1, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("incomplete: 3 of 7 images could not be used") and "exit status 1" in last
    x, names, _ = load_features(tmp_path / "f")  # a name that is not UTF-8 is written escaped, read back exactly
    assert names == sorted(IMAGES[:3]) + [os.fsdecode(b"caf\xe9.jpg")] and x.shape == (4, 8)
    failures = (tmp_path / "f.failures.txt").read_text().splitlines()
    assert failures == ["cut/big.jpg\twrong size (120x100 (HxW), the net expects aligned 112x96 faces)",
                        "cut/dead.jpg\tbroken link",
                        "cut/truncated.jpg\ttruncated (no end-of-image marker)"]
    r = run_tool(*cmd, "--allow-failures")
    assert r.returncode == 0 and "complete with these settings" in r.stdout and "incomplete: 3 of 7" in r.stdout


def test_non_finite_features_stop_the_run(root, tmp_path):
    """The project's own fast net at width 0.25 without --weights gives NaN in every fc5 value."""
    r = subprocess.run([sys.executable, "-m", "generate", "model", "--variant", "fast", "--width", "0.25",
                        "--identities", "100", "--out", str(tmp_path / "net")], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in IMAGES[:2]))
    r = run_tool("--deploy", tmp_path / "net" / "deploy.prototxt", "--list", tmp_path / "list.txt",
                 "--root", root, "--out", tmp_path / "f", "--quiet")
    assert r.returncode == 1
    assert "no --weights" in r.stderr and "gives NaN or infinite values in blob 'fc5'" in r.stderr
    assert not (tmp_path / "f.npy").exists() and not (tmp_path / "f.meta.json").exists()


def test_full_disk_is_an_error_not_a_sigbus(tiny, root, tmp_path):
    """A real full disk: the output on a 1 MiB tmpfs with 3 pages left; conv1 rows need ~50."""
    from faults import fill, small_disk
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in IMAGES))
    with small_disk(tmp_path / "disk", "1m") as disk:
        filler = fill(disk, leave=3 * 4096)
        cmd = ["--deploy", tiny[0], "--weights", tiny[1], "--list", tmp_path / "list.txt", "--root", root,
               "--blob", "conv1", "--batch-size", 2, "--out", disk / "f", "--quiet"]
        r = run_tool(*cmd)
        assert r.returncode == 1, (r.returncode, r.stderr)  # -7 (SIGBUS) before
        assert "No space left on device" in r.stderr and "rerun the same command" in r.stderr
        assert not (disk / "f.npy").exists()
        filler.unlink()
        r = run_tool(*cmd)
        assert r.returncode == 0, r.stderr
        assert load_features(disk / "f")[0].shape == (5, 4 * 54 * 46)


def test_io_error_reading_a_crop_stops_the_run(tiny, root, tmp_path, monkeypatch):
    """Fault injection (an I/O error cannot be made on demand): EIO is not an image failure."""
    import errno
    from pathlib import Path

    net = F.load_net(*tiny)

    def io_error(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", io_error)
    with pytest.raises(OSError, match="Input/output error"):
        F.extract_to_file(net, IMAGES, tmp_path / "f", root=root, progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "f.failures.txt").exists() and not (tmp_path / "f.npy").exists()
    assert json.loads((tmp_path / "f.progress.json").read_text())["failed"] == {}


def test_nothing_usable_says_why(tiny, tmp_path):
    (tmp_path / "README.txt").write_text("crops go here")
    (tmp_path / "dead.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ValueError, match=r"no images found \(1 skipped as not images \(.txt files: 1\), "
                                         r"1 unreadable \(dead.jpg: broken link"):
        F.list_tree(tmp_path)
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.zeros((250, 250, 3), np.uint8))
    with pytest.raises(ValueError, match="none of the 1 images could be used .*photo.jpg: wrong size"):
        F.extract_to_file(F.load_net(*tiny), ["photo.jpg"], tmp_path / "f", root=tmp_path, progress=False)
    assert not (tmp_path / "f.npy").exists()


def test_no_room_for_the_features_is_an_error_before_any_row(tiny, root, tmp_path, monkeypatch):
    """Fault injection for machines without mount rights: the reservation of OUT.npy.partial
    fails with ENOSPC, so the run stops before it writes a row through the memory map."""
    import errno

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    seen = []
    with pytest.raises(OSError, match="No space left on device"):
        F.extract_to_file(F.load_net(*tiny), IMAGES, tmp_path / "f", root=root, progress=False,
                          on_batch=seen.append)
    assert seen == [] and not (tmp_path / "f.npy").exists()


# ---------------------------------------------------------------------------- weights against the net
def test_weights_that_do_not_fit_the_net_are_named_not_an_abort(tiny, root, tmp_path):
    """A truncated .caffemodel, a deploy whose shapes do not fit the weights, a deploy layer the
    weights do not have (Caffe keeps its random fillers without a word) and a deploy that does
    not parse: Caffe aborted (exit 134, a stack) or went on silently. Now each is an error
    naming the file and the layer (exit 2) before Caffe reads the weights."""
    deploy, w = tiny
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in IMAGES))
    data = w.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[:len(data) * 2 // 3])
    wide = tmp_path / "wide.prototxt"
    wide.write_text(deploy.read_text().replace("num_output: 4", "num_output: 6"))
    renamed = tmp_path / "renamed.prototxt"
    renamed.write_text(deploy.read_text().replace('name: "fc5_relu"', 'name: "fc5_prelu"'))
    broken = tmp_path / "broken.prototxt"
    broken.write_text(deploy.read_text().replace("kernel_size: 5", "kernel_size 5 }"))
    cases = [(deploy, cut, f"{cut}: "), (wide, w, f"{w}: layer 'conv1' blob 0 has shape [4, 3, 5, 5], the net "
                                                   f"{wide} expects [6, 3, 5, 5]"),
             (renamed, w, f"{w} has no weights for 1 layer(s) of the net {renamed}, e.g. 'fc5_prelu'"),
             (broken, w, f"{broken}: not a valid Caffe net")]
    for net, weights, said in cases:
        r = run_tool("--deploy", net, "--weights", weights, "--list", tmp_path / "list.txt", "--root", root,
                     "--out", tmp_path / "f", "--quiet")
        assert r.returncode == 2 and said in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr and "Check failed" not in r.stderr
    assert "cut short" in run_tool("--deploy", deploy, "--weights", cut, "--list", tmp_path / "list.txt",
                                   "--root", root, "--out", tmp_path / "f", "--quiet").stderr
    assert not list(tmp_path.glob("f.*"))


def test_a_crop_replaced_at_the_same_path_is_extracted_again(tiny, root, tmp_path):
    """The reuse key covered the list, not the images: a crop aligned again at the same path
    (here: another face's bytes, its modification time set back) left the old features as
    "complete with these settings". The key covers every crop's content."""
    deploy, w = tiny
    crops = tmp_path / "crops"
    for p in IMAGES:
        (crops / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / p, crops / p)
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in IMAGES))
    cmd = ["--deploy", deploy, "--weights", w, "--list", tmp_path / "list.txt", "--root", crops,
           "--out", tmp_path / "f", "--quiet"]
    assert run_tool(*cmd).returncode == 0
    before, _, _ = load_features(tmp_path / "f")
    st = (crops / IMAGES[0]).stat()
    shutil.copy(root / IMAGES[3], crops / IMAGES[0])
    os.utime(crops / IMAGES[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run_tool(*cmd)
    assert r.returncode == 0 and "complete" not in r.stdout and "5 extracted this run" in r.stdout, r.stdout
    after, _, _ = load_features(tmp_path / "f")
    np.testing.assert_allclose(after[0], before[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after[1:], before[1:], rtol=1e-5, atol=1e-6)
    assert "complete with these settings" in run_tool(*cmd).stdout  # unchanged crops: reused


def test_out_folder_is_refused_not_hidden_files(tiny, root, tmp_path):
    """`--out DIR/` wrote DIR/.npy, DIR/.names.txt, ... (hidden files); a folder is refused up
    front, naming a prefix to give instead."""
    deploy, w = tiny
    (tmp_path / "list.txt").write_text("".join(f"{p}\n" for p in IMAGES))
    (tmp_path / "out").mkdir()
    for out in (f"{tmp_path / 'out'}/", tmp_path / "out", f"{tmp_path / 'new'}/"):
        r = run_tool("--deploy", deploy, "--weights", w, "--list", tmp_path / "list.txt", "--root", root,
                     "--out", out, "--quiet")
        assert r.returncode == 2 and "is a folder, not a feature prefix" in r.stderr and "lfw_fc5" in r.stderr
    assert not list((tmp_path / "out").iterdir()) and not (tmp_path / "new").exists()


def test_names_are_on_disk_before_the_meta(tiny, root, tmp_path, monkeypatch):
    """The names file was renamed into place without fsync, before the meta that declares the
    output complete: a power cut could leave a meta beside an empty names file. Every file of
    the output is fsync'ed before the meta is written (recorded at the real os.fsync)."""
    deploy, w = tiny
    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    F.extract_to_file(F.load_net(deploy, w), IMAGES, tmp_path / "f", root=root, labels=list(range(5)),
                      progress=False)
    names = [s for s in synced if "f.names.txt" in s]
    meta = [i for i, s in enumerate(synced) if "f.meta.json" in s]
    assert names and meta and synced.index(names[0]) < meta[0]
