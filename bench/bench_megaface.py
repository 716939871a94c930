#!/usr/bin/env python3
"""MegaFace evaluator at full scale: 3,530 probes of 80 identities vs 1,000,000 distractors,
D = 1024, rank-1 and TAR at FAR 1e-6 for the sets 10 ... 1M in one pass.

    python bench/bench_megaface.py                     # full size (a few minutes on 2 cores)
    python bench/bench_megaface.py --distractors 100000 --repeat 3

Distractors are random unit vectors generated from a seed and held in memory (4 GB at 1M x
1024; the evaluator itself reads them chunk by chunk, as it would a memmap); probes are an identity centre plus noise (same-identity cosine about 0.17, so the
rank-1 figure is neither 0 nor 1).

Prints, measured in the same run and interleaved (GEMM floor, evaluation, GEMM floor, ...,
--repeat times each): the evaluation time (distractor generation excluded), its GEMM floor
(the bare float32 numpy matrix products of the same probes with the same distractor chunks,
nothing else) and their ratio, in wall time and in the process's CPU time (all threads),
plus peak resident memory (getrusage maxrss). On a busy machine the wall ratio of one round
moves with the other processes' load; the CPU-time ratio moves less.
"""
import argparse
import resource
import time

import numpy as np

from mtdnn.evaluation.megaface import DEFAULT_SIZES, _chunks, evaluate_megaface


class RandomUnitRows:
    """N x D random unit float32 rows, generated deterministically per block on slicing."""

    def __init__(self, n, dim, seed=0, block=65536):
        self.shape, self.seed, self.block = (n, dim), seed, block
        self._cache = (None, None)
        self.seconds = 0.0  # time spent generating, reported apart from the evaluation

    def _block(self, k):
        if self._cache[0] != k:
            t = time.perf_counter()
            rows = min(self.block, self.shape[0] - k * self.block)
            x = np.random.default_rng([self.seed, k]).standard_normal((rows, self.shape[1]), dtype=np.float32)
            x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
            self._cache = (k, x)
            self.seconds += time.perf_counter() - t
        return self._cache[1]

    def __getitem__(self, sl):
        a, b, _ = sl.indices(self.shape[0])
        parts = []
        while a < b:
            k, off = divmod(a, self.block)
            take = min(b - a, self.block - off)
            parts.append(self._block(k)[off:off + take])
            a += take
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def probes(n, n_ids, dim, seed=1, noise=2.2):
    rng = np.random.default_rng(seed)
    ids = np.arange(n) % n_ids
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= noise / np.linalg.norm(x, axis=1, keepdims=True)
    return centres[ids] + x, ids


def gemm_floor(p, d, sizes, chunk):
    """Seconds of the evaluator's bare matrix products: probes @ probes.T, then probes @ chunk.T
    over its distractor chunks (same bounds; chunk generation not timed)."""
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    out = np.empty((len(p), chunk), dtype=np.float32)
    t = time.perf_counter()
    p @ p.T                                           # the probe-probe scores
    seconds = time.perf_counter() - t
    for a, b, _ in _chunks(sizes, chunk):
        c = d[a:b]
        t = time.perf_counter()
        np.matmul(p, c.T, out=out[:, :len(c)])
        seconds += time.perf_counter() - t
    return seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distractors", type=int, default=1_000_000, help="number of synthetic distractors (default 1,000,000)")
    ap.add_argument("--probes", type=int, default=3530, help="number of synthetic probes (default 3530, FaceScrub's)")
    ap.add_argument("--identities", type=int, default=80, help="probe identities (default 80)")
    ap.add_argument("--dim", type=int, default=1024, help="feature dimension (default 1024)")
    ap.add_argument("--chunk-size", type=int, default=8192, help="distractors scored at a time (default 8192)")
    ap.add_argument("--far", type=float, default=1e-6, help="FAR for the TAR (default 1e-6)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the synthetic features (default 0)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (GEMM floor, evaluation) (default 1)")
    a = ap.parse_args(argv)

    p, ids = probes(a.probes, a.identities, a.dim, a.seed + 1)
    sizes = [s for s in DEFAULT_SIZES if s < a.distractors] + [a.distractors]
    t0 = time.perf_counter()
    rows = RandomUnitRows(a.distractors, a.dim, a.seed)
    d = np.empty(rows.shape, dtype=np.float32)  # in memory, filled block by block: not timed below
    for b0 in range(0, a.distractors, rows.block):
        d[b0:b0 + rows.block] = rows[b0:b0 + rows.block]
    gen = time.perf_counter() - t0
    rounds = []
    for r in range(a.repeat):
        c0 = time.process_time()
        floor = gemm_floor(p, d, sizes, a.chunk_size)
        c1 = time.process_time()
        t1 = time.perf_counter()
        res = evaluate_megaface(p, ids, d, sizes, far_targets=[a.far], chunk_size=a.chunk_size,
                                progress=False)
        ev = time.perf_counter() - t1
        c2 = time.process_time()
        rounds.append((ev, floor, c2 - c1, c1 - c0))
        print(f"round {r + 1}: evaluation {ev:.2f} s, GEMM floor {floor:.2f} s, ratio {ev / floor:.2f}; "
              f"CPU time (all threads) {c2 - c1:.2f} s vs {c1 - c0:.2f} s, ratio {(c2 - c1) / (c1 - c0):.2f}",
              flush=True)
    flops = 2.0 * a.probes * a.dim * a.distractors
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    for s in res["results"]:
        t = s["tar_at_far"][0]
        print(f"{s['distractors']:>9,} distractors: rank-1 {100 * s['rank1']:6.2f} %  "
              f"TAR@FAR {a.far:g} {100 * t['tar']:6.2f} % (threshold {t['threshold']:.4f}, rule {t['rule']})")
    print(f"probes {a.probes} of {a.identities} identities, {res['n_probe_gallery_pairs']:,} probe/gallery pairs, "
          f"{a.distractors:,} distractors, D={a.dim}")
    ratios = sorted(x[0] / x[1] for x in rounds)
    cpu_ratios = sorted(x[2] / x[3] for x in rounds)
    ev, floor = rounds[-1][:2]
    print(f"peak memory (maxrss): {peak_gb:.2f} GB, of which the distractors held in memory "
          f"{d.nbytes / 2 ** 30:.2f} GB (generated in {gen:.1f} s, not timed)")
    print(f"score GEMM {flops / 1e12:.2f} TFLOP: floor {flops / floor / 1e9:.1f} GFLOP/s, evaluation "
          f"{flops / ev / 1e9:.1f} GFLOP/s (last round)")
    print(f"evaluation / GEMM floor, measured in the same run: wall {np.median(ratios):.2f} "
          f"(median of {len(rounds)} round(s); all: {', '.join(f'{x:.2f}' for x in ratios)}), "
          f"CPU time {np.median(cpu_ratios):.2f} (all: {', '.join(f'{x:.2f}' for x in cpu_ratios)})")


if __name__ == "__main__":
    main()
