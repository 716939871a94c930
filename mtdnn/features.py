"""Batched feature extraction (pycaffe, OpenCV's DNN or ONNX Runtime: ``mtdnn.inference``), streamed to disk and resumable.

Input: aligned 112x96 BGR images (the net's input blob fixes the size), preprocessed as in
training: ``(x - 127.5) * 0.0078125`` (= / 128), NCHW float32. Output: the named blob
(default ``fc5``), flattened per image; ``mirror="concat"`` appends the features of the
horizontally flipped image (SphereFace's LFW rule), ``"sum"`` adds them (insightface's);
``l2norm`` scales each final vector to unit length.

``extract_to_file`` writes ``<prefix>.npy`` (float32 N x D) through a memory map into
``<prefix>.npy.partial`` (its blocks reserved up front with ``posix_fallocate``, so a full disk
is an error before the first row, never a SIGBUS) and records the rows done in
``<prefix>.progress.json`` after every batch; a rerun with the same inputs and settings
continues from there, and the ``.partial`` file is renamed to ``.npy`` only when every row
is written. "The same inputs" is decided on content (:func:`source_keys`): the deploy's and
the weights' bytes and the image list's, not their paths.

Images are read with the strict loader (:func:`mtdnn.images.load_image`): an unreadable,
truncated or wrongly sized crop is a failure of that image, listed in
``<prefix>.failures.txt``, and left out of the output (names, rows and labels alike); the
run goes on. A net that gives NaN or infinite values stops the run (:class:`FeatureError`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mtdnn import datasets
from mtdnn.evaluation.features_io import bin_path, feature_paths, write_bin, write_names
from mtdnn.fileio import atomic_write, atomic_write_json, content_key, is_machine_error
from mtdnn.records import read_lines, unescape_field, write_failures
from mtdnn.images import ImageError, load_image

PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125  # 1 / 128
MIRROR_MODES = ("none", "concat", "sum")


class FeatureError(ValueError):
    """The net, not an image, is wrong (e.g. it gives NaN): the run stops."""


# ---------------------------------------------------------------------------- inputs
def read_image_list(path) -> tuple[list[str], np.ndarray | None]:
    """An image list, ``path [label]`` per line: (paths, integer labels or None).

    Lists with labels are read by ``mtdnn.datasets.read_image_list`` (non-integer labels
    are numbered in sorted order); a list of bare paths has no labels.
    """
    lines = [line for _, line in read_lines(path)]
    if not lines:
        raise ValueError(f"{path}: no images listed")
    if all(len(l.split()) == 1 for l in lines):
        if len(set(lines)) != len(lines):
            raise ValueError(f"{path}: a path is listed twice")
        return [unescape_field(l) for l in lines], None
    if any(len(l.split()) == 1 for l in lines):
        raise ValueError(f"{path}: some lines have a label and some do not")
    samples = datasets.read_image_list(path)
    ids = [s.identity for s in samples]
    labels = np.array([int(i) for i in ids]) if all(i.lstrip("-").isdigit() for i in ids) \
        else datasets.assign_labels(samples)
    return [s.path for s in samples], labels


def list_tree(root) -> list[str]:
    """Image files below ``root`` as sorted relative POSIX paths (:func:`mtdnn.datasets.list_images`, the one tree scan:
    by suffix, or by content for other names). A broken link is listed too (it becomes a failure
    of that image); an unreadable folder, or a tree without images, raises naming what was skipped."""
    return datasets.list_images(root)


def load_crop(path, size: tuple[int, int] = (112, 96)) -> np.ndarray:
    """BGR uint8 H x W x 3 by the strict loader; :class:`ImageError` naming the file when it is
    missing, unreadable, truncated or not ``size``."""
    img = load_image(path)
    if img.shape[:2] != tuple(size):
        raise ImageError(path, "wrong size", f"{img.shape[0]}x{img.shape[1]} (HxW), the net expects "
                         f"aligned {size[0]}x{size[1]} faces")
    return img


def preprocess(images: Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 HWC images -> float32 NCHW, (x - 127.5) * 0.0078125."""
    x = np.stack(images).astype(np.float32)
    x -= PIXEL_MEAN
    x *= PIXEL_SCALE
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------- network
def load_net(deploy, weights=None, *, blob: str = "fc5", engine: str = "auto", gpu: int | None = None):
    """The deploy net for extracting ``blob`` (``mtdnn.inference``: engine caffe / opencv /
    onnxruntime / auto, CPU or GPU ``gpu``; weights optional: Caffe's fillers otherwise)."""
    from mtdnn import inference
    return inference.load(deploy, weights, engine=engine, gpu=gpu, outputs=[blob])


def input_size(net) -> tuple[int, int]:
    """(H, W) of the net's input."""
    return tuple(net.input_shape[1:3])


