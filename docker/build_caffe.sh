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
    echo "[build_caffe] keeping the GPU build of $PREFIX (CAFFE_GPU=0 replaces it with a CPU-only one)"
  fi
fi

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
  # The wheels complete the toolkit only for their own CUDA major version (cu13: libcudart.so.13).
  if [[ -n $wheels && -e $wheels/cu13/lib/libcudart.so.$CUDA_MAJOR ]]; then
    local d
    for d in cu13 cudnn nccl; do
      [[ -d $wheels/$d && $(realpath "$wheels/$d") != "$CUDA_ROOT" ]] && CUDA_SOURCES+=("$(realpath "$wheels/$d")")
    done
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
  (the wheels of requirements-gpu.txt are CUDA 13: they complete a CUDA 13 CUDA_HOME only; USE_CUDNN=0
  builds without cuDNN)"
  rm -rf "$CUDA_DIR"
  mv "$new" "$CUDA_DIR"
}
CUDA_ID=""
if [[ $CAFFE_GPU == 1 ]]; then
  find_cuda
  CUDA_ID="$CUDA_ROOT:$CUDA_MAJOR:${CUDA_SOURCES[*]}"
else
  CUDA_ARCH_BIN=""
fi

# The stamp names every input of the build, so a change of any of them rebuilds.
STAMP_TEXT="caffe $VERSION gpu=$CAFFE_GPU arch=$CUDA_ARCH_BIN cudnn=$USE_CUDNN cuda=$CUDA_ID python=$PYTHON script=$(sha256sum "$0" | cut -c1-16) patches=$PATCH_HASH"
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
