"""Caffe ``.prototxt`` + ``.caffemodel`` (or ``.caffemodel.h5``) -> canonical parameters.

The architecture and every hyper-parameter come from the prototxt (text format
is name-based, so it reads the same in every fork: BVLC, LRCN's
``recurrent_param`` = 134, S2VT's = 140); from the binary only layer names,
types and blobs are taken (the field numbers every fork shares). Weights are
matched to layers by name, as Caffe's ``CopyTrainedLayersFrom`` does.

Supported layer types (V2 names; V1 enums and V0 strings are upgraded):
Convolution, InnerProduct, Pooling (MAX, AVE), ReLU (no negative slope), LRN
(ACROSS_CHANNELS), Dropout, Flatten, LSTM, a Reshape that turns per-frame
features into a time-major sequence in front of an LSTM, Reshape/Split of the
clip-marker input, a final Softmax (recorded as ``meta["output"]``); data
layers (Input, DummyData, Data, ImageData, HDF5Data, MemoryData, Python) give
the input shape; loss, Accuracy and Silence layers are skipped. Anything else
raises CheckpointError naming the layer and type.

Transforms, per blob (each tensor is copied exactly once):

* Convolution ``blobs[0]`` -> ``<name>.weight`` ``(oC, iC/group, kH, kW)``:
  none (reshape only, legacy 4-d dims are the same shape); ``blobs[1]`` ->
  ``<name>.bias`` ``(oC,)``: legacy ``(1, 1, 1, oC)`` reshaped.
* InnerProduct ``blobs[0]`` -> ``<name>.weight`` ``(out, in)``: legacy
  ``(1, 1, out, in)`` reshaped; with ``transpose: true`` the blob is
  ``(in, out)`` and is **transposed**. ``in`` is flattened in C, H, W order,
  as Caffe does, so VGG's ``fc6`` needs no permutation. ``blobs[1]`` -> bias.
* LSTM ``blobs = [W_xc (4H, D), b_c (4H), (W_xc_static (4H, D_s)), W_hc (4H, H)]``
  -> ``<name>.W_x``, ``<name>.b``, (``<name>.W_s``), ``<name>.W_h``: none; Caffe's
  gate order i, f, o, g is the canonical order.

Legacy blob shapes (num, channels, height, width) are compared right-aligned
with the expected shape, as Caffe's ``LegacyShape`` check does; blobs with a
``shape`` must match exactly. ``double_data`` is used when present (float64).
"""

from __future__ import annotations

from ._buffer import open_buffer, read_text
from ._common import as_float, as_int, as_str, finish, interpreting, lstm_params, param, show, source_info
from .caffe_binary import V0_TYPES, V1_TYPE_NAMES, V1_TYPES, read_caffemodel
from .errors import CheckpointError
from .hdf5 import H5File
from .presets import preset
from .prototxt import Message, parse_prototxt
from .readers import guarded, open_checked
from .spec import Tracer, make_layer

__all__ = ["convert_caffe", "caffe_layers_from_prototxt", "DEFAULT_RENAME"]

# Caffe layer names that differ from ebr_ref's canonical names.
DEFAULT_RENAME = {"fc8-final": "fc8"}

_DATA_TYPES = {
    "Input",
    "DummyData",
    "Data",
    "ImageData",
    "HDF5Data",
    "MemoryData",
    "Python",
    "WindowData",
    "VideoData",
}
_SKIP_TYPES = {
    "EuclideanLoss",
    "SoftmaxWithLoss",
    "SoftmaxLoss",
    "Accuracy",
    "Silence",
    "HingeLoss",
    "SigmoidCrossEntropyLoss",
    "MultinomialLogisticLoss",
    "InfogainLoss",
    "ContrastiveLoss",
}
_SUPPORTED = (
    "Convolution",
    "InnerProduct",
    "Pooling",
    "ReLU",
    "LRN",
    "Dropout",
    "Flatten",
    "LSTM",
    "Reshape",
    "Softmax",
)


