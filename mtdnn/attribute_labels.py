"""Attribute labels for a recognition training set: score with a MOON classifier, vote per identity.

Sec. 3.2 of the paper: the classifier predicts the attributes of every training image and
each identity's images then all get the identity's majority label (``mtdnn.vote``: a score > 0
votes +1, < 0 votes -1; ties go to the sign of the mean score, then to -1; **an identity with a
single image keeps its own prediction**).

- :func:`load_classifier`: a trained MOON run folder (``moon.json``, ``deploy.prototxt``,
  ``moon.caffemodel``, written by ``tools/train_attributes.py``) as an ``mtdnn.inference`` net.
- :func:`score_images` / :func:`score_paths` / :func:`score_lmdb`: batched forward passes to
  the ``attr_pred`` blob, N x M float32 scores; images are preprocessed as in training
  (``mtdnn.features``: BGR, (x - 127.5) / 128).
- :func:`label_database`: every split of a database built by ``tools/build_db.py`` (LMDB +
  manifest) is scored in its record order, the vote runs over all splits together (an
  identity's held-out image votes too), and each split's HDF5 attribute file is written in
  the LMDB's record order (dataset ``attributes`` = the voted {-1, +1} labels, beside
  ``scores``, ``own`` (each image's own prediction), ``paths``, ``labels``); the manifest's
  attribute fields are updated and the pair is checked with ``mtdnn.manifest.verify``.
- :func:`write_scores`: scores in the project's feature format (``P.npy`` + ``P.names.txt`` +
  ``P.meta.json``), which ``tools/eval_attributes.py`` and ``tools/build_db.py --attributes
  P.npy --vote`` read.

Bad input (no images, a model that lacks a requested attribute, a database whose splits
disagree on their identities, an LMDB that does not match its manifest) raises
:class:`LabelError` naming the problem.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import db, manifest
from .fileio import atomic_write, atomic_write_json, content_key, read_json, sha256_file
from .evaluation.features_io import feature_paths, write_names
from .features import batch_features, input_size
from .vote import majority_vote, own_predictions

BLOB = "attr_pred"
META_FILE, DEPLOY_FILE, WEIGHTS_FILE = "moon.json", "deploy.prototxt", "moon.caffemodel"


class LabelError(ValueError):
    """Bad input to scoring or labelling; the message names the problem."""


# --------------------------------------------------------------------------- the classifier

def read_meta(model_dir) -> dict:
    """``moon.json`` of a trained run folder (attributes, rates, weights, how it was made)."""
    path = Path(model_dir) / META_FILE
    meta = read_json(path, LabelError, missing=f"not found; is {model_dir} a run folder of "
                                              f"tools/train_attributes.py that finished training?")
    if not isinstance(meta.get("attributes"), list) or not meta["attributes"]:
        raise LabelError(f"{path}: no 'attributes' list")
    return meta


def load_classifier(model_dir, weights=None, gpu: int | None = None, engine: str = "auto"):
    """(inference net, meta) of a trained MOON run folder; ``weights`` overrides
    ``moon.caffemodel`` (e.g. an intermediate snapshot); ``engine`` and ``gpu`` as in
    :func:`mtdnn.inference.load`."""
    from . import inference
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    deploy = model_dir / DEPLOY_FILE
    weights = Path(weights) if weights else model_dir / WEIGHTS_FILE
    for path in (deploy, weights):
        if not path.is_file():
            raise LabelError(f"{path}: not found")
    try:
        net = inference.load(deploy, weights, engine=engine, gpu=gpu, outputs=[BLOB])
    except KeyError:
        net = None
    except ValueError as e:  # weights that do not fit the net, a deploy that does not parse: named, not Caffe's abort
        raise LabelError(str(e)) from None
    if net is None or net.blob_shape(BLOB)[0] != len(meta["attributes"]):
        raise LabelError(f"{deploy}: no '{BLOB}' blob with {len(meta['attributes'])} outputs")
    return net, meta


def model_key(model_dir, weights=None) -> dict:
    """What a classifier is, by content: sha256 of its weights and deploy net and its
    attribute list (the same wherever the run folder lives; a retrained moon.caffemodel at the
    same path is another key)."""
    model_dir = Path(model_dir)
    weights = Path(weights) if weights else model_dir / WEIGHTS_FILE
    return {"weights_sha256": content_key(weights)["sha256"], "deploy_sha256": sha256_file(model_dir / DEPLOY_FILE),
            "attributes": read_meta(model_dir)["attributes"]}


def columns(meta: dict, names: Sequence[str] | None) -> list[int]:
    """Indices of ``names`` among the classifier's attributes (all of them for None)."""
    have = list(meta["attributes"])
    if names is None:
        return list(range(len(have)))
    missing = [n for n in names if n not in have]
    if missing:
        raise LabelError(f"the classifier does not predict {', '.join(missing)} "
                         f"(it predicts {', '.join(have)})")
    return [have.index(n) for n in names]


