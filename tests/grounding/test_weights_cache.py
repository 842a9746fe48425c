"""``weights_cache``: max(W, 0) of the fc layers kept by the caller between grounding calls.

The maps with a kept cache equal those of a call without one (float64, to
rounding), for every driver path that reads it (per-frame EB and cEB with the
negated classifier, cEB-R through the LSTM, caption grounding); the second call
reuses the entries formed by the first; an entry whose weight array was replaced
in the model is formed again, so a changed model never gets stale W+.
"""

import numpy
import pytest

from ebr_ref.grounding.ground import ground
from ebr_ref.grounding.ground_caption import ground_caption
from ebr_ref.models import sequential
from ebr_ref.models.caption import captioner

BLOCK = [
    ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc6", "fc", {"out_features": 7}),
    ("relu6", "relu"),
    ("fc7", "fc", {"out_features": 6}),
    ("relu7", "relu"),
]


def _cnn():
    return sequential(BLOCK + [("fc8", "fc", {"out_features": 5})], (2, 6, 6), seed=2)


def _rnn():
    return sequential(
        BLOCK + [("lstm1", "lstm", {"hidden": 4}), ("fc8", "fc", {"out_features": 5})], (2, 6, 6), seed=1
    )


def _clip(T=3):
    return numpy.random.default_rng(4).uniform(0, 1, (T, 2, 6, 6))


def _rel(a, b):
    return numpy.linalg.norm(a - b) / numpy.linalg.norm(b)


@pytest.mark.parametrize(
    ("make", "method", "keys"),
    [
        (_cnn, "EB", {("fc6", False), ("fc7", False), ("fc8", False)}),
        (_cnn, "cEB", {("fc6", False), ("fc7", False), ("fc8", False), ("fc8", True)}),
        (_rnn, "cEB-R", {("fc6", False), ("fc7", False), ("fc8", False), ("fc8", True)}),
    ],
)
def test_kept_cache_gives_the_same_maps_and_is_reused(make, method, keys):
    model, clip = make(), _clip()
    plain = ground(model, clip, [1, 3], method=method, layer="conv1").maps
    cache = {}
    first = ground(model, clip, [1, 3], method=method, layer="conv1", weights_cache=cache).maps
    assert keys <= set(cache)  # filled by the first call
    held = {k: v[1] for k, v in cache.items()}
    second = ground(model, clip, [1, 3], method=method, layer="conv1", weights_cache=cache).maps
    assert all(cache[k][1] is held[k] for k in held)  # reused, not formed again
    assert _rel(first, plain) < 1e-12 and _rel(second, plain) < 1e-12
    for k in held:  # what is kept is max(±W, 0) of the model's own layer
        W = model.params[f"{k[0]}.weight"]
        numpy.testing.assert_array_equal(held[k], numpy.maximum(-W if k[1] else W, 0))


def test_replaced_weights_are_not_served_stale():
    model, clip = _cnn(), _clip()
    cache = {}
    ground(model, clip, 2, method="EB", layer="conv1", weights_cache=cache)
    model.params["fc6.weight"] = model.params["fc6.weight"][::-1].copy()  # another array under the name
    fresh = ground(model, clip, 2, method="EB", layer="conv1").maps
    kept = ground(model, clip, 2, method="EB", layer="conv1", weights_cache=cache).maps
    assert _rel(kept, fresh) < 1e-12
    assert cache[("fc6", False)][0] is model.params["fc6.weight"]


def test_one_cache_for_two_models_stays_correct():
    a, b, clip = _cnn(), sequential(BLOCK + [("fc8", "fc", {"out_features": 5})], (2, 6, 6), seed=9), _clip()
    cache = {}
    for model in (a, b, a):
        kept = ground(model, clip, 2, method="cEB", layer="conv1", weights_cache=cache).maps
        assert _rel(kept, ground(model, clip, 2, method="cEB", layer="conv1").maps) < 1e-12


def test_caption_grounding_reads_the_kept_cache():
    cap = captioner(BLOCK, ["a", "red", "square"], (2, 6, 6), embed=3, hidden=(4, 5), seed=3)
    clip = _clip()
    plain = ground_caption(cap, clip, ["red", "square"], caption="a red square", layer="conv1").maps
    cache = {}
    kept = ground_caption(
        cap, clip, ["red", "square"], caption="a red square", layer="conv1", weights_cache=cache
    ).maps
    assert {("fc6", False), ("fc7", False)} <= set(cache)
    assert _rel(kept, plain) < 1e-12


@pytest.mark.parametrize("bad", [[], "cache", 0])
def test_weights_cache_must_be_a_dict(bad):
    with pytest.raises(TypeError, match="weights_cache must be a dict"):
        ground(_cnn(), _clip(), 2, method="EB", layer="conv1", weights_cache=bad)


def test_the_kept_entries_are_what_the_call_reads():
    model, clip = _cnn(), _clip()
    cache = {}
    ground(model, clip, 2, method="EB", layer="conv1", weights_cache=cache)
    W = model.params["fc6.weight"]
    other = numpy.maximum(W, 0) * numpy.random.default_rng(5).uniform(0.1, 2.0, W.shape)  # not a multiple
    cache[("fc6", False)] = (W, other)  # planted under the model's own array: it must be read
    planted = ground(model, clip, 2, method="EB", layer="conv1", weights_cache=cache).maps
    plain = ground(model, clip, 2, method="EB", layer="conv1").maps
    assert _rel(planted, plain) > 1e-3


def test_caption_grounding_reuses_the_cache_on_the_next_call():
    cap = captioner(BLOCK, ["a", "red", "square"], (2, 6, 6), embed=3, hidden=(4, 5), seed=3)
    cache = {}
    ground_caption(cap, _clip(), "red", caption="a red square", layer="conv1", weights_cache=cache)
    held = {k: v[1] for k, v in cache.items()}
    ground_caption(cap, _clip(), "square", caption="a red square", layer="conv1", weights_cache=cache)
    assert held and all(cache[k][1] is held[k] for k in held)


def test_dtype_equal_to_the_models_keeps_the_same_arrays():
    model, clip = _cnn(), _clip()
    cache = {}
    ground(model, clip, 2, method="EB", layer="conv1", weights_cache=cache, dtype=model.dtype)
    held = {k: v[1] for k, v in cache.items()}
    ground(model, clip, 2, method="EB", layer="conv1", weights_cache=cache, dtype=model.dtype)
    assert held and all(cache[k][1] is held[k] for k in held)
    assert cache[("fc6", False)][0] is model.params["fc6.weight"]


@pytest.mark.parametrize(("make", "method"), [(_cnn, "BP"), (_rnn, "BP-R")])
def test_gradient_methods_leave_the_cache_empty(make, method):
    cache = {}
    ground(make(), _clip(), [1, 2], method=method, layer="conv1", weights_cache=cache)
    assert cache == {}
