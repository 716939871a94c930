"""`make data-demo` end to end into an EMPTY data folder, from a local server standing in for the
internet (issue 20, first "done when"): dead first sources included, the demo's own data check
accepting the result.

This machine holds no copy of the official lfw.tgz (only the deep-funneled release) nor the
official CelebA zip, so the server is a lab's own mirror: it serves real-format archives packed
here from the data folder (the deep-funneled photos as lfw.tgz with its official layout, lfw/NAME/
NAME_%04d.jpg; the first CelebA images as img_align_celeba.zip; the cut CelebA lists), plus the
LFW lists and MTCNN files under their real names and with their official bytes. The repacks bring
their own checksums in a registry file (--registry / $MTDNN_FETCH_REGISTRY); the run must say so
loudly. Every item has three dead sources first: a refused connection, a 404, an HTML page.

By hand, the same into a folder of your choice (then run the demo on it):
    python tests/test_fetch_mirror.py DATA_OUT        # reads $MTDNN_DATA, packs, serves, make data-demo
"""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mtdnn import fetch
from mtdnn.demo import FULL, Demo, celeba_missing
from mtdnn.paths import REPO, data_root

CELEBA_IMAGES = 2000                     # what make data-demo unpacks (--celeba-limit) and the demo reads
LISTS = ("pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt", "peopleDevTrain.txt", "peopleDevTest.txt")
CELEBA_LISTS = {"celeba-attr": "list_attr_celeba.txt", "celeba-identity": "identity_CelebA.txt",
                "celeba-partition": "list_eval_partition.txt"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def pack_mirror(src: Path, out: Path) -> dict:
    """Write the mirror's files into ``out`` (the names the registry downloads); the registry
    file's content, {item: "sha256:..."}, for the files whose bytes are not the official ones."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "lfw.tgz", "w:gz", compresslevel=0) as tf:   # JPEGs: deflate gains nothing
        tf.add(src / "lfw" / "lfw-deepfunneled", arcname="lfw")        # the official layout: lfw/NAME/...
    photos = sorted((src / "celeba" / "img_align_celeba_89x109").iterdir())[:CELEBA_IMAGES]
    with zipfile.ZipFile(out / "img_align_celeba.zip", "w", zipfile.ZIP_STORED) as zf:
        for p in photos:
            zf.write(p, f"img_align_celeba/{p.name}")
    for name in LISTS:
        shutil.copyfile(src / "lfw" / name, out / name)
    for p in (src / "mtcnn").iterdir():
        shutil.copyfile(p, out / p.name)
    for name in CELEBA_LISTS.values():
        shutil.copyfile(src / "celeba" / name, out / name)
    registry = {"lfw": _sha256(out / "lfw.tgz"), "celeba-images": _sha256(out / "img_align_celeba.zip")}
    registry.update({item: _sha256(out / name) for item, name in CELEBA_LISTS.items()})
    return registry


class Mirror:
    """Serves the files of a folder; any path under /html/ answers 200 with an HTML error page."""

    def __init__(self, folder: Path):
        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/html/"):
                    body = b"<html><body><h1>This file has moved</h1></body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _refused_url() -> str:
    with socket.socket() as sock:      # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def make_data_demo(src: Path, work: Path, data: Path) -> subprocess.CompletedProcess:
    """Pack the mirror into ``work``, serve it, and run the Makefile's data-demo line into ``data``."""
    registry = pack_mirror(src, work / "mirror")
    (work / "lab-mirror.json").write_text(json.dumps(registry, indent=1))
    mirror, dead = Mirror(work / "mirror"), _refused_url()
    try:
        sources = {i.name: [f"{dead}/{i.archive_name}", f"{mirror.url}/gone/{i.archive_name}",
                            f"{mirror.url}/html/{i.archive_name}", f"{mirror.url}/{i.archive_name}"]
                   for i in fetch.items(group="demo")}
        (work / "sources.json").write_text(json.dumps(sources, indent=1))
        venv = Path(sys.executable).parent.parent
        env = {**os.environ, "MTDNN_DATA": str(data), fetch.SOURCES_ENV: str(work / "sources.json"),
               fetch.REGISTRY_ENV: str(work / "lab-mirror.json")}
        # -o: the venv is taken as it is (make data-demo would otherwise check its requirements)
        return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), f"VENV={venv}",
                               "-o", f"{venv}/.requirements", "data-demo"],
                              capture_output=True, text=True, env=env, timeout=600)
    finally:
        mirror.close()


def test_make_data_demo_fills_an_empty_folder_the_demo_accepts(tmp_path):
    src = data_root()
    need = [src / "lfw" / "lfw-deepfunneled", src / "celeba" / "img_align_celeba_89x109",
            src / "mtcnn" / "det1.caffemodel", *(src / "lfw" / n for n in LISTS)]
    if not all(p.exists() for p in need):
        pytest.skip(f"needs LFW, CelebA and MTCNN in {src} to pack the mirror from (make data)")
    data = tmp_path / "data"
    r = make_data_demo(src, tmp_path, data)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    n = len(fetch.items(group="demo"))
    assert f"all {n} items ready (0 present, {n} fetched, 0 written); checksums of 5 from lab-mirror.json, " \
           "NOT the official ones" in r.stdout, out
    joined = re.sub(r"\n +", " ", r.stdout)    # the table's wrapped states joined
    # said before the downloads, above and below the table
    assert " ".join(r.stdout.split()).count("NOTE: checksums from lab-mirror.json, NOT the official ones, "
                                            "for 5 item(s)") == 3, out
    for item in ("lfw", "celeba-images", "celeba-attr"):
        assert re.search(rf"^{item} .*checksum from lab-mirror.json, NOT the official one", joined, re.M), item
    assert re.search(r"^mtcnn-det1.caffemodel +\S+ +\S+ +fetched$", r.stdout, re.M), out   # official bytes
    for why in ("connection refused", "HTTP 404", "answered with an HTML page"):
        assert re.search(rf"failed \({why}[^\n]*; trying the next source", r.stdout), why
    assert [p.name for p in (data / ".downloads").iterdir()] == ["img_align_celeba.zip"]   # kept: --celeba-limit
    # the demo's own data check (mtdnn.demo): inputs present, every photo its lists name, CelebA there
    d = Demo(FULL, work=tmp_path / "demo", data=data)
    d.check_inputs()
    said = d.write_lists()
    assert said.startswith("8825 LFW photos to align"), said
    assert celeba_missing(data) == [] and not d.recognition_only
    assert d.lfw_photos == data / "lfw" / "lfw"


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    if target.exists() and any(target.iterdir()):
        sys.exit(f"{target}: not empty")
    scratch = target.parent / f".{target.name}.mirror"
    shutil.rmtree(scratch, ignore_errors=True)
    res = make_data_demo(data_root(), scratch, target)
    print(res.stdout, res.stderr, sep="\n")
    shutil.rmtree(scratch / "mirror", ignore_errors=True)
    sys.exit(res.returncode)
