"""Dropout at inference: the identity, in the forward and in both backward passes.

Shapes: any; ``y`` has the shape of ``x``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal

__all__ = ["DropoutCache", "dropout_forward", "dropout_eb", "dropout_grad"]


class DropoutCache(NamedTuple):
    """Dropout's record: the shape it saw and its (unused) drop probability."""

    shape: tuple  # shape of x and y
    p: float  # drop probability of the trained layer (recorded, not applied)


def dropout_forward(x, p=0.5):
    """Inference-time dropout: ``y = x``.

    Parameters
    ----------
    x : array of any shape
    p : float
        The drop probability the layer was trained with, in ``[0, 1)``. It is
        validated and recorded only: at inference nothing is dropped and
        nothing is rescaled (inverted dropout, as PyTorch and Caffe's TEST
        phase), so there is no randomness.

    Returns
    -------
    y : array
        ``x`` itself (no copy; no kernel modifies its inputs, so sharing is safe).
    cache : DropoutCache

    Raises
    ------
    ValueError
        For ``p`` outside ``[0, 1)``.
    """
    get_xp(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p!r}")
    return x, DropoutCache(tuple(x.shape), float(p))


def dropout_eb(p_y, cache):
    """Excitation backward of inference-time dropout: the identity, ``P(a_i) = P(a_j)``.

    Parameters
    ----------
    p_y : array shaped like y, or (K,) + y.shape
    cache : DropoutCache

    Returns
    -------
    p_x : array
        ``p_y`` itself.

    Notes
    -----
    The released Caffe code runs dropout's ordinary backward, which in the
    TEST phase is a copy (``dropout_layer.cpp``); docs/spec.md §2.
    """
    check_signal(p_y, cache.shape, "dropout_eb")
    return p_y


def dropout_grad(g_y, cache):
    """Gradient of inference-time dropout: the identity.

    Parameters
    ----------
    g_y : array shaped like y, or (K,) + y.shape
    cache : DropoutCache

    Returns
    -------
    g_x : array
        ``g_y`` itself.
    """
    check_signal(g_y, cache.shape, "dropout_grad")
    return g_y
