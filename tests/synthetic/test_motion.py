"""synthetic.motion: one frame cannot tell the classes apart, a frame difference can; ground truth; seeds."""

import numpy
import pytest

from ebr_ref import synthetic
from ebr_ref.synthetic import actions, motion
from ebr_ref.synthetic.motion import ACTIONS, KINDS, NUM_CLASSES, make_batch, make_clip, render_action


def _actor_mask(label, T, seed, **kw):
    """The actor's pixels, found as the pixels that change when it is drawn (same scene without it)."""
    full = render_action(label, T, rng=seed, **kw)
    bare = render_action(label, T, rng=seed, draw_actor=False, **kw)
    numpy.testing.assert_array_equal(full.boxes, bare.boxes)  # same random draws either way
    return full, numpy.any(full.frames != bare.frames, axis=1)  # (T, H, W)


def _frame_features(mask):
    """Per frame, from the actor's pixels only: centre x, centre y, log area, and its 3-fold orientation.

    The orientation is the argument of the third central moment ``sum (z - c)^3`` (``z = x + iy``),
    which turns by ``3 a`` when the triangle turns by ``a``; it enters as (cos, sin).
    """
    T = mask.shape[0]
    out = numpy.empty((T, 5))
    for t in range(T):
        ys, xs = numpy.nonzero(mask[t])
        z = xs + 1j * ys
        c = z.mean()
        m3 = numpy.sum((z - c) ** 3)
        out[t] = [c.real, c.imag, numpy.log(z.size), numpy.cos(numpy.angle(m3)), numpy.sin(numpy.angle(m3))]
    return out


def _pair_features(f):
    """From frames t and t + 1: displacement x, y, change of log area, turn (3-fold angle change / 3)."""
    d = f[1:] - f[:-1]
    a = numpy.arctan2(f[:, 4], f[:, 3])
    turn = numpy.angle(numpy.exp(1j * (a[1:] - a[:-1]))) / 3  # radians, in (-60, 60] degrees
    return numpy.stack([d[:, 0], d[:, 1], d[:, 2], turn], axis=1)


def _knn_accuracy(train_x, train_y, test_x, test_y, k=15):
    """Accuracy of a k-nearest-neighbour classifier on standardised features (majority vote)."""
    mu, sd = train_x.mean(axis=0), train_x.std(axis=0) + 1e-12
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None, :]  # (test, train)
    nn = numpy.argsort(d, axis=1, kind="stable")[:, :k]
    votes = numpy.zeros((len(b), NUM_CLASSES))
    for j in range(k):
        votes[numpy.arange(len(b)), train_y[nn[:, j]]] += 1 + 1e-3 * (k - j)  # ties: nearer neighbours win
    return float(numpy.mean(votes.argmax(1) == test_y))


