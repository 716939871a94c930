#!/usr/bin/env python3
"""Export a trained net (or MTCNN's nets) to ONNX, checked against pycaffe, with a card.

    tools/export_onnx.py --run runs/full                 # RUN/model.onnx (+ .json), RUN/mtcnn-onnx/
    tools/export_onnx.py --deploy D --weights W --out net.onnx --outputs fc5
    tools/export_onnx.py --mtcnn --out-dir work/mtcnn-onnx   # det1..det4.onnx (+ .json)

--run RUN: a finished run folder of tools/train.py: its deploy.prototxt and the weights
run.json names (--weights: another snapshot); the graph outputs fc5 (the face feature) and
attr_pred (the attribute scores, > 0 predicts the attribute) when the net has them. MTCNN's
nets (--mtcnn-dir, default data/mtcnn) are exported beside, to RUN/mtcnn-onnx/. Each export is
recorded in the run's model card with its SHA-256, those of the Caffe files it was made from
and the check's result: then mtdnn.FaceModel and the tools run with --engine onnxruntime (and
auto where pycaffe cannot be imported) without pycaffe (docs/model_card.md).

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
import os
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from mtdnn import exported, onnx_export as ox  # noqa: E402
from mtdnn.cli import run_tool  # noqa: E402
from mtdnn.paths import data_path  # noqa: E402


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
    p.add_argument("--mtcnn-dir", type=Path, help="--run: folder of MTCNN's det1..det4 to export beside "
                                                  "(default data/mtcnn)")
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
    if a.mtcnn_dir and not a.run:
        p.error("--mtcnn-dir goes with --run")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    missing = ox.available()
    if missing:
        raise ValueError(missing)
    if a.mtcnn is not None:
        for out, card in exported.export_mtcnn(Path(a.mtcnn) if a.mtcnn else data_path("mtcnn"), a.out_dir, a.opset):
            report(out, card)
        return 0
    if a.run:
        written, note = exported.export_run(a.run, a.weights, a.out, outputs=a.outputs, check_tree=a.check_tree,
                                            check_images=a.check_images, opset=a.opset, mtcnn_folder=a.mtcnn_dir)
        for out, card in written:
            report(out, card)
        print(f"model card: {note}")
        return 0
    card = ox.export(a.deploy, a.weights, a.out, outputs=a.outputs or exported.face_outputs,
                     output_info=exported.OUTPUT_INFO, opset=a.opset,
                     check_inputs=lambda shape: (exported.check_crops(a.check_tree, a.check_images)
                                                 if ox.face_input(shape) else None))
    report(a.out, card)
    return 0


def report(out: Path, card: dict) -> None:
    diffs = ", ".join(f"{b} {d:.1e}" for b, d in card["check"]["max_difference"].items())
    print(f"wrote {out} ({card['onnx']['bytes'] / 1e6:.1f} MB, opset {card['onnx']['opset']}) and "
          f"{ox.card_path(out).name}: outputs {', '.join(card['outputs'])}; ONNX Runtime against pycaffe on "
          f"{card['check']['what']}: max difference {diffs} (bound {card['check']['bound']:.0e})")


if __name__ == "__main__":
    run_tool(main, stop=(ox.ExportError,))
