"""Argument checks shared by the grounding drivers (:mod:`.ground`, :mod:`.ground_caption`).

Every check raises before any work is done, with a message that names the
argument and what was wrong with it.
"""

from __future__ import annotations

import numpy

from .. import backend
from ..layers.lstm import LSTM_RULES

__all__ = [
    "is_int",
    "prepare",
    "check_lstm_rule",
    "check_fused_switch",
    "check_kernel_switch",
    "check_weights_cache",
]


def is_int(v):
    """True for a Python or NumPy integer (not a bool)."""
    return isinstance(v, (int, numpy.integer)) and not isinstance(v, (bool, numpy.bool_))


def prepare(model, clip, dtype):
    """The model cast to ``dtype`` (if given) and the clip checked, on the model's device and dtype.

    Raises TypeError for a non-floating clip and whatever the model's
    ``check_clip`` raises (shape, T = 0, device, NaN or inf; one frame for an
    image captioner).
    """
    if dtype is not None and numpy.dtype(dtype) != model.dtype:  # the model's own: no copy (a kept
        model = model.astype(dtype)  # weights_cache then finds the same arrays)
    if not hasattr(clip, "dtype") or numpy.dtype(clip.dtype).kind != "f":
        raise TypeError(
            f"clip must be a floating-point array (T, C, H, W), preprocessed; got "
            f"{getattr(clip, 'dtype', type(clip).__name__)}"
        )
    clip = backend.to_device(clip, model.device)
    clip = clip.astype(model.dtype, copy=False)
    model.check_clip(clip)
    return model, clip


def check_lstm_rule(rule):
    """Raise ValueError unless ``rule`` is one of :data:`~ebr_ref.layers.lstm.LSTM_RULES`."""
    if rule not in LSTM_RULES:
        raise ValueError(f"unknown lstm_rule {rule!r}; expected {' or '.join(map(repr, LSTM_RULES))}")


def check_fused_switch(request, channel_maps):
    """The ``fused_readout`` switch validated: ``"auto"``, True or False (NumPy bools accepted).

    Raises
    ------
    ValueError
        For anything else (integers included), and for True with
        ``channel_maps`` (the fused read-out gives channel sums only).
    """
    if isinstance(request, (bool, numpy.bool_)):
        request = bool(request)
    elif not (isinstance(request, str) and request == "auto"):
        raise ValueError(f"fused_readout must be 'auto', True or False, got {request!r}")
    if channel_maps and request is True:
        raise ValueError("fused_readout=True returns channel sums only; it cannot give channel_maps=True")
    return request


def check_kernel_switch(request):
    """The ``fast_kernels`` switch validated: True or False (NumPy bools accepted); ValueError otherwise."""
    if not isinstance(request, (bool, numpy.bool_)):
        raise ValueError(f"fast_kernels must be True or False, got {request!r}")
    return bool(request)


def check_weights_cache(cache):
    """The ``weights_cache`` argument validated: a dict (kept by the caller) or None; TypeError otherwise."""
    if cache is not None and not isinstance(cache, dict):
        raise TypeError(
            f"weights_cache must be a dict (kept between calls) or None, got {type(cache).__name__}"
        )
    return cache
