#!/usr/bin/env python3
"""Gather the eval tools' JSON results of several runs into one Markdown report with tables
shaped like the paper's Tab. 2-7 (paper figures next to ours) and links to the plots.

    python tools/report.py runs/ --out runs/report.md

RUNS is a folder of run folders (runs/full, runs/fast, ...); each run's *.json results
(lfw.json, megaface.json, identification.json, blufr.json, attributes.json, anywhere below
it) are read. The folder name (or run.json {"name", "model", "rows"}) picks the paper row:
full, fast, full_noattr, fast_noattr, block_variants, config2, config3, attr_eye, attr_nose,
attr_global.

A result JSON that cannot be read (truncated by a full disk, not JSON, unreadable) is named
with the reason and the tool exits with status 1 without writing the report, unless
--allow-broken (then the report is written without those files and says which were left
out).

Two results of one kind in one run (eval/lfw.json and eval_old/lfw.json) are refused, naming
every candidate with its figure: none is picked silently. Move the stale one out of the run
folder or leave it out with --exclude 'eval_old/*'.
"""
import argparse
import sys
from pathlib import Path

from mtdnn.cli import bad_input, run_tool
from mtdnn.evaluation.report import build_report, collect_runs
from mtdnn.fileio import OutputLock, atomic_write_text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="folder of run folders")
    ap.add_argument("--out", type=Path, help="Markdown file (default RUNS/report.md)")
    ap.add_argument("--allow-broken", action="store_true",
                    help="write the report even when some result JSON cannot be read (they are listed)")
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="leave out the result files (and plots) matching GLOB, relative to each run folder, "
                         "e.g. 'eval_old/*' (repeatable)")
    a = ap.parse_args(argv)
    if not a.runs.is_dir():
        ap.error(f"{a.runs} is not a folder")
    lock = OutputLock(a.out or a.runs / "report.md")  # noqa: F841 - held while main runs: a second report stops
    runs, problems = collect_runs(a.runs, a.exclude)
    for p in problems:
        print(f"report.py: unreadable result file: {p}", file=sys.stderr)
    if problems and not a.allow_broken:
        print(f"report.py: error: {len(problems)} result file(s) cannot be read (listed above): rerun the "
              f"evaluation that writes them, or pass --allow-broken to report without them", file=sys.stderr)
        return 1
    if not runs:
        bad_input(f"no result JSON (lfw.json, megaface.json, ...) found below {a.runs}")
    out = a.out or a.runs / "report.md"
    text = build_report(runs, out.parent)
    if problems:
        text += "\n## Left out\n\n" + "\n".join(f"- unreadable: {p}" for p in problems) + "\n"
    atomic_write_text(out, text)
    print(f"{len(runs)} run(s): {', '.join(r['name'] for r in runs)} -> {out}" +
          (f"; {len(problems)} unreadable result file(s) left out (listed in the report)" if problems else ""))
    return 0


if __name__ == "__main__":
    run_tool(main, interrupt_hint="no report was written (an earlier one is as it was); rerun the same command")
