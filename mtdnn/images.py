"""Safe image loading and atomic image writing.

Every way a face photo can be unusable ends in one :class:`ImageError` whose message names the
file and the reason, so a tool can report it and carry on with the next image.

- missing, empty, undecodable (corrupt or not an image) files;
- truncated JPEG / PNG files: libjpeg decodes what is there and pads the rest with grey,
  so they are caught by their missing end marker (EOI / IEND) instead;
- grey-scale, 16-bit, alpha and CMYK images are converted to 8-bit BGR (grey is replicated
  into three channels, as MATLAB's ``repmat`` in the SphereFace code does);
- images above ``max_pixels`` are refused before any further work (OpenCV itself refuses
  over 2^30 pixels).

EXIF orientation is ignored, as MATLAB's ``imread`` ignores it: the pixels are taken as stored.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtdnn.fileio import atomic_write_bytes, is_machine_error  # noqa: F401  (re-exported: one atomic writer)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
# Leading bytes of the formats OpenCV reads: a file whose name has another suffix (or none, as
# the Yale faces' "subject01.glasses") is taken as an image when its content starts with one.
IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
               b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"P1": "PBM", b"P2": "PGM",
               b"P3": "PPM", b"P4": "PBM", b"P5": "PGM", b"P6": "PPM"}
ACCEPTED = ", ".join(IMAGE_EXTENSIONS) + ", or any name whose content is JPEG, PNG, GIF, BMP, TIFF, WebP or PNM"
DEFAULT_MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is a short machine-friendly word."""

    def __init__(self, path, reason: str, detail: str = ""):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def is_image_file(path) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def sniff_image(path) -> str | None:
    """The image format named by a file's first bytes ('JPEG', 'PNG', 'GIF', ...), or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, kind in IMAGE_MAGIC.items():
        if head.startswith(magic) and (len(magic) > 2 or kind == "BMP" or head[2:3].isspace()):
            return kind
    return None


@dataclass
class TreeScan:
    """What :func:`scan_images` found: the images (sorted relative POSIX paths) and, for every
    entry it did not take, ``(relative path, reason)``."""
    paths: list[str] = field(default_factory=list)
    not_images: list[tuple[str, str]] = field(default_factory=list)  # other files: harmless
    problems: list[tuple[str, str]] = field(default_factory=list)    # broken links, unreadable files and folders
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)  # also in problems

    def skipped_kinds(self) -> str:
        """What was skipped as not an image, by kind: '.txt files: 2, hidden file: 1'."""
        kinds: dict[str, int] = {}
        for _, reason in self.not_images:
            kinds[reason] = kinds.get(reason, 0) + 1
        return ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> str:
        """'3 skipped as not images (.txt files: 2, ...), 1 unreadable (a.jpg: broken link ...)' or ''."""
        parts = []
        if self.not_images:
            parts.append(f"{len(self.not_images)} skipped as not images ({self.skipped_kinds()})")
        if self.problems:
            parts.append(f"{len(self.problems)} unreadable (" + "; ".join(
                f"{rel}: {reason}" for rel, reason in self.problems[:5])
                + ("; ..." if len(self.problems) > 5 else "") + ")")
        return ", ".join(parts)


def _skipped_folder(full: str, real: str, root_real: str, excluded: set, visited: set) -> str | None:
    """Why :func:`scan_images` does not enter the folder ``full`` (real path ``real``), or None."""
    name = os.path.basename(full)
    link = os.path.islink(full)
    inside = real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)
    above = root_real.startswith(real.rstrip(os.sep) + os.sep)
    return ("hidden folder" if name.startswith(".") else "the output folder" if real in excluded
            else "link to a folder inside the tree" if link and inside
            else "link to a folder above the tree" if link and above
            else "link to a folder already listed" if real in visited else None)


def _take_file(scan: TreeScan, rel: str, full: str, name: str) -> None:
    """File ``full`` into ``scan``: an image, not an image, or a problem (the rule of
    :func:`scan_images`); a fault of the machine is raised."""
    if name.startswith("."):
        scan.not_images.append((rel, "hidden file"))
    elif not os.path.exists(full):
        scan.problems.append((rel, f"broken link (-> {os.readlink(full)})" if os.path.islink(full)
                              else "vanished"))
    elif not os.path.isfile(full):
        scan.not_images.append((rel, "not a regular file"))
    elif is_image_file(name):
        scan.paths.append(rel)
    else:
        try:
            kind = sniff_image(full)
        except OSError as e:
            if is_machine_error(e) and e.errno not in (errno.EACCES, errno.EPERM):
                raise
            scan.problems.append((rel, f"unreadable ({e.strerror})"))
            return
        if kind:
            scan.paths.append(rel)
        else:
            suffix = Path(name).suffix.lower()
            scan.not_images.append((rel, f"{suffix} files" if suffix else "no extension, not an image"))


def scan_images(root, exclude=()) -> TreeScan:
    """Every image below ``root`` (recursive), by name (:data:`IMAGE_EXTENSIONS`) or, for other
    names, by content (:func:`sniff_image`): the one tree scan of every tool.

    The rule for links and hidden entries (docs/reliability.md, "Folders in trees"):

    - hidden entries (a name starting with ``.``: ``.Trash-0/``, ``.thumbnails/``, ``.DS_Store``)
      are skipped, files and folders alike;
    - a link to a file is followed (the image is taken under the link's name);
    - a link to a folder outside the tree is followed, like a folder; a link to a folder inside
      the tree (or to one of its parents) is skipped, since that folder is scanned under its own
      name; of two links to one outside folder the first in sorted order is followed.

    So the result does not depend on the order in which the system lists a folder. Nothing is
    dropped without a word: skipped entries and files that are not images are listed in
    ``not_images``; broken links, unreadable files and folders in ``problems``. Folders in
    ``exclude`` (e.g. an output folder inside ``root``) are not entered (and named once); the
    lock files of their runs (:func:`mtdnn.fileio.output_lock_path`) are part of them."""
    from mtdnn.fileio import output_lock_path
    root = Path(root)
    scan = TreeScan()
    excluded = {os.path.realpath(p) for p in exclude}
    own_locks = {os.path.realpath(output_lock_path(p)) for p in exclude}
    root_real = os.path.realpath(root)
    visited = {root_real}  # links are followed: a link to a parent must not loop

    def onerror(err: OSError):
        rel = os.path.relpath(err.filename, root) if err.filename else "."
        if is_machine_error(err) and err.errno not in (errno.EACCES, errno.EPERM):
            raise err
        scan.problems.append((Path(rel).as_posix(), f"unreadable folder ({err.strerror})"))
        scan.unreadable_folders.append(scan.problems[-1])

    for folder, dirs, files in os.walk(root, onerror=onerror, followlinks=True):
        rel_folder = Path(folder).relative_to(root)
        dirs.sort()  # decisions below must not depend on the order the system lists entries in
        for d in list(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            why = _skipped_folder(os.path.join(folder, d), real, root_real, excluded, visited)
            if why:
                dirs.remove(d)
                scan.not_images.append(((rel_folder / d).as_posix() + "/", why))
            else:
                visited.add(real)
        for name in files:
            full = os.path.join(folder, name)
            if name.startswith(".") and os.path.realpath(full) in own_locks:
                continue
            _take_file(scan, (rel_folder / name).as_posix(), full, name)
    scan.paths.sort()
    return scan


def _truncated(data: bytes) -> bool:
    tail = data[-1024:].rstrip(b"\x00\r\n ")  # some writers pad after the end marker
    if data[:2] == b"\xff\xd8":  # JPEG: must end with EOI
        return not tail.endswith(b"\xff\xd9")
    if data[:8] == b"\x89PNG\r\n\x1a\n":  # PNG: the last chunk is IEND (+ 4-byte CRC)
        return b"IEND" not in tail[-12:]
    return False


def decode_image(data: bytes, path="<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to H x W x 3 uint8 BGR; raises :class:`ImageError`."""
    if len(data) == 0:
        raise ImageError(path, "empty file")
    if _truncated(data):
        raise ImageError(path, "truncated", "no end-of-image marker")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:  # e.g. over OpenCV's own pixel limit
        if e.code == cv2.Error.StsNoMem:  # the machine's memory, not the image: the run stops
            from mtdnn.fileio import MachineError
            raise MachineError(f"{path}: out of memory decoding it ({str(e).strip().splitlines()[-1]}); free "
                               f"memory or leave this image out") from None
        raise ImageError(path, "undecodable", str(e).strip().splitlines()[-1]) from None
    if image is None or image.size == 0:
        raise ImageError(path, "undecodable", "corrupt or not an image")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(path, "too large", f"{image.shape[1]}x{image.shape[0]} px > {max_pixels}")
    return image  # IMREAD_COLOR gives 8-bit BGR for grey, 16-bit, alpha and CMYK input alike


def load_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 BGR; raises :class:`ImageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        reason = "not a file" if path.exists() else "broken link" if path.is_symlink() else "missing"
        raise ImageError(path, reason)
    try:
        data = path.read_bytes()
    except OSError as e:
        if is_machine_error(e) and e.errno not in (errno.EACCES, errno.EPERM):
            raise  # an I/O error of the disk is not a property of the image: the caller stops
        raise ImageError(path, "unreadable", e.strerror or str(e)) from None
    return decode_image(data, path, max_pixels)


def encode_image(image: np.ndarray, suffix: str, jpeg_quality: int = 95) -> bytes:
    """Encode an image for a file of type ``suffix`` ('.jpg', '.png', ...)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode an image as {suffix}")
    return buf.tobytes()


def save_image(path, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Encode ``image`` by ``path``'s extension and write it atomically."""
    atomic_write_bytes(path, encode_image(image, Path(path).suffix or ".png", jpeg_quality))
