"""make data (mtdnn/fetch.py, tools/fetch_data.py) against a local HTTP server.

No machine here reaches the internet, so a server on 127.0.0.1 serves small files in the real
formats: a .tgz with LFW-style person folders, a zip with an img_align_celeba/ folder, plain
text lists, and the real LFW lists and MTCNN files of the data folder under their real names
(so the registry's official checksums are checked end to end). It answers HTTP Range requests
and can break a transfer half way, as a dropped connection does."""
import dataclasses
import hashlib
import io
import json
import os
import re
import socket
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
    next full response of that file and drops the connection. ``ranges`` records Range headers,
    ``requests`` every path asked for. ``html``: names answered with status 200 and an HTML
    error page. ``drive``: Google Drive file id -> bytes, served to requests for
    ``http://drive.google.com/uc?id=ID`` that reach this server as a proxy (HTTP_PROXY): first
    the confirmation page Drive shows for large files, then (``confirm=t``) the file as an
    attachment; ``drive_refuse`` holds ids answered with Drive's quota page."""

    def __init__(self, files):
        self.files, self.break_after, self.ranges, self.requests = dict(files), {}, [], []
        self.html, self.drive, self.drive_refuse = set(), {}, set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _page(self, text):
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drive(self):
                from urllib.parse import parse_qs, urlsplit
                q = parse_qs(urlsplit(self.path).query)
                fid = q.get("id", [""])[0]
                if fid in server.drive_refuse:
                    return self._page('<html><head><title>Google Drive - Quota exceeded</title></head><body>\n'
                                      '<p class="uc-error-subcaption">Too many users have viewed or downloaded this '
                                      'file recently. Please try accessing the file again later.</p>\n</body></html>')
                if fid not in server.drive:
                    self.send_error(404)
                    return
                if q.get("confirm") != ["t"]:
                    return self._page(
                        '<html><head><title>Google Drive - Virus scan warning</title></head><body>\n'
                        '<form id="download-form" action="http://drive.google.com/uc" method="get">'
                        f'<input type="hidden" name="id" value="{fid}"><input type="hidden" name="export" '
                        'value="download"><input type="hidden" name="confirm" value="t"></form>\n</body></html>')
                body = server.drive[fid]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Disposition", f'attachment; filename="{fid}.bin"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                server.requests.append(self.path)
                if self.path.startswith("http://drive.google.com/"):
                    return self._drive()
                name = self.path.lstrip("/")
                if name in server.html:
                    return self._page("<html><body><h1>Sorry, this file is unavailable</h1></body></html>")
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
    lfw = dataclasses.replace(real["lfw-deepfunneled"], sources=(f"{server.url}/lfw-deepfunneled.tgz",),
                              known_hash=_md5(tgz), min_entries=2)
    txt = dataclasses.replace(real["lfw-pairs"], sources=(f"{server.url}/pairs.txt",), known_hash=_md5(pairs),
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


def test_a_wrong_checksum_fails_that_item_only_and_leaves_nothing_behind(server, tmp_path):
    tgz, pairs = _lfw_tgz(), b"10\t300\n"
    chosen = _items(server, tgz, pairs)
    bad = bytearray(tgz)
    bad[len(bad) // 2] ^= 0xFF
    server.files.update({"lfw-deepfunneled.tgz": bytes(bad), "pairs.txt": pairs})
    report = fetch.fetch(chosen, tmp_path, progress=False, log=lambda *_: None)
    state = {name: st for name, st, _ in report.rows}
    assert state["lfw-deepfunneled"].startswith("failed:") and "served other bytes" in state["lfw-deepfunneled"]
    assert not report.complete
    assert [i.name for i in report.fetched] == ["lfw-pairs"]      # the next item was still fetched
    assert not (tmp_path / "lfw" / "lfw-deepfunneled").exists()
    assert [p.name for p in (tmp_path / ".downloads").iterdir()] == []


def test_a_broken_download_resumes_from_the_bytes_on_disk(server, tmp_path):
    tgz, pairs = _lfw_tgz(), b"10\t300\n"
    tgz = _tgz({"lfw-deepfunneled/AJ_Cook/AJ_Cook_0001.jpg": JPEG,
                "lfw-deepfunneled/AJ_Lamas/AJ_Lamas_0001.jpg": os.urandom(200_000)})   # incompressible
    chosen = _items(server, tgz, pairs)[:1]
    server.files["lfw-deepfunneled.tgz"] = tgz
    server.break_after["lfw-deepfunneled.tgz"] = len(tgz) // 2 + 100
    report = fetch.fetch(chosen, tmp_path, progress=False, log=lambda *_: None)
    assert re.search("transfer broke off; .*bytes kept .* a rerun resumes", report.rows[0][1])
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
                               known_hash=_md5(z), min_entries=2, sources=())
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    assert [s.item.name for s in report.manual] == ["celeba-images"]
    assert "img_align_celeba.zip" in report.manual[0].message and str(tmp_path / ".downloads") in report.manual[0].message
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "img_align_celeba.zip").write_bytes(z[:-3] + b"xyz")
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    assert "download it again" in report.rows[0][1] and not report.fetched
    assert (tmp_path / ".downloads" / "img_align_celeba.zip").read_bytes() == z[:-3] + b"xyz"   # not deleted
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
    dead = f"http://127.0.0.1:{_free_port()}"     # nothing listens there: the connection is refused
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({i: [f"{dead}/{n}", f"{server.url}/gone/{n}", f"{server.url}/{n}"]
                                   for i, n in zip(only[1:], names + ["det1.caffemodel"])}))
    r = _run("--data", tmp_path / "d", "--sources", sources, "--quiet", *only)
    assert r.returncode == 0, r.stderr
    assert "all 3 items ready (0 present, 3 fetched" in r.stdout
    assert "failed (connection refused); trying the next source" in r.stdout and "HTTP 404" in r.stdout, r.stdout
    assert (tmp_path / "d" / "mtcnn" / "det1.caffemodel").read_bytes() == server.files["det1.caffemodel"]
    (tmp_path / "d" / "lfw" / "peopleDevTest.txt").unlink()
    server.files["peopleDevTest.txt"] = server.files["peopleDevTest.txt"].replace(b"\t1\n", b"\t2\n", 1)
    r = _run("--data", tmp_path / "d", "--sources", sources, "--quiet", *only)
    assert r.returncode == 2 and re.search(r"lfw-peopleDevTest +\S+ +\S+ +failed: .*served other bytes",
                                             re.sub(r"\n +", " ", r.stdout)), r.stdout
    assert not (tmp_path / "d" / "lfw" / "peopleDevTest.txt").exists()


