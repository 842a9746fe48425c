"""lstm: forward vs naive loops; gradient vs finite differences; the "eb" rule vs naive loops, by hand,
step-by-step conservation and loss accounting; the "caffe" rule vs the closed form of
docs/spec.md §4.3; the worked example printed in docs/lstm.md.

Torch oracles (autograd, torch.nn.LSTM, the released code's EB rebuilt in torch) are in
tests/layers/test_lstm_torch.py.
"""

import re

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers.lstm import GATE_ORDER, LSTMParams, gate_slice, lstm_eb, lstm_forward, lstm_grad
from tests.paths import DOCS

from ..conftest import RTOL, rel_err
from ..oracles.dense import eb_matrix
from ..oracles.finite_diff import numerical_vjp
from ..oracles.naive_lstm import BLOCK, naive_eb_conserving, naive_forward

DOC = DOCS / "lstm.md"


def _case(rng, T=5, N=2, D=3, H=2, Ds=None, positive=False):
    """Random LSTM inputs. ``positive``: every EB normaliser > 0 and g > 0 (so c > 0)."""
    x = rng.uniform(0.1, 1, (T, N, D))
    W_x = rng.normal(size=(4 * H, D))
    b = rng.normal(scale=0.3, size=4 * H)
    W_h = rng.normal(size=(4 * H, H))
    W_s = None if Ds is None else rng.normal(size=(4 * H, Ds))
    s = None if Ds is None else rng.uniform(0.1, 1, (N, Ds))
    if positive:
        g = 3 * H, 4 * H  # rows of the g block (Caffe order i, f, o, g)
        W_x[g[0] : g[1]] = numpy.abs(W_x[g[0] : g[1]])
        b[g[0] : g[1]] = numpy.abs(b[g[0] : g[1]])
        W_x = numpy.where(rng.uniform(size=W_x.shape) < 0.2, -numpy.abs(W_x), W_x)  # some inhibitory weights
        W_x[:, 0] = numpy.abs(W_x[:, 0])  # but every row has an excitatory one
        if W_s is not None:
            W_s[:, 0] = numpy.abs(W_s[:, 0])
            W_s[g[0] : g[1]] = numpy.abs(W_s[g[0] : g[1]])
    return x, W_x, b, W_h, W_s, s


def _params(W_x, b, W_h, W_s=None, xp=numpy, dtype=numpy.float64):
    cast = lambda a: None if a is None else xp.asarray(a, dtype)  # noqa: E731
    return LSTMParams(cast(W_x), cast(b), cast(W_h), cast(W_s))


def _balance(sig, p_h):
    """Per sample n: seed - (p_x + p_static + p_h0 + p_c0 + lost); signals unstacked."""
    out = to_numpy(p_h).sum(axis=(0, 2)) - to_numpy(sig.p_x).sum(axis=(0, 2))
    if sig.p_static is not None:
        out = out - to_numpy(sig.p_static).sum(axis=1)
    return (
        out - to_numpy(sig.p_h0).sum(axis=1) - to_numpy(sig.p_c0).sum(axis=1) - to_numpy(sig.lost).sum(axis=0)
    )


# ---------------------------------------------------------------------------------------------- forward


def test_gate_order_is_caffes():
    assert GATE_ORDER == ("i", "f", "o", "g")
    assert [gate_slice(n, 3) for n in GATE_ORDER] == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    assert all(BLOCK[n] == k for k, n in enumerate(GATE_ORDER))


@pytest.mark.parametrize("cell_act", ["relu", "tanh"])
def test_forward_matches_naive_loops(xp, dtype, cell_act):
    rng = numpy.random.default_rng(0x1A01)
    x, W_x, b, W_h, W_s, s = _case(rng, Ds=2)
    cont = numpy.array([[0, 1], [1, 1], [1, 0], [1, 1], [0, 1]], dtype=float)  # resets mid-sequence
    h0, c0 = rng.uniform(0, 1, (2, 2)), rng.uniform(0, 1, (2, 2))
    h, cache = lstm_forward(
        xp.asarray(x, dtype),
        _params(W_x, b, W_h, W_s, xp, dtype),
        cont=xp.asarray(cont),
        static=xp.asarray(s, dtype),
        h0=xp.asarray(h0, dtype),
        c0=xp.asarray(c0, dtype),
        cell_act=cell_act,
    )
    fw = naive_forward(x, W_x, b, W_h, W_s, s, cont, h0, c0, cell_act)
    assert h.dtype == dtype and cache.c.dtype == dtype
    assert rel_err(h, fw["h"]) < RTOL[dtype]
    assert rel_err(cache.c, fw["c"]) < RTOL[dtype]


