"""tools/align_faces.py under bad input, odd names, a full disk and I/O errors (docs/reliability.md).

Real LFW photos, real MTCNN; a real full disk on a small tmpfs where the container allows the
mount; fault injection (an OSError raised where the write or read happens) for the cases a
test cannot make for real (an I/O error, an unreadable folder when the tests run as root)."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from faults import fill, small_disk
from mtdnn import fileio, images
from mtdnn.paths import REPO, data_path

TOOL = REPO / "tools" / "align_faces.py"
LFW = data_path("lfw", "lfw-deepfunneled")
FACES = [LFW / "Aaron_Peirsol" / f"Aaron_Peirsol_000{k}.jpg" for k in (1, 2, 3)]


def run_align(*args):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def last_line(r):
    return r.stderr.strip().splitlines()[-1]


def records(path):
    return [l for l in path.read_text(encoding="utf-8").splitlines() if l and not l.startswith("#")]


def load_tool():
    from mtdnn import alignment
    return alignment


def face(k=0, grey=False):
    image = cv2.imread(str(FACES[k]))
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if grey else image


def write_encoded(path, image, suffix):
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif" and image.ndim == 2:  # OpenCV's GIF writer takes colour images only
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    ok, data = cv2.imencode(suffix, image)
    assert ok
    path.write_bytes(data.tobytes())


# --------------------------------------------------------------------------- names, formats, the tree

def test_tree_odd_formats_names_and_suffix_clashes(tmp_path):
    src = tmp_path / "src"
    write_encoded(src / "yale" / "subject01.glasses", face(0, grey=True), ".gif")  # Yale: GIF, no image suffix
    write_encoded(src / "yale" / "subject01.happy", face(1, grey=True), ".gif")
    write_encoded(src / "orl" / "s1" / "1.pgm", face(2, grey=True), ".pgm")
    write_encoded(src / "web" / "face.gif", face(0), ".gif")
    write_encoded(src / "x" / "x.jpg", face(0), ".jpg")
    write_encoded(src / "x" / "x.png", face(1), ".png")
    odd = os.fsdecode(b"caf\xe9.jpg")  # a name that is not UTF-8
    (src / odd).write_bytes(FACES[2].read_bytes())
    (src / "new\nline.jpg").write_bytes(b"")  # a name with a line break, and an empty file
    (src / "notes").mkdir()
    (src / "notes" / "README.txt").write_text("not an image")
    (src / ".hidden.jpg").write_bytes(FACES[0].read_bytes())
    (src / "broken.jpg").symlink_to(src / "gone.jpg")
    out = src / "aligned"  # inside the source tree: must not be aligned again on a rerun

    r = run_align(src, out, "--workers", "1")
    assert r.returncode == 1, r.stderr  # an empty image and a broken link
    assert "broken.jpg: broken link" in r.stderr
    assert "crops of .gif, .pgm, suffix-less input are written as PNG" in r.stderr
    crops = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix != ".txt")
    assert crops == sorted([odd, "orl/s1/1.png", "web/face.png", "x/x.jpg", "x/x.png",
                            "yale/subject01.glasses.png", "yale/subject01.happy.png"])
    assert all(images.load_image(out / c).shape == (112, 96, 3) for c in crops)  # cv2.imread segfaults on that name
    # One record per line, names escaped: the empty file's name holds a line break.
    assert records(out / "failures.txt") == ["new\\nline.jpg\tempty file"]
    assert "caf\\xe9.jpg " in (out / "landmarks.txt").read_text(encoding="utf-8")
    assert last_line(r) == ("incomplete: 7 of 8 images aligned, 1 failed (listed in "
                            f"{out / 'failures.txt'}), 1 unreadable (named above), 3 entries skipped "
                            "as not images (.txt files: 1, hidden file: 1, the output folder: 1); "
                            "exit status 1 (--allow-failures accepts failed images)")

    # Rerun: the escaped names read back as the same files, the output folder is not input.
    r = run_align(src, out, "--workers", "1", "--allow-failures")
    assert r.returncode == 0, r.stderr
    assert "8 images: 8 already done or failed, 0 to align" in r.stderr

    # Another --ext: only the crops whose name changes are made; x.jpg keeps its full name
    # instead of overwriting x.png's crop.
    r = run_align(src, out, "--workers", "1", "--ext", "png", "--allow-failures")
    assert r.returncode == 0, r.stderr
    assert "2 to align" in r.stderr and "x/x.jpg -> x/x.jpg.png" in r.stderr
    png = {p.relative_to(out).as_posix(): p for p in out.rglob("*.png")}
    assert {"x/x.png", "x/x.jpg.png", os.fsdecode(b"caf\xe9.png")} <= set(png)
    # x.png's crop is still x.png's face, not x.jpg's.
    assert not np.array_equal(images.load_image(png["x/x.png"]), images.load_image(png["x/x.jpg.png"]))


def test_no_images_says_what_was_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.txt").write_text("hi")
    (src / "data.csv").write_text("a,b")
    (src / "dead.jpg").symlink_to(src / "nowhere.jpg")
    r = run_align(src, tmp_path / "out")
    assert r.returncode != 0
    msg = r.stderr
    assert "no images to align" in msg
    assert "2 skipped as not images (.csv files: 1, .txt files: 1)" in msg
    assert "dead.jpg: broken link" in msg
    assert "Accepted: .jpg, .jpeg, .png" in msg and ".gif" in msg and "content is JPEG" in msg


def test_unreadable_folder_is_reported(tmp_path, monkeypatch):
    """Fault injection: the tests run as root, for whom chmod 000 does not stop reading."""
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.jpg").write_bytes(FACES[0].read_bytes())
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.jpg").write_bytes(FACES[1].read_bytes())
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = images.scan_images(tmp_path)
    assert scan.paths == ["ok/a.jpg"]
    assert scan.problems == [("locked", "unreadable folder (Permission denied)")]
    assert "1 unreadable (locked: unreadable folder (Permission denied))" in scan.summary()


def test_failure_messages_are_one_line_each():
    # An OpenCV error text spans lines; escaped, it is one field of one record, and reads back.
    try:
        cv2.imencode(".pgm", np.zeros((4, 4, 3), np.uint8))
        message = "cv2 returned False"
    except cv2.error as e:
        message = str(e)
    message = message if "\n" in message else message + "\n  second line\n"
    field = fileio.escape_field(message)
    assert "\n" not in field and "\t" not in field
    assert fileio.unescape_field(field) == message
    name = os.fsdecode(b"dir\\x/\xff\tname.jpg")
    assert fileio.unescape_field(fileio.escape_field(name)) == name


# --------------------------------------------------------------------------- the machine

def test_full_disk_stops_and_is_not_an_image_failure(tmp_path):
    """A real full disk: the output folder on a 1 MiB tmpfs, filled to the last page."""
    src = tmp_path / "src"
    for k, f in enumerate(FACES):
        (src / f"p{k}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (src / f"p{k}.jpg").write_bytes(f.read_bytes())
    with small_disk(tmp_path / "disk", "1m") as disk:
        out = disk / "out"
        r = run_align(src, out, "--workers", "1", "--limit", "1")
        assert r.returncode == 0, r.stderr
        filler = fill(disk)
        r = run_align(src, out, "--workers", "1")
        assert r.returncode == 1
        assert "No space left on device" in r.stderr and "stopped at p1.jpg" in r.stderr
        assert "nothing was recorded as its failure" in last_line(r)
        assert not records(out / "failures.txt") if (out / "failures.txt").exists() else True
        assert not list(out.glob(".*.tmp"))  # no half-written crop left behind
        filler.unlink()
        r = run_align(src, out, "--workers", "1")  # the same command, without --retry-failed
        assert r.returncode == 0, r.stderr
        assert "2 to align" in r.stderr
        assert last_line(r).startswith("done: 3 of 3 images aligned")
        assert sorted(p.name for p in out.glob("p*.jpg")) == ["p0.jpg", "p1.jpg", "p2.jpg"]


def test_save_and_read_errors_of_the_machine_stop_the_run(tmp_path, monkeypatch):
    """Fault injection for what a tmpfs cannot make: an I/O error (EIO) reading the photo,
    and ENOSPC where a machine without mount rights cannot fill a disk."""
    tool = load_tool()
    (tmp_path / "a.jpg").write_bytes(FACES[0].read_bytes())
    tool.init_worker(dict(src=str(tmp_path), out=str(tmp_path / "out"), models=None, minsize=20,
                          thresholds=(0.6, 0.7, 0.9), factor=0.85, refine=False, resize="matlab",
                          select="center", max_side=2000, crop="112x96", quality=95))
    assert tool.align_one(("a.jpg", "a.jpg"))[0] == "ok"

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "atomic_write_bytes", disk_full)
    status, rel, info = tool.align_one(("a.jpg", "b.jpg"))
    assert (status, rel) == ("stop", "a.jpg") and "No space left on device" in info
    monkeypatch.undo()

    def io_error(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", io_error)
    status, _, info = tool.align_one(("a.jpg", "c.jpg"))
    assert status == "stop" and "Input/output error" in info


def test_crop_names_never_overwrite_each_other(capsys, tmp_path):
    tool = load_tool()
    names = tool.output_paths(["a/x.jpg", "a/x.png", "yale/subject01.glasses", "yale/subject01.happy", "s1/1.pgm"], "png")
    assert names == {"a/x.jpg": "a/x.jpg.png", "a/x.png": "a/x.png", "yale/subject01.glasses": "yale/subject01.glasses.png",
                     "yale/subject01.happy": "yale/subject01.happy.png", "s1/1.pgm": "s1/1.png"}
    assert "a/x.jpg -> a/x.jpg.png" in capsys.readouterr().err
    assert len(set(tool.output_paths(["x.JPG", "x.jpg", "x.jpeg"], "jpg").values())) == 3
    capsys.readouterr()
    with pytest.raises(tool.AlignInputError) as refused:  # bad input: the tool exits with status 2
        tool.output_paths(["x.jpg", "x.png", "x.jpg.png"], "png")
    assert ("1 crop name(s) would be written by more than one input:\n"
            "  x.jpg.png <- x.jpg, x.jpg.png") in str(refused.value)
    for name in ("x.jpg", "x.png", "x.jpg.png"):  # the command refuses it before loading a net
        (tmp_path / "src" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "src" / name).write_bytes(FACES[0].read_bytes())
    r = run_align(tmp_path / "src", tmp_path / "out", "--ext", "png")
    assert r.returncode == 2 and ("align_faces.py: error: 1 crop name(s) would be written by more than one "
                                  "input:\n  x.jpg.png <- x.jpg, x.jpg.png") in r.stderr, r.stderr


def test_error_records_of_earlier_runs_are_tried_again(tmp_path):
    """failures.txt of the earlier tool held save errors as image failures ("error: ValueError:
    OpenCV cannot encode an image as .pgm"): they are not properties of the image and are
    tried again without --retry-failed; a real image failure stays skipped."""
    src, out = tmp_path / "src", tmp_path / "out"
    write_encoded(src / "s1" / "1.pgm", face(0, grey=True), ".pgm")
    (src / "s1" / "2.pgm").write_bytes(b"")
    out.mkdir()
    (out / "failures.txt").write_text("s1/1.pgm\terror: ValueError: OpenCV cannot encode an image as .pgm\n"
                                      "s1/2.pgm\tempty file\n")
    r = run_align(src, out, "--workers", "1", "--allow-failures")
    assert r.returncode == 0, r.stderr
    assert "2 images: 1 already done or failed, 1 to align" in r.stderr
    assert images.load_image(out / "s1" / "1.png").shape == (112, 96, 3)
    assert records(out / "failures.txt") == ["s1/2.pgm\tempty file"]


def test_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(FACES[0].read_bytes())
    (tmp_path / "out").write_text("not a folder")
    r = run_align(tmp_path / "src", tmp_path / "out")
    assert r.returncode == 2 and "is not a folder" in last_line(r) and "Traceback" not in r.stderr
