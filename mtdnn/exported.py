"""Checked ONNX exports recorded in a run's model card: run a trained model without pycaffe.

``tools/export_onnx.py --run RUN`` converts the run's net (and MTCNN's four nets, the detector
the API uses) to ONNX, checks each against pycaffe (:func:`mtdnn.onnx_export.export`: real
aligned crops for the face net) and records in ``RUN/model_card.json`` under ``"onnx"``:

    "onnx": {"net": RECORD, "mtcnn": {CAFFEMODEL_SHA256: RECORD (with "net": "det1"), ...}}
    RECORD = {"file", "sha256", "deploy_sha256", "weights_sha256", "outputs", "check"}

(``file`` relative to the run folder; ``check`` is the ONNX card's: bound and max differences).
:func:`of_run` turns these records into :class:`Exported` values that
:func:`mtdnn.inference.load` opens in ONNX Runtime without pycaffe, after checking every
SHA-256 against the files as they are now: a stale export (weights changed since) is refused
with the command that rewrites it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import sha256_file

MTCNN_FOLDER = "mtcnn-onnx"  # RUN/mtcnn-onnx/det1..det4.onnx


@dataclass
class Exported:
    """The checked ONNX export of one Caffe net, or (``onnx`` None) the lack of one."""
    onnx: Path | None
    record: dict = field(default_factory=dict)
    command: str = "tools/export_onnx.py"  # what (re)writes it, for the messages


_SHA: dict = {}


def sha256_of(path) -> str:
    """SHA-256 of ``path``, remembered while its size and mtime stay the same (a model's weights
    are hashed by the card check and by the export check in one load)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        _SHA[key] = sha256_file(path)
    return _SHA[key]


def record_of(onnx_card: dict, onnx_file: Path, base: Path) -> dict:
    """The run card's record of an export, from the card :func:`mtdnn.onnx_export.export` wrote."""
    return {"file": os.path.relpath(Path(onnx_file).resolve(), Path(base).resolve()),
            "sha256": onnx_card["onnx"]["sha256"],
            "deploy_sha256": onnx_card["source"]["deploy"]["sha256"],
            "weights_sha256": onnx_card["source"]["weights"]["sha256"],
            "outputs": list(onnx_card["outputs"]), "check": onnx_card["check"]}


@dataclass
class ExportIndex:
    """Checked exports keyed by the SHA-256 of the caffemodel they were made from (MTCNN's nets)."""
    by_sha: dict
    command: str

    def find(self, caffemodel) -> Exported:
        """The export of ``caffemodel`` (an :class:`Exported` without a file where none is recorded)."""
        if not self.by_sha:
            return Exported(None, {}, self.command)
        return self.by_sha.get(sha256_of(caffemodel)) or Exported(None, {}, self.command)


def command_for(run) -> str:
    return f"tools/export_onnx.py --run {run}"


def of_run(run, card: dict) -> tuple[Exported, ExportIndex]:
    """(the export of the run's net, the :class:`ExportIndex` of MTCNN's nets) from the card;
    an :class:`Exported` without a file where none is recorded."""
    run, command = Path(run), command_for(run)
    rec = (card.get("onnx") or {})
    net = rec.get("net")
    main = Exported(run / net["file"], net, command) if net else Exported(None, {}, command)
    mtcnn = {sha: Exported(run / r["file"], r, command) for sha, r in (rec.get("mtcnn") or {}).items()}
    return main, ExportIndex(mtcnn, command)


def stale_reason(exp: Exported, deploy: Path, weights: Path, outputs) -> str | None:
    """Why ``exp`` cannot stand for ``deploy`` + ``weights`` (None: it can): a changed or missing
    file, other requested outputs, a check beyond the bound in force."""
    from .inference import RTOL
    r = exp.record
    if not exp.onnx.is_file():
        return f"{exp.onnx} is missing"
    for path, key, what in ((exp.onnx, "sha256", "the ONNX file"), (deploy, "deploy_sha256", "the deploy"),
                            (weights, "weights_sha256", "the weights")):
        if sha256_of(path) != r[key]:
            return (f"{what} {path} changed after the export (its SHA-256 is not the one recorded): "
                    f"the export is stale")
    missing = [o for o in outputs or () if o not in r["outputs"]]
    if missing:
        return f"the export gives {', '.join(r['outputs'])}, not {', '.join(missing)}"
    diffs = r["check"]["max_difference"]
    if not diffs or not all(d <= RTOL for d in diffs.values()):
        return f"its recorded check ({diffs}) is not within the bound {RTOL:.0e}"
    return None


# --------------------------------------------------------------------------- writing (tools/export_onnx.py)

MTCNN_NETS = ("det1", "det2", "det3", "det4")
OUTPUT_INFO = {"fc5": {"meaning": "the face feature (compare two faces by cosine similarity; the run's "
                                  "model card says the mirror mode, feature mean and threshold)"},
               "attr_pred": {"meaning": "attribute scores: > 0 predicts the attribute (+1), else -1"}}


