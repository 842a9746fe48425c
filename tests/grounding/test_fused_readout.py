"""The fused channel-sum read-out (ebr_ref.grounding.fused_readout) against the unfused passes and the
torch oracle.

The fused path never runs a per-target conv adjoint: it builds, per frame, the
matrix from the signal at a max pooling's output to the channel sums at the
read-out layer. Checked here against (a) the independent float64 torch oracle
of Algorithm 1 (tests/oracles/torch_ebr.py), target by target; (b) the ordinary
layer-by-layer passes of the same engine (fused_readout=False), maps and the
mass lost per layer, including layers that really lose mass (zero
denominators, masked ReLU cells); (c) hypothesis over conv and pooling
geometries. Plus the planner's decisions and its errors.
"""

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref import backend
from ebr_ref.grounding.fused_readout import fused_maps, plan
from ebr_ref.grounding.ground import ground
from ebr_ref.models import Model, sequential

from ..conftest import rel_err

# A block the fold covers: padded, dilated and non-square kernels, dropout inside, a padded ceil pool.
BLOCK = [
    ("conv1", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("conv2", "conv", {"out_channels": 5, "kernel": (3, 2), "padding": (2, 1), "dilation": (2, 1)}),
    ("relu2", "relu"),
    ("drop2", "dropout"),
    ("conv3", "conv", {"out_channels": 6, "kernel": 1}),
    ("relu3", "relu"),
    ("pool3", "maxpool", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 16}),
    ("relu7", "relu"),
]
LSTM_MODEL = BLOCK + [
    ("lstm1", "lstm", {"hidden": 6}),
    ("lstm1_drop", "dropout"),
    ("fc8", "fc", {"out_features": 5}),
]
CNN_MODEL = BLOCK + [("drop7", "dropout"), ("fc8", "fc", {"out_features": 5})]
SHAPE = (3, 13, 11)
TARGETS = [0, 1, 2, 3, 4]


def _lossy(model):
    """The same model with layers that lose mass: channel 0 of conv2 and channel 1 of conv3 have no
    positive weight (Z == 0 everywhere) but a positive bias, so their ReLUs pass them on and signal
    comes back down to them. (A ReLU below a convolution, pooling or fc layer never loses mass: the
    signal reaching it is a multiple of its output.)"""
    p = {k: numpy.array(v) for k, v in model.params.items()}
    p["conv2.weight"][0] = -numpy.abs(p["conv2.weight"][0])
    p["conv2.bias"][0] = 0.5
    p["conv3.weight"][1] = -numpy.abs(p["conv3.weight"][1])
    p["conv3.bias"][1] = 0.5
    return Model(model.layers, p, input_shape=model.input_shape, meta=model.meta)


@pytest.fixture(scope="module")
def lstm_model():
    return _lossy(sequential(LSTM_MODEL, SHAPE, seed=0x31))


@pytest.fixture(scope="module")
def cnn_model():
    return _lossy(sequential(CNN_MODEL, SHAPE, seed=0x32))


@pytest.fixture(scope="module")
def clip():
    return numpy.random.default_rng(0xF0).uniform(0.0, 1.0, (5,) + SHAPE)


def _both(model, clip, method, layer, **kw):
    fused = ground(model, clip, TARGETS, method=method, layer=layer, fused_readout=True, **kw)
    plain = ground(model, clip, TARGETS, method=method, layer=layer, fused_readout=False, **kw)
    return fused, plain


def _assert_same_mass(fused, plain):
    """Same layers, same mass lost per layer and target (to rounding of the total mass)."""
    f, p = fused.diagnostics["mass_lost"], plain.diagnostics["mass_lost"]
    for part in ("positive", "dual", "cnn"):
        assert list(f[part]) == list(p[part]), part
        for name in p[part]:
            scale = max(1.0, float(numpy.abs(plain.evidence).max()))
            assert numpy.allclose(f[part][name], p[part][name], rtol=0, atol=1e-12 * scale), (part, name)


