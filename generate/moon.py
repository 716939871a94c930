"""``python -m generate.moon``: the command line of :mod:`mtdnn.netgen.moon` (MOON's nets and solver)."""
import argparse
import sys
from pathlib import Path

from mtdnn.netgen.moon import BACKBONES, TARGET_DATASET, WEIGHT_DATASET, __doc__ as MOON_DOC, render_moon
from mtdnn.netgen.spec import GenerateError
from mtdnn.paper import CELEBA_ATTRIBUTES, GROUPS


def _parser() -> argparse.ArgumentParser:
    doc = MOON_DOC.split("Python::")[0]
    p = argparse.ArgumentParser(prog="python -m generate.moon", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="attribute groups: " + "; ".join(
                                    f"{g} = {','.join(a) or '(none)'}" for g, a in GROUPS.items())
                                + "\nCelebA attributes: " + ", ".join(CELEBA_ATTRIBUTES))
    p.add_argument("--out", type=Path, required=True, help="output folder = run folder")
    p.add_argument("--name", help="net name (default: the --out folder's name)")
    p.add_argument("--backbone", choices=BACKBONES, default="fast", help="default: %(default)s")
    p.add_argument("--attributes", default="all", help="CelebA names, comma-separated, or a group (default all)")
    p.add_argument("--width", type=float, help="width multiplier (default: vgg16 1, fast 0.25)")
    p.add_argument("--blocks", help="fast: Fast-Blocks per group, 4 comma-separated integers (default 3,4,6,3)")
    p.add_argument("--no-batchnorm", dest="batchnorm", action="store_false", default=None,
                   help="vgg16: the plain VGG-16, no BatchNorm")
    p.add_argument("--fc", type=int, help="fc width (default 4096 x width vgg16, 1024 x width fast)")
    p.add_argument("--batch", type=int, help="training batch (default: vgg16 64, fast 32)")
    p.add_argument("--test-batch", type=int, help="default: --batch")
    p.add_argument("--test-images", type=int, help="held-out images (sets test_iter)")
    p.add_argument("--iters", type=int, help="iterations (default: vgg16 20000, fast 3000)")
    p.add_argument("--lr", dest="base_lr", type=float, help="base_lr (default 0.01)")
    p.add_argument("--steps", help="lr x0.1 at these iterations (default 50%% and 75%% of --iters)")
    p.add_argument("--display", type=int)
    p.add_argument("--test-interval", type=int)
    p.add_argument("--snapshot", type=int)
    p.add_argument("--deploy-batch", type=int)
    p.add_argument("--seed", dest="random_seed", type=int, help="the solver's random_seed (default: time-based)")
    for split in ("train", "test"):
        p.add_argument(f"--{split}-lmdb", help=f"{split} image LMDB (relative: from --out)")
        p.add_argument(f"--{split}-hdf5", help=f"{split} HDF5 list file ({TARGET_DATASET}, {WEIGHT_DATASET})")
    p.add_argument("--absolute-paths", action="store_true", help="write absolute paths")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    out, absolute = args.pop("out"), args.pop("absolute_paths")
    try:
        for path in render_moon(out, absolute_paths=absolute, **args):
            print(path)
    except GenerateError as e:
        parser.exit(2, f"python -m generate.moon: error: {e}\n")
    except OSError as e:
        parser.exit(2, f"python -m generate.moon: error: cannot write {out}: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
