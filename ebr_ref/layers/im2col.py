"""im2col / col2im on strided slices, backend-agnostic.

``im2col`` gathers every window of a padded image into a column array of shape
``(N, C, kH, kW, oH, oW)``; ``col2im`` is its exact adjoint (it sums each column
entry back into the pixel it came from and drops the padding). Both loop over
the ``kH * kW`` kernel offsets only, each step one strided slice of the whole
batch: no fancy indexing, so no duplicate-index scatter (undefined on CuPy).
"""

from __future__ import annotations

__all__ = ["im2col", "col2im", "padded_extent", "window_views"]


def padded_extent(i, k, s, p, d, o):
    """Rows (or columns) the padded input needs so that ``o`` windows fit.

    Returns ``(before, after)`` padding: ``before = p``; ``after`` is at least
    ``p`` and more when ceil-mode output sizes need windows that run past the
    padded input (those cells are filled with the pad value).
    """
    need = (o - 1) * s + d * (k - 1) + 1  # cells from the first window start to the last window end
    after = max(p, need - i - p)
    return p, after


def im2col(x, kernel, stride, padding, dilation, out_hw, *, pad_value=0.0, xp):
    """Gather the windows of ``x``.

    Parameters
    ----------
    x : array of shape (N, C, iH, iW)
    kernel, stride, padding, dilation : pair of int
        ``(kH, kW)``, ``(sH, sW)``, ``(pH, pW)``, ``(dH, dW)``.
    out_hw : pair of int
        ``(oH, oW)`` from :func:`ebr_ref.layers.geometry.out_size`.
    pad_value : float
        Value of padded cells (0 for convolution, ``-inf`` for max pooling).
    xp : module

    Returns
    -------
    array of shape (N, C, kH, kW, oH, oW)
        ``col[n, c, u, v, y, x] = x_pad[n, c, y sH + u dH, x sW + v dW]``.
    """
    N, C = x.shape[:2]
    (kH, kW), (oH, oW) = kernel, out_hw
    col = xp.empty((N, C, kH, kW, oH, oW), dtype=x.dtype)
    for (u, v), view in window_views(
        x, kernel, stride, padding, dilation, out_hw, pad_value=pad_value, xp=xp
    ):
        col[:, :, u, v] = view
    return col


def window_views(x, kernel, stride, padding, dilation, out_hw, *, pad_value=0.0, xp):
    """The ``kH kW`` strided views of :func:`im2col`, without gathering them.

    Yields ``((u, v), view)`` in row-major order of the kernel offsets, where
    ``view (N, C, oH, oW)`` is ``x_pad[:, :, u dH :: sH, v dW :: sW]`` cut to the
    output size: a view of ``x``, or of one padded copy of it when padding or a
    ceil-mode overhang needs ``pad_value`` cells.
    """
    N, C, iH, iW = x.shape
    (kH, kW), (sH, sW), (pH, pW), (dH, dW), (oH, oW) = kernel, stride, padding, dilation, out_hw
    top, bottom = padded_extent(iH, kH, sH, pH, dH, oH)
    left, right = padded_extent(iW, kW, sW, pW, dW, oW)
    if top or bottom or left or right:
        x = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    for u in range(kH):  # loop over kernel offsets only
        y0 = u * dH
        for v in range(kW):
            x0 = v * dW
            yield (u, v), x[:, :, y0 : y0 + sH * (oH - 1) + 1 : sH, x0 : x0 + sW * (oW - 1) + 1 : sW]


def col2im(col, in_hw, stride, padding, dilation, *, xp):
    """Adjoint of :func:`im2col`: sum columns back into an ``(N, C, iH, iW)`` image.

    Parameters
    ----------
    col : array of shape (N, C, kH, kW, oH, oW)
    in_hw : pair of int
        ``(iH, iW)``.
    stride, padding, dilation : pair of int
    xp : module

    Returns
    -------
    array of shape (N, C, iH, iW)
        Entries that fell on padding are dropped.
    """
    N, C, kH, kW, oH, oW = col.shape
    (iH, iW), (sH, sW), (pH, pW), (dH, dW) = in_hw, stride, padding, dilation
    top, bottom = padded_extent(iH, kH, sH, pH, dH, oH)
    left, right = padded_extent(iW, kW, sW, pW, dW, oW)
    img = xp.zeros((N, C, iH + top + bottom, iW + left + right), dtype=col.dtype)
    for u in range(kH):  # loop over kernel offsets only
        y0 = u * dH
        for v in range(kW):
            x0 = v * dW
            img[:, :, y0 : y0 + sH * (oH - 1) + 1 : sH, x0 : x0 + sW * (oW - 1) + 1 : sW] += col[:, :, u, v]
    return img[:, :, top : top + iH, left : left + iW]
