"""ground_caption(): caption grounding (paper §4.2, docs/spec.md §5) against an independent float64
torch oracle.

The oracle (tests/oracles/torch_caption.py) reads only the captioner's frame
layer list, parameters and decoder settings, and recomputes the CNN, the mean
over time, the two-layer decoder with its static input, both LSTM rules, eq. 5
and the contrast with torch. Further checks need no oracle: the decoder's mass
accounting, multi-query and chunked runs, float32, the image variant, errors.
"""

import numpy
import pytest

from ebr_ref.grounding.ground_caption import ground_caption
from ebr_ref.models import sequential
from ebr_ref.models.caption import captioner

from ..conftest import rel_err

TOL = 1e-9  # docs/spec.md §7: float64 against an independent float64 oracle

WORDS = ["a", "red", "blue", "square", "disk", "and", "slides", "pulses"]
CAPTION = "a red square slides and a blue disk pulses"
FRAMES = [
    ("conv1", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("conv2", "conv", {"out_channels": 5, "kernel": 3, "padding": 1}),
    ("relu2", "relu"),
    ("pool2", "avgpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 12}),
    ("relu7", "relu"),
]
READOUTS = ("input", "conv1", "pool1", "conv2", "relu7")
QUERIES = ["square", "red square", 5]  # a word, a phrase, a caption position (the second "a")


def make(static_layer="lstm2", cell_act="relu", pool="mean", frames=FRAMES, seed=0x5C):
    return captioner(
        frames,
        WORDS,
        (3, 8, 8),
        embed=5,
        hidden=(6, 7),
        static_layer=static_layer,
        pool=pool,
        cell_act=cell_act,
        seed=seed,
        meta={"readout": "conv2"},
    )


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("torch")
    from ..oracles.torch_caption import oracle_ground_caption

    return oracle_ground_caption


@pytest.fixture(scope="module")
def clip():
    return numpy.random.default_rng(0xC11).uniform(0.0, 1.0, (4, 3, 8, 8))


def _steps(model, query):
    words = CAPTION.split()
    if isinstance(query, int):
        return [query]
    return sorted({t for w in query.split() for t, c in enumerate(words) if c == w})


def oracle_err(maps, ref):
    """Normwise error; contrastive results relative to the positive pass alone (docs/spec.md §7)."""
    scale = numpy.linalg.norm(ref["positive_maps"])
    assert scale > 0, "degenerate case: the oracle's positive pass is zero"
    return numpy.linalg.norm(maps - ref["maps"]) / scale


# ---- agreement with the oracle ---------------------------------------------------------------------
@pytest.mark.oracle
@pytest.mark.parametrize("static_layer", ["lstm1", "lstm2"])
@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_matches_oracle(oracle, clip, method, lstm_rule, static_layer):
    model = make(static_layer)
    ids = model.vocab.encode(CAPTION)
    for layer in READOUTS:
        g = ground_caption(
            model,
            clip,
            QUERIES,
            caption=CAPTION,
            method=method,
            layer=layer,
            lstm_rule=lstm_rule,
            chunk_size=3,
            channel_maps=True,
        )
        assert g.maps.shape[:2] == (3, 4) and g.maps.dtype == numpy.float64
        for k, q in enumerate(QUERIES):
            ref = oracle(model, clip, ids, _steps(model, q), method=method, layer=layer, lstm_rule=lstm_rule)
            assert g.query_steps[k] == _steps(model, q)
            assert oracle_err(g.maps[k], ref) < TOL, (layer, q)
            scale = numpy.linalg.norm(ref["positive_signal"])
            assert numpy.linalg.norm(g.channel_maps[k] - ref["signal"]) / scale < TOL
            n = g.maps[k, 0].size
            assert numpy.linalg.norm(g.evidence[k] - ref["evidence"]) < TOL * n**0.5 * numpy.linalg.norm(
                ref["positive_maps"]
            )
            assert rel_err(g.probs, ref["probs"]) < TOL
            if method != "BP-R":
                assert g.diagnostics["totals"][k] == pytest.approx(ref["total"], rel=TOL)
                assert g.diagnostics["decoder"]["words"][k] == pytest.approx(ref["words"], rel=TOL)
                assert g.diagnostics["decoder"]["video"][k] == pytest.approx(ref["video"], rel=TOL)
            if method == "cEB-R":
                assert g.diagnostics["totals_dual"][k] == pytest.approx(ref["total_dual"], rel=TOL)


@pytest.mark.oracle
@pytest.mark.parametrize("method", ["cEB-R", "BP-R"])
def test_tanh_cells_and_greedy_caption_match_oracle(oracle, clip, method):
    model = make("lstm1", cell_act="tanh", seed=0x7A)
    g = ground_caption(model, clip, [0, 1], method=method, layer="conv2", lstm_rule="caffe")
    assert g.diagnostics["decoded"] == "greedy" and len(g.caption) >= 2
    ids = model.vocab.encode(g.caption)
    for k in range(2):
        ref = oracle(model, clip, ids, [k], method=method, layer="conv2", lstm_rule="caffe")
        assert oracle_err(g.maps[k], ref) < TOL


@pytest.mark.oracle
@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
def test_image_variant_matches_oracle(oracle, clip, lstm_rule):
    model = make("lstm2", pool=None)
    ids = model.vocab.encode(CAPTION)
    for method in ("EB-R", "cEB-R", "BP-R"):
        g = ground_caption(
            model, clip[:1], "disk", caption=CAPTION, method=method, layer="pool1", lstm_rule=lstm_rule
        )
        ref = oracle(
            model, clip[:1], ids, _steps(model, "disk"), method=method, layer="pool1", lstm_rule=lstm_rule
        )
        assert g.maps.shape == (1, 4, 4)
        assert oracle_err(g.maps, ref) < TOL
    with pytest.raises(ValueError, match="give one frame, got 4"):
        ground_caption(model, clip, "disk", caption=CAPTION)


# ---- the decoder's mass accounting ---------------------------------------------------------------
def _balance(d, k):
    lost = sum(d["lost"][name][k] for name in ("predict", "lstm2", "lstm1"))
    return d["video"][k] + d["words"][k] + d["initial_state"][k] + lost


@pytest.mark.parametrize("static_layer", ["lstm1", "lstm2"])
def test_eb_rule_accounting_adds_up_to_the_seed(clip, static_layer):
    model = make(static_layer)
    g = ground_caption(model, clip, QUERIES, caption=CAPTION, method="cEB-R", layer="conv1", lstm_rule="eb")
    for key in ("decoder", "decoder_dual"):
        d = g.diagnostics[key]
        assert d["seed"] == [1.0, 2.0, 1.0]
        for k in range(3):
            assert _balance(d, k) == pytest.approx(d["seed"][k], rel=1e-12)
            assert 0 < d["words"][k] and 0 < d["video"][k]
            assert d["word_share"][k] == pytest.approx(d["words"][k] / (d["words"][k] + d["video"][k]))
            assert d["frames"][k] + d["pool_lost"][k] == pytest.approx(d["video"][k], rel=1e-12)
            assert abs(sum(d["words_per_step"][k]) - d["words"][k]) < 1e-12
    # the per-layer entering-minus-leaving masses are the zero-denominator losses
    m = g.diagnostics["mass_lost"]["positive"]
    d = g.diagnostics["decoder"]
    for name in ("predict", "lstm2", "lstm1"):
        assert numpy.allclose(m[name], d["lost"][name], rtol=0, atol=1e-12)
    # the eq.-5 total is what reached the frames
    assert g.diagnostics["totals"] == pytest.approx(d["frames"], rel=1e-12)


def test_accounting_with_zero_denominators_and_signed_features(oracle, clip):
    # fc7 without ReLU: signed video features, so some units have sum_t x <= 0 and lose their signal at the
    # pooling; the vocabulary row of "square" has no positive weight: its seed is lost at the classifier.
    model = make("lstm2", frames=FRAMES[:-1], seed=0x5D)
    P = dict(model.params)
    sq = model.vocab.index("square")
    P["predict.weight"] = P["predict.weight"].copy()
    P["predict.weight"][sq] = -numpy.abs(P["predict.weight"][sq])
    model = model._with_params(P)
    g = ground_caption(
        model, clip, ["red", "square"], caption=CAPTION, method="cEB-R", layer="relu2", lstm_rule="eb"
    )
    d = g.diagnostics["decoder"]
    for k in range(2):
        assert _balance(d, k) == pytest.approx(1.0, rel=1e-12)
        assert d["frames"][k] + d["pool_lost"][k] == pytest.approx(d["video"][k], rel=1e-12, abs=1e-12)
    S = model.features(clip).sum(axis=0)
    assert (S <= 0).any() and (S > 0).any()
    assert d["pool_lost"][0] != 0  # signed features: signal lost where sum_t x <= 0
    assert d["lost"]["predict"][1] == 1.0 and d["video"][1] == 0 and d["words"][1] == 0
    assert g.diagnostics["zero_totals"] == [{"pass": "positive", "target_index": 1}]
    # a zero positive total makes that term zero: the map is minus the dual pass (docs/spec.md §5.3), as the
    # oracle
    ids = model.vocab.encode(CAPTION)
    ref = oracle(model, clip, ids, _steps(model, "square"), method="cEB-R", layer="relu2", lstm_rule="eb")
    assert ref["total"] == 0 and numpy.linalg.norm(ref["maps"]) > 0
    assert rel_err(g.maps[1], ref["maps"]) < TOL
    assert numpy.all(
        ground_caption(
            model, clip, "square", caption=CAPTION, method="EB-R", layer="relu2", lstm_rule="eb"
        ).maps
        == 0
    )


def test_pool_loss_equals_the_signal_of_units_with_no_positive_sum(clip):
    model = make("lstm2", frames=FRAMES[:-1], seed=0x5D)
    g = ground_caption(model, clip, "red", caption=CAPTION, method="EB-R", layer="fc7", lstm_rule="eb")
    # read out at the video-feature layer itself: the map is the signal of every frame's feature
    feats = model.features(clip)
    S = feats.sum(axis=0)
    kept = g.maps.sum(axis=0)  # (D,) signal that reached the frames, per unit
    assert numpy.all(kept[S <= 0] == 0)
    assert kept.sum() == pytest.approx(1.0, rel=1e-12)  # eq. 5: the maps are normalised by the frames' total
    assert g.diagnostics["totals"][0] == pytest.approx(g.diagnostics["decoder"]["frames"][0], rel=1e-12)


# ---- driver properties without the oracle --------------------------------------------------------------
@pytest.mark.parametrize("method", ["cEB-R", "BP-R"])
def test_multi_query_equals_single_calls(clip, method):
    model = make("lstm1")
    g = ground_caption(model, clip, QUERIES, caption=CAPTION, method=method, layer="conv2", lstm_rule="eb")
    for k, q in enumerate(QUERIES):
        one = ground_caption(model, clip, q, caption=CAPTION, method=method, layer="conv2", lstm_rule="eb")
        assert one.maps.shape == g.maps.shape[1:] and one.targets == [q]
        assert rel_err(g.maps[k], one.maps) < 1e-13
        assert rel_err(g.evidence[k], one.evidence) < 1e-13


def test_ceb_r_is_the_difference_of_two_normalised_passes(clip):
    model = make("lstm2")
    kw = dict(caption=CAPTION, layer="conv1", lstm_rule="caffe", channel_maps=True)
    c = ground_caption(model, clip, ["disk", "blue"], method="cEB-R", **kw)
    e = ground_caption(model, clip, ["disk", "blue"], method="EB-R", **kw)
    assert c.diagnostics["totals"] == e.diagnostics["totals"]
    # the dual pass alone: EB-R of a model whose classifier is negated
    P = dict(model.params)
    P["predict.weight"] = -P["predict.weight"]
    d = ground_caption(model._with_params(P), clip, ["disk", "blue"], method="EB-R", **kw)
    assert c.diagnostics["totals_dual"] == pytest.approx(d.diagnostics["totals"], rel=1e-14)
    assert rel_err(c.channel_maps, e.channel_maps - d.channel_maps) < 1e-12


@pytest.mark.parametrize("method", ["cEB-R", "BP-R"])
def test_chunked_equals_unchunked_and_recompute_equals_stored(clip, method):
    model = make("lstm2")
    ref = ground_caption(
        model, clip, ["red", "disk"], caption=CAPTION, method=method, layer="conv2", chunk_size=4
    )
    assert ref.diagnostics["readout_recomputed"] is False
    for chunk, budget in ((1, 1 << 30), (3, 1 << 30), (3, 0)):
        g = ground_caption(
            model,
            clip,
            ["red", "disk"],
            caption=CAPTION,
            method=method,
            layer="conv2",
            chunk_size=chunk,
            checkpoint_budget_bytes=budget,
        )
        assert g.diagnostics["readout_recomputed"] is (budget == 0)
        assert rel_err(g.maps, ref.maps) < 1e-13


@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
def test_float32_is_within_spec_of_float64(clip, lstm_rule):
    model = make("lstm2")
    g64 = ground_caption(model, clip, ["red", "disk"], caption=CAPTION, layer="conv1", lstm_rule=lstm_rule)
    g32 = ground_caption(
        model,
        clip.astype(numpy.float32),
        ["red", "disk"],
        caption=CAPTION,
        layer="conv1",
        lstm_rule=lstm_rule,
        dtype=numpy.float32,
    )
    assert g32.maps.dtype == numpy.float32
    scale = numpy.linalg.norm(
        ground_caption(
            model, clip, ["red", "disk"], caption=CAPTION, layer="conv1", lstm_rule=lstm_rule, method="EB-R"
        ).maps
    )
    assert numpy.linalg.norm(g32.maps - g64.maps) / scale < 1e-4
    assert rel_err(g32.probs, g64.probs) < 1e-5


def test_result_fields_greedy_and_forced(clip):
    model = make("lstm2")
    model.meta["readout"] = "pool1"
    dec = model.decode(clip, max_len=8)
    g = ground_caption(model, clip, 0, max_len=8)  # greedy caption, the first word, default read-out
    assert g.layer == "pool1" and g.maps.shape == (4, 4, 4) and g.evidence.shape == (4,)
    assert g.caption == dec.words and g.diagnostics["decoded"] == "greedy"
    assert g.probs.shape == (len(dec.words) + 1, len(model.vocab))
    assert numpy.allclose(g.probs[: len(dec.ids)], dec.probs, rtol=1e-12, atol=0)
    assert g.word_probs[0] == pytest.approx(dec.probs[0, dec.ids[0]], rel=1e-12)
    assert g.query_steps == [[0]] and g.targets == [0]
    f = ground_caption(model, clip, "blue disk", caption=CAPTION.split())
    assert f.diagnostics["decoded"] == "forced" and f.caption == CAPTION.split()
    assert f.query_steps == [[6, 7]] and f.diagnostics["caption"] == CAPTION
    assert f.word_probs.shape == (10,) and f.word_probs[-1] == f.probs[-1, model.vocab.eos]
    d = f.diagnostics["decoder"]
    assert set(f.diagnostics["mass_lost"]) == {"positive", "dual", "cnn"}
    assert 0 < d["word_share"][0] < 1


# ---- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "words, match",
    [
        ("cat", "word 'cat' is not in the vocabulary"),
        ("pulses cat", "word 'cat' is not in the vocabulary"),
        ("disk", None),  # valid
        ("slides", None),
        ("bounce", "not in the vocabulary"),
        (["red", "and"], None),
        ("<eos>", "cannot ground the special token"),
        (["red", ""], "an empty word query"),
        ([], "an empty list of queries"),
        (9, "caption position 9 is out of range for the 9-word caption"),
        (-1, "caption position -1 is out of range"),
    ],
)
def test_query_errors(clip, words, match):
    model = make("lstm2")
    if match is None:
        ground_caption(model, clip, words, caption=CAPTION, method="EB-R", layer="relu7")
        return
    with pytest.raises(ValueError, match=match):
        ground_caption(model, clip, words, caption=CAPTION, layer="relu7")


def test_word_not_in_the_caption(clip):
    model = make("lstm2")
    with pytest.raises(ValueError, match="word 'blue' does not occur in the caption 'a red square slides'"):
        ground_caption(model, clip, "blue", caption="a red square slides")
    with pytest.raises(ValueError, match="word 'disk' does not occur in the caption"):
        ground_caption(model, clip, ["red", "red disk"], caption="a red square slides")


@pytest.mark.parametrize("caption", ["", "   ", []])
def test_empty_forced_caption(clip, caption):
    with pytest.raises(ValueError, match="empty caption"):
        ground_caption(make(), clip, "red", caption=caption)


def test_empty_greedy_caption(clip):
    model = make("lstm2")
    P = dict(model.params)
    P["predict.bias"] = P["predict.bias"].copy()
    P["predict.bias"][model.vocab.eos] = 1e3  # <eos> first
    with pytest.raises(ValueError, match=r"the model's caption is empty .* pass caption="):
        ground_caption(model._with_params(P), clip, "red")


def test_caption_with_unknown_or_special_words(clip):
    with pytest.raises(ValueError, match="word 'cat' is not in the vocabulary"):
        ground_caption(make(), clip, "red", caption="a red cat")
    with pytest.raises(ValueError, match="special token '<bos>'"):
        ground_caption(make(), clip, "red", caption="<bos> a red square")


def test_argument_errors(clip):
    model = make()
    with pytest.raises(ValueError, match="unknown method 'cEB' for caption grounding"):
        ground_caption(model, clip, "red", caption=CAPTION, method="cEB")
    with pytest.raises(ValueError, match="unknown lstm_rule 'gradient'"):
        ground_caption(model, clip, "red", caption=CAPTION, lstm_rule="gradient")
    with pytest.raises(ValueError, match="unknown layer name 'lstm1'"):
        ground_caption(model, clip, "red", caption=CAPTION, layer="lstm1")
    with pytest.raises(TypeError, match="needs a CaptionModel"):
        ground_caption(sequential(FRAMES + [("fc8", "fc", {"out_features": 3})], (3, 8, 8)), clip, "red")
    with pytest.raises(TypeError, match="a query must be a word"):
        ground_caption(model, clip, [1.5], caption=CAPTION)
    with pytest.raises(TypeError, match="words must be"):
        ground_caption(model, clip, None, caption=CAPTION)
    with pytest.raises(ValueError, match="clip must have shape"):
        ground_caption(model, clip[:, :2], "red", caption=CAPTION)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        ground_caption(model, clip, "red", caption=CAPTION, chunk_size=0)
    with pytest.raises(ValueError, match="rule 'eb' needs cell_act='relu'"):
        ground_caption(make(cell_act="tanh"), clip, "red", caption=CAPTION, lstm_rule="eb")


# A frame part whose read-out conv1 sits below a block the fused read-out folds (relu1, conv2, relu2, pool2).
FOLD_FRAMES = [
    ("conv1", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("conv2", "conv", {"out_channels": 5, "kernel": 3, "padding": 1}),
    ("relu2", "relu"),
    ("pool2", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 12}),
    ("relu7", "relu"),
]


@pytest.mark.oracle
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_fused_readout_matches_oracle_and_the_unfused_pass(oracle, clip, method):
    model = make("lstm2", frames=FOLD_FRAMES, seed=0x5D)
    queries = ["square", "red square", 5, "disk"]
    kw = dict(caption=CAPTION, method=method, layer="conv1", lstm_rule="eb", chunk_size=3)
    fused = ground_caption(model, clip, queries, fused_readout=True, **kw)
    plain = ground_caption(model, clip, queries, fused_readout=False, **kw)
    assert fused.diagnostics["fused_readout"] == ["relu1", "conv2", "relu2", "pool2"]
    assert plain.diagnostics["fused_readout"] is None
    assert rel_err(fused.maps, plain.maps) < 1e-12
    assert rel_err(fused.evidence, plain.evidence) < 1e-12
    lost, lost_f = plain.diagnostics["mass_lost"]["cnn"], fused.diagnostics["mass_lost"]["cnn"]
    assert list(lost) == list(lost_f)
    assert all(numpy.allclose(lost_f[k], lost[k], rtol=0, atol=1e-12) for k in lost)
    ids = model.vocab.encode(CAPTION)
    for k, q in enumerate(queries):
        ref = oracle(model, clip, ids, _steps(model, q), method=method, layer="conv1", lstm_rule="eb")
        assert oracle_err(fused.maps[k], ref) < TOL, q
    with pytest.raises(ValueError, match="channel_maps"):
        ground_caption(model, clip, queries, fused_readout=True, channel_maps=True, **kw)