def run_files(run: Path, weights: Path | None) -> tuple[Path, Path, dict]:
    """(deploy, weights, run.json) of a finished run folder; ValueError saying what to do."""
    import json
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    state_file = run / "run.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{run} has no run.json: not a run folder of tools/train.py "
                                f"(use --deploy D --weights W --out FILE for other nets)")
    state = json.loads(state_file.read_text())
    if weights is None:
        if not state.get("weights"):
            raise ValueError(f"{run}: the run is not finished (run.json names no final weights): finish it "
                             f"with the same tools/train.py command, or pass --weights SNAPSHOT")
        weights = run / state["weights"]
    deploy = run / state.get("deploy", "deploy.prototxt")
    return deploy, weights, state


def attribute_names(run: Path, state: dict) -> list[str] | None:
    """The run's attributes in attr_pred's order (its model and options), or None if unknown."""
    try:
        from .netgen.render import make_spec
        return list(make_spec(run, state["model"], **state.get("overrides", {}))[0].attributes)
    except (KeyError, TypeError, ValueError):  # an old or foreign run.json: the card says 'attribute scores' only
        return None


def check_crops(tree: Path | None, count: int):
    """(preprocessed N x 3 x 112 x 96 crops, what they are) for the check, spread over the tree."""
    import cv2
    from .datasets import list_images
    from .features import preprocess
    from .paths import data_path
    root = tree or data_path("lfw", "lfw-112x96")
    paths = list_images(root)
    if not paths:
        raise FileNotFoundError(f"{root}: no images for the check")
    step = max(1, len(paths) // count)
    total, paths = len(paths), paths[::step][:count]
    images = [cv2.imread(str(root / p)) for p in paths]
    unread = [p for p, im in zip(paths, images) if im is None or im.shape != (112, 96, 3)]
    if unread:
        raise ValueError(f"{root}: not 112 x 96 colour images: {', '.join(unread[:5])}")
    return preprocess(images), f"{len(paths)} aligned crops of {root.name} (every {step}. of {total})"


def face_outputs(blobs: list[str]) -> list[str] | None:
    """fc5 and attr_pred where the net has them, else (None) its final outputs."""
    return [b for b in ("fc5", "attr_pred") if b in blobs] or None


def export_mtcnn(folder: Path, out_dir: Path, opset: int) -> list[tuple[Path, dict]]:
    """MTCNN's det1..det4 of ``folder`` to ``out_dir``/detN.onnx, each checked on 16 seeded inputs."""
    from . import onnx_export as ox
    from .mtcnn import CHECK_SHAPES
    written = []
    for name in MTCNN_NETS:
        out, shape = out_dir / f"{name}.onnx", CHECK_SHAPES[name][1:]  # P-Net on a pyramid level, not 12 x 12
        card = ox.export(folder / f"{name}.prototxt", folder / f"{name}.caffemodel", out,
                         input_info=ox.MTCNN_INPUT, opset=opset,
                         check_inputs=lambda _s, shape=shape: (ox.seeded_inputs(shape, 16),
                                                               f"16 seeded uniform inputs of {shape}"))
        written.append((out, card))
    return written


def export_run(run: Path, weights: Path | None, out: Path | None, *, outputs=None, check_tree=None,
               check_images: int = 200, opset: int, mtcnn_folder: Path | None = None):
    """Export run folder ``run``'s net (to ``out``, default RUN/model.onnx) and MTCNN's nets of
    ``mtcnn_folder`` (default data/mtcnn; to RUN/mtcnn-onnx), each checked against pycaffe, and
    record them in the run's card. Returns ([(onnx file, its card), ...], what the card says)."""
    from . import card as cards, onnx_export as ox
    from .paths import data_path
    deploy, weights, state = run_files(run, weights)
    out = out or run / "model.onnx"
    info = {k: dict(v) for k, v in OUTPUT_INFO.items()}
    names = attribute_names(run, state)
    if names:
        info["attr_pred"]["attributes"] = names
    card = ox.export(deploy, weights, out, outputs=outputs or face_outputs, output_info=info,
                     check_inputs=lambda shape: check_crops(check_tree, check_images) if ox.face_input(shape) else None,
                     source={"run": state.get("name")}, opset=opset)
    mtcnn = export_mtcnn(Path(mtcnn_folder) if mtcnn_folder else data_path("mtcnn"), run / MTCNN_FOLDER, opset)
    by_sha = {c["source"]["weights"]["sha256"]: {"net": f.stem, **record_of(c, f, run)} for f, c in mtcnn}
    note = cards.record_onnx(run, record_of(card, out, run), by_sha)
    return [(out, card), *mtcnn], note