# ---- (a) the independent oracle ---------------------------------------------------------------------
@pytest.mark.oracle
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
@pytest.mark.parametrize("layer", ["input", "conv1", "relu1", "conv2"])
def test_fused_recurrent_maps_match_the_torch_oracle(lstm_model, clip, method, layer):
    pytest.importorskip("torch")
    from ..oracles.torch_ebr import oracle_ground

    g = ground(
        lstm_model,
        clip,
        TARGETS,
        method=method,
        layer=layer,
        lstm_rule="eb",
        fused_readout=True,
        chunk_size=2,
    )
    assert g.diagnostics["fused_readout"][-1] == "pool3"
    for k, c in enumerate(TARGETS):
        ref = oracle_ground(lstm_model, clip, c, method=method, layer=layer, lstm_rule="eb")
        scale = numpy.linalg.norm(ref["positive_maps"])
        assert scale > 0
        assert numpy.linalg.norm(g.maps[k] - ref["maps"]) / scale < 1e-9, c


@pytest.mark.oracle
@pytest.mark.parametrize("method", ["EB", "cEB", "BP"])
def test_fused_frame_maps_match_the_torch_oracle(cnn_model, clip, method):
    pytest.importorskip("torch")
    from ..oracles.torch_ebr import oracle_ground

    g = ground(cnn_model, clip, TARGETS, method=method, layer="conv1", fused_readout=True, chunk_size=3)
    for k, c in enumerate(TARGETS):
        ref = oracle_ground(cnn_model, clip, c, method=method, layer="conv1")
        scale = numpy.linalg.norm(ref["positive_maps"])
        assert numpy.linalg.norm(g.maps[k] - ref["maps"]) / scale < 1e-9, c


# ---- (b) fused against the layer-by-layer passes -----------------------------------------------------
@pytest.mark.parametrize("method", ["EB-R", "cEB-R", "BP-R"])
@pytest.mark.parametrize("layer", ["input", "conv1", "relu1", "conv2", "relu2", "drop2"])
def test_fused_equals_unfused_recurrent(lstm_model, clip, method, layer):
    fused, plain = _both(lstm_model, clip, method, layer, seed_steps="all", chunk_size=2)
    assert fused.diagnostics["fused_readout"] is not None and plain.diagnostics["fused_readout"] is None
    assert fused.maps.shape == plain.maps.shape == (5, 5) + plain.maps.shape[2:]
    assert rel_err(fused.maps, plain.maps) < 1e-12
    assert rel_err(fused.evidence, plain.evidence) < 1e-12
    assert rel_err(fused.probs, plain.probs) == 0
    _assert_same_mass(fused, plain)


@pytest.mark.parametrize("method", ["EB", "cEB", "BP"])
def test_fused_equals_unfused_per_frame(cnn_model, clip, method):
    fused, plain = _both(cnn_model, clip, method, "relu1", chunk_size=4)
    assert rel_err(fused.maps, plain.maps) < 1e-12
    _assert_same_mass(fused, plain)


def test_the_mass_accounting_is_exercised(lstm_model, clip):
    """The lossy layers really lose mass, and the fused rows reproduce it (this test can fail)."""
    fused, plain = _both(lstm_model, clip, "EB-R", "conv1", seed_steps="all")
    lost, lost_f = plain.diagnostics["mass_lost"]["cnn"], fused.diagnostics["mass_lost"]["cnn"]
    total = plain.evidence.sum(axis=1) + sum(numpy.asarray(v) for v in lost.values())  # mass entering the CNN
    for name in ("conv2", "conv3"):
        assert (numpy.asarray(lost[name]) > 1e-4 * total).all(), name
        assert numpy.allclose(lost_f[name], lost[name], rtol=1e-10, atol=0), name


def test_float32_fused_agrees_with_float64(lstm_model, clip):
    f64 = ground(lstm_model, clip, TARGETS, method="cEB-R", layer="conv1", fused_readout=True)
    f32 = ground(
        lstm_model,
        clip.astype(numpy.float32),
        TARGETS,
        method="cEB-R",
        layer="conv1",
        fused_readout=True,
        dtype=numpy.float32,
    )
    assert f32.maps.dtype == numpy.float32
    assert rel_err(f32.maps, f64.maps) < 1e-5


