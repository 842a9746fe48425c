"""Fully connected layer: forward, excitation backward, gradient.

Shapes: ``x (N, D)``, ``W (M, D)`` (``(out, in)``, as Caffe and PyTorch),
``b (M,)``, ``y (N, M)``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal, safe_divide

__all__ = ["LinearCache", "linear_forward", "linear_eb", "linear_grad"]

# Without a precomputed W+, linear_eb forms it one block of output rows at a time, each block
# about this many elements (4 MiB in float32: it stays in cache while steps 1-3 use it) and at
# least twice as many rows as the signal has (so that updating c costs less than reading W).
_BLOCK_ELEMENTS = 2**20


class LinearCache(NamedTuple):
    """What EB and the gradient of a fully connected layer need."""

    x: object  # (N, D) input activations a_i
    W: object  # (M, D) weights
    W_pos: object = None  # (M, D) max(W, 0) if the caller precomputed it, else None


def _check(x, W, b):
    if x.ndim != 2:
        raise ValueError(f"linear: x must be (N, D), got shape {tuple(x.shape)}")
    if W.ndim != 2 or W.shape[1] != x.shape[1]:
        raise ValueError(
            f"linear: W must be (M, D) with D = {x.shape[1]} (input size), got shape {tuple(W.shape)}"
        )
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise ValueError(f"linear: b must be ({W.shape[0]},), got shape {tuple(b.shape)}")
    if W.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
        raise TypeError(f"linear: dtypes differ (x {x.dtype}, W {W.dtype}, b {None if b is None else b.dtype})")


def _rows_times(a, W):
    """``a @ W`` for ``a (N, M)`` or ``(K, N, M)`` as one GEMM over all ``K N`` rows.

    (A stacked ``(K, N, M) @ (M, D)`` would run K small GEMMs, several times slower.)
    """
    return (a.reshape(-1, a.shape[-1]) @ W).reshape(a.shape[:-1] + (W.shape[1],))


def linear_forward(x, W, b=None, *, W_pos=None):
    """``y = x W^T + b``.

    Parameters
    ----------
    x : array of shape (N, D)
    W : array of shape (M, D)
    b : array of shape (M,) or None
    W_pos : array of shape (M, D), optional
        ``max(W, 0)``, precomputed by a caller that runs EB many times with the
        same weights; it is only stored in the cache (EB forms it block by block
        otherwise).

    Returns
    -------
    y : array of shape (N, M)
    cache : LinearCache
    """
    get_xp(x, W, b)  # raises on mixed backends
    _check(x, W, b)
    if W_pos is not None and W_pos.shape != W.shape:
        raise ValueError(f"linear: W_pos has shape {tuple(W_pos.shape)}, W has {tuple(W.shape)}")
    y = x @ W.T  # (N, M)
    if b is not None:
        y = y + b
    return y, LinearCache(x, W, W_pos)


def linear_eb(p_y, cache):
    """Excitation backward of a fully connected layer.

    ``P(a_i) = a_i * sum_j W+_ji P(a_j) / Z_j`` with ``Z_j = sum_i W+_ji a_i``
    (paper eq. 3 summed over parents, with the conditional winning probability
    of eq. 1; Zhang et al. 2016 eq. 4).

    Parameters
    ----------
    p_y : array of shape (N, M) or (K, N, M)
        Marginal winning probabilities of the outputs (K stacked signals allowed).
    cache : LinearCache

    Returns
    -------
    p_x : array of shape (N, D) or (K, N, D)

    Notes
    -----
    Conventions: the bias never enters ``Z``; where ``Z_j == 0`` exactly the
    quotient is 0 (no epsilon) and that signal is lost; inputs are not clamped,
    so a signed ``x`` gives a signed result. With ``x >= 0`` and every ``Z_j > 0``
    the rule conserves mass: ``p_x.sum() == p_y.sum()``.

    Without ``cache.W_pos`` the steps run over blocks of output units ``j``
    (``Z_j`` and the quotient of unit ``j`` need only row ``j`` of ``W+``), so
    ``W+`` is formed a block at a time and never held whole: for VGG16's fc6 that
    saves writing and re-reading 400 MB per call. The sums are grouped by block
    (equal to rounding).
    """
    x, W, W_pos = cache
    xp = get_xp(p_y, x)
    check_signal(p_y, (x.shape[0], W.shape[0]), "linear_eb")
    if W_pos is not None:
        return x * _eb_adjoint(x, W_pos, p_y, xp=xp)  # (N, D) or (K, N, D)  step 4: multiply by the input
    M, D = W.shape
    rows = max(_BLOCK_ELEMENTS // D, 2 * p_y.size // M, 1)  # output units per block
    c = xp.zeros(p_y.shape[:-1] + (D,), dtype=p_y.dtype)  # (N, D) or (K, N, D)
    W_pos = xp.empty((min(rows, M), D), dtype=W.dtype)  # one block of W+, reused
    for j in range(0, M, rows):  # blocks of output units (memory only)
        Wb = W_pos[: min(rows, M - j)]  # (b, D)
        xp.maximum(W[j : j + rows], 0, out=Wb)  # (b, D)  excitatory weights of this block only
        c += _eb_adjoint(x, Wb, p_y[..., j : j + rows], xp=xp)  # (N, D) or (K, N, D)  steps 1-3 of this block
    return x * c  # (N, D) or (K, N, D)  step 4: multiply by the input


def _eb_adjoint(x, W_pos, p_y, *, xp):
    """Steps 1-3 of EB for output units with excitatory weights ``W_pos (M, D)``: ``W+^T (p_y / Z)``."""
    z = x @ W_pos.T  # (N, M)  step 1: forward with W+, no bias
    s = safe_divide(p_y, z, xp=xp)  # (N, M) or (K, N, M)  step 2: 0 where z == 0
    return _rows_times(s, W_pos)  # (N, D) or (K, N, D)  step 3: adjoint of step 1


def linear_grad(g_y, cache):
    """Gradient with respect to the input: ``g_x = g_y W``.

    Parameters
    ----------
    g_y : array of shape (N, M) or (K, N, M)
    cache : LinearCache

    Returns
    -------
    g_x : array of shape (N, D) or (K, N, D)
    """
    x, W = cache.x, cache.W
    get_xp(g_y, W)
    check_signal(g_y, (x.shape[0], W.shape[0]), "linear_grad")
    return _rows_times(g_y, W)  # (N, D) or (K, N, D)
