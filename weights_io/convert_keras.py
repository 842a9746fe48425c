"""Keras HDF5 weights (VGG16 and LSTM layers) -> canonical parameters.

Three layouts are read (with :mod:`weights_io.hdf5`, no h5py):

* **legacy weights file** (Keras 1/2 ``save_weights``, Keras 3's legacy
  saver): root attribute ``layer_names`` (possibly chunked as
  ``layer_names0``, ``layer_names1``...), each layer group's ``weight_names``
  attribute, arrays at ``group[weight_name]`` (e.g.
  ``block1_conv1/block1_conv1_W_1:0`` in the Keras-1 VGG16 file,
  ``block1_conv1/block1_conv1/kernel:0`` in Keras 2);
* **full model** (``model.save("x.h5")``): the same under ``model_weights``,
  plus the architecture JSON in the root attribute ``model_config``;
* **Keras 3** ``.weights.h5``: ``layers/<auto name>/vars/<i>`` with the layer's
  own name in the ``vars`` group's ``name`` attribute (LSTM weights under
  ``layers/<auto>/cell/vars``); layers are matched by that name.
"""

from __future__ import annotations

import json

import numpy

from ._common import as_int, finish, lstm_params, param, show, source_info
from .convert_torch import vgg16_layers
from .errors import CheckpointError
from .hdf5 import H5File, H5Group
from .presets import preset
from .readers import guarded, open_checked
from .spec import make_layer, trace

__all__ = ["read_keras", "convert_keras_vgg16", "convert_keras_lstm", "KERAS_VGG16_MAP"]

KERAS_VGG16_MAP = dict(
    [
        (f"conv{b}_{k}", f"block{b}_conv{k}")
        for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
        for k in range(1, n + 1)
    ]
    + [("fc6", "fc1"), ("fc7", "fc2"), ("fc8", "predictions")]
)


def _str_list(v):
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [str(x) for x in v]
    if getattr(v, "size", 1) == 0:
        return []
    raise CheckpointError(None, f"expected a list of names, found {type(v).__name__}")


def _chunked_attr(attrs, name):
    """Keras splits long name lists into ``name0``, ``name1``... attributes."""
    if name in attrs:
        return _str_list(attrs[name])
    out, k = [], 0
    while f"{name}{k}" in attrs:
        out += _str_list(attrs[f"{name}{k}"])
        k += 1
    return out if k else None


def read_keras(buf):
    """Keras weights of an HDF5 file.

    Returns
    -------
    layers : dict
        ``{layer name: [(weight name, array), ...]}`` in file order, layers
        without weights included (empty lists).
    config : dict or None
        ``{layer name: {"class_name", "config"}}`` from ``model_config`` when present.
    layout : str
        ``"legacy"``, ``"full_model"`` or ``"keras3"``.
    """
    root = H5File(buf).root
    attrs = root.attrs
    config = None
    if "model_config" in attrs and isinstance(attrs["model_config"], str):
        try:
            config = _layer_configs(json.loads(attrs["model_config"]))
        except ValueError:
            raise buf.error("model_config attribute is not valid JSON") from None
    group, layout = root, "legacy"
    names = _chunked_attr(attrs, "layer_names")
    if names is None and "model_weights" in root:
        group, layout = root["model_weights"], "full_model"
        names = _chunked_attr(group.attrs, "layer_names")
    layers = {}
    if names is not None:
        for lname in names:
            g = group[lname]
            wnames = _chunked_attr(g.attrs, "weight_names") or []
            layers[lname] = [(w, g[w].read()) for w in wnames]
        return layers, config, layout
    if "layers" in root:
        _keras3_layers(root["layers"], layers, 0)
        return layers, config, "keras3"
    raise buf.error("not a Keras weights file: no layer_names attribute and no 'layers' group")


