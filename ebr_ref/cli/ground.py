"""``ebr-ref ground``: ground classes of a model in a video or a folder of frames.

The model (``--model``) is a shipped model name, an ebr_ref canonical ``.npz``
(:func:`ebr_ref.models.load_model`), or any checkpoint ``weights_io`` reads,
converted on the fly (``weights_io`` is imported only in that case, inside
:func:`ebr_ref.cli._common.load_any_model`).
"""

from __future__ import annotations

import os
import time

import numpy

from .. import backend
from ..grounding.ground import METHODS, ground
from ..layers.lstm import LSTM_RULES
from ..tools.video import MAX_FRAME_PIXELS, VideoError, clip_for_model, fit_boxes, read_frames
from ._common import (
    CHUNK_SIZE_HELP,
    SYNTHETIC_TITLE,
    UserError,
    check_interval,
    check_method,
    check_seed_steps,
    chunk_size_arg,
    class_names,
    describe_model,
    load_any_model,
    nonnegative_int,
    parse_interval,
    parse_seed_steps,
    positive_float,
    positive_int,
    readout_layer,
    require_classifier,
    require_cli_extra,
    resolve_targets,
    user_errors,
    warn_if_synthetic_model,
)
from ._outputs import OutputSet
from ._report import analyse, item_json, print_summary, tag_of, write_outputs

__all__ = [
    "add_parser",
    "run",
    "add_engine_args",
    "check_tf32_arg",
    "add_output_args",
    "run_ground",
    "predicted",
    "ground_arrays",
]


def add_engine_args(p, *, method_default=None, seed_steps_default="last"):
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        choices=METHODS,
        default=method_default,
        help="grounding method (default: cEB-R for a CNN-LSTM, cEB for a per-frame CNN)",
    )
    g.add_argument(
        "--layer",
        help="read-out layer (default: the model's meta 'readout', else conv5_1); 'input' for pixels",
    )
    g.add_argument(
        "--lstm-rule",
        choices=LSTM_RULES,
        default="caffe",
        help="EB rule through the LSTM: 'caffe' (the released code, default) or 'eb' (conserving)",
    )
    others = ", ".join(v for v in ("last", "all") if v != seed_steps_default)
    g.add_argument(
        "--seed-steps",
        default=seed_steps_default,
        help=f"steps seeded with the target: {seed_steps_default} (default), {others}, or a list "
        "such as 3,7,11",
    )
    g.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="cpu (NumPy, default) or gpu (CuPy)"
    )
    g.add_argument("--dtype", choices=("float32", "float64"), help="run in this dtype (default: the model's)")
    g.add_argument(
        "--tf32",
        action="store_true",
        help="float32 products in TF32 on the GPU's tensor cores (faster, ~1e-3 relative error per "
        "product); needs --device gpu, a float32 model and compute capability 8.0+; default: full float32",
    )
    g.add_argument("--chunk-size", type=chunk_size_arg, default="auto", help=CHUNK_SIZE_HELP)


def add_output_args(p, *, out_default=None):
    g = p.add_argument_group("output")
    g.add_argument(
        "--out",
        default=out_default,
        required=out_default is None,
        help="output folder (created, with its parents, when missing)"
        + (f"; default ./{out_default}" if out_default else ""),
    )
    g.add_argument(
        "--fps", type=positive_float, default=None, help="frame rate of the animations (default: 4 fps)"
    )
    g.add_argument(
        "--scale",
        choices=("clip", "frame"),
        default="clip",
        help="heatmap display scale: one for the clip (its positive cells' 99th percentile; default) "
        "or each frame's maximum",
    )
    g.add_argument("--no-mp4", action="store_true", help="write the GIF animations only")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier run in the folder (refused otherwise)",
    )


def add_input_args(p):
    g = p.add_argument_group("input")
    g.add_argument("--every", type=positive_int, default=1, help="keep every N-th frame (default 1)")
    g.add_argument("--start", type=nonnegative_int, default=0, help="first decoded frame to keep (default 0)")
    g.add_argument("--max-frames", type=positive_int, default=None, help="keep at most this many frames")
    g.add_argument(
        "--fit",
        choices=("crop", "stretch"),
        default="crop",
        help="resize to the model's input: cover and centre-crop (default) or stretch",
    )
    g.add_argument(
        "--preprocessing",
        help="override the model's preprocessing: JSON "
        '{"channel_order": "BGR", "scale": 255, "mean": [...], "std": [...]} or "identity"',
    )
    g.add_argument(
        "--max-frame-pixels",
        type=positive_int,
        default=MAX_FRAME_PIXELS,
        help=f"refuse frames larger than this many pixels, checked before decoding "
        f"(default {MAX_FRAME_PIXELS:,}: 4096 x 4096)",
    )


