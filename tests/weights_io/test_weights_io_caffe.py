"""Caffe: prototxt parsing, V0/V1/V2 caffemodels, the released VGG16_LSTM layout, fork field-number traps.

Binaries are written by the real protobuf package with our own minimal schema
(tests/oracles/weights_io_caffe_proto.py); oracles are protobuf's text-format
parser, torch forwards computed from the original blobs with Caffe's
semantics (ceil pooling), and Caffe's LSTM unrolled by hand in torch.
"""

import numpy
import pytest

from tests.oracles.weights_io_ref import caffe_lstm_torch, lstm_ref, torch_spec_forward
from weights_io import CheckpointError, convert
from weights_io.prototxt import parse_prototxt

pytest.importorskip("google.protobuf")
torch = pytest.importorskip("torch")
from tests.oracles.weights_io_caffe_proto import (  # noqa: E402
    VGG16_CONVS,
    build_schema,
    vgg16_prototxt,
    write_caffemodel,
)

SEED = 0xCAFFE
WIDTHS = [2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 5]
FC = [6, 7]


@pytest.fixture(scope="module")
def schema():
    return build_schema()


def vgg_blobs(rng, *, widths=WIDTHS, fc=FC, ncls=5, size=64, lstm=None, fc8="fc8"):
    out, c, j = [], 3, 0
    for b, n in VGG16_CONVS:
        for k in range(1, n + 1):
            w = widths[j]
            out.append(
                (
                    f"conv{b}_{k}",
                    "Convolution",
                    [rng.standard_normal((w, c, 3, 3)) * 0.5, rng.standard_normal(w)],
                )
            )
            c, j = w, j + 1
    d = c * (size // 32) ** 2
    out.append(("fc6", "InnerProduct", [rng.standard_normal((fc[0], d)) * 0.3, rng.standard_normal(fc[0])]))
    out.append(
        ("fc7", "InnerProduct", [rng.standard_normal((fc[1], fc[0])) * 0.3, rng.standard_normal(fc[1])])
    )
    if lstm:
        H = lstm
        out.append(
            (
                "lstm1",
                "LSTM",
                [
                    rng.standard_normal((4 * H, fc[1])) * 0.5,
                    rng.standard_normal(4 * H) * 0.5,
                    rng.standard_normal((4 * H, H)) * 0.5,
                ],
            )
        )
        out.append((fc8, "InnerProduct", [rng.standard_normal((ncls, H)), rng.standard_normal(ncls)]))
    else:
        out.append((fc8, "InnerProduct", [rng.standard_normal((ncls, fc[1])), rng.standard_normal(ncls)]))
    return out


def caffe_cnn_forward(blobs, x, *, pool_ceil=True):
    """VGG16-shaped Caffe forward from the original blobs (float64 torch), up to fc7 (+ReLU)."""
    import torch.nn.functional as F

    t = {n: [torch.as_tensor(numpy.asarray(a, numpy.float64)) for a in arrs] for n, _t, arrs in blobs}
    h = torch.as_tensor(x)
    for b, n in VGG16_CONVS:
        for k in range(1, n + 1):
            W, bias = t[f"conv{b}_{k}"]
            h = torch.relu(F.conv2d(h, W, bias, padding=1))
        h = F.max_pool2d(h, 2, 2, ceil_mode=pool_ceil)
    h = h.flatten(1)
    for fc in ("fc6", "fc7"):
        W, bias = t[fc]
        h = torch.relu(h @ W.T + bias)
    return h.numpy(), t


# --------------------------------------------------------------------------- prototxt


def test_prototxt_parser_matches_protobuf_text_format(schema):
    from google.protobuf import text_format

    text = vgg16_prototxt(WIDTHS, FC, 5, 64, lstm_hidden=3, T=4)
    net = schema["NetParameter"]()
    text_format.Parse(text, net, allow_unknown_field=True)
    mine = parse_prototxt(text)
    layers = mine.getall("layer")
    assert len(layers) == len(net.layer)
    for a, b in zip(layers, net.layer):
        assert a.get1("name") == b.name and a.get1("type") == b.type
        assert a.getall("bottom") == list(b.bottom) and a.getall("top") == list(b.top)
        if b.HasField("convolution_param"):
            cp = a.get1("convolution_param")
            assert cp.get1("num_output") == b.convolution_param.num_output
            assert cp.getall("kernel_size") == list(b.convolution_param.kernel_size)
        if b.HasField("recurrent_param"):
            assert a.get1("recurrent_param").get1("num_output") == b.recurrent_param.num_output
        if b.HasField("reshape_param"):
            assert a.get1("reshape_param").get1("shape").getall("dim") == list(b.reshape_param.shape.dim)
        for pa, pb in zip(a.getall("param"), b.param):
            assert pa.get1("lr_mult") == pytest.approx(pb.lr_mult)
    v1 = vgg16_prototxt(WIDTHS, FC, 5, 64, style="v1")
    mine = parse_prototxt(v1)
    assert mine.getall("input_dim") == [10, 3, 64, 64]
    assert mine.getall("layers")[0].get1("type") == "CONVOLUTION"


def test_prototxt_syntax():
    text = r"""
    # a comment
    name: 'q\'uoted' "and more"   # adjacent strings concatenate
    layer { name: "a" type: "T" bottom: "x" top: "y" }
    layer < name: "b" >
    shape: { dim: [1, 2, 3] }
    values: -1.5e-3 values: 7 values: 0x10 values: inf values: -nan
    flag: true other: False enum_value: CEIL
    escaped: "tab\there\101"
    """
    m = parse_prototxt(text)
    assert m.get1("name") == "q'uotedand more"
    assert [x.get1("name") for x in m.getall("layer")] == ["a", "b"]
    assert m.get1("shape").getall("dim") == [1, 2, 3]
    v = m.getall("values")
    assert v[0] == -1.5e-3 and v[1] == 7 and v[2] == 16 and v[3] == float("inf") and numpy.isnan(v[4])
    assert m.get1("flag") is True and m.get1("other") is False and m.get1("enum_value") == "CEIL"
    assert m.get1("escaped") == "tab\thereA"
    for bad, where in (
        ('layer { name: "a"', "missing '}'"),
        ("name: ", "no value"),
        ("a: 1 }", "line 1"),
        ('x: "unterminated', "line 1"),
    ):
        with pytest.raises(CheckpointError, match=where):
            parse_prototxt(bad)


# --------------------------------------------------------------------------- VGG16 (V1, legacy dims)


@pytest.mark.parametrize(
    "version,legacy,double", [(1, True, False), (2, False, False), (2, True, True), (0, True, False)]
)
def test_caffe_vgg16_conversion(tmp_path, schema, version, legacy, double):
    rng = numpy.random.default_rng(SEED)
    blobs = vgg_blobs(rng)
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(vgg16_prototxt(WIDTHS, FC, 5, 64, style="v1" if version < 2 else "v2"))
    model = tmp_path / "vgg.caffemodel"
    write_caffemodel(model, schema, blobs, version=version, legacy=legacy, double=double)
    params, meta = convert(model, prototxt=proto)
    dt = numpy.float64 if double else numpy.float32
    for name, _t, arrs in blobs:
        numpy.testing.assert_array_equal(params[f"{name}.weight"], arrs[0].astype(dt))
        numpy.testing.assert_array_equal(params[f"{name}.bias"], arrs[1].astype(dt))
        assert params[f"{name}.weight"].dtype == dt
    assert meta["input_shape"] == [3, 64, 64] and meta["pool_rounding"] == "ceil"
    assert meta["preprocessing"]["name"] == "caffe_vgg16"
    assert (
        meta["preprocessing"]["mean"] == [103.939, 116.779, 123.68]
        and meta["preprocessing"]["channel_order"] == "BGR"
    )
    assert meta["output"] == {"type": "softmax", "axis": 1}
    assert meta["source"]["format"] == "caffe" and len(meta["source"]["sha256"]) == 64
    assert meta["source"]["prototxt"]["file"] == "deploy.prototxt"
    names = [L["name"] for L in meta["architecture"]]
    assert names[:3] == ["conv1_1", "relu1_1", "conv1_2"] and names[-1] == "fc8" and "flatten" in names
    x = numpy.random.default_rng(SEED + 1).standard_normal((2, 3, 64, 64))
    ref, t = caffe_cnn_forward(blobs, x)
    ref = ref @ t["fc8"][0].numpy().T + t["fc8"][1].numpy()
    got, _ = torch_spec_forward(meta["architecture"], {k: v.astype("f8") for k, v in params.items()}, x)
    tol = 1e-10 if double else 1e-5
    assert numpy.linalg.norm(got - ref) <= tol * numpy.linalg.norm(ref)


# --------------------------------------------------------------------------- released VGG16_LSTM layout


@pytest.mark.parametrize("cell_act", ["relu", "tanh"])
def test_released_vgg16_lstm_pair(tmp_path, schema, cell_act):
    rng = numpy.random.default_rng(SEED + 2)
    T, H = 5, 3
    blobs = vgg_blobs(rng, lstm=H, fc8="fc8-final")
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(vgg16_prototxt(WIDTHS, FC, 5, 64, lstm_hidden=H, T=T))
    model = tmp_path / "VGG16LSTM.caffemodel"
    write_caffemodel(model, schema, blobs, version=2, net_name="lstm_joints")
    params, meta = convert(model, prototxt=proto, cell_act=cell_act, dtype="float64")
    names = [L["name"] for L in meta["architecture"]]
    assert names[-3:] == ["lstm1", "lstm1-drop", "fc8"]  # fc8-final -> fc8
    assert meta["renamed"] == {"fc8-final": "fc8"}
    assert meta["architecture"][names.index("lstm1")] == {
        "name": "lstm1",
        "type": "lstm",
        "hidden": H,
        "cell_act": cell_act,
    }
    assert meta["preprocessing"]["mean"] == [103.939, 116.779, 128.68]  # the released model's 128.68
    assert (
        meta["cell_act"] == cell_act and meta["gate_order"] == "ifog" and meta["source_gate_order"] == "ifog"
    )
    assert meta["output"] == {"type": "softmax", "axis": 2}
    assert meta["sequence"] == {"reshape": [T, 1, FC[1]], "time_major": True}
    assert set(meta["skipped_layers"]) == {"reshape-data", "reshape-cm", "dummyLoss"}
    assert meta["name_map"]["lstm1.W_h"] == "lstm1/2" and meta["name_map"]["fc8.weight"] == "fc8-final/0"
    W_xc, b_c, W_hc = blobs[-2][2]
    numpy.testing.assert_array_equal(params["lstm1.W_x"], W_xc.astype("f4"))
    numpy.testing.assert_array_equal(params["lstm1.W_h"], W_hc.astype("f4"))
    # the converted LSTM, in a plain NumPy LSTM, equals Caffe's unrolled LSTM (hand-written torch)
    x = numpy.random.default_rng(SEED + 3).standard_normal((T, 2, FC[1]))
    cont = numpy.ones((T, 2))
    cont[0] = 0
    cont[3, 1] = 0  # a new clip starts in the second stream
    ref = caffe_lstm_torch(x, W_xc.astype("f4"), b_c.astype("f4"), W_hc.astype("f4"), cont, cell_act=cell_act)
    got = numpy.stack(
        [
            lstm_ref(
                x[:, n : n + 1],
                params["lstm1.W_x"],
                params["lstm1.b"],
                params["lstm1.W_h"],
                cell_act=cell_act,
                cont=cont[:, n],
            )[:, 0]
            for n in range(2)
        ],
        axis=1,
    )
    assert numpy.linalg.norm(got - ref) <= 1e-10 * numpy.linalg.norm(ref)


@pytest.mark.parametrize("fork_field", [134, 140], ids=["LRCN", "S2VT"])
def test_fork_recurrent_param_numbers(tmp_path, fork_field):
    """Forks store recurrent_param at 134 (LRCN) / 140 (S2VT): a BVLC schema misses it; we read the
    prototxt."""
    fork = build_schema(recurrent_field=fork_field, package=f"fork{fork_field}")
    bvlc = build_schema(recurrent_field=146, package="bvlc")
    rng = numpy.random.default_rng(SEED + 4)
    H = 3
    blobs = vgg_blobs(rng, lstm=H, fc8="fc8-final")
    net = write_caffemodel(tmp_path / "fork.caffemodel", fork, blobs)
    net.layer[-2].recurrent_param.num_output = 999  # a fork-numbered field a BVLC reader cannot see
    (tmp_path / "fork.caffemodel").write_bytes(net.SerializeToString())
    as_bvlc = bvlc["NetParameter"].FromString((tmp_path / "fork.caffemodel").read_bytes())
    assert not as_bvlc.layer[-2].HasField("recurrent_param")  # the trap
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(vgg16_prototxt(WIDTHS, FC, 5, 64, lstm_hidden=H))
    params, meta = convert(tmp_path / "fork.caffemodel", prototxt=proto)
    assert params["lstm1.W_h"].shape == (4 * H, H)


def test_lstm_static_input_and_transposed_ip(tmp_path, schema):
    rng = numpy.random.default_rng(SEED + 5)
    D, Ds, H, C = 6, 2, 3, 4
    W_xc, b_c, W_s, W_hc = (rng.standard_normal(s) for s in ((4 * H, D), (4 * H,), (4 * H, Ds), (4 * H, H)))
    Wt = rng.standard_normal((H, C))  # transpose: true stores (in, out)
    text = (
        "\n"
        f'    input: "x" input_shape {{ dim: 8 dim: {D} }}\n'
        '    input: "cont" input_shape { dim: 4 dim: 2 }\n'
        f'    input: "static" input_shape {{ dim: 2 dim: {Ds} }}\n'
        '    layer { name: "r" type: "Reshape" bottom: "x" top: "xr" '
        f"reshape_param {{ shape {{ dim: 4 dim: 2 dim: {D} }} }} }}\n"
        '    layer { name: "lstm" type: "LSTM" bottom: "xr" bottom: "cont" bottom: "static" top: "h"\n'
        f"             recurrent_param {{ num_output: {H} }} }}\n"
        '    layer { name: "cls" type: "InnerProduct" bottom: "h" top: "y"\n'
        f"             inner_product_param {{ num_output: {C} axis: 2 transpose: true "
        "bias_term: false } }\n"
        "    "
    )
    proto = tmp_path / "p.prototxt"
    proto.write_text(text)
    write_caffemodel(
        tmp_path / "m.caffemodel",
        schema,
        [("lstm", "LSTM", [W_xc, b_c, W_s, W_hc]), ("cls", "InnerProduct", [Wt])],
    )
    params, meta = convert(tmp_path / "m.caffemodel", prototxt=proto, input_shape=(D,), dtype="float64")
    assert meta["architecture"][0]["static_input"] == Ds
    numpy.testing.assert_allclose(params["lstm.W_s"], W_s.astype("f4"))
    numpy.testing.assert_allclose(params["lstm.W_h"], W_hc.astype("f4"))
    numpy.testing.assert_allclose(params["cls.weight"], Wt.astype("f4").T)
    assert "transpose" in meta["transforms"]["cls.weight"]


def test_caffe_hdf5_snapshot(tmp_path, schema):
    h5py = pytest.importorskip("h5py")
    rng = numpy.random.default_rng(SEED + 6)
    blobs = vgg_blobs(rng)
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(vgg16_prototxt(WIDTHS, FC, 5, 64))
    with h5py.File(tmp_path / "snap.caffemodel.h5", "w") as f:
        for name, _t, arrs in blobs:
            for i, a in enumerate(arrs):
                f[f"data/{name}/{i}"] = a.astype("f4")
    params, meta = convert(tmp_path / "snap.caffemodel.h5", prototxt=proto)
    assert meta["source"]["format"] == "caffe_h5"
    for name, _t, arrs in blobs:
        numpy.testing.assert_array_equal(params[f"{name}.weight"], arrs[0].astype("f4"))


def _caffenet_text(size):
    return (
        'name: "tiny_caffenet"\n'
        '    layer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}\n"
        '    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
        "             convolution_param { num_output: 4 kernel_size: 5 stride: 2 } }\n"
        '    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        '    layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
        '    layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" '
        "lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }\n"
        '    layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"\n'
        "             convolution_param { num_output: 6 pad: 2 kernel_size: 5 group: 2 } }\n"
        '    layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }\n'
        '    layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" '
        "pooling_param { pool: AVE kernel_size: 3 stride: 2 } }\n"
        '    layer { name: "fc6" type: "InnerProduct" bottom: "pool2" top: "fc6" '
        "inner_product_param { num_output: 5 } }\n"
        '    layer { name: "prob" type: "Softmax" bottom: "fc6" top: "prob" }\n'
        "    "
    )


def test_caffenet_lrn_groups_and_ceil_pooling(tmp_path, schema):
    import torch.nn.functional as F

    rng = numpy.random.default_rng(SEED + 7)
    size = 35  # conv1 -> 16, pool1 ceil -> 8 (floor would give 7), pool2 ceil -> 4 (floor 3)
    c1w, c1b = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal(4)
    c2w, c2b = rng.standard_normal((6, 2, 5, 5)), rng.standard_normal(6)
    f6w, f6b = rng.standard_normal((5, 6 * 4 * 4)), rng.standard_normal(5)
    (tmp_path / "p.prototxt").write_text(_caffenet_text(size))
    write_caffemodel(
        tmp_path / "m.caffemodel",
        schema,
        [
            ("conv1", "Convolution", [c1w, c1b]),
            ("conv2", "Convolution", [c2w, c2b]),
            ("fc6", "InnerProduct", [f6w, f6b]),
        ],
        double=True,
    )
    params, meta = convert(tmp_path / "m.caffemodel", prototxt=tmp_path / "p.prototxt")
    arch = {L["name"]: L for L in meta["architecture"]}
    assert arch["conv2"]["groups"] == 2 and arch["pool1"]["ceil_mode"] and arch["pool2"]["type"] == "avgpool"
    assert arch["norm1"] == {
        "name": "norm1",
        "type": "lrn",
        "size": 3,
        "alpha": 0.0001,
        "beta": 0.75,
        "k": 1.0,
    }
    x = rng.standard_normal((2, 3, size, size))
    T = lambda a: torch.as_tensor(a)  # noqa: E731
    h = torch.relu(F.conv2d(T(x), T(c1w), T(c1b), stride=2))
    h = F.max_pool2d(h, 3, 2, ceil_mode=True)
    h = F.local_response_norm(h, 3, 1e-4, 0.75, 1.0)
    h = torch.relu(F.conv2d(h, T(c2w), T(c2b), padding=2, groups=2))
    h = F.avg_pool2d(h, 3, 2, ceil_mode=True)
    ref = (h.flatten(1) @ T(f6w).T + T(f6b)).numpy()
    got, _ = torch_spec_forward(meta["architecture"], params, x)
    assert numpy.linalg.norm(got - ref) <= 1e-10 * numpy.linalg.norm(ref)


# --------------------------------------------------------------------------- errors


def test_caffe_errors_name_layer_and_shapes(tmp_path, schema):
    rng = numpy.random.default_rng(SEED + 8)
    blobs = vgg_blobs(rng)
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(vgg16_prototxt(WIDTHS, FC, 5, 64))
    m = tmp_path / "m.caffemodel"

    write_caffemodel(m, schema, [b for b in blobs if b[0] != "conv3_2"])
    with pytest.raises(
        CheckpointError, match=r"layer 'conv3_2' \(Convolution\) of the prototxt has no weights"
    ):
        convert(m, prototxt=proto)

    bad = [(n, t, [rng.standard_normal((7, 3)), a[1]] if n == "fc7" else a) for n, t, a in blobs]
    write_caffemodel(m, schema, bad)
    with pytest.raises(
        CheckpointError, match=r"layer 'fc7' blob 0 \(weight\): expected shape \(7, 6\), found \(7, 3\)"
    ):
        convert(m, prototxt=proto)

    write_caffemodel(m, schema, [(n, t, a[:1] if n == "conv1_1" else a) for n, t, a in blobs])
    with pytest.raises(CheckpointError, match=r"conv1_1.*expected 2 blobs"):
        convert(m, prototxt=proto)

    write_caffemodel(m, schema, blobs + [("extra_fc", "InnerProduct", [rng.standard_normal((2, 2))])])
    with pytest.raises(CheckpointError, match="extra_fc"):
        convert(m, prototxt=proto)
    _, meta = convert(m, prototxt=proto, strict=False)
    assert meta["ignored_weights"] == ["extra_fc"]

    write_caffemodel(m, schema, [(n, "InnerProduct" if n == "conv1_1" else t, a) for n, t, a in blobs])
    with pytest.raises(CheckpointError, match="conv1_1' is a Convolution in the prototxt but a InnerProduct"):
        convert(m, prototxt=proto)

    write_caffemodel(m, schema, blobs)
    text = proto.read_text().replace('type: "ReLU"', 'type: "BatchNorm"', 1)
    proto.write_text(text)
    with pytest.raises(
        CheckpointError, match=r"layer 'relu1_1' \(BatchNorm\): unsupported layer type 'BatchNorm'"
    ):
        convert(m, prototxt=proto)

    proto.write_text(
        'input: "data"\nlayer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 2 kernel_size: 1 } }\n"
    )
    with pytest.raises(CheckpointError, match="no shape is declared"):
        convert(m, prototxt=proto)
    with pytest.raises(CheckpointError, match="needs its prototxt"):
        convert(m)


def test_v0_prototxt_and_caffemodel(tmp_path, schema):
    """The oldest layout: V1 ``layers`` wrapping a V0 ``layer`` with flat hyper-parameters and blobs at 50."""
    rng = numpy.random.default_rng(SEED + 9)
    cw, cb = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    fw, fb = rng.standard_normal((2, 4 * 3 * 3)), rng.standard_normal(2)
    (tmp_path / "v0.prototxt").write_text("""name: "v0net"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 7 input_dim: 7
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 pad: 1 biasterm: true }
         bottom: "data" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 2 } bottom: "pool1" top: "fc" }
""")
    write_caffemodel(
        tmp_path / "v0.caffemodel",
        schema,
        [("conv1", "Convolution", [cw, cb]), ("fc", "InnerProduct", [fw, fb])],
        version=0,
        legacy=True,
    )
    params, meta = convert(tmp_path / "v0.caffemodel", prototxt=tmp_path / "v0.prototxt", dtype="float64")
    assert [L["type"] for L in meta["architecture"]] == ["conv", "relu", "maxpool", "flatten", "fc"]
    assert meta["architecture"][2]["ceil_mode"] is True  # 7 -> ceil((7 - 3) / 2) + 1 = 3
    numpy.testing.assert_array_equal(params["conv1.weight"], cw.astype("f4"))
    numpy.testing.assert_array_equal(params["fc.weight"], fw.astype("f4"))