def test_items_with_no_working_source_say_what_to_download_by_hand_and_exit_2(tmp_path):
    """BLUFR and the MegaFace noise lists, every source dead: the table says how and where to
    get them by hand (the project page, the data folder's path); exit 2, nothing written."""
    only = ["blufr", "megaface-noises-facescrub", "megaface-noises-megaface"]
    dead = f"http://127.0.0.1:{_free_port()}"
    sources = tmp_path / "s.json"
    sources.write_text(json.dumps({i: [f"{dead}/{i}"] for i in only}))
    data = tmp_path / "d"
    r = _run("--data", data, "--sources", sources, "--only", *only)
    assert r.returncode == 2
    table = re.sub(r"\n +", " ", r.stdout)     # the table's wrapped lines joined
    assert fetch.BLUFR_PAGE in table and "http://www.cbsr.ia.ac.cn/users/scliao/projects/blufr/" in table
    assert f"{data}/lfw/blufr/" in table and f"{data}/megaface/" in table
    assert "0 of 3 items ready, 3 missing" in r.stderr
    assert re.search(r"^blufr .*failed: .*connection refused.*; by hand: Download BLUFR.zip", table, re.M), table
    assert re.search(r"^megaface-noises-facescrub .*by hand: Download insightface's MegaFace testpack", table, re.M)
    assert sorted(p.name for p in data.rglob("*")) == [".downloads"]
    r = _run("--data", data, "--only", "lfw-112x96", "--missing-ok")     # make test: go on, tests skip
    assert r.returncode == 0 and re.search(r"^lfw-112x96 .* by hand: No public download", r.stdout, re.M)
    r = _run("--data", data, "--only", "no-such-item")
    assert r.returncode == 2 and "unknown item" in r.stderr


