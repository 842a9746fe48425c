"""Keras models with their architecture (``.keras`` archives, ``model.save("x.h5")``) -> canonical parameters.

The architecture is read from the model config -- ``config.json`` in a
``.keras`` archive, the ``model_config`` attribute of a full-model HDF5 file
(Keras 2 and Keras 3's legacy ``.h5``) -- as JSON data: no class is imported
and nothing is executed. A ``Sequential`` model, or a functional one whose
layers form one chain (each layer called once, on the output of the layer
before), is translated layer by layer:

==============================  ===================================================================
Keras layer                     engine layers
==============================  ===================================================================
InputLayer                      the input shape: ``(H, W, C)`` -> ``(C, H, W)`` (channels_last),
                                ``(T, H, W, C)``/``(T, D)`` for clips and sequences
Conv2D                          ``conv`` (+ ``relu`` for ``activation="relu"``); ``padding="same"``
                                only where it pads symmetrically (odd kernels at stride 1)
MaxPooling2D, AveragePooling2D  ``maxpool``/``avgpool`` (floor rounding; ``same`` where symmetric,
                                average pooling then excludes the padding as TensorFlow does)
GlobalAveragePooling2D,         ``avgpool``/``maxpool`` over the whole map + ``flatten``
GlobalMaxPooling2D
Flatten                         ``flatten`` (the next weight layer's rows are permuted, below)
Dense                           ``fc`` (+ ``relu``); on a sequence, applied at every step
Dropout, SpatialDropout2D       ``dropout``
ReLU, Activation("relu")        ``relu``
LSTM                            ``lstm`` (``activation`` tanh or relu, ``recurrent_activation``
                                sigmoid); ``return_sequences=False`` keeps only the last step in
                                Keras: the engine classifies every step and its last step's
                                logits are Keras' output (``meta["keras"]["sequence_output"]``)
TimeDistributed(layer)          the wrapped layer, on every frame (or step)
softmax activation (last)       ``meta["output"]``
==============================  ===================================================================

Anything else (BatchNormalization, Reshape, Bidirectional, GRU, merges,
nested models, branches...) raises CheckpointError naming the layer and its
class.

Transforms (Keras kernels are HWIO, cross-correlation, Dense kernels
``(in, out)``; one copy each):

* Conv2D kernel ``(kH, kW, iC/groups, oC)`` -> ``weight = kernel.transpose(3, 2, 0, 1)``;
* Dense kernel ``(in, out)`` -> ``weight = kernel.T``; after a ``Flatten`` of a
  channels_last ``(H, W, C)`` map its rows are in H, W, C order ->
  ``weight = kernel.reshape(H, W, C, out).transpose(3, 2, 0, 1).reshape(out, C*H*W)``;
* LSTM kernel ``(D, 4H)``, recurrent_kernel ``(H, 4H)``, bias ``(4H)``, gate
  columns i, f, c, o -> canonical blocks i, f, o, g (Keras blocks [0, 1, 3, 2]),
  transposed; after a ``Flatten`` of an ``(H, W, C)`` map the kernel's rows are
  permuted like a Dense kernel's;
* biases: none.
"""

from __future__ import annotations

import json
import os

from ._common import as_float, as_int, as_str, finish, interpreting, lstm_params, param, show, source_info
from .convert_keras import _keras3_layers, read_keras
from .errors import CheckpointError
from .hdf5 import H5File
from .keras_archive import read_keras_archive
from .naming import LayerNamer
from .presets import preset
from .readers import guarded, open_checked
from .spec import Tracer, make_layer

__all__ = ["convert_keras", "read_keras_model"]

_MODELS = ("Sequential", "Functional", "Model")


