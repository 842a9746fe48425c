"""Hostile inputs on the paths added for exporters' files: ONNX constant folding and graph walking, Keras 3
``.keras`` archives and Keras model configs.

As in test_weights_io_hostile.py, every attack runs in a child process under a memory limit and a timeout and
must end in a CheckpointError naming the file and the node/layer/member (or a bounded success) -- never a
MemoryError, another exception type or a hang. The .keras archives are written by hand (zipfile + h5py) so
that these tests need no Keras.
"""

import io
import json
import zipfile

import h5py
import numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import weights_io
from tests.weights_io.test_weights_io_hostile import attacks, call, refused

N = helper.make_node


def _i64(name, v):
    return numpy_helper.from_array(numpy.asarray(v, dtype="i8"), name)


def onnx_file(path, nodes, inits=(), in_shape=(1, 3), out="y"):
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        list(inits),
    )
    with open(path, "wb") as f:
        f.write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return path


def _lstm_with_state(state_nodes, state_inits):
    """An LSTM whose initial_h is computed by ``state_nodes`` (output 'h0')."""
    inits = [
        numpy_helper.from_array(numpy.ones((1, 8, 3), "f4"), "W"),
        numpy_helper.from_array(numpy.ones((1, 8, 2), "f4"), "R"),
    ] + list(state_inits)
    nodes = list(state_nodes) + [N("LSTM", ["x", "W", "R", "", "", "h0"], ["y"], hidden_size=2)]
    return nodes, inits


# =========================================================================== ONNX folding and walking


def test_folding_cannot_allocate_beyond_the_budget(tmp_path):
    """Shape subgraphs that claim huge constants are refused before they are allocated."""
    cases = {
        "cos": _lstm_with_state([N("ConstantOfShape", ["s"], ["h0"])], [_i64("s", [1 << 20, 1 << 20, 2])]),
        "expand": _lstm_with_state(
            [N("Expand", ["one", "s"], ["h0"])],
            [_i64("s", [1, 1 << 17, 1 << 17]), numpy_helper.from_array(numpy.zeros(1, "f4"), "one")],
        ),
        "range": _lstm_with_state(
            [N("Range", ["a", "b", "c"], ["h0"])], [_i64("a", 0), _i64("b", 1 << 40), _i64("c", 1)]
        ),
        "concat": _lstm_with_state(
            [N("Concat", ["big"] * 400, ["h0"], axis=0)],
            [numpy_helper.from_array(numpy.zeros((1 << 18,), "f4"), "big")],
        ),
        "tile": _lstm_with_state(
            [N("Tile", ["t0" if k == 0 else f"t{k}", "two"], [f"t{k + 1}"]) for k in range(80)]
            + [N("Identity", ["t80"], ["h0"])],
            [numpy_helper.from_array(numpy.zeros(1, "f4"), "t0"), _i64("two", [2])],
        ),
    }
    paths = {k: onnx_file(tmp_path / f"{k}.onnx", *v, in_shape=(1, 1, 3)) for k, v in cases.items()}
    reports = attacks([call("convert", p) for p in paths.values()])
    for (k, p), r in zip(paths.items(), reports, strict=True):
        refused(r, p.name, "bytes or more")
        assert r["seconds"] < 5 and r["maxrss_mb"] < 1200, (k, r)


