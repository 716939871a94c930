#!/usr/bin/env python3
"""Extract features of aligned 112x96 faces with a Caffe deploy net, batched, resumable.

    python tools/extract_features.py --deploy models/full/deploy.prototxt \\
        --weights runs/full/finetune_iter_30000.caffemodel \\
        --list $MTDNN_DATA/lfw/lfw-112x96_list.txt --root $MTDNN_DATA/lfw/lfw-112x96 \\
        --mirror concat --out runs/full/features/lfw_fc5

    python tools/extract_features.py --deploy ... --tree aligned/facescrub --l2norm \\
        --out feats/facescrub --bin-dir feats/facescrub_bin --bin-suffix _mtdnn_112x96

Writes OUT.npy (float32 N x D), OUT.names.txt, OUT.labels.npy (when the list has labels) and
OUT.meta.json. Interrupted runs continue where they stopped (OUT.npy.partial +
OUT.progress.json); a finished run with the same settings is not redone (--restart forces it).
--bin-dir also writes the MegaFace devkit files DIR/<image path><suffix>.bin.

Reuse and resume are keyed on content: the SHA-256 of the deploy, the weights and the list
file (retrained weights at the same path are a new run; a partial run of other weights is
refused, --restart starts over). Crops are read by the strict loader: a missing, truncated or
wrongly sized image is listed in OUT.failures.txt and left out of OUT.npy / OUT.names.txt, the
run goes on, and the exit status is 1 unless --allow-failures. A net that gives NaN or
infinite values (e.g. no --weights for a net that needs them), a full disk or an I/O error
stops the run with a message; nothing partial is left as OUT.npy (docs/reliability.md).
"""
import argparse
import sys
from pathlib import Path

from mtdnn import inference
from mtdnn.cli import check_engine, run_tool
from mtdnn.evaluation.features_io import feature_paths
from mtdnn.features import MIRROR_MODES, FeatureError, extract_to_file, list_tree, load_net, read_image_list, source_keys
from mtdnn.fileio import OutputLock, content_key


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", required=True, type=Path, help="deploy prototxt (Input layer)")
    ap.add_argument("--weights", type=Path, help="caffemodel (omit to use the fillers' random weights)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", type=Path, help="image list, 'path [label]' per line, paths relative to --root")
    src.add_argument("--tree", type=Path, help="a folder of aligned images (all .jpg/.png/.bmp below it)")
    ap.add_argument("--root", type=Path, help="folder the --list paths are relative to (default: the list's folder)")
    ap.add_argument("--blob", default="fc5", help="blob to extract (default fc5)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    ap.add_argument("--mirror", choices=MIRROR_MODES, default="none",
                    help="add the flipped image's features: concat (SphereFace LFW rule) or sum")
    ap.add_argument("--l2norm", action="store_true", help="L2-normalise every output vector")
    ap.add_argument("--out", required=True, help="output prefix (OUT.npy, OUT.names.txt, ...)")
    ap.add_argument("--bin-dir", type=Path, help="also write MegaFace devkit .bin files here")
    ap.add_argument("--bin-suffix", default="_mtdnn_112x96", help="devkit file suffix before .bin")
    ap.add_argument("--restart", action="store_true", help="discard a partial or finished run")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--allow-failures", action="store_true",
                    help="exit 0 even when some images could not be used (they are listed in "
                         "OUT.failures.txt and left out of the output)")
    inference.add_arguments(ap, "the net (without --weights: caffe)")
    a = ap.parse_args(argv)
    check_engine(ap, a.engine, a.gpu, a.weights is not None)
    return a


def main(argv=None):
    a = parse_args(argv)
    feature_paths(a.out)  # a folder ('DIR/') is refused before the net is loaded
    lock = OutputLock(a.out)  # noqa: F841 - held while main runs: a second run on OUT stops at once

    if a.list:
        paths, labels = read_image_list(a.list)
        root = a.root or a.list.parent
    else:
        paths, labels, root = list_tree(a.tree), None, a.tree
    restart = a.restart
    if a.weights is None:  # random fillers differ on every load: never reuse or continue them
        print("warning: no --weights: features of the deploy's random filler weights (for tests only); "
              "they are never reused or resumed", file=sys.stderr)
        restart = True
    keys = source_keys(a.deploy, a.weights, a.list)
    net = load_net(a.deploy, a.weights, blob=a.blob, engine=a.engine, gpu=a.gpu)
    record = {"deploy": str(a.deploy.resolve()), "weights": str(a.weights.resolve()) if a.weights else None,
              "weights_key": content_key(a.weights) if a.weights else None, "list": str(a.list) if a.list else None}
    meta = extract_to_file(net, paths, a.out, root=root, labels=labels, blob=a.blob,
                           batch_size=a.batch_size, mirror=a.mirror, l2norm=a.l2norm,
                           bin_dir=a.bin_dir, bin_suffix=a.bin_suffix,
                           info={**keys, "root": str(Path(root).resolve())}, record=record,
                           restart=restart, progress=not a.quiet)
    s = meta["settings"]
    rows = meta.get("rows", s["n"])
    if meta.get("skipped"):
        head = f"{a.out}.npy is complete with these settings and weights ({rows} x {s['dim']}); --restart to redo"
    else:
        rate = meta["rows_last_run"] / meta["seconds_last_run"] if meta["seconds_last_run"] else 0
        head = (f"{rows} x {s['dim']} features of blob {s['blob']} -> {a.out}.npy "
                f"({meta['rows_last_run']} extracted this run, {rate:.1f} images/s, {net.engine} engine)")
    if meta.get("failed"):
        status = 0 if a.allow_failures else 1
        print(f"{head}\nincomplete: {meta['failed']} of {s['n']} images could not be used and are left out "
              f"(listed in {meta['failures']})" + ("" if status == 0 else
              "; exit status 1 (--allow-failures accepts this)"))
        return status
    print(head)
    return 0


if __name__ == "__main__":
    run_tool(main, stop=(FeatureError,),
             interrupt_hint="the rows of every finished batch are kept (OUT.npy.partial, OUT.progress.json); "
                            "rerun the same command to continue from there",
             machine_hint="the run stopped. Free space (or fix the output folder) and rerun the same command: "
                          "it continues from the last finished batch.")
