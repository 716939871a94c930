"""The run loop: which images to align, the worker pool, the records kept as results come in."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mtdnn import datasets, devkit_align
from mtdnn.fileio import OutputLock, atomic_write_text
from mtdnn.images import ACCEPTED, TreeScan, scan_images
from mtdnn.records import escape_field, read_failures, read_lines, unescape_field
from mtdnn.caffe.run import blas_threads_env

from .landmarks import LANDMARKS_HEADER, read_landmarks, write_records
from .naming import output_paths
from .options import AlignInputError, AlignOptions
from .worker import align_one, init_worker, release_worker


@dataclass
class AlignResult:
    """What a run did: its inputs and their crop names, the records after it, this run's counts,
    and ``stopped`` = (path, message) when a problem of the machine or the output ended it."""
    options: AlignOptions
    paths: list[str]                 # the inputs of this run (after --limit), in order
    names: dict[str, str]            # {input: crop name}
    scan: TreeScan | None            # the tree scan (tree mode) or None
    done: dict[str, str]             # {input: landmarks line}, all runs
    failed: dict[str, str]           # {input: reason}, all runs
    cases: dict[str, str] = field(default_factory=dict)  # --devkit-boxes: {input: method<TAB>why}
    new_ok: int = 0
    new_fail: int = 0
    elapsed: float = 0.0
    stopped: tuple[str, str] | None = None

    def aligned(self) -> list[str]:
        """The inputs with a landmarks record and a crop on disk, in input order."""
        return [rel for rel in self.paths if rel in self.done and (self.options.out / self.names[rel]).is_file()]

    def failures(self) -> dict[str, str]:
        """{input: reason} for the inputs of this run recorded as failed."""
        return {rel: self.failed[rel] for rel in self.paths if rel in self.failed}


def _listed(path: Path) -> list[str]:
    """The paths of a --list file ('path' or 'path label' lines; names that are not UTF-8 come
    back as os.fsdecode gives them)."""
    paths = []
    for _, line in read_lines(path, comments=True):
        parts = line.rsplit(None, 1)
        paths.append(unescape_field(parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line))
    return paths


def input_paths(options: AlignOptions) -> tuple[list[str], TreeScan | None]:
    """(relative paths to align in a deterministic order, the tree scan or None); duplicates
    are reported and dropped."""
    scan = None
    if options.people:
        paths = [s.path for s in datasets.lfw_people_samples(options.people)]
    elif options.list:
        paths = _listed(options.list)
    else:
        scan = scan_images(options.src, exclude=[options.out])
        paths = scan.paths
        for rel, reason in scan.problems:
            print(f"warning: {escape_field(rel)}: {reason}", file=sys.stderr)
    seen, unique = set(), []
    for rel in paths:
        if rel in seen:
            print(f"warning: {escape_field(rel)} is listed more than once; aligned once", file=sys.stderr)
            continue
        seen.add(rel)
        unique.append(rel)
    if not unique:
        skipped = f"; {scan.summary()}" if scan and scan.summary() else ""
        raise AlignInputError(f"no images to align in {options.list or options.people or options.src}{skipped}. "
                              f"Accepted: {ACCEPTED}")
    return unique, scan


@contextlib.contextmanager
def _results(config: dict, tasks: list, workers: int):
    """The results of ``align_one`` over ``tasks``: in this process for one worker (or one
    task), else from a pool of spawned workers, terminated on leaving."""
    if workers == 1 or len(tasks) <= 1:
        init_worker(config)
        try:
            yield map(align_one, tasks)
        finally:
            release_worker()
        return
    # One BLAS thread per worker: the workers are the parallelism (set while they start, then
    # given back). Spawned, not forked, so no worker inherits a half-initialised BLAS or Caffe.
    saved = {k: os.environ.get(k) for k in blas_threads_env(1)}
    os.environ.update(blas_threads_env(1))
    # Workers start with Ctrl-C ignored (inherited through exec): the main process alone
    # handles it, so a Ctrl-C while they import prints no traceback of theirs.
    sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = mp.get_context("spawn").Pool(workers, init_worker, (config,))
    finally:
        signal.signal(signal.SIGINT, sigint)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield pool.imap_unordered(align_one, tasks, chunksize=4)
    finally:
        pool.terminate()
        pool.join()


def _collect(results, result: AlignResult, log, total: int) -> None:
    """Take the workers' results into ``result`` (and append each landmarks line to ``log``)
    until they end or one says stop."""
    for status, rel, info, *case in tqdm(results, total=total, unit="img", smoothing=0.05,
                                         desc="align", dynamic_ncols=True):
        if status == "stop":
            result.stopped = (rel, info)
            return
        if status == "ok":
            log.write(info + "\n")
            log.flush()
            result.done[rel] = info
            result.failed.pop(rel, None)
            result.new_ok += 1
            if case:
                result.cases[rel] = case[0]
        else:
            result.failed[rel] = info
            result.new_fail += 1


def _start(options: AlignOptions) -> tuple[AlignResult, list[str]]:
    """The run's inputs and records so far, and the inputs still to align."""
    options.out.mkdir(parents=True, exist_ok=True)
    try:
        paths, scan = input_paths(options)
    except datasets.DatasetError as e:
        raise AlignInputError(str(e)) from None
    names = output_paths(paths, options.ext)
    if options.limit:
        paths = paths[:options.limit]
    done = read_landmarks(options.landmarks_path)
    failed = {} if options.retry_failed else read_failures(options.failures_path)
    cases = devkit_align.read_cases(options.out / devkit_align.CASES_FILE) if options.devkit_boxes else {}
    result = AlignResult(options, paths, names, scan, done, failed, cases)
    # "error: ..." records are unexpected errors, not properties of the image: tried again.
    todo = [rel for rel in paths
            if (rel not in failed or failed[rel].startswith("error:"))
            and not (rel in done and (options.out / names[rel]).is_file())]
    print(f"{len(paths)} images: {len(paths) - len(todo)} already done or failed, {len(todo)} to align "
          f"with {options.workers} worker(s)", file=sys.stderr)
    return result, todo


def align_images(options: AlignOptions) -> AlignResult:
    """Align the images ``options`` names into ``options.out`` (resumable; tools/align_faces.py's
    help says what is written). Bad input: :class:`AlignInputError`; another run on the same
    output: :class:`~mtdnn.fileio.OutputBusy`; a problem of the machine or the output: an
    OSError, or ``result.stopped`` when it happened to one image's work."""
    options.check()
    with OutputLock(options.out):  # two runs on one OUT: the second stops at once, naming the first
        result, todo = _start(options)
        start = time.time()
        if not options.landmarks_path.is_file():
            atomic_write_text(options.landmarks_path, LANDMARKS_HEADER)
        with open(options.landmarks_path, "a", encoding="utf-8") as log:
            with _results(options.worker_config(), [(rel, result.names[rel]) for rel in todo],
                          options.workers) as results:
                try:
                    _collect(results, result, log, len(todo))
                finally:
                    # Final, sorted, de-duplicated files, replaced atomically (when anything changed).
                    if result.new_ok or result.new_fail or options.retry_failed:
                        write_records(options.landmarks_path, options.failures_path, result.done, result.failed)
                        if options.devkit_boxes:
                            devkit_align.write_cases(options.out / devkit_align.CASES_FILE, result.cases)
        result.elapsed = time.time() - start
        return result
