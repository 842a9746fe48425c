"""Local response normalisation across channels (Caffe's ACROSS_CHANNELS, AlexNet).

Dimension legend (docs/notation.md): ``N`` batch, ``K`` stacked signals, ``C``
channels, ``H, W`` spatial size, ``n`` the window size (``size``, Caffe's
``local_size``).

Shapes: ``x (N, C, H, W)``, ``y`` the same, with

    scale[c] = k + (alpha / n) * sum_{c' = c - (n-1)/2}^{c + (n-1)/2} x[c']^2
               (channels outside [0, C) count 0)
    y[c]     = x[c] * scale[c]^(-beta)

at every ``(n, h, w)`` (Caffe's ``lrn_layer.cpp``; Krizhevsky et al. 2012 with
Caffe's ``alpha / n``). PyTorch's ``local_response_norm(x, size, alpha, beta, k)``
averages the squares over the window (it divides by ``size`` whatever the
border), so its ``alpha`` is Caffe's ``alpha`` and the two agree for odd sizes.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal

__all__ = ["LRNCache", "lrn_forward", "lrn_eb", "lrn_grad"]


class LRNCache(NamedTuple):
    """What the gradient of LRN needs (EB needs only the shape)."""

    x: object  # (N, C, H, W) input
    scale: object  # (N, C, H, W) k + alpha / n * window sum of x^2
    size: int  # n, odd
    alpha: float
    beta: float
    k: float


def _channel_window_sum(a, size, *, xp):
    """``sum_{c' = c - (n-1)/2}^{c + (n-1)/2} a[..., c', :, :]``, zero outside; channels on axis -3."""
    half = (size - 1) // 2
    C = a.shape[-3]
    pad = [(0, 0)] * a.ndim
    pad[-3] = (half, half)
    padded = xp.pad(a, pad)  # (..., C + n - 1, H, W)
    out = padded[..., 0:C, :, :].copy()
    for d in range(1, size):  # loop over window offsets only
        out += padded[..., d : d + C, :, :]
    return out


def lrn_forward(x, *, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels.

    Parameters
    ----------
    x : array of shape (N, C, H, W)
    size : int
        ``n``, the number of channels in the window; odd (Caffe's ``local_size``,
        which Caffe also requires to be odd).
    alpha, beta, k : float
        ``alpha >= 0``, ``k > 0`` (so the scale is positive). The defaults are
        AlexNet's and PyTorch's (Caffe's proto default for ``alpha`` is 1).

    Returns
    -------
    y : array of shape (N, C, H, W)
    cache : LRNCache

    Raises
    ------
    ValueError
        For a non-4-D input, an even or non-positive ``size``, ``alpha < 0`` or
        ``k <= 0``.
    """
    xp = get_xp(x)
    if x.ndim != 4:
        raise ValueError(f"lrn: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise ValueError(f"lrn: size must be a positive odd int (as Caffe's local_size), got {size!r}")
    if not (alpha >= 0 and k > 0):
        raise ValueError(f"lrn: needs alpha >= 0 and k > 0, got alpha={alpha!r}, k={k!r}")
    scale = k + (alpha / size) * _channel_window_sum(x * x, size, xp=xp)  # (N, C, H, W)
    scale = scale.astype(x.dtype, copy=False)
    y = x * scale ** (-beta)  # (N, C, H, W)
    return y, LRNCache(x, scale, size, float(alpha), float(beta), float(k))


def lrn_eb(p_y, cache):
    """Excitation backward of LRN: the identity, ``P(a_i) = P(a_j)``.

    Parameters
    ----------
    p_y : array of shape (N, C, H, W) or (K, N, C, H, W)
    cache : LRNCache

    Returns
    -------
    p_x : array
        ``p_y`` itself.

    Notes
    -----
    docs/spec.md §2 and the released code (``lrn_layer.cpp`` / ``.cu``
    ``Backward_eb_*``: bottom diff := top diff). LRN is not treated as a layer
    with weights: the signal passes unchanged, so it conserves mass.
    """
    check_signal(p_y, cache.x.shape, "lrn_eb")
    return p_y


def lrn_grad(g_y, cache):
    """Gradient with respect to the input.

    ``g_x[i] = g_y[i] scale[i]^(-beta)
    - (2 alpha beta / n) x[i] sum_{c in window(i)} g_y[c] y[c] / scale[c]``
    (the window is symmetric, so ``i in window(c)`` iff ``c in window(i)``;
    Caffe's ``CrossChannelBackward``).

    Parameters
    ----------
    g_y : array of shape (N, C, H, W) or (K, N, C, H, W)
    cache : LRNCache

    Returns
    -------
    g_x : array of the shape of g_y
    """
    x, scale, size, alpha, beta, _ = cache
    xp = get_xp(g_y, x)
    check_signal(g_y, x.shape, "lrn_grad")
    scale_pow = scale ** (-beta)  # (N, C, H, W)
    y = x * scale_pow  # (N, C, H, W)
    ratio = _channel_window_sum(g_y * (y / scale), size, xp=xp)  # (N, C, H, W) or (K, ...)
    return g_y * scale_pow - (2.0 * alpha * beta / size) * x * ratio
