"""The table from layer types to kernels: one forward, EB and gradient per type.

This is the only place where a layer's settings and parameters meet the
kernel functions of :mod:`ebr_ref.layers`. An op without an EB rule is not in
the table, so a model that contains it cannot be grounded (no silent fallback).
"""

from __future__ import annotations

from ..layers.avgpool2d import avgpool2d_eb, avgpool2d_forward, avgpool2d_grad
from ..layers.conv2d import conv2d_eb, conv2d_forward, conv2d_grad
from ..layers.dropout import dropout_eb, dropout_forward, dropout_grad
from ..layers.flatten import flatten_eb, flatten_forward, flatten_grad
from ..layers.linear import linear_eb, linear_forward, linear_grad
from ..layers.lrn import lrn_eb, lrn_forward, lrn_grad
from ..layers.lstm import LSTMParams, lstm_eb, lstm_forward, lstm_grad
from ..layers.maxpool2d import maxpool2d_eb, maxpool2d_forward, maxpool2d_grad
from ..layers.relu import relu_eb, relu_forward, relu_grad

__all__ = ["forward_layer", "eb_layer", "grad_layer", "lstm_params"]


def lstm_params(params, name):
    """The :class:`LSTMParams` of layer ``name`` from a model's parameter dict (``W_s`` None without one).

    The one place that reads an LSTM's parameters: the action model's ``lstm``
    layer and the captioner's ``lstm1`` and ``lstm2`` alike.
    """
    return LSTMParams(
        params[f"{name}.W_x"], params[f"{name}.b"], params[f"{name}.W_h"], params.get(f"{name}.W_s")
    )


def forward_layer(layer, params, x, *, cont=None, W_pos=None, fast=True, overwrite_input=False):
    """Run one layer forward; return ``(y, cache)``.

    Sequence layers (``lstm``) take ``x`` as ``(T, D)``: the clip's time steps
    in rows (one sequence, ``N = 1``); ``cont`` is the ``(T,)`` clip-marker
    vector. ``W_pos`` is the layer's precomputed ``max(W, 0)`` (fc layers), kept
    in the cache for EB. ``fast`` is the kernels' own switch (``conv`` layers:
    :mod:`ebr_ref.layers.conv2d_fast`); False runs the reference kernel only.
    ``overwrite_input``: a ``relu`` layer may write its output into ``x``
    (:func:`ebr_ref.layers.relu.relu_forward`); ignored by other layers.
    """
    s, t, n = layer.settings, layer.type, layer.name
    if t == "conv":
        return conv2d_forward(
            x,
            params[f"{n}.weight"],
            params.get(f"{n}.bias"),
            stride=s["stride"],
            padding=s["padding"],
            dilation=s["dilation"],
            groups=s["groups"],
            fast=fast,
        )
    if t == "fc":
        return linear_forward(x, params[f"{n}.weight"], params.get(f"{n}.bias"), W_pos=W_pos)
    if t == "relu":
        return relu_forward(x, overwrite_input=overwrite_input)
    if t == "maxpool":
        return maxpool2d_forward(
            x, kernel=s["kernel"], stride=s["stride"], padding=s["padding"], ceil_mode=s["ceil_mode"]
        )
    if t == "avgpool":
        return avgpool2d_forward(
            x,
            kernel=s["kernel"],
            stride=s["stride"],
            padding=s["padding"],
            ceil_mode=s["ceil_mode"],
            count_include_pad=s["count_include_pad"],
        )
    if t == "lrn":
        return lrn_forward(x, size=s["size"], alpha=s["alpha"], beta=s["beta"], k=s["k"])
    if t == "dropout":
        return dropout_forward(x, p=s["p"])
    if t == "flatten":
        return flatten_forward(x)
    if t == "lstm":
        c = None if cont is None else cont[:, None]  # (T, 1)
        h, cache = lstm_forward(x[:, None, :], lstm_params(params, n), cont=c, cell_act=s["cell_act"])
        return h[:, 0, :], cache  # (T, H)
    raise NotImplementedError(f"layer {n!r}: no kernels for layer type {t!r}")


# Kernels that need nothing but the signal and the cache (and, for those in _SWITCHED, the fast switch).
_EB = {
    "conv": conv2d_eb,
    "fc": linear_eb,
    "relu": relu_eb,
    "maxpool": maxpool2d_eb,
    "avgpool": avgpool2d_eb,
    "lrn": lrn_eb,
    "dropout": dropout_eb,
    "flatten": flatten_eb,
}
_GRAD = {
    "conv": conv2d_grad,
    "fc": linear_grad,
    "relu": relu_grad,
    "maxpool": maxpool2d_grad,
    "avgpool": avgpool2d_grad,
    "lrn": lrn_grad,
    "dropout": dropout_grad,
    "flatten": flatten_grad,
}
_SWITCHED = {  # the kernels with a fast path of their own (``fast=``): conv2d_fast.py, linear_fast.py
    conv2d_eb,
    conv2d_grad,
    linear_eb,
}


def _switch(kernel, fast):
    """The keyword arguments that pass the ``fast`` switch to ``kernel`` (none if it has no fast path)."""
    return {"fast": fast} if kernel in _SWITCHED else {}


def eb_layer(layer, cache, p_y, *, lstm_rule="caffe", allow_tanh_eb=False, fast=True):
    """Excitation backward through one layer; returns ``(p_x, extra)``.

    ``extra`` is None except for ``lstm`` layers, where it is the kernel's full
    result (signals that reached the initial state, mass lost per step).
    ``fast``: the kernels' own switch (conv and fc layers); False runs the reference kernel only.
    """
    if layer.type == "lstm":
        res = lstm_eb(p_y[..., None, :], cache, rule=lstm_rule, allow_tanh=allow_tanh_eb)  # (T, 1, H)
        return res.p_x[..., 0, :], res  # (T, D)
    if layer.type not in _EB:
        raise NotImplementedError(
            f"layer {layer.name!r}: no excitation-backprop rule for layer type {layer.type!r}"
        )
    kernel = _EB[layer.type]
    return kernel(p_y, cache, **_switch(kernel, fast)), None


def grad_layer(layer, cache, g_y, *, fast=True):
    """Gradient (vector-Jacobian product) through one layer; returns ``g_x``.

    ``fast``: the kernels' own switch (conv layers); False runs the reference kernel only.
    """
    if layer.type == "lstm":
        return lstm_grad(g_y[..., None, :], cache).g_x[..., 0, :]
    if layer.type not in _GRAD:
        raise NotImplementedError(f"layer {layer.name!r}: no gradient for layer type {layer.type!r}")
    kernel = _GRAD[layer.type]
    return kernel(g_y, cache, **_switch(kernel, fast))
