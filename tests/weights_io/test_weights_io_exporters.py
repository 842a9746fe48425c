"""ONNX files written by torch's two exporters (TorchScript, opset 17; dynamo, opset 18), converted and run.

A small CNN classifier and a small CNN-LSTM (conv-relu-pool x2, fc, nn.LSTM, a
linear head at every step; time-major and batch-first) with zero biases
(torch's default for torchvision's VGG, where the TorchScript exporter shares
identical initializers through Identity nodes and the dynamo exporter drops
them) and random ones, in float32 and float64. The converted models' logits
(every step's, for the CNN-LSTM) equal torch's, grounding runs on each, and the
constants the converter folded equal onnx's ReferenceEvaluator on the same
subgraphs.
"""

import warnings

import numpy
import onnx
import onnxscript  # noqa: F401  (torch.onnx.export(..., dynamo=True) needs it: a test dependency)
import pytest
import torch
import torchvision
from onnx.reference import ReferenceEvaluator

from ebr_ref.grounding import ground
from weights_io import CheckpointError, convert, load_model
from weights_io.convert_onnx import onnx_folded_constants

SEED = 0x0E1
T = 5
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


class Features(torch.nn.Module):
    """conv-relu-pool x2 with equal widths (so that zero biases are identical initializers)."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(4, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.fc = torch.nn.Linear(4 * 4 * 4, 8)

    def frames(self, x):
        return torch.relu(self.fc(torch.flatten(self.features(x), 1)))


class CNN(Features):
    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)
        self.fc2 = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 5)

    def forward(self, x):  # (N, 3, 16, 16) -> (N, 5)
        return self.out(torch.relu(self.fc2(self.drop(self.frames(x)))))


class CNNLSTM(Features):
    """Time-major: a clip (T, 3, 16, 16) -> per-step logits (T, 5)."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 6)
        self.head = torch.nn.Linear(6, 5)

    def forward(self, x):
        h, _ = self.lstm(self.frames(x).unsqueeze(1))
        return self.head(h.squeeze(1))


class CNNLSTMBatchFirst(Features):
    """Batch-first: clips (B, T, 3, 16, 16) -> per-step logits (B, T, 5)."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 5)

    def forward(self, x):
        B, T_ = x.shape[:2]
        f = self.frames(x.reshape(B * T_, *x.shape[2:])).reshape(B, T_, -1)
        h, _ = self.lstm(f)
        return self.head(h)


MODELS = {"cnn": CNN, "cnn_lstm": CNNLSTM, "cnn_lstm_bf": CNNLSTMBatchFirst}


def make_net(kind, biases, dtype):
    torch.manual_seed(SEED)
    net = MODELS[kind]()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "bias" in name:
                p.zero_() if biases == "zero" else p.normal_(0, 0.3)
    return net.to(dtype).eval()


def example(kind, dtype):
    shape = {"cnn": (3, 3, 16, 16), "cnn_lstm": (T, 3, 16, 16), "cnn_lstm_bf": (1, T, 3, 16, 16)}[kind]
    return torch.from_numpy(numpy.random.default_rng(SEED + 1).standard_normal(shape)).to(dtype)


def export(net, x, path, exporter, dynamic=False):
    kw = {}
    if exporter == "dynamo":
        kw["opset_version"] = 18
        if dynamic:
            from torch.export import Dim

            axes = {0: Dim("T", min=2, max=64)} if x.ndim == 4 else {0: Dim("B", min=1, max=8)}
            kw["dynamic_shapes"] = {"x": axes}
    else:
        kw["opset_version"] = 17
        if dynamic:
            kw["dynamic_axes"] = {"x": {0: "T"} if x.ndim == 4 else {0: "B", 1: "T"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), str(path), dynamo=exporter == "dynamo", input_names=["x"], output_names=["y"], **kw
        )
    return path


def _rel(a, b):
    return numpy.linalg.norm(numpy.asarray(a, "f8") - b) / numpy.linalg.norm(b)


def _clip(kind, x):
    """The engine's clip (frames, C, H, W) for the torch input ``x``."""
    return x[0].numpy() if kind == "cnn_lstm_bf" else x.numpy()


