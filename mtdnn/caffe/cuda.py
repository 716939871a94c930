"""The one CUDA probe: whether this Caffe was built with CUDA.

A CUDA build of Caffe links cuBLAS and the CUDA runtime dynamically; a CPU-only build
(``CPU_ONLY``) links neither. :func:`caffe_has_cuda` asks the pycaffe loaded in this process
(its mapped libraries), :func:`binary_has_cuda` a `caffe` binary (``ldd`` lists libcaffe's
dependencies too); both read the same library names (:func:`links_cuda`).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from . import import_pycaffe

_CUDA_LIBRARY = re.compile(r"/lib(cublas|cudart)[^/\s]*\.so")


def links_cuda(library_list: str) -> bool:
    """Whether a list of loaded libraries (``ldd``'s output, /proc/PID/maps) names CUDA's."""
    return _CUDA_LIBRARY.search(library_list) is not None


def caffe_has_cuda() -> bool:
    """Whether the installed pycaffe/libcaffe was built with CUDA (importing pycaffe maps
    ``libcublas`` into this process when it was). The ``caffe`` tool beside the venv's Python
    is built from the same tree by ``make setup``, so the answer holds for it too."""
    import_pycaffe()
    return links_cuda(Path("/proc/self/maps").read_text())


def binary_has_cuda(binary: str) -> bool | None:
    """Whether the caffe binary was built with CUDA; None when that cannot be told (no
    ``ldd``, a wrapper script)."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if "=>" not in out:
        return None
    return links_cuda(out)
