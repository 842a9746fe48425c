"""maxpool2d: forward and winner routing against naive loops and torch; ties, conservation, properties."""

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers.maxpool2d import maxpool2d_eb, maxpool2d_forward, maxpool2d_grad, maxpool2d_winners

from ..conftest import RTOL, rel_err
from ..oracles.finite_diff import numerical_vjp
from ..oracles.naive_pool import has_empty_window, naive_maxpool, naive_maxpool_backward

# (in_hw, kernel, stride, padding, ceil_mode): overlapping, strided, padded, rectangular, ceil-extended
GEOMETRIES = [
    ((6, 6), (2, 2), (2, 2), (0, 0), False),  # VGG
    ((7, 7), (3, 3), (2, 2), (1, 1), False),
    ((7, 7), (3, 3), (2, 2), (0, 0), True),  # ceil adds a window past the input (AlexNet / GoogLeNet style)
    ((6, 5), (3, 3), (2, 2), (1, 1), True),  # ceil with padding: last window clipped at iH + pH
    ((5, 8), (2, 3), (1, 2), (1, 0), True),  # rectangular, overlapping
    ((4, 4), (3, 3), (1, 1), (1, 1), False),  # stride 1: inputs win several windows
    ((5, 5), (3, 1), (2, 3), (1, 0), True),  # W unpadded, stride > kernel: Caffe drops the empty last window
]


def _ids(g):
    return "in{}-k{}-s{}-p{}-{}".format(*g[:4], "ceil" if g[4] else "floor")


def _forward(x, g):
    _, kernel, stride, padding, ceil_mode = g
    return maxpool2d_forward(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)


@pytest.mark.parametrize("g", GEOMETRIES, ids=_ids)
def test_forward_and_eb_match_naive_loops(xp, dtype, g):
    rng = numpy.random.default_rng(0x3A01)
    x = rng.normal(size=(2, 3) + g[0])
    y, cache = _forward(xp.asarray(x, dtype), g)
    y_ref, winners = naive_maxpool(x.astype(dtype), *g[1:])
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert numpy.array_equal(to_numpy(y), y_ref.astype(dtype))  # max is exact
    p_y = rng.uniform(0, 1, y_ref.shape)
    p_x = maxpool2d_eb(xp.asarray(p_y, dtype), cache)
    assert p_x.dtype == dtype and p_x.shape == x.shape
    assert rel_err(p_x, naive_maxpool_backward(winners, p_y, g[0])) < RTOL[dtype]
    # the gradient routes the same way
    assert rel_err(maxpool2d_grad(xp.asarray(p_y, dtype), cache), p_x) == 0


def test_ties_go_to_the_first_maximum_in_scan_order():
    # hand-derived: 2x2 windows, stride 1 on a 3x3 map
    x = numpy.array([[[[1.0, 5.0, 5.0], [5.0, 5.0, 0.0], [2.0, 5.0, 3.0]]]])
    y, cache = maxpool2d_forward(x, 2, stride=1)
    assert numpy.array_equal(y, [[[[5.0, 5.0], [5.0, 5.0]]]])
    p_x = maxpool2d_eb(numpy.array([[[[1.0, 10.0], [100.0, 1000.0]]]]), cache)
    # window (0,0) cells 1,5 / 5,5 -> first 5 at (0,1); window (0,1) 5,5 / 5,0 -> (0,1);
    # window (1,0) 5,5 / 2,5 -> (1,0); window (1,1) 5,0 / 5,3 -> (1,1)
    expect = numpy.array([[[[0.0, 11.0, 0.0], [100.0, 1000.0, 0.0], [0.0, 0.0, 0.0]]]])
    assert numpy.array_equal(p_x, expect)


def test_ceil_correction_applies_to_both_axes_when_either_is_padded():
    # Caffe's PoolingLayer::Reshape: oW = ceil((5 - 1) / 3) + 1 = 3, and because pad_h > 0 the W axis is
    # corrected too ((3 - 1) * 3 >= 5 + 0), giving 2; H: ceil((5 + 2 - 3) / 2) + 1 = 3, no correction
    y, _ = maxpool2d_forward(numpy.zeros((1, 1, 5, 5)), (3, 1), stride=(2, 3), padding=(1, 0), ceil_mode=True)
    assert y.shape == (1, 1, 3, 2)