def read_keras_model(path):
    """The config and the weights of a Keras model file with its architecture.

    Returns
    -------
    buf, fmt : the opened file and its format (``"keras"`` or ``"hdf5"``)
    config : dict
        The model's config (``{"class_name", "config"}``).
    weights : dict
        ``{layer name: [(weight name, array), ...]}``.
    info : dict
        ``{"layout", "keras_version"}``.
    """
    buf, fmt = open_checked(path)
    if fmt == "keras":
        config, metadata, inner = guarded(buf, fmt, read_keras_archive, buf)
        weights = {}
        root = guarded(buf, fmt, lambda: H5File(inner).root)
        if "layers" in guarded(buf, fmt, root.members):
            guarded(buf, fmt, _keras3_layers, root["layers"], weights, 0)
        version = metadata.get("keras_version")
        return buf, fmt, config, weights, {"layout": "keras_v3", "keras_version": version}
    if fmt != "hdf5":
        raise buf.error(f"expected a Keras model (.keras archive or HDF5 file), found a {fmt} file")
    klayers, _, layout = guarded(buf, fmt, read_keras, buf)
    root = guarded(buf, fmt, lambda: H5File(buf).root)
    attrs = guarded(buf, fmt, lambda: root.attrs)
    raw = attrs.get("model_config")
    if not isinstance(raw, str):
        raise buf.error(
            "this Keras file holds weights only (no model_config attribute): the architecture is "
            "unknown; save the model with model.save('x.keras'), or use source='keras_vgg16' / "
            "'keras_lstm'"
        )
    buf.charge(8 * len(raw), "model_config (parsed)")
    try:
        config = json.loads(raw)
    except RecursionError:
        raise buf.error("model_config is nested too deeply") from None
    except ValueError as e:
        raise buf.error(f"model_config attribute is not valid JSON ({e})") from None
    version = attrs.get("keras_version")
    return (
        buf,
        fmt,
        config,
        klayers,
        {"layout": layout, "keras_version": version if isinstance(version, str) else None},
    )


def _d(v, P, what):
    if not isinstance(v, dict):
        raise CheckpointError(P, f"{what} must be a JSON object, found {show(v)}")
    return v


def _history(arg, P, what):
    """The source layer name of one inbound tensor (Keras 3 ``__keras_tensor__`` or Keras 2 list)."""
    if isinstance(arg, dict):
        hist = _d(arg.get("config"), P, what).get("keras_history")
    elif isinstance(arg, list):
        hist = arg
    else:
        hist = None
    if not isinstance(hist, list) or not hist or not isinstance(hist[0], str):
        raise CheckpointError(P, f"{what}: cannot read its input tensor ({show(arg)})")
    return hist[0]


def _sources(L, P, what):
    """The layers that feed layer ``L`` of a functional config (its one call)."""
    nodes = L.get("inbound_nodes", [])
    if not isinstance(nodes, list):
        raise CheckpointError(P, f"{what}: inbound_nodes must be a list")
    if len(nodes) > 1:
        raise CheckpointError(
            P,
            f"{what}: the layer is called {len(nodes)} times (a shared layer); only "
            "chains of layers called once are supported",
        )
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args = node.get("args", [])
        if not isinstance(args, list):
            raise CheckpointError(P, f"{what}: inbound args must be a list")
        flat = []
        for a in args:
            flat += a if isinstance(a, list) and a and isinstance(a[0], dict) else [a]
        return [_history(a, P, what) for a in flat if isinstance(a, (dict, list))]
    if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        return [_history(a, P, what) for a in node]
    raise CheckpointError(P, f"{what}: cannot read inbound_nodes ({show(node)})")


def _endpoint(v, P, what):
    """The layer name of ``input_layers``/``output_layers`` (``[name, 0, 0]`` or ``[[name, 0, 0]]``)."""
    if isinstance(v, list) and v and isinstance(v[0], str):
        return v[0]
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], list) and v[0] and isinstance(v[0][0], str):
        return v[0][0]
    raise CheckpointError(
        P, f"{what}: only models with one input and one output are supported (found {show(v)})"
    )


