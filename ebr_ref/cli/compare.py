"""``ebr-ref compare``: check another implementation's run against this engine, point by point.

See :mod:`ebr_ref.tools.compare` for the ``.npz`` layout and the error measures.
``--case DIR`` takes the model, the clip and the settings from a case of the
conformance suite (``ebr-ref conformance export``). Exit status 0 when every
point is within its tolerance, 1 otherwise, 2 for a user mistake.
"""

from __future__ import annotations

import os

import numpy

from ..tools.compare import FLOAT32_RTOL, FLOAT64_RTOL, compare, format_report, read_theirs
from ..tools.video import MAX_FRAME_PIXELS, VideoError, clip_for_model, read_frames
from ._common import (
    UserError,
    describe_model,
    load_any_model,
    parse_seed_steps,
    positive_int,
    resolve_targets,
    user_errors,
)

__all__ = ["add_parser", "run"]


def add_parser(sub, parents):
    p = sub.add_parser(
        "compare",
        parents=parents,
        help="compare another implementation's run with this engine's, point by point",
        description="Trace the run THEIRS.npz describes with this engine (float64) and compare every point "
        "it holds: the forward of every layer, the LSTM's gates and states, the seed, the signal "
        "at every layer in both passes, the LSTM's per-step signals, the eq.-5 totals, the "
        "contrast, the maps. Points are walked in the order of computation; the report names the "
        "first that differs, with its step, where the difference is largest and the convention "
        "likely involved (docs/verify-your-implementation.md).",
    )
    p.add_argument(
        "theirs", metavar="THEIRS.npz", help="what the other implementation computed for one clip (.npz)"
    )
    g = p.add_argument_group("model (--model or --case)")
    g.add_argument("--model", help="shipped model name, ebr_ref .npz, or a checkpoint to convert")
    g.add_argument(
        "--case",
        metavar="DIR",
        help="a case folder of the conformance suite: its model, clip, "
        "settings and tolerance (instead of --model)",
    )
    g.add_argument("--prototxt", help="Caffe deploy prototxt (for a .caffemodel)")
    g.add_argument(
        "--source", help="weights_io converter when it cannot be detected (caffe, torchvision_vgg16, ...)"
    )
    g.add_argument(
        "--input-size",
        type=positive_int,
        help="input size for a checkpoint converted on the fly (not for an ebr_ref .npz)",
    )
    p.add_argument(
        "--clip",
        help="the clip, when THEIRS.npz has none: .npy (T, C, H, W) preprocessed, .npz "
        "with a 'clip' entry, or a video / frame folder (fitted and preprocessed "
        "for the model)",
    )
    p.add_argument("--target", action="append", help="class name or index (overrides THEIRS.npz)")
    p.add_argument("--words", action="append", help="a captioner's query: word, phrase or caption position")
    p.add_argument("--caption", help="a captioner's caption to force (overrides THEIRS.npz)")
    p.add_argument("--method", help="overrides THEIRS.npz")
    p.add_argument("--layer", help="read-out layer of 'maps' (overrides THEIRS.npz)")
    p.add_argument("--lstm-rule", choices=("caffe", "eb"), help="overrides THEIRS.npz")
    p.add_argument("--seed-steps", help="overrides THEIRS.npz")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="this engine's dtype (default float64, the reference)",
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="pass threshold on the normwise relative error of every point (default by the dtype "
        f"of their arrays: {FLOAT64_RTOL:g} for float64, {FLOAT32_RTOL:g} for float32)",
    )
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
    case = {}
    if args.case is not None:
        from ..tools.conformance import load_case

        if args.model is not None:
            raise UserError("give --case or --model, not both (a case holds its model)")
        with user_errors(f"--case {args.case}"):
            model, case = load_case(args.case)
        how = f"conformance case {case.pop('name')}"
    elif args.model is None:
        raise UserError("no model: give --model MODEL (or --case DIR, a case of the conformance suite)")
    else:
        model, how = load_any_model(
            args.model,
            prototxt=args.prototxt,
            source=args.source,
            options={"input_size": args.input_size} if args.input_size else None,
        )
    captioner = hasattr(model, "vocab")
    clip = _load_clip(args.clip, model) if args.clip is not None else case.get("clip")
    target = words = None
    if args.target:
        if captioner:
            raise UserError("--target is for classifiers; a captioner takes --words")
        t = resolve_targets(args.target, model)
        target = t[0] if len(t) == 1 else t
    if args.words:
        if not captioner:
            raise UserError("--words is for captioners; a classifier takes --target")
        words = args.words[0] if len(args.words) == 1 else list(args.words)
    steps = parse_seed_steps(args.seed_steps) if args.seed_steps is not None else None
    if args.rtol is not None and not args.rtol > 0:
        raise UserError(f"--rtol must be positive, got {args.rtol}")
    given = {
        "target": target,
        "words": words,
        "caption": args.caption,
        "method": args.method,
        "layer": args.layer,
        "lstm_rule": args.lstm_rule,
        "seed_steps": steps,
    }
    kw = {k: (v if v is not None else case.get(k)) for k, v in given.items()}
    with user_errors(), numpy.errstate(over="ignore", invalid="ignore"):
        report = compare(
            theirs,
            model,
            clip=clip,
            cont=case.get("cont"),
            dtype=args.dtype,
            rtol=args.rtol if args.rtol is not None else case.get("rtol"),
            progress=console.progress,
            **kw,
        )
    if not any(r.compared for r in report.rows):
        raise UserError(
            f"{args.theirs}: nothing to compare (no point of the engine's trace: logits, probs, "
            "maps, evidence, signal/<layer>, ...; docs/verify-your-implementation.md lists them)"
        )
    print(f"model {describe_model(model)} [{how}]")
    print(format_report(report))
    return 0 if report.ok else 1
