"""relu, dropout, lrn, flatten: forward, pass-through EB, gradients against finite differences and torch."""

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers.dropout import dropout_eb, dropout_forward, dropout_grad
from ebr_ref.layers.flatten import flatten_eb, flatten_forward, flatten_grad
from ebr_ref.layers.linear import linear_eb, linear_forward
from ebr_ref.layers.lrn import lrn_eb, lrn_forward, lrn_grad
from ebr_ref.layers.relu import relu_eb, relu_forward, relu_grad

from ..conftest import RTOL, rel_err
from ..oracles.finite_diff import numerical_vjp
from ..oracles.naive_lrn import naive_lrn

# ---------------------------------------------------------------- relu


def test_relu_forward_eb_grad(xp, dtype):
    x = numpy.array([[-2.0, -0.0, 0.0, 1e-300, 3.0], [1.0, -1.0, 0.5, 0.0, -7.0]])
    y, cache = relu_forward(xp.asarray(x, dtype))
    assert y.dtype == dtype
    assert numpy.array_equal(to_numpy(y), numpy.maximum(x, 0).astype(dtype))
    p = numpy.arange(1.0, 11.0).reshape(2, 5)
    mask = (x.astype(dtype) > 0).astype(float)  # 1[y > 0]: 0 at exactly 0 (1e-300 underflows in float32)
    for fn in (relu_eb, relu_grad):
        out = fn(xp.asarray(p, dtype), cache)
        assert out.dtype == dtype
        assert numpy.array_equal(to_numpy(out), (p * mask).astype(dtype))
        stacked = to_numpy(fn(xp.asarray(numpy.stack([p, -p]), dtype), cache))
        assert numpy.array_equal(stacked, numpy.stack([p * mask, -p * mask]).astype(dtype))


def test_relu_mask_changes_nothing_inside_a_network():
    # the signal reaching a ReLU's output from the linear layer above is x_above * c = y * c: 0 where y == 0
    rng = numpy.random.default_rng(0x5C01)
    pre = rng.normal(size=(4, 6))
    y, relu_cache = relu_forward(pre)
    _, fc_cache = linear_forward(y, rng.normal(size=(3, 6)))
    for p_top in (rng.uniform(0, 1, (4, 3)), rng.normal(size=(4, 3))):  # a signed contrastive signal too
        p_y = linear_eb(p_top, fc_cache)
        assert numpy.array_equal(relu_eb(p_y, relu_cache), p_y)


def test_relu_grad_matches_finite_differences_and_torch():
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0x5C02)
    x = rng.normal(size=(3, 2, 4))
    x[numpy.abs(x) < 1e-3] = 0.5  # away from the kink
    y, cache = relu_forward(x)
    g_y = rng.normal(size=x.shape)
    assert rel_err(relu_grad(g_y, cache), numerical_vjp(lambda v: relu_forward(v)[0], x, g_y)) < 1e-9
    xt = torch.tensor(
        numpy.concatenate([x.ravel(), [0.0]]), requires_grad=True
    )  # torch also gives 0 at x == 0
    torch.relu(xt).backward(torch.ones_like(xt))
    _, cache0 = relu_forward(xt.detach().numpy())
    assert numpy.array_equal(relu_grad(numpy.ones(xt.shape), cache0), xt.grad.numpy())


def test_relu_rejects_wrong_signal_shape():
    _, cache = relu_forward(numpy.ones((2, 3)))
    with pytest.raises(ValueError, match=r"relu_eb: signal of shape \(3, 2\)"):
        relu_eb(numpy.ones((3, 2)), cache)


# ---------------------------------------------------------------- dropout


