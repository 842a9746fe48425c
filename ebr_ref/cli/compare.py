"""``ebr-ref compare``: check another implementation's maps and per-layer signals against this engine.

See :mod:`ebr_ref.tools.compare` for the ``.npz`` layout and the error measures.
Exit status 0 when every entry is within ``--rtol``, 1 otherwise, 2 for a user
mistake.
"""

from __future__ import annotations

import os

import numpy

from ..tools.compare import compare, format_report, read_theirs
from ..tools.video import MAX_FRAME_PIXELS, VideoError, clip_for_model, read_frames
from ._common import (
    UserError, describe_model, load_any_model, parse_seed_steps, require_classifier, resolve_targets, user_errors,
)
from .ground import add_model_args

__all__ = ["add_parser", "run"]


def add_parser(sub, parents):
    p = sub.add_parser(
        "compare", parents=parents, help="compare another implementation's maps/signals with this engine's",
        description="Recompute the maps, evidence, probabilities and per-layer signals stored in THEIRS.npz with "
                    "this engine (float64) and print, per entry, the max absolute and relative errors and where the "
                    "largest difference is. Keys: clip, target, method, lstm_rule, seed_steps, cont, layer, logits, "
                    "probs, maps, evidence, signal/<layer> (docs/verify-your-implementation.md).",
    )
    p.add_argument("theirs", metavar="THEIRS.npz")
    add_model_args(p)
    p.add_argument("--clip", help="the clip, when THEIRS.npz has none: .npy (T, C, H, W) preprocessed, .npz with a "
                                  "'clip' entry, or a video / frame folder (fitted and preprocessed for the model)")
    p.add_argument("--target", action="append", help="class name or index (overrides THEIRS.npz)")
    p.add_argument("--method", help="overrides THEIRS.npz")
    p.add_argument("--layer", help="read-out layer of 'maps' (overrides THEIRS.npz)")
    p.add_argument("--lstm-rule", choices=("caffe", "eb"), help="overrides THEIRS.npz")
    p.add_argument("--seed-steps", help="overrides THEIRS.npz")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="this engine's dtype (default float64, the reference)")
    p.add_argument("--rtol", type=float, default=1e-4, help="pass threshold on the normwise relative error (1e-4)")
    p.set_defaults(run=run)
    return p


def _load_clip(path, model, max_pixels=MAX_FRAME_PIXELS):
    if not os.path.exists(path):
        raise UserError(f"--clip {path}: no such file or folder")
    if path.endswith(".npy"):
        from ..models.io import read_npy

        with user_errors(f"--clip {path}"):
            return read_npy(path)
    if path.endswith(".npz"):
        with user_errors(f"--clip {path}"):
            z = read_theirs(path)
        if "clip" not in z:
            raise UserError(f"--clip {path}: the archive has no 'clip' entry")
        return z["clip"]
    try:
        frames, _ = read_frames(path, max_pixels=max_pixels)
        clip, _ = clip_for_model(frames, model)
    except VideoError as e:
        raise UserError(str(e)) from None
    return clip


def run(args, console):
    with user_errors():
        theirs = read_theirs(args.theirs)
    model, how = load_any_model(args.model, prototxt=args.prototxt, source=args.source,
                                options={"input_size": args.input_size} if args.input_size else None)
    require_classifier(model, "compare")
    clip = _load_clip(args.clip, model) if args.clip is not None else None
    target = None
    if args.target:
        t = resolve_targets(args.target, model)
        target = t[0] if len(t) == 1 else t
    steps = parse_seed_steps(args.seed_steps) if args.seed_steps is not None else None
    if not args.rtol > 0:
        raise UserError(f"--rtol must be positive, got {args.rtol}")
    with user_errors(), numpy.errstate(over="ignore", invalid="ignore"):
        report = compare(theirs, model, clip=clip, target=target, method=args.method, layer=args.layer,
                         lstm_rule=args.lstm_rule, seed_steps=steps, dtype=args.dtype, rtol=args.rtol,
                         progress=console.progress)
    if not report.rows:
        raise UserError(f"{args.theirs}: nothing to compare (no logits, probs, maps, evidence or signal/<layer> entry)")
    print(f"model {describe_model(model)} [{how}]")
    print(format_report(report))
    return 0 if report.ok else 1
