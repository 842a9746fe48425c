"""localize: temporal grounding and pointing games against hand-worked cases and naive oracles."""

import math

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.evaluation.localize import (
    ground_known_length,
    ground_unknown_length,
    map_peak,
    pointing_game,
    pointing_hit,
    temporal_pointing_hit,
)

# ----------------------------------------------------------------------------- oracles


def naive_unknown_length(S):
    """Paper §4.1 as a literal loop: first maximum, then step outwards while S >= 0."""
    S = list(S)
    anchor = 0
    for t in range(len(S)):
        if S[t] > S[anchor]:
            anchor = t
    start = anchor
    while start - 1 >= 0 and S[start - 1] >= 0:
        start -= 1
    end = anchor
    while end + 1 < len(S) and S[end + 1] >= 0:
        end += 1
    return start, end


def naive_known_length(S, L):
    """Every window summed with Python ints; strict '>' keeps the earliest of equal sums."""
    best, best_sum = 0, sum(S[:L])
    for s in range(1, len(S) - L + 1):
        total = sum(S[s : s + L])
        if total > best_sum:
            best, best_sum = s, total
    return best, best + L - 1


def _segment_distance(px, py, ax, ay, bx, by):
    """Distance from a point to the segment a-b."""
    vx, vy = bx - ax, by - ay
    den = vx * vx + vy * vy
    s = 0.0 if den == 0 else min(max(((px - ax) * vx + (py - ay) * vy) / den, 0.0), 1.0)
    return math.hypot(px - (ax + s * vx), py - (ay + s * vy))


def naive_diameter_hit(point, box, tolerance):
    """Hit when the point is inside the box or within tolerance/2 of one of its four edges."""
    x, y = point
    x1, y1, x2, y2 = box
    if x1 <= x <= x2 and y1 <= y <= y2:
        return True
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    d = min(_segment_distance(x, y, *corners[i], *corners[(i + 1) % 4]) for i in range(4))
    return d <= tolerance / 2


def torchray_hit(point, box, tolerance, H=80, W=80):
    """TorchRay's PointingGame.evaluate transcribed to NumPy: an integer-pixel mask and a strict disk."""
    mask = numpy.zeros((H, W), dtype=bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1 : y2 + 1, x1 : x2 + 1] = True
    v, u = numpy.meshgrid((numpy.arange(H) - point[1]) ** 2, (numpy.arange(W) - point[0]) ** 2, indexing="ij")
    accept = (v + u) < tolerance**2
    return bool((mask & accept).any())


# ----------------------------------------------------------------------------- unknown length


@pytest.mark.parametrize(
    "S, expect",
    [
        ([-1.0, 0.5, 0.0, 2.0, 1.0, -0.1, 1.5], (1, 4)),  # zeros are included (not negative)
        ([-3.0, -1.0, -2.0], (1, 1)),  # all negative: the anchor alone
        ([0.0, 0.0, 0.0, 0.0], (0, 3)),  # all zero: first maximum, whole clip
        ([5.0, 1.0, -1.0, 2.0], (0, 1)),  # anchor at the left edge
        ([-1.0, 2.0, 1.0, 5.0], (1, 3)),  # anchor at the right edge
        ([1.0, 3.0, -1.0, 3.0, 2.0], (0, 1)),  # tie: the first maximum is the anchor
        ([2.0], (0, 0)),
        ([-0.0, 1.0, -1e-300], (0, 1)),  # -0.0 is not negative; a tiny negative stops growth
    ],
)
def test_unknown_length_hand_cases(S, expect):
    assert ground_unknown_length(numpy.array(S)) == expect


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]), min_size=1, max_size=20))
def test_unknown_length_matches_naive_loop(S):
    assert ground_unknown_length(numpy.array(S)) == naive_unknown_length(S)


