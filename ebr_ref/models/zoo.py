"""Model builders: VGG16, CaffeNet (the LRCN frame CNN), VGG16-LSTM, and small custom models.

Without weights, parameters are drawn deterministically from a seed (``None``
means seed 0): conv and fc weights He-normal (``std = sqrt(2 / fan_in)``),
biases ``N(0, 0.01^2)``, LSTM matrices uniform in ``±1/sqrt(H)`` (PyTorch's
default), LSTM bias 0. Parameters are NumPy arrays of ``dtype`` (float64 by
default; a float32 model is drawn in float64 and rounded, parameter by
parameter, so it equals ``Model.astype(float32)`` of the float64 model without
ever holding both); ``Model.to`` moves a model to the GPU.
"""

from __future__ import annotations

import math

import numpy

from .model import Model
from .spec import Layer, param_shapes

__all__ = [
    "vgg16",
    "caffenet",
    "vgg16_lstm",
    "vgg16_body",
    "sequential",
    "from_spec",
    "as_layer",
    "init_params",
]


def init_params(layers, input_shape, seed=None, dtype=numpy.float64):
    """Deterministic random parameters for a layer list (see the module docstring)."""
    rng = numpy.random.default_rng(0 if seed is None else seed)
    dtype = numpy.dtype(dtype)
    params = {}
    for name, shape in param_shapes(layers, input_shape).items():
        field = name.rsplit(".", 1)[1]
        if field == "weight":
            fan_in = int(numpy.prod(shape[1:]))
            params[name] = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif field == "bias":
            params[name] = rng.normal(0.0, 0.01, shape)
        elif field in ("W_x", "W_h", "W_s"):
            H = shape[0] // 4
            params[name] = rng.uniform(-1.0, 1.0, shape) / math.sqrt(H)
        elif field == "b":
            params[name] = numpy.zeros(shape)
        else:  # pragma: no cover - param_shapes names only the fields above
            raise ValueError(f"no initialiser for parameter {name}")
        params[name] = params[name].astype(dtype, copy=False)
    return params


def as_layer(item):
    """A :class:`Layer` from a Layer, its dict form, or ``(name, type[, settings])``."""
    if isinstance(item, Layer):
        return item
    if isinstance(item, dict):
        return Layer.from_dict(item)
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return Layer(item[0], item[1], dict(item[2]) if len(item) == 3 else {})
    raise ValueError(f"cannot read a layer from {item!r}; use Layer, a dict, or (name, type[, settings])")


def sequential(layers, input_shape, *, seed=None, params=None, meta=None, dtype=numpy.float64):
    """Build a model from a short layer list.

    Parameters
    ----------
    layers : sequence
        Each item a :class:`Layer`, a dict ``{"name", "type", **settings}`` or a
        tuple ``(name, type[, settings])``, e.g.
        ``[("conv1", "conv", {"out_channels": 8, "kernel": 3, "padding": 1}),
        ("relu1", "relu"), ("pool1", "maxpool", {"kernel": 2}), ("flat", "flatten"),
        ("fc7", "fc", {"out_features": 16}), ("relu7", "relu"),
        ("lstm1", "lstm", {"hidden": 8}), ("fc8", "fc", {"out_features": 3})]``.
    input_shape : tuple
        ``(C, H, W)``.
    seed : int, optional
        Seed of the random initialisation (used when ``params`` is None).
    params : dict, optional
        Parameters under canonical names.
    meta : dict, optional
    dtype : dtype
        Of the random initialisation (float64 or float32).

    Returns
    -------
    Model
    """
    layers = [as_layer(item) for item in layers]
    if params is None:
        params = init_params(layers, input_shape, seed, dtype)
    return Model(layers, params, input_shape=input_shape, meta=meta)


def from_spec(layers, params, meta):
    """Build a model from an importer's layer specs (dicts), parameters and metadata.

    ``meta["input_shape"]`` gives ``(C, H, W)``; the rest of ``meta`` travels with the model.
    """
    if "input_shape" not in meta:
        raise ValueError("from_spec: meta lacks 'input_shape' (C, H, W)")
    return sequential(layers, tuple(meta["input_shape"]), params=params, meta=meta)


