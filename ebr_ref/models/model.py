"""A model: an explicit ordered list of named layers plus a parameter dict."""

from __future__ import annotations

import numpy

from .. import backend
from .spec import infer_shapes, param_shapes
from .stack import LayerStack

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
    stack : LayerStack
        All the layers, CNN and sequence part, with the parameters: what runs them.
    shapes : list of tuple
        Per-sample output shape of every layer.
    sequence_start : int
        Index of the first layer that runs on the sequence (the ``lstm``);
        ``len(layers)`` for a per-frame classifier.
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
            raise ValueError(
                "model: at most one lstm layer in a Model (stacked decoders live in the captioning model)"
            )
        for k in lstm_idx:
            if self.layers[k]["static_input"]:
                raise ValueError(
                    f"model: lstm layer {self.layers[k].name!r} has a static input; "
                    "an action Model feeds none "
                    "(use ebr_ref.models.caption for a decoder with a static video feature)"
                )
        self.sequence_start = lstm_idx[0] if lstm_idx else len(self.layers)
        shapes = infer_shapes(self.layers, self.input_shape)
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
            raise TypeError(
                f"model: parameters must share one floating dtype, found {sorted(map(str, dtypes))}"
            )
        self.params = params
        self.dtype = next(iter(dtypes))
        self.xp = xp
        self.stack = LayerStack(
            self.layers, params, input_shape=self.input_shape, shapes=shapes, dtype=self.dtype, xp=xp
        )
        self.shapes = self.stack.shapes

    # ---- structure -------------------------------------------------------------
    @property
    def layer_names(self):
        return self.stack.layer_names

    @property
    def num_classes(self) -> int:
        return self.layers[-1]["out_features"]

    @property
    def is_recurrent(self) -> bool:
        return self.sequence_start < len(self.layers)

    @property
    def device(self) -> str:
        return self.stack.device

    def index(self, name: str) -> int:
        """Position of layer ``name``; ``-1`` for ``"input"``."""
        return self.stack.index(name)

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

    # ---- running -------------------------------------------------------------------
    def check_clip(self, clip):
        """Validate a preprocessed clip ``(T,) + input_shape``; raise a clear error otherwise."""
        self.stack.check_clip(clip)

    def run_forward(self, x, start, stop, *, cont=None, keep=False, memo=None, fast=True):
        """Run layers ``start <= k < stop`` forward: ``(y, records)``, see :meth:`LayerStack.run_forward`."""
        return self.stack.run_forward(x, start, stop, cont=cont, keep=keep, memo=memo, fast=fast)

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
