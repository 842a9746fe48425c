"""lstm vs PyTorch float64: gradient vs autograd (hand-unrolled cell, torch.nn.LSTM with the gate-order
mapping, a 2-layer nn.LSTM vs two composed layers); rule "caffe" vs the released code's EB rebuilt in
torch (recurrent branch detached, EB linear rule on the input and static branches)."""

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.layers.lstm import GATE_ORDER, LSTMParams, gate_slice, lstm_eb, lstm_forward, lstm_grad

from ..conftest import rel_err

torch = pytest.importorskip("torch")
from ..oracles.torch_lstm import autograd_vjp, caffe_eb, params_from_torch, torch_block_perm  # noqa: E402

pytestmark = pytest.mark.oracle


def _case(rng, T=5, N=2, D=3, H=2, Ds=None):
    x = rng.uniform(0.1, 1, (T, N, D))
    W_x = rng.normal(size=(4 * H, D))
    b = rng.normal(scale=0.3, size=4 * H)
    W_h = rng.normal(size=(4 * H, H))
    W_s = None if Ds is None else rng.normal(size=(4 * H, Ds))
    s = None if Ds is None else rng.uniform(0.1, 1, (N, Ds))
    return x, W_x, b, W_h, W_s, s


@pytest.mark.parametrize("cell_act", ["relu", "tanh"])
@pytest.mark.parametrize("static", [False, True])
def test_grad_matches_torch_autograd(cell_act, static):
    rng = numpy.random.default_rng(0x2B01)
    x, W_x, b, W_h, W_s, s = _case(rng, T=6, N=3, D=4, H=3, Ds=2 if static else None)
    cont = numpy.ones((6, 3))
    cont[3, 1] = cont[4, 2] = 0  # resets in the middle; step 0 continues from h0, c0
    h0, c0 = rng.uniform(0, 1, (3, 3)), rng.uniform(0, 1, (3, 3))
    g_h = rng.normal(size=(6, 3, 3))
    _, cache = lstm_forward(
        x, LSTMParams(W_x, b, W_h, W_s), cont=cont, static=s, h0=h0, c0=c0, cell_act=cell_act
    )
    got = lstm_grad(g_h, cache)
    want = autograd_vjp(g_h, x, W_x, b, W_h, cont, h0, c0, cell_act, W_s, s)
    for name, a, w in zip(("g_x", "g_static", "g_h0", "g_c0"), got, want):
        if w is None:
            assert a is None
        else:
            assert rel_err(a, w) < 1e-10, name


def test_gate_order_mapping_from_torch_is_explicit():
    """torch blocks (i, f, g, o) -> ours (i, f, o, g): fill each torch block with its own constant."""
    H, D = 2, 3
    assert torch_block_perm(GATE_ORDER) == [0, 1, 3, 2]
    lstm = torch.nn.LSTM(D, H).double()
    code = {"i": 1.0, "f": 2.0, "g": 3.0, "o": 4.0}
    with torch.no_grad():
        for k, name in enumerate(("i", "f", "g", "o")):  # torch's documented order
            lstm.weight_ih_l0[k * H : (k + 1) * H] = code[name]
            lstm.weight_hh_l0[k * H : (k + 1) * H] = 10 * code[name]
            lstm.bias_ih_l0[k * H : (k + 1) * H] = 100 * code[name]
            lstm.bias_hh_l0[k * H : (k + 1) * H] = 1000 * code[name]
    W_x, b, W_h = params_from_torch(lstm, 0, GATE_ORDER)
    for name in GATE_ORDER:
        sl = gate_slice(name, H)
        numpy.testing.assert_array_equal(W_x[sl], code[name])
        numpy.testing.assert_array_equal(W_h[sl], 10 * code[name])
        numpy.testing.assert_array_equal(b[sl], 1100 * code[name])  # the two biases summed


