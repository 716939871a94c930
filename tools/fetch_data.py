#!/usr/bin/env python3
"""Fetch the data the demo and the tests read into the data folder (make data).

    tools/fetch_data.py                      # everything, into $MTDNN_DATA or data/
    tools/fetch_data.py --group demo         # only what make demo reads
    tools/fetch_data.py --dry-run            # say what would be done, touch nothing

Downloads are checksummed (pooch), resumed when a transfer broke, and unpacked atomically.
Data behind a licence form (CelebA, the BLUFR configuration, the MegaFace noise lists, the
reference LFW alignment) is listed with what to download, from where and where to put it;
the run then ends with exit status 2. A folder that already holds everything is checked in
milliseconds and used as it is. Layout, sources and licences: docs/data.md.

Exit status: 0 complete, 2 something must be downloaded by hand (or bad usage), 1 a download
or unpack failed (a rerun resumes).
"""
import argparse
import sys
from pathlib import Path

from mtdnn import fetch
from mtdnn.cli import run_tool
from mtdnn.fileio import OutputLock
from mtdnn.paths import data_root


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="the data folder (default $MTDNN_DATA, else data/ in the repository)")
    p.add_argument("--group", choices=("test", "demo", "full"),
                   help="only the items this use reads (default: all but the full-scale ones: full)")
    p.add_argument("--only", nargs="+", metavar="ITEM", help="only these items (names as --list prints them)")
    p.add_argument("--mirror", metavar="URL", help="fetch every download from URL/<file name> instead of its source")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched or asked for; change nothing")
    p.add_argument("--list", action="store_true", help="print every item with its source, size and licence, and exit")
    p.add_argument("--missing-ok", action="store_true",
                   help="exit 0 even when licence-form items are missing (still listed); make test uses "
                        "it, the tests that need them skip")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    p = parser()
    a = p.parse_args(argv)
    root = (a.data or data_root()).resolve()
    try:
        chosen = fetch.items(a.only, a.group)
    except KeyError as e:
        p.error(str(e.args[0]))
    if a.list:
        for i in chosen:
            size = f"{i.size / 1e6:.1f} MB" if i.size else "-"
            how = "licence form" if i.manual else ("written from other items" if i.derive else "download")
            print(f"{i.name:24s} {how:24s} {size:>10s}  {i.what}\n{'':24s} source: {i.source}; licence: {i.licence}")
        return 0
    if a.dry_run:
        steps = fetch.plan(chosen, root)
        for item, missing, action in steps:
            where = f" from {a.mirror.rstrip('/') + '/' + item.archive_name if a.mirror else item.url}" \
                if action == "download" else ""
            print(f"{action:8s} {item.name}{where}" + (f" ({', '.join(missing)})" if missing else ""))
        todo = sum(action != "present" for _, _, action in steps)
        print(f"fetch_data (dry run): {root}: {len(steps) - todo} of {len(steps)} items present")
        return 0
    lock = OutputLock(root)  # noqa: F841 - held while main runs: a second fetch into the folder stops at once
    try:
        report = fetch.fetch(chosen, root, mirror=a.mirror, progress=not a.quiet)
    except fetch.FetchError as e:
        print(f"fetch_data: error: {e}", file=sys.stderr)
        return 1
    done = len(report.present) + len(report.fetched) + len(report.derived)
    if report.manual:
        print(f"fetch_data: {len(report.manual)} item(s) need a download by hand "
              f"(licence form; docs/data.md):", file=sys.stderr)
        for step in report.manual:
            print(f"- {step.message}", file=sys.stderr)
        print(f"fetch_data: {root}: {done} of {len(chosen)} items ready, {len(report.manual)} missing; "
              f"rerun after downloading them", file=sys.stderr)
        return 0 if a.missing_ok else 2
    print(f"fetch_data: {root}: all {len(chosen)} items ready ({len(report.present)} present, "
          f"{len(report.fetched)} fetched, {len(report.derived)} written)")
    return 0


if __name__ == "__main__":
    run_tool(main, bad=(), interrupt_hint="every item finished so far is kept (each file is written whole or not at "
                                          "all); rerun the same command to fetch the rest")
