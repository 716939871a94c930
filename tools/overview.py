#!/usr/bin/env python3
"""Draw the README's picture: one photo through a trained model, from real data.

    tools/overview.py --run work/demo/runs/fast_w0.125 --photo A.jpg --same B.jpg --other C.jpg \
        --out docs/img/overview.png

The photo's face is detected (MTCNN) and aligned to 112 x 96; the identity head's feature is
compared with the faces of --same (another photo of the same person) and --other (someone
else) by the model card's rule and threshold; the attribute head gives its seven scores. The
PNG shows: input photo (box, 5 points) -> aligned crop -> the two heads' outputs.

Exit status: 0 written, 2 bad input (no face, no card, unreadable photo), 1 a fault of the machine.
"""
import argparse
from pathlib import Path

from mtdnn import facemodel
from mtdnn.cli import run_tool
from mtdnn.facemodel import FaceModel
from mtdnn.overview import overview, plot_overview


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="multi-task run folder with a model card")
    ap.add_argument("--photo", type=Path, required=True, help="the photo shown")
    ap.add_argument("--same", type=Path, required=True, help="another photo of the same person")
    ap.add_argument("--other", type=Path, required=True, help="a photo of someone else")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--title", default="one photo through the multi-task model: "
                    "input -> aligned crop -> identity and attribute heads", help="the figure's title")
    facemodel.add_arguments(ap, "the model and MTCNN")
    a = ap.parse_args(argv)
    model = FaceModel.load(a.run, engine=a.engine, gpu=a.gpu, select=a.select)
    data = overview(model, a.photo, a.same, a.other)
    print(plot_overview(data, a.out, a.title))
    for r in data["comparisons"]:
        print(f"{r['label']}: {r['photo']}: score {r['score']:.4f} -> {'same' if r['same'] else 'different'}")
    print("attributes: " + ", ".join(f"{k} {v:+.2f}" for k, v in data["attributes"].items()))
    return 0


if __name__ == "__main__":
    run_tool(main, bad=(ValueError, KeyError, FileNotFoundError, *facemodel.photo_errors()))
