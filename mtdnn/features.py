"""Batched feature extraction (pycaffe or OpenCV's DNN: ``mtdnn.inference``), streamed to disk and resumable.

Input: aligned 112x96 BGR images (the net's input blob fixes the size), preprocessed as in
training: ``(x - 127.5) * 0.0078125`` (= / 128), NCHW float32. Output: the named blob
(default ``fc5``), flattened per image; ``mirror="concat"`` appends the features of the
horizontally flipped image (SphereFace's LFW rule), ``"sum"`` adds them (insightface's);
``l2norm`` scales each final vector to unit length.

``extract_to_file`` writes ``<prefix>.npy`` (float32 N x D) through a memory map into
``<prefix>.npy.partial`` and records the rows done in ``<prefix>.progress.json`` after
every batch; a rerun with the same inputs and settings continues from there, and the
``.partial`` file is renamed to ``.npy`` only when every row is written.
"""
from __future__ import annotations

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

PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125  # 1 / 128
MIRROR_MODES = ("none", "concat", "sum")


# ---------------------------------------------------------------------------- inputs
def read_image_list(path) -> tuple[list[str], np.ndarray | None]:
    """An image list, ``path [label]`` per line: (paths, integer labels or None).

    Lists with labels are read by ``mtdnn.datasets.read_image_list`` (non-integer labels
    are numbered in sorted order); a list of bare paths has no labels.
    """
    lines = [l.strip() for l in Path(path).read_text().splitlines() if l.strip()]
    if not lines:
        raise ValueError(f"{path}: no images listed")
    if all(len(l.split()) == 1 for l in lines):
        if len(set(lines)) != len(lines):
            raise ValueError(f"{path}: a path is listed twice")
        return lines, None
    if any(len(l.split()) == 1 for l in lines):
        raise ValueError(f"{path}: some lines have a label and some do not")
    samples = datasets.read_image_list(path)
    ids = [s.identity for s in samples]
    labels = np.array([int(i) for i in ids]) if all(i.lstrip("-").isdigit() for i in ids) \
        else datasets.assign_labels(samples)
    return [s.path for s in samples], labels


def list_tree(root) -> list[str]:
    """Image files below ``root`` as sorted relative POSIX paths (``mtdnn.datasets.list_images``)."""
    paths = datasets.list_images(root)
    if not paths:
        raise ValueError(f"{root}: no images found")
    return paths


def load_image(path, size: tuple[int, int] = (112, 96)) -> np.ndarray:
    """BGR uint8 H x W x 3; raises naming the file when it is unreadable or not ``size``."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: cannot read the image")
    if img.shape[:2] != tuple(size):
        raise ValueError(f"{path}: image is {img.shape[0]}x{img.shape[1]} (HxW), the net "
                         f"expects aligned {size[0]}x{size[1]} faces")
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
    auto, CPU or GPU ``gpu``; weights optional: Caffe's fillers otherwise)."""
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
            imgs = [load_image(root / p, size) for p in paths[a:a + batch_size]]
            out[a:a + len(imgs)] = batch_features(net, imgs, blob, mirror, l2norm)
            bar.update(len(imgs))
    return out


