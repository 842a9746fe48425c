"""The first CNN pass's records above the read-out layer, kept for the way back (``fast_kernels``).

With the kernels' fast paths on, :meth:`FrameCNN.forward(records=True)
<ebr_ref.grounding.frame_cnn.FrameCNN.forward>` keeps the records (caches) of the
layers from the read-out layer to the interface when they fit the memory budget,
and :meth:`FrameCNN.backward` takes them instead of running those layers forward
again. They are the records the second pass would compute (same inputs, same
kernels), so the maps are bit for bit those of the recomputing path.
"""

import numpy
import pytest

from ebr_ref.grounding.frame_cnn import FrameCNN, records_bytes
from ebr_ref.grounding.ground import ground
from ebr_ref.models import sequential

from .test_ground import CNN_LSTM


@pytest.fixture(scope="module")
def model():
    return sequential(CNN_LSTM, (3, 12, 12), seed=0x6)


@pytest.fixture(scope="module")
def clip():
    return numpy.random.default_rng(0xC12).uniform(0.0, 1.0, (5, 3, 12, 12))


def _readout_only_budget(model, layer, T):
    """A budget that keeps the read-out activations but not the records above them."""
    return int(numpy.prod(model.shapes[model.index(layer)])) * T * model.dtype.itemsize


@pytest.mark.parametrize("method", ["cEB-R", "EB-R", "BP-R"])
@pytest.mark.parametrize("fused", ["auto", False])
def test_kept_records_give_the_same_bits_as_recomputing(model, clip, method, fused):
    kw = dict(method=method, layer="conv1", chunk_size=2, channel_maps=fused is False, fused_readout=fused)
    targets = list(range(model.num_classes))
    kept = ground(model, clip, targets, **kw)
    budget = _readout_only_budget(model, "conv1", clip.shape[0])
    recomputed = ground(model, clip, targets, checkpoint_budget_bytes=budget, **kw)
    assert kept.diagnostics["readout_recomputed"] is False
    assert recomputed.diagnostics["readout_recomputed"] is False
    assert numpy.array_equal(kept.maps, recomputed.maps)
    assert numpy.array_equal(kept.evidence, recomputed.evidence)
    if fused is False:
        assert numpy.array_equal(kept.channel_maps, recomputed.channel_maps)
    for part in ("positive", "dual", "cnn"):
        a, b = kept.diagnostics["mass_lost"].get(part, {}), recomputed.diagnostics["mass_lost"].get(part, {})
        assert a.keys() == b.keys() and all(numpy.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["cEB-R", "BP-R"])
def test_a_ground_call_runs_the_layers_above_the_readout_once(model, clip, method, monkeypatch):
    """Within the budget a call runs conv2 .. the interface forward once per chunk (the first pass);
    over it, or with ``fast_kernels=False``, twice (the way back recomputes them)."""
    r, calls = model.index("conv1"), []
    run_forward = model.stack.run_forward
    monkeypatch.setattr(
        model.stack, "run_forward", lambda *a, **k: calls.append(a[1:3]) or run_forward(*a, **k)
    )
    chunks = len(range(0, clip.shape[0], 2))
    above = (r + 1, model.sequence_start)
    for kw, passes in (
        ({}, 1),
        ({"checkpoint_budget_bytes": _readout_only_budget(model, "conv1", clip.shape[0])}, 2),
        ({"fast_kernels": False}, 2),
    ):
        calls.clear()
        ground(model, clip, 0, method=method, layer="conv1", chunk_size=2, fused_readout=False, **kw)
        assert calls.count(above) == passes * chunks, kw


def test_backward_runs_no_layer_forward_with_kept_records(model, clip, monkeypatch):
    r = model.index("conv1")
    frames = FrameCNN(model, clip, r, chunk_size=2, budget_bytes=1 << 30)
    assert frames.keeps_records
    frames.forward(records=True, memo={})
    calls = []
    run_forward = model.stack.run_forward
    monkeypatch.setattr(
        model.stack, "run_forward", lambda *a, **k: calls.append(a[1:3]) or run_forward(*a, **k)
    )
    p = numpy.ones((1, clip.shape[0], model.shapes[model.sequence_start - 1][0]))
    frames.backward(p, frames.eb_to_readout, memo={})
    assert calls == []
    frames.backward(p, frames.eb_to_readout, memo={})  # the records were used once: recomputed now
    assert calls == [(0, r + 1), (r + 1, model.sequence_start)] * len(frames.chunks)


def test_records_are_kept_only_with_fast_kernels_and_within_the_budget(model, clip):
    r, T = model.index("conv1"), clip.shape[0]
    need = records_bytes(model, r, model.sequence_start) * T
    assert need > _readout_only_budget(model, "conv1", T)
    assert FrameCNN(model, clip, r, chunk_size=2, budget_bytes=need).keeps_records
    assert not FrameCNN(model, clip, r, chunk_size=2, budget_bytes=need - 1).keeps_records
    assert not FrameCNN(model, clip, r, chunk_size=2, budget_bytes=need, fast_kernels=False).keeps_records
    frames = FrameCNN(model, clip, r, chunk_size=2, budget_bytes=need, fast_kernels=False)
    frames.forward(records=True)
    assert frames._records == [] and frames.keeps_readout
