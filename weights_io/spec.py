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

__all__ = ["make_layer", "trace", "Tracer", "check_params", "pool_rounding"]

_PAIRS = ("kernel", "stride", "padding", "dilation")


def _pair(v, what):
    if isinstance(v, int) and not isinstance(v, bool):
        return [v, v]
    if (
        isinstance(v, (list, tuple))
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
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
    except (TypeError, OverflowError) as e:  # settings of the wrong type, read from a file
        raise CheckpointError(path, f"invalid layer settings ({type(e).__name__}: {e})") from None


class Tracer:
    """:func:`trace` built one layer at a time, in linear time.

    Converters add layers as they read them and need the current output shape
    and the expected parameter shapes after each one; re-tracing the whole list
    each time made a chain of n layers cost n**2 (2000 ReLUs: 25 s). A layer's
    output shape depends only on its input shape, so each :meth:`add` traces
    just the new layer from the last shape.

    Attributes
    ----------
    layers : list of dict
        The specs added so far.
    shapes : list of tuple
        Their output shapes (as ``trace(layers, input_shape)[0]``).
    params : dict
        The expected parameter shapes (as ``trace(layers, input_shape)[1]``).
    """

    def __init__(self, input_shape, path=None):
        self.input_shape = tuple(input_shape)
        self.path = path
        self.layers, self.shapes, self.params = [], [], {}
        self.names = set()

    @property
    def shape(self):
        """The current output shape (the input shape before any layer)."""
        return self.shapes[-1] if self.shapes else self.input_shape

    def add(self, spec: dict):
        """Append a layer spec; return ``(shapes, params)`` like :func:`trace` of all layers so far.

        Raises
        ------
        CheckpointError
            When the spec is invalid or the layer cannot take the current shape.
        """
        shape = self.shape
        try:
            layer = Layer.from_dict(spec)
            out = infer_shapes([layer], shape)[0]
            params = param_shapes([layer], shape)
        except ValueError as e:
            raise CheckpointError(self.path, str(e)) from None
        except (TypeError, OverflowError) as e:
            raise CheckpointError(
                self.path, f"layer {spec.get('name')!r}: invalid settings ({type(e).__name__}: {e})"
            ) from None
        self.layers.append(spec)
        self.shapes.append(out)
        self.params.update(params)
        self.names.add(spec["name"])
        return self.shapes, self.params


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
            raise CheckpointError(
                path, f"parameter {k}: expected shape {tuple(shape)}, found {tuple(params[k].shape)}"
            )


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
