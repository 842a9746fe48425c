"""avgpool2d: forward, EB and gradient against naive loops and torch; divisor rules, S <= 0, properties."""

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers.avgpool2d import avgpool2d_eb, avgpool2d_forward, avgpool2d_grad

from ..conftest import RTOL, rel_err
from ..oracles.finite_diff import numerical_vjp
from ..oracles.naive_pool import has_empty_window, naive_avgpool, naive_avgpool_eb, naive_avgpool_grad

# (in_hw, kernel, stride, padding, ceil_mode)
GEOMETRIES = [
    ((6, 6), (2, 2), (2, 2), (0, 0), False),
    ((7, 7), (3, 3), (2, 2), (1, 1), False),
    ((7, 7), (3, 3), (2, 2), (0, 0), True),  # ceil window past the input, no padding
    ((6, 6), (3, 3), (2, 2), (1, 1), True),  # ceil window clipped at iH + pH: divisor 2 x 2 at the corner
    ((5, 8), (2, 3), (1, 2), (1, 0), True),
    ((4, 4), (3, 3), (1, 1), (1, 1), False),
    ((5, 5), (3, 1), (2, 3), (1, 0), True),  # W unpadded, stride > kernel: Caffe drops the empty last window
]


def _ids(g):
    return "in{}-k{}-s{}-p{}-{}".format(*g[:4], "ceil" if g[4] else "floor")


def _forward(x, g, count_include_pad=True):
    _, kernel, stride, padding, ceil_mode = g
    return avgpool2d_forward(
        x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad
    )


def test_ceil_window_clipped_at_the_padded_border_golden():
    # hand-derived (Caffe's pooling_layer.cpp AVE): 6x6 ones, kernel 3, stride 2, pad 1, ceil -> 4x4 outputs.
    # Rows of the windows: [-1, 2) real 2 of size 3; [1, 4) 3 of 3; [3, 6) 3 of 3;
    # [5, min(8, 7)) real 1 of size 2.
    y, _ = avgpool2d_forward(numpy.ones((1, 1, 6, 6)), 3, stride=2, padding=1, ceil_mode=True)
    r = numpy.array([2 / 3, 1.0, 1.0, 1 / 2])
    assert y.shape == (1, 1, 4, 4)
    assert rel_err(y[0, 0], numpy.outer(r, r)) < 1e-15
    y, _ = avgpool2d_forward(
        numpy.ones((1, 1, 6, 6)), 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False
    )
    assert numpy.array_equal(y, numpy.ones((1, 1, 4, 4)))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("g", GEOMETRIES, ids=_ids)
def test_forward_eb_grad_match_naive_loops(xp, dtype, g, count_include_pad):
    rng = numpy.random.default_rng(0x4B01)
    x = rng.uniform(0, 1, (2, 3) + g[0])
    y, cache = _forward(xp.asarray(x, dtype), g, count_include_pad)
    y_ref = naive_avgpool(x, *g[1:], count_include_pad)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert rel_err(y, y_ref) < RTOL[dtype]
    p_y = rng.uniform(0, 1, y_ref.shape)
    p_x = avgpool2d_eb(xp.asarray(p_y, dtype), cache)
    p_ref, lost = naive_avgpool_eb(x, p_y, *g[1:])
    assert lost == 0
    assert p_x.dtype == dtype and rel_err(p_x, p_ref) < RTOL[dtype]
    assert abs(float(p_x.sum()) - p_y.sum()) < 10 * RTOL[dtype] * p_y.sum()  # conservation: every S > 0
    g_x = avgpool2d_grad(xp.asarray(p_y, dtype), cache)
    assert g_x.dtype == dtype
    assert rel_err(g_x, naive_avgpool_grad(p_y, g[0], *g[1:], count_include_pad)) < RTOL[dtype]


