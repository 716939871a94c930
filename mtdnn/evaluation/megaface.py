"""MegaFace challenge 1 (FaceScrub probes) in Python: identification CMC and verification ROC.

Protocol (Kemelmacher-Shlizerman et al. 2016, as the devkit runs it):

* identification: for each identity and each of its images i put into the gallery with the
  N distractors, every other image j of that identity is a probe; the rank of the pair
  (j, i) is 1 + the number of distractors d that score at least as high as i,
  ``rank(j, i) = 1 + #{d : s(j, d) >= s(j, i)}``. Rank-1 and CMC(k) are averaged over all
  (probe, gallery) pairs.
* ties: **pessimistic** -- a distractor with a score equal to s(j, i) is counted as ranked
  above the gallery image (the devkit's tie order is not documented; this rule never
  flatters a model, and exact ties do not occur with real float features).
* verification: genuine pairs are the unordered probe-probe pairs of one identity,
  impostor pairs all probe-distractor pairs; TAR at FAR with the rule named in the result
  (see ``roc.TAR_RULES``; default ``kth``: threshold = the round(FAR * n_impostor)-th
  highest impostor score).
* scores are cosine similarities of L2-normalised features (``normalize=True``).

Distractor sets of several sizes are evaluated in one pass: the sets must be nested, the
distractor array ordered so that the set of size N is its first N rows
(``nested_distractor_order`` builds that order from the devkit's lists).

Scale: the probe x distractor scores are computed chunk by chunk with one float32 GEMM
each and never held whole; each chunk's rows are sorted once, and per probe a single
``searchsorted`` counts the distractors above each of its gallery scores and above a
fixed grid of thresholds (for the ROC), while a running top-k keeps the highest impostor
scores for TAR at small FAR.
"""
from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

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


