"""The arithmetic steps of paper Algorithm 1 (cEB-R), as pure functions of signals.

Each function is one step of the algorithm, cites its equation and changes
nothing it is given. The drivers (:mod:`.ground`, :mod:`.ground_caption`)
call them in this order; the layer-by-layer EB passes between them are
:func:`ebr_ref.models.stack.run_eb` (paper eqs. 1-4 above the interface
layer, eqs. 8-9 below it, in :mod:`.frame_cnn`).

1. :func:`one_hot_seed` -- the indicator of the target at the seeded step(s)
   (Algorithm 1 step 1);
2. :func:`negate_classifier` -- the classifier with negated weights for the dual
   pass (eqs. 2 and 4; Algorithm 1 step 4);
3. :func:`normalise_by_total` -- the temporal normalisation of eq. 5 (eq. 6 for
   the dual pass; Algorithm 1 step 3);
4. :func:`contrast` -- ``Map = P_N - P̄_N`` (eq. 7; Algorithm 1 step 5);
5. :func:`channel_sum` -- the saliency map of a frame at a conv layer, the signal
   ``Map^t(a_i)`` of eq. 9 summed over channels (Algorithm 1 step 6);
6. :func:`frame_evidence` -- the per-frame sums ``S`` (Algorithm 1 step 7, §4.1).

Names follow docs/notation.md: ``K`` stacked targets, ``T`` frames, ``P`` the
signal ``P^t(a_i)`` at the interface layer, ``P_N`` and ``P_N_dual`` its
normalised positive and dual passes, ``Map`` their contrast.
"""

from __future__ import annotations

from .. import backend
from ..layers._eb import safe_divide

__all__ = [
    "one_hot_seed",
    "negate_classifier",
    "normalise_by_total",
    "contrast",
    "channel_sum",
    "frame_evidence",
]


def one_hot_seed(targets, steps, T, C, *, xp, dtype):
    """The seed of Algorithm 1 step 1: a raw 1 on each target's logit at each seeded step.

    Parameters
    ----------
    targets : list of int
        ``K`` class indices.
    steps : list of int
        The seeded time steps (the same for every target).
    T, C : int
        Time steps and classes.
    xp : module
    dtype : dtype

    Returns
    -------
    array of shape (K, T, C)
        ``seed[k, t, targets[k]] = 1`` for ``t`` in ``steps``, 0 elsewhere (no softmax).
    """
    seed = xp.zeros((len(targets), T, C), dtype=dtype)  # (K, T, C)
    for k, c in enumerate(targets):
        seed[k, steps, c] = 1
    return seed


def negate_classifier(cache, *, W_pos=None):
    """The classifier's cache with its weights negated, ``W̄ = -W``: the dual pass of cEB and cEB-R.

    Parameters
    ----------
    cache : LinearCache
        The classifier's forward cache (:func:`ebr_ref.layers.linear.linear_forward`).
    W_pos : array of shape (M, D), optional
        ``max(-W, 0)`` when the caller keeps it (a per-call memo); computed here otherwise.

    Returns
    -------
    LinearCache
        With ``W = -W`` and ``W_pos = max(-W, 0)``; the input ``x`` is unchanged.

    Notes
    -----
    Paper eqs. 2 and 4: the conditional probabilities of the dual pass use
    ``w̄_ij = -w_ij`` at the top layer only, so its EB keeps the weights that
    *inhibit* the target. The bias is untouched (it never enters ``Z``).
    """
    W_neg = -cache.W  # (M, D)  W̄
    if W_pos is None:
        W_pos = backend.get_xp(W_neg).maximum(W_neg, 0)  # (M, D)  max(W̄, 0)
    return cache._replace(W=W_neg, W_pos=W_pos)


def normalise_by_total(P):
    """Eq. 5: every target's signal divided by its grand total over frames and units.

    ``P_N^t(a_i) = P^t(a_i) / Σ_t Σ_i P^t(a_i)`` (eq. 6 is the same for the dual pass).

    Parameters
    ----------
    P : array of shape (K, T, ...)
        ``K`` stacked signals at the interface layer, every frame.

    Returns
    -------
    P_N : array of the shape of P
        The normalised signals; all zeros for a target whose total is 0.
    totals : ndarray of shape (K,)
        The grand totals (NumPy, whatever the backend).

    Notes
    -----
    One total per target over all frames and all units, so frames stay
    comparable in time (docs/spec.md §5.3). A zero total divides to 0, not NaN
    (the 0/0 -> 0 convention of :func:`ebr_ref.layers._eb.safe_divide`): that
    pass then contributes nothing, and the drivers report it.
    """
    xp = backend.get_xp(P)
    total = P.sum(axis=tuple(range(1, P.ndim)), keepdims=True)  # (K, 1, ..., 1)  Σ_t Σ_i P^t(a_i)
    P_N = safe_divide(P, total, xp=xp)  # (K, T, ...)  0 where the total is 0
    return P_N, backend.to_numpy(total).reshape(-1)  # (K, T, ...), (K,)


def contrast(P_N, P_N_dual):
    """Eq. 7: ``Map^t(a_i) = P_N^t(a_i) - P̄_N^t(a_i)``, the contrastive signal (``(K, T, ...)``, signed).

    For per-frame cEB the same difference is taken, of the two signals at the
    classifier's input, without normalisation (docs/spec.md §2).
    """
    return P_N - P_N_dual  # (K, T, ...)


def channel_sum(p):
    """A frame's saliency map: the signal at the read-out layer summed over channels.

    Parameters
    ----------
    p : array of shape (K, n, C, h, w) or (K, n, D)
        ``Map^t(a_i)`` of eq. 9 at the read-out layer for ``n`` frames.

    Returns
    -------
    array of shape (K, n, h, w), or p itself at a flat layer (K, n, D)
    """
    return p.sum(axis=2) if p.ndim == 5 else p  # (K, n, h, w) or (K, n, D)


def frame_evidence(maps):
    """The temporal evidence ``S``: each frame's map summed (Algorithm 1 step 7, paper §4.1).

    Parameters
    ----------
    maps : array of shape (K, T, ...)

    Returns
    -------
    array of shape (K, T)
    """
    return maps.reshape(maps.shape[:2] + (-1,)).sum(axis=-1)  # (K, T)