# --------------------------------------------------------------------------- scoring

def score_images(net, images: Iterable[np.ndarray], count: int, batch_size: int = 64,
                 mirror: str = "none", progress: bool = True, desc: str = "score") -> np.ndarray:
    """Scores (``attr_pred``) of ``count`` BGR uint8 images from an iterable, N x M float32.
    ``mirror="sum"`` adds the scores of the flipped image (test-time augmentation)."""
    from tqdm import tqdm
    if count <= 0:
        raise LabelError("no images to score")
    size = input_size(net)
    out = np.empty((count, net.blob_shape(BLOB)[0]), np.float32)
    done, batch = 0, []
    with tqdm(total=count, unit="img", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        def flush():
            nonlocal done, batch
            out[done:done + len(batch)] = batch_features(net, batch, BLOB, mirror)
            done += len(batch)
            bar.update(len(batch))
            batch = []
        for image in images:
            if image is None:
                raise LabelError(f"image {done + len(batch)} cannot be decoded (a damaged record; "
                                 f"check the database with tools/check_db.py)")
            if done + len(batch) >= count:
                raise LabelError(f"more than the {count} images announced")
            if image.shape[:2] != size:
                raise LabelError(f"image {done + len(batch)} is {image.shape[0]}x{image.shape[1]} (HxW), the "
                                 f"classifier takes aligned {size[0]}x{size[1]} faces")
            batch.append(image)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    if done != count:
        raise LabelError(f"{done} images scored, {count} announced")
    return out


def score_paths(net, paths: Sequence[str], root=None, **kw) -> np.ndarray:
    """Scores of image files ``paths`` (relative to ``root``)."""
    from .images import load_image
    root = Path(root) if root is not None else Path()
    return score_images(net, (load_image(root / p) for p in paths), len(paths), **kw)


def score_lmdb(net, lmdb_path, **kw) -> np.ndarray:
    """Scores of every record of an image LMDB, in record order."""
    count = db.lmdb_count(lmdb_path)
    return score_images(net, (image for image, _ in db.read_image_lmdb(lmdb_path)), count, **kw)


def write_scores(prefix, scores: np.ndarray, names: Sequence[str], info: dict | None = None) -> Path:
    """``prefix.npy`` (N x M float32), ``prefix.names.txt``, ``prefix.meta.json``; atomic."""
    scores = np.asarray(scores, np.float32)
    if len(scores) != len(names):
        raise LabelError(f"{len(scores)} score rows for {len(names)} names")
    files = feature_paths(prefix)
    save_npy(files["features"], scores)
    write_names(files["names"], names)
    _write_json(files["meta"], {"blob": BLOB, "rows": len(names), **(info or {})})
    return files["features"]


def save_npy(path, array) -> Path:
    """``np.save`` through :func:`mtdnn.fileio.atomic_write` (whole file or none, fsync'ed)."""
    with atomic_write(path, "wb") as f:
        np.save(f, array)
    return Path(path)


def _write_json(path: Path, data) -> None:
    atomic_write_json(path, data, indent=1)


# --------------------------------------------------------------------------- voting

def vote_summary(scores: np.ndarray, identities: Sequence[str], names: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Voted labels (N x M int8) and a summary: per attribute the positive rate of the own
    predictions and of the voted labels and how many image labels the vote changed; the
    number of identities, and of identities with one image (their vote is their own
    prediction)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or len(scores) == 0:
        raise LabelError(f"no predictions to vote on (scores of shape {scores.shape})")
    if len(identities) != len(scores):
        raise LabelError(f"{len(scores)} score rows for {len(identities)} identities")
    result = majority_vote(scores, list(identities))
    own = own_predictions(scores)
    _, counts = np.unique(np.asarray(identities), return_counts=True)
    per = [{"name": n, "own_positive_rate": float((own[:, j] > 0).mean()),
            "voted_positive_rate": float((result.labels[:, j] > 0).mean()),
            "changed": int(result.changed[j])} for j, n in enumerate(names)]
    summary = {"images": int(len(scores)), "identities": int(len(counts)),
               "single_image_identities": int((counts == 1).sum()),
               "images_of_multi_image_identities": int(counts[counts > 1].sum()),
               "changed_total": int(result.changed_total),
               "changed_fraction": float(result.changed_total / scores.size), "attributes": per}
    return result.labels, summary


def format_vote(summary: dict) -> str:
    """Plain-text table of :func:`vote_summary`'s summary."""
    head = f"{'attribute':<18}{'own +%':>8}{'voted +%':>10}{'changed':>9}"
    lines = [head, "-" * len(head)]
    for a in summary["attributes"]:
        lines.append(f"{a['name']:<18}{100 * a['own_positive_rate']:8.1f}"
                     f"{100 * a['voted_positive_rate']:10.1f}{a['changed']:9d}")
    lines.append(f"{summary['images']} images, {summary['identities']} identities "
                 f"({summary['single_image_identities']} with a single image: their vote is their own "
                 f"prediction); the vote changed {summary['changed_total']} of "
                 f"{summary['images'] * len(summary['attributes'])} labels "
                 f"({100 * summary['changed_fraction']:.2f} %)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- databases

def database_splits(db_dir) -> dict[str, Path]:
    """``{split: manifest path}`` of a ``tools/build_db.py`` folder (``<split>_manifest.json``)."""
    db_dir = Path(db_dir)
    found = {p.name[:-len("_manifest.json")]: p for p in sorted(db_dir.glob("*_manifest.json"))}
    if not found:
        raise LabelError(f"{db_dir}: no <split>_manifest.json (build it with tools/build_db.py)")
    return found


def _labelled_with(out_dir: Path, splits: dict, key: dict) -> bool:
    """Whether every split in ``out_dir`` already holds labels made with ``key`` (the same
    classifier by content, attributes, mirror and records) and its attribute file is whole."""
    from .manifest import ManifestError
    for path in splits.values():
        target = out_dir / path.name
        try:
            m = manifest.read_manifest(target)
            if ((m.get("build") or {}).get("attribute_labels") or {}).get("key") != key:
                return False
            manifest.verify(target)
        except ManifestError:
            return False
    return True


def label_database(db_dir, net, meta: dict, out_dir=None, names: Sequence[str] | None = None,
                   force: bool = False, batch_size: int = 64, mirror: str = "none",
                   progress: bool = True, model_info: dict | None = None) -> dict:
    """Score, vote and write the attribute HDF5 files of a database (module docstring).

    ``out_dir``: where the HDF5 files, scores, manifests and ``attribute_labels.json`` go;
    default ``db_dir`` itself (its placeholder HDF5 files and manifests are replaced; a file
    that already holds non-zero labels is replaced only with ``force``). Elsewhere, the
    manifests written there point at the database's LMDBs by absolute path.
    Labels made before by the same classifier (``model_info["key"]``, :func:`model_key`: by
    content), attributes and mirror for the same records are left as they are unless ``force``
    (the summary then has ``up_to_date``); a half-written attribute file (an interrupted run: it does not
    match its manifest) is replaced without ``force``.
    Returns the summary written to ``attribute_labels.json``.
    """
    db_dir = Path(db_dir)
    out_dir = Path(out_dir) if out_dir is not None else db_dir
    in_place = out_dir.resolve() == db_dir.resolve()
    cols = columns(meta, names)
    names = [meta["attributes"][c] for c in cols]
    splits = database_splits(db_dir)
    manifests = _read_split_manifests(db_dir, splits)
    key = {"model": (model_info or {}).get("key"), "attributes": names, "mirror": mirror,
           "records": {split: m["order_sha256"] for split, m in manifests.items()}}
    if key["model"] and not force and _labelled_with(out_dir, splits, key):
        summary_file = out_dir / "attribute_labels.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        return {**summary, "up_to_date": True, "out": str(out_dir.resolve())}
    if in_place and not force:
        _refuse_to_replace_labels(db_dir, manifests)

    start = time.time()
    scores, identities, owner = _score_splits(net, db_dir, manifests, cols, batch_size=batch_size, mirror=mirror,
                                              progress=progress)
    seconds = time.time() - start
    labels, summary = vote_summary(scores, identities, names)

    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"model": str(Path(meta.get("run_dir", "?"))), "weights": meta.get("weights"),
            "target": meta.get("target"), "mirror": mirror, **(model_info or {})}
    made = {**info, "attributes": names, "majority_vote": "mtdnn.vote over all splits", "key": key}
    for split, m in manifests.items():
        rows = owner == split
        _write_split(out_dir / splits[split].name, m, split, labels[rows], scores[rows], names=names, info=info,
                     made=made, lmdb=None if in_place else (db_dir / m["lmdb"]).resolve())
    summary.update({"database": str(db_dir.resolve()), "out": str(out_dir.resolve()),
                    "splits": {s: int((owner == s).sum()) for s in manifests},
                    "scoring_seconds": round(seconds, 1), **info})
    _write_json(out_dir / "attribute_labels.json", summary)
    return summary


def _read_split_manifests(db_dir: Path, splits: dict) -> dict:
    """``{split: manifest}``, each checked against its LMDB (the images only: the attribute side
    is what labelling replaces, and may be half-written by an interrupted run); the splits must
    list the same identities (the vote runs across them)."""
    from .manifest import ManifestError
    manifests = {}
    for split, path in splits.items():
        try:
            manifests[split] = manifest.read_manifest(path)
            manifest.verify(path, check_hdf5=False)
        except ManifestError as e:
            raise LabelError(f"{db_dir}: {e}") from None
    ids = {tuple(m["identities"]) for m in manifests.values()}
    if len(ids) != 1:
        raise LabelError(f"{db_dir}: the splits' manifests list different identities; cannot vote across them")
    return manifests


def _refuse_to_replace_labels(db_dir: Path, manifests: dict) -> None:
    """LabelError when a split's attribute file is whole and holds labels (not the placeholder
    zeros) that another classifier or other settings made: only ``force`` replaces them."""
    for split, m in manifests.items():
        h5 = db_dir / m["hdf5"] if m.get("hdf5") else None
        if h5 is None or not h5.is_file():
            continue
        old = db.read_attribute_hdf5(h5)
        whole = old.shape[0] == m["count"] and manifest.attributes_checksum(old) == m.get("attributes_sha256")
        if np.any(old != 0) and whole:
            made = (m.get("build") or {}).get("attribute_labels")
            why = ("by another classifier or with other settings (the weights' sha256, the attributes "
                   "or --mirror differ)" if made else "(not the placeholder zeros)")
            raise LabelError(f"{h5} already holds attribute labels {why}; pass force=True (--force) to "
                             f"replace them")


def _score_splits(net, db_dir: Path, manifests: dict, cols, *, batch_size, mirror, progress):
    """Every split's LMDB scored in record order (columns ``cols``): (scores of all splits
    stacked, the identity of every row, the split of every row)."""
    scores, identities, owner = [], [], []
    for split, m in manifests.items():
        lmdb_path = db_dir / m["lmdb"]
        s = score_lmdb(net, lmdb_path, batch_size=batch_size, mirror=mirror, progress=progress,
                       desc=f"score {split}")[:, cols]
        if len(s) != m["count"]:
            raise LabelError(f"{lmdb_path}: {len(s)} records scored, manifest says {m['count']}")
        scores.append(s)
        identities += [m["identities"][label] for label in m["labels"]]
        owner += [split] * len(s)
    return np.concatenate(scores), identities, np.array(owner)


def _write_split(manifest_path: Path, m: dict, split: str, labels, scores, *, names, info: dict, made: dict,
                 lmdb: Path | None) -> None:
    """One split's attribute HDF5 file, its scores and its manifest (``lmdb``: the LMDB's
    absolute path when the output is not the database's own folder) beside ``manifest_path``,
    then the pair checked."""
    from .manifest import ManifestError
    out_dir = manifest_path.parent
    h5_name = m.get("hdf5") or f"{split}_attributes.h5"
    db.write_attribute_hdf5(out_dir / h5_name, labels.astype(np.float32), force=True, extra={
        "scores": scores, "own": own_predictions(scores),
        "paths": m["paths"], "labels": np.asarray(m["labels"])}, relative_source=True)
    write_scores(out_dir / f"{split}_attribute_scores", scores, m["paths"], {"attributes": names, **info})
    new = dict(m)
    new.update(hdf5=h5_name, attribute_names=names,
               attributes_sha256=manifest.attributes_checksum(labels.astype(np.float32)),
               build={**m.get("build", {}), "attribute_labels": {**made, "created": time.strftime("%Y-%m-%d %H:%M:%S")}})
    if lmdb is not None:
        new["lmdb"] = str(lmdb)
    manifest.write_manifest(manifest_path, new)
    try:
        manifest.verify(manifest_path)
    except ManifestError as e:  # cannot happen unless the database changed under us
        raise LabelError(f"after labelling: {e}") from None
