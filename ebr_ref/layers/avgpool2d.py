"""2-D average pooling: forward, excitation backward, gradient.

Dimension legend (docs/notation.md): ``N`` batch, ``K`` stacked signals, ``C``
channels, ``iH, iW`` input size, ``kH, kW`` kernel, ``sH, sW`` stride, ``pH, pW``
padding, ``oH, oW`` output size.

Shapes: ``x (N, C, iH, iW)``, ``y (N, C, oH, oW)`` with

    y[n, c, i, j] = S[n, c, i, j] / d[i, j],   S = sum of the window's real (non-padded) inputs

and the divisor ``d`` of Caffe's ``pooling_layer.cpp`` AVE branch, which
PyTorch's ``avg_pool2d`` computes the same way. Along each axis a window starts
at ``h0 = i sH - pH`` and ends at ``h1 = min(h0 + kH, iH + pH)``: clipped to the
*padded* input, so the extra cells that Caffe's ceil rule adds beyond the
padding never count. Then

* ``count_include_pad=True`` (default; Caffe, PyTorch's default):
  ``d = (h1 - h0) (w1 - w0)``, computed before clipping to the image, so padded
  cells count;
* ``count_include_pad=False``: ``d = (min(h1, iH) - max(h0, 0)) (min(w1, iW) -
  max(w0, 0))``, the number of real inputs in the window.

Output sizes and the ceil rule are those of :mod:`ebr_ref.layers.maxpool2d`
(:func:`~ebr_ref.layers.maxpool2d.pool_geometry`); every accepted window holds at
least one real input, so ``d >= 1``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal
from .im2col import col2im, im2col
from .maxpool2d import pool_geometry

__all__ = ["AvgPool2dCache", "avgpool2d_forward", "avgpool2d_eb", "avgpool2d_grad"]

_NO_DILATION = (1, 1)


class AvgPool2dCache(NamedTuple):
    """What EB and the gradient of an average pooling need."""

    x: object  # (N, C, iH, iW) input activations a_i
    divisor: object  # (oH, oW) forward divisor d of every window
    kernel: tuple  # (kH, kW)
    stride: tuple  # (sH, sW)
    padding: tuple  # (pH, pW)
    ceil_mode: bool
    count_include_pad: bool


def _axis_divisor(i, k, s, p, o, count_include_pad, *, xp):
    """Cells per window along one axis, as Caffe's and PyTorch's kernels count them."""
    start = xp.arange(o) * s - p  # (o,)  window starts in input coordinates
    end = xp.minimum(start + k, i + p)  # (o,)  clipped to the padded input (not to the extra ceil cells)
    if count_include_pad:
        return end - start
    return xp.minimum(end, i) - xp.maximum(start, 0)  # real cells only


def _window_sums(x, kernel, stride, padding, out_hw, *, xp):
    """``S``: the sum of each window's real inputs, shape (N, C, oH, oW)."""
    col = im2col(
        x, kernel, stride, padding, _NO_DILATION, out_hw, pad_value=0.0, xp=xp
    )  # (N, C, kH, kW, oH, oW)
    return col.sum(axis=(2, 3))  # (N, C, oH, oW)


def _spread(s, cache):
    """Adjoint of the window sum: every input receives the sum of ``s`` over the windows holding it.

    ``s`` has shape (N, C, oH, oW) or (K, N, C, oH, oW); the result has the
    matching input shape.
    """
    x, _, kernel, stride, padding, _, _ = cache
    xp = get_xp(s, x)
    N, C, iH, iW = x.shape
    oH, oW = s.shape[-2:]
    (kH, kW) = kernel
    KN = s.size // (C * oH * oW)
    col = xp.broadcast_to(s.reshape(KN, C, 1, 1, oH, oW), (KN, C, kH, kW, oH, oW))  # read-only view
    out = col2im(col, (iH, iW), stride, padding, _NO_DILATION, xp=xp)  # (K N, C, iH, iW)
    return out.reshape(s.shape[:-2] + (iH, iW))


