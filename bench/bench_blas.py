#!/usr/bin/env python3
"""Which BLAS library makes Caffe's CPU training fastest here: the ones Debian and PyPI offer,
swapped in under the same Caffe build, timed in the same run.

Caffe is linked against ``libopenblas.so.0`` (Debian's OpenBLAS, pthread variant) and calls
only standard CBLAS functions (sgemm, sgemv, saxpy, ...), so any library with the CBLAS
interface can stand in for it: each candidate is put first on the loader's path under the
names Caffe and its dependencies load (``libopenblas.so.0``, ``libblas.so.3``,
``libcblas.so.3``), checked with ``ldd``, then

  * checked for equal outputs: one forward and backward pass of the Fast-Model's training net
    (seeded weights and input, batch 4) must give fc5 within 1e-4 of the build's own OpenBLAS
    (relative to its largest value), or the library is left out. The largest parameter-gradient
    difference is printed too: another BLAS rounds every product differently, and the backward
    pass through 36 training-mode BatchNorm layers of 4 images amplifies that (measured here:
    BLIS 4e-3 in most layers, 0.1 in the deepest; the OpenBLAS variants are bitwise equal);
  * timed with ``caffe time`` (forward + backward of the fine-tune net, Full batch 40 and
    Fast batch 48, alternating rounds, best round kept), at the same number of threads.

Candidates looked for (missing ones are listed with the package that provides them):

  openblas-pthread  Debian libopenblas0-pthread (the build's default)
  openblas-openmp   Debian libopenblas0-openmp
  blis-pthread      Debian libblis4-pthread
  blis-openmp       Debian libblis4-openmp
  mkl               PyPI `mkl` (libmkl_rt.so.N in this Python environment's lib/)

More with ``--blas NAME=/path/to/lib.so`` (any CBLAS library). ``OPENBLAS_CORETYPE`` is kept
as the environment sets it (older OpenBLAS builds need it on some processors).

    python bench/bench_blas.py [--models full fast] [--iterations 2] [--repeats 2] [--threads N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_caffe_time import NUM_ATTRIBUTES, PAPER_BATCH, caffe_time
from mtdnn.paths import REPO
from mtdnn.prototxt import read_net, with_input_layers, write_prototxt
from mtdnn.caffe.run import blas_threads_env

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
KNOWN = {  # name: (library, where it comes from)
    "openblas-pthread": (LIBDIR / "openblas-pthread" / "libopenblas.so.0", "apt install libopenblas0-pthread"),
    "openblas-openmp": (LIBDIR / "openblas-openmp" / "libopenblas.so.0", "apt install libopenblas0-openmp"),
    "blis-pthread": (LIBDIR / "blis-pthread" / "libblis.so.4", "apt install libblis4-pthread"),
    "blis-openmp": (LIBDIR / "blis-openmp" / "libblis.so.4", "apt install libblis4-openmp"),
    "mkl": (max(Path(sys.prefix, "lib").glob("libmkl_rt.so.[0-9]"), default=Path(sys.prefix, "lib", "libmkl_rt.so")),
            "pip install mkl into this environment, or --blas mkl=PATH/libmkl_rt.so.3"),
}
ALIASES = ("libopenblas.so.0", "libblas.so.3", "libcblas.so.3")
REFERENCE_LAPACK = LIBDIR / "lapack" / "liblapack.so.3"  # Debian liblapack3: LAPACK over any libblas.so.3


def lapack_for(lib: Path) -> Path | None:
    """The LAPACK to load beside ``lib``: Debian's OpenBLAS LAPACK calls OpenBLAS internals, so
    another BLAS needs its own (MKL's runtime has one) or the reference LAPACK."""
    if (lib.parent / "liblapack.so.3").is_file():
        return lib.parent / "liblapack.so.3"
    if lib.name.startswith("libmkl_rt"):
        return lib
    return REFERENCE_LAPACK if REFERENCE_LAPACK.is_file() else None


TOLERANCE = 1e-4  # fc5, forward

# One forward + backward of the Fast-Model's fine-tune net, seeded; prints a JSON of arrays.
CHECK = r"""
import json, os, sys
import numpy as np
os.environ.setdefault("GLOG_minloglevel", "2")
import caffe
caffe.set_mode_cpu(); caffe.set_random_seed(1)
net = caffe.Net(sys.argv[1], caffe.TRAIN)
rng = np.random.default_rng(0)
for name, blob in net.blobs.items():
    if name == "data": blob.data[...] = rng.standard_normal(blob.data.shape)
    elif name == "label": blob.data[...] = rng.integers(0, 10, blob.data.shape)
    elif name == "attributes": blob.data[...] = rng.choice([-1.0, 1.0], blob.data.shape)
net.forward(); net.backward()
out = {"fc5": net.blobs["fc5"].data.ravel().tolist()}
for layer, params in net.params.items():
    for i, p in enumerate(params):
        out[f"{layer}/{i}"] = p.diff.ravel().tolist()
with open(sys.argv[2], "w") as f: json.dump(out, f)
"""


def alias_dir(lib: Path, folder: Path) -> Path:
    """``folder``, where ``lib`` answers to every BLAS name Caffe and its dependencies load."""
    lapack = lapack_for(lib)
    if lapack is None:
        raise RuntimeError(f"no LAPACK to load with {lib}: apt install liblapack3")
    d = folder
    d.mkdir(parents=True)
    for alias in ALIASES:
        (d / alias).symlink_to(lib)
    (d / "liblapack.so.3").symlink_to(lapack)
    return d


def blas_env(libdir: Path | None, threads: int, lib: Path | None = None) -> dict:
    """Threads for every library; ``libdir`` (the aliases) first on the loader's path, then the
    library's own folder (MKL's runtime loads its other parts from there)."""
    env = {**os.environ, **blas_threads_env(threads), "BLIS_NUM_THREADS": str(threads)}
    if libdir is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir), str(lib.resolve().parent)]
                                                 + [p for p in [os.environ.get("LD_LIBRARY_PATH")] if p])
    return env


