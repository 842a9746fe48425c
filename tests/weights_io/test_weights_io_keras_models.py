"""Keras models with their architecture, written at test time by keras 3 (torch backend, no TensorFlow):
``model.save("x.keras")`` (Keras 3's default format: a zip of config.json + model.weights.h5) and
``model.save("x.h5")`` (the legacy full-model HDF5). The converted models' outputs equal Keras' own
(float32, 1e-5; Keras cannot compute in float64 on the torch backend, so float64 files are checked for
exact weights) and grounding runs on each."""

import contextlib
import os

import numpy
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # no TensorFlow needed
import keras  # a test dependency, imported after choosing its backend

from ebr_ref.grounding import ground
from weights_io import CheckpointError, convert, detect_format, load_model, read_tensors

# keras 3.15's torch Variable.__array__ predates numpy 2's copy keyword (keras/src/backend/torch/core.py)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)
L = keras.layers
SEED = 0x4E5
T = 5
TOL = {"float32": 1e-5}


def _bias(biases):
    return "random_normal" if biases == "random" else "zeros"


def cnn(biases):
    b = _bias(biases)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=b),
            L.MaxPooling2D(2),
            L.Conv2D(4, 3, padding="same", bias_initializer=b),
            L.ReLU(),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(8, activation="relu", bias_initializer=b),
            L.Dropout(0.3),
            L.Dense(5, activation="softmax", bias_initializer=b),
        ],
        name="small_cnn",
    )


def cnn_gap(biases):
    """Functional, with valid padding, average pooling, an Activation layer and global average pooling."""
    b = _bias(biases)
    x = inp = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, activation="relu", bias_initializer=b)(x)
    x = L.AveragePooling2D(2)(x)
    x = L.Conv2D(6, 3, padding="same", bias_initializer=b)(x)
    x = L.Activation("relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5, bias_initializer=b)(x), name="gap_cnn")


def cnn_lstm(biases, last=False):
    """Functional CNN-LSTM: TimeDistributed CNN, LSTM, a Dense head at every step (or on the last step)."""
    b = _bias(biases)
    x = inp = keras.Input((T, 16, 16, 3))
    x = L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=b))(x)
    x = L.TimeDistributed(L.MaxPooling2D(2))(x)
    x = L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=b))(x)
    x = L.TimeDistributed(L.MaxPooling2D(2))(x)
    x = L.TimeDistributed(L.Flatten())(x)
    x = L.TimeDistributed(L.Dense(8, activation="relu", bias_initializer=b))(x)
    x = L.LSTM(6, return_sequences=not last, bias_initializer=b)(x)
    y = L.Dense(5, bias_initializer=b)(x)
    return keras.Model(inp, y, name="cnn_lstm")


def cnn_lstm_seq(biases):
    """Sequential CNN-LSTM whose LSTM returns only the last step, with a softmax classifier."""
    b = _bias(biases)
    return keras.Sequential(
        [
            keras.Input((T, 16, 16, 3)),
            L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=b)),
            L.TimeDistributed(L.MaxPooling2D(2)),
            L.TimeDistributed(L.Flatten()),
            L.Dense(8, activation="relu", bias_initializer=b),
            L.LSTM(6, activation="relu", bias_initializer=b),
            L.Dense(5, activation="softmax", bias_initializer=b),
        ],
        name="cnn_lstm_last",
    )


MODELS = {"cnn": cnn, "cnn_gap": cnn_gap, "cnn_lstm": cnn_lstm, "cnn_lstm_last": cnn_lstm_seq}


@contextlib.contextmanager
def floatx(dtype):
    """Keras' default float type (weights and computation) set to ``dtype`` for the block."""
    old, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old)
        keras.config.set_dtype_policy(policy)


def build(kind, biases, dtype):
    keras.utils.set_random_seed(SEED)
    with floatx(dtype):
        return MODELS[kind](biases)