def test_unknown_length_does_not_modify_input_and_accepts_float32():
    S = numpy.array([0.5, -1.0, 2.0, 0.0], dtype=numpy.float32)
    before = S.copy()
    assert ground_unknown_length(S) == (2, 3)
    assert numpy.array_equal(S, before)


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, numpy.nan], [numpy.inf]])
def test_unknown_length_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="ground_unknown_length"):
        ground_unknown_length(numpy.array(bad))


# ----------------------------------------------------------------------------- known length


def test_known_length_hand_cases():
    S = numpy.array([0.0, 1.0, 1.0, 0.0, 2.0])
    assert ground_known_length(S, 2) == (1, 2)  # sums 1, 2, 1, 2: the earliest of the tie
    assert ground_known_length(S, 1) == (4, 4)
    assert ground_known_length(S, 5) == (0, 4)  # L == T
    assert ground_known_length(numpy.array([-5.0, -1.0, -2.0]), 1) == (1, 1)
    assert ground_known_length(numpy.array([1.0, 2.0, 3.0]), 2) == (1, 2)  # window at the right edge


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_known_length_matches_brute_force(data):
    S = data.draw(st.lists(st.integers(-3, 3), min_size=1, max_size=25))
    L = data.draw(st.integers(1, len(S)))
    assert ground_known_length(numpy.array(S, dtype=numpy.float64), L) == naive_known_length(S, L)


def exact_known_length(S, L):
    """The oracle in exact arithmetic: window sums of the given values as Fractions, earliest maximum."""
    from fractions import Fraction

    F = [Fraction(float(v)) for v in S]
    sums = [sum(F[s : s + L]) for s in range(len(S) - L + 1)]
    best = max(sums)
    start = sums.index(best)
    return start, start + L - 1


def test_known_length_ties_of_exact_sums_that_rounding_breaks():
    # the same four values in two orders: exact sums equal, float sums 2.3 and 2.3000000000000003
    S = [-0.1, 0.9, 0.8, 0.7, -0.1]
    assert sum(S[0:4]) < sum(S[1:5])  # what a float sum sees
    assert ground_known_length(numpy.array(S), 4) == (0, 3) == exact_known_length(S, 4)
    # 0.2 + 0.9 and 0.0 + 1.1 both round to 1.1, but the exact sum of the second window is larger
    S = [-0.3, 0.2, 0.9, 0.0, 1.1, -0.5]
    assert 0.2 + 0.9 == 0.0 + 1.1
    assert ground_known_length(numpy.array(S), 2) == (3, 4) == exact_known_length(S, 2)
    # float32 evidence: compared by the exact sums of the float32 values
    S32 = numpy.array([-0.1, 0.9, 0.8, 0.7, -0.1], dtype=numpy.float32)
    assert ground_known_length(S32, 4) == exact_known_length(S32, 4) == (0, 3)
    # values far apart in magnitude: the exact sums still decide (a float sum loses the 1e-300)
    S = [1.0, 0.0, 1e-300, 1.0]
    assert S[0] + S[1] == S[2] + S[3]
    assert ground_known_length(numpy.array(S), 2) == exact_known_length(S, 2) == (2, 3)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_known_length_matches_an_exact_oracle_on_a_decimal_grid(data):
    # evidence rounded to 0.1: many windows share their exact sum, and float sums of them round apart
    T = data.draw(st.integers(1, 40))
    S = [round(0.1 * k, 1) for k in data.draw(st.lists(st.integers(-20, 20), min_size=T, max_size=T))]
    L = data.draw(st.integers(1, T))
    assert ground_known_length(numpy.array(S), L) == exact_known_length(S, L)


def test_known_length_on_random_rounded_evidence_agrees_with_the_exact_oracle():
    # the pass that found the bug: 400 random cases on a 0.1 grid (3 went wrong with float window sums)
    rng = numpy.random.default_rng(0x10CA1)
    wrong_float = 0
    for _ in range(400):
        T = int(rng.integers(5, 60))
        S = numpy.round(rng.normal(0.0, 1.0, T), 1)
        L = int(rng.integers(1, T + 1))
        expect = exact_known_length(S, L)
        assert ground_known_length(S, L) == expect
        s_float = int(numpy.argmax(numpy.lib.stride_tricks.sliding_window_view(S, L).sum(axis=1)))
        wrong_float += s_float != expect[0]
    assert wrong_float > 0  # the float comparison does go wrong on this data: the test exercises the edge


