#!/usr/bin/env python3
"""Gather the eval tools' JSON results of several runs into one Markdown report with tables
shaped like the paper's Tab. 2-7 (paper figures next to ours) and links to the plots.

    python tools/report.py runs/ --out runs/report.md

RUNS is a folder of run folders (runs/full, runs/fast, ...); each run's *.json results
(lfw.json, megaface.json, identification.json, blufr.json, attributes.json, anywhere below
it) are read. The folder name (or run.json {"name", "model", "rows"}) picks the paper row:
full, fast, full_noattr, fast_noattr, block_variants, config2, config3, attr_eye, attr_nose,
attr_global.
"""
import argparse
from pathlib import Path

from mtdnn.cli import bad_input
from mtdnn.evaluation.report import build_report, collect_runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="folder of run folders")
    ap.add_argument("--out", type=Path, help="Markdown file (default RUNS/report.md)")
    a = ap.parse_args(argv)
    runs = collect_runs(a.runs)
    if not runs:
        bad_input(f"no result JSON (lfw.json, megaface.json, ...) found below {a.runs}")
    out = a.out or a.runs / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(runs, out.parent))
    print(f"{len(runs)} run(s): {', '.join(r['name'] for r in runs)} -> {out}")


if __name__ == "__main__":
    main()
