#!/usr/bin/env python3
"""The seven facial attributes of the face in each photo, from the multi-task net and/or MOON.

    tools/attributes.py photo.jpg --run work/demo/runs/fast_w0.125
    tools/attributes.py a.jpg b.jpg --run RUN --moon work/demo/runs/moon     # both, side by side

--run RUN: a multi-task run folder with a model card (its attr_pred head); --moon RUN: a MOON
run folder of tools/train_attributes.py. Each photo's face is found by MTCNN and aligned in
memory; with several faces the one nearest the centre is used (--select largest: the largest)
and named. For every attribute the raw score is printed with the decision of the paper's sign
rule: score > 0 means present (+1), otherwise absent (-1) (the head regresses targets in
{-1, +1}; tools/eval_attributes.py scores accuracy by the same rule).

Exit status: 0 every photo scored, 2 some photo had no face or could not be read (named; the
others are still scored) or bad input, 1 a fault of the machine.
"""
import argparse
import json
import sys
from pathlib import Path

from mtdnn import facemodel
from mtdnn.cli import BAD_INPUT, check_engine, run_tool
from mtdnn.facemodel import ATTRIBUTE_RULE, FaceModel, MoonModel


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="+", type=Path, help="photos (any size; the face is detected and aligned)")
    ap.add_argument("--run", type=Path, help="multi-task run folder with a model card (its attribute head)")
    ap.add_argument("--moon", type=Path, help="MOON run folder (tools/train_attributes.py --out)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per photo instead of tables")
    facemodel.add_arguments(ap, "the models and MTCNN")
    a = ap.parse_args(argv)
    check_engine(ap, a.engine, a.gpu)
    if not (a.run or a.moon):
        ap.error("give --run RUN (the multi-task net), --moon RUN (MOON) or both")

    models = []
    if a.run:
        models.append(("multi-task", FaceModel.load(a.run, engine=a.engine, gpu=a.gpu, select=a.select)))
    if a.moon:
        models.append(("MOON", MoonModel.load(a.moon, engine=a.engine, gpu=a.gpu, select=a.select)))
    if not a.json:
        print(f"# sign rule: {ATTRIBUTE_RULE}")
    errors = 0
    for photo in a.photos:
        try:
            face = models[0][1].face(photo, a.aligned)
            scores = {name: m.attributes(face) for name, m in models}
        except facemodel.photo_errors() as e:
            errors += 1
            print(json.dumps({"photo": str(photo), "error": str(e)}) if a.json else f"\n{e}", flush=True)
            continue
        if a.json:
            print(json.dumps({"photo": str(photo), "face": face.describe(),
                              "box": None if face.box is None else [round(float(v), 2) for v in face.box],
                              "scores": scores}), flush=True)
            continue
        print(f"\n{face.describe()}")
        names = list(dict.fromkeys(n for s in scores.values() for n in s))
        print(f"{'attribute':<18}" + "".join(f"{name + ' score':>18}{'(sign)':>9}" for name, _ in models))
        for n in names:
            row = f"{n:<18}"
            for name, _ in models:
                s = scores[name].get(n)
                row += f"{'-':>18}{'':>9}" if s is None else f"{s:>18.3f}{('+1 yes' if s > 0 else '-1 no'):>9}"
            print(row, flush=True)
    if errors:
        print(f"\n{errors} of {len(a.photos)} photo(s) could not be scored (named above)", file=sys.stderr)
    return BAD_INPUT if errors else 0


if __name__ == "__main__":
    run_tool(main)
