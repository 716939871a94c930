#!/usr/bin/env bash
# Build Caffe 1.0 from Debian's source package and install it into a Python environment.
#
# One script for every place Caffe is built: `make setup` on the host (CPU),
# docker/Dockerfile.cpu and docker/Dockerfile.gpu. Usage:
#
#   docker/build_caffe.sh PYTHON PREFIX
#
#   PYTHON  the interpreter of the environment pycaffe is built for (e.g. .venv/bin/python)
#   PREFIX  where Caffe is installed (e.g. .venv/caffe); the `caffe` command is linked into
#           the environment's bin/ and the package is put on its sys.path with a .pth file.
#
# Environment:
#   CAFFE_GPU=1     build with CUDA, cuDNN and NCCL. The toolkit is CUDA_HOME when set, else the
#                   CUDA 13 wheels of requirements-gpu.txt installed in PYTHON's environment; the
#                   wheels also fill in what CUDA_HOME lacks (cuBLAS, cuRAND, cuDNN, NCCL) when
#                   their CUDA major version matches. Both are assembled into PREFIX/../cuda (a
#                   CUDA_HOME of symlinks). Unset, CAFFE_GPU keeps the kind of build installed
#                   (a GPU build is never silently replaced by a CPU one); CAFFE_GPU=0 is CPU-only.
#   CAFFE_CUDA      the route of CAFFE_GPU=1 when CUDA_HOME is unset (`make setup` picks it from
#                   nvidia-smi, mtdnn/cuda_route.py): 13 (default) the CUDA 13 wheels above, for compute
#                   capability 7.5 and newer; 11.8 the TITAN route: Debian 12's nvidia-cuda-toolkit 11.8
#                   from non-free with g++-11 (installed here as root through a private apt
#                   configuration, without Debian's libcuda1/libnvidia-ml1: the machine's driver is used)
#                   + cuDNN 9.10.2 and NCCL 2.21.5 from requirements-gpu-cu11.txt, for 5.2 to 9.0 + PTX
#   CUDA_HOST_COMPILER  the compiler nvcc hands host code to (default: /usr/bin/gcc-11 for CUDA 11,
#                   whose nvcc refuses GCC 12; else cmake's C compiler)
#   CUDA_ARCH_BIN   compute capabilities, space separated (default: every TITAN-class generation
#                   the compiler supports, 52 61 70 75 80 86 89 90 100 120, plus PTX of the newest)
#   USE_CUDNN=0     Caffe's own CUDA kernels instead of cuDNN (default 1)
#   CAFFE_TESTS     also build Caffe's gtest binary (PREFIX.build/build/test/test.testbin, run it
#                   from PREFIX.build/src) with these test files, comma separated without test_
#                   and .cpp ("all" for every one)
#   CAFFE_WORK      the scratch folder (default: PREFIX.build); JOBS the make parallelism.
#
# Source patches: docker/patches/*.patch are applied in sorted order (patch -p1) to every build.
#
# Nothing half-built is left where later commands look: Caffe is installed into a staging
# folder, checked (`caffe --version`, `import caffe`), and only then moved to PREFIX with a
# stamp file. A second run with the same inputs returns in well under a second.
set -euo pipefail