@pytest.mark.parametrize("fresh_start", [True, False])
def test_tanh_lstm_matches_torch_nn_lstm(fresh_start):
    """cell_act="tanh" is torch.nn.LSTM: forward and gradients, with cont all ones after step 0."""
    rng = numpy.random.default_rng(0x2B02)
    T, N, D, H = 7, 3, 4, 5
    torch.manual_seed(0x2B02)
    lstm = torch.nn.LSTM(D, H).double()
    W_x, b, W_h = params_from_torch(lstm, 0, GATE_ORDER)
    x = rng.normal(size=(T, N, D))
    h0, c0 = rng.normal(size=(N, H)), rng.normal(size=(N, H))
    cont = numpy.ones((T, N))
    if fresh_start:
        cont[0] = 0  # torch then starts from zeros
        h0_t, c0_t = numpy.zeros((1, N, H)), numpy.zeros((1, N, H))
    else:
        h0_t, c0_t = h0[None], c0[None]
    xt = torch.tensor(x, requires_grad=True)
    h0_tt = torch.tensor(h0_t, requires_grad=True)
    c0_tt = torch.tensor(c0_t, requires_grad=True)
    out, _ = lstm(xt, (h0_tt, c0_tt))
    g_h = rng.normal(size=(T, N, H))
    (out * torch.tensor(g_h)).sum().backward()

    h, cache = lstm_forward(x, LSTMParams(W_x, b, W_h), cont=cont, h0=h0, c0=c0, cell_act="tanh")
    assert rel_err(h, out.detach().numpy()) < 1e-12
    grads = lstm_grad(g_h, cache)
    assert rel_err(grads.g_x, xt.grad.numpy()) < 1e-10
    if not fresh_start:
        assert rel_err(grads.g_h0, h0_tt.grad.numpy()[0]) < 1e-10
        assert rel_err(grads.g_c0, c0_tt.grad.numpy()[0]) < 1e-10


def test_two_layer_lstm_composes_like_torch():
    """Stacked LSTMs: layer 1's input gradient is layer 0's g_h; compare with nn.LSTM(num_layers=2)."""
    rng = numpy.random.default_rng(0x2B03)
    T, N, D, H = 6, 2, 3, 4
    torch.manual_seed(0x2B03)
    lstm = torch.nn.LSTM(D, H, num_layers=2).double()
    p0 = LSTMParams(*params_from_torch(lstm, 0, GATE_ORDER))
    p1 = LSTMParams(*params_from_torch(lstm, 1, GATE_ORDER))
    x = rng.normal(size=(T, N, D))
    xt = torch.tensor(x, requires_grad=True)
    out, _ = lstm(xt)
    g_h = rng.normal(size=(T, N, H))
    (out * torch.tensor(g_h)).sum().backward()
    h_0, cache0 = lstm_forward(x, p0, cell_act="tanh")
    h_1, cache1 = lstm_forward(h_0, p1, cell_act="tanh")
    assert rel_err(h_1, out.detach().numpy()) < 1e-12
    g_x = lstm_grad(lstm_grad(g_h, cache1).g_x, cache0).g_x
    assert rel_err(g_x, xt.grad.numpy()) < 1e-10