def test_frame_groups_give_the_same_maps(lstm_model, clip):
    """Folding one frame at a time (a small memory budget) equals folding all frames of a chunk at once."""
    model, r = lstm_model, lstm_model.index("conv1")
    fold = plan(model, r, 3, "eb", request=True)
    x_r, _ = model.run_forward(clip, 0, r + 1)
    _, records = model.run_forward(x_r, r + 1, model.sequence_start, keep=True)
    p_top = numpy.random.default_rng(1).uniform(0, 1, (3,) + (clip.shape[0],) + model.shapes[r + fold.depth])
    whole, lost = fused_maps(records[: fold.depth], p_top, fold._replace(frames_per_group=clip.shape[0]))
    one, lost1 = fused_maps(records[: fold.depth], p_top, fold._replace(frames_per_group=1))
    assert whole.shape == (3, clip.shape[0]) + model.shapes[r][1:]
    assert rel_err(one, whole) < 1e-14
    assert list(lost) == list(lost1) and all(numpy.allclose(lost[k], lost1[k], rtol=1e-13) for k in lost)


def test_backends_agree(xp, lstm_model, clip):
    from ebr_ref import backend

    model = lstm_model.to("gpu" if xp is not numpy else "cpu")
    g = ground(
        model,
        backend.to_device(clip, model.device),
        TARGETS,
        method="cEB-R",
        layer="conv1",
        fused_readout=True,
    )
    ref = ground(lstm_model, clip, TARGETS, method="cEB-R", layer="conv1", fused_readout=False)
    assert isinstance(g.maps, numpy.ndarray)
    assert rel_err(g.maps, ref.maps) < 1e-12