def _keras3_layers(group: H5Group, out, depth):
    if depth > 8:
        raise group.file.error("Keras 3 layers nested too deeply")
    for auto in group.members():
        g = group.child(auto)
        if not isinstance(g, H5Group):
            continue
        vars_g = g["vars"] if "vars" in g else None
        name = vars_g.attrs.get("name", auto) if vars_g is not None else auto
        arrays = _vars(vars_g)
        if not arrays and "cell" in g and "vars" in g["cell"]:  # RNN layers keep weights in their cell
            arrays = _vars(g["cell"]["vars"])
        if not arrays and "layer" in g and isinstance(g["layer"], H5Group):  # TimeDistributed's layer
            inner = g["layer"]
            arrays = _vars(inner["vars"]) if "vars" in inner else []
            if not arrays and "cell" in inner and "vars" in inner["cell"]:
                arrays = _vars(inner["cell"]["vars"])
        if "layers" in g:  # a nested model
            _keras3_layers(g["layers"], out, depth + 1)
        if name in out:
            raise g.file.error(f"two Keras layers are named {name!r}")
        out[str(name)] = arrays


def _vars(vars_g):
    if vars_g is None:
        return []
    members = vars_g.members()
    idx = sorted((int(k), k) for k in members if k.isdigit())
    return [(k, vars_g.child(k).read()) for _, k in idx]


def _layer_configs(cfg):
    out = {}

    def rec(c, depth):
        if depth > 16 or not isinstance(c, dict):
            return
        conf = c.get("config", {})
        lays = conf.get("layers") if isinstance(conf, dict) else None
        if isinstance(lays, list):
            for L in lays:
                if isinstance(L, dict):
                    name = L.get("name") or (L.get("config") or {}).get("name")
                    if name:
                        out[str(name)] = L
                    rec(L, depth + 1)

    rec(cfg, 0)
    return out


def _load(path):
    buf, fmt = open_checked(path)
    if fmt != "hdf5":
        raise buf.error(f"expected a Keras HDF5 file, found a {fmt} file")
    layers, config, layout = guarded(buf, fmt, read_keras, buf)
    return buf, layers, config, layout


def _conf(config, name) -> dict:
    """The ``config`` dict of layer ``name`` in ``model_config`` ({} when absent or not a dict)."""
    c = (config or {}).get(name, {}).get("config", {})
    return c if isinstance(c, dict) else {}


def _input_hw(config, default):
    if config:
        for name, L in config.items():
            c = _conf(config, name)
            shp = c.get("batch_shape") or c.get("batch_input_shape")
            if L.get("class_name") == "InputLayer" and isinstance(shp, list) and len(shp) == 4:
                return shp
    return default


