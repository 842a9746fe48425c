"""2-D max pooling: forward, excitation backward (winner-take-all), gradient.

Dimension legend (docs/notation.md): ``N`` batch, ``K`` stacked signals, ``C``
channels, ``iH, iW`` input size, ``kH, kW`` kernel, ``sH, sW`` stride, ``pH, pW``
padding, ``oH, oW`` output size, ``kk = kH kW`` cells per window.

Shapes: ``x (N, C, iH, iW)``, ``y (N, C, oH, oW)`` with

    y[n, c, i, j] = max_{u, v} x_pad[n, c, i sH + u, j sW + v]

where padded cells hold ``-inf`` (they never win). Windows are scanned in
row-major order over ``(u, v)``; the *first* maximum in that order is the winner
(Caffe's ``pooling_layer.cpp`` keeps a strictly greater value only, and so does
PyTorch's CPU kernel).

Output size rounding (:func:`ebr_ref.layers.geometry.out_size`): floor (PyTorch's
default) unless ``ceil_mode=True``, which is Caffe's rule
``oH = ceil((iH + 2 pH - kH) / sH) + 1``, minus 1 when ``pH > 0`` and the last
window would start at or after ``iH + pH``; Caffe (``PoolingLayer::Reshape``)
applies that correction to *both* axes as soon as either is padded
(``if (pad_h_ || pad_w_)``), and so does this module. PyTorch's ``ceil_mode``
drops such a last window always; the two rules differ only when ``sH > kH`` and
neither axis is padded, and exactly there Caffe's last window lies wholly
outside the image (Caffe outputs ``-FLT_MAX`` for it, and 0 in average
pooling). This module refuses such a geometry with a ``ValueError`` (see
:func:`pool_geometry`), so every accepted ceil-mode geometry gives the same
output size as PyTorch's ``ceil_mode=True`` (where PyTorch accepts the padding:
it requires ``pH <= kH / 2``, Caffe and this module ``pH < kH``).
Windows that run past the padded input in ceil mode are filled with ``-inf``
by :func:`ebr_ref.layers.im2col.window_views`; the forward keeps a running maximum over
the kH kW strided views of the input (no column buffer).
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal
from .geometry import pair, pool_out_hw
from .im2col import col2im, window_views

__all__ = [
    "MaxPool2dCache",
    "pool_geometry",
    "maxpool2d_forward",
    "maxpool2d_winners",
    "maxpool2d_eb",
    "maxpool2d_grad",
]

_NO_DILATION = (1, 1)


class MaxPool2dCache(NamedTuple):
    """What EB and the gradient of a max pooling need (the winners follow from x and y)."""

    x: object  # (N, C, iH, iW) input, held by reference: EB reads it, so it must not change in between
    y: object  # (N, C, oH, oW) output, the window maxima
    kernel: tuple  # (kH, kW)
    stride: tuple  # (sH, sW)
    padding: tuple  # (pH, pW)
    ceil_mode: bool


def pool_geometry(name, x, kernel, stride, padding, ceil_mode):
    """Validate a pooling input and its hyper-parameters (shared by max and average pooling).

    Parameters
    ----------
    name : str
        The op, for error messages.
    x : array of shape (N, C, iH, iW)
        Floating-point input.
    kernel : int or pair of int
        ``(kH, kW)``.
    stride : int, pair of int or None
        ``(sH, sW)``; None means ``kernel`` (Caffe and PyTorch default).
    padding : int or pair of int
        ``(pH, pW)``.
    ceil_mode : bool
        Caffe's ceil rule instead of the floor rule (with Caffe's last-window
        correction on both axes when either axis is padded).

    Returns
    -------
    kernel, stride, padding, out_hw : pair of int
        Normalised ``(kH, kW)``, ``(sH, sW)``, ``(pH, pW)`` and ``(oH, oW)``.

    Raises
    ------
    ValueError
        For an input that is not 4-D, a non-positive kernel or stride, a padding
        that is negative or not smaller than the kernel (Caffe's check; it
        guarantees that every floor-mode window holds an input cell), an input
        smaller than the kernel, or a ceil-mode window lying wholly outside the
        image (Caffe's rule with ``sH > kH`` and no padding on either axis).
    TypeError
        For a non-floating-point input.
    """
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be (N, C, iH, iW), got shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: x must be floating point, got dtype {x.dtype}")
    kernel = pair(kernel, f"{name}: kernel")
    stride = kernel if stride is None else pair(stride, f"{name}: stride")
    padding = pair(padding, f"{name}: padding")
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"{name}: kernel and stride must be >= 1, got kernel={kernel}, stride={stride}")
    if min(padding) < 0 or padding[0] >= kernel[0] or padding[1] >= kernel[1]:
        raise ValueError(
            f"{name}: padding must satisfy 0 <= padding < kernel, got padding={padding}, kernel={kernel}"
        )
    out_hw = pool_out_hw(tuple(x.shape[2:]), kernel, stride, padding, ceil_mode, name)
    return kernel, stride, padding, out_hw


def maxpool2d_forward(x, kernel, *, stride=None, padding=0, ceil_mode=False):
    """Max pooling over ``kH x kW`` windows.

    Parameters
    ----------
    x : array of shape (N, C, iH, iW)
    kernel : int or pair of int
        ``(kH, kW)``.
    stride : int, pair of int or None
        ``(sH, sW)``; default ``kernel``.
    padding : int or pair of int
        ``(pH, pW)``, each smaller than the kernel; padded cells hold ``-inf``.
    ceil_mode : bool
        False: floor rule (PyTorch's default). True: Caffe's ceil rule (module
        docstring).

    Returns
    -------
    y : array of shape (N, C, oH, oW)
    cache : MaxPool2dCache
        Holds ``x`` and ``y``; :func:`maxpool2d_winners` finds the winner of every
        window from them, the first maximum in row-major scan order over ``(u, v)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[[1., 3., 3.], [0., 2., 1.]]]])
    >>> y, cache = maxpool2d_forward(x, 2, stride=1)
    >>> y
    array([[[[3., 3.]]]])
    >>> maxpool2d_eb(np.ones_like(y), cache)  # both windows route to their first maximum
    array([[[[0., 2., 0.],
             [0., 0., 0.]]]])
    """
    xp = get_xp(x)
    kernel, stride, padding, out_hw = pool_geometry("maxpool2d", x, kernel, stride, padding, ceil_mode)
    views = window_views(x, kernel, stride, padding, _NO_DILATION, out_hw, pad_value=-xp.inf, xp=xp)
    _, first = next(views)  # (N, C, oH, oW)  cell (0, 0) of every window
    y = first.copy()  # (N, C, oH, oW)
    for _, cell in views:  # the other cells of every window, one strided view each
        xp.maximum(y, cell, out=y)
    return y, MaxPool2dCache(x, y, kernel, stride, padding, bool(ceil_mode))


def maxpool2d_winners(cache):
    """The winner of every window: the cell ``u kW + v`` of its first maximum in row-major order.

    Parameters
    ----------
    cache : MaxPool2dCache

    Returns
    -------
    argmax : int64 array of shape (N, C, oH, oW)

    Notes
    -----
    Found from the cached input and output (the forward keeps no indices, so a
    forward pass that is not followed by EB or a gradient pays nothing for
    them): scanning the cells last to first, each cell equal to its window's
    maximum overwrites the index, so the first maximum is written last.
    Padded cells hold ``-inf`` and never win. A window holding NaN has no cell
    equal to its (NaN) maximum and gets cell 0; inputs are expected finite
    (the drivers check clips for NaN and inf).
    """
    x, y, kernel, stride, padding, _ = cache
    xp = get_xp(x, y)
    kW = kernel[1]
    views = list(
        window_views(x, kernel, stride, padding, _NO_DILATION, y.shape[2:], pad_value=-xp.inf, xp=xp)
    )
    argmax = xp.zeros(y.shape, dtype=xp.int64)  # (N, C, oH, oW)
    for (u, v), cell in reversed(views):
        argmax = xp.where(cell == y, u * kW + v, argmax)
    return argmax


def _route(p, cache, name):
    """Send each output's whole signal to its window's winner; sum where windows share it.

    A one-hot multiply in column layout followed by :func:`ebr_ref.layers.im2col.col2im`
    (no index scatter, so repeated winners accumulate on every backend).
    """
    x, y, kernel, stride, padding, _ = cache
    xp = get_xp(p, y)
    N, C, oH, oW = y.shape
    (kH, kW), (iH, iW) = kernel, x.shape[2:]
    argmax = maxpool2d_winners(cache)  # (N, C, oH, oW)
    stacked = check_signal(p, (N, C, oH, oW), name)
    p5 = p if stacked else p[None]  # (K, N, C, oH, oW)
    K = p5.shape[0]
    cells = xp.arange(kH * kW).reshape(1, 1, kH * kW, 1, 1)  # (1, 1, kk, 1, 1)
    one_hot = (argmax[:, :, None] == cells).astype(p.dtype)  # (N, C, kk, oH, oW)
    col = p5[:, :, :, None] * one_hot  # (K, N, C, kk, oH, oW)
    col = col.reshape(K * N, C, kH, kW, oH, oW)  # (K N, C, kH, kW, oH, oW)
    p_x = col2im(
        col, (iH, iW), stride, padding, _NO_DILATION, xp=xp
    )  # (K N, C, iH, iW)  padded cells never win
    p_x = p_x.reshape(K, N, C, iH, iW)
    return p_x if stacked else p_x[0]


def maxpool2d_eb(p_y, cache):
    """Excitation backward of max pooling: winner takes all.

    ``P(a_i) = sum_{j : i = argmax(j)} P(a_j)``: every output passes its whole
    signal to the input that won its forward max (Zhang et al. 2016, Sec. 3;
    the released Caffe code's ``pooling_layer.cpp`` ``Backward_eb_cpu`` MAX
    branch, which is the gradient's routing).

    Parameters
    ----------
    p_y : array of shape (N, C, oH, oW) or (K, N, C, oH, oW)
        Signals of the outputs (K stacked signals allowed).
    cache : MaxPool2dCache

    Returns
    -------
    p_x : array of shape (N, C, iH, iW) or (K, N, C, iH, iW)

    Notes
    -----
    Ties go to the first maximum in the window's row-major scan order (Caffe,
    PyTorch CPU); an input that wins several overlapping windows receives the
    sum of their signals. Padded cells never win, so the rule always conserves
    mass: ``p_x.sum() == p_y.sum()`` (to rounding), whatever the sign of ``x``
    or of the signal. The rule is linear in the signal and equals
    :func:`maxpool2d_grad`.
    """
    return _route(p_y, cache, "maxpool2d_eb")


def maxpool2d_grad(g_y, cache):
    """Gradient with respect to the input: ``g_x`` routes ``g_y`` to the winners.

    Parameters
    ----------
    g_y : array of shape (N, C, oH, oW) or (K, N, C, oH, oW)
    cache : MaxPool2dCache

    Returns
    -------
    g_x : array of shape (N, C, iH, iW) or (K, N, C, iH, iW)

    Notes
    -----
    The derivative of the max away from ties; at a tie the first maximum takes
    the whole gradient (the subgradient Caffe and PyTorch's CPU kernel use).
    """
    return _route(g_y, cache, "maxpool2d_grad")
