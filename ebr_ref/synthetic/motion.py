"""The "motion" benchmark: action classes that one frame cannot tell apart (paper §5.2's regime).

In :mod:`ebr_ref.synthetic.actions` (the "appearance" benchmark) every class
has its own actor shape and colour, so one frame names the action. Here every
class has the same actor, a red triangle, and the classes differ only in how
it moves over time: four pairs of opposite motions.

================  =================================================================
action            motion of the actor (the same red triangle in every class)
================  =================================================================
``left``          translates left at constant speed; re-enters at the right edge
``right``         translates right; re-enters at the left edge
``up``            translates up; re-enters at the bottom
``down``          translates down; re-enters at the top
``clockwise``     turns clockwise on the screen (the ``angle`` of
                  :func:`~ebr_ref.synthetic.actions.shape_mask` increases; y points down)
``anticlockwise`` turns anticlockwise on the screen
``grow``          grows at a constant rate (in log size); restarts at the smallest size
``shrink``        shrinks at a constant rate; restarts at the largest size
================  =================================================================

**One frame says nothing about the class.** Each class draws the same random
numbers in the same order (position, log size, angle, speed) and only its
dynamics differ. In every class, at every frame, the actor's centre is uniform
over a fixed rectangle, its log size uniform over a fixed range, and its angle
uniform over the circle, the three independent: a wrapped translation, a
wrapped log-size ramp or a rotation with a uniform starting point leaves a
uniform distribution uniform. Background and distractors do not depend on
the class either. So the distribution of a single frame is the same for all
eight classes, exactly, and no per-frame classifier can beat chance; two
consecutive frames separate them (the sign of the displacement, of the
rotation, of the size change), except at the rare frames where the actor
re-enters or restarts.

**Distractors** (3 by default) perform the same eight motions (each its own,
drawn uniformly and independently of the actor's) with the same speeds and
sizes, in other appearances: any of the seven shapes of
:mod:`~ebr_ref.synthetic.actions` (the triangle included) in a colour other
than the actor's (green, blue, yellow, magenta or cyan). A model must tell
the actor from them by its colour and then read its motion, not any motion.
The background is the moving textured background of
:func:`ebr_ref.synthetic.actions.background`.

Conventions, clip kinds ("trimmed", "GT+rand", "rand+GT", "rand+GT+rand") and
the composition of clips are those of :mod:`ebr_ref.synthetic.actions`
(:func:`~ebr_ref.synthetic.actions.compose_clip`): frames ``(T, 3, H, W)``
float32 in ``[0, 1]``; the actor is drawn last, so its inclusive box is exactly
the region where it changes the frame; one ``numpy.random.Generator`` draws
every parameter in a fixed order, so a seed determines a clip byte for byte.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from .actions import (
    ACTOR_STYLE,
    KINDS,
    SyntheticClip,
    background,
    boxes_of,
    check_label,
    check_size,
    compose_batch,
    compose_clip,
    shape_mask,
)

__all__ = [
    "ACTIONS",
    "NUM_CLASSES",
    "KINDS",
    "ACTOR_SHAPE",
    "ACTOR_COLOUR",
    "DISTRACTOR_COLOURS",
    "Rendered",
    "SyntheticClip",
    "motion_track",
    "render_action",
    "make_clip",
    "make_batch",
]

ACTIONS = ("left", "right", "up", "down", "clockwise", "anticlockwise", "grow", "shrink")
NUM_CLASSES = len(ACTIONS)

ACTOR_SHAPE = "triangle"
ACTOR_COLOUR = (0.95, 0.15, 0.15)  # red, as the appearance benchmark's "slide" square
DISTRACTOR_COLOURS = tuple(ACTOR_STYLE[a][1] for a in ("rotate", "pulse", "bounce", "orbit", "zigzag"))
_SHAPES = ("square", "bar", "disk", "triangle", "ring", "plus", "diamond")


class Rendered(NamedTuple):
    """One rendered video: :class:`ebr_ref.synthetic.actions.Rendered` plus the actor's track."""

    frames: numpy.ndarray  # (T, 3, H, W) float32 in [0, 1]
    boxes: numpy.ndarray  # (T, 4) float64 inclusive (x1, y1, x2, y2) of the actor
    track: numpy.ndarray  # (T, 4) float64 the actor's centre x, centre y, size, angle (radians)


# Ranges at 64 x 64 (scaled with the frame): nominal size (the triangle's circumradius is 0.6 x size),
# translation speed (px / frame), turning speed (rad / frame), log-size rate (1 / frame).
SIZE_RANGE = (8.0, 18.0)
SPEED_RANGE = (1.0, 1.6)
TURN_RANGE = (0.12, 0.24)
GROWTH_RANGE = (0.04, 0.06)


def _wrap(x, lo, hi):
    """``x`` folded into ``[lo, hi)`` periodically (re-entry at the other end)."""
    return lo + numpy.mod(x - lo, hi - lo)