def convert_keras_vgg16(path, *, preprocessing="keras_vgg16", dtype=None, input_size=224, strict=True):
    """Convert Keras applications VGG16 weights (with or without the top).

    Name map: ``block{b}_conv{k}`` -> ``conv{b}_{k}``, ``fc1`` -> ``fc6``,
    ``fc2`` -> ``fc7``, ``predictions`` -> ``fc8``.

    Transforms (Keras kernels are HWIO, cross-correlation):

    * conv kernel ``(kH, kW, iC, oC)`` -> ``weight = kernel.transpose(3, 2, 0, 1)`` ``(oC, iC, kH, kW)``;
    * ``fc1`` kernel ``(H*W*C, 4096)``, rows in H, W, C order (Flatten of a
      channels_last map) -> ``weight = kernel.reshape(H, W, C, 4096).transpose(3, 2, 0, 1)
      .reshape(4096, C*H*W)`` (columns in C, H, W order); with a channels_first
      model the rows are already C, H, W and the weight is ``kernel.T``;
    * ``fc2``, ``predictions`` kernel ``(in, out)`` -> ``weight = kernel.T``;
    * biases: none.

    Pools are Keras ``MaxPooling2D`` (valid padding): floor rounding; there are
    no dropout layers in Keras' VGG16. ``predictions`` is followed by a softmax
    (``meta["output"]``).

    Returns
    -------
    params, meta
    """
    buf, klayers, config, layout = _load(path)
    P = buf.path
    shp = _input_hw(config, None)
    channels_first = False
    if config and "block1_conv1" in config:
        channels_first = _conf(config, "block1_conv1").get("data_format") == "channels_first"
    if shp is not None:
        size = (shp[2], shp[3]) if channels_first else (shp[1], shp[2])
        if None in size:
            size = (input_size, input_size)
        size = tuple(as_int(v, P, "model_config InputLayer", "batch_shape", 1) for v in size)
    else:
        size = (input_size, input_size)
    include_top = "predictions" in klayers
    num_classes = None
    if include_top:
        arrs = [a for _, a in klayers["predictions"] if a.ndim == 2]
        if len(arrs) != 1:
            raise CheckpointError(P, "layer 'predictions': expected one 2-d kernel")
        num_classes = int(arrs[0].shape[1])

    def out_dim(kname):
        if kname not in klayers:
            raise CheckpointError(P, f"Keras layer {kname!r} is missing")
        ks = [a for _, a in klayers[kname] if a.ndim >= 2]
        if len(ks) != 1:
            raise CheckpointError(P, f"Keras layer {kname!r}: expected one kernel, found {len(ks)}")
        return int(ks[0].shape[-1])

    widths = [out_dim(KERAS_VGG16_MAP[c]) for c in KERAS_VGG16_MAP if c.startswith("conv")]
    fc_sizes = [out_dim("fc1"), out_dim("fc2")] if include_top else None
    layers = vgg16_layers(
        num_classes or 0,
        ceil_mode=False,
        dropout=False,
        include_top=include_top,
        widths=widths,
        fc_sizes=fc_sizes,
    )
    input_shape = (3, int(size[0]), int(size[1]))
    shapes, expect = trace(layers, input_shape, P)
    lnames = [L["name"] for L in layers]
    C5, H5, W5 = shapes[lnames.index("pool5")]
    params, name_map, transforms = {}, {}, {}
    for canon, kname in KERAS_VGG16_MAP.items():
        if canon.startswith("fc") and not include_top:
            continue
        if kname not in klayers:
            raise CheckpointError(P, f"Keras layer {kname!r} (for {canon}) is missing")
        ws = klayers[kname]
        kern = [(n, a) for n, a in ws if a.ndim >= 2]
        bias = [(n, a) for n, a in ws if a.ndim == 1]
        if len(ws) != 2 or len(kern) != 1 or len(bias) != 1:
            raise CheckpointError(
                P,
                f"Keras layer {kname!r}: expected a kernel and a bias, found "
                f"{[(n, tuple(a.shape)) for n, a in ws]}",
            )
        (kn, K), (bn, b) = kern[0], bias[0]
        wk, bk = f"{canon}.weight", f"{canon}.bias"
        out_c, rest = expect[wk][0], expect[wk][1:]
        if canon.startswith("conv"):
            want = (rest[1], rest[2], rest[0], out_c)
            tr = "kernel (kH, kW, iC, oC) -> transpose(3, 2, 0, 1)"
            args = {"transpose": (3, 2, 0, 1)}
        elif canon == "fc6" and not channels_first:
            want = (H5 * W5 * C5, out_c)
            tr = (
                f"kernel rows H,W,C -> reshape({H5}, {W5}, {C5}, {out_c}).transpose(3, 2, 0, 1)"
                f".reshape({out_c}, {C5 * H5 * W5})"
            )
            args = None
        else:
            want = (rest[0], out_c)
            tr = "kernel (in, out) -> transpose"
            args = {"transpose": (1, 0)}
        if tuple(K.shape) != want:
            raise CheckpointError(
                P, f"Keras weight {kname}/{kn} (for {wk}): expected shape {want}, found {tuple(K.shape)}"
            )
        if args is None:
            params[wk] = param(K, dtype=dtype, shape=(H5, W5, C5, out_c), transpose=(3, 2, 0, 1)).reshape(
                expect[wk]
            )
        else:
            params[wk] = param(K, dtype=dtype, **args)
        if tuple(b.shape) != expect[bk]:
            raise CheckpointError(
                P,
                f"Keras weight {kname}/{bn} (for {bk}): expected shape {expect[bk]}, found {tuple(b.shape)}",
            )
        params[bk] = param(b, dtype=dtype)
        name_map[wk], name_map[bk] = f"{kname}/{kn}", f"{kname}/{bn}"
        transforms[wk], transforms[bk] = tr, "none"
    used = set(KERAS_VGG16_MAP.values())
    extra = sorted(k for k, ws in klayers.items() if ws and k not in used)
    if extra and strict:
        raise CheckpointError(P, f"Keras layers with weights that VGG16 does not have: {extra}")
    meta = {
        "name": "vgg16",
        "source": source_info(buf, "hdf5", "keras_vgg16"),
        "keras_layout": layout,
        "preprocessing": preset(preprocessing),
        "output": {"type": "softmax", "axis": -1} if include_top else None,
        "name_map": name_map,
        "transforms": transforms,
        "ignored_weights": extra,
    }
    return finish(params, layers, input_shape, meta, P)