def test_eb_drops_exactly_the_windows_with_nonpositive_sum():
    # S == 0 (all-zero window) and S < 0 (signed input) both lose their signal, unlike linear's Z == 0 test
    x = numpy.array(
        [[[[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 3.0, 4.0], [-1.0, -2.0, 5.0, -6.0], [1.0, 1.0, 2.0, 1.0]]]]
    )
    y, cache = avgpool2d_forward(x, 2)
    p_y = numpy.array([[[[1.0, 2.0], [4.0, 8.0]]]])
    p_x = avgpool2d_eb(p_y, cache)
    # hand-derived: window (0,0) S = 0 -> lost 1; (0,1) S = 10; (1,0) S = -1 -> lost 4; (1,1) S = 2
    expect = numpy.zeros((4, 4))
    expect[0:2, 2:4] = numpy.array([[1.0, 2.0], [3.0, 4.0]]) * 2.0 / 10.0
    expect[2:4, 2:4] = numpy.array([[5.0, -6.0], [2.0, 1.0]]) * 8.0 / 2.0
    assert numpy.all(numpy.isfinite(p_x))
    assert rel_err(p_x[0, 0], expect) < 1e-15
    assert p_y.sum() - p_x.sum() == pytest.approx(1.0 + 4.0, rel=1e-14)


@pytest.mark.parametrize("g", GEOMETRIES, ids=_ids)
def test_eb_signed_input_loses_the_signal_of_nonpositive_windows(g):
    rng = numpy.random.default_rng(0x4B02)
    x = rng.normal(size=(2, 2) + g[0])
    x[0, 0] = 0.0  # whole zero maps: S == 0 exactly
    y, cache = _forward(x, g)
    p_y = rng.uniform(0, 1, y.shape)
    p_x = avgpool2d_eb(p_y, cache)
    p_ref, lost = naive_avgpool_eb(x, p_y, *g[1:])
    assert lost > 0
    assert rel_err(p_x, p_ref) < 1e-12
    assert p_y.sum() - p_x.sum() == pytest.approx(lost, rel=1e-9)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_grad_is_the_adjoint_of_the_forward(count_include_pad):
    rng = numpy.random.default_rng(0x4B03)
    for g in GEOMETRIES:
        x = rng.normal(size=(2, 3) + g[0])
        y, cache = _forward(x, g, count_include_pad)  # the forward is linear in x
        g_y = rng.normal(size=y.shape)
        assert numpy.sum(y * g_y) == pytest.approx(numpy.sum(x * avgpool2d_grad(g_y, cache)), rel=1e-12)


def test_grad_matches_finite_differences():
    rng = numpy.random.default_rng(0x4B04)
    for g in GEOMETRIES:
        for cip in (True, False):
            x = rng.normal(size=(2, 2) + g[0])
            y, cache = _forward(x, g, cip)
            g_y = rng.normal(size=y.shape)
            expect = numerical_vjp(lambda v, g=g, cip=cip: _forward(v, g, cip)[0], x, g_y)
            assert rel_err(avgpool2d_grad(g_y, cache), expect) < 1e-8


def test_stacked_signals_equal_separate_calls(xp):
    rng = numpy.random.default_rng(0x4B05)
    g = GEOMETRIES[3]
    x = rng.normal(size=(2, 3) + g[0])  # signed: some S <= 0 as well
    y, cache = _forward(xp.asarray(x), g)
    P = rng.uniform(0, 1, (4,) + y.shape)
    for fn in (avgpool2d_eb, avgpool2d_grad):
        stacked = to_numpy(fn(xp.asarray(P), cache))
        assert stacked.shape == (4,) + x.shape
        for k in range(4):
            assert rel_err(stacked[k], fn(xp.asarray(P[k]), cache)) < 1e-15


