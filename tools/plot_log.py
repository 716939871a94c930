#!/usr/bin/env python3
"""Turn a Caffe training log into CSV files and a PNG of the loss, test and learning-rate curves.

    python tools/plot_log.py runs/fast/pretrain.log                 # writes beside the log
    python tools/plot_log.py runs/fast/pretrain.log --follow 30     # redraw every 30 s while training runs

Outputs: LOG.train.csv, LOG.test.csv and LOG.png (or in --out). When the log's folder holds
verification.csv (tools/train.py --watch: a pair-list check of the snapshots), the
accuracy of the log's phase is drawn in a fourth panel.
"""
import argparse
import time
from pathlib import Path

from mtdnn.cli import bad_input, run_tool
from mtdnn.caffe.log import parse_caffe_log, plot_curves, write_csv
from mtdnn.watch import phase_curve


def render(log_path: Path, out: Path) -> str:
    log = parse_caffe_log(log_path.read_text(errors="replace"))
    stem = out / log_path.stem
    write_csv(log.train, stem.with_suffix(".train.csv"))
    write_csv(log.test, stem.with_suffix(".test.csv"))
    # the watch's checks (tools/train.py --watch) of this phase, from the run folder
    verification = phase_curve(log_path.parent, log_path.stem)
    plot_curves(log, stem.with_suffix(".png"), title=log_path.name, verification=verification)
    last = log.train[-1] if log.train else {}
    checks = f", {len(verification[0])} verification checks (last {100 * verification[1][-1]:.2f} %)" \
        if verification[0] else ""
    return f"{len(log.train)} training rows (last iteration {last.get('iteration', '-')}, " \
           f"loss {last.get('loss', '-')}), {len(log.test)} test rows{checks} -> {stem}.png"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path, help="a Caffe log (the stderr of `caffe train`)")
    ap.add_argument("--out", type=Path, help="output folder (default: the log's folder)")
    ap.add_argument("--follow", type=float, metavar="SECONDS", help="redraw every SECONDS until interrupted")
    args = ap.parse_args(argv)
    if not args.log.is_file():
        bad_input(f"{args.log}: no such log file")
    out = args.out or args.log.parent
    out.mkdir(parents=True, exist_ok=True)
    while True:
        print(render(args.log, out), flush=True)
        if not args.follow:
            break
        try:
            time.sleep(args.follow)
        except KeyboardInterrupt:
            break
    return 0


if __name__ == "__main__":
    run_tool(main)