def test_dropout_is_the_identity_at_inference(xp, dtype):
    rng = numpy.random.default_rng(0x5C03)
    x = xp.asarray(rng.normal(size=(2, 3, 4, 4)), dtype)
    y, cache = dropout_forward(x, p=0.5)
    assert y.dtype == dtype and numpy.array_equal(to_numpy(y), to_numpy(x))
    assert cache.p == 0.5
    y2, _ = dropout_forward(x, p=0.5)
    assert numpy.array_equal(to_numpy(y2), to_numpy(y))  # no randomness
    P = xp.asarray(rng.normal(size=(3, 2, 3, 4, 4)), dtype)
    for fn in (dropout_eb, dropout_grad):
        assert numpy.array_equal(to_numpy(fn(P[0], cache)), to_numpy(P[0]))
        assert numpy.array_equal(to_numpy(fn(P, cache)), to_numpy(P))


def test_dropout_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\)"):
        dropout_forward(numpy.ones(3), p=1.0)
    _, cache = dropout_forward(numpy.ones((2, 3)), p=0.0)
    with pytest.raises(ValueError, match="dropout_grad: signal of shape"):
        dropout_grad(numpy.ones((2, 4)), cache)


# ---------------------------------------------------------------- lrn

LRN_CASES = [  # size, alpha, beta, k
    (5, 1e-4, 0.75, 1.0),  # AlexNet / CaffeNet
    (3, 0.5, 0.75, 2.0),
    (1, 2.0, 1.5, 0.5),
    (7, 3.0, 0.6, 1.0),  # window wider than the 6 channels below
]


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_forward_matches_naive_loops(xp, dtype, case):
    size, alpha, beta, k = case
    x = numpy.random.default_rng(0x5C04).normal(size=(2, 6, 3, 4))
    y, cache = lrn_forward(xp.asarray(x, dtype), size=size, alpha=alpha, beta=beta, k=k)
    assert y.dtype == dtype
    assert rel_err(y, naive_lrn(x, size, alpha, beta, k)) < RTOL[dtype]
    g = lrn_grad(xp.asarray(x, dtype), cache)
    assert g.dtype == dtype


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_grad_matches_finite_differences(case):
    size, alpha, beta, k = case
    rng = numpy.random.default_rng(0x5C05)
    x = rng.normal(size=(2, 6, 2, 3))
    y, cache = lrn_forward(x, size=size, alpha=alpha, beta=beta, k=k)
    g_y = rng.normal(size=x.shape)
    expect = numerical_vjp(lambda v: lrn_forward(v, size=size, alpha=alpha, beta=beta, k=k)[0], x, g_y)
    assert rel_err(lrn_grad(g_y, cache), expect) < 1e-8


@pytest.mark.oracle
@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_matches_torch(case):
    # torch.nn.functional.local_response_norm averages the squares over `size` channels, i.e. its alpha is
    # Caffe's alpha (Caffe writes alpha / n explicitly); the windows agree for odd sizes
    torch = pytest.importorskip("torch")
    size, alpha, beta, k = case
    rng = numpy.random.default_rng(0x5C06)
    x = rng.normal(size=(2, 6, 3, 4)) * 3
    y, cache = lrn_forward(x, size=size, alpha=alpha, beta=beta, k=k)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.local_response_norm(xt, size, alpha=alpha, beta=beta, k=k)
    g_y = rng.normal(size=x.shape)
    yt.backward(torch.tensor(g_y))
    assert rel_err(y, yt.detach().numpy()) < 1e-13
    assert rel_err(lrn_grad(g_y, cache), xt.grad.numpy()) < 1e-12


def test_lrn_eb_is_the_identity_and_stacked_grad_equals_separate(xp):
    rng = numpy.random.default_rng(0x5C07)
    x = xp.asarray(rng.normal(size=(2, 5, 3, 3)))
    _, cache = lrn_forward(x, size=3, alpha=1.0, beta=0.75, k=1.0)
    P = xp.asarray(rng.uniform(0, 1, (3, 2, 5, 3, 3)))
    assert numpy.array_equal(to_numpy(lrn_eb(P, cache)), to_numpy(P))
    assert numpy.array_equal(to_numpy(lrn_eb(P[1], cache)), to_numpy(P[1]))
    stacked = to_numpy(lrn_grad(P, cache))
    for k in range(3):
        assert rel_err(stacked[k], lrn_grad(P[k], cache)) < 1e-15


