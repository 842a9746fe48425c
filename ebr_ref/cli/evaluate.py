"""``ebr-ref evaluate``: paper Tables 1-3 on a whole dataset, on Dask, resumable.

Runs :func:`ebr_ref.pipeline.evaluate` (one task per video on a local Dask
cluster, or on ``--scheduler``; ``--workers 0`` for a plain loop without Dask)
and prints the tables. Exit status: 0 when every video was scored, ``2 + n``
when ``n`` videos failed (capped at 125), 2 for a user mistake, 130 on Ctrl-C or
SIGTERM (the videos finished so far stay in the results folder; run the same
command again to resume).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from ..grounding import LSTM_RULES, METHODS
from ._common import UserError, parse_seed_steps, user_errors

__all__ = ["add_parser", "run", "exit_status"]

PROTOCOL_CHOICES = ("all", "pointing", "detection", "temporal-pointing")
LAYOUT_CHOICES = ("thumos14", "ucf101", "manifest")


def add_parser(sub, parents):
    p = sub.add_parser(
        "evaluate",
        parents=parents,
        help="paper Tables 1-3 on a dataset (Dask, resumable)",
        description="Ground every video of a dataset (THUMOS14, UCF101 + UCF101-24 boxes, or a manifest) "
        "with the chosen methods, score each one (pointing game, detections, temporal pointing) "
        "into a results folder, and aggregate paper Tables 1-3 (tables.md, tables.json, "
        "tables.csv). Runs on a local Dask cluster (or --scheduler); re-running the same command "
        "skips every finished video.",
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder or manifest file")
    p.add_argument("--layout", choices=LAYOUT_CHOICES, help="dataset layout (default: detected)")
    p.add_argument("--split", type=int, default=1, help="UCF101 test split (testlist0N.txt; default 1)")
    g = p.add_argument_group("models and methods")
    g.add_argument(
        "--model",
        help="the CNN-LSTM: shipped model name or ebr_ref canonical .npz (recurrent "
        "methods, probabilities; needed by Tables 2-3)",
    )
    g.add_argument("--frame-model", help="the per-frame CNN classifier for EB, cEB, BP (Table 1)")
    g.add_argument(
        "--protocol",
        choices=PROTOCOL_CHOICES,
        default="all",
        help="pointing (Table 1), detection (Table 2), temporal-pointing (Table 3), or all that "
        "the dataset's ground truth allows (default)",
    )
    g.add_argument(
        "--methods",
        help=f"comma-separated, from {', '.join(METHODS)} (default: EB-R,cEB-R,BP-R "
        "and, with --frame-model, EB,cEB,BP for Table 1; EB-R,cEB-R for "
        "Tables 2-3)",
    )
    g.add_argument(
        "--seed-steps", default="all", help="steps seeded with the GT class: all (default), last, 3,7"
    )
    g.add_argument(
        "--lstm-rule", choices=LSTM_RULES, default="caffe", help="EB rule through the LSTM (default caffe)"
    )
    g.add_argument("--layer", help="read-out layer (default: each model's meta 'readout', else conv5_1)")
    g.add_argument("--dtype", choices=("float32", "float64"), help="run in this dtype (default: the model's)")
    g.add_argument("--chunk-size", type=int, default=8, help="frames per CNN chunk (default 8)")
    g = p.add_argument_group("frames")
    g.add_argument("--every", type=int, default=1, help="keep every N-th decoded frame (default 1)")
    g.add_argument("--start", type=int, default=0, help="first decoded frame to keep (default 0)")
    g.add_argument("--max-frames", type=int, help="keep at most this many frames per video")
    g.add_argument(
        "--clip-length", type=int, default=128, help="frames per processing clip (default 128, the paper's)"
    )
    g.add_argument(
        "--min-frames", type=int, default=2, help="a shorter video is recorded as failed (default 2)"
    )
    g.add_argument(
        "--fit",
        choices=("crop", "stretch"),
        default="crop",
        help="fit frames to the model's input (default crop)",
    )
    g = p.add_argument_group("scoring")
    g.add_argument(
        "--tolerance",
        type=float,
        help="pointing-game diameter in input pixels (default: 15 px at 224 px, scaled to the model's input)",
    )
    g.add_argument("--iou", default="0.1,0.3,0.5", help="IoU thresholds of Table 2 (default 0.1,0.3,0.5)")
    g = p.add_argument_group("execution")
    g.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: the cores, or the GPUs with "
        "--device gpu; 0: a plain loop in this process, no Dask)",
    )
    g.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (tcp://host:8786)")
    g.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu (default) or gpu (CuPy; dask-cuda's LocalCUDACluster, one worker per GPU)",
    )
    g.add_argument("--limit", type=int, help="evaluate only the first N videos")
    g = p.add_argument_group("results")
    g.add_argument("--out", required=True, help="results folder (created; reused to resume)")
    g.add_argument("--keep-maps", action="store_true", help="also store every video's maps (float16 .npz)")
    g.add_argument(
        "--map-size", type=int, default=16, help="largest side of a kept map, block-averaged (default 16)"
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace records of another configuration in --out instead of refusing",
    )
    g.add_argument("--retry-failed", action="store_true", help="compute again the videos recorded as failed")
    p.set_defaults(run=run)
    return p


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a batch system stopping the job) handled as Ctrl-C: the cluster is closed, exit status 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def exit_status(n_failed):
    """0 when no video failed, else ``2 + n_failed`` capped at 125."""
    return 0 if n_failed == 0 else min(2 + int(n_failed), 125)


def _methods(text):
    if text is None:
        return None
    items = [m.strip() for m in text.split(",") if m.strip()]
    lower = {m.lower(): m for m in METHODS}
    bad = [m for m in items if m.lower() not in lower]
    if bad or not items:
        raise UserError(f"--methods: expected a comma-separated list from {', '.join(METHODS)}, got {text!r}")
    return [lower[m.lower()] for m in items]


def _iou(text):
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--iou: expected numbers like 0.1,0.5, got {text!r}") from None
    if not vals or not all(0 < v <= 1 for v in vals):
        raise UserError(f"--iou: thresholds must lie in (0, 1], got {text!r}")
    return vals


def run(args, console):
    from ..pipeline.runner import MissingDependency, plan_evaluation, run_plan

    if args.model is None and args.frame_model is None:
        raise UserError("give --model (a CNN-LSTM) and/or --frame-model (a per-frame CNN)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: exists and is not a folder")
    seed_steps = parse_seed_steps(args.seed_steps)
    with user_errors():
        from ..evaluation.datasets import read_dataset

        dataset = read_dataset(args.dataset, args.layout, split=args.split)
        plan = plan_evaluation(
            dataset,
            args.model,
            out=args.out,
            frame_model=args.frame_model,
            protocol=args.protocol,
            methods=_methods(args.methods),
            device=args.device,
            every=args.every,
            start=args.start,
            max_frames=args.max_frames,
            clip_length=args.clip_length,
            seed_steps=seed_steps,
            lstm_rule=args.lstm_rule,
            layer=args.layer,
            fit=args.fit,
            dtype=args.dtype,
            chunk_size=args.chunk_size,
            tolerance=args.tolerance,
            iou=_iou(args.iou),
            keep_maps=args.keep_maps,
            map_size=args.map_size,
            min_frames=args.min_frames,
            limit=args.limit,
            overwrite=args.overwrite,
            retry_failed=args.retry_failed,
        )
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    console.info(
        f"dataset {dataset.root} ({dataset.layout}, {len(dataset.items)} videos, "
        f"{len(dataset.class_names)} classes); protocols {', '.join(plan.job.protocols)}; "
        f"methods {', '.join(plan.job.methods)}"
    )
    bar = [None]

    def progress(done, total):
        if bar[0] is None:
            bar[0] = console.progress(total=total, desc="videos")
        bar[0].update(1)

    try:
        with _sigterm_as_interrupt():
            result = run_plan(
                plan, workers=args.workers, scheduler=args.scheduler, progress=progress, log=console.info
            )
    except MissingDependency as e:
        raise UserError(str(e)) from None
    except OSError as e:
        if e.filename is None:  # e.g. no scheduler at --scheduler
            raise UserError(f"{args.scheduler or 'cluster'}: {e}") from None
        raise UserError(f"{e.filename}: {e.strerror or e}") from None
    finally:
        if bar[0] is not None:
            bar[0].close()
    console.info("")
    console.info(result.markdown)
    console.info("")
    console.info(
        f"{result.computed} videos computed, {result.skipped} reused, {len(result.failed)} failed; "
        f"{result.seconds:.1f} s"
    )
    for vid, msg in result.failed[:10]:
        console.info(f"  failed: {vid}: {msg}")
    if len(result.failed) > 10:
        console.info(f"  ... {len(result.failed) - 10} more in {os.path.join(result.out, 'tables.json')}")
    console.info(
        f"wrote {os.path.join(result.out, 'tables.md')}, tables.json, tables.csv and "
        f"{len(result.records)} records in {os.path.join(result.out, 'records')}"
    )
    return exit_status(len(result.failed))