def test_padding_never_wins_even_against_negative_inputs():
    x = -numpy.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all inputs negative; padded cells would be 0
    y, cache = maxpool2d_forward(x, 3, stride=2, padding=1, ceil_mode=True)
    expect, winners = naive_maxpool(x, (3, 3), (2, 2), (1, 1), True)
    assert numpy.array_equal(y, expect)
    assert numpy.all(y < 0)
    p_y = numpy.ones_like(y)
    assert numpy.array_equal(maxpool2d_eb(p_y, cache), naive_maxpool_backward(winners, p_y, (3, 3)))


@pytest.mark.parametrize("g", GEOMETRIES, ids=_ids)
def test_eb_conserves_any_signal(g):
    rng = numpy.random.default_rng(0x3A02)
    x = rng.normal(size=(2, 2) + g[0])
    y, cache = _forward(x, g)
    p_y = rng.normal(size=y.shape)  # signed signal (a contrastive difference), signed input
    p_x = maxpool2d_eb(p_y, cache)
    assert p_x.sum() == pytest.approx(p_y.sum(), rel=1e-12, abs=1e-12)


def test_routing_is_the_adjoint_of_gathering_the_winners():
    rng = numpy.random.default_rng(0x3A03)
    g = GEOMETRIES[5]
    x = rng.normal(size=(2, 3) + g[0])
    y, cache = _forward(x, g)
    q = rng.normal(size=x.shape)
    p = rng.normal(size=y.shape)
    # gather q at every window's stored winner (index arithmetic in the padded frame)
    (_, kW), (sH, sW), (pH, pW) = g[1], g[2], g[3]
    u, v = numpy.divmod(maxpool2d_winners(cache), kW)
    oh, ow = numpy.meshgrid(numpy.arange(y.shape[2]), numpy.arange(y.shape[3]), indexing="ij")
    h, w = oh * sH - pH + u, ow * sW - pW + v
    n, c = numpy.meshgrid(numpy.arange(2), numpy.arange(3), indexing="ij")
    gathered = q[n[:, :, None, None], c[:, :, None, None], h, w]
    assert numpy.sum(gathered * p) == pytest.approx(numpy.sum(q * maxpool2d_eb(p, cache)), rel=1e-12)


def test_stacked_signals_equal_separate_calls(xp):
    rng = numpy.random.default_rng(0x3A04)
    g = GEOMETRIES[3]
    x = rng.normal(size=(2, 3) + g[0])
    y, cache = _forward(xp.asarray(x), g)
    P = rng.uniform(0, 1, (4,) + y.shape)
    for fn in (maxpool2d_eb, maxpool2d_grad):
        stacked = to_numpy(fn(xp.asarray(P), cache))
        assert stacked.shape == (4,) + x.shape
        for k in range(4):
            assert numpy.array_equal(stacked[k], to_numpy(fn(xp.asarray(P[k]), cache)))


def test_grad_matches_finite_differences():
    rng = numpy.random.default_rng(0x3A05)
    for g in GEOMETRIES:
        size = 4 * g[0][0] * g[0][1]
        x = rng.permutation(numpy.arange(size, dtype=float)).reshape((2, 2) + g[0]) / size
        x = x + rng.uniform(-0.2, 0.2, x.shape) / size  # distinct values in [0, 1), gaps >= 0.6 / size >> h
        y, cache = _forward(x, g)
        g_y = rng.normal(size=y.shape)
        expect = numerical_vjp(lambda v, g=g: _forward(v, g)[0], x, g_y)
        assert rel_err(maxpool2d_grad(g_y, cache), expect) < 1e-8