@pytest.mark.parametrize("cell_act", ["relu", "tanh"])
@pytest.mark.parametrize("static", [False, True])
def test_caffe_rule_matches_torch_oracle(cell_act, static):
    rng = numpy.random.default_rng(0x2B04)
    T, N, D, H = 6, 3, 4, 3
    x, W_x, b, W_h, W_s, s = _case(rng, T=T, N=N, D=D, H=H, Ds=3 if static else None)
    cont = numpy.ones((T, N))
    cont[2, 0] = cont[4, 1] = 0
    h0, c0 = rng.uniform(0, 1, (N, H)), rng.uniform(0, 1, (N, H))
    p_h = rng.uniform(0, 1, (T, N, H)) * (rng.uniform(size=(T, 1, 1)) < 0.5)
    p_h[-1] = rng.uniform(0, 1, (N, H))
    _, cache = lstm_forward(
        x, LSTMParams(W_x, b, W_h, W_s), cont=cont, static=s, h0=h0, c0=c0, cell_act=cell_act
    )
    sig = lstm_eb(p_h, cache, rule="caffe")
    want = caffe_eb(p_h, x, W_x, b, W_h, cont, h0, c0, cell_act, W_s, s)
    assert rel_err(sig.p_x, want["p_x"]) < 1e-10
    assert rel_err(sig.p_c0, want["p_c0"]) < 1e-10
    numpy.testing.assert_array_equal(sig.p_h0, 0)
    numpy.testing.assert_array_equal(want["p_h0"], 0)  # the oracle's recurrent branch is detached too
    if static:
        assert rel_err(sig.p_static, want["p_s"]) < 1e-10
        # the static branch receives the full gate signal of every step
        numpy.testing.assert_allclose(want["dz_s"], want["dz"].sum(axis=0), rtol=1e-12)
    else:
        assert sig.p_static is None
    # whereas the gradient does reach h0 through the recurrent path the released rule cuts
    assert numpy.any(lstm_grad(p_h, cache).g_h0 != 0)


def test_caffe_rule_stacked_signals_match_torch_oracle():
    rng = numpy.random.default_rng(0x2B05)
    x, W_x, b, W_h, W_s, s = _case(rng, Ds=2)
    P = rng.uniform(0, 1, (3, 5, 2, 2))
    _, cache = lstm_forward(x, LSTMParams(W_x, b, W_h, W_s), static=s)
    sig = lstm_eb(P, cache, rule="caffe")
    cont = numpy.ones((5, 2))
    cont[0] = 0
    for k in range(3):
        want = caffe_eb(P[k], x, W_x, b, W_h, cont, None, None, "relu", W_s, s)
        assert rel_err(sig.p_x[k], want["p_x"]) < 1e-10
        assert rel_err(sig.p_static[k], want["p_s"]) < 1e-10


@settings(max_examples=20, deadline=None)
@given(
    T=st.integers(1, 5),
    N=st.integers(1, 3),
    D=st.integers(1, 4),
    H=st.integers(1, 3),
    static=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(st.integers(0, 4), min_size=1, max_size=3),
)
def test_caffe_rule_and_grad_properties(T, N, D, H, static, seed, steps):
    rng = numpy.random.default_rng(seed)
    x, W_x, b, W_h, W_s, s = _case(rng, T=T, N=N, D=D, H=H, Ds=2 if static else None)
    cont = (rng.uniform(size=(T, N)) < 0.8).astype(float)
    h0, c0 = rng.uniform(0, 1, (N, H)), rng.uniform(0, 1, (N, H))
    mask = numpy.zeros((T, 1, 1))
    mask[[t for t in steps if t < T] or [T - 1]] = 1.0
    p_h = rng.uniform(0, 1, (T, N, H)) * mask
    _, cache = lstm_forward(x, LSTMParams(W_x, b, W_h, W_s), cont=cont, static=s, h0=h0, c0=c0)
    sig = lstm_eb(p_h, cache, rule="caffe")
    want = caffe_eb(p_h, x, W_x, b, W_h, cont, h0, c0, "relu", W_s, s)
    tol = lambda w: 1e-10 * max(1.0, numpy.abs(w).max())  # noqa: E731
    assert numpy.abs(sig.p_x - want["p_x"]).max() <= tol(want["p_x"])
    assert numpy.abs(sig.p_c0 - want["p_c0"]).max() <= tol(want["p_c0"])
    assert numpy.all(sig.p_x >= 0) and numpy.all(sig.lost >= 0)  # ReLU cell, x >= 0, seed >= 0
    if static:
        assert numpy.abs(sig.p_static - want["p_s"]).max() <= tol(want["p_s"])
    g = lstm_grad(p_h, cache)
    gw = autograd_vjp(p_h, x, W_x, b, W_h, cont, h0, c0, "relu", W_s, s)
    assert numpy.abs(g.g_x - gw[0]).max() <= tol(gw[0])
    assert numpy.abs(g.g_h0 - gw[2]).max() <= tol(gw[2])
