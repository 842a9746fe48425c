"""Fast path of :func:`ebr_ref.layers.linear.linear_eb`: ``W+`` formed a block of output units at a time.

The reference EB of a fully connected layer writes the whole ``W+ = max(W, 0)``
``(M, D)`` and reads it twice (steps 1 and 3). For VGG16's fc6 (``M = 4096``,
``D = 25088``) that is 400 MB written and read back per call, more than the
arithmetic costs. Output unit ``j`` needs only row ``j`` of ``W+`` (for ``Z_j``, its
quotient and its share of the adjoint), so :func:`eb_blocked` runs steps 1-3 over
blocks of output units, forming ``W+`` one block at a time in one reused buffer
of about ``_BLOCK_ELEMENTS`` elements (4 MiB in float32: it stays in cache while
steps 1-3 use it), and sums the blocks' adjoints. A block holds at least twice as
many rows as the signal has (so that updating the sum costs less than reading
``W``); :func:`block_rows` gives the count.

Rule: :func:`ebr_ref.layers.linear.linear_eb` hands over with ``fast=True`` (its
default) whenever the forward was not given a precomputed ``W_pos`` (a caller that
runs EB many times with the same weights keeps ``W+`` whole). The sums of step 3 are
grouped by block, so results equal the reference to rounding (tested to 1e-12
relative in float64, tests/layers/test_linear_fast.py).
"""

from __future__ import annotations

from ._eb import safe_divide

__all__ = ["block_rows", "eb_blocked"]

_BLOCK_ELEMENTS = 2**20  # elements of one block of W+


def block_rows(M, D, signal_size):
    """Output units per block for ``W (M, D)`` and a signal of ``signal_size`` elements.

    Parameters
    ----------
    M, D : int
        Output and input size.
    signal_size : int
        ``K N M`` (or ``N M``), the size of the signal ``p_y``.

    Returns
    -------
    int
        At least 1; ``>= M`` means one block.
    """
    return max(_BLOCK_ELEMENTS // D, 2 * signal_size // M, 1)


def eb_blocked(p_y, x, W, *, xp):
    """EB of ``y = x W^T`` with ``W+`` formed block by block (shapes already checked).

    Parameters
    ----------
    p_y : array of shape (N, M) or (K, N, M)
    x : array of shape (N, D)
    W : array of shape (M, D)
    xp : module

    Returns
    -------
    p_x : array of shape (N, D) or (K, N, D)
        Equal to the reference :func:`ebr_ref.layers.linear.linear_eb` to rounding.
    """
    M, D = W.shape
    rows = block_rows(M, D, p_y.size)
    c = xp.zeros(p_y.shape[:-1] + (D,), dtype=p_y.dtype)  # (N, D) or (K, N, D)
    W_pos = xp.empty((min(rows, M), D), dtype=W.dtype)  # one block of W+, reused
    for j in range(0, M, rows):  # blocks of output units (memory only)
        Wb = W_pos[: min(rows, M - j)]  # (b, D)
        xp.maximum(W[j : j + rows], 0, out=Wb)  # (b, D)  excitatory weights of this block only
        z = x @ Wb.T  # (N, b)  step 1: forward with W+, no bias
        s = safe_divide(p_y[..., j : j + rows], z, xp=xp)  # (N, b) or (K, N, b)  step 2: 0 where z == 0
        c += (s.reshape(-1, s.shape[-1]) @ Wb).reshape(c.shape)  # (N, D) or (K, N, D)  step 3, this block
    return x * c  # (N, D) or (K, N, D)  step 4: multiply by the input
