"""The model card of a trained run folder: everything needed to use the model without reading the code.

``RUN/model_card.json`` (format: docs/model_card.md) is written by training when the run
finishes (:func:`write_card`, called from ``mtdnn.train.train``) and updated by the
evaluators (:func:`record_evaluation`; ``tools/eval_lfw.py`` also records the verification
threshold and the feature mean it was chosen after, ``RUN/model_card.feature_mean.npy``).
It says which deploy net and weights (with their SHA-256), the input size and normalisation,
the feature blob and mirror mode, the attribute outputs, the verification rule with its
threshold (the pair list it was chosen on, its accuracy there and on the test pairs), and the
evaluation figures so far.

Kept current. An evaluation is recorded only when its features were extracted with the
card's weights (by their SHA-256, from the features' ``.meta.json``); features of other
weights (an intermediate snapshot, a retrained run) leave the card as it is and say so.
Retraining rewrites the card: figures of the old weights are dropped, never passed off as
the new ones'. Every write is atomic, under a lock beside the card.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from .features import PIXEL_MEAN, PIXEL_SCALE
from .fileio import atomic_write, atomic_write_json, exclusive_lock, sha256_file

CARD_FILE = "model_card.json"
MEAN_FILE = "model_card.feature_mean.npy"
FORMAT = "mtdnn-model-card"
VERSION = 1
FEATURE_BLOB, ATTRIBUTE_BLOB = "fc5", "attr_pred"
DEFAULT_MIRROR = "concat"  # SphereFace's LFW rule, the evaluation's default in docs/evaluation
DETECTION = {"detector": "MTCNN (mtdnn.mtcnn, Zhang et al. 2016; SphereFace's settings)",
             "minsize": 20, "factor": 0.85, "thresholds": [0.6, 0.7, 0.9], "select": "center",
             "alignment": "5-point similarity to SphereFace's 112x96 template (mtdnn.align)"}


class CardError(ValueError):
    """A run folder without a usable card; the message says what to run."""


def card_path(run) -> Path:
    return Path(run) / CARD_FILE


def _no_card(run: Path) -> str:
    return (f"{run} has no {CARD_FILE}. It is written when tools/train.py finishes a run (rerun the same "
            f"tools/train.py command: finished phases are skipped and the card is written), and "
            f"tools/eval_lfw.py on features of its weights adds the verification threshold; "
            f"docs/model_card.md describes it")


def load_card(run) -> dict:
    """The card of run folder ``run``; :class:`CardError` saying what to do when there is none
    or it is not one. The weights and the feature mean are checked against their SHA-256."""
    run = Path(run)
    if not run.is_dir():
        raise CardError(f"{run}: no such run folder")
    path = card_path(run)
    if not path.is_file():
        raise CardError(_no_card(run))
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CardError(f"{path}: not valid JSON ({e}); rerun tools/train.py on {run} to write it again") from None
    if card.get("format") != FORMAT:
        raise CardError(f"{path}: not a model card (no \"format\": \"{FORMAT}\")")
    for what in ("deploy", "weights"):
        f = run / card[what]["file"]
        if not f.is_file():
            raise CardError(f"{path}: its {what} {f} does not exist")
    return card


def check_file(run, entry: dict, what: str) -> Path:
    """``run / entry['file']`` after checking its SHA-256 against the card's."""
    from .exported import sha256_of
    f = Path(run) / entry["file"]
    if sha256_of(f) != entry["sha256"]:
        raise CardError(f"{f}: its SHA-256 is not the one {card_path(run)} records for the {what}: the file "
                        f"changed after the card was written (retrained?); rerun tools/train.py and the evaluations")
    return f


def feature_mean(run, card: dict) -> np.ndarray | None:
    """The feature mean the verification threshold was chosen after (None: no mean subtracted)."""
    entry = (card.get("verification") or {}).get("feature_mean")
    if not entry:
        return None
    return np.load(check_file(run, entry, "feature mean"))


def _deploy_facts(deploy: Path) -> dict:
    """Input shape and output sizes from the deploy prototxt (pycaffe's protobuf)."""
    from .prototxt import read_net
    net = read_net(deploy)
    shape, name = None, "data"
    for layer in net.layer:
        if layer.type == "Input":
            shape, name = list(layer.input_param.shape[0].dim)[1:], layer.top[0]
            break
    if shape is None and net.input_shape:
        shape, name = list(net.input_shape[0].dim)[1:], net.input[0]
    sizes = {}
    for layer in net.layer:
        if layer.type == "InnerProduct":
            for top in layer.top:
                sizes[top] = layer.inner_product_param.num_output
    return {"input": name, "input_shape": shape, "sizes": sizes}


