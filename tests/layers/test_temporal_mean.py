"""temporal_mean: EB against naive loops, the S <= 0 rule, conservation, properties; gradient by finite
differences."""

import doctest

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ebr_ref.layers.temporal_mean as tm
from ebr_ref.backend import to_numpy
from ebr_ref.layers.temporal_mean import temporal_mean_eb, temporal_mean_forward, temporal_mean_grad

from ..conftest import RTOL, rel_err
from ..oracles.finite_diff import numerical_vjp


def naive_temporal_mean_eb(x, p_y):
    """P(x[t, n, d]) = x[t, n, d] P(y[n, d]) / S[n, d], S = sum_t x[t, n, d]; 0 (and lost) where S <= 0."""
    T, N, D = x.shape
    p_x = numpy.zeros((T, N, D))
    lost = 0.0
    for n in range(N):
        for d in range(D):
            S = 0.0
            for t in range(T):
                S += x[t, n, d]
            if not S > 0:
                lost += p_y[n, d]
                continue
            for t in range(T):
                p_x[t, n, d] = x[t, n, d] * p_y[n, d] / S
    return p_x, lost


def _case(rng, T=5, N=2, D=4):
    return rng.uniform(0, 1, (T, N, D)), rng.uniform(0, 1, (N, D))


def test_doctests():
    result = doctest.testmod(tm, raise_on_error=True)
    assert result.attempted > 0 and result.failed == 0


def test_forward_is_the_mean(xp, dtype):
    rng = numpy.random.default_rng(0x7A1)
    x, _ = _case(rng)
    y, _ = temporal_mean_forward(xp.asarray(x, dtype))
    assert y.dtype == dtype and y.shape == (2, 4)
    expect = numpy.array([[sum(x[t, n, d] for t in range(5)) / 5 for d in range(4)] for n in range(2)])
    assert rel_err(y, expect) < RTOL[dtype]


def test_eb_matches_naive_loops_and_conserves(xp, dtype):
    rng = numpy.random.default_rng(0x7A2)
    x, p_y = _case(rng)
    _, cache = temporal_mean_forward(xp.asarray(x, dtype))
    p_x = temporal_mean_eb(xp.asarray(p_y, dtype), cache)
    assert p_x.dtype == dtype and p_x.shape == x.shape
    expect, lost = naive_temporal_mean_eb(x, p_y)
    assert lost == 0
    assert rel_err(p_x, expect) < RTOL[dtype]
    assert abs(float(p_x.sum()) - p_y.sum()) < 10 * RTOL[dtype] * p_y.sum()


def test_eb_drops_exactly_the_signal_of_units_with_s_not_positive(xp):
    rng = numpy.random.default_rng(0x7A3)
    x, p_y = _case(rng)
    x[:, 0, 1] = 0.0  # S == 0
    x[:, 1, 2] = -rng.uniform(0, 1, 5)  # S < 0: the pooling rule drops it (a linear layer would not)
    x[:, 1, 3] = numpy.array([2.0, -1.0, 0.5, -0.25, 0.0])  # S > 0 with signed entries: kept, signed shares
    _, cache = temporal_mean_forward(xp.asarray(x))
    p_x = to_numpy(temporal_mean_eb(xp.asarray(p_y), cache))
    expect, lost = naive_temporal_mean_eb(x, p_y)
    assert numpy.all(numpy.isfinite(p_x))
    assert rel_err(p_x, expect) < 1e-12
    assert lost == pytest.approx(p_y[0, 1] + p_y[1, 2])
    assert p_y.sum() - p_x.sum() == pytest.approx(lost, rel=1e-12)
    assert numpy.all(p_x[:, 0, 1] == 0) and numpy.all(p_x[:, 1, 2] == 0)
    assert p_x[1, 1, 3] < 0


def test_eb_stacked_signals_equal_separate_calls(xp):
    rng = numpy.random.default_rng(0x7A4)
    x, _ = _case(rng)
    P = rng.uniform(-1, 1, (3, 2, 4))
    _, cache = temporal_mean_forward(xp.asarray(x))
    stacked = to_numpy(temporal_mean_eb(xp.asarray(P), cache))
    assert stacked.shape == (3,) + x.shape
    for k in range(3):
        assert rel_err(stacked[k], temporal_mean_eb(xp.asarray(P[k]), cache)) < 1e-14


