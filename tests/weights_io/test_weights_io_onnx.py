"""ONNX graphs built with onnx.helper; onnx's ReferenceEvaluator is the oracle for the converted weights."""

import numpy
import pytest

from tests.oracles.weights_io_ref import lstm_ref, torch_spec_forward
from weights_io import CheckpointError, convert

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

SEED = 0x0DD5


def _save(tmp_path, nodes, inits, x_shape, y_name="y", name="m.onnx", opset=17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype("f4"), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path, model


def _cnn(rng):
    inits = {
        "c1w": rng.standard_normal((4, 3, 3, 3)),
        "c1b": rng.standard_normal(4),
        "c2w": rng.standard_normal((6, 2, 3, 3)),
        "c2b": rng.standard_normal(6),
        "f1w": rng.standard_normal((8, 6 * 3 * 3)) * 0.3,
        "f1b": rng.standard_normal(8),
        "f2w": rng.standard_normal((8, 5)) * 0.3,
        "f2b": rng.standard_normal(5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Conv", ["c", "c2w", "c2b"], ["e"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e"], ["f"]),
        helper.make_node(
            "AveragePool", ["f"], ["g"], kernel_shape=[2, 2], strides=[2, 2], count_include_pad=1
        ),
        helper.make_node("Flatten", ["g"], ["h"], axis=1),
        helper.make_node("Gemm", ["h", "f1w", "f1b"], ["i"], transB=1),
        helper.make_node("Relu", ["i"], ["j"]),
        helper.make_node("Dropout", ["j"], ["k"]),
        helper.make_node("MatMul", ["k", "f2w"], ["l"]),
        helper.make_node("Add", ["l", "f2b"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=1),
    ]
    return nodes, inits


def test_onnx_cnn_matches_reference_evaluator(tmp_path):
    rng = numpy.random.default_rng(SEED)
    nodes, inits = _cnn(rng)
    path, model = _save(tmp_path, nodes, inits, [2, 3, 13, 13])
    params, meta = convert(path)
    assert meta["source"]["converter"] == "onnx" and meta["input_shape"] == [3, 13, 13]
    names = [L["name"] for L in meta["architecture"]]
    assert names == [
        "conv1_1",
        "relu1_1",
        "pool1",
        "conv2_1",
        "relu2_1",
        "pool2",
        "flatten",
        "fc6",
        "relu6",
        "drop6",
        "fc7",
    ]
    arch = {L["name"]: L for L in meta["architecture"]}
    assert arch["pool1"]["ceil_mode"] is True and arch["pool2"]["count_include_pad"] is True
    assert meta["pool_rounding"] == "mixed" and meta["output"] == {"type": "softmax", "axis": 1}
    assert meta["transforms"]["fc6.weight"] == "none (transB=1)"
    assert meta["transforms"]["fc7.weight"] == "transpose (in, out) -> (out, in)"
    numpy.testing.assert_array_equal(params["fc7.weight"], inits["f2w"].astype("f4").T)
    x = rng.standard_normal((2, 3, 13, 13)).astype("f4")
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    z, _ = torch_spec_forward(meta["architecture"], params, x)
    e = numpy.exp(z - z.max(1, keepdims=True))
    got = e / e.sum(1, keepdims=True)
    assert numpy.linalg.norm(got - want) <= 1e-5 * numpy.linalg.norm(want)
    params2, meta2 = convert(path, names="onnx")
    assert [L["name"] for L in meta2["architecture"]][0] == "conv_a"


def test_onnx_lrn_settings(tmp_path):
    """LRN's attributes map to the spec (bias -> k). No forward check here: onnx 1.23.2's reference
    LRN (reference/ops/op_lrn.py) loops over the batch axis instead of the channels; the LRN forward
    is checked against torch in test_weights_io_caffe.py."""
    path, _ = _save(
        tmp_path,
        [helper.make_node("LRN", ["x"], ["y"], size=3, alpha=1e-3, beta=0.5, bias=2.0)],
        {},
        [1, 4, 5, 5],
    )
    _, meta = convert(path)
    assert meta["architecture"] == [
        {"name": "norm1", "type": "lrn", "size": 3, "alpha": 1e-3, "beta": 0.5, "k": 2.0}
    ]


def _lstm_graph(rng, T=6, N=2, D=4, H=3, acts=None, bias=True, extra=None):
    inits = {"W": rng.standard_normal((1, 4 * H, D)) * 0.5, "R": rng.standard_normal((1, 4 * H, H)) * 0.5}
    inputs = ["x", "W", "R"]
    if bias:
        inits["B"] = rng.standard_normal((1, 8 * H)) * 0.5
        inputs.append("B")
    kw = {"hidden_size": H}
    if acts:
        kw["activations"] = acts
    kw.update(extra or {})
    nodes = [
        helper.make_node("LSTM", inputs, ["Y", "Y_h"], **kw),
        helper.make_node("Squeeze", ["Y", "axes"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, N, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype("f4"), k) for k, v in inits.items()]
        + [numpy_helper.from_array(numpy.array([1], "i8"), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inits


@pytest.mark.parametrize("bias", [True, False])
def test_onnx_lstm_matches_reference_evaluator(tmp_path, bias):
    rng = numpy.random.default_rng(SEED + 1)
    model, inits = _lstm_graph(rng, bias=bias)
    path = tmp_path / "lstm.onnx"
    onnx.save(model, str(path))
    params, meta = convert(path)
    assert meta["architecture"] == [{"name": "lstm1", "type": "lstm", "hidden": 3, "cell_act": "tanh"}]
    assert meta["source_gate_order"] == "iofc" and meta["input_shape"] == [4]
    x = rng.standard_normal((6, 2, 4)).astype("f4")
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]  # (T, N, H) after the squeeze
    got = lstm_ref(x.astype("f8"), *(params[f"lstm1.{k}"].astype("f8") for k in ("W_x", "b", "W_h")))
    assert numpy.linalg.norm(got - want) <= 1e-5 * numpy.linalg.norm(want)


def test_onnx_relu_lstm_and_refusals(tmp_path):
    rng = numpy.random.default_rng(SEED + 2)
    model, _ = _lstm_graph(rng, acts=["Sigmoid", "Relu", "Relu"])
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    _, meta = convert(path)
    assert meta["cell_act"] == "relu"
    with pytest.raises(CheckpointError, match="uses relu"):
        convert(path, cell_act="tanh")
    for extra, msg in (({"direction": "bidirectional"}, "direction"), ({"clip": 3.0}, "clip")):
        model, _ = _lstm_graph(rng, extra=extra)
        onnx.save(model, str(path))
        with pytest.raises(CheckpointError, match=msg):
            convert(path)
    model, _ = _lstm_graph(rng, acts=["Sigmoid", "Tanh", "Sigmoid"])
    onnx.save(model, str(path))
    with pytest.raises(CheckpointError, match="activations"):
        convert(path)


def test_onnx_unsupported_graphs(tmp_path):
    rng = numpy.random.default_rng(SEED + 3)
    w = {"w": rng.standard_normal((2, 3, 1, 1))}
    path, _ = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"], name="sig")],
        w,
        [1, 3, 4, 4],
    )
    with pytest.raises(CheckpointError, match=r"node 'sig' \(Sigmoid\): unsupported op type"):
        convert(path)
    path, _ = _save(
        tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1])], w, [1, 3, 4, 4]
    )
    with pytest.raises(CheckpointError, match="asymmetric padding"):
        convert(path)
    path, _ = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Relu", ["x"], ["y"])],
        w,
        [1, 3, 4, 4],
    )
    with pytest.raises(CheckpointError, match="only linear chains"):
        convert(path)
    path, _ = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"])], w, ["N", 3, "H", "W"])
    with pytest.raises(CheckpointError, match="input_shape"):
        convert(path)
    params, meta = convert(path, input_shape=(3, 5, 5))
    assert meta["input_shape"] == [3, 5, 5] and params["conv1_1.weight"].shape == (2, 3, 1, 1)