class _PLayer:
    """A prototxt layer normalised to V2 names."""

    def __init__(self, name, type, bottoms, tops, msg, version):
        self.name, self.type, self.bottoms, self.tops, self.msg, self.version = (
            name,
            type,
            bottoms,
            tops,
            msg,
            version,
        )


def _phase_ok(msg: Message) -> bool:
    """Layer included in the TEST phase (deploy)?"""
    inc, exc = msg.getall("include"), msg.getall("exclude")
    if inc:
        return any(r.get1("phase", "TEST") in ("TEST", 1) for r in inc if isinstance(r, Message))
    if exc:
        return not any(r.get1("phase") in ("TEST", 1) for r in exc if isinstance(r, Message))
    return True


def _names(msg: Message, field, path, what) -> list:
    return [as_str(v, path, what, field) for v in msg.getall(field)]


def caffe_layers_from_prototxt(net: Message, path=None):
    """The TEST-phase layers of a parsed prototxt, V0/V1/V2 normalised to V2 type names.

    Layer names, types, bottoms and tops must be strings (V1 types: an enum
    name or number); anything else is a CheckpointError naming the field.

    Returns
    -------
    list of _PLayer
    """
    out = []
    for k, msg in enumerate(net.getall("layer")):
        if isinstance(msg, Message) and _phase_ok(msg):
            what = f"layer #{k}"
            name = as_str(msg.get1("name", ""), path, what, "name")
            what = f"layer {name!r}"
            out.append(
                _PLayer(
                    name,
                    as_str(msg.get1("type", ""), path, what, "type"),
                    _names(msg, "bottom", path, what),
                    _names(msg, "top", path, what),
                    msg,
                    2,
                )
            )
    for k, msg in enumerate(net.getall("layers")):
        if not isinstance(msg, Message) or not _phase_ok(msg):
            continue
        v0 = msg.get1("layer")
        what = f"layers #{k}"
        if isinstance(v0, Message):  # V0: parameters inside the nested layer
            t0 = as_str(v0.get1("type", ""), path, what, "type")
            name = as_str(v0.get1("name", msg.get1("name", "")), path, what, "name")
            what = f"layer {name!r}"
            out.append(
                _PLayer(
                    name,
                    V0_TYPES.get(t0, t0),
                    _names(msg, "bottom", path, what),
                    _names(msg, "top", path, what),
                    _v0_to_v2(v0, V0_TYPES.get(t0, t0)),
                    0,
                )
            )
            continue
        name = as_str(msg.get1("name", ""), path, what, "name")
        what = f"layer {name!r}"
        t = msg.get1("type", "")
        if isinstance(t, int) and not isinstance(t, bool):
            t = V1_TYPES.get(t, str(t))
        else:
            t = as_str(t, path, what, "type")
            t = V1_TYPE_NAMES.get(t, t)
        bottoms, tops = _names(msg, "bottom", path, what), _names(msg, "top", path, what)
        out.append(_PLayer(name, t, bottoms, tops, msg, 1))
    return out


def _v0_to_v2(v0: Message, typ: str) -> Message:
    """Move V0's flat hyper-parameters into the V2 ``*_param`` sub-messages (upgrade_proto.cpp)."""
    m = Message()
    g = v0.get1
    if typ == "Convolution":
        p = Message()
        for src, dst in (
            ("num_output", "num_output"),
            ("biasterm", "bias_term"),
            ("kernelsize", "kernel_size"),
            ("pad", "pad"),
            ("stride", "stride"),
            ("group", "group"),
        ):
            if g(src) is not None:
                p[dst] = [g(src)]
        m["convolution_param"] = [p]
    elif typ == "InnerProduct":
        p = Message()
        for src, dst in (("num_output", "num_output"), ("biasterm", "bias_term")):
            if g(src) is not None:
                p[dst] = [g(src)]
        m["inner_product_param"] = [p]
    elif typ == "Pooling":
        p = Message()
        for src, dst in (
            ("pool", "pool"),
            ("kernelsize", "kernel_size"),
            ("stride", "stride"),
            ("pad", "pad"),
        ):
            if g(src) is not None:
                p[dst] = [g(src)]
        m["pooling_param"] = [p]
    elif typ == "Dropout":
        m["dropout_param"] = [Message(dropout_ratio=[g("dropout_ratio", 0.5)])]
    elif typ == "LRN":
        p = Message()
        for src, dst in (("local_size", "local_size"), ("alpha", "alpha"), ("beta", "beta"), ("k", "k")):
            if g(src) is not None:
                p[dst] = [g(src)]
        m["lrn_param"] = [p]
    return m