def forward_blob(net, batch: np.ndarray, blob: str = "fc5") -> np.ndarray:
    """Run a preprocessed NCHW batch through ``net`` up to ``blob``; (N, D) float32 copy."""
    return net.forward(batch, [blob])[blob].reshape(len(batch), -1)


def batch_features(net, images: Sequence[np.ndarray], blob: str = "fc5", mirror: str = "none",
                   l2norm: bool = False) -> np.ndarray:
    """Features of BGR images, with their mirror images in the same forward pass."""
    if mirror not in MIRROR_MODES:
        raise ValueError(f"mirror must be one of {', '.join(MIRROR_MODES)}, not {mirror!r}")
    n = len(images)
    if mirror != "none":
        images = list(images) + [img[:, ::-1] for img in images]
    f = forward_blob(net, preprocess(images), blob)
    if mirror == "concat":
        f = np.concatenate([f[:n], f[n:]], axis=1)
    elif mirror == "sum":
        f = f[:n] + f[n:]
    if l2norm:
        norm = np.linalg.norm(f, axis=1, keepdims=True)
        if (norm == 0).any():
            raise ValueError("a feature has zero norm and cannot be L2-normalised")
        f = f / norm
    return f.astype(np.float32)


def feature_dim(net, blob: str, mirror: str) -> int:
    d = int(np.prod(net.blob_shape(blob)))
    return 2 * d if mirror == "concat" else d


def extract_features(net, paths: Sequence[str], root=None, *, blob: str = "fc5",
                     batch_size: int = 32, mirror: str = "none", l2norm: bool = False,
                     progress: bool = True) -> np.ndarray:
    """Features of ``paths`` (relative to ``root``) in memory, N x D float32."""
    from tqdm import tqdm
    size = input_size(net)
    root = Path(root) if root is not None else Path()
    out = np.empty((len(paths), feature_dim(net, blob, mirror)), dtype=np.float32)
    with tqdm(total=len(paths), unit="img", desc=f"extract {blob}", disable=not progress) as bar:
        for a in range(0, len(paths), batch_size):
            imgs = [load_crop(root / p, size) for p in paths[a:a + batch_size]]
            out[a:a + len(imgs)] = check_finite(batch_features(net, imgs, blob, mirror, l2norm),
                                                paths[a:a + batch_size], blob)
            bar.update(len(imgs))
    return out


def check_finite(f: np.ndarray, paths: Sequence[str], blob: str) -> np.ndarray:
    """``f`` when every value is finite; otherwise :class:`FeatureError` (the net is wrong,
    not the image: untrained or missing weights, a deploy that does not match them)."""
    bad = ~np.isfinite(f).all(axis=1)
    if bad.any():
        first = next(p for p, b in zip(paths, bad) if b)
        raise FeatureError(f"the net gives NaN or infinite values in blob {blob!r} ({int(bad.sum())} of "
                           f"{len(f)} images of this batch, e.g. {first}): the weights are missing, "
                           f"untrained or do not belong to this deploy; nothing was written as features")
    return f


