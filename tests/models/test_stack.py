"""ebr_ref.models.stack: the layer stack both models own, and EB / gradient over its records.

The EB example is the one of docs/method.md §2 (3 inputs -> fc1 -> ReLU -> fc2),
with a second target whose classifier row has no positive weight, so that its
whole seed is lost at fc2; every expected number is worked out by hand in the
comments.
"""

import numpy
import pytest

from ebr_ref.models import sequential
from ebr_ref.models.caption import CaptionModel, captioner
from ebr_ref.models.model import Model
from ebr_ref.models.stack import EBPass, LayerStack, run_eb, run_grad

LAYERS = [("fc1", "fc", {"out_features": 2}), ("relu1", "relu"), ("fc2", "fc", {"out_features": 2})]
PARAMS = {
    "fc1.weight": numpy.array([[1.0, -1.0, 2.0], [0.5, 1.0, -1.0]]),
    "fc1.bias": numpy.array([0.5, 0.0]),
    "fc2.weight": numpy.array([[2.0, -1.0], [-1.0, -1.0]]),
    "fc2.bias": numpy.array([0.0, 0.0]),
}


@pytest.fixture
def mlp():
    return sequential(LAYERS, (3,), params=PARAMS)


def test_run_eb_returns_the_signal_and_the_mass_lost_per_layer(mlp):
    x = numpy.array([[1.0, 2.0, 1.0]])
    logits, records = mlp.run_forward(x, 0, 3, keep=True)
    assert logits.tolist() == [[1.5, -3.0]]  # h = relu([1 - 2 + 2 + 0.5, 0.5 + 2 - 1]) = [1.5, 1.5]
    seed = numpy.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (K=2, N=1, 2): class 0, class 1
    passed = run_eb(records, seed)
    assert isinstance(passed, EBPass) and passed.lstm == []
    # class 0: Z = 2 * 1.5 = 3 at fc2, P_h = [1, 0]; fc1: Z_0 = 1 + 2 = 3, P_x = [1/3, 0, 2/3]
    # class 1: its row of fc2 has no positive weight, Z = 0: the seed is dropped at fc2
    assert numpy.allclose(passed.p, [[[1 / 3, 0.0, 2 / 3]], [[0.0, 0.0, 0.0]]], rtol=1e-15, atol=0)
    assert list(passed.mass) == ["fc2", "relu1", "fc1"]  # top first
    assert passed.mass["fc2"].tolist() == [0.0, 1.0]
    assert passed.mass["relu1"].tolist() == [0.0, 0.0] and passed.mass["fc1"].tolist() == [0.0, 0.0]


def test_run_grad_is_the_transposed_chain(mlp):
    x = numpy.array([[1.0, 2.0, 1.0]])
    _, records = mlp.run_forward(x, 0, 3, keep=True)
    g = run_grad(records, numpy.array([[1.0, 0.0]]))
    # d logit_0 / dh = [2, -1]; both ReLUs are open; d/dx = 2 * [1, -1, 2] - [0.5, 1, -1]
    assert g.tolist() == [[1.5, -3.0, 5.0]]


def test_run_forward_keeps_records_only_when_asked(mlp):
    x = numpy.array([[1.0, 2.0, 1.0]])
    assert mlp.run_forward(x, 0, 3)[1] == []
    y, records = mlp.run_forward(numpy.array([[1.5, -1.0]]), 1, 3, keep=True)  # from relu1 on
    assert [layer.name for layer, _ in records] == ["relu1", "fc2"] and y.tolist() == [[3.0, -1.5]]


def test_positive_weights_memo_is_the_callers():
    model = sequential(LAYERS, (3,), params=PARAMS)
    memo = {}
    W_pos = model.stack.positive_weights("fc2", negated=True, memo=memo)
    assert W_pos.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert model.stack.positive_weights("fc2", negated=True, memo=memo) is W_pos
    assert model.stack.positive_weights("fc2").tolist() == [[2.0, 0.0], [0.0, 0.0]]


