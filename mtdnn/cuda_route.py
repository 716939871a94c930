"""Which CUDA route builds Caffe for the GPUs of this machine (docs/gpu.md, docker/build_caffe.sh).

Two routes (``CAFFE_CUDA``):

- ``13``: CUDA 13 + cuDNN 9.13 + NCCL from NVIDIA's wheels (requirements-gpu.txt). CUDA 13 compiles
  for compute capability 7.5 (Turing) and newer only; NVIDIA driver R580 or newer.
- ``11.8``: the TITAN route, Debian 12's CUDA 11.8 with g++-11 + cuDNN 9.10.2 + NCCL 2.21.5 for
  CUDA 11 (requirements-gpu-cu11.txt): compute capability 5.2 (Maxwell: TITAN X) to 9.0 (Hopper),
  with PTX for newer ones; NVIDIA driver R535 to R580 for Maxwell to Volta (R580 is the last branch
  that supports them). cuDNN 9.10.2 is the last cuDNN with code for sm_50/60/61/70.

Standard library only: ``make setup`` runs it with the system's python3 before the venv exists.
"""
from __future__ import annotations

import subprocess
import sys

ROUTE_CUDA13 = "13"
ROUTE_TITAN = "11.8"
# The oldest capability each route compiles for; CUDA 13's nvcc dropped Maxwell, Pascal and Volta.
CUDA13_MIN = (7, 5)
TITAN_MIN = (5, 2)


class NoRoute(ValueError):
    """No route builds for these GPUs (the message says why and what to do)."""


def parse_capabilities(text: str) -> list[tuple[int, int]]:
    """``nvidia-smi --query-gpu=compute_cap --format=csv,noheader`` output -> [(major, minor), ...]."""
    caps = []
    for line in text.split():
        major, dot, minor = line.strip().partition(".")
        if not dot or not major.isdigit() or not minor.isdigit():
            raise NoRoute(f"nvidia-smi reported a compute capability {line!r}, not MAJOR.MINOR; "
                          "set CAFFE_CUDA=13 or CAFFE_CUDA=11.8 (docs/gpu.md)")
        caps.append((int(major), int(minor)))
    return caps


def choose_route(capabilities: str) -> tuple[str, str]:
    """The route (``"13"`` or ``"11.8"``) for the GPUs whose capabilities nvidia-smi listed, and why.

    Raises NoRoute for an empty list or a GPU older than Maxwell's 5.2.
    """
    caps = parse_capabilities(capabilities)
    if not caps:
        raise NoRoute("nvidia-smi listed no GPU; set CAFFE_CUDA=13 or CAFFE_CUDA=11.8 (docs/gpu.md)")
    shown = ", ".join(f"{a}.{b}" for a, b in caps)
    oldest = min(caps)
    if oldest < TITAN_MIN:
        raise NoRoute(f"compute capability {oldest[0]}.{oldest[1]} (of {shown}) is older than Maxwell's "
                      "5.2, the oldest either route builds for (cuDNN 9 needs 5.0; for a 5.0 card set "
                      "CAFFE_CUDA=11.8 CUDA_ARCH_BIN=50)")
    if oldest < CUDA13_MIN:
        why = (f"compute capability {shown}: CUDA 13 compiles for 7.5 and newer only, so the TITAN "
               "route (Debian 12's CUDA 11.8, cuDNN 9.10.2, NCCL 2.21.5; driver R535 to R580)")
        if max(caps) >= (10, 0):
            why += (f"; the {max(caps)[0]}.{max(caps)[1]} GPU would run Caffe's kernels from their "
                    "compute_90 PTX, untested with cuDNN 9.10 (or build the CUDA 13 route separately for it)")
        return ROUTE_TITAN, why
    return ROUTE_CUDA13, (f"compute capability {shown}: 7.5 or newer, so the CUDA 13 route "
                          "(NVIDIA's wheels, cuDNN 9.13; driver R580 or newer)")


def main(argv: list[str]) -> int:
    """Print the route for this machine's GPUs on stdout and why on stderr (for the Makefile).

    No GPU (nvidia-smi missing or failing): the CUDA 13 route, which needs none to compile.
    """
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        smi = None
    if smi is None or smi.returncode != 0:
        print("[setup] no NVIDIA GPU answered nvidia-smi: CAFFE_CUDA=13 (the CUDA 13 route; "
              "CAFFE_CUDA=11.8 builds the TITAN route)", file=sys.stderr)
        print(ROUTE_CUDA13)
        return 0
    try:
        route, why = choose_route(smi.stdout)
    except NoRoute as e:
        print(f"[setup] ERROR: {e}", file=sys.stderr)
        return 2
    print(f"[setup] CAFFE_CUDA={route}: {why}. Set CAFFE_CUDA to choose another.", file=sys.stderr)
    print(route)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
