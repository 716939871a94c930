#!/usr/bin/env bash
# Build the project's images and check them, without Docker Hub and without a Docker daemon:
# podman/buildah from Debian 12, a base debootstrapped here and imported as debian:12, then in each
# image `caffe --version`, `import caffe` and a forward pass of the Fast-Model in CPU mode.
#
#   docker/build_images.sh [cpu] [gpu] [titan]      (default: all three; run as root on Debian 12)
#
#   cpu    docker/Dockerfile.cpu    -> mtdnn-cpu
#   gpu    docker/Dockerfile.gpu    -> mtdnn-gpu    (CUDA 13 route; CUDA_ARCH_BIN=$GPU_ARCH)
#   titan  docker/Dockerfile.titan  -> mtdnn-titan  (CUDA 11.8 route; CUDA_ARCH_BIN=$TITAN_ARCH)
#
# Environment:
#   GPU_ARCH, TITAN_ARCH  the architectures of the GPU images (default 90 and 61, one each, to keep the
#                         build short; empty: every architecture of the route, several times longer)
#   CA_BUNDLE             a CA bundle pip inside the build must trust (default: this machine's
#                         /etc/ssl/certs/ca-certificates.crt): mounted read-only at build time with a
#                         pip.conf naming it, never written into an image
#   CAFFE_TESTS           Caffe's gtests to build and run (CPU) inside every image's build (a list of
#                         layer types as make's CAFFE_GTESTS; `make ci-images` passes it); default none
#   IMAGES_CACHE          0: a cold build as on a fresh CI machine (--no-cache --layers=false: no layer
#                         reused, none left behind); default 1: podman's layer cache
#   IMAGES_CHECK_ONLY     1: build nothing, run the checks in the images already built (mtdnn-<image>)
#   IMAGES_WORK           scratch folder (default work/images): the base's root file system, the
#                         build logs and report.tsv (image, seconds to build, size, checks)
# With Docker Hub and a Docker daemon, `docker build -f docker/Dockerfile.cpu -t mtdnn-cpu .` (README
# "Docker") builds the same images. Containers are checked with `buildah run --isolation chroot`,
# which needs no daemon and runs where `podman run` cannot (no setrlimit in some sandboxes).
# No GPU is used: the GPU images are checked in CPU mode (a GPU build runs there).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(realpath -m "${IMAGES_WORK:-work/images}")
GPU_ARCH=${GPU_ARCH-90}
TITAN_ARCH=${TITAN_ARCH-61}
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
CACHE=()
[[ ${IMAGES_CACHE:-1} == 0 ]] && CACHE=(--no-cache --layers=false)
IMAGES=("$@")
((${#IMAGES[@]})) || IMAGES=(cpu gpu titan)
die() { echo "[build_images] ERROR: $*" >&2; exit 1; }
for i in "${IMAGES[@]}"; do [[ $i == cpu || $i == gpu || $i == titan ]] || die "unknown image '$i' (cpu, gpu, titan)"; done
mkdir -p "$WORK"

missing=()
for tool in podman buildah debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: apt-get install podman buildah debootstrap (as root)"
  echo "[build_images] installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman buildah debootstrap
fi

if ! podman image exists debian:12; then
  echo "[build_images] debian:12: debootstrap --variant=minbase bookworm, imported with podman"
  start=$(date +%s)
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  tar -C "$WORK/rootfs" -c . | podman import --change 'CMD ["bash"]' - debian:12 >/dev/null
  rm -rf "$WORK/rootfs"
  echo "[build_images] debian:12 imported in $(($(date +%s) - start)) s"
fi

MOUNTS=()
if [[ -n $CA_BUNDLE ]]; then
  [[ -r $CA_BUNDLE ]] || die "CA_BUNDLE=$CA_BUNDLE cannot be read (CA_BUNDLE= builds without one)"
  printf '[global]\ncert = /run/mtdnn-build/ca.crt\n' >"$WORK/pip.conf"
  MOUNTS=(-v "$(realpath "$CA_BUNDLE"):/run/mtdnn-build/ca.crt:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro")
fi

# The checks, run inside an image: the caffe tool, pycaffe, and the Fast-Model forward on the CPU.
FORWARD='import caffe, numpy as np
caffe.set_mode_cpu()
net = caffe.Net("models/fast/deploy.prototxt", caffe.TEST)
for layer in net.layers:  # untrained: BatchNorm statistics of variance 1 (all zero gives NaN)
    if layer.type == "BatchNorm":
        layer.blobs[1].data[...] = 1
        layer.blobs[2].data[...] = 1
net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal(net.blobs["data"].data.shape)
out = net.forward()
blob = net.blobs["fc5"].data
assert np.isfinite(blob).all() and blob.std() > 0, "fc5 is not a usable feature"
print("Fast-Model forward (CPU mode): fc5", blob.shape, "std %.3g" % blob.std())'
check_image() {
  local image=$1 ctr rc=0
  ctr=$(buildah from --pull=never "$image")
  buildah run --isolation chroot "$ctr" -- /opt/mtdnn/.venv/bin/caffe --version || rc=1
  buildah run --isolation chroot "$ctr" -- /opt/mtdnn/.venv/bin/python -c \
    'import caffe; print("import caffe:", caffe.__file__)' || rc=1
  buildah run --isolation chroot "$ctr" -- env GLOG_minloglevel=2 /opt/mtdnn/.venv/bin/python -c "$FORWARD" || rc=1
  # The start-up convention: the image's PYTHONPATH (not the working folder, not the venv's .pth)
  # makes the repository importable by any Python of the image, and a tool runs from any folder.
  buildah run --isolation chroot --workingdir / "$ctr" -- /usr/bin/python3 -c \
    'import mtdnn; print("import mtdnn from / by /usr/bin/python3:", mtdnn.__file__)' || rc=1
  buildah run --isolation chroot --workingdir / "$ctr" -- env GLOG_minloglevel=2 /opt/mtdnn/.venv/bin/python \
    /opt/mtdnn/tools/net_summary.py /opt/mtdnn/models/fast/deploy.prototxt --brief || rc=1
  # No driver library of its own: the NVIDIA Container Toolkit mounts the host's (a Debian libcuda1
  # in the image would shadow it).
  buildah run --isolation chroot "$ctr" -- sh -c '! ldconfig -p | grep -E "libcuda\.so\.1|libnvidia-ml\.so\.1" &&
    ! find / -xdev \( -name "libcuda.so.1*" -o -name "libnvidia-ml.so.1*" \) -print | grep . &&
    echo "no driver library (libcuda.so.1, libnvidia-ml.so.1) in the image"' || rc=1
  buildah rm "$ctr" >/dev/null
  return $rc
}

printf 'image\tbuild_seconds\tsize_bytes\tchecks\n' >"$WORK/report.tsv.new"
failed=()
for i in "${IMAGES[@]}"; do
  if [[ ${IMAGES_CHECK_ONLY:-0} == 1 ]]; then
    if check_image "mtdnn-$i"; then result=passed; else result=failed; failed+=("$i (checks)"); fi
    printf '%s\t\t%s\t%s\n' "$i" "$(podman image inspect --format '{{.Size}}' "mtdnn-$i")" "$result" >>"$WORK/report.tsv.new"
    continue
  fi
  args=()
  [[ -z ${CAFFE_TESTS:-} ]] || args=(--build-arg "CAFFE_TESTS=$CAFFE_TESTS")
  podman image rm -f "mtdnn-$i" >/dev/null 2>&1 || true # a failed build must not find the last one
  case $i in
    cpu) file=docker/Dockerfile.cpu ;;
    gpu) file=docker/Dockerfile.gpu; args+=(--build-arg "CUDA_ARCH_BIN=$GPU_ARCH") ;;
    titan) file=docker/Dockerfile.titan; args+=(--build-arg "CUDA_ARCH_BIN=$TITAN_ARCH") ;;
  esac
  echo "[build_images] mtdnn-$i from $file (log: $WORK/$i.log)"
  start=$(date +%s)
  if ! podman build --isolation chroot --pull=never "${CACHE[@]}" "${MOUNTS[@]}" "${args[@]}" -f "$file" -t "mtdnn-$i" . \
    >"$WORK/$i.log" 2>&1 || ! podman image exists "mtdnn-$i"; then
    tail -30 "$WORK/$i.log"
    printf '%s\t%s\t\tbuild failed\n' "$i" "$(($(date +%s) - start))" >>"$WORK/report.tsv.new"
    failed+=("$i (build)")
    continue
  fi
  seconds=$(($(date +%s) - start))
  size=$(podman image inspect --format '{{.Size}}' "mtdnn-$i")
  echo "[build_images] mtdnn-$i built in $seconds s, $((size / 1000000)) MB; checking it"
  if check_image "mtdnn-$i"; then result=passed; else result=failed; failed+=("$i (checks)"); fi
  printf '%s\t%s\t%s\t%s\n' "$i" "$seconds" "$size" "$result" >>"$WORK/report.tsv.new"
done
mv "$WORK/report.tsv.new" "$WORK/report.tsv"
column -t -s $'\t' "$WORK/report.tsv"
((${#failed[@]} == 0)) || die "failed: ${failed[*]} (logs in $WORK)"
echo "[build_images] every image passed its checks"