@settings(max_examples=100, deadline=None)
@given(
    k1=st.integers(1, 3),
    k2=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pool=st.tuples(st.integers(2, 3), st.integers(1, 3), st.booleans()),
    K=st.integers(1, 4),
    method=st.sampled_from(["EB", "cEB", "BP"]),
    seed=st.integers(0, 2**16),
    between=st.sampled_from(["relu", "dropout", "none"]),
)
def test_fused_equals_unfused_over_geometries(k1, k2, pad, dil, pool, K, method, seed, between):
    """Random geometries; between the two convs a ReLU, a dropout or nothing (then, for BP, nothing else
    zeroes the functional on the second conv's padding)."""
    kp, sp, ceil = pool
    mid = {"relu": [("relu1", "relu")], "dropout": [("drop1", "dropout")], "none": []}[between]
    layers = [
        ("conv1", "conv", {"out_channels": 3, "kernel": k1, "padding": k1 // 2}),
        *mid,
        (
            "conv2",
            "conv",
            {"out_channels": 4, "kernel": k2, "padding": (min(pad[0], k2[0] - 1), pad[1]), "dilation": dil},
        ),
        ("relu2", "relu"),
        ("pool2", "maxpool", {"kernel": kp, "stride": sp, "padding": kp // 2, "ceil_mode": ceil}),
        ("flat", "flatten"),
        ("fc", "fc", {"out_features": 4}),
    ]
    model = sequential(layers, (2, 9, 8), seed=seed)
    clip = numpy.random.default_rng(seed).uniform(0, 1, (3, 2, 9, 8))
    targets = list(range(K))
    for layer in ("input", "conv1"):
        fused = ground(model, clip, targets, method=method, layer=layer, fused_readout=True)
        plain = ground(model, clip, targets, method=method, layer=layer, fused_readout=False)
        assert numpy.allclose(fused.maps, plain.maps, rtol=1e-11, atol=1e-12 * numpy.abs(plain.maps).max())
        _assert_same_mass(fused, plain)


# ---- the planner -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg():
    from ebr_ref.models import vgg16_lstm

    return vgg16_lstm(101, hidden=8, input_size=224, seed=0, dtype=numpy.float32)


def test_auto_fuses_many_targets_not_one(vgg):
    r = vgg.index("conv5_1")
    assert plan(vgg, r, 1, "eb") is None  # one target: the unfused pass is cheaper
    assert plan(vgg, r, 5, "eb") is None and plan(vgg, r, 6, "eb") is not None  # docs/conventions.md
    many = plan(vgg, r, 101, "eb")
    assert many is not None and many.depth == 6  # relu5_1 ... pool5
    assert vgg.layers[r + many.depth].name == "pool5"
    assert many.frames_per_group == 2  # FOLD_GROUP_BYTES: two frames of about 40 MB in float32
    assert plan(vgg, r, 101, "eb", request=False) is None
    assert plan(vgg, vgg.index("conv5_2"), 101, "grad").depth == 4


def test_frame_groups_aim_at_the_group_size():
    """Frames are grouped by FOLD_GROUP_BYTES (at least one frame), not by the per-frame limit."""
    from ebr_ref.grounding.fused_readout import FOLD_BUDGET_BYTES, FOLD_GROUP_BYTES
    from ebr_ref.models import vgg16_lstm

    assert FOLD_GROUP_BYTES < FOLD_BUDGET_BYTES
    for dtype, groups in ((numpy.float32, 2), (numpy.float64, 1)):
        model = vgg16_lstm(101, hidden=8, input_size=224, seed=0, dtype=dtype)
        assert plan(model, model.index("conv5_1"), 101, "eb").frames_per_group == groups
    small = sequential(CNN_MODEL, SHAPE, seed=0x32)
    assert (
        plan(small, small.index("conv1"), 5, "eb", request=True).frames_per_group > 100
    )  # a whole clip at once


@pytest.mark.parametrize(
    "layer, why",
    [
        ("conv4_3", "no convolution"),
        ("pool5", "flatten.*cannot be folded"),
        ("fc6", r"not a \(C, h, w\) map"),
    ],
)
def test_insisting_on_an_impossible_fold_names_the_reason(vgg, layer, why):
    with pytest.raises(ValueError, match=why):
        plan(vgg, vgg.index(layer), 101, "eb", request=True)


def test_strided_or_grouped_convolutions_are_not_folded(clip):
    layers = [
        ("conv1", "conv", {"out_channels": 4, "kernel": 3, "stride": 2}),
        ("relu1", "relu"),
        ("pool1", "maxpool", {"kernel": 2}),
        ("flat", "flatten"),
        ("fc", "fc", {"out_features": 3}),
    ]
    model = sequential(layers, SHAPE, seed=1)
    with pytest.raises(ValueError, match="stride"):
        ground(model, clip, [0, 1, 2], method="EB", layer="input", fused_readout=True)
    g = ground(model, clip, [0, 1, 2], method="EB", layer="input")  # auto: falls back to the plain passes
    assert g.diagnostics["fused_readout"] is None


def test_fused_readout_argument_errors(lstm_model, clip):
    with pytest.raises(ValueError, match="channel_maps"):
        ground(lstm_model, clip, TARGETS, method="EB-R", layer="conv1", fused_readout=True, channel_maps=True)
    for bad in ("yes", 1, 0, None):
        with pytest.raises(ValueError, match="fused_readout must be"):
            ground(lstm_model, clip, TARGETS, method="EB-R", layer="conv1", fused_readout=bad)
        with pytest.raises(
            ValueError, match="fused_readout must be"
        ):  # checked even when it would not be used
            ground(
                lstm_model, clip, TARGETS, method="EB-R", layer="conv1", fused_readout=bad, channel_maps=True
            )
    g = ground(lstm_model, clip, TARGETS, method="EB-R", layer="conv1", fused_readout=numpy.True_)
    assert g.diagnostics["fused_readout"] is not None
    g = ground(lstm_model, clip, TARGETS, method="EB-R", layer="conv1", channel_maps=True)
    assert g.diagnostics["fused_readout"] is None and g.channel_maps is not None


@pytest.mark.parametrize("method", ["EB", "cEB"])
def test_signed_input_pixels(cnn_model, method):
    """Mean-subtracted pixels: x and the first layer's Z take both signs; the fold follows the same
    algebra."""
    clip = numpy.random.default_rng(0x5E).uniform(-1.0, 1.0, (3,) + SHAPE)
    fused, plain = _both(cnn_model, clip, method, "input")
    assert (plain.maps < 0).any() and (plain.maps > 0).any()
    assert rel_err(fused.maps, plain.maps) < 1e-12
    _assert_same_mass(fused, plain)


@pytest.mark.parametrize("method", ["BP", "EB"])
def test_conv_conv_without_relu_between_matches_torch_autograd(method):
    """Two padded convs back to back (no ReLU or only dropout between): the fold must zero its functional on
    the inner padding. BP against torch autograd (shares no code), EB against the unfused pass."""
    layers = [
        ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
        ("drop1", "dropout"),
        ("conv2", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
        ("relu2", "relu"),
        ("pool", "maxpool", {"kernel": 2}),
        ("flat", "flatten"),
        ("fc", "fc", {"out_features": 40}),
    ]
    model = sequential(layers, (2, 8, 8), seed=0)
    clip = numpy.random.default_rng(0).uniform(0, 1, (2, 2, 8, 8))
    fused = ground(model, clip, list(range(40)), method=method, layer="input", fused_readout=True)
    plain = ground(model, clip, list(range(40)), method=method, layer="input", fused_readout=False)
    assert fused.diagnostics["fused_readout"] == ["conv1", "drop1", "conv2", "relu2", "pool"]
    assert rel_err(fused.maps, plain.maps) < 1e-12
    if method == "BP":
        torch = pytest.importorskip("torch")
        P = {k: torch.tensor(numpy.asarray(v)) for k, v in model.params.items()}
        x = torch.tensor(clip, requires_grad=True)
        h = torch.nn.functional.conv2d(x, P["conv1.weight"], P["conv1.bias"], padding=1)
        h = torch.relu(torch.nn.functional.conv2d(h, P["conv2.weight"], P["conv2.bias"], padding=1))
        logits = torch.nn.functional.max_pool2d(h, 2).flatten(1) @ P["fc.weight"].T + P["fc.bias"]
        logits[:, 7].sum().backward()
        assert rel_err(fused.maps[7], x.grad.sum(1).numpy()) < 1e-12


@pytest.mark.parametrize(
    "n_off, kernel, dil",
    [((1, 1), (3, 3), (1, 1)), ((3, 2), (3, 2), (1, 1)), ((1, 2), (3, 2), (2, 1)), ((2, 1), (2, 3), (3, 2))],
)
def test_through_conv_equals_the_sum_over_offset_pairs(n_off, kernel, dil):
    """The GEMMs per output offset and kernel row (views of F and of the flipped weights, the first
    written, the others added) equal ``F'[a + d u, b + d v] += W[:, :, u, v] @ F[a, b]`` summed over all
    pairs, including output offsets that no pair reaches (dilation larger than the offsets of F)."""
    from ebr_ref.grounding.fused_readout import _through_conv

    rng = numpy.random.default_rng(7)
    (nh, nw), (kH, kW), (dH, dW), (n, h, w) = n_off, kernel, dil, (2, 3, 4)
    F = rng.standard_normal((nh, nw, 5, n, h, w))
    W = rng.standard_normal((4, 5) + kernel)
    ref = numpy.zeros((nh + dH * (kH - 1), nw + dW * (kW - 1), 4, n, h, w))
    for a in range(nh):
        for b in range(nw):
            for u in range(kH):
                for v in range(kW):
                    ref[a + dH * u, b + dW * v] += numpy.einsum("oi,inhw->onhw", W[:, :, u, v], F[a, b])
    got = _through_conv(F, W, n_off, dil, (n, h, w), xp=numpy)
    assert got.shape == ref.shape
    assert rel_err(got, ref) < 1e-14
    if n_off == (1, 2) and dil == (2, 1):
        assert (got[1] == 0).all()  # no kernel row reaches the odd output rows


@pytest.mark.gpu
def test_gpu_folds_frames_in_larger_groups():
    """On a GPU the groups aim at FOLD_BUDGET_BYTES (fewer launches), not the CPU's cache-sized groups."""
    if not backend.gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    from ebr_ref.models import vgg16_lstm

    model = vgg16_lstm(101, hidden=8, input_size=224, seed=0, dtype=numpy.float32)
    r = model.index("conv5_1")
    cpu = plan(model, r, 101, "eb").frames_per_group
    gpu = plan(model.to("gpu"), r, 101, "eb").frames_per_group
    assert cpu == 2 and gpu > cpu
