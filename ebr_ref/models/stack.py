"""A layer stack: layers in forward order with their parameters, run forward over any range, and back.

Both models own one by composition: a :class:`~ebr_ref.models.model.Model`
holds all its layers (CNN, LSTM, classifier) in one stack; a
:class:`~ebr_ref.models.caption.CaptionModel` holds its frame part (pixels to
the video feature) in one. The grounding drivers run the per-frame part of
either through the same stack methods.

A forward run with ``keep=True`` returns its *records*: the ``(layer, cache)``
pair of every layer it ran, bottom first. :func:`run_eb` and :func:`run_grad`
consume records, top first, and need nothing else.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from .. import backend
from .ops import eb_layer, forward_layer, grad_layer

__all__ = ["LayerStack", "EBPass", "run_eb", "run_grad"]


class LayerStack:
    """Named layers in forward order and the parameter dict they read.

    Parameters
    ----------
    layers : sequence of Layer
        In forward order.
    params : dict of str to array
        Parameters under canonical names (``conv1.weight``, ...); may hold
        more than these layers' (the owning model's other parameters). Shared,
        not copied: changes made to the dict between calls are seen.
    input_shape : tuple
        ``(C, H, W)`` of one frame.
    shapes : list of tuple
        Per-sample output shape of every layer (:func:`ebr_ref.models.spec.infer_shapes`).
    dtype : numpy.dtype
        The parameters' one floating dtype.
    xp : module
        ``numpy`` or ``cupy``, where the parameters live.
    """

    def __init__(self, layers, params, *, input_shape, shapes, dtype, xp):
        self.layers = tuple(layers)
        self.params = params
        self.input_shape = tuple(input_shape)
        self.shapes = shapes
        self.dtype = dtype
        self.xp = xp

    @property
    def layer_names(self):
        return tuple(layer.name for layer in self.layers)

    @property
    def device(self) -> str:
        return "cpu" if self.xp is numpy else "gpu"

    def index(self, name: str) -> int:
        """Position of layer ``name``; ``-1`` for ``"input"``."""
        if name == "input":
            return -1
        for k, layer in enumerate(self.layers):
            if layer.name == name:
                return k
        raise ValueError(f"unknown layer name {name!r}; this model has: input, {', '.join(self.layer_names)}")

    def positive_weights(self, name, *, negated=False, memo=None):
        """``max(W, 0)`` (or ``max(-W, 0)``) of fc layer ``name``.

        ``memo`` is a dict owned by the caller (one driver call, or several calls
        when the caller keeps it: ``ground(..., weights_cache=)``): the result is
        kept there with the weight array it was formed from, and reused while the
        layer still holds that same array, so that chunked and contrastive passes
        (and later calls) compute it once. A weight array replaced in ``params``
        is seen (the entry is formed again); one changed in place is not, which
        is why the stack itself keeps nothing.
        """
        key = (name, negated)
        W = self.params[f"{name}.weight"]
        if memo is not None and key in memo and memo[key][0] is W:
            return memo[key][1]
        W_pos = self.xp.maximum(-W if negated else W, 0)
        if memo is not None:
            memo[key] = (W, W_pos)  # the array itself, not its id: ids are reused after deletion
        return W_pos

    def check_clip(self, clip):
        """Validate a preprocessed clip ``(T,) + input_shape``; raise a clear error otherwise."""
        if not hasattr(clip, "shape") or not hasattr(clip, "dtype"):
            raise TypeError(f"clip must be an array of shape (T, C, H, W), got {type(clip).__name__}")
        if clip.ndim != 1 + len(self.input_shape) or tuple(clip.shape[1:]) != self.input_shape:
            raise ValueError(
                f"clip must have shape (T, {', '.join(map(str, self.input_shape))}), got {tuple(clip.shape)}"
            )
        if clip.shape[0] == 0:
            raise ValueError("clip has no frames (T = 0)")
        if numpy.dtype(clip.dtype) != self.dtype:
            raise TypeError(
                f"clip dtype {clip.dtype} differs from the model's {self.dtype}; cast one of them"
            )
        if backend.get_xp(clip) is not self.xp:
            raise TypeError(
                f"clip is on another device than the model ({self.device}); use backend.to_device"
            )
        if not bool(self.xp.isfinite(clip).all()):
            raise ValueError("clip contains NaN or inf values")

    def run_forward(self, x, start, stop, *, cont=None, keep=False, memo=None, fast=True):
        """Run layers ``start <= k < stop`` forward.

        Returns ``(y, records)`` where ``records`` lists ``(layer, cache)`` for every
        layer run when ``keep`` is true (empty otherwise, so memory is freed as it
        goes). ``fast``: the kernels' own fast paths (:func:`~ebr_ref.models.ops.forward_layer`);
        False runs the reference kernels only. With ``keep`` and a ``memo`` (a per-call dict, see
        :meth:`positive_weights`), fc caches carry ``max(W, 0)`` for EB, computed
        once per call; without one, EB forms it block by block (cheaper when each
        layer is passed once). With ``fast``, a ReLU right after a conv or fc layer
        rectifies that layer's output in place (its cache holds its input, not its
        output, so nothing else holds the array; the caller's ``x`` is never written).
        """
        records = []
        owned = False  # whether x is a fresh output that no cache and no caller holds
        for layer in self.layers[start:stop]:
            fc_memo = keep and memo is not None and layer.type == "fc"
            W_pos = self.positive_weights(layer.name, memo=memo) if fc_memo else None
            in_place = fast and owned and layer.type == "relu"
            x, cache = forward_layer(
                layer, self.params, x, cont=cont, W_pos=W_pos, fast=fast, overwrite_input=in_place
            )
            owned = layer.type in ("conv", "fc")  # their caches keep their input only
            if keep:
                records.append((layer, cache))
        return x, records


class EBPass(NamedTuple):
    """The result of :func:`run_eb`."""

    p: object  # (K, ...)  the signal at the input of the first record
    mass: dict  # {layer name: (K,) signal entering minus signal leaving}, top layer first
    lstm: list  # the LSTM kernel's full result (LSTMSignals) of every lstm record, top first


def run_eb(records, p, *, lstm_rule="caffe", allow_tanh_eb=False, fast=True):
    """Excitation backward through ``records`` (from :meth:`LayerStack.run_forward`), last first.

    Parameters
    ----------
    records : list of (Layer, cache)
    p : array of shape (K,) + output shape of the last record
        ``K`` stacked signals.
    lstm_rule : {"caffe", "eb"}
        The rule through ``lstm`` layers (docs/spec.md §4).
    allow_tanh_eb : bool
        Allow ``lstm_rule="eb"`` through a tanh LSTM.
    fast : bool
        Let the kernels take their own fast paths (conv, fc:
        :func:`~ebr_ref.models.ops.eb_layer`); False runs the reference kernels only.

    Returns
    -------
    EBPass
        The signal at the bottom, the mass each layer lost (a NumPy ``(K,)``
        vector per layer: its signal sum entering minus leaving) and the LSTM
        kernel's results (signal that reached the initial state, mass lost per step).
    """
    mass, lstm = {}, []
    for layer, cache in reversed(records):
        p_in = p
        p, extra = eb_layer(layer, cache, p, lstm_rule=lstm_rule, allow_tanh_eb=allow_tanh_eb, fast=fast)
        mass[layer.name] = _totals(p_in) - _totals(p)  # (K,)
        if extra is not None:
            lstm.append(extra)
    return EBPass(p, mass, lstm)


def run_grad(records, g, *, fast=True):
    """Gradient through ``records`` (from :meth:`LayerStack.run_forward`), last first.

    ``fast``: the kernels' own fast paths (:func:`~ebr_ref.models.ops.grad_layer`); False: reference only.
    """
    for layer, cache in reversed(records):
        g = grad_layer(layer, cache, g, fast=fast)
    return g


def _totals(p):
    """Sum of each of ``K`` stacked signals ``(K, ...)``: a NumPy vector ``(K,)``."""
    return backend.to_numpy(p.reshape(p.shape[0], -1).sum(axis=1))
