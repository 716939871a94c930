"""The GPU route `make setup` picks (mtdnn/cuda_route.py) and the host check it runs first
(docker/check_host.sh): the pure choice for each GPU generation, then the Makefile and the script
run for real, with a stand-in nvidia-smi (an executable printing what nvidia-smi prints) and
os-release files of other hosts."""
import os
import subprocess
import sys

import pytest

from mtdnn.cuda_route import NoRoute, choose_route
from mtdnn.paths import REPO


@pytest.mark.parametrize("caps, route", [
    ("5.2", "11.8"),            # TITAN X (Maxwell)
    ("6.1", "11.8"),            # TITAN X/Xp (Pascal)
    ("7.0", "11.8"),            # TITAN V
    ("7.5", "13"),              # TITAN RTX
    ("8.6\n8.6", "13"),         # two RTX 3090
    ("9.0", "13"),              # H100/H200
    ("12.0", "13"),             # RTX 5090
    ("6.1\n8.6", "11.8"),       # a TITAN Xp beside an RTX 3090: the route that builds for both
])
def test_route_per_generation(caps, route):
    got, why = choose_route(caps)
    assert got == route
    assert caps.split()[0] in why and ("7.5" in why)


def test_mixed_with_blackwell_says_it_runs_ptx():
    route, why = choose_route("6.1\n12.0")
    assert route == "11.8" and "PTX" in why


@pytest.mark.parametrize("caps", ["", "3.5", "5.0\n9.0", "n/a", "6"])
def test_no_route(caps):
    with pytest.raises(NoRoute) as e:
        choose_route(caps)
    assert "CAFFE_CUDA" in str(e.value)


def fake_nvidia_smi(tmp_path, output, rc=0):
    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    smi = bin_ / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {rc}\n")
    smi.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}


def make_dry_run(env, *args):
    env = {k: v for k, v in env.items() if k not in ("CAFFE_CUDA", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "-n", "-C", str(REPO), "setup", "CAFFE_GPU=1", f"PYTHON_BASE={sys.executable}",
                           "VENV=/nonexistent-venv", *args], capture_output=True, text=True, env=env)


def test_make_setup_picks_the_titan_route_for_a_pascal_gpu(tmp_path):
    out = make_dry_run(fake_nvidia_smi(tmp_path, "6.1\\n"))
    assert out.returncode == 0, out.stderr
    assert "CAFFE_CUDA=11.8: compute capability 6.1" in out.stderr      # says why
    assert "requirements-gpu-cu11.txt" in out.stdout                     # the cu11 wheels
    assert "requirements-gpu.txt" not in out.stdout


def test_make_setup_picks_cuda13_for_hopper_and_without_gpu(tmp_path):
    out = make_dry_run(fake_nvidia_smi(tmp_path, "9.0\\n"))
    assert out.returncode == 0, out.stderr
    assert "CAFFE_CUDA=13: compute capability 9.0" in out.stderr
    assert "requirements-gpu.txt" in out.stdout and "cu11" not in out.stdout
    none = make_dry_run(fake_nvidia_smi(tmp_path / "x", "", rc=9))
    assert none.returncode == 0 and "no NVIDIA GPU answered" in none.stderr
    assert "requirements-gpu.txt" in none.stdout


def test_make_setup_stops_for_a_kepler_gpu_and_obeys_caffe_cuda(tmp_path):
    env = fake_nvidia_smi(tmp_path, "3.5\\n")
    out = make_dry_run(env)
    assert out.returncode != 0 and "older than Maxwell" in out.stderr
    chosen = make_dry_run(env, "CAFFE_CUDA=11.8")          # an explicit route asks nothing
    assert chosen.returncode == 0 and "cu11" in chosen.stdout and "older" not in chosen.stderr


def check_host(*args, os_release=None):
    env = {**os.environ, **({"OS_RELEASE": str(os_release)} if os_release else {})}
    env.pop("MTDNN_ANY_HOST", None)
    return subprocess.run([str(REPO / "docker" / "check_host.sh"), *args], capture_output=True, text=True,
                          env=env, cwd=REPO)


def test_check_host_passes_here_and_stops_ubuntu_with_one_message(tmp_path):
    ok = check_host(sys.executable)
    assert ok.returncode == 0 and ok.stdout + ok.stderr == ""
    ubuntu = tmp_path / "os-release"
    ubuntu.write_text('ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n')
    out = check_host(sys.executable, os_release=ubuntu)
    assert out.returncode == 1
    assert out.stderr.count("cannot build natively") == 1
    assert "Ubuntu 24.04.1 LTS" in out.stderr and "Debian 12" in out.stderr
    assert "docker/build_images.sh" in out.stderr and "CUDA_HOME" in out.stderr


def test_check_host_names_an_old_python(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\nexit 1\n")  # an interpreter that is not >= 3.11 (nor runs at all)
    old.chmod(0o755)
    out = check_host(str(old))
    assert out.returncode == 1 and "Python >= 3.11" in out.stderr
