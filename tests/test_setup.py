"""The Caffe that `make setup` installs: usable with no variable set, idempotent, atomic on failure."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtdnn.paths import REPO

VENV_BIN = Path(sys.executable).parent
BUILD = REPO / "docker" / "build_caffe.sh"
CLEAN_ENV = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}


def run(cmd, extra_env=None, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, env={**CLEAN_ENV, **(extra_env or {})}, **kw)


def test_caffe_command_is_in_the_venv():
    out = run(["caffe", "--version"])
    assert out.returncode == 0, out.stderr
    assert "caffe version 1.0.0" in out.stdout + out.stderr


def test_pycaffe_imports_and_runs_without_environment(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text("""
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "constant" value: 1 } } }
""")
    code = f"""
import caffe, numpy as np
net = caffe.Net({str(net)!r}, caffe.TEST)
net.blobs['x'].data[...] = 1
y = net.forward()['y']
assert y.shape == (2, 5, 2, 2), y.shape
assert np.allclose(y, 27), y.ravel()[:4]
print('ok')
"""
    out = run([sys.executable, "-c", code], cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_second_build_is_a_no_op():
    prefix = VENV_BIN.parent / "caffe"
    before = (prefix / ".stamp").read_text()
    out = run([str(BUILD), sys.executable, str(prefix)])
    assert out.returncode == 0, out.stderr
    assert "already installed" in out.stdout
    assert (prefix / ".stamp").read_text() == before


def test_failed_build_names_the_step_and_installs_nothing(tmp_path):
    """A build that fails (here: an interpreter without numpy) leaves no caffe behind."""
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nexit 1\n")
    fake_python.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    # Reuse the downloaded source so the test needs no network.
    for f in (VENV_BIN.parent / "caffe.build").glob("caffe_*"):
        (work / f.name).symlink_to(f)
    prefix = tmp_path / "prefix"
    out = run([str(BUILD), str(fake_python), str(prefix)], extra_env={"CAFFE_WORK": str(work)})
    assert out.returncode != 0
    assert "FAILED during: configuring" in out.stderr, out.stderr[-2000:]
    assert not prefix.exists()
    assert not (tmp_path / "caffe").exists()


def test_gpu_build_without_cuda_fails_loudly_and_installs_nothing(tmp_path):
    """CAFFE_GPU=1 with neither NVIDIA's wheels nor CUDA_HOME: an error that says what to install."""
    if any(Path(p).joinpath("nvidia", "cu13", "bin", "nvcc").exists() for p in sys.path if p):
        pytest.skip("this environment has the CUDA wheels")
    prefix = tmp_path / "prefix"
    out = run([str(BUILD), sys.executable, str(prefix)], extra_env={"CAFFE_GPU": "1"})
    assert out.returncode != 0
    assert "no CUDA compiler" in out.stderr and "requirements-gpu.txt" in out.stderr, out.stderr[-2000:]
    assert not prefix.exists()


def test_gpu_build_is_not_replaced_by_a_cpu_build(tmp_path):
    """With CAFFE_GPU unset, an installed GPU build stays a GPU build (here: it cannot be rebuilt, and says so)."""
    if any(Path(p).joinpath("nvidia", "cu13", "bin", "nvcc").exists() for p in sys.path if p):
        pytest.skip("this environment has the CUDA wheels")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    stamp = "caffe old gpu=1 arch=90 cudnn=1 cuda=/gone python=/gone script=0 patches=0"
    (prefix / ".stamp").write_text(stamp)
    out = run([str(BUILD), sys.executable, str(prefix)])
    assert "keeping the GPU build" in out.stdout
    assert out.returncode != 0 and "no CUDA compiler" in out.stderr, out.stderr[-2000:]
    assert (prefix / ".stamp").read_text() == stamp


def test_cuda_home_lacking_libraries_is_named(tmp_path):
    """A CUDA_HOME with a compiler but no cuBLAS/cuDNN (and no matching wheels): the missing pieces are listed
    after the patched source was configured, and nothing is installed."""
    if any(Path(p).joinpath("nvidia", "cu13").exists() for p in sys.path if p):
        pytest.skip("this environment has the CUDA wheels, which would complete the toolkit")
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "include").mkdir()
    (cuda / "include" / "cuda_runtime.h").write_text("")
    nvcc = cuda / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    for f in (VENV_BIN.parent / "caffe.build").glob("caffe_*"):  # the downloaded source: no network
        (work / f.name).symlink_to(f)
    prefix = tmp_path / "venv" / "caffe"
    out = run([str(BUILD), sys.executable, str(prefix)],
              extra_env={"CAFFE_GPU": "1", "CUDA_HOME": str(cuda), "CUDA_ARCH_BIN": "90", "CAFFE_WORK": str(work)})
    assert out.returncode != 0
    assert "applying 20-cuda13-cudnn9.patch" in out.stdout
    assert "lacks:" in out.stderr and "include/cublas_v2.h" in out.stderr and "lib64/libcudnn.so" in out.stderr, \
        out.stderr[-2000:]
    assert not prefix.exists()


def test_the_repository_installs_in_editable_mode_offline(tmp_path):
    """make setup's own pip command (Makefile, .venv/.repo) with the pinned setuptools and no
    index: its .pth names this checkout, so tools run from anywhere import this checkout's
    mtdnn and generate with no sys.path line; pyproject.toml lists no dependencies (the pins
    are requirements*.txt) and the install writes nothing into the repository."""
    recipe = re.search(r"^\$\(REPO_INSTALLED\):.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)
    pip = next(line.strip() for line in recipe.group(1).splitlines() if "pip install" in line)
    assert pip.endswith("--no-deps --no-build-isolation --no-index -e ."), pip
    before = sorted(REPO.iterdir())  # an in-tree build would leave build/ or mtdnn.egg-info/ here
    prefix = tmp_path / "prefix"
    # --ignore-installed: pip would otherwise uninstall this venv's own editable install first
    out = run([sys.executable, *pip.split()[1:], "--prefix", str(prefix), "--ignore-installed"], cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert [p.read_text().strip() for p in site.glob("__editable__*.pth")] == [str(REPO)]
    meta = next(site.glob("mtdnn-*.dist-info")) / "METADATA"
    assert "Requires-Dist" not in meta.read_text()
    # -S: not the venv's own site-packages (in a git worktree they name the main checkout)
    code = f"import site; site.addsitedir({str(site)!r}); import mtdnn.cli, generate; print(mtdnn.cli.__file__)"
    where = run([sys.executable, "-S", "-c", code], cwd=tmp_path)
    assert where.returncode == 0 and where.stdout.strip() == str(REPO / "mtdnn" / "cli.py"), where.stderr[-2000:]
    assert sorted(REPO.iterdir()) == before
    # and the venv's own install is still there: a tool's import from elsewhere still works
    own = run([sys.executable, "-c", "import mtdnn; print(mtdnn.__file__)"], cwd=tmp_path)
    assert own.returncode == 0 and own.stdout.strip() == str(REPO / "mtdnn" / "__init__.py"), own.stderr[-2000:]
