"""Fast path of :func:`ebr_ref.layers.linear.linear_eb`: ``W+`` formed a block of output units at a time.

The reference EB of a fully connected layer writes the whole ``W+ = max(W, 0)``
``(M, D)`` and reads it twice (steps 1 and 3). For VGG16's fc6 (``M = 4096``,
``D = 25088``) that is 400 MB written and read back per call, more than the
arithmetic costs. Output unit ``j`` needs only row ``j`` of ``W+`` (for ``Z_j``, its
quotient and its share of the adjoint), so :func:`eb_blocked` runs steps 1-3 over
blocks of output units, forming ``W+`` one block at a time in one reused buffer
of about ``_BLOCK_ELEMENTS`` elements (16 MiB in float32: it stays in the last-level
cache while steps 1-3 use it; for a few signal rows, larger blocks make steps 1 and
3 larger GEMMs, which paid on the 2-core development machine: 2**20 elements took
125 ms for VGG16's fc6 with 8 rows, 2**22 107 ms and 2**24 97 ms), and sums the
blocks' adjoints. A block holds at least twice as many rows as the signal has (so
that updating the sum costs less than reading ``W``); :func:`block_rows` gives the count.

A layer that fits one block (``block_rows >= M``) runs the four steps with ``W+``
whole, as the reference does, GEMM for GEMM. In a layer of several blocks, units
without signal are skipped: an output unit whose ``P(a_j)`` is exactly 0 in
every stacked row has quotient 0 (step 2 gives ``0 / Z_j = 0``, and 0 where
``Z_j == 0``), so its row of ``W+`` adds nothing to step 3 and its ``Z_j`` is not
needed. Only the rows of the other units are gathered and made positive. Below a
ReLU the units it switched off carry no signal (about half of VGG16's fc6 and fc7
units with random weights), so this halves the work of a single-target EB there
(fc6: 66 ms to 42 ms on the development machine). Which rows are
read depends on the signal's zeros; the result does not (beyond the grouping of
step 3's sums), for finite ``W`` and ``Z``. Counting the live units reads one
integer back to the host (a synchronisation on a GPU) per multi-block call;
the drivers make at most a few such calls per fc layer, since they hold ``W+``
whole (a ``W_pos`` in the forward cache) when a layer is passed more often.

Rule: :func:`ebr_ref.layers.linear.linear_eb` hands over with ``fast=True`` (its
default) whenever the forward was not given a precomputed ``W_pos`` (a caller that
runs EB many times with the same weights keeps ``W+`` whole). The sums of step 3 are
grouped by block, so results equal the reference to rounding (tested to 1e-12
relative in float64, tests/layers/test_linear_fast.py).
"""

from __future__ import annotations

from ._eb import safe_divide

__all__ = ["block_rows", "eb_blocked"]

_BLOCK_ELEMENTS = 2**22  # elements of one block of W+


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
    if rows >= M:  # one block: W+ whole, the reference's GEMMs (the same bits)
        W_pos = xp.maximum(W, 0)  # (M, D)
        z = x @ W_pos.T  # (N, M)  step 1: forward with W+, no bias
        s = safe_divide(p_y, z, xp=xp)  # (N, M) or (K, N, M)  step 2: 0 where z == 0
        c += (s.reshape(-1, M) @ W_pos).reshape(c.shape)  # (N, D) or (K, N, D)  step 3
        return x * c  # (N, D) or (K, N, D)  step 4: multiply by the input
    live = xp.flatnonzero((p_y.reshape(-1, M) != 0).any(axis=0))  # (m,)  units with a signal in some row
    m = int(live.size)
    W_pos = xp.empty((min(rows, M), D), dtype=W.dtype) if m == M else None  # one block of W+, reused
    x_t = xp.ascontiguousarray(x.T)  # (D, N)  so that step 1 is a GEMM on the block's rows as stored
    for j in range(0, m, rows):  # blocks of live output units (memory only)
        if m == M:  # every unit has a signal: the block is a slice of W
            units = slice(j, j + rows)
            Wb = W_pos[: min(rows, m - j)]  # (b, D)
            xp.maximum(W[units], 0, out=Wb)  # (b, D)  excitatory weights of this block only
        else:
            units = live[j : j + rows]  # (b,)
            Wb = W[units]  # (b, D)  the live units' rows only (a copy)
            xp.maximum(Wb, 0, out=Wb)  # (b, D)  excitatory weights of this block only
        z = (Wb @ x_t).T  # (N, b)  step 1: forward with W+, no bias
        s = safe_divide(p_y[..., units], z, xp=xp)  # (N, b) or (K, N, b)  step 2: 0 where z == 0
        c += (s.reshape(-1, s.shape[-1]) @ Wb).reshape(c.shape)  # (N, D) or (K, N, D)  step 3, this block
    return x * c  # (N, D) or (K, N, D)  step 4: multiply by the input
