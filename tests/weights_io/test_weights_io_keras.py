"""Keras HDF5: files written by keras 3.15.1 (tests/data/weights_io, see make_keras_fixtures.py) and
Keras-1/2 layouts written with h5py; converted weights reproduce Keras' own outputs."""

import json
import os
import shutil

import numpy
import pytest

from tests.oracles.weights_io_ref import lstm_ref, torch_spec_forward
from tests.paths import TEST_DATA
from weights_io import CheckpointError, convert, read_tensors

h5py = pytest.importorskip("h5py")
torch = pytest.importorskip("torch")

DATA = str(TEST_DATA / "weights_io")
VGG_FILES = ["keras3_vgg.weights.h5", "keras3_vgg_full.h5", "keras_legacy_vgg.h5"]
LSTM_FILES = [("keras_lstm_relu_full.h5", "relu"), ("keras3_lstm.weights.h5", "tanh")]


@pytest.fixture(scope="module")
def ref():
    with numpy.load(os.path.join(DATA, "keras_outputs.npz")) as f:
        return {k: f[k] for k in f.files}


def _softmax(z):
    e = numpy.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("name", VGG_FILES + [f for f, _ in LSTM_FILES])
def test_keras_files_read_like_h5py(name):
    path = os.path.join(DATA, name)
    got = read_tensors(path)
    ref = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: ref.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        numpy.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype


@pytest.mark.parametrize("name", VGG_FILES)
def test_keras_vgg16_reproduces_keras(ref, name):
    params, meta = convert(os.path.join(DATA, name), input_size=64)
    assert meta["source"]["converter"] == "keras_vgg16"
    assert meta["pool_rounding"] == "floor" and meta["output"] == {"type": "softmax", "axis": -1}
    assert meta["preprocessing"]["channel_order"] == "BGR" and meta["preprocessing"]["name"] == "keras_vgg16"
    assert meta["transforms"]["conv1_1.weight"] == "kernel (kH, kW, iC, oC) -> transpose(3, 2, 0, 1)"
    assert meta["transforms"]["fc6.weight"].startswith("kernel rows H,W,C -> reshape(2, 2, 5, 6)")
    assert meta["transforms"]["fc7.weight"] == "kernel (in, out) -> transpose"
    assert [L["name"] for L in meta["architecture"]][-6:] == [
        "flatten",
        "fc6",
        "relu6",
        "fc7",
        "relu7",
        "fc8",
    ]
    x = ref["vgg_x_nhwc"].transpose(0, 3, 1, 2)
    logits, _ = torch_spec_forward(meta["architecture"], params, x)
    probs = _softmax(logits)
    assert numpy.linalg.norm(probs - ref["vgg_probs"]) <= 1e-5 * numpy.linalg.norm(ref["vgg_probs"])


def test_keras_fc1_permutation_is_needed(ref):
    """Without the H,W,C -> C,H,W row permutation the first dense layer computes something else."""
    path = os.path.join(DATA, "keras3_vgg.weights.h5")
    params, meta = convert(path, input_size=64)
    K = read_tensors(path)["layers/dense/vars/0"]
    naive = dict(params, **{"fc6.weight": numpy.ascontiguousarray(K.T)})
    x = ref["vgg_x_nhwc"].transpose(0, 3, 1, 2)
    wrong = _softmax(torch_spec_forward(meta["architecture"], naive, x)[0])
    assert numpy.linalg.norm(wrong - ref["vgg_probs"]) > 1e-3 * numpy.linalg.norm(ref["vgg_probs"])
    assert not numpy.array_equal(params["fc6.weight"], K.T)


@pytest.mark.parametrize("name,act", LSTM_FILES)
def test_keras_lstm_reproduces_keras(ref, name, act):
    params, meta = convert(os.path.join(DATA, name))
    assert meta["source"]["converter"] == "keras_lstm"
    assert meta["cell_act"] == act and meta["source_gate_order"] == "ifco" and meta["gate_order"] == "ifog"
    x = ref[f"lstm_{act}_x"].astype("f8")  # (N, T, D), batch-major
    h = lstm_ref(
        x.transpose(1, 0, 2), *(params[f"lstm1.{k}"].astype("f8") for k in ("W_x", "b", "W_h")), cell_act=act
    )
    want = ref[f"lstm_{act}_h"]
    assert numpy.linalg.norm(h.transpose(1, 0, 2) - want) <= 1e-5 * numpy.linalg.norm(want)