def add_model_args(p):
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", required=True, help="shipped model name, ebr_ref .npz, or a checkpoint to convert"
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


def add_parser(sub, parents):
    p = sub.add_parser(
        "ground",
        parents=parents,
        help="ground classes of a model in a video or a frame folder",
        description="Ground one or several classes of a model in a video (any format ffmpeg reads) or a "
        "folder of images, and write overlays, a contact sheet, the evidence plot, results.json and "
        "results.npz.",
    )
    p.add_argument("input", metavar="VIDEO_OR_FRAME_DIR", help="a video file or a folder of images")
    add_model_args(p)
    p.add_argument(
        "--target",
        action="append",
        required=True,
        help="class name or index; repeat (or comma-separate) for several classes",
    )
    p.add_argument(
        "--interval",
        action="append",
        help="ground truth START:END (kept-frame indices, inclusive) of the matching --target; repeat",
    )
    p.add_argument(
        "--boxes",
        action="append",
        help="ground-truth boxes file of the matching --target ('frame x1 y1 x2 y2' per line, decoded "
        "frame indices and pixels of the video); repeat",
    )
    add_engine_args(p)
    add_input_args(p)
    add_output_args(p)
    p.set_defaults(run=run)
    return p


def model_options(args):
    opts = {}
    if getattr(args, "input_size", None) is not None:
        opts["input_size"] = args.input_size
    return opts


PREPROCESSING_MAX_CHARS = 4096  # a preprocessing dict is a few numbers


def _preprocessing_arg(text):
    """The ``--preprocessing`` dict ("identity" or a small JSON object); one-line UserErrors."""
    if text is None:
        return None
    if text.strip().lower() == "identity":
        return {"channel_order": "RGB", "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    import json

    from ..models.io import _json_depth

    if len(text) > PREPROCESSING_MAX_CHARS:
        raise UserError(
            f"--preprocessing: {len(text)} characters; a preprocessing dict takes at most "
            f"{PREPROCESSING_MAX_CHARS}"
        )
    if _json_depth(text) > 4:
        raise UserError("--preprocessing: nested too deeply; expected an object of numbers and lists")
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"--preprocessing: not JSON ({e})") from None
    if not isinstance(d, dict):
        raise UserError("--preprocessing must be a JSON object or 'identity'")
    return d


def prepare_model(model, args):
    """Apply ``--dtype`` and ``--device``."""
    if args.dtype is not None:
        model = model.astype(args.dtype)
    if args.device == "gpu":
        if not backend.gpu_available():
            raise UserError(
                "--device gpu: CuPy with a CUDA device is not available (pip install 'ebr_ref[gpu]')"
            )
        model = model.to("gpu")
    return model


def default_method(model, method):
    if method is not None:
        return method
    return "cEB-R" if model.is_recurrent else "cEB"


def check_engine_args(model, args):
    """Check ``--method``, ``--layer``, ``--seed-steps`` and ``--tf32`` against the model before any work; the
    layer."""
    check_method(model, args.method)
    parse_seed_steps(args.seed_steps)
    check_tf32_arg(model, args)
    return readout_layer(model, args.layer)


def check_tf32_arg(model, args):
    """``--tf32`` refused, as one line, where the model (after ``--dtype`` and ``--device``) cannot use it."""
    with user_errors("--tf32"):
        backend.check_matmul_precision(model.xp, model.dtype, args.tf32)


def run_ground(model, clip, targets, args, console, *, cont=None):
    """Call :func:`ebr_ref.grounding.ground.ground` with the command-line settings; user mistakes become
    UserError."""
    method = default_method(model, args.method)
    layer = check_engine_args(model, args)
    seed_steps = check_seed_steps(parse_seed_steps(args.seed_steps), clip.shape[0], args.seed_steps)
    t0 = time.perf_counter()
    bar = console.progress(
        total=clip.shape[0] * (2 if method.endswith("-R") else 1), desc=f"{method} on {clip.shape[0]} frames"
    )

    shown = [0]

    def report(done, total):
        bar.update(done - shown[0])
        shown[0] = done

    try:
        # an overflow shows as NonFiniteResultError (one line), not as numpy's warnings on the way to it
        with user_errors(), numpy.errstate(over="ignore", invalid="ignore"):
            g = ground(
                model,
                clip,
                targets,
                method=method,
                layer=layer,
                lstm_rule=args.lstm_rule,
                seed_steps=seed_steps,
                chunk_size=args.chunk_size,
                tf32=args.tf32,
                cont=cont,
                progress=report,
            )
    finally:
        bar.close()
    return g, method, time.perf_counter() - t0


