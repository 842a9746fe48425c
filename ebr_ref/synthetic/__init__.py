"""Synthetic benchmarks rendered in NumPy: action clips (:mod:`.actions`) and captioned clips (:mod:`.captions`).

``ebr_ref.synthetic`` re-exports the action generator, so that
``from ebr_ref import synthetic; synthetic.make_clip(...)`` reads as before.
"""

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

__all__ = [
    "ACTIONS", "NUM_CLASSES", "KINDS", "Rendered", "SyntheticClip", "render_action", "make_clip", "make_batch",
    "ACTOR_STYLE", "actor_track", "shape_mask", "boxes_of",
]
