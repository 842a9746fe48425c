"""ground(): bad input gives a clear error that names the problem (no traceback from deep inside)."""

import numpy
import pytest

from ebr_ref.grounding.ground import ground
from ebr_ref.models import sequential

CNN_LSTM = [
    ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 8}),
    ("relu7", "relu"),
    ("lstm1", "lstm", {"hidden": 4}),
    ("lstm1_drop", "dropout"),
    ("fc8", "fc", {"out_features": 3}),
]
CNN = CNN_LSTM[:6] + [("fc8", "fc", {"out_features": 3})]


@pytest.fixture(scope="module")
def cnn_lstm():
    return sequential(CNN_LSTM, (3, 8, 8), seed=0xE1)


@pytest.fixture(scope="module")
def cnn():
    return sequential(CNN, (3, 8, 8), seed=0xE2)


@pytest.fixture(scope="module")
def clip():
    return numpy.random.default_rng(0xE3).uniform(0.0, 1.0, (3, 3, 8, 8))


def run(model, clip, target=1, **kw):
    kw.setdefault("method", "EB-R" if model.is_recurrent else "EB")
    kw.setdefault("layer", "conv1")
    return ground(model, clip, target, **kw)


def test_valid_call_runs(cnn_lstm, cnn, clip):
    assert run(cnn_lstm, clip).maps.shape == (3, 8, 8)
    assert run(cnn, clip).maps.shape == (3, 8, 8)


# ---- the clip ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda c: c[:, :, :7], r"clip must have shape \(T, 3, 8, 8\), got \(3, 3, 7, 8\)"),
        (lambda c: c[:, :2], r"clip must have shape \(T, 3, 8, 8\)"),
        (lambda c: c[0], r"clip must have shape \(T, 3, 8, 8\), got \(3, 8, 8\)"),
        (lambda c: c[None], r"clip must have shape"),
        (lambda c: c[:0], r"no frames \(T = 0\)"),
    ],
    ids=["wrong-width", "wrong-channels", "one-frame-3d", "5d", "T=0"],
)
def test_clip_shape(cnn_lstm, clip, make, match):
    with pytest.raises(ValueError, match=match):
        run(cnn_lstm, make(clip))


@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool"])
def test_clip_must_be_floating(cnn_lstm, clip, dtype):
    with pytest.raises(TypeError, match=f"clip must be a floating-point array.*{dtype}"):
        run(cnn_lstm, (clip * 255).astype(dtype))


def test_clip_must_be_an_array(cnn_lstm, clip):
    with pytest.raises(TypeError, match="clip must be a floating-point array.*list"):
        run(cnn_lstm, clip.tolist())


@pytest.mark.parametrize("bad", [numpy.nan, numpy.inf, -numpy.inf])
def test_clip_must_be_finite(cnn_lstm, cnn, clip, bad):
    c = clip.copy()
    c[1, 2, 3, 4] = bad
    for model in (cnn_lstm, cnn):
        with pytest.raises(ValueError, match="NaN or inf"):
            run(model, c)


# ---- the target ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [3, 17, -1, [0, 3], [-2, 1]], ids=str)
def test_target_out_of_range(cnn_lstm, clip, target):
    with pytest.raises(ValueError, match=r"target -?\d+ is out of range for a model with 3 classes"):
        run(cnn_lstm, clip, target)


@pytest.mark.parametrize("target", [1.0, 1.5, "1", True, [0, 1.0], [[0, 1]]], ids=repr)
def test_target_must_be_an_int(cnn_lstm, clip, target):
    with pytest.raises(TypeError, match="target must be a class index"):
        run(cnn_lstm, clip, target)


def test_target_none(cnn_lstm, clip):
    with pytest.raises(TypeError, match="target must be a class index"):
        run(cnn_lstm, clip, None)


def test_target_empty_list(cnn_lstm, clip):
    with pytest.raises(ValueError, match="empty list of classes"):
        run(cnn_lstm, clip, [])


def test_target_numpy_integers_are_accepted(cnn_lstm, clip):
    assert run(cnn_lstm, clip, numpy.int64(2)).targets == [2]
    assert run(cnn_lstm, clip, numpy.array([0, 2])).maps.shape == (2, 3, 8, 8)


# ---- the read-out layer ------------------------------------------------------------------------------------
def test_unknown_layer_name(cnn_lstm, clip):
    with pytest.raises(ValueError, match=r"unknown layer name 'conv9'.*input, conv1, relu1"):
        run(cnn_lstm, clip, layer="conv9")


