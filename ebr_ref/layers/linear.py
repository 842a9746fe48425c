"""Fully connected layer: forward, excitation backward, gradient.

Shapes: ``x (N, D)``, ``W (M, D)`` (``(out, in)``, as Caffe and PyTorch),
``b (M,)``, ``y (N, M)``; signals ``(N, M)`` or ``(K, N, M)`` (``K`` stacked).

:func:`linear_eb` reads as the four steps of the EB rule with the whole
``W+ = max(W, 0)``. With ``fast=True`` (its default) and no precomputed ``W_pos``
it hands over to :mod:`ebr_ref.layers.linear_fast`, which forms ``W+`` a block of
output units at a time (VGG16's fc6 would otherwise write a 400 MB ``W+`` per call)
and equals this reference to rounding.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from . import linear_fast
from ._eb import check_signal, safe_divide

__all__ = ["LinearCache", "linear_forward", "linear_eb", "linear_grad"]


class LinearCache(NamedTuple):
    """What EB and the gradient of a fully connected layer need."""

    x: object  # (N, D) input activations a_i
    W: object  # (M, D) weights
    W_pos: object = None  # (M, D) max(W, 0) if the caller precomputed it, else None


def linear_forward(x, W, b=None, *, W_pos=None):
    """``y = x W^T + b``.

    Parameters
    ----------
    x : array of shape (N, D)
    W : array of shape (M, D)
    b : array of shape (M,) or None
    W_pos : array of shape (M, D), optional
        ``max(W, 0)``, precomputed by a caller that runs EB many times with the
        same weights; it is only stored in the cache, and :func:`linear_eb` uses it
        instead of forming ``W+``.

    Returns
    -------
    y : array of shape (N, M)
    cache : LinearCache
    """
    get_xp(x, W, b)  # raises on mixed backends
    _check(x, W, b)
    if W_pos is not None and W_pos.shape != W.shape:
        raise ValueError(f"linear: W_pos has shape {tuple(W_pos.shape)}, W has {tuple(W.shape)}")
    y = x @ W.T  # (N, M)
    if b is not None:
        y = y + b
    return y, LinearCache(x, W, W_pos)


def linear_eb(p_y, cache, *, fast=True):
    """Excitation backward of a fully connected layer.

    ``P(a_i) = a_i * sum_j W+_ji P(a_j) / Z_j`` with ``Z_j = sum_i W+_ji a_i``
    (paper eq. 3 summed over parents, with the conditional winning probability
    of eq. 1; Zhang et al. 2016 eq. 4).

    Parameters
    ----------
    p_y : array of shape (N, M) or (K, N, M)
        Marginal winning probabilities of the outputs (K stacked signals allowed).
    cache : LinearCache
    fast : bool
        Without ``cache.W_pos``, form ``W+`` a block of output units at a time
        (:mod:`ebr_ref.layers.linear_fast`) instead of whole; False always runs the
        four steps below.

    Returns
    -------
    p_x : array of shape (N, D) or (K, N, D)

    Notes
    -----
    Computed in four steps, as the released Caffe code does
    (``inner_product_layer.cpp:Backward_eb_cpu``): forward with ``W+`` and no bias,
    safe divide, the adjoint with ``W+``, multiply by the input. ``W+`` is
    ``cache.W_pos`` when the forward was given one.

    Conventions: the bias never enters ``Z``; where ``Z_j == 0`` exactly the
    quotient is 0 (no epsilon) and that signal is lost; inputs are not clamped,
    so a signed ``x`` gives a signed result. With ``x >= 0`` and every ``Z_j > 0``
    the rule conserves mass: ``p_x.sum() == p_y.sum()``.
    """
    x, W, W_pos = cache
    xp = get_xp(p_y, x)
    check_signal(p_y, (x.shape[0], W.shape[0]), "linear_eb")
    if fast and W_pos is None:  # W+ a block at a time, never whole: see linear_fast.py
        return linear_fast.eb_blocked(p_y, x, W, xp=xp)
    W_pos = xp.maximum(W, 0) if W_pos is None else W_pos  # (M, D)  excitatory weights only
    z = x @ W_pos.T  # (N, M)  step 1: forward with W+, no bias
    s = safe_divide(p_y, z, xp=xp)  # (N, M) or (K, N, M)  step 2: 0 where z == 0
    c = _rows_times(s, W_pos)  # (N, D) or (K, N, D)  step 3: adjoint of step 1
    return x * c  # (N, D) or (K, N, D)  step 4: multiply by the input


def linear_grad(g_y, cache):
    """Gradient with respect to the input: ``g_x = g_y W``.

    Parameters
    ----------
    g_y : array of shape (N, M) or (K, N, M)
    cache : LinearCache

    Returns
    -------
    g_x : array of shape (N, D) or (K, N, D)
    """
    x, W = cache.x, cache.W
    get_xp(g_y, W)
    check_signal(g_y, (x.shape[0], W.shape[0]), "linear_grad")
    return _rows_times(g_y, W)  # (N, D) or (K, N, D)


def _check(x, W, b):
    if x.ndim != 2:
        raise ValueError(f"linear: x must be (N, D), got shape {tuple(x.shape)}")
    if W.ndim != 2 or W.shape[1] != x.shape[1]:
        raise ValueError(
            f"linear: W must be (M, D) with D = {x.shape[1]} (input size), got shape {tuple(W.shape)}"
        )
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise ValueError(f"linear: b must be ({W.shape[0]},), got shape {tuple(b.shape)}")
    if W.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
        b_dtype = None if b is None else b.dtype
        raise TypeError(f"linear: dtypes differ (x {x.dtype}, W {W.dtype}, b {b_dtype})")


def _rows_times(a, W):
    """``a @ W`` for ``a (N, M)`` or ``(K, N, M)`` as one GEMM over all ``K N`` rows.

    (A stacked ``(K, N, M) @ (M, D)`` would run K small GEMMs, several times slower.)
    """
    return (a.reshape(-1, a.shape[-1]) @ W).reshape(a.shape[:-1] + (W.shape[1],))