def evaluate_megaface(probes, probe_ids, distractors, sizes=DEFAULT_SIZES, *,
                      probe_names: Sequence[str] | None = None,
                      far_targets: Sequence[float] = (1e-6,), tar_rule: str = "kth",
                      cmc_ranks=None, normalize: bool = True, singletons: str = "error",
                      chunk_size: int = 8192, roc_topk: int = 100_000, roc_grid: int = 401,
                      progress: bool = True, desc: str = "distractors") -> dict:
    """MegaFace identification (rank-1, CMC) and verification (ROC, TAR at FAR).

    probes: n x D features of the probe images; probe_ids: their identities.
    distractors: N x D array-like sliceable by rows (ndarray, np.memmap, ``RowSubset`` or any
    object with ``shape`` and ``[a:b]``), read in chunks of ``chunk_size`` rows.
    sizes: distractor set sizes, each the first ``size`` rows (nested sets), each <= N.
    normalize: L2-normalise probes and distractors (scores are then cosines); with False
    the features are used as given and scores are plain dot products.
    roc_topk: how many of the highest impostor scores to keep exactly (at least as many as
    the largest ``far_targets`` needs); ``roc_grid`` thresholds evenly spaced in [-1, 1]
    give exact ROC points at larger FAR.

    Returns a dict: protocol notes (``tie_rule``, ``tar_rule``), counts, and ``results``:
    one entry per size with ``rank1``, ``cmc`` {rank, rate}, ``tar_at_far`` [...] and ``roc``
    {far, tar}.
    """
    from tqdm import tqdm

    if tar_rule not in TAR_RULES:
        raise ValueError(f"unknown TAR rule {tar_rule!r}: use one of {', '.join(TAR_RULES)}")
    probes = l2_normalize(probes, "probe features") if normalize else \
        check_features(probes, "probe features")
    if len(probe_ids) != len(probes):
        raise ValueError(f"{len(probe_ids)} probe ids for {len(probes)} probe features")
    code, keep, single = identity_groups(probe_ids, singletons=singletons, names=probe_names)
    probes, code = probes[keep], np.unique(code[keep], return_inverse=True)[1]
    n, dim = probes.shape
    n_total, ddim = distractors.shape
    if ddim != dim:
        raise ValueError(f"distractor features have dimension {ddim}, probe features {dim}")
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"distractor sizes must be >= 1, got {sizes}")
    if sizes[-1] > n_total:
        raise ValueError(f"distractor size {sizes[-1]} asked but only {n_total} distractors given")

    # probe-probe scores: gallery scores of the (probe, gallery) pairs and genuine pairs
    spp = probes @ probes.T
    p_idx, g_idx, offsets = probe_gallery_pairs(code)
    gal_score = spp[p_idx, g_idx].astype(np.float32)
    iu, ju = np.triu_indices(n, 1)
    same = code[iu] == code[ju]
    genuine = np.sort(spp[iu[same], ju[same]].astype(np.float64))
    del spp, iu, ju, same

    grid = np.linspace(-1, 1, roc_grid, dtype=np.float32) if normalize else \
        np.empty(0, dtype=np.float32)
    queries = [np.concatenate([gal_score[offsets[j]:offsets[j + 1]], grid]) for j in range(n)]
    n_imp_max = n * sizes[-1]
    k = min(n_imp_max, max(roc_topk, matlab_round(max(far_targets, default=0) * n_imp_max) + 1))
    top = TopK(k)
    pair_ge = np.zeros(len(p_idx), dtype=np.int64)   # distractors scoring >= s(j, i), so far
    grid_ge = np.zeros(len(grid), dtype=np.int64)    # impostor scores >= each grid threshold
    buf = np.empty(n * min(chunk_size, sizes[-1]), dtype=np.float32)
    results = []
    bar = tqdm(total=sizes[-1], desc=desc, unit="distr", unit_scale=True, disable=not progress)
    for a, b, at_size in _chunks(sizes, chunk_size):
        L = b - a
        chunk = np.asarray(distractors[a:b])
        chunk = l2_normalize(chunk, "distractor features", first_row=a) if normalize else \
            check_features(chunk, "distractor features", first_row=a)
        if chunk.shape != (L, dim):
            raise ValueError(f"distractor rows {a}:{b} have shape {chunk.shape}, expected "
                             f"{(L, dim)}")
        s = buf[:n * L].reshape(n, L)
        np.matmul(probes, chunk.T, out=s)
        s.sort(axis=1)  # one sort per row, then every count is a binary search
        tau = np.float32(top.threshold)
        cands = []
        for j in range(n):
            row = s[j]
            ge = L - np.searchsorted(row, queries[j], side="left")
            m = offsets[j + 1] - offsets[j]
            pair_ge[offsets[j]:offsets[j + 1]] += ge[:m]
            grid_ge += ge[m:]
            start = max(int(np.searchsorted(row, tau, side="right")), L - k)
            if start < L:
                cands.append(row[start:])
        if cands:
            top.push(np.concatenate(cands))
        bar.update(L)
        if at_size:
            results.append(_summarize(b, n, pair_ge, genuine, top, grid, grid_ge,
                                      far_targets, tar_rule, cmc_ranks))
    bar.close()
    return {
        "protocol": "MegaFace challenge 1 (probe/gallery pairs of one identity vs N distractors)",
        "tie_rule": TIE_RULE,
        "tar_rule": tar_rule,
        "tar_rule_text": TAR_RULES[tar_rule],
        "score": "cosine of L2-normalised features" if normalize else "dot product",
        "n_probes": int(n),
        "n_identities": int(code.max() + 1),
        "n_probe_gallery_pairs": int(len(p_idx)),
        "n_genuine_pairs": int(genuine.size),
        "singleton_identities_dropped": single,
        "results": results,
    }


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
def brute_force_megaface(probes, probe_ids, distractors, size, far, *, normalize=True):
    """Direct O(n^2 N) reference for tests: (rank1, cmc ranks array, tar with rule ``kth``)."""
    p = np.asarray(probes, dtype=np.float64)
    d = np.asarray(distractors, dtype=np.float64)[:size]
    if normalize:
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
    ids = np.asarray(probe_ids)
    spd = p @ d.T
    spp = p @ p.T
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
def evaluate_with_noise_lists(probes, probe_ids, probe_names, distractors, distractor_names,
                              sizes, *, noise: str = "keep", probe_noise=(), distractor_noise=(),
                              **kw) -> dict:
    """``evaluate_megaface`` without and/or with the published noise lists applied.

    noise: "keep" (as given), "remove" (noisy probes and distractors left out) or "both".
    Removing distractors shrinks the nested sets: a set of nominal size N keeps its own
    clean members, so its actual size (reported as ``distractors``; the nominal one as
    ``nominal_distractors``) is N minus its noisy members. Returns
    ``{"original": result?, "noise_removed": result?}``.
    """
    if noise not in ("keep", "remove", "both"):
        raise ValueError(f"noise must be keep, remove or both, not {noise!r}")
    if len(distractor_names) != distractors.shape[0]:
        raise ValueError(f"{len(distractor_names)} distractor names for "
                         f"{distractors.shape[0]} distractor features")
    out = {}
    if noise in ("keep", "both"):
        out["original"] = evaluate_megaface(probes, probe_ids, distractors, sizes,
                                            probe_names=probe_names, **kw)
        for r in out["original"]["results"]:
            r["nominal_distractors"] = r["distractors"]
    if noise in ("remove", "both"):
        pbad = noise_mask(probe_names, list(probe_noise))
        dbad = noise_mask(distractor_names, list(distractor_noise))
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
        out["noise_removed"] = res
    return out
