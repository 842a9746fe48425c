"""ground(): the drivers of paper Algorithm 1 (docs/spec.md §5) against an independent float64 torch oracle.

The oracle (tests/oracles/torch_ebr.py) reads only the model's layer list and
parameters and recomputes forward, EB rules, the two LSTM rules, eq. 5 and the
contrasts with torch (docs/spec.md §2–§5). Errors are normwise; contrastive results are
normalised by the positive pass alone (docs/spec.md §7). Further checks need no oracle:
the contrast identities, multi-target and chunked runs against single and
unchunked runs, the checkpoint recompute path, float32 against float64.
"""

import numpy
import pytest

from ebr_ref.grounding.ground import ground
from ebr_ref.models import sequential

from ..conftest import rel_err

TOL = 1e-9  # docs/spec.md §7: float64 against an independent float64 oracle

CNN_LSTM = [
    ("conv1", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("conv2", "conv", {"out_channels": 5, "kernel": 3, "padding": 1}),
    ("relu2", "relu"),
    ("pool2", "avgpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 16}),
    ("relu7", "relu"),
    ("lstm1", "lstm", {"hidden": 6}),
    ("lstm1_drop", "dropout"),
    ("fc8", "fc", {"out_features": 4}),
]
CNN = CNN_LSTM[:9] + [("drop7", "dropout"), ("fc8", "fc", {"out_features": 4})]
# CaffeNet-style: strided conv, ceil max pools (one padded), LRN, grouped conv, a padded ceil average
# pool, dropout, and a tanh LSTM.
CAFFENET_TANH = [
    ("conv1", "conv", {"out_channels": 6, "kernel": 3, "stride": 2}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 3, "stride": 2, "ceil_mode": True}),
    ("norm1", "lrn", {"size": 5, "alpha": 0.1, "beta": 0.75, "k": 1.0}),
    ("conv2", "conv", {"out_channels": 8, "kernel": 3, "padding": 1, "groups": 2}),
    ("relu2", "relu"),
    ("pool2", "maxpool", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("norm2", "lrn", {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 2.0}),
    ("pool3", "avgpool", {"kernel": 2, "stride": 1, "padding": 1, "ceil_mode": True}),
    ("flatten", "flatten"),
    ("fc6", "fc", {"out_features": 12}),
    ("relu6", "relu"),
    ("drop6", "dropout"),
    ("lstm1", "lstm", {"hidden": 5, "cell_act": "tanh"}),
    ("lstm1_drop", "dropout"),
    ("fc8", "fc", {"out_features": 3}),
]

# Read-out layers: the input pixels, a conv (pre-ReLU for BP), a max pool, an average pool, the fc
# below the interface and the interface itself (the LSTM's input).
READOUTS = ("input", "conv1", "pool1", "conv2", "pool2", "fc7", "relu7")
SEED_STEPS = ("last", "all", [0, 2])


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("torch")
    from ..oracles.torch_ebr import oracle_ground

    return oracle_ground


@pytest.fixture(scope="module")
def cnn_lstm():
    # seed 0x6: every class has excitatory classifier weights on live hidden units (no zero totals)
    return sequential(CNN_LSTM, (3, 12, 12), seed=0x6)


@pytest.fixture(scope="module")
def cnn():
    return sequential(CNN, (3, 12, 12), seed=0x7)


@pytest.fixture(scope="module")
def clip():
    return numpy.random.default_rng(0xC11).uniform(0.0, 1.0, (4, 3, 12, 12))


def oracle_err(maps, ref):
    """Normwise error against the oracle; contrastive results relative to the positive pass
    (docs/spec.md §7)."""
    scale = numpy.linalg.norm(ref["positive_maps"])
    assert scale > 0, "degenerate case: the oracle's positive pass is zero"
    return numpy.linalg.norm(maps - ref["maps"]) / scale


# ---- agreement with the oracle ------------------------------------------------------------------------
@pytest.mark.oracle
@pytest.mark.parametrize("seed_steps", SEED_STEPS, ids=str)
@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_recurrent_methods_match_oracle(oracle, cnn_lstm, clip, method, lstm_rule, seed_steps):
    for target, layer in zip([1, 3, 0, 2, 1, 3, 0], READOUTS):
        g = ground(
            cnn_lstm,
            clip,
            target,
            method=method,
            layer=layer,
            lstm_rule=lstm_rule,
            seed_steps=seed_steps,
            chunk_size=3,
            channel_maps=True,
        )
        ref = oracle(
            cnn_lstm, clip, target, method=method, layer=layer, lstm_rule=lstm_rule, seed_steps=seed_steps
        )
        assert g.maps.dtype == numpy.float64
        assert g.maps.shape == ref["maps"].shape, layer
        assert oracle_err(g.maps, ref) < TOL, layer
        scale = numpy.linalg.norm(ref["positive_signal"])
        assert numpy.linalg.norm(g.channel_maps - ref["signal"]) / scale < TOL
        T = clip.shape[0]
        assert rel_err(g.evidence, g.maps.reshape(T, -1).sum(axis=1)) < 1e-12
        # |sum of errors| <= sqrt(n) ||errors||: evidence within the maps' bound
        n = g.maps[0].size
        assert numpy.linalg.norm(g.evidence - ref["evidence"]) < TOL * n**0.5 * numpy.linalg.norm(
            ref["positive_maps"]
        )
        assert rel_err(g.probs, ref["probs"]) < TOL
        if method != "BP-R":  # the eq.-5 grand totals of both passes
            assert g.diagnostics["totals"] == pytest.approx([ref["total"]], rel=TOL)
        if method == "cEB-R":
            assert g.diagnostics["totals_dual"] == pytest.approx([ref["total_dual"]], rel=TOL)


@pytest.mark.oracle
@pytest.mark.parametrize("method", ["EB", "cEB", "BP"])
def test_frame_methods_match_oracle(oracle, cnn, clip, method):
    for target, layer in zip([0, 1, 2, 3, 0, 1, 2], READOUTS):
        g = ground(cnn, clip, target, method=method, layer=layer, chunk_size=3)
        ref = oracle(cnn, clip, target, method=method, layer=layer)
        assert oracle_err(g.maps, ref) < TOL, layer
        assert rel_err(g.probs, ref["probs"]) < TOL


@pytest.mark.oracle
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_caffenet_style_tanh_lstm_matches_oracle(oracle, method):
    model = sequential(CAFFENET_TANH, (3, 17, 17), seed=0x2)
    clip = numpy.random.default_rng(0xCAFE).uniform(0.0, 1.0, (4, 3, 17, 17))
    for target, layer in zip([0, 1, 2, 0, 1], ("input", "norm1", "conv2", "pool2", "pool3")):
        g = ground(
            model, clip, target, method=method, layer=layer, lstm_rule="caffe", seed_steps="all", chunk_size=2
        )
        ref = oracle(model, clip, target, method=method, layer=layer, lstm_rule="caffe", seed_steps="all")
        assert oracle_err(g.maps, ref) < TOL, layer


@pytest.mark.oracle
def test_tanh_lstm_eb_rule_needs_explicit_permission(oracle):
    model = sequential(CAFFENET_TANH, (3, 17, 17), seed=0x2)
    clip = numpy.random.default_rng(0xCAFE).uniform(0.0, 1.0, (4, 3, 17, 17))
    with pytest.raises(ValueError, match="tanh"):
        ground(model, clip, 1, method="EB-R", layer="conv2", lstm_rule="eb")
    g = ground(
        model, clip, 1, method="cEB-R", layer="conv2", lstm_rule="eb", allow_tanh_eb=True, seed_steps=[1, 3]
    )
    ref = oracle(model, clip, 1, method="cEB-R", layer="conv2", lstm_rule="eb", seed_steps=[1, 3])
    # With tanh, assumption A1 fails: the rule's denominators mix signs and can nearly cancel, so rounding
    # differences between BLAS builds are amplified (6.5e-10 here, 3.7e-8 with NumPy 2.5 on a 16-core
    # machine).
    assert oracle_err(g.maps, ref) < 1e-6


@pytest.mark.oracle
@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_clip_markers_are_honoured(oracle, cnn_lstm, method, lstm_rule):
    # a second clip starts at frame 2: nothing may flow from frame 2 back to frames 0-1
    clip = numpy.random.default_rng(0xC0).uniform(0.0, 1.0, (5, 3, 12, 12))
    cont = numpy.array([0.0, 1.0, 0.0, 1.0, 1.0])
    g = ground(
        cnn_lstm, clip, 2, method=method, layer="conv2", lstm_rule=lstm_rule, cont=cont, seed_steps="all"
    )
    ref = oracle(
        cnn_lstm, clip, 2, method=method, layer="conv2", lstm_rule=lstm_rule, cont=cont, seed_steps="all"
    )
    assert oracle_err(g.maps, ref) < TOL
    last = ground(cnn_lstm, clip, 2, method=method, layer="conv2", lstm_rule=lstm_rule, cont=cont)
    assert numpy.all(last.maps[:2] == 0)
    assert numpy.abs(last.maps[2:]).max() > 0


@pytest.mark.oracle
def test_zero_total_gives_zero_term_and_a_diagnostic(oracle, clip):
    # seed 0x5: class 2's excitatory classifier weights meet only dead hidden units, so the positive
    # pass of EB-R is zero everywhere; eq. 5 must give a zero term (no NaN) and record it.
    model = sequential(CNN_LSTM, (3, 12, 12), seed=0x5)
    g = ground(model, clip, 2, method="cEB-R", layer="conv1")
    assert g.diagnostics["totals"] == [0.0]
    assert g.diagnostics["zero_totals"] == [{"pass": "positive", "target_index": 0}]
    assert numpy.all(numpy.isfinite(g.maps))
    dual = oracle(model, clip, 2, method="cEB-R", layer="conv1")
    assert numpy.all(dual["positive_maps"] == 0)
    assert rel_err(g.maps, dual["maps"]) < TOL  # the dual pass alone, negated
    assert numpy.abs(g.maps).max() > 0
    e = ground(model, clip, 2, method="EB-R", layer="conv1")
    assert numpy.all(e.maps == 0) and numpy.all(e.evidence == 0)


@pytest.mark.oracle
@pytest.mark.parametrize("seed_steps", SEED_STEPS, ids=str)
def test_eb_rule_conserves_the_seed_mass_to_the_interface(oracle, cnn_lstm, clip, seed_steps):
    # every normaliser of this model is positive: the eq.-5 total is the number of seeded steps
    n_seeds = (
        {"last": 1, "all": clip.shape[0]}[seed_steps] if isinstance(seed_steps, str) else len(seed_steps)
    )
    g = ground(cnn_lstm, clip, 1, method="EB-R", layer="relu7", lstm_rule="eb", seed_steps=seed_steps)
    ref = oracle(cnn_lstm, clip, 1, method="EB-R", layer="relu7", lstm_rule="eb", seed_steps=seed_steps)
    assert g.diagnostics["totals"] == pytest.approx([n_seeds], rel=1e-12)
    assert ref["total"] == pytest.approx(n_seeds, rel=1e-12)
    caffe = ground(cnn_lstm, clip, 1, method="EB-R", layer="relu7", lstm_rule="caffe", seed_steps=seed_steps)
    assert caffe.diagnostics["totals"][0] != pytest.approx(n_seeds, rel=1e-3)  # the released rule does not
    assert rel_err(caffe.maps, g.maps) > 1e-3  # the two rules differ


# ---- identities (no oracle) -------------------------------------------------------------------------------
def negated_classifier(model):
    params = dict(model.params)
    params["fc8.weight"] = -params["fc8.weight"]
    return sequential(model.layers, model.input_shape, params=params)


@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
@pytest.mark.parametrize("layer", ["input", "pool1", "relu7"])
def test_ceb_r_is_the_difference_of_two_normalised_eb_r_passes(cnn_lstm, clip, lstm_rule, layer):
    kw = dict(layer=layer, lstm_rule=lstm_rule, seed_steps=[1, 3], channel_maps=True)
    contrast = ground(cnn_lstm, clip, [0, 3], method="cEB-R", **kw)
    pos = ground(cnn_lstm, clip, [0, 3], method="EB-R", **kw)
    neg = ground(negated_classifier(cnn_lstm), clip, [0, 3], method="EB-R", **kw)
    scale = numpy.linalg.norm(pos.channel_maps)
    assert numpy.linalg.norm(contrast.channel_maps - (pos.channel_maps - neg.channel_maps)) / scale < 1e-12
    ev_err = numpy.linalg.norm(contrast.evidence - (pos.evidence - neg.evidence))
    assert ev_err / numpy.linalg.norm(pos.evidence) < 1e-12
    assert contrast.diagnostics["totals"] == pytest.approx(pos.diagnostics["totals"], rel=1e-14)
    assert contrast.diagnostics["totals_dual"] == pytest.approx(neg.diagnostics["totals"], rel=1e-14)
    assert numpy.sum(pos.evidence, axis=1) == pytest.approx(
        [1.0, 1.0], rel=1e-12
    )  # eq. 5 at the interface...
    if layer == "relu7":  # ...and the read-out is the interface itself
        assert numpy.sum(contrast.evidence, axis=1) == pytest.approx([0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("layer", ["input", "conv2", "fc7"])
def test_ceb_is_the_difference_of_two_eb_passes(cnn, clip, layer):
    contrast = ground(cnn, clip, [1, 2], method="cEB", layer=layer, channel_maps=True)
    pos = ground(cnn, clip, [1, 2], method="EB", layer=layer, channel_maps=True)
    neg = ground(negated_classifier(cnn), clip, [1, 2], method="EB", layer=layer, channel_maps=True)
    scale = numpy.linalg.norm(pos.channel_maps)
    assert numpy.linalg.norm(contrast.channel_maps - (pos.channel_maps - neg.channel_maps)) / scale < 1e-12
    assert rel_err(contrast.probs, pos.probs) == 0  # the forward pass is the model's own


@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_multi_target_equals_single_calls(cnn_lstm, clip, method):
    targets = [0, 2, 3]
    multi = ground(cnn_lstm, clip, targets, method=method, layer="pool1", lstm_rule="eb", channel_maps=True)
    T = clip.shape[0]
    assert multi.maps.shape == (3, T, 6, 6)
    assert multi.evidence.shape == (3, T)
    assert multi.channel_maps.shape == (3, T, 4, 6, 6)
    assert multi.targets == targets
    for k, c in enumerate(targets):
        one = ground(cnn_lstm, clip, c, method=method, layer="pool1", lstm_rule="eb", channel_maps=True)
        assert one.maps.shape == (T, 6, 6)
        assert rel_err(multi.maps[k], one.maps) <= 1e-13  # bit-identical on this machine
        assert rel_err(multi.channel_maps[k], one.channel_maps) <= 1e-13
        assert rel_err(multi.evidence[k], one.evidence) <= 1e-13
        if method != "BP-R":
            assert multi.diagnostics["totals"][k] == pytest.approx(one.diagnostics["totals"][0], rel=1e-13)


def test_multi_target_frame_methods_equal_single_calls(cnn, clip):
    for method in ("EB", "cEB", "BP"):
        multi = ground(cnn, clip, [3, 1], method=method, layer="conv2")
        assert multi.maps.shape == (2, clip.shape[0], 6, 6)
        for k, c in enumerate([3, 1]):
            assert rel_err(multi.maps[k], ground(cnn, clip, c, method=method, layer="conv2").maps) <= 1e-13


@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_chunked_equals_unchunked_and_checkpoint_recompute_equals_stored(cnn_lstm, method, lstm_rule):
    clip = numpy.random.default_rng(0xC5).uniform(0.0, 1.0, (5, 3, 12, 12))
    kw = dict(method=method, layer="conv1", lstm_rule=lstm_rule, seed_steps="all", channel_maps=True)
    whole = ground(cnn_lstm, clip, [1, 2], chunk_size=5, **kw)
    assert whole.diagnostics["readout_recomputed"] is False
    bigger = ground(cnn_lstm, clip, [1, 2], chunk_size=64, **kw)
    assert numpy.array_equal(bigger.channel_maps, whole.channel_maps)
    for chunk_size in (1, 2, 3):
        # not bit-identical: BLAS blocking depends on the batch size; agreement to rounding
        part = ground(cnn_lstm, clip, [1, 2], chunk_size=chunk_size, **kw)
        assert rel_err(part.channel_maps, whole.channel_maps) <= 1e-13
        assert rel_err(part.evidence, whole.evidence) <= 1e-13
        assert part.diagnostics["chunk_size"] == chunk_size
        recomputed = ground(cnn_lstm, clip, [1, 2], chunk_size=chunk_size, checkpoint_budget_bytes=0, **kw)
        assert recomputed.diagnostics["readout_recomputed"] is True
        assert numpy.array_equal(recomputed.channel_maps, part.channel_maps)  # same computations, same bits


def test_chunked_frame_methods_equal_unchunked(cnn, clip):
    for method in ("EB", "cEB", "BP"):
        whole = ground(cnn, clip, 2, method=method, layer="pool1", chunk_size=4)
        for chunk_size in (1, 3):
            part = ground(cnn, clip, 2, method=method, layer="pool1", chunk_size=chunk_size)
            assert rel_err(part.maps, whole.maps) <= 1e-13


@pytest.mark.parametrize("lstm_rule", ["caffe", "eb"])
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
def test_float32_is_within_spec_of_float64(cnn_lstm, clip, method, lstm_rule):
    kw = dict(method=method, layer="input", lstm_rule=lstm_rule, seed_steps="all")
    ref = ground(cnn_lstm, clip, [1, 3], **kw)
    scale = ground(cnn_lstm, clip, [1, 3], **dict(kw, method="EB-R")).maps if method == "cEB-R" else ref.maps
    by_arg = ground(cnn_lstm, clip, [1, 3], dtype=numpy.float32, **kw)
    by_model = ground(cnn_lstm.astype(numpy.float32), clip.astype(numpy.float32), [1, 3], **kw)
    for g in (by_arg, by_model):
        assert g.maps.dtype == numpy.float32 and g.evidence.dtype == numpy.float32
        assert numpy.linalg.norm(g.maps - ref.maps) / numpy.linalg.norm(scale) <= 1e-4
    assert numpy.array_equal(by_arg.maps, by_model.maps)
    frames = ground(
        sequential(CNN, (3, 12, 12), seed=0x7).astype("float32"), clip, 2, method="cEB", layer="input"
    )
    assert frames.maps.dtype == numpy.float32


def test_default_call_reads_the_demo_layer_and_last_step():
    # the released demo: cEB-R, rule "caffe", seed at the last step, map at conv5_1
    layers = [("conv5_1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1})] + CNN_LSTM[1:]
    model = sequential(layers, (3, 12, 12), seed=0x6)
    clip = numpy.random.default_rng(0xD0).uniform(0.0, 1.0, (3, 3, 12, 12))
    g = ground(model, clip, 1)
    explicit = ground(model, clip, 1, method="cEB-R", layer="conv5_1", lstm_rule="caffe", seed_steps=[2])
    assert numpy.array_equal(g.maps, explicit.maps)
    assert g.layer == "conv5_1" and g.targets == [1]
    assert g.diagnostics["method"] == "cEB-R" and g.diagnostics["lstm_rule"] == "caffe"
    assert g.diagnostics["seed_steps"] == [2]
    assert g.channel_maps is None


# ---- the oracle's own footing ------------------------------------------------------------------------------
@pytest.mark.oracle
def test_oracle_caffe_rule_equals_the_closed_form(oracle):
    # docs/spec.md §4.3, seed at the last step only: kappa_T = P_h_T o_T 1[c_T > 0],
    # kappa_t = f_{t+1} kappa_{t+1}; dz^i = kappa g i(1-i), dz^f = cont kappa c_{t-1} f(1-f),
    # dz^o = P_h relu(c) o(1-o) (step T only), dz^g = kappa i 1[z^g > 0]; P_x = x W_x+^T (dz / W_x+ x).
    import torch

    from ..oracles.torch_ebr import _lstm_eb_caffe

    rng = numpy.random.default_rng(0xC105ED)
    T, D, H = 5, 4, 3
    x = rng.uniform(0.0, 1.0, (T, D))
    W_x, W_h, b = rng.normal(size=(4 * H, D)), rng.normal(size=(4 * H, H)), rng.normal(0.0, 0.1, 4 * H)
    cont = numpy.array([0.0, 1, 1, 1, 1])
    sig = lambda v: 1.0 / (1.0 + numpy.exp(-v))  # noqa: E731
    h, c = numpy.zeros(H), numpy.zeros(H)
    gates, cs, zg = [], [numpy.zeros(H)], []
    for t in range(T):
        z = W_x @ x[t] + b + W_h @ (cont[t] * h)
        i, f, o, g = sig(z[:H]), sig(z[H : 2 * H]), sig(z[2 * H : 3 * H]), numpy.maximum(z[3 * H :], 0)
        c = cont[t] * f * c + i * g
        h = o * numpy.maximum(c, 0)
        gates.append((i, f, o, g))
        cs.append(c)
        zg.append(z[3 * H :])
    p_hT = rng.uniform(0.0, 1.0, H)
    dz = numpy.zeros((T, 4 * H))
    kappa = p_hT * gates[-1][2] * (cs[-1] > 0)
    for t in range(T - 1, -1, -1):
        i, f, o, g = gates[t]
        if t < T - 1:
            kappa = gates[t + 1][1] * kappa
        dz[t, :H] = kappa * g * i * (1 - i)
        dz[t, H : 2 * H] = cont[t] * kappa * cs[t] * f * (1 - f)
        dz[t, 3 * H :] = kappa * i * (zg[t] > 0)
    dz[-1, 2 * H : 3 * H] = p_hT * numpy.maximum(cs[-1], 0) * gates[-1][2] * (1 - gates[-1][2])
    W_pos = numpy.maximum(W_x, 0)
    expect = x * ((dz / (x @ W_pos.T)) @ W_pos)
    p_h = numpy.zeros((T, H))
    p_h[-1] = p_hT
    P = {"l.W_x": torch.tensor(W_x), "l.W_h": torch.tensor(W_h), "l.b": torch.tensor(b)}
    got = _lstm_eb_caffe(torch.tensor(x), torch.tensor(p_h), P, "l", {"cell_act": "relu"}, torch.tensor(cont))
    assert numpy.abs(expect).max() > 0
    assert rel_err(got.numpy(), expect) < 1e-12


@pytest.mark.oracle
def test_oracle_maxpool_routes_ties_to_the_first_maximum(oracle):
    import torch

    from ebr_ref.models import Layer

    from ..oracles.torch_ebr import _eb_layer

    a = torch.tensor([[[[1.0, 2.0, 2.0], [2.0, 0.5, 2.0], [0.0, 0.0, 0.0]]]], dtype=torch.float64)
    pool = Layer("pool", "maxpool", {"kernel": 2, "stride": 1})
    p = torch.tensor([[[[1.0, 10.0], [100.0, 1000.0]]]], dtype=torch.float64)
    got = _eb_layer(pool, {}, a, p, None, lstm_rule="caffe").numpy()[0, 0]
    # windows (scan order row-major): (0,0) -> a[0,1]; (0,1) -> a[0,1]; (1,0) -> a[1,0]; (1,1) -> a[1,2]
    expect = numpy.array([[0.0, 11.0, 0.0], [100.0, 0.0, 1000.0], [0.0, 0.0, 0.0]])
    assert numpy.array_equal(got, expect)


@pytest.mark.oracle
@pytest.mark.parametrize(
    # (H, k, s, p, ceil, floor): ceil((H + 2p - k)/s) + 1, minus 1 when p > 0 and (o-1)s >= H + p
    # (docs/spec.md §2)
    "size, k, s, p, ceil, floor",
    [(6, 3, 2, 0, 3, 2), (7, 3, 2, 1, 4, 4), (13, 3, 2, 0, 6, 6), (5, 2, 2, 1, 3, 3), (8, 3, 3, 1, 3, 3)],
)
def test_oracle_pool_sizes(oracle, size, k, s, p, ceil, floor):
    import torch

    from ..oracles.torch_ebr import pool_out_size

    assert pool_out_size(size, k, s, p, True) == ceil
    assert pool_out_size(size, k, s, p, False) == floor
    x = torch.zeros((1, 1, size, size), dtype=torch.float64)
    assert torch.nn.functional.max_pool2d(x, k, s, p, ceil_mode=True).shape[-1] == ceil  # torch agrees here