def test_forward_default_cont_wipes_initial_state():
    rng = numpy.random.default_rng(0x1A02)
    x, W_x, b, W_h, _, _ = _case(rng)
    p = _params(W_x, b, W_h)
    h_fresh, _ = lstm_forward(x, p)
    h_given, _ = lstm_forward(x, p, h0=numpy.ones((2, 2)), c0=numpy.ones((2, 2)))  # cont[0] = 0 by default
    numpy.testing.assert_array_equal(h_fresh, h_given)
    cont = numpy.ones((5, 2))
    h_cont, _ = lstm_forward(x, p, cont=cont, h0=numpy.ones((2, 2)), c0=numpy.ones((2, 2)))
    assert (
        rel_err(
            h_cont,
            naive_forward(x, W_x, b, W_h, cont=cont, h0=numpy.ones((2, 2)), c0=numpy.ones((2, 2)))["h"],
        )
        < 1e-12
    )
    assert not numpy.allclose(h_cont, h_fresh)


def test_forward_rejects_bad_inputs():
    rng = numpy.random.default_rng(0x1A03)
    x, W_x, b, W_h, W_s, s = _case(rng, Ds=2)
    p = _params(W_x, b, W_h)
    with pytest.raises(ValueError, match=r"lstm_forward: x must be \(T, N, D\)"):
        lstm_forward(x[0], p)
    with pytest.raises(ValueError, match=r"W_x must be \(4H, D\)"):
        lstm_forward(x[..., :2], p)
    with pytest.raises(ValueError, match=r"b must be \(4H,\)"):
        lstm_forward(x, LSTMParams(W_x, b[:-1], W_h))
    with pytest.raises(ValueError, match=r"W_h must be \(4H, H\)"):
        lstm_forward(x, LSTMParams(W_x, b, W_h[:-1]))
    with pytest.raises(ValueError, match="static input needs W_s"):
        lstm_forward(x, p, static=s)
    with pytest.raises(ValueError, match="static input needs W_s"):
        lstm_forward(x, LSTMParams(W_x, b, W_h, W_s))
    with pytest.raises(ValueError, match=r"cont must be \(T, N\)"):
        lstm_forward(x, p, cont=numpy.ones(5))
    with pytest.raises(ValueError, match="only 0"):
        lstm_forward(x, p, cont=numpy.full((5, 2), 0.5))
    with pytest.raises(ValueError, match=r"h0 must be \(N, H\)"):
        lstm_forward(x, p, h0=numpy.ones((3, 2)))
    with pytest.raises(ValueError, match="cell_act"):
        lstm_forward(x, p, cell_act="sigmoid")
    with pytest.raises(TypeError, match="dtypes differ"):
        lstm_forward(x.astype(numpy.float32), p)
    with pytest.raises(TypeError, match="LSTMParams"):
        lstm_forward(x, {"W_x": W_x})


def test_kernels_do_not_modify_inputs():
    rng = numpy.random.default_rng(0x1A04)
    x, W_x, b, W_h, W_s, s = _case(rng, Ds=2)
    cont, h0, c0 = numpy.ones((5, 2)), rng.uniform(0, 1, (2, 2)), rng.uniform(0, 1, (2, 2))
    p_h = rng.uniform(0, 1, (5, 2, 2))
    arrays = [x, W_x, b, W_h, W_s, s, cont, h0, c0, p_h]
    copies = [a.copy() for a in arrays]
    _, cache = lstm_forward(x, LSTMParams(W_x, b, W_h, W_s), cont=cont, static=s, h0=h0, c0=c0)
    lstm_eb(p_h, cache, rule="eb")
    lstm_eb(p_h, cache, rule="caffe")
    lstm_grad(p_h, cache)
    for a, c in zip(arrays, copies):
        numpy.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------------------------- gradient


@pytest.mark.parametrize("cell_act", ["relu", "tanh"])
def test_grad_matches_finite_differences(cell_act):
    rng = numpy.random.default_rng(0x1A05)
    x, W_x, b, W_h, W_s, s = _case(rng, T=5, N=2, D=3, H=2, Ds=2)
    cont = numpy.array([[1, 1], [1, 1], [0, 1], [1, 0], [1, 1]], dtype=float)  # h0/c0 used; resets at t=2, 3
    h0, c0 = rng.uniform(0, 1, (2, 2)), rng.uniform(0, 1, (2, 2))
    g_h = rng.normal(size=(5, 2, 2))
    params = LSTMParams(W_x, b, W_h, W_s)

    def run(x=x, s=s, h0=h0, c0=c0):
        return lstm_forward(x, params, cont=cont, static=s, h0=h0, c0=c0, cell_act=cell_act)[0]

    _, cache = lstm_forward(x, params, cont=cont, static=s, h0=h0, c0=c0, cell_act=cell_act)
    grads = lstm_grad(g_h, cache)
    assert rel_err(grads.g_x, numerical_vjp(lambda v: run(x=v), x, g_h)) < 1e-8
    assert rel_err(grads.g_static, numerical_vjp(lambda v: run(s=v), s, g_h)) < 1e-8
    assert rel_err(grads.g_h0, numerical_vjp(lambda v: run(h0=v), h0, g_h)) < 1e-8
    assert rel_err(grads.g_c0, numerical_vjp(lambda v: run(c0=v), c0, g_h)) < 1e-8
    assert numpy.any(grads.g_h0 != 0)


