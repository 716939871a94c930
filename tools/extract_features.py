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
"""
import argparse
import sys
from pathlib import Path

from mtdnn.cli import bad_input
from mtdnn.features import MIRROR_MODES, extract_to_file, list_tree, load_net, read_image_list


def main(argv=None):
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
    a = ap.parse_args(argv)

    if a.list:
        paths, labels = read_image_list(a.list)
        root = a.root or a.list.parent
    else:
        paths, labels, root = list_tree(a.tree), None, a.tree
    net = load_net(a.deploy, a.weights)
    info = {"deploy": str(a.deploy.resolve()), "weights": str(a.weights.resolve()) if a.weights else None,
            "root": str(Path(root).resolve())}
    meta = extract_to_file(net, paths, a.out, root=root, labels=labels, blob=a.blob,
                           batch_size=a.batch_size, mirror=a.mirror, l2norm=a.l2norm,
                           bin_dir=a.bin_dir, bin_suffix=a.bin_suffix, info=info,
                           restart=a.restart, progress=not a.quiet)
    s = meta["settings"]
    if meta.get("skipped"):
        print(f"{a.out}.npy is complete with these settings ({s['n']} x {s['dim']}); --restart to redo")
        return
    rate = meta["rows_last_run"] / meta["seconds_last_run"] if meta["seconds_last_run"] else 0
    print(f"{s['n']} x {s['dim']} features of blob {s['blob']} -> {a.out}.npy "
          f"({meta['rows_last_run']} extracted this run, {rate:.1f} images/s)")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, FileNotFoundError) as e:  # bad input: the message, no traceback
        bad_input(e)
