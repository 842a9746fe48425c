"""Synthetic captioning videos, built on :mod:`ebr_ref.synthetic.actions`, with word-level ground truth.

A clip shows two or three *objects* over the moving textured background and
grey distractors of :mod:`ebr_ref.synthetic.actions`. Each object is one of that
module's actors, with its colour, its shape and its motion (a red square that
slides, a green bar that rotates, ...), drawn at a smaller scale in its own cell
of a 2 x 2 grid (its motion confined to the cell, so objects never overlap each
other) and present either for the whole clip or for a contiguous part of it.

Captions follow one template, objects in a fixed order (the order of
:data:`ebr_ref.synthetic.ACTIONS`)::

    a square slides and a disk pulses
    a square slides and a ring orbits and a diamond flickers

The noun is where the decoder decides which object comes next (from the
pixels); the verb then follows from the noun. Colours are not named: an
object's colour is the visual cue of its identity (as in :mod:`ebr_ref.synthetic.actions`),
which a small CNN trained on the CPU in minutes learns; shapes alone, at this
size among grey distractors of the same shapes, take far longer to learn. The
template says nothing about *when* an object appears: the captioner of paper
§4.2 pools its frames' features by a mean over time, which is invariant to the
order of the frames, so "X then Y" could not be decoded from it. The ground
truth of every object (its words, its inclusive per-frame boxes, NaN where
absent, and its inclusive frame interval) supports the spatial pointing game on
the frames where the object is present and temporal pointing for objects
present in part of the clip.

Conventions are those of :mod:`ebr_ref.synthetic.actions`: frames ``(T, 3, H, W)``
float32 in ``[0, 1]``, boxes ``(x1, y1, x2, y2)`` inclusive pixel coordinates,
intervals inclusive; one ``numpy.random.Generator`` draws everything in a
fixed order, so a seed determines a clip byte for byte.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from ..models.caption import Vocabulary
from .actions import ACTIONS, ACTOR_STYLE, actor_track, boxes_of, render_action, shape_mask

__all__ = [
    "SHAPES",
    "COLOURS",
    "VERBS",
    "WORDS",
    "vocabulary",
    "ObjectTruth",
    "CaptionClip",
    "caption_of",
    "make_caption_clip",
    "make_caption_batch",
]

SHAPES = {a: ACTOR_STYLE[a][0] for a in ACTIONS}  # action -> shape word
COLOURS = {  # action -> the name of its actor's colour in ebr_ref.synthetic
    "slide": "red",
    "rotate": "green",
    "pulse": "blue",
    "bounce": "yellow",
    "orbit": "magenta",
    "zigzag": "cyan",
    "flicker": "orange",
}
VERBS = {
    "slide": "slides",
    "rotate": "rotates",
    "pulse": "pulses",
    "bounce": "bounces",
    "orbit": "orbits",
    "zigzag": "zigzags",
    "flicker": "flickers",
}
WORDS = ("a", "and") + tuple(SHAPES[a] for a in ACTIONS) + tuple(VERBS[a] for a in ACTIONS)
_CELL_SCALE = 1.5  # object size relative to the synthetic actor drawn in a cell-sized frame


def vocabulary():
    """The :class:`~ebr_ref.models.caption.Vocabulary` of the captions.

    Its tokens are ``<bos>``, ``<eos>`` and :data:`WORDS`.
    """
    return Vocabulary(WORDS)


class ObjectTruth(NamedTuple):
    """One object of a clip."""

    action: str  # one of ebr_ref.synthetic.ACTIONS
    colour: str  # the actor's colour (a key of COLOURS; not a word of the caption)
    shape: str  # its shape word
    verb: str  # its motion word
    interval: tuple  # (start, end) inclusive frames where it is present
    boxes: numpy.ndarray  # (T, 4) float64 inclusive box; NaN where absent
    cell: tuple  # (row, col) of its cell in the 2 x 2 grid


class CaptionClip(NamedTuple):
    """A clip, its caption and the ground truth of every word."""

    frames: numpy.ndarray  # (T, 3, H, W) float32 in [0, 1]
    caption: str
    words: list  # the caption's words
    objects: list  # ObjectTruth, in caption order
    word_objects: (
        list  # per caption word: the index of the object it describes ("a", noun, verb), -1 for "and"
    )


def caption_of(objects):
    """``(caption, word_objects)`` of objects given in caption order."""
    words, owner = [], []
    for k, ob in enumerate(objects):
        if k:
            words.append("and")
            owner.append(-1)
        words += ["a", ob.shape, ob.verb]
        owner += [k] * 3
    return " ".join(words), owner


def _interval(T, rng, p_full):
    if rng.uniform() < p_full or T < 4:
        return 0, T - 1
    L = int(rng.integers(max(2, T // 3), T - 1))  # at least a third, at most T - 2 frames
    s = int(rng.integers(0, T - L + 1))
    return s, s + L - 1


def make_caption_clip(seed, *, num_objects=None, num_frames=8, size=(64, 64), n_distractors=2, p_full=0.4):
    """One captioned clip.

    Parameters
    ----------
    seed : int, SeedSequence or numpy.random.Generator
        The same seed gives the same clip, byte for byte.
    num_objects : {2, 3} or None
        Drawn uniformly when None.
    num_frames : int
        ``T``.
    size : (int, int)
        ``(H, W)``, each at least 32 (the 2 x 2 grid of cells).
    n_distractors : int
        Grey distractor shapes of :mod:`ebr_ref.synthetic.actions` (they may pass under objects).
    p_full : float
        Probability that an object is present in every frame; otherwise it is
        present in a contiguous part of at least ``T // 3`` (and 2) and at most
        ``T - 2`` frames.

    Returns
    -------
    CaptionClip
    """
    rng = numpy.random.default_rng(seed)
    T = int(num_frames)
    if T != num_frames or T < 1:
        raise ValueError(f"make_caption_clip: num_frames must be a positive integer, got {num_frames!r}")
    H, W = (int(v) for v in size)
    if H < 32 or W < 32:
        raise ValueError(f"make_caption_clip: frames must be at least 32 x 32, got {size!r}")
    n = int(rng.integers(2, 4)) if num_objects is None else int(num_objects)
    if n not in (2, 3):
        raise ValueError(f"make_caption_clip: num_objects must be 2 or 3, got {num_objects!r}")
    scene = render_action(0, T, rng=rng, size=(H, W), n_distractors=n_distractors, draw_actor=False)
    frames = scene.frames.astype(numpy.float64)
    actions = sorted(int(a) for a in rng.choice(len(ACTIONS), size=n, replace=False))  # caption order
    cells = [(int(c) // 2, int(c) % 2) for c in rng.permutation(4)[:n]]
    cH, cW = H // 2, W // 2
    X = numpy.arange(W, dtype=numpy.float64)[None, None, :]
    Y = numpy.arange(H, dtype=numpy.float64)[None, :, None]
    objects = []
    for a, (row, col) in zip(actions, cells):
        action = ACTIONS[a]
        cx, cy, sz, ang, colour = actor_track(action, T, cH, cW, rng)  # the actor in a cell-sized frame
        cx, cy, sz = cx + col * cW, cy + row * cH, sz * _CELL_SCALE
        start, end = _interval(T, rng, p_full)
        m = shape_mask(
            SHAPES[action], cx[:, None, None], cy[:, None, None], sz[:, None, None], ang[:, None, None], X, Y
        )  # (T, H, W)
        present = numpy.zeros(T, dtype=bool)
        present[start : end + 1] = True
        m &= present[:, None, None]
        frames = numpy.where(m[:, None], colour[:, :, None, None], frames)
        objects.append(
            ObjectTruth(
                action, COLOURS[action], SHAPES[action], VERBS[action], (start, end), boxes_of(m), (row, col)
            )
        )
    caption, owner = caption_of(objects)
    return CaptionClip(
        numpy.clip(frames, 0, 1).astype(numpy.float32), caption, caption.split(), objects, owner
    )


def make_caption_batch(n, *, seed, **options):
    """``n`` clips: clip ``i`` is ``make_caption_clip(SeedSequence(seed).spawn(n)[i], **options)``.

    Returns
    -------
    frames : float32 array of shape (n, T, 3, H, W)
    clips : list of CaptionClip
    """
    seq = seed if isinstance(seed, numpy.random.SeedSequence) else numpy.random.SeedSequence(seed)
    clips = [make_caption_clip(child, **options) for child in seq.spawn(int(n))]
    return numpy.stack([c.frames for c in clips]), clips
