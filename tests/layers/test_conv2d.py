"""conv2d: forward vs naive loops, adjoint, gradient vs finite differences and torch, EB vs dense matrices.

Every evaluation path of the kernel is exercised by the ``path`` fixture, which moves
the size thresholds of :mod:`ebr_ref.layers.conv2d_fast` so that small test shapes take
the path under test: "shifted" (forward by shifted views; adjoint as a flipped-kernel
correlation by shifted views), "im2col" (forward by im2col; adjoint as a flipped-kernel
correlation by im2col) and "col2im" (forward by im2col; adjoint by GEMM and col2im: the
reference path, what ``fast=False`` runs). Strided convolutions and padding beyond the
dilated kernel take im2col / col2im whatever the setting. That each fast path equals
the reference, and where it is taken, is tested in test_conv2d_fast.py.
"""

import contextlib

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers import conv2d_fast
from ebr_ref.layers.conv2d import conv2d_adjoint, conv2d_eb, conv2d_forward, conv2d_grad

from ..conftest import RTOL, rel_err
from ..oracles.dense import eb_matrix
from ..oracles.finite_diff import numerical_vjp
from ..oracles.naive_conv import conv2d_matrix, conv2d_naive

# name: (N, groups, iC/groups, oC/groups, iH, iW, kH, kW, stride, padding, dilation)
CASES = {
    "plain": (2, 1, 3, 4, 6, 7, 3, 3, 1, 1, 1),
    "strided": (2, 1, 2, 3, 7, 8, 3, 2, 2, (1, 0), 1),
    "dilated": (1, 1, 2, 3, 8, 7, 3, 3, 1, 2, (2, 1)),
    "dilated_wide": (2, 1, 3, 2, 5, 9, 2, 3, 1, (1, 0), (1, 3)),
    "grouped": (2, 3, 2, 2, 5, 6, 2, 3, 1, (0, 1), 1),
    "everything": (2, 2, 2, 3, 9, 8, 3, 2, (2, 3), (1, 2), (2, 1)),
    "1x1": (3, 1, 4, 2, 4, 5, 1, 1, 1, 0, 1),
    "pad_beyond_kernel": (1, 1, 2, 2, 4, 4, 3, 3, 1, 3, 1),
}


PATHS = ["shifted", "im2col", "col2im"]


@contextlib.contextmanager
def forced_path(path):
    """Make every eligible convolution take ``path`` (see the module docstring)."""
    shifted, flipped = path == "shifted", path != "col2im"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv2d_fast, "_MIN_SHIFTED_CHANNELS", 1 if shifted else 2**62)
        mp.setattr(conv2d_fast, "_MIN_SHIFTED_COLUMN", 0 if shifted else 2**62)
        mp.setattr(conv2d_fast, "_MIN_FLIPPED_COLUMN", 0 if flipped else 2**62)
        mp.setattr(conv2d_fast, "_MAX_FLIPPED_WIDENING", 2**62 if flipped else 0)
        yield


@pytest.fixture(params=PATHS)
def path(request):
    with forced_path(request.param):
        yield request.param


def _make(case, rng, x_low=0.0):
    N, G, iCg, oCg, iH, iW, kH, kW, stride, padding, dilation = CASES[case] if isinstance(case, str) else case
    x = rng.uniform(x_low, 1, (N, G * iCg, iH, iW))
    W = rng.normal(size=(G * oCg, iCg, kH, kW))
    b = rng.normal(size=G * oCg)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=G)
    return x, W, b, geo


