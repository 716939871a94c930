"""The work on one image, run in each worker process (or in the calling one with one worker)."""
from __future__ import annotations

from pathlib import Path

from mtdnn import datasets, devkit_align
from mtdnn.fileio import MachineError, is_machine_error
from mtdnn.images import ImageError, load_image, save_image

from .landmarks import landmarks_line

_STATE = {}


def init_worker(config: dict) -> None:
    """Load this process's own nets (``config``: :meth:`AlignOptions.worker_config`)."""
    import cv2
    cv2.setNumThreads(1)
    from mtdnn import onnx_export
    onnx_export.set_num_threads(1)  # likewise for ONNX Runtime (--engine onnxruntime / auto)
    from mtdnn.mtcnn import MTCNN
    _STATE["config"] = config
    _STATE["detector"] = MTCNN(config["models"], minsize=config["minsize"], thresholds=config["thresholds"],
                               factor=config["factor"], refine_landmarks=config["refine"],
                               resize=config["resize"], engine=config.get("engine", "auto"), gpu=config.get("gpu"))


def release_worker() -> None:
    """Drop the nets :func:`init_worker` loaded in this process."""
    _STATE.clear()


def _find(cfg, detector, image, rel):
    """(points, case or None) of the face to align, or None when there is none."""
    if cfg.get("devkit"):  # (points, method, reason) or None
        found = devkit_align.find_face(detector, image, devkit_align.read_meta(Path(cfg["src"]) / rel),
                                       cfg["select"], cfg["max_side"], cfg["crop"])
        return None if found is None else (found[0], f"{found[1]}\t{found[2]}")
    found = detector.detect_one(image, cfg["select"], cfg["max_side"])  # (points, box) or None
    return None if found is None else (found[0], None)


def align_one(task):
    """``('ok', rel, line)``, ``('fail', rel, reason)`` for a problem of the image, ``('error',
    rel, reason)`` for an unexpected error while aligning it (recorded, retried on every run), or
    ``('stop', rel, message)`` for a problem of the machine or of saving the crop; never raises."""
    from mtdnn import align
    from mtdnn.mtcnn import MIN_SIDE
    rel, out_name = task
    cfg, detector = _STATE["config"], _STATE["detector"]
    try:
        image = load_image(Path(cfg["src"]) / rel)
        if min(image.shape[:2]) < MIN_SIDE:
            return "fail", rel, f"too small: {image.shape[1]}x{image.shape[0]} px (MTCNN needs >= {MIN_SIDE})"
        found = _find(cfg, detector, image, rel)
        if found is None:
            return "fail", rel, "no face found"
        points, case = found
        crop = align.align_face(image, points, cfg["crop"])
    except ImageError as e:
        return "fail", rel, str(e).split(": ", 1)[1]
    except datasets.DatasetError as e:  # a malformed devkit JSON of this image
        return "fail", rel, str(e)
    except (MemoryError, MachineError) as e:
        return "stop", rel, f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - one bad image must not stop a 500k-image run
        if is_machine_error(e):
            return "stop", rel, f"{e.strerror or e} while reading the image"
        return "error", rel, f"error: {type(e).__name__}: {e}"
    target = Path(cfg["out"]) / out_name
    try:
        save_image(target, crop, cfg["quality"])
    except Exception as e:  # noqa: BLE001 - never a property of the image
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        return "stop", rel, f"cannot save {target}: {reason}"
    line = landmarks_line(rel, points)
    return ("ok", rel, line) if case is None else ("ok", rel, line, case)