def test_grad_and_eb_stacked_signals_equal_separate_calls(xp):
    rng = numpy.random.default_rng(0x1A06)
    x, W_x, b, W_h, W_s, s = _case(rng, Ds=2)
    _, cache = lstm_forward(xp.asarray(x), _params(W_x, b, W_h, W_s, xp), static=xp.asarray(s))
    P = rng.uniform(0, 1, (3, 5, 2, 2))
    for run in (lstm_grad, lambda p, c: lstm_eb(p, c, rule="eb"), lambda p, c: lstm_eb(p, c, rule="caffe")):
        stacked = run(xp.asarray(P), cache)
        for k in range(3):
            single = run(xp.asarray(P[k]), cache)
            for a, b_ in zip(stacked, single):
                if isinstance(a, str) or a is None:
                    assert a == b_
                else:
                    assert a.shape == (3,) + b_.shape
                    assert rel_err(a[k], b_) < 1e-14


# ------------------------------------------------------------------------------- rule "eb": by hand


def _hand_example():
    """T=2, N=1, D=1, H=1 (the worked example of docs/lstm.md)."""
    x = numpy.ones((2, 1, 1))
    W_x = numpy.array([[1.0], [1.0], [1.0], [2.0]])  # rows i, f, o, g
    b = numpy.array([-1.0, -1.0, -1.0, 0.0])  # i, f, o pre-activations are 0 -> gates 1/2
    W_h = numpy.array([[0.0], [0.0], [0.0], [1.0]])  # h feeds only the candidate g
    cont = numpy.ones((2, 1))  # step 0 continues from the initial state h0 = c0 = 1
    h0 = c0 = numpy.ones((1, 1))
    return x, LSTMParams(W_x, b, W_h), cont, h0, c0


def test_eb_rule_hand_example():
    # Forward (i = f = o = sigmoid(0) = 1/2 at both steps):
    #   t=0: z_g = 2*1 + 1*h0 = 3, g0 = 3; c0' = f*c0 + i*g0 = 0.5*1 + 0.5*3 = 2;   h_0 = 0.5*2   = 1
    #   t=1: z_g = 2*1 + 1*h_0 = 3, g1 = 3; c_1 = 0.5*2 + 0.5*3 = 2.5;              h_1 = 0.5*2.5 = 1.25
    # EB, seed P(h_1) = 1:
    #   t=1: P(c_1) = 1 (act(c_1) > 0). Split of c_1 = 2.5 into f c_0 = 1 and i g1 = 1.5:
    #        P(c_0) += 1/2.5 = 0.4,  P(g1) = 1.5/2.5 = 0.6.
    #        Z = 2*x_1 + 1*h_0 = 2 + 1 = 3:  P(x_1) = 2 * 0.6/3 = 0.4,  P(h_0) = 1 * 0.6/3 = 0.2.
    #   t=0: P(c_0) = 0.4 + P(h_0) = 0.6. Split of c_0 = 2 into f c0 = 0.5 and i g0 = 1.5:
    #        P(c0) = 0.6 * 0.5/2 = 0.15,  P(g0) = 0.6 * 1.5/2 = 0.45.
    #        Z = 2*x_0 + 1*h0 = 3:  P(x_0) = 2 * 0.45/3 = 0.3,  P(h0) = 1 * 0.45/3 = 0.15.
    #   Total: 0.3 + 0.4 + 0.15 + 0.15 = 1.
    x, params, cont, h0, c0 = _hand_example()
    h, cache = lstm_forward(x, params, cont=cont, h0=h0, c0=c0)
    numpy.testing.assert_allclose(h.ravel(), [1.0, 1.25], rtol=1e-15)
    p_h = numpy.array([0.0, 1.0]).reshape(2, 1, 1)
    sig = lstm_eb(p_h, cache, rule="eb")
    numpy.testing.assert_allclose(sig.p_x.ravel(), [0.3, 0.4], rtol=1e-14)
    numpy.testing.assert_allclose([sig.p_h0.item(), sig.p_c0.item()], [0.15, 0.15], rtol=1e-14)
    numpy.testing.assert_array_equal(sig.lost, 0)
    assert sig.p_static is None and sig.rule == "eb"


