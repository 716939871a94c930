"""MegaFace challenge 1 (FaceScrub probes) in Python: identification CMC and verification ROC.

Protocol (Kemelmacher-Shlizerman et al. 2016, as the devkit runs it):

* identification: for each identity and each of its images i put into the gallery with the
  N distractors, every other image j of that identity is a probe; the rank of the pair
  (j, i) is 1 + the number of distractors d that score at least as high as i,
  ``rank(j, i) = 1 + #{d : s(j, d) >= s(j, i)}``. Rank-1 and CMC(k) are averaged over all
  (probe, gallery) pairs.
* ties: **pessimistic** -- a distractor with a score equal to s(j, i) is counted as ranked
  above the gallery image (the devkit's tie order is not documented; this rule never
  flatters a model). A distractor whose feature is identical to a gallery image's (a
  FaceScrub photo among the distractors) ties exactly, whatever BLAS path scored it (see
  the note on exact ties below).
* verification: genuine pairs are the unordered probe-probe pairs of one identity,
  impostor pairs all probe-distractor pairs; TAR at FAR with the rule named in the result
  (see ``roc.TAR_RULES``; default ``kth``: threshold = the round(FAR * n_impostor)-th
  highest impostor score).
* scores are cosine similarities of L2-normalised features (``normalize=True``).

Distractor sets of several sizes are evaluated in one pass: the sets must be nested, the
distractor array ordered so that the set of size N is its first N rows
(``nested_distractor_order`` builds that order from the devkit's lists).

Scale: the probe x distractor scores are computed chunk by chunk with one float32 GEMM
each and never held whole nor sorted: rank-k needs, per (probe, gallery image), only the
count of distractors scoring at least as high, so per probe only the few distractors above
its lowest gallery score are sorted; a running top-k (``np.partition``) keeps the highest
impostor scores for TAR at small FAR, and a histogram on a fixed grid of thresholds gives
the rest of the ROC (``evaluate_megaface``). Each score is read once after its GEMM, by one
compiled pass (numba) that answers all three questions; chunks are scored in parallel, one
per core with a single-threaded GEMM each. ``bench/bench_megaface.py`` measures the whole
evaluation against the bare GEMMs (1M distractors on 2 cores: 1.10 and 1.14x, 2026-12-03).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import queue
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from mtdnn import datasets

from .features_io import check_features, l2_normalize
from .roc import TAR_RULES, TopK, count_ge, count_gt, matlab_round, tar_at_far, thin_roc

DEFAULT_SIZES = (10, 100, 1000, 10000, 100000, 1000000)
TIE_RULE = ("pessimistic: rank(j, i) = 1 + #{d : s(j, d) >= s(j, i)}, a distractor scoring "
            "equal to the gallery image is counted above it")


# ---------------------------------------------------------------------------- devkit lists
def read_facescrub_list(path) -> tuple[list[str], list[str]]:
    """The devkit's ``facescrub_features_list.json`` ``{"path": [...], "id": [...]}`` as
    (paths, ids), read by ``mtdnn.datasets.read_megaface_list`` (duplicate paths are errors)."""
    samples = datasets.read_megaface_list(path)
    return [s.path for s in samples], [s.identity for s in samples]


def read_megaface_list(path) -> list[str]:
    """The paths of a devkit distractor list ``megaface_features_list.json_<N>_<set>``."""
    return [s.path for s in datasets.read_megaface_list(path)]


def megaface_list_size(path) -> int:
    """The distractor count in a devkit list's name (``..._list.json_10000_1`` -> 10000)."""
    m = re.search(r"_(\d+)_\d+$", Path(path).name)
    if not m:
        raise ValueError(f"{path}: name does not end in _<size>_<set> like the devkit's lists")
    return int(m.group(1))


def nested_distractor_order(lists: dict) -> tuple[list[str], list[int]]:
    """One ordering of the distractors in which every list ``{size: paths}`` is a prefix.

    Returns ``(paths, sizes)``. ValueError when a list's length differs from its size, holds
    duplicates or is not contained in the next larger list.
    """
    order: list[str] = []
    seen: set = set()
    sizes = []
    prev = None
    for size in sorted(lists):
        paths = list(lists[size])
        if len(paths) != size:
            raise ValueError(f"distractor list of size {size} holds {len(paths)} paths")
        if len(set(paths)) != len(paths):
            raise ValueError(f"distractor list of size {size} holds duplicate paths")
        pset = set(paths)
        if not seen <= pset:
            raise ValueError(f"distractor list of size {prev} is not contained in the list of "
                             f"size {size}: the sizes must be nested")
        order.extend(p for p in paths if p not in seen)
        seen = pset
        sizes.append(size)
        prev = size
    return order, sizes


