"""The arithmetic steps of Algorithm 1 (ebr_ref.grounding.algorithm) one by one, against hand-computed values.

Every expected value below is written out by hand (or by a plain loop written
here from the paper's formula), never taken from the engine: eq. 5 with a
positive, a signed-zero and an all-zero total; the eq. 7 contrast; the
negated classifier of eqs. 2 and 4; the channel sum and the per-frame
evidence of Algorithm 1 steps 6-7; the seed of step 1. Plus the diagnostics'
mass sums and the per-chunk frame CNN.
"""

import numpy
import pytest

from ebr_ref import backend
from ebr_ref.grounding.algorithm import (
    channel_sum,
    contrast,
    frame_evidence,
    negate_classifier,
    normalise_by_total,
    one_hot_seed,
)
from ebr_ref.grounding.diagnostics import action_diagnostics, sum_mass
from ebr_ref.grounding.frame_cnn import ChunkMaps, FrameCNN, frame_chunks, join_chunks
from ebr_ref.layers.linear import LinearCache
from ebr_ref.models import sequential


# ---- eq. 5 ----------------------------------------------------------------------------------------------
def test_normalise_by_total_divides_each_target_by_its_grand_total(xp):
    # K = 3 targets, T = 2 frames, D = 2 units
    P = xp.asarray(
        [
            [[1.0, 3.0], [0.0, 4.0]],  # total 8
            [[2.0, -2.0], [5.0, -5.0]],  # a signed signal summing to 0: the term is set to zero, no NaN
            [[0.0, 0.0], [0.0, 0.0]],  # nothing reached the interface
        ]
    )
    before = backend.to_numpy(P).copy()
    P_N, totals = normalise_by_total(P)
    assert isinstance(totals, numpy.ndarray) and totals.tolist() == [8.0, 0.0, 0.0]
    expected = [[[0.125, 0.375], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
    assert backend.to_numpy(P_N).tolist() == expected
    assert numpy.array_equal(backend.to_numpy(P), before)  # the input is not modified


def test_normalise_by_total_takes_one_total_over_frames_and_units_of_any_rank(dtype):
    P = numpy.arange(1, 25, dtype=dtype).reshape(2, 3, 2, 2)  # (K, T, h, w)
    P_N, totals = normalise_by_total(P)
    # target 0 holds 1..12 (sum 78), target 1 holds 13..24 (sum 222)
    assert totals.tolist() == [78.0, 222.0] and P_N.dtype == dtype
    for k, total in enumerate((78.0, 222.0)):
        for t in range(3):
            for i in range(2):
                for j in range(2):
                    assert P_N[k, t, i, j] == pytest.approx(P[k, t, i, j] / total, rel=1e-6)
    assert P_N.sum(axis=(1, 2, 3)) == pytest.approx([1.0, 1.0], rel=1e-6)


def test_normalise_by_total_of_a_negative_total_keeps_the_sign():
    P = numpy.array([[[-1.0, -3.0]]])  # total -4: a signed sum, no absolute value
    P_N, totals = normalise_by_total(P)
    assert totals.tolist() == [-4.0] and P_N.tolist() == [[[0.25, 0.75]]]


# ---- eq. 7 and eqs. 2, 4 ---------------------------------------------------------------------------------
def test_contrast_is_the_positive_minus_the_dual_pass():
    P_N = numpy.array([[[0.5, 0.25], [0.25, 0.0]]])
    P_N_dual = numpy.array([[[0.0, 0.5], [0.25, 0.25]]])
    assert contrast(P_N, P_N_dual).tolist() == [[[0.5, -0.25], [0.0, -0.25]]]


def test_negate_classifier_negates_the_weights_and_keeps_the_input():
    x = numpy.array([[1.0, 2.0]])
    W = numpy.array([[1.0, -2.0], [0.0, 3.0], [-0.5, 0.0]])
    cache = LinearCache(x, W, numpy.maximum(W, 0))
    dual = negate_classifier(cache)
    assert dual.W.tolist() == [[-1.0, 2.0], [0.0, -3.0], [0.5, 0.0]]
    assert dual.W_pos.tolist() == [[0.0, 2.0], [0.0, 0.0], [0.5, 0.0]]  # max(-W, 0): the inhibiting weights
    assert dual.x is x
    assert cache.W.tolist() == [[1.0, -2.0], [0.0, 3.0], [-0.5, 0.0]]  # the forward cache is not changed
    kept = numpy.zeros((3, 2))
    assert negate_classifier(cache, W_pos=kept).W_pos is kept  # a memoised max(-W, 0) is used as given


# ---- Algorithm 1 steps 1, 6, 7 ---------------------------------------------------------------------------
def test_one_hot_seed_puts_a_raw_one_on_each_target_at_each_seeded_step(xp):
    seed = backend.to_numpy(one_hot_seed([2, 0], [1, 3], 4, 3, xp=xp, dtype=numpy.float64))
    expected = numpy.zeros((2, 4, 3))
    expected[0, 1, 2] = expected[0, 3, 2] = 1.0
    expected[1, 1, 0] = expected[1, 3, 0] = 1.0
    assert numpy.array_equal(seed, expected)


def test_channel_sum_adds_the_channels_of_each_cell():
    rng = numpy.random.default_rng(0x51)
    p = rng.normal(size=(2, 3, 4, 2, 5))  # (K, n, C, h, w)
    maps = channel_sum(p)
    assert maps.shape == (2, 3, 2, 5)
    for k in range(2):
        for n in range(3):
            for i in range(2):
                for j in range(5):
                    naive = sum(p[k, n, c, i, j] for c in range(4))
                    assert maps[k, n, i, j] == pytest.approx(naive, abs=1e-14)
    flat = rng.normal(size=(2, 3, 7))  # (K, n, D): a flat read-out layer's map is its signal
    assert channel_sum(flat) is flat
    assert channel_sum(numpy.array([[[[[1.0, 2.0]], [[10.0, -4.0]]]]])).tolist() == [[[[11.0, -2.0]]]]


def test_frame_evidence_sums_each_frame():
    maps = numpy.array([[[[1.0, 2.0], [3.0, -1.0]], [[0.0, 0.0], [0.5, 0.25]]]])  # (K=1, T=2, 2, 2)
    assert frame_evidence(maps).tolist() == [[5.0, 0.75]]
    assert frame_evidence(numpy.array([[[1.0, -3.0], [2.0, 2.0]]])).tolist() == [[-2.0, 4.0]]  # (K, T, D)


# ---- diagnostics ---------------------------------------------------------------------------------------
def test_sum_mass_adds_per_layer_in_first_seen_order():
    parts = [
        {"fc8": numpy.array([1.0, 0.5]), "relu7": numpy.array([0.0, 0.0])},
        {"fc8": numpy.array([0.25, 0.0]), "conv1": numpy.array([2.0, 1.0])},
    ]
    total = sum_mass(parts)
    assert list(total) == ["fc8", "relu7", "conv1"]
    assert total["fc8"].tolist() == [1.25, 0.5] and total["conv1"].tolist() == [2.0, 1.0]
    assert sum_mass([]) == {}


def test_action_diagnostics_lists_zero_totals_per_pass():
    diag = action_diagnostics(
        method="cEB-R",
        lstm_rule="caffe",
        targets=[0, 1],
        layer="conv1",
        chunk_size=4,
        seed_steps=[2],
        mass_lost={},
        totals=numpy.array([2.0, 0.0]),
        totals_dual=numpy.array([0.0, 1.5]),
        readout_recomputed=False,
    )
    assert diag["totals"] == [2.0, 0.0] and diag["totals_dual"] == [0.0, 1.5]
    assert all(type(v) is float for v in diag["totals"] + diag["totals_dual"])
    assert diag["zero_totals"] == [
        {"pass": "positive", "target_index": 1},
        {"pass": "dual", "target_index": 0},
    ]
    assert diag["mass_lost"] == {"positive": {}, "dual": {}, "cnn": {}}
    assert list(diag) == [
        "method",
        "lstm_rule",
        "targets",
        "layer",
        "chunk_size",
        "mass_lost",
        "totals",
        "totals_dual",
        "zero_totals",
        "fused_readout",
        "seed_steps",
        "readout_recomputed",
    ]


# ---- the frame CNN -----------------------------------------------------------------------------------------
LAYERS = [
    ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 5}),
    ("relu7", "relu"),
    ("lstm1", "lstm", {"hidden": 4}),
    ("fc8", "fc", {"out_features": 3}),
]