def test_caffe_rule_hand_example():
    # Same forward. Caffe rule (gradient of the cell, recurrent branch cut), seed P(h_1) = 1:
    #   t=1: kappa_1 = P(h_1) o_1 1[c_1 > 0] = 0.5
    #        dz_i = kappa g1 i(1-i) = 0.5*3*0.25 = 0.375;   dz_f = kappa c_0 f(1-f) = 0.5*2*0.25 = 0.25
    #        dz_o = P(h_1) relu(c_1) o(1-o) = 2.5*0.25 = 0.625;   dz_g = kappa i 1[z_g > 0] = 0.25
    #        P(c_0) = f kappa = 0.25.  With D = 1 and every Z = W_x+ x > 0, P(x_1) = sum(dz) = 1.5.
    #   t=0: kappa_0 = 0.25 (h_0 gets nothing: the recurrent branch is cut)
    #        dz_i = 0.25*3*0.25 = 0.1875;  dz_f = 0.25*c0*0.25 = 0.0625;  dz_o = 0;  dz_g = 0.25*0.5 = 0.125
    #        P(x_0) = 0.375;  P(c0) = f kappa_0 = 0.125;  P(h0) = 0.
    #   Total at the inputs 1.875 > 1: the rule does not conserve.
    x, params, cont, h0, c0 = _hand_example()
    _, cache = lstm_forward(x, params, cont=cont, h0=h0, c0=c0)
    sig = lstm_eb(numpy.array([0.0, 1.0]).reshape(2, 1, 1), cache, rule="caffe")
    numpy.testing.assert_allclose(sig.p_x.ravel(), [0.375, 1.5], rtol=1e-14)
    assert sig.p_c0.item() == pytest.approx(0.125, rel=1e-14)
    assert sig.p_h0.item() == 0.0
    numpy.testing.assert_array_equal(sig.lost, 0)


# ----------------------------------------------------------------------- rule "eb": oracle, conservation


@pytest.mark.parametrize("static", [False, True])
def test_eb_rule_matches_naive_loops(xp, dtype, static):
    rng = numpy.random.default_rng(0x1A07)
    x, W_x, b, W_h, W_s, s = _case(rng, Ds=2 if static else None)
    cont = numpy.array([[1, 1], [1, 1], [0, 1], [1, 1], [1, 0]], dtype=float)
    h0, c0 = rng.uniform(0, 1, (2, 2)), rng.uniform(0, 1, (2, 2))
    p_h = rng.uniform(0, 1, (5, 2, 2)) * (rng.uniform(size=(5, 1, 1)) < 0.6)  # seeds at some steps
    _, cache = lstm_forward(
        xp.asarray(x, dtype),
        _params(W_x, b, W_h, W_s, xp, dtype),
        cont=xp.asarray(cont),
        static=None if s is None else xp.asarray(s, dtype),
        h0=xp.asarray(h0, dtype),
        c0=xp.asarray(c0, dtype),
    )
    sig = lstm_eb(xp.asarray(p_h, dtype), cache, rule="eb")
    fw = naive_forward(x, W_x, b, W_h, W_s, s, cont, h0, c0)
    expect = naive_eb_conserving(fw, p_h, x, W_x, W_h, W_s, s)
    names = ("p_x", "p_static", "p_h0", "p_c0", "lost")
    for name, got, want in zip(names, sig, expect):
        if want is None:
            assert got is None
            continue
        assert got.dtype == dtype, name
        assert rel_err(got, want) < 10 * RTOL[dtype] or numpy.abs(to_numpy(got) - want).max() < 1e-15, name
    assert numpy.abs(_balance(sig, p_h)).max() < 10 * RTOL[dtype] * p_h.sum()


