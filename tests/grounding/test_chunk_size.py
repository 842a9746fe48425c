"""``chunk_size="auto"``: 8 frames on the CPU, on a GPU as many (up to 32) as half its free memory holds.

The rule is checked with hand-computed numbers, the default of both drivers on
the CPU through their diagnostics, and on a GPU (``gpu`` marker) that the chosen
chunk gives the maps of chunks of 8.
"""

import inspect

import numpy
import pytest

from ebr_ref import backend
from ebr_ref.grounding.frame_cnn import AUTO_CHUNK_CPU, auto_chunk_size, frame_work_bytes, resolve_chunk_size
from ebr_ref.grounding.ground import ground
from ebr_ref.grounding.ground_caption import ground_caption
from ebr_ref.models import sequential, vgg16
from ebr_ref.models.caption import captioner
from tests.tiny_models import BLOCK


def _rnn():
    return sequential(
        BLOCK + [("lstm1", "lstm", {"hidden": 4}), ("fc8", "fc", {"out_features": 5})], (2, 6, 6), seed=1
    )


def test_the_rule_by_hand():
    assert auto_chunk_size(100, 10_000) == 32  # 50 would fit: capped at 32
    assert auto_chunk_size(100, 1_000) == 5  # 1000 // (2 * 100)
    assert auto_chunk_size(100, 150) == 1  # not even one fits in half: one frame at a time
    assert auto_chunk_size(0, 10) == 5


def test_work_bytes_of_vgg16_are_six_of_its_largest_activation():
    model = vgg16(10, input_size=32, seed=0, dtype=numpy.float32)
    # no read-out above the input: six of conv1_1's output (64 x 32 x 32 float32) forward, and the one
    # signal back carries that size too
    assert frame_work_bytes(model) == 6 * (64 * 32 * 32 + 64 * 32 * 32) * 4
    # 101 targets read out at conv5_1: the way back holds (101, ...) signals of fc6's 4096 outputs at most
    r = model.index("conv5_1")
    assert frame_work_bytes(model, r, 101) == 6 * (64 * 32 * 32 + 101 * 4096) * 4
    cap = captioner(BLOCK, ["a", "red"], (2, 6, 6), embed=3, hidden=(4, 5), seed=3)
    assert frame_work_bytes(cap) == 6 * 2 * 3 * 6 * 6 * 8  # conv1's output (3 x 6 x 6 float64), both ways


@pytest.mark.parametrize("fn", [ground, ground_caption])
def test_auto_is_the_default(fn):
    assert inspect.signature(fn).parameters["chunk_size"].default == "auto"


def test_auto_on_the_cpu_is_eight_frames():
    assert resolve_chunk_size("auto", _rnn()) == AUTO_CHUNK_CPU == 8
    clip = numpy.random.default_rng(4).uniform(0, 1, (11, 2, 6, 6))
    g = ground(_rnn(), clip, 2, layer="conv1")
    assert g.diagnostics["chunk_size"] == 8
    cap = captioner(BLOCK, ["a", "red", "square"], (2, 6, 6), embed=3, hidden=(4, 5), seed=3)
    res = ground_caption(cap, clip, "red", caption="a red square", layer="conv1")
    assert res.diagnostics["chunk_size"] == 8


def test_an_explicit_chunk_size_is_kept():
    clip = numpy.random.default_rng(4).uniform(0, 1, (11, 2, 6, 6))
    assert ground(_rnn(), clip, 2, layer="conv1", chunk_size=3).diagnostics["chunk_size"] == 3


@pytest.mark.gpu
def test_gpu_auto_chunk_gives_the_maps_of_chunks_of_eight():
    if not backend.gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    model = _rnn().to("gpu")
    clip = numpy.random.default_rng(4).uniform(0, 1, (40, 2, 6, 6))
    auto = ground(model, clip, [1, 2], layer="conv1")
    eight = ground(model, clip, [1, 2], layer="conv1", chunk_size=8)
    assert auto.diagnostics["chunk_size"] == 32  # a tiny model: the cap, not the memory, decides
    numpy.testing.assert_allclose(auto.maps, eight.maps, rtol=1e-12, atol=0)


def test_auto_on_a_gpu_follows_free_memory_and_the_targets(monkeypatch):
    """The GPU branch of the rule, with the free memory given (the gpu case below runs it for real)."""
    from ebr_ref import backend as backend_module

    model = vgg16(10, input_size=32, seed=0, dtype=numpy.float32)
    r = model.index("conv5_1")
    monkeypatch.setattr(backend_module, "free_device_bytes", lambda xp: 10 * 2**30)  # 10 GiB free
    assert resolve_chunk_size("auto", model, r, 1) == 32
    one = frame_work_bytes(model, r, 1)
    monkeypatch.setattr(backend_module, "free_device_bytes", lambda xp: 5 * one)
    assert resolve_chunk_size("auto", model, r, 1) == 2  # half of 5 frames' worth
    assert resolve_chunk_size("auto", model, r, 101) == 1  # 101 signals back: not even one fits in half
    assert resolve_chunk_size(7, model, r, 101) == 7  # an int is kept


def test_cli_chunk_size_argument():
    import argparse

    from ebr_ref.cli._common import chunk_size_arg

    assert chunk_size_arg("auto") == "auto" and chunk_size_arg("3") == 3
    for bad in ("Auto", "0", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="'auto'"):
            chunk_size_arg(bad)
