"""Command line of the generator: ``python -m generate {all,list,model} ...`` (see --help)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtdnn.netgen import __doc__ as PACKAGE_DOC
from mtdnn.paper import CELEBA_ATTRIBUTES, GROUPS
from mtdnn.netgen.render import MODELS, compare_all, render_all, render_model
from mtdnn.netgen.spec import BLOCKS, GenerateError
from mtdnn.netgen.variants import ALIASES, VARIANTS, paper_rows


def _variants_text(rows: bool = False) -> str:
    lines = ["variants (models/<name>/):"]
    for name, spec in VARIANTS.items():
        lines.append(f"  {name:15s} {spec.title}")
        if rows:
            lines.append(f"  {'':15s} paper: {paper_rows(spec)}")
    lines.append("aliases: " + ", ".join(f"{a} = {t}" for a, t in ALIASES.items()))
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m generate", formatter_class=fmt,
        description=PACKAGE_DOC.split("\n\n")[0] + "\n\n" + PACKAGE_DOC.split("\n\n", 1)[1].split("Python::")[0],
        epilog=_variants_text())
    sub = parser.add_subparsers(dest="command", required=True, metavar="{all,list,model}")

    p = sub.add_parser("all", formatter_class=fmt, help="render every committed variant into models/",
                       description="Render every variant with the paper's defaults, and "
                                   "models/README.md, into models/ (or --out).",
                       epilog=_variants_text())
    p.add_argument("--out", type=Path, default=MODELS, help="output folder (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the files that differ from the templates")

    sub.add_parser("list", help="list variants, the paper's rows they are, and aliases")

    p = _model_parser(sub, fmt)
    # the top-level help names every parameter of `model` too
    flags = [a.option_strings[-1] for a in p._actions if a.option_strings and a.dest != "help"]
    parser.epilog += "\nmodel parameters (python -m generate model --help): " + " ".join(flags)
    return parser


def _model_parser(sub, fmt) -> argparse.ArgumentParser:
    """The ``model`` command: a variant's parameters, each of which can be overridden."""
    p = sub.add_parser(
        "model", formatter_class=fmt, help="render one model folder with custom parameters",
        description="Render one model folder: a variant's parameters, each of which can be "
                    "overridden.\nUnset options keep the variant's (paper) values.",
        epilog=_variants_text() + "\n\nattribute groups: " + "; ".join(
            f"{g} = {','.join(a) or '(none)'}" for g, a in GROUPS.items())
        + "\nCelebA attributes: " + ", ".join(CELEBA_ATTRIBUTES))
    p.add_argument("--out", type=Path, required=True,
                   help="output folder = run folder; also the model's name unless --name")
    p.add_argument("--variant", default="full", help="base variant or alias (default: %(default)s)")
    p.add_argument("--name", help="model name in the files (default: the --out folder's name)")
    g = p.add_argument_group("network")
    g.add_argument("--block", choices=sorted(BLOCKS), help="residual block type")
    g.add_argument("--config", type=int, choices=(1, 2, 3), help="last-layer configuration (Tab. 6)")
    g.add_argument("--attributes", metavar="LIST",
                   help="comma-separated CelebA names or a group (eye, nose, global, all, none)")
    g.add_argument("--identities", type=_positive_int, metavar="P", help="identity classes (paper: 10575)")
    g.add_argument("--width", type=_positive_float, help="width multiplier of every conv and fc layer")
    _training_options(p.add_argument_group("training"))
    _data_options(p.add_argument_group("data (relative paths are taken from the run folder --out)"))
    return p


def _training_options(g) -> None:
    g.add_argument("--batch", type=_positive_int, help="training batch (paper: 40 full, 48 fast)")
    g.add_argument("--test-batch", type=_positive_int, help="test batch (default: --batch)")
    g.add_argument("--test-images", type=_positive_int,
                   help="held-out images, sets test_iter (default: one per identity)")
    g.add_argument("--pretrain-iter", type=_positive_int,
                   help="pre-training iterations (paper 70000); lr steps, display, test and snapshot intervals scale with it")
    g.add_argument("--finetune-iter", type=_positive_int, help="fine-tuning iterations (paper 30000), scaled likewise")
    g.add_argument("--pretrain-lr", type=_positive_float, help="pre-training base_lr (paper 0.01)")
    g.add_argument("--finetune-lr", type=_positive_float, help="fine-tuning base_lr (paper 0.001)")
    g.add_argument("--lambda1", type=float, help="attribute loss weight when fine-tuning (paper 0.1)")
    g.add_argument("--lambda2", type=float, help="identity loss weight (paper 1)")
    g.add_argument("--test-interval", type=_positive_int, help="test_interval of both solvers")
    g.add_argument("--snapshot", type=_positive_int, help="snapshot interval of both solvers")
    g.add_argument("--display", type=_positive_int, help="display interval of both solvers")
    g.add_argument("--seed", dest="random_seed", type=int, metavar="N",
                   help="the solvers' random_seed (default: Caffe's time-based seed)")
    g.add_argument("--deploy-batch", type=_positive_int, help="batch of deploy.prototxt's Input (default 1)")


def _data_options(g) -> None:
    g.add_argument("--train-lmdb", help="training image LMDB (Datum records)")
    g.add_argument("--test-lmdb", help="validation image LMDB (default: --train-lmdb when that is given)")
    g.add_argument("--train-hdf5", help="text file listing the training attribute .h5 files")
    g.add_argument("--test-hdf5", help="likewise for validation (default: --train-hdf5 when that is given)")
    g.add_argument("--check-paths", dest="check_paths", action="store_true", default=None,
                   help="check every data path, placeholders too (default: check those given)")
    g.add_argument("--no-check-paths", dest="check_paths", action="store_false",
                   help="check no data path")
    g.add_argument("--absolute-paths", action="store_true",
                   help="write absolute net, snapshot and data paths, so caffe runs from any directory")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(_variants_text(rows=True))
        elif args.command == "all":
            if args.check:
                problems = compare_all(args.out)
                for line in problems:
                    print(line)
                if problems:
                    print(f"{args.out} differs from the templates: run python -m generate all",
                          file=sys.stderr)
                    return 1
                print(f"{args.out} is up to date")
            else:
                paths = render_all(args.out)
                print(f"wrote {len(paths)} files into {args.out}")
        else:
            params = {k: v for k, v in vars(args).items()
                      if k not in ("command", "out", "variant", "check_paths", "absolute_paths")}
            paths = render_model(args.out, args.variant, check_paths=args.check_paths,
                                 absolute_paths=args.absolute_paths, **params)
            for path in paths:
                print(path)
    except GenerateError as e:
        parser.exit(2, f"python -m generate: error: {e}\n")
    except OSError as e:  # e.g. --out is a file, or not writable
        parser.exit(2, f"python -m generate: error: cannot write the model folder: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
