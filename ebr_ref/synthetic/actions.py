"""A synthetic action-video generator for the temporal benchmark of paper §5.2.

The paper builds its synthetic set by concatenating two UCF101 videos of
different classes. Without UCF101 (and to train small models on the CPU),
this module renders its own videos: one *actor* performs one of
``NUM_CLASSES`` actions that differ in both motion and appearance, over a
textured background that moves, among distractor objects that never perform
an action.

=========  ==============  ====================================================
action     actor           motion
=========  ==============  ====================================================
slide      red square      left to right at constant speed, restarting at the
                           left edge
rotate     green bar       spins in place (counter-clockwise in image axes)
pulse      blue disk       grows and shrinks in place (sinusoidal radius)
bounce     yellow triangle bounces vertically off a floor (``|sin|``)
orbit      magenta ring    moves on a circle
zigzag     cyan plus       drifts down while zig-zagging left-right (triangle
                           wave)
flicker    orange diamond  still; its brightness switches between 100 % and
                           30 % every 2-3 frames
=========  ==============  ====================================================

Distractors are the same kinds of shapes in desaturated (greyish) colours that
drift slowly (at most 0.5 % of the frame size per frame) in a straight line,
reflecting off the borders; the background is a base colour plus three
drifting sinusoidal gratings plus a blocky noise texture panned by a random
camera motion. Every parameter is drawn from one ``numpy.random.Generator``
in a fixed order, so a seed determines a clip byte for byte.

Conventions
-----------
* Frames ``(T, 3, H, W)`` float32 in ``[0, 1]``, RGB, default 64 x 64.
* Pixel centres have integer coordinates (as :mod:`ebr_ref.evaluation.localize`); a shape
  covers the pixels whose centres fall inside it (no anti-aliasing), so the
  actor's pixels are known exactly.
* Boxes ``(x1, y1, x2, y2)`` are **inclusive** pixel coordinates: the
  smallest box that holds every pixel of the actor's rendered mask (``x`` is
  the column). The actor is drawn last, so none of its pixels is occluded and
  the box is exactly the region where the actor changes the frame. A frame
  where the actor is absent has a NaN box.
* Intervals ``(start, end)`` are inclusive frame indices.

Clip composition (paper §5.2)
-----------------------------
``"trimmed"``
    One action over the whole clip (for training the recognition model).
``"GT+rand"`` / ``"rand+GT"``
    Two independently rendered videos (their own background and
    distractors, as two concatenated UCF101 videos), 16 frames by default,
    the boundary at the midpoint (``gt_length = T // 2``).
``"rand+GT+rand"``
    A GT video of ``gt_length`` frames inserted into one rand video at a
    random position; 128 frames by default. A drawn position leaves at least
    one rand frame on each side; an explicit ``start`` may be any of
    ``0 .. T - gt_length``.

The rand action is always a different class from the GT action.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

__all__ = [
    "ACTIONS",
    "NUM_CLASSES",
    "KINDS",
    "Rendered",
    "SyntheticClip",
    "render_action",
    "make_clip",
    "make_batch",
    "ACTOR_STYLE",
    "actor_track",
    "shape_mask",
    "boxes_of",
    "background",
    "check_size",
    "check_label",
    "compose_clip",
    "compose_batch",
]

ACTIONS = ("slide", "rotate", "pulse", "bounce", "orbit", "zigzag", "flicker")
NUM_CLASSES = len(ACTIONS)
KINDS = ("trimmed", "GT+rand", "rand+GT", "rand+GT+rand")

_SHAPES = ("square", "bar", "disk", "triangle", "ring", "plus", "diamond")
ACTOR_STYLE = {  # action -> (shape, RGB colour)
    "slide": ("square", (0.95, 0.15, 0.15)),
    "rotate": ("bar", (0.15, 0.90, 0.20)),
    "pulse": ("disk", (0.20, 0.35, 1.00)),
    "bounce": ("triangle", (1.00, 0.90, 0.10)),
    "orbit": ("ring", (0.95, 0.20, 0.95)),
    "zigzag": ("plus", (0.10, 0.95, 0.95)),
    "flicker": ("diamond", (1.00, 0.55, 0.05)),
}
_DEFAULT_T = {"trimmed": 16, "GT+rand": 16, "rand+GT": 16, "rand+GT+rand": 128}


class Rendered(NamedTuple):
    """One rendered video: a single action (or none) in one scene."""

    frames: numpy.ndarray  # (T, 3, H, W) float32 in [0, 1]
    boxes: numpy.ndarray  # (T, 4) float64 inclusive (x1, y1, x2, y2) of the actor; NaN when absent


class SyntheticClip(NamedTuple):
    """A composed clip with its ground truth."""

    frames: numpy.ndarray  # (T, 3, H, W) float32 in [0, 1]
    label: int  # the GT action class
    interval: tuple  # (start, end) inclusive frames of the GT action
    boxes: numpy.ndarray  # (T, 4) float64 box of the GT actor; NaN outside the interval
    frame_labels: numpy.ndarray  # (T,) int64 class performed at each frame
    actor_boxes: numpy.ndarray  # (T, 4) float64 box of whichever actor is in the frame
    kind: str  # one of KINDS
    rand_label: int  # the rand action class, -1 for "trimmed"


# ----------------------------------------------------------------------------- geometry


def shape_mask(shape, cx, cy, size, angle, X, Y):
    """Pixels (centres) inside a shape; parameters (T, 1, 1), X (1, 1, W), Y (1, H, 1) -> (T, H, W) bool.

    ``size`` is the shape's nominal extent (side of the square, diameter of the
    disk, ...); ``angle`` rotates it counter-clockwise in image axes.
    """
    dx, dy = X - cx, Y - cy  # (T, H, W)
    c, s = numpy.cos(angle), numpy.sin(angle)
    u = dx * c + dy * s  # shape-frame coordinates
    v = -dx * s + dy * c
    h = size / 2
    if shape == "square":
        return (numpy.abs(u) <= h) & (numpy.abs(v) <= h)
    if shape == "bar":
        return (numpy.abs(u) <= 1.5 * h) & (numpy.abs(v) <= 0.4 * h)
    if shape == "disk":
        return dx * dx + dy * dy <= h * h
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= h * h) & (d2 >= (0.55 * h) ** 2)
    if shape == "plus":
        au, av = numpy.abs(u), numpy.abs(v)
        return ((au <= h) & (av <= h / 3)) | ((au <= h / 3) & (av <= h))
    if shape == "diamond":
        return numpy.abs(u) + numpy.abs(v) <= 1.2 * h
    if shape == "triangle":  # equilateral, circumradius 1.2 h, apex up at angle 0
        inside = numpy.ones(u.shape, dtype=bool)
        for k in range(3):
            phi = numpy.pi / 2 + 2 * numpy.pi * k / 3  # outward normals at 90, 210, 330 degrees
            inside &= u * numpy.cos(phi) + v * numpy.sin(phi) <= 0.6 * h
        return inside
    raise ValueError(f"unknown shape {shape!r}")


def boxes_of(mask):
    """Inclusive bounding boxes of (T, H, W) masks -> (T, 4) float64, NaN for empty masks."""
    T, H, W = mask.shape
    rows = mask.any(axis=2)  # (T, H)
    cols = mask.any(axis=1)  # (T, W)
    present = rows.any(axis=1)  # (T,)
    y1 = rows.argmax(axis=1)
    y2 = H - 1 - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = W - 1 - cols[:, ::-1].argmax(axis=1)
    boxes = numpy.stack([x1, y1, x2, y2], axis=1).astype(numpy.float64)
    boxes[~present] = numpy.nan
    return boxes


def _reflect(x, lo, hi):
    """Fold positions into [lo, hi] by reflection off both ends (a triangle wave)."""
    span = hi - lo
    y = numpy.mod(x - lo, 2 * span)
    return lo + span - numpy.abs(y - span)


def _triangle_wave(u):
    """Period-1 triangle wave with values in [-1, 1]."""
    return 4 * numpy.abs(u - numpy.floor(u + 0.5)) - 1


# ----------------------------------------------------------------------------- scene parts


def actor_track(action, T, H, W, rng):
    """Per-frame parameters of the actor: cx, cy, size, angle (T,), colour (T, 3)."""
    S = min(H, W)
    t = numpy.arange(T, dtype=numpy.float64)
    s0 = rng.uniform(0.14, 0.2) * S
    color = numpy.clip(numpy.array(ACTOR_STYLE[action][1]) + rng.uniform(-0.06, 0.06, 3), 0, 1)
    color = numpy.broadcast_to(color, (T, 3))
    cx0, cy0 = rng.uniform(0.35, 0.65) * W, rng.uniform(0.35, 0.65) * H
    phase = rng.uniform(0, 2 * numpy.pi)
    size = numpy.full(T, s0)
    angle = numpy.zeros(T)
    cx, cy = numpy.full(T, cx0), numpy.full(T, cy0)
    if action == "slide":
        lo, hi = s0 / 2 + 1, W - 2 - s0 / 2
        v = rng.uniform(0.035, 0.06) * W
        cx = lo + numpy.mod(rng.uniform(0, hi - lo) + v * t, hi - lo)
        cy = numpy.full(T, rng.uniform(0.25, 0.75) * H)
    elif action == "rotate":
        angle = phase + rng.uniform(0.2, 0.35) * t
    elif action == "pulse":
        size = s0 * (1.1 + 0.5 * numpy.sin(phase + rng.uniform(0.35, 0.6) * t))
    elif action == "bounce":
        amp = rng.uniform(0.3, 0.45) * H
        cy = 0.8 * H - amp * numpy.abs(numpy.sin(phase + rng.uniform(0.15, 0.25) * t))
    elif action == "orbit":
        radius = rng.uniform(0.15, 0.22) * S
        theta = phase + rng.choice((-1.0, 1.0)) * rng.uniform(0.25, 0.4) * t
        cx, cy = W / 2 + radius * numpy.cos(theta), H / 2 + radius * numpy.sin(theta)
    elif action == "zigzag":
        lo, hi = s0 / 2 + 1, H - 2 - s0 / 2
        v = rng.uniform(0.02, 0.035) * H
        cy = lo + numpy.mod(rng.uniform(0, hi - lo) + v * t, hi - lo)
        amp = rng.uniform(0.2, 0.3) * W
        cx = W / 2 + amp * _triangle_wave(t / rng.uniform(6, 10) + phase / (2 * numpy.pi))
    elif action == "flicker":
        period = int(rng.integers(2, 4))
        on = ((t.astype(numpy.int64) + int(rng.integers(0, 2 * period))) // period) % 2 == 0
        color = color * numpy.where(on, 1.0, 0.3)[:, None]
    else:
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
    return cx, cy, size, angle, color


def _distractor_tracks(n, T, H, W, rng):
    """Parameters of ``n`` distractors: list of (shape, cx, cy, size, angle, colour (3,))."""
    S = min(H, W)
    t = numpy.arange(T, dtype=numpy.float64)
    out = []
    for _ in range(n):
        shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
        size = rng.uniform(0.1, 0.18) * S
        angle = rng.uniform(0, 2 * numpy.pi)
        grey = rng.uniform(0.3, 0.85)
        color = 0.75 * grey + 0.25 * rng.uniform(0, 1, 3)
        speed = rng.uniform(0, 0.005) * S
        heading = rng.uniform(0, 2 * numpy.pi)
        lo_x, hi_x = size / 2, W - 1 - size / 2
        lo_y, hi_y = size / 2, H - 1 - size / 2
        x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        cx = _reflect(x0 + speed * numpy.cos(heading) * t, lo_x, hi_x)
        cy = _reflect(y0 + speed * numpy.sin(heading) * t, lo_y, hi_y)
        out.append((shape, cx, cy, numpy.full(T, size), numpy.full(T, angle), color))
    return out


def background(T, H, W, rng):
    """Moving textured background (T, 3, H, W) float64 (not yet clipped)."""
    S = min(H, W)
    t = numpy.arange(T, dtype=numpy.float64)
    X = numpy.arange(W, dtype=numpy.float64)[None, :]  # (1, W)
    Y = numpy.arange(H, dtype=numpy.float64)[:, None]  # (H, 1)
    base = rng.uniform(0.2, 0.5, 3)  # (3,)
    K = 3
    amp = rng.uniform(0.04, 0.1, K)
    colors = rng.uniform(0.3, 1.0, (K, 3))
    theta = rng.uniform(0, numpy.pi, K)
    freq = rng.uniform(1.5, 5.0, K) / S  # cycles per pixel
    omega = rng.uniform(0.15, 0.5, K) * rng.choice((-1.0, 1.0), K)  # radians per frame
    phase = rng.uniform(0, 2 * numpy.pi, K)
    spatial = (
        2
        * numpy.pi
        * freq[:, None, None]
        * (X * numpy.cos(theta)[:, None, None] + Y * numpy.sin(theta)[:, None, None])
    )  # (K, H, W)
    temporal = omega[:, None] * t[None, :] + phase[:, None]  # (K, T)
    # sin(spatial + temporal) = sin(spatial) cos(temporal) + cos(spatial) sin(temporal): a rank-2K product
    basis = numpy.concatenate([numpy.sin(spatial), numpy.cos(spatial)]).reshape(2 * K, H * W)  # (2K, HW)
    weight = amp[:, None] * colors  # (K, 3)
    coef = numpy.concatenate([numpy.cos(temporal), numpy.sin(temporal)])  # (2K, T)
    coef = coef.T[:, None, :] * numpy.concatenate([weight, weight]).T[None, :, :]  # (T, 3, 2K)
    bg = numpy.broadcast_to(base[None, :, None], (T, 3, H * W)).copy()  # (T, 3, HW)
    for j in range(2 * K):  # explicit sum: a BLAS call this small is slower when threads compete
        bg += coef[:, :, j, None] * basis[j]
    bg = bg.reshape(T, 3, H, W)
    # blocky noise texture (4-px cells), periodic, panned by a constant camera velocity
    cell = 4
    tex = rng.uniform(-0.08, 0.08, (3, -(-H // cell), -(-W // cell)))
    tex = numpy.repeat(numpy.repeat(tex, cell, axis=1), cell, axis=2)[:, :H, :W]  # (3, H, W)
    tiled = numpy.tile(tex, (1, 2, 2))  # (3, 2H, 2W): every wrapped window is a plain slice
    vel = rng.uniform(-0.6, 0.6, 2)  # (vy, vx) pixels per frame
    oy = numpy.round(vel[0] * t).astype(numpy.int64) % H
    ox = numpy.round(vel[1] * t).astype(numpy.int64) % W
    for k in range(T):
        bg[k] += tiled[:, oy[k] : oy[k] + H, ox[k] : ox[k] + W]
    return bg


def check_size(size):
    """``(H, W)`` as two ints, at least 16 x 16; ValueError otherwise."""
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"synthetic: size must be (H, W), got {size!r}") from None
    if H < 16 or W < 16:
        raise ValueError(f"synthetic: frames must be at least 16 x 16, got {size!r}")
    return H, W


def check_label(label, name, classes=None):
    """A class index from an index or an action name of ``classes`` (default :data:`ACTIONS`)."""
    classes = ACTIONS if classes is None else classes
    if isinstance(label, str):
        if label not in classes:
            raise ValueError(f"synthetic: unknown {name} {label!r}; expected one of {classes}")
        return classes.index(label)
    k = int(label)
    if k != label or not 0 <= k < len(classes):
        raise ValueError(
            f"synthetic: {name} must be a class in [0, {len(classes)}) or an action name, got {label!r}"
        )
    return k


# ----------------------------------------------------------------------------- public API


def render_action(label, num_frames, *, rng, size=(64, 64), n_distractors=3, draw_actor=True):
    """Render one video of one action in a fresh scene.

    Parameters
    ----------
    label : int or str
        The action class (index into :data:`ACTIONS`) or its name.
    num_frames : int
    rng : numpy.random.Generator, int or SeedSequence
        Source of every random parameter (a non-Generator is passed to
        ``numpy.random.default_rng``).
    size : (int, int)
        ``(H, W)``, at least 16 x 16.
    n_distractors : int
    draw_actor : bool
        False renders the same scene (same random draws) without the actor;
        the boxes are still those of the actor that would be drawn.

    Returns
    -------
    Rendered
        ``frames (T, 3, H, W)`` float32 and the actor's ``boxes (T, 4)``.
    """
    rng = numpy.random.default_rng(rng)
    k = check_label(label, "label")
    T = int(num_frames)
    if T != num_frames or T < 1:
        raise ValueError(f"render_action: num_frames must be a positive integer, got {num_frames!r}")
    if int(n_distractors) != n_distractors or n_distractors < 0:
        raise ValueError(
            f"render_action: n_distractors must be a non-negative integer, got {n_distractors!r}"
        )
    H, W = check_size(size)
    X = numpy.arange(W, dtype=numpy.float64)[None, None, :]  # (1, 1, W)
    Y = numpy.arange(H, dtype=numpy.float64)[None, :, None]  # (1, H, 1)
    frames = background(T, H, W, rng)  # (T, 3, H, W)
    for shape, cx, cy, sz, ang, color in _distractor_tracks(int(n_distractors), T, H, W, rng):
        m = shape_mask(
            shape, cx[:, None, None], cy[:, None, None], sz[:, None, None], ang[:, None, None], X, Y
        )
        frames = numpy.where(m[:, None], color[None, :, None, None], frames)
    cx, cy, sz, ang, color = actor_track(ACTIONS[k], T, H, W, rng)
    m = shape_mask(
        ACTOR_STYLE[ACTIONS[k]][0],
        cx[:, None, None],
        cy[:, None, None],
        sz[:, None, None],
        ang[:, None, None],
        X,
        Y,
    )  # (T, H, W)
    if draw_actor:
        frames = numpy.where(m[:, None], color[:, :, None, None], frames)
    frames = numpy.clip(frames, 0.0, 1.0).astype(numpy.float32)
    return Rendered(frames, boxes_of(m))


def make_clip(
    kind="trimmed",
    label=None,
    *,
    seed,
    num_frames=None,
    gt_length=None,
    start=None,
    rand_label=None,
    size=(64, 64),
    n_distractors=3,
):
    """A clip of one of the compositions of paper §5.2 (see the module notes).

    Parameters
    ----------
    kind : {"trimmed", "GT+rand", "rand+GT", "rand+GT+rand"}
    label : int, str or None
        The GT action; drawn uniformly when None.
    seed : int, SeedSequence or numpy.random.Generator
        Required: the same seed gives the same clip, byte for byte.
    num_frames : int or None
        ``T``; 16 by default, 128 for ``"rand+GT+rand"``.
    gt_length : int or None
        GT frames; ``T`` for ``"trimmed"``, ``T // 2`` for the two-part
        clips, and required for ``"rand+GT+rand"`` (e.g. 11, 41 or 65 as in
        Table 2).
    start : int or None
        First GT frame of ``"rand+GT+rand"``; drawn uniformly from
        ``1 .. T - gt_length - 1`` when None.
    rand_label : int, str or None
        The rand action; drawn uniformly among the other classes when None.
    size : (int, int)
    n_distractors : int

    Returns
    -------
    SyntheticClip
    """
    return compose_clip(
        render_action,
        ACTIONS,
        kind,
        label,
        seed=seed,
        num_frames=num_frames,
        gt_length=gt_length,
        start=start,
        rand_label=rand_label,
        size=size,
        n_distractors=n_distractors,
    )


def compose_clip(
    render,
    classes,
    kind,
    label,
    *,
    seed,
    num_frames=None,
    gt_length=None,
    start=None,
    rand_label=None,
    size=(64, 64),
    n_distractors=3,
):
    """:func:`make_clip` for any renderer: the clip compositions of paper §5.2 (see the module notes).

    Parameters
    ----------
    render : callable
        ``render(label, num_frames, *, rng, size, n_distractors) -> Rendered``, one
        action in a fresh scene (:func:`render_action`,
        :func:`ebr_ref.synthetic.motion.render_action`).
    classes : tuple of str
        The action names; a label is an index into it or one of its names.
    kind, label, seed, num_frames, gt_length, start, rand_label, size, n_distractors
        As :func:`make_clip`. The random draws happen in a fixed order (GT
        label, rand label, start, the GT video, the rand video), so a seed
        determines the clip.

    Returns
    -------
    SyntheticClip
    """
    if kind not in KINDS:
        raise ValueError(f"make_clip: kind must be one of {KINDS}, got {kind!r}")
    rng = numpy.random.default_rng(seed)
    T = _DEFAULT_T[kind] if num_frames is None else int(num_frames)
    if num_frames is not None and (T != num_frames or T < 1):
        raise ValueError(f"make_clip: num_frames must be a positive integer, got {num_frames!r}")
    n_classes = len(classes)
    gt = check_label(rng.integers(n_classes) if label is None else label, "label", classes)
    if kind == "trimmed":
        L = T if gt_length is None else int(gt_length)
        if L != T:
            raise ValueError(f"make_clip: a trimmed clip is all GT (gt_length = T = {T}), got {gt_length!r}")
        r = render(gt, T, rng=rng, size=size, n_distractors=n_distractors)
        labels = numpy.full(T, gt, dtype=numpy.int64)
        return SyntheticClip(r.frames, gt, (0, T - 1), r.boxes, labels, r.boxes.copy(), kind, -1)
    if rand_label is None:
        others = [c for c in range(n_classes) if c != gt]
        rnd = others[int(rng.integers(len(others)))]
    else:
        rnd = check_label(rand_label, "rand_label", classes)
        if rnd == gt:
            raise ValueError(f"make_clip: the rand action must differ from the GT action ({classes[gt]})")
    if gt_length is None and kind == "rand+GT+rand":
        raise ValueError("make_clip: 'rand+GT+rand' needs gt_length (e.g. 11, 41 or 65)")
    L = T // 2 if gt_length is None else int(gt_length)
    if (gt_length is not None and L != gt_length) or not 1 <= L < T:
        raise ValueError(f"make_clip: gt_length must be an integer in [1, T={T}), got {gt_length!r}")
    if kind == "GT+rand":
        s = 0
    elif kind == "rand+GT":
        s = T - L
    elif start is None:
        if T - L < 2:
            raise ValueError(f"make_clip: 'rand+GT+rand' needs T - gt_length >= 2, got T={T}, gt_length={L}")
        s = int(rng.integers(1, T - L))  # 1 .. T - L - 1: a rand frame on each side
    else:
        s = int(start)
        if s != start or not 0 <= s <= T - L:
            raise ValueError(
                f"make_clip: start must be an integer in [0, T - gt_length = {T - L}], got {start!r}"
            )
    g = render(gt, L, rng=rng, size=size, n_distractors=n_distractors)
    b = render(rnd, T - L, rng=rng, size=size, n_distractors=n_distractors)
    frames = numpy.concatenate([b.frames[:s], g.frames, b.frames[s:]])  # (T, 3, H, W)
    nan_box = numpy.full((T, 4), numpy.nan)
    boxes = nan_box.copy()
    boxes[s : s + L] = g.boxes
    actor = numpy.concatenate([b.boxes[:s], g.boxes, b.boxes[s:]])
    labels = numpy.full(T, rnd, dtype=numpy.int64)
    labels[s : s + L] = gt
    return SyntheticClip(frames, gt, (s, s + L - 1), boxes, labels, actor, kind, rnd)


def make_batch(n, kind="trimmed", *, seed, labels=None, **options):
    """``n`` clips stacked for training or evaluation.

    Parameters
    ----------
    n : int
    kind : str
        As :func:`make_clip`.
    seed : int or SeedSequence
        Clip ``i`` is ``make_clip(kind, labels[i], seed=child_i, ...)`` with
        ``child_i = SeedSequence(seed).spawn(n)[i]``.
    labels : sequence of int or None
        GT classes; when None, a balanced cycle ``0, 1, ..., NUM_CLASSES - 1,
        0, ...`` shuffled by the seed.
    **options
        Passed to :func:`make_clip` (``num_frames``, ``gt_length``, ``size``...).

    Returns
    -------
    frames : float32 array of shape (n, T, 3, H, W)
    clips : list of SyntheticClip
        The clips with their ground truth (labels, intervals, boxes).
    """
    return compose_batch(make_clip, NUM_CLASSES, n, kind, seed=seed, labels=labels, **options)


def compose_batch(make, num_classes, n, kind, *, seed, labels=None, **options):
    """:func:`make_batch` for any clip maker ``make(kind, label, *, seed, **options)`` of ``num_classes``."""
    seq = seed if isinstance(seed, numpy.random.SeedSequence) else numpy.random.SeedSequence(seed)
    children = seq.spawn(int(n) + 1)
    if labels is None:
        labels = numpy.random.default_rng(children[-1]).permutation(numpy.arange(int(n)) % num_classes)
    if len(labels) != n:
        raise ValueError(f"make_batch: {n} clips but {len(labels)} labels")
    clips = [make(kind, labels[i], seed=children[i], **options) for i in range(int(n))]
    return numpy.stack([c.frames for c in clips]), clips
