"""Layer specifications: what a model is made of, before any weights.

A model is an explicit ordered list of named layers. Each :class:`Layer` has a
``name`` (Caffe's layer names for the zoo models), a ``type`` and its settings.
The types and their settings (defaults in brackets):

========== =================================================================
type       settings
========== =================================================================
conv       out_channels, kernel, stride [1], padding [0], dilation [1],
           groups [1], bias [True]
fc         out_features, bias [True]; on (N, D) inputs (after ``flatten``)
relu       --
maxpool    kernel, stride [kernel], padding [0], ceil_mode [False]
avgpool    kernel, stride [kernel], padding [0], ceil_mode [False],
           count_include_pad [True]
lrn        size [5], alpha [1e-4], beta [0.75], k [1.0] (Caffe ACROSS_CHANNELS)
dropout    p [0.5] (inference: identity)
flatten    -- (C, H, W order)
lstm       hidden, cell_act ["relu"], static_input [None: none, else D_s,
           the size of a static input weighted by W_s]; consumes the whole
           clip as a sequence
========== =================================================================

Layers before the first ``lstm`` act on every frame separately (the clip's
``T`` frames are their batch); the ``lstm`` and every layer after it act on
the sequence, one row per time step. Parameters are named
``<layer>.<field>``: ``conv1_1.weight``, ``conv1_1.bias``, ``fc8.weight``,
``lstm1.W_x``, ``lstm1.b``, ``lstm1.W_h``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..layers.geometry import out_size, pair, pool_out_hw

__all__ = ["Layer", "LAYER_TYPES", "infer_shapes", "param_shapes"]

_DEFAULTS = {
    "conv": {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True},
    "fc": {"bias": True},
    "relu": {},
    "maxpool": {"stride": None, "padding": 0, "ceil_mode": False},
    "avgpool": {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True},
    "lrn": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
    "dropout": {"p": 0.5},
    "flatten": {},
    "lstm": {"cell_act": "relu", "static_input": None},
}
_REQUIRED = {
    "conv": ("out_channels", "kernel"),
    "fc": ("out_features",),
    "maxpool": ("kernel",),
    "avgpool": ("kernel",),
    "lstm": ("hidden",),
}
LAYER_TYPES = tuple(_DEFAULTS)


@dataclass(frozen=True)
class Layer:
    """One named layer of a model: its type and settings (see the module docstring)."""

    name: str
    type: str
    settings: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.type not in _DEFAULTS:
            raise ValueError(
                f"layer {self.name!r}: unknown layer type {self.type!r}; "
                f"known types: {', '.join(LAYER_TYPES)}"
            )
        missing = [k for k in _REQUIRED.get(self.type, ()) if k not in self.settings]
        if missing:
            raise ValueError(f"layer {self.name!r} ({self.type}): missing setting(s) {', '.join(missing)}")
        unknown = set(self.settings) - set(_DEFAULTS[self.type]) - set(_REQUIRED.get(self.type, ()))
        if unknown:
            raise ValueError(
                f"layer {self.name!r} ({self.type}): unknown setting(s) {', '.join(sorted(unknown))}"
            )
        merged = dict(_DEFAULTS[self.type])
        merged.update(self.settings)
        if self.type in ("maxpool", "avgpool") and merged["stride"] is None:
            merged["stride"] = merged["kernel"]
        if self.type == "lstm" and merged["cell_act"] not in ("relu", "tanh"):
            raise ValueError(
                f"layer {self.name!r}: cell_act must be 'relu' or 'tanh', got {merged['cell_act']!r}"
            )
        object.__setattr__(self, "settings", merged)

    def __getitem__(self, key):
        return self.settings[key]

    @property
    def has_params(self) -> bool:
        return self.type in ("conv", "fc", "lstm")

    def to_dict(self) -> dict:
        """A JSON-friendly form: ``{"name", "type", **settings}`` (unset optional settings left out)."""
        out = {"name": self.name, "type": self.type}
        out.update(
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.settings.items() if v is not None}
        )
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Layer:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        try:
            name, type_ = d.pop("name"), d.pop("type")
        except KeyError as e:
            raise ValueError(f"layer spec {d!r} lacks the field {e.args[0]!r}") from None
        settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(name, type_, settings)


def infer_shapes(layers, input_shape):
    """Per-sample output shape of every layer.

    Parameters
    ----------
    layers : sequence of Layer
    input_shape : tuple
        ``(C, H, W)`` of one frame, or ``(D,)`` for a model that starts with a
        fully connected or recurrent layer.

    Returns
    -------
    list of tuple
        ``shapes[k]`` is the output shape of ``layers[k]`` for one frame (or one
        time step, for sequence layers).

    Raises
    ------
    ValueError
        When a layer cannot take its input (naming the layer and the shapes).
    """
    shape = tuple(input_shape)
    shapes = []
    for layer in layers:
        s = layer.settings
        t = layer.type
        if t in ("conv", "maxpool", "avgpool", "lrn") and len(shape) != 3:
            raise ValueError(f"layer {layer.name!r} ({t}) needs a (C, H, W) input, got {shape}")
        if t == "conv":
            C, iH, iW = shape
            (kH, kW), (sH, sW), (pH, pW), (dH, dW) = (
                pair(s[k], k) for k in ("kernel", "stride", "padding", "dilation")
            )
            if C % s["groups"] or s["out_channels"] % s["groups"]:
                raise ValueError(
                    f"layer {layer.name!r}: groups={s['groups']} must divide the input channels ({C}) "
                    f"and out_channels ({s['out_channels']})"
                )
            shape = (s["out_channels"], out_size(iH, kH, sH, pH, dH), out_size(iW, kW, sW, pW, dW))
        elif t in ("maxpool", "avgpool"):
            kernel, stride, padding = (pair(s[k], k) for k in ("kernel", "stride", "padding"))
            shape = (shape[0],) + pool_out_hw(shape[1:], kernel, stride, padding, s["ceil_mode"], layer.name)
        elif t == "flatten":
            n = 1
            for d in shape:
                n *= d
            shape = (n,)
        elif t in ("fc", "lstm"):
            if len(shape) != 1:
                raise ValueError(
                    f"layer {layer.name!r} ({t}) needs a flat input; "
                    f"add a flatten layer before it (got {shape})"
                )
            shape = (s["out_features"],) if t == "fc" else (s["hidden"],)
        shapes.append(shape)
    return shapes


def param_shapes(layers, input_shape):
    """``{param name: shape}`` for every parameter of the layer list."""
    shapes = infer_shapes(layers, input_shape)
    ins = [tuple(input_shape)] + shapes[:-1]
    out = {}
    for layer, x_shape, _y_shape in zip(layers, ins, shapes):
        s = layer.settings
        if layer.type == "conv":
            kH, kW = pair(s["kernel"], "kernel")
            out[f"{layer.name}.weight"] = (s["out_channels"], x_shape[0] // s["groups"], kH, kW)
            if s["bias"]:
                out[f"{layer.name}.bias"] = (s["out_channels"],)
        elif layer.type == "fc":
            out[f"{layer.name}.weight"] = (s["out_features"], x_shape[0])
            if s["bias"]:
                out[f"{layer.name}.bias"] = (s["out_features"],)
        elif layer.type == "lstm":
            H, D = s["hidden"], x_shape[0]
            out[f"{layer.name}.W_x"] = (4 * H, D)
            out[f"{layer.name}.b"] = (4 * H,)
            out[f"{layer.name}.W_h"] = (4 * H, H)
            if s["static_input"]:
                out[f"{layer.name}.W_s"] = (4 * H, int(s["static_input"]))
    return out
