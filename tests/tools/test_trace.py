"""ebr_ref.grounding.trace: every named point of a grounding run, computed by the drivers' own steps.

- ``maps``, ``evidence`` and ``probs`` of a trace are bit for bit those of
  ``ground`` / ``ground_caption`` with the fused read-out off, for every method,
  both LSTM rules, one or several targets and chunkings that split the clip;
  its totals are the drivers' diagnostics.
- The LSTM kernels' ``record`` changes nothing they return, and what it records
  is consistent with the kernels' results.
- The points of a trace are the names documented in
  docs/verify-your-implementation.md §2, in the order of computation.
"""

import re

import numpy
import pytest

from ebr_ref.grounding.ground import ground
from ebr_ref.grounding.ground_caption import ground_caption
from ebr_ref.grounding.trace import readout_layer, trace, trace_caption
from ebr_ref.layers.lstm import LSTMParams, lstm_eb, lstm_forward, lstm_grad
from ebr_ref.models import pretrained, sequential
from ebr_ref.models.caption import captioner
from tests.paths import DOCS, PACKAGE_DATA

BLOCK = [
    ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("conv2", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
    ("relu2", "relu"),
    ("pool2", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 6}),
    ("relu7", "relu"),
]


@pytest.fixture(scope="module")
def models():
    rnn = sequential(
        BLOCK + [("lstm1", "lstm", {"hidden": 4}), ("fc8", "fc", {"out_features": 5})],
        (2, 6, 6),
        seed=0x7A1,
        meta={"readout": "conv2"},
    )
    tanh = sequential(
        BLOCK + [("lstm1", "lstm", {"hidden": 4, "cell_act": "tanh"}), ("fc8", "fc", {"out_features": 5})],
        (2, 6, 6),
        seed=0x7A2,
    )
    cnn = sequential(
        BLOCK + [("drop7", "dropout"), ("fc8", "fc", {"out_features": 5})], (2, 6, 6), seed=0x7A3
    )
    cap = captioner(BLOCK, ["a", "red", "square"], (2, 6, 6), embed=3, hidden=(4, 5), seed=0x7A4)
    clip = numpy.random.default_rng(0x7A5).uniform(0, 1, (5, 2, 6, 6))
    return rnn, tanh, cnn, cap, clip


def _same(tr, g):
    for k in ("maps", "evidence", "probs"):
        assert numpy.array_equal(tr[k], getattr(g, k)), k


@pytest.mark.parametrize("method", ["cEB-R", "EB-R", "BP-R"])
@pytest.mark.parametrize("rule", ["caffe", "eb"])
@pytest.mark.parametrize("target, chunk", [(1, 8), ([0, 3], 2)])
def test_recurrent_trace_equals_ground_bit_for_bit(models, method, rule, target, chunk):
    rnn, *_, clip = models
    for layer in ("conv1", "pool2", "input"):
        kw = dict(method=method, lstm_rule=rule, chunk_size=chunk, layer=layer)
        tr = trace(rnn, clip, target, **kw)
        g = ground(rnn, clip, target, fused_readout=False, **kw)
        _same(tr, g)
        if method != "BP-R":
            assert numpy.array_equal(numpy.atleast_1d(tr["totals/positive"]), g.diagnostics["totals"])
        if method == "cEB-R":
            assert numpy.array_equal(numpy.atleast_1d(tr["totals/dual"]), g.diagnostics["totals_dual"])


@pytest.mark.parametrize("method", ["cEB", "EB", "BP"])
@pytest.mark.parametrize("target, chunk", [(2, 8), ([4, 1], 3)])
def test_per_frame_trace_equals_ground_bit_for_bit(models, method, target, chunk):
    _, _, cnn, _, clip = models
    for layer in ("conv2", "input"):
        kw = dict(method=method, chunk_size=chunk, layer=layer)
        _same(trace(cnn, clip, target, **kw), ground(cnn, clip, target, fused_readout=False, **kw))


@pytest.mark.parametrize("method", ["cEB-R", "EB-R", "BP-R"])
@pytest.mark.parametrize("rule", ["caffe", "eb"])
def test_caption_trace_equals_ground_caption_bit_for_bit(models, method, rule):
    *_, cap, clip = models
    for words, chunk in (("red", 8), (["a", "red square", 2], 2)):
        kw = dict(caption="a red square", method=method, lstm_rule=rule, chunk_size=chunk, layer="conv1")
        _same(
            trace_caption(cap, clip, words, **kw), ground_caption(cap, clip, words, fused_readout=False, **kw)
        )


