"""The layer-spec format that converters emit (``meta["architecture"]``).

A model is an ordered list of layer specs, plain JSON-friendly dicts:
``{"name", "type", **settings}``, exactly :meth:`ebr_ref.models.Layer.to_dict`.
The types, their settings and parameters are defined once, in
:mod:`ebr_ref.models.spec`; this module only completes and validates specs for
the converters (every setting present, pairs as ``[height, width]`` lists) and
turns shape errors into :class:`CheckpointError` naming the file.

LSTM gate blocks are in the order i, f, o, g (``weights_io.gates.GATE_ORDER``);
``b`` is the single (summed) bias. Layers before the first ``lstm`` act on each
frame; the ``lstm`` consumes the frames as a time sequence, and layers after
it act on every time step. A softmax at the end of the source network is not a
layer: ``meta["output"]`` records it.
"""

from __future__ import annotations

from ebr_ref.models.spec import Layer, infer_shapes, param_shapes

from .errors import CheckpointError

__all__ = ["make_layer", "trace", "check_params", "pool_rounding"]

_PAIRS = ("kernel", "stride", "padding", "dilation")


def _pair(v, what):
    if isinstance(v, int) and not isinstance(v, bool):
        return [v, v]
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return [int(v[0]), int(v[1])]
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")


def make_layer(name: str, type: str, **settings) -> dict:
    """A complete, validated layer spec: every setting present, pairs as lists.

    Raises
    ------
    ValueError
        For an unknown type or setting, or a missing required setting
        (from :class:`ebr_ref.models.Layer`).
    """
    out = Layer(name, type, settings).to_dict()
    for k in _PAIRS:
        if k in out:
            out[k] = _pair(out[k], f"layer {name!r} {k}")
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
        When a spec is invalid or a layer cannot take its input (naming the
        layer and the shapes).
    """
    try:
        specs = [Layer.from_dict(d) for d in layers]
        return infer_shapes(specs, input_shape), param_shapes(specs, input_shape)
    except ValueError as e:
        raise CheckpointError(path, str(e)) from None


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