def _signal(rng, y_shape, K=None):
    return rng.uniform(0, 1, y_shape if K is None else (K,) + tuple(y_shape))


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_naive_loops(xp, dtype, path, case):
    rng = numpy.random.default_rng(0xC0)
    x, W, b, geo = _make(case, rng, x_low=-1.0)
    y, cache = conv2d_forward(xp.asarray(x, dtype), xp.asarray(W, dtype), xp.asarray(b, dtype), **geo)
    assert y.dtype == dtype
    assert rel_err(y, conv2d_naive(x, W, b, **geo)) < RTOL[dtype]
    y0, _ = conv2d_forward(xp.asarray(x, dtype), xp.asarray(W, dtype), **geo)  # no bias
    assert rel_err(y0, conv2d_naive(x, W, None, **geo)) < RTOL[dtype]


def test_forward_accepts_non_contiguous_input(path):
    rng = numpy.random.default_rng(0xC1)
    x, W, b, geo = _make("plain", rng)
    x_t = numpy.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(
        3, 2, 1, 0
    )  # same values, reversed strides
    assert not x_t.flags.c_contiguous
    y, _ = conv2d_forward(x_t, W, b, **geo)
    assert rel_err(y, conv2d_naive(x, W, b, **geo)) < 1e-12


@pytest.mark.parametrize("case", CASES)
def test_adjoint_dot_product(xp, dtype, path, case):
    """<conv(x), g> == <x, conv2d_adjoint(g)> for the bias-free convolution."""
    rng = numpy.random.default_rng(0xC2)
    x, W, _, geo = _make(case, rng, x_low=-1.0)
    y, _ = conv2d_forward(xp.asarray(x, dtype), xp.asarray(W, dtype), **geo)
    g = rng.normal(size=y.shape)
    g_x = conv2d_adjoint(xp.asarray(g, dtype), xp.asarray(W, dtype), x.shape, **geo)
    assert g_x.dtype == dtype and g_x.shape == x.shape
    lhs = float(numpy.sum(to_numpy(y).astype(numpy.float64) * g))
    rhs = float(numpy.sum(x * to_numpy(g_x).astype(numpy.float64)))
    scale = numpy.sqrt(numpy.sum(x**2) * numpy.sum(g**2)) * numpy.abs(W).sum()
    assert abs(lhs - rhs) < 10 * RTOL[dtype] * scale


@pytest.mark.parametrize("case", ["plain", "strided", "everything", "grouped"])
def test_grad_matches_finite_differences(path, case):
    rng = numpy.random.default_rng(0xC3)
    x, W, b, geo = _make(case, rng, x_low=-1.0)
    y, cache = conv2d_forward(x, W, b, **geo)
    g_y = rng.normal(size=y.shape)
    expect = numerical_vjp(lambda v: conv2d_forward(v, W, b, **geo)[0], x, g_y)
    assert rel_err(conv2d_grad(g_y, cache), expect) < 1e-8


@pytest.mark.oracle
@pytest.mark.parametrize("case", CASES)
def test_forward_and_grad_match_torch_autograd(path, case):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0xC4)
    x, W, b, geo = _make(case, rng, x_low=-1.0)
    y, cache = conv2d_forward(x, W, b, **geo)
    g_y = rng.normal(size=(2,) + y.shape)  # two stacked upstream gradients
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, torch.tensor(W), torch.tensor(b), **geo)
    assert rel_err(y, ty.detach().numpy()) < 1e-12
    for k in range(2):
        (t_g,) = torch.autograd.grad(ty, tx, torch.tensor(g_y[k]), retain_graph=True)
        assert rel_err(conv2d_grad(g_y[k], cache), t_g.numpy()) < 1e-12
        assert rel_err(conv2d_grad(g_y, cache)[k], t_g.numpy()) < 1e-12


@pytest.mark.parametrize("case", CASES)
def test_eb_matches_dense_matrix(xp, dtype, path, case):
    rng = numpy.random.default_rng(0xC5)
    x, W, b, geo = _make(case, rng)
    y, cache = conv2d_forward(xp.asarray(x, dtype), xp.asarray(W, dtype), xp.asarray(b, dtype), **geo)
    A_pos = conv2d_matrix(numpy.maximum(W, 0), x.shape, **geo)
    p_y = _signal(rng, y.shape)
    p_x = conv2d_eb(xp.asarray(p_y, dtype), cache)
    assert p_x.dtype == dtype and p_x.shape == x.shape
    expect, lost = eb_matrix(A_pos, x, p_y)
    assert rel_err(to_numpy(p_x).ravel(), expect) < RTOL[dtype]
    assert float(p_y.sum() - to_numpy(p_x).sum()) == pytest.approx(lost, rel=1e-4, abs=1e-4 * p_y.sum())