def test_lrn_rejects_bad_arguments():
    x = numpy.ones((1, 4, 2, 2))
    with pytest.raises(ValueError, match="lrn: size must be a positive odd int"):
        lrn_forward(x, size=4)
    with pytest.raises(ValueError, match="lrn: needs alpha >= 0 and k > 0"):
        lrn_forward(x, k=0.0)
    with pytest.raises(ValueError, match=r"lrn: x must be \(N, C, H, W\)"):
        lrn_forward(numpy.ones((4, 2)))
    _, cache = lrn_forward(x)
    with pytest.raises(ValueError, match="lrn_eb: signal of shape"):
        lrn_eb(numpy.ones((1, 4, 2)), cache)


# ---------------------------------------------------------------- flatten


def test_flatten_order_and_reshape_back(xp, dtype):
    rng = numpy.random.default_rng(0x5C08)
    x = rng.normal(size=(2, 3, 4, 5))
    y, cache = flatten_forward(xp.asarray(x, dtype))
    assert y.shape == (2, 60) and y.dtype == dtype
    y = to_numpy(y)
    for n, c, h, w in [(0, 0, 0, 1), (1, 2, 3, 4), (0, 1, 2, 0), (1, 0, 3, 2)]:
        assert y[n, (c * 4 + h) * 5 + w] == x.astype(dtype)[n, c, h, w]  # C, H, W order
    P = rng.normal(size=(3, 2, 60))
    for fn in (flatten_eb, flatten_grad):
        back = to_numpy(fn(xp.asarray(P[0], dtype), cache))
        assert back.shape == x.shape
        assert numpy.array_equal(to_numpy(flatten_forward(back)[0]), P[0].astype(dtype))  # exact inverse
        stacked = to_numpy(fn(xp.asarray(P, dtype), cache))
        assert stacked.shape == (3,) + x.shape
        assert numpy.array_equal(stacked[2], to_numpy(fn(xp.asarray(P[2], dtype), cache)))


@pytest.mark.oracle
def test_flatten_matches_torch_flatten():
    torch = pytest.importorskip("torch")
    x = numpy.random.default_rng(0x5C09).normal(size=(2, 3, 2, 4))
    assert numpy.array_equal(flatten_forward(x)[0], torch.flatten(torch.tensor(x), 1).numpy())


def test_flatten_rejects_bad_shapes():
    with pytest.raises(ValueError, match="flatten: x must be"):
        flatten_forward(numpy.ones(3))
    _, cache = flatten_forward(numpy.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"flatten_eb: signal of shape \(2, 11\)"):
        flatten_eb(numpy.ones((2, 11)), cache)


# ---------------------------------------------------------------- shared properties


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 5),
    H=st.integers(1, 4),
    W=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    a=st.floats(0.1, 10),
    b=st.floats(0.1, 10),
)
def test_pass_through_properties(N, C, H, W, seed, a, b):
    """Every pass-through EB is linear, non-negative on non-negative signals and conserves mass
    (ReLU: up to the signal masked where y == 0)."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(N, C, H, W))
    layers = [
        (relu_forward(x), relu_eb),
        (dropout_forward(x, p=0.3), dropout_eb),
        (lrn_forward(x, size=3, alpha=1.0, beta=0.75, k=1.0), lrn_eb),
        (flatten_forward(x), flatten_eb),
    ]
    for (y, cache), eb in layers:
        p1 = rng.uniform(0, 1, y.shape)
        p2 = rng.uniform(0, 1, y.shape)
        e1, e2 = eb(p1, cache), eb(p2, cache)
        assert e1.shape == x.shape and numpy.all(e1 >= 0)
        assert rel_err(eb(a * p1 + b * p2, cache), a * e1 + b * e2) < 1e-14
        masked = p1[y <= 0].sum() if eb is relu_eb else 0.0
        assert p1.sum() - e1.sum() == pytest.approx(masked, rel=1e-12, abs=1e-12)
        stacked = eb(numpy.stack([p1, p2]), cache)
        assert numpy.array_equal(stacked[0], e1) and numpy.array_equal(stacked[1], e2)