def _chain(config, P):
    """The model's layer configs in forward order (a Sequential, or a functional chain)."""
    config = _d(config, P, "the model config")
    cls = config.get("class_name")
    conf = _d(config.get("config"), P, "the model config's 'config'")
    layers = conf.get("layers")
    if cls not in _MODELS or not isinstance(layers, list):
        raise CheckpointError(
            P, f"the model is a {cls!r}; only Sequential and functional models are supported"
        )
    layers = [_d(L, P, "a layer config") for L in layers]
    if cls == "Sequential":
        return layers, config
    by_name = {}
    for L in layers:
        nm = L.get("name") or _d(L.get("config", {}), P, "a layer's config").get("name")
        if not isinstance(nm, str) or nm in by_name:
            raise CheckpointError(
                P, f"a layer of the functional model has no name or a repeated one ({show(nm)})"
            )
        by_name[nm] = L
    start = _endpoint(conf.get("input_layers"), P, "input_layers")
    end = _endpoint(conf.get("output_layers"), P, "output_layers")
    consumer = {}
    for nm, L in by_name.items():
        srcs = _sources(L, P, f"layer {nm!r}")
        if len(srcs) > 1:
            raise CheckpointError(
                P,
                f"layer {nm!r} ({L.get('class_name')}) joins {len(srcs)} inputs {srcs}; "
                "only "
                "chains of layers are supported",
            )
        for s in srcs:
            if s in consumer:
                raise CheckpointError(
                    P,
                    f"the output of layer {s!r} feeds both {consumer[s]!r} and {nm!r}; "
                    "only chains of layers are supported (the model branches)",
                )
            consumer[s] = nm
    if start not in by_name or end not in by_name:
        raise CheckpointError(P, f"input layer {start!r} or output layer {end!r} is not among the layers")
    order, cur = [start], start
    while cur != end:
        if cur not in consumer:
            raise CheckpointError(
                P, f"the chain from {start!r} stops at {cur!r} before the output layer {end!r}"
            )
        cur = consumer[cur]
        order.append(cur)
        if len(order) > len(by_name):
            raise CheckpointError(P, "the layers form a cycle")
    unused = sorted(set(by_name) - set(order))
    if unused:
        raise CheckpointError(P, f"layers {unused[:8]} are not on the chain from the input to the output")
    return [by_name[nm] for nm in order], config


def _shape_list(v, P, what):
    ok = isinstance(v, list) and all(x is None or (isinstance(x, int) and not isinstance(x, bool)) for x in v)
    if not ok:
        raise CheckpointError(P, f"{what} must be a list of sizes, found {show(v)}")
    return v


def _input_shape(layers, config, P):
    """The batch shape ``[None, ...]`` of the model's input."""
    first = layers[0]
    for L in (first,):
        c = _d(L.get("config", {}), P, "the first layer's config")
        for key in ("batch_shape", "batch_input_shape"):
            if c.get(key) is not None:
                return _shape_list(c[key], P, f"layer {c.get('name')!r} {key}")
    bc = config.get("build_config")
    if isinstance(bc, dict) and bc.get("input_shape") is not None:
        return _shape_list(bc["input_shape"], P, "build_config input_shape")
    c = config.get("config", {})
    if isinstance(c, dict) and c.get("build_input_shape") is not None:
        return _shape_list(c["build_input_shape"], P, "build_input_shape")
    raise CheckpointError(
        P,
        "the model config does not give the input shape (no InputLayer, batch_shape or "
        "build_input_shape); pass input_shape=",
    )


