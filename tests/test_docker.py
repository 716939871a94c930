"""The Dockerfiles, checked without a Docker engine: their build commands against the build script's
and the Makefile's options, and their documented `docker run` commands against the Makefile."""
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from mtdnn.paths import REPO

DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
SCRIPT_DOC = (REPO / "docker" / "build_caffe.sh").read_text().split("set -euo pipefail")[0]
MAKEFILE = (REPO / "Makefile").read_text()


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", text, re.M)]


def documented_runs(path: Path) -> list[list[str]]:
    """The `docker run ... IMAGE COMMAND` examples of a Dockerfile's header, as the command after the image."""
    header = "\n".join(l[1:].strip() for l in path.read_text().splitlines() if l.startswith("#"))
    header = re.sub(r"\\\n\s*", " ", header)
    runs = []
    for line in header.splitlines():
        if line.startswith("docker run"):
            words = shlex.split(line)
            image = next(i for i, w in enumerate(words) if w.startswith("mtdnn-"))
            runs.append(words[image + 1:])
    return runs


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_commands_use_known_options_and_targets(dockerfile):
    runs = [args for ins, args in instructions(dockerfile) if ins == "RUN"]
    make_runs = [r for r in runs if "make setup" in r]
    assert len(make_runs) == 1, runs
    cmd = make_runs[0].split("&&")[0]
    # every VAR=value of the command is a build-script option or a Makefile variable
    for var in re.findall(r"\b([A-Z_]+)=", cmd):
        assert var in SCRIPT_DOC or re.search(rf"^{var}\s*[?:]?=", MAKEFILE, re.M), var
    args = [a for a in shlex.split(cmd) if "=" in a and not a.startswith("CUDA_ARCH_BIN")]
    # -B: as on a fresh clone, whatever this venv holds already
    dry = subprocess.run(["make", "-n", "-B", "setup", *args], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "docker/build_caffe.sh" in dry.stdout
    if "CAFFE_GPU=1" in cmd:
        wheels = "requirements-gpu-cu11.txt" if "CAFFE_CUDA=11.8" in cmd else "requirements-gpu.txt"
        assert wheels in dry.stdout and "CAFFE_GPU=1 docker/build_caffe.sh" in dry.stdout
    for ins, args in instructions(dockerfile):
        if ins == "ENV":
            assert "GLOG_minloglevel" not in args, "the image must not hide Caffe's training log"


def test_gpu_image_documents_make_train_with_data_and_runs_mounted():
    dockerfile = REPO / "docker" / "Dockerfile.gpu"
    header = dockerfile.read_text()
    assert "-v $PWD/runs:/opt/mtdnn/runs" in header and "MTDNN_DATA=/data" in header
    runs = documented_runs(dockerfile)
    trains = [r for r in runs if r[:2] == ["make", "train"]]
    assert trains, runs
    for cmd in trains:
        dry = subprocess.run(["make", "-n", *cmd[1:]], cwd=REPO, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        assert "tools/train.py --model full" in dry.stdout and "--gpus 0" in dry.stdout
        assert "--run runs/" in dry.stdout  # the run folder is below the mounted runs/


def test_gpu_image_build_arg_reaches_the_build_script():
    ins = instructions(REPO / "docker" / "Dockerfile.gpu")
    assert ("ARG", 'CUDA_ARCH_BIN=""') in ins
    assert "CUDA_ARCH_BIN" in SCRIPT_DOC
    assert not any(i == "FROM" and "nvidia" in a for i, a in ins), "the CUDA comes from the wheels, not a CUDA image"


def test_titan_image_is_the_cuda_11_8_route_without_driver_libraries():
    ins = instructions(REPO / "docker" / "Dockerfile.titan")
    run = next(a for i, a in ins if i == "RUN" and "make setup" in a)
    assert "CAFFE_GPU=1 CAFFE_CUDA=11.8" in run
    # the image must not carry Debian's driver libraries: the build fails if they are there
    assert "test ! -e /usr/lib/x86_64-linux-gnu/libcuda.so.1" in run
    assert ("ARG", 'CUDA_ARCH_BIN=""') in ins


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_put_the_repository_on_pythonpath(dockerfile):
    # Tools have no sys.path block: in an image, any Python (not only the venv's) finds `mtdnn`
    # because the repository root, the image's WORKDIR, is on PYTHONPATH.
    ins = instructions(dockerfile)
    workdir = [a for i, a in ins if i == "WORKDIR"]
    env = " ".join(a for i, a in ins if i == "ENV")
    assert workdir == ["/opt/mtdnn"], workdir
    assert re.search(r"\bPYTHONPATH=/opt/mtdnn(\s|$)", env), env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_no_driver_library(dockerfile):
    # The NVIDIA Container Toolkit mounts the host's driver; a Debian libcuda1 would shadow it.
    for ins, args in instructions(dockerfile):
        if ins == "RUN":
            assert not re.search(r"\b(libcuda1|libnvidia-ml1|nvidia-driver\S*|libnvidia-compute\S*)\b", args), args


BUILD_IMAGES = (REPO / "docker" / "build_images.sh").read_text()


def test_build_images_checks_every_image_inside():
    check = BUILD_IMAGES.split("check_image() {")[1].split("\n}")[0]
    # caffe, pycaffe, the Fast-Model forward, the start-up convention, no driver library
    for needle in ("caffe --version", "import caffe", '"$FORWARD"', "/usr/bin/python3 -c",
                   "--workingdir /", "tools/", "libcuda\\.so\\.1"):
        assert needle in check, needle
    assert "models/fast/deploy.prototxt" in BUILD_IMAGES.split("check_image() {")[0]
    assert (REPO / "models" / "fast" / "deploy.prototxt").is_file()
    assert (REPO / "tools" / "net_summary.py").is_file() and "tools/net_summary.py" in check


def test_ci_builds_the_gpu_images_for_one_architecture_each():
    # The choice: sm_90 for the CUDA 13 image, the TITAN Xp's sm_61 for the TITAN image;
    # both Dockerfiles take the architecture as a build argument.
    assert re.search(r"^GPU_ARCH=\$\{GPU_ARCH-90\}$", BUILD_IMAGES, re.M)
    assert re.search(r"^TITAN_ARCH=\$\{TITAN_ARCH-61\}$", BUILD_IMAGES, re.M)
    for name, var in (("gpu", "GPU_ARCH"), ("titan", "TITAN_ARCH")):
        assert ("ARG", 'CUDA_ARCH_BIN=""') in instructions(REPO / "docker" / f"Dockerfile.{name}")
        assert f'--build-arg "CUDA_ARCH_BIN=${var}"' in BUILD_IMAGES
    ci = (REPO / ".ci" / "run").read_text()
    assert "make ci-images" in ci
    # issue 21: CI builds the CPU image and one GPU image (the TITAN one): all three come too close to
    # the hour (docs/ci.md); the third by hand
    assert re.search(r"^CI_IMAGES \?= cpu titan$", MAKEFILE, re.M)
    target = re.search(r"^ci-images:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert target and "docker/build_images.sh" in target.group(1) and "IMAGES_CACHE=0" in target.group(1)
