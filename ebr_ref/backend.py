"""The array backend: the only module of ebr_ref that names CuPy.

Every kernel is written once against an array module ``xp`` that is either
``numpy`` or ``cupy``. Public functions infer it from their array arguments
with :func:`get_xp`; private helpers receive it as the keyword ``xp``.

CuPy is imported lazily, on the first call that needs it, so that
``import ebr_ref`` works (and stays fast) on machines without a GPU.

Differences between NumPy and CuPy that the kernels design around (see
CuPy's "Differences between CuPy and NumPy" page): integer-array assignment
with duplicate indices is undefined in CuPy, out-of-bounds indices wrap, and
reductions return 0-d arrays. The kernels therefore use slicing and one-hot
masks instead of scatter, and convert reductions with :func:`to_scalar` only at
the API edge.
"""

from __future__ import annotations

import importlib
import sys

import numpy

__all__ = [
    "get_xp",
    "cupy_available",
    "gpu_available",
    "to_numpy",
    "to_device",
    "device_of",
    "to_scalar",
]

_cupy = None  # the imported module, once imported
_cupy_import_failed = False


def _import_cupy():
    """Import CuPy once; return the module or None when it is not installed."""
    global _cupy, _cupy_import_failed
    if _cupy is None and not _cupy_import_failed:
        try:
            _cupy = importlib.import_module("cupy")
        except ImportError:
            _cupy_import_failed = True
    return _cupy


def _loaded_cupy():
    """The CuPy module if something already imported it, else None.

    A CuPy array can only exist when CuPy is imported, so type checks never
    need to import it.
    """
    return _cupy if _cupy is not None else sys.modules.get("cupy")


def cupy_available() -> bool:
    """True when CuPy can be imported (it may still find no device)."""
    return _import_cupy() is not None


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    cp = _import_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CUDA driver missing or broken: no usable device
        return False


def _module_of(a):
    cp = _loaded_cupy()
    if cp is not None and isinstance(a, cp.ndarray):
        return cp
    if isinstance(a, (numpy.ndarray, numpy.generic)):
        return numpy
    return None


def get_xp(*arrays):
    """Return the array module (``numpy`` or ``cupy``) of the given arrays.

    Parameters
    ----------
    *arrays : array or None
        Arrays of one backend. ``None`` entries and Python scalars are ignored.

    Returns
    -------
    module
        ``numpy`` or ``cupy``; ``numpy`` when no array is given.

    Raises
    ------
    TypeError
        When NumPy and CuPy arrays are mixed in one call.
    """
    found = None
    for a in arrays:
        if a is None:
            continue
        mod = _module_of(a)
        if mod is None:
            continue
        if found is None:
            found = mod
        elif mod is not found:
            raise TypeError(
                "arrays from different backends were mixed in one call "
                "(NumPy and CuPy); move them to one device first with "
                "ebr_ref.backend.to_device"
            )
    return numpy if found is None else found


def to_numpy(a):
    """Return ``a`` as a NumPy array (a device-to-host copy for CuPy arrays)."""
    cp = _loaded_cupy()
    if cp is not None and isinstance(a, cp.ndarray):
        return cp.asnumpy(a)
    return numpy.asarray(a)


def to_device(a, device: str):
    """Move an array to ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy).

    Raises
    ------
    ValueError
        For a device name other than ``"cpu"`` or ``"gpu"``.
    RuntimeError
        When ``"gpu"`` is asked for and CuPy is not installed.
    """
    if device == "cpu":
        return to_numpy(a)
    if device == "gpu":
        cp = _import_cupy()
        if cp is None:
            raise RuntimeError(
                "device 'gpu' needs CuPy; install the 'gpu' extra (pip install 'ebr_ref[gpu]')"
            )
        return cp.asarray(a)
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'gpu'")


def device_of(a) -> str:
    """``"gpu"`` for a CuPy array, ``"cpu"`` otherwise."""
    return "gpu" if get_xp(a) is not numpy else "cpu"


def to_scalar(a) -> float:
    """A Python float from a 0-d NumPy or CuPy array (for the API edge)."""
    return float(to_numpy(a))