def test_blufr_and_the_megaface_noise_lists_are_fetched_by_their_pinned_checksums(server, tmp_path):
    """The copies in the data folder, served under their real names after a dead first source,
    pass the registry's SHA-256 (the same the upstream copies must have)."""
    src = data_root()
    files = {"blufr": src / "lfw" / "blufr" / "blufr_lfw_config.mat",
             "megaface-noises-facescrub": src / "megaface" / "facescrub_noises.txt",
             "megaface-noises-megaface": src / "megaface" / "megaface_noises.txt"}
    if not all(p.is_file() for p in files.values()):
        pytest.skip(f"needs lfw/blufr/ and megaface/ in {src} (make data)")
    server.files.update({p.name: p.read_bytes() for p in files.values()})
    dead = f"http://127.0.0.1:{_free_port()}"
    sources = tmp_path / "s.json"
    sources.write_text(json.dumps({i: [f"{dead}/{p.name}", f"{server.url}/{p.name}"] for i, p in files.items()}))
    r = _run("--data", tmp_path / "d", "--sources", sources, "--quiet", "--only", *files)
    assert r.returncode == 0 and "all 3 items ready (0 present, 3 fetched" in r.stdout, r.stdout + r.stderr
    for p in files.values():
        assert (tmp_path / "d" / p.relative_to(src)).read_bytes() == p.read_bytes()


def test_dry_run_and_list_change_nothing(tmp_path):
    r = _run("--data", tmp_path / "d", "--dry-run", "--mirror", "http://127.0.0.1:9")
    assert r.returncode == 0 and "download lfw-deepfunneled from http://127.0.0.1:9/lfw-deepfunneled.tgz" in r.stdout
    assert "manual   lfw-112x96" in r.stdout and not (tmp_path / "d").exists()
    r = _run("--list")
    assert r.returncode == 0 and "MIT" in r.stdout and "by hand" in r.stdout
    assert "https://ndownloader.figshare.com/files/5976018" in r.stdout


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
                               min_entries=1, sources=())
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "img_align_celeba.zip").write_bytes(z)
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    assert "outside" in report.rows[0][1] and not report.fetched
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path / "celeba" / "img_align_celeba").exists()


# ------------------------------------------------------------------ sources, fall-through, table

def _free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pairs_item(data: bytes, sources) -> fetch.Item:
    real = {i.name: i for i in fetch.REGISTRY}["lfw-pairs"]
    return dataclasses.replace(real, sources=tuple(sources), known_hash=_md5(data),
                               provides={"lfw/pairs.txt": _sha(data)})


BAD_SOURCES = ("refused", "404", "html", "truncated", "other-bytes")


def _bad_source(server, kind: str, data: bytes) -> str:
    """A first source that fails in the way ``kind`` names."""
    if kind == "refused":
        return f"http://127.0.0.1:{_free_port()}/pairs.txt"
    if kind == "404":
        return f"{server.url}/missing/pairs.txt"
    if kind == "html":
        server.html.add("html/pairs.txt")
        return f"{server.url}/html/pairs.txt"
    if kind == "truncated":
        server.files["cut/pairs.txt"] = data
        server.break_after["cut/pairs.txt"] = len(data) // 3
        return f"{server.url}/cut/pairs.txt"
    server.files["other/pairs.txt"] = data.replace(b"\t1\t", b"\t3\t")
    return f"{server.url}/other/pairs.txt"


