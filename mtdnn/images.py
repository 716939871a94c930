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

from pathlib import Path

import cv2
import numpy as np

from mtdnn.fileio import atomic_write_bytes  # noqa: F401  (re-exported: one atomic writer)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is a short machine-friendly word."""

    def __init__(self, path, reason: str, detail: str = ""):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def is_image_file(path) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


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
        raise ImageError(path, "missing" if not path.exists() else "not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
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
