"""Reading Caffe ``.caffemodel`` files (binary ``NetParameter``) without Caffe or protobuf.

Only the fields that every Caffe fork numbers the same way are read: the layer
name, its type and its parameter blobs. Hyper-parameters come from the
``.prototxt`` (see :mod:`weights_io.caffe`), because the numbers of some
``*_param`` sub-messages differ between forks (LRCN's ``recurrent_param`` is
134, S2VT's 140, BVLC's 146).

Field numbers (BVLC ``caffe.proto``; identical in the LRCN and S2VT forks):

* ``NetParameter``: ``name`` 1, ``layers`` 2 (V1), ``layer`` 100 (V2).
* ``LayerParameter`` (V2): ``name`` 1, ``type`` 2 (string), ``blobs`` 7.
* ``V1LayerParameter``: ``layer`` 1 (a nested V0 layer), ``name`` 4,
  ``type`` 5 (enum, see ``V1_TYPES``), ``blobs`` 6.
* ``V0LayerParameter``: ``name`` 1, ``type`` 2 (string, see ``V0_TYPES``), ``blobs`` 50.
* ``BlobProto``: ``num`` 1, ``channels`` 2, ``height`` 3, ``width`` 4 (legacy
  4-d shape), ``data`` 5 (packed float32), ``shape`` 7 (``BlobShape.dim`` 1,
  packed int64), ``double_data`` 8 (packed float64). ``diff`` (6) and
  ``double_diff`` (9) are ignored.
"""

from __future__ import annotations

from typing import NamedTuple

from ._buffer import Buffer
from .protowire import as_int, as_string, fields_by_number, iter_fields, packed_varints, repeated_numbers

__all__ = ["CaffeLayer", "read_caffemodel", "V1_TYPES", "V0_TYPES", "looks_like_caffe"]

# V1LayerParameter.LayerType -> the V2 type string (upgrade_proto.cpp UpgradeV1LayerType).
V1_TYPES = {
    0: "",
    35: "AbsVal",
    1: "Accuracy",
    30: "ArgMax",
    2: "BNLL",
    3: "Concat",
    37: "ContrastiveLoss",
    4: "Convolution",
    5: "Data",
    39: "Deconvolution",
    6: "Dropout",
    32: "DummyData",
    7: "EuclideanLoss",
    25: "Eltwise",
    38: "Exp",
    8: "Flatten",
    9: "HDF5Data",
    10: "HDF5Output",
    28: "HingeLoss",
    11: "Im2col",
    12: "ImageData",
    13: "InfogainLoss",
    14: "InnerProduct",
    15: "LRN",
    29: "MemoryData",
    16: "MultinomialLogisticLoss",
    34: "MVN",
    17: "Pooling",
    26: "Power",
    18: "ReLU",
    19: "Sigmoid",
    27: "SigmoidCrossEntropyLoss",
    36: "Silence",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    33: "Slice",
    23: "TanH",
    24: "WindowData",
    31: "Threshold",
}
# V1 enum identifiers as written in V1 prototxts (``type: CONVOLUTION``).
V1_TYPE_NAMES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}
# V0 type strings (upgrade_proto.cpp UpgradeV0LayerType) -> V2 type string.
V0_TYPES = {
    "accuracy": "Accuracy",
    "bnll": "BNLL",
    "concat": "Concat",
    "conv": "Convolution",
    "data": "Data",
    "dropout": "Dropout",
    "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten",
    "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output",
    "im2col": "Im2col",
    "images": "ImageData",
    "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling",
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss",
    "split": "Split",
    "tanh": "TanH",
    "window_data": "WindowData",
    "padding": "Padding",
}


class CaffeLayer(NamedTuple):
    """One layer of a ``.caffemodel``: name, V2 type string, blobs as stored.

    ``legacy[i]`` is True when blob ``i`` had the deprecated 4-d
    ``num/channels/height/width`` shape (right-aligned: an InnerProduct weight
    is stored ``(1, 1, out, in)``). ``version`` is 0, 1 or 2 (which message
    the layer came from).
    """

    name: str
    type: str
    blobs: list
    legacy: list
    version: int


def _read_blob(buf: Buffer, start: int, end: int, what: str):
    f = fields_by_number(buf, start, end, what, wanted={1, 2, 3, 4, 5, 7, 8})
    legacy = any(k in f for k in (1, 2, 3, 4))
    if legacy:
        shape = tuple(as_int(buf, f[k][-1], what) if k in f else 0 for k in (1, 2, 3, 4))
    elif 7 in f:
        s = f[7][-1]
        if s.wire != 2:
            raise buf.error(f"{what}: BlobProto.shape has wire type {s.wire}, expected a message")
        dims = fields_by_number(buf, s.value, s.value + s.length, what + " shape", wanted={1})
        shape = tuple(packed_varints(buf, dims.get(1, []), what + " shape"))
    else:
        shape = ()
    if any(d < 0 for d in shape):
        raise buf.error(f"{what}: negative dimension in blob shape {shape}")
    if f.get(8):
        data = repeated_numbers(buf, f[8], "<f8", what + " double_data")
    else:
        data = repeated_numbers(buf, f.get(5, []), "<f4", what + " data")
    count = 1
    for d in shape:
        count *= d
    if data.size != count:
        raise buf.error(f"{what}: blob shape {shape} holds {count} values but the blob has {data.size}")
    return data.reshape(shape), legacy


