"""linear_fast: EB with ``W+`` formed block by block equals the reference (``fast=False``).

The reference, the four steps with the whole ``W+``, is checked against naive loops in
test_linear.py. Here the blocked path is compared with it in float64 at 1e-12 relative
(normwise), on layers where it runs more than one block: a spy on
:func:`ebr_ref.layers.linear_fast.eb_blocked` records each call's block count, from the
path's own :func:`~ebr_ref.layers.linear_fast.block_rows`. Small layers reach many
blocks by lowering ``_BLOCK_ELEMENTS``; one test keeps the default on a wide layer.
"""

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers import linear_fast
from ebr_ref.layers.linear import linear_eb, linear_forward

from ..conftest import rel_err
from .test_linear import _case, naive_linear_eb

TOL = 1e-12  # fast vs reference, float64, relative normwise


@pytest.fixture
def blocks(monkeypatch):
    """The number of blocks of every call into ``linear_fast.eb_blocked``, in call order."""
    seen = []
    original = linear_fast.eb_blocked

    def spy(p_y, x, W, *, xp):
        M, D = W.shape
        seen.append(-(-M // linear_fast.block_rows(M, D, p_y.size)))  # ceil(M / rows)
        return original(p_y, x, W, xp=xp)

    monkeypatch.setattr(linear_fast, "eb_blocked", spy)
    return seen


def _layer(rng, N, D, M):
    """Non-negative input with a zero sample, weights with one all-negative row: some Z == 0."""
    x = rng.uniform(0, 1, (N, D))
    x[0] = 0.0  # sample 0: Z == 0 for every unit
    W = rng.normal(size=(M, D))
    W[M // 2] = -numpy.abs(W[M // 2])  # unit M // 2: Z == 0 for every sample
    return x, W, rng.normal(size=M)


@pytest.mark.parametrize("stacked", [False, True])
def test_blocked_eb_equals_naive_loops_and_the_precomputed_w_pos(xp, monkeypatch, blocks, stacked):
    """Without W_pos, EB runs over blocks of output units; force many blocks (one partial) and a zero Z."""
    monkeypatch.setattr(linear_fast, "_BLOCK_ELEMENTS", 1)  # blocks of 2 K N rows
    rng = numpy.random.default_rng(0x1B)
    x, W, b, _ = _case(rng, N=2, D=6, M=23)
    W[5] = -numpy.abs(W[5])  # unit 5: Z == 0, its signal is lost
    K = 3 if stacked else 1
    p_y = rng.uniform(0, 1, (K, 2, 23))
    _, cache = linear_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b))
    W_pos = xp.maximum(xp.asarray(W), 0)
    _, cache_pos = linear_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), W_pos=W_pos)
    signal = xp.asarray(p_y if stacked else p_y[0])
    blocked, whole = linear_eb(signal, cache), linear_eb(signal, cache_pos)
    assert blocks == [-(-23 // (4 * K))]  # one call, blocks of 2 K N = 4 K rows, the last one partial
    for k in range(K):
        expect, lost = naive_linear_eb(x, W, p_y[k])
        assert lost == pytest.approx(p_y[k, :, 5].sum())
        got = to_numpy(blocked[k] if stacked else blocked)
        assert rel_err(got, expect) < 1e-13
    assert rel_err(blocked, whole) < 1e-14


@pytest.mark.parametrize("block_elements", [1, 12, 100])
@pytest.mark.parametrize("K", [None, 1, 4])
def test_blocked_equals_reference(xp, monkeypatch, blocks, K, block_elements):
    monkeypatch.setattr(linear_fast, "_BLOCK_ELEMENTS", block_elements)
    rng = numpy.random.default_rng(0x1C)
    N, D, M = 3, 6, 29
    x, W, b = (xp.asarray(a) for a in _layer(rng, N, D, M))
    p_y = xp.asarray(rng.uniform(0, 1, (N, M) if K is None else (K, N, M)))
    _, cache = linear_forward(x, W, b)
    ref = linear_eb(p_y, cache, fast=False)
    assert blocks == []
    got = linear_eb(p_y, cache)  # fast is the default
    assert len(blocks) == 1 and blocks[0] > 1
    assert got.shape == ref.shape == p_y.shape[:-1] + (D,) and got.dtype == ref.dtype == numpy.float64
    assert rel_err(got, ref) < TOL
    lost = float(to_numpy(p_y)[..., 0, :].sum() + to_numpy(p_y)[..., 1:, M // 2].sum())
    assert float(p_y.sum() - got.sum()) == pytest.approx(lost, rel=1e-12)  # zero Z: lost on the fast path too


def test_default_block_size_on_a_wide_layer(xp, blocks):
    """D = 32768: default blocks of 2**22 / D = 128 units, so 300 units take 3 blocks (one partial)."""
    rng = numpy.random.default_rng(0x1D)
    N, D, M, K = 2, 32768, 300, 2
    x, W, b = (xp.asarray(a) for a in _layer(rng, N, D, M))
    p_y = xp.asarray(rng.uniform(0, 1, (K, N, M)))
    _, cache = linear_forward(x, W, b)
    assert linear_fast.block_rows(M, D, K * N * M) == 128
    got, ref = linear_eb(p_y, cache), linear_eb(p_y, cache, fast=False)
    assert blocks == [3]
    assert rel_err(got, ref) < TOL


def test_precomputed_w_pos_and_switch_off_skip_linear_fast(xp, monkeypatch, blocks):
    """With ``W_pos`` in the cache, or ``fast=False``, EB is the reference, bit for bit."""
    monkeypatch.setattr(linear_fast, "_BLOCK_ELEMENTS", 1)
    rng = numpy.random.default_rng(0x1E)
    x, W, b = (xp.asarray(a) for a in _layer(rng, 3, 5, 11))
    p_y = xp.asarray(rng.uniform(0, 1, (2, 3, 11)))
    _, cache = linear_forward(x, W, b)
    _, cache_pos = linear_forward(x, W, b, W_pos=xp.maximum(W, 0))
    ref = linear_eb(p_y, cache, fast=False)
    for out in (linear_eb(p_y, cache_pos), linear_eb(p_y, cache_pos, fast=False)):
        assert bool((out == ref).all())
    assert blocks == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    N=st.integers(1, 4),
    D=st.integers(1, 8),
    M=st.integers(1, 40),
    K=st.sampled_from([None, 1, 2, 3]),
    block_elements=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_blocked_equals_reference_on_random_layers(xp, N, D, M, K, block_elements, seed):
    rng = numpy.random.default_rng(seed)
    x, W, b = _layer(rng, N, D, M)
    x = x * (rng.uniform(size=x.shape) > 0.2)  # more exact zeros
    x, W, b = (xp.asarray(a) for a in (x, W, b))
    p_y = xp.asarray(rng.uniform(0, 1, (N, M) if K is None else (K, N, M)))
    _, cache = linear_forward(x, W, b)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(linear_fast, "_BLOCK_ELEMENTS", block_elements)
        rows = linear_fast.block_rows(M, D, p_y.size)
        assert rows == max(block_elements // D, 2 * p_y.size // M, 1)
        got, ref = linear_eb(p_y, cache), linear_eb(p_y, cache, fast=False)
    assert got.shape == ref.shape and rel_err(got, ref) < TOL
    assert bool((got >= 0).all())


@pytest.mark.parametrize("dead", [0.0, 0.5, 1.0])
def test_units_without_signal_are_skipped_and_change_nothing(xp, monkeypatch, dead):
    """Several blocks: units whose signal is 0 in every row are not read; float64 equals the reference."""
    monkeypatch.setattr(linear_fast, "_BLOCK_ELEMENTS", 3 * 7)  # blocks of 12 units (2 K N rows at least)
    rng = numpy.random.default_rng(0x1F)
    N, D, M, K = 3, 7, 40, 2
    x, W, b = (xp.asarray(a) for a in _layer(rng, N, D, M))
    p = rng.uniform(0, 1, (K, N, M))
    p[..., rng.uniform(size=M) < dead] = 0.0  # those units carry no signal in any row
    p[0, 0, 5] = 0.0 if dead == 1.0 else 0.3  # a unit live in one row only
    p_y = xp.asarray(p)
    _, cache = linear_forward(x, W, b)
    assert linear_fast.block_rows(M, D, p_y.size) < M
    got, ref = linear_eb(p_y, cache), linear_eb(p_y, cache, fast=False)
    assert got.shape == ref.shape
    if dead == 1.0:
        assert not bool(got.any()) and not bool(ref.any())
    else:
        assert rel_err(got, ref) < TOL