def read_noise_list(path) -> list[str]:
    """A published noise list: one image per line; lines starting with '#' are notes."""
    with open(path, encoding="utf-8") as f:
        return [s.strip() for s in f if s.strip() and not s.lstrip().startswith("#")]


def noise_mask(names: Sequence[str], noise: Sequence[str]) -> np.ndarray:
    """True for names on the noise list. An entry with a folder (MegaFace's
    ``375/37531198@N00/4174611825_0.jpg``) matches names ending with that path; an entry
    without one (FaceScrub's ``Aaron_Eckhart_136.png``) matches the file name."""
    files = {n for n in noise if "/" not in n}
    paths = [n.strip("/") for n in noise if "/" in n]
    mask = np.zeros(len(names), dtype=bool)
    for i, name in enumerate(names):
        name = name.replace("\\", "/")
        if PurePosixPath(name).name in files:
            mask[i] = True
        elif paths and any(name == p or name.endswith("/" + p) for p in paths):
            mask[i] = True
    return mask


class RowSubset:
    """Rows ``index`` of a 2-D array-like, read chunk by chunk (for noise removal on a memmap)."""

    def __init__(self, array, index):
        self.array = array
        self.index = np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index), array.shape[1])

    def __getitem__(self, sl):
        if not isinstance(sl, slice):
            raise TypeError("RowSubset supports slices only")
        return np.asarray(self.array[self.index[sl]])


# ---------------------------------------------------------------------------- pairs
def identity_groups(ids, *, singletons: str = "error", names: Sequence[str] | None = None):
    """Integer identity codes of the probes and the probes kept.

    An identity with one probe image forms no (probe, gallery) pair and no genuine pair:
    ``singletons="error"`` raises ValueError naming them, ``"drop"`` leaves them out (they
    are then listed in the result).
    """
    ids = np.asarray(ids)
    if names is not None:
        if len(names) != len(ids):
            raise ValueError(f"{len(names)} probe names for {len(ids)} probe ids")
        seen = {}
        for i, n in enumerate(names):
            if n in seen:
                raise ValueError(f"probe {n!r} is listed twice (rows {seen[n]} and {i})")
            seen[n] = i
    uniq, code, count = np.unique(ids, return_inverse=True, return_counts=True)
    single = uniq[count < 2]
    if len(single) and singletons == "error":
        raise ValueError(f"{len(single)} probe identit(y/ies) with a single image, e.g. "
                         f"{', '.join(map(str, single[:5]))}: they form no probe/gallery pair "
                         f"(singletons='drop', --singletons drop, leaves them out)")
    if singletons not in ("error", "drop"):
        raise ValueError(f"singletons must be 'error' or 'drop', not {singletons!r}")
    keep = count[code] >= 2
    if keep.sum() == 0:
        raise ValueError("no identity has two or more probe images")
    return code, keep, [str(s) for s in single]


def probe_gallery_pairs(code: np.ndarray):
    """All ordered pairs (j, i), i != j, of one identity, sorted by probe j.

    Returns ``(probe, gallery, offsets)``: the pairs of probe j are ``offsets[j]:offsets[j+1]``.
    """
    order = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
    bounds = np.r_[starts, len(order)]
    probe, gallery = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = order[a:b]
        j, i = np.meshgrid(members, members, indexing="ij")
        off = j != i
        probe.append(j[off])
        gallery.append(i[off])
    probe = np.concatenate(probe)
    gallery = np.concatenate(gallery)
    s = np.lexsort((gallery, probe))
    probe, gallery = probe[s], gallery[s]
    offsets = np.searchsorted(probe, np.arange(len(code) + 1))
    return probe, gallery, offsets


def default_cmc_ranks(n_distractors: int, n_log: int = 60) -> np.ndarray:
    """Ranks 1..10 then log-spaced up to N + 1 (the worst possible rank)."""
    top = n_distractors + 1
    log = np.round(np.logspace(1, math.log10(max(top, 10)), n_log)).astype(np.int64)
    return np.unique(np.r_[np.arange(1, min(10, top) + 1), log[log <= top]])


# ---------------------------------------------------------------------------- evaluator
def _chunks(sizes, chunk_size):
    """Chunk bounds over the distractors that end exactly at every size."""
    a = 0
    for s in sizes:
        while a < s:
            b = min(a + chunk_size, s)
            yield a, b, b == s
            a = b


