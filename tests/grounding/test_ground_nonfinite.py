"""ground() and ground_caption() never return NaN or infinite maps, evidence or probabilities silently.

Non-finite parameters are refused when a model is loaded (tests/models/test_io_hostile.py), but a model
built in memory can hold them, and finite float32 weights can overflow; either way the drivers raise
NonFiniteResultError (a ValueError) instead of returning maps whose evidence is 0 or NaN everywhere (one
NaN in a bias gave NaN probabilities, evidence of exactly 0 and the whole clip as the detected segment).
"""

import numpy
import pytest

from ebr_ref.grounding.ground import NonFiniteResultError, ground
from ebr_ref.models import sequential

CNN_LSTM = [
    ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 8}),
    ("relu7", "relu"),
    ("lstm1", "lstm", {"hidden": 4}),
    ("fc8", "fc", {"out_features": 3}),
]
CNN = CNN_LSTM[:6] + [("fc8", "fc", {"out_features": 3})]


@pytest.fixture(scope="module")
def clip():
    return numpy.random.default_rng(0x4A4).uniform(0.0, 1.0, (4, 3, 8, 8))


def _with(model, name, edit):
    p = model.params[name].copy()
    edit(p)
    layers = CNN_LSTM if model.is_recurrent else CNN
    return sequential(layers, model.input_shape, params={**model.params, name: p})


@pytest.mark.parametrize(
    "layers, method", [(CNN_LSTM, "cEB-R"), (CNN_LSTM, "BP-R"), (CNN, "cEB"), (CNN, "EB")]
)
def test_a_nan_bias_is_an_error_not_a_detection(layers, method, clip):
    model = sequential(layers, (3, 8, 8), seed=0x4A5)
    assert numpy.isfinite(ground(model, clip, 1, method=method, layer="conv1").maps).all()
    bad = _with(model, "fc8.bias", lambda b: b.__setitem__(2, numpy.nan))
    with (
        numpy.errstate(invalid="ignore"),
        pytest.raises(NonFiniteResultError, match="ground: NaN or infinite values in the probs"),
    ):
        ground(bad, clip, 1, method=method, layer="conv1")


def test_a_float32_overflow_is_an_error(clip):
    model = sequential(CNN_LSTM, (3, 8, 8), seed=0x4A6).astype("float32")
    big = _with(model, "conv1.weight", lambda w: w.__imul__(numpy.float32(1e30)))
    big = _with(big, "fc7.weight", lambda w: w.__imul__(numpy.float32(1e30)))  # activations of 1e60: inf
    assert all(numpy.isfinite(v).all() for v in big.params.values())
    with (
        numpy.errstate(over="ignore", invalid="ignore"),
        pytest.raises(NonFiniteResultError, match="overflowed"),
    ):
        ground(big, clip, [0, 1], method="cEB-R", layer="conv1")
    assert issubclass(NonFiniteResultError, ValueError)


def test_ground_caption_checks_its_result(clip):
    from ebr_ref.grounding.ground_caption import ground_caption
    from ebr_ref.models.caption import small_captioner

    m = small_captioner(
        ["a", "red", "square"], input_size=8, channels=(2, 2, 2), fc=4, embed=3, hidden=(3, 3), seed=0x4A7
    )
    assert numpy.isfinite(ground_caption(m, clip, "red", caption="a red square").maps).all()
    m.params["embed.weight"] = m.params["embed.weight"].copy()
    m.params["embed.weight"][:] = numpy.nan
    with numpy.errstate(invalid="ignore"), pytest.raises(NonFiniteResultError, match="ground_caption: NaN"):
        ground_caption(m, clip, "red", caption="a red square")