class _Keras:
    def __init__(self, P, weights, *, names, rename, dtype, cell_act, has_conv):
        self.P, self.weights, self.dtype, self.cell_act = P, weights, dtype, cell_act
        self.rename = dict(rename or {})
        self.namer = LayerNamer("auto" if names == "auto" else "source", has_conv)
        self.params, self.name_map, self.transforms = {}, {}, {}
        self.output = None
        self.pending = None  # (C, H, W) when the last Flatten was of a channels_last map
        self.lstm_seen = False
        self.cell = None
        self.sequence_output = None
        self.tracer = None
        self.time = False
        self.channels_first = False
        self.used = set()

    # ---------------------------------------------------------------- helpers
    def _name(self, kind, lname, idx):
        nm = self.namer(kind, lname, idx, kind)
        return self.rename.get(nm, nm)

    def _int(self, c, key, what, lo=1, default=None):
        return as_int(c.get(key, default), self.P, what, f"{key!r}", lo, (1 << 31) - 1)

    def _pair(self, c, key, what, default=None):
        v = c.get(key, default)
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v, v]
        if not isinstance(v, list) or len(v) != 2:
            raise CheckpointError(self.P, f"{what}: {key!r} must be two integers, found {show(v)}")
        return [as_int(x, self.P, what, repr(key), 1, (1 << 31) - 1) for x in v]

    def _arrays(self, lname, what, n_min, n_max):
        if lname not in self.weights:
            raise CheckpointError(self.P, f"{what}: no weights for the layer in the file")
        ws = self.weights[lname]
        if not n_min <= len(ws) <= n_max:
            raise CheckpointError(
                self.P,
                f"{what}: expected {n_min}..{n_max} weight arrays, found "
                f"{[(n, tuple(a.shape)) for n, a in ws]}",
            )
        self.used.add(lname)
        return ws

    def _activation(self, c, what, last):
        act = c.get("activation", "linear")
        if act is None or act == "linear":
            return
        if isinstance(act, dict):  # Keras 3 may serialise {"class_name": ..., "config": {"name": "relu"}}
            act = act.get("config", {}).get("name") if isinstance(act.get("config"), dict) else None
        if act == "relu":
            name = self._name("relu", f"{c.get('name')}_relu", len(self.tracer.layers))
            self.tracer.add(make_layer(name, "relu"))
        elif act == "softmax" and last:
            self.output = {"type": "softmax", "axis": -1}
        else:
            raise CheckpointError(
                self.P,
                f"{what}: activation {show(act)} is not supported (relu, linear, "
                "or softmax on the last layer)",
            )

    def _same_pad(self, size, k, s, d, what):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        if total % 2:
            raise CheckpointError(
                self.P,
                f"{what}: padding='same' pads this {size}-wide input "
                "asymmetrically "
                f"({total // 2} and {total - total // 2}); no "
                "engine layer does "
                "that",
            )
        return total // 2

    # ---------------------------------------------------------------- the chain
    def run(self, layers, input_shape):
        P = self.P
        batch = list(input_shape)
        rank = len(batch) - 1
        self.channels_first = any(
            isinstance(L.get("config"), dict) and _inner(L)[1].get("data_format") == "channels_first"
            for L in layers
        )
        if rank in (3, 4):
            spatial = batch[-3:]
            if self.channels_first:
                C, H, W = spatial
            else:
                H, W, C = spatial
            feat = (C, H, W)
            self.time = rank == 4
        elif rank in (1, 2):
            feat = (batch[-1],)
            self.time = rank == 2
        else:
            raise CheckpointError(
                P, f"input batch shape {batch}: expected (H, W, C), (T, H, W, C), (T, D) or (D,)"
            )
        if not all(isinstance(v, int) and v > 0 for v in feat):
            raise CheckpointError(P, f"input batch shape {batch} has unknown sizes; pass input_shape=")
        self.tracer = Tracer(feat, P)
        for idx, L in enumerate(layers):
            cls, c, wrapped = _inner(L)
            lname = (L.get("config") or {}).get("name") if isinstance(L.get("config"), dict) else None
            lname = L.get("name") or lname
            what = f"layer {lname!r} ({L.get('class_name')}{f'({cls})' if wrapped else ''})"
            if wrapped and not self.time:
                raise CheckpointError(P, f"{what}: TimeDistributed on an input without a time axis")
            with interpreting(P, what):
                self.layer(idx, cls, c, lname, what, last=idx == len(layers) - 1)
        return feat

    def layer(self, idx, cls, c, lname, what, last):
        P, tr = self.P, self.tracer
        shape = tr.shape
        if cls == "InputLayer":
            return
        if cls in ("Conv2D", "Convolution2D"):
            if len(shape) != 3:
                raise CheckpointError(P, f"{what}: needs an image input, found features of shape {shape}")
            filters = self._int(c, "filters", what)
            k = self._pair(c, "kernel_size", what)
            s = self._pair(c, "strides", what, 1)
            d = self._pair(c, "dilation_rate", what, 1)
            groups = self._int(c, "groups", what, default=1)
            pad = [0, 0]
            mode = c.get("padding", "valid")
            if mode == "same":
                pad = [self._same_pad(shape[1 + j], k[j], s[j], d[j], what) for j in range(2)]
            elif mode != "valid":
                raise CheckpointError(P, f"{what}: padding {show(mode)} is not supported")
            bias = bool(c.get("use_bias", True))
            ws = self._arrays(lname, what, 1 + bias, 1 + bias)
            name = self._name("conv", lname, idx)
            _, expect = tr.add(
                make_layer(
                    name,
                    "conv",
                    out_channels=filters,
                    kernel=k,
                    stride=s,
                    padding=pad,
                    dilation=d,
                    groups=groups,
                    bias=bias,
                )
            )
            K = ws[0][1]
            want = expect[f"{name}.weight"]
            if tuple(K.shape) != (want[2], want[3], want[1], want[0]):
                raise CheckpointError(
                    P,
                    f"{what}: kernel {ws[0][0]!r} has shape {tuple(K.shape)}, expected "
                    f"{(want[2], want[3], want[1], want[0])}",
                )
            self._put(
                name,
                "weight",
                K,
                f"{lname}/{ws[0][0]}",
                "kernel (kH, kW, iC, oC) -> transpose(3, 2, 0, 1)",
                transpose=(3, 2, 0, 1),
            )
            if bias:
                self._bias(name, ws[1], lname, filters, what)
            self._activation(c, what, last)
        elif cls in ("MaxPooling2D", "AveragePooling2D", "MaxPool2D", "AvgPool2D"):
            if len(shape) != 3:
                raise CheckpointError(P, f"{what}: needs an image input, found features of shape {shape}")
            k = self._pair(c, "pool_size", what, 2)
            s = self._pair(c, "strides", what, k) if c.get("strides") is not None else k
            mode = c.get("padding", "valid")
            pad = [0, 0]
            if mode == "same":
                pad = [self._same_pad(shape[1 + j], k[j], s[j], 1, what) for j in range(2)]
            elif mode != "valid":
                raise CheckpointError(P, f"{what}: padding {show(mode)} is not supported")
            kind = "maxpool" if cls.startswith("Max") else "avgpool"
            extra = {"count_include_pad": False} if kind == "avgpool" else {}
            tr.add(
                make_layer(
                    self._name(kind, lname, idx),
                    kind,
                    kernel=k,
                    stride=s,
                    padding=pad,
                    ceil_mode=False,
                    **extra,
                )
            )
        elif cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D"):
            if len(shape) != 3:
                raise CheckpointError(P, f"{what}: needs an image input, found features of shape {shape}")
            if c.get("keepdims", False):
                raise CheckpointError(P, f"{what}: keepdims=True is not supported")
            kind = "maxpool" if "Max" in cls else "avgpool"
            extra = {"count_include_pad": True} if kind == "avgpool" else {}
            tr.add(
                make_layer(
                    self._name(kind, lname, idx),
                    kind,
                    kernel=[shape[1], shape[2]],
                    stride=1,
                    padding=0,
                    ceil_mode=False,
                    **extra,
                )
            )
            tr.add(make_layer(self._name("flatten", None, idx), "flatten"))
        elif cls == "Flatten":
            if len(shape) == 3:
                tr.add(make_layer(self._name("flatten", lname, idx), "flatten"))
                if not self.channels_first and shape[1:] != (1, 1):
                    self.pending = shape
        elif cls == "Dense":
            if len(shape) != 1:
                raise CheckpointError(
                    P,
                    f"{what}: a Dense layer on an image (per pixel) has no engine "
                    "layer; add a Flatten before it",
                )
            units = self._int(c, "units", what)
            bias = bool(c.get("use_bias", True))
            ws = self._arrays(lname, what, 1 + bias, 1 + bias)
            name = self._name("fc", lname, idx)
            _, expect = tr.add(make_layer(name, "fc", out_features=units, bias=bias))
            K = ws[0][1]
            D = shape[0]
            if tuple(K.shape) != (D, units):
                raise CheckpointError(
                    P, f"{what}: kernel {ws[0][0]!r} has shape {tuple(K.shape)}, expected {(D, units)}"
                )
            if self.pending is not None:
                C, H, W = self.pending
                self._put(
                    name,
                    "weight",
                    K,
                    f"{lname}/{ws[0][0]}",
                    f"kernel rows H,W,C -> reshape({H}, {W}, {C}, {units}).transpose(3, 2, 0, 1)"
                    f".reshape({units}, {C * H * W})",
                    shape=(H, W, C, units),
                    transpose=(3, 2, 0, 1),
                    final=(units, D),
                )
                self.pending = None
            else:
                self._put(
                    name,
                    "weight",
                    K,
                    f"{lname}/{ws[0][0]}",
                    "kernel (in, out) -> transpose",
                    transpose=(1, 0),
                )
            if bias:
                self._bias(name, ws[1], lname, units, what)
            self._activation(c, what, last)
        elif cls in ("Dropout", "SpatialDropout2D"):
            rate = as_float(c.get("rate", 0.5), P, what, "'rate'")
            tr.add(make_layer(self._name("dropout", lname, idx), "dropout", p=rate))
        elif cls == "ReLU":
            if (
                c.get("max_value") is not None
                or as_float(c.get("negative_slope", 0.0) or 0.0, P, what, "'negative_slope'") != 0
                or as_float(c.get("threshold", 0.0) or 0.0, P, what, "'threshold'") != 0
            ):
                raise CheckpointError(
                    P, f"{what}: only a plain ReLU (no max_value, slope or threshold) is supported"
                )
            tr.add(make_layer(self._name("relu", lname, idx), "relu"))
        elif cls == "Activation":
            self._activation(c, what, last)
        elif cls == "Softmax" and last:
            self.output = {"type": "softmax", "axis": -1}
        elif cls == "LSTM":
            self.lstm(idx, c, lname, what)
        else:
            raise CheckpointError(
                P,
                f"{what}: layer class {cls!r} is not supported (Conv2D, pooling, "
                "Flatten, Dense, Dropout, ReLU/Activation, LSTM, TimeDistributed)",
            )

    def lstm(self, idx, c, lname, what):
        P, tr = self.P, self.tracer
        shape = tr.shape
        if not self.time:
            raise CheckpointError(P, f"{what}: the model's input has no time axis")
        if len(shape) != 1:
            raise CheckpointError(
                P, f"{what}: needs a flat input at every step (add a TimeDistributed(Flatten()))"
            )
        if self.lstm_seen and self.sequence_output == "last":
            raise CheckpointError(P, f"{what}: follows an LSTM that returns only its last step")
        for key in ("go_backwards", "return_state", "stateful", "time_major"):
            if c.get(key):
                raise CheckpointError(P, f"{what}: {key}=True is not supported")
        if c.get("recurrent_activation", "sigmoid") != "sigmoid":
            raise CheckpointError(
                P,
                f"{what}: recurrent_activation {show(c.get('recurrent_activation'))} "
                "is not supported (only sigmoid)",
            )
        act = c.get("activation", "tanh")
        if act not in ("tanh", "relu"):
            raise CheckpointError(P, f"{what}: activation {show(act)} is not supported (tanh or relu)")
        if self.cell_act is not None and self.cell_act != act:
            raise CheckpointError(
                P, f"{what}: the file says activation={act!r}, cell_act={self.cell_act!r} was asked"
            )
        units = self._int(c, "units", what)
        bias = bool(c.get("use_bias", True))
        ws = self._arrays(lname, what, 2 + bias, 2 + bias)
        (kn, K), (rn, R) = ws[0], ws[1]
        D = shape[0]
        if tuple(K.shape) != (D, 4 * units) or tuple(R.shape) != (units, 4 * units):
            raise CheckpointError(
                P,
                f"{what}: kernel {tuple(K.shape)} / recurrent_kernel {tuple(R.shape)}, "
                "expected "
                f"{(D, 4 * units)} / {(units, 4 * units)}",
            )
        tr_x = "kernel: column blocks i,f,c,o -> i,f,o,g ([0,1,3,2]), then transpose"
        if self.pending is not None:
            C, H, W = self.pending
            K = K.reshape(H, W, C, 4 * units).transpose(2, 0, 1, 3).reshape(D, 4 * units)
            tr_x = f"kernel rows H,W,C -> C,H,W (reshape({H}, {W}, {C}, 4H)), then " + tr_x[len("kernel: ") :]
            self.pending = None
        b = [ws[2][1]] if bias else []
        if bias and tuple(b[0].shape) != (4 * units,):
            raise CheckpointError(P, f"{what}: bias has shape {tuple(b[0].shape)}, expected {(4 * units,)}")
        name = self._name("lstm", lname, idx)
        tr.add(make_layer(name, "lstm", hidden=units, cell_act=act))
        lp = lstm_params(units, "ifco", W_x=K, W_h=R, b_parts=b, dtype=self.dtype, transposed=True)
        blocks = "column blocks i,f,c,o -> i,f,o,g ([0,1,3,2]), then transpose"
        for field, src, how in (
            ("W_x", kn, tr_x),
            ("W_h", rn, f"recurrent_kernel: {blocks}"),
            ("b", ws[2][0] if bias else "", "bias: blocks [0,1,3,2]" if bias else "zeros (use_bias=False)"),
        ):
            k = f"{name}.{field}"
            self.params[k], self.transforms[k] = lp[field], how
            self.name_map[k] = f"{lname}/{src}" if src else ""
        self.lstm_seen = True
        self.cell = act
        if not c.get("return_sequences", False):
            self.sequence_output = "last"

    def _put(self, name, field, src, src_name, how, *, shape=None, transpose=None, final=None):
        k = f"{name}.{field}"
        a = param(src, dtype=self.dtype, shape=shape, transpose=transpose)
        self.params[k] = a.reshape(final) if final is not None else a
        self.name_map[k], self.transforms[k] = src_name, how

    def _bias(self, name, w, lname, n, what):
        bn, b = w
        if tuple(b.shape) != (n,):
            raise CheckpointError(self.P, f"{what}: bias {bn!r} has shape {tuple(b.shape)}, expected {(n,)}")
        self._put(name, "bias", b, f"{lname}/{bn}", "none")


