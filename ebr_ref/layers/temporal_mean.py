"""Mean over time (the captioning model's video pooling): forward, excitation backward, gradient.

Shapes: ``x (T, ...)``, ``y (...)``: the first axis is time (the clip's frames)
and is averaged away, e.g. ``x (T, N, D)`` (fc7 features of ``T`` frames of
``N`` clips) to ``y (N, D)``. In the captioning model of paper §4.2 (Venugopalan
et al. 2015) ``y`` is the video feature that enters the decoder.

EB treats the mean as an average pooling whose one window spans the whole time
axis (docs/spec.md §2, average pooling): the signal of ``y[u]`` is distributed back to
the frames in proportion to their activations ``x[t, u]``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal

__all__ = ["TemporalMeanCache", "temporal_mean_forward", "temporal_mean_eb", "temporal_mean_grad"]


class TemporalMeanCache(NamedTuple):
    """What EB and the gradient of the mean over time need."""

    x: object  # (T, ...) input activations a_i, time first


def temporal_mean_forward(x):
    """``y = (1 / T) sum_t x[t]``.

    Parameters
    ----------
    x : array of shape (T, ...)
        At least 2-D; time on the first axis, ``T >= 1``.

    Returns
    -------
    y : array of shape x.shape[1:]
    cache : TemporalMeanCache

    Raises
    ------
    ValueError
        For a 0-d or 1-d ``x`` or ``T == 0``.

    Examples
    --------
    >>> import numpy as np
    >>> temporal_mean_forward(np.array([[1.0, 0.0], [3.0, 2.0]]))[0]
    array([2., 1.])
    """
    get_xp(x)
    if x.ndim < 2:
        raise ValueError(
            f"temporal_mean: x must be (T, ...) with at least one axis after time, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("temporal_mean: x has no time steps (T = 0)")
    return x.mean(axis=0), TemporalMeanCache(x)  # (...)


def temporal_mean_eb(p_y, cache):
    """Excitation backward of the mean over time: frames share a unit's signal by their activations.

    ``P(x[t, u]) = x[t, u] P(y[u]) / S[u]`` with ``S[u] = sum_t x[t, u]`` (paper
    eqs. 1, 3 with every weight equal and positive; the ``1 / T`` of the forward
    cancels), exactly 0 where ``S[u] <= 0``.

    Parameters
    ----------
    p_y : array of shape x.shape[1:] or (K,) + x.shape[1:]
        Signals of the pooled units (K stacked signals share one ``S``).
    cache : TemporalMeanCache

    Returns
    -------
    p_x : array of shape x.shape or (K,) + x.shape

    Notes
    -----
    docs/spec.md §2, average pooling: the released code's strict ``S > 0`` test
    (``pooling_layer.cpp`` / ``.cu`` ``AvePoolBackwardEB`` in
    sbargal/Caffe-ExcitationBP-RNNs); the signal of a unit with ``S <= 0`` is
    lost (it has no frame with positive activation to go to). Linear and
    convolution layers drop only ``Z == 0``; this rule is the pooling one
    deliberately. With ``x >= 0`` and every ``S > 0`` mass is conserved:
    ``p_x.sum() == p_y.sum()``.

    Examples
    --------
    >>> import numpy as np
    >>> _, cache = temporal_mean_forward(np.array([[1.0, 0.0], [3.0, 0.0]]))
    >>> temporal_mean_eb(np.array([1.0, 1.0]), cache)  # unit 1 has S = 0: its signal is lost
    array([[0.25, 0.  ],
           [0.75, 0.  ]])
    """
    x = cache.x
    xp = get_xp(p_y, x)
    stacked = check_signal(p_y, x.shape[1:], "temporal_mean_eb")
    S = x.sum(axis=0)  # (...)  step 1: forward with weights 1
    pos = S > 0  # (...)  strict test of the released code
    s = xp.where(pos, p_y / xp.where(pos, S, 1), 0).astype(p_y.dtype, copy=False)  # (...) or (K, ...)  step 2
    c = s[:, None] if stacked else s[None]  # (K, 1, ...) or (1, ...)  step 3: adjoint of the sum (broadcast)
    return x * c  # (T, ...) or (K, T, ...)  step 4: multiply by the input


def temporal_mean_grad(g_y, cache):
    """Gradient with respect to the input: every frame receives ``g_y / T``.

    Parameters
    ----------
    g_y : array of shape x.shape[1:] or (K,) + x.shape[1:]
    cache : TemporalMeanCache

    Returns
    -------
    g_x : array of shape x.shape or (K,) + x.shape
        A new array (not a broadcast view).
    """
    x = cache.x
    xp = get_xp(g_y, x)
    stacked = check_signal(g_y, x.shape[1:], "temporal_mean_grad")
    T = x.shape[0]
    g = g_y / T  # (...) or (K, ...)
    g = g[:, None] if stacked else g[None]  # (K, 1, ...) or (1, ...)
    shape = (g_y.shape[0],) + tuple(x.shape) if stacked else tuple(x.shape)
    return xp.broadcast_to(g, shape).copy()  # (T, ...) or (K, T, ...)