def loaded_blas(env: dict) -> str:
    """What ``libopenblas.so.0`` resolves to for the caffe binary under ``env`` (``ldd``)."""
    caffe = Path(sys.executable).parent / "caffe"
    out = subprocess.run(["ldd", str(caffe)], capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        if "libopenblas.so.0" in line and "=>" in line:
            return line.split("=>")[1].split("(")[0].strip()
    return "?"


def check_outputs(net: Path, env: dict, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHECK, str(net), str(out)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the output check failed:\n{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def max_rel_diff(a: dict, b: dict, keys) -> float:
    """The largest difference over the blobs ``keys``, each relative to its largest value in ``a``."""
    import numpy as np
    worst = 0.0
    for key in keys:
        ref = a[key]
        x, y = np.asarray(ref), np.asarray(b[key])
        scale = max(np.abs(x).max(), 1e-30)
        worst = max(worst, float(np.abs(x - y).max() / scale))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["full", "fast"], help="folders under models/")
    ap.add_argument("--iterations", type=int, default=2, help="timed iterations of caffe time (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over all libraries (alternating); best kept")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS threads for every library")
    ap.add_argument("--blas", action="append", default=[], metavar="NAME=PATH",
                    help="another CBLAS library to try (repeatable)")
    args = ap.parse_args(argv)

    found, missing = {}, []
    for name, (lib, source) in KNOWN.items():
        (found.__setitem__(name, lib) if lib.is_file() else missing.append(f"{name} ({source})"))
    for item in args.blas:
        name, _, path = item.partition("=")
        if not Path(path).is_file():
            ap.error(f"--blas {item}: no such file")
        found[name] = Path(path)
    if "openblas-pthread" not in found:
        sys.exit("bench_blas: the build's own OpenBLAS (libopenblas0-pthread) is missing: nothing to compare to")
    if missing:
        print("not installed here, so not measured: " + "; ".join(missing))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nets = {}
        for model in args.models:
            batch = PAPER_BATCH.get(model, 40)
            net = with_input_layers(read_net(REPO / "models" / model / "train_val.prototxt"), "TRAIN",
                                    {"data": (batch, 3, 112, 96), "label": (batch,),
                                     "attributes": (batch, NUM_ATTRIBUTES)})
            nets[model] = (batch, write_prototxt(net, tmp / f"{model}_time.prototxt"))
        check_net = write_prototxt(
            with_input_layers(read_net(REPO / "models" / "fast" / "train_val.prototxt"), "TRAIN",
                              {"data": (4, 3, 112, 96), "label": (4,), "attributes": (4, NUM_ATTRIBUTES)}),
            tmp / "check.prototxt")

        envs, usable = {}, {}
        reference = check_outputs(check_net, blas_env(None, args.threads), tmp / "ref.json")
        for name, lib in found.items():
            try:
                env = blas_env(alias_dir(lib, tmp / f"lib-{name}"), args.threads, lib)
            except RuntimeError as e:
                print(f"{name}: {e}; left out")
                continue
            resolved = loaded_blas(env)
            if Path(resolved).resolve() != lib.resolve():
                print(f"{name}: the loader picks {resolved}, not {lib}; left out")
                continue
            try:
                outputs = check_outputs(check_net, env, tmp / f"{name}.json")
            except RuntimeError as e:
                print(f"{name}: {e}; left out")
                continue
            fc5 = max_rel_diff(reference, outputs, ["fc5"])
            grads = max_rel_diff(reference, outputs, [k for k in reference if k != "fc5"])
            ok = fc5 <= TOLERANCE
            print(f"{name}: {lib} -> fc5 within {fc5:.1e} of the build's OpenBLAS "
                  f"({'ok' if ok else f'over {TOLERANCE:g}: left out'}), gradients within {grads:.1e}")
            if ok:
                envs[name], usable[name] = env, (fc5, grads)

        times = {(n, m): [] for n in envs for m in nets}
        for r in range(args.repeats):
            for model, (batch, net) in nets.items():
                for name, env in envs.items():
                    print(f"round {r + 1}: {model} batch {batch} with {name} ...", flush=True)
                    times[name, model].append(caffe_time(net, args.iterations, env=env))

    print(f"\nCaffe forward + backward with each BLAS ({args.threads} threads, best of {args.repeats} rounds "
          f"of {args.iterations} iterations; ratio = the build's openblas-pthread step time / this one's):")
    print(f"{'BLAS':18} {'model':6} {'fwd ms':>8} {'bwd ms':>8} {'train img/s':>11} {'ratio':>6} {'fc5 diff':>9} {'grad diff':>9}")
    for model, (batch, _) in nets.items():
        base = sum(min(times["openblas-pthread", model], key=sum))
        for name in envs:
            fwd, bwd = min(times[name, model], key=sum)
            print(f"{name:18} {model:6} {fwd:8.0f} {bwd:8.0f} {batch / ((fwd + bwd) / 1e3):11.2f} "
                  f"{base / (fwd + bwd):6.2f} {usable[name][0]:9.1e} {usable[name][1]:9.1e}")


if __name__ == "__main__":
    main()
