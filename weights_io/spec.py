"""The layer-spec format that converters emit (``meta["architecture"]``).

A model is an ordered list of layer specs, plain JSON-friendly dicts. Every
spec has ``name`` (unique; parameters are named ``<name>.<field>``) and
``type``; the other keys are the type's settings, always all present (no
implicit defaults). Pairs are ``[height, width]`` lists.

=========  ================================================================  ==============================
type       settings                                                          parameters
=========  ================================================================  ==============================
conv       out_channels, kernel [kH, kW], stride [sH, sW], padding [pH, pW],  weight (oC, iC/groups, kH, kW),
           dilation [dH, dW], groups, bias (bool). Cross-correlation,        bias (oC,) if bias
           zero padding, floor output size.
relu       (none)                                                            --
maxpool    kernel, stride, padding (pairs), ceil_mode (bool: Caffe's ceil     --
           rule, see ebr_ref.geometry.out_size; False = floor)
avgpool    kernel, stride, padding, ceil_mode, count_include_pad (bool)      --
lrn        size, alpha, beta, k: across channels,                            --
           ``y = x / (k + alpha/size * sum x^2) ** beta``
dropout    p (inference: identity)                                           --
flatten    (none): (C, H, W) -> C*H*W in C, H, W (row-major) order           --
fc         out_features, bias (bool); input (D,)                             weight (out, in), bias (out,)
lstm       hidden, cell_act ("tanh" or "relu"); input (D,) per time step;     W_x (4H, D), b (4H,), W_h (4H, H),
           optional static_input (D_s) only when a static input exists       W_s (4H, D_s) with static_input
=========  ================================================================  ==============================

LSTM gate blocks are in the order i, f, o, g (``weights_io.gates.GATE_ORDER``);
``b`` is the single (summed) bias. Layers before the first ``lstm`` act on each
frame; the ``lstm`` consumes the frames as a time sequence, and layers after
it act on every time step. A softmax at the end of the source network is not a
layer: ``meta["output"]`` records it.
"""

from __future__ import annotations

from ebr_ref.geometry import out_size

from .errors import CheckpointError

__all__ = ["LAYER_SETTINGS", "make_layer", "trace", "check_params", "pool_rounding"]

_REQ = object()
LAYER_SETTINGS = {
    "conv": {"out_channels": _REQ, "kernel": _REQ, "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1],
             "groups": 1, "bias": True},
    "relu": {},
    "maxpool": {"kernel": _REQ, "stride": _REQ, "padding": [0, 0], "ceil_mode": False},
    "avgpool": {"kernel": _REQ, "stride": _REQ, "padding": [0, 0], "ceil_mode": False, "count_include_pad": True},
    "lrn": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
    "dropout": {"p": 0.5},
    "flatten": {},
    "fc": {"out_features": _REQ, "bias": True},
    "lstm": {"hidden": _REQ, "cell_act": _REQ},
}
_PAIRS = ("kernel", "stride", "padding", "dilation")


def _pair(v, what):
    if isinstance(v, int) and not isinstance(v, bool):
        return [v, v]
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return [int(v[0]), int(v[1])]
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")


def make_layer(name: str, type: str, **settings) -> dict:
    """A complete, validated layer spec (see the module docstring).

    Raises
    ------
    ValueError
        For an unknown type or setting, or a missing required setting.
    """
    if type not in LAYER_SETTINGS:
        raise ValueError(f"layer {name!r}: unknown layer type {type!r}; known: {', '.join(LAYER_SETTINGS)}")
    allowed = dict(LAYER_SETTINGS[type])
    if type == "lstm":
        allowed["static_input"] = None
    unknown = set(settings) - set(allowed)
    if unknown:
        raise ValueError(f"layer {name!r} ({type}): unknown setting(s) {', '.join(sorted(unknown))}")
    out = {"name": name, "type": type}
    for k, default in allowed.items():
        if k in settings:
            v = settings[k]
        elif default is _REQ:
            raise ValueError(f"layer {name!r} ({type}): missing setting {k!r}")
        elif default is None:
            continue
        else:
            v = default
        out[k] = _pair(v, f"layer {name!r} {k}") if k in _PAIRS else v
    if type == "lstm" and out["cell_act"] not in ("tanh", "relu"):
        raise ValueError(f"layer {name!r}: cell_act must be 'tanh' or 'relu', got {out['cell_act']!r}")
    return out