def _read_blobs(buf, fields, what):
    blobs, legacy = [], []
    for i, fb in enumerate(fields):
        if fb.wire != 2:
            raise buf.error(f"{what} blob {i}: wire type {fb.wire}, expected a message")
        b, lg = _read_blob(buf, fb.value, fb.value + fb.length, f"{what} blob {i}")
        blobs.append(b)
        legacy.append(lg)
    return blobs, legacy


def _v2_layer(buf, fl, k):
    what = f"layer #{k} (V2)"
    f = fields_by_number(buf, fl.value, fl.value + fl.length, what, wanted={1, 2, 7})
    name = as_string(buf, f[1][-1], what + " name") if 1 in f else ""
    what = f"layer {name!r}" if name else what
    typ = as_string(buf, f[2][-1], what + " type") if 2 in f else ""
    blobs, legacy = _read_blobs(buf, f.get(7, []), what)
    return CaffeLayer(name, typ, blobs, legacy, 2)


def _v1_layer(buf, fl, k):
    what = f"layer #{k} (V1)"
    f = fields_by_number(buf, fl.value, fl.value + fl.length, what, wanted={1, 4, 5, 6})
    name = as_string(buf, f[4][-1], what + " name") if 4 in f else ""
    typ = None
    if 5 in f:
        code = as_int(buf, f[5][-1], what + " type")
        if code not in V1_TYPES:
            raise buf.error(f"{what}: unknown V1 layer type code {code}")
        typ = V1_TYPES[code]
    blobs, legacy = _read_blobs(buf, f.get(6, []), f"layer {name!r}" if name else what)
    version = 1
    if 1 in f:  # a nested V0 layer (the oldest files): name 1, type 2 (string), blobs 50
        v0 = f[1][-1]
        if v0.wire != 2:
            raise buf.error(f"{what}: nested V0 layer has wire type {v0.wire}, expected a message")
        g = fields_by_number(buf, v0.value, v0.value + v0.length, what + " (V0)", wanted={1, 2, 50})
        if not name and 1 in g:
            name = as_string(buf, g[1][-1], what + " V0 name")
        if typ is None and 2 in g:
            t0 = as_string(buf, g[2][-1], what + " V0 type")
            typ = V0_TYPES.get(t0, t0)
        if not blobs and 50 in g:
            blobs, legacy = _read_blobs(buf, g[50], f"layer {name!r}" if name else what)
        version = 0
    return CaffeLayer(name, typ or "", blobs, legacy, version)


def read_caffemodel(buf: Buffer):
    """Read a binary ``NetParameter``.

    Parameters
    ----------
    buf : Buffer

    Returns
    -------
    name : str
        The net's name ('' when absent).
    layers : list of CaffeLayer
        In file order; V2 ``layer`` entries first if both kinds are present
        (Caffe itself refuses such files; we read them).

    Raises
    ------
    CheckpointError
        For malformed messages, or blob data that does not fill its shape.
    """
    f = fields_by_number(buf, 0, buf.size, "NetParameter", wanted={1, 2, 100})
    name = as_string(buf, f[1][-1], "NetParameter name") if 1 in f else ""
    layers = []
    for k, fl in enumerate(f.get(100, [])):
        if fl.wire != 2:
            raise buf.error(f"NetParameter field 100 (layer) has wire type {fl.wire}, expected a message")
        layers.append(_v2_layer(buf, fl, k))
    for k, fl in enumerate(f.get(2, [])):
        if fl.wire != 2:
            raise buf.error(f"NetParameter field 2 (layers) has wire type {fl.wire}, expected a message")
        layers.append(_v1_layer(buf, fl, k))
    return name, layers


def looks_like_caffe(buf: Buffer) -> bool:
    """A cheap structural test: the top-level fields parse and include layers (2 or 100)."""
    try:
        seen = set()
        for k, fl in enumerate(iter_fields(buf, 0, buf.size, "probe")):
            if fl.number in (2, 100) and fl.wire == 2:
                seen.add(fl.number)
            elif fl.number == 1 and fl.wire != 2:
                return False
            elif fl.number not in (1, 3, 4, 5, 6, 7, 8, 2, 100):
                return False
            if k > 4096:
                break
        return bool(seen)
    except Exception:
        return False