def test_eb_rule_conserves_step_by_step():
    """Every normaliser > 0: the signal crossing each time boundary balances exactly.

    The steps ``t0..T-1`` run as their own sequence started from the state at ``t0 - 1``;
    what that run sends to its initial state is the signal crossing the boundary
    before step ``t0`` in the full run.
    """
    rng = numpy.random.default_rng(0x1A08)
    T, N = 6, 2
    x, W_x, b, W_h, W_s, s = _case(rng, T=T, N=N, D=3, H=3, Ds=2, positive=True)
    params = LSTMParams(W_x, b, W_h, W_s)
    cont = numpy.ones((T, N))
    cont[3, 0] = 0  # a reset in the middle for sample 0
    h0, c0 = rng.uniform(0, 1, (N, 3)), rng.uniform(0, 1, (N, 3))
    p_h = rng.uniform(0, 1, (T, N, 3))
    h, cache = lstm_forward(x, params, cont=cont, static=s, h0=h0, c0=c0)
    full = lstm_eb(p_h, cache, rule="eb")
    numpy.testing.assert_array_equal(full.lost, 0)
    assert numpy.abs(_balance(full, p_h)).max() < 1e-12 * p_h.sum()
    crossing, static_part = numpy.zeros((T + 1, N)), numpy.zeros((T + 1, N))
    for t0 in range(T):
        _, sub = lstm_forward(
            x[t0:],
            params,
            cont=cont[t0:],
            static=s,
            h0=h0 if t0 == 0 else h[t0 - 1],
            c0=c0 if t0 == 0 else cache.c[t0 - 1],
        )
        sig = lstm_eb(p_h[t0:], sub, rule="eb")
        assert rel_err(sig.p_x, full.p_x[t0:]) < 1e-12
        crossing[t0] = sig.p_h0.sum(axis=1) + sig.p_c0.sum(axis=1)
        static_part[t0] = sig.p_static.sum(axis=1)
        numpy.testing.assert_allclose(
            crossing[t0] + static_part[t0] + sig.p_x.sum(axis=(0, 2)), p_h[t0:].sum(axis=(0, 2)), rtol=1e-12
        )
    assert numpy.all(crossing[3, 0] == 0)  # nothing crosses a reset
    for t in range(T):  # per step: in = seed + crossing from t+1; out = x_t + static share + crossing to t-1
        numpy.testing.assert_allclose(
            p_h[t].sum(axis=1) + crossing[t + 1],
            full.p_x[t].sum(axis=1) + (static_part[t] - static_part[t + 1]) + crossing[t],
            rtol=1e-12,
        )


def test_eb_rule_accounts_for_zero_denominators():
    rng = numpy.random.default_rng(0x1A09)
    T, N, D, H = 4, 2, 3, 3
    x, W_x, b, W_h, _, _ = _case(rng, T=T, N=N, D=D, H=H)
    g = 3 * H  # first row of the g block
    # unit 0: candidate always 0, so c = 0 from a fresh start and P(h_t) dies at h_t -> c_t
    W_x[g], W_h[g], b[g] = 0.0, 0.0, -5.0
    # unit 1: g > 0 (big bias) but no excitatory weight into it: Z = 0, P(g_t) is dropped
    W_x[g + 1], W_h[g + 1], b[g + 1] = -numpy.abs(W_x[g + 1]), -numpy.abs(W_h[g + 1]), 5.0
    _, cache = lstm_forward(x, LSTMParams(W_x, b, W_h))
    p_h = rng.uniform(0, 1, (T, N, H))
    sig = lstm_eb(p_h, cache, rule="eb")
    fw = naive_forward(x, W_x, b, W_h)
    expect = naive_eb_conserving(fw, p_h, x, W_x, W_h)
    assert rel_err(sig.lost, expect[4]) < 1e-12 and rel_err(sig.p_x, expect[0]) < 1e-12
    assert numpy.all(sig.lost > 0)
    numpy.testing.assert_allclose(_balance(sig, p_h), 0, atol=1e-13)
    # a seed on unit 0 alone is lost in full at its own step and reaches nothing else
    only0 = numpy.zeros_like(p_h)
    only0[:, :, 0] = p_h[:, :, 0]
    sig0 = lstm_eb(only0, cache, rule="eb")
    numpy.testing.assert_allclose(sig0.lost, p_h[:, :, 0], rtol=1e-15)
    numpy.testing.assert_array_equal(sig0.p_x, 0)


def test_eb_rule_survives_a_cell_state_decaying_to_denormals():
    """float32, x = 0 after step 0 and g = 0: c_t = f^t c_0 underflows through the denormals to 0.

    Splitting c_t by fractions (i g / c_t, not P(c_t) / c_t) never overflows; the balance holds.
    """
    T = 200
    x = numpy.zeros((T, 1, 1), numpy.float32)
    x[0] = 1.0
    W_x = numpy.array([[0.0], [0.0], [0.0], [1.0]], numpy.float32)  # f = i = o = 1/2, g_t = x_t
    _, cache = lstm_forward(
        x, LSTMParams(W_x, numpy.zeros(4, numpy.float32), numpy.zeros((4, 1), numpy.float32))
    )
    c = cache.c.ravel()
    assert numpy.any((c > 0) & (c < numpy.finfo(numpy.float32).tiny)) and c[-1] == 0
    p_h = numpy.ones((T, 1, 1), numpy.float32)
    sig = lstm_eb(p_h, cache, rule="eb")  # warnings are errors under pytest
    assert all(numpy.all(numpy.isfinite(a)) and numpy.all(a >= 0) for a in (sig.p_x, sig.p_c0, sig.lost))
    assert abs(_balance(sig, p_h).item()) < 1e-4 * T
    assert sig.lost[-1].item() == 1.0  # c_T == 0: the seed at T dies at h_T -> c_T


