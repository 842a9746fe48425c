"""Flatten: ``(N, C, H, W) -> (N, C H W)`` in C, H, W order, and back.

The order is that of Caffe's Flatten layer and PyTorch's ``flatten(1)`` (row-major
over the trailing axes), so fully connected weights import without permutation.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal

__all__ = ["FlattenCache", "flatten_forward", "flatten_eb", "flatten_grad"]


class FlattenCache(NamedTuple):
    """The input shape, to reshape signals back."""

    in_shape: tuple  # (N, C, H, W), or any (N, ...)


def flatten_forward(x):
    """Flatten every axis after the batch axis.

    Parameters
    ----------
    x : array of shape (N, C, H, W) (any ``(N, ...)`` with at least 2 axes)

    Returns
    -------
    y : array of shape (N, C H W)
        ``y[n, (c H + h) W + w] = x[n, c, h, w]``.
    cache : FlattenCache

    Raises
    ------
    ValueError
        For an input with fewer than 2 axes.
    """
    get_xp(x)
    if x.ndim < 2:
        raise ValueError(f"flatten: x must be (N, ...) with at least 2 axes, got shape {tuple(x.shape)}")
    N = x.shape[0]
    return x.reshape(N, -1), FlattenCache(tuple(x.shape))


def _unflatten(p, cache, name):
    in_shape = cache.in_shape
    D = 1
    for n in in_shape[1:]:
        D *= n
    stacked = check_signal(p, (in_shape[0], D), name)
    return p.reshape(((p.shape[0],) if stacked else ()) + in_shape)


def flatten_eb(p_y, cache):
    """Excitation backward of flatten: the signal reshaped back, ``P(a_i) = P(a_j)``.

    Parameters
    ----------
    p_y : array of shape (N, D) or (K, N, D)
        ``D = C H W``.
    cache : FlattenCache

    Returns
    -------
    p_x : array of shape (N, C, H, W) or (K, N, C, H, W)
    """
    return _unflatten(p_y, cache, "flatten_eb")


def flatten_grad(g_y, cache):
    """Gradient of flatten: ``g_y`` reshaped back.

    Parameters
    ----------
    g_y : array of shape (N, D) or (K, N, D)
    cache : FlattenCache

    Returns
    -------
    g_x : array of shape (N, C, H, W) or (K, N, C, H, W)
    """
    return _unflatten(g_y, cache, "flatten_grad")
