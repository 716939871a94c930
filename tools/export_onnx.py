#!/usr/bin/env python3
"""Export a trained net (or MTCNN's nets) to ONNX, checked against pycaffe, with a card.

    tools/export_onnx.py --run runs/full                 # RUN/model.onnx + RUN/model.onnx.json
    tools/export_onnx.py --deploy D --weights W --out net.onnx --outputs fc5
    tools/export_onnx.py --mtcnn --out-dir work/mtcnn-onnx   # det1..det4.onnx (+ .json)

--run RUN: a finished run folder of tools/train.py: its deploy.prototxt and the weights
run.json names (--weights: another snapshot); the graph outputs fc5 (the face feature) and
attr_pred (the attribute scores, > 0 predicts the attribute) when the net has them.

The conversion (mtdnn.onnx_export, the onnx package's helper API, opset 21) is checked
before anything is written: the model runs in ONNX Runtime beside pycaffe on --check-images
real aligned LFW crops (data/lfw/lfw-112x96, or --check-tree DIR) for a 112 x 96 face net, on
seeded random inputs otherwise (MTCNN's nets; tests/test_inference.py checks their detections
on real photos), and every output must agree within mtdnn.inference.RTOL (max |ONNX - Caffe|
over max |Caffe|, the bound of the --engine check). The card beside the model (OUT.json)
says the input size, channel order and normalisation, the output blobs, the SHA-256 of the
model and of the Caffe files it came from, and the check's figures. Exit status: 0 written,
2 bad input (no such run, no weights, a layer without conversion), 1 the check failed (a
conversion fault: nothing written) or a machine fault.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn import onnx_export as ox  # noqa: E402
from mtdnn.cli import run_tool  # noqa: E402
from mtdnn.paths import data_path  # noqa: E402

MTCNN_NETS = ("det1", "det2", "det3", "det4")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="finished run folder of tools/train.py (run.json, deploy.prototxt)")
    src.add_argument("--deploy", type=Path, help="any deploy prototxt (with --weights and --out)")
    src.add_argument("--mtcnn", nargs="?", const="", metavar="DIR",
                     help="MTCNN's det1..det4 (.prototxt + .caffemodel) from DIR (default data/mtcnn), with --out-dir")
    p.add_argument("--weights", type=Path, help="caffemodel (--run: instead of the one run.json names)")
    p.add_argument("--out", type=Path, help="the .onnx file (--run: default RUN/model.onnx)")
    p.add_argument("--out-dir", type=Path, help="folder of the MTCNN .onnx files (--mtcnn)")
    p.add_argument("--outputs", nargs="+", metavar="BLOB",
                   help="blobs the graph gives (default: fc5 and attr_pred where the net has them, else its outputs)")
    p.add_argument("--check-images", type=int, default=ox.CHECK_IMAGES,
                   help=f"aligned crops of the check (default {ox.CHECK_IMAGES}, spread over the tree)")
    p.add_argument("--check-tree", type=Path,
                   help="folder of aligned 112 x 96 crops for the check (default data/lfw/lfw-112x96)")
    p.add_argument("--opset", type=int, default=ox.OPSET, help=f"ONNX opset (default {ox.OPSET})")
    a = p.parse_args(argv)
    if a.check_images < 1:
        p.error("--check-images must be at least 1")
    if a.deploy and not (a.weights and a.out):
        p.error("--deploy needs --weights and --out")
    if a.mtcnn is not None and not a.out_dir:
        p.error("--mtcnn needs --out-dir")
    if a.mtcnn is None and a.out_dir:
        p.error("--out-dir goes with --mtcnn; use --out")
    return a


def run_files(run: Path, weights: Path | None) -> tuple[Path, Path, dict]:
    """(deploy, weights, run.json) of a finished run folder; ValueError saying what to do."""
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
        from mtdnn.netgen.render import make_spec
        return list(make_spec(run, state["model"], **state.get("overrides", {}))[0].attributes)
    except (KeyError, TypeError, ValueError):  # an old or foreign run.json: the card says 'attribute scores' only
        return None


def check_crops(tree: Path | None, count: int):
    """(preprocessed N x 3 x 112 x 96 crops, what they are) for the check, spread over the tree."""
    import cv2
    from mtdnn.datasets import list_images
    from mtdnn.features import preprocess
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


OUTPUT_INFO = {"fc5": {"meaning": "the face feature (compare two faces by cosine similarity; the run's "
                                  "model card says the mirror mode, feature mean and threshold)"},
               "attr_pred": {"meaning": "attribute scores: > 0 predicts the attribute (+1), else -1"}}


def main(argv=None) -> int:
    a = parse_args(argv)
    missing = ox.available()
    if missing:
        raise ValueError(missing)
    if a.mtcnn is not None:
        folder = Path(a.mtcnn) if a.mtcnn else data_path("mtcnn")
        from mtdnn.mtcnn import CHECK_SHAPES
        for name in MTCNN_NETS:
            out = a.out_dir / f"{name}.onnx"
            shape = CHECK_SHAPES[name]  # P-Net on a pyramid level, not its 12 x 12 deploy input
            card = ox.export(folder / f"{name}.prototxt", folder / f"{name}.caffemodel", out,
                             input_info=ox.MTCNN_INPUT, opset=a.opset,
                             check_inputs=lambda _s, shape=shape: (ox.seeded_inputs(shape[1:], 16),
                                                                   f"16 seeded uniform inputs of {shape[1:]}"))
            report(out, card)
        return 0
    state, info = None, {k: dict(v) for k, v in OUTPUT_INFO.items()}
    if a.run:
        deploy, weights, state = run_files(a.run, a.weights)
        out = a.out or a.run / "model.onnx"
        names = attribute_names(a.run, state)
        if names:
            info["attr_pred"]["attributes"] = names
    else:
        deploy, weights, out = a.deploy, a.weights, a.out
    card = ox.export(deploy, weights, out, outputs=a.outputs or face_outputs, output_info=info,
                     check_inputs=lambda shape: check_crops(a.check_tree, a.check_images) if ox.face_input(shape) else None,
                     source={"run": state.get("name")} if state else None, opset=a.opset)
    report(out, card)
    return 0


def report(out: Path, card: dict) -> None:
    diffs = ", ".join(f"{b} {d:.1e}" for b, d in card["check"]["max_difference"].items())
    print(f"wrote {out} ({card['onnx']['bytes'] / 1e6:.1f} MB, opset {card['onnx']['opset']}) and "
          f"{ox.card_path(out).name}: outputs {', '.join(card['outputs'])}; ONNX Runtime against pycaffe on "
          f"{card['check']['what']}: max difference {diffs} (bound {card['check']['bound']:.0e})")


if __name__ == "__main__":
    run_tool(main, stop=(ox.ExportError,))
