"""Rectified linear unit: forward, excitation backward (pass-through masked by ``1[y > 0]``), gradient.

Shapes: any; ``y`` has the shape of ``x``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal

__all__ = ["ReLUCache", "relu_forward", "relu_eb", "relu_grad"]


class ReLUCache(NamedTuple):
    """What EB and the gradient of a ReLU need."""

    y: object  # post-ReLU output max(x, 0); the mask is y > 0 (Caffe's in-place blob)


def relu_forward(x, *, overwrite_input=False):
    """``y = max(x, 0)`` elementwise.

    Parameters
    ----------
    x : array of any shape
    overwrite_input : bool
        Write ``y`` into ``x``'s memory instead of a new array (Caffe's in-place
        ReLU): the same values, no new allocation. Only for an ``x`` that nothing
        else holds, such as the output of the layer below it inside
        :meth:`ebr_ref.models.stack.LayerStack.run_forward`.

    Returns
    -------
    y : array of the shape of x
    cache : ReLUCache
    """
    xp = get_xp(x)
    y = xp.maximum(x, 0, out=x if overwrite_input else None)  # same shape and dtype as x
    return y, ReLUCache(y)


def _mask(p, cache, name):
    y = cache.y
    xp = get_xp(p, y)
    check_signal(p, y.shape, name)
    return xp.where(y > 0, p, 0).astype(p.dtype, copy=False)  # broadcasts over a leading K axis


def relu_eb(p_y, cache):
    """Excitation backward of a ReLU: the signal passes, masked by ``1[y > 0]``.

    ``P(a_i) = P(a_j) * 1[a_j > 0]``: docs/spec.md §2 lets ReLU apply its mask instead of
    passing the signal unchanged; inside a network the two agree (Notes).

    Parameters
    ----------
    p_y : array shaped like y, or (K,) + y.shape
    cache : ReLUCache

    Returns
    -------
    p_x : array of the shape of p_y

    Notes
    -----
    The mask reproduces the released Caffe code, which has no EB override for
    ReLU and runs its ordinary backward (``relu_layer.cpp``, in place, so the
    mask is computed on the post-ReLU output). Inside a network the result is
    the same as passing the signal unchanged: the next linear or convolution
    EB rule multiplies by its input, the post-ReLU activation ``y``, which is
    0 wherever the mask is 0, so no signal can have arrived there; the mask
    acts only on a signal seeded or contrasted directly at this layer. At
    exactly ``y == 0`` (``x <= 0``) the mask is 0. Linear in the signal.
    """
    return _mask(p_y, cache, "relu_eb")


def relu_grad(g_y, cache):
    """Gradient with respect to the input: ``g_x = g_y * 1[x > 0]``.

    Parameters
    ----------
    g_y : array shaped like y, or (K,) + y.shape
    cache : ReLUCache

    Returns
    -------
    g_x : array of the shape of g_y

    Notes
    -----
    At ``x == 0`` the derivative is taken as 0 (Caffe and PyTorch do the same).
    """
    return _mask(g_y, cache, "relu_grad")
