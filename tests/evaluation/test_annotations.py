"""annotations: THUMOS14 temporal files and per-frame box files, written by the tests."""

import re

import numpy
import pytest

from ebr_ref.evaluation.annotations import (
    FrameBoxes,
    read_frame_boxes,
    read_thumos14_dir,
    read_thumos14_temporal,
    seconds_to_frames,
)
from ebr_ref.evaluation.localize import pointing_game
from ebr_ref.evaluation.metrics import Detection, average_precision


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- seconds to frames


@pytest.mark.parametrize(
    "t1, t2, fps, expect",
    [
        (0.1, 1.0, 30, (3, 29)),  # 0.1 * 30 = 3.0000000000000004 is frame 3; [.., 30) ends at frame 29
        (0.2, 1.1, 30, (6, 32)),  # 1.1 * 30 = 33.000000000000004 -> ceil 33 -> frame 32
        (0.0, 0.0, 25, (0, 0)),  # a zero-length segment keeps one frame
        (2.0, 2.02, 25, (50, 50)),  # 50.5 -> frames 50 .. 50
        (1.01, 1.99, 25, (25, 49)),  # 25.25 -> 25 ; 49.75 -> 49
    ],
)
def test_seconds_to_frames(t1, t2, fps, expect):
    assert seconds_to_frames(t1, t2, fps) == expect


def test_seconds_to_frames_rejects_bad_input():
    with pytest.raises(ValueError, match="fps"):
        seconds_to_frames(0, 1, 0)
    with pytest.raises(ValueError, match="start <= end"):
        seconds_to_frames(2, 1, 30)


# ----------------------------------------------------------------------------- THUMOS14 temporal


def test_read_thumos14_temporal(tmp_path):
    p = _write(
        tmp_path / "BaseballPitch_test.txt",
        "video_test_0000324  0.2 1.1 \n\n# a comment\nvideo_test_0000664\t76.4\t79.5\n",
    )
    rows = read_thumos14_temporal(p)
    assert [(r.video, r.label, r.start, r.end) for r in rows] == [
        ("video_test_0000324", "BaseballPitch", 0.2, 1.1),
        ("video_test_0000664", "BaseballPitch", 76.4, 79.5),
    ]
    assert rows[0].start_frame is None
    rows = read_thumos14_temporal(p, fps=30)
    assert (rows[0].start_frame, rows[0].end_frame) == (6, 32)
    assert (rows[1].start_frame, rows[1].end_frame) == (2292, 2384)  # 76.4 * 30 = 2292, 79.5 * 30 = 2385
    rows = read_thumos14_temporal(p, fps={"video_test_0000324": 25, "video_test_0000664": 30}, label="X")
    assert rows[0].label == "X" and (rows[0].start_frame, rows[0].end_frame) == (5, 27)
    with pytest.raises(ValueError, match="no fps given for video 'video_test_0000664'"):
        read_thumos14_temporal(p, fps={"video_test_0000324": 25})


@pytest.mark.parametrize(
    "line, what",
    [
        ("video_test_1 0.5", "expected 'video_name start_sec end_sec'"),
        ("video_test_1 0.5 1.0 extra", "expected 'video_name start_sec end_sec'"),
        ("video_test_1 zero 1.0", "must be numbers"),
        ("video_test_1 3.0 1.0", "0 <= start <= end"),
        ("video_test_1 -1.0 1.0", "0 <= start <= end"),
        ("video_test_1 0.0 nan", "finite"),
    ],
)
def test_read_thumos14_temporal_malformed_lines_name_file_and_line(tmp_path, line, what):
    p = _write(tmp_path / "Diving_test.txt", f"video_test_0 1.0 2.0\n\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:3: ") + ".*" + re.escape(what)):
        read_thumos14_temporal(p)


def test_read_thumos14_temporal_needs_a_class_in_the_file_name(tmp_path):
    p = _write(tmp_path / "annotations.txt", "v 1 2\n")
    with pytest.raises(ValueError, match="<Class>_<subset>.txt"):
        read_thumos14_temporal(p)
    assert read_thumos14_temporal(p, label="Diving")[0].label == "Diving"


