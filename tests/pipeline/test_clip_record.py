"""The per-video analysis on in-memory frames (``clip_record``) is the analysis ``run_video`` runs on a file.

``analyse_video`` decodes a file and hands the frames to ``analyse_frames``;
``clip_record`` samples in-memory frames as the decoder does (``sample_frames``)
and hands them to the same function. Given the decoded frames of a video it must
give that video's stored record, number for number.
"""

import numpy
import pytest

from ebr_ref.pipeline import Store, plan_evaluation
from ebr_ref.pipeline.task import clip_record, run_video, sample_frames
from ebr_ref.tools.synthetic_dataset import make_dataset
from ebr_ref.tools.video import read_frames

from .conftest import FRAME_MODEL, MODEL, science


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """2 rand+GT+rand clips of 16 frames (THUMOS14 layout: segments and boxes)."""
    out = tmp_path_factory.mktemp("datasets") / "tiny"
    return make_dataset(out, "thumos14", clips=2, seed=0xC11, frames=16)


def _plan(dataset, out, **options):
    return plan_evaluation(dataset, MODEL, frame_model=FRAME_MODEL, out=out, clip_length=8, **options)


@pytest.mark.parametrize("options", [{}, {"every": 2, "start": 1, "max_frames": 5}], ids=["all", "sampled"])
def test_clip_record_of_the_decoded_frames_is_the_stored_record(tiny_set, tmp_path, options):
    plan = _plan(tiny_set, tmp_path / "r", **options)
    Store(plan.job.store).create()
    for item in plan.items:
        summary = run_video(item, plan.ambiguous[item.video_id], plan.job)
        assert summary["status"] == "ok"
        stored = Store(plan.job.store).read_record(item.video_id)
        frames, info = read_frames(item.path)  # every frame: clip_record samples them itself
        ours = clip_record(item, plan.job, frames, info["fps"], plan.ambiguous[item.video_id])
        assert ours["status"] == "ok" and ours["key"] == stored["key"]
        assert science(ours) == science(stored)


def test_sample_frames_samples_as_the_decoder(tiny_set, tmp_path):
    item = tiny_set.items[0]
    every_frame, _ = read_frames(item.path)
    for every, start, max_frames in [(1, 0, None), (2, 1, 5), (3, 4, None), (5, 0, 2)]:
        job = _plan(tiny_set, tmp_path / "r", every=every, start=start, max_frames=max_frames).job
        frames, info = sample_frames(every_frame, 25.0, job)
        decoded, dinfo = read_frames(item.path, every=every, start=start, max_frames=max_frames)
        assert numpy.array_equal(frames, decoded)
        assert list(info["indices"]) == list(dinfo["indices"]) and tuple(info["size"]) == tuple(dinfo["size"])
        assert info["fps"] == 25.0


def test_sample_frames_refuses_what_a_decoder_never_gives(tiny_set, tmp_path):
    job = _plan(tiny_set, tmp_path / "r", start=20).job
    frames = numpy.zeros((16, 8, 8, 3), dtype=numpy.uint8)
    with pytest.raises(ValueError, match="no frame kept of 16"):
        sample_frames(frames, 25.0, job)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        sample_frames(frames.astype(numpy.float32), 25.0, _plan(tiny_set, tmp_path / "r").job)