# Exact ties. Two BLAS products of the same pair of vectors need not give the same float32
# score: OpenBLAS picks its kernel and blocking by the shape of the product (a chunk of a few
# distractors goes through a small-matrix or GEMV path, probes @ probes.T may go through
# SYRK), and each path sums the D products in its own order, so the rounding differs in the
# last bit (seen here for ~90 % of the pairs of a 60 x 512 probe set against a 3-column chunk).
# A distractor whose feature equals a gallery image's would then score a hair above or below
# the gallery image, and the pessimistic rule (a tie counts against the probe) would hold or
# not by chance. So ties of identical vectors are made exact by construction: a distractor
# row that is bit-for-bit equal to a probe row i (found by a hash of its first values, then
# compared whole) gets, against every probe j, the very score s(j, i) the gallery image i
# gets. Scores of different vectors are what float32 products give; exact-arithmetic ties of
# different vectors are not special-cased (they need constructed features, whose products
# are then exact anyway, e.g. small integers).
_HASH_COLS = 8
_HASH_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                       0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
                      dtype=np.uint64)


def _row_hash(x: np.ndarray) -> np.ndarray:
    """A uint64 hash of the bits of each row's first values (exact integer arithmetic, so equal
    rows always hash equal)."""
    v = np.ascontiguousarray(x[:, :_HASH_COLS]).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        return (v * _HASH_MULT[:v.shape[1]]).sum(axis=1, dtype=np.uint64)


