#!/usr/bin/env bash
# The host check `make setup` runs first: says in one message, before anything is installed or
# built, when this host is not one the native build supports, and what to use instead.
#
#   docker/check_host.sh [PYTHON]     (PYTHON: the interpreter the venv is made with, default python3)
#
# Native build: Debian 12 (bookworm) on amd64 with its Python 3.11 (python3-venv): Caffe's build
# dependencies, protoc 3.21 (which requirements.txt's protobuf pin matches), the Debian source
# package and, for the TITAN route, CUDA 11.8 with g++-11 are Debian 12's. Elsewhere (a typical GPU
# host runs Ubuntu 22.04/24.04 with its own CUDA): the images (docker/build_images.sh, README
# "Docker"). MTDNN_ANY_HOST=1 skips the OS check (untested hosts: you are on your own).
# OS_RELEASE names another os-release file (the tests play other hosts with it).
# Prints nothing and exits 0 on a supported host; exit 1 with the message otherwise.
set -euo pipefail
PYTHON=${1:-python3}
problems=()
os=$(. "${OS_RELEASE:-/etc/os-release}" 2>/dev/null && echo "${ID:-?} ${VERSION_ID:-?} ${PRETTY_NAME:-unknown OS}") || os="? ? unknown OS"
read -r os_id os_version os_name <<<"$os"
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
if [[ ${MTDNN_ANY_HOST:-} != 1 ]]; then
  [[ $os_id == debian && $os_version == 12 ]] || problems+=("this is $os_name, and the native build is made and tested on Debian 12 only")
  [[ $arch == amd64 ]] || problems+=("this machine is $arch, and the native build is tested on amd64 only")
fi
if ! command -v "$PYTHON" >/dev/null; then
  problems+=("no $PYTHON (Debian 12: apt-get install python3 python3-venv python3-dev)")
elif ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  problems+=("$PYTHON is Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo '(not runnable)'), and the pinned packages need Python >= 3.11 (PYTHON_BASE=python3.11 make setup)")
elif [[ ! -x .venv/bin/python ]] && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  problems+=("$PYTHON cannot make a venv (Debian 12: apt-get install python3-venv)")
fi
((${#problems[@]} == 0)) && exit 0
{
  printf '[setup] this host cannot build natively: %s.\n' "$(IFS=';' && echo "${problems[*]}" | sed 's/;/; /g')"
  cat <<'EOF'
[setup] Use an image instead (docs/docker.md): docker/build_images.sh builds the CPU, CUDA 13 and
[setup] TITAN (CUDA 11.8) images with podman/buildah, or `docker build -f docker/Dockerfile.cpu .`
[setup] (Dockerfile.gpu, Dockerfile.titan for GPUs). A CUDA of your own is used with CUDA_HOME=...
[setup] on a Debian 12 host (CAFFE_GPU=1 CUDA_HOME=/usr/local/cuda make setup). MTDNN_ANY_HOST=1
[setup] tries the native build anyway (untested).
EOF
} >&2
exit 1