def test_eb_rule_rejects_tanh_without_override():
    rng = numpy.random.default_rng(0x1A0A)
    x, W_x, b, W_h, _, _ = _case(rng)
    _, cache = lstm_forward(x, LSTMParams(W_x, b, W_h), cell_act="tanh")
    p_h = rng.uniform(0, 1, (5, 2, 2))
    with pytest.raises(ValueError, match="assumption A1"):
        lstm_eb(p_h, cache, rule="eb")
    sig = lstm_eb(p_h, cache, rule="eb", allow_tanh=True)  # runs; the balance still holds formally
    expect = naive_eb_conserving(
        naive_forward(x, W_x, b, W_h, cell_act="tanh"), p_h, x, W_x, W_h, cell_act="tanh"
    )
    assert rel_err(sig.p_x, expect[0]) < 1e-10
    numpy.testing.assert_allclose(_balance(sig, p_h), 0, atol=1e-12)
    lstm_eb(p_h, cache, rule="caffe")  # the released code's rule runs on tanh cells
    with pytest.raises(ValueError, match="rule must be one of"):
        lstm_eb(p_h, cache, rule="lrp")
    with pytest.raises(ValueError, match=r"lstm_eb: signal of shape \(5, 2, 3\)"):
        lstm_eb(numpy.ones((5, 2, 3)), cache, rule="caffe")


def test_stacked_lstms_compose_and_conserve():
    """A 2-layer decoder: layer 1's p_x is layer 0's p_h (non-zero at every step)."""
    rng = numpy.random.default_rng(0x1A0B)
    T, N, D, H0, H1 = 5, 2, 3, 3, 2
    x, W_x0, b0, W_h0, _, _ = _case(rng, T=T, N=N, D=D, H=H0, positive=True)
    _, W_x1, b1, W_h1, _, _ = _case(rng, T=T, N=N, D=H0, H=H1, positive=True)
    h0_out, cache0 = lstm_forward(x, LSTMParams(W_x0, b0, W_h0))
    _, cache1 = lstm_forward(h0_out, LSTMParams(W_x1, b1, W_h1))
    p_h = numpy.zeros((T, N, H1))
    p_h[-1] = 1.0
    sig1 = lstm_eb(p_h, cache1, rule="eb")
    sig0 = lstm_eb(sig1.p_x, cache0, rule="eb")
    fw0 = naive_forward(x, W_x0, b0, W_h0)
    assert rel_err(sig0.p_x, naive_eb_conserving(fw0, to_numpy(sig1.p_x), x, W_x0, W_h0)[0]) < 1e-12
    assert numpy.all(sig1.p_x.sum(axis=(1, 2)) > 0)
    left_per_layer = [s_.p_h0.sum() + s_.p_c0.sum() + s_.lost.sum() for s_ in (sig0, sig1)]
    assert sig0.p_x.sum() + sum(left_per_layer) == pytest.approx(p_h.sum(), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(1, 5),
    N=st.integers(1, 3),
    D=st.integers(1, 4),
    H=st.integers(1, 3),
    static=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    a=st.floats(0.1, 10),
    b=st.floats(0.1, 10),
)
def test_eb_rule_properties(T, N, D, H, static, seed, steps, a, b):
    rng = numpy.random.default_rng(seed)
    x, W_x, b_, W_h, W_s, s = _case(rng, T=T, N=N, D=D, H=H, Ds=2 if static else None)
    cont = (rng.uniform(size=(T, N)) < 0.8).astype(float)
    h0, c0 = rng.uniform(0, 1, (N, H)), rng.uniform(0, 1, (N, H))
    _, cache = lstm_forward(x, LSTMParams(W_x, b_, W_h, W_s), cont=cont, static=s, h0=h0, c0=c0)
    mask = numpy.zeros((T, 1, 1))
    mask[[t for t in steps if t < T] or [T - 1]] = 1.0
    p1 = rng.uniform(0, 1, (T, N, H)) * mask
    p2 = rng.uniform(0, 1, (T, N, H)) * mask
    e1, e2 = lstm_eb(p1, cache, rule="eb"), lstm_eb(p2, cache, rule="eb")
    expect = naive_eb_conserving(
        naive_forward(x, W_x, b_, W_h, W_s, s, cont, h0, c0), p1, x, W_x, W_h, W_s, s
    )
    for got, want in zip(e1, expect):
        if want is not None:
            assert numpy.abs(got - want).max() <= 1e-10 * max(1.0, numpy.abs(want).max())
    for arr in e1[:5]:
        assert arr is None or numpy.all(arr >= 0)  # non-negativity
    assert numpy.abs(_balance(e1, p1)).max() <= 1e-12 * max(1.0, p1.sum())  # seed == inputs + state + lost
    e12 = lstm_eb(a * p1 + b * p2, cache, rule="eb")  # linearity in the seed
    for u, v, w in zip(e12[:5], e1[:5], e2[:5]):
        if u is not None:
            assert numpy.abs(u - (a * v + b * w)).max() <= 1e-12 * max(1.0, numpy.abs(u).max())