def test_one_frame_passes_positive_units_unchanged():
    rng = numpy.random.default_rng(0x7A5)
    x = rng.uniform(-1, 1, (1, 3, 6))
    p = rng.uniform(0, 1, (3, 6))
    y, cache = temporal_mean_forward(x)
    assert numpy.array_equal(y, x[0])
    assert numpy.allclose(temporal_mean_eb(p, cache)[0], numpy.where(x[0] > 0, p, 0), rtol=1e-15, atol=0)


def test_grad_matches_finite_differences_and_stacks():
    rng = numpy.random.default_rng(0x7A6)
    x, g_y = _case(rng)
    _, cache = temporal_mean_forward(x)
    expect = numerical_vjp(lambda v: temporal_mean_forward(v)[0], x, g_y)
    g_x = temporal_mean_grad(g_y, cache)
    assert rel_err(g_x, expect) < 1e-8
    g_x[0, 0, 0] = 99.0  # a fresh array, not a view of shared memory
    assert temporal_mean_grad(g_y, cache)[1, 0, 0] == g_y[0, 0] / 5
    G = rng.normal(size=(2, 2, 4))
    stacked = temporal_mean_grad(G, cache)
    assert stacked.shape == (2, 5, 2, 4)
    assert rel_err(stacked[1], temporal_mean_grad(G[1], cache)) < 1e-15


def test_kernel_leaves_inputs_unchanged():
    rng = numpy.random.default_rng(0x7A7)
    x, p_y = _case(rng)
    x0, p0 = x.copy(), p_y.copy()
    _, cache = temporal_mean_forward(x)
    temporal_mean_eb(p_y, cache)
    temporal_mean_grad(p_y, cache)
    assert numpy.array_equal(x, x0) and numpy.array_equal(p_y, p0)


def test_errors():
    with pytest.raises(ValueError, match=r"temporal_mean: x must be \(T, \.\.\.\)"):
        temporal_mean_forward(numpy.ones(4))
    with pytest.raises(ValueError, match="no time steps"):
        temporal_mean_forward(numpy.ones((0, 3)))
    _, cache = temporal_mean_forward(numpy.ones((4, 2, 3)))
    with pytest.raises(ValueError, match=r"temporal_mean_eb: signal of shape \(3, 2\)"):
        temporal_mean_eb(numpy.ones((3, 2)), cache)
    with pytest.raises(ValueError, match="temporal_mean_grad: signal of shape"):
        temporal_mean_grad(numpy.ones((4, 3, 3)), cache)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 6),
    N=st.integers(1, 3),
    D=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    a=st.floats(0.1, 10),
    b=st.floats(0.1, 10),
    scale=st.floats(0.01, 100),
)
def test_eb_properties(T, N, D, seed, a, b, scale):
    rng = numpy.random.default_rng(seed)
    x = rng.uniform(0, 1, (T, N, D)) * (rng.uniform(0, 1, (T, N, D)) < 0.7)  # some zeros, some S == 0 units
    p1, p2 = rng.uniform(0, 1, (N, D)), rng.uniform(0, 1, (N, D))
    _, cache = temporal_mean_forward(x)
    e1, e2 = temporal_mean_eb(p1, cache), temporal_mean_eb(p2, cache)
    assert numpy.all(e1 >= 0)  # non-negativity
    assert rel_err(temporal_mean_eb(a * p1 + b * p2, cache), a * e1 + b * e2) < 1e-12  # linearity
    assert rel_err(temporal_mean_eb(p1, temporal_mean_forward(scale * x)[1]), e1) < 1e-12  # scale invariance
    perm = rng.permutation(T)  # frames are exchangeable: permuting time permutes the result
    assert rel_err(temporal_mean_eb(p1, temporal_mean_forward(x[perm])[1]), e1[perm]) < 1e-12
    assert numpy.all(e1[x == 0] == 0)  # zero activation, zero share
    _, lost = naive_temporal_mean_eb(x, p1)  # conservation with the S <= 0 loss accounted for
    assert p1.sum() - e1.sum() == pytest.approx(lost, rel=1e-9, abs=1e-12)