def avgpool2d_forward(x, kernel, *, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling over ``kH x kW`` windows.

    Parameters
    ----------
    x : array of shape (N, C, iH, iW)
    kernel : int or pair of int
        ``(kH, kW)``.
    stride : int, pair of int or None
        ``(sH, sW)``; default ``kernel``.
    padding : int or pair of int
        ``(pH, pW)``, each smaller than the kernel; padded cells hold 0.
    ceil_mode : bool
        False: floor rule (PyTorch's default). True: Caffe's ceil rule
        (:mod:`ebr_ref.layers.maxpool2d`).
    count_include_pad : bool
        Whether the divisor counts padded cells (module docstring). True is
        Caffe's only behaviour and PyTorch's default.

    Returns
    -------
    y : array of shape (N, C, oH, oW)
    cache : AvgPool2dCache

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    >>> avgpool2d_forward(x, 2, padding=1)[0]  # corner windows: one real cell, divisor 4
    array([[[[0.25, 0.5 ],
             [0.75, 1.  ]]]])
    >>> avgpool2d_forward(x, 2, padding=1, count_include_pad=False)[0]
    array([[[[1., 2.],
             [3., 4.]]]])
    """
    xp = get_xp(x)
    kernel, stride, padding, out_hw = pool_geometry("avgpool2d", x, kernel, stride, padding, ceil_mode)
    iH, iW = x.shape[2:]
    d_h = _axis_divisor(iH, kernel[0], stride[0], padding[0], out_hw[0], count_include_pad, xp=xp)  # (oH,)
    d_w = _axis_divisor(iW, kernel[1], stride[1], padding[1], out_hw[1], count_include_pad, xp=xp)  # (oW,)
    divisor = (d_h[:, None] * d_w[None, :]).astype(x.dtype)  # (oH, oW)
    y = _window_sums(x, kernel, stride, padding, out_hw, xp=xp) / divisor  # (N, C, oH, oW)
    cache = AvgPool2dCache(x, divisor, kernel, stride, padding, bool(ceil_mode), bool(count_include_pad))
    return y, cache


def avgpool2d_eb(p_y, cache):
    """Excitation backward of average pooling: equal positive weights.

    ``P(a_i) = a_i * sum_{j : i in window j} P(a_j) / S_j`` with
    ``S_j = sum_{i' in window j} a_i'`` over the window's real inputs (paper
    eqs. 1, 3 with every weight equal and positive; the ``1 / d`` factor of the
    forward cancels).

    Parameters
    ----------
    p_y : array of shape (N, C, oH, oW) or (K, N, C, oH, oW)
        Signals of the outputs (K stacked signals share one ``S``).
    cache : AvgPool2dCache

    Returns
    -------
    p_x : array of shape (N, C, iH, iW) or (K, N, C, iH, iW)

    Notes
    -----
    Where ``S_j <= 0`` the quotient is exactly 0 and that signal is lost: the
    released code's strict ``bsum > 0`` test (``pooling_layer.cpp`` and ``.cu``
    ``AvePoolBackwardEB`` in sbargal/Caffe-ExcitationBP-RNNs), deliberately
    different from the linear and convolution rules, which drop only
    ``Z == 0``. Padded cells contribute nothing to ``S`` and receive nothing, so
    the divisor convention (``count_include_pad``) does not change EB. With
    ``x >= 0`` and every ``S_j > 0`` the rule conserves mass.
    """
    x = cache.x
    xp = get_xp(p_y, x)
    N, C = x.shape[:2]
    oH, oW = cache.divisor.shape
    check_signal(p_y, (N, C, oH, oW), "avgpool2d_eb")
    S = _window_sums(
        x, cache.kernel, cache.stride, cache.padding, (oH, oW), xp=xp
    )  # (N, C, oH, oW)  step 1: weights 1
    pos = S > 0  # (N, C, oH, oW)  strict test of the released code
    s = xp.where(pos, p_y / xp.where(pos, S, 1), 0).astype(
        p_y.dtype, copy=False
    )  # (N, C, oH, oW)  step 2: 0 if S <= 0
    c = _spread(s, cache)  # (N, C, iH, iW) or (K, ...)  step 3: adjoint of step 1
    return x * c  # (N, C, iH, iW) or (K, ...)  step 4: multiply by the input


def avgpool2d_grad(g_y, cache):
    """Gradient with respect to the input: each input collects ``g_y / d`` of its windows.

    Parameters
    ----------
    g_y : array of shape (N, C, oH, oW) or (K, N, C, oH, oW)
    cache : AvgPool2dCache

    Returns
    -------
    g_x : array of shape (N, C, iH, iW) or (K, N, C, iH, iW)

    Notes
    -----
    ``g_x[i] = sum_{j : i in window j} g_y[j] / d_j`` with the forward divisor
    ``d`` (so it depends on ``count_include_pad``).
    """
    x = cache.x
    get_xp(g_y, x)
    N, C = x.shape[:2]
    oH, oW = cache.divisor.shape
    check_signal(g_y, (N, C, oH, oW), "avgpool2d_grad")
    return _spread(g_y / cache.divisor, cache)  # (N, C, iH, iW) or (K, ...)
