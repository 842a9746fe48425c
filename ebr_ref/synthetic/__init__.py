"""Synthetic benchmarks rendered in NumPy: action clips and captioned clips (:mod:`.captions`).

Two action benchmarks, named in :data:`BENCHMARKS`, with the same API
(``ACTIONS``, ``NUM_CLASSES``, ``KINDS``, ``render_action``, ``make_clip``,
``make_batch``):

``"appearance"`` (:mod:`.actions`)
    Every class has its own actor shape and colour: one frame names the action.
``"motion"`` (:mod:`.motion`)
    One actor for every class; the classes differ only in its motion over
    time, so one frame cannot tell them apart (the regime of paper §5.2).

``ebr_ref.synthetic`` re-exports the appearance generator, so that
``from ebr_ref import synthetic; synthetic.make_clip(...)`` reads as before;
:func:`generator` returns either module by its benchmark name.
"""

from . import actions, motion
from .actions import (
    ACTIONS,
    ACTOR_STYLE,
    KINDS,
    NUM_CLASSES,
    Rendered,
    SyntheticClip,
    actor_track,
    boxes_of,
    make_batch,
    make_clip,
    render_action,
    shape_mask,
)

BENCHMARKS = ("appearance", "motion")
_GENERATORS = {"appearance": actions, "motion": motion}


def generator(benchmark):
    """The generator of a benchmark named in :data:`BENCHMARKS`: module :mod:`.actions` or :mod:`.motion`."""
    if benchmark not in _GENERATORS:
        raise ValueError(f"synthetic: unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    return _GENERATORS[benchmark]


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
    "BENCHMARKS",
    "generator",
    "actions",
    "motion",
]
