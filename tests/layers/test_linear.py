"""linear: EB against naive loops, conservation, properties; gradient against finite differences.

The EB tests run both paths: ``fast=False`` (the reference: the four steps with the
whole ``W+``) and ``fast=True`` (the default: ``W+`` block by block, linear_fast.py).
That the two agree, and the blocked path itself with many blocks, is tested in
test_linear_fast.py.
"""

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers import linear_eb, linear_forward, linear_grad

from ..conftest import RTOL, rel_err
from ..oracles.finite_diff import numerical_vjp


def naive_linear_eb(x, W, p_y):
    """P_i = a_i sum_j W+_ji P_j / Z_j, Z_j = sum_i W+_ji a_i, by explicit loops (0/0 -> 0)."""
    N, D = x.shape
    M = W.shape[0]
    p_x = numpy.zeros((N, D))
    lost = 0.0
    for n in range(N):
        for j in range(M):
            z = sum(max(W[j, i], 0.0) * x[n, i] for i in range(D))
            if z == 0:
                lost += p_y[n, j]
                continue
            for i in range(D):
                p_x[n, i] += x[n, i] * max(W[j, i], 0.0) * p_y[n, j] / z
    return p_x, lost


def _case(rng, N=3, D=5, M=4):
    x = rng.uniform(0, 1, (N, D))
    W = rng.normal(size=(M, D))
    b = rng.normal(size=M)
    p_y = rng.uniform(0, 1, (N, M))
    return x, W, b, p_y


def test_forward_matches_formula(xp, dtype):
    rng = numpy.random.default_rng(0x11)
    x, W, b, _ = _case(rng)
    y, _ = linear_forward(xp.asarray(x, dtype), xp.asarray(W, dtype), xp.asarray(b, dtype))
    assert y.dtype == dtype
    expect = numpy.array(
        [[sum(W[j, i] * x[n, i] for i in range(5)) + b[j] for j in range(4)] for n in range(3)]
    )
    assert rel_err(y, expect) < RTOL[dtype]


@pytest.mark.parametrize("fast", [True, False])
def test_eb_matches_naive_loops(xp, dtype, fast):
    rng = numpy.random.default_rng(0x12)
    x, W, b, p_y = _case(rng)
    _, cache = linear_forward(xp.asarray(x, dtype), xp.asarray(W, dtype), xp.asarray(b, dtype))
    p_x = linear_eb(xp.asarray(p_y, dtype), cache, fast=fast)
    assert p_x.dtype == dtype
    expect, lost = naive_linear_eb(x, W, p_y)
    assert lost == 0
    assert rel_err(p_x, expect) < RTOL[dtype]
    # conservation: every Z > 0 here
    assert abs(float(p_x.sum()) - p_y.sum()) < 10 * RTOL[dtype] * p_y.sum()


@pytest.mark.parametrize("fast", [True, False])
def test_eb_zero_denominator_loses_exactly_that_signal(xp, fast):
    rng = numpy.random.default_rng(0x13)
    x, W, b, p_y = _case(rng)
    W = numpy.abs(W)
    W[1] = -W[1]  # output 1 has no excitatory weight: Z = 0 for every n
    x[0, :] = 0.0  # sample 0 has no input at all: Z = 0 for every output
    _, cache = linear_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b))
    p_x = to_numpy(linear_eb(xp.asarray(p_y), cache, fast=fast))
    expect, lost = naive_linear_eb(x, W, p_y)
    assert numpy.all(numpy.isfinite(p_x))
    assert rel_err(p_x, expect) < 1e-12
    assert lost == pytest.approx(p_y[0].sum() + p_y[1:, 1].sum())
    assert p_y.sum() - p_x.sum() == pytest.approx(lost, rel=1e-12)


@pytest.mark.parametrize("fast", [True, False])
def test_eb_stacked_signals_equal_separate_calls(xp, fast):
    rng = numpy.random.default_rng(0x14)
    x, W, b, _ = _case(rng)
    P = rng.uniform(0, 1, (3,) + (x.shape[0], W.shape[0]))
    _, cache = linear_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b))
    stacked = to_numpy(linear_eb(xp.asarray(P), cache, fast=fast))
    for k in range(3):
        assert rel_err(stacked[k], linear_eb(xp.asarray(P[k]), cache, fast=fast)) < 1e-14


def test_eb_rejects_wrong_signal_shape():
    rng = numpy.random.default_rng(0x15)
    x, W, b, _ = _case(rng)
    _, cache = linear_forward(x, W, b)
    with pytest.raises(ValueError, match=r"linear_eb: signal of shape \(3, 5\)"):
        linear_eb(numpy.ones((3, 5)), cache)


def test_forward_rejects_bad_shapes():
    with pytest.raises(ValueError, match="W must be"):
        linear_forward(numpy.ones((2, 3)), numpy.ones((4, 2)))
    with pytest.raises(TypeError, match="dtypes differ"):
        linear_forward(numpy.ones((2, 3)), numpy.ones((4, 3), numpy.float32))


def test_grad_matches_finite_differences():
    rng = numpy.random.default_rng(0x16)
    x, W, b, g_y = _case(rng)
    _, cache = linear_forward(x, W, b)
    expect = numerical_vjp(lambda v: linear_forward(v, W, b)[0], x, g_y)
    assert rel_err(linear_grad(g_y, cache), expect) < 1e-8


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 4),
    D=st.integers(1, 6),
    M=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    a=st.floats(0.1, 10),
    b=st.floats(0.1, 10),
    fast=st.booleans(),
)
def test_eb_properties(N, D, M, seed, a, b, fast):
    rng = numpy.random.default_rng(seed)
    x = rng.uniform(0, 1, (N, D))
    W = rng.normal(size=(M, D))
    p1 = rng.uniform(0, 1, (N, M))
    p2 = rng.uniform(0, 1, (N, M))
    _, cache = linear_forward(x, W)
    e1, e2 = linear_eb(p1, cache, fast=fast), linear_eb(p2, cache, fast=fast)
    assert numpy.all(e1 >= 0)  # non-negativity
    assert rel_err(linear_eb(a * p1 + b * p2, cache, fast=fast), a * e1 + b * e2) < 1e-12  # linearity
    W_other_neg = numpy.where(W > 0, W, -rng.uniform(0, 3, W.shape))  # change only negative weights
    _, cache2 = linear_forward(x, W_other_neg)
    assert rel_err(linear_eb(p1, cache2, fast=fast), e1) < 1e-14
    # conservation with the mass lost at zero denominators accounted for
    _, lost = naive_linear_eb(x, W, p1)
    assert p1.sum() - e1.sum() == pytest.approx(lost, rel=1e-9, abs=1e-12)
