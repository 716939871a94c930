#!/usr/bin/env python3
"""MegaFace evaluator at full scale: 3,530 probes of 80 identities vs 1,000,000 distractors,
D = 1024, rank-1 and TAR at FAR 1e-6 for the sets 10 ... 1M in one pass.

    python bench/bench_megaface.py                     # full size (about 1-2 minutes on 2 cores)
    python bench/bench_megaface.py --distractors 100000

Distractors are random unit vectors generated block by block from a seed (never all in
memory); probes are an identity centre plus noise (same-identity cosine about 0.17, so the
rank-1 figure is neither 0 nor 1). Prints wall time, peak resident memory (getrusage
maxrss), and the score GEMM's FLOPs over the evaluation time (effective GFLOP/s) next to the
rate of one plain float32 numpy matmul of the chunk's shape.
"""
import argparse
import resource
import time

import numpy as np

from mtdnn.evaluation.megaface import DEFAULT_SIZES, evaluate_megaface


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


def gemm_rate(n, dim, chunk, repeat=3):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, dim), dtype=np.float32)
    b = rng.standard_normal((chunk, dim), dtype=np.float32)
    out = np.empty((n, chunk), dtype=np.float32)
    np.matmul(a, b.T, out=out)
    t = time.perf_counter()
    for _ in range(repeat):
        np.matmul(a, b.T, out=out)
    return 2 * n * dim * chunk * repeat / (time.perf_counter() - t) / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distractors", type=int, default=1_000_000, help="number of synthetic distractors (default 1,000,000)")
    ap.add_argument("--probes", type=int, default=3530, help="number of synthetic probes (default 3530, FaceScrub's)")
    ap.add_argument("--identities", type=int, default=80, help="probe identities (default 80)")
    ap.add_argument("--dim", type=int, default=1024, help="feature dimension (default 1024)")
    ap.add_argument("--chunk-size", type=int, default=8192, help="distractors scored at a time (default 8192)")
    ap.add_argument("--far", type=float, default=1e-6, help="FAR for the TAR (default 1e-6)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the synthetic features (default 0)")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    p, ids = probes(a.probes, a.identities, a.dim, a.seed + 1)
    d = RandomUnitRows(a.distractors, a.dim, a.seed)
    sizes = [s for s in DEFAULT_SIZES if s < a.distractors] + [a.distractors]
    t1 = time.perf_counter()
    res = evaluate_megaface(p, ids, d, sizes, far_targets=[a.far], chunk_size=a.chunk_size)
    t2 = time.perf_counter()
    flops = 2.0 * a.probes * a.dim * a.distractors
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    rate = gemm_rate(a.probes, a.dim, a.chunk_size)
    for s in res["results"]:
        t = s["tar_at_far"][0]
        print(f"{s['distractors']:>9,} distractors: rank-1 {100 * s['rank1']:6.2f} %  "
              f"TAR@FAR {a.far:g} {100 * t['tar']:6.2f} % (threshold {t['threshold']:.4f}, rule {t['rule']})")
    print(f"probes {a.probes} of {a.identities} identities, {res['n_probe_gallery_pairs']:,} probe/gallery pairs, "
          f"{a.distractors:,} distractors, D={a.dim}")
    ev = t2 - t1 - d.seconds
    print(f"wall time: {t2 - t0:.1f} s (evaluation {ev:.1f} s + distractor generation {d.seconds:.1f} s)")
    print(f"peak memory (maxrss): {peak_gb:.2f} GB")
    print(f"score GEMM: {flops / 1e12:.2f} TFLOP, effective {flops / ev / 1e9:.1f} GFLOP/s over the "
          f"whole evaluation (sorting, counting, normalising included) vs plain numpy float32 matmul "
          f"({a.probes}x{a.dim} @ {a.dim}x{a.chunk_size}) {rate:.1f} GFLOP/s: {100 * flops / ev / 1e9 / rate:.0f} %")


if __name__ == "__main__":
    main()
