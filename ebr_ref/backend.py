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

import contextlib
import importlib
import sys
import threading

import numpy

__all__ = [
    "get_xp",
    "cupy_available",
    "gpu_available",
    "to_numpy",
    "to_device",
    "device_of",
    "to_scalar",
    "free_device_bytes",
    "on_host",
    "check_matmul_precision",
    "matmul_precision",
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


def on_host(xp) -> bool:
    """True for NumPy (host memory and CPU caches), False for CuPy (a GPU).

    For kernels whose working-set sizes are a property of the device (a CPU's
    last-level cache against a GPU's memory), not a different computation.
    """
    return xp is numpy


def free_device_bytes(xp):
    """Bytes a new CuPy allocation can still take on the current GPU; None for NumPy (host memory).

    The driver's free memory plus what CuPy's default memory pool holds unused
    (freed arrays it keeps for reuse), and no more than the pool's limit leaves
    (``set_limit``, ``CUPY_GPU_MEMORY_LIMIT``) when one is set.
    """
    if xp is numpy:
        return None
    pool = xp.get_default_memory_pool()
    free, _ = xp.cuda.runtime.memGetInfo()
    available = int(free) + int(pool.free_bytes())
    limit = int(pool.get_limit())
    return available if limit == 0 else max(0, min(available, limit - int(pool.used_bytes())))


# cuBLAS's cublasMath_t values (cublas_api.h): full float32, and TF32 tensor cores allowed.
_CUBLAS_DEFAULT_MATH = 0
_CUBLAS_TF32_TENSOR_OP_MATH = 3

# CuPy's float32 compute type is one setting per process: the scopes of all threads share it.
_precision_lock = threading.Lock()
_precision = {"tf32": None, "depth": 0, "before": None}  # the shared setting while scopes are open


def check_matmul_precision(xp, dtype, tf32):
    """Validate a ``tf32`` request for arrays of module ``xp`` and ``dtype``; return it as a bool.

    Raises
    ------
    ValueError
        For ``tf32`` other than True or False; and for ``tf32=True`` on NumPy (no
        such mode on a CPU), for a dtype other than float32, or on a GPU older than
        compute capability 8.0.
    """
    if not isinstance(tf32, (bool, numpy.bool_)):
        raise ValueError(f"tf32 must be True or False, got {tf32!r}")
    tf32 = bool(tf32)
    if tf32 and numpy.dtype(dtype) != numpy.float32:
        raise ValueError(f"tf32=True applies to float32 only; this computation runs in {numpy.dtype(dtype)}")
    if tf32 and xp is numpy:
        raise ValueError(
            "tf32=True needs a model on a GPU (CuPy): NumPy's float32 products have no TF32 mode"
        )
    if tf32 and int(xp.cuda.Device().compute_capability) < 80:
        raise ValueError("tf32=True needs a GPU of compute capability 8.0 or later")
    return tf32


@contextlib.contextmanager
def matmul_precision(xp, dtype, *, tf32):
    """Scope in which float32 matrix products run in full float32 (``tf32=False``) or in TF32.

    TF32 (NVIDIA GPUs of compute capability 8.0 and later) rounds the factors of
    a float32 product to 10 mantissa bits on the tensor cores, a relative error of
    about 1e-3 per product instead of about 1e-7. The engine never uses it unless a
    call asks for it: with ``tf32=False`` the scope sets full float32 even when
    ``CUPY_TF32=1`` is in the environment (CuPy's own switch, read once per process).

    On CuPy the scope sets both of CuPy's controls and restores them on exit (also
    when the body raises): the compute type of its float32 ``matmul``/``dot`` (the
    private ``cupy._core._routines_linalg.set_compute_type``, the switch ``CUPY_TF32``
    feeds), which is one setting per process, and the math mode of the current
    thread's cuBLAS handle, which its batched products obey. Scopes may nest and may
    be open in several threads at once as long as they ask for the same ``tf32``;
    the process setting is restored when the last one closes. Scopes of different
    ``tf32`` open at the same time (two threads, or a call inside another) would change
    each other's products, so the second is refused (RuntimeError). A CuPy build without these
    controls (ROCm) runs ``tf32=False`` scopes unchanged and refuses ``tf32=True``.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``, the arrays' module (:func:`get_xp`).
    dtype : dtype
        The computation's dtype; TF32 applies to float32 only.
    tf32 : bool

    Raises
    ------
    ValueError
        As :func:`check_matmul_precision`.
    RuntimeError
        When another thread holds a scope of the other ``tf32`` open.
    """
    tf32 = check_matmul_precision(xp, dtype, tf32)
    if xp is numpy:
        yield
        return
    controls = _cupy_precision_controls(xp)
    if controls is None:  # no cuBLAS math mode here (a ROCm build): nothing to set, and no TF32
        if tf32:
            raise ValueError("tf32=True: this CuPy build has no TF32 control (cuBLAS math mode)")
        yield
        return
    linalg, cublas, handle = controls
    _enter_process_setting(linalg, tf32)
    try:
        mode_before = cublas.getMathMode(handle)
        cublas.setMathMode(handle, _CUBLAS_TF32_TENSOR_OP_MATH if tf32 else _CUBLAS_DEFAULT_MATH)
        try:
            yield
        finally:
            cublas.setMathMode(handle, mode_before)
    finally:
        _leave_process_setting(linalg)


def _cupy_precision_controls(xp):
    """``(linalg module, cublas module, this thread's handle)``, or None where CuPy lacks them."""
    try:
        linalg = importlib.import_module("cupy._core._routines_linalg")
        cublas = importlib.import_module("cupy_backends.cuda.libs.cublas")
        handle = xp.cuda.device.get_cublas_handle()
        cublas.getMathMode(handle)  # ROCm's hipBLAS answers "not supported"
        linalg.get_compute_type, linalg.set_compute_type, linalg.COMPUTE_TYPE_TF32  # noqa: B018
    except (ImportError, AttributeError, RuntimeError):  # CUBLASError is a RuntimeError
        return None
    return linalg, cublas, handle


def _enter_process_setting(linalg, tf32):
    """Set CuPy's float32 compute type for a new scope (or join the open ones that asked the same)."""
    with _precision_lock:
        if _precision["depth"] and _precision["tf32"] != tf32:
            raise RuntimeError(
                f"a call with tf32={tf32} while one with tf32={_precision['tf32']} runs in this process (in "
                "another thread, or enclosing this one); CuPy's float32 setting is one per process: run them "
                "one at a time"
            )
        if _precision["depth"] == 0:
            _precision["before"] = linalg.get_compute_type(numpy.float32)
            linalg.set_compute_type(
                numpy.float32, linalg.COMPUTE_TYPE_TF32 if tf32 else linalg.COMPUTE_TYPE_DEFAULT
            )
            _precision["tf32"] = tf32
        _precision["depth"] += 1


def _leave_process_setting(linalg):
    """Close a scope; the last one restores CuPy's float32 compute type."""
    with _precision_lock:
        _precision["depth"] -= 1
        if _precision["depth"] == 0:
            linalg.set_compute_type(numpy.float32, _precision["before"])
            _precision["tf32"] = _precision["before"] = None