def vgg16_body(input_size):
    """VGG16 (configuration D) up to drop7, with Caffe's layer names."""
    layers = []
    blocks = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]
    for b, width, n in blocks:
        for k in range(1, n + 1):
            layers.append(Layer(f"conv{b}_{k}", "conv", {"out_channels": width, "kernel": 3, "padding": 1}))
            layers.append(Layer(f"relu{b}_{k}", "relu"))
        layers.append(Layer(f"pool{b}", "maxpool", {"kernel": 2, "stride": 2}))
    if input_size % 32:
        raise ValueError(f"vgg16: input_size must be a multiple of 32, got {input_size}")
    layers += [
        Layer("flatten", "flatten"),
        Layer("fc6", "fc", {"out_features": 4096}),
        Layer("relu6", "relu"),
        Layer("drop6", "dropout"),
        Layer("fc7", "fc", {"out_features": 4096}),
        Layer("relu7", "relu"),
        Layer("drop7", "dropout"),
    ]
    return layers


def vgg16(num_classes, input_size=224, seed=None, dtype=numpy.float64):
    """VGG16 classifier (Simonyan & Zisserman, configuration D) with Caffe layer names.

    ``conv1_1 ... conv5_3`` (3x3, padding 1, each followed by ``relu``), ``pool1..5``
    (2x2 max, stride 2, floor rounding), ``fc6``/``fc7`` (4096, ReLU, dropout) and
    the classifier ``fc8``. Input ``(3, input_size, input_size)``.
    """
    layers = vgg16_body(input_size) + [Layer("fc8", "fc", {"out_features": num_classes})]
    return sequential(layers, (3, input_size, input_size), seed=seed, meta={"name": "vgg16"}, dtype=dtype)


def vgg16_lstm(num_classes, hidden=256, input_size=224, seed=None, dtype=numpy.float64):
    """The released VGG16_LSTM deploy model: VGG16 to fc7, ReLU-LSTM ``lstm1``, dropout, ``fc8``.

    ``fc8`` is applied at every time step (Caffe's ``fc8-final`` with ``axis: 2``).
    """
    layers = vgg16_body(input_size) + [
        Layer("lstm1", "lstm", {"hidden": hidden, "cell_act": "relu"}),
        Layer("lstm1_drop", "dropout"),
        Layer("fc8", "fc", {"out_features": num_classes}),
    ]
    return sequential(
        layers, (3, input_size, input_size), seed=seed, meta={"name": "vgg16_lstm"}, dtype=dtype
    )


def caffenet(num_classes, input_size=227, seed=None, dtype=numpy.float64):
    """CaffeNet, the LRCN frame CNN (BVLC reference CaffeNet).

    conv1 96x11x11/4 → relu → pool 3/2 (ceil) → LRN(5, 1e-4, 0.75) → conv2 256x5x5 pad 2
    groups 2 → relu → pool 3/2 (ceil) → LRN → conv3 384x3x3 pad 1 → relu → conv4 384x3x3
    pad 1 groups 2 → relu → conv5 256x3x3 pad 1 groups 2 → relu → pool 3/2 (ceil) →
    fc6 4096 → relu → drop → fc7 4096 → relu → drop → fc8.
    """
    lrn = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
    pool = {"kernel": 3, "stride": 2, "ceil_mode": True}
    layers = [
        Layer("conv1", "conv", {"out_channels": 96, "kernel": 11, "stride": 4}),
        Layer("relu1", "relu"),
        Layer("pool1", "maxpool", pool),
        Layer("norm1", "lrn", lrn),
        Layer("conv2", "conv", {"out_channels": 256, "kernel": 5, "padding": 2, "groups": 2}),
        Layer("relu2", "relu"),
        Layer("pool2", "maxpool", pool),
        Layer("norm2", "lrn", lrn),
        Layer("conv3", "conv", {"out_channels": 384, "kernel": 3, "padding": 1}),
        Layer("relu3", "relu"),
        Layer("conv4", "conv", {"out_channels": 384, "kernel": 3, "padding": 1, "groups": 2}),
        Layer("relu4", "relu"),
        Layer("conv5", "conv", {"out_channels": 256, "kernel": 3, "padding": 1, "groups": 2}),
        Layer("relu5", "relu"),
        Layer("pool5", "maxpool", pool),
        Layer("flatten", "flatten"),
        Layer("fc6", "fc", {"out_features": 4096}),
        Layer("relu6", "relu"),
        Layer("drop6", "dropout"),
        Layer("fc7", "fc", {"out_features": 4096}),
        Layer("relu7", "relu"),
        Layer("drop7", "dropout"),
        Layer("fc8", "fc", {"out_features": num_classes}),
    ]
    return sequential(layers, (3, input_size, input_size), seed=seed, meta={"name": "caffenet"}, dtype=dtype)
