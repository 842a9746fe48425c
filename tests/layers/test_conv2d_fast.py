"""conv2d_fast: each fast path equals the reference path (``fast=False``) where it is taken.

The reference is im2col + GEMM (forward) and GEMM + col2im (adjoint), itself checked
against naive loops, dense matrices, finite differences and torch in test_conv2d.py.
Here every comparison is float64 at 1e-12 relative (normwise), on geometries where the
fast path under test really runs: the path rule says so and a spy counts the calls.
Small shapes reach the fast paths through ``forced_path`` (which moves the size
thresholds of :mod:`ebr_ref.layers.conv2d_fast`); one test uses the default thresholds
on a layer large enough for them.
"""

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebr_ref.backend import to_numpy
from ebr_ref.layers import conv2d_fast
from ebr_ref.layers.conv2d import conv2d_adjoint, conv2d_eb, conv2d_forward, conv2d_grad

from ..conftest import rel_err
from .test_conv2d import forced_path

TOL = 1e-12  # fast vs reference, float64, relative normwise

# name: (N, groups, iC/groups, oC/groups, iH, iW, kH, kW, padding, dilation); stride 1, and
# padding <= dilation (kernel - 1) on both axes, so that both fast paths apply.
FAST_CASES = {
    "plain": (2, 1, 3, 4, 6, 7, 3, 3, 1, 1),
    "no_padding": (2, 1, 2, 3, 7, 8, 3, 2, 0, 1),
    "full_padding": (1, 1, 2, 2, 5, 6, 3, 2, (2, 1), 1),
    "dilated": (1, 1, 2, 3, 8, 7, 3, 3, 2, (2, 1)),
    "dilated_wide": (2, 1, 3, 2, 5, 9, 2, 3, (1, 0), (1, 3)),
    "grouped": (2, 3, 2, 2, 5, 6, 2, 3, (0, 1), 1),
    "grouped_widening": (2, 2, 1, 3, 6, 5, 3, 3, 1, 1),
    "grouped_dilated": (2, 2, 2, 3, 9, 8, 3, 2, (1, 1), (2, 1)),
    "1x1": (3, 1, 4, 2, 4, 5, 1, 1, 0, 1),
}
# Geometries no fast path admits, whatever the thresholds: (case, stride, padding).
REFERENCE_ONLY = {
    "strided": ("plain", 2, 1),
    "strided_one_axis": ("dilated", (1, 2), 2),
    "pad_beyond_kernel": ("plain", 1, 3),  # the adjoint only; the forward still takes the shifted views
}