@pytest.mark.parametrize("kind", BAD_SOURCES)
def test_a_failing_first_source_falls_through_to_the_next(server, tmp_path, kind):
    """Each way a source can fail makes it a failed source, and the next one is tried; the
    file kept is the official one (the checksum is the same for every source)."""
    data = b"10\t300\n" + b"".join(b"Person_%d\t1\t2\n" % i for i in range(2000))
    server.files["good/pairs.txt"] = data
    item = _pairs_item(data, [_bad_source(server, kind, data), f"{server.url}/good/pairs.txt"])
    said = []
    report = fetch.fetch([item], tmp_path, progress=False, log=said.append)
    assert [i.name for i in report.fetched] == ["lfw-pairs"] and report.complete, report.rows
    assert (tmp_path / "lfw" / "pairs.txt").read_bytes() == data
    why = {"refused": "connection refused", "404": "HTTP 404", "html": "HTML page",
           "truncated": "transfer broke off", "other-bytes": "served other bytes"}[kind]
    assert any(why in line and "trying the next source" in line for line in said), said
    assert list((tmp_path / ".downloads").iterdir()) == []


def test_every_source_dead_gives_the_table_exit_2_and_nothing_half_written(server, tmp_path):
    """The tool tries every item (it never stops at the first failure), prints one table and
    exits 2; the data folder holds nothing of the failed items (no part file of a download that
    never began, no temporary folder)."""
    dead = f"http://127.0.0.1:{_free_port()}"
    server.html.add("html/lfw.tgz")
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({"lfw": [f"{dead}/lfw.tgz", f"{server.url}/html/lfw.tgz"],
                                   "lfw-pairsDevTest": [f"{server.url}/nothing.txt"],
                                   "mtcnn-LICENSE": [f"{dead}/LICENSE"]}))
    data = tmp_path / "data"
    r = _run("--data", data, "--sources", sources, "--quiet", "--only", "lfw", "lfw-pairsDevTest", "mtcnn-LICENSE")
    assert r.returncode == 2, r.stdout + r.stderr
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^(\S+) +\S+(?: \S+)? +(failed: .*)$", r.stdout, re.M)}
    assert set(rows) == {"lfw", "lfw-pairsDevTest", "mtcnn-LICENSE"}, r.stdout
    assert "connection refused" in rows["lfw"] and "HTTP 404" in rows["lfw-pairsDevTest"]
    assert "0 of 3 items ready, 3 missing" in r.stderr and "Traceback" not in r.stderr
    assert [p.relative_to(data).as_posix() for p in sorted(data.rglob("*"))] == [".downloads"]


def test_sources_come_from_the_environment_too_and_a_bad_file_is_refused(server, tmp_path):
    data = b"10\t300\n"
    server.files["p.txt"] = data
    sources = tmp_path / "s.json"
    sources.write_text(json.dumps({"lfw-pairs": [f"{server.url}/p.txt"]}))
    r = _run("--data", tmp_path / "d", "--only", "lfw-pairs", "--dry-run", env={fetch.SOURCES_ENV: str(sources)})
    assert f"download lfw-pairs from {server.url}/p.txt" in r.stdout
    sources.write_text('{"lfw-pairs": "not a list"}')
    r = _run("--data", tmp_path / "d", "--only", "lfw-pairs", "--sources", sources)
    assert r.returncode == 2 and "mapping item names to lists of URLs" in r.stderr


# ------------------------------------------------------------------ Google Drive (CelebA)

@pytest.fixture
def drive_proxy(server, monkeypatch):
    """Requests for http://drive.google.com/... go to the local server as an HTTP proxy (gdown
    and requests honour HTTP_PROXY); requests for 127.0.0.1 go direct."""
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HOME", str(server_home := Path(os.environ.get("TMPDIR", "/tmp")) / "gdown-home"))
    server_home.mkdir(exist_ok=True)
    return server


