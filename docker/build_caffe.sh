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
# Environment: CAFFE_GPU=1 builds with CUDA and NCCL for CUDA_ARCH_BIN (space separated);
# CAFFE_WORK is the scratch folder (default: PREFIX.build); JOBS the make parallelism.
#
# Nothing half-built is left where later commands look: Caffe is installed into a staging
# folder, checked (`caffe --version`, `import caffe`), and only then moved to PREFIX with a
# stamp file. A second run with the same inputs returns in well under a second.
set -euo pipefail

PYTHON=$(realpath -s "${1:?usage: build_caffe.sh PYTHON PREFIX}")
PREFIX=$(realpath -m "${2:?usage: build_caffe.sh PYTHON PREFIX}")
CAFFE_GPU=${CAFFE_GPU:-0}
# Maxwell (TITAN X), Pascal (TITAN Xp, GTX 10x0), Volta (TITAN V), Turing (TITAN RTX), Ampere, Ada, Hopper.
CUDA_ARCH_BIN=${CUDA_ARCH_BIN:-"52 60 61 70 75 80 86 89 90"}
WORK=${CAFFE_WORK:-$PREFIX.build}
JOBS=${JOBS:-$(nproc)}

VERSION=1.0.0+git20180821.99bd997-8
DSC=caffe_$VERSION.dsc
DSC_SHA256=c492f4893fc1ba1fb514b2d9b4763bc78dc93571ea24adc6e604eccbb93cdd64

step() { printf '\n[build_caffe] %s\n' "$*"; CURRENT_STEP=$*; }
CURRENT_STEP=start
trap 'echo "[build_caffe] FAILED during: $CURRENT_STEP (nothing was installed into $PREFIX; log above)" >&2' ERR

# The stamp names every input of the build, so a change of any of them rebuilds.
STAMP_TEXT="caffe $VERSION gpu=$CAFFE_GPU arch=$CUDA_ARCH_BIN python=$PYTHON script=$(sha256sum "$0" | cut -c1-16)"
if [[ -f $PREFIX/.stamp && $(cat "$PREFIX/.stamp") == "$STAMP_TEXT" ]]; then
  echo "[build_caffe] Caffe already installed in $PREFIX"
  exit 0
fi

step "checking build dependencies"
DEPS=(cmake g++ make dpkg-dev xz-utils libboost-dev libboost-filesystem-dev libboost-system-dev
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
if [[ ! -f src/.patched ]]; then
  rm -rf src
  dpkg-source --no-copy -x "$DSC" src >/dev/null # checks the tarballs' sizes and hashes against the .dsc
  step "patching for protobuf >= 3.21 (SetTotalBytesLimit takes one argument)"
  sed -i 's/coded_input->SetTotalBytesLimit(kProtoReadBytesLimit, 536870912);/coded_input->SetTotalBytesLimit(kProtoReadBytesLimit);/' \
    src/src/caffe/util/io.cpp
  grep -q 'SetTotalBytesLimit(kProtoReadBytesLimit);' src/src/caffe/util/io.cpp
  touch src/.patched
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
  CMAKE_ARGS+=(-DCPU_ONLY=OFF -DUSE_CUDNN=OFF -DUSE_NCCL=ON -DCUDA_ARCH_NAME=Manual
    -DCUDA_ARCH_BIN="$CUDA_ARCH_BIN" -DCUDA_ARCH_PTX="${CUDA_ARCH_BIN##* }")
else
  CMAKE_ARGS+=(-DCPU_ONLY=ON)
fi
cmake -S src -B build "${CMAKE_ARGS[@]}" >cmake.log || { tail -40 cmake.log; false; }

step "compiling with $JOBS jobs"
make -C build -j"$JOBS" --no-print-directory caffe caffe.bin pycaffe 2>&1 | grep -E 'error|Error|Built target' || true
make -C build -j"$JOBS" --no-print-directory install DESTDIR="$DESTDIR" >install.log 2>&1 || { tail -40 install.log; false; }

step "checking the staged build"
LD_LIBRARY_PATH=$STAGE/lib "$STAGE/bin/caffe" --version 2>&1 | grep -q 'caffe version'
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
echo "[build_caffe] done"