def trace(layers, input_shape, path=None):
    """Output shape of every layer and the expected shape of every parameter.

    Parameters
    ----------
    layers : list of dict
        Layer specs.
    input_shape : tuple
        ``(C, H, W)`` of one frame, or ``(D,)`` for a sequence-only model.
    path : str, optional
        For error messages.

    Returns
    -------
    shapes : list of tuple
        Per-sample output shape of each layer.
    params : dict
        ``{parameter name: shape}`` in layer order.

    Raises
    ------
    CheckpointError
        When a layer cannot take its input (naming the layer and the shapes).
    """
    shape = tuple(input_shape)
    shapes, params = [], {}
    for L in layers:
        name, t = L["name"], L["type"]
        try:
            if t in ("conv", "maxpool", "avgpool", "lrn") and len(shape) != 3:
                raise ValueError(f"needs a (C, H, W) input, got {shape}")
            if t == "conv":
                C, iH, iW = shape
                (kH, kW), (sH, sW), (pH, pW), (dH, dW) = (L[k] for k in _PAIRS)
                g = L["groups"]
                if C % g or L["out_channels"] % g:
                    raise ValueError(f"groups={g} must divide the input channels {C} and out_channels {L['out_channels']}")
                shape = (L["out_channels"], out_size(iH, kH, sH, pH, dH), out_size(iW, kW, sW, pW, dW))
                params[f"{name}.weight"] = (L["out_channels"], C // g, kH, kW)
                if L["bias"]:
                    params[f"{name}.bias"] = (L["out_channels"],)
            elif t in ("maxpool", "avgpool"):
                C, iH, iW = shape
                (kH, kW), (sH, sW), (pH, pW) = (L[k] for k in _PAIRS[:3])
                cm = L["ceil_mode"]
                shape = (C, out_size(iH, kH, sH, pH, 1, cm), out_size(iW, kW, sW, pW, 1, cm))
            elif t == "flatten":
                n = 1
                for d in shape:
                    n *= d
                shape = (n,)
            elif t in ("fc", "lstm"):
                if len(shape) != 1:
                    raise ValueError(f"needs a flat input (add a flatten layer), got {shape}")
                D = shape[0]
                if t == "fc":
                    shape = (L["out_features"],)
                    params[f"{name}.weight"] = (L["out_features"], D)
                    if L["bias"]:
                        params[f"{name}.bias"] = (L["out_features"],)
                else:
                    H = L["hidden"]
                    params[f"{name}.W_x"] = (4 * H, D)
                    params[f"{name}.b"] = (4 * H,)
                    params[f"{name}.W_h"] = (4 * H, H)
                    if L.get("static_input"):
                        params[f"{name}.W_s"] = (4 * H, L["static_input"])
                    shape = (H,)
            elif t not in ("relu", "dropout", "lrn"):
                raise ValueError(f"unknown layer type {t!r}")
        except ValueError as e:
            raise CheckpointError(path, f"layer {name!r} ({t}): {e}") from None
        shapes.append(shape)
    return shapes, params


def check_params(params: dict, expected: dict, path=None) -> None:
    """Raise unless ``params`` has exactly the expected names and shapes.

    Raises
    ------
    CheckpointError
        Naming missing and unexpected parameters, or the first shape mismatch
        (expected vs found).
    """
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise CheckpointError(path, f"parameters missing: {missing or 'none'}; unexpected: {extra or 'none'}")
    for k, shape in expected.items():
        if tuple(params[k].shape) != tuple(shape):
            raise CheckpointError(path, f"parameter {k}: expected shape {tuple(shape)}, found {tuple(params[k].shape)}")


def pool_rounding(layers):
    """'ceil', 'floor', 'mixed', or None (no pooling layer)."""
    modes = {bool(L["ceil_mode"]) for L in layers if L["type"] in ("maxpool", "avgpool")}
    if not modes:
        return None
    if modes == {True}:
        return "ceil"
    if modes == {False}:
        return "floor"
    return "mixed"
