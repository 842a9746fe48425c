"""synthetic: ground truth against the rendered pixels, motion per class, determinism, composition."""

import numpy
import pytest

from ebr_ref.synthetic.actions import ACTIONS, KINDS, NUM_CLASSES, make_batch, make_clip, render_action


def _diff_boxes(with_actor, without_actor):
    """Per-frame inclusive bounding box of the pixels the actor changed, found with numpy.nonzero."""
    changed = numpy.any(with_actor != without_actor, axis=1)  # (T, H, W)
    out = []
    for t in range(changed.shape[0]):
        ys, xs = numpy.nonzero(changed[t])
        out.append([xs.min(), ys.min(), xs.max(), ys.max()] if ys.size else [numpy.nan] * 4)
    return numpy.array(out, dtype=numpy.float64), changed


def _centres(boxes):
    return (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2


def test_at_least_six_classes_with_distinct_names():
    assert NUM_CLASSES >= 6 and len(set(ACTIONS)) == NUM_CLASSES


@pytest.mark.parametrize("label", range(NUM_CLASSES))
@pytest.mark.parametrize("seed", [0x5EED, 0xA11CE])
def test_boxes_enclose_exactly_the_actor_pixels(label, seed):
    full = render_action(label, 16, rng=seed)
    bare = render_action(label, 16, rng=seed, draw_actor=False)
    numpy.testing.assert_array_equal(full.boxes, bare.boxes)  # same random draws either way
    expect, changed = _diff_boxes(full.frames, bare.frames)
    assert not numpy.any(numpy.isnan(full.boxes))  # the actor is visible in every frame
    numpy.testing.assert_array_equal(full.boxes, expect)
    assert numpy.all(changed.sum(axis=(1, 2)) >= 8)  # a real object, not a speck


def test_frames_format_and_other_sizes():
    r = render_action("orbit", 5, rng=0x1, size=(48, 80), n_distractors=5)
    assert r.frames.shape == (5, 3, 48, 80) and r.frames.dtype == numpy.float32
    assert r.frames.min() >= 0.0 and r.frames.max() <= 1.0
    assert r.boxes.shape == (5, 4)
    assert numpy.all(r.boxes[:, [0, 2]] >= 0) and numpy.all(r.boxes[:, [0, 2]] <= 79)
    assert numpy.all(r.boxes[:, [1, 3]] >= 0) and numpy.all(r.boxes[:, [1, 3]] <= 47)
    with pytest.raises(ValueError, match="at least 16 x 16"):
        render_action(0, 4, rng=0, size=(8, 8))
    with pytest.raises(ValueError, match="unknown label"):
        render_action("jump", 4, rng=0)
    with pytest.raises(ValueError, match="class in"):
        render_action(NUM_CLASSES, 4, rng=0)


def test_background_moves_without_actor_or_distractors():
    r = render_action("slide", 8, rng=0xB6, n_distractors=0, draw_actor=False)
    step = numpy.abs(numpy.diff(r.frames, axis=0)).mean(axis=(1, 2, 3))  # (T - 1,)
    assert numpy.all(step > 1e-3)
    assert r.frames.std() > 0.02  # textured, not flat


@pytest.mark.parametrize("seed", [0x10, 0x20, 0x30])
def test_each_action_has_its_motion(seed):
    T = 16
    b = {a: render_action(a, T, rng=seed).boxes for a in ACTIONS}
    w = {a: b[a][:, 2] - b[a][:, 0] for a in ACTIONS}
    cx = {a: _centres(b[a])[0] for a in ACTIONS}
    cy = {a: _centres(b[a])[1] for a in ACTIONS}
    # slide: left to right on a fixed row (with at most two restarts at the left edge)
    dx = numpy.diff(cx["slide"])
    assert numpy.sum(dx > 0) >= T - 3 and numpy.sum(dx < 0) <= 2
    assert numpy.ptp(cy["slide"]) <= 1
    # rotate and pulse stay in place; the bar's box changes shape, the disk's box changes size
    for a in ("rotate", "pulse", "flicker"):
        assert numpy.ptp(cx[a]) <= 1.5 and numpy.ptp(cy[a]) <= 1.5, a
    assert numpy.ptp(w["rotate"]) >= 4
    assert numpy.ptp(w["pulse"]) >= 4
    # bounce: fixed column (the triangle's slanted edges rasterise +-1 px by sub-pixel height),
    # moving vertically
    assert numpy.ptp(cx["bounce"]) <= 1
    assert numpy.ptp(cy["bounce"]) >= 5
    # orbit: moves on a circle around the frame centre
    radius = numpy.hypot(cx["orbit"] - 31.5, cy["orbit"] - 31.5)
    assert numpy.ptp(radius) <= 3 and radius.min() >= 7
    assert numpy.ptp(cx["orbit"]) >= 5 and numpy.ptp(cy["orbit"]) >= 5
    # zigzag: x reverses direction, y drifts down (with at most one restart at the top)
    sx = numpy.sign(numpy.diff(cx["zigzag"]))
    assert numpy.sum(sx[1:] * sx[:-1] < 0) >= 1
    assert numpy.sum(numpy.diff(cy["zigzag"]) < 0) <= 1
    # flicker: the actor's colour switches between two brightness levels
    f = render_action("flicker", T, rng=seed)
    x, y = int(cx["flicker"][0]), int(cy["flicker"][0])
    level = f.frames[:, 0, y, x]  # red channel at the diamond's centre
    assert level.max() > 0.9 and level.min() < 0.35
    assert len(numpy.unique(numpy.round(level, 4))) == 2


def test_same_seed_same_bytes_different_seed_different_clip():
    a = make_clip("rand+GT+rand", 3, seed=0xC0FFEE, num_frames=64, gt_length=11)
    b = make_clip("rand+GT+rand", 3, seed=0xC0FFEE, num_frames=64, gt_length=11)
    c = make_clip("rand+GT+rand", 3, seed=0xC0FFEF, num_frames=64, gt_length=11)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.boxes.tobytes() == b.boxes.tobytes()
    assert a.interval == b.interval and a.rand_label == b.rand_label
    assert a.frames.tobytes() != c.frames.tobytes()
    # a Generator works as the seed too and is advanced
    g = numpy.random.default_rng(0x77)
    first, second = make_clip(seed=g), make_clip(seed=g)
    assert first.frames.tobytes() != second.frames.tobytes()
    assert make_clip(seed=numpy.random.default_rng(0x77)).frames.tobytes() == first.frames.tobytes()


def test_make_batch_is_balanced_and_deterministic():
    frames, clips = make_batch(14, seed=0xBA7C)
    assert frames.shape == (14, 16, 3, 64, 64) and frames.dtype == numpy.float32
    labels = [c.label for c in clips]
    assert sorted(labels) == sorted(list(range(NUM_CLASSES)) * 2)
    again, _ = make_batch(14, seed=0xBA7C)
    assert again.tobytes() == frames.tobytes()
    frames2, clips2 = make_batch(3, "GT+rand", seed=0x1, labels=[0, 1, 2], num_frames=8)
    assert frames2.shape == (3, 8, 3, 64, 64) and [c.label for c in clips2] == [0, 1, 2]
    with pytest.raises(ValueError, match="3 clips but 2 labels"):
        make_batch(3, seed=0, labels=[0, 1])


@pytest.mark.parametrize("kind", KINDS)
def test_composition_lengths_labels_and_boxes(kind):
    kw = {"gt_length": 41} if kind == "rand+GT+rand" else {}
    c = make_clip(kind, "bounce", seed=0xD0 + KINDS.index(kind), **kw)
    T = 128 if kind == "rand+GT+rand" else 16
    assert c.kind == kind and c.frames.shape == (T, 3, 64, 64) and c.label == ACTIONS.index("bounce")
    s, e = c.interval
    expect = {"trimmed": (0, 15), "GT+rand": (0, 7), "rand+GT": (8, 15)}
    if kind in expect:
        assert (s, e) == expect[kind]
    else:
        assert e - s + 1 == 41 and 1 <= s and e <= T - 2  # rand frames on both sides
    inside = numpy.zeros(T, dtype=bool)
    inside[s : e + 1] = True
    assert numpy.all(c.frame_labels[inside] == c.label)
    if kind == "trimmed":
        assert c.rand_label == -1
    else:
        assert c.rand_label != c.label and 0 <= c.rand_label < NUM_CLASSES
        assert numpy.all(c.frame_labels[~inside] == c.rand_label)
    assert numpy.all(numpy.isnan(c.boxes[~inside]))
    numpy.testing.assert_array_equal(c.boxes[inside], c.actor_boxes[inside])
    assert not numpy.any(numpy.isnan(c.actor_boxes))


def test_composed_boxes_match_the_composed_pixels():
    # a rand+GT+rand clip rendered with and without actors is not available, but each segment of the
    # composition is a rendered video: its boxes must sit on pixels of the actor's colour family
    c = make_clip("GT+rand", "slide", seed=0x5, rand_label="orbit")
    for t in range(16):
        x1, y1, x2, y2 = c.actor_boxes[t].astype(int)
        patch = c.frames[t, :, y1 : y2 + 1, x1 : x2 + 1]  # (3, h, w)
        red = (patch[0] > 0.85) & (patch[1] < 0.25) & (patch[2] < 0.25)
        magenta = (patch[0] > 0.85) & (patch[1] < 0.3) & (patch[2] > 0.85)
        assert (red if t < 8 else magenta).any(), t


def test_composition_options_and_errors():
    c = make_clip("rand+GT+rand", 0, seed=0x9, num_frames=64, gt_length=20, start=0)
    assert c.interval == (0, 19) and c.frame_labels[20] != 0  # an explicit start may touch the edge
    c = make_clip("rand+GT+rand", 0, seed=0x9, num_frames=64, gt_length=20, start=44)
    assert c.interval == (44, 63)
    c = make_clip("GT+rand", 2, seed=0x9, num_frames=10, gt_length=3, rand_label=5)
    assert c.interval == (0, 2) and c.frame_labels.tolist() == [2] * 3 + [5] * 7
    with pytest.raises(ValueError, match="must differ"):
        make_clip("GT+rand", 2, seed=0, rand_label=2)
    with pytest.raises(ValueError, match="needs gt_length"):
        make_clip("rand+GT+rand", 2, seed=0)
    with pytest.raises(ValueError, match="gt_length must be an integer in"):
        make_clip("rand+GT", 2, seed=0, gt_length=16)
    with pytest.raises(ValueError, match="start must be an integer in"):
        make_clip("rand+GT+rand", 2, seed=0, num_frames=64, gt_length=20, start=45)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_clip("GT+GT", 2, seed=0)
    with pytest.raises(ValueError, match="trimmed clip is all GT"):
        make_clip("trimmed", 2, seed=0, gt_length=5)
    with pytest.raises(TypeError):
        make_clip("trimmed", 2)  # the seed is required