def save(model, path):
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # "HDF5 is a legacy format"
    model.save(str(path))
    return path


def inputs(model, dtype):
    shape = [1 if d is None else d for d in model.input_shape]
    return numpy.random.default_rng(SEED).uniform(-1, 1, shape).astype(dtype)


def clip_of(x):
    """The engine's clip (frames, C, H, W) for a Keras batch (N, H, W, C) or (1, T, H, W, C)."""
    return (x[0] if x.ndim == 5 else x).transpose(0, 3, 1, 2)


def _rel(a, b):
    return numpy.linalg.norm(numpy.asarray(a, "f8") - b) / numpy.linalg.norm(b)


def check(model_path, kmodel, dtype, *, last=False, tol=None):
    x = inputs(kmodel, dtype)
    want = numpy.asarray(keras.ops.convert_to_numpy(kmodel.predict(x, verbose=0)), "f8")
    model = load_model(model_path)
    assert model.dtype == numpy.dtype(dtype)
    clip = clip_of(x)
    got = model.forward(clip) if model.meta["output"] else model.logits(clip)
    if x.ndim == 5:
        want = want[0]
    if last:  # Keras returns the last step only; the engine classifies every step
        assert model.meta["keras"]["sequence_output"] == "last"
        got = got[-1]
    assert got.shape == want.shape
    assert _rel(got, want) <= (tol or TOL[dtype]), _rel(got, want)
    g = ground(model, clip, 2, method="cEB-R" if model.is_recurrent else "cEB", layer="conv1_1")
    assert g.maps.shape[0] == clip.shape[0] and numpy.isfinite(g.maps).all()
    return model


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("biases", ["zero", "random"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_keras_models_match_keras_float32(tmp_path, kind, biases, fmt):
    kmodel = build(kind, biases, "float32")
    path = save(kmodel, tmp_path / f"{kind}.{fmt}")
    assert detect_format(path) == ("keras" if fmt == "keras" else "hdf5")
    params, meta = convert(path)
    assert meta["source"]["converter"] == "keras"
    assert meta["keras"]["layout"] == ("keras_v3" if fmt == "keras" else "full_model")
    assert meta["name"] == kmodel.name
    types = [L_["type"] for L_ in meta["architecture"]]
    assert types[0] == "conv" and types[-1] == "fc"
    assert ("lstm" in types) == kind.startswith("cnn_lstm")
    model = check(path, kmodel, "float32", last=kind == "cnn_lstm_last")
    if kind == "cnn_lstm_last":
        assert model.meta["cell_act"] == "relu" and model.meta["output"] == {"type": "softmax", "axis": -1}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_keras_float64_models(tmp_path, kind):
    """float64 weights stay float64 and equal Keras' variables exactly (under the documented transforms).

    Keras cannot compute in float64 on the torch backend (keras.src.backend.common.dtypes maps float64 to
    float32 in every result type but TensorFlow's: BIT64_TO_BIT32_DTYPE), so the forward is compared with
    Keras at float32 precision here; the float64 forward is checked exactly on the ONNX/torch path."""
    with floatx("float64"):
        kmodel = build(kind, "random", "float64")
        path = save(kmodel, tmp_path / f"{kind}.keras")
        params, meta = convert(path)
        assert all(v.dtype == numpy.float64 for v in params.values())
        convs = [w for w in _leaves(kmodel) if isinstance(w, L.Conv2D)]
        K = numpy.asarray(keras.ops.convert_to_numpy(convs[0].kernel))
        assert K.dtype == numpy.float64
        numpy.testing.assert_array_equal(params["conv1_1.weight"], K.transpose(3, 2, 0, 1))
        check(path, kmodel, "float64", last=kind == "cnn_lstm_last", tol=1e-6)


def _leaves(model):
    for w in model.layers:
        yield w.layer if isinstance(w, L.TimeDistributed) else w


def test_keras_archive_tensors_and_transforms(tmp_path):
    kmodel = build("cnn_lstm", "random", "float32")
    path = save(kmodel, tmp_path / "m.keras")
    t = read_tensors(path)
    assert read_tensors(path, format="keras").keys() == t.keys()
    conv_k = [k for k in t if k.endswith("/layer/vars/0") and t[k].ndim == 4][0]  # a TimeDistributed Conv2D
    assert t[conv_k].base is not None  # a view of the memory-mapped archive (the member is stored)
    params, meta = convert(path)
    assert meta["transforms"]["conv1_1.weight"] == "kernel (kH, kW, iC, oC) -> transpose(3, 2, 0, 1)"
    assert meta["transforms"]["fc6.weight"].startswith("kernel rows H,W,C -> reshape(4, 4, 4, 8)")
    assert meta["transforms"]["lstm1.W_x"].startswith("kernel: column blocks i,f,c,o")
    lstm = [w for w in kmodel.layers if isinstance(w, L.LSTM)][0]
    K, R, b = (numpy.asarray(keras.ops.convert_to_numpy(v)) for v in lstm.weights)
    H = R.shape[0]
    blocks = [0, 1, 3, 2]
    W_x = numpy.concatenate([K[:, k * H : (k + 1) * H].T for k in blocks])
    numpy.testing.assert_array_equal(params["lstm1.W_x"], W_x)
    b_want = numpy.concatenate([b[k * H : (k + 1) * H] for k in blocks])
    numpy.testing.assert_array_equal(params["lstm1.b"], b_want)
    params2, meta2 = convert(path, names="keras")
    first = [w for w in kmodel.layers if not isinstance(w, L.InputLayer)][0]
    assert meta2["architecture"][0]["name"] == first.name and first.name.startswith("time_distributed")


def test_flatten_before_lstm_permutes_the_kernel_rows(tmp_path):
    """TimeDistributed(Flatten) straight into the LSTM: the LSTM kernel's rows are H,W,C and are permuted."""
    keras.utils.set_random_seed(SEED)
    x = inp = keras.Input((T, 8, 8, 3))
    x = L.TimeDistributed(L.Conv2D(3, 3, padding="same", bias_initializer="random_normal"))(x)
    x = L.TimeDistributed(L.MaxPooling2D(2))(x)
    x = L.TimeDistributed(L.Flatten())(x)
    x = L.LSTM(4, return_sequences=True, bias_initializer="random_normal")(x)
    kmodel = keras.Model(inp, L.Dense(3)(x))
    path = save(kmodel, tmp_path / "m.keras")
    _, meta = convert(path)
    assert meta["transforms"]["lstm1.W_x"].startswith("kernel rows H,W,C -> C,H,W")
    check(path, kmodel, "float32")


def test_keras_refusals(tmp_path):
    kmodel = build("cnn", "random", "float32")
    w = tmp_path / "w.weights.h5"
    kmodel.save_weights(str(w))
    with pytest.raises(CheckpointError, match="weights only"):
        convert(w, source="keras")
    cases = []
    x = inp = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3)(x)
    cases.append((keras.Model(inp, L.BatchNormalization()(x)), r"BatchNormalization.*not supported"))
    x = inp = keras.Input((16, 16, 3))
    a = L.Conv2D(4, 3, padding="same")(x)
    cases.append((keras.Model(inp, L.Add()([a, L.Conv2D(4, 3, padding="same")(x)])), "only chains"))
    x = inp = keras.Input((16, 16, 3))
    cases.append((keras.Model(inp, L.Conv2D(4, 3, strides=2, padding="same")(x)), "asymmetrically"))
    x = inp = keras.Input((T, 6))
    cases.append((keras.Model(inp, L.Bidirectional(L.LSTM(3))(x)), "Bidirectional"))
    for k, (m, msg) in enumerate(cases):
        p = save(m, tmp_path / f"r{k}.keras")
        with pytest.raises(CheckpointError, match=msg):
            convert(p)