# ---------------------------------------------------------------------------- to disk
def _list_digest(paths: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(paths).encode()).hexdigest()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def extract_to_file(net, paths: Sequence[str], out_prefix, *, root=None, labels=None,
                    blob: str = "fc5", batch_size: int = 32, mirror: str = "none",
                    l2norm: bool = False, bin_dir=None, bin_suffix: str = "_mtdnn_112x96",
                    info: dict | None = None, restart: bool = False, progress: bool = True,
                    on_batch: Callable[[int], None] | None = None) -> dict:
    """Extract features of ``paths`` to ``<out_prefix>.npy`` (+ ``.names.txt``,
    ``.labels.npy`` when ``labels`` is given, ``.meta.json``), resumably.

    ``bin_dir``: also write one devkit ``.bin`` per image, ``bin_dir/<path><bin_suffix>.bin``.
    ``info``: extra facts recorded in the meta file and compared on resume (e.g. the
    deploy and weights paths). A rerun with the same list and settings continues after the
    last completed batch, or does nothing when the output is complete; with other settings
    it raises unless ``restart``. ``on_batch(rows_done)`` is called after each batch.
    Returns the meta dict.
    """
    from tqdm import tqdm
    if mirror not in MIRROR_MODES:
        raise ValueError(f"mirror must be one of {', '.join(MIRROR_MODES)}, not {mirror!r}")
    files = feature_paths(out_prefix)
    partial = Path(str(files["features"]) + ".partial")
    progress_file = Path(str(out_prefix).removesuffix(".npy") + ".progress.json")
    files["features"].parent.mkdir(parents=True, exist_ok=True)
    paths = list(paths)
    n, dim = len(paths), feature_dim(net, blob, mirror)
    settings = {"n": n, "dim": dim, "blob": blob, "mirror": mirror, "l2norm": bool(l2norm),
                "list_sha1": _list_digest(paths), "bin_dir": str(bin_dir) if bin_dir else None,
                "bin_suffix": bin_suffix if bin_dir else None, **(info or {})}

    if not restart and files["features"].exists() and files["meta"].exists():
        meta = json.loads(files["meta"].read_text())
        if meta.get("settings") == settings:
            return {**meta, "skipped": True}  # already complete
    done = 0
    if restart:
        for p in (partial, progress_file):
            p.unlink(missing_ok=True)
    if partial.exists() and progress_file.exists():
        state = json.loads(progress_file.read_text())
        if state.get("settings") != settings:
            raise ValueError(f"{partial} was started with other inputs or settings "
                             f"({progress_file}); pass restart=True (--restart) to start over")
        done = int(state["done"])
        mm = np.lib.format.open_memmap(partial, mode="r+")
        if mm.shape != (n, dim) or mm.dtype != np.float32:
            raise ValueError(f"{partial}: shape {mm.shape} {mm.dtype}, expected ({n}, {dim}) float32")
    else:
        mm = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, dim))
        _write_json(progress_file, {"done": 0, "settings": settings})

    size = input_size(net)
    root = Path(root) if root is not None else Path()
    t0 = time.time()
    starts = list(range(done, n, batch_size))
    load = lambda a: [load_image(root / p, size) for p in paths[a:a + batch_size]]
    with ThreadPoolExecutor(max_workers=1) as pool, \
            tqdm(total=n, initial=done, unit="img", desc=f"extract {blob}",
                 disable=not progress) as bar:
        nxt = pool.submit(load, starts[0]) if starts else None
        for k, a in enumerate(starts):
            imgs = nxt.result()
            nxt = pool.submit(load, starts[k + 1]) if k + 1 < len(starts) else None  # overlap I/O
            f = batch_features(net, imgs, blob, mirror, l2norm)
            b = a + len(imgs)
            mm[a:b] = f
            if bin_dir is not None:
                for p, v in zip(paths[a:b], f):
                    write_bin(bin_path(bin_dir, p, bin_suffix), v)
            mm.flush()
            _write_json(progress_file, {"done": b, "settings": settings})
            bar.update(len(imgs))
            if on_batch is not None:
                on_batch(b)
    mm.flush()
    del mm
    write_names(files["names"], paths)
    if labels is not None:
        np.save(files["labels"], np.asarray(labels, dtype=np.int64))
    meta = {"settings": settings, "preprocess": f"(x - {PIXEL_MEAN}) * {PIXEL_SCALE}, BGR, NCHW",
            "input_size": list(size), "seconds_last_run": round(time.time() - t0, 3),
            "rows_last_run": n - done}
    os.replace(partial, files["features"])
    _write_json(files["meta"], meta)
    progress_file.unlink(missing_ok=True)
    return meta
