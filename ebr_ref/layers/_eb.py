"""Pieces shared by the excitation-backward (EB) kernels.

The EB rule of a linear operator ``A`` with non-negative part ``A_pos``
(paper eqs. 1, 3; Zhang et al. 2016) is four computations::

    z   = A_pos x            # step 1: forward with W+, no bias
    s   = p_y / z            # step 2: 0 where z == 0 (no epsilon)
    c   = A_pos^T s          # step 3: the adjoint of step 1
    p_x = x * c              # step 4

Every EB kernel accepts the incoming signal either with the shape of the
layer's output ``y`` or with one extra leading axis ``K`` (several signals
propagated at once, for example several target classes); the normaliser ``z``
is computed once and shared by all ``K`` signals.
"""

from __future__ import annotations

__all__ = ["safe_divide", "split_signal", "merge_signal", "check_signal"]


def safe_divide(num, den, *, xp):
    """``num / den`` elementwise, exactly 0 where ``den == 0``.

    No epsilon is added anywhere (the released Caffe code's convention): the
    signal that meets a zero denominator is dropped, and callers account for it
    as lost mass. ``den`` broadcasts against ``num``.
    """
    nz = den != 0
    return xp.where(nz, num / xp.where(nz, den, 1), 0).astype(num.dtype, copy=False)


def check_signal(p, y_shape, name: str):
    """Validate that a signal has shape ``y_shape`` or ``(K,) + y_shape``.

    Returns
    -------
    bool
        True when the signal carries a leading ``K`` axis.

    Raises
    ------
    ValueError
        Naming the kernel, the expected and the found shape.
    """
    y_shape = tuple(y_shape)
    if tuple(p.shape) == y_shape:
        return False
    if p.ndim == len(y_shape) + 1 and tuple(p.shape[1:]) == y_shape:
        return True
    raise ValueError(
        f"{name}: signal of shape {tuple(p.shape)} does not match the layer output "
        f"{y_shape} (or (K,) + {y_shape} for K stacked signals)"
    )


def split_signal(p, y_shape, name: str):
    """Fold a stacked ``(K,) + y_shape`` signal into the batch axis.

    Returns ``(p_flat, K)`` where ``p_flat`` has shape ``(K * N,) + y_shape[1:]``
    and ``K`` is None for an unstacked signal.
    """
    if not check_signal(p, y_shape, name):
        return p, None
    K = p.shape[0]
    return p.reshape((K * y_shape[0],) + tuple(y_shape[1:])), K


def merge_signal(p_flat, K):
    """Inverse of :func:`split_signal` for a result of shape ``(K * N, ...)``."""
    if K is None:
        return p_flat
    return p_flat.reshape((K, p_flat.shape[0] // K) + tuple(p_flat.shape[1:]))
