#!/usr/bin/env python3
"""Fetch the data the demo and the tests read into the data folder (make data).

    tools/fetch_data.py                      # everything, into $MTDNN_DATA or data/
    tools/fetch_data.py --group demo         # only what make demo reads
    tools/fetch_data.py --dry-run            # say what would be done, touch nothing

Every item is tried, from an ordered list of sources each checked against the same
checksum (a source that serves other bytes is a failed source); downloads resume when a
transfer broke (pooch; Google Drive through gdown) and are unpacked atomically. What has no
working source (the BLUFR configuration, the MegaFace noise lists, the reference LFW
alignment; CelebA when Google Drive refuses) is listed with what to download, from where and
where to put it. The run ends with one table: item, size, state (ready / fetched / written /
failed: why / by hand: how and where). A folder that already holds everything is checked in
milliseconds and used as it is. Layout, sources, checksums and licences: docs/data.md.

Exit status: 0 every requested item is there, 2 some item is missing (failed or by hand; or
bad usage), 1 a machine fault (disk full, I/O error) stopped the run.
"""
import argparse
import errno
import os
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
    p.add_argument("--mirror", metavar="URL", help="try URL/<file name> first for every download, then its sources")
    p.add_argument("--sources", type=Path, metavar="JSON",
                   help="replace the sources of the items it names: a JSON object {\"item\": [\"url\", ...]} "
                        f"(default ${fetch.SOURCES_ENV} when set); the checksums stay the official ones")
    p.add_argument("--registry", type=Path, metavar="JSON",
                   help="a mirror of your own that serves other bytes (a repack, a cut copy): its checksums, "
                        "{\"item\": \"sha256:...\"}, replace the official ones of the items it names "
                        f"(default ${fetch.REGISTRY_ENV} when set); the log and the table say so for each")
    p.add_argument("--celeba-limit", type=int, metavar="N",
                   help="unpack only the first N CelebA images (the demo reads 2,000); the zip is kept "
                        "in DATA/.downloads/ for a later full unpack")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched or asked for; change nothing")
    p.add_argument("--list", action="store_true", help="print every item with its source, size and licence, and exit")
    p.add_argument("--missing-ok", action="store_true",
                   help="exit 0 even when items are missing (still listed); make test uses "
                        "it, the tests that need them skip")
    p.add_argument("--optional", nargs="+", metavar="ITEM", default=[],
                   help="items whose absence does not change the exit status (still tried and listed); "
                        "make data-demo passes CelebA's: without it the demo runs its recognition half alone")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    p = parser()
    a = p.parse_args(argv)
    root = (a.data or data_root()).resolve()
    try:
        chosen = fetch.items(a.only, a.group)
        fetch.items(a.optional)
    except KeyError as e:
        p.error(str(e.args[0]))
    if a.list:
        for i in chosen:
            how = "by hand" if not i.sources and not i.derive else ("written from other items" if i.derive else "download")
            print(f"{i.name:26s} {how:24s} {fetch.human_size(i.size):>10s}  {i.what}\n{'':26s} source: {i.source}; "
                  f"licence: {i.licence}" + "".join(f"\n{'':26s} {n}. {u}" for n, u in enumerate(i.sources, 1)))
        return 0
    sources_file = a.sources or os.environ.get(fetch.SOURCES_ENV)
    registry_file = a.registry or os.environ.get(fetch.REGISTRY_ENV)
    try:
        overrides = fetch.read_sources(sources_file) if sources_file else None
        if registry_file:
            chosen = fetch.with_registry(chosen, fetch.read_registry(registry_file), Path(registry_file).name)
    except (OSError, ValueError, KeyError) as e:
        p.error(f"--sources/--registry: {e}")
    if a.dry_run:
        steps = fetch.plan(chosen, root)
        for item, missing, action in steps:
            where = f" from {', then '.join(fetch.sources_of(item, a.mirror, overrides))}" if action == "download" else ""
            print(f"{action:8s} {item.name}{where}" + (f" ({', '.join(missing)})" if missing else ""))
        todo = sum(action != "present" for _, _, action in steps)
        for origin, names in fetch.unofficial(chosen).items():
            print(f"NOTE: checksums from {origin}, NOT the official ones, for: {', '.join(names)}")
        print(f"fetch_data (dry run): {root}: {len(steps) - todo} of {len(steps)} items present")
        return 0
    try:
        lock = OutputLock(root)  # noqa: F841 - held while main runs: a second fetch into the folder stops at once
    except OSError as e:  # a read-only place (a shared data set): checking needs no lock, a fetch stops on its write
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        print(f"fetch_data: note: {e.filename}: {e.strerror}: checking {root} without its lock", file=sys.stderr)
    limits = {"celeba-images": a.celeba_limit} if a.celeba_limit else None
    report = fetch.fetch(chosen, root, mirror=a.mirror, progress=not a.quiet, overrides=overrides, limits=limits)
    print(fetch.table(report))
    done = len(report.present) + len(report.fetched) + len(report.derived)
    lacking = [m.item.name for m in report.manual] + [i.name for i, _ in report.failed]
    if lacking and set(lacking) <= set(a.optional):
        print(f"fetch_data: {root}: {done} of {len(chosen)} items ready; only optional items are missing "
              f"({', '.join(lacking)}): without CelebA the demo runs its recognition half alone")
        return 0
    if not report.complete:
        print(f"fetch_data: {root}: {done} of {len(chosen)} items ready, {len(chosen) - done} missing "
              f"(failed or by hand, above; docs/data.md); rerun after fixing them", file=sys.stderr)
        return 0 if a.missing_ok else 2
    print(f"fetch_data: {root}: all {len(chosen)} items ready ({len(report.present)} present, "
          f"{len(report.fetched)} fetched, {len(report.derived)} written)"
          + "".join(f"; checksums of {len(n)} from {o}, NOT the official ones" for o, n in report.unofficial.items()))
    return 0


if __name__ == "__main__":
    run_tool(main, bad=(), interrupt_hint="every item finished so far is kept (each file is written whole or not at "
                                          "all); rerun the same command to fetch the rest")