@pytest.mark.parametrize("L", [0, -1, 6, 2.5])
def test_known_length_rejects_bad_length(L):
    with pytest.raises(ValueError, match="length must be an integer in"):
        ground_known_length(numpy.zeros(5), L)


# ----------------------------------------------------------------------------- map peak


def test_map_peak_maps_cell_centres_back_to_input_pixels():
    m = numpy.zeros((14, 14))
    m[0, 0] = 1.0
    assert map_peak(m, (224, 224)) == (7.5, 7.5)  # stride 16: the centre of pixels 0..15
    m = numpy.zeros((14, 14))
    m[13, 2] = 1.0
    assert map_peak(m, (224, 224)) == (2.5 * 16 - 0.5, 13.5 * 16 - 0.5)
    # non-square map and input: x uses W / w, y uses H / h
    m = numpy.zeros((2, 4))
    m[1, 3] = 1.0
    assert map_peak(m, (10, 40)) == (3.5 * 10 - 0.5, 1.5 * 5 - 0.5)
    # a map at input resolution: the identity
    m = numpy.zeros((7, 9))
    m[4, 6] = 2.0
    assert map_peak(m, (7, 9)) == (6.0, 4.0)


def test_map_peak_ties_flat_maps_and_bad_maps():
    m = numpy.array([[0.0, 3.0, 1.0], [3.0, 0.0, 3.0]])
    assert map_peak(m, (2, 3)) == (1.0, 0.0)  # first maximum in row-major order
    assert map_peak(numpy.zeros((4, 4)), (8, 8)) is None
    assert map_peak(numpy.full((3, 2), -2.5), (8, 8)) is None
    assert map_peak(numpy.array([[-3.0, -1.0]]), (1, 2)) == (1.0, 0.0)  # a signed map
    with pytest.raises(ValueError, match="NaN"):
        map_peak(numpy.array([[0.0, numpy.nan]]), (1, 2))
    with pytest.raises(ValueError, match="2-D"):
        map_peak(numpy.zeros(4), (1, 4))
    with pytest.raises(ValueError, match="input_size"):
        map_peak(numpy.eye(2), (0, 2))


# ----------------------------------------------------------------------------- pointing hit


def test_pointing_hit_diameter_hand_cases():
    box = (10, 20, 30, 40)
    assert pointing_hit((15.0, 25.0), box)  # inside
    assert pointing_hit((30.0 + 7.5, 25.0), box)  # exactly tolerance / 2 to the right edge: a hit
    assert not pointing_hit((30.0 + 7.5 + 1e-9, 25.0), box)
    assert pointing_hit((20.0, 20.0 - 7.5), box)  # exactly 7.5 above the top edge
    # diagonal from the corner (30, 40): 5.3 * sqrt(2) = 7.495 <= 7.5 ; 5.31 * sqrt(2) = 7.509
    assert pointing_hit((35.3, 45.3), box)
    assert not pointing_hit((35.31, 45.31), box)
    # a wider tolerance parameter
    assert pointing_hit((30.0 + 10.0, 25.0), box, tolerance=20.0)
    assert not pointing_hit((30.0 + 10.0, 25.0), box, tolerance=19.9)
    # several boxes: any counts; NaN rows are ignored; no valid box is a miss
    boxes = numpy.array([[numpy.nan] * 4, [0, 0, 1, 1], [100, 100, 110, 110]], dtype=float)
    assert pointing_hit((104.0, 95.0), boxes)
    assert not pointing_hit((50.0, 50.0), boxes)
    assert not pointing_hit((0.0, 0.0), numpy.full((1, 4), numpy.nan))