def test_eb_signed_input_gives_signed_map(path):
    """Inputs are not clamped: mean-subtracted pixels give a signed map (the raw rule)."""
    rng = numpy.random.default_rng(0xC6)
    x, W, b, geo = _make("plain", rng, x_low=-1.0)
    _, cache = conv2d_forward(x, W, b, **geo)
    p_y = _signal(rng, conv2d_naive(x, W, b, **geo).shape)
    p_x = conv2d_eb(p_y, cache)
    expect, _ = eb_matrix(conv2d_matrix(numpy.maximum(W, 0), x.shape, **geo), x, p_y)
    assert (p_x < 0).any() and (p_x > 0).any()
    assert rel_err(p_x.ravel(), expect) < 1e-9  # z can be near 0 with signed inputs


@pytest.mark.parametrize("case", ["plain", "strided", "dilated", "grouped", "1x1"])
def test_eb_conserves_mass_when_every_z_is_positive(xp, dtype, path, case):
    rng = numpy.random.default_rng(0xC7)
    N, G, iCg, oCg, iH, iW, kH, kW, stride, padding, dilation = CASES[case]
    x, W, b, geo = _make(case, rng, x_low=0.1)
    geo["padding"] = 0  # every window inside the input: with x > 0 and W[o] with a positive tap, z > 0
    W[:, :, 0, 0] = numpy.abs(W[:, :, 0, 0]) + 0.1
    y, cache = conv2d_forward(xp.asarray(x, dtype), xp.asarray(W, dtype), xp.asarray(b, dtype), **geo)
    assert (conv2d_naive(x, numpy.maximum(W, 0), **geo) > 0).all()
    p_y = _signal(rng, y.shape, K=2)
    p_x = to_numpy(conv2d_eb(xp.asarray(p_y, dtype), cache))
    assert (p_x >= 0).all()
    for k in range(2):
        assert float(p_x[k].sum()) == pytest.approx(p_y[k].sum(), rel=10 * RTOL[dtype])


def test_eb_zero_denominators_lose_exactly_their_signal(xp, path):
    rng = numpy.random.default_rng(0xC8)
    x, W, b, geo = _make((2, 1, 3, 4, 7, 7, 3, 3, 1, 2, 1), rng)
    x[0] = 0.0  # image 0: no input at all, so z == 0 everywhere
    x[1, :, :4, :4] = 0.0  # image 1: a zero region (outputs whose window lies inside it get z == 0)
    W[1] = -numpy.abs(W[1])  # output channel 1: no excitatory weight
    _, cache = conv2d_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), **geo)
    z = conv2d_naive(x, numpy.maximum(W, 0), **geo)  # oracle normaliser
    zero = z == 0
    assert zero[0].all() and zero[:, 1].all() and zero[1, [0, 2, 3], :3, :3].all()
    assert not zero[1, 0].all()  # padding 2 on a 7x7 input: corners see only padding or the zero block
    p_y = _signal(rng, z.shape)
    p_x = to_numpy(conv2d_eb(xp.asarray(p_y), cache))
    assert numpy.all(numpy.isfinite(p_x)) and (p_x >= 0).all()
    lost = p_y[zero].sum()
    assert p_y.sum() - p_x.sum() == pytest.approx(lost, rel=1e-12)
    expect, lost_dense = eb_matrix(conv2d_matrix(numpy.maximum(W, 0), x.shape, **geo), x, p_y)
    assert lost_dense == pytest.approx(lost, rel=1e-12)
    assert rel_err(p_x.ravel(), expect) < 1e-12


