"""The TF32 option: off by default, refused where it cannot apply, and on a GPU it really switches.

TF32 rounds the factors of a float32 product to 10 mantissa bits; the engine
never uses it unless a call asks (``tf32=True``). On the CPU the option can only
be refused, which these tests check with the error messages; the ``gpu`` cases
check on CuPy that products inside the scope are measurably less precise (so the
switch is not a no-op), that outside it and with ``tf32=False`` they are full
float32 even when CuPy was set to TF32 beforehand (what ``CUPY_TF32=1`` does),
and that CuPy's settings are restored afterwards.
"""

import inspect

import numpy
import pytest

from ebr_ref import backend
from ebr_ref.cli import main
from ebr_ref.grounding.ground import ground
from ebr_ref.grounding.ground_caption import ground_caption
from ebr_ref.models import sequential
from ebr_ref.models.caption import captioner
from tests.tiny_models import BLOCK


def _rnn(dtype="float32"):
    layers = BLOCK + [("lstm1", "lstm", {"hidden": 4}), ("fc8", "fc", {"out_features": 5})]
    return sequential(layers, (2, 6, 6), seed=1, dtype=numpy.dtype(dtype))


def _clip():
    return numpy.random.default_rng(4).uniform(0, 1, (3, 2, 6, 6)).astype(numpy.float32)


@pytest.mark.parametrize("fn", [ground, ground_caption])
def test_tf32_is_off_by_default(fn):
    assert inspect.signature(fn).parameters["tf32"].default is False


def test_tf32_on_numpy_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="needs a model on a GPU"):
        ground(_rnn(), _clip(), 2, tf32=True)


def test_tf32_on_float64_is_refused():
    with pytest.raises(ValueError, match="float32 only; this computation runs in float64"):
        ground(_rnn("float64"), _clip(), 2, tf32=True)


def test_tf32_refused_for_a_captioner_on_numpy():
    cap = captioner(BLOCK, ["a", "red", "square"], (2, 6, 6), embed=3, hidden=(4, 5), seed=3)
    with pytest.raises(ValueError, match="needs a model on a GPU"):
        ground_caption(cap.astype("float32"), _clip(), "red", caption="a red square", tf32=True)


@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_tf32_takes_only_booleans(bad):
    with pytest.raises(ValueError, match="tf32 must be True or False"):
        ground(_rnn(), _clip(), 2, tf32=bad)


def test_tf32_is_checked_before_the_clip():
    bad_clip = numpy.zeros((3, 5, 6, 6), dtype=numpy.float32)  # wrong channel count: refused later
    with pytest.raises(ValueError, match="needs a model on a GPU"):
        ground(_rnn(), bad_clip, 2, tf32=True)


def test_cli_tf32_on_cpu_is_one_line_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--tf32", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "--tf32: tf32=True needs a model on a GPU" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_ground_refuses_tf32_before_reading_the_video(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "no_such_video.mp4"  # never opened: the refusal comes first
    args = [
        "ground",
        str(missing),
        "--model",
        "synthetic_cnn_lstm",
        "--target",
        "0",
        "--tf32",
        "--out",
        str(out),
    ]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "--tf32: tf32=True needs a model on a GPU" in err and "no_such_video" not in err
    assert not out.exists()


# ---------------------------------------------------------------- GPU (CuPy) cases


def _cupy():
    if not backend.gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    if int(cupy.cuda.Device().compute_capability) < 80:
        pytest.skip("TF32 needs compute capability 8.0 or later")
    return cupy


def _products(cp):
    """Relative errors (2-D, batched) of float32 products against float64, on data with K = 4096."""
    rng = numpy.random.default_rng(7)
    A = rng.standard_normal((3, 256, 4096))
    B = rng.standard_normal((3, 4096, 256))
    exact = A @ B
    a, b = cp.asarray(A, dtype=cp.float32), cp.asarray(B, dtype=cp.float32)

    def err(got, ref):
        return float(numpy.linalg.norm(cp.asnumpy(got) - ref) / numpy.linalg.norm(ref))

    broadcast = cp.matmul(a[:1], b)  # (1, m, k) @ (3, k, n): CuPy's pointer-array batched path
    return (
        err(a[0] @ b[0], exact[0]),  # 2-D: cuBLAS gemmEx with CuPy's compute type
        err(cp.matmul(a, b), exact),  # strided batched: the handle's math mode
        err(broadcast, A[:1] @ B),
    )


def _settings(cp):
    import importlib

    linalg = importlib.import_module("cupy._core._routines_linalg")
    cublas = importlib.import_module("cupy_backends.cuda.libs.cublas")
    return linalg, cublas, cp.cuda.device.get_cublas_handle()


def _current(cp):
    """CuPy's float32 compute type and this thread's cuBLAS math mode, now."""
    linalg, cublas, handle = _settings(cp)
    return linalg.get_compute_type(numpy.float32), cublas.getMathMode(handle)


@pytest.mark.gpu
def test_gpu_tf32_scope_switches_products_and_restores():
    cp = _cupy()
    before = _current(cp)
    with backend.matmul_precision(cp, numpy.float32, tf32=False):
        full = _products(cp)
    with backend.matmul_precision(cp, numpy.float32, tf32=True):
        fast = _products(cp)
    assert max(full) < 1e-5, full  # float32 accumulation: ~1e-7 relative
    assert min(fast) > 1e-5, fast  # TF32: ~1e-4 and more, in the 2-D and the batched product
    assert _current(cp) == before