def test_tanh_eb_and_clip_markers_and_seeds(models):
    _, tanh, *_, clip = models
    kw = dict(
        method="cEB-R",
        lstm_rule="eb",
        seed_steps=[1, 4],
        cont=numpy.array([0, 1, 0, 1, 1.0]),
        layer="conv1",
        allow_tanh_eb=True,
    )
    _same(trace(tanh, clip, [0, 2], **kw), ground(tanh, clip, [0, 2], fused_readout=False, **kw))


@pytest.mark.skipif(not (PACKAGE_DATA / "synthetic_cnn_lstm.npz").exists(), reason="no shipped model")
def test_shipped_model_trace_equals_ground():
    m = pretrained("synthetic_cnn_lstm")
    clip = numpy.random.default_rng(0x7A6).uniform(0, 1, (6,) + m.input_shape)
    tr = trace(m, clip, [1, 4], chunk_size=4)
    _same(tr, ground(m, clip, [1, 4], chunk_size=4, fused_readout=False))
    assert {"signal/drop7", "lstm/lstm1/dz", "signal/lstm1_drop", "signal/fc8"} <= set(tr)


def test_points_are_in_computation_order_and_shaped(models):
    rnn, *_, clip = models
    tr = trace(rnn, clip, 1, lstm_rule="eb")
    names = list(tr)
    assert names[:9] == [f"forward/{n}" for n in rnn.layer_names[:8]] + ["lstm/lstm1/gates"]
    order = [
        "lstm/lstm1/h",
        "forward/lstm1",
        "forward/fc8",
        "logits",
        "probs",
        "seed",
        "signal/fc8",
        "signal/lstm1",
        "lstm/lstm1/p_h",
        "lstm/lstm1/p_c",
        "lstm/lstm1/p_g",
        "lstm/lstm1/Z",
        "lstm/lstm1/p_rec",
        "lstm/lstm1/lost",
        "interface/positive",
        "totals/positive",
        "normalised/positive",
        "signal_dual/fc8",
        "signal_dual/lstm1",
        "lstm_dual/lstm1/p_h",
        "interface/dual",
        "totals/dual",
        "normalised/dual",
        "signal/relu7",
        "signal/fc7",
        "signal/flat",
        "signal/pool2",
        "signal/relu2",
        "signal/conv2",
        "maps",
        "evidence",
        "signal/relu1",
        "signal/conv1",
        "signal/input",
    ]
    assert [n for n in names if n in order] == order
    T = clip.shape[0]
    assert tr["lstm/lstm1/gates"].shape == (T, 16) and tr["lstm/lstm1/Z"].shape == (T, 4)
    assert tr["lstm/lstm1/lost"].shape == (T,) and tr["totals/positive"].shape == ()
    assert (
        numpy.array_equal(tr["seed"], tr["signal/fc8"])
        and tr["seed"][T - 1, 1] == 1
        and tr["seed"].sum() == 1
    )
    assert numpy.array_equal(tr["lstm/lstm1/h"], tr["forward/lstm1"])
    assert numpy.array_equal(tr["signal/relu7"], tr["normalised/positive"] - tr["normalised/dual"])
    assert numpy.allclose(tr["normalised/positive"], tr["interface/positive"] / tr["totals/positive"])
    stacked = trace(rnn, clip, [1, 2], lstm_rule="caffe")
    assert stacked["lstm/lstm1/dz"].shape == (2, T, 16) and stacked["lstm/lstm1/Z"].shape == (T, 16)
    assert stacked["totals/positive"].shape == (2,) and stacked["logits"].shape == (T, 5)
    for k in (0, 1):  # the K axis: each target's own run
        alone = trace(rnn, clip, [1, 2][k], lstm_rule="caffe")
        for name in ("lstm/lstm1/dz", "interface/positive", "signal/input", "maps"):
            assert numpy.allclose(stacked[name][k], alone[name], rtol=1e-13, atol=1e-16), name


def test_documented_point_names_cover_every_trace(models):
    """Every point of every kind of run matches a row of the page's table of point names (§2)."""
    text = (DOCS / "verify-your-implementation.md").read_text(encoding="utf-8")
    section = text[text.index("## 2. Point names") : text.index("## 3. Tolerances")]
    documented = set(re.findall(r"`([a-z_]+(?:/<[a-z]+>)?(?:/[a-z_A-Z.]+)?)`", section))
    assert {"lstm_dual/<lstm>/...", "signal_dual/<layer>", "lstm/<lstm>/p_rec", "forward/video"} <= documented
    rnn, tanh, cnn, cap, clip = models
    traces = [
        trace(rnn, clip, 1, method=m, lstm_rule=r) for m in ("cEB-R", "EB-R", "BP-R") for r in ("caffe", "eb")
    ]
    traces += [trace(cnn, clip, 1, method=m, layer="conv1") for m in ("cEB", "EB", "BP")]
    traces += [
        trace_caption(cap, clip, "red", caption="a red square", method=m, layer="conv1")
        for m in ("cEB-R", "BP-R")
    ]
    for tr in traces:
        for name in tr:
            parts = name.split("/")
            if parts[0] == "lstm_dual":  # documented as lstm_dual/<lstm>/...: the quantities of lstm/<lstm>/
                assert "lstm_dual/<lstm>/..." in documented
                parts[0] = "lstm"
            generic = "/".join(parts[:1] + ["<lstm>" if parts[0] == "lstm" else "<layer>"] + parts[2:])
            assert name in documented or generic in documented, name


