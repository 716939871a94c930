"""CASIA-WebFace cleaning lists (mtdnn/clean_list.py, tools/prepare_casia.py) on a small tree in
CASIA-WebFace's layout and lists in the formats in use: the cleaned list ('0000045\\001.jpg 0',
Windows separators, CRLF line ends) and SphereFace-style 'path label' + 10 landmark numbers."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mtdnn import clean_list, datasets, fetch
from mtdnn.paths import REPO

TOOL = REPO / "tools" / "prepare_casia.py"


def jpeg(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", np.full((20, 16, 3), value, np.uint8))
    path.write_bytes(data.tobytes())


@pytest.fixture
def casia(tmp_path):
    """3 identities, 7 images, like CASIA-WebFace/0000045/001.jpg."""
    root = tmp_path / "CASIA-WebFace"
    for ident, n in (("0000045", 3), ("0000099", 2), ("0000100", 2)):
        for k in range(1, n + 1):
            jpeg(root / ident / f"{k:03d}.jpg", 40 * k)
    return root


def write_list(path, lines, newline="\r\n"):
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


def test_the_cleaned_list_format_is_read_with_windows_separators(tmp_path):
    listed = clean_list.read_clean_list(write_list(tmp_path / "cleaned_list.txt", [
        "0000045\\001.jpg 0", "0000045\\003.jpg 0", "0000099\\002.jpg 1", "./0000100/001.jpg 2"]))
    assert [s.path for s in listed] == ["0000045/001.jpg", "0000045/003.jpg", "0000099/002.jpg", "0000100/001.jpg"]
    assert [s.identity for s in listed] == ["0000045", "0000045", "0000099", "0000100"]
    # SphereFace-style landmark list and a bare path list
    sphere = clean_list.read_clean_list(write_list(tmp_path / "casia_landmark.txt", [
        "0000045/001.jpg 0 98.1 110.2 140.3 108.9 120.0 140.5 100.2 160.1 138.7 159.4"], "\n"))
    assert sphere == [datasets.Sample("0000045/001.jpg", "0000045")]
    assert len(clean_list.read_clean_list(write_list(tmp_path / "paths.txt", ["0000045/002.jpg"]))) == 1


@pytest.mark.parametrize("lines, message", [
    (["0000045\\001.jpg 0", "0000045\\002.jpg 7"], "line 2: folder '0000045' has label 7 here but 0 on line 1"),
    (["0000045\\001.jpg 0", "0000045\\001.jpg 0"], "line 2: duplicate path '0000045/001.jpg'"),
    (["001.jpg 0"], "line 1: '001.jpg' is not inside an identity folder"),
    (["0000045\\001.jpg 0 1 2"], "line 1: expected 'path', 'path label'"),
    (["0000045\\001.jpg zero"], "line 1: non-numeric label"),
    (["# only a comment"], "the list is empty"),
])
def test_a_malformed_list_is_refused_naming_the_line(tmp_path, lines, message):
    with pytest.raises(datasets.DatasetError, match=message.replace("(", r"\(")):
        clean_list.read_clean_list(write_list(tmp_path / "l.txt", lines))


def test_each_step_is_counted(casia):
    raw = datasets.read_identity_folders(casia)
    listed = [datasets.Sample(p, p.split("/")[0]) for p in
              ("0000045/001.jpg", "0000045/003.jpg", "0000099/002.jpg", "0000200/001.jpg")]
    cleaning = clean_list.apply_clean_list(raw, listed)
    assert [s.path for s in cleaning.kept] == ["0000045/001.jpg", "0000045/003.jpg", "0000099/002.jpg"]
    assert [s.path for s in cleaning.absent] == ["0000200/001.jpg"]
    assert len(cleaning.dropped) == 4
    aligned = [datasets.Sample("0000045/001.png", "0000045"), datasets.Sample("0000100/001.png", "0000100")]
    rows = clean_list.step_counts(raw, cleaning, aligned)
    assert [(r["images"], r["identities"]) for r in rows] == [(7, 3), (3, 2), (1, 1)]
    assert "494,414" in rows[0]["paper"] and "0.44M" in rows[2]["paper"]
    assert "kept by the cleaning list" in clean_list.format_steps(rows)


def test_the_casia_reader_takes_a_cleaning_list(casia, tmp_path):
    lst = write_list(tmp_path / "cleaned_list.txt", ["0000099\\002.jpg 1", "0000045\\003.jpg 0"])
    assert [s.path for s in datasets.read_casia_webface(casia, lst)] == ["0000045/003.jpg", "0000099/002.jpg"]
    assert len(datasets.read_casia_webface(casia)) == 7
    with pytest.raises(datasets.DatasetError, match="none of its images is in"):
        datasets.read_casia_webface(casia, write_list(tmp_path / "x.txt", ["9/1.jpg 0"]))


def run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


def test_the_tool_writes_the_align_list_and_the_counts(casia, tmp_path):
    lst = write_list(tmp_path / "cleaned_list.txt", ["0000045\\001.jpg 0", "0000045\\003.jpg 0",
                                                     "0000099\\002.jpg 1", "0000300\\001.jpg 5"])
    out = tmp_path / "work" / "casia-clean.txt"
    r = run(casia, "--clean-list", lst, "--out", out)
    assert r.returncode == 0, r.stderr
    assert out.read_text().splitlines() == ["0000045/001.jpg 0000045", "0000045/003.jpg 0000045",
                                            "0000099/002.jpg 0000099"]
    assert "1 listed image(s) are not in" in r.stderr and "0000300/001.jpg" in r.stderr
    report = json.loads((tmp_path / "work" / "casia-clean.txt.counts.json").read_text())
    assert [(s["images"], s["identities"]) for s in report["steps"]] == [(7, 3), (3, 2)]
    assert report["listed_but_absent"] == 1 and report["dropped_by_the_list"] == 4
    assert len(report["clean_list_sha256"]) == 64
    # after alignment (crops written as PNG): the third step
    jpeg(tmp_path / "aligned" / "0000045" / "001.png")
    jpeg(tmp_path / "aligned" / "0000099" / "002.png")
    r = run(casia, "--clean-list", lst, "--out", out, "--aligned", tmp_path / "aligned")
    assert r.returncode == 0, r.stderr
    assert "detected and aligned" in r.stdout
    report = json.loads((tmp_path / "work" / "casia-clean.txt.counts.json").read_text())
    assert (report["steps"][2]["images"], report["steps"][2]["identities"]) == (2, 2)
    # a list of another dataset: refused
    other = write_list(tmp_path / "other.txt", ["m.0107_f\\1.jpg 0"])
    r = run(casia, "--clean-list", other, "--out", out)
    assert r.returncode == 2 and "none of the 1 images" in r.stderr


def test_the_list_is_a_full_scale_item_of_fetch(tmp_path):
    assert "casia-clean-list" not in [i.name for i in fetch.items()]
    [item] = fetch.items(group="full")
    assert item.name == "casia-clean-list"
    [(_, missing, action)] = fetch.plan([item], tmp_path)
    assert action == "manual" and missing == ["casia/cleaned_list.txt (missing)"]
    (tmp_path / "casia").mkdir()
    write_list(tmp_path / "casia" / "cleaned_list.txt", ["0000045\\001.jpg 0"])
    assert fetch.plan([item], tmp_path)[0][2] == "present"
