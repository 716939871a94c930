"""Fetch the data the demo and the tests read (``make data``, ``tools/fetch_data.py``).

A registry of :class:`Item` records says, for every piece of the data folder, where it comes
from (URL and checksum, or a licence form the user fills in), how it is unpacked and which
paths it provides. :func:`fetch` brings a data folder up to date:

- an item whose paths are all present (single files: with the right SHA-256) is used as it is;
  checking a complete folder takes milliseconds (a few stats and the hashes of ~8 MB of
  small files);
- a downloadable item is fetched with pooch (checksummed; a broken transfer resumes from the
  bytes already on disk, through HTTP Range requests, with a progress bar) into
  ``DATA/.downloads/``, unpacked into a temporary folder beside its destination and renamed
  into place, so a folder appears whole or not at all;
- an item behind a licence form is listed with what to download, from where and where to put
  it (:class:`ManualStep`); an archive the user put into ``DATA/.downloads/`` is checked and
  unpacked like a downloaded one;
- a derived item (the LFW 112x96 image list) is written from what is already there.

Layout and sources: docs/data.md.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .fileio import atomic_write_text, sha256_file

UMASS = "http://vis-www.cs.umass.edu/lfw/"
MTCNN_RAW = "https://raw.githubusercontent.com/kpzhang93/MTCNN_face_detection_alignment/master/"
DOWNLOADS = ".downloads"


class FetchError(RuntimeError):
    """A download or unpack failed (network, checksum, archive): the run stops, exit status 1."""


@dataclass(frozen=True)
class Item:
    """One piece of the data folder.

    ``provides`` maps each path it creates (relative to the data folder) to its SHA-256, or to
    None for a folder (checked by ``min_entries`` entries) or a file whose bytes are not pinned.
    ``url``/``known_hash``: a download (``"md5:..."`` or ``"sha256:..."``, as pooch spells them);
    ``unpack`` is ``"tgz"``, ``"zip"`` or None (a plain file copied to the one path it provides);
    ``member``: the archive's top folder that becomes ``provides``' one folder. ``manual``:
    the instructions when the source needs a licence form (then ``url`` is where the form is).
    ``derive``: a function(data_root) that writes the item from other items. ``alternative``:
    another folder that serves the tools as well (CelebA's half-size development subset)."""
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

    @property
    def archive_name(self) -> str:
        """The file name of the download (or of the archive the user puts into .downloads)."""
        return self.filename or self.url.rsplit("/", 1)[-1]


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
        elif digest is not None and sha256_file(path) != digest:
            out.append(f"{rel} (SHA-256 differs from the official file's: delete it and rerun)")
    return out


# ---------------------------------------------------------------------------------- download

class ResumingDownloader:
    """A pooch downloader that resumes: the bytes go to ``<final name>.part`` in the downloads
    folder, a rerun asks the server for the rest (``Range: bytes=N-``) and appends. Only a
    complete transfer is handed to pooch, which checks the checksum before it keeps the file."""

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


def download(item: Item, root: Path, mirror: str | None = None, progress: bool = True) -> Path:
    """The checksummed archive or file of ``item`` in ``root/.downloads`` (fetched if needed)."""
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")   # our own lines say what is fetched
    cache = root / DOWNLOADS
    cache.mkdir(parents=True, exist_ok=True)
    url = f"{mirror.rstrip('/')}/{item.archive_name}" if mirror else item.url
    part = cache / f"{item.archive_name}.part"
    try:
        return Path(pooch.retrieve(url, item.known_hash, fname=item.archive_name, path=cache,
                                   downloader=ResumingDownloader(part, progress), progressbar=False))
    except ValueError as e:   # pooch: the checksum does not match (the file was deleted)
        raise FetchError(f"{item.name}: {url}: {e}") from None
    except (requests.RequestException, OSError) as e:
        kept = f"; {part.stat().st_size} bytes kept in {part}, a rerun resumes" if part.exists() else ""
        raise FetchError(f"{item.name}: downloading {url} failed: {e}{kept}") from None


def _safe_members(names, dest: Path):
    """Refuse an archive with a member that would land outside ``dest`` (``../``, absolute)."""
    base = dest.resolve()
    for name in names:
        if not (dest / name).resolve().is_relative_to(base):
            raise FetchError(f"archive member {name!r} would be written outside {dest}")


def unpack(item: Item, archive: Path, root: Path) -> None:
    """Unpack ``archive`` (or copy a plain file) into the one path ``item`` provides, atomically."""
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
                _safe_members(zf.namelist(), tmp)
                zf.extractall(tmp)
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

def write_lfw_list(root: Path) -> None:
    """``lfw/lfw-112x96_list.txt``: ``NAME/NAME_%04d.jpg label`` for every image of
    ``lfw/lfw-112x96``, label = the person's index. The order and CRLF line ends are those of
    the third-party list the project was developed with (names compared upper-cased, as
    Windows does), so the file comes out byte for byte the same."""
    folder = root / "lfw" / "lfw-112x96"
    people = sorted((p.name for p in folder.iterdir() if p.is_dir()), key=str.upper)
    lines = [f"{name}/{img} {label}\r\n" for label, name in enumerate(people)
             for img in sorted((f.name for f in (folder / name).iterdir() if f.suffix == ".jpg"), key=str.upper)]
    atomic_write_text(root / "lfw" / "lfw-112x96_list.txt", "".join(lines))


# ---------------------------------------------------------------------------------- registry

def _umass(name: str, md5: str, sha: str, size: int) -> Item:
    return Item(f"lfw-{name.split('.')[0]}", f"LFW protocol file {name}", {f"lfw/{name}": sha},
                source=UMASS, licence="LFW: research use (no licence given by its authors)",
                url=UMASS + name, known_hash=f"md5:{md5}", size=size)


def _mtcnn(name: str, sha: str, size: int) -> Item:
    sub = "" if name == "LICENSE" else "code/codes/MTCNNv2/model/"
    return Item(f"mtcnn-{name}", f"MTCNN model file {name}", {f"mtcnn/{name}": sha},
                source="https://github.com/kpzhang93/MTCNN_face_detection_alignment",
                licence="MIT (Kaipeng Zhang, 2016)", url=MTCNN_RAW + sub + name,
                known_hash=f"sha256:{sha}", size=size)


CELEBA_FORM = ("CelebA is distributed from Google Drive / Baidu after agreeing to its terms "
               "(http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, 'Align&Cropped Images' and 'Anno', 'Eval')")

REGISTRY: tuple = (
    Item("lfw-deepfunneled", "LFW, deep-funneled release: 13,233 250x250 JPEG photos of 5,749 people",
         {"lfw/lfw-deepfunneled": None}, source=UMASS,
         licence="LFW: research use (no licence given by its authors)",
         url=UMASS + "lfw-deepfunneled.tgz", known_hash="md5:68331da3eb755a505a502b5aacb3c201",
         size=111_000_000, unpack="tgz", member="lfw-deepfunneled", min_entries=5749),
    _umass("pairs.txt", "9f1ba174e4e1c508ff7cdf10ac338a7d",
           "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592", 155_335),
    _umass("pairsDevTrain.txt", "4f27cbf15b2da4a85c1907eb4181ad21",
           "1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa", 56_579),
    _umass("pairsDevTest.txt", "5132f7440eb68cf58910c8a45a2ac10b",
           "7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c", 26_002),
    _umass("peopleDevTrain.txt", "54eaac34beb6d042ed3a7d883e247a21",
           "2e58df13ba4cc143189336e001cc2c195f1dfa5b29a6475c02857be353c2a2fa", 66_403),
    _umass("peopleDevTest.txt", "e4bf5be0a43b5dcd9dc5ccfcb8fb19c5",
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
    Item("celeba-lists", "CelebA attribute, identity and split lists (official files)",
         {"celeba/list_attr_celeba.txt": None, "celeba/identity_CelebA.txt": None,
          "celeba/list_eval_partition.txt": None},
         source="http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
         licence="CelebA: non-commercial research and educational use only (its agreement)",
         url="http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
         manual=(f"{CELEBA_FORM}. Download Anno/list_attr_celeba.txt (md5 75e246fa4810816ffd6ee81facbd244c), "
                 "Anno/identity_CelebA.txt (md5 32bd1bd63d3c78cd57e08160ec5ed1e2) and "
                 "Eval/list_eval_partition.txt (md5 d32c9cbf5e040fd4025c592c306e6668) into DATA/celeba/.")),
    Item("celeba-images", "CelebA aligned-and-cropped images (202,599 178x218 JPEG)",
         {"celeba/img_align_celeba": None}, min_entries=1000,
         source="http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
         licence="CelebA: non-commercial research and educational use only (its agreement)",
         url="http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
         known_hash="md5:00d2c5bc6d35e252742224ab0c1e8fcb", size=1_443_490_838, unpack="zip",
         member="img_align_celeba", filename="img_align_celeba.zip",
         alternative="celeba/img_align_celeba_89x109",
         manual=(f"{CELEBA_FORM}. Download Img/img_align_celeba.zip (1.4 GB, md5 "
                 "00d2c5bc6d35e252742224ab0c1e8fcb) into DATA/.downloads/ and rerun: it is "
                 "checked and unpacked into DATA/celeba/img_align_celeba/.")),
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
         licence="-", derive=write_lfw_list, groups=("test",)),
    Item("blufr", "BLUFR protocol configuration for LFW (Liao et al. 2014)",
         {"lfw/blufr/blufr_lfw_config.mat": "8f99875f50ee8a7b88659a15527f50ae9b8850a84df52b0b13ce32177895d51c"},
         source="http://www.cbsr.ia.ac.cn/users/scliao/projects/blufr/",
         licence="BLUFR: research use, cite Liao et al. 2014", groups=("test",),
         url="http://www.cbsr.ia.ac.cn/users/scliao/projects/blufr/",
         manual=("Download BLUFR.zip from http://www.cbsr.ia.ac.cn/users/scliao/projects/blufr/ "
                 "and copy BLUFR/config/lfw/blufr_lfw_config.mat to DATA/lfw/blufr/.")),
    Item("megaface-noises", "lists of mislabelled FaceScrub probes and MegaFace distractors",
         {"megaface/facescrub_noises.txt": "36cf3633aaffde2c14eaeec9e29d54e623700d824acd4f1889a0c1a7f2610dd7",
          "megaface/megaface_noises.txt": "91b57df18d4d48bade1e1af170ebd0aa2f2b4f5ee9aedac6a5163d13db49ef09"},
         source="https://github.com/deepinsight/insightface (recognition/_evaluation_/megaface)",
         licence="insightface's MegaFace rules (first line of each list)", groups=("test",),
         url="https://github.com/deepinsight/insightface/tree/master/recognition/_evaluation_/megaface",
         manual=("Download insightface's MegaFace testpack (Baidu or Google Drive links on "
                 "https://github.com/deepinsight/insightface/tree/master/recognition/_evaluation_/megaface) "
                 "and copy facescrub_noises.txt and megaface_noises.txt from its data/ to DATA/megaface/.")),
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
    """(item, missing paths, action) for each item: action is present, download, unpack (an
    archive the user put into .downloads), derive or manual."""
    out = []
    for item in chosen:
        missing = missing_paths(item, root)
        if not missing:
            action = "present"
        elif item.derive is not None:
            action = "derive"
        elif item.manual is None:
            action = "download"
        elif item.unpack and (root / DOWNLOADS / item.archive_name).exists():
            action = "unpack"
        else:
            action = "manual"
        out.append((item, missing, action))
    return out


def user_archive(item: Item, root: Path) -> Path:
    """The archive of a licence-form item that the user put into DATA/.downloads, checked."""
    import pooch

    path = root / DOWNLOADS / item.archive_name
    algo, _, want = item.known_hash.partition(":")
    if pooch.file_hash(str(path), alg=algo) != want:
        raise FetchError(f"{path}: {algo} differs from the official {want}: download it again")
    return path


def fetch(chosen, root: Path, mirror: str | None = None, progress: bool = True,
          log=print) -> Report:
    """Bring ``root`` up to date for ``chosen`` items (see the module docstring)."""
    root = Path(root)
    report = Report()
    pending_derive = []
    for item, missing, action in plan(chosen, root):
        if action == "present":
            report.present.append(item)
        elif action == "download":
            t0 = time.time()
            archive = download(item, root, mirror, progress)
            unpack(item, archive, root)
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()          # unpacked: the archive is not kept
            still = missing_paths(item, root)
            if still:
                raise FetchError(f"{item.name}: after download still {', '.join(still)}")
            log(f"fetched {item.name} ({time.time() - t0:.1f} s)")
            report.fetched.append(item)
        elif action == "unpack":
            unpack(item, user_archive(item, root), root)
            log(f"unpacked {item.name}")
            report.fetched.append(item)
        elif action == "derive":
            pending_derive.append((item, missing))
        else:
            report.manual.append(manual_step(item, root, missing))
    for item, missing in pending_derive:   # after the items they read
        sources_missing = any(m.item.name == "lfw-112x96" for m in report.manual)
        if sources_missing:
            report.manual.append(ManualStep(item, missing, f"{item.name}: written once lfw-112x96 is there"))
            continue
        item.derive(root)
        log(f"wrote {item.name}")
        report.derived.append(item)
    return report
