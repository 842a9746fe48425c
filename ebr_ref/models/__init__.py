"""Models: explicit ordered lists of named layers plus canonical parameter dicts."""

from .io import load_model, save_model
from .model import Model, default_cont, softmax
from .shipped import pretrained, shipped_names
from .spec import LAYER_TYPES, Layer, infer_shapes, param_shapes
from .zoo import caffenet, from_spec, init_params, sequential, vgg16, vgg16_lstm

__all__ = [
    "Model",
    "Layer",
    "LAYER_TYPES",
    "infer_shapes",
    "param_shapes",
    "softmax",
    "default_cont",
    "vgg16",
    "vgg16_lstm",
    "caffenet",
    "sequential",
    "from_spec",
    "init_params",
    "save_model",
    "load_model",
    "pretrained",
    "shipped_names",
]