@pytest.mark.parametrize("layer", ["lstm1", "lstm1_drop", "fc8"])
def test_readout_in_the_sequence_part(cnn_lstm, clip, layer):
    with pytest.raises(ValueError, match=f"read-out layer '{layer}' is in the sequence part.*'relu7'"):
        run(cnn_lstm, clip, layer=layer)


@pytest.mark.parametrize("method", ["EB", "cEB", "BP"])
def test_readout_at_the_classifier_output(cnn, clip, method):
    with pytest.raises(ValueError, match="read-out layer 'fc8' is the classifier's output"):
        run(cnn, clip, method=method, layer="fc8")


# ---- method and rule ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_recurrent_method_on_a_cnn(cnn, clip, method):
    with pytest.raises(ValueError, match=f"method {method} needs a CNN-LSTM model.*use {method[:-2]}"):
        run(cnn, clip, method=method)


@pytest.mark.parametrize("method", ["EB", "cEB", "BP"])
def test_frame_method_on_a_cnn_lstm(cnn_lstm, clip, method):
    with pytest.raises(
        ValueError, match=f"method {method} is for a per-frame CNN classifier.*use {method}-R"
    ):
        run(cnn_lstm, clip, method=method)


@pytest.mark.parametrize("method", ["ceb-r", "EBR", "gradcam", ""])
def test_unknown_method(cnn_lstm, clip, method):
    with pytest.raises(ValueError, match=f"unknown method '{method}'.*cEB-R"):
        run(cnn_lstm, clip, method=method)


@pytest.mark.parametrize("rule", ["EB", "lrp", None])
def test_unknown_lstm_rule(cnn_lstm, clip, rule):
    with pytest.raises(ValueError, match=f"unknown lstm_rule {rule!r}.*'caffe' or 'eb'"):
        run(cnn_lstm, clip, lstm_rule=rule)


# ---- seed steps, chunks, markers, dtype ------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed_steps, match",
    [
        ("first", "seed_steps must be 'last', 'all' or a list of steps, got 'first'"),
        ([], "seed_steps: an empty list of steps"),
        ([3], r"seed_steps \[3\] are out of range for a clip of 3 frames"),
        ([0, -1], r"seed_steps \[-1\] are out of range"),
    ],
    ids=["unknown-name", "empty", "too-late", "negative"],
)
def test_bad_seed_steps(cnn_lstm, clip, seed_steps, match):
    with pytest.raises(ValueError, match=match):
        run(cnn_lstm, clip, seed_steps=seed_steps)


@pytest.mark.parametrize("seed_steps", [2, None, [0.5], [True], ["1"]], ids=repr)
def test_seed_steps_must_be_ints(cnn_lstm, clip, seed_steps):
    with pytest.raises((TypeError, ValueError), match="seed_steps"):
        run(cnn_lstm, clip, seed_steps=seed_steps)


@pytest.mark.parametrize("chunk_size", [0, -2, 2.0, "4", "Auto", None], ids=repr)
def test_bad_chunk_size(cnn_lstm, cnn, clip, chunk_size):
    for model in (cnn_lstm, cnn):
        with pytest.raises(
            ValueError, match=f"chunk_size must be a positive int or 'auto', got {chunk_size!r}"
        ):
            run(model, clip, chunk_size=chunk_size)


def test_chunk_size_bool(cnn_lstm, clip):
    with pytest.raises(ValueError, match="chunk_size"):
        run(cnn_lstm, clip, chunk_size=True)


def test_bad_clip_markers(cnn_lstm, clip):
    with pytest.raises(ValueError, match=r"cont must have shape \(3,\), got \(2,\)"):
        run(cnn_lstm, clip, cont=numpy.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="cont .* must hold only 0 .* and 1"):
        run(cnn_lstm, clip, cont=numpy.array([0.0, 2.0, 1.0]))


def test_bad_dtype(cnn_lstm, clip):
    with pytest.raises(TypeError, match="must be floating, got int32"):
        run(cnn_lstm, clip, dtype="int32")


def test_eb_rule_on_tanh_lstm_without_permission(clip):
    layers = [
        lay if lay[0] != "lstm1" else ("lstm1", "lstm", {"hidden": 4, "cell_act": "tanh"}) for lay in CNN_LSTM
    ]
    model = sequential(layers, (3, 8, 8), seed=0xE4)
    with pytest.raises(ValueError, match="rule 'eb' needs cell_act='relu'.*allow_tanh"):
        run(model, clip, lstm_rule="eb")
    assert run(model, clip, lstm_rule="eb", allow_tanh_eb=True).maps.shape == (3, 8, 8)
