"""2-D convolution: forward, adjoint (transposed convolution), excitation backward, gradient.

Dimension legend (docs/notation.md): ``N`` batch, ``K`` stacked signals, ``iC, oC``
input and output channels, ``G`` groups, ``iCg = iC / G`` and ``oCg = oC / G``
channels per group, ``iH, iW`` input size, ``kH, kW`` kernel size, ``sH, sW``
stride, ``pH, pW`` zero padding, ``dH, dW`` dilation, ``oH, oW`` output size
(floor rule, :func:`ebr_ref.layers.geometry.out_size`).

Shapes: ``x (N, iC, iH, iW)``, ``W (oC, iCg, kH, kW)`` (Caffe and PyTorch),
``b (oC,)``, ``y (N, oC, oH, oW)``. The operation is a cross-correlation, as in
Caffe and PyTorch::

    y[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] x_pad[n, g(o) iCg + c, i sH + u dH, j sW + v dW]

where ``g(o) = o // oCg`` is the group of output channel ``o`` and ``x_pad`` is ``x``
with ``pH`` (``pW``) zero rows (columns) on both sides.

The reference evaluation, written out in the functions below: the forward gathers
every window with ``im2col`` (:mod:`ebr_ref.layers.im2col`) and runs one GEMM per
image and group; the adjoint runs one GEMM per image and group with ``W^T`` and sums
the columns back with ``col2im``. Groups are a batch axis of a stacked matmul
(``(G, oCg, iCg kH kW) @ (N, G, iCg kH kW, oH oW)``), not a Python loop; the only
Python loops are over the ``kH kW`` kernel offsets, inside im2col/col2im. Float32
inputs run float32 BLAS (no upcasting).

Speed: on large stride-1 layers the column buffer costs more than the arithmetic.
:func:`conv2d_forward` and :func:`conv2d_adjoint` (and so :func:`conv2d_eb` and
:func:`conv2d_grad`) take a keyword ``fast`` (default True): when it is on and the
geometry qualifies, they hand over to :mod:`ebr_ref.layers.conv2d_fast` (shifted
views for the forward, a flipped-kernel correlation for the adjoint), which holds
those paths, their rules and thresholds. The rules read shapes only, never values,
and the fast paths equal this reference to rounding.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from . import conv2d_fast
from ._eb import check_signal, merge_signal, safe_divide, split_signal
from .geometry import out_size, pair
from .im2col import col2im, im2col

__all__ = ["Conv2dCache", "conv2d_forward", "conv2d_adjoint", "conv2d_eb", "conv2d_grad"]


class Conv2dCache(NamedTuple):
    """What EB and the gradient of a convolution need (normalised geometry)."""

    x: object  # (N, iC, iH, iW) input activations a_i
    W: object  # (oC, iCg, kH, kW) weights
    stride: tuple  # (sH, sW)
    padding: tuple  # (pH, pW)
    dilation: tuple  # (dH, dW)
    groups: int  # G


def conv2d_forward(x, W, b=None, *, stride=1, padding=0, dilation=1, groups=1, fast=True):
    """2-D convolution (cross-correlation) ``y = W * x + b``.

    Parameters
    ----------
    x : array of shape (N, iC, iH, iW)
    W : array of shape (oC, iC / groups, kH, kW)
    b : array of shape (oC,) or None
    stride, padding, dilation : int or pair of int
        ``(sH, sW)``, ``(pH, pW)`` (zero padding on both sides), ``(dH, dW)``.
    groups : int
        ``G``; input channels ``g iCg ... (g + 1) iCg - 1`` feed output channels
        ``g oCg ... (g + 1) oCg - 1``.
    fast : bool
        Take the shifted views of :mod:`ebr_ref.layers.conv2d_fast` where their
        rule admits the geometry (large stride-1 layers); False always runs the
        reference im2col + GEMM.

    Returns
    -------
    y : array of shape (N, oC, oH, oW)
        ``oH = floor((iH + 2 pH - dH (kH - 1) - 1) / sH) + 1``, likewise ``oW``.
    cache : Conv2dCache

    Raises
    ------
    ValueError
        For arrays of the wrong rank or shape, channels not divisible by ``groups``,
        bad stride/padding/dilation, or an input smaller than the dilated kernel.
    TypeError
        When the dtypes differ or are not floating, or backends are mixed.
    """
    xp = get_xp(x, W, b)  # raises on mixed backends
    stride, padding, dilation, out_hw = _geometry(
        "conv2d", x.shape, W.shape, stride, padding, dilation, groups
    )
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise ValueError(f"conv2d: b must be ({W.shape[0]},), got shape {tuple(b.shape)}")
    _check_dtypes("conv2d", x=x, W=W, b=b)
    cache = Conv2dCache(x, W, stride, padding, dilation, groups)
    if fast and conv2d_fast.shifted_views_apply(W.shape, groups, stride, out_hw):  # see conv2d_fast.py
        return conv2d_fast.forward_shifted(x, W, b, padding, dilation, groups, out_hw, xp=xp), cache
    N, (oC, iCg, kH, kW), (oH, oW) = x.shape[0], W.shape, out_hw
    G, oCg = groups, oC // groups
    col = im2col(x, (kH, kW), stride, padding, dilation, out_hw, xp=xp)  # (N, iC, kH, kW, oH, oW)
    col = col.reshape(N, G, iCg * kH * kW, oH * oW)  # (N, G, iCg kH kW, oH oW)
    y = xp.matmul(W.reshape(G, oCg, iCg * kH * kW), col)  # (N, G, oCg, oH oW)  one GEMM per image and group
    y = y.reshape(N, oC, oH, oW)  # (N, oC, oH, oW)
    if b is not None:
        y += b.reshape(1, oC, 1, 1)
    return y, cache


def conv2d_adjoint(g_y, W, in_shape, *, stride=1, padding=0, dilation=1, groups=1, fast=True):
    """Adjoint (transpose) of the bias-free convolution: ``g_x = W^T g_y``.

    This is the input gradient of :func:`conv2d_forward` (PyTorch's
    ``conv_transpose2d`` with matching arguments and ``output_padding`` chosen to
    reproduce ``in_shape``), and step 3 of :func:`conv2d_eb`:
    ``g_x[n, c, r, t] = sum W[o, c', u, v] g_y[n, o, i, j]`` over all ``(o, u, v, i, j)``
    with ``r = i sH + u dH - pH``, ``t = j sW + v dW - pW`` and ``o`` in the group of
    ``c`` (``c' = c mod iCg``). Input cells that no window covers get 0.

    Parameters
    ----------
    g_y : array of shape (N, oC, oH, oW) or (K, N, oC, oH, oW)
    W : array of shape (oC, iC / groups, kH, kW)
    in_shape : tuple of int
        ``(N, iC, iH, iW)``, the shape of the forward input.
    stride, padding, dilation : int or pair of int
    groups : int
    fast : bool
        Take the flipped-kernel correlation of :mod:`ebr_ref.layers.conv2d_fast`
        where its rule admits the geometry (large stride-1 maps); False always runs
        the reference GEMM + col2im.

    Returns
    -------
    g_x : array of shape (N, iC, iH, iW) or (K, N, iC, iH, iW)

    Raises
    ------
    ValueError
        For inconsistent shapes or hyper-parameters (as :func:`conv2d_forward`), or a
        ``g_y`` that does not have the output shape.
    TypeError
        When the dtypes of ``g_y`` and ``W`` differ or are not floating.
    """
    xp = get_xp(g_y, W)
    in_shape = tuple(int(s) for s in in_shape)
    stride, padding, dilation, out_hw = _geometry(
        "conv2d_adjoint", in_shape, W.shape, stride, padding, dilation, groups
    )
    _check_dtypes("conv2d_adjoint", g_y=g_y, W=W)
    g, K = split_signal(g_y, (in_shape[0], W.shape[0]) + out_hw, "conv2d_adjoint")  # (B, oC, oH, oW), B = K N
    in_hw = in_shape[2:]
    if fast and conv2d_fast.flipped_adjoint_applies(W.shape, groups, stride, padding, dilation, in_hw):
        g_x = conv2d_fast.adjoint_flipped(g, W, padding, dilation, groups, forward=conv2d_forward, xp=xp)
        return merge_signal(g_x, K)  # see conv2d_fast.py
    (B, oC, oH, oW), (_, iCg, kH, kW) = g.shape, W.shape
    G, oCg = groups, oC // groups
    W_t = W.reshape(G, oCg, iCg * kH * kW).transpose(0, 2, 1)  # (G, iCg kH kW, oCg)
    col = xp.matmul(W_t, g.reshape(B, G, oCg, oH * oW))  # (B, G, iCg kH kW, oH oW)  a GEMM per image, group
    col = col.reshape(B, iCg * G, kH, kW, oH, oW)  # (B, iC, kH, kW, oH, oW)
    g_x = col2im(col, in_hw, stride, padding, dilation, xp=xp)  # (B, iC, iH, iW)
    return merge_signal(g_x, K)  # (N, iC, iH, iW) or (K, N, iC, iH, iW)


def conv2d_eb(p_y, cache, *, fast=True):
    """Excitation backward of a convolution.

    ``P(a_i) = a_i * sum_j W+_ji P(a_j) / Z_j`` with ``Z_j = sum_i W+_ji a_i``, the
    sums running over each output's receptive field (paper eq. 3 summed over parents,
    with the conditional winning probability of eq. 1; Zhang et al. 2016 eq. 4).

    Parameters
    ----------
    p_y : array of shape (N, oC, oH, oW) or (K, N, oC, oH, oW)
        Marginal winning probabilities of the outputs; ``K`` stacked signals share
        one normaliser computation.
    cache : Conv2dCache
    fast : bool
        Passed to the forward (step 1) and the adjoint (step 3).

    Returns
    -------
    p_x : array of shape (N, iC, iH, iW) or (K, N, iC, iH, iW)

    Notes
    -----
    Computed in four steps, as the released Caffe code does
    (``conv_layer.cpp:Backward_eb_cpu``): forward with ``W+ = max(W, 0)`` and no
    bias, safe divide, the adjoint (:func:`conv2d_adjoint`) with ``W+``, multiply
    by the input. Stride, padding (zero cells contribute nothing to ``Z``),
    dilation and groups are those of the forward.

    Conventions: the bias never enters ``Z``; where ``Z_j == 0`` exactly the
    quotient is 0 (no epsilon) and that signal is lost; inputs are not clamped, so
    a signed input (the first layer on mean-subtracted pixels) gives a signed map
    and ``Z`` may be negative there. With ``x >= 0`` and every ``Z_j > 0`` the rule
    conserves mass: ``p_x.sum() == p_y.sum()``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(0.1, 1.0, 2 * 4 * 4).reshape(1, 2, 4, 4)
    >>> W = np.linspace(-0.5, 1.0, 3 * 2 * 3 * 3).reshape(2, 3, 3, 3).transpose(1, 0, 2, 3)
    >>> y, cache = conv2d_forward(x, W, padding=1)
    >>> p_y = np.full(y.shape, 1 / y.size)
    >>> p_x = conv2d_eb(p_y, cache)
    >>> round(float(p_x.sum()), 12), bool((p_x >= 0).all())  # every Z > 0: mass conserved
    (1.0, True)
    >>> _, cache = conv2d_forward(x, np.concatenate([W[:2], -abs(W[2:])]), padding=1)
    >>> round(float(conv2d_eb(p_y, cache).sum()), 12)  # channel 2 has no W+ > 0: its third is lost
    0.666666666667
    """
    x, W = cache.x, cache.W
    xp = get_xp(p_y, x)
    geo = _check_cached_signal(p_y, cache, "conv2d_eb")
    W_pos = xp.maximum(W, 0)  # (oC, iCg, kH, kW)  excitatory weights only
    z, _ = conv2d_forward(x, W_pos, **geo, fast=fast)  # (N, oC, oH, oW)  step 1: forward with W+, no bias
    s = safe_divide(p_y, z, xp=xp)  # (N, oC, oH, oW) or (K, N, oC, oH, oW)  step 2: 0 where z == 0
    c = conv2d_adjoint(s, W_pos, x.shape, **geo, fast=fast)  # (N, iC, iH, iW) or (K, N, ...)  step 3: adjoint
    return x * c  # (N, iC, iH, iW) or (K, N, iC, iH, iW)  step 4: multiply by the input


def conv2d_grad(g_y, cache, *, fast=True):
    """Gradient with respect to the input: ``g_x = W^T g_y`` (signed weights).

    Parameters
    ----------
    g_y : array of shape (N, oC, oH, oW) or (K, N, oC, oH, oW)
    cache : Conv2dCache
    fast : bool
        Passed to :func:`conv2d_adjoint`.

    Returns
    -------
    g_x : array of shape (N, iC, iH, iW) or (K, N, iC, iH, iW)
    """
    get_xp(g_y, cache.x)
    geo = _check_cached_signal(g_y, cache, "conv2d_grad")
    return conv2d_adjoint(g_y, cache.W, cache.x.shape, **geo, fast=fast)  # (N, iC, iH, iW) or (K, N, ...)


def _geometry(name, in_shape, W_shape, stride, padding, dilation, groups):
    """Validate shapes and hyper-parameters; return normalised pairs and ``(oH, oW)``."""
    if len(in_shape) != 4:
        raise ValueError(f"{name}: input must be (N, iC, iH, iW), got shape {tuple(in_shape)}")
    if len(W_shape) != 4:
        raise ValueError(f"{name}: W must be (oC, iC/groups, kH, kW), got shape {tuple(W_shape)}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{name}: groups must be a positive int, got {groups!r}")
    N, iC, iH, iW = in_shape
    oC, iCg, kH, kW = W_shape
    if iC % groups:
        raise ValueError(f"{name}: input channels iC = {iC} are not divisible by groups = {groups}")
    if oC % groups:
        raise ValueError(f"{name}: output channels oC = {oC} are not divisible by groups = {groups}")
    if iCg * groups != iC:
        raise ValueError(
            f"{name}: W must be (oC, iC/groups, kH, kW) = (oC, {iC // groups}, kH, kW) for "
            f"iC = {iC} and groups = {groups}, got shape {tuple(W_shape)}"
        )
    if min(N, oC, kH, kW) < 1:
        raise ValueError(f"{name}: empty input or kernel (input {tuple(in_shape)}, W {tuple(W_shape)})")
    try:
        stride, padding = pair(stride, "stride"), pair(padding, "padding")
        dilation = pair(dilation, "dilation")
        out_hw = tuple(
            out_size(i, k, s, p, d)
            for i, k, s, p, d in zip((iH, iW), (kH, kW), stride, padding, dilation, strict=True)
        )
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return stride, padding, dilation, out_hw


def _check_dtypes(name, **arrays):
    dtypes = {k: a.dtype for k, a in arrays.items() if a is not None}
    first = next(iter(dtypes.values()))
    if any(d != first for d in dtypes.values()) or first.name not in ("float32", "float64"):
        found = ", ".join(f"{k} {d}" for k, d in dtypes.items())
        raise TypeError(
            f"{name}: expected one floating dtype (float32 or float64) for all arrays, got {found}"
        )


def _check_cached_signal(p, cache, name):
    """Validate an EB or gradient signal against the cached forward; return the geometry keywords."""
    x, W, stride, padding, dilation, groups = cache
    out_hw = tuple(
        out_size(i, k, s, pd, d)
        for i, k, s, pd, d in zip(x.shape[2:], W.shape[2:], stride, padding, dilation, strict=True)
    )
    check_signal(p, (x.shape[0], W.shape[0]) + out_hw, name)
    _check_dtypes(name, signal=p, x=x)
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
