#!/usr/bin/env python3
"""Features of arbitrary photos (detection and alignment included), for one's own index or classifier.

    tools/embed.py a.jpg b.jpg c.jpg --run work/demo/runs/fast_w0.125 --out feats/mine
    tools/embed.py --list photos.txt --root DIR --run RUN --out feats/mine

Each photo's face is found by MTCNN and aligned in memory (mtdnn.mtcnn, mtdnn.align); with
several faces the one nearest the centre is used (--select largest: the largest) and named.
The features are the run's model card's (its blob and mirror mode, docs/model_card.md), in the
project's feature format (what tools/eval_*.py read): OUT.npy (float32 N x D), OUT.names.txt
(the photos' paths as given), OUT.faces.tsv (per photo: the face used, its box and how many
faces the photo holds) and OUT.meta.json (the run, the weights' SHA-256, blob, mirror, and the
card's feature mean and threshold so that scores match tools/verify.py's). A photo without a
face, or that cannot be read, is listed in OUT.failures.txt and left out; the others go on.

Exit status: 0 every photo embedded, 1 some could not be (--allow-failures: 0) or a fault of
the machine, 2 bad input (no photo embedded, a run folder without a card).
"""
import argparse
from pathlib import Path

import numpy as np

from mtdnn import facemodel
from mtdnn.cli import check_engine, run_tool
from mtdnn.evaluation.features_io import feature_paths, write_names
from mtdnn.facemodel import FaceModel
from mtdnn.fileio import atomic_write, atomic_write_json, atomic_write_text, escape_field
from mtdnn.records import read_names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="*", type=Path, help="photos (any size; the face is detected and aligned)")
    ap.add_argument("--list", type=Path, help="a file of photo paths, one per line, instead of (or beside) PHOTOS")
    ap.add_argument("--root", type=Path, help="folder the --list paths are relative to (default: the list's folder)")
    ap.add_argument("--run", required=True, type=Path, help="trained run folder with a model card (model_card.json)")
    ap.add_argument("--out", required=True, help="output prefix (OUT.npy, OUT.names.txt, OUT.faces.tsv, OUT.meta.json)")
    ap.add_argument("--batch-size", type=int, default=32, help="faces per forward pass (default 32)")
    ap.add_argument("--allow-failures", action="store_true", help="exit 0 even when some photos had no face")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    facemodel.add_arguments(ap, "the model and MTCNN")
    a = ap.parse_args(argv)
    check_engine(ap, a.engine, a.gpu)
    photos = [str(p) for p in a.photos]
    if a.list:
        root = a.root or a.list.parent
        photos += [str(root / name) for name in read_names(a.list)]  # the one record reader (mtdnn/records.py)
    if not photos:
        ap.error("give photos, or --list FILE")

    from tqdm import tqdm
    model = FaceModel.load(a.run, engine=a.engine, gpu=a.gpu, select=a.select)
    faces, failed = [], []
    for p in tqdm(photos, unit="photo", desc="detect + align", disable=a.quiet):
        try:
            faces.append(model.face(p, a.aligned))
        except facemodel.photo_errors() as e:
            failed.append((p, str(e)))
    if not faces:
        raise ValueError(f"none of the {len(photos)} photo(s) has a usable face (e.g. {failed[0][1]}); nothing written")
    feats = np.concatenate([model.embed_faces(faces[i:i + a.batch_size]) for i in range(0, len(faces), a.batch_size)])

    files = feature_paths(a.out)
    files["features"].parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(files["features"], "wb") as f:
        np.save(f, feats)
    write_names(files["names"], [f.source for f in faces])
    atomic_write_text(Path(a.out + ".faces.tsv"), "# photo\tfaces\tused\tx1\ty1\tx2\ty2\tscore\n" + "".join(
        f"{escape_field(f.source)}\t{f.n_faces}\t{f.index + 1}\t" +
        ("\t".join(f"{v:.2f}" for v in f.box) if f.box is not None else "-\t-\t-\t-\t-") + "\n" for f in faces))
    failures = Path(a.out + ".failures.txt")
    if failed:
        atomic_write_text(failures, "".join(f"{escape_field(p)}\t{escape_field(r)}\n" for p, r in failed))
    else:
        failures.unlink(missing_ok=True)
    card = model.card
    atomic_write_json(files["meta"], {
        "run": str(Path(a.run).resolve()), "weights": card["weights"], "deploy": card["deploy"],
        "settings": {"n": len(photos), "dim": int(feats.shape[1]), "blob": card["features"]["blob"],
                     "mirror": card["features"].get("mirror"), "l2norm": bool(card["features"].get("l2norm")),
                     "weights_sha256": card["weights"]["sha256"], "aligned_input": a.aligned, "select": a.select},
        "verification": card.get("verification"), "engine": model.net.engine,
        "rows": len(faces), "failed": len(failed), "failures": str(failures) if failed else None})
    several = [f for f in faces if f.n_faces > 1]
    for f in several:
        print(f.describe())
    print(f"{len(faces)} x {feats.shape[1]} features -> {files['features']} ({model.net.engine} engine)")
    if failed:
        for p, r in failed:
            print(f"  no features: {r}")
        print(f"incomplete: {len(failed)} of {len(photos)} photo(s) left out (listed in {failures})")
        return 0 if a.allow_failures else 1
    return 0


if __name__ == "__main__":
    run_tool(main)
