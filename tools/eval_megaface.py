#!/usr/bin/env python3
"""MegaFace challenge 1 (FaceScrub probes): rank-1, CMC, ROC and TAR at FAR, in Python.

With the devkit's lists and .bin features (one file per image, <path><suffix>.bin):

    python tools/eval_megaface.py \\
        --probes feats/facescrub_bin --probe-list devkit/templatelists/facescrub_features_list.json \\
        --distractors feats/megaface_bin \\
        --distractor-lists devkit/templatelists/megaface_features_list.json_*_1 \\
        --suffix _mtdnn_112x96 --out runs/full/eval

With feature sets from tools/extract_features.py (PREFIX.npy + PREFIX.names.txt), the same
lists pick the rows by image path; without --probe-list the probes' labels are their ids, and
without --distractor-lists the first N rows of the distractor set form the set of size N
(--sizes).

--noise (default: keep cleaned) picks the variants reported, each named in the output and the
JSON: keep (as given), cleaned (the published "cleaned MegaFace": insightface's
remove_noises.py procedure with the noise lists, data megaface/facescrub_noises.txt and
megaface_noises.txt: listed probes replaced by their identity's centre plus tiny noise,
listed distractors kept in the count but out of reach), removed (listed probes and
distractors left out; the sets shrink; not comparable with published cleaned results).

Ties count against the probe (pessimistic); TAR at FAR uses --tar-rule (kth: threshold =
the round(FAR * n_impostor)-th highest impostor score). Writes OUT/megaface.json and
OUT/megaface_{cmc,roc,rank1}.png.
"""
import argparse
from pathlib import Path

from mtdnn.card import record_evaluation
from mtdnn.cli import run_tool
from mtdnn.evaluation.features_io import check_distinct_sets, check_same_making, load_feature_set
from mtdnn.evaluation.megaface import (DEFAULT_SIZES, NOISE_CHOICES, evaluate_with_noise_lists, megaface_list_size,
                                       nested_distractor_order, read_facescrub_list,
                                       read_megaface_list, read_noise_list)
from mtdnn.evaluation.plots import plot_megaface
from mtdnn.evaluation.roc import TAR_RULES
from mtdnn.fileio import OutputLock, atomic_write_json
from mtdnn.paths import data_path

PLOT_PREFIX = {"original": "megaface", "cleaned": "megaface_cleaned", "noise_removed": "megaface_removed"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", required=True, help="probe feature prefix or .bin folder")
    ap.add_argument("--probe-list", type=Path, help="devkit facescrub_features_list.json")
    ap.add_argument("--distractors", required=True, help="distractor feature prefix or .bin folder")
    ap.add_argument("--distractor-lists", type=Path, nargs="+",
                    help="devkit megaface_features_list.json_<N>_1 files (nested sets)")
    ap.add_argument("--sizes", type=int, nargs="+", help=f"distractor set sizes (default {DEFAULT_SIZES} "
                    "up to the number of distractors)")
    ap.add_argument("--suffix", default="_mtdnn_112x96", help="devkit feature file suffix (before .bin)")
    ap.add_argument("--noise", choices=NOISE_CHOICES, nargs="+", default=["keep", "cleaned"],
                    help="variants to report: keep (as given), cleaned (the published cleaning), removed "
                         "(listed images left out) (default: keep cleaned)")
    ap.add_argument("--noise-seed", type=int, default=0, help="seed of the cleaning's uniform noise (default 0)")
    ap.add_argument("--facescrub-noises", type=Path, help="probe noise list (default: data megaface/facescrub_noises.txt)")
    ap.add_argument("--megaface-noises", type=Path, help="distractor noise list (default: data megaface/megaface_noises.txt)")
    ap.add_argument("--far", type=float, nargs="+", default=[1e-6], help="FARs for TAR (default 1e-6)")
    ap.add_argument("--tar-rule", choices=TAR_RULES, default="kth", help="TAR at FAR rule (default kth)")
    ap.add_argument("--chunk-size", type=int, default=8192, help="distractors scored per matrix product (memory vs speed; default 8192)")
    ap.add_argument("--singletons", choices=("error", "drop"), default="error",
                    help="identities with a single probe image: error, or drop them")
    ap.add_argument("--label", default="ours", help="name of the model in the outputs (default ours)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (megaface.json and plots)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--accept-mismatch", action="store_true",
                    help="compare probes and distractors whose meta.json say they were made differently (other "
                         "weights, blob, --mirror or --l2norm): warned about and recorded in the result")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    lock = OutputLock(a.out / "megaface")  # noqa: F841 - held while main runs: the same evaluation twice on OUT stops
    prog = not a.quiet
    sets = {"probes": a.probes, "distractors": a.distractors}
    check_distinct_sets(sets)
    mismatch = check_same_making(sets, accept=a.accept_mismatch)

    plist, pids = read_facescrub_list(a.probe_list) if a.probe_list else (None, None)
    probes, pnames, plabels = load_feature_set(a.probes, plist, a.suffix, "probe", prog)
    pids = pids if pids is not None else plabels
    if pids is None:
        raise ValueError(f"{a.probes} has no labels: give --probe-list")
    if a.distractor_lists:
        order, sizes = nested_distractor_order({megaface_list_size(p): read_megaface_list(p)
                                                for p in a.distractor_lists})
    else:
        order, sizes = None, None
    distr, dnames, _ = load_feature_set(a.distractors, order, a.suffix, "distractor", prog)
    if sizes is None:
        sizes = a.sizes or [s for s in DEFAULT_SIZES if s < distr.shape[0]] + [distr.shape[0]]
    noises = {}
    if a.noise != ["keep"]:
        noises = {"probe_noise": read_noise_list(a.facescrub_noises or data_path("megaface", "facescrub_noises.txt")),
                  "distractor_noise": read_noise_list(a.megaface_noises or data_path("megaface", "megaface_noises.txt"))}
    runs = evaluate_with_noise_lists(probes, pids, pnames, distr, dnames, sizes, noise=a.noise,
                                     seed=a.noise_seed, far_targets=a.far, tar_rule=a.tar_rule, chunk_size=a.chunk_size,
                                     singletons=a.singletons, progress=prog, **noises)
    res = {"kind": "megaface", "probes": str(a.probes), "distractors": str(a.distractors), "runs": runs}
    if mismatch:
        res["settings_mismatch_accepted"] = mismatch
    atomic_write_json(a.out / "megaface.json", res, indent=1)
    show(runs, a.out, a.label)
    print(f"-> {a.out / 'megaface.json'}")
    print("model card: " + record_evaluation(a.probes, "megaface", {
        "file": str(a.out / "megaface.json"), "distractors": str(a.distractors),
        "rank1": {key: {str(s["distractors"]): s["rank1"] for s in r["results"]} for key, r in runs.items()}}))


def show(runs: dict, out: Path, label: str) -> None:
    """Each variant's plots in ``out`` and its figures printed."""
    for key, r in runs.items():
        plot_megaface(r, out, PLOT_PREFIX[key], label)
        print(f"MegaFace ({key}: {r['noise_procedure'].split(':')[0]}): {r['n_probes']} probes of "
              f"{r['n_identities']} identities")
        for s in r["results"]:
            t = s["tar_at_far"][0]
            print(f"  {s['distractors']:>9,} distractors: rank-1 {100 * s['rank1']:6.2f} %   "
                  f"TAR@FAR {t['far']:g} {100 * t['tar']:6.2f} %")


if __name__ == "__main__":
    run_tool(main, interrupt_hint="no result file was written (earlier ones are as they were); rerun the same command")