def _inner(L):
    """``(class name, config, wrapped)``: the layer, or the layer a TimeDistributed wraps."""
    cls = L.get("class_name")
    c = L.get("config") if isinstance(L.get("config"), dict) else {}
    if cls == "TimeDistributed" and isinstance(c.get("layer"), dict):
        inner = c["layer"]
        ic = inner.get("config") if isinstance(inner.get("config"), dict) else {}
        return inner.get("class_name"), ic, True
    return cls, c, False


def convert_keras(
    path,
    *,
    names="auto",
    rename=None,
    preprocessing=None,
    dtype=None,
    input_shape=None,
    input_size=None,
    cell_act=None,
    name=None,
):
    """Convert a Keras model saved with its architecture (see the module docstring).

    Parameters
    ----------
    path : str
        A ``.keras`` archive or a full-model ``.h5`` (``model_config``).
    names : {"auto", "keras"}
        Caffe-style names (``conv1_1``, ``fc6``...) or the Keras layer names.
    rename : dict, optional
    preprocessing : str or dict, optional
        Not recorded in Keras files; None unless given.
    dtype : numpy dtype, optional
    input_shape : tuple, optional
        ``(C, H, W)`` or ``(D,)`` when the config leaves sizes open.
    input_size : int, optional
        ``(C, input_size, input_size)``.
    cell_act : {"tanh", "relu"}, optional
        Must agree with the LSTM's ``activation`` when given.
    name : str, optional
        ``meta["name"]`` (default: the model's name).

    Returns
    -------
    params, meta
        ``meta["keras"]``: ``layout``, ``keras_version``, ``data_format``,
        ``sequence_output`` (``"all"`` or ``"last"``).
    """
    if names not in ("auto", "keras"):
        raise CheckpointError(path, f"names must be 'auto' or 'keras', got {names!r}")
    buf, fmt, config, weights, info = read_keras_model(path)
    P = buf.path
    with interpreting(P, "the model config"):
        layers, config = _chain(config, P)
        if input_shape is None:
            batch = _input_shape(layers, config, P)
        else:
            batch = _input_shape_from(input_shape, layers, config, P)
    has_conv = any(_inner(L)[0] in ("Conv2D", "Convolution2D") for L in layers)
    conv = _Keras(P, weights, names=names, rename=rename, dtype=dtype, cell_act=cell_act, has_conv=has_conv)
    if input_size is not None:
        s = as_int(input_size, P, "input_size", "the size", 1)
        if len(batch) in (4, 5):
            batch = list(batch)
            cf = any(_inner(L)[1].get("data_format") == "channels_first" for L in layers)
            if cf:
                batch[-2:] = [s, s]
            else:
                batch[-3:-1] = [s, s]
    feat = conv.run(layers, batch)
    extra = sorted(k for k, ws in weights.items() if ws and k not in conv.used)
    if extra:
        raise CheckpointError(
            P, f"the file holds weights of layers that are not on the model's chain: {extra[:8]}"
        )
    mconf = config.get("config", {}) if isinstance(config.get("config"), dict) else {}
    stem = os.path.splitext(os.path.basename(P))[0]
    model_name = name or (mconf.get("name") if isinstance(mconf.get("name"), str) else stem)
    has_lstm = conv.lstm_seen
    meta = {
        "name": as_str(model_name, P, "the model config", "'name'"),
        "source": source_info(buf, fmt, "keras"),
        "keras_layout": info["layout"],
        "source_gate_order": "ifco" if has_lstm else None,
        "cell_act": conv.cell if has_lstm else None,
        "preprocessing": preset(preprocessing),
        "output": conv.output,
        "name_map": conv.name_map,
        "transforms": conv.transforms,
        "keras": {
            "layout": info["layout"],
            "keras_version": info["keras_version"],
            "data_format": "channels_first" if conv.channels_first else "channels_last",
            "sequence_output": (conv.sequence_output or "all") if has_lstm else None,
        },
    }
    return finish(conv.params, conv.tracer.layers, feat, meta, P)


def _input_shape_from(input_shape, layers, config, P):
    """A batch shape from ``input_shape`` (engine order) and the config's rank and data format."""
    feat = [as_int(v, P, "input_shape", "a size", 1) for v in input_shape]
    try:
        cfg_batch = _input_shape(layers, config, P)
    except CheckpointError:
        cfg_batch = None
    time = cfg_batch is not None and len(cfg_batch) in (3, 5)
    cf = any(_inner(L)[1].get("data_format") == "channels_first" for L in layers)
    if len(feat) == 3 and not cf:
        feat = [feat[1], feat[2], feat[0]]
    return [None] + ([None] if time else []) + feat