class _ProbeCopies:
    """Finds distractor rows equal to a probe row (see the note on exact ties above)."""

    def __init__(self, probes: np.ndarray):
        self.probes = probes
        self.by_hash: dict[int, list[int]] = {}
        for i, h in enumerate(_row_hash(probes).tolist()):
            self.by_hash.setdefault(h, []).append(i)
        self.hashes = np.array(sorted(self.by_hash), dtype=np.uint64)

    def find(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(columns of ``chunk``, probe rows they equal)."""
        h = _row_hash(chunk)
        cand = np.flatnonzero(np.isin(h, self.hashes))
        cols, rows = [], []
        for c in cand.tolist():
            for i in self.by_hash[int(h[c])]:
                if np.array_equal(chunk[c], self.probes[i]):
                    cols.append(c), rows.append(i)
                    break
        return np.array(cols, dtype=np.int64), np.array(rows, dtype=np.int64)


# The ROC beyond the kept top impostor scores: counts at the thresholds k / 256, k = -256..256.
# Scaling a float32 by 256 is exact, so floor(s * 256) puts every score in its bucket exactly
# and a count "score >= k / 256" is "bucket >= k", with no rounding at the bucket edges.
GRID_STEPS = 256
GRID_BINS = 2 * GRID_STEPS + 2   # below -1, the 512 buckets of [-1, 1), 1 and beyond


@functools.cache
def _scan_kernel():
    """The one pass over a block of scores (compiled with numba on first use, ~0.5 s).

    numpy would need a pass per question (bucket, compare, select) and its ``bincount``
    alone costs 2.5x the GEMM time it follows; compiled, the whole scan reads each score once
    and releases the GIL, so blocks run in parallel threads."""
    from numba import njit

    top_bin = GRID_BINS - 1

    @njit(nogil=True)
    def scan(block, tau, gal_min, grid, hist, cands, above, counts):
        nc = 0
        na = 0
        for r in range(block.shape[0]):
            g = gal_min[r]
            lo = min(g, tau)
            cnt = 0
            for c in range(block.shape[1]):
                v = block[r, c]
                if grid:
                    if not v >= -1.0:        # below -1, -inf (an ignored distractor)
                        hist[0] += 1
                    elif v >= 1.0:           # 1 and a hair beyond (rounding)
                        hist[top_bin] += 1
                    else:                    # v * 256 is exact, so is its floor
                        hist[np.int64(np.floor(v * np.float32(GRID_STEPS))) + GRID_STEPS + 1] += 1
                if v >= lo:
                    if v > tau:
                        cands[nc] = v
                        nc += 1
                    if v >= g:
                        above[na] = v
                        na += 1
                        cnt += 1
            counts[r] = cnt
        return nc, na

    return scan


def _scan_scores(block: np.ndarray, tau, gal_min: np.ndarray, grid: bool):
    """One read of each score of ``block`` (rows = probes) answers the three questions the
    evaluator asks of it:

    * ``hist``: bucket counts on the k / 256 grid (when ``grid``): bin 0 below -1 (and -inf),
      bin k + 257 for floor(s * 256) = k, k = -256..255, bin 513 for s >= 1 (a cosine rounded
      a hair beyond 1 stays in range). Scaling a float32 by 256 is exact, so a count "score
      >= k / 256" is exactly "bin >= k + 257", with no rounding at the bucket edges;
    * ``cands``: the scores above ``tau`` (top-k candidates);
    * ``above``, ``counts``: row by row, the scores >= that row's ``gal_min``, and how many.
    """
    block = np.ascontiguousarray(block, dtype=np.float32)
    hist = np.zeros(GRID_BINS, dtype=np.int64)
    cands = np.empty(block.size, dtype=np.float32)
    above = np.empty(block.size, dtype=np.float32)
    counts = np.empty(block.shape[0], dtype=np.int64)
    nc, na = _scan_kernel()(block, np.float32(tau), np.ascontiguousarray(gal_min, dtype=np.float32),
                            bool(grid), hist, cands, above, counts)
    return hist, cands[:nc], above[:na], counts


def _ordered_bits(v: np.ndarray) -> np.ndarray:
    """int64 keys in [0, 2^32) in the order of the float32 values ``v`` (their bits, the
    negative ones' magnitude bits flipped): comparing keys is comparing the floats exactly.
    -0.0 must have been made +0.0 (``v + 0``) first, as the two are equal floats."""
    i = np.asarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, i ^ 0x7FFFFFFF, i) + (1 << 31)


def _threads() -> tuple[int, int]:
    """(chunks scored at once, BLAS threads each): every core busy, at most 8 score buffers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(cores, 8))
    return workers, max(1, cores // workers)


def _count_block(s, r0, r1, tau, gal_min, gal_key, pair_probe, offsets, pair_ge, grid: bool):
    """The work on score rows r0:r1 of one chunk: adds to ``pair_ge`` (the chunk's own counts,
    so chunks can run in parallel) the distractors scoring >= each gallery score, and
    returns the grid histogram and the impostor scores above ``tau`` (top-k candidates).

    Only the scores at least the probe's lowest gallery score can count; they are sorted by
    (row, score) as one int64 key each, and every pair's count is one ``searchsorted``."""
    hist, cands, above, counts = _scan_scores(s[r0:r1], tau, gal_min[r0:r1], grid)
    if above.size:
        rows = np.repeat(np.arange(r1 - r0, dtype=np.int64), counts)
        keys = np.sort((rows << 32) | _ordered_bits(above + np.float32(0)))
        o0, o1 = offsets[r0], offsets[r1]
        qrow = pair_probe[o0:o1] - r0
        row_end = np.cumsum(counts)[qrow]
        pair_ge[o0:o1] += row_end - np.searchsorted(keys, (qrow << 32) | gal_key[o0:o1], side="left")
    return hist, cands


def evaluate_megaface(probes, probe_ids, distractors, sizes=DEFAULT_SIZES, *,
                      probe_names: Sequence[str] | None = None,
                      far_targets: Sequence[float] = (1e-6,), tar_rule: str = "kth",
                      cmc_ranks=None, normalize: bool = True, singletons: str = "error",
                      chunk_size: int = 8192, roc_topk: int = 100_000, ignore=None,
                      progress: bool = True, desc: str = "distractors") -> dict:
    """MegaFace identification (rank-1, CMC) and verification (ROC, TAR at FAR).

    probes: n x D features of the probe images; probe_ids: their identities.
    distractors: N x D array-like sliceable by rows (ndarray, np.memmap, ``RowSubset`` or any
    object with ``shape`` and ``[a:b]``), read in chunks of ``chunk_size`` rows.
    sizes: distractor set sizes, each the first ``size`` rows (nested sets), each <= N.
    normalize: L2-normalise probes and distractors (scores are then cosines); with False
    the features are used as given and scores are plain dot products.
    roc_topk: how many of the highest impostor scores to keep exactly (at least as many as
    the largest ``far_targets`` needs); the ROC at larger FAR comes from exact counts at the
    thresholds k / 256 (cosines only).
    ignore: optional boolean mask over the N distractors: those rows still count in the set
    sizes and in the number of impostor pairs, but score -inf against every probe (never
    above a gallery image, never accepted): the published "cleaned MegaFace" treatment of
    noisy distractors (``evaluate_with_noise_lists``).

    Scale (the module's note): each chunk's scores come from one float32 GEMM, never held
    whole or sorted (``_ChunkScorer``). Memory: the distractor chunk and one n x ``chunk_size``
    float32 score buffer per worker (one worker per core, at most 8).

    Returns a dict: protocol notes (``tie_rule``, ``tar_rule``), counts, and ``results``:
    one entry per size with ``rank1``, ``cmc`` {rank, rate}, ``tar_at_far`` [...] and ``roc``
    {far, tar}.
    """
    probes, code, single, sizes, ignore = _checked_inputs(probes, probe_ids, distractors, sizes, tar_rule=tar_rule,
                                                          normalize=normalize, singletons=singletons,
                                                          probe_names=probe_names, ignore=ignore)
    n = probes.shape[0]
    gallery = _Gallery.of(probes, code)
    grid = (np.arange(-GRID_STEPS, GRID_STEPS + 1) / GRID_STEPS).astype(np.float32) if normalize \
        else np.empty(0, dtype=np.float32)
    n_imp_max = n * sizes[-1]
    top = TopK(min(n_imp_max, max(roc_topk, matlab_round(max(far_targets, default=0) * n_imp_max) + 1)))
    workers, blas_threads = _threads()
    scorer = _ChunkScorer(probes, distractors, gallery, normalize=normalize, ignore=ignore, top_k=top.k,
                          columns=min(chunk_size, sizes[-1]), workers=workers)
    results = []

    def at_size(size, hist, pair_ge):
        grid_ge = np.cumsum(hist[::-1])[::-1][1:] if normalize else np.zeros(0, np.int64)
        results.append(_summarize(size, n, pair_ge, gallery.genuine, top, grid, grid_ge,
                                  far_targets, tar_rule, cmc_ranks))

    _score_all(scorer, sizes, chunk_size, top, at_size, workers=workers, blas_threads=blas_threads,
               progress=progress, desc=desc)
    return {"protocol": "MegaFace challenge 1 (probe/gallery pairs of one identity vs N distractors)",
            "tie_rule": TIE_RULE, "tar_rule": tar_rule, "tar_rule_text": TAR_RULES[tar_rule],
            "score": "cosine of L2-normalised features" if normalize else "dot product",
            "n_probes": int(n), "n_identities": int(code.max() + 1),
            "n_probe_gallery_pairs": int(len(gallery.pair_probe)), "n_genuine_pairs": int(gallery.genuine.size),
            "singleton_identities_dropped": single, "results": results}


def _checked_inputs(probes, probe_ids, distractors, sizes, *, tar_rule, normalize, singletons, probe_names,
                    ignore):
    """``evaluate_megaface``'s arguments checked (ValueError naming what is wrong): the probes
    kept (normalised when ``normalize``, as one contiguous array), their identity codes 0..k-1,
    the single-image identities dropped, the sorted sizes and the ``ignore`` mask (or None)."""
    if tar_rule not in TAR_RULES:
        raise ValueError(f"unknown TAR rule {tar_rule!r}: use one of {', '.join(TAR_RULES)}")
    probes = l2_normalize(probes, "probe features") if normalize else \
        check_features(probes, "probe features")
    if len(probe_ids) != len(probes):
        raise ValueError(f"{len(probe_ids)} probe ids for {len(probes)} probe features")
    code, keep, single = identity_groups(probe_ids, singletons=singletons, names=probe_names)
    probes, code = np.ascontiguousarray(probes[keep]), np.unique(code[keep], return_inverse=True)[1]
    dim = probes.shape[1]
    n_total, ddim = distractors.shape
    if ddim != dim:
        raise ValueError(f"distractor features have dimension {ddim}, probe features {dim}")
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"distractor sizes must be >= 1, got {sizes}")
    if sizes[-1] > n_total:
        raise ValueError(f"distractor size {sizes[-1]} asked but only {n_total} distractors given")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != (n_total,):
            raise ValueError(f"ignore mask of shape {ignore.shape} for {n_total} distractors")
    return probes, code, single, sizes, ignore


@dataclasses.dataclass
class _Gallery:
    """The probe-probe side: all probe-probe scores ``spp``; the (probe, gallery) pairs of one
    identity sorted by probe (``pair_probe``, ``pair_gallery``; probe j's are
    ``offsets[j]:offsets[j+1]``), each probe's lowest gallery score and every pair's score as
    an exact sort key; the genuine scores (each unordered pair once), sorted."""
    spp: np.ndarray
    pair_probe: np.ndarray
    pair_gallery: np.ndarray
    offsets: np.ndarray
    gal_min: np.ndarray
    gal_key: np.ndarray
    genuine: np.ndarray

    @classmethod
    def of(cls, probes: np.ndarray, code: np.ndarray) -> _Gallery:
        spp = probes @ probes.T
        p_idx, g_idx, offsets = probe_gallery_pairs(code)
        gal_score = spp[p_idx, g_idx].astype(np.float32)
        upper = p_idx < g_idx                                    # each unordered pair once
        return cls(spp, p_idx, g_idx, offsets,
                   gal_min=np.minimum.reduceat(gal_score, offsets[:-1]),   # every kept probe has >= 1 pair
                   gal_key=_ordered_bits(gal_score + np.float32(0)),
                   genuine=np.sort(spp[p_idx[upper], g_idx[upper]].astype(np.float64)))


class _ChunkScorer:
    """One chunk of distractors scored on its own, so that chunks run in parallel: its GEMM
    against the probes, exact ties for copies of probes, ``ignore``d rows at -inf, then the
    scan (``_count_block``) in blocks of rows of about 8 MB. Memory stays bounded: one score
    buffer of ``n x columns`` per worker, taken from a queue while a chunk is scored."""

    def __init__(self, probes, distractors, gallery: _Gallery, *, normalize: bool, ignore, top_k: int,
                 columns: int, workers: int):
        self.probes, self.distractors, self.gallery = probes, distractors, gallery
        self.normalize, self.ignore, self.top_k = normalize, ignore, top_k
        self.copies = _ProbeCopies(probes)
        self.rows_per_block = max(1, (1 << 21) // columns)      # ~8 MB of scores per scan
        self.buffers = queue.SimpleQueue()
        for _ in range(workers):
            self.buffers.put(np.empty(probes.shape[0] * columns, dtype=np.float32))

    def load(self, a, b):
        """Distractor rows a:b, checked and normalised like the probes."""
        dim = self.probes.shape[1]
        chunk = np.asarray(self.distractors[a:b])
        chunk = l2_normalize(chunk, "distractor features", first_row=a) if self.normalize else \
            check_features(chunk, "distractor features", first_row=a)
        if chunk.shape != (b - a, dim):
            raise ValueError(f"distractor rows {a}:{b} have shape {chunk.shape}, expected "
                             f"{(b - a, dim)}")
        return chunk

    def __call__(self, a, b, tau):
        """Chunk a:b: its grid histogram, its top-k candidates above ``tau`` and, per
        (probe, gallery) pair, how many of its distractors score >= the gallery score."""
        g, n = self.gallery, self.probes.shape[0]
        chunk = self.load(a, b)
        buf = self.buffers.get()
        try:
            s = buf[:n * (b - a)].reshape(n, b - a)
            np.matmul(self.probes, chunk.T, out=s)
            cols, same_as = self.copies.find(chunk)
            if cols.size:
                s[:, cols] = g.spp[:, same_as]
            if self.ignore is not None and self.ignore[a:b].any():
                s[:, self.ignore[a:b]] = -np.inf
            ge = np.zeros(len(g.pair_probe), dtype=np.int64)
            h = np.zeros(GRID_BINS, dtype=np.int64)
            found = []
            for r0 in range(0, n, self.rows_per_block):
                hb, cands = _count_block(s, r0, min(r0 + self.rows_per_block, n), tau, g.gal_min, g.gal_key,
                                         g.pair_probe, g.offsets, ge, self.normalize)
                h += hb
                found.append(cands)
            cands = np.concatenate(found)
            if cands.size > self.top_k:       # only this chunk's own top k can enter the top k
                cands = np.partition(cands, cands.size - self.top_k)[cands.size - self.top_k:]
            return h, cands, ge
        finally:
            self.buffers.put(buf)


def _score_all(scorer: _ChunkScorer, sizes, chunk_size, top: TopK, at_size, *, workers, blas_threads,
               progress, desc):
    """Every chunk up to the largest size through ``scorer``, summed in chunk order into the
    histogram, ``top`` and the pairs' counts; ``at_size(size, hist, pair_ge)`` at each size.

    Chunks are scored in parallel, one per worker, each with its own single-threaded (or few-
    threaded) GEMM and its scan right after: no core waits for another, and no BLAS thread spins
    beside the scan. The results are taken in chunk order; a chunk's top-k prefilter is the
    threshold known when it starts (a lower one only lets more candidates through)."""
    from tqdm import tqdm

    hist = np.zeros(GRID_BINS, dtype=np.int64)
    pair_ge = np.zeros(len(scorer.gallery.pair_probe), dtype=np.int64)   # distractors scoring >= s(j, i), so far
    bounds = iter(_chunks(sizes, chunk_size))
    bar = tqdm(total=sizes[-1], desc=desc, unit="distr", unit_scale=True, disable=not progress)
    with threadpool_limits(blas_threads, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()

        def submit():
            nxt = next(bounds, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(scorer, nxt[0], nxt[1], np.float32(top.threshold))))

        for _ in range(workers):
            submit()
        while pending:
            (a, b, ends_size), fut = pending.popleft()
            h, cands, ge = fut.result()
            hist += h
            top.push(cands)
            pair_ge += ge
            submit()
            bar.update(b - a)
            if ends_size:
                at_size(b, hist, pair_ge)
    bar.close()


def _summarize(size, n, pair_ge, genuine, top, grid, grid_ge, far_targets, tar_rule,
               cmc_ranks) -> dict:
    ranks = np.sort(pair_ge + 1)
    rk = default_cmc_ranks(size) if cmc_ranks is None else np.asarray(cmc_ranks, dtype=np.int64)
    cmc = np.searchsorted(ranks, rk, side="right") / ranks.size
    n_imp = n * size
    imp_desc = top.sorted_desc()
    tars = [tar_at_far(genuine, imp_desc, n_imp, f, tar_rule) for f in far_targets]
    # ROC: exact points at the kept impostor scores, then the grid points beyond them
    imp_asc = imp_desc[::-1].astype(np.float64)
    thr = np.unique(imp_asc)[::-1]
    far = count_ge(imp_asc, thr) / n_imp
    tar = count_ge(genuine, thr) / genuine.size
    beyond = grid_ge > imp_asc.size
    gfar = grid_ge[beyond] / n_imp
    gtar = count_ge(genuine, grid[beyond].astype(np.float64)) / genuine.size
    far, tar = np.r_[0.0, far, gfar], np.r_[count_gt(genuine, imp_asc[-1]) / genuine.size,
                                           tar, gtar]
    o = np.argsort(far, kind="stable")
    far, tar = thin_roc(far[o], tar[o])
    return {
        "distractors": int(size),
        "rank1": float(np.mean(ranks == 1)),
        "cmc": {"rank": rk.tolist(), "rate": cmc.tolist()},
        "n_impostor_pairs": int(n_imp),
        "tar_at_far": tars,
        "roc": {"far": far.tolist(), "tar": tar.tolist()},
    }


# ---------------------------------------------------------------------------- reference
def exact_scores(a, b) -> np.ndarray:
    """Dot products of every row of ``a`` with every row of ``b``, each correctly rounded from
    the exact sum (``math.fsum``), so that the score of a pair depends on its two vectors only:
    identical vectors give identical scores, whatever their positions. For tests (slow)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.array([[math.fsum(x * y) for y in b] for x in a])


def brute_force_megaface(probes, probe_ids, distractors, size, far, *, normalize=True):
    """Direct O(n^2 N) reference for tests: (rank1, cmc ranks array, tar with rule ``kth``).

    Scores are ``exact_scores`` of the features as the evaluator scores them (L2-normalised
    in float32 by ``l2_normalize`` when ``normalize``), so exact ties stay ties."""
    prep = l2_normalize if normalize else check_features
    p = prep(probes, "probes")
    d = prep(np.asarray(distractors)[:size], "distractors")
    ids = np.asarray(probe_ids)
    spd = exact_scores(p, d)
    spp = exact_scores(p, p)
    ranks = []
    for j in range(len(p)):
        for i in range(len(p)):
            if i != j and ids[i] == ids[j]:
                ranks.append(1 + int(np.sum(spd[j] >= spp[j, i])))
    ranks = np.array(ranks)
    gen = np.array([spp[i, j] for i in range(len(p)) for j in range(i + 1, len(p))
                    if ids[i] == ids[j]])
    imp = np.sort(spd.ravel())[::-1]
    kk = matlab_round(far * imp.size)
    tar = np.mean(gen > imp[0]) if kk == 0 else np.mean(gen >= imp[kk - 1])
    return float(np.mean(ranks == 1)), ranks, float(tar)


# ---------------------------------------------------------------------------- noise lists
NOISE_VARIANTS = {
    "original": "as given: no noise list applied",
    "cleaned": "the published cleaning (deepinsight/insightface, Evaluation/Megaface/remove_noises.py, "
               "with its facescrub_noises.txt and megaface_noises.txt): a listed probe's feature is "
               "replaced by the L2-normalised sum of the clean features of its identity plus uniform "
               "noise in [-0.001, 0.001] per dimension (seeded), and stays a probe and a gallery image; "
               "a listed distractor keeps its place and the set sizes stay nominal, but it is pushed out "
               "of reach (the published code appends a feature dimension of 100 to it, 0 to everything "
               "else, so its distance to any probe exceeds every other; here its score is -inf): it "
               "never outranks a gallery image and is never accepted, yet counts among the impostor pairs",
    "noise_removed": "listed probes and distractors left out: each set keeps its own clean members, so "
                     "its actual size is the nominal size less its listed members (not the published "
                     "cleaning; numbers are not comparable with published cleaned results)",
}
NOISE_CHOICES = {"keep": "original", "cleaned": "cleaned", "removed": "noise_removed"}


def clean_probes(probes, probe_ids, noisy, *, normalize: bool = True, seed: int = 0) -> np.ndarray:
    """Probe features with the ``noisy`` ones replaced as the published cleaning does: the sum
    of the clean features of the same identity (L2-normalised first when ``normalize``), plus
    uniform noise in [-0.001, 0.001] per dimension, L2-normalised. ValueError when a noisy
    probe's identity has no clean image."""
    x = l2_normalize(probes, "probe features") if normalize else check_features(probes, "probe features")
    x = x.astype(np.float64)
    ids = np.asarray(probe_ids)
    noisy = np.asarray(noisy, dtype=bool)
    rng = np.random.default_rng(seed)
    out = x.copy()
    for i in np.flatnonzero(noisy):
        mates = (ids == ids[i]) & ~noisy
        if not mates.any():
            raise ValueError(f"noisy probe {i} (identity {ids[i]!r}) has no clean image of its identity "
                             f"to take the centre of")
        f = x[mates].sum(axis=0) + rng.uniform(-0.001, 0.001, x.shape[1])
        out[i] = f / np.linalg.norm(f)
    return out.astype(np.float32)


def evaluate_with_noise_lists(probes, probe_ids, probe_names, distractors, distractor_names,
                              sizes, *, noise=("keep", "cleaned"), probe_noise=(), distractor_noise=(),
                              seed: int = 0, **kw) -> dict:
    """``evaluate_megaface`` on the data as given and/or with the published noise lists applied.

    noise: one or more of "keep" (as given; result key ``original``), "cleaned" (the published
    cleaning, the field's "cleaned MegaFace"; key ``cleaned``) and "removed" (listed probes and
    distractors left out; key ``noise_removed``); see ``NOISE_VARIANTS``. Every result names
    its ``noise_variant`` and ``noise_procedure``; sizes are reported as ``distractors`` (the
    set's actual size) and ``nominal_distractors``. ``seed``: the cleaning's uniform noise.
    """
    variants = [noise] if isinstance(noise, str) else list(noise)
    bad = [v for v in variants if v not in NOISE_CHOICES]
    if bad or not variants:
        raise ValueError(f"noise must be one or more of {', '.join(NOISE_CHOICES)}, not {bad or variants}")
    if len(distractor_names) != distractors.shape[0]:
        raise ValueError(f"{len(distractor_names)} distractor names for "
                         f"{distractors.shape[0]} distractor features")
    pbad = noise_mask(probe_names, list(probe_noise))
    dbad = noise_mask(distractor_names, list(distractor_noise))
    out = {}
    for v in variants:
        key = NOISE_CHOICES[v]
        if key == "original":
            res = evaluate_megaface(probes, probe_ids, distractors, sizes, probe_names=probe_names, **kw)
            for r in res["results"]:
                r["nominal_distractors"] = r["distractors"]
        elif key == "cleaned":
            cleaned = clean_probes(probes, probe_ids, pbad, normalize=kw.get("normalize", True), seed=seed)
            res = evaluate_megaface(cleaned, probe_ids, distractors, sizes, probe_names=probe_names,
                                    ignore=dbad, **kw)
            for r in res["results"]:
                r["nominal_distractors"] = r["distractors"]
                r["n_noisy_distractors"] = int(dbad[:r["distractors"]].sum())
            res["probes_replaced"] = [n for n, b in zip(probe_names, pbad) if b]
            res["noise_seed"] = seed
        else:
            keep = np.flatnonzero(~dbad)
            actual = [int(np.sum(~dbad[:s])) for s in sizes]
            res = evaluate_megaface(np.asarray(probes)[~pbad], np.asarray(probe_ids)[~pbad],
                                    RowSubset(distractors, keep), actual,
                                    probe_names=[n for n, b in zip(probe_names, pbad) if not b], **kw)
            nominal = dict(zip(actual, sizes))
            for r in res["results"]:
                r["nominal_distractors"] = int(nominal[r["distractors"]])
            res["probes_removed"] = [n for n, b in zip(probe_names, pbad) if b]
            res["n_distractors_removed"] = int(dbad[:max(sizes)].sum())
        res["noise_variant"] = key
        res["noise_procedure"] = NOISE_VARIANTS[key]
        out[key] = res
    return out