def test_a_drive_file_behind_its_confirmation_page_is_fetched_and_checked(drive_proxy, tmp_path):
    """CelebA's images come from Google Drive: gdown follows the confirmation page that Drive
    shows for large files; the zip is checked by its md5 and unpacked (only the first N files
    when a limit is given, the zip then kept for a later full unpack)."""
    z = _zip({f"img_align_celeba/{i:06d}.jpg": JPEG + bytes([i]) for i in range(1, 6)})
    drive_proxy.drive["CELEBA_ZIP"] = z
    item = dataclasses.replace({i.name: i for i in fetch.REGISTRY}["celeba-images"], known_hash=_md5(z),
                               min_entries=3, sources=("http://drive.google.com/uc?id=CELEBA_ZIP",))
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None, limits={"celeba-images": 3})
    assert [i.name for i in report.fetched] == ["celeba-images"], report.rows
    assert sorted(p.name for p in (tmp_path / "celeba" / "img_align_celeba").iterdir()) == \
        ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert any("confirm=t" in r for r in drive_proxy.requests), drive_proxy.requests   # the page was followed
    assert (tmp_path / ".downloads" / "img_align_celeba.zip").read_bytes() == z
    assert "first 3 files" in report.rows[0][1]


def test_a_drive_refusal_names_the_official_alternatives_and_where_to_put_the_files(drive_proxy, tmp_path):
    drive_proxy.drive_refuse.add("CELEBA_ZIP")
    item = dataclasses.replace({i.name: i for i in fetch.REGISTRY}["celeba-images"],
                               sources=("http://drive.google.com/uc?id=CELEBA_ZIP",))
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    state = report.rows[0][1]
    assert "Google Drive refused the file" in state and "Too many users" in state
    assert "Baidu" in state and "mmlab.ie.cuhk.edu.hk" in state and f"{tmp_path}/.downloads/" in state
    assert not (tmp_path / "celeba").exists() and not [p for p in (tmp_path / ".downloads").iterdir()
                                                       if not p.name.endswith(".part")]


# ------------------------------------------------------------------ issue 22 item 8

def test_a_local_file_with_another_checksum_is_reported_as_such_and_left_alone(server, tmp_path):
    """Not 'a failed download': the file here is not the official one; it is the user's, so it
    is neither downloaded over nor deleted, and no source is asked."""
    data = b"10\t300\nAaron_Peirsol\t1\t2\n"
    server.files["pairs.txt"] = data
    item = _pairs_item(data, [f"{server.url}/pairs.txt"])
    (tmp_path / "lfw").mkdir()
    (tmp_path / "lfw" / "pairs.txt").write_bytes(b"my own edited pairs\n")
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    state = report.rows[0][1]
    assert state.startswith("failed: the local file is not the official one: lfw/pairs.txt"), state
    assert "download" not in state.split("rerun")[0] and "move it away and rerun" in state
    assert (tmp_path / "lfw" / "pairs.txt").read_bytes() == b"my own edited pairs\n"
    assert server.requests == []


def test_an_emptied_or_cut_derived_list_is_rewritten_not_called_ready(tmp_path):
    folder = tmp_path / "lfw" / "lfw-112x96"
    for name in ("AJ_Cook", "Aaron_Peirsol", "Zico"):
        (folder / name).mkdir(parents=True)
        (folder / name / f"{name}_0001.jpg").write_bytes(JPEG)
    item = {i.name: i for i in fetch.REGISTRY}["lfw-112x96-list"]
    listing = tmp_path / "lfw" / "lfw-112x96_list.txt"
    report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
    assert [i.name for i in report.derived] == ["lfw-112x96-list"]
    full = listing.read_bytes()
    assert full.count(b"\r\n") == 3
    assert fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None).rows[0][1] == "ready"
    for damaged in (b"", full.split(b"\r\n", 1)[1]):      # emptied; cut to two of the three people
        listing.write_bytes(damaged)
        report = fetch.fetch([item], tmp_path, progress=False, log=lambda *_: None)
        assert report.rows[0][1].startswith("written"), report.rows
        assert listing.read_bytes() == full


