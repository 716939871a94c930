#!/usr/bin/env python3
"""Are two photos the same person? Detect, align, extract and score with a trained run folder.

    tools/verify.py A.jpg B.jpg --run work/demo/runs/fast_w0.125
    tools/verify.py --pairs my_pairs.txt --run RUN          # one pair per line: "A.jpg B.jpg"

Each photo's face is found by MTCNN and aligned in memory (mtdnn.mtcnn, mtdnn.align); when a
photo holds several faces the one nearest the centre is used (--select largest: the largest)
and named. The score and the threshold are the run's model card's (RUN/model_card.json,
docs/model_card.md): with the sphereface rule the cosine of the two features after subtracting
the feature mean the threshold was chosen after; the threshold, the pairs it was chosen on and
its accuracy on held-out pairs are printed with the answer.

--pairs FILE: one pair per line, two paths (quoted with "..." when they hold spaces), relative
to --root (default: the file's folder); '#' starts a comment. One line per pair is printed:
answer, score, A, B (answer "error" with the reason for a pair that cannot be scored; the others
go on).

Exit status: one pair: 0 same person, 3 different people, 2 error (a photo without a face, an
unreadable photo, a run folder without a card or threshold), 1 a fault of the machine. --pairs:
0 when every pair was answered, 2 when some could not be (they are listed).
"""
import argparse
import shlex
from pathlib import Path

from mtdnn import facemodel
from mtdnn.cli import BAD_INPUT, check_engine, run_tool
from mtdnn.facemodel import FaceModel

SAME, DIFFERENT = 0, 3


def read_pairs(path: Path, root: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):  # never splitlines (mtdnn/records.py)
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"{path}:{n}: expected two paths, found {len(words)} field(s): {line.strip()!r}")
        pairs.append((root / words[0], root / words[1]))
    if not pairs:
        raise ValueError(f"{path}: no pairs listed")
    return pairs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="*", type=Path, help="the two photos to compare")
    ap.add_argument("--run", required=True, type=Path, help="trained run folder with a model card (model_card.json)")
    ap.add_argument("--pairs", type=Path, help="a file of pairs, two paths per line, instead of two photos")
    ap.add_argument("--root", type=Path, help="folder the --pairs paths are relative to (default: the file's folder)")
    facemodel.add_arguments(ap, "the model and MTCNN")
    a = ap.parse_args(argv)
    check_engine(ap, a.engine, a.gpu)
    if (a.pairs is None) == (len(a.photos) != 2):
        ap.error("give two photos, or --pairs FILE (and no photos)")

    model = FaceModel.load(a.run, engine=a.engine, gpu=a.gpu, select=a.select)
    meaning = model.threshold_meaning()  # no threshold in the card: a message saying how to get one
    if a.pairs is None:
        c = model.compare(*a.photos, aligned=a.aligned)
        for face in c.faces:
            print(face.describe())
        what = "cosine after subtracting the feature mean" if c.rule == "sphereface" else "squared distance"
        print(f"score {c.score:.4f} ({what}) -> {'SAME person' if c.same else 'DIFFERENT people'}")
        print(meaning)
        return SAME if c.same else DIFFERENT

    pairs = read_pairs(a.pairs, a.root or a.pairs.parent)
    print(f"# {meaning}")
    print("# answer\tscore\tA\tB\tnote")
    errors = 0
    for pa, pb in pairs:
        try:
            c = model.compare(pa, pb, aligned=a.aligned)
        except facemodel.photo_errors() as e:
            errors += 1
            print(f"error\t-\t{pa}\t{pb}\t{e}", flush=True)
            continue
        notes = [f.describe() for f in c.faces if f.n_faces > 1]
        print(f"{c.answer}\t{c.score:.4f}\t{pa}\t{pb}\t{'; '.join(notes)}", flush=True)
    print(f"# {len(pairs) - errors} of {len(pairs)} pairs answered" + (f", {errors} could not be scored" if errors else ""))
    return BAD_INPUT if errors else 0


if __name__ == "__main__":
    run_tool(main)
