"""Word embedding (a table lookup, Caffe's ``Embed`` without bias): forward, EB, gradient.

Shapes: ``ids (T, N)`` integers in ``[0, V)``, table ``W_emb (V, E)``, output ``y (T, N, E)``.
In the captioning decoder the embedded previous word enters the LSTM beside the
visual path; signal that reaches it has left the visual path (docs/lstm.md §4).
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal

__all__ = ["EmbeddingCache", "embedding_forward", "embedding_eb", "embedding_grad"]


class EmbeddingCache(NamedTuple):
    """What EB and the gradient of a lookup need."""

    ids: object  # (T, N) integer token ids
    W_emb: object  # (V, E) table


def embedding_forward(ids, W_emb):
    """``y[t, n] = W_emb[ids[t, n]]``.

    Parameters
    ----------
    ids : integer array of shape (T, N)
        Token ids, each in ``[0, V)``.
    W_emb : array of shape (V, E)

    Returns
    -------
    y : array of shape (T, N, E)
        In ``W_emb``'s dtype.
    cache : EmbeddingCache

    Raises
    ------
    TypeError
        When ``ids`` is not an integer array.
    ValueError
        For bad shapes or an id outside ``[0, V)`` (checked: CuPy would wrap it).
    """
    xp = get_xp(ids, W_emb)
    if ids.ndim != 2:
        raise ValueError(f"embedding_forward: ids must be (T, N), got shape {tuple(ids.shape)}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding_forward: ids must be integers, got dtype {ids.dtype}")
    if W_emb.ndim != 2:
        raise ValueError(f"embedding_forward: W_emb must be (V, E), got shape {tuple(W_emb.shape)}")
    V = W_emb.shape[0]
    if ids.size and not bool(xp.all((ids >= 0) & (ids < V))):
        raise ValueError(f"embedding_forward: every id must lie in [0, {V}) (the table has V = {V} rows)")
    return W_emb[ids], EmbeddingCache(ids, W_emb)  # (T, N, E)  a gather: no duplicate-index writes


def embedding_eb(p_y, cache):
    """Excitation backward of a lookup: the token receives its embedded vector's whole signal.

    Parameters
    ----------
    p_y : array of shape (T, N, E) or (K, T, N, E)
    cache : EmbeddingCache

    Returns
    -------
    p_tokens : array of shape (T, N) or (K, T, N)
        ``p_tokens[t, n] = sum_e p_y[t, n, e]``: per-step totals of the signal
        that reached the looked-up word (and so left the visual path).

    Notes
    -----
    Each output unit ``y[t, n, e] = W_emb[ids[t, n], e]`` has a single child,
    the token, so EB routes all of its signal there (mass conserved; signed
    where the incoming signal is signed). The released Caffe code has no EB
    for ``Embed`` (and Caffe cannot back-propagate into its integer input).
    """
    ids, W_emb = cache
    get_xp(p_y, W_emb)
    check_signal(p_y, tuple(ids.shape) + (W_emb.shape[1],), "embedding_eb")
    return p_y.sum(axis=-1)  # (T, N) or (K, T, N)


def embedding_grad(g_y, cache):
    """Gradient of ``<g_y, y>`` with respect to the table (ids are not differentiable).

    Parameters
    ----------
    g_y : array of shape (T, N, E) or (K, T, N, E)
    cache : EmbeddingCache

    Returns
    -------
    g_W : array of shape (V, E) or (K, V, E)
        ``g_W[v] = sum of g_y[t, n] over (t, n) with ids[t, n] == v``: non-zero
        only in the rows used, repeated ids accumulated.

    Notes
    -----
    Computed as ``onehot(ids)^T g_y`` (a ``(V, T N)`` one-hot matrix product),
    not a scatter: duplicate-index assignment is undefined on CuPy.
    """
    ids, W_emb = cache
    xp = get_xp(g_y, W_emb)
    stacked = check_signal(g_y, tuple(ids.shape) + (W_emb.shape[1],), "embedding_grad")
    V, E = W_emb.shape
    onehot = (ids.reshape(-1, 1) == xp.arange(V)).astype(g_y.dtype)  # (T N, V)
    g = g_y.reshape((g_y.shape[0] if stacked else 1, -1, E))  # (K, T N, E)
    g_W = onehot.T @ g  # (K, V, E)
    return g_W if stacked else g_W[0]
