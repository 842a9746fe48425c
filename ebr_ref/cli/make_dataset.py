"""``ebr-ref make-dataset``: a synthetic benchmark as a dataset folder of real video files.

Writes the clips of one of the benchmarks of :mod:`ebr_ref.synthetic`
(``--benchmark appearance`` or ``motion``) as video files (imageio-ffmpeg)
plus the annotation files of a THUMOS14, UCF101 or manifest layout, with
:func:`ebr_ref.tools.synthetic_dataset.make_dataset` (all or nothing: a
temporary folder renamed into place at the end).
"""

from __future__ import annotations

import os
import time

from ._common import UserError, require_cli_extra, user_errors

__all__ = ["add_parser", "run"]


def _size(text):
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise UserError(f"--size must be HxW (e.g. 64x64), got {text!r}") from None
    return h, w


def add_parser(sub, parents):
    from ..tools.synthetic_dataset import BENCHMARKS, LAYOUTS

    p = sub.add_parser(
        "make-dataset",
        parents=parents,
        help="write synthetic clips as a dataset of videos + annotations",
        description="Render synthetic action clips and write them as real video files (H.264 MP4, or "
        "MPEG-4 AVI for ucf101) with the annotation files of a THUMOS14, UCF101 (+ UCF101-24 "
        "boxes) or manifest layout, readable by 'ebr-ref evaluate'. Deterministic from --seed.",
    )
    p.add_argument("out", metavar="OUT", help="output folder (absent or empty, unless --overwrite)")
    p.add_argument("--layout", required=True, choices=LAYOUTS, help="dataset layout to write")
    p.add_argument(
        "--benchmark",
        choices=BENCHMARKS,
        default="appearance",
        help="the clips and classes: appearance (7 classes, default; models synthetic_cnn, "
        "synthetic_cnn_lstm) or motion (8 classes told apart only by motion; models motion_cnn, "
        "motion_cnn_lstm, motion_cnn_lstm_tanh)",
    )
    p.add_argument("--clips", type=int, required=True, help="number of clips (labels cycle through classes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips (default 0)")
    p.add_argument("--frames", type=int, help="frames per clip (default: 128 for rand+GT+rand, 16 otherwise)")
    p.add_argument(
        "--kind",
        help="clip composition: rand+GT+rand (default for thumos14 and manifest), "
        "GT+rand, rand+GT, trimmed (ucf101, manifest)",
    )
    p.add_argument("--gt-length", type=int, help="GT frames of a rand+GT+rand clip (default frames // 3)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the videos (default 25)")
    p.add_argument("--size", default="64x64", help="frame size HxW, even sides (default 64x64)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    p.set_defaults(run=run)
    return p


def run(args, console):
    require_cli_extra()
    from ..tools.synthetic_dataset import make_dataset

    t0 = time.perf_counter()
    out = os.path.abspath(args.out)
    with user_errors():
        ds = make_dataset(
            out,
            args.layout,
            clips=args.clips,
            seed=args.seed,
            frames=args.frames,
            size=_size(args.size),
            fps=args.fps,
            kind=args.kind,
            gt_length=args.gt_length,
            benchmark=args.benchmark,
            overwrite=args.overwrite,
            progress=console.progress,
        )
    n_files = sum(len(files) for _, _, files in os.walk(out))
    n_boxes = sum(1 for it in ds.items if it.boxes)
    n_segs = sum(len(it.segments) for it in ds.items)
    console.info(
        f"wrote {len(ds.items)} clips ({args.benchmark} benchmark, {args.layout} layout, {n_files} files) "
        f"to {out} in {time.perf_counter() - t0:.1f} s"
    )
    console.info(
        f"read back: {len(ds.items)} items, {len(ds.class_names)} classes, {n_segs} segments, "
        f"{n_boxes} items with boxes"
    )
    return 0