def test_maps_are_left_out_without_a_readout_layer(models):
    rnn, *_, clip = models
    plain = sequential(
        BLOCK + [("lstm1", "lstm", {"hidden": 4}), ("fc8", "fc", {"out_features": 5})],
        (2, 6, 6),
        params=rnn.params,
    )
    tr = trace(plain, clip, 0)
    assert "maps" not in tr and "signal/input" in tr
    with pytest.raises(ValueError, match="sequence part"):
        trace(rnn, clip, 0, layer="lstm1")
    with pytest.raises(ValueError, match="does not fit"):
        trace(rnn, clip, 0, method="cEB")
    assert readout_layer(rnn, "input") == -1 and readout_layer(rnn, "relu7") == 7


# ---- the LSTM kernels' record ------------------------------------------------------------------------------
def _lstm(seed, *, cell="relu", static=False, T=5, N=2, D=3, H=4):
    r = numpy.random.default_rng(seed)
    p = LSTMParams(
        r.normal(size=(4 * H, D)),
        r.normal(0, 0.3, 4 * H),
        r.normal(size=(4 * H, H)),
        r.normal(size=(4 * H, 2)) if static else None,
    )
    x = r.uniform(0, 1, (T, N, D))
    cont = numpy.ones((T, N))
    cont[0] = 0
    cont[3, 1] = 0
    s = r.uniform(0, 1, (N, 2)) if static else None
    return lstm_forward(x, p, cont=cont, static=s, cell_act=cell)


@pytest.mark.parametrize("rule", ["caffe", "eb"])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("stacked", [False, True])
def test_record_changes_nothing_the_kernels_return(rule, static, stacked):
    h, cache = _lstm(0x7B1, static=static)
    p_h = numpy.random.default_rng(0x7B2).uniform(0, 1, ((2,) if stacked else ()) + h.shape)
    plain, rec = lstm_eb(p_h, cache, rule=rule), {}
    recorded = lstm_eb(p_h, cache, rule=rule, record=rec)
    for a, b in zip(plain[:5], recorded[:5]):
        assert (a is None and b is None) or numpy.array_equal(a, b)
    names = {
        "eb": {"p_h", "p_c", "p_g", "p_rec", "Z", "lost"},
        "caffe": {"p_h", "p_c", "p_rec", "dz", "Z", "lost"},
    }
    assert set(rec) == names[rule]
    lead = (2,) if stacked else ()
    T, N, H = h.shape
    assert rec["p_h"].shape == lead + (T, N, H) and rec["lost"].shape == lead + (T, N)
    assert numpy.array_equal(rec["lost"], recorded.lost)
    assert rec["Z"].shape == (T, N, H if rule == "eb" else 4 * H)
    assert numpy.array_equal(rec["p_h"][..., T - 1, :, :], p_h[..., T - 1, :, :])  # nothing from a later step
    if rule == "caffe":
        assert not rec["p_rec"].any() and numpy.array_equal(rec["p_h"], p_h)  # W_h receives nothing
    else:  # what step t sends back through W_h is what h_(t-1) receives on top of its own signal
        assert numpy.allclose(
            rec["p_h"][..., :-1, :, :], p_h[..., :-1, :, :] + rec["p_rec"][..., 1:, :, :], rtol=1e-14, atol=0
        )
        assert numpy.allclose(rec["p_rec"][..., 0, :, :], recorded.p_h0, rtol=1e-14, atol=0)
    g_plain, g_rec = lstm_grad(p_h, cache), {}
    g = lstm_grad(p_h, cache, record=g_rec)
    for a, b in zip(g_plain, g):
        assert (a is None and b is None) or numpy.array_equal(a, b)
    assert set(g_rec) == {"p_h", "p_c", "p_rec", "dz"}
    assert numpy.allclose(g_rec["p_rec"][..., 0, :, :], g.g_h0, rtol=1e-14, atol=0)