def _bool(v, what, path, field="value") -> bool:
    """A text-format bool (``true``, ``false``, ``True``, ``t``, ``f``, ``1``, ``0``)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v in ("t", "f"):
        return v == "t"
    raise CheckpointError(path, f"{what}: {field} must be a bool, found {show(v)}")


_INT32 = (1 << 31) - 1


def _int(p: Message, key, default, what, path, lo=0, hi=_INT32) -> int:
    """An integer field of ``p`` (the last value), checked against ``[lo, hi]``."""
    return as_int(p.get1(key, default), path, what, key, lo, hi)


def _float(p: Message, key, default, what, path) -> float:
    return as_float(p.get1(key, default), path, what, key)


def _enum(p: Message, key, default, what, path):
    """An enum field: its name (a bare identifier or string) or number."""
    v = p.get1(key, default)
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise CheckpointError(path, f"{what}: {key} must be an enum name or number, found {show(v)}")
    return v


def _sub(layer: _PLayer, key) -> Message:
    v = layer.msg.get1(key)
    return v if isinstance(v, Message) else Message()


def _dims(shape_msg, path=None, what="shape", lo=-1) -> list:
    """The ``dim`` values of a BlobShape message (int64; ``lo`` = -1 admits Reshape's inferred axis)."""
    if shape_msg is None:
        return []
    if not isinstance(shape_msg, Message):
        raise CheckpointError(
            path, f"{what}: expected a shape message {{ dim: ... }}, found {show(shape_msg)}"
        )
    return [as_int(d, path, what, "dim", lo) for d in shape_msg.getall("dim")]


def _hw(p: Message, base: str, default, what, path):
    """Caffe's repeated ``kernel_size``/``pad``/``stride``/``dilation`` or the ``*_h``/``*_w`` pair."""
    lo = 0 if base == "pad" else 1
    h, w = p.get1(f"{base}_h"), p.get1(f"{base}_w")
    if h is not None or w is not None:
        if h is None or w is None:
            raise CheckpointError(path, f"{what}: {base}_h and {base}_w must be given together")
        return [
            as_int(h, path, what, f"{base}_h", lo, _INT32),
            as_int(w, path, what, f"{base}_w", lo, _INT32),
        ]
    key = {"kernel": "kernel_size", "pad": "pad", "stride": "stride", "dilation": "dilation"}[base]
    vals = [as_int(v, path, what, key, lo, _INT32) for v in p.getall(key)]
    if not vals:
        if default is None:
            raise CheckpointError(path, f"{what}: {key} is not set")
        return [default, default]
    if len(vals) == 1:
        return [vals[0], vals[0]]
    if len(vals) == 2:
        return vals
    raise CheckpointError(path, f"{what}: {key} has {len(vals)} values; only 2-d layers are supported")


def _net_inputs(net: Message, layers, path):
    """``{blob name: dims}`` declared by the net's inputs and data layers."""
    shapes = {}
    names = [as_str(n, path, "net", "input") for n in net.getall("input")]
    dims = [as_int(d, path, "net", "input_dim") for d in net.getall("input_dim")]
    in_shapes = net.getall("input_shape")
    for i, n in enumerate(names):
        if i < len(in_shapes):
            shapes[n] = _dims(in_shapes[i], path, f"input_shape of {n!r}", 0)
        elif len(dims) >= 4 * (i + 1):
            shapes[n] = dims[4 * i : 4 * i + 4]
        else:
            shapes[n] = []
    for L in layers:
        if L.type not in _DATA_TYPES:
            continue
        if L.type == "Input":
            ss = _sub(L, "input_param").getall("shape")
        elif L.type == "DummyData":
            p = _sub(L, "dummy_data_param")
            ss = p.getall("shape")
            if not ss and p.getall("num"):
                ss = [
                    Message(
                        dim=[
                            p.getall(k)[i] if i < len(p.getall(k)) else 1
                            for k in ("num", "channels", "height", "width")
                        ]
                    )
                    for i in range(len(p.getall("num")))
                ]
        else:
            ss = []
        for i, top in enumerate(L.tops):
            shapes[top] = _dims(
                ss[i] if i < len(ss) else (ss[0] if len(ss) == 1 else None),
                path,
                f"layer {L.name!r} ({L.type}) shape",
                0,
            )
    return shapes


def _read_weights(path, strict_fmt=None):
    """``{layer name: (type, blobs, legacy flags)}`` from a .caffemodel or a Caffe HDF5 snapshot."""
    buf, fmt = open_checked(path, strict_fmt)
    if fmt == "caffe":
        _, layers = guarded(buf, fmt, read_caffemodel, buf)
        out = {}
        for L in layers:
            if L.name in out and out[L.name][1] and L.blobs:
                raise buf.error(f"two layers named {L.name!r} both hold weights")
            if L.blobs or L.name not in out:
                out[L.name] = (L.type, L.blobs, L.legacy)
        return buf, fmt, out
    if fmt == "hdf5":

        def read_h5():
            root = H5File(buf).root
            if "data" not in root:
                raise buf.error("an HDF5 file without a '/data' group is not a Caffe snapshot")
            data = root["data"]
            out = {}
            for lname in data.members():
                g = data.child(lname)
                blobs = {}
                for bname in g.members():
                    if not bname.isdigit():
                        raise buf.error(
                            f"Caffe snapshot layer {lname!r}: blob name {bname!r} is not an index"
                        )
                    blobs[int(bname)] = g.child(bname).read()
                if sorted(blobs) != list(range(len(blobs))):
                    raise buf.error(f"Caffe snapshot layer {lname!r}: blob indices {sorted(blobs)} have gaps")
                out[lname] = ("", [blobs[i] for i in range(len(blobs))], [False] * len(blobs))
            return out

        return buf, "caffe_h5", guarded(buf, "hdf5", read_h5)
    raise buf.error(f"expected a Caffe .caffemodel or .caffemodel.h5, found a {fmt} file")


def _blob(buf, lname, blobs, legacy, i, expected, role):
    if i >= len(blobs):
        raise buf.error(f"layer {lname!r}: blob {i} ({role}) is missing (the layer has {len(blobs)} blobs)")
    b = blobs[i]
    found = tuple(b.shape)
    if legacy[i] and len(expected) <= 4:
        want = (1,) * (4 - len(expected)) + tuple(expected)
    else:
        want = tuple(expected)
    if found != want:
        raise buf.error(
            f"layer {lname!r} blob {i} ({role}): expected shape {tuple(expected)}"
            f"{' (legacy ' + str(want) + ')' if want != tuple(expected) else ''}, found {found}"
        )
    return b.reshape(expected)


def convert_caffe(
    path,
    *,
    prototxt,
    rename=None,
    cell_act="relu",
    preprocessing=None,
    strict=True,
    dtype=None,
    input_shape=None,
):
    """Convert a Caffe net (prototxt + weights) into canonical parameters.

    Parameters
    ----------
    path : str
        ``.caffemodel`` (binary NetParameter, V0/V1/V2 layers) or
        ``.caffemodel.h5`` (``/data/<layer>/<i>``).
    prototxt : str
        The deploy prototxt (architecture and hyper-parameters).
    rename : dict, optional
        Caffe layer name -> canonical name; default ``DEFAULT_RENAME``
        (``fc8-final`` -> ``fc8``, the released VGG16_LSTM's classifier).
    cell_act : {"relu", "tanh"}
        The LSTM cell nonlinearity. Caffe stores no such setting: the released
        EB-RNN model (sbargal/Caffe-ExcitationBP-RNNs) uses ReLU, stock BVLC
        Caffe tanh.
    preprocessing : str or dict, optional
        Default: ``"lrcn"`` (BGR mean 103.939, 116.779, 128.68) for nets with an
        LSTM (LRCN and the released VGG16_LSTM), ``"caffe_vgg16"`` otherwise.
    strict : bool
        Refuse weights of layers that the prototxt does not use (Caffe ignores
        them silently); with False they are listed in ``meta["ignored_weights"]``.
    dtype : numpy dtype, optional
        Parameter dtype (default: the blobs' dtype, float32 or float64).
    input_shape : tuple, optional
        ``(C, H, W)`` when the prototxt declares no input shape.

    Returns
    -------
    params : dict
    meta : dict
        See docs/weights_io.md.
    """
    rename = dict(DEFAULT_RENAME if rename is None else rename)
    text = read_text(prototxt, "prototxt")  # a regular file only (a FIFO would block open())
    net = parse_prototxt(text, prototxt)
    players = caffe_layers_from_prototxt(net, prototxt)
    buf, wfmt, weights = _read_weights(path)
    P = prototxt

    # input blob and shape
    inputs = _net_inputs(net, players, P)
    compute = [L for L in players if L.type not in _DATA_TYPES]
    if not any(L.type in ("Convolution", "InnerProduct", "LSTM") for L in compute):
        raise CheckpointError(P, "the prototxt has no Convolution, InnerProduct or LSTM layer")
    if "data" in inputs:
        data_blob = "data"
    else:
        first = next((L for L in compute if L.type not in _SKIP_TYPES and L.bottoms), None)
        data_blob = first.bottoms[0] if first is not None else None
    if input_shape is None:
        dims = inputs.get(data_blob)
        if not dims or len(dims) < 2:
            raise CheckpointError(
                P, f"no shape is declared for the input blob {data_blob!r}; pass input_shape=(C, H, W)"
            )
        input_shape = tuple(dims[1:])
    input_shape = tuple(int(d) for d in input_shape)
    side = {b for b in inputs if b != data_blob}  # clip markers and other secondary inputs

    tracer = Tracer(input_shape, P)  # traces each layer once (a chain of n layers in linear time)
    layers = tracer.layers
    params, name_map, transforms, skipped, used = {}, {}, {}, [], set()
    cur, n_batch_axes, sequence, output = data_blob, 1, None, None
    dt = dtype

    def nm(caffe_name):
        return rename.get(caffe_name, caffe_name)

    def add(spec_layer):
        return tracer.add(spec_layer)

    def weights_of(L):
        if L.name not in weights:
            raise buf.error(f"layer {L.name!r} ({L.type}) of the prototxt has no weights in this file")
        wtype, blobs, legacy = weights[L.name]
        if wtype and wtype != L.type:
            raise buf.error(f"layer {L.name!r} is a {L.type} in the prototxt but a {wtype} in the weights")
        if L.name in used:  # two prototxt layers of one name: each copies the same weights
            buf.charge(sum(int(b.nbytes) for b in blobs), f"layer {L.name!r} (weights used again)")
        used.add(L.name)
        return blobs, legacy

    for idx, L in enumerate(compute):
        what = f"layer {L.name!r} ({L.type})"
        if L.type in _SKIP_TYPES:
            skipped.append(L.name)
            continue
        if L.bottoms and L.bottoms[0] in side:
            if L.type in ("Reshape", "Split", "Flatten"):
                side.update(L.tops)
                skipped.append(L.name)
                continue
            raise CheckpointError(
                P, f"{what}: only Reshape/Split may act on the secondary input {L.bottoms[0]!r}"
            )
        if output is not None:
            raise CheckpointError(P, f"{what}: layers after the final Softmax are not supported")
        if not L.bottoms or L.bottoms[0] != cur:
            raise CheckpointError(
                P,
                f"{what}: reads blob {L.bottoms[:1]} but the previous output is {cur!r}; "
                "only linear chains of layers are supported",
            )
        if len(L.tops) != 1:
            raise CheckpointError(P, f"{what}: has {len(L.tops)} tops; expected 1")
        with interpreting(P, what):
            cur_shape = tracer.shape
            name = nm(L.name)
            if L.type == "Convolution":
                p = _sub(L, "convolution_param")
                if _int(p, "axis", 1, what, P, -_INT32) != 1:
                    raise CheckpointError(P, f"{what}: convolution axis {p.get1('axis')} is not supported")
                spec = make_layer(
                    name,
                    "conv",
                    out_channels=_int(p, "num_output", 0, what, P),
                    kernel=_hw(p, "kernel", None, what, P),
                    stride=_hw(p, "stride", 1, what, P),
                    padding=_hw(p, "pad", 0, what, P),
                    dilation=_hw(p, "dilation", 1, what, P),
                    groups=_int(p, "group", 1, what, P, 1),
                    bias=_bool(p.get1("bias_term", True), what, P, "bias_term"),
                )
                _, expect = add(spec)
                blobs, legacy = weights_of(L)
                nb = 2 if spec["bias"] else 1
                if len(blobs) != nb:
                    raise buf.error(
                        f"{what}: expected {nb} blobs (weight{', bias' if nb == 2 else ''}), "
                        f"found {len(blobs)}"
                    )
                w = f"{name}.weight"
                params[w] = param(_blob(buf, L.name, blobs, legacy, 0, expect[w], "weight"), dtype=dt)
                name_map[w], transforms[w] = f"{L.name}/0", "none"
                if nb == 2:
                    b = f"{name}.bias"
                    params[b] = param(_blob(buf, L.name, blobs, legacy, 1, expect[b], "bias"), dtype=dt)
                    name_map[b], transforms[b] = f"{L.name}/1", "none"
            elif L.type == "InnerProduct":
                p = _sub(L, "inner_product_param")
                axis = _int(p, "axis", 1, what, P, -_INT32)
                if axis != n_batch_axes:
                    raise CheckpointError(
                        P,
                        f"{what}: axis {axis} is not supported here (expected "
                        f"{n_batch_axes}: the layer must act on whole samples or time "
                        "steps)",
                    )
                if len(cur_shape) > 1:
                    fl = "flatten" if "flatten" not in tracer.names else f"{name}_flatten"
                    add(make_layer(fl, "flatten"))
                spec = make_layer(
                    name,
                    "fc",
                    out_features=_int(p, "num_output", 0, what, P),
                    bias=_bool(p.get1("bias_term", True), what, P, "bias_term"),
                )
                _, expect = add(spec)
                blobs, legacy = weights_of(L)
                nb = 2 if spec["bias"] else 1
                if len(blobs) != nb:
                    raise buf.error(f"{what}: expected {nb} blobs, found {len(blobs)}")
                w = f"{name}.weight"
                if _bool(p.get1("transpose", False), what, P, "transpose"):
                    out_f, in_f = expect[w]
                    src = _blob(buf, L.name, blobs, legacy, 0, (in_f, out_f), "weight (transposed)")
                    params[w] = param(src, dtype=dt, transpose=(1, 0))
                    transforms[w] = "transpose (in, out) -> (out, in) [transpose: true]"
                else:
                    params[w] = param(_blob(buf, L.name, blobs, legacy, 0, expect[w], "weight"), dtype=dt)
                    transforms[w] = "none"
                name_map[w] = f"{L.name}/0"
                if nb == 2:
                    b = f"{name}.bias"
                    params[b] = param(_blob(buf, L.name, blobs, legacy, 1, expect[b], "bias"), dtype=dt)
                    name_map[b], transforms[b] = f"{L.name}/1", "none"
            elif L.type == "Pooling":
                p = _sub(L, "pooling_param")
                pool = _enum(p, "pool", "MAX", what, P)
                kind = {"MAX": "maxpool", 0: "maxpool", "AVE": "avgpool", 1: "avgpool"}.get(pool)
                if kind is None:
                    raise CheckpointError(P, f"{what}: pool method {pool!r} is not supported (MAX, AVE)")
                ceil = _enum(p, "round_mode", "CEIL", what, P) in ("CEIL", 0)
                if _bool(p.get1("global_pooling", False), what, P, "global_pooling"):
                    if len(cur_shape) != 3:
                        raise CheckpointError(
                            P, f"{what}: global pooling needs a (C, H, W) input, got {cur_shape}"
                        )
                    k, s, pad = [cur_shape[1], cur_shape[2]], [1, 1], [0, 0]
                else:
                    k, s = _hw(p, "kernel", None, what, P), _hw(p, "stride", 1, what, P)
                    pad = _hw(p, "pad", 0, what, P)
                extra = {"count_include_pad": True} if kind == "avgpool" else {}
                add(make_layer(name, kind, kernel=k, stride=s, padding=pad, ceil_mode=ceil, **extra))
            elif L.type == "ReLU":
                if _float(_sub(L, "relu_param"), "negative_slope", 0.0, what, P) != 0.0:
                    raise CheckpointError(P, f"{what}: leaky ReLU (negative_slope) is not supported")
                add(make_layer(name, "relu"))
            elif L.type == "LRN":
                p = _sub(L, "lrn_param")
                if _enum(p, "norm_region", "ACROSS_CHANNELS", what, P) not in ("ACROSS_CHANNELS", 0):
                    raise CheckpointError(P, f"{what}: WITHIN_CHANNEL LRN is not supported")
                add(
                    make_layer(
                        name,
                        "lrn",
                        size=_int(p, "local_size", 5, what, P, 1),
                        alpha=_float(p, "alpha", 1.0, what, P),
                        beta=_float(p, "beta", 0.75, what, P),
                        k=_float(p, "k", 1.0, what, P),
                    )
                )
            elif L.type == "Dropout":
                ratio = _float(_sub(L, "dropout_param"), "dropout_ratio", 0.5, what, P)
                add(make_layer(name, "dropout", p=ratio))
            elif L.type == "Flatten":
                if _int(_sub(L, "flatten_param"), "axis", 1, what, P, -_INT32) != n_batch_axes:
                    raise CheckpointError(P, f"{what}: only flattening whole samples is supported")
                add(make_layer(name, "flatten"))
            elif L.type == "Reshape":
                dims = _dims(_sub(L, "reshape_param").get1("shape"), P, f"{what} reshape_param shape")
                # the next layer that is neither skipped nor on a secondary input (one scan: a second
                # Reshape to a sequence is refused below)
                nxt = next(
                    (
                        M
                        for M in compute[idx + 1 :]
                        if M.type not in _SKIP_TYPES and not (M.bottoms and M.bottoms[0] in side)
                    ),
                    None,
                )
                if n_batch_axes != 1 or len(dims) != 3 or nxt is None or nxt.type != "LSTM":
                    raise CheckpointError(
                        P,
                        f"{what}: only a Reshape to (T, N, D) in front of an LSTM is "
                        f"supported, found shape {dims}",
                    )
                D = 1
                for d in cur_shape:
                    D *= d
                if dims[2] not in (D, -1, 0) and not (dims[2] == 0 and D == cur_shape[0]):
                    raise CheckpointError(P, f"{what}: reshapes {D} features per frame into {dims[2]}")
                if len(cur_shape) > 1:
                    add(make_layer(f"{name}_flatten", "flatten"))
                n_batch_axes = 2
                sequence = {"reshape": dims, "time_major": True}
                skipped.append(L.name)
            elif L.type == "LSTM":
                if n_batch_axes != 2:
                    raise CheckpointError(P, f"{what}: the LSTM input must first be reshaped to (T, N, D)")
                p = _sub(L, "recurrent_param")
                if _bool(p.get1("expose_hidden", False), what, P, "expose_hidden"):
                    raise CheckpointError(P, f"{what}: expose_hidden is not supported")
                if len(L.bottoms) not in (2, 3):
                    raise CheckpointError(
                        P, f"{what}: expected bottoms (x, cont[, x_static]), found {L.bottoms}"
                    )
                if L.bottoms[1] not in side:
                    raise CheckpointError(
                        P, f"{what}: the clip-marker bottom {L.bottoms[1]!r} is not a net input"
                    )
                H = _int(p, "num_output", 0, what, P)
                blobs, legacy = weights_of(L)
                static = len(L.bottoms) == 3
                nb = 4 if static else 3
                if len(blobs) != nb:
                    raise buf.error(
                        f"{what}: expected {nb} blobs (W_xc, "
                        f"b_c{', W_xc_static' if static else ''}, W_hc), "
                        f"found {len(blobs)}"
                    )
                settings = {"hidden": H, "cell_act": cell_act}
                if static:
                    if blobs[2].ndim < 1:
                        raise buf.error(f"{what}: W_xc_static is a scalar")
                    settings["static_input"] = int(blobs[2].size // (4 * H)) if H else 0
                _, expect = add(make_layer(name, "lstm", **settings))
                W_x = _blob(buf, L.name, blobs, legacy, 0, expect[f"{name}.W_x"], "W_xc")
                b_c = _blob(buf, L.name, blobs, legacy, 1, expect[f"{name}.b"], "b_c")
                W_h = _blob(buf, L.name, blobs, legacy, nb - 1, expect[f"{name}.W_h"], "W_hc")
                W_s = None
                if static:
                    W_s = _blob(buf, L.name, blobs, legacy, 2, expect[f"{name}.W_s"], "W_xc_static")
                lp = lstm_params(H, "ifog", W_x=W_x, W_h=W_h, b_parts=[b_c], W_s=W_s, dtype=dt or W_x.dtype)
                for field, src in (("W_x", 0), ("b", 1), ("W_h", nb - 1)) + ((("W_s", 2),) if static else ()):
                    k = f"{name}.{field}"
                    params[k] = lp[field]
                    name_map[k] = f"{L.name}/{src}"
                    transforms[k] = "none (Caffe gate order i, f, o, g is canonical)"
            elif L.type == "Softmax":
                axis = _int(_sub(L, "softmax_param"), "axis", 1, what, P, -_INT32)
                output = {"type": "softmax", "axis": axis}
            else:
                raise CheckpointError(
                    P, f"{what}: unsupported layer type {L.type!r} (supported: {', '.join(_SUPPORTED)})"
                )
        cur = L.tops[0]

    unused = sorted(k for k, (_t, blobs, _l) in weights.items() if blobs and k not in used)
    if unused and strict:
        raise buf.error(
            f"weights for layers that the prototxt does not use: {unused} "
            "(pass strict=False to ignore them, as Caffe does)"
        )
    has_lstm = any(x["type"] == "lstm" for x in layers)
    pre = preset(preprocessing if preprocessing is not None else ("lrcn" if has_lstm else "caffe_vgg16"))
    pbuf = open_buffer(prototxt)
    meta = {
        "name": str(net.get1("name", "")),
        "source": dict(source_info(buf, wfmt, "caffe"), prototxt=source_info(pbuf, "prototxt", "caffe")),
        "source_gate_order": "ifog",
        "cell_act": cell_act if has_lstm else None,
        "preprocessing": pre,
        "output": output,
        "sequence": sequence,
        "name_map": name_map,
        "transforms": transforms,
        "renamed": {k: v for k, v in rename.items() if any(L.name == k for L in compute)},
        "skipped_layers": skipped,
        "ignored_weights": unused,
    }
    return finish(params, layers, input_shape, meta, buf.path)
