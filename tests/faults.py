"""Real faults for the reliability tests: a small tmpfs that can be filled to the last byte.

``small_disk(path, size)`` mounts a tmpfs of ``size`` at ``path`` (root only; the test is
skipped with the reason where the container forbids mount) and unmounts it afterwards;
``fill(folder)`` writes a filler file until the disk is full and returns it (delete it to free
the space again). ``read_only_disk(path)`` mounts an empty read-only tmpfs there: every write
fails with EROFS, and so does removing a file that was never made.
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m"):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount (root); the fault-injection test covers this case")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the fault-injection test covers this case")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_disk(path: Path):
    with small_disk(path, "64k,ro"):
        yield Path(path)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` until ``leave`` bytes (whole 4 KiB pages) are free;
    returns the filler file."""
    filler = Path(folder) / "filler.bin"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        if leave:
            os.ftruncate(f.fileno(), max(0, os.fstat(f.fileno()).st_size - leave))
    return filler


def nothing_written(out) -> bool:
    """No result in the output folder ``out`` of a refused run: at most the tool's own lock
    (``.NAME.lock``, mtdnn.fileio.OutputLock), which is left in place after every run."""
    out = Path(out)
    return not out.exists() or [p.name for p in out.iterdir() if not p.name.endswith(".lock")] == []