def test_keras_lstm_cell_act_must_agree_with_config():
    with pytest.raises(CheckpointError, match="activation='relu'"):
        convert(os.path.join(DATA, "keras_lstm_relu_full.h5"), cell_act="tanh")


def test_keras_lstm_hard_sigmoid_is_refused(tmp_path):
    p = tmp_path / "hs.h5"
    shutil.copy(os.path.join(DATA, "keras_lstm_relu_full.h5"), p)
    with h5py.File(p, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][1]["config"]["recurrent_activation"] = "hard_sigmoid"
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(CheckpointError, match="hard_sigmoid"):
        convert(p)


def _keras1_vgg_file(path, src):
    """The layout of Keras applications' vgg16_weights_tf_dim_ordering_tf_kernels.h5 (Keras-1 names),
    with layer_names split into chunks as Keras does for long lists."""
    params = {}
    with h5py.File(src, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        for n in names:
            wn = [w.decode() if isinstance(w, bytes) else w for w in f[n].attrs["weight_names"]]
            params[n] = [f[n][w][()] for w in wn]
    with h5py.File(path, "w") as f:
        half = len(names) // 2
        f.attrs["layer_names0"] = numpy.array([n.encode() for n in names[:half]])
        f.attrs["layer_names1"] = numpy.array([n.encode() for n in names[half:]])
        for n in names:
            g = f.create_group(n)
            wnames = [f"{n}_W_1:0", f"{n}_b_1:0"][: len(params[n])]
            g.attrs["weight_names"] = numpy.array([w.encode() for w in wnames])
            for w, a in zip(wnames, params[n]):
                g[w] = a


def test_keras1_style_vgg16_file(tmp_path, ref):
    p = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    _keras1_vgg_file(p, os.path.join(DATA, "keras_legacy_vgg.h5"))
    params, meta = convert(p, input_size=64)
    assert meta["name_map"]["conv1_1.weight"] == "block1_conv1/block1_conv1_W_1:0"
    x = ref["vgg_x_nhwc"].transpose(0, 3, 1, 2)
    probs = _softmax(torch_spec_forward(meta["architecture"], params, x)[0])
    assert numpy.linalg.norm(probs - ref["vgg_probs"]) <= 1e-5 * numpy.linalg.norm(ref["vgg_probs"])


def test_keras1_twelve_array_lstm(tmp_path):
    src = os.path.join(DATA, "keras3_lstm.weights.h5")
    want, _ = convert(src)
    t = read_tensors(src)
    K, R, b = (t[f"layers/lstm/cell/vars/{i}"] for i in range(3))
    H = R.shape[0]
    cols = {g: slice(k * H, (k + 1) * H) for k, g in enumerate("ifco")}  # Keras 2+ column blocks
    p = tmp_path / "k1.h5"
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = numpy.array([b"lstm_1"])
        g = f.create_group("lstm_1")
        names = []
        for gate in "icfo":  # Keras 1 order: i, c, f, o
            for kind, arr in (("W", K[:, cols[gate]]), ("U", R[:, cols[gate]]), ("b", b[cols[gate]])):
                names.append(f"lstm_1_{kind}_{gate}:0")
                g[names[-1]] = arr
        g.attrs["weight_names"] = numpy.array([n.encode() for n in names])
    got, meta = convert(p, source="keras_lstm")
    for k in ("W_x", "W_h", "b"):
        numpy.testing.assert_array_equal(got[f"lstm1.{k}"], want[f"lstm1.{k}"])
    assert "12 arrays" in meta["transforms"]["lstm1.W_x"]


def test_keras_missing_layer_and_wrong_shape(tmp_path):
    p = tmp_path / "bad.h5"
    shutil.copy(os.path.join(DATA, "keras_legacy_vgg.h5"), p)
    with h5py.File(p, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = numpy.array([n.encode() for n in names if n != "block3_conv2"])
    with pytest.raises(CheckpointError, match="block3_conv2"):
        convert(p, source="keras_vgg16", input_size=64)
    with pytest.raises(
        CheckpointError,
        match=r"fc1/vgg16/fc1/kernel \(for fc6\.weight\): expected shape \(80, 6\), found \(20, 6\)",
    ):
        convert(os.path.join(DATA, "keras_legacy_vgg.h5"), source="keras_vgg16", input_size=128)