def _dim(size, mirror: str):
    """Length of the feature vector of a blob of ``size`` values in ``mirror`` mode."""
    return None if size is None else size * (2 if mirror == "concat" else 1)


def write_card(run, state: dict, attributes=None) -> Path:
    """Write ``RUN/model_card.json`` for a finished run (``state``: its ``run.json``; it names
    the deploy and the final weights). Evaluations recorded for the same weights are kept;
    those of other weights are dropped. ``attributes``: the names of the ``attr_pred`` outputs."""
    run = Path(run)
    deploy, weights = run / state["deploy"], run / state["weights"]
    facts = _deploy_facts(deploy)
    w_sha = sha256_file(weights)
    with _locked(run):
        old = _read(run)
        same = old.get("weights", {}).get("sha256") == w_sha
        card = {
            "format": FORMAT, "version": VERSION, "run": state.get("name", run.resolve().name),
            "model": state.get("model"), "options": state.get("overrides", {}),
            "trained_on": {"database": state.get("database"), "identities": state.get("identities"),
                           "train_images": state.get("train_images")},
            "deploy": {"file": state["deploy"], "sha256": sha256_file(deploy)},
            "weights": {"file": state["weights"], "sha256": w_sha, "bytes": weights.stat().st_size},
            "input": {"blob": facts["input"], "shape_chw": facts["input_shape"], "color": "BGR", "layout": "NCHW",
                      "normalisation": f"(pixel - {PIXEL_MEAN}) * {PIXEL_SCALE}",
                      "pixel_mean": PIXEL_MEAN, "pixel_scale": PIXEL_SCALE, **DETECTION},
            "features": (old.get("features") if same and old.get("features") else
                         {"blob": FEATURE_BLOB, "dim": _dim(facts["sizes"].get(FEATURE_BLOB), DEFAULT_MIRROR),
                          "mirror": DEFAULT_MIRROR, "l2norm": False, "set_by": "training (default until tools/eval_lfw.py records "
                                                    "the features its threshold was chosen on)"}),
            "attributes": ({"blob": ATTRIBUTE_BLOB, "names": list(attributes or []),
                            "rule": "score > 0 predicts the attribute present (+1), otherwise absent (-1)"}
                           if ATTRIBUTE_BLOB in facts["sizes"] else None),
            "verification": old.get("verification") if same else None,
            "evaluations": old.get("evaluations", {}) if same else {},
            # kept as it is: its SHA-256s say whether it is still of these files (mtdnn.exported)
            "onnx": old.get("onnx"),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if not same:
            (run / MEAN_FILE).unlink(missing_ok=True)
        atomic_write_json(card_path(run), card, indent=1)
    return card_path(run)


def record_onnx(run, net: dict | None = None, mtcnn: dict | None = None) -> str:
    """Record checked ONNX exports (records of :func:`mtdnn.exported.record_of`: the run's
    ``net``, MTCNN's keyed by caffemodel SHA-256) under the card's ``"onnx"``; a line saying what
    was recorded or why nothing was."""
    run = Path(run)
    if not card_path(run).is_file():
        return (f"no {CARD_FILE} in {run}: the export is not recorded (tools/train.py writes the card "
                f"when the run finishes; mtdnn.FaceModel needs it)")
    with _locked(run):
        card = _read(run)
        onnx = dict(card.get("onnx") or {})
        onnx.update({k: v for k, v in (("net", net), ("mtcnn", mtcnn)) if v})
        card["onnx"], card["updated"] = onnx, time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(card_path(run), card, indent=1)
    return f"recorded in {card_path(run)}: engine onnxruntime runs it without pycaffe"


@contextlib.contextmanager
def _locked(run: Path, wait: float = 60.0):
    """The card's lock, waited for (another evaluator may be recording its figures)."""
    from .fileio import LockHeld
    end = time.time() + wait
    while True:
        lock = exclusive_lock(run / ".model_card.lock")
        try:
            lock.__enter__()
            break
        except LockHeld:
            if time.time() > end:
                raise
            time.sleep(0.2)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _read(run: Path) -> dict:
    try:
        return json.loads(card_path(run).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def run_of_features(prefix) -> tuple[Path | None, dict, str]:
    """(run folder, feature settings, note) of a feature set by its ``.meta.json``: the folder of
    the weights it was extracted with, when that folder holds a card of the same weights;
    otherwise None and why."""
    meta_path = Path(str(prefix).removesuffix(".npy") + ".meta.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None, {}, f"{meta_path} missing or unreadable: no model card updated"
    weights = (meta.get("sources") or {}).get("weights")
    settings = meta.get("settings", {})
    if not weights:
        return None, settings, "the features name no weights: no model card updated"
    run = Path(weights).parent
    card = _read(run)
    if not card:
        return None, settings, f"no {CARD_FILE} in {run} (the folder of the weights): no model card updated"
    if card.get("weights", {}).get("sha256") != settings.get("weights_sha256"):
        return None, settings, (f"{card_path(run)} is of other weights than these features "
                                f"({Path(weights).name}): the card is left as it is")
    return run, settings, ""


def record_evaluation(prefix, kind: str, summary: dict, *, verification: dict | None = None,
                      mean: np.ndarray | None = None) -> str:
    """Add evaluation ``kind``'s ``summary`` (and for LFW the ``verification`` threshold with its
    feature ``mean``) to the card of the run whose weights made the features ``prefix``.
    Returns a line saying what was recorded or why nothing was."""
    run, settings, note = run_of_features(prefix)
    if run is None:
        return note
    with _locked(run):
        card = _read(run)
        card.setdefault("evaluations", {})[kind] = {**summary, "features": str(prefix),
                                                    "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if verification is not None:
            card["features"] = {"blob": settings.get("blob", FEATURE_BLOB), "dim": settings.get("dim"),
                                "mirror": settings.get("mirror", "none"), "l2norm": bool(settings.get("l2norm")),
                                "set_by": f"tools/eval_lfw.py on {prefix}"}
            if mean is not None:
                with atomic_write(run / MEAN_FILE, "wb") as f:
                    np.save(f, np.asarray(mean, np.float64))
                verification = {**verification, "feature_mean": {"file": MEAN_FILE,
                                                                 "sha256": sha256_file(run / MEAN_FILE)}}
            else:
                (run / MEAN_FILE).unlink(missing_ok=True)
            card["verification"] = verification
        card["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(card_path(run), card, indent=1)
    return f"recorded in {card_path(run)}" + (" (with the verification threshold)" if verification else "")


RULE_TEXT = {"sphereface": ("cosine of the two features after subtracting the feature mean", "score > threshold"),
             "insightface": ("squared euclidean distance of the L2-normalised features", "distance < threshold")}


def record_lfw(prefix, res: dict, mean, json_path) -> str:
    """Record ``tools/eval_lfw.py``'s result ``res`` (the dict of ``evaluate_lfw`` written to
    ``json_path``) in the card; its View 1 threshold, chosen on pairsDevTrain, with ``mean``
    (the pairsDevTrain feature mean it was chosen after) becomes the card's verification rule."""
    summary = {"file": str(json_path), "rule": res.get("rule")}
    if "accuracy" in res:
        summary["view2"] = {k: res.get(k) for k in ("protocol", "accuracy", "std", "n_pairs", "n_missing_pairs")}
    v = res.get("view1")
    verification = None
    if v:
        summary["view1"] = {k: v.get(k) for k in ("threshold", "train_accuracy", "accuracy", "train", "test")}
        score, same_when = RULE_TEXT[v["rule"]]
        verification = {"rule": v["rule"], "score": score, "same_when": same_when, "threshold": v["threshold"],
                        "chosen_on": Path(v["train"]).name, "chosen_on_path": v["train"],
                        "n_pairs_chosen_on": v.get("n_train_pairs"), "accuracy_chosen_on": v["train_accuracy"],
                        "tested_on": Path(v["test"]).name, "tested_on_path": v["test"],
                        "n_pairs_tested_on": v.get("n_test_pairs"), "accuracy_tested_on": v["accuracy"],
                        "missing_rule": res.get("missing_rule"), "evaluation": str(json_path)}
    return record_evaluation(prefix, "lfw", summary, verification=verification,
                             mean=mean if verification is not None else None)
