"""BLAS threads of this process, and the environment that sets them for a new process.

NumPy's OpenBLAS reads ``OPENBLAS_NUM_THREADS`` (and OpenMP builds
``OMP_NUM_THREADS``, MKL ``MKL_NUM_THREADS``) once, when NumPy is imported, so
a worker process must get them in its environment before it starts. This
module checks what a process actually got by asking the loaded OpenBLAS
(``openblas_get_num_threads``) through ``ctypes``, the way threadpoolctl does,
without depending on it.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["BLAS_VARIABLES", "blas_environment", "blas_threads", "usable_cores"]

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_SYMBOLS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)


def usable_cores():
    """The number of cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def blas_environment(threads):
    """``{variable: str(threads)}`` for every BLAS thread variable."""
    return {v: str(int(threads)) for v in BLAS_VARIABLES}


def blas_threads():
    """The OpenBLAS thread count of this process, or None when no OpenBLAS is loaded (or it cannot be asked).

    Imports NumPy first (the library is loaded with it).
    """
    import numpy  # noqa: F401  (loads the BLAS library)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
    except OSError:  # pragma: no cover - not Linux
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:  # pragma: no cover
            continue
        for sym in _SYMBOLS:
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return int(fn())
    return None
