"""Input preprocessing presets that travel with imported weights.

A preset says how to turn an RGB image with values in [0, 1] (``(3, H, W)``)
into the network input::

    x[c] = (image[channel_order[c]] * scale - mean[c]) / std[c]

``channel_order`` is the order of the network's input channels ("BGR" for
Caffe-trained weights); ``mean`` and ``std`` are given in that order.
"""

from __future__ import annotations

import copy

__all__ = ["PRESETS", "preset"]

PRESETS = {
    # VGG model zoo (Simonyan & Zisserman, the gist's deploy notes): BGR, 0-255, mean pixel.
    "caffe_vgg16": {
        "channel_order": "BGR",
        "scale": 255.0,
        "mean": [103.939, 116.779, 123.68],
        "std": [1.0, 1.0, 1.0],
    },
    # LRCN / the released VGG16_LSTM (util_preprocess_data.py): 128.68 for red, not 123.68.
    "lrcn": {
        "channel_order": "BGR",
        "scale": 255.0,
        "mean": [103.939, 116.779, 128.68],
        "std": [1.0, 1.0, 1.0],
    },
    # S2VT's VGG features (extract_vgg_features.py): integer mean.
    "s2vt": {"channel_order": "BGR", "scale": 255.0, "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0]},
    # torchvision IMAGENET1K_V1 weights: RGB in [0, 1], ImageNet mean/std.
    "torchvision": {
        "channel_order": "RGB",
        "scale": 1.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
    # torchvision IMAGENET1K_FEATURES (a Caffe-style port): RGB 0-255 minus (123, 117, 104).
    "torchvision_features": {
        "channel_order": "RGB",
        "scale": 255.0,
        "mean": [123.0, 117.0, 104.0],
        "std": [1.0, 1.0, 1.0],
    },
    # Keras applications VGG16 (preprocess_input mode "caffe"): same as the Caffe model.
    "keras_vgg16": {
        "channel_order": "BGR",
        "scale": 255.0,
        "mean": [103.939, 116.779, 123.68],
        "std": [1.0, 1.0, 1.0],
    },
    # No preprocessing: RGB in [0, 1].
    "identity": {"channel_order": "RGB", "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
}


def preset(spec):
    """A preset dict (with its ``name``) from a preset name, a dict, or None.

    Raises
    ------
    ValueError
        For an unknown name or an incomplete dict.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown preprocessing preset {spec!r}; known: {', '.join(PRESETS)}")
        out = copy.deepcopy(PRESETS[spec])
        out["name"] = spec
        return out
    if isinstance(spec, dict):
        need = {"channel_order", "scale", "mean", "std"}
        missing = need - set(spec)
        if missing:
            raise ValueError(f"preprocessing dict lacks {', '.join(sorted(missing))}")
        out = copy.deepcopy(dict(spec))
        out.setdefault("name", "custom")
        return out
    raise ValueError(f"preprocessing must be a preset name or a dict, got {type(spec).__name__}")