@pytest.mark.parametrize("case", ["plain", "everything"])
def test_stacked_signals_equal_separate_calls(xp, path, case):
    rng = numpy.random.default_rng(0xC9)
    x, W, b, geo = _make(case, rng)
    y, cache = conv2d_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), **geo)
    P = _signal(rng, y.shape, K=3)
    eb = to_numpy(conv2d_eb(xp.asarray(P), cache))
    grad = to_numpy(conv2d_grad(xp.asarray(P), cache))
    adj = to_numpy(conv2d_adjoint(xp.asarray(P), xp.asarray(W), x.shape, **geo))
    assert eb.shape == grad.shape == adj.shape == (3,) + x.shape
    for k in range(3):
        assert rel_err(eb[k], conv2d_eb(xp.asarray(P[k]), cache)) < 1e-14
        assert rel_err(grad[k], conv2d_grad(xp.asarray(P[k]), cache)) < 1e-14
        assert rel_err(adj[k], grad[k]) < 1e-14


def test_inputs_not_modified_and_dtype_kept(xp, dtype, path):
    rng = numpy.random.default_rng(0xCA)
    x, W, b, geo = _make("everything", rng)
    x, W, b = (xp.asarray(a, dtype) for a in (x, W, b))
    x0, W0, b0 = x.copy(), W.copy(), b.copy()
    y, cache = conv2d_forward(x, W, b, **geo)
    p = xp.asarray(_signal(rng, y.shape, K=2), dtype)
    p0 = p.copy()
    outs = [y, conv2d_eb(p, cache), conv2d_grad(p, cache), conv2d_adjoint(p, W, x.shape, **geo)]
    assert all(o.dtype == dtype for o in outs)
    for a, a0 in ((x, x0), (W, W0), (b, b0), (p, p0)):
        assert bool((a == a0).all())


BAD = [
    (
        lambda: conv2d_forward(numpy.ones((2, 3, 4)), numpy.ones((2, 3, 1, 1))),
        ValueError,
        r"conv2d: input must be \(N, iC, iH, iW\), got shape \(2, 3, 4\)",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 1))),
        ValueError,
        r"conv2d: W must be",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 2, 1, 1))),
        ValueError,
        r"W must be \(oC, iC/groups, kH, kW\) = \(oC, 3, kH, kW\)",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 1, 1, 1)), groups=2),
        ValueError,
        r"iC = 3 are not divisible by groups = 2",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 4, 4, 4)), numpy.ones((3, 2, 1, 1)), groups=2),
        ValueError,
        r"oC = 3 are not divisible by groups = 2",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 4, 4, 4)), numpy.ones((4, 4, 1, 1)), groups=0),
        ValueError,
        r"groups must be a positive int",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 1, 1)), numpy.ones(3)),
        ValueError,
        r"conv2d: b must be \(2,\), got shape \(3,\)",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 1, 1), numpy.float32)),
        TypeError,
        r"conv2d: expected one floating dtype .* x float64, W float32",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4), int), numpy.ones((2, 3, 1, 1), int)),
        TypeError,
        r"conv2d: expected one floating dtype",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 1, 1)), stride=0),
        ValueError,
        r"conv2d: kernel, stride and dilation must be >= 1",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 1, 1)), padding=-1),
        ValueError,
        r"conv2d: padding must be >= 0",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 1, 1)), stride=1.5),
        ValueError,
        r"conv2d: stride must be an int or a pair of ints",
    ),
    (
        lambda: conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 3, 3)), dilation=2),
        ValueError,
        r"conv2d: input of size 4 \(padding 0\) is smaller than the kernel of effective size 5",
    ),
    (
        lambda: conv2d_adjoint(numpy.ones((1, 2, 4, 4)), numpy.ones((2, 3, 1, 1)), (1, 3, 5, 5)),
        ValueError,
        r"conv2d_adjoint: signal of shape \(1, 2, 4, 4\) does not match the layer output \(1, 2, 5, 5\)",
    ),
    (
        lambda: conv2d_adjoint(numpy.ones((1, 2, 4, 4)), numpy.ones((2, 3, 1, 1)), (1, 4, 4, 4)),
        ValueError,
        r"conv2d_adjoint: W must be",
    ),
    (
        lambda: conv2d_adjoint(
            numpy.ones((1, 2, 4, 4), numpy.float32), numpy.ones((2, 3, 1, 1)), (1, 3, 4, 4)
        ),
        TypeError,
        r"conv2d_adjoint: expected one floating dtype",
    ),
]


