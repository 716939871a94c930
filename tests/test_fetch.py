"""make data (mtdnn/fetch.py, tools/fetch_data.py) against a local HTTP server.

No machine here reaches the internet, so a server on 127.0.0.1 serves small files in the real
formats: a .tgz with LFW-style person folders, a zip with an img_align_celeba/ folder, plain
text lists, and the real LFW lists and MTCNN files of the data folder under their real names
(so the registry's official checksums are checked end to end). It answers HTTP Range requests
and can break a transfer half way, as a dropped connection does."""
import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mtdnn import fetch
from mtdnn.paths import REPO, data_root

TOOL = REPO / "tools" / "fetch_data.py"


class Server:
    """Serves ``files`` (name -> bytes); ``break_after[name] = n`` sends only n bytes of the
    next full response of that file and drops the connection. ``ranges`` records Range headers."""

    def __init__(self, files):
        self.files, self.break_after, self.ranges = dict(files), {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                rng = self.headers.get("Range")
                if rng:
                    server.ranges.append((name, rng))
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.break_after.pop(name, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({})
    yield s
    s.close()


def _tgz(folders: dict) -> bytes:
    """A .tgz whose members are ``folder/file`` -> bytes, like lfw-deepfunneled.tgz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in folders.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40   # bytes only: fetch never decodes images


def _lfw_tgz() -> bytes:
    return _tgz({"lfw-deepfunneled/Aaron_Peirsol/Aaron_Peirsol_0001.jpg": JPEG,
                 "lfw-deepfunneled/Aaron_Peirsol/Aaron_Peirsol_0002.jpg": JPEG[::-1],
                 "lfw-deepfunneled/AJ_Cook/AJ_Cook_0001.jpg": JPEG})


def _items(server, tgz: bytes, pairs: bytes):
    """Registry items of the real kinds (a tgz folder, a plain checksummed file) for the server."""
    real = {i.name: i for i in fetch.REGISTRY}
    lfw = dataclasses.replace(real["lfw-deepfunneled"], url=f"{server.url}/lfw-deepfunneled.tgz",
                              known_hash=_md5(tgz), min_entries=2)
    txt = dataclasses.replace(real["lfw-pairs"], url=f"{server.url}/pairs.txt", known_hash=_md5(pairs),
                              provides={"lfw/pairs.txt": _sha(pairs)})
    return [lfw, txt]


def test_fetch_unpacks_into_the_layout_and_a_rerun_uses_it_as_it_is(server, tmp_path):
    tgz, pairs = _lfw_tgz(), b"10\t300\nAaron_Peirsol\t1\t2\n"
    server.files.update({"lfw-deepfunneled.tgz": tgz, "pairs.txt": pairs})
    chosen = _items(server, tgz, pairs)
    report = fetch.fetch(chosen, tmp_path, progress=False, log=lambda *_: None)
    assert [i.name for i in report.fetched] == ["lfw-deepfunneled", "lfw-pairs"]
    people = tmp_path / "lfw" / "lfw-deepfunneled"
    assert sorted(p.name for p in people.iterdir()) == ["AJ_Cook", "Aaron_Peirsol"]
    assert (people / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg").read_bytes() == JPEG[::-1]
    assert (tmp_path / "lfw" / "pairs.txt").read_bytes() == pairs
    # the archive is gone once unpacked; no temporary folder is left beside the result
    assert not (tmp_path / ".downloads" / "lfw-deepfunneled.tgz").exists()
    assert sorted(p.name for p in (tmp_path / "lfw").iterdir()) == ["lfw-deepfunneled", "pairs.txt"]
    server.files.clear()    # a rerun must not ask the server for anything
    t0 = time.perf_counter()
    again = fetch.fetch(chosen, tmp_path, progress=False, log=lambda *_: None)
    assert time.perf_counter() - t0 < 0.5
    assert len(again.present) == 2 and not again.fetched


def test_a_wrong_checksum_stops_and_leaves_nothing_behind(server, tmp_path):
    tgz, pairs = _lfw_tgz(), b"10\t300\n"
    chosen = _items(server, tgz, pairs)
    bad = bytearray(tgz)
    bad[len(bad) // 2] ^= 0xFF
    server.files.update({"lfw-deepfunneled.tgz": bytes(bad), "pairs.txt": pairs})
    with pytest.raises(fetch.FetchError, match="lfw-deepfunneled.*(hash|checksum)"):
        fetch.fetch(chosen, tmp_path, progress=False, log=lambda *_: None)
    assert not (tmp_path / "lfw" / "lfw-deepfunneled").exists()
    assert [p.name for p in (tmp_path / ".downloads").iterdir()] == []


def test_a_broken_download_resumes_from_the_bytes_on_disk(server, tmp_path):
    tgz, pairs = _lfw_tgz(), b"10\t300\n"
    tgz = _tgz({"lfw-deepfunneled/AJ_Cook/AJ_Cook_0001.jpg": JPEG,
                "lfw-deepfunneled/AJ_Lamas/AJ_Lamas_0001.jpg": os.urandom(200_000)})   # incompressible
    chosen = _items(server, tgz, pairs)[:1]
    server.files["lfw-deepfunneled.tgz"] = tgz
    server.break_after["lfw-deepfunneled.tgz"] = len(tgz) // 2 + 100
    with pytest.raises(fetch.FetchError, match="bytes kept .* a rerun resumes"):
        fetch.fetch(chosen, tmp_path, progress=False, log=lambda *_: None)
    kept = (tmp_path / ".downloads" / "lfw-deepfunneled.tgz.part").stat().st_size
    assert len(tgz) // 4 < kept <= len(tgz) // 2 + 100
    report = fetch.fetch(chosen, tmp_path, progress=False, log=lambda *_: None)
    assert server.ranges == [("lfw-deepfunneled.tgz", f"bytes={kept}-")]
    assert [i.name for i in report.fetched] == ["lfw-deepfunneled"]
    assert (tmp_path / "lfw" / "lfw-deepfunneled" / "AJ_Cook" / "AJ_Cook_0001.jpg").read_bytes() == JPEG
    assert not list((tmp_path / ".downloads").iterdir())


def test_an_archive_put_into_downloads_by_hand_is_checked_and_unpacked(tmp_path):
    """CelebA's images come from a licence form: the user drops the zip, make data unpacks it."""
    z = _zip({"img_align_celeba/000001.jpg": JPEG, "img_align_celeba/000002.jpg": JPEG[::-1]})
    item = dataclasses.replace({i.name: i for i in fetch.REGISTRY}["celeba-images"],
                               known_hash=_md5(z), min_entries=2)
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    assert [s.item.name for s in report.manual] == ["celeba-images"]
    assert "img_align_celeba.zip" in report.manual[0].message and str(tmp_path / ".downloads") in report.manual[0].message
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "img_align_celeba.zip").write_bytes(z[:-3] + b"xyz")
    with pytest.raises(fetch.FetchError, match="download it again"):
        fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    (tmp_path / ".downloads" / "img_align_celeba.zip").write_bytes(z)
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    assert [i.name for i in report.fetched] == ["celeba-images"]
    assert (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").read_bytes() == JPEG[::-1]


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_the_tool_fetches_real_files_by_their_official_checksums(server, tmp_path):
    """The LFW lists and MTCNN files of the data folder, served under their real names, pass
    the registry's pinned checksums; one altered byte fails with exit status 1."""
    src = data_root()
    names = ["pairsDevTest.txt", "peopleDevTest.txt"]
    if not all((src / "lfw" / n).exists() for n in names) or not (src / "mtcnn" / "det1.caffemodel").exists():
        pytest.skip(f"needs the LFW lists and MTCNN models in {src} (make data)")
    server.files.update({n: (src / "lfw" / n).read_bytes() for n in names})
    server.files["det1.caffemodel"] = (src / "mtcnn" / "det1.caffemodel").read_bytes()
    only = ["--only", "lfw-pairsDevTest", "lfw-peopleDevTest", "mtcnn-det1.caffemodel"]
    r = _run("--data", tmp_path, "--mirror", server.url, "--quiet", *only)
    assert r.returncode == 0, r.stderr
    assert "all 3 items ready (0 present, 3 fetched" in r.stdout
    assert (tmp_path / "mtcnn" / "det1.caffemodel").read_bytes() == server.files["det1.caffemodel"]
    (tmp_path / "lfw" / "peopleDevTest.txt").unlink()
    server.files["peopleDevTest.txt"] = server.files["peopleDevTest.txt"].replace(b"\t1\n", b"\t2\n", 1)
    r = _run("--data", tmp_path, "--mirror", server.url, "--quiet", *only)
    assert r.returncode == 1 and "lfw-peopleDevTest" in r.stderr and "hash" in r.stderr.lower()


def test_licence_form_items_say_what_to_download_and_exit_2(tmp_path):
    r = _run("--data", tmp_path, "--only", "blufr", "megaface-noises")
    assert r.returncode == 2
    assert "http://www.cbsr.ia.ac.cn/users/scliao/projects/blufr/" in r.stderr
    assert f"{tmp_path}/lfw/blufr/" in r.stderr and f"{tmp_path}/megaface/" in r.stderr
    assert "0 of 2 items ready, 2 missing" in r.stderr
    assert not (tmp_path / "lfw").exists()
    r = _run("--data", tmp_path, "--only", "blufr", "--missing-ok")     # make test: go on, tests skip
    assert r.returncode == 0 and "blufr" in r.stderr
    r = _run("--data", tmp_path, "--only", "no-such-item")
    assert r.returncode == 2 and "unknown item" in r.stderr


def test_dry_run_and_list_change_nothing(tmp_path):
    r = _run("--data", tmp_path / "d", "--dry-run", "--mirror", "http://127.0.0.1:9")
    assert r.returncode == 0 and "download lfw-deepfunneled from http://127.0.0.1:9/lfw-deepfunneled.tgz" in r.stdout
    assert "manual   blufr" in r.stdout and not (tmp_path / "d").exists()
    r = _run("--list")
    assert r.returncode == 0 and "MIT" in r.stdout and "licence form" in r.stdout


def test_a_complete_data_folder_is_used_as_it_is_in_well_under_a_second():
    root = data_root()
    steps = fetch.plan(fetch.items(), root)
    if any(action != "present" for _, _, action in steps):
        pytest.skip(f"{root} is not complete (make data)")
    t0 = time.perf_counter()
    fetch.fetch(fetch.items(), root, log=lambda *_: None)
    assert time.perf_counter() - t0 < 0.5


def test_the_lfw_list_is_written_byte_for_byte_like_the_reference_list(tmp_path):
    ref = data_root() / "lfw"
    if not (ref / "lfw-112x96_list.txt").exists() or not (ref / "lfw-112x96").is_dir():
        pytest.skip(f"needs lfw/lfw-112x96 and its list in {data_root()} (make data)")
    (tmp_path / "lfw").mkdir()
    (tmp_path / "lfw" / "lfw-112x96").symlink_to(ref / "lfw-112x96")
    fetch.write_lfw_list(tmp_path)
    assert (tmp_path / "lfw" / "lfw-112x96_list.txt").read_bytes() == (ref / "lfw-112x96_list.txt").read_bytes()


def test_pytest_without_data_skips_with_the_missing_path(tmp_path):
    """tests/conftest.py: no FileNotFoundError and no collection error without the data folder;
    a module that needs data at import (test_mtcnn) and tests that need it in their body or
    fixtures (test_eval_blufr) are skipped, each naming the path it needs."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                        "tests/test_mtcnn.py", "tests/test_eval_blufr.py"], cwd=REPO, capture_output=True,
                       text=True, env={**os.environ, "MTDNN_DATA": str(tmp_path / "none")}, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert f"data missing: {tmp_path / 'none'}/lfw/lfw-deepfunneled (run `make data`" in r.stdout
    assert f"data missing: {tmp_path / 'none'}/lfw/blufr/blufr_lfw_config.mat" in r.stdout
    assert "error" not in r.stdout.lower().split("short test summary")[-1]


def test_the_slow_marker_selects_exactly_the_listed_tests():
    """pytest.ini registers `slow`; conftest marks the tests of tests/slow_tests.txt with it, so
    `-m slow` collects exactly those (and `-m "not slow"` everything else)."""
    listed = {l.split("#")[0].strip() for l in (REPO / "tests" / "slow_tests.txt").read_text().splitlines()} - {""}
    files = sorted({n.split("::")[0] for n in listed})
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-m", "slow", *files], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert {l.strip() for l in r.stdout.splitlines() if "::" in l} == listed


def test_an_archive_reaching_outside_its_folder_is_refused(tmp_path):
    z = _zip({"img_align_celeba/000001.jpg": JPEG, "../../escaped.txt": b"x"})
    item = dataclasses.replace({i.name: i for i in fetch.REGISTRY}["celeba-images"], known_hash=_md5(z),
                               min_entries=1)
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "img_align_celeba.zip").write_bytes(z)
    with pytest.raises(fetch.FetchError, match="outside"):
        fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path / "celeba" / "img_align_celeba").exists()