PYTHON=$(realpath -s "${1:?usage: build_caffe.sh PYTHON PREFIX}")
PREFIX=$(realpath -m "${2:?usage: build_caffe.sh PYTHON PREFIX}")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${CAFFE_WORK:-$PREFIX.build}
JOBS=${JOBS:-$(nproc)}
USE_CUDNN=${USE_CUDNN:-1}
CAFFE_TESTS=${CAFFE_TESTS:-}
PATCHES=("$HERE"/patches/*.patch)
[[ -e ${PATCHES[0]} ]] || PATCHES=()
PATCH_HASH=$(cat /dev/null "${PATCHES[@]}" | sha256sum | cut -c1-16)
if [[ -z ${CAFFE_GPU:-} ]]; then
  CAFFE_GPU=0
  if [[ -f $PREFIX/.stamp ]] && grep -q ' gpu=1 ' "$PREFIX/.stamp"; then
    CAFFE_GPU=1
    : "${CUDA_ARCH_BIN:=$(sed -n 's/.* arch=\([0-9 ]*\) cudnn=.*/\1/p' "$PREFIX/.stamp")}"
    : "${CAFFE_CUDA:=$(sed -n 's/.* route=\([0-9.]*\)$/\1/p' "$PREFIX/.stamp")}"
    echo "[build_caffe] keeping the GPU build of $PREFIX (CAFFE_GPU=0 replaces it with a CPU-only one)"
  fi
fi

CAFFE_CUDA=${CAFFE_CUDA:-13}
[[ $CAFFE_CUDA == 13 || $CAFFE_CUDA == 11.8 ]] || { echo "[build_caffe] ERROR: CAFFE_CUDA=$CAFFE_CUDA: 13 or 11.8 (README \"GPU\")" >&2; exit 2; }

VERSION=1.0.0+git20180821.99bd997-8
DSC=caffe_$VERSION.dsc
DSC_SHA256=c492f4893fc1ba1fb514b2d9b4763bc78dc93571ea24adc6e604eccbb93cdd64

step() { printf '\n[build_caffe] %s\n' "$*"; CURRENT_STEP=$*; }
die() { echo "[build_caffe] ERROR: $*" >&2; exit 1; }
CURRENT_STEP=start
trap 'echo "[build_caffe] FAILED during: $CURRENT_STEP (nothing was installed into $PREFIX; log above)" >&2' ERR

# ---- CUDA (CAFFE_GPU=1): find the toolkit and the libraries, and assemble one CUDA_HOME of symlinks.
CUDA_DIR=$(dirname "$PREFIX")/cuda
cuda_major() { "$1/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p'; }
find_cuda() {
  local wheels root
  wheels=$("$PYTHON" -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
  if [[ -n ${CUDA_HOME:-} ]]; then
    [[ -x $CUDA_HOME/bin/nvcc ]] || die "CUDA_HOME=$CUDA_HOME has no bin/nvcc"
    root=$CUDA_HOME
  elif [[ $CAFFE_CUDA == 11.8 ]]; then
    debian_cuda
    root=$DEBIAN_CUDA
  elif [[ -n $wheels && -x $wheels/cu13/bin/nvcc ]]; then
    root=$wheels/cu13
  else
    die "CAFFE_GPU=1 but no CUDA compiler: install NVIDIA's wheels into the environment
  ($PYTHON -m pip install -r requirements-gpu.txt; \`CAFFE_GPU=1 make setup\` does it) or set CUDA_HOME
  to a CUDA toolkit (its bin/nvcc). Nothing was built."
  fi
  CUDA_ROOT=$(realpath "$root")
  CUDA_MAJOR=$(cuda_major "$CUDA_ROOT")
  [[ -n $CUDA_MAJOR ]] || die "$CUDA_ROOT/bin/nvcc --version does not say its release"
  CUDA_SOURCES=("$CUDA_ROOT")
  # The wheels complete the toolkit only for their own CUDA major version (cu13: libcudart.so.13;
  # nvidia-cudnn-cu11 and nvidia-nccl-cu11 for CUDA 11).
  if [[ -n $wheels ]]; then
    local d
    if [[ -e $wheels/cu13/lib/libcudart.so.$CUDA_MAJOR && $(realpath "$wheels/cu13") != "$CUDA_ROOT" ]]; then
      CUDA_SOURCES+=("$(realpath "$wheels/cu13")")
    fi
    for d in $("$PYTHON" - "$CUDA_MAJOR" <<'EOF'
import importlib.metadata as m, sys
for d in ("cudnn", "nccl"):
    try:
        m.version(f"nvidia-{d}-cu{sys.argv[1]}")
        print(d)
    except m.PackageNotFoundError:
        pass
EOF
    ); do
      [[ -d $wheels/$d ]] && CUDA_SOURCES+=("$(realpath "$wheels/$d")")
    done
  fi
  if [[ -z ${CUDA_HOST_COMPILER:-} && $CUDA_MAJOR -le 11 && -x /usr/bin/gcc-11 ]]; then
    CUDA_HOST_COMPILER=/usr/bin/gcc-11 # nvcc 11.8 refuses GCC newer than 11 ("unsupported GNU version")
  fi
  if [[ -z ${CUDA_ARCH_BIN:-} ]]; then
    # Maxwell (TITAN X), Pascal (TITAN Xp), Volta (TITAN V), Turing (TITAN RTX), Ampere (A100,
    # RTX 3090), Ada (RTX 4090), Hopper (H100/H200), Blackwell (B200, RTX 5090): those nvcc knows.
    local supported a
    supported=" $("$CUDA_ROOT/bin/nvcc" --list-gpu-arch | sed 's/compute_//' | tr '\n' ' ') "
    CUDA_ARCH_BIN=""
    for a in 52 61 70 75 80 86 89 90 100 120; do
      [[ $supported == *" $a "* ]] && CUDA_ARCH_BIN+="${CUDA_ARCH_BIN:+ }$a"
    done
  fi
  [[ -n $CUDA_ARCH_BIN ]] || die "no architecture in CUDA_ARCH_BIN"
}
# The TITAN route: Debian 12's CUDA 11.8 (non-free), installed when missing, and a CUDA folder of
# symlinks in the usual layout assembled from Debian's (nvcc in /usr/lib/nvidia-cuda-toolkit/bin,
# headers in /usr/include, libraries in the multiarch folder), kept while the package version is.
DEBIAN_CUDA_PKGS=(nvidia-cuda-dev libcudart11.0 libcublas11 libcublaslt11 libcurand10 libthrust-dev libcub-dev libcu++-dev)
debian_cuda() {
  local os="" f rel version
  os=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ $os == bookworm ]] || die "CAFFE_CUDA=11.8 is Debian 12's nvidia-cuda-toolkit 11.8 and this is not Debian 12
  (${os:-unknown}). Use the TITAN image (docker/build_images.sh, README \"GPU\"), or set CUDA_HOME to an
  installed CUDA 11.8 (and CUDA_HOST_COMPILER to a GCC <= 11)."
  if ! dpkg-query -W -f='${Status}' nvidia-cuda-toolkit-gcc 2>/dev/null | grep -q 'install ok installed'; then
    [[ $(id -u) -eq 0 ]] || die "CAFFE_CUDA=11.8 needs Debian's nvidia-cuda-toolkit and nvidia-cuda-toolkit-gcc
  (non-free): run this as root (it installs them through its own apt configuration), or use the TITAN image."
    step "installing Debian 12's CUDA 11.8 and g++-11 (non-free, through a private apt configuration)"
    mkdir -p "$WORK/apt-cuda/lists/partial" "$WORK/apt-cuda/cache/archives/partial"
    cat >"$WORK/apt-cuda/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main contrib non-free
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main contrib non-free
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main contrib non-free
EOF
    local apt=(-o "Dir::Etc::SourceList=$WORK/apt-cuda/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$WORK/apt-cuda/lists" -o "Dir::Cache=$WORK/apt-cuda/cache" -o APT::Sandbox::User=root)
    apt-get "${apt[@]}" -qq update
    # nvidia-cuda-dev depends on the driver's libcuda1 and libnvidia-ml1. A Debian driver already
    # installed satisfies that; otherwise the driver is the machine's (or, in a container, the one the
    # NVIDIA Container Toolkit mounts in) and Debian's copies must not shadow it: a placeholder
    # package provides the names instead.
    if apt-get "${apt[@]}" -s install --no-install-recommends nvidia-cuda-toolkit-gcc | grep -qE '^Inst (libcuda1|libnvidia-ml1|libnvidia-tesla)'; then
      local ph=$WORK/apt-cuda/mtdnn-host-nvidia-driver
      mkdir -p "$ph/DEBIAN"
      cat >"$ph/DEBIAN/control" <<EOF
Package: mtdnn-host-nvidia-driver
Version: 1
Architecture: all
Maintainer: mtdnn <mtdnn@localhost>
Provides: libcuda-11.8-1, libcuda.so.1 (= 580), libnvidia-ml.so.1 (= 580)
Description: the NVIDIA driver's user-space libraries come from the host
 Stands in for Debian's libcuda1 and libnvidia-ml1 so that nvidia-cuda-toolkit installs
 without them and they never shadow the driver of the machine that runs Caffe.
EOF
      dpkg-deb --build "$ph" "$ph.deb" >/dev/null
      dpkg -i "$ph.deb" >/dev/null
    fi
    DEBIAN_FRONTEND=noninteractive apt-get "${apt[@]}" install -y -qq --no-install-recommends nvidia-cuda-toolkit-gcc
  fi
  DEBIAN_CUDA=$WORK/debian-cuda
  version="$(dpkg-query -W nvidia-cuda-toolkit "${DEBIAN_CUDA_PKGS[@]}") script=$(sha256sum "$0" | cut -c1-16)"
  [[ -f $DEBIAN_CUDA/.version && $(cat "$DEBIAN_CUDA/.version") == "$version" ]] && return 0
  rm -rf "$DEBIAN_CUDA"
  mkdir -p "$DEBIAN_CUDA/include" "$DEBIAN_CUDA/lib"
  mkdir -p "$DEBIAN_CUDA/bin"
  while read -r f; do
    [[ -f $f ]] || continue
    case $f in
      # nvcc itself (/usr/bin/nvcc is a wrapper script) and Debian's ptxas, fatbinary, nvlink...: the
      # build puts this folder first on PATH, so another CUDA's tools (/usr/local/bin) are not taken.
      /usr/lib/nvidia-cuda-toolkit/bin/*/*) ;;
      /usr/lib/nvidia-cuda-toolkit/bin/*) [[ -x $f ]] && ln -sfn "$f" "$DEBIAN_CUDA/bin/${f##*/}" ;;
      /usr/bin/*) [[ -e $DEBIAN_CUDA/bin/${f##*/} ]] || ln -s "$f" "$DEBIAN_CUDA/bin/${f##*/}" ;;
      /usr/include/*)
        rel=${f#/usr/include/}
        [[ $rel == */* ]] && mkdir -p "$DEBIAN_CUDA/include/${rel%/*}"
        ln -sfn "$f" "$DEBIAN_CUDA/include/$rel" ;;
      # the multiarch folder (/usr/lib/x86_64-linux-gnu); dpkg-architecture may not be installed yet
      /usr/lib/*-linux-gnu*/lib*.so*) [[ ${f#/usr/lib/*/} == */* ]] || ln -sfn "$f" "$DEBIAN_CUDA/lib/${f##*/}" ;;
    esac
  done < <(dpkg -L nvidia-cuda-toolkit "${DEBIAN_CUDA_PKGS[@]}")
  echo "$version" >"$DEBIAN_CUDA/.version"
}
assemble_cuda() {
  local new=$CUDA_DIR.new src f base
  rm -rf "$new"
  mkdir -p "$new/include" "$new/lib64"
  ln -s "$CUDA_ROOT/bin" "$new/bin"
  [[ -d $CUDA_ROOT/nvvm ]] && ln -s "$CUDA_ROOT/nvvm" "$new/nvvm"
  for src in "${CUDA_SOURCES[@]}"; do # the first source that has a file wins
    [[ -d $src/include ]] && cp -rsn "$src/include/." "$new/include/"
    for f in "$src"/lib64/lib*.so* "$src"/lib/lib*.so*; do
      [[ -e $f && ! -e $new/lib64/${f##*/} ]] && ln -s "$(realpath "$f")" "$new/lib64/${f##*/}"
    done
  done
  # CUDA 13 keeps Thrust, CUB and libcu++ in include/cccl: nvcc adds that folder, g++ compiling
  # Caffe's .cpp files (cudnn_softmax_layer.cpp includes thrust) does not.
  if [[ -d $new/include/cccl ]]; then
    for f in "$new"/include/cccl/*; do [[ -e $new/include/${f##*/} ]] || ln -s "cccl/${f##*/}" "$new/include/${f##*/}"; done
  fi
  for f in "$new"/lib64/lib*.so.*; do # the unversioned names the linker and FindCUDA look for
    base=${f##*/}
    [[ -e $new/lib64/${base%%.so.*}.so ]] || ln -s "$base" "$new/lib64/${base%%.so.*}.so"
  done
  local missing=() need=(include/cuda_runtime.h include/cublas_v2.h include/curand.h include/nccl.h
    lib64/libcudart.so lib64/libcublas.so lib64/libcurand.so lib64/libnccl.so)
  [[ $USE_CUDNN == 1 ]] && need+=(include/cudnn.h lib64/libcudnn.so)
  for f in "${need[@]}"; do [[ -e $new/$f ]] || missing+=("$f"); done
  ((${#missing[@]} == 0)) || die "CUDA $CUDA_MAJOR from ${CUDA_SOURCES[*]} lacks: ${missing[*]}
  (the wheels complete a CUDA_HOME of their own CUDA major only: requirements-gpu.txt CUDA 13,
  requirements-gpu-cu11.txt cuDNN and NCCL for CUDA 11; USE_CUDNN=0 builds without cuDNN)"
  rm -rf "$CUDA_DIR"
  mv "$new" "$CUDA_DIR"
}
CUDA_ID=""
if [[ $CAFFE_GPU == 1 ]]; then
  find_cuda
  CUDA_ID="$CUDA_ROOT:$CUDA_MAJOR:${CUDA_SOURCES[*]}${CUDA_HOST_COMPILER:+:host=$CUDA_HOST_COMPILER}"
else
  CUDA_ARCH_BIN=""
fi

# The stamp names every input of the build, so a change of any of them rebuilds.
STAMP_TEXT="caffe $VERSION gpu=$CAFFE_GPU arch=$CUDA_ARCH_BIN cudnn=$USE_CUDNN cuda=$CUDA_ID python=$PYTHON script=$(sha256sum "$0" | cut -c1-16) patches=$PATCH_HASH${CUDA_ID:+ route=$CAFFE_CUDA}"
build_tests() {
  [[ -n $CAFFE_TESTS ]] || return 0
  step "building Caffe's gtest binary (tests: $CAFFE_TESTS)"
  local only=$CAFFE_TESTS
  [[ $only == all ]] && only=""
  cmake -S "$WORK/src" -B "$WORK/build" -DBUILD_only_tests="$only" >>"$WORK/cmake.log" || { tail -40 "$WORK/cmake.log"; false; }
  make -C "$WORK/build" -j"$JOBS" --no-print-directory test.testbin 2>&1 | grep -E 'error|Error|Built target' || true
  [[ -x $WORK/build/test/test.testbin ]] || die "the gtest binary was not built (log above)"
  echo "[build_caffe] gtest binary: $WORK/build/test/test.testbin (run it from $WORK/src)"
}
if [[ -f $PREFIX/.stamp && $(cat "$PREFIX/.stamp") == "$STAMP_TEXT" ]]; then
  echo "[build_caffe] Caffe already installed in $PREFIX"
  build_tests
  exit 0
fi

step "checking build dependencies"
DEPS=(cmake g++ make dpkg-dev xz-utils patch libboost-dev libboost-filesystem-dev libboost-system-dev
  libboost-thread-dev libboost-python-dev libgflags-dev libgoogle-glog-dev libhdf5-dev
  libleveldb-dev liblmdb-dev libopenblas-dev libopencv-dev libprotobuf-dev libprotoc-dev
  libsnappy-dev protobuf-compiler debian-archive-keyring ca-certificates)
missing=()
for p in "${DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "installing with apt-get: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "[build_caffe] missing Debian packages (run as root, or install them):" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

step "fetching Debian's caffe $VERSION source (bullseye) through a private apt configuration"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial"
cat >"$WORK/apt/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
EOF
APT=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache" -o APT::Sandbox::User=root)
cd "$WORK"
if [[ ! -f $DSC ]] || ! echo "$DSC_SHA256  $DSC" | sha256sum -c --quiet - 2>/dev/null; then
  apt-get "${APT[@]}" -qq update
  apt-get "${APT[@]}" -qq source --download-only "caffe=$VERSION"
fi
step "verifying checksums ($DSC sha256 pinned here; the tarballs against the .dsc)"
echo "$DSC_SHA256  $DSC" | sha256sum -c -
if [[ ! -f src/.patched || $(cat src/.patched) != "$PATCH_HASH" ]]; then
  rm -rf src
  dpkg-source --no-copy -x "$DSC" src >/dev/null # checks the tarballs' sizes and hashes against the .dsc
  step "patching for protobuf >= 3.21 (SetTotalBytesLimit takes one argument)"
  sed -i 's/coded_input->SetTotalBytesLimit(kProtoReadBytesLimit, 536870912);/coded_input->SetTotalBytesLimit(kProtoReadBytesLimit);/' \
    src/src/caffe/util/io.cpp
  grep -q 'SetTotalBytesLimit(kProtoReadBytesLimit);' src/src/caffe/util/io.cpp
  for p in "${PATCHES[@]}"; do
    step "applying ${p##*/}"
    patch -d src -p1 --forward --quiet <"$p"
  done
  echo "$PATCH_HASH" >src/.patched
fi

step "configuring (gpu=$CAFFE_GPU)"
NUMPY_INC=$("$PYTHON" -c 'import numpy; print(numpy.get_include())')
# Installed with DESTDIR into a staging copy of PREFIX, so the rpath already names PREFIX/lib.
DESTDIR=$WORK/destdir
STAGE=$DESTDIR$PREFIX
rm -rf "$DESTDIR" # build/ is kept: a rerun after a failure compiles only what changed
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX"
  -DBLAS=Open -DUSE_OPENCV=ON -DUSE_LMDB=ON -DUSE_LEVELDB=ON -DBUILD_python=ON -DBUILD_python_layer=ON
  -DBUILD_docs=OFF -Dpython_version=3 -DPYTHON_EXECUTABLE="$PYTHON" -DPython_NumPy_INCLUDE_DIRS="$NUMPY_INC"
  -DNUMPY_INCLUDE_DIR="$NUMPY_INC")
if [[ $CAFFE_GPU == 1 ]]; then
  step "assembling CUDA $CUDA_MAJOR in $CUDA_DIR from ${CUDA_SOURCES[*]}"
  assemble_cuda
  CMAKE_ARGS+=(-DCPU_ONLY=OFF -DUSE_NCCL=ON -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_DIR"
    -DNCCL_INCLUDE_DIR="$CUDA_DIR/include" -DNCCL_LIBRARIES="$CUDA_DIR/lib64/libnccl.so"
    -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN="$CUDA_ARCH_BIN" -DCUDA_ARCH_PTX="${CUDA_ARCH_BIN##* }")
  [[ -n ${CUDA_HOST_COMPILER:-} ]] && CMAKE_ARGS+=(-DCUDA_HOST_COMPILER="$CUDA_HOST_COMPILER")
  if [[ $USE_CUDNN == 1 ]]; then
    CMAKE_ARGS+=(-DUSE_CUDNN=ON -DCUDNN_INCLUDE="$CUDA_DIR/include" -DCUDNN_LIBRARY="$CUDA_DIR/lib64/libcudnn.so")
  else
    CMAKE_ARGS+=(-DUSE_CUDNN=OFF)
  fi
else
  CMAKE_ARGS+=(-DCPU_ONLY=ON -DUSE_CUDNN=OFF -DUSE_NCCL=OFF)
fi
cmake -S src -B build "${CMAKE_ARGS[@]}" >cmake.log || { tail -40 cmake.log; false; }
if [[ $CAFFE_GPU == 1 ]]; then # Caffe's cmake falls back to a CPU-only build when it finds no CUDA
  grep -q 'CUDA detected' cmake.log || { tail -40 cmake.log; die "cmake did not find CUDA in $CUDA_DIR"; }
  if [[ $USE_CUDNN == 1 ]]; then
    grep -q 'Found cuDNN: ver. [0-9]' cmake.log || { tail -40 cmake.log; die "cmake did not find cuDNN in $CUDA_DIR"; }
  fi
  grep -E 'CUDA detected|Found cuDNN|Added CUDA NVCC flags|Found NCCL' cmake.log
fi

step "compiling with $JOBS jobs"
[[ $CAFFE_GPU == 1 ]] && export PATH=$CUDA_DIR/bin:$PATH # nvcc finds ptxas & co. on PATH (Debian's layout)
make -C build -j"$JOBS" --no-print-directory caffe caffe.bin pycaffe 2>&1 | grep -E 'error|Error|Built target' || true
make -C build -j"$JOBS" --no-print-directory install DESTDIR="$DESTDIR" >install.log 2>&1 || { tail -40 install.log; false; }

step "checking the staged build"
LD_LIBRARY_PATH=$STAGE/lib "$STAGE/bin/caffe" --version 2>&1 | grep -q 'caffe version'
if [[ $CAFFE_GPU == 1 ]]; then
  libs=$(LD_LIBRARY_PATH=$STAGE/lib ldd "$STAGE/lib/libcaffe.so")
  for l in libcudart libcublas libcurand libnccl $([[ $USE_CUDNN == 1 ]] && echo libcudnn); do
    grep -q "$l.so.* => /" <<<"$libs" || die "the GPU build's libcaffe does not load $l"
  done
fi
LD_LIBRARY_PATH=$STAGE/lib PYTHONPATH=$STAGE/lib/python3/dist-packages "$PYTHON" -c 'import caffe; caffe.set_mode_cpu()'

step "installing into $PREFIX"
# Move the old install aside first, so at no moment a half-copied caffe is in place.
rm -rf "$PREFIX.old"
[[ -e $PREFIX ]] && mv "$PREFIX" "$PREFIX.old"
mv "$STAGE" "$PREFIX"
rm -rf "$PREFIX.old" "$DESTDIR"
trap 'echo "[build_caffe] FAILED during: $CURRENT_STEP; removed $PREFIX" >&2; rm -rf "$PREFIX"' ERR
BIN=$(dirname "$PYTHON")
ln -sfn "$PREFIX/bin/caffe" "$BIN/caffe"
SITE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PREFIX/lib/python3/dist-packages" >"$SITE/caffe.pth" # Debian installs pycaffe there
# The install rpath points at PREFIX/lib, so neither `caffe` nor `import caffe` needs LD_LIBRARY_PATH.
"$BIN/caffe" --version
"$PYTHON" -c 'import caffe, sys; print("pycaffe", caffe.__version__, "from", caffe.__file__)'
echo "$STAMP_TEXT" >"$PREFIX/.stamp"
trap - ERR
build_tests
echo "[build_caffe] done (gpu=$CAFFE_GPU${CUDA_ARCH_BIN:+ arch=$CUDA_ARCH_BIN cudnn=$USE_CUDNN})"