# ---------------------------------------------------------------------------- to disk
def _list_digest(paths: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()


def source_keys(deploy, weights=None, image_list=None) -> dict:
    """What a feature set is made from, by content: the SHA-256 of the deploy, of the weights
    (None: the fillers' random weights) and of the image list file (None: a tree). Compared
    on reuse and resume, so retrained weights at the same path are a different run."""
    key = lambda f: content_key(f)["sha256"] if f is not None else None  # noqa: E731
    return {"deploy_sha256": key(deploy), "weights_sha256": key(weights), "list_sha256": key(image_list)}


def images_digest(paths: Sequence[str], root=None, progress: bool = False) -> str:
    """sha256 over every image's path and the sha256 of its bytes ("missing" for a file that
    is not there): reuse and resume are keyed on the crops' content, so a crop replaced at the
    same path (aligned again, another detector) is extracted again. A read error of the
    machine (EIO) propagates: it is never taken for a property of the image."""
    from tqdm import tqdm
    root = Path(root) if root is not None else Path()
    h = hashlib.sha256()
    for p in tqdm(paths, desc="key crops", unit="img", disable=not progress or len(paths) < 1000):
        try:
            with open(root / p, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            if is_machine_error(e) and e.errno not in (errno.EACCES, errno.EPERM):
                raise
            digest = f"unreadable: {e.strerror}"
        except ValueError:  # a name that cannot be a path (NUL)
            digest = "unreadable"
        h.update(f"{p}\0{digest}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _differences(old: dict, new: dict) -> str:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(changed)


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` now: a memory map over a sparse file that the disk cannot
    hold ends in SIGBUS at some later row; this raises OSError(ENOSPC) instead."""
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def _copy_rows(mm: np.ndarray, rows: list[int], tmp: Path, target: Path, chunk: int = 65536) -> None:
    """``mm[rows]`` to ``target`` through ``tmp`` (reserved, copied in chunks, fsync'ed, renamed):
    a million-row feature set is never held in memory at once."""
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=mm.dtype, shape=(len(rows), mm.shape[1]))
    try:
        _reserve(tmp)
        for a in range(0, len(rows), chunk):
            out[a:a + chunk] = mm[rows[a:a + chunk]]
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # a read-only disk fails the cleanup too: report the first error
            tmp.unlink()
        raise


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def extract_to_file(net, paths: Sequence[str], out_prefix, *, root=None, labels=None,
                    blob: str = "fc5", batch_size: int = 32, mirror: str = "none",
                    l2norm: bool = False, bin_dir=None, bin_suffix: str = "_mtdnn_112x96",
                    info: dict | None = None, record: dict | None = None, restart: bool = False,
                    progress: bool = True, on_batch: Callable[[int], None] | None = None) -> dict:
    """Extract features of ``paths`` to ``<out_prefix>.npy`` (+ ``.names.txt``,
    ``.labels.npy`` when ``labels`` is given, ``.meta.json``, and ``.failures.txt`` listing
    the images that could not be used), resumably.

    ``bin_dir``: also write one devkit ``.bin`` per image, ``bin_dir/<path><bin_suffix>.bin``.
    ``info``: facts compared on reuse and resume (e.g. :func:`source_keys`); ``record``:
    facts only recorded in the meta file (e.g. the paths of the deploy and weights). A rerun
    with the same list and settings continues after the last completed batch, or does nothing
    when the output is complete; with other settings it raises naming what changed, unless
    ``restart``. ``on_batch(rows_done)`` is called after each batch.
    Returns the meta dict (``failed``: the number of images left out).
    """
    if mirror not in MIRROR_MODES:
        raise ValueError(f"mirror must be one of {', '.join(MIRROR_MODES)}, not {mirror!r}")
    out = _Outputs.of(out_prefix)
    out.files["features"].parent.mkdir(parents=True, exist_ok=True)
    paths = list(paths)
    n, dim = len(paths), feature_dim(net, blob, mirror)
    settings = {"n": n, "dim": dim, "blob": blob, "mirror": mirror, "l2norm": bool(l2norm),
                "list_sha1": _list_digest(paths), "images_sha256": images_digest(paths, root, progress),
                "bin_dir": str(bin_dir) if bin_dir else None,
                "bin_suffix": bin_suffix if bin_dir else None, **(info or {})}
    if not restart and out.files["features"].exists() and out.files["meta"].exists():
        meta = json.loads(out.files["meta"].read_text())
        if meta.get("settings") == settings:
            return {**meta, "skipped": True}  # already complete
    mm, done, failed = _open_partial(out, settings, restart)
    size = input_size(net)
    t0 = time.time()
    _extract_batches(net, paths, Path(root) if root is not None else Path(), mm, done, failed,
                     size=size, blob=blob, batch_size=batch_size, mirror=mirror, l2norm=l2norm, bin_dir=bin_dir,
                     bin_suffix=bin_suffix, progress=progress, on_batch=on_batch,
                     save_state=lambda b: atomic_write_json(out.progress, {
                         "done": b, "failed": {str(r): v for r, v in failed.items()}, "settings": settings}))
    keep = [i for i in range(n) if i not in failed]
    if not keep:
        raise ValueError(f"none of the {n} images could be used (e.g. {paths[0]}: {failed[0]}); "
                         f"nothing written. Is --root / --tree the folder of the aligned crops?")
    _write_kept(out, mm, keep, failed, paths, labels)
    del mm  # the memory map closed before its file is renamed or removed
    if failed:
        out.partial.unlink()
    else:
        os.replace(out.partial, out.files["features"])
    meta = {"settings": settings, **({"sources": record} if record else {}),
            "preprocess": f"(x - {PIXEL_MEAN}) * {PIXEL_SCALE}, BGR, NCHW",
            "input_size": list(size), "seconds_last_run": round(time.time() - t0, 3),
            "rows_last_run": n - done, "rows": len(keep), "failed": len(failed),
            "failures": str(out.failures) if failed else None}
    atomic_write_json(out.files["meta"], meta)
    out.progress.unlink(missing_ok=True)
    return meta


@dataclasses.dataclass(frozen=True)
class _Outputs:
    """The files of one feature set: ``files`` (:func:`feature_paths`), the ``.npy.partial`` the
    rows are written into, the ``.progress.json`` recording the rows done and the
    ``.failures.txt`` listing the images left out."""
    files: dict
    partial: Path
    progress: Path
    failures: Path

    @classmethod
    def of(cls, out_prefix) -> _Outputs:
        files = feature_paths(out_prefix)
        stem = str(out_prefix).removesuffix(".npy")
        return cls(files, Path(str(files["features"]) + ".partial"), Path(stem + ".progress.json"),
                   Path(stem + ".failures.txt"))


def _open_partial(out: _Outputs, settings: dict, restart: bool):
    """The memory map of the rows (``n x dim`` float32), continued from a partial run made with
    the same ``settings`` or started anew (``restart``: always), its blocks reserved; returns
    (memory map, rows done, {row: reason} of the failed images)."""
    n, dim = settings["n"], settings["dim"]
    done, failed = 0, {}
    if restart:
        for p in (out.partial, out.progress):
            p.unlink(missing_ok=True)
    if out.partial.exists() and out.progress.exists():
        state = json.loads(out.progress.read_text())
        if state.get("settings") != settings:
            raise ValueError(f"{out.partial} was started with other inputs or settings (changed: "
                             f"{_differences(state.get('settings') or {}, settings)}; {out.progress}): its "
                             f"rows would mix two runs; pass restart=True (--restart) to start over")
        done, failed = int(state["done"]), {int(k): v for k, v in state.get("failed", {}).items()}
        mm = np.lib.format.open_memmap(out.partial, mode="r+")
        if mm.shape != (n, dim) or mm.dtype != np.float32:
            raise ValueError(f"{out.partial}: shape {mm.shape} {mm.dtype}, expected ({n}, {dim}) float32")
    else:
        mm = np.lib.format.open_memmap(out.partial, mode="w+", dtype=np.float32, shape=(n, dim))
        atomic_write_json(out.progress, {"done": 0, "failed": {}, "settings": settings})
    _reserve(out.partial)  # before the first row (and again on resume): ENOSPC now, not SIGBUS later
    out.files["meta"].unlink(missing_ok=True)  # the output is complete again only with its new meta
    return mm, done, failed


def _extract_batches(net, paths, root: Path, mm, done: int, failed: dict, *, size, blob, batch_size, mirror,
                     l2norm, bin_dir, bin_suffix, progress, on_batch, save_state) -> None:
    """Rows ``done`` onward into ``mm`` batch by batch (the next batch's images read while the
    net runs); an image that cannot be used goes into ``failed`` with its reason. After every
    batch the map is flushed and ``save_state(rows_done)`` records the progress."""
    from tqdm import tqdm
    n = len(paths)
    starts = list(range(done, n, batch_size))

    def load(a):  # an image or, for an image that cannot be used, the reason
        out = []
        for p in paths[a:a + batch_size]:
            try:
                out.append(load_crop(root / p, size))
            except ImageError as e:
                out.append(str(e)[len(e.path) + 2:])  # the reason, without the path
        return out

    with ThreadPoolExecutor(max_workers=1) as pool, \
            tqdm(total=n, initial=done, unit="img", desc=f"extract {blob}",
                 disable=not progress) as bar:
        nxt = pool.submit(load, starts[0]) if starts else None
        for k, a in enumerate(starts):
            loaded = nxt.result()
            nxt = pool.submit(load, starts[k + 1]) if k + 1 < len(starts) else None  # overlap I/O
            good = [i for i, x in enumerate(loaded) if not isinstance(x, str)]
            failed.update({a + i: x for i, x in enumerate(loaded) if isinstance(x, str)})
            b = a + len(loaded)
            if good:
                rows = [a + i for i in good]
                f = check_finite(batch_features(net, [loaded[i] for i in good], blob, mirror, l2norm),
                                 [paths[r] for r in rows], blob)
                mm[rows] = f
                if bin_dir is not None:
                    for r, v in zip(rows, f):
                        write_bin(bin_path(bin_dir, paths[r], bin_suffix), v)
            mm.flush()
            save_state(b)
            bar.update(len(loaded))
            if on_batch is not None:
                on_batch(b)


def _write_kept(out: _Outputs, mm, keep: list[int], failed: dict, paths, labels) -> None:
    """The names (and labels) of the rows ``keep``; with failures, their list and the kept rows
    copied to the ``.npy`` (the caller then removes the partial file, else renames it)."""
    mm.flush()
    write_names(out.files["names"], [paths[i] for i in keep])
    if labels is not None:
        _save_npy(out.files["labels"], np.asarray(labels, dtype=np.int64)[keep])
    if failed:
        write_failures(out.failures, {paths[i]: failed[i] for i in failed})
        _copy_rows(mm, keep, out.partial.with_name(out.partial.name + ".kept"), out.files["features"])
    else:
        out.failures.unlink(missing_ok=True)
