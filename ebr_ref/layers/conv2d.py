"""2-D convolution: forward, adjoint (transposed convolution), excitation backward, gradient.

Dimension legend (docs/notation.md): ``N`` batch, ``K`` stacked signals, ``iC, oC``
input and output channels, ``G`` groups, ``iCg = iC / G`` and ``oCg = oC / G``
channels per group, ``iH, iW`` input size, ``kH, kW`` kernel size, ``sH, sW``
stride, ``pH, pW`` zero padding, ``dH, dW`` dilation, ``oH, oW`` output size
(floor rule, :func:`ebr_ref.layers.geometry.out_size`), ``Hp = iH + 2 pH`` and
``Wp = iW + 2 pW`` padded size.

Shapes: ``x (N, iC, iH, iW)``, ``W (oC, iCg, kH, kW)`` (Caffe and PyTorch),
``b (oC,)``, ``y (N, oC, oH, oW)``. The operation is a cross-correlation, as in
Caffe and PyTorch::

    y[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] x_pad[n, g(o) iCg + c, i sH + u dH, j sW + v dW]

where ``g(o) = o // oCg`` is the group of output channel ``o``.

Two evaluation paths compute the forward sums; which one runs depends only on the
geometry (:func:`_use_shifted_views`), never on the values:

* **Shifted views** ("implicit GEMM"; stride 1, at least 16 channels per group on
  both sides, and an im2col buffer that would hold at least 2**23 elements per
  image, such as VGG16's conv1_2 and conv2_2 at 224 x 224). The zero-padded batch is
  laid out once as ``(iC, N * Hp * Wp)``, images end to end. For stride 1 the
  input cell that kernel offset ``(u, v)`` pairs with output position ``p`` (a flat
  index into the same layout) is ``p + u dH Wp + v dW``, so every kernel offset is a
  contiguous shifted 2-D view of that one buffer, and the convolution is
  ``sum_{u, v} W[:, :, u, v] @ view(u, v)``: ``kH kW`` BLAS GEMMs on views (no
  copies) accumulated into an ``(oC, N * Hp * Wp)`` buffer, from which the valid
  outputs are sliced. Flat positions that straddle a row or image edge are computed
  and discarded (about ``1 - oH oW / (Hp Wp)`` of the work).
* **im2col + one GEMM** per image and group (all other layers: strided convolutions
  such as CaffeNet's conv1, few channels such as a first layer on RGB input, and
  small maps, where the column buffer is cheap and the shifted views' discarded edge
  work is not), using :mod:`ebr_ref.layers.im2col`.

The adjoint is one GEMM per image and group followed by ``col2im``, except on large
maps (:func:`_use_flipped_adjoint`): there the adjoint of a stride-1 convolution with
``pH <= dH (kH - 1)`` (and the same for widths) runs as what it is, a stride-1
correlation of ``g_y`` padded by ``d (k - 1) - p`` with the kernel flipped in space and
transposed in channels within each group, through the forward code and its two paths.

Groups are a batch axis of a stacked matmul (``(G, oCg, iCg) @ (G, iCg, L)``), not a
Python loop. The only Python loops are over the ``kH kW`` kernel offsets. Float32
inputs run float32 BLAS (no upcasting).
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from .geometry import out_size, pair
from .im2col import col2im, im2col
from ._eb import check_signal, merge_signal, safe_divide, split_signal

__all__ = ["Conv2dCache", "conv2d_forward", "conv2d_adjoint", "conv2d_eb", "conv2d_grad"]

# Path rule (benchmarks/bench_conv.py, VGG16 float32 on 2 cores): im2col + one GEMM is
# as fast or faster unless its column buffer is large, when writing and re-reading it
# costs more than the shifted views' extra work (accumulating kH kW partial products,
# discarded edge positions, a transposed copy of W). Shifted views also need enough
# channels on both sides for each per-offset GEMM to run near BLAS peak.
_MIN_SHIFTED_CHANNELS = 16
_MIN_SHIFTED_COLUMN = 2**23  # elements of one image's im2col buffer, iC kH kW oH oW (32 MiB in float32)
# Adjoint rule: the flipped-kernel correlation avoids col2im's many short strided adds
# but gathers a column buffer over the output channels and copies W; it pays off on
# large maps when the adjoint does not widen the channels (VGG16 conv1_2 to conv4_3,
# not conv1_1 with 3 input channels, nor the 14 x 14 conv5 layers).
_MIN_FLIPPED_COLUMN = 2**21  # elements oC kH kW iH iW per image
_MAX_FLIPPED_WIDENING = 1  # largest oCg / iCg


class Conv2dCache(NamedTuple):
    """What EB and the gradient of a convolution need (normalised geometry)."""

    x: object  # (N, iC, iH, iW) input activations a_i
    W: object  # (oC, iCg, kH, kW) weights
    stride: tuple  # (sH, sW)
    padding: tuple  # (pH, pW)
    dilation: tuple  # (dH, dW)
    groups: int  # G


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
        stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
        out_hw = tuple(
            out_size(i, k, s, p, d)
            for i, k, s, p, d in zip((iH, iW), (kH, kW), stride, padding, dilation)
        )
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return stride, padding, dilation, out_hw


def _check_dtypes(name, **arrays):
    dtypes = {k: a.dtype for k, a in arrays.items() if a is not None}
    first = next(iter(dtypes.values()))
    if any(d != first for d in dtypes.values()) or first.name not in ("float32", "float64"):
        found = ", ".join(f"{k} {d}" for k, d in dtypes.items())
        raise TypeError(f"{name}: expected one floating dtype (float32 or float64) for all arrays, got {found}")


def _use_shifted_views(W_shape, groups, stride, out_hw):
    """Geometry rule for the shifted-view path (see ``_MIN_SHIFTED_COLUMN``)."""
    oC, iCg, kH, kW = W_shape
    column = groups * iCg * kH * kW * out_hw[0] * out_hw[1]
    return (
        stride == (1, 1)
        and min(iCg, oC // groups) >= _MIN_SHIFTED_CHANNELS
        and column >= _MIN_SHIFTED_COLUMN
    )


def _use_flipped_adjoint(W_shape, groups, stride, flip_pad, in_hw):
    """Rule for the adjoint as a flipped-kernel correlation (see ``_MIN_FLIPPED_COLUMN``)."""
    oC, iCg, kH, kW = W_shape
    return (
        stride == (1, 1)
        and min(flip_pad) >= 0
        and oC // groups <= _MAX_FLIPPED_WIDENING * iCg
        and oC * kH * kW * in_hw[0] * in_hw[1] >= _MIN_FLIPPED_COLUMN
    )


def _shifted_matmul(W_k, src, starts, out, *, xp):
    """``out = sum_k W_k[k] @ src[:, :, starts[k] : starts[k] + L]`` with ``L = out.shape[-1]``.

    ``W_k (kH kW, G, M, C)`` contiguous, ``src (G, C, S)`` with a contiguous last
    axis, ``out (G, M, L)`` (may be a view with a contiguous last axis): each term
    is one batched GEMM over the group axis on a view of ``src``.
    """
    L = out.shape[-1]
    xp.matmul(W_k[0], src[:, :, starts[0] : starts[0] + L], out=out)
    tmp = xp.empty(out.shape, dtype=out.dtype)
    for k in range(1, len(starts)):  # loop over kernel offsets only
        xp.matmul(W_k[k], src[:, :, starts[k] : starts[k] + L], out=tmp)
        out += tmp
    return out


def _correlate(x, W, b, stride, padding, dilation, groups, out_hw, *, xp):
    """Forward convolution (geometry already validated): ``(N, oC, oH, oW)``, contiguous."""
    N, iC, iH, iW = x.shape
    oC, iCg, kH, kW = W.shape
    G, oCg = groups, oC // groups
    (pH, pW), (dH, dW), (oH, oW) = padding, dilation, out_hw
    if not _use_shifted_views(W.shape, groups, stride, out_hw):
        col = im2col(x, (kH, kW), stride, padding, dilation, out_hw, pad_value=0, xp=xp)  # (N, iC, kH, kW, oH, oW)
        col = col.reshape(N, G, iCg * kH * kW, oH * oW)
        y = xp.matmul(W.reshape(G, oCg, iCg * kH * kW), col).reshape(N, oC, oH, oW)  # one GEMM per image and group
        if b is not None:
            y += b.reshape(1, oC, 1, 1)
        return y
    Hp, Wp = iH + 2 * pH, iW + 2 * pW
    S = N * Hp * Wp
    x_pad = xp.zeros((iC, N, Hp, Wp), dtype=x.dtype)  # images end to end, channels first
    x_pad[:, :, pH : pH + iH, pW : pW + iW] = x.transpose(1, 0, 2, 3)
    starts = [u * dH * Wp + v * dW for u in range(kH) for v in range(kW)]  # flat shift of offset (u, v)
    W_k = xp.ascontiguousarray(W.reshape(G, oCg, iCg, kH * kW).transpose(3, 0, 1, 2))  # (kH kW, G, oCg, iCg)
    acc = xp.empty((oC, N, Hp, Wp), dtype=x.dtype)  # output at flat index p = (n Hp + i) Wp + j
    L = S - starts[-1]  # every valid output position p < L
    _shifted_matmul(W_k, x_pad.reshape(G, iCg, S), starts, acc.reshape(G, oCg, S)[:, :, :L], xp=xp)
    valid = acc[:, :, :oH, :oW].transpose(1, 0, 2, 3)  # (N, oC, oH, oW) view
    y = xp.empty((N, oC, oH, oW), dtype=x.dtype)
    if b is None:
        y[...] = valid
    else:
        xp.add(valid, b.reshape(1, oC, 1, 1), out=y)
    return y


def _adjoint(g, W, in_hw, stride, padding, dilation, groups, *, xp):
    """Adjoint of :func:`_correlate` without bias: ``g (B, oC, oH, oW)`` -> ``(B, iC, iH, iW)``."""
    B, oC, oH, oW = g.shape
    _, iCg, kH, kW = W.shape
    G, oCg = groups, oC // groups
    iC = iCg * G
    (pH, pW), (dH, dW) = padding, dilation
    flip_pad = (dH * (kH - 1) - pH, dW * (kW - 1) - pW)
    if _use_flipped_adjoint(W.shape, groups, stride, flip_pad, in_hw):
        # With stride 1 the adjoint is itself a correlation: of g, padded by d (k - 1) - p,
        # with the kernel flipped in space and transposed in channels within each group.
        W_flip = W.reshape(G, oCg, iCg, kH, kW)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        W_flip = xp.ascontiguousarray(W_flip).reshape(iC, oCg, kH, kW)  # (iC, oCg, kH, kW)
        return _correlate(g, W_flip, None, (1, 1), flip_pad, dilation, groups, in_hw, xp=xp)
    W_t = W.reshape(G, oCg, iCg * kH * kW).transpose(0, 2, 1)  # (G, iCg kH kW, oCg)
    col = xp.matmul(W_t, g.reshape(B, G, oCg, oH * oW))  # (B, G, iCg kH kW, oH oW)
    return col2im(col.reshape(B, iC, kH, kW, oH, oW), in_hw, stride, padding, dilation, xp=xp)


def conv2d_forward(x, W, b=None, *, stride=1, padding=0, dilation=1, groups=1):
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
    stride, padding, dilation, out_hw = _geometry("conv2d", x.shape, W.shape, stride, padding, dilation, groups)
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise ValueError(f"conv2d: b must be ({W.shape[0]},), got shape {tuple(b.shape)}")
    _check_dtypes("conv2d", x=x, W=W, b=b)
    y = _correlate(x, W, b, stride, padding, dilation, groups, out_hw, xp=xp)  # (N, oC, oH, oW)
    return y, Conv2dCache(x, W, stride, padding, dilation, groups)


def conv2d_adjoint(g_y, W, in_shape, *, stride=1, padding=0, dilation=1, groups=1):
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
    g_flat, K = split_signal(g_y, (in_shape[0], W.shape[0]) + out_hw, "conv2d_adjoint")  # (K N, oC, oH, oW)
    g_x = _adjoint(g_flat, W, in_shape[2:], stride, padding, dilation, groups, xp=xp)  # (K N, iC, iH, iW)
    return merge_signal(g_x, K)


def _check_cached_signal(p, cache, name):
    """Validate an EB or gradient signal against the cached forward; return the geometry keywords."""
    x, W, stride, padding, dilation, groups = cache
    out_hw = tuple(
        out_size(i, k, s, pd, d) for i, k, s, pd, d in zip(x.shape[2:], W.shape[2:], stride, padding, dilation)
    )
    check_signal(p, (x.shape[0], W.shape[0]) + out_hw, name)
    _check_dtypes(name, signal=p, x=x)
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv2d_eb(p_y, cache):
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
    z, _ = conv2d_forward(x, W_pos, **geo)  # (N, oC, oH, oW)  step 1: forward with W+, no bias
    s = safe_divide(p_y, z, xp=xp)  # (N, oC, oH, oW) or (K, N, oC, oH, oW)  step 2: 0 where z == 0
    c = conv2d_adjoint(s, W_pos, x.shape, **geo)  # (N, iC, iH, iW) or (K, N, ...)  step 3: adjoint of step 1
    return x * c  # (N, iC, iH, iW) or (K, N, iC, iH, iW)  step 4: multiply by the input


def conv2d_grad(g_y, cache):
    """Gradient with respect to the input: ``g_x = W^T g_y`` (signed weights).

    Parameters
    ----------
    g_y : array of shape (N, oC, oH, oW) or (K, N, oC, oH, oW)
    cache : Conv2dCache

    Returns
    -------
    g_x : array of shape (N, iC, iH, iW) or (K, N, iC, iH, iW)
    """
    get_xp(g_y, cache.x)
    geo = _check_cached_signal(g_y, cache, "conv2d_grad")
    return conv2d_adjoint(g_y, cache.W, cache.x.shape, **geo)  # (N, iC, iH, iW) or (K, N, iC, iH, iW)