@pytest.mark.oracle
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_forward_and_grad_match_torch(ceil_mode, count_include_pad):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0x4B06)
    for in_hw, k, s, p in [
        ((7, 7), 3, 2, 1),
        ((6, 6), 3, 2, 1),
        ((6, 9), (2, 3), (2, 1), (1, 1)),
        ((8, 7), 2, 2, 0),
        ((5, 5), 3, 1, 1),
        ((7, 8), (3, 2), (3, 3), (1, 1)),
        ((5, 5), (3, 1), (2, 3), (1, 0)),
    ]:
        x = rng.normal(size=(2, 3) + in_hw)
        y, cache = avgpool2d_forward(
            x, k, stride=s, padding=p, ceil_mode=ceil_mode, count_include_pad=count_include_pad
        )
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.avg_pool2d(
            xt, k, s, p, ceil_mode=ceil_mode, count_include_pad=count_include_pad
        )
        g_y = rng.normal(size=tuple(yt.shape))
        yt.backward(torch.tensor(g_y))
        assert y.shape == tuple(yt.shape)
        assert rel_err(y, yt.detach().numpy()) < 1e-14
        assert rel_err(avgpool2d_grad(g_y, cache), xt.grad.numpy()) < 1e-14


def test_rejects_bad_inputs():
    x = numpy.zeros((1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"avgpool2d: x must be \(N, C, iH, iW\)"):
        avgpool2d_forward(numpy.zeros((1, 5, 5)), 2)
    with pytest.raises(ValueError, match="avgpool2d: padding must satisfy"):
        avgpool2d_forward(x, 2, padding=(0, 3))
    with pytest.raises(ValueError, match="covers no input"):
        avgpool2d_forward(x, (2, 1), stride=(2, 3), ceil_mode=True)  # W: windows at 0, 3, 6
    y, cache = avgpool2d_forward(x, 2)
    with pytest.raises(ValueError, match=r"avgpool2d_eb: signal of shape \(1, 1, 3, 3\)"):
        avgpool2d_eb(numpy.ones((1, 1, 3, 3)), cache)
    with pytest.raises(ValueError, match="avgpool2d_grad: signal of shape"):
        avgpool2d_grad(numpy.ones((1, 2, 2)), cache)


@st.composite
def _geometry(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k - 1)) for k in kernel)
    in_hw = tuple(draw(st.integers(max(1, k - 2 * p), 9)) for k, p in zip(kernel, padding))
    return in_hw, kernel, stride, padding, draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(
    g=_geometry(),
    N=st.integers(1, 2),
    C=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    cip=st.booleans(),
    signed=st.booleans(),
    a=st.floats(0.1, 10),
    b=st.floats(0.1, 10),
)
def test_properties(g, N, C, seed, cip, signed, a, b):
    in_hw, kernel, stride, padding, ceil_mode = g
    rng = numpy.random.default_rng(seed)
    # signed inputs are small integers, so that S == 0 and S < 0 windows both occur
    x = rng.integers(-2, 3, (N, C) + in_hw).astype(float) if signed else rng.uniform(0, 1, (N, C) + in_hw)
    if has_empty_window(in_hw, kernel, stride, padding, ceil_mode):
        with pytest.raises(ValueError, match="covers no input"):
            _forward(x, g, cip)
        return
    y, cache = _forward(x, g, cip)
    assert rel_err(y, naive_avgpool(x, kernel, stride, padding, ceil_mode, cip)) < 1e-14
    p1 = rng.uniform(0, 1, y.shape)
    p2 = rng.uniform(0, 1, y.shape)
    e1, e2 = avgpool2d_eb(p1, cache), avgpool2d_eb(p2, cache)
    p_ref, lost = naive_avgpool_eb(x, p1, kernel, stride, padding, ceil_mode)
    assert rel_err(e1, p_ref) < 1e-12  # EB == naive EB, S <= 0 rule included
    assert p1.sum() - e1.sum() == pytest.approx(lost, rel=1e-9, abs=1e-12)  # conservation up to the lost mass
    if not signed:
        assert numpy.all(e1 >= 0)  # non-negativity
    assert rel_err(avgpool2d_eb(a * p1 + b * p2, cache), a * e1 + b * e2) < 1e-12  # linearity
    stacked = avgpool2d_eb(numpy.stack([p1, p2]), cache)
    assert rel_err(stacked[0], e1) < 1e-15 and rel_err(stacked[1], e2) < 1e-15
    # the divisor convention does not change EB
    _, other = _forward(x, g, not cip)
    assert rel_err(avgpool2d_eb(p1, other), e1) < 1e-15
