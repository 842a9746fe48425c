import subprocess
import sys

import numpy
import pytest

from ebr_ref import backend
from ebr_ref.layers import linear_forward


def test_import_does_not_import_cupy():
    code = "import sys, ebr_ref, ebr_ref.layers, ebr_ref.backend; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_get_xp_numpy_and_none():
    a = numpy.zeros(3)
    assert backend.get_xp(a, None, 1.0) is numpy
    assert backend.get_xp() is numpy


@pytest.mark.gpu
def test_mixed_backends_raise_type_error():
    if not backend.gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    x = numpy.ones((2, 3))
    W = cupy.ones((4, 3))
    with pytest.raises(TypeError, match="different backends"):
        linear_forward(x, W)


def test_to_device_roundtrip_cpu_and_errors():
    a = numpy.arange(4.0)
    assert backend.to_device(a, "cpu") is not None
    numpy.testing.assert_array_equal(backend.to_numpy(a), a)
    assert backend.device_of(a) == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        backend.to_device(a, "tpu")
    if not backend.cupy_available():
        with pytest.raises(RuntimeError, match="needs CuPy"):
            backend.to_device(a, "gpu")


def test_to_device_gpu_roundtrip(xp):
    a = numpy.linspace(0, 1, 7)
    d = backend.to_device(a, "gpu" if xp is not numpy else "cpu")
    assert backend.get_xp(d) is xp
    numpy.testing.assert_array_equal(backend.to_numpy(d), a)