def test_folding_operands_are_checked(tmp_path):
    cases = [
        (
            "gather out of range",
            [N("Gather", ["s", "i"], ["g"]), N("Reshape", ["x", "g"], ["y"])],
            [_i64("s", [1, 3]), _i64("i", [5])],
            ["Gather", "out of range"],
        ),
        ("two -1 in a reshape", [N("Reshape", ["x", "s"], ["y"])], [_i64("s", [-1, -1])], ["Reshape", "-1"]),
        (
            "integer division by zero",
            [N("Div", ["a", "z"], ["q"]), N("Reshape", ["x", "q"], ["y"])],
            [_i64("a", [3]), _i64("z", [0])],
            ["Div", "division by zero"],
        ),
        (
            "cast to a string",
            [N("Cast", ["a"], ["c"], to=TensorProto.STRING), N("Reshape", ["x", "c"], ["y"])],
            [_i64("a", [3])],
            ["Cast", "data type"],
        ),
        (
            "transpose perm",
            [N("Transpose", ["a"], ["c"], perm=[0, 0]), N("Reshape", ["x", "c"], ["y"])],
            [_i64("a", [[3]])],
            ["Transpose", "perm"],
        ),
        (
            "slice steps of zero",
            [N("Slice", ["a", "s", "e", "ax", "z"], ["c"]), N("Reshape", ["x", "c"], ["y"])],
            [_i64("a", [1, 3]), _i64("s", [0]), _i64("e", [2]), _i64("ax", [0]), _i64("z", [0])],
            ["Slice", "step"],
        ),
        (
            "a cycle",
            [N("Relu", ["b"], ["a"]), N("Relu", ["a"], ["b"]), N("Relu", ["x"], ["y"])],
            [],
            ["cycle"],
        ),
        ("an output produced twice", [N("Relu", ["x"], ["y"]), N("Relu", ["x"], ["y"])], [], ["produced"]),
        ("an unknown domain", [N("Relu", ["x"], ["y"], domain="com.evil")], [], ["domain"]),
        (
            "control flow",
            [
                N(
                    "If",
                    ["c"],
                    ["y"],
                    then_branch=helper.make_graph([], "t", [], []),
                    else_branch=helper.make_graph([], "e", [], []),
                )
            ],
            [numpy_helper.from_array(numpy.array(True), "c")],
            ["If"],
        ),
        (
            "shape from the data values",
            [N("Cast", ["x"], ["xi"], to=TensorProto.INT64), N("Reshape", ["x", "xi"], ["y"])],
            [],
            ["Cast"],
        ),
    ]
    paths = [onnx_file(tmp_path / f"m{k}.onnx", nodes, inits) for k, (_, nodes, inits, _) in enumerate(cases)]
    reports = attacks([call("convert", p) for p in paths])
    for (case, *_, fragments), p, r in zip(cases, paths, reports, strict=True):
        assert r["type"] == "CheckpointError", (case, r)
        refused(r, p.name, *fragments)


