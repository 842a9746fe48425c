"""Accuracies on the decoded video files of a synthetic dataset beside those on its in-memory clips.

Run: .venv/bin/python benchmarks/decoded_vs_memory.py [--benchmark appearance] [--layout thumos14]
                                                      [--clips 70] [--seed 0] [--frames T] [--workers 2]
                                                      [--dir DIR] [--write docs/evaluate.md]

``ebr-ref make-dataset`` writes a synthetic benchmark as lossy video files
(H.264, or MPEG-4 part 2 for ``--layout ucf101``, 4:2:0 chroma), so the pixels
that ``ebr-ref evaluate`` decodes are not those the generator rendered. This
script measures what that costs, on the same clips (the same ``--seed``):

1. **Decoded files.** :func:`ebr_ref.tools.synthetic_dataset.make_dataset`
   writes the dataset; :func:`ebr_ref.pipeline.plan_evaluation` and
   :func:`ebr_ref.pipeline.run_plan` (what ``ebr_ref.evaluate`` and ``ebr-ref
   evaluate`` run) decode, ground and score every video and compute the tables.
2. **In-memory clips.** :func:`ebr_ref.tools.synthetic_dataset.dataset_clips`
   regenerates the clips from the folder's ``synthetic.json``; each clip's
   frames, rounded to 8 bits (``to_uint8``: exactly what the encoder was
   given), go through :func:`ebr_ref.pipeline.task.clip_record`, the same
   per-video analysis as a decoded video (same job, models, ground truth, seed
   steps, random baselines), and the tables come from the same
   :func:`ebr_ref.pipeline.compute_tables`.

So the two columns differ by the codec alone. Printed: one table with the two
accuracies side by side per protocol and method (Table 1's ``all`` accuracy,
Table 2's mAP at each IoU threshold, Table 3's ``all`` accuracy), their
difference, the mean absolute change the codec made to the pixels (grey levels,
0-255, over every pixel, channel and frame) and the number of clips. Models:
``synthetic_cnn_lstm`` and ``synthetic_cnn`` (``--benchmark appearance``),
``motion_cnn_lstm`` and ``motion_cnn`` (``--benchmark motion``); the
evaluation's defaults otherwise (128-frame processing clips, seeded at every
step, ``caffe`` rule, every protocol the layout's ground truth allows).

``--workers N`` (default 2) starts one Dask ``LocalCluster`` of N processes
(one BLAS thread each on 2 cores) for both columns; ``--workers 0`` runs both
in a plain loop in this process. ``--write FILE`` replaces the block between
``<!-- decoded-vs-memory:BENCHMARK:begin -->`` and
``<!-- decoded-vs-memory:BENCHMARK:end -->`` in FILE with the printed text.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import NamedTuple

if __name__ == "__main__":  # one BLAS thread per process (set before NumPy loads); the workers get their own
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy

from ebr_ref import synthetic
from ebr_ref.evaluation import tables
from ebr_ref.pipeline import runner, task
from ebr_ref.pipeline.store import replace_block
from ebr_ref.tools.synthetic_dataset import (
    LAYOUTS,
    dataset_clips,
    make_dataset,
    read_synthetic_spec,
    to_uint8,
)
from ebr_ref.tools.video import read_frames

MODELS = {  # benchmark -> (CNN-LSTM, per-frame CNN)
    "appearance": ("synthetic_cnn_lstm", "synthetic_cnn"),
    "motion": ("motion_cnn_lstm", "motion_cnn"),
}
DECODED, MEMORY = "decoded", "memory"


class Comparison(NamedTuple):
    """What :func:`compare` returns."""

    tables: dict  # {"decoded": tables, "memory": tables}, as ebr_ref.pipeline.compute_tables gives them
    records: dict  # {"decoded": [record], "memory": [record]}, in dataset order
    plan: object  # the ebr_ref.pipeline.Plan both were computed with
    spec: dict  # the dataset's synthetic.json (read_synthetic_spec)
    pixel_change: dict  # {"mean", "p99"}: |decoded - in memory| in grey levels over every pixel
    seconds: dict  # {"write", "decoded", "memory"}


def memory_frames(data):
    """The in-memory clips of a dataset folder written by ``make_dataset``, regenerated from its spec.

    Returns
    -------
    frames : list of uint8 ndarray of shape (T, H, W, 3)
        ``to_uint8`` of clip ``i`` of :func:`ebr_ref.tools.synthetic_dataset.dataset_clips`: what the
        encoder was given for item ``i``.
    spec : dict
        The folder's ``synthetic.json`` (:func:`ebr_ref.tools.synthetic_dataset.read_synthetic_spec`).
    """
    spec = read_synthetic_spec(data)
    if spec is None:
        raise ValueError(f"{data}: no synthetic.json (not written by make_dataset)")
    return [to_uint8(c.frames) for c in dataset_clips(**spec)], spec


def pixel_change(dataset, memory):
    """``{"mean", "p99"}`` of ``|decoded - in memory|`` (grey levels) over every pixel of every clip."""
    hist = numpy.zeros(256, dtype=numpy.int64)
    for item, frames in zip(dataset.items, memory, strict=True):
        decoded, _ = read_frames(item.path)
        if decoded.shape != frames.shape:
            raise ValueError(f"{item.path}: decoded {decoded.shape}, generated {frames.shape}")
        err = numpy.abs(decoded.astype(numpy.int16) - frames.astype(numpy.int16))
        hist += numpy.bincount(err.ravel(), minlength=256)
    levels = numpy.arange(256)
    cum = numpy.cumsum(hist)
    return {
        "mean": float((hist * levels).sum() / hist.sum()),
        "p99": int(levels[numpy.searchsorted(cum, 0.99 * cum[-1])]),
    }


def memory_records(plan, memory, fps, client=None):
    """The records of the in-memory clips: :func:`ebr_ref.pipeline.task.clip_record` per item of ``plan``.

    ``memory[i]`` is the clip of ``plan.dataset.items[i]``. On ``client`` (a Dask client) the clips run
    on its workers; without one, in this process.
    """
    index = {it.video_id: i for i, it in enumerate(plan.dataset.items)}
    frames = [memory[index[it.video_id]] for it in plan.items]
    ambiguous = [plan.ambiguous[it.video_id] for it in plan.items]
    if client is None:
        return [
            task.clip_record(it, plan.job, f, fps, a)
            for it, f, a in zip(plan.items, frames, ambiguous, strict=True)
        ]
    n = len(frames)
    scattered = client.scatter(frames)
    futures = client.map(
        task.clip_record, plan.items, [plan.job] * n, scattered, [fps] * n, ambiguous, pure=False
    )
    return client.gather(futures)


@contextlib.contextmanager
def _cluster(workers):
    """``(scheduler address, client)`` of a LocalCluster of ``workers`` processes; ``(None, None)`` for 0."""
    if workers == 0:
        yield None, None
        return
    import distributed

    with (
        runner.local_cluster(workers) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield cluster.scheduler_address, client


def compare(folder, *, benchmark, layout, clips, seed, frames=None, workers=2, log=None):
    """Write the dataset into ``folder``, evaluate its files and its in-memory clips; see the module notes.

    Parameters
    ----------
    folder : str or path
        Receives ``dataset/`` and ``results/`` (replaced when present).
    benchmark, layout, clips, seed, frames
        As :func:`ebr_ref.tools.synthetic_dataset.make_dataset`.
    workers : int
        Dask worker processes for both columns; 0: both in this process.
    log : callable, optional
        ``log(line)``.

    Returns
    -------
    Comparison

    Raises
    ------
    RuntimeError
        When a decoded video fails (the columns would not count the same clips).
    """
    log = log or (lambda line: None)
    model, frame_model = MODELS[benchmark]
    data, out = os.path.join(folder, "dataset"), os.path.join(folder, "results")
    if os.path.exists(out):
        shutil.rmtree(out)  # records of an earlier dataset in the same folder must not be reused
    t0 = time.perf_counter()
    ds = make_dataset(
        data, layout, clips=clips, seed=seed, frames=frames, benchmark=benchmark, overwrite=True
    )
    memory, spec = memory_frames(data)
    change = pixel_change(ds, memory)
    t_write = time.perf_counter() - t0
    plan = runner.plan_evaluation(ds, model, frame_model=frame_model, out=out, overwrite=True)
    with _cluster(workers) as (scheduler, client):
        t0 = time.perf_counter()
        ev = runner.run_plan(plan, workers=0 if scheduler is None else None, scheduler=scheduler, log=log)
        t_decoded = time.perf_counter() - t0
        if ev.failed:
            raise RuntimeError(
                f"{len(ev.failed)} decoded video(s) failed: {ev.failed[0][0]}: {ev.failed[0][1]}"
            )
        t0 = time.perf_counter()
        records = memory_records(plan, memory, spec["fps"], client)
        t_memory = time.perf_counter() - t0
    return Comparison(
        tables={
            DECODED: ev.tables,
            MEMORY: runner.compute_tables(records, plan.job.protocols, plan.iou),
        },
        records={DECODED: ev.records, MEMORY: records},
        plan=plan,
        spec=spec,
        pixel_change=change,
        seconds={"write": t_write, "decoded": t_decoded, "memory": t_memory},
    )


# ----------------------------------------------------------------------------- the side-by-side table


def side_by_side(decoded, memory, iou):
    """``[(table, method, measure, decoded value, in-memory value)]`` of the accuracies of both tables.

    Parameters
    ----------
    decoded, memory : dict
        Tables as :func:`ebr_ref.pipeline.compute_tables` returns them, of the same protocols.
    iou : sequence of float
        Table 2's IoU thresholds.
    """
    rows = []
    if decoded["table1"] is not None:
        for method, cells in decoded["table1"].items():
            rows.append(
                ("1 (pointing)", method, "accuracy", cells[tables.ALL], memory["table1"][method][tables.ALL])
            )
    if decoded["table2"] is not None:
        for (mode, method), cells in decoded["table2"].items():
            for a in iou:
                key = f"{a:g}"
                rows.append(
                    (
                        "2 (detection)",
                        method,
                        f"mAP, {mode} length, IoU {key}",
                        cells[key][0],
                        memory["table2"][(mode, method)][key][0],
                    )
                )
    if decoded["table3"] is not None:
        for method, cells in decoded["table3"].items():
            rows.append(
                (
                    "3 (temporal pointing)",
                    method,
                    "accuracy",
                    cells[tables.ALL],
                    memory["table3"][method][tables.ALL],
                )
            )
    return rows


def _diff(a, b):
    """``b - a`` in percentage points, signed; ``0.0`` when it rounds to zero, ``-`` when either is None."""
    if a is None or b is None:
        return "-"
    d = round(100 * (b - a), 1)
    return "0.0" if d == 0 else f"{d:+.1f}"


def render(result, info):
    """The markdown text: a header (sizes, pixel change, runtime), then the side-by-side table.

    ``info``: ``command``, ``machine``, ``workers`` (text), ``load`` (load average), ``seconds`` (total).
    """
    spec, plan, px = result.spec, result.plan, result.pixel_change
    codec = "MPEG-4 part 2 AVI" if spec["layout"] == "ucf101" else "H.264 MP4 (CRF 18)"
    t = result.seconds
    lines = [
        f"Command: `{info['command']}`  ",
        f"Benchmark `{spec['benchmark']}`, layout `{spec['layout']}`: {len(plan.items)} clips of "
        f"{spec['frames']} frames ({spec['kind']}, {spec['size'][0]} x {spec['size'][1]}, "
        f"seed {spec['seed']}); "
        f"models `{plan.job.model.name}`, `{plan.job.frame_model.name}`; {codec}. The codec changed "
        f"the pixels by {px['mean']:.2f} grey levels on average (99th percentile {px['p99']}). "
        f"{info['machine']}, load average {info['load']:.1f} at the start; {info['workers']}; runtime "
        f"{info['seconds']:.0f} s (writing and measuring the files {t['write']:.0f} s, decoded files "
        f"{t['decoded']:.0f} s, in-memory clips {t['memory']:.0f} s).",
        "",
        "| table | method | measure | decoded files | in memory | in memory − decoded |",
        "|---|---|---|---|---|---|",
    ]
    for table, method, measure, a, b in side_by_side(result.tables[DECODED], result.tables[MEMORY], plan.iou):
        lines.append(
            f"| {table} | {method} | {measure} | {tables.pct(a)} | {tables.pct(b)} | {_diff(a, b)} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--benchmark", choices=synthetic.BENCHMARKS, default="appearance", help="clips and models"
    )
    ap.add_argument("--layout", choices=LAYOUTS, default="thumos14", help="dataset layout (default thumos14)")
    ap.add_argument("--clips", type=int, default=70, help="number of clips (default 70)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the clips (default 0)")
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default: the layout's)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes; 0: none (default 2)")
    ap.add_argument("--dir", default=None, help="keep the dataset and results here (default: a temp folder)")
    ap.add_argument("--write", default=None, help="markdown file whose decoded-vs-memory block is replaced")
    args = ap.parse_args(argv)
    if args.workers < 0:
        ap.error("--workers must be >= 0")
    t0, load = time.perf_counter(), os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        folder = args.dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="decoded-vs-memory-"))
        result = compare(
            folder,
            benchmark=args.benchmark,
            layout=args.layout,
            clips=args.clips,
            seed=args.seed,
            frames=args.frames,
            workers=args.workers,
        )
    used = list(sys.argv[1:] if argv is None else argv)
    info = {
        "command": " ".join([".venv/bin/python", "benchmarks/decoded_vs_memory.py"] + used),
        "machine": f"{os.cpu_count()} cores, numpy {numpy.__version__}, Python {platform.python_version()}",
        "workers": f"{args.workers} Dask workers" if args.workers else "no Dask (one process)",
        "load": load,
        "seconds": time.perf_counter() - t0,
    }
    text = render(result, info)
    print(text)
    if args.write:
        replace_block(args.write, text, f"decoded-vs-memory:{args.benchmark}")


if __name__ == "__main__":
    main()
