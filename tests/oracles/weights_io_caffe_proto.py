"""A minimal Caffe schema of our own, built at test time with protobuf's descriptor API.

Only the messages and fields the weight tests need, with the official Caffe
field numbers (those of BVLC's caffe.proto): NetParameter, LayerParameter (V2, ``layer`` = 100),
V1LayerParameter (``layers`` = 2, type enum), V0LayerParameter (nested in V1
as field 1, blobs 50), BlobProto, BlobShape and a few ``*_param`` messages.
``recurrent_field`` lets a test write the LSTM hyper-parameters at a fork's
number (LRCN 134, S2VT 140) instead of BVLC's 146.

Files are encoded by the real ``protobuf`` package (an oracle independent of
weights_io's hand-written wire reader).
"""

from __future__ import annotations

import numpy
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED

V1_ENUM = {
    "NONE": 0,
    "CONCAT": 3,
    "CONVOLUTION": 4,
    "DATA": 5,
    "DROPOUT": 6,
    "INNER_PRODUCT": 14,
    "LRN": 15,
    "POOLING": 17,
    "RELU": 18,
    "SOFTMAX": 20,
    "SPLIT": 22,
}


def build_schema(recurrent_field=146, package="ebrtest"):
    """Return ``{message name: class}`` for our Caffe subset."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"{package}_{recurrent_field}.proto", package=package, syntax="proto2"
    )

    def msg(name, fields, enums=()):
        m = fdp.message_type.add(name=name)
        for ename, values in enums:
            e = m.enum_type.add(name=ename)
            for k, v in values.items():
                e.value.add(name=k, number=v)
        for fname, num, ftype, label, tname, packed in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname if tname.startswith(".") else f".{package}.{tname}"
            if packed:
                f.options.packed = True
        return m

    msg("BlobShape", [("dim", 1, F.TYPE_INT64, REP, None, True)])
    msg(
        "BlobProto",
        [
            ("num", 1, F.TYPE_INT32, OPT, None, False),
            ("channels", 2, F.TYPE_INT32, OPT, None, False),
            ("height", 3, F.TYPE_INT32, OPT, None, False),
            ("width", 4, F.TYPE_INT32, OPT, None, False),
            ("data", 5, F.TYPE_FLOAT, REP, None, True),
            ("diff", 6, F.TYPE_FLOAT, REP, None, True),
            ("shape", 7, F.TYPE_MESSAGE, OPT, "BlobShape", False),
            ("double_data", 8, F.TYPE_DOUBLE, REP, None, True),
            ("double_diff", 9, F.TYPE_DOUBLE, REP, None, True),
        ],
    )
    msg(
        "ParamSpec",
        [
            ("name", 1, F.TYPE_STRING, OPT, None, False),
            ("lr_mult", 3, F.TYPE_FLOAT, OPT, None, False),
            ("decay_mult", 4, F.TYPE_FLOAT, OPT, None, False),
        ],
    )
    msg(
        "ConvolutionParameter",
        [
            ("num_output", 1, F.TYPE_UINT32, OPT, None, False),
            ("bias_term", 2, F.TYPE_BOOL, OPT, None, False),
            ("pad", 3, F.TYPE_UINT32, REP, None, False),
            ("kernel_size", 4, F.TYPE_UINT32, REP, None, False),
            ("group", 5, F.TYPE_UINT32, OPT, None, False),
            ("stride", 6, F.TYPE_UINT32, REP, None, False),
        ],
    )
    msg(
        "InnerProductParameter",
        [
            ("num_output", 1, F.TYPE_UINT32, OPT, None, False),
            ("bias_term", 2, F.TYPE_BOOL, OPT, None, False),
            ("axis", 5, F.TYPE_INT32, OPT, None, False),
            ("transpose", 6, F.TYPE_BOOL, OPT, None, False),
        ],
    )
    msg(
        "PoolingParameter",
        [
            ("pool", 1, F.TYPE_ENUM, OPT, "PoolingParameter.PoolMethod", False),
            ("kernel_size", 2, F.TYPE_UINT32, OPT, None, False),
            ("stride", 3, F.TYPE_UINT32, OPT, None, False),
            ("pad", 4, F.TYPE_UINT32, OPT, None, False),
        ],
        enums=[("PoolMethod", {"MAX": 0, "AVE": 1, "STOCHASTIC": 2})],
    )
    msg("DropoutParameter", [("dropout_ratio", 1, F.TYPE_FLOAT, OPT, None, False)])
    msg("RecurrentParameter", [("num_output", 1, F.TYPE_UINT32, OPT, None, False)])
    msg("ReshapeParameter", [("shape", 1, F.TYPE_MESSAGE, OPT, "BlobShape", False)])
    msg("SoftmaxParameter", [("axis", 2, F.TYPE_INT32, OPT, None, False)])
    msg("DummyDataParameter", [("shape", 6, F.TYPE_MESSAGE, REP, "BlobShape", False)])
    msg(
        "LayerParameter",
        [
            ("name", 1, F.TYPE_STRING, OPT, None, False),
            ("type", 2, F.TYPE_STRING, OPT, None, False),
            ("bottom", 3, F.TYPE_STRING, REP, None, False),
            ("top", 4, F.TYPE_STRING, REP, None, False),
            ("param", 6, F.TYPE_MESSAGE, REP, "ParamSpec", False),
            ("blobs", 7, F.TYPE_MESSAGE, REP, "BlobProto", False),
            ("convolution_param", 106, F.TYPE_MESSAGE, OPT, "ConvolutionParameter", False),
            ("dropout_param", 108, F.TYPE_MESSAGE, OPT, "DropoutParameter", False),
            ("dummy_data_param", 109, F.TYPE_MESSAGE, OPT, "DummyDataParameter", False),
            ("inner_product_param", 117, F.TYPE_MESSAGE, OPT, "InnerProductParameter", False),
            ("pooling_param", 121, F.TYPE_MESSAGE, OPT, "PoolingParameter", False),
            ("softmax_param", 125, F.TYPE_MESSAGE, OPT, "SoftmaxParameter", False),
            ("reshape_param", 133, F.TYPE_MESSAGE, OPT, "ReshapeParameter", False),
            ("recurrent_param", recurrent_field, F.TYPE_MESSAGE, OPT, "RecurrentParameter", False),
        ],
    )
    msg(
        "V0LayerParameter",
        [
            ("name", 1, F.TYPE_STRING, OPT, None, False),
            ("type", 2, F.TYPE_STRING, OPT, None, False),
            ("num_output", 3, F.TYPE_UINT32, OPT, None, False),
            ("blobs", 50, F.TYPE_MESSAGE, REP, "BlobProto", False),
        ],
    )
    msg(
        "V1LayerParameter",
        [
            ("layer", 1, F.TYPE_MESSAGE, OPT, "V0LayerParameter", False),
            ("bottom", 2, F.TYPE_STRING, REP, None, False),
            ("top", 3, F.TYPE_STRING, REP, None, False),
            ("name", 4, F.TYPE_STRING, OPT, None, False),
            ("type", 5, F.TYPE_ENUM, OPT, "V1LayerParameter.LayerType", False),
            ("blobs", 6, F.TYPE_MESSAGE, REP, "BlobProto", False),
            ("blobs_lr", 7, F.TYPE_FLOAT, REP, None, False),
            ("convolution_param", 10, F.TYPE_MESSAGE, OPT, "ConvolutionParameter", False),
            ("inner_product_param", 17, F.TYPE_MESSAGE, OPT, "InnerProductParameter", False),
            ("pooling_param", 19, F.TYPE_MESSAGE, OPT, "PoolingParameter", False),
        ],
        enums=[("LayerType", V1_ENUM)],
    )
    msg(
        "NetParameter",
        [
            ("name", 1, F.TYPE_STRING, OPT, None, False),
            ("layers", 2, F.TYPE_MESSAGE, REP, "V1LayerParameter", False),
            ("input", 3, F.TYPE_STRING, REP, None, False),
            ("input_dim", 4, F.TYPE_INT32, REP, None, False),
            ("input_shape", 8, F.TYPE_MESSAGE, REP, "BlobShape", False),
            ("layer", 100, F.TYPE_MESSAGE, REP, "LayerParameter", False),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{m.name}"))
        for m in fdp.message_type
    }


def fill_blob(blob, arr, *, legacy=False, double=False):
    """Store ``arr`` in a BlobProto: ``shape.dim`` or the legacy right-aligned 4-d dims."""
    arr = numpy.asarray(arr)
    if legacy:
        dims = (1,) * (4 - arr.ndim) + tuple(arr.shape)
        blob.num, blob.channels, blob.height, blob.width = (int(d) for d in dims)
    else:
        blob.shape.dim.extend(int(d) for d in arr.shape)
    if double:
        blob.double_data.extend(arr.astype(numpy.float64).ravel().tolist())
    else:
        blob.data.extend(arr.astype(numpy.float32).ravel().tolist())
    return blob


def write_caffemodel(path, schema, layers, *, version=2, net_name="net", legacy=False, double=False):
    """Write a ``.caffemodel``.

    Parameters
    ----------
    layers : list of (name, v2 type, [arrays])
    version : 0, 1 or 2
        V2 ``layer`` entries, V1 ``layers`` entries (type enum), or V1 wrappers
        holding a nested V0 layer (name, type string, blobs 50).
    """
    net = schema["NetParameter"](name=net_name)
    v1 = {
        "Convolution": "CONVOLUTION",
        "InnerProduct": "INNER_PRODUCT",
        "ReLU": "RELU",
        "Pooling": "POOLING",
        "Dropout": "DROPOUT",
        "Softmax": "SOFTMAX",
        "Data": "DATA",
        "LRN": "LRN",
    }
    v0 = {
        "Convolution": "conv",
        "InnerProduct": "innerproduct",
        "ReLU": "relu",
        "Pooling": "pool",
        "Dropout": "dropout",
        "Softmax": "softmax",
        "Data": "data",
        "LRN": "lrn",
    }
    for name, typ, arrays in layers:
        if version == 2:
            L = net.layer.add(name=name, type=typ)
            blobs = L.blobs
        elif version == 1:
            L = net.layers.add(name=name, type=v1[typ])
            blobs = L.blobs
        else:
            L = net.layers.add()
            L.layer.name, L.layer.type = name, v0[typ]
            blobs = L.layer.blobs
        for a in arrays:
            fill_blob(blobs.add(), a, legacy=legacy, double=double)
    with open(path, "wb") as f:
        f.write(net.SerializeToString())
    return net


VGG16_CONVS = [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]


def vgg16_prototxt(widths, fc_sizes, num_classes, input_size, *, style="v2", lstm_hidden=None, T=4):
    """A VGG16-shaped deploy prototxt (13 convs of the given widths).

    ``style="v2"`` with ``lstm_hidden`` mimics the released VGG16_LSTM deploy
    net (DummyData inputs, in-place ReLUs, Reshape to (T, 1, D), ``lstm1``,
    ``lstm1-drop``, ``fc8-final`` with axis 2, Softmax axis 2, a dummy
    EuclideanLoss); ``style="v1"`` mimics the 2014 model-zoo VGG16 (``input_dim``
    and V1 ``layers`` with enum types).
    """
    out = []
    if style == "v1":
        out.append(
            f'name: "VGG_ILSVRC_16_layers"\ninput: "data"\ninput_dim: 10\ninput_dim: 3\n'
            f"input_dim: {input_size}\ninput_dim: {input_size}"
        )

        def layer(name, typ, bottom, top, body=""):
            out.append(
                f'layers {{\n  bottom: "{bottom}"\n  top: "{top}"\n  name: "{name}"\n  type: {typ}\n{body}}}'
            )

        types = {
            "conv": "CONVOLUTION",
            "relu": "RELU",
            "pool": "POOLING",
            "ip": "INNER_PRODUCT",
            "drop": "DROPOUT",
            "softmax": "SOFTMAX",
        }
    else:
        out.append('name: "lstm_joints"' if lstm_hidden else 'name: "vgg16"')
        batch = T if lstm_hidden else 1
        out.append(
            'layer { name: "data" type: "DummyData" top: "data"\n'
            f"  dummy_data_param {{ shape {{ dim: {batch} "
            f"dim: 3 dim: {input_size} dim: {input_size} }} }} }}"
        )
        if lstm_hidden:
            out.append(
                f'layer {{ name: "clip_markers" type: "DummyData" top: "clip_markers"\n'
                f"  dummy_data_param {{ shape {{ dim: {T} dim: 1 dim: 1 dim: 1 }} }} }}"
            )

        def layer(name, typ, bottom, top, body=""):
            out.append(
                f'layer {{\n  name: "{name}"\n  type: "{typ}"\n  bottom: "{bottom}"\n  top: "{top}"\n{body}}}'
            )

        types = {
            "conv": "Convolution",
            "relu": "ReLU",
            "pool": "Pooling",
            "ip": "InnerProduct",
            "drop": "Dropout",
            "softmax": "Softmax",
        }
    prev = "data"
    j = 0
    params = (
        "  param { lr_mult: 0.3 decay_mult: 1 }\n  param { lr_mult: 0.3 decay_mult: 0 }\n"
        if style == "v2"
        else "  blobs_lr: 1\n  blobs_lr: 2\n"
    )
    for b, n in VGG16_CONVS:
        for k in range(1, n + 1):
            nm = f"conv{b}_{k}"
            layer(
                nm,
                types["conv"],
                prev,
                nm,
                params + f"  convolution_param {{\n    num_output: {widths[j]}\n    pad: 1\n"
                '    kernel_size: 3\n    weight_filler { type: "gaussian" std: 0.01 }\n  }\n',
            )
            layer(f"relu{b}_{k}", types["relu"], nm, nm)
            prev = nm
            j += 1
        layer(
            f"pool{b}",
            types["pool"],
            prev,
            f"pool{b}",
            "  pooling_param {\n    pool: MAX\n    kernel_size: 2\n    stride: 2\n  }\n",
        )
        prev = f"pool{b}"
    for fc, size in (("fc6", fc_sizes[0]), ("fc7", fc_sizes[1])):
        layer(fc, types["ip"], prev, fc, params + f"  inner_product_param {{\n    num_output: {size}\n  }}\n")
        layer(f"relu{fc[2:]}", types["relu"], fc, fc)
        layer(f"drop{fc[2:]}", types["drop"], fc, fc, "  dropout_param {\n    dropout_ratio: 0.5\n  }\n")
        prev = fc
    if lstm_hidden:
        layer(
            "reshape-data",
            "Reshape",
            "fc7",
            "fc7-reshape",
            f"  reshape_param {{ shape {{ dim: {T} dim: 1 dim: {fc_sizes[1]} }} }}\n",
        )
        layer(
            "reshape-cm",
            "Reshape",
            "clip_markers",
            "reshape-cm",
            f"  reshape_param {{ shape {{ dim: {T} dim: 1 }} }}\n",
        )
        out.append(
            f'layer {{\n  name: "lstm1"\n  type: "LSTM"\n  bottom: "fc7-reshape"\n  bottom: "reshape-cm"\n'
            f'  top: "lstm1"\n  recurrent_param {{\n    num_output: {lstm_hidden}\n'
            '    weight_filler { type: "uniform" min: -0.01 max: 0.01 }\n  }\n}'
        )
        layer("lstm1-drop", "Dropout", "lstm1", "lstm1-drop", "  dropout_param { dropout_ratio: 0.5 }\n")
        layer(
            "fc8-final",
            "InnerProduct",
            "lstm1-drop",
            "fc8-final",
            params + f"  inner_product_param {{\n    num_output: {num_classes}\n    axis: 2\n  }}\n",
        )
        layer("probs", "Softmax", "fc8-final", "probs", "  softmax_param { axis: 2 }\n")
        out.append(
            'layer {\n  bottom: "probs"\n  bottom: "probs"\n  top: "loss"\n  name: "dummyLoss"\n'
            '  type: "EuclideanLoss"\n}'
        )
    else:
        layer(
            "fc8",
            types["ip"],
            prev,
            "fc8",
            params + f"  inner_product_param {{\n    num_output: {num_classes}\n  }}\n",
        )
        layer("prob", types["softmax"], "fc8", "prob")
    return "\n".join(out) + "\n"