@pytest.mark.oracle
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("integer_valued", [False, True], ids=["distinct", "ties"])
def test_forward_and_grad_match_torch(ceil_mode, integer_valued):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0x3A06)
    for in_hw, k, s, p in [
        ((7, 7), 3, 2, 1),
        ((6, 9), (2, 3), (2, 1), (1, 1)),
        ((8, 8), 2, 2, 0),
        ((5, 5), 3, 1, 1),
        ((5, 5), (3, 1), (2, 3), (1, 0)),
    ]:  # the last: Caffe's both-axes ceil correction
        x = (
            rng.integers(0, 3, (2, 3) + in_hw).astype(float)
            if integer_valued
            else rng.normal(size=(2, 3) + in_hw)
        )
        y, cache = maxpool2d_forward(x, k, stride=s, padding=p, ceil_mode=ceil_mode)
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=ceil_mode)
        g_y = rng.normal(size=tuple(yt.shape))
        yt.backward(torch.tensor(g_y))
        assert y.shape == tuple(yt.shape)
        assert numpy.array_equal(y, yt.detach().numpy())
        # torch's CPU kernel also keeps the first maximum, so ties route identically
        assert rel_err(maxpool2d_grad(g_y, cache), xt.grad.numpy()) < 1e-14


def test_rejects_bad_inputs():
    x = numpy.zeros((1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"maxpool2d: x must be \(N, C, iH, iW\)"):
        maxpool2d_forward(numpy.zeros((5, 5)), 2)
    with pytest.raises(TypeError, match="maxpool2d: x must be floating point"):
        maxpool2d_forward(numpy.zeros((1, 1, 5, 5), dtype=int), 2)
    with pytest.raises(ValueError, match="0 <= padding < kernel"):
        maxpool2d_forward(x, 2, padding=2)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        maxpool2d_forward(x, 6)
    # Caffe's ceil rule with stride > kernel and no padding: the last window holds no input
    with pytest.raises(ValueError, match="covers no input"):
        maxpool2d_forward(x, 1, stride=3, ceil_mode=True)
    y, cache = maxpool2d_forward(x, 2)
    with pytest.raises(ValueError, match=r"maxpool2d_eb: signal of shape \(1, 1, 3, 3\)"):
        maxpool2d_eb(numpy.ones((1, 1, 3, 3)), cache)
    with pytest.raises(ValueError, match="maxpool2d_grad: signal of shape"):
        maxpool2d_grad(numpy.ones((2, 2, 1, 2, 2)), cache)


def test_forward_does_not_modify_input():
    x = numpy.random.default_rng(0x3A07).normal(size=(2, 2, 5, 5))
    x0 = x.copy()
    y, cache = maxpool2d_forward(x, 3, stride=2, padding=1, ceil_mode=True)
    maxpool2d_eb(numpy.ones_like(y), cache)
    assert numpy.array_equal(x, x0)


@st.composite
def _geometry(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k - 1)) for k in kernel)
    in_hw = tuple(draw(st.integers(max(1, k - 2 * p), 9)) for k, p in zip(kernel, padding))
    return in_hw, kernel, stride, padding, draw(st.booleans())


@settings(max_examples=80, deadline=None)
@given(
    g=_geometry(),
    N=st.integers(1, 2),
    C=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    a=st.floats(0.1, 10),
    b=st.floats(0.1, 10),
)
def test_properties(g, N, C, seed, a, b):
    in_hw, kernel, stride, padding, ceil_mode = g
    rng = numpy.random.default_rng(seed)
    x = rng.integers(-2, 3, (N, C) + in_hw).astype(float)  # small integers: many ties
    if has_empty_window(in_hw, kernel, stride, padding, ceil_mode):
        with pytest.raises(ValueError, match="covers no input"):
            _forward(x, g)
        return
    y, cache = _forward(x, g)
    y_ref, winners = naive_maxpool(x, kernel, stride, padding, ceil_mode)
    assert numpy.array_equal(y, y_ref)
    p1 = rng.uniform(0, 1, y.shape)
    p2 = rng.uniform(0, 1, y.shape)
    e1, e2 = maxpool2d_eb(p1, cache), maxpool2d_eb(p2, cache)
    assert rel_err(e1, naive_maxpool_backward(winners, p1, in_hw)) < 1e-14  # first-maximum tie rule
    assert numpy.all(e1 >= 0)  # non-negativity
    assert rel_err(maxpool2d_eb(a * p1 + b * p2, cache), a * e1 + b * e2) < 1e-13  # linearity
    assert e1.sum() == pytest.approx(p1.sum(), rel=1e-12)  # conservation
    stacked = maxpool2d_eb(numpy.stack([p1, p2]), cache)
    assert numpy.array_equal(stacked[0], e1) and numpy.array_equal(stacked[1], e2)