@pytest.mark.gpu
def test_gpu_tf32_false_overrides_a_process_wide_tf32():
    cp = _cupy()
    linalg, cublas, handle = _settings(cp)
    saved = _current(cp)
    linalg.set_compute_type(numpy.float32, linalg.COMPUTE_TYPE_TF32)  # what CUPY_TF32=1 does
    cublas.setMathMode(handle, 3)  # CUBLAS_TF32_TENSOR_OP_MATH
    try:
        assert min(_products(cp)) > 1e-5  # the process-wide setting is in force
        with backend.matmul_precision(cp, numpy.float32, tf32=False):
            assert max(_products(cp)) < 1e-5  # the engine's scope runs full float32 regardless
        assert linalg.get_compute_type(numpy.float32) == linalg.COMPUTE_TYPE_TF32  # restored
    finally:
        linalg.set_compute_type(numpy.float32, saved[0])
        cublas.setMathMode(handle, saved[1])


@pytest.mark.gpu
def test_gpu_ground_tf32_changes_maps_only_within_tf32_rounding():
    _cupy()
    model = sequential(
        [
            ("conv1", "conv", {"out_channels": 64, "kernel": 3, "padding": 1}),
            ("relu1", "relu"),
            ("conv2", "conv", {"out_channels": 64, "kernel": 3, "padding": 1}),
            ("relu2", "relu"),
            ("pool2", "maxpool", {"kernel": 2}),
            ("flat", "flatten"),
            ("fc7", "fc", {"out_features": 256}),
            ("relu7", "relu"),
            ("lstm1", "lstm", {"hidden": 32}),
            ("fc8", "fc", {"out_features": 5}),
        ],
        (64, 32, 32),
        seed=5,
        dtype=numpy.float32,
    ).to("gpu")
    clip = numpy.random.default_rng(6).uniform(0, 1, (4, 64, 32, 32)).astype(numpy.float32)
    ref = ground(model.astype("float64"), clip.astype(numpy.float64), 2, layer="conv1").maps
    full = ground(model, clip, 2, layer="conv1").maps
    tf = ground(model, clip, 2, layer="conv1", tf32=True).maps

    def rel(a):
        return float(numpy.linalg.norm(a - ref) / numpy.linalg.norm(ref))

    assert rel(full) < 1e-4, rel(full)
    assert rel(tf) > rel(full)  # the option did change the products
    assert rel(tf) < 5e-2, rel(tf)


@pytest.mark.gpu
def test_gpu_settings_are_restored_when_the_call_raises():
    cp = _cupy()
    before = _current(cp)
    with pytest.raises(KeyError):
        with backend.matmul_precision(cp, numpy.float32, tf32=True):
            raise KeyError("inside")
    assert _current(cp) == before


@pytest.mark.gpu
def test_gpu_scopes_of_the_same_setting_nest_and_different_ones_are_refused():
    cp = _cupy()
    before = _current(cp)
    with backend.matmul_precision(cp, numpy.float32, tf32=True):
        with backend.matmul_precision(cp, numpy.float32, tf32=True):
            assert min(_products(cp)) > 1e-5
        assert min(_products(cp)) > 1e-5  # the inner scope's exit kept the outer one's setting
        with pytest.raises(RuntimeError, match="CuPy's float32 setting is one per process"):
            with backend.matmul_precision(cp, numpy.float32, tf32=False):
                pass
        assert min(_products(cp)) > 1e-5  # the refused scope changed nothing
    assert _current(cp) == before


class _ComputeTypeSetting:
    """Stands in for CuPy's per-process float32 compute type (the GPU cases use the real one)."""

    COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_TF32 = 1, 7

    def __init__(self, value):
        self.value = value

    def get_compute_type(self, dtype):
        return self.value

    def set_compute_type(self, dtype, value):
        self.value = value


def test_process_setting_is_shared_by_scopes_of_one_kind_and_restored_by_the_last():
    setting = _ComputeTypeSetting("before")
    backend._enter_process_setting(setting, True)  # thread A
    backend._enter_process_setting(setting, True)  # thread B, the same request: joins
    assert setting.value == setting.COMPUTE_TYPE_TF32
    backend._leave_process_setting(setting)  # A leaves first: B still runs in TF32
    assert setting.value == setting.COMPUTE_TYPE_TF32
    backend._leave_process_setting(setting)
    assert setting.value == "before"


def test_process_setting_refuses_an_overlapping_scope_of_the_other_kind():
    setting = _ComputeTypeSetting("before")
    backend._enter_process_setting(setting, False)
    try:
        assert setting.value == setting.COMPUTE_TYPE_DEFAULT
        with pytest.raises(RuntimeError, match="one per process"):
            backend._enter_process_setting(setting, True)
        assert setting.value == setting.COMPUTE_TYPE_DEFAULT  # unchanged by the refusal
    finally:
        backend._leave_process_setting(setting)
    assert setting.value == "before"
    backend._enter_process_setting(setting, True)  # after the last one left, the other kind may start
    backend._leave_process_setting(setting)
    assert setting.value == "before"