def test_pointing_hit_torchray_differs_from_the_diameter_rule():
    box = (10, 20, 30, 40)
    # 10 px from the box: a miss with a 15-px diameter, a hit with TorchRay's radius-like 15
    assert not pointing_hit((40.0, 30.0), box)
    assert pointing_hit((40.0, 30.0), box, convention="torchray")
    # TorchRay's test is strict: exactly 15 px is a miss
    assert not pointing_hit((45.0, 30.0), box, convention="torchray")
    assert pointing_hit((44.99, 30.0), box, convention="torchray")
    with pytest.raises(ValueError, match="convention"):
        pointing_hit((0, 0), box, convention="radius")


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 15), st.integers(0, 15)),
    st.floats(-10, 90, allow_nan=False),
    st.floats(-10, 90, allow_nan=False),
    st.sampled_from([1.0, 5.0, 15.0, 22.5]),
)
def test_pointing_hit_matches_oracles(b, x, y, tolerance):
    box = (b[0], b[1], b[0] + b[2], b[1] + b[3])
    assert pointing_hit((x, y), box, tolerance) == naive_diameter_hit((x, y), box, tolerance)
    assert pointing_hit((x, y), box, tolerance, convention="torchray") == torchray_hit((x, y), box, tolerance)


# ----------------------------------------------------------------------------- pointing game


def test_pointing_game_outcomes_per_frame():
    maps = numpy.zeros((4, 2, 2))
    maps[0, 0, 0] = 1.0  # peak at input (7.5, 7.5) for a 32 x 32 input (stride 16)
    maps[1, 1, 1] = 1.0  # peak at (23.5, 23.5)
    maps[2, 0, 1] = 1.0  # frame 2 is not annotated
    # frame 3: a flat map on an annotated frame
    boxes = numpy.array([[0, 0, 8, 8], [0, 0, 8, 8], [numpy.nan] * 4, [0, 0, 31, 31]], dtype=float)
    out = pointing_game(maps, boxes, (32, 32))
    assert out.dtype == numpy.int8
    assert out.tolist() == [1, -1, 0, -1]
    # the same with a per-frame list of (k, 4) arrays, frame 1 gaining a second box
    per_frame = [boxes[0][None], numpy.array([[0, 0, 8, 8], [20, 20, 25, 25]]), numpy.zeros((0, 4)), boxes[3]]
    assert pointing_game(maps, per_frame, (32, 32)).tolist() == [1, 1, 0, -1]
    with pytest.raises(ValueError, match="maps but"):
        pointing_game(maps, per_frame[:3], (32, 32))
    with pytest.raises(ValueError, match=r"\(T=4, 4\)"):
        pointing_game(maps, boxes[:3], (32, 32))


# ----------------------------------------------------------------------------- temporal pointing


def test_temporal_pointing_hit():
    S = numpy.array([0.0, 1.0, 4.0, 4.0, 2.0])
    assert temporal_pointing_hit(S, (2, 2))  # inclusive interval, first maximum at 2
    assert not temporal_pointing_hit(S, (3, 4))  # the tie at 3 does not count
    assert temporal_pointing_hit(S, (0, 4))
    assert not temporal_pointing_hit(numpy.zeros(5), (0, 4))  # flat evidence: no peak
    assert not temporal_pointing_hit(numpy.array([1.0]), (0, 0))
    with pytest.raises(ValueError, match="end >= start"):
        temporal_pointing_hit(S, (3, 2))


def test_accepts_backend_arrays(xp):
    S = xp.asarray(numpy.array([-1.0, 2.0, 0.0, -1.0]))
    assert ground_unknown_length(S) == (1, 2)
    assert ground_known_length(S, 2) == (1, 2)
    assert temporal_pointing_hit(S, (1, 1))
    maps = xp.asarray(numpy.eye(3)[None] * numpy.array([1.0, 2.0, 3.0])[None, :, None])  # peak at (2, 2)
    assert map_peak(maps[0], (3, 3)) == (2.0, 2.0)
    assert pointing_game(maps, xp.asarray(numpy.array([[2.0, 2.0, 2.0, 2.0]])), (3, 3)).tolist() == [1]
