"""Shared fixtures: the array backend (NumPy, CuPy) and the dtype under test."""

import numpy
import pytest

from ebr_ref import backend


def _cupy_or_skip():
    if not backend.gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test; the CuPy case skips without a GPU."""
    if request.param == "numpy":
        return numpy
    return _cupy_or_skip()


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    return numpy.dtype(request.param)


# Tolerances per dtype for results compared against an independent float64 oracle
# (relative, normwise). float32 results are compared after casting the oracle.
RTOL = {numpy.dtype("float64"): 1e-10, numpy.dtype("float32"): 2e-5}


def rel_err(a, b):
    """Normwise relative error ||a - b|| / ||b|| (0 when both are 0)."""
    a = numpy.asarray(backend.to_numpy(a), dtype=numpy.float64)
    b = numpy.asarray(backend.to_numpy(b), dtype=numpy.float64)
    nb = numpy.linalg.norm(b)
    d = numpy.linalg.norm(a - b)
    return d if nb == 0 else d / nb