def _check_model(kind, model, net, x, dtype):
    with torch.no_grad():
        want = net(x).double().numpy()
    if kind == "cnn_lstm_bf":
        want = want[0]
    got = model.logits(_clip(kind, x))
    assert got.shape == want.shape
    assert _rel(got, want) <= TOL[dtype], _rel(got, want)
    assert model.is_recurrent == (kind != "cnn")
    g = ground(model, _clip(kind, x), 1, method="cEB-R" if model.is_recurrent else "cEB", layer="conv2_1")
    assert g.maps.shape[0] == _clip(kind, x).shape[0] and numpy.isfinite(g.maps).all()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("biases", ["zero", "random"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_exported_models_match_torch_float32(tmp_path, kind, biases, exporter):
    net = make_net(kind, biases, torch.float32)
    x = example(kind, torch.float32)
    path = export(net, x, tmp_path / f"{kind}.onnx", exporter)
    params, meta = convert(path)
    names = [L["name"] for L in meta["architecture"]]
    head = ["flatten", "fc6", "relu6"]
    if kind == "cnn":
        assert names == [
            "conv1_1",
            "relu1_1",
            "pool1",
            "conv2_1",
            "relu2_1",
            "pool2",
            *head,
            "fc7",
            "relu7",
            "fc8",
        ]  # the exporters drop Dropout in eval mode
        assert meta["onnx"]["input"]["time_axis"] is None
    else:
        assert names == ["conv1_1", "relu1_1", "pool1", "conv2_1", "relu2_1", "pool2", *head, "lstm1", "fc7"]
        assert meta["onnx"]["input"]["time_axis"] == (1 if kind == "cnn_lstm_bf" else 0)
        assert meta["cell_act"] == "tanh" and meta["source_gate_order"] == "iofc"
    graph = onnx.load(str(path)).graph
    if biases == "zero" and exporter == "torchscript":
        assert any(n.op_type == "Identity" for n in graph.node)  # shared zero biases
    if biases == "zero" and exporter == "dynamo":
        assert all(len(n.input) == 2 for n in graph.node if n.op_type == "Conv")  # zero biases dropped
        assert "conv1_1.bias" not in params
    else:
        numpy.testing.assert_array_equal(params["conv1_1.bias"], net.features[0].bias.detach().numpy())
    numpy.testing.assert_array_equal(params["conv2_1.weight"], net.features[3].weight.detach().numpy())
    _check_model(kind, load_model(path), net, x, torch.float32)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_exported_models_match_torch_float64(tmp_path, kind, exporter):
    net = make_net(kind, "random", torch.float64)
    x = example(kind, torch.float64)
    path = export(net, x, tmp_path / f"{kind}.onnx", exporter)
    model = load_model(path)
    assert model.dtype == numpy.float64
    _check_model(kind, model, net, x, torch.float64)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("kind", ["cnn_lstm", "cnn_lstm_bf"])
def test_dynamic_axes(tmp_path, kind, exporter):
    """Symbolic time/batch axes: the shape subgraphs fold for assumed sizes; the model runs for any T."""
    net = make_net(kind, "random", torch.float32)
    x = example(kind, torch.float32)
    if kind == "cnn_lstm_bf" and exporter == "dynamo":
        x = torch.cat([x, x])  # torch.export specialises a dynamic axis whose example size is 1
    path = export(net, x, tmp_path / f"{kind}.onnx", exporter, dynamic=True)
    model = load_model(path)
    info = model.meta["onnx"]["input"]
    symbolic = any(isinstance(d, str) for d in info["shape"])
    assert symbolic == bool(info["assumed_sizes"])
    assert symbolic or exporter == "dynamo"  # torch.export may specialise an axis (seen after other exports)
    _check_model(kind, model, net, x[:1] if kind == "cnn_lstm_bf" else x, torch.float32)
    if kind == "cnn_lstm" and exporter == "torchscript":  # a graph free of baked sizes: another T
        x7 = torch.from_numpy(numpy.random.default_rng(3).standard_normal((7, 3, 16, 16)).astype("f4"))
        _check_model(kind, model, net, x7, torch.float32)


def _folded_vs_reference(path):
    folded = onnx_folded_constants(path)
    meta = convert(path)[1]
    info = meta["onnx"]["input"]
    shape = [
        d if isinstance(d, int) and d > 0 else info["assumed_sizes"][str(k)]
        for k, d in enumerate(info["shape"])
    ]
    model = onnx.load(str(path))
    x = (
        numpy.random.default_rng(SEED)
        .standard_normal(shape)
        .astype("f8" if model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE else "f4")
    )
    names = sorted(folded)
    ref = ReferenceEvaluator(model).run(names, {info["name"]: x})
    for name, want in zip(names, ref, strict=True):
        got = folded[name]
        assert got.shape == numpy.asarray(want).shape, name
        assert got.dtype == numpy.asarray(want).dtype, name
        numpy.testing.assert_array_equal(got, want, err_msg=name)
    return folded


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("kind", ["cnn_lstm", "cnn_lstm_bf"])
def test_folded_constants_match_reference_evaluator(tmp_path, kind, exporter, dynamic):
    net = make_net(kind, "zero", torch.float32)
    x = example(kind, torch.float32)
    if kind == "cnn_lstm_bf" and exporter == "dynamo" and dynamic:
        x = torch.cat([x, x])
    folded = _folded_vs_reference(export(net, x, tmp_path / "m.onnx", exporter, dynamic=dynamic))
    if exporter == "torchscript":
        assert folded  # Shape/Gather/Concat/Expand subgraphs of the LSTM's initial state


def test_folded_shape_arithmetic_matches_reference_evaluator(tmp_path):
    """Every folded op kind on a hand-built graph: Shape(start), Gather, Slice, integer Div/Mul/Sub, Range,
    Concat, ConstantOfShape, Expand, Cast, Where/Equal, Tile, ReduceProd, Squeeze/Unsqueeze, Transpose and
    Reshape of an initializer, feeding a Reshape (flatten) and a Gemm weight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(SEED)
    W = rng.standard_normal((6, 48)).astype("f4")
    c = lambda name, v: numpy_helper.from_array(numpy.asarray(v), name)  # noqa: E731
    inits = [
        c("WT", W.T.copy()),
        c("b", rng.standard_normal(6).astype("f4")),
        c("i0", numpy.array(0, "i8")),
        c("i1", numpy.array([1], "i8")),
        c("m1", numpy.array([-1], "i8")),
        c("two", numpy.array(2, "i8")),
        c("s0", numpy.array([0], "i8")),
        c("e3", numpy.array([3], "i8")),
        c("r0", numpy.array(0, "i8")),
        c("r5", numpy.array(5, "i8")),
        c("r1", numpy.array(1, "i8")),
        c("rep", numpy.array([2], "i8")),
        c("neg", numpy.array([-3, 7], "i8")),
    ]
    N = helper.make_node
    nodes = [
        N("Shape", ["x"], ["sh"], start=1),
        N("Gather", ["sh", "i0"], ["C"]),
        N("Slice", ["sh", "i1", "e3"], ["HW"]),
        N("ReduceProd", ["HW"], ["hw"], keepdims=1),
        N("Unsqueeze", ["C", "s0"], ["C1"]),
        N("Mul", ["C1", "hw"], ["D"]),
        N("Div", ["neg", "two"], ["q"]),
        N("Sub", ["D", "D"], ["z"]),
        N("Range", ["r0", "r5", "r1"], ["rg"]),
        N("Concat", ["m1", "D"], ["tgt"], axis=0),
        N("Cast", ["tgt"], ["tgt_f"], to=TensorProto.FLOAT),
        N("Cast", ["tgt_f"], ["tgt2"], to=TensorProto.INT64),
        N("Equal", ["tgt2", "tgt"], ["eq"]),
        N("Where", ["eq", "tgt2", "tgt"], ["tgt3"]),
        N("ConstantOfShape", ["rep"], ["zeros"]),
        N("Expand", ["r1", "rep"], ["ones"]),
        N("Tile", ["m1", "rep"], ["tl"]),
        N("Squeeze", ["C1", "s0"], ["Csq"]),
        N("Transpose", ["WT"], ["W"], perm=[1, 0]),
        N("Reshape", ["W", "tgt3"], ["W2"]),
        N("Conv", ["x", "cw"], ["h"]),
        N("Reshape", ["h", "tgt3"], ["f"]),
        N("Gemm", ["f", "W2", "b"], ["y"], transB=1),
    ]
    inits.append(c("cw", rng.standard_normal((3, 3, 1, 1)).astype("f4")))
    graph = helper.make_graph(
        nodes,
        "shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp_path / "shapes.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    folded = _folded_vs_reference(path)
    want = {
        "sh",
        "C",
        "HW",
        "hw",
        "D",
        "q",
        "z",
        "rg",
        "tgt",
        "tgt3",
        "zeros",
        "ones",
        "tl",
        "Csq",
        "W",
        "W2",
    }
    assert want <= set(folded)
    numpy.testing.assert_array_equal(folded["q"], [-1, 3])  # integer division truncates toward zero
    params, meta = convert(path)
    assert [L["type"] for L in meta["architecture"]] == ["conv", "flatten", "fc"]
    numpy.testing.assert_array_equal(params["fc6.weight"], W)
    assert meta["onnx"]["folded_nodes"] == len(folded)


def test_exporter_refusals_name_the_node(tmp_path):
    """What has no engine layer is refused with the node and the reason."""

    class LastStep(CNNLSTM):
        def forward(self, x):
            h, _ = self.lstm(self.frames(x).unsqueeze(1))
            return self.head(h[-1])  # one logit vector per clip

    class FinalState(CNNLSTM):
        def forward(self, x):
            _, (h, _) = self.lstm(self.frames(x).unsqueeze(1))
            return self.head(h[0])

    class Residual(CNN):
        def forward(self, x):
            f = self.frames(x)
            return self.out(f + torch.relu(self.fc2(f)))

    class ChannelsLastFeatures(CNN):
        def forward(self, x):  # no layer left to absorb the channels-last order
            return torch.flatten(self.features(x).permute(0, 2, 3, 1), 1)

    cases = [
        (LastStep, "cnn_lstm", "Gather|Slice|Squeeze"),
        (FinalState, "cnn_lstm", "final state|Y_h"),
        (Residual, "cnn", "residual|only linear chains"),
        (ChannelsLastFeatures, "cnn", "another order than C, H, W"),
    ]
    for cls, kind, msg in cases:
        torch.manual_seed(SEED)
        net = cls().eval()
        for exporter in ("torchscript", "dynamo"):
            path = tmp_path / f"{cls.__name__}_{exporter}.onnx"
            export(net, example(kind, torch.float32), path, exporter)
            with pytest.raises(CheckpointError, match=rf"node '[^']+' \([A-Za-z]+\): .*({msg})"):
                convert(path)


class ChannelsLast(CNNLSTM):
    """A channels-last flatten (permute to N, H, W, C) into the fc before the LSTM."""

    def forward(self, x):
        f = torch.flatten(self.features(x).permute(0, 2, 3, 1), 1)
        h, _ = self.lstm(torch.relu(f @ self.fc.weight.T + self.fc.bias).unsqueeze(1))
        return self.head(h.squeeze(1))


class ChannelsLastIntoLSTM(CNNLSTM):
    """A channels-last flatten straight into the LSTM (its input weights' columns get permuted)."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4 * 4 * 4, 6)

    def forward(self, x):
        h, _ = self.lstm(torch.flatten(self.features(x).permute(0, 2, 3, 1), 1).unsqueeze(1))
        return self.head(h.squeeze(1))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("cls", [ChannelsLast, ChannelsLastIntoLSTM])
def test_channels_last_flatten_is_absorbed_by_the_next_layer(tmp_path, cls, exporter):
    """A transpose of the feature axes before a flatten reorders the features; the next fully connected or
    LSTM layer's input columns are permuted back to C, H, W, so the logits still equal torch's."""
    torch.manual_seed(SEED)
    net = cls().double().eval()
    x = example("cnn_lstm", torch.float64)
    path = export(net, x, tmp_path / "cl.onnx", exporter)
    model = load_model(path)
    key = "fc6.weight" if cls is ChannelsLast else "lstm1.W_x"
    assert "columns reordered" in model.meta["transforms"][key]
    _check_model("cnn_lstm", model, net, x, torch.float64)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torchvision_vgg16_default_init(tmp_path, exporter):
    """torchvision's VGG (cfg D, small widths) with its default initialisation: all-zero biases, the
    TorchScript exporter shares them through Identity nodes, the dynamo exporter drops them;
    AdaptiveAvgPool2d((7, 7)) on a 7x7 map is a 1x1 AveragePool, dropped as the identity."""
    from torchvision.models.vgg import VGG, make_layers

    assert torchvision.__version__

    torch.manual_seed(SEED)
    cfg = [3, 3, "M", 4, 4, "M", 4, 4, 4, "M", 5, 5, 5, "M", 5, 5, 5, "M"]
    net = VGG(make_layers(cfg), num_classes=5)  # init_weights=True: zero biases
    net.classifier[0] = torch.nn.Linear(5 * 49, 12)
    net.classifier[3] = torch.nn.Linear(12, 12)
    net.classifier[6] = torch.nn.Linear(12, 5)
    for m in net.classifier:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.bias)
    net.eval()
    x = torch.from_numpy(numpy.random.default_rng(SEED).standard_normal((1, 3, 224, 224)).astype("f4"))
    path = export(net, x, tmp_path / "vgg.onnx", exporter)
    model = load_model(path, preprocessing="torchvision", dtype="float64")  # float32 weights run in float64
    assert [L.name for L in model.layers if L.type == "conv"][-1] == "conv5_3"
    assert model.meta["onnx"]["skipped_nodes"] and model.meta["preprocessing"]["name"] == "torchvision"
    assert model.meta["name"] == "vgg"  # the file's stem for the exporters' generic graph names
    with torch.no_grad():
        want = net.double()(x.double()).numpy()
    assert _rel(model.logits(x.numpy().astype("f8")), want) <= 1e-12