def test_long_graphs_walk_in_linear_time(tmp_path):
    """20000 folded nodes, 20000 layout nodes on the data, and a graph listed in reverse order."""
    n = 20000
    fold = [N("Identity", ["s" if k == 0 else f"s{k}"], [f"s{k + 1}"]) for k in range(n)]
    fold.append(N("Reshape", ["x", f"s{n}"], ["y"]))
    p1 = onnx_file(tmp_path / "fold.onnx", fold, [_i64("s", [1, 3])])
    lay = []
    for k in range(n // 2):
        lay += [
            N("Unsqueeze", [f"d{2 * k}" if k else "x", "ax"], [f"d{2 * k + 1}"]),
            N("Squeeze", [f"d{2 * k + 1}", "ax"], [f"d{2 * k + 2}"]),
        ]
    lay.append(N("Relu", [f"d{n}"], ["y"]))
    p2 = onnx_file(tmp_path / "layout.onnx", lay, [_i64("ax", [1])])
    p3 = onnx_file(tmp_path / "reversed.onnx", fold[::-1], [_i64("s", [1, 3])])
    for r in attacks([call("convert", p) for p in (p1, p2, p3)]):
        assert r["ok"] and r["seconds"] < 5, r


# =========================================================================== Keras archives


def _keras_weights_h5(weights):
    """Keras 3's model.weights.h5 layout: layers/<key>/vars/<i> with the layer name in vars' 'name'."""
    bio = io.BytesIO()
    with h5py.File(bio, "w") as f:
        g = f.create_group("layers")
        for name, arrays in weights.items():
            v = g.create_group(name).create_group("vars")
            v.attrs["name"] = name
            for i, a in enumerate(arrays):
                v[str(i)] = a
        f.create_group("vars").attrs["name"] = "m"
    return bio.getvalue()


def keras_archive(path, config, weights, *, compress_weights=False, members=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", config if isinstance(config, (str, bytes)) else json.dumps(config))
        z.writestr(
            "model.weights.h5",
            _keras_weights_h5(weights),
            compress_type=zipfile.ZIP_DEFLATED if compress_weights else zipfile.ZIP_STORED,
        )
        for k, v in (members or {}).items():
            z.writestr(k, v)
    return path


def _dense_config(**over):
    dense = {"name": "dense", "units": 2, "activation": "linear", "use_bias": True}
    dense.update(over)
    return {
        "class_name": "Sequential",
        "config": {
            "name": "m",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
                {"class_name": "Dense", "config": dense},
            ],
        },
    }


_DENSE_W = {"dense": [numpy.ones((3, 2), "f4"), numpy.zeros(2, "f4")]}


def test_a_hand_written_archive_converts(tmp_path):
    p = keras_archive(tmp_path / "m.keras", _dense_config(), _DENSE_W)
    params, meta = weights_io.convert(p)
    assert meta["architecture"] == [{"name": "fc1", "type": "fc", "out_features": 2, "bias": True}]
    numpy.testing.assert_array_equal(params["fc1.weight"], numpy.ones((2, 3), "f4"))
    assert weights_io.detect_format(p) == "keras" and meta["keras"]["keras_version"] == "3.15.1"


def test_hostile_keras_archives(tmp_path):
    deep = "[" * 200000 + "]" * 200000
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w") as z:  # model.weights.h5 claims 256 MB (zeros deflate ~1000:1)
        z.writestr("config.json", json.dumps(_dense_config()))
        info = zipfile.ZipInfo("model.weights.h5")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            chunk = bytes(1 << 24)
            for _ in range(16):
                f.write(chunk)
    cases = [
        (keras_archive(tmp_path / "json.keras", "{not json", _DENSE_W), ["config.json", "JSON"]),
        (keras_archive(tmp_path / "deep.keras", deep, _DENSE_W), ["config.json", "nested"]),
        (keras_archive(tmp_path / "list.keras", "[1, 2]", _DENSE_W), ["config.json", "object"]),
        (bomb, ["model.weights.h5", "bytes or more"]),
        (keras_archive(tmp_path / "missing.keras", _dense_config(), {}), ["dense", "no weights"]),
        (keras_archive(tmp_path / "units.keras", _dense_config(units="two"), _DENSE_W), ["dense", "units"]),
        (keras_archive(tmp_path / "huge.keras", _dense_config(units=1 << 40), _DENSE_W), ["dense", "units"]),
        (
            keras_archive(tmp_path / "act.keras", _dense_config(activation="gelu"), _DENSE_W),
            ["dense", "gelu"],
        ),
        (keras_archive(tmp_path / "shape.keras", _dense_config(units=5), _DENSE_W), ["dense", "shape"]),
        (
            keras_archive(tmp_path / "cls.keras", {"class_name": "os.system", "config": {"layers": []}}, {}),
            ["Sequential"],
        ),
    ]
    reports = attacks([call("convert", p) for p, _ in cases])
    for (p, fragments), r in zip(cases, reports, strict=True):
        refused(r, p.name, *fragments)
        assert r["seconds"] < 10 and r["maxrss_mb"] < 1200, r


def _functional(layers, inp="in", out="d2"):
    return {
        "class_name": "Functional",
        "config": {"name": "f", "layers": layers, "input_layers": [inp, 0, 0], "output_layers": [out, 0, 0]},
    }


def _fl(name, cls, src, **conf):
    args = [{"class_name": "__keras_tensor__", "config": {"keras_history": [s, 0, 0]}} for s in src]
    node = [{"args": args, "kwargs": {}}] if src else []
    return {"class_name": cls, "name": name, "config": dict(name=name, **conf), "inbound_nodes": node}


def test_hostile_functional_graphs(tmp_path):
    inp = _fl("in", "InputLayer", [], batch_shape=[None, 3])
    d = dict(units=3, activation="linear", use_bias=False)
    w = {"d1": [numpy.ones((3, 3), "f4")], "d2": [numpy.ones((3, 3), "f4")]}
    cases = [
        (_functional([inp, _fl("d1", "Dense", ["d2"], **d), _fl("d2", "Dense", ["d1"], **d)]), ["chain"]),
        (_functional([inp, _fl("d1", "Dense", ["in"], **d), _fl("d2", "Dense", ["in"], **d)]), ["branches"]),
        (_functional([inp, _fl("d1", "Dense", ["in"], **d), _fl("d2", "Add", ["in", "d1"])]), ["joins"]),
        (
            _functional(
                [
                    inp,
                    _fl("d1", "Dense", ["in"], **d),
                    dict(_fl("d2", "Dense", ["d1"], **d), inbound_nodes=[[], []]),
                ]
            ),
            ["called 2 times"],
        ),
        (_functional([inp, _fl("d1", "Dense", ["in"], **d)], out="nowhere"), ["nowhere"]),
    ]
    paths = [keras_archive(tmp_path / f"f{k}.keras", cfg, w) for k, (cfg, _) in enumerate(cases)]
    reports = attacks([call("convert", p) for p in paths])
    for (_, fragments), p, r in zip(cases, paths, reports, strict=True):
        refused(r, p.name, *fragments)


def test_many_keras_layers_convert_in_linear_time(tmp_path):
    n = 20000
    cfg = _dense_config()
    cfg["config"]["layers"] += [{"class_name": "ReLU", "config": {"name": f"r{k}"}} for k in range(n)]
    p = keras_archive(tmp_path / "relus.keras", cfg, _DENSE_W)
    r = attacks([call("convert", p)])[0]
    assert r["ok"] and r["seconds"] < 5, r


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=6),
    st.lists(st.integers(-(2**40), 2**40), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_KEYS = {
    "Conv2D": [
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "dilation_rate",
        "groups",
        "activation",
        "use_bias",
        "data_format",
    ],
    "MaxPooling2D": ["pool_size", "strides", "padding"],
    "Dense": ["units", "activation", "use_bias"],
    "LSTM": ["units", "activation", "recurrent_activation", "return_sequences", "go_backwards", "use_bias"],
    "Dropout": ["rate"],
    "InputLayer": ["batch_shape"],
}


def _cnn_lstm_config():
    def td(cls, **c):
        layer = {"class_name": cls, "config": dict(name=cls.lower(), **c)}
        return {"class_name": "TimeDistributed", "config": {"name": f"td_{cls}", "layer": layer}}

    return {
        "class_name": "Sequential",
        "config": {
            "name": "m",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 2, 4, 4, 1], "name": "in"}},
                td(
                    "Conv2D",
                    filters=2,
                    kernel_size=[3, 3],
                    strides=[1, 1],
                    padding="same",
                    dilation_rate=[1, 1],
                    groups=1,
                    activation="relu",
                    use_bias=True,
                    data_format="channels_last",
                ),
                td("MaxPooling2D", pool_size=[2, 2], strides=[2, 2], padding="valid"),
                td("Flatten"),
                {"class_name": "Dropout", "config": {"name": "dropout", "rate": 0.5}},
                {
                    "class_name": "LSTM",
                    "config": {
                        "name": "lstm",
                        "units": 2,
                        "activation": "tanh",
                        "recurrent_activation": "sigmoid",
                        "return_sequences": True,
                        "use_bias": True,
                    },
                },
                {
                    "class_name": "Dense",
                    "config": {"name": "dense", "units": 2, "activation": "linear", "use_bias": True},
                },
            ],
        },
    }


_CNN_LSTM_W = {
    "td_Conv2D": [numpy.ones((3, 3, 1, 2), "f4"), numpy.zeros(2, "f4")],
    "lstm": [numpy.ones((8, 8), "f4"), numpy.ones((2, 8), "f4"), numpy.zeros(8, "f4")],
    "dense": [numpy.ones((2, 2), "f4"), numpy.zeros(2, "f4")],
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hostile_keras_config_fuzz(tmp_path, data):
    """Any value of any field of a small CNN-LSTM config: a model or a CheckpointError, nothing else."""
    cfg = _cnn_lstm_config()
    layers = cfg["config"]["layers"]
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.integers(0, len(layers) - 1))
        L = layers[k]
        conf = L["config"]["layer"]["config"] if L["class_name"] == "TimeDistributed" else L["config"]
        cls = L["config"]["layer"]["class_name"] if L["class_name"] == "TimeDistributed" else L["class_name"]
        if cls in _KEYS:
            conf[data.draw(st.sampled_from(_KEYS[cls]))] = data.draw(_VALUES)
    p = keras_archive(tmp_path / "fuzz.keras", cfg, _CNN_LSTM_W)
    try:
        weights_io.convert(p)
    except weights_io.CheckpointError:
        pass
