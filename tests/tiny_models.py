"""A tiny per-frame block that several tests build their models from (``sequential``, ``captioner``).

conv (3 channels, 3 x 3) -> ReLU -> 2 x 2 max pooling -> flatten -> fc (6) -> ReLU, for frames of
2 x 6 x 6: small enough for any test, with every layer type the drivers treat specially.
"""

BLOCK = [
    ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 6}),
    ("relu7", "relu"),
]