def test_both_models_own_a_stack_by_composition():
    model = sequential(LAYERS, (3,), params=PARAMS)
    assert isinstance(model.stack, LayerStack) and model.stack.params is model.params
    assert model.stack.layers == model.layers and model.shapes == model.stack.shapes
    frames = [
        ("conv1", "conv", {"out_channels": 2, "kernel": 3, "padding": 1}),
        ("relu1", "relu"),
        ("flat", "flatten"),
        ("fc7", "fc", {"out_features": 4}),
        ("relu7", "relu"),
    ]
    cap = captioner(frames, ["a", "b"], (1, 4, 4), embed=3, hidden=(4, 5), seed=1)
    assert isinstance(cap.stack, LayerStack) and cap.stack.layers == cap.layers
    assert cap.stack.params is cap.params and cap.sequence_start == len(cap.layers)
    assert cap.layer_names == ("conv1", "relu1", "flat", "fc7", "relu7")
    # no method is borrowed from Model
    for name, value in vars(CaptionModel).items():
        func = getattr(value, "fget", None) or getattr(value, "__func__", None) or value
        assert getattr(func, "__qualname__", "CaptionModel").split(".")[0] != Model.__name__, name
    with pytest.raises(ValueError, match="image model"):
        captioner(frames, ["a"], (1, 4, 4), embed=3, hidden=(4, 5), pool=None, seed=1).check_clip(
            numpy.zeros((2, 1, 4, 4))
        )


def test_run_forward_rectifies_in_place_only_what_no_one_else_holds():
    layers = [
        ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
        ("relu1", "relu"),  # in place
        ("conv2", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
        ("pool2", "maxpool", {"kernel": 2}),
        ("relu2", "relu"),  # after a pooling, whose cache holds its output: not in place
        ("flat", "flatten"),
        ("fc1", "fc", {"out_features": 4}),
        ("relu3", "relu"),  # in place
        ("fc2", "fc", {"out_features": 3}),
    ]
    model = sequential(layers, (2, 6, 6), seed=3)
    x = numpy.random.default_rng(1).normal(size=(2, 2, 6, 6))
    x0 = x.copy()
    y, records = model.run_forward(x, 0, len(layers), keep=True)
    y_ref, records_ref = model.run_forward(x, 0, len(layers), keep=True, fast=False)
    numpy.testing.assert_array_equal(x, x0)  # the caller's array is never written
    numpy.testing.assert_array_equal(y, y_ref)
    for (_, cache), (_, cache_ref) in zip(records, records_ref, strict=True):
        for a, b in zip(cache, cache_ref, strict=True):  # every cache as the pure kernels leave it
            if isinstance(a, numpy.ndarray):
                numpy.testing.assert_array_equal(a, b)
    pool_cache = records[3][1]
    assert (pool_cache.y < 0).any()  # the pooling's own output keeps its negative values
    h = numpy.random.default_rng(2).normal(size=(2, 3, 6, 6))  # starting at a ReLU: the caller's input
    h0 = h.copy()
    model.run_forward(h, 1, 2)
    numpy.testing.assert_array_equal(h, h0)


def test_run_forward_takes_the_in_place_path_exactly_after_conv_and_fc(monkeypatch):
    from ebr_ref.models import stack

    layers = [
        ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
        ("relu1", "relu"),
        ("conv2", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
        ("pool2", "maxpool", {"kernel": 2}),
        ("relu2", "relu"),
        ("flat", "flatten"),
        ("fc1", "fc", {"out_features": 4}),
        ("relu3", "relu"),
        ("fc2", "fc", {"out_features": 3}),
    ]
    model = sequential(layers, (2, 6, 6), seed=3)
    seen = []
    forward_layer = stack.forward_layer

    def spy(layer, *args, overwrite_input=False, **kwargs):
        seen.append((layer.name, overwrite_input))
        return forward_layer(layer, *args, overwrite_input=overwrite_input, **kwargs)

    monkeypatch.setattr(stack, "forward_layer", spy)
    x = numpy.random.default_rng(1).normal(size=(2, 2, 6, 6))
    model.run_forward(x, 0, len(layers))
    assert [name for name, in_place in seen if in_place] == ["relu1", "relu3"]
    seen.clear()
    model.run_forward(x, 0, len(layers), fast=False)  # the reference path: never
    assert not any(in_place for _, in_place in seen)
