"""Pieces shared by the grounding drivers (:mod:`ebr_ref.grounding.ground`, :mod:`ebr_ref.grounding.ground_caption`).

Input checks, frame chunks, the eq.-5 normalisation and the last
leg down to the read-out layer (fused for many targets): the steps of paper
Algorithm 1 that the action and the caption drivers take alike.
"""

from __future__ import annotations

import numpy

from .. import backend
from .fused_readout import check_request, folded_layers, fused_maps, plan

__all__ = ["is_int", "prepare", "frame_chunks", "normalise_total", "weights_memo", "check_fused_request", "Readout"]


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


def weights_memo(chunks, K):
    """A per-call dict keeping ``max(±W, 0)`` of fc layers when they are reused, else None.

    W+ is worth holding whole when several chunks (or many stacked signal rows) pass
    through the same layer; for one pass :func:`ebr_ref.layers.linear.linear_eb` forms
    it block by block, which is cheaper (no 400 MB write for VGG16's fc6).
    """
    rows = K * max(b - a for a, b in chunks)
    return {} if len(chunks) > 1 or rows > 32 else None


def check_fused_request(request, channel_maps):
    """The validated ``fused_readout`` argument; a ValueError also when True meets ``channel_maps``."""
    request = check_request(request)
    if channel_maps and request is True:
        raise ValueError("fused_readout=True returns channel sums only; it cannot give channel_maps=True")
    return request


class Readout:
    """The last leg of every chunk: from the signal at the top of the CNN steps down to the read-out layer.

    ``Readout(model, fold, mode, keep_channels)``: ``fold`` a
    :class:`ebr_ref.grounding.fused_readout.FoldPlan` or None, ``mode`` ``"eb"`` or ``"grad"``.

    Keeps, per chunk, the channel-summed maps ``(K, n, h, w)`` (a flat read-out
    layer: the signal ``(K, n, D)`` itself) and, when asked, the full signal.
    With a fold plan the layers up to the first max pooling above the read-out
    layer run fused (:func:`ebr_ref.grounding.fused_readout.fused_maps`).
    """

    def __init__(self, model, fold, mode, keep_channels):
        self.model, self.fold, self.mode, self.keep = model, fold, mode, keep_channels
        self.maps, self.channels = [], []

    @classmethod
    def planned(cls, model, r, K, mode, *, request, keep_channels):
        """The leg for read-out layer ``r`` and ``K`` signals, fused as :func:`~ebr_ref.grounding.fused_readout.plan`
        decides (never with ``keep_channels``); ``.fused_layers`` names what it folds (or None)."""
        request = check_fused_request(request, keep_channels)
        fold = None if keep_channels else plan(model, r, K, mode, request=request)
        leg = cls(model, fold, mode, keep_channels)
        leg.fused_layers = folded_layers(model, r, fold)
        return leg

    def __call__(self, steps, p, mass):
        """Signal ``p (K, n, ...)`` at the top of ``steps`` -> maps at the read-out layer, kept.

        ``mass`` (a dict, EB only) receives the mass lost per layer, as in :meth:`Model.run_eb`.
        """
        fold = self.fold
        below = [] if fold is None else steps[: fold.depth]
        above = steps[len(below):]
        if self.mode == "grad":
            p = self.model.run_grad(above, p)
        else:
            p = self.model.run_eb(above, p, stacked=True, mass=mass)
        if fold is None:
            self.maps.append(p.sum(axis=2) if p.ndim == 5 else p)  # (K, n, h, w) or (K, n, D)
            if self.keep:
                self.channels.append(p)
            return
        maps, lost = fused_maps(below, p, fold)  # (K, n, h, w)
        self.maps.append(maps)
        if self.mode == "eb":
            for name in reversed(lost):  # top first, as run_eb records them
                mass[name] = mass.get(name, 0.0) + lost[name]

    def result(self):
        """``(maps (K, T, h, w) or (K, T, D), evidence (K, T), full signal (K, T, ...) or None)``."""
        xp = self.model.xp
        maps = xp.concatenate(self.maps, axis=1)  # (K, T, h, w) or (K, T, D)
        evidence = maps.reshape(maps.shape[:2] + (-1,)).sum(axis=-1)  # (K, T)  per-frame sums S
        return maps, evidence, (xp.concatenate(self.channels, axis=1) if self.keep else None)