# ------------------------------------------------------------------------------------- rule "caffe"


def test_caffe_rule_matches_closed_form_for_last_step_seed(xp, dtype):
    """docs/spec.md §4.3: kappa_t = (prod_{s>t} f_s) kappa_T, then the EB linear rule on W_x."""
    rng = numpy.random.default_rng(0x1A0C)
    T, N, D, H = 6, 2, 4, 3
    x, W_x, b, W_h, _, _ = _case(rng, T=T, N=N, D=D, H=H)
    p_T = rng.uniform(0, 1, (N, H))
    p_h = numpy.zeros((T, N, H))
    p_h[-1] = p_T
    _, cache = lstm_forward(xp.asarray(x, dtype), _params(W_x, b, W_h, None, xp, dtype))
    sig = lstm_eb(xp.asarray(p_h, dtype), cache, rule="caffe")

    fw = naive_forward(x, W_x, b, W_h)  # cont = 0 at the first step, 1 after
    i, f, o, g, c, zg = (fw[k] for k in ("i", "f", "o", "g", "c", "zg"))
    kappa_T = p_T * o[-1] * (c[-1] > 0)
    later_f = numpy.concatenate(
        [numpy.cumprod(f[::-1], axis=0)[::-1][1:], numpy.ones((1, N, H))]
    )  # prod_{s>t} f_s
    kappa = later_f * kappa_T  # (T, N, H)
    c_prev = numpy.concatenate([numpy.zeros((1, N, H)), c[:-1]])
    cont = numpy.ones((T, 1, 1))
    cont[0] = 0
    dz = {
        "i": kappa * g * i * (1 - i),
        "f": cont * kappa * c_prev * f * (1 - f),
        "o": numpy.zeros((T, N, H)),
        "g": kappa * i * (zg > 0),
    }
    dz["o"][-1] = p_T * numpy.maximum(c[-1], 0) * o[-1] * (1 - o[-1])  # the o gate only at the seeded step
    dz_all = numpy.concatenate([dz["i"], dz["f"], dz["o"], dz["g"]], axis=-1)  # Caffe rows [i; f; o; g]
    expect, lost = numpy.zeros((T, N, D)), numpy.zeros((T, N))
    for t in range(T):
        for n in range(N):
            expect[t, n], lost[t, n] = eb_matrix(numpy.maximum(W_x, 0), x[t, n], dz_all[t, n])
    assert rel_err(sig.p_x, expect) < 10 * RTOL[dtype]
    assert rel_err(sig.lost, lost) < 10 * RTOL[dtype] and lost.sum() > 0  # a row of W_x with no W+ entry
    assert numpy.all(to_numpy(sig.p_h0) == 0) and numpy.all(to_numpy(sig.p_c0) == 0)  # cont_0 = 0
    assert float(sig.p_x.sum()) != pytest.approx(p_T.sum(), rel=1e-3)  # not conserving


def test_caffe_rule_static_branch_gets_the_full_gate_signal():
    """Both receiving branches conserve what they get, and each gets all of dz: sum p_x == sum p_static."""
    rng = numpy.random.default_rng(0x1A0D)
    x, W_x, b, W_h, W_s, s = _case(rng, T=5, N=2, D=3, H=2, Ds=3, positive=True)
    cont = numpy.ones((5, 2))
    h0, c0 = rng.uniform(0, 1, (2, 2)), rng.uniform(0, 1, (2, 2))
    _, cache = lstm_forward(x, LSTMParams(W_x, b, W_h, W_s), cont=cont, static=s, h0=h0, c0=c0)
    sig = lstm_eb(rng.uniform(0, 1, (5, 2, 2)), cache, rule="caffe")
    numpy.testing.assert_array_equal(sig.lost, 0)
    numpy.testing.assert_allclose(sig.p_x.sum(axis=(0, 2)), sig.p_static.sum(axis=1), rtol=1e-12)
    numpy.testing.assert_array_equal(sig.p_h0, 0)  # the recurrent branch receives exactly nothing
    assert numpy.all(sig.p_c0 > 0)


