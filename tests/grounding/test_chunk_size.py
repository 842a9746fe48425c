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

BLOCK = [
    ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("flat", "flatten"),
    ("fc7", "fc", {"out_features": 6}),
    ("relu7", "relu"),
]


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
    assert frame_work_bytes(model) == 6 * 64 * 32 * 32 * 4  # conv1_1's output, 64 x 32 x 32 float32
    cap = captioner(BLOCK, ["a", "red"], (2, 6, 6), embed=3, hidden=(4, 5), seed=3)
    assert (
        frame_work_bytes(cap) == 6 * 3 * 6 * 6 * 8
    )  # conv1's output, 3 x 6 x 6 float64, the frame part only


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