def test_frame_chunks_cover_the_clip():
    assert frame_chunks(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert frame_chunks(2, 8) == [(0, 2)]
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        frame_chunks(4, 0)


@pytest.mark.parametrize("budget", [1 << 30, 0], ids=["kept", "recomputed"])
def test_frame_cnn_forward_chunk_by_chunk_equals_one_pass(budget):
    model = sequential(LAYERS, (2, 6, 6), seed=0xF1)
    clip = numpy.random.default_rng(0xF2).uniform(0, 1, (5, 2, 6, 6))
    frames = FrameCNN(model, clip, model.index("relu1"), chunk_size=2, budget_bytes=budget)
    assert frames.chunks == [(0, 2), (2, 4), (4, 5)]
    interface = frames.forward()
    # the same layers written out for all frames at once: conv, relu, pool, flatten, fc, relu
    x = clip
    for layer in model.layers[: model.sequence_start]:
        x, _ = model.run_forward(x, model.index(layer.name), model.index(layer.name) + 1)
    assert interface.shape == (5, 5) and numpy.allclose(interface, x, rtol=1e-14, atol=0)
    assert frames.readout_recomputed is (budget == 0)
    for n, (a, b) in enumerate(frames.chunks):
        y, records = frames.forward_from_readout(n)
        assert [layer.name for layer, _ in records] == ["pool1", "flat", "fc7", "relu7"]
        assert numpy.allclose(y, x[a:b], rtol=1e-14, atol=0)


def test_join_chunks_concatenates_frames_and_sums_the_mass():
    part = [
        ChunkMaps(numpy.ones((2, 3, 1, 1)), None, {"conv1": numpy.array([1.0, 2.0])}),
        ChunkMaps(2 * numpy.ones((2, 1, 1, 1)), None, {"conv1": numpy.array([0.5, 0.0])}),
    ]
    joined = join_chunks(part, xp=numpy)
    assert joined.maps.shape == (2, 4, 1, 1) and joined.evidence.tolist() == [[1, 1, 1, 2], [1, 1, 1, 2]]
    assert joined.channels is None and joined.mass["conv1"].tolist() == [1.5, 2.0]