def motion_track(action, T, H, W, rng):
    """Per-frame parameters of an object performing ``action``: ``cx, cy, size, angle``, each ``(T,)``.

    Every action draws the same seven numbers in the same order (start x, start
    y, start log size, start angle, speed, turning speed, growth rate); the
    action decides which of them move. The centre stays inside a rectangle
    that holds the largest object (circumradius ``0.6 x`` the largest size plus
    one pixel), the same rectangle for every action.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
    S = min(H, W) / 64
    t = numpy.arange(T, dtype=numpy.float64)
    lo_s, hi_s = numpy.log(SIZE_RANGE[0] * S), numpy.log(SIZE_RANGE[1] * S)
    margin = 0.6 * SIZE_RANGE[1] * S + 1
    lo_x, hi_x, lo_y, hi_y = margin, W - 1 - margin, margin, H - 1 - margin
    x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    log_s0 = rng.uniform(lo_s, hi_s)
    a0 = rng.uniform(0, 2 * numpy.pi)
    speed = rng.uniform(*SPEED_RANGE) * S
    turn = rng.uniform(*TURN_RANGE)
    growth = rng.uniform(*GROWTH_RANGE)
    cx, cy = numpy.full(T, x0), numpy.full(T, y0)
    log_s, angle = numpy.full(T, log_s0), numpy.full(T, a0)
    if action in ("left", "right"):
        cx = _wrap(x0 + (speed if action == "right" else -speed) * t, lo_x, hi_x)
    elif action in ("up", "down"):
        cy = _wrap(y0 + (speed if action == "down" else -speed) * t, lo_y, hi_y)
    elif action in ("clockwise", "anticlockwise"):
        angle = a0 + (turn if action == "clockwise" else -turn) * t
    else:
        log_s = _wrap(log_s0 + (growth if action == "grow" else -growth) * t, lo_s, hi_s)
    return cx, cy, numpy.exp(log_s), angle


def _draw(frames, shape, track, colour, X, Y):
    """``frames`` with one object painted over (a new array) and its mask ``(T, H, W)``."""
    cx, cy, size, angle = (v[:, None, None] for v in track)
    m = shape_mask(shape, cx, cy, size, angle, X, Y)
    return numpy.where(m[:, None], numpy.asarray(colour)[None, :, None, None], frames), m


def render_action(label, num_frames, *, rng, size=(64, 64), n_distractors=3, draw_actor=True):
    """Render one video of one motion class in a fresh scene.

    Parameters
    ----------
    label : int or str
        The class (index into :data:`ACTIONS`) or its name.
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
        ``frames (T, 3, H, W)`` float32, the actor's inclusive ``boxes (T, 4)`` and its
        ``track (T, 4)``: centre x, centre y, nominal size, angle (the parameters of
        :func:`~ebr_ref.synthetic.actions.shape_mask`; the per-frame targets of the
        shipped motion CNN's auxiliary task).
    """
    rng = numpy.random.default_rng(rng)
    k = check_label(label, "label", ACTIONS)
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
    for _ in range(int(n_distractors)):
        shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
        base = numpy.array(DISTRACTOR_COLOURS[int(rng.integers(len(DISTRACTOR_COLOURS)))])
        colour = numpy.clip(base + rng.uniform(-0.06, 0.06, 3), 0, 1)
        action = ACTIONS[int(rng.integers(NUM_CLASSES))]
        frames, _ = _draw(frames, shape, motion_track(action, T, H, W, rng), colour, X, Y)
    colour = numpy.clip(numpy.array(ACTOR_COLOUR) + rng.uniform(-0.06, 0.06, 3), 0, 1)
    track = motion_track(ACTIONS[k], T, H, W, rng)
    painted, m = _draw(frames, ACTOR_SHAPE, track, colour, X, Y)
    if draw_actor:
        frames = painted
    frames = numpy.clip(frames, 0.0, 1.0).astype(numpy.float32)
    return Rendered(frames, boxes_of(m), numpy.stack(track, axis=1))


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
    """A clip of one of the compositions of paper §5.2, with motion classes.

    The same arguments and ground truth as :func:`ebr_ref.synthetic.actions.make_clip`
    (see that module's notes on the clip kinds); ``label`` and ``rand_label`` index
    :data:`ACTIONS`. A "GT+rand" clip here is two scenes whose actors look alike
    and move differently.

    Parameters
    ----------
    kind : {"trimmed", "GT+rand", "rand+GT", "rand+GT+rand"}
    label : int, str or None
        The GT action; drawn uniformly when None.
    seed : int, SeedSequence or numpy.random.Generator
        Required: the same seed gives the same clip, byte for byte.
    num_frames, gt_length, start, rand_label, size, n_distractors
        As :func:`ebr_ref.synthetic.actions.make_clip`.

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


def make_batch(n, kind="trimmed", *, seed, labels=None, **options):
    """``n`` clips stacked: :func:`ebr_ref.synthetic.actions.make_batch` with the motion classes.

    Parameters
    ----------
    n : int
    kind : str
    seed : int or SeedSequence
        Clip ``i`` has the child seed ``SeedSequence(seed).spawn(n + 1)[i]``; the
        last child shuffles the default labels.
    labels : sequence of int or None
        GT classes; when None, a balanced cycle over the 8 classes shuffled by the seed.
    **options
        Passed to :func:`make_clip`.

    Returns
    -------
    frames : float32 array of shape (n, T, 3, H, W)
    clips : list of SyntheticClip
    """
    return compose_batch(make_clip, NUM_CLASSES, n, kind, seed=seed, labels=labels, **options)