def test_caffe_rule_reports_signal_dropped_at_zero_normalisers():
    rng = numpy.random.default_rng(0x1A0E)
    T, N, D, H = 4, 2, 3, 2
    x, W_x, b, W_h, W_s, s = _case(rng, T=T, N=N, D=D, H=H, Ds=2)
    W_x[:, 0], W_s[:, 0] = (
        numpy.abs(W_x[:, 0]),
        numpy.abs(W_s[:, 0]),
    )  # every row has an excitatory weight ...
    W_x[1] = -numpy.abs(W_x[1])  # ... except row 1 of W_x (gate i, unit 1): Z = W_x+ x_t = 0 at every step
    W_s[2] = -numpy.abs(W_s[2])  # ... and row 2 of W_s (gate f, unit 0): Z_s = W_s+ s = 0
    _, cache = lstm_forward(x, LSTMParams(W_x, b, W_h, W_s), static=s)
    p_h = rng.uniform(0, 1, (T, N, H))
    sig = lstm_eb(p_h, cache, rule="caffe")
    # the caffe gate signal by its recursion (recurrent branch cut): kappa_t = P(c_t) + P(h_t) o_t 1[c_t > 0]
    fw = naive_forward(x, W_x, b, W_h, W_s, s)
    kappa, carry = numpy.zeros((T, N, H)), numpy.zeros((N, H))
    for t in range(T - 1, -1, -1):
        kappa[t] = carry + p_h[t] * fw["o"][t] * (fw["c"][t] > 0)
        carry = kappa[t] * fw["f"][t] * (t > 0)  # cont_0 = 0
    i, f = fw["i"], fw["f"]
    dz_i1 = (kappa * fw["g"] * i * (1 - i))[..., 1]
    dz_f0 = (kappa * fw["c_prev"] * f * (1 - f))[..., 0] * (numpy.arange(T) > 0)[:, None]
    numpy.testing.assert_allclose(sig.lost, dz_i1 + dz_f0, rtol=1e-12)
    assert numpy.all(dz_f0[1:] > 0)


# ------------------------------------------------------------------------------- docs/lstm.md example


def _doc_example():
    """``name = value`` lines of the worked-example block of docs/lstm.md."""
    text = DOC.read_text()
    block = re.search(
        r"<!-- worked-example: begin -->\s*```text\n(.*?)```\s*<!-- worked-example: end -->", text, re.S
    )
    assert block, "docs/lstm.md has no worked-example block"
    values = {}
    for line in block.group(1).splitlines():
        m = re.match(r"\s*([\w.]+)\s*=\s*(\[[^\]]*\]|[-+0-9.eE/]+)", line)
        if m:
            nums = re.findall(r"[-+]?[0-9.]+(?:/[0-9]+)?(?:[eE][-+]?[0-9]+)?", m.group(2))
            values[m.group(1)] = numpy.array([eval(v) if "/" in v else float(v) for v in nums])
    return values


def test_docs_worked_example():
    v = _doc_example()
    T = len(v["x"])
    col = lambda a: a.reshape(-1, 1)  # noqa: E731
    params = LSTMParams(col(v["W_x"]), v["b"], col(v["W_h"]))
    h, cache = lstm_forward(
        v["x"].reshape(T, 1, 1),
        params,
        cont=v["cont"].reshape(T, 1),
        h0=v["h0"].reshape(1, 1),
        c0=v["c0"].reshape(1, 1),
    )
    numpy.testing.assert_allclose(h.ravel(), v["h"], rtol=1e-12)
    numpy.testing.assert_allclose(cache.c.ravel(), v["c"], rtol=1e-12)
    for rule in ("eb", "caffe"):
        sig = lstm_eb(v["seed"].reshape(T, 1, 1), cache, rule=rule)
        for name in ("p_x", "p_h0", "p_c0", "lost"):
            numpy.testing.assert_allclose(
                getattr(sig, name).ravel(),
                v[f"{rule}.{name}"],
                rtol=1e-12,
                atol=1e-15,
                err_msg=f"{rule}.{name}",
            )
    for name in ("p_x", "p_h0", "p_c0"):  # also the hand-derived test above uses the same numbers
        assert f"eb.{name}" in v and f"caffe.{name}" in v