@pytest.mark.parametrize("call, exc, match", BAD)
def test_bad_inputs_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_eb_and_grad_reject_wrong_signals():
    _, cache = conv2d_forward(numpy.ones((1, 3, 4, 4)), numpy.ones((2, 3, 3, 3)), padding=1)
    with pytest.raises(ValueError, match=r"conv2d_eb: signal of shape \(1, 2, 3, 3\) does not match"):
        conv2d_eb(numpy.ones((1, 2, 3, 3)), cache)
    with pytest.raises(ValueError, match=r"conv2d_grad: signal of shape \(2, 2, 2, 4, 4\)"):
        conv2d_grad(numpy.ones((2, 2, 2, 4, 4)), cache)
    with pytest.raises(
        TypeError, match=r"conv2d_eb: expected one floating dtype .* signal float32, x float64"
    ):
        conv2d_eb(numpy.ones((1, 2, 4, 4), numpy.float32), cache)


@st.composite
def geometries(draw):
    kH, kW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dH, dW = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pH, pW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    iH = max(1, dH * (kH - 1) + 1 - 2 * pH) + draw(st.integers(0, 4))
    iW = max(1, dW * (kW - 1) + 1 - 2 * pW) + draw(st.integers(0, 4))
    stride = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 3])))  # favour stride 1
    return (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        iH,
        iW,
        kH,
        kW,
        stride,
        (pH, pW),
        (dH, dW),
    )


@settings(max_examples=40, deadline=None)
@given(
    case=geometries(),
    path_name=st.sampled_from(PATHS),
    seed=st.integers(0, 2**32 - 1),
    a=st.floats(0.1, 10),
    c=st.floats(0.1, 10),
)
def test_eb_properties(case, path_name, seed, a, c):
    rng = numpy.random.default_rng(seed)
    x, W, b, geo = _make(case, rng)
    x = x * (rng.uniform(size=x.shape) > 0.3)  # exact zeros: some z == 0
    with forced_path(path_name):
        y, cache = conv2d_forward(x, W, b, **geo)
        p1, p2 = _signal(rng, y.shape), _signal(rng, y.shape)
        e1, e2 = conv2d_eb(p1, cache), conv2d_eb(p2, cache)
        assert (e1 >= 0).all()  # non-negativity
        assert rel_err(conv2d_eb(a * p1 + c * p2, cache), a * e1 + c * e2) < 1e-12  # linearity
        W_other_neg = numpy.where(W > 0, W, -rng.uniform(0, 3, W.shape))  # change only the negative weights
        _, cache2 = conv2d_forward(x, W_other_neg, b, **geo)
        assert rel_err(conv2d_eb(p1, cache2), e1) < 1e-14
        stacked = conv2d_eb(numpy.stack([p1, p2]), cache)
        assert rel_err(stacked[0], e1) < 1e-14 and rel_err(stacked[1], e2) < 1e-14
    expect, lost = eb_matrix(conv2d_matrix(numpy.maximum(W, 0), x.shape, **geo), x, p1)
    assert rel_err(e1.ravel(), expect) < 1e-10
    assert p1.sum() - e1.sum() == pytest.approx(lost, rel=1e-9, abs=1e-9 * p1.sum())