def predicted(model, probs):
    """The predicted class at the last step and averaged over steps (LRCN's clip score)."""
    names = class_names(model)
    last = int(numpy.argmax(probs[-1]))
    mean = probs.mean(axis=0)
    avg = int(numpy.argmax(mean))
    return {
        "last_step": {"index": last, "name": names[last], "prob": float(probs[-1, last])},
        "clip_mean": {"index": avg, "name": names[avg], "prob": float(mean[avg])},
    }


def describe_prediction(model, pred):
    m = pred["clip_mean"]
    if not model.is_recurrent:
        return f"predicted: {m['name']} (mean probability over the frames {m['prob']:.2f})"
    last = pred["last_step"]
    return (
        f"predicted: {last['name']} (p={last['prob']:.2f} at the last step; mean over steps: "
        f"{m['name']} {m['prob']:.2f})"
    )


CLIP_NPZ_LIMIT = 256 << 20  # bytes; a longer preprocessed clip is left out of results.npz


def ground_arrays(g, clip, display, method, args, targets):
    """The ``results.npz`` arrays (the layout that ``ebr-ref compare`` reads, see docs/cli.md).

    The preprocessed ``clip`` is included when it takes at most 256 MiB (the fitted
    uint8 ``frames`` always are).
    """
    clip = backend.to_numpy(clip)
    steps = g.diagnostics.get("seed_steps")
    out = {
        "maps": g.maps,
        "evidence": g.evidence,
        "probs": g.probs,
        "frames": display,
        "target": numpy.asarray(targets, dtype=numpy.int64),
        "method": numpy.str_(method),
        "layer": numpy.str_(g.layer),
        "lstm_rule": numpy.str_(args.lstm_rule),
        "seed_steps": numpy.asarray(steps, dtype=numpy.int64)
        if isinstance(steps, list)
        else numpy.str_(steps),
    }
    if clip.nbytes <= CLIP_NPZ_LIMIT:
        out["clip"] = clip
    return out


def check_input_size_option(args, how):
    """``--input-size`` applies to a checkpoint converted on the fly only: refuse it for other models."""
    if getattr(args, "input_size", None) is not None and not how.startswith("converted"):
        kind = "a shipped ebr_ref model" if how == "shipped" else "an ebr_ref model"
        raise UserError(
            f"--input-size applies to a checkpoint converted on the fly; {args.model} is {kind}, "
            "whose input size is fixed"
        )


