"""The project's CPU patch of Caffe (docker/patches/10-cpu-conv-prelu.patch): convolution over
several images per GEMM, PReLU without an integer division per element.

Its outputs must equal Caffe's original code on the same inputs. The patched library keeps the
original code behind MTDNN_CAFFE_CPU_PATCH=0, so both run from one build, each in its own
process (the switch is read once per process):

- every forward output, the data gradient and PReLU's gradients: bitwise equal;
- the convolution weight gradients: equal up to float32 rounding, because the patch sums the
  images' contributions in one GEMM instead of image by image (measured: at most 5.7e-7 of the
  largest gradient on this net, 2026-12-03, at the default chunk size and at 1 MiB). The bound,
  1e-5 of the largest gradient, is about 100 float32 epsilons: a wrong index or a missing image
  gives errors of order 1.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
WEIGHT_GRADIENT_RTOL = 1e-5


def _run(tmp_path, name, **env):
    out = tmp_path / f"{name}.npz"
    subprocess.run([sys.executable, str(HERE / "caffe_reference.py"), str(out)], check=True,
                   env={**os.environ, "GLOG_minloglevel": "2", **env})
    return dict(np.load(out))


def test_the_installed_caffe_carries_the_patch():
    import caffe
    lib = Path(caffe.__file__).resolve().parents[3]  # PREFIX/lib/python3/dist-packages/caffe
    libcaffe = sorted(lib.glob("libcaffe.so*"))
    assert libcaffe, f"no libcaffe.so in {lib}"
    assert b"MTDNN_CAFFE_CPU_PATCH" in max(libcaffe, key=lambda p: p.stat().st_size).read_bytes(), \
        "Caffe was built without docker/patches/10-cpu-conv-prelu.patch: rerun make setup"


@pytest.mark.parametrize("chunk_mb", [None, "1"], ids=["whole-batch", "chunks-of-3-and-2"])
def test_patched_equals_original(tmp_path, chunk_mb):
    original = _run(tmp_path, "original", MTDNN_CAFFE_CPU_PATCH="0")
    patched = _run(tmp_path, "patched", **({"CAFFE_CONV_CHUNK_MB": chunk_mb} if chunk_mb else {}))
    assert original.keys() == patched.keys()
    for key, want in original.items():
        got = patched[key]
        if key.startswith("param_diff/conv") and key.endswith("/0"):
            err = np.abs(got - want).max() / np.abs(want).max()
            assert err <= WEIGHT_GRADIENT_RTOL, f"{key}: relative difference {err:.2e}"
        else:
            assert np.array_equal(got, want), f"{key} differs from Caffe's original code"