@pytest.fixture(scope="module")
def features():
    """Single-frame and frame-pair features of 24 videos per class (12 train, 12 test), 10 frames each."""
    out = {"frame": {"train": ([], []), "test": ([], [])}, "pair": {"train": ([], []), "test": ([], [])}}
    seeds = numpy.random.SeedSequence(0xF3A7).spawn(NUM_CLASSES * 24)
    for i, s in enumerate(seeds):
        label, split = i % NUM_CLASSES, "train" if (i // NUM_CLASSES) % 2 == 0 else "test"
        _, mask = _actor_mask(label, 10, s)
        f = _frame_features(mask)
        for kind, x in (("frame", f), ("pair", _pair_features(f))):
            out[kind][split][0].append(x)
            out[kind][split][1].append(numpy.full(len(x), label))
    return {
        kind: {split: (numpy.concatenate(v[0]), numpy.concatenate(v[1])) for split, v in d.items()}
        for kind, d in out.items()
    }


def test_api_and_benchmark_names():
    assert synthetic.BENCHMARKS == ("appearance", "motion")
    assert synthetic.generator("appearance") is actions and synthetic.generator("motion") is motion
    with pytest.raises(ValueError, match="unknown benchmark"):
        synthetic.generator("colour")
    assert NUM_CLASSES >= 6 and len(set(ACTIONS)) == NUM_CLASSES == len(ACTIONS)
    assert KINDS == actions.KINDS
    for name in ("ACTIONS", "NUM_CLASSES", "KINDS", "render_action", "make_clip", "make_batch"):
        assert hasattr(actions, name) and hasattr(motion, name)


def test_one_frame_cannot_tell_the_classes_apart(features):
    """A k-NN classifier on what one frame shows of the actor (where, how large, how turned): at chance."""
    acc = _knn_accuracy(*features["frame"]["train"], *features["frame"]["test"])
    n = len(features["frame"]["test"][1])
    assert n == NUM_CLASSES * 12 * 10
    assert abs(acc - 1 / NUM_CLASSES) < 0.06, acc  # chance 0.125; the frames of a video are correlated


def test_a_frame_difference_tells_them_apart(features):
    """The same classifier on the change between two consecutive frames names the class."""
    acc = _knn_accuracy(*features["pair"]["train"], *features["pair"]["test"])
    assert acc > 0.9, acc


def test_single_frame_statistics_match_across_classes():
    """Per class, the actor's mean centre, log size and angle over many frames agree with the uniform laws."""
    T = 8
    stats = []
    for label in range(NUM_CLASSES):
        tracks = numpy.concatenate(
            [
                render_action(label, T, rng=s, n_distractors=0).track
                for s in numpy.random.SeedSequence(0x57A7 + label).spawn(150)
            ]
        )
        cx, cy, size, angle = tracks.T
        stats.append(
            [
                cx.mean(),
                cy.mean(),
                numpy.log(size).mean(),
                numpy.cos(3 * angle).mean(),
                numpy.sin(3 * angle).mean(),
            ]
        )
    stats = numpy.array(stats)  # (classes, 5)
    lo, hi = 0.6 * motion.SIZE_RANGE[1] + 1, 63 - 0.6 * motion.SIZE_RANGE[1] - 1
    expect = [(lo + hi) / 2, (lo + hi) / 2, numpy.log(motion.SIZE_RANGE).mean(), 0, 0]
    # standard errors of 150 videos (frames of a video are correlated, so 150 independent draws at most)
    sd_log = numpy.log(motion.SIZE_RANGE[1] / motion.SIZE_RANGE[0]) / 12**0.5
    se = numpy.array([(hi - lo) / 12**0.5, (hi - lo) / 12**0.5, sd_log, 0.5**0.5, 0.5**0.5])
    assert numpy.all(numpy.abs(stats - expect) < 4 * se / 150**0.5), stats


@pytest.mark.parametrize("label", range(NUM_CLASSES))
def test_boxes_enclose_exactly_the_actor_pixels(label):
    full, mask = _actor_mask(label, 16, 0xB0C5 + label)
    assert not numpy.any(numpy.isnan(full.boxes))
    for t in range(16):
        ys, xs = numpy.nonzero(mask[t])
        assert xs.size >= 8  # a real object, not a speck
        numpy.testing.assert_array_equal(full.boxes[t], [xs.min(), ys.min(), xs.max(), ys.max()])


def test_same_actor_in_every_class():
    """Every class shows the same red triangle: the actor's pixels are red and its shape is the same."""
    for label in range(NUM_CLASSES):
        full, mask = _actor_mask(label, 4, 0xC010 + label)
        rgb = full.frames.transpose(0, 2, 3, 1)[mask]  # (pixels, 3)
        assert numpy.all(rgb[:, 0] > 0.85) and numpy.all(rgb[:, 1] < 0.25) and numpy.all(rgb[:, 2] < 0.25)
        # triangle: the area of an equilateral triangle of circumradius 0.6 size, to rasterisation error
        area = mask.sum(axis=(1, 2))
        expect = 3 * 3**0.5 / 4 * (0.6 * full.track[:, 2]) ** 2
        assert numpy.all(numpy.abs(area - expect) <= 0.25 * expect + 4), (label, area, expect)


@pytest.mark.parametrize("seed", [0x10, 0x20])
def test_each_action_has_its_motion(seed):
    T = 12
    tr = {a: render_action(a, T, rng=seed).track for a in ACTIONS}
    steps = {a: numpy.diff(tr[a], axis=0) for a in ACTIONS}  # (T - 1, 4): dx, dy, dsize, dangle
    for a, col, sign in (("left", 0, -1), ("right", 0, 1), ("up", 1, -1), ("down", 1, 1)):
        d = steps[a][:, col]
        assert numpy.sum(numpy.sign(d) == sign) >= T - 2, a  # at most one re-entry
        others = [c for c in range(4) if c != col]
        assert numpy.all(steps[a][:, others] == 0), a
    assert numpy.all(steps["clockwise"][:, 3] > 0) and numpy.all(steps["anticlockwise"][:, 3] < 0)
    for a in ("grow", "shrink"):
        d = steps[a][:, 2]
        assert numpy.sum(numpy.sign(d) == (1 if a == "grow" else -1)) >= T - 2, a  # at most one restart
        assert numpy.all(steps[a][:, [0, 1, 3]] == 0), a
    # on the screen (y down), clockwise moves the triangle's apex from the right towards the bottom
    m = render_action("clockwise", 2, rng=seed, n_distractors=0)
    assert m.track[1, 3] > m.track[0, 3]


def test_same_seed_same_bytes_different_seed_different_clip():
    a = make_clip("rand+GT+rand", 3, seed=0xC0FFEE, num_frames=64, gt_length=11)
    b = make_clip("rand+GT+rand", 3, seed=0xC0FFEE, num_frames=64, gt_length=11)
    c = make_clip("rand+GT+rand", 3, seed=0xC0FFEF, num_frames=64, gt_length=11)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.boxes.tobytes() == b.boxes.tobytes()
    assert a.interval == b.interval and a.rand_label == b.rand_label
    assert a.frames.tobytes() != c.frames.tobytes()
    g = numpy.random.default_rng(0x77)
    first, second = make_clip(seed=g), make_clip(seed=g)
    assert first.frames.tobytes() != second.frames.tobytes()
    assert make_clip(seed=numpy.random.default_rng(0x77)).frames.tobytes() == first.frames.tobytes()
    # the two benchmarks are different videos from the same seed
    appearance = actions.make_clip("trimmed", 0, seed=5)
    assert appearance.frames.tobytes() != make_clip("trimmed", 0, seed=5).frames.tobytes()


def test_make_batch_is_balanced_and_deterministic():
    frames, clips = make_batch(16, seed=0xBA7C, num_frames=4)
    assert frames.shape == (16, 4, 3, 64, 64) and frames.dtype == numpy.float32
    assert sorted(c.label for c in clips) == sorted(list(range(NUM_CLASSES)) * 2)
    again, _ = make_batch(16, seed=0xBA7C, num_frames=4)
    assert again.tobytes() == frames.tobytes()
    with pytest.raises(ValueError, match="3 clips but 2 labels"):
        make_batch(3, seed=0, labels=[0, 1])


@pytest.mark.parametrize("kind", KINDS)
def test_composition_lengths_labels_and_boxes(kind):
    kw = {"gt_length": 41} if kind == "rand+GT+rand" else {}
    c = make_clip(kind, "grow", seed=0xD0 + KINDS.index(kind), **kw)
    T = 128 if kind == "rand+GT+rand" else 16
    assert c.kind == kind and c.frames.shape == (T, 3, 64, 64) and c.label == ACTIONS.index("grow")
    s, e = c.interval
    expect = {"trimmed": (0, 15), "GT+rand": (0, 7), "rand+GT": (8, 15)}
    if kind in expect:
        assert (s, e) == expect[kind]
    else:
        assert e - s + 1 == 41 and 1 <= s and e <= T - 2
    inside = numpy.zeros(T, dtype=bool)
    inside[s : e + 1] = True
    assert numpy.all(c.frame_labels[inside] == c.label)
    if kind != "trimmed":
        assert c.rand_label != c.label and 0 <= c.rand_label < NUM_CLASSES
        assert numpy.all(c.frame_labels[~inside] == c.rand_label)
    assert numpy.all(numpy.isnan(c.boxes[~inside]))
    numpy.testing.assert_array_equal(c.boxes[inside], c.actor_boxes[inside])
    assert not numpy.any(numpy.isnan(c.actor_boxes))


def test_errors():
    with pytest.raises(ValueError, match="unknown label"):
        render_action("slide", 4, rng=0)  # an appearance class is not a motion class
    with pytest.raises(ValueError, match="class in"):
        render_action(NUM_CLASSES, 4, rng=0)
    with pytest.raises(ValueError, match="at least 16 x 16"):
        render_action(0, 4, rng=0, size=(8, 8))
    with pytest.raises(ValueError, match="must differ"):
        make_clip("GT+rand", "left", seed=0, rand_label="left")
    with pytest.raises(ValueError, match="unknown action"):
        motion.motion_track("jump", 4, 64, 64, numpy.random.default_rng(0))
