"""A model: an explicit ordered list of named layers plus a parameter dict."""

from __future__ import annotations

import numpy

from .. import backend
from .ops import eb_layer, forward_layer, grad_layer
from .spec import infer_shapes, param_shapes

__all__ = ["Model", "softmax", "default_cont"]


def softmax(z, axis=-1):
    """Numerically stable softmax along ``axis``."""
    xp = backend.get_xp(z)
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def default_cont(T, *, xp, dtype):
    """Clip markers ``(T,)``: 0 at the first frame (a new clip), 1 after."""
    cont = xp.ones((T,), dtype=dtype)
    cont[0] = 0
    return cont


class Model:
    """A CNN classifier or a CNN-LSTM, as a list of :class:`ebr_ref.models.spec.Layer` and a parameter dict.

    Parameters
    ----------
    layers : sequence of Layer
        In forward order. Layers before the first ``lstm`` run per frame; the
        ``lstm`` and every layer after it run on the clip's sequence.
    params : dict of str to array
        Canonical names (``conv1_1.weight``, ``lstm1.W_x``, ``fc8.bias``, ...), all on
        one backend and of one floating dtype.
    input_shape : tuple
        ``(C, H, W)`` of one preprocessed frame.
    meta : dict, optional
        Free-form information that travels with the model: ``name``,
        ``class_names``, ``preprocessing`` (mean, std, channel order).

    Attributes
    ----------
    layers, params, input_shape, meta
    layer_names : tuple of str
    num_classes : int
        Output size of the last layer (the classifier).
    """

    def __init__(self, layers, params, *, input_shape, meta=None):
        self.layers = tuple(layers)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.meta = dict(meta or {})
        names = [layer.name for layer in self.layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model: duplicate layer name(s) {', '.join(dup)}")
        if not self.layers or self.layers[-1].type != "fc":
            raise ValueError("model: the last layer must be the classifier (type 'fc')")
        lstm_idx = [k for k, layer in enumerate(self.layers) if layer.type == "lstm"]
        if len(lstm_idx) > 1:
            raise ValueError("model: at most one lstm layer in a Model (stacked decoders live in the captioning model)")
        for k in lstm_idx:
            if self.layers[k]["static_input"]:
                raise ValueError(
                    f"model: lstm layer {self.layers[k].name!r} has a static input; an action Model feeds none "
                    "(use ebr_ref.models.caption for a decoder with a static video feature)"
                )
        self.sequence_start = lstm_idx[0] if lstm_idx else len(self.layers)
        self.shapes = infer_shapes(self.layers, self.input_shape)
        expected = param_shapes(self.layers, self.input_shape)
        params = dict(params)
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        if missing or extra:
            raise ValueError(f"model: parameters missing {missing}, unexpected {extra}")
        for k, shape in expected.items():
            if tuple(params[k].shape) != shape:
                raise ValueError(f"model: parameter {k} has shape {tuple(params[k].shape)}, expected {shape}")
        xp = backend.get_xp(*params.values())
        dtypes = {numpy.dtype(v.dtype) for v in params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
            raise TypeError(f"model: parameters must share one floating dtype, found {sorted(map(str, dtypes))}")
        self.params = params
        self.dtype = next(iter(dtypes))
        self.xp = xp

    # ---- structure -------------------------------------------------------------
    @property
    def layer_names(self):
        return tuple(layer.name for layer in self.layers)

    @property
    def num_classes(self) -> int:
        return self.layers[-1]["out_features"]

    @property
    def is_recurrent(self) -> bool:
        return self.sequence_start < len(self.layers)

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

    def classifier_input_index(self) -> int:
        """Index of the layer whose output feeds the classifier."""
        return len(self.layers) - 2

    # ---- conversions -------------------------------------------------------------
    def _with_params(self, params):
        return Model(self.layers, params, input_shape=self.input_shape, meta=self.meta)

    def astype(self, dtype):
        """A new model with every parameter cast to ``dtype`` (float32 or float64)."""
        dtype = numpy.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"model dtype must be floating, got {dtype}")
        return self._with_params({k: v.astype(dtype) for k, v in self.params.items()})

    def to(self, device: str):
        """A new model with its parameters on ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy)."""
        return self._with_params({k: backend.to_device(v, device) for k, v in self.params.items()})

    def positive_weights(self, name, *, negated=False, memo=None):
        """``max(W, 0)`` (or ``max(-W, 0)``) of fc layer ``name``.

        ``memo`` is a dict owned by the caller (one driver call): the result is kept
        there and reused, so that chunked and contrastive passes compute it once.
        The model itself keeps nothing, so parameters changed between calls are
        always seen.
        """
        key = (name, negated)
        if memo is not None and key in memo:
            return memo[key]
        W = self.params[f"{name}.weight"]
        W_pos = self.xp.maximum(-W if negated else W, 0)
        if memo is not None:
            memo[key] = W_pos
        return W_pos

    # ---- running -------------------------------------------------------------------
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
            raise TypeError(f"clip dtype {clip.dtype} differs from the model's {self.dtype}; cast one of them")
        if backend.get_xp(clip) is not self.xp:
            raise TypeError(f"clip is on another device than the model ({self.device}); use backend.to_device")
        if not bool(self.xp.isfinite(clip).all()):
            raise ValueError("clip contains NaN or inf values")

    def run_forward(self, x, start, stop, *, cont=None, keep=False, memo=None):
        """Run layers ``start <= k < stop`` forward.

        Returns ``(y, steps)`` where ``steps`` lists ``(layer, cache)`` for every layer
        run when ``keep`` is true (empty otherwise, so memory is freed as it goes).
        With ``keep`` and a ``memo`` (a per-call dict, see :meth:`positive_weights`),
        fc caches carry ``max(W, 0)`` for EB, computed once per call; without one,
        EB forms it block by block (cheaper when each layer is passed once).
        """
        steps = []
        for layer in self.layers[start:stop]:
            fc_memo = keep and memo is not None and layer.type == "fc"
            W_pos = self.positive_weights(layer.name, memo=memo) if fc_memo else None
            x, cache = forward_layer(layer, self.params, x, cont=cont, W_pos=W_pos)
            if keep:
                steps.append((layer, cache))
        return x, steps

    @staticmethod
    def run_eb(steps, p, *, lstm_rule="caffe", allow_tanh_eb=False, stacked=False, mass=None, lstm_results=None):
        """Excitation backward through ``steps`` (from :meth:`run_forward`), last first.

        ``stacked`` says that ``p`` carries a leading ``K`` axis of signals. ``mass``,
        when a dict, receives ``{layer name: signal sum entering - leaving}`` per
        layer (a float, or a ``(K,)`` vector for stacked signals). ``lstm_results``, when a
        list, receives the LSTM kernel's full result.
        """
        for layer, cache in reversed(steps):
            p_in = p
            p, extra = eb_layer(layer, cache, p, lstm_rule=lstm_rule, allow_tanh_eb=allow_tanh_eb)
            if mass is not None:
                mass[layer.name] = mass.get(layer.name, 0.0) + (_total(p_in, stacked) - _total(p, stacked))
            if extra is not None and lstm_results is not None:
                lstm_results.append(extra)
        return p

    @staticmethod
    def run_grad(steps, g):
        """Gradient through ``steps``, last first."""
        for layer, cache in reversed(steps):
            g = grad_layer(layer, cache, g)
        return g

    def logits(self, clip, *, cont=None):
        """Classifier outputs ``(T, num_classes)`` for a preprocessed clip."""
        self.check_clip(clip)
        if cont is None and self.is_recurrent:
            cont = default_cont(clip.shape[0], xp=self.xp, dtype=self.dtype)
        y, _ = self.run_forward(clip, 0, len(self.layers), cont=cont)
        return y

    def forward(self, clip, *, cont=None):
        """Class probabilities ``(T, num_classes)`` (softmax of :meth:`logits` per step)."""
        return softmax(self.logits(clip, cont=cont))


def _total(p, stacked):
    """Sum of a signal: a float, or a NumPy vector ``(K,)`` for a stacked signal."""
    if stacked:
        return backend.to_numpy(p.reshape(p.shape[0], -1).sum(axis=1))
    return backend.to_scalar(p.sum())
