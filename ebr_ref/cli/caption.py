"""``ebr-ref caption``: caption a video with a captioning model and ground words of the caption (paper §4.2).

The model is an ebr_ref captioner (:func:`ebr_ref.models.caption.load_captioner`,
a canonical ``.npz`` whose sidecar says ``"kind": "captioner"``) or a shipped
captioner's name. The caption is decoded greedily unless ``--caption`` forces
one; every queried word (default: every distinct word of the caption) is
grounded with :func:`ebr_ref.grounding.ground_caption.ground_caption`, and each word gets
the same outputs as a class in ``ebr-ref ground``.
"""

from __future__ import annotations

import time

import numpy

from .. import backend
from ..tools.video import VideoError, clip_for_model
from ._common import (
    CHUNK_SIZE_HELP,
    SYNTHETIC_TITLE,
    UserError,
    check_interval,
    chunk_size_arg,
    describe_model,
    load_any_model,
    parse_interval,
    positive_int,
    readout_layer,
    require_cli_extra,
    user_errors,
    warn_if_synthetic_model,
)
from ._outputs import OutputSet
from ._report import analyse, item_json, print_summary, word_tag, write_outputs
from .ground import add_input_args, add_output_args, check_tf32_arg, read_input

__all__ = ["add_parser", "run", "ground_words", "CAPTION_METHODS"]

CAPTION_METHODS = ("cEB-R", "EB-R", "BP-R")


def add_parser(sub, parents):
    p = sub.add_parser(
        "caption",
        parents=parents,
        help="caption a video and ground words of the caption",
        description="Caption a video (or a frame folder) with a captioning model, ground words of the "
        "caption with cEB-R through the two-layer LSTM decoder (paper §4.2), and write, per word, overlays, "
        "a contact sheet and the evidence plot, with results.json and results.npz.",
    )
    p.add_argument("input", metavar="VIDEO_OR_FRAME_DIR", help="a video file or a folder of images")
    p.add_argument(
        "--model", required=True, help="a captioner .npz (ebr_ref canonical) or a shipped captioner name"
    )
    p.add_argument(
        "--words",
        nargs="+",
        help="words (or 0-based caption positions) to ground; default every distinct word of the caption",
    )
    p.add_argument("--caption", help="ground this caption instead of the decoded one")
    p.add_argument(
        "--interval",
        action="append",
        help="ground truth START:END of the matching --words item (kept frames, inclusive); repeat",
    )
    g = p.add_argument_group("method")
    g.add_argument("--method", choices=CAPTION_METHODS, default="cEB-R", help="cEB-R (default), EB-R or BP-R")
    g.add_argument(
        "--layer",
        help="read-out layer (default: the model's meta 'readout', else conv5_1); 'input' for pixels",
    )
    g.add_argument(
        "--lstm-rule",
        choices=("caffe", "eb"),
        default="caffe",
        help="EB rule through both LSTMs: 'caffe' (the released code, default) or 'eb' (conserving)",
    )
    g.add_argument("--max-len", type=positive_int, default=30, help="longest decoded caption (default 30)")
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
    add_input_args(p)
    add_output_args(p)
    p.set_defaults(run=run)
    return p


def load_captioner_arg(spec, args, option="--model"):
    model, how = load_any_model(spec, option=option)
    if not hasattr(model, "vocab"):
        raise UserError(f"{option} {spec}: a classifier, not a captioner; use 'ebr-ref ground'")
    if args.dtype is not None:
        model = model.astype(args.dtype)
    if args.device == "gpu":
        if not backend.gpu_available():
            raise UserError(
                "--device gpu: CuPy with a CUDA device is not available (pip install 'ebr_ref[gpu]')"
            )
        model = model.to("gpu")
    return model, how


def _words_arg(words):
    """The ``--words`` queries: a caption position (a number) or a word; repeated items once."""
    if words is None:
        return None
    return list(dict.fromkeys(int(w) if w.isdigit() else w for w in words))


def _query_error(e, caption):
    """A ground_caption error about a query, naming ``--words`` (or ``--caption``)."""
    msg = " ".join(str(e).split())
    if msg.startswith(("word ", "caption position", "an empty word", "cannot ground the special")):
        return UserError(f"--words: {msg}")
    return None


