"""Pieces shared by the grounding drivers (:mod:`ebr_ref.ground`, :mod:`ebr_ref.ground_caption`).

Input checks, frame chunks, the eq.-5 normalisation and channel sums: the steps
of paper Algorithm 1 that the action and the caption drivers take alike.
"""

from __future__ import annotations

import numpy

from . import backend

__all__ = ["is_int", "prepare", "frame_chunks", "normalise_total", "channel_sums"]


def is_int(v):
    """True for a Python or NumPy integer (not a bool)."""
    return isinstance(v, (int, numpy.integer)) and not isinstance(v, (bool, numpy.bool_))


def prepare(model, clip, dtype):
    """The model cast to ``dtype`` (if given) and the clip checked, on the model's device and dtype.

    Raises TypeError for a non-floating clip and whatever :meth:`Model.check_clip`
    raises (shape, T = 0, device, NaN or inf).
    """
    if dtype is not None:
        model = model.astype(dtype)
    if not hasattr(clip, "dtype") or numpy.dtype(clip.dtype).kind != "f":
        raise TypeError(
            f"clip must be a floating-point array (T, C, H, W), preprocessed; got "
            f"{getattr(clip, 'dtype', type(clip).__name__)}"
        )
    clip = backend.to_device(clip, model.device)
    clip = clip.astype(model.dtype, copy=False)
    model.check_clip(clip)
    return model, clip


def frame_chunks(T, chunk_size):
    """``[(a, b), ...]``: consecutive frame ranges of at most ``chunk_size`` frames covering ``0 .. T``."""
    if not is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return [(a, min(a + chunk_size, T)) for a in range(0, T, chunk_size)]


def normalise_total(p, stacked, xp, diag_totals, diag_zero, label):
    """Eq. 5: divide by the grand total over frames and units; a zero total gives zero.

    ``p`` is ``(K, T, ...)`` when ``stacked`` (one total per target), else ``(T, ...)``.
    The totals are appended to ``diag_totals``; passes whose total is 0 are recorded
    in ``diag_zero`` under ``label``.
    """
    axes = tuple(range(1 if stacked else 0, p.ndim))
    tot = p.sum(axis=axes, keepdims=True)  # (K, 1, 1) or (1, 1)
    tot_np = backend.to_numpy(tot).reshape(-1)
    diag_totals.extend(float(v) for v in tot_np)
    for k, v in enumerate(tot_np):
        if v == 0:
            diag_zero.append({"pass": label, "target_index": k})
    return xp.where(tot != 0, p / xp.where(tot != 0, tot, 1), 0)


def channel_sums(p, stacked):
    """Channel sums of a signal at the read-out layer, and the per-frame evidence.

    ``p`` is ``([K,] T, C, h, w)`` (a flat layer: ``([K,] T, D)``, returned as is);
    returns ``(maps ([K,] T, h, w), evidence ([K,] T))``.
    """
    frame_axis = 1 if stacked else 0
    if p.ndim - frame_axis == 4:  # (.., T, C, h, w)
        m = p.sum(axis=frame_axis + 1)
    else:  # flat layer: (.., T, D)
        m = p
    ev = m.reshape(m.shape[: frame_axis + 1] + (-1,)).sum(axis=-1)
    return m, ev