@pytest.fixture
def calls(monkeypatch):
    """Count the calls into conv2d_fast's two evaluation functions."""
    counts = {"forward_shifted": 0, "adjoint_flipped": 0}
    for name in counts:
        original = getattr(conv2d_fast, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(conv2d_fast, name, spy)
    return counts


def _make(case, rng, stride=1, padding=None, x_zeros=False):
    N, G, iCg, oCg, iH, iW, kH, kW, pad, dilation = FAST_CASES[case] if isinstance(case, str) else case
    x = rng.uniform(0, 1, (N, G * iCg, iH, iW))
    if x_zeros:
        x = x * (rng.uniform(size=x.shape) > 0.3)  # exact zeros: some Z == 0
    W = rng.normal(size=(G * oCg, iCg, kH, kW))
    b = rng.normal(size=G * oCg)
    geo = dict(stride=stride, padding=pad if padding is None else padding, dilation=dilation, groups=G)
    return x, W, b, geo


def _pairs(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _rules(W_shape, in_hw, out_hw, geo):
    """(shifted views apply to the forward, flipped adjoint applies) for this geometry."""
    stride, padding, dilation = (_pairs(geo[k]) for k in ("stride", "padding", "dilation"))
    return (
        conv2d_fast.shifted_views_apply(W_shape, geo["groups"], stride, out_hw),
        conv2d_fast.flipped_adjoint_applies(W_shape, geo["groups"], stride, padding, dilation, in_hw),
    )


@pytest.mark.parametrize("case", FAST_CASES)
def test_forward_shifted_equals_reference(xp, calls, case):
    rng = numpy.random.default_rng(0xF0)
    x, W, b, geo = _make(case, rng)
    x = x - 0.5  # signed input: the forward is not EB-specific
    x, W, b = xp.asarray(x), xp.asarray(W), xp.asarray(b)
    with forced_path("shifted"):
        y_ref, _ = conv2d_forward(x, W, b, **geo, fast=False)
        assert calls["forward_shifted"] == 0
        assert _rules(W.shape, x.shape[2:], y_ref.shape[2:], geo)[0]
        y, _ = conv2d_forward(x, W, b, **geo)  # fast is the default
        assert calls["forward_shifted"] == 1
        y0, _ = conv2d_forward(x, W, **geo, fast=True)  # no bias
        y0_ref, _ = conv2d_forward(x, W, **geo, fast=False)
    assert y.dtype == y_ref.dtype == numpy.float64 and y.shape == y_ref.shape
    assert y.flags.c_contiguous
    assert rel_err(y, y_ref) < TOL and rel_err(y0, y0_ref) < TOL


@pytest.mark.parametrize("inner", ["shifted", "im2col"])
@pytest.mark.parametrize("case", FAST_CASES)
def test_adjoint_flipped_equals_reference(xp, calls, case, inner):
    """The flipped-kernel adjoint, its correlation run by shifted views or by im2col; K = 2 signals."""
    rng = numpy.random.default_rng(0xF1)
    x, W, _, geo = _make(case, rng)
    y_shape = conv2d_forward(x, W, **geo, fast=False)[0].shape
    g = xp.asarray(rng.normal(size=(2,) + y_shape))
    W = xp.asarray(W)
    with forced_path(inner):
        assert _rules(W.shape, x.shape[2:], y_shape[2:], geo)[1]
        g_x_ref = conv2d_adjoint(g, W, x.shape, **geo, fast=False)
        assert calls == {"forward_shifted": 0, "adjoint_flipped": 0}
        g_x = conv2d_adjoint(g, W, x.shape, **geo)
    assert calls == {"forward_shifted": int(inner == "shifted"), "adjoint_flipped": 1}
    assert g_x.shape == g_x_ref.shape == (2,) + x.shape
    assert rel_err(g_x, g_x_ref) < TOL
    for k in range(2):
        with forced_path(inner):
            assert rel_err(conv2d_adjoint(g[k], W, x.shape, **geo), g_x_ref[k]) < TOL


@pytest.mark.parametrize("path", ["shifted", "im2col"])
@pytest.mark.parametrize("case", FAST_CASES)
def test_eb_and_grad_fast_equal_reference(xp, calls, case, path):
    """EB (steps 1 and 3 on the fast paths) and the gradient, K = 3 stacked signals, some Z == 0."""
    rng = numpy.random.default_rng(0xF2)
    x, W, b, geo = _make(case, rng, x_zeros=True)
    W[0] = -numpy.abs(W[0])  # output channel 0 has no excitatory weight: Z == 0 there
    x, W, b = xp.asarray(x), xp.asarray(W), xp.asarray(b)
    y_ref, cache = conv2d_forward(x, W, b, **geo, fast=False)
    y_shape = y_ref.shape
    P = xp.asarray(rng.uniform(0, 1, (3,) + y_shape))
    with forced_path(path):
        assert _rules(W.shape, x.shape[2:], y_shape[2:], geo) == (path == "shifted", True)
        eb_ref, grad_ref = conv2d_eb(P, cache, fast=False), conv2d_grad(P, cache, fast=False)
        assert calls == {"forward_shifted": 0, "adjoint_flipped": 0}
        eb, grad = conv2d_eb(P, cache), conv2d_grad(P, cache)
        shifted = int(path == "shifted")
        assert calls == {"forward_shifted": 3 * shifted, "adjoint_flipped": 2}  # EB: steps 1 and 3; grad: one
    assert rel_err(eb, eb_ref) < TOL and rel_err(grad, grad_ref) < TOL
    assert float(to_numpy(eb).sum()) < float(to_numpy(P).sum())  # the signal at Z == 0 is lost on both paths


@pytest.mark.parametrize("name", REFERENCE_ONLY)
def test_geometries_outside_the_rules_take_the_reference(xp, calls, name):
    """Strided layers, and an adjoint with padding beyond the dilated kernel, run the reference exactly."""
    case, stride, padding = REFERENCE_ONLY[name]
    rng = numpy.random.default_rng(0xF3)
    x, W, b, geo = _make(case, rng, stride=stride, padding=padding)
    x, W, b = xp.asarray(x), xp.asarray(W), xp.asarray(b)
    with forced_path("shifted"):
        y, cache = conv2d_forward(x, W, b, **geo)
        y_ref, _ = conv2d_forward(x, W, b, **geo, fast=False)
        shifted, flipped = _rules(W.shape, x.shape[2:], y.shape[2:], geo)
        assert not flipped and shifted == (name == "pad_beyond_kernel")
        P = xp.asarray(rng.uniform(0, 1, (2,) + y.shape))
        calls["forward_shifted"] = 0
        g_x, g_x_ref = conv2d_adjoint(P, W, x.shape, **geo), conv2d_adjoint(P, W, x.shape, **geo, fast=False)
        eb, eb_ref = conv2d_eb(P, cache), conv2d_eb(P, cache, fast=False)
    assert calls["adjoint_flipped"] == 0
    assert bool((g_x == g_x_ref).all()) and g_x.shape == (2,) + x.shape
    if not shifted:
        assert calls["forward_shifted"] == 0
        assert bool((y == y_ref).all()) and bool((eb == eb_ref).all())
    else:
        assert calls["forward_shifted"] == 1  # EB step 1
        assert rel_err(y, y_ref) < TOL and rel_err(eb, eb_ref) < TOL


@pytest.mark.parametrize("case", FAST_CASES)
def test_switch_off_never_enters_conv2d_fast(monkeypatch, case):
    """``fast=False`` runs the reference even where every fast path would apply, bit for bit the
    path that the oracle tests of test_conv2d.py call "col2im"."""
    rng = numpy.random.default_rng(0xF4)
    x, W, b, geo = _make(case, rng)
    with forced_path("shifted"):
        y_fast, cache = conv2d_forward(x, W, b, **geo)
        P = rng.uniform(0, 1, (2,) + y_fast.shape)
        expect = [conv2d_eb(P, cache), conv2d_grad(P, cache)]
        for name in ("shifted_views_apply", "forward_shifted", "flipped_adjoint_applies", "adjoint_flipped"):
            monkeypatch.setattr(conv2d_fast, name, lambda *a, **k: pytest.fail("conv2d_fast was entered"))
        y, _ = conv2d_forward(x, W, b, **geo, fast=False)
        got = [conv2d_eb(P, cache, fast=False), conv2d_grad(P, cache, fast=False)]
        adj = conv2d_adjoint(P, W, x.shape, **geo, fast=False)
    monkeypatch.undo()
    with forced_path("col2im"):  # the thresholds that keep every layer on the reference path
        y_col2im, _ = conv2d_forward(x, W, b, **geo)
        eb_col2im, grad_col2im = conv2d_eb(P, cache), conv2d_grad(P, cache)
    assert numpy.array_equal(y, y_col2im) and numpy.array_equal(got[0], eb_col2im)
    assert numpy.array_equal(got[1], grad_col2im) and numpy.array_equal(adj, got[1])
    assert rel_err(y, y_fast) < TOL
    for a, e in zip(got, expect, strict=True):
        assert rel_err(a, e) < TOL


def test_default_rule_takes_shifted_views_on_large_layers():
    """With the default thresholds a large stride-1 layer takes the shifted views and agrees with im2col."""
    rng = numpy.random.default_rng(0xCB)
    x = rng.uniform(0, 1, (1, 16, 242, 242)).astype(numpy.float32)
    W = rng.normal(size=(16, 16, 3, 3)).astype(numpy.float32)
    assert conv2d_fast.shifted_views_apply(W.shape, 1, (1, 1), (242, 242))
    assert not conv2d_fast.shifted_views_apply(W.shape, 1, (1, 1), (64, 64))
    assert not conv2d_fast.shifted_views_apply(W.shape, 1, (2, 1), (242, 242))
    flipped = conv2d_fast.flipped_adjoint_applies
    assert flipped((64, 64, 3, 3), 1, (1, 1), (1, 1), (1, 1), (224, 224))  # VGG16 conv1_2
    assert not flipped((64, 3, 3, 3), 1, (1, 1), (1, 1), (1, 1), (224, 224))  # conv1_1: 64 outs per 3 inputs
    assert not flipped((512, 512, 3, 3), 1, (1, 1), (1, 1), (1, 1), (14, 14))  # conv5_x: small maps
    assert not flipped((64, 64, 3, 3), 1, (2, 2), (1, 1), (1, 1), (224, 224))  # strided
    assert not flipped((64, 64, 3, 3), 1, (1, 1), (3, 1), (1, 1), (224, 224))  # padding beyond the kernel
    y, cache = conv2d_forward(x, W, padding=1)
    p_y = rng.uniform(0, 1, y.shape).astype(numpy.float32)
    p_x = conv2d_eb(p_y, cache)
    with forced_path("col2im"):
        y_ref, cache_ref = conv2d_forward(x, W, padding=1)
        p_x_ref = conv2d_eb(p_y, cache_ref)
    assert rel_err(y, y_ref) < 1e-6 and rel_err(p_x, p_x_ref) < 1e-5


def test_default_thresholds_float64_equal_reference(xp, calls):
    """The smallest kind of layer the default rules send to both fast paths, float64, K = 2."""
    rng = numpy.random.default_rng(0xF5)
    x = xp.asarray(rng.uniform(0, 1, (1, 16, 242, 242)))
    W = xp.asarray(rng.normal(size=(16, 16, 3, 3)))
    geo = dict(stride=1, padding=1, dilation=1, groups=1)
    assert _rules(W.shape, (242, 242), (242, 242), geo) == (True, True)
    y, cache = conv2d_forward(x, W, padding=1)
    y_ref, _ = conv2d_forward(x, W, padding=1, fast=False)
    P = xp.asarray(rng.uniform(0, 1, (2,) + y.shape))
    eb, eb_ref = conv2d_eb(P, cache), conv2d_eb(P, cache, fast=False)
    assert calls == {"forward_shifted": 3, "adjoint_flipped": 1}  # forward, EB step 1, step 3's correlation
    assert rel_err(y, y_ref) < TOL and rel_err(eb, eb_ref) < TOL


@st.composite
def fast_geometries(draw):
    """Stride 1 or 2 (fast paths need 1); padding up to two beyond the dilated kernel."""
    kH, kW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dH, dW = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pH, pW = draw(st.integers(0, dH * (kH - 1) + 1)), draw(st.integers(0, dW * (kW - 1) + 1))
    iH = max(1, dH * (kH - 1) + 1 - 2 * pH) + draw(st.integers(0, 4))
    iW = max(1, dW * (kW - 1) + 1 - 2 * pW) + draw(st.integers(0, 4))
    N, G = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    iCg, oCg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    case = (N, G, iCg, oCg, iH, iW, kH, kW, (pH, pW), (dH, dW))
    stride = (draw(st.sampled_from([1, 1, 1, 2])), draw(st.sampled_from([1, 1, 1, 2])))
    return case, stride


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    geometry=fast_geometries(), path=st.sampled_from(["shifted", "im2col"]), seed=st.integers(0, 2**32 - 1)
)
def test_fast_equals_reference_on_random_geometries(xp, geometry, path, seed):
    case, stride = geometry
    rng = numpy.random.default_rng(seed)
    x, W, b, geo = _make(case, rng, stride=stride, x_zeros=True)
    (pH, pW), (dH, dW), (kH, kW) = geo["padding"], geo["dilation"], W.shape[2:]
    x, W, b = xp.asarray(x), xp.asarray(W), xp.asarray(b)
    with forced_path(path):
        y, cache = conv2d_forward(x, W, b, **geo)
        y_ref, _ = conv2d_forward(x, W, b, **geo, fast=False)
        shifted, flipped = _rules(W.shape, x.shape[2:], y.shape[2:], geo)
        assert shifted == (stride == (1, 1) and path == "shifted")
        assert flipped == (stride == (1, 1) and pH <= dH * (kH - 1) and pW <= dW * (kW - 1))
        P = xp.asarray(rng.uniform(0, 1, (2,) + y.shape))
        g_x, g_x_ref = conv2d_adjoint(P, W, x.shape, **geo), conv2d_adjoint(P, W, x.shape, **geo, fast=False)
        eb, eb_ref = conv2d_eb(P, cache), conv2d_eb(P, cache, fast=False)
        grad, grad_ref = conv2d_grad(P[0], cache), conv2d_grad(P[0], cache, fast=False)
    assert rel_err(y, y_ref) < TOL
    for a, e in ((g_x, g_x_ref), (eb, eb_ref), (grad, grad_ref)):
        assert a.shape == e.shape and rel_err(a, e) < TOL
    if not (shifted or flipped):
        assert bool((y == y_ref).all()) and bool((eb == eb_ref).all())  # the same path, bit for bit


@pytest.mark.parametrize("case", ["plain", "grouped", "dilated_wide"])
def test_forward_shifted_in_groups_of_images_equals_reference(xp, monkeypatch, case):
    """A batch whose stacked rows exceed the bound runs one image at a time; float64 equals the reference."""
    monkeypatch.setattr(conv2d_fast, "_MAX_STACKED_ELEMENTS", 1)  # one image per group, GPU
    monkeypatch.setattr(conv2d_fast, "_HOST_STACKED_ELEMENTS", 1)  # and CPU
    rng = numpy.random.default_rng(0xF6)
    x, W, b, geo = _make(case, rng)
    x = xp.asarray(numpy.concatenate([x, x[::-1] * 0.5]))  # twice the case's batch
    W, b = xp.asarray(W), xp.asarray(b)
    with forced_path("shifted"):
        y, _ = conv2d_forward(x, W, b, **geo)
        y_ref, _ = conv2d_forward(x, W, b, **geo, fast=False)
        g = xp.asarray(rng.uniform(0, 1, (2,) + tuple(y.shape)))  # K = 2 signals through the flipped adjoint
        adj = conv2d_adjoint(g, W, x.shape, **geo)
        adj_ref = conv2d_adjoint(g, W, x.shape, **geo, fast=False)
    assert y.shape == y_ref.shape and y.flags.c_contiguous
    assert rel_err(y, y_ref) < TOL and rel_err(adj, adj_ref) < TOL


@pytest.mark.parametrize("case", ["plain", "grouped", "dilated_wide"])
def test_forward_shifted_reuses_group_buffers_and_a_smaller_last_group(xp, monkeypatch, case):
    """Groups of two images share their buffers (padding border kept zero); the fifth image runs alone."""
    rng = numpy.random.default_rng(0xF7)
    x, W, b, geo = _make(case, rng)
    x = numpy.concatenate([x * s for s in (1.0, -0.5, 2.0, 0.25, -1.5, 3.0)])[:5]  # 5 images, all different
    N, iC, iH, iW = x.shape
    pH, pW = _pairs(geo["padding"])
    per_image = W.shape[3] * iC * (iH + 2 * pH) * (iW + 2 * pW)  # stacked elements of one image
    monkeypatch.setattr(conv2d_fast, "_MAX_STACKED_ELEMENTS", 2 * per_image)  # two images per group, GPU
    monkeypatch.setattr(conv2d_fast, "_HOST_STACKED_ELEMENTS", 2 * per_image)  # and CPU
    x, W, b = xp.asarray(x), xp.asarray(W), xp.asarray(b)
    with forced_path("shifted"):
        y, _ = conv2d_forward(x, W, b, **geo)
    y_ref, _ = conv2d_forward(x, W, b, **geo, fast=False)
    assert rel_err(y, y_ref) < TOL


def test_group_bound_is_the_hosts_on_numpy_and_the_gpus_on_cupy(xp, monkeypatch):
    """NumPy groups images by the cache-sized bound, CuPy by the memory bound."""
    rng = numpy.random.default_rng(0xF8)
    x, W, b, geo = _make("plain", rng)
    x = numpy.concatenate([x, x, x])[:5]  # 5 images
    N, iC, iH, iW = x.shape
    pH, pW = _pairs(geo["padding"])
    per_image = W.shape[3] * iC * (iH + 2 * pH) * (iW + 2 * pW)
    monkeypatch.setattr(conv2d_fast, "_HOST_STACKED_ELEMENTS", 2 * per_image)  # groups of 2, 2, 1
    monkeypatch.setattr(conv2d_fast, "_MAX_STACKED_ELEMENTS", 100 * per_image)  # one group
    calls = []
    stacked = conv2d_fast._forward_stacked
    monkeypatch.setattr(
        conv2d_fast, "_forward_stacked", lambda x_n, *a, **k: calls.append(len(x_n)) or stacked(x_n, *a, **k)
    )
    with forced_path("shifted"):
        conv2d_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), **geo)
    assert calls == ([2, 2, 1] if xp is numpy else [5])
