"""embedding: lookup vs naive loops; EB routes each vector's signal to its token; table gradient vs
finite differences and naive accumulation over repeated ids."""

import numpy
import pytest

from ebr_ref.backend import to_numpy
from ebr_ref.layers.embedding import embedding_eb, embedding_forward, embedding_grad

from ..conftest import RTOL, rel_err
from ..oracles.finite_diff import numerical_vjp


def _case(rng, T=4, N=3, V=6, E=5):
    ids = rng.integers(0, V, (T, N))
    ids[0, 0] = ids[2, 1] = ids[3, 2] = 4  # a repeated id
    return ids, rng.normal(size=(V, E))


def test_forward_matches_naive_lookup(xp, dtype):
    rng = numpy.random.default_rng(0x3C01)
    ids, W = _case(rng)
    y, _ = embedding_forward(xp.asarray(ids), xp.asarray(W, dtype))
    assert y.dtype == dtype and y.shape == (4, 3, 5)
    expect = numpy.array([[[W[ids[t, n], e] for e in range(5)] for n in range(3)] for t in range(4)])
    assert rel_err(y, expect) < RTOL[dtype]


def test_eb_gives_each_token_its_vectors_signal(xp, dtype):
    rng = numpy.random.default_rng(0x3C02)
    ids, W = _case(rng)
    _, cache = embedding_forward(xp.asarray(ids), xp.asarray(W, dtype))
    p = rng.uniform(0, 1, (2, 4, 3, 5))
    p_tok = embedding_eb(xp.asarray(p, dtype), cache)
    assert p_tok.shape == (2, 4, 3) and p_tok.dtype == dtype
    expect = numpy.array([[[sum(p[k, t, n]) for n in range(3)] for t in range(4)] for k in range(2)])
    assert rel_err(p_tok, expect) < RTOL[dtype]
    assert float(p_tok.sum()) == pytest.approx(p.sum(), rel=10 * RTOL[dtype])  # conserved
    assert rel_err(embedding_eb(xp.asarray(p[1], dtype), cache), expect[1]) < RTOL[dtype]


def test_grad_matches_finite_differences_and_naive_accumulation(xp):
    rng = numpy.random.default_rng(0x3C03)
    ids, W = _case(rng)
    g_y = rng.normal(size=(4, 3, 5))
    _, cache = embedding_forward(xp.asarray(ids), xp.asarray(W))
    g_W = to_numpy(embedding_grad(xp.asarray(g_y), cache))
    assert rel_err(g_W, numerical_vjp(lambda v: embedding_forward(ids, v)[0], W, g_y)) < 1e-8
    naive = numpy.zeros_like(W)
    for t in range(4):
        for n in range(3):
            naive[ids[t, n]] += g_y[t, n]
    assert rel_err(g_W, naive) < 1e-14
    unused = sorted(set(range(6)) - set(ids.ravel().tolist()))
    numpy.testing.assert_array_equal(g_W[unused], 0)
    stacked = to_numpy(embedding_grad(xp.asarray(numpy.stack([g_y, 2 * g_y])), cache))
    assert stacked.shape == (2, 6, 5) and rel_err(stacked[1], 2 * naive) < 1e-14


def test_rejects_bad_ids_and_signals():
    W = numpy.ones((6, 5))
    with pytest.raises(TypeError, match="ids must be integers"):
        embedding_forward(numpy.zeros((2, 2)), W)
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        embedding_forward(numpy.array([[6, 0]]), W)
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        embedding_forward(numpy.array([[-1, 0]]), W)
    with pytest.raises(ValueError, match=r"ids must be \(T, N\)"):
        embedding_forward(numpy.array([1, 2]), W)
    _, cache = embedding_forward(numpy.array([[1, 2]]), W)
    with pytest.raises(ValueError, match=r"embedding_eb: signal of shape \(1, 2, 4\)"):
        embedding_eb(numpy.ones((1, 2, 4)), cache)
    ids = numpy.array([[1, 2]])
    copy = ids.copy(), W.copy()
    embedding_grad(numpy.ones((1, 2, 5)), cache)
    numpy.testing.assert_array_equal(ids, copy[0])
    numpy.testing.assert_array_equal(W, copy[1])
