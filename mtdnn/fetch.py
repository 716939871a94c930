"""Fetch the data the demo and the tests read (``make data``, ``tools/fetch_data.py``).

A registry of :class:`Item` records says, for every piece of the data folder, where it comes
from (an ordered list of sources, each checked against the same checksum, or instructions
for a download by hand), how it is unpacked and which paths it provides. :func:`fetch`
brings a data folder up to date and tries every item, whatever happened to the others:

- an item whose paths are all present (single files: with the right SHA-256; derived lists:
  with the content they would be written with) is used as it is; a local file that differs
  from the official one is reported as such and left alone (it is the user's: never
  downloaded over);
- a downloadable item is fetched from its first source that answers with the right bytes:
  a refused connection, an HTTP error, an HTML page instead of the file, a broken transfer
  or bytes with another checksum make the source a failed one and the next is tried.
  Plain URLs go through pooch (checksummed; a broken transfer resumes from the bytes already
  on disk, through HTTP Range requests, with a progress bar), Google Drive files through
  gdown (its confirmation page, its refusals); both land in ``DATA/.downloads/``, are
  checked, unpacked into a temporary folder beside their destination and renamed into
  place, so a folder appears whole or not at all;
- an item with no source left is listed with what to download, from where and where to put
  it (:class:`ManualStep`); an archive the user put into ``DATA/.downloads/`` is checked and
  unpacked like a downloaded one;
- a derived item (the LFW 112x96 image list) is written from what is already there.

The sources of every item can be replaced for a run (a JSON file ``{"item": ["url", ...]}``,
``--sources`` or ``$MTDNN_FETCH_SOURCES``): the checksums stay the registry's. A lab's own
mirror that serves other bytes (a repack, a cut copy) brings its own checksums in a second
file (``{"item": "sha256:..."}``, ``--registry`` or ``$MTDNN_FETCH_REGISTRY``,
:func:`with_registry`): every item checked by it says so in the log and in the final table
("checksum from FILE, not the official one"), never silently.

Layout and sources: docs/data.md.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .fileio import atomic_write_text, sha256_file
from .records import read_lines

UMASS = "http://vis-www.cs.umass.edu/lfw/"
FIGSHARE = "https://ndownloader.figshare.com/files/"
MTCNN_RAW = "https://raw.githubusercontent.com/kpzhang93/MTCNN_face_detection_alignment/master/"
DRIVE = "https://drive.google.com/uc?id="
DOWNLOADS = ".downloads"
SOURCES_ENV = "MTDNN_FETCH_SOURCES"
REGISTRY_ENV = "MTDNN_FETCH_REGISTRY"


class FetchError(RuntimeError):
    """An item could not be had (every source failed, or its archive is broken): the item is
    reported as failed and the run goes on with the next one."""


class SourceError(RuntimeError):
    """One source of an item failed (it answered with something other than the file)."""


@dataclass(frozen=True)
class Item:
    """One piece of the data folder.

    ``provides`` maps each path it creates (relative to the data folder) to its SHA-256, or to
    None for a folder (checked by ``min_entries`` entries) or a file whose bytes are not pinned.
    ``sources``: the download URLs, tried in order (Google Drive ones through gdown), each
    checked against ``known_hash`` (``"md5:..."`` or ``"sha256:..."``, as pooch spells them);
    ``url``: the item's home page; ``unpack`` is ``"tgz"``, ``"zip"`` or None (a plain file
    copied to the one path it provides); ``member``: the archive's top folder that becomes
    ``provides``' one folder. ``manual``: what to do by hand when no source works (or there is
    none). ``derive``: a function(data_root) that writes the item from other items, with
    ``derive_check``: a function(data_root, path) naming what is wrong with a written one.
    ``alternative``: another folder that serves the tools as well (CelebA's half-size
    development subset, LFW's deep-funneled release)."""
    name: str
    what: str
    provides: dict
    source: str
    licence: str
    url: str | None = None
    known_hash: str | None = None
    size: int | None = None
    unpack: str | None = None
    member: str | None = None
    min_entries: int = 1
    manual: str | None = None
    derive: Callable | None = None
    groups: tuple = ("test", "demo")
    filename: str | None = None
    alternative: str | None = None
    sources: tuple = ()
    derive_check: Callable | None = None
    checksum_from: str | None = None   # a registry file's name when its checksum replaced the official one

    @property
    def archive_name(self) -> str:
        """The file name of the download (or of the archive the user puts into .downloads)."""
        return self.filename or next(iter(self.provides)).rsplit("/", 1)[-1]


@dataclass
class ManualStep:
    """An item the user has to download by hand; ``message`` says what, from where, to where."""
    item: Item
    missing: list
    message: str


@dataclass
class Report:
    present: list = field(default_factory=list)
    fetched: list = field(default_factory=list)
    derived: list = field(default_factory=list)
    manual: list = field(default_factory=list)   # ManualStep
    failed: list = field(default_factory=list)   # (Item, why)
    rows: list = field(default_factory=list)     # (item name, state, size) in registry order
    unofficial: dict = field(default_factory=dict)  # registry file -> items checked by its checksums

    @property
    def complete(self) -> bool:
        return not self.manual and not self.failed


# ---------------------------------------------------------------------------------- checks

def _enough_entries(path: Path, n: int) -> bool:
    """True when ``path`` is a folder with at least ``n`` entries (reads no more than ``n``)."""
    if not path.is_dir():
        return False
    with os.scandir(path) as it:
        return sum(1 for _ in zip(range(n), it)) >= n


def missing_paths(item: Item, root: Path) -> list:
    """The paths of ``item`` under ``root`` that are absent or wrong, each as 'path (why)'."""
    if item.alternative and _enough_entries(root / item.alternative, item.min_entries):
        return []
    out = []
    for rel, digest in item.provides.items():
        path = root / rel
        if not path.exists():
            out.append(f"{rel} (missing)")
        elif path.is_dir():
            if not _enough_entries(path, item.min_entries):
                out.append(f"{rel} (fewer than {item.min_entries} entries)")
        elif path.stat().st_size == 0:
            out.append(f"{rel} (empty)")
        elif item.derive_check is not None:
            why = item.derive_check(root, path)
            if why:
                out.append(f"{rel} ({why})")
        elif digest is not None and sha256_file(path) != digest:
            out.append(f"{rel} (differs from the {whose(item)} file: SHA-256 {sha256_file(path)[:16]}..., "
                       f"{whose(item)} {digest[:16]}...)")
    return out


def local_differs(missing: list) -> list:
    """Of ``missing_paths``' answers, the files that are there but are not the official ones."""
    return [m for m in missing if "(differs from the " in m]


# ---------------------------------------------------------------------------------- download

class ResumingDownloader:
    """A pooch downloader that resumes: the bytes go to ``<final name>.part`` in the downloads
    folder, a rerun asks the server for the rest (``Range: bytes=N-``) and appends. Only a
    complete transfer is handed to pooch, which checks the checksum before it keeps the file.
    A server that answers with an HTML page (an error or sign-in page with status 200) instead
    of the file fails at once, before anything is written."""

    def __init__(self, part: Path, progress: bool = True, timeout: float = 60.0):
        self.part, self.progress, self.timeout = part, progress, timeout

    def __call__(self, url: str, output_file, pooch_obj) -> None:
        import requests
        from tqdm import tqdm

        have = self.part.stat().st_size if self.part.exists() else 0
        # identity: the bytes on disk are the file's own, so a Range offset means the same thing
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code == 416:          # the part file already holds everything
                r.close()
            else:
                r.raise_for_status()
                kind = r.headers.get("Content-Type", "")
                if kind.startswith("text/html") and not self.part.name[:-5].endswith((".html", ".htm")):
                    raise SourceError(f"answered with an HTML page ({kind}), not the file")
                if have and r.status_code != 206:   # the server ignores Range: start over
                    have = 0
                total = int(r.headers.get("Content-Length", 0)) + have or None
                with open(self.part, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=self.part.name[:-5], disable=not self.progress, leave=False) as bar:
                    for chunk in r.iter_content(chunk_size=1 << 13):
                        f.write(chunk)
                        bar.update(len(chunk))
        shutil.move(str(self.part), str(output_file))


def is_drive(url: str) -> bool:
    """A Google Drive download link (fetched with gdown, which knows Drive's pages)."""
    from urllib.parse import urlsplit
    return urlsplit(url).hostname in ("drive.google.com", "docs.google.com")


def drive_download(url: str, dest: Path, progress: bool = True) -> None:
    """One file from Google Drive into ``dest`` with gdown: it follows Drive's confirmation page
    for large files and resumes a broken transfer (its own ``.part`` beside ``dest``). A
    refusal (quota exceeded, no access, a page gdown cannot read) raises :class:`SourceError`."""
    import gdown
    from gdown.exceptions import FileURLRetrievalError

    dest.unlink(missing_ok=True)
    try:
        out = gdown.download(url, str(dest), quiet=not progress, resume=True, use_cookies=False)
    except FileURLRetrievalError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise SourceError(f"Google Drive refused the file: {' '.join(lines[1:3]) or lines[0]}") from None
    if out is None or not dest.is_file():
        raise SourceError(f"gdown left no file (several partial files beside {dest}?)")


def _why(e) -> str:
    """A short reason for a failed request (the full urllib3 chain is a screen long)."""
    import requests
    text = str(e)
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code} {e.response.reason}"
    for needle, short in (("Failed to resolve", "host not found (no network?)"),
                          ("Name or service not known", "host not found (no network?)"),
                          ("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("IncompleteRead", "transfer broke off"), ("Connection broken", "transfer broke off")):
        if needle in text:
            return short
    return f"{type(e).__name__}: {text[:160]}"


def whose(item: Item) -> str:
    """Whose checksums ``item`` is checked by: 'official', or the registry file's ("lab.json's")."""
    return f"{item.checksum_from}'s" if item.checksum_from else "official"


def _check(path: Path, item: Item, delete: bool = True) -> None:
    import pooch
    algo, _, want = item.known_hash.partition(":")
    got = pooch.file_hash(str(path), alg=algo)
    if got != want:
        if delete:
            path.unlink()
        raise SourceError(f"served other bytes ({algo} {got}, {whose(item)} {want})")


def _from(url: str, item: Item, cache: Path, progress: bool) -> Path:
    """``item``'s file from one source into ``cache``, checked; raises SourceError."""
    import pooch
    import requests

    dest = cache / item.archive_name
    if is_drive(url):
        try:
            drive_download(url, dest, progress)
        except requests.RequestException as e:
            raise SourceError(_why(e)) from None
        _check(dest, item)
        return dest
    part = cache / f"{item.archive_name}.part"
    try:
        return Path(pooch.retrieve(url, item.known_hash, fname=item.archive_name, path=cache,
                                   downloader=ResumingDownloader(part, progress), progressbar=False))
    except ValueError:   # pooch: the checksum does not match (the file was deleted)
        raise SourceError(f"served other bytes (checksum differs from the {whose(item)} one)") from None
    except requests.RequestException as e:
        kept = f"; {part.stat().st_size} bytes kept in {part}, a rerun resumes" if part.exists() else ""
        raise SourceError(f"{_why(e)}{kept}") from None


def read_sources(path) -> dict:
    """``{item name: [url, ...]}`` from a JSON file (``--sources``, ``$MTDNN_FETCH_SOURCES``)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(u, str) for u in v)
                                             for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping item names to lists of URLs")
    return data


def read_registry(path) -> dict:
    """``{item name: "sha256:HEX"}`` from a JSON file (``--registry``, ``$MTDNN_FETCH_REGISTRY``):
    the checksums of a mirror that serves other bytes than the official ones."""
    import re
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, str) and re.fullmatch("sha256:[0-9a-f]{64}", v)
                                             for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping item names to 'sha256:<64 hex digits>'")
    return data


def with_registry(chosen, checksums: dict, origin: str) -> list:
    """``chosen`` with the checksums of a registry file (:func:`read_registry`) in place of the
    official ones, each such item marked with ``origin`` (reported in the log and the table). A
    plain file's pinned SHA-256 becomes the file's; a folder keeps its entry count check; the
    official size is dropped (the mirror's file is another)."""
    known = {i.name for i in REGISTRY}
    unknown = sorted(set(checksums) - known)
    if unknown:
        raise KeyError(f"{origin}: unknown item(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out = []
    for item in chosen:
        digest = checksums.get(item.name)
        if digest is None:
            out.append(item)
            continue
        provides = {rel: digest.split(":", 1)[1] for rel in item.provides} if item.unpack is None else item.provides
        out.append(replace(item, known_hash=digest, provides=provides, checksum_from=origin, size=None))
    return out


def sources_of(item: Item, mirror: str | None = None, overrides: dict | None = None) -> list:
    """The URLs to try for ``item``, in order: ``--mirror`` first when given, then the
    override file's list for it (which replaces the registry's) or the registry's."""
    listed = list((overrides or {}).get(item.name, item.sources))
    return ([f"{mirror.rstrip('/')}/{item.archive_name}"] if mirror else []) + listed


def download(item: Item, root: Path, mirror: str | None = None, progress: bool = True,
             overrides: dict | None = None, log=print) -> Path:
    """The checksummed archive or file of ``item`` in ``root/.downloads``, from its first source
    that gives the right bytes; FetchError naming every source and why it failed."""
    import pooch

    pooch.get_logger().setLevel("WARNING")   # our own lines say what is fetched
    cache = root / DOWNLOADS
    cache.mkdir(parents=True, exist_ok=True)
    failures = []
    urls = sources_of(item, mirror, overrides)
    for url in urls:
        try:
            return _from(url, item, cache, progress)
        except SourceError as e:
            failures.append(f"{url}: {e}")
            log(f"{item.name}: {url} failed ({e})" + ("; trying the next source" if url != urls[-1] else ""))
    raise FetchError("; ".join(failures) or "no download source")


def _safe_members(names, dest: Path):
    """Refuse an archive with a member that would land outside ``dest`` (``../``, absolute)."""
    base = dest.resolve()
    for name in names:
        if not (dest / name).resolve().is_relative_to(base):
            raise FetchError(f"archive member {name!r} would be written outside {dest}")


def unpack(item: Item, archive: Path, root: Path, limit: int | None = None) -> None:
    """Unpack ``archive`` (or copy a plain file) into the one path ``item`` provides, atomically.
    ``limit``: only the first N files of the archive's folder, in name order (the demo needs a
    few thousand CelebA images of 202,599)."""
    (rel,) = item.provides
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if item.unpack is None:     # a plain file: moved from .downloads (the same file system)
        shutil.move(str(archive), str(dest))
        return
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.unpack"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if item.unpack == "tgz":
            with tarfile.open(archive, "r:gz") as tf:
                _safe_members(tf.getnames(), tmp)
                tf.extractall(tmp, filter="data")
        elif item.unpack == "zip":
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                _safe_members(names, tmp)
                if limit is not None:
                    names = sorted(n for n in names if not n.endswith("/"))[:limit]
                zf.extractall(tmp, members=names)
        else:
            raise ValueError(f"unknown unpack kind {item.unpack!r}")
        top = tmp / (item.member or dest.name)
        if not top.is_dir():
            raise FetchError(f"{archive.name} has no top folder {top.name}/: not the official archive?")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(top, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise FetchError(f"{archive}: cannot unpack ({e}): delete it and rerun") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------- derived

def _lfw_people(folder: Path) -> list:
    """The person folders of ``folder`` in the list's order (names compared upper-cased)."""
    with os.scandir(folder) as it:
        return sorted((e.name for e in it if e.is_dir()), key=str.upper)


def write_lfw_list(root: Path) -> None:
    """``lfw/lfw-112x96_list.txt``: ``NAME/NAME_%04d.jpg label`` for every image of
    ``lfw/lfw-112x96``, label = the person's index. The order and CRLF line ends are those of
    the third-party list the project was developed with (names compared upper-cased, as
    Windows does), so the file comes out byte for byte the same."""
    folder = root / "lfw" / "lfw-112x96"
    people = _lfw_people(folder)
    lines = [f"{name}/{img} {label}\r\n" for label, name in enumerate(people)
             for img in sorted((f.name for f in (folder / name).iterdir() if f.suffix == ".jpg"), key=str.upper)]
    atomic_write_text(root / "lfw" / "lfw-112x96_list.txt", "".join(lines))


def check_lfw_list(root: Path, path: Path) -> str | None:
    """What is wrong with a written ``lfw-112x96_list.txt``: it must name, with their labels,
    exactly the person folders of ``lfw/lfw-112x96`` (one directory listing, no image reads:
    an emptied, cut or stale list is caught, a complete folder is still checked in ms)."""
    folder = root / "lfw" / "lfw-112x96"
    if not folder.is_dir():
        return None
    want = {name: label for label, name in enumerate(_lfw_people(folder))}
    got = {}
    for _, line in read_lines(path):  # the one record reader (mtdnn/records.py)
        img, _, label = line.rpartition(" ")
        got[img.split("/", 1)[0]] = label
    if got != {k: str(v) for k, v in want.items()}:
        return f"names {len(got)} people, {folder.name}/ holds {len(want)}: rewritten"
    return None


# ---------------------------------------------------------------------------------- registry

LFW_LICENCE = "LFW: research use (no licence given by its authors)"
# A public copy of the two View 1 people lists (the official host is down; scikit-learn's
# figshare copies hold the pair lists only), pinned to a commit and checked by the official md5.
PEOPLE_COPY = ("https://raw.githubusercontent.com/peluz/cv-foundations-6/"
               "e4cc47d988a4d08d3106fb56747f22695b3c3cef/data/")
# scikit-learn's figshare copies (sklearn/datasets/_lfw.py: ARCHIVE, TARGETS), SHA-256 as it lists them
FIGSHARE_IDS = {"lfw.tgz": "5976018", "pairsDevTrain.txt": "5976012", "pairsDevTest.txt": "5976009",
                "pairs.txt": "5976006"}


def _lfw_list(name: str, md5: str, sha: str, size: int) -> Item:
    """An LFW protocol file: scikit-learn's figshare copy (pair lists) or the pinned public copy
    (people lists) first, the original host last; checked by the official md5 (the SHA-256
    scikit-learn lists is that of the same bytes)."""
    first = [FIGSHARE + FIGSHARE_IDS[name]] if name in FIGSHARE_IDS else [PEOPLE_COPY + name]
    return Item(f"lfw-{name.split('.')[0]}", f"LFW protocol file {name}", {f"lfw/{name}": sha},
                source=UMASS, licence=LFW_LICENCE, url=UMASS, known_hash=f"md5:{md5}", size=size,
                sources=(*first, UMASS + name))


def _mtcnn(name: str, sha: str, size: int) -> Item:
    sub = "" if name == "LICENSE" else "code/codes/MTCNNv2/model/"
    return Item(f"mtcnn-{name}", f"MTCNN model file {name}", {f"mtcnn/{name}": sha},
                source="https://github.com/kpzhang93/MTCNN_face_detection_alignment",
                licence="MIT (Kaipeng Zhang, 2016)", url="https://github.com/kpzhang93/MTCNN_face_detection_alignment",
                known_hash=f"sha256:{sha}", size=size, sources=(MTCNN_RAW + sub + name,))


CELEBA_PAGE = "http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_LICENCE = "CelebA: non-commercial research and educational use only (its agreement)"
CELEBA_ELSEWHERE = (f"Google Drive refused or is out of reach: the official alternatives are listed on {CELEBA_PAGE} "
                    "(the 'Google Drive' and 'Baidu Drive' links, after agreeing to its terms)")


def _celeba_list(item: str, name: str, folder: str, drive_id: str, md5: str) -> Item:
    """One official CelebA list from its Google Drive file (ID and md5 as torchvision's
    CelebA loader lists them). Not pinned by SHA-256 once there: the development copy's lists
    are cut to its 10,000 images."""
    return Item(item, f"CelebA {folder}/{name} (official file)",
                {f"celeba/{name}": None}, source=CELEBA_PAGE, licence=CELEBA_LICENCE, url=CELEBA_PAGE,
                known_hash=f"md5:{md5}", sources=(DRIVE + drive_id,),
                manual=f"{CELEBA_ELSEWHERE}. Download {folder}/{name} (md5 {md5}) into DATA/celeba/.")


BLUFR_PAGE = "https://shengcailiao.github.io/projects/Benchmark_of_Large-scale_Unconstrained_Face_Recognition.html"
BLUFR_SHA = "8f99875f50ee8a7b88659a15527f50ae9b8850a84df52b0b13ce32177895d51c"
# A public copy of the file inside BLUFR.zip (a third party's repository of the toolkit; the
# toolkit states no licence and asks only to be cited), checked by the SHA-256 of the original.
BLUFR_COPY = ("https://raw.githubusercontent.com/zch-90/face_recognition_evalation/master/"
              "BLUFR/config/lfw/blufr_lfw_config.mat")
# insightface's repository held both lists in src/megaface/ (later moved into its MegaFace testpack)
INSIGHTFACE_RAW = "https://raw.githubusercontent.com/deepinsight/insightface/ed525f0519f065b83644788082eadf951c08ec99/"


def _noises(name: str, sha: str, size: int) -> Item:
    """One of insightface's MegaFace noise lists, from its repository at a pinned commit."""
    which = name.split("_")[0]
    what = {"facescrub": "mislabelled FaceScrub probes", "megaface": "mislabelled MegaFace distractors"}[which]
    page = "https://github.com/deepinsight/insightface/tree/master/recognition/_evaluation_/megaface"
    return Item(f"megaface-noises-{which}", f"insightface's list of {what}",
                {f"megaface/{name}": sha}, source="https://github.com/deepinsight/insightface (src/megaface/)",
                licence="insightface's MegaFace rules (first line of the list)", groups=("test",), url=page,
                known_hash=f"sha256:{sha}", size=size, sources=(INSIGHTFACE_RAW + "src/megaface/" + name,),
                manual=(f"Download insightface's MegaFace testpack (links on {page}) and copy {name} "
                        f"from its data/ to DATA/megaface/ (SHA-256 {sha})."))


REGISTRY: tuple = (
    Item("lfw", "LFW, the original release (lfw.tgz): 13,233 250x250 JPEG photos of 5,749 people",
         {"lfw/lfw": None}, source=UMASS, licence=LFW_LICENCE, url=UMASS,
         known_hash="sha256:055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0",
         unpack="tgz", member="lfw", min_entries=5749, filename="lfw.tgz",
         alternative="lfw/lfw-deepfunneled", groups=("demo",),
         sources=(FIGSHARE + FIGSHARE_IDS["lfw.tgz"], UMASS + "lfw.tgz")),
    Item("lfw-deepfunneled", "LFW, deep-funneled release: 13,233 250x250 JPEG photos of 5,749 people",
         {"lfw/lfw-deepfunneled": None}, source=UMASS, licence=LFW_LICENCE, url=UMASS,
         known_hash="md5:68331da3eb755a505a502b5aacb3c201",
         size=111_000_000, unpack="tgz", member="lfw-deepfunneled", min_entries=5749,
         filename="lfw-deepfunneled.tgz", groups=("test",), sources=(UMASS + "lfw-deepfunneled.tgz",),
         manual=("No live public copy with a checksum is known (its only host, vis-www.cs.umass.edu, has been "
                 "down since early 2025). If you have lfw-deepfunneled.tgz (md5 68331da3eb755a505a502b5aacb3c201), "
                 "put it into DATA/.downloads/ and rerun; the tests that read it skip without it.")),
    _lfw_list("pairs.txt", "9f1ba174e4e1c508ff7cdf10ac338a7d",
              "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592", 155_335),
    _lfw_list("pairsDevTrain.txt", "4f27cbf15b2da4a85c1907eb4181ad21",
              "1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa", 56_579),
    _lfw_list("pairsDevTest.txt", "5132f7440eb68cf58910c8a45a2ac10b",
              "7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c", 26_002),
    _lfw_list("peopleDevTrain.txt", "54eaac34beb6d042ed3a7d883e247a21",
              "2e58df13ba4cc143189336e001cc2c195f1dfa5b29a6475c02857be353c2a2fa", 66_403),
    _lfw_list("peopleDevTest.txt", "e4bf5be0a43b5dcd9dc5ccfcb8fb19c5",
              "c3ed1f90499473401542101a56c14c1d82396bb8218c67a356d7460601047555", 28_334),
    _mtcnn("det1.prototxt", "adc1756d8515d3ca3a6a186c0fadab66fcae04bd8d3c6388e2fe8797a626dde4", 2_353),
    _mtcnn("det1.caffemodel", "d6085e7f48ba7e6b6f1b58964595f6bce5b97bcc4866751f7b4bdc98f920c096", 28_163),
    _mtcnn("det2.prototxt", "077686e89e606354f425366afdb2018777d93c6450b50e2c12301f8a97f6bb47", 3_159),
    _mtcnn("det2.caffemodel", "39b20f7a57bb8176cc9466cea4dfd52da6a6f876de60c7ab222a309f2d0ca08c", 407_910),
    _mtcnn("det3.prototxt", "a8385a3aad241acf5902b79466f9a359ea9f03a3b6dcbe1e1efa050908cf7d04", 3_931),
    _mtcnn("det3.caffemodel", "9d6098829a4d6d318f37cec42142465637fafe4c673f2e93b69495bf7ca23d2d", 1_558_412),
    _mtcnn("det4.prototxt", "a742853593551a25be2a23f4e2d20a7af976ce1dbb581de6d730776ae553b625", 13_509),
    _mtcnn("det4.caffemodel", "23dfa3f889a8dd5d1ffe7429229270892bcb19221ede13aaac8896ea060bfb76", 3_798_152),
    _mtcnn("LICENSE", "3a130527a18c2f5b07d58d7bf1e7bf8af2d5038a3e67e3bacdcff3fd057a5714", 1_070),
    _celeba_list("celeba-attr", "list_attr_celeba.txt", "Anno", "0B7EVK8r0v71pblRyaVFSWGxPY0U", "75e246fa4810816ffd6ee81facbd244c"),
    _celeba_list("celeba-identity", "identity_CelebA.txt", "Anno", "1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS", "32bd1bd63d3c78cd57e08160ec5ed1e2"),
    _celeba_list("celeba-partition", "list_eval_partition.txt", "Eval", "0B7EVK8r0v71pY0NSMzRuSXJEVkk", "d32c9cbf5e040fd4025c592c306e6668"),
    Item("celeba-images", "CelebA aligned-and-cropped images (202,599 178x218 JPEG)",
         {"celeba/img_align_celeba": None}, min_entries=1000, source=CELEBA_PAGE, licence=CELEBA_LICENCE,
         url=CELEBA_PAGE, known_hash="md5:00d2c5bc6d35e252742224ab0c1e8fcb", size=1_443_490_838, unpack="zip",
         member="img_align_celeba", filename="img_align_celeba.zip",
         alternative="celeba/img_align_celeba_89x109", sources=(DRIVE + "0B7EVK8r0v71pZjFTYXZWM3FlRnM",),
         manual=(f"{CELEBA_ELSEWHERE}. Download Img/img_align_celeba.zip (1.4 GB, md5 "
                 "00d2c5bc6d35e252742224ab0c1e8fcb) into DATA/.downloads/ and rerun: it is "
                 "checked and unpacked into DATA/celeba/img_align_celeba/. Without CelebA, the demo "
                 "runs its recognition half alone.")),
    Item("lfw-112x96", "LFW aligned to 112x96 by the original MTCNN and the SphereFace template "
         "(a third-party reference alignment the tests compare the project's own against)",
         {"lfw/lfw-112x96": None}, min_entries=5749,
         source="https://github.com/wy1iu/sphereface (preprocess/code/face_align_demo.m)",
         licence="LFW's terms (derived images); SphereFace code: MIT", groups=("test",),
         url="https://github.com/wy1iu/sphereface",
         manual=("No public download is pinned for it. Make it with SphereFace's preprocessing "
                 "(https://github.com/wy1iu/sphereface, preprocess/: face_detect_demo.m then "
                 "face_align_demo.m, MATLAB + Caffe) and copy its result/lfw-112X96/ to "
                 "DATA/lfw/lfw-112x96/; or, without MATLAB, align with this project: "
                 "tools/align_faces.py DATA/lfw/lfw-deepfunneled DATA/lfw/lfw-112x96 "
                 "(then the tests that compare the two alignments compare ours with itself).")),
    Item("lfw-112x96-list", "the image list of lfw/lfw-112x96 (written from the folder)",
         {"lfw/lfw-112x96_list.txt": None}, source="written by make data from lfw/lfw-112x96",
         licence="-", derive=write_lfw_list, derive_check=check_lfw_list, groups=("test",)),
    Item("blufr", "BLUFR protocol configuration for LFW (Liao et al. 2014)",
         {"lfw/blufr/blufr_lfw_config.mat": BLUFR_SHA}, source=BLUFR_PAGE,
         licence="BLUFR: no licence stated; its README asks to cite Liao et al. 2014 and the LFW report",
         groups=("test",), url=BLUFR_PAGE, known_hash=f"sha256:{BLUFR_SHA}", size=526_086,
         sources=(BLUFR_COPY,),
         manual=(f"Download BLUFR.zip from its project page ({BLUFR_PAGE}; formerly "
                 "http://www.cbsr.ia.ac.cn/users/scliao/projects/blufr/) and copy "
                 f"BLUFR/config/lfw/blufr_lfw_config.mat (SHA-256 {BLUFR_SHA}) to DATA/lfw/blufr/.")),
    _noises("facescrub_noises.txt", "36cf3633aaffde2c14eaeec9e29d54e623700d824acd4f1889a0c1a7f2610dd7", 14_698),
    _noises("megaface_noises.txt", "91b57df18d4d48bade1e1af170ebd0aa2f2b4f5ee9aedac6a5163d13db49ef09", 24_606),
    # Full-scale training only (group "full": not part of make data; --group full or --only).
    Item("casia-clean-list", "the cleaned CASIA-WebFace list ('0000045\\001.jpg 0' a kept image a line; "
         "mtdnn/clean_list.py)", {"casia/cleaned_list.txt": None},
         source="circulates on Baidu Pan (no stable address, no published checksum); read by insightface's "
                "get_dataset_webface as <root>_clean_list.txt",
         licence="as CASIA-WebFace (non-commercial research)", groups=("full",),
         url="https://github.com/deepinsight/insightface",
         manual=("No public download can be pinned: put your copy of the cleaned CASIA-WebFace list "
                 "(cleaned_list.txt, lines like '0000045\\001.jpg 0') at DATA/casia/cleaned_list.txt; "
                 "tools/prepare_casia.py records its SHA-256 with the counts. The paper's own list "
                 "(its footnote 3, http://zyb.im/research/mm16.html) could not be found.")),
)


def items(names=None, group: str | None = None) -> list:
    """Registry items by name (all when None, except the full-scale ones), optionally only those
    of a group (test, demo, full)."""
    known = {i.name: i for i in REGISTRY}
    if names:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise KeyError(f"unknown item(s) {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = [known[n] for n in names]
    else:
        chosen = [i for i in REGISTRY if group == "full" or "full" not in i.groups]
    return [i for i in chosen if group is None or group in i.groups]


# ---------------------------------------------------------------------------------- fetch

def manual_step(item: Item, root: Path, missing: list) -> ManualStep:
    text = item.manual.replace("DATA/", f"{root}/")
    return ManualStep(item, missing, f"{item.name}: {', '.join(missing)}\n  {text}")


def plan(chosen, root: Path) -> list:
    """(item, missing paths, action) for each item: action is present, differs (a local file
    that is not the official one: left alone, reported), download, unpack (an archive the
    user put into .downloads), derive or manual."""
    out = []
    for item in chosen:
        missing = missing_paths(item, root)
        if not missing:
            action = "present"
        elif local_differs(missing):
            action = "differs"
        elif item.derive is not None:
            action = "derive"
        elif item.unpack and (root / DOWNLOADS / item.archive_name).exists():
            action = "unpack"
        elif item.sources:
            action = "download"
        else:
            action = "manual"
        out.append((item, missing, action))
    return out


def user_archive(item: Item, root: Path) -> Path:
    """The archive that the user (or an earlier run) put into DATA/.downloads, checked."""
    path = root / DOWNLOADS / item.archive_name
    try:
        _check(path, item, delete=False)   # the user's file: reported, not deleted
    except SourceError as e:
        raise FetchError(f"{path}: {e}: not the official archive (a broken download?): "
                         f"download it again") from None
    return path


def human_size(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} KB"


def _announce(steps, log) -> None:
    """Say up front how much will be downloaded, and whose checksums are not the official ones."""
    todo = [i for i, _, a in steps if a == "download"]
    if todo:
        total = sum(i.size or 0 for i in todo)
        unknown = [i.name for i in todo if not i.size]
        log(f"to download: {len(todo)} item(s), {human_size(total)}" + (f" + {', '.join(unknown)} (size unknown)" if unknown else "")
            + f": {', '.join(i.name for i in todo)}")
    for origin, names in unofficial([i for i, _, _ in steps]).items():
        log(f"NOTE: checksums from {origin}, NOT the official ones, for {len(names)} item(s): {', '.join(names)}")


def unofficial(chosen) -> dict:
    """{registry file: [item names]} of the items checked by a registry file's checksums."""
    out = {}
    for item in chosen:
        if item.checksum_from:
            out.setdefault(item.checksum_from, []).append(item.name)
    return out


def _get(item: Item, action: str, root: Path, limit, opts: dict, log) -> str:
    """Download (or take the user's archive of) ``item``, unpack it, check it; its table state.
    Raises FetchError when it cannot be had."""
    t0 = time.time()
    archive = download(item, root, opts.get("mirror"), opts.get("progress", True), opts.get("overrides"), log) \
        if action == "download" else user_archive(item, root)
    unpack(item, archive, root, limit)
    if limit is None:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()          # unpacked: the archive is not kept
    still = missing_paths(item, root)
    if still:
        raise FetchError(f"after unpacking still {', '.join(still)}")
    part = f" (first {limit} files; the archive is kept in {DOWNLOADS}/)" if limit is not None else ""
    log(f"{'fetched' if action == 'download' else 'unpacked'} {item.name}{part} ({time.time() - t0:.1f} s)")
    return "fetched" + part


def _failed(item: Item, root: Path, missing: list, e: FetchError, report: Report) -> str:
    """Record an item every source of which failed: by hand when it says how, else failed."""
    if not item.manual:
        report.failed.append((item, str(e)))
        return f"failed: {e}"
    how = manual_step(item, root, missing).message.split("\n  ", 1)[-1]
    report.manual.append(ManualStep(item, missing, f"{item.name}: every source failed ({e})\n  {how}"))
    return f"failed: {e}; by hand: {how}"


def _one(item: Item, missing: list, action: str, root: Path, limit, opts: dict, report: Report, log) -> str | None:
    """Handle one item of the plan; its table state (None: a derived item, written at the end)."""
    if action == "present":
        report.present.append(item)
        return "ready"
    if action == "differs":
        why = (f"the local file is not the {whose(item)} one: {'; '.join(local_differs(missing))}; "
               f"it was left as it is: move it away and rerun to fetch the {whose(item)} file")
        report.failed.append((item, why))
        return f"failed: {why}"
    if action == "derive":
        return None
    if action == "manual":
        step = manual_step(item, root, missing)
        report.manual.append(step)
        return "by hand: " + step.message.split("\n  ", 1)[-1]
    try:
        state = _get(item, action, root, limit, opts, log)
    except FetchError as e:
        return _failed(item, root, missing, e, report)
    report.fetched.append(item)
    return state


def _derive(pending, root: Path, report: Report, log) -> dict:
    """Write the derived items (after the items they read); {name: table state}."""
    state = {}
    for item, missing in pending:
        if any(m.item.name == "lfw-112x96" for m in report.manual):
            report.manual.append(ManualStep(item, missing, f"{item.name}: written once lfw-112x96 is there"))
            state[item.name] = "by hand: written once lfw-112x96 is there"
            continue
        item.derive(root)
        log(f"wrote {item.name} ({', '.join(missing)})")
        report.derived.append(item)
        state[item.name] = f"written ({', '.join(missing)})"
    return state


def fetch(chosen, root: Path, mirror: str | None = None, progress: bool = True,
          log=print, overrides: dict | None = None, limits: dict | None = None) -> Report:
    """Bring ``root`` up to date for ``chosen`` items (see the module docstring). Every item is
    tried; what failed is in ``report.failed`` (why) or ``report.manual`` (what to do), and
    ``report.rows`` is the final table. ``limits``: item name -> unpack only the first N
    files of its archive (the archive is then kept for a later full unpack). An item checked
    by a registry file's checksum (:func:`with_registry`) says so in the log and its row. A
    machine fault (disk full, I/O error) is not an item's failure: it propagates."""
    root = Path(root)
    report = Report()
    steps = plan(chosen, root)
    _announce(steps, log)
    opts = {"mirror": mirror, "progress": progress, "overrides": overrides}
    state = {}
    for item, missing, action in steps:
        state[item.name] = _one(item, missing, action, root, (limits or {}).get(item.name), opts, report, log)
    state.update(_derive([(i, m) for i, m, a in steps if a == "derive"], root, report, log))
    report.unofficial = unofficial(chosen)
    report.rows = [(i.name, state[i.name] + (f" -- checksum from {i.checksum_from}, NOT the official one"
                                             if i.checksum_from else ""), human_size(i.size)) for i, _, _ in steps]
    return report


def table(report: Report, width: int = 100) -> str:
    """The final table of a run: item, state (ready / fetched / written / failed: why / by hand:
    how and where), size. Long states are wrapped under their row."""
    import textwrap
    name_w = max([len("item")] + [len(r[0]) for r in report.rows])
    lines = [f"{'item':{name_w}s}  {'size':>8s}  state", f"{'-' * name_w}  {'-' * 8}  {'-' * 40}"]
    for name, state, size in report.rows:
        wrapped = textwrap.wrap(state, max(30, width - name_w - 12), break_on_hyphens=False,
                                break_long_words=False) or [""]
        lines.append(f"{name:{name_w}s}  {size:>8s}  {wrapped[0]}")
        lines += [f"{'':{name_w}s}  {'':8s}  {w}" for w in wrapped[1:]]
    for origin, names in report.unofficial.items():   # loud, above and below the table
        banner = (f"NOTE: checksums from {origin}, NOT the official ones, for {len(names)} item(s) "
                  f"({', '.join(names)}): these are that mirror's bytes, not the official release's")
        lines = textwrap.wrap(banner, width) + lines + textwrap.wrap(banner, width)
    return "\n".join(lines)
