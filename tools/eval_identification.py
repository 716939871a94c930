#!/usr/bin/env python3
"""A MegaFace-style identification stand-in on the data at hand (FaceScrub and MegaFace
are not available here). It is NOT MegaFace: numbers are not comparable with the paper's.

    python tools/eval_identification.py --lfw runs/full/features/lfw_fc5 \\
        --distractors runs/full/features/celeba_fc5 \\
        --exclude $MTDNN_DATA/lfw/peopleDevTrain.txt --out runs/full/eval

Probes (FaceScrub's part): the LFW people with at least --min-images images, less the people
of --exclude (e.g. the View 1 training people). Distractors (MegaFace's part): every image of
the --distractors feature sets (e.g. CelebA) and the LFW people with exactly one image (also
less --exclude), in a seeded random order so that the set of size N is a random sample,
nested in the larger ones. The MegaFace evaluator then gives rank-1, CMC, ROC and TAR at
FAR exactly as for MegaFace. CelebA may hold pictures of LFW people: such distractors are
true matches counted as impostors, which can only lower the figures.
Writes OUT/identification.json and OUT/identification_{cmc,roc,rank1}.png.
"""
import argparse
from pathlib import Path

import numpy as np

from mtdnn.card import record_evaluation
from mtdnn.cli import run_tool
from mtdnn.evaluation.features_io import check_distinct_sets, check_features, check_same_making, load_features, name_index
from mtdnn.evaluation.lfw import read_people, split_lfw
from mtdnn.evaluation.megaface import evaluate_megaface
from mtdnn.evaluation.plots import plot_megaface
from mtdnn.evaluation.roc import TAR_RULES
from mtdnn.fileio import OutputLock, atomic_write_json


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", required=True, help="LFW feature prefix (names NAME/NAME_0001.jpg)")
    ap.add_argument("--distractors", nargs="*", default=[], help="distractor feature prefixes (e.g. CelebA)")
    ap.add_argument("--exclude", type=Path, nargs="*", default=[],
                    help="LFW people files whose people take no part (e.g. peopleDevTrain.txt)")
    ap.add_argument("--min-images", type=int, default=4, help="LFW people with at least this many images are the probes (default 4)")
    ap.add_argument("--no-lfw-singles", action="store_true", help="do not use one-image LFW people as distractors")
    ap.add_argument("--sizes", type=int, nargs="+", help="distractor set sizes (default 10, 100, ... and all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the distractor order")
    ap.add_argument("--far", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4], help="FARs for the TAR (default 1e-6 1e-5 1e-4)")
    ap.add_argument("--tar-rule", choices=TAR_RULES, default="kth", help="how the threshold at a FAR is chosen (default kth)")
    ap.add_argument("--label", default="ours", help="name of the model in the outputs (default ours)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (identification.json and plots)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    ap.add_argument("--accept-mismatch", action="store_true",
                    help="compare feature sets whose meta.json say they were made differently (other weights, "
                         "blob, --mirror or --l2norm): warned about and recorded in the result")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    lock = OutputLock(a.out / "identification")  # noqa: F841 - held while main runs: the same evaluation twice on OUT stops

    sets = {"LFW set": a.lfw, **{f"distractor set {k + 1}": d for k, d in enumerate(a.distractors)}}
    check_distinct_sets(sets)  # one set twice (or a copy): its images would count twice
    mismatch = check_same_making(sets, accept=a.accept_mismatch)

    lfw, lnames, _ = load_features(a.lfw)
    # every input checked as read, before the seeded shuffle: an error names the file, the row
    # in it and the image, and two rows of one image are refused as by the other evaluators
    name_index(lnames, f"{a.lfw}.names.txt")
    check_features(lfw, f"{a.lfw}.npy", names=lnames)
    exclude = {p for f in a.exclude for p, _ in read_people(f)}
    probe, pids, single = split_lfw(lnames, a.min_images, exclude)
    distr, dnames = distractor_set(a.lfw, lfw, lnames, None if a.no_lfw_singles else single, a.distractors, a.seed)
    n = len(distr)
    sizes = a.sizes or [s for s in (10, 100, 1000, 10000, 100000) if s < n] + [n]
    res = evaluate_megaface(np.asarray(lfw[probe]), pids, distr, sizes,
                            probe_names=[lnames[i] for i in probe], far_targets=a.far,
                            tar_rule=a.tar_rule, progress=not a.quiet)
    res.update({"kind": "identification",
                "protocol": "MegaFace-style stand-in: LFW people with >= %d images as probes, "
                            "CelebA and one-image LFW people as distractors (not MegaFace)" % a.min_images,
                "lfw": str(a.lfw), "distractor_sets": a.distractors,
                "excluded_people_files": [str(p) for p in a.exclude], "seed": a.seed})
    if mismatch:
        res["settings_mismatch_accepted"] = mismatch
    atomic_write_json(a.out / "identification.json", res, indent=1)
    plot_megaface(res, a.out, "identification", a.label)
    print(f"stand-in: {res['n_probes']} LFW probes of {res['n_identities']} people, {n} distractors")
    for s in res["results"]:
        t = s["tar_at_far"][0]
        print(f"  {s['distractors']:>7,} distractors: rank-1 {100 * s['rank1']:6.2f} %   "
              f"TAR@FAR {t['far']:g} {100 * t['tar']:6.2f} %")
    print(f"-> {a.out / 'identification.json'}")
    print("model card: " + record_evaluation(a.lfw, "identification", {
        "file": str(a.out / "identification.json"), "protocol": res["protocol"], "n_probes": res["n_probes"],
        "rank1": {str(s["distractors"]): s["rank1"] for s in res["results"]}}))


def distractor_set(lfw_prefix, lfw, lnames, single, sources, seed):
    """The LFW images ``single`` (None: none) and every image of the feature sets ``sources``
    (each checked as read), in the order seeded by ``seed``: (features, names)."""
    parts = [np.asarray(lfw[single])] if single is not None else []
    dnames = [lnames[i] for i in single] if single is not None else []
    for src in sources:
        f, n, _ = load_features(src)
        name_index(n, f"{src}.names.txt")
        if f.shape[1] != lfw.shape[1]:
            raise ValueError(f"{src}.npy: features of dimension {f.shape[1]}, but the LFW features "
                             f"{lfw_prefix}.npy have {lfw.shape[1]}: extract both with the same net and blob")
        parts.append(check_features(f, f"{src}.npy", names=n))
        dnames += [f"{Path(src).name}:{x}" for x in n]
    if not parts:
        raise ValueError("no distractors: give --distractors or allow the one-image LFW people")
    distr = np.concatenate(parts)
    order = np.random.default_rng(seed).permutation(len(distr))
    return distr[order], [dnames[i] for i in order]


if __name__ == "__main__":
    run_tool(main, interrupt_hint="no result file was written (earlier ones are as they were); rerun the same command")
