"""Per-video analysis (ebr_ref.evaluation.protocols) against hand-computed values."""

import numpy
import pytest

from ebr_ref.evaluation import protocols as P


class FixedDraws:
    """A stand-in for numpy.random.Generator.integers that returns given values and records the calls."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = []

    def integers(self, *args, size=None):
        self.calls.append((args, size))
        return numpy.asarray(self.values.pop(0))


def test_clip_bounds_and_clip_of():
    assert P.clip_bounds(300, 128) == [(0, 127), (128, 255), (256, 299)]
    assert P.clip_bounds(5, 128) == [(0, 4)]
    assert P.clip_bounds(4, 2) == [(0, 1), (2, 3)]
    assert P.clip_of([(0, 127), (128, 255)], 128) == (128, 255)
    with pytest.raises(ValueError):
        P.clip_of([(0, 3)], 4)
    with pytest.raises(ValueError):
        P.clip_bounds(0, 8)


def test_paper_tolerance():
    assert P.paper_tolerance((224, 224)) == 15.0
    assert P.paper_tolerance((112, 224)) == 7.5  # the smaller side
    assert P.paper_tolerance((64, 64)) == 15.0 * 64 / 224


def test_pointing_entry_counts():
    assert P.pointing_entry([1, -1, 0, 1]) == {"hits": 2, "misses": 1, "outcomes": [1, -1, 0, 1]}


def test_centre_point_outcomes():
    # 8 x 8 input: the centre pixel is (x, y) = (4, 4); tolerance 2 px diameter = 1 px radius
    boxes = [
        numpy.array([[0, 0, 2, 2]]),  # distance sqrt(2^2 + 2^2) = 2.83 > 1: miss
        numpy.array([[3, 3, 5, 5]]),  # contains the centre: hit
        numpy.array([[5, 0, 7, 3]]),  # dx = 1, dy = 1: sqrt(2) > 1: miss
        numpy.array([[5, 4, 7, 4]]),  # dx = 1, dy = 0: exactly 1: hit
        numpy.zeros((0, 4)),
    ]  # not annotated
    assert P.centre_point_outcomes(boxes, (8, 8), 2.0).tolist() == [-1, 1, -1, 1, 0]


def test_random_point_outcomes_draws_once_for_the_annotated_frames():
    boxes = [numpy.array([[0, 0, 1, 1]]), numpy.zeros((0, 4)), numpy.array([[0, 0, 1, 1]])]
    rng = FixedDraws([[[0, 0], [7, 5]]])  # (x, y) of frames 0 and 2
    out = P.random_point_outcomes(boxes, (6, 8), 2.0, rng)
    assert out.tolist() == [1, 0, -1]  # (0, 0) lies in the box; (7, 5) is far from it
    # x in [0, W = 8), y in [0, H = 6), one row per annotated frame
    assert rng.calls == [((0, (8, 6)), (2, 2))]


def test_evidence_split():
    assert P.evidence_split([1.0, 2.0, 3.0, 4.0], [True, True, False, False]) == (1.5, 3.5)
    assert P.evidence_split([1.0, 2.0], [True, True]) is None
    assert P.evidence_split([1.0, 2.0], [False, False]) is None


def test_thresholded_probability_and_minmax():
    assert P.thresholded_probability([0.2, 0.5, 0.7]).tolist() == [-1.0, 1.0, 1.0]
    assert P.minmax([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert P.minmax([3.0, 3.0]).tolist() == [0.0, 0.0]


def test_detections_known_length():
    S = [0.0, 1.0, 3.0, 1.0, 0.0, 0.0, 5.0, 5.0]
    clips = [(0, 3), (4, 7)]
    # segment (1, 2): centre frame 1 in clip (0, 3); L = 2; window sums over [0, 1, 3, 1]: 1, 4, 4
    # -> the first: (1, 2)
    # segment (5, 7): centre 6 in clip (4, 7); L = 3; sums over [0, 0, 5, 5]: 5, 10 -> (5, 7), mean 10 / 3
    out = P.detections_known_length(S, S, [(1, 2), (5, 7)], clips)
    assert out == [[1, 2, 2.0], [5, 7, 10 / 3]]
    # a segment longer than its clip: the window is the whole clip
    assert P.detections_known_length(S, S, [(0, 6)], clips) == [[0, 3, 1.25]]


def test_detections_unknown_length():
    S = [-1.0, 2.0, 1.0, -1.0, 0.5, -2.0, 3.0, 0.0]
    clips = [(0, 3), (4, 7)]
    # only clip (0, 3) meets the segment: anchor 1, grows right over 1.0, stops at -1 on both sides
    assert P.detections_unknown_length(S, S, [(1, 2)], clips) == [[1, 2, 1.5]]
    # a segment in the second clip too: anchor 6 (S = 3), left stops at -2, right takes the 0 (S >= 0 grows)
    score = [0.0] * 6 + [0.2, 0.4]
    assert P.detections_unknown_length(S, score, [(1, 2), (6, 7)], clips)[1] == [6, 7, pytest.approx(0.3)]


def test_temporal_pointing_rows():
    p = [0.1, 0.9, 0.85, 0.95, 0.0, 0.0, 0.0, 0.0]
    S = [0.0, 1.0, 0.9, 0.0, 0.0, 0.0, 0.0, 9.0]
    rng = FixedDraws([2])
    values = P.temporal_pointing(p, {"cEB-R": S}, (1, 2), [(0, 3), (4, 7)], rng)
    assert rng.calls == [((4,), None)]  # a frame of the 4-frame clip holding the segment
    # the random frame 2 lies in [1, 2]; the segment covers 2 of the clip's 4 frames; the probability
    # peaks at 3
    # (a miss), S at 1 (a hit: the 9 at frame 7 is in another clip); minmax(p) + minmax(S) =
    # [0, 0.94 + 1, 0.88 + 0.9, 1 + 0] peaks at 1 (a hit)
    assert values == {
        "Random": True,
        "Random (expected)": 0.5,
        "Peak probability": False,
        "cEB-R": True,
        "Peak probability + cEB-R": True,
    }
    assert list(values) == [
        "Random",
        "Random (expected)",
        "Peak probability",
        "cEB-R",
        "Peak probability + cEB-R",
    ]


def test_temporal_record_two_classes():
    T = 8
    clips = [(0, 7)]
    probs = {0: [0.9, 0.8, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1], 2: [0.1, 0.1, 0.1, 0.1, 0.1, 0.7, 0.9, 0.2]}
    S0 = [2.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]
    S2 = [-1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 3.0, -1.0]
    gt = [(0, 0, 1), (2, 5, 6)]
    rec = P.temporal_record(
        probs, {"cEB-R": {0: S0, 2: S2}}, gt, clips, FixedDraws([0, 7]), ambiguous=[(3, 3)]
    )
    assert rec["gt"] == [[0, 0, 1], [2, 5, 6]] and rec["ambiguous"] == [[3, 3]]
    det = rec["detections"]
    # probability baseline: thresholded p of class 0 is +1 on frames 0-1: known (L = 2) and unknown
    # windows (0, 1), scored by the mean probability 0.85; class 2: +1 on frames 5-6, mean 0.8
    assert det["known"]["Probability"] == [[0, 0, 1, pytest.approx(0.85)], [2, 5, 6, pytest.approx(0.8)]]
    assert det["unknown"]["Probability"] == det["known"]["Probability"]
    assert det["known"]["cEB-R"] == [[0, 0, 1, 1.5], [2, 5, 6, 2.0]]
    assert det["unknown"]["cEB-R"] == [[0, 0, 1, 1.5], [2, 5, 6, 2.0]]
    assert list(det["known"]) == ["Probability", "cEB-R"]
    tp = rec["temporal_pointing"]
    assert [e["label"] for e in tp] == [0, 2] and [e["segment"] for e in tp] == [[0, 1], [5, 6]]
    assert tp[0]["values"]["Random"] is True and tp[1]["values"]["Random"] is False  # frames 0 and 7
    assert tp[0]["values"]["Random (expected)"] == 2 / T
    assert tp[0]["values"]["cEB-R"] and tp[1]["values"]["cEB-R"]
    # evidence inside / outside each class's segments: class 0: 1.5 and -1; class 2: 2 and -1
    assert rec["evidence_split"] == {"cEB-R": [[1.5, -1.0], [2.0, -1.0]]}


def test_sampled_interval():
    kept = [0, 3, 6, 9, 12, 15, 18, 21]
    assert P.sampled_interval(10, 20, kept) == (4, 6)  # frames 12, 15, 18
    assert P.sampled_interval(13, 14, kept) == (4, 4)  # between 12 and 15: the nearest to 13.5 is 12
    assert P.sampled_interval(0, 0, kept) == (0, 0)
    assert P.sampled_interval(20, 40, kept) == (7, 7)  # clipped to the analysed frames
    assert P.sampled_interval(22, 40, kept) is None  # after the last analysed frame
    assert P.sampled_interval(0, 1, [5, 6]) is None  # before the first


def test_docstring_examples():
    import doctest

    result = doctest.testmod(P, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_jsonable():
    doc = P.jsonable({1: (numpy.float32(0.5), numpy.int64(3)), "a": numpy.array([True, False])})
    assert doc == {"1": [0.5, 3], "a": [True, False]}
    with pytest.raises(ValueError):
        P.jsonable({"x": float("nan")})