def run(args, console):
    require_cli_extra()
    intervals = [parse_interval(v) for v in (args.interval or [])]
    pre = _preprocessing_arg(args.preprocessing)
    parse_seed_steps(args.seed_steps)
    for path in args.boxes or []:
        if not os.path.isfile(path):
            raise UserError(f"--boxes {path}: no such file")
    model, how = load_any_model(
        args.model, prototxt=args.prototxt, source=args.source, options=model_options(args)
    )
    check_input_size_option(args, how)
    model = prepare_model(require_classifier(model, "ground"), args)
    targets = resolve_targets(args.target, model)
    if len(intervals) > len(targets) or len(args.boxes or []) > len(targets):
        n_boxes = len(args.boxes or [])
        raise UserError(
            f"{len(targets)} --target but {len(intervals)} --interval and {n_boxes} --boxes "
            "(each --interval and --boxes belongs to the --target in the same position)"
        )
    check_engine_args(model, args)
    with OutputSet(args.out, overwrite=args.overwrite) as outs:
        t0 = time.perf_counter()
        frames, info = read_input(args, console)
        try:
            clip, display = clip_for_model(frames, model, fit=args.fit, preprocessing=pre)
        except VideoError as e:
            raise UserError(str(e)) from None
        t_read = time.perf_counter() - t0
        for iv in intervals:
            check_interval(iv, clip.shape[0], "--interval")
        check_seed_steps(parse_seed_steps(args.seed_steps), clip.shape[0], args.seed_steps)
        boxes = [
            _read_boxes(path, info, frames.shape[1:3], display.shape[1:3], args.fit)
            for path in (args.boxes or [])
        ]
        g, method, t_ground = run_ground(model, clip, targets, args, console)
        names = class_names(model)
        items = []
        for k, c in enumerate(targets):  # a list of targets: g's arrays carry the leading K axis
            items.append(
                analyse(
                    {
                        "tag": tag_of("class", c, names[c]),
                        "name": names[c],
                        "index": c,
                        "maps": g.maps[k],
                        "evidence": g.evidence[k],
                        "prob": g.probs[:, c],
                        "gt": intervals[k] if k < len(intervals) else None,
                        "boxes": boxes[k] if k < len(boxes) else None,
                    },
                    display.shape[1:3],
                )
            )
        # after every check that can fail, so that a mistake stays the one line on stderr
        synthetic_note = warn_if_synthetic_model(console, model, args.input)
        fps = args.fps or 4.0
        pred = predicted(model, g.probs)
        results = {
            "command": "ground",
            "model": {
                "spec": args.model,
                "loaded_as": how,
                "name": model.meta.get("name"),
                "class_names": names,
            },
            "method": method,
            "layer": g.layer,
            "lstm_rule": args.lstm_rule if model.is_recurrent else None,
            "dtype": str(model.dtype),
            "device": args.device,
            "input": {
                "source": info["source"],
                "kind": info["kind"],
                "fps": info["fps"],
                "frames": len(info["indices"]),
                "decoded_indices": info["indices"],
                "decoded_size": list(info["size"]),
                "model_size": list(display.shape[1:3]),
                "fit": args.fit,
            },
            "predicted": pred,
            "targets": [item_json(it) for it in items],
            "diagnostics": g.diagnostics,
            "warnings": list(console.warnings),
            "timing_s": {"read": round(t_read, 3), "ground": round(t_ground, 3)},
        }
        arrays = ground_arrays(g, clip, display, method, args, targets)
        if "clip" not in arrays:
            mib = clip.nbytes / 2**20
            results["notes"] = [
                f"the preprocessed clip ({mib:.0f} MiB) is not in results.npz; "
                "'ebr-ref compare --clip VIDEO' rebuilds it"
            ]
        files = write_outputs(
            outs.stage,
            display,
            items,
            console=console,
            fps=fps,
            scale=args.scale,
            mp4=not args.no_mp4,
            results=results,
            arrays=arrays,
            title=f"{method} at {g.layer}" + (SYNTHETIC_TITLE if synthetic_note else ""),
        )
        outs.commit()
    files = outs.final(files)
    console.info(f"model {describe_model(model)} [{how}]")
    console.info(
        f"input {info['source']}: {clip.shape[0]} frames fitted to {display.shape[2]}x{display.shape[1]} "
        f"({args.fit}); {method} at {g.layer} in {t_ground:.2f} s"
    )
    console.info(describe_prediction(model, pred))
    print_summary(console, items, files, args.out)
    return 0


def read_input(args, console):
    """Decode ``args.input`` with the frame-selection options; VideoError becomes UserError.

    The options were checked by argparse (``--every``, ``--max-frames``,
    ``--max-frame-pixels`` >= 1, ``--start`` >= 0); a ``--start`` past the end
    of the input is reported naming ``--start``.
    """
    try:
        return read_frames(
            args.input,
            every=args.every,
            max_frames=args.max_frames,
            start=args.start,
            progress=console.progress,
            max_pixels=args.max_frame_pixels,
        )
    except VideoError as e:
        if args.start > 0 and str(e).startswith(f"{args.input}: no frames"):
            raise UserError(
                f"--start {args.start}: there is no frame {args.start} in {args.input} (frames "
                "are numbered from 0)"
            ) from None
        raise UserError(str(e)) from None


def _read_boxes(path, info, size_in, size_out, fit):
    """Per kept frame, the boxes of a boxes file mapped onto the fitted frames."""
    from ..evaluation.annotations import read_frame_boxes

    if not os.path.isfile(path):
        raise UserError(f"--boxes {path}: no such file")
    with user_errors("--boxes"):
        fb = read_frame_boxes(path)
    per = []
    for k in info["indices"]:
        b = fb.boxes[fb.frames == k]
        per.append(fit_boxes(b, size_in, size_out, fit) if b.size else numpy.zeros((0, 4)))
    return per
