"""FP32 that is FP32 (docker/patches/30-cudnn-fp32-workspace.patch), on a cuDNN build of Caffe.

tests/cudnn_math_check.cpp is compiled against the patched Caffe source the venv's Caffe was built
from and the cuDNN it links, and run: the convolution descriptor Caffe's cuDNN layers set up is
asked back through cuDNN for its math type (descriptors are host objects: no GPU needed). What this
proves: the patched code, compiled with the real cuDNN headers and run against the real library,
sets FMA math for float and double, and DEFAULT (TF32 allowed) for float only under
CAFFE_CUDNN_TF32=1; the installed libcaffe holds the same code (its strings). What it cannot prove
without a GPU: which kernels cuDNN then runs (make gpu-check times both ways on a GPU).

On a CPU-only build (the first pass of CI) these tests skip, saying so.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtdnn.paths import REPO

VENV = Path(sys.executable).parent.parent
STAMP = VENV / "caffe" / ".stamp"
SRC = VENV / "caffe.build" / "src"
CUDA = VENV / "cuda"


def cudnn_build() -> str | None:
    """Why these tests cannot run here, or None when the venv holds a cuDNN build with its source."""
    if not STAMP.exists():
        return "no Caffe installed in the venv"
    stamp = STAMP.read_text()
    if " gpu=1 " not in stamp or " cudnn=1 " not in stamp:
        return "the venv's Caffe is not a cuDNN build (CAFFE_GPU=1 make setup builds one)"
    if not (SRC / "include" / "caffe" / "util" / "cudnn.hpp").exists() or not (CUDA / "include" / "cudnn.h").exists():
        return f"the source or CUDA folder of the cuDNN build is gone ({SRC}, {CUDA})"
    return None


pytestmark = pytest.mark.skipif(cudnn_build() is not None, reason=str(cudnn_build()))


@pytest.fixture(scope="module")
def check_binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("cudnn") / "check"
    cmd = ["g++", "-O0", "-DUSE_CUDNN", f"-I{SRC / 'include'}", f"-I{SRC.parent / 'build' / 'include'}",
           f"-I{CUDA / 'include'}", str(REPO / "tests" / "cudnn_math_check.cpp"), "-o", str(out),
           f"-L{CUDA / 'lib64'}", f"-Wl,-rpath,{CUDA / 'lib64'}", "-lcudnn", "-lglog"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def run_check(binary, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAFFE_CUDNN_")}
    return subprocess.run([str(binary)], capture_output=True, text=True, env={**base, **env})


def test_float_convolutions_are_fma_unless_tf32_is_asked_for(check_binary):
    plain = run_check(check_binary)
    assert plain.returncode == 0, plain.stderr
    assert "float math=FMA" in plain.stdout and "double math=FMA" in plain.stdout
    tf32 = run_check(check_binary, CAFFE_CUDNN_TF32="1")
    assert "float math=DEFAULT" in tf32.stdout and "double math=FMA" in tf32.stdout
    other = run_check(check_binary, CAFFE_CUDNN_TF32="yes")       # only "1" allows TF32
    assert "float math=FMA" in other.stdout
    assert int(re.search(r"cudnn=(\d+)", plain.stdout).group(1)) >= 8000


def test_workspace_limit_default_and_override(check_binary):
    assert "workspace_limit_bytes=8388608" in run_check(check_binary).stdout          # 8 MiB
    assert "workspace_limit_bytes=67108864" in run_check(check_binary, CAFFE_CUDNN_WORKSPACE_MB="64").stdout
    bad = run_check(check_binary, CAFFE_CUDNN_WORKSPACE_MB="lots")
    assert bad.returncode != 0 and "CAFFE_CUDNN_WORKSPACE_MB=lots" in bad.stderr


def test_installed_libcaffe_holds_the_patched_code():
    lib = next((VENV / "caffe" / "lib").glob("libcaffe.so*"))
    data = lib.read_bytes()
    assert b"CAFFE_CUDNN_TF32" in data and b"CAFFE_CUDNN_WORKSPACE_MB" in data