def test_read_thumos14_dir_and_evaluate(tmp_path):
    _write(tmp_path / "Diving_test.txt", "v1 1.0 2.0\n")
    _write(tmp_path / "CliffDiving_test.txt", "v1 1.0 2.0\nv2 5.0 6.0\n")
    _write(tmp_path / "Ambiguous_test.txt", "v1 10.0 12.0\n")
    _write(tmp_path / "Diving_val.txt", "v9 1.0 2.0\n")
    _write(tmp_path / "detclasslist.txt", "7 CliffDiving\n")
    gt, amb = read_thumos14_dir(tmp_path, fps=30)
    assert sorted({g.label for g in gt}) == ["CliffDiving", "Diving"]
    assert len(gt) == 3 and all(g.video != "v9" for g in gt)
    assert [(a.video, a.label, a.start_frame, a.end_frame) for a in amb] == [("v1", "Ambiguous", 300, 359)]
    # the annotations serve directly as Segments (seconds, continuous)
    diving = [g for g in gt if g.label == "Diving"]
    dets = [Detection("v1", "Diving", 11.0, 11.5, 0.9), Detection("v1", "Diving", 1.0, 1.8, 0.5)]
    assert average_precision(dets, diving, 0.5, inclusive=False) == 0.5
    assert average_precision(dets, diving, 0.5, inclusive=False, ambiguous=amb) == 1.0
    with pytest.raises(ValueError, match="no '\\*_train.txt' file"):
        read_thumos14_dir(tmp_path, subset="train")


# ----------------------------------------------------------------------------- per-frame boxes


def test_read_frame_boxes(tmp_path):
    text = "# frame x1 y1 x2 y2\n3 10 20 30 40\n0, 1, 2, 3, 4\n3 50 50 60 70\n\n1 0 0 0 0\n"
    p = _write(tmp_path / "boxes.txt", text)
    fb = read_frame_boxes(p)
    assert isinstance(fb, FrameBoxes)
    assert fb.frames.tolist() == [0, 1, 3, 3]  # sorted by frame, stable within a frame
    numpy.testing.assert_array_equal(
        fb.boxes, [[1, 2, 3, 4], [0, 0, 0, 0], [10, 20, 30, 40], [50, 50, 60, 70]]
    )
    assert fb.boxes.dtype == numpy.float64 and fb.frames.dtype == numpy.int64
    per = fb.per_frame(5)
    assert [b.shape for b in per] == [(1, 4), (1, 4), (0, 4), (2, 4), (0, 4)]
    with pytest.raises(ValueError, match="num_frames=3"):
        fb.per_frame(3)


def test_read_frame_boxes_xywh_and_one_based(tmp_path):
    p = _write(tmp_path / "boxes.txt", "1 10 20 5 8\n2 0 0 1 1\n")
    fb = read_frame_boxes(p, box_format="xywh", one_based=True)
    assert fb.frames.tolist() == [0, 1]
    numpy.testing.assert_array_equal(fb.boxes, [[10, 20, 14, 27], [0, 0, 0, 0]])  # x2 = x + w - 1


@pytest.mark.parametrize(
    "line, kwargs, what",
    [
        ("4 1 2 3", {}, "expected 'frame x1 y1 x2 y2'"),
        ("4 1 2 3 4 5", {}, "expected 'frame x1 y1 x2 y2'"),
        ("4.5 1 2 3 4", {}, "integer frame"),
        ("4 a 2 3 4", {}, "integer frame"),
        ("-1 1 2 3 4", {}, "negative frame"),
        ("0 1 2 3 4", {"one_based": True}, "negative frame"),
        ("4 5 2 3 4", {}, "x2 >= x1"),
        ("4 1 2 3 inf", {}, "finite"),
        ("4 1 2 0 4", {"box_format": "xywh"}, "width and height"),
    ],
)
def test_read_frame_boxes_malformed_lines_name_file_and_line(tmp_path, line, kwargs, what):
    p = _write(tmp_path / "boxes.txt", f"1 0 0 5 5\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:2: ") + ".*" + re.escape(what)):
        read_frame_boxes(p, **kwargs)


def test_boxes_feed_the_pointing_game(tmp_path):
    p = _write(tmp_path / "boxes.txt", "0 0 0 7 7\n2 20 20 31 31\n2 0 0 3 3\n")
    per = read_frame_boxes(p).per_frame(3)
    maps = numpy.zeros((3, 4, 4))
    maps[0, 0, 0] = 1.0  # input pixel (3.5, 3.5) for a 32 x 32 input: inside [0, 7]
    maps[1, 3, 3] = 1.0  # frame 1 is not annotated
    maps[2, 1, 1] = 1.0  # (11.5, 11.5): 8.5 * sqrt(2) = 12.02 px from both boxes of frame 2
    assert pointing_game(maps, per, (32, 32)).tolist() == [1, 0, -1]
    assert pointing_game(maps, per, (32, 32), tolerance=24.1).tolist() == [1, 0, 1]
    assert pointing_game(maps, per, (32, 32), tolerance=24.0).tolist() == [1, 0, -1]