_KERAS1_ORDER = (
    "i",
    "c",
    "f",
    "o",
)  # Keras 1 stored W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f, W_o, U_o, b_o


def convert_keras_lstm(path, *, layer=None, name="lstm1", cell_act=None, dtype=None):
    """Convert one Keras ``LSTM`` layer.

    Keras stores ``kernel (D, 4H)``, ``recurrent_kernel (H, 4H)``, ``bias (4H)``
    with gate columns i, f, c, o (``c`` = candidate = ``g``). Transforms
    (canonical blocks i, f, o, g = Keras column blocks [0, 1, 3, 2]):

    * ``W_x = kernel[:, blocks].T`` (column-block permutation, then transpose),
    * ``W_h = recurrent_kernel[:, blocks].T``,
    * ``b = bias[blocks]`` (zeros with ``use_bias=False``).

    Keras-1 files with 12 arrays (``W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f,
    W_o, U_o, b_o``, each ``(D, H)``, ``(H, H)``, ``(H,)``) give
    ``W_x = [W_i.T; W_f.T; W_o.T; W_c.T]`` and likewise for ``U`` and ``b``.

    Parameters
    ----------
    path : str
    layer : str, optional
        The Keras layer name (default: the only LSTM in the file).
    name : str
        Canonical layer name.
    cell_act : {"tanh", "relu"}, optional
        Default: the layer config's ``activation`` when the file has a
        ``model_config``, else ``"tanh"``. ``recurrent_activation`` must be
        sigmoid.
    dtype : numpy dtype, optional

    Returns
    -------
    params, meta
    """
    buf, klayers, config, layout = _load(path)
    P = buf.path
    cands = []
    for lname, ws in klayers.items():
        if config and lname in config:
            if config[lname].get("class_name") == "LSTM":
                cands.append(lname)
        elif len(ws) in (2, 3, 12) and (
            len(ws) == 12
            or (ws[0][1].ndim == 2 and ws[1][1].ndim == 2 and ws[1][1].shape[1] == 4 * ws[1][1].shape[0])
        ):
            cands.append(lname)
    if layer is None:
        if len(cands) != 1:
            raise CheckpointError(P, f"expected exactly one LSTM layer, found {cands}; pass layer=")
        layer = cands[0]
    if layer not in klayers:
        raise CheckpointError(P, f"Keras layer {layer!r} not found (layers: {list(klayers)})")
    conf = _conf(config, layer)
    act = conf.get("activation", None)
    if act is not None and not isinstance(act, str):
        raise CheckpointError(
            P, f"layer {layer!r}: model_config activation must be a string, found {show(act)}"
        )
    if conf.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise CheckpointError(
            P,
            f"layer {layer!r}: recurrent_activation {conf['recurrent_activation']!r} is not "
            "supported (only sigmoid)",
        )
    if conf.get("go_backwards", False):
        raise CheckpointError(P, f"layer {layer!r}: go_backwards is not supported")
    if cell_act is None:
        cell_act = act or "tanh"
    elif act is not None and act != cell_act:
        raise CheckpointError(
            P, f"layer {layer!r}: the file says activation={act!r}, cell_act={cell_act!r} was asked"
        )
    if cell_act not in ("tanh", "relu"):
        raise CheckpointError(P, f"layer {layer!r}: activation {cell_act!r} is not supported (tanh or relu)")
    ws = klayers[layer]
    if len(ws) == 12:
        arr = {
            f"{kind}_{g}": ws[3 * j + m][1]
            for j, g in enumerate(_KERAS1_ORDER)
            for m, kind in enumerate(("W", "U", "b"))
        }
        if arr["W_i"].ndim != 2:
            raise CheckpointError(P, f"layer {layer!r}: W_i has shape {arr['W_i'].shape}, expected (D, H)")
        D, H = arr["W_i"].shape
        want = {"W": (D, H), "U": (H, H), "b": (H,)}
        for k, a in arr.items():
            if tuple(a.shape) != want[k[0]]:
                raise CheckpointError(
                    P, f"layer {layer!r}: Keras 1 array {k} has shape {tuple(a.shape)}, expected {want[k[0]]}"
                )
        dt = numpy.dtype(dtype) if dtype is not None else arr["W_i"].dtype
        W_x = numpy.empty((4 * H, D), dt)
        W_h = numpy.empty((4 * H, H), dt)
        b = numpy.empty((4 * H,), dt)
        for k, g in enumerate("ifoc"):
            for src, dst, _kind in (
                (arr[f"W_{g}"].T, W_x, "W"),
                (arr[f"U_{g}"].T, W_h, "U"),
                (arr[f"b_{g}"], b, "b"),
            ):
                dst[k * H : (k + 1) * H] = src
        lp = {"W_x": W_x, "W_h": W_h, "b": b}
        tr = {
            "W_x": "[W_i.T; W_f.T; W_o.T; W_c.T] (Keras 1: 12 arrays)",
            "W_h": "[U_i.T; U_f.T; U_o.T; U_c.T]",
            "b": "[b_i; b_f; b_o; b_c]",
        }
        src_names = {"W_x": f"{layer}/W_*", "W_h": f"{layer}/U_*", "b": f"{layer}/b_*"}
        input_shape = (D,)
    else:
        if len(ws) not in (2, 3):
            raise CheckpointError(
                P, f"layer {layer!r}: expected kernel, recurrent_kernel[, bias], found {len(ws)} arrays"
            )
        (kn, K), (rn, R) = ws[0], ws[1]
        if R.ndim != 2 or R.shape[1] != 4 * R.shape[0] or K.ndim != 2 or K.shape[1] != R.shape[1]:
            raise CheckpointError(
                P,
                f"layer {layer!r}: kernel {tuple(K.shape)} / recurrent_kernel {tuple(R.shape)} "
                "are not (D, 4H) / (H, 4H)",
            )
        H = int(R.shape[0])
        bias = []
        if len(ws) == 3:
            if tuple(ws[2][1].shape) != (4 * H,):
                raise CheckpointError(
                    P, f"layer {layer!r}: bias shape {tuple(ws[2][1].shape)}, expected {(4 * H,)}"
                )
            bias = [ws[2][1]]
        lp = lstm_params(H, "ifco", W_x=K, W_h=R, b_parts=bias, dtype=dtype, transposed=True)
        blocks = "column blocks i,f,c,o -> i,f,o,g ([0,1,3,2]), then transpose"
        tr = {
            "W_x": f"kernel: {blocks}",
            "W_h": f"recurrent_kernel: {blocks}",
            "b": "bias: blocks [0,1,3,2]" if bias else "zeros (use_bias=False)",
        }
        src_names = {
            "W_x": f"{layer}/{kn}",
            "W_h": f"{layer}/{rn}",
            "b": f"{layer}/{ws[2][0]}" if bias else "",
        }
        input_shape = (int(K.shape[0]),)
    layers = [make_layer(name, "lstm", hidden=H, cell_act=cell_act)]
    params = {f"{name}.{k}": v for k, v in lp.items()}
    meta = {
        "name": "lstm",
        "source": source_info(buf, "hdf5", "keras_lstm"),
        "keras_layout": layout,
        "source_gate_order": "ifco",
        "cell_act": cell_act,
        "preprocessing": None,
        "output": None,
        "name_map": {f"{name}.{k}": v for k, v in src_names.items()},
        "transforms": {f"{name}.{k}": v for k, v in tr.items()},
    }
    return finish(params, layers, input_shape, meta, P)