def ground_words(model, clip, words, args, console, *, caption=None, gts=None, boxes=None, input_size):
    """Decode (or force) a caption and ground words of it; return ``(result, items, seconds)``.

    ``words`` None means every distinct word of the caption, in order. ``gts``
    and ``boxes`` give, per query, an optional ground-truth interval and
    per-frame boxes.
    """
    from ..grounding.ground_caption import ground_caption

    layer = readout_layer(model, args.layer)
    t0 = time.perf_counter()
    decoded = "forced" if caption is not None else "greedy"
    if words is None:
        with user_errors(), numpy.errstate(over="ignore", invalid="ignore"):
            if caption is not None:
                cap_words = model.vocab.split(caption)
            else:
                with console.stage("decoding the caption"):
                    with backend.matmul_precision(model.xp, model.dtype, tf32=args.tf32):  # as ground_caption
                        cap_words = model.decode(clip.astype(model.dtype), max_len=args.max_len).words
        if not cap_words:
            raise UserError(
                "the model's caption is empty (it emitted <eos> first): nothing to ground; pass --caption"
            )
        words = list(dict.fromkeys(cap_words))
        caption = cap_words
    stage = f"{args.method} for {len(words)} word(s) on {clip.shape[0]} frames"
    try:
        with (
            console.stage(stage),
            user_errors(),
            numpy.errstate(over="ignore", invalid="ignore"),
        ):  # an overflow is reported once, as one line
            res = ground_caption(
                model,
                clip,
                list(words),
                caption=caption,
                method=args.method,
                layer=layer,
                lstm_rule=args.lstm_rule,
                max_len=args.max_len,
                chunk_size=args.chunk_size,
                tf32=args.tf32,
            )
    except UserError as e:
        raise (_query_error(e, caption) or e) from None
    seconds = time.perf_counter() - t0
    res.diagnostics["decoded"] = decoded
    items = []
    for k, w in enumerate(res.targets):
        steps = list(res.query_steps[k])
        word = w if isinstance(w, str) else res.caption[w]
        where = f"caption word{'s' * (len(steps) > 1)} {', '.join(map(str, steps))}"
        name = f"'{word}' ({where})"
        items.append(
            analyse(
                {
                    "tag": word_tag(steps, word),
                    "name": name,
                    "index": k,
                    "maps": res.maps[k],
                    "evidence": res.evidence[k],
                    "word_step": steps,
                    "gt": gts[k] if gts is not None and k < len(gts) else None,
                    "boxes": boxes[k] if boxes is not None and k < len(boxes) else None,
                },
                input_size,
            )
        )
    return res, items, seconds


def caption_json(res):
    return {
        "caption": " ".join(res.caption),
        "decoded": res.diagnostics.get("decoded"),
        "word_probs": numpy.asarray(res.word_probs).tolist(),
        "queries": list(res.targets),
        "query_steps": res.query_steps,
    }


def run(args, console):
    require_cli_extra()
    intervals = [parse_interval(v) for v in (args.interval or [])]
    queries = _words_arg(args.words)
    if intervals and (queries is None or len(intervals) > len(queries)):
        n = 0 if queries is None else len(queries)
        raise UserError(
            f"{len(intervals)} --interval but {n} --words item(s) (each --interval belongs to "
            "the --words item in the same position)"
        )
    model, how = load_captioner_arg(args.model, args)
    readout_layer(model, args.layer)
    check_tf32_arg(model, args)
    if args.caption is not None:
        with user_errors("--caption"):
            model.vocab.split(args.caption)  # a word outside the vocabulary is refused before any work
    pre = None
    if args.preprocessing is not None:
        from .ground import _preprocessing_arg

        pre = _preprocessing_arg(args.preprocessing)
    with OutputSet(args.out, overwrite=args.overwrite) as outs:
        frames, info = read_input(args, console)
        try:
            clip, display = clip_for_model(frames, model, fit=args.fit, preprocessing=pre)
        except VideoError as e:
            raise UserError(str(e)) from None
        for iv in intervals:
            check_interval(iv, clip.shape[0], "--interval")
        res, items, seconds = ground_words(
            model,
            clip,
            queries,
            args,
            console,
            caption=args.caption,
            gts=intervals,
            input_size=display.shape[1:3],
        )
        # after every check that can fail, so that a mistake stays the one line on stderr
        synthetic_note = warn_if_synthetic_model(console, model, args.input)
        results = {
            "command": "caption",
            "model": {"spec": args.model, "loaded_as": how, "name": model.meta.get("name")},
            "method": args.method,
            "layer": res.layer,
            "lstm_rule": args.lstm_rule,
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
            **caption_json(res),
            "targets": [item_json(it) for it in items],
            "diagnostics": res.diagnostics,
            "warnings": list(console.warnings),
            "timing_s": {"ground": round(seconds, 3)},
        }
        arrays = {
            "maps": res.maps,
            "evidence": res.evidence,
            "word_probs_per_step": res.probs,
            "clip": clip,
            "frames": display,
            "caption": numpy.array(res.caption, dtype=str),
            "method": numpy.str_(args.method),
            "layer": numpy.str_(res.layer),
            "lstm_rule": numpy.str_(args.lstm_rule),
        }
        files = write_outputs(
            outs.stage,
            display,
            items,
            console=console,
            fps=args.fps or 4.0,
            scale=args.scale,
            mp4=not args.no_mp4,
            results=results,
            arrays=arrays,
            title=f"{args.method} at {res.layer}" + (SYNTHETIC_TITLE if synthetic_note else ""),
        )
        outs.commit()
    files = outs.final(files)
    console.info(f"model {describe_model(model)} [{how}]")
    console.info(
        f'caption ({res.diagnostics.get("decoded")}): "{" ".join(res.caption)}"; '
        f"{args.method} at {res.layer} in {seconds:.2f} s"
    )
    print_summary(console, items, files, args.out)
    return 0