def test_a_complete_read_only_data_folder_is_checked_without_its_lock(tmp_path):
    """A data folder on a read-only file system (a shared data set on a cluster) holding what is
    asked: fetch_data cannot write its lock beside it (EROFS), says so once and checks the folder
    (exit 0) instead of stopping; nothing else changes. Before, the lock's OSError stopped
    `make test` on such a folder."""
    import shutil

    from faults import small_disk
    if not (data_root() / "lfw" / "pairsDevTest.txt").is_file():
        pytest.skip(f"needs lfw/pairsDevTest.txt in {data_root()} (make data)")
    ro = tmp_path / "ro"
    with small_disk(ro, "1m"):
        data = ro / "data"
        (data / "lfw").mkdir(parents=True)
        shutil.copy(data_root() / "lfw" / "pairsDevTest.txt", data / "lfw" / "pairsDevTest.txt")
        r = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only here ({r.stderr.strip()})")
        r = _run("--data", data, "--only", "lfw-pairsDevTest")
        assert r.returncode == 0, r.stderr
        assert "checking" in r.stderr and "without its lock" in r.stderr and "Read-only file system" in r.stderr
        assert "all 1 items ready (1 present" in r.stdout, r.stdout
        assert sorted(p.name for p in ro.iterdir()) == ["data"]


def test_a_mirror_with_other_bytes_needs_its_registry_file_and_every_use_of_it_is_said(server, tmp_path):
    """A lab's repack fails the official checksum; with --registry (or $MTDNN_FETCH_REGISTRY) its
    own checksum is used, and the log, the row, the table's banner and the last line say so. A
    later run without the file reports the file as not the official one and leaves it alone."""
    repack = b"10\t300\n" + b"Person_A\t1\t2\n" * 50     # not the official pairs.txt
    server.files["pairs.txt"] = repack
    sources = tmp_path / "s.json"
    sources.write_text(json.dumps({"lfw-pairs": [f"{server.url}/pairs.txt"]}))
    data = tmp_path / "d"
    r = _run("--data", data, "--sources", sources, "--quiet", "--only", "lfw-pairs")
    assert r.returncode == 2 and "served other bytes" in r.stdout and not (data / "lfw" / "pairs.txt").exists()
    registry = tmp_path / "lab.json"
    registry.write_text(json.dumps({"lfw-pairs": "sha256:" + _sha(repack)}))
    r = _run("--data", data, "--sources", sources, "--quiet", "--only", "lfw-pairs",
             env={fetch.REGISTRY_ENV: str(registry)})
    assert r.returncode == 0, r.stdout + r.stderr
    flat = " ".join(r.stdout.split())
    assert flat.count("NOTE: checksums from lab.json, NOT the official ones, for 1 item(s)") == 3, r.stdout
    assert re.search(r"^lfw-pairs +\? +fetched -- checksum from lab.json, NOT the official one$", r.stdout, re.M)
    assert "checksums of 1 from lab.json, NOT the official ones" in r.stdout.splitlines()[-1]
    assert (data / "lfw" / "pairs.txt").read_bytes() == repack
    r = _run("--data", data, "--only", "lfw-pairs", "--dry-run", "--registry", registry)
    assert "present  lfw-pairs" in r.stdout and "NOTE: checksums from lab.json, NOT the official ones" in r.stdout
    r = _run("--data", data, "--only", "lfw-pairs", "--quiet")
    assert r.returncode == 2 and "the local file is not the official one" in r.stdout
    assert (data / "lfw" / "pairs.txt").read_bytes() == repack
    for bad, why in (({"lfw-pairs": "md5:" + "0" * 32}, "sha256:<64 hex digits>"),
                     ({"no-such-item": "sha256:" + "0" * 64}, "unknown item(s) no-such-item")):
        registry.write_text(json.dumps(bad))
        r = _run("--data", data, "--only", "lfw-pairs", "--registry", registry)
        assert r.returncode == 2 and why in r.stderr, r.stderr
