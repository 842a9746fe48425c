"""Dataset-level evaluation (paper Tables 1-3) on Dask, resumable: :func:`evaluate`.

One task per video (:func:`ebr_ref.pipeline.task.run_video`) on a Dask
``distributed`` cluster: a ``LocalCluster`` of worker processes by default
(``dask_cuda.LocalCUDACluster``, one worker per GPU, with ``device="gpu"``),
or an existing cluster (``scheduler=ADDRESS``) running the identical code.
``workers=0`` runs the same tasks in a plain loop in this process, without
Dask. Every task writes its video's record into the results store
(:mod:`ebr_ref.pipeline.store`); the tables are then computed from the stored
records alone (:mod:`ebr_ref.evaluation.tables`), so they do not depend on
where, in which order or in how many runs the videos were computed.

Dask is imported inside the functions that need it; ``import ebr_ref`` works
without it, and a run that needs it without it installed raises
:class:`MissingDependency` naming the ``eval`` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import NamedTuple

from .. import __version__
from ..evaluation import tables
from ..grounding import METHODS
from .blas import blas_environment, blas_threads, usable_cores
from .store import RECORD_FORMAT, RECORD_VERSION, Store, item_digest, run_key
from .task import (
    FRAME_METHODS,
    RECURRENT_METHODS,
    Job,
    ModelRef,
    failed_record,
    pointing_label,
    run_video,
    stamp,
)

__all__ = [
    "evaluate",
    "plan_evaluation",
    "run_plan",
    "Plan",
    "Evaluation",
    "PROTOCOLS",
    "DEFAULT_IOU",
    "MissingDependency",
    "StoreConflict",
    "local_cluster",
    "compute_tables",
    "render_markdown",
    "pointing_label",
]

PROTOCOLS = ("pointing", "detection", "temporal-pointing")
TEMPORAL = ("detection", "temporal-pointing")
DEFAULT_IOU = (0.1, 0.3, 0.5)
MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"
# Dask's statistical profiler samples every worker thread's stack every 10 ms; on the synthetic benchmark's
# 0.4 s tasks it cost 7 % of the task's CPU time. The local clusters started here run without it (the
# dashboard's Profile page stays empty); set this to True to have it.
WORKER_PROFILE = False


class MissingDependency(ImportError):
    """An optional package the run needs is not installed; the message names the extra."""


class StoreConflict(ValueError):
    """The results folder holds records of another configuration (another run key)."""


class Evaluation(NamedTuple):
    """What :func:`evaluate` returns."""

    tables: dict  # {"table1", "fig6", "table2", "table3"}: see ebr_ref.evaluation.tables (None if not run)
    records: list  # every selected video's record, in dataset order (failed ones included)
    failed: list  # [(video_id, "Type: message")]
    computed: int  # videos computed by this call
    skipped: int  # videos whose stored record was reused
    out: str  # the results folder
    key: str  # the run key
    markdown: str  # tables.md
    seconds: float  # wall time of this call
    workers: dict  # {"kind", "n", "blas_threads", "dashboard"}


# ----------------------------------------------------------------------------- set-up


def _model_ref(spec, what):
    """A ModelRef for a shipped name or a canonical .npz path; reads the sidecar only."""
    from ..models.io import read_sidecar
    from ..models.shipped import data_dir, shipped_names

    if spec is None:
        return None, None
    spec = os.fspath(spec)
    shipped = not os.path.exists(spec) and os.sep not in spec and not spec.endswith(".npz")
    if shipped:
        if spec not in shipped_names():
            raise ValueError(
                f"{what} {spec!r}: no such file and no shipped model of that name "
                f"(shipped: {', '.join(shipped_names())})"
            )
        path = os.path.join(data_dir(), spec + ".npz")
    else:
        path = os.path.abspath(spec)
    try:
        side = read_sidecar(path, kind="classifier")
    except FileNotFoundError as e:
        raise ValueError(
            f"{what} {spec}: {e}; evaluate needs an ebr_ref canonical model (.npz + .json): "
            "convert a checkpoint first with 'ebr-ref convert'"
        ) from None
    except ValueError as e:
        raise ValueError(f"{what} {spec}: {e}") from None
    meta = side.get("meta", {})
    ref = ModelRef(
        spec=spec, path=path, sha256=side["params_sha256"], name=str(meta.get("name", spec)), shipped=shipped
    )
    recurrent = any(layer.get("type") == "lstm" for layer in side.get("architecture", []))
    info = {
        "class_names": meta.get("class_names"),
        "recurrent": recurrent,
        "input_shape": side.get("input_shape"),
        "num_classes": _num_classes(side),
    }
    return ref, info


def _num_classes(side):
    arch = side.get("architecture", [])
    last = arch[-1]["name"] if arch else None
    shape = side.get("params", {}).get(f"{last}.weight", {}).get("shape")
    return int(shape[0]) if shape else None


def _class_map(class_names, info, what):
    """{dataset label: model class index}, matching class names case-insensitively."""
    names = info["class_names"]
    if not names:
        n = info["num_classes"]
        if n is not None and n != len(class_names):
            raise ValueError(
                f"{what} has {n} classes and no class names; the dataset has {len(class_names)} "
                "classes (give the model class_names in its sidecar meta)"
            )
        return {k: k for k in range(len(class_names))}
    lower = {str(n).lower(): k for k, n in enumerate(names)}
    missing = [c for c in class_names if str(c).lower() not in lower]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(f"{what}: dataset classes not among the model's class names: {shown}")
    return {k: lower[str(c).lower()] for k, c in enumerate(class_names)}


def _protocols(protocol, dataset):
    has_boxes = any(it.boxes for it in dataset.items)
    has_segments = any(it.segments for it in dataset.items)
    if protocol == "all":
        out = (["pointing"] if has_boxes else []) + (list(TEMPORAL) if has_segments else [])
        if not out:
            raise ValueError(
                f"{dataset.root}: the dataset has neither boxes (Table 1) nor segments (Tables 2-3)"
            )
        return tuple(out)
    wanted = [protocol] if isinstance(protocol, str) else list(protocol)
    for p in wanted:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}; expected one of {', '.join(PROTOCOLS)} or 'all'")
        if p == "pointing" and not has_boxes:
            raise ValueError(f"{dataset.root}: protocol 'pointing' needs per-frame boxes; there are none")
        if p in TEMPORAL and not has_segments:
            raise ValueError(f"{dataset.root}: protocol {p!r} needs ground-truth segments; there are none")
    return tuple(p for p in PROTOCOLS if p in wanted)


def _methods(methods, protos, has_frame_model):
    if methods is None:
        chosen = set()
        if "pointing" in protos:
            chosen |= set(RECURRENT_METHODS) | (set(FRAME_METHODS) if has_frame_model else set())
        if set(TEMPORAL) & set(protos):
            chosen |= {"EB-R", "cEB-R"}
    else:
        chosen = set([methods] if isinstance(methods, str) else methods)
        bad = sorted(chosen - set(METHODS))
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; expected {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in chosen)


def _seed_steps(seed_steps):
    if isinstance(seed_steps, str):
        if seed_steps not in ("all", "last"):
            raise ValueError(f"seed_steps must be 'all', 'last' or a list of steps, got {seed_steps!r}")
        return seed_steps
    return tuple(int(s) for s in seed_steps)


def _positive(name, v, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


# ----------------------------------------------------------------------------- the run


class Plan(NamedTuple):
    """A checked evaluation, ready to run (:func:`plan_evaluation`); nothing is written yet."""

    dataset: object  # Dataset
    job: Job
    key_doc: dict
    items: list  # the selected VideoItems, in dataset order
    ambiguous: dict  # {video_id: ((start_sec, end_sec), ...)}
    todo: list  # the VideoItems to compute
    stale: list  # ids of records of another run key, replaced (overwrite)
    iou: tuple
    notes: list  # lines for the user


def evaluate(
    dataset,
    model=None,
    *,
    out,
    frame_model=None,
    protocol="all",
    methods=None,
    layout=None,
    workers=None,
    scheduler=None,
    device="cpu",
    every=1,
    start=0,
    max_frames=None,
    clip_length=128,
    seed_steps="all",
    lstm_rule="caffe",
    layer=None,
    fit="crop",
    dtype=None,
    chunk_size=8,
    tolerance=None,
    iou=DEFAULT_IOU,
    keep_maps=False,
    map_size=16,
    min_frames=2,
    limit=None,
    overwrite=False,
    retry_failed=False,
    progress=None,
    log=None,
):
    """Evaluate grounding methods on a dataset (paper Tables 1-3); resumable, on Dask.

    Parameters
    ----------
    dataset : Dataset or path
        A :class:`ebr_ref.evaluation.datasets.Dataset`, or a folder / manifest that
        :func:`ebr_ref.evaluation.datasets.read_dataset` reads (``layout`` passed on).
    model : str or path, optional
        The CNN-LSTM (recurrent methods, probabilities): a shipped model name or an ebr_ref
        canonical ``.npz``. Needed by every protocol except a Table 1 of frame methods only.
    out : str or path
        The results folder (created; see :mod:`ebr_ref.pipeline.store`).
    frame_model : str or path, optional
        The per-frame CNN classifier for EB, cEB and BP (Table 1).
    protocol : {"all", "pointing", "detection", "temporal-pointing"} or a list of them
        ``"all"``: Table 1 when the dataset has boxes, Tables 2-3 when it has segments.
    methods : sequence of str, optional
        Default: EB-R, cEB-R, BP-R (+ EB, cEB, BP with a frame model) for Table 1; EB-R and
        cEB-R for Tables 2-3.
    layout : str, optional
        The dataset layout when ``dataset`` is a path (default: detected).
    workers : int, optional
        Worker processes of the local cluster (default: the usable cores; with ``device="gpu"``
        the GPUs). ``0``: no Dask, a plain loop in this process. Ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``).
    device : {"cpu", "gpu"}
    every, start, max_frames : int
        Frame sampling (:func:`ebr_ref.tools.video.read_frames`); ground truth follows.
    clip_length : int
        Frames per processing clip (the paper: 128).
    seed_steps, lstm_rule, layer, dtype, chunk_size
        As :func:`ebr_ref.ground` (``seed_steps`` default ``"all"``).
    fit : {"crop", "stretch"}
        How frames (and boxes) are fitted to a model's input.
    tolerance : float, optional
        Pointing-game diameter in input pixels (default: 15 px at 224, scaled to the input).
    iou : sequence of float
        IoU thresholds of Table 2's columns.
    keep_maps : bool
        Also store each video's maps (block-averaged to at most ``map_size`` cells a side, float16).
    map_size : int
    min_frames : int
        A video with fewer frames after sampling is recorded as failed.
    limit : int, optional
        Evaluate only the first ``limit`` videos (in dataset order).
    overwrite : bool
        Replace records of another configuration (another run key) instead of refusing.
    retry_failed : bool
        Recompute videos whose stored record says they failed (default: keep them as failed).
    progress : callable, optional
        ``progress(done, total)`` after every video (``total`` counts the videos to compute).
    log : callable, optional
        ``log(line)`` for what a user wants to see (cluster, dashboard, BLAS threads).

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        For a bad argument, a model or dataset that does not fit (DatasetError), a results folder
        that holds another configuration (StoreConflict: pass ``overwrite=True`` or another ``out``).
    MissingDependency
        When Dask (``pip install 'ebr_ref[eval]'``) or dask-cuda (``[gpu]``) is needed and missing.
    """
    plan = plan_evaluation(
        dataset,
        model,
        out=out,
        frame_model=frame_model,
        protocol=protocol,
        methods=methods,
        layout=layout,
        device=device,
        every=every,
        start=start,
        max_frames=max_frames,
        clip_length=clip_length,
        seed_steps=seed_steps,
        lstm_rule=lstm_rule,
        layer=layer,
        fit=fit,
        dtype=dtype,
        chunk_size=chunk_size,
        tolerance=tolerance,
        iou=iou,
        keep_maps=keep_maps,
        map_size=map_size,
        min_frames=min_frames,
        limit=limit,
        overwrite=overwrite,
        retry_failed=retry_failed,
    )
    return run_plan(plan, workers=workers, scheduler=scheduler, progress=progress, log=log)


def plan_evaluation(
    dataset,
    model=None,
    *,
    out,
    frame_model=None,
    protocol="all",
    methods=None,
    layout=None,
    device="cpu",
    every=1,
    start=0,
    max_frames=None,
    clip_length=128,
    seed_steps="all",
    lstm_rule="caffe",
    layer=None,
    fit="crop",
    dtype=None,
    chunk_size=8,
    tolerance=None,
    iou=DEFAULT_IOU,
    keep_maps=False,
    map_size=16,
    min_frames=2,
    limit=None,
    overwrite=False,
    retry_failed=False,
):
    """Check the arguments, read the dataset and the store, and decide what to compute (see :func:`evaluate`).

    Writes nothing. Every problem of the user's arguments, dataset, models or results folder is raised
    here, as ValueError (or a subclass), before any work starts.
    """
    if not hasattr(dataset, "items"):
        from ..evaluation.datasets import read_dataset

        dataset = read_dataset(dataset, layout)
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    for name, v in (
        ("every", every),
        ("clip_length", clip_length),
        ("chunk_size", chunk_size),
        ("map_size", map_size),
        ("min_frames", min_frames),
    ):
        _positive(name, v)
    _positive("max_frames", max_frames, allow_none=True)
    _positive("limit", limit, allow_none=True)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if fit not in ("crop", "stretch"):
        raise ValueError(f"fit must be 'crop' or 'stretch', got {fit!r}")
    if lstm_rule not in ("caffe", "eb"):
        raise ValueError(f"lstm_rule must be 'caffe' or 'eb', got {lstm_rule!r}")
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
    if tolerance is not None and not float(tolerance) >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    iou = tuple(float(a) for a in iou)
    if not iou or not all(0 < a <= 1 for a in iou):
        raise ValueError(f"iou thresholds must lie in (0, 1], got {iou}")

    protos = _protocols(protocol, dataset)
    rnn_ref, rnn_info = _model_ref(model, "model")
    cnn_ref, cnn_info = _model_ref(frame_model, "frame_model")
    chosen = _methods(methods, protos, cnn_ref is not None)
    recurrent = [m for m in chosen if m in RECURRENT_METHODS]
    frame_methods = [m for m in chosen if m in FRAME_METHODS]
    if set(TEMPORAL) & set(protos) and not recurrent:
        raise ValueError("Tables 2-3 need a recurrent method (EB-R, cEB-R or BP-R) and the CNN-LSTM model")
    if frame_methods and "pointing" not in protos:
        raise ValueError(
            f"{', '.join(frame_methods)} are per-frame methods: they count in Table 1 (pointing) only"
        )
    if (recurrent or set(TEMPORAL) & set(protos)) and rnn_ref is None:
        raise ValueError(f"{', '.join(recurrent) or 'Tables 2-3'} need model= (a CNN-LSTM)")
    if rnn_ref is not None and not rnn_info["recurrent"]:
        raise ValueError(f"model {model}: not a CNN-LSTM (no lstm layer); per-frame CNNs go in frame_model=")
    if frame_methods and cnn_ref is None:
        raise ValueError(f"{', '.join(frame_methods)} need frame_model= (a per-frame CNN classifier)")
    if cnn_ref is not None and cnn_info["recurrent"]:
        raise ValueError(f"frame_model {frame_model}: a CNN-LSTM; the per-frame methods need a per-frame CNN")
    if rnn_ref is None and cnn_ref is None:
        raise ValueError("nothing to evaluate: give model= and/or frame_model=")
    class_map = {}
    if rnn_ref is not None:
        class_map["model"] = _class_map(dataset.class_names, rnn_info, f"model {model}")
    if cnn_ref is not None:
        class_map["frame_model"] = _class_map(dataset.class_names, cnn_info, f"frame_model {frame_model}")

    seed_steps = _seed_steps(seed_steps)
    options = {
        "every": every,
        "start": start,
        "max_frames": max_frames,
        "clip_length": clip_length,
        "seed_steps": seed_steps,
        "lstm_rule": lstm_rule,
        "layer": layer,
        "fit": fit,
        "dtype": dtype,
        "chunk_size": chunk_size,
        "device": device,
        "tolerance": None if tolerance is None else float(tolerance),
        "keep_maps": bool(keep_maps),
        "map_size": map_size,
        "min_frames": min_frames,
    }
    key_doc = {
        "format": RECORD_FORMAT,
        "record_version": RECORD_VERSION,
        "ebr_ref": __version__,
        "dataset": {"layout": dataset.layout, "class_names": list(dataset.class_names)},
        "model": None if rnn_ref is None else {"name": rnn_ref.name, "sha256": rnn_ref.sha256},
        "frame_model": None if cnn_ref is None else {"name": cnn_ref.name, "sha256": cnn_ref.sha256},
        "protocols": list(protos),
        "methods": list(chosen),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
    }
    key = run_key(key_doc)
    job = Job(
        store=os.path.abspath(os.fspath(out)),
        key=key,
        model=rnn_ref,
        frame_model=cnn_ref,
        protocols=protos,
        methods=chosen,
        class_map=class_map,
        **options,
    )

    # the videos: those with the ground truth of a chosen protocol, the first `limit`
    wanted = [
        it
        for it in dataset.items
        if ("pointing" in protos and it.boxes and pointing_label(it) is not None)
        or (set(TEMPORAL) & set(protos) and it.segments)
    ]
    notes = []
    left_out = len(dataset.items) - len(wanted)
    if left_out:
        notes.append(
            f"{left_out} of {len(dataset.items)} videos have no ground truth for "
            f"{', '.join(protos)}: not evaluated"
        )
    if limit is not None:
        wanted = wanted[:limit]
    if not wanted:
        raise ValueError(f"{dataset.root}: no video to evaluate")
    ambiguous = {
        it.video_id: tuple(tuple(a) for a in dataset.ambiguous.get(it.video_id, ())) for it in wanted
    }
    store = Store(out)
    if os.path.exists(store.root) and not os.path.isdir(store.root):
        raise ValueError(f"{store.root}: exists and is not a folder")
    todo, stale = _plan(store, wanted, ambiguous, key, key_doc, overwrite, retry_failed)
    return Plan(
        dataset=dataset,
        job=job,
        key_doc=key_doc,
        items=wanted,
        ambiguous=ambiguous,
        todo=todo,
        stale=stale,
        iou=iou,
        notes=notes,
    )


def run_plan(plan, *, workers=None, scheduler=None, progress=None, log=None):
    """Compute the videos of ``plan`` still to do, then the tables from every stored record.

    See :func:`evaluate` for the arguments.
    """
    t_start = time.perf_counter()
    log = log or (lambda line: None)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    job, key, key_doc, dataset = plan.job, plan.job.key, plan.key_doc, plan.dataset
    if job.device == "gpu" and scheduler is None and workers == 0:
        from .. import backend

        if not backend.gpu_available():
            raise MissingDependency("device='gpu' needs CuPy and a CUDA device: pip install 'ebr_ref[gpu]'")
    for line in plan.notes:
        log(line)
    store = Store(job.store).create()
    if plan.stale:
        log(f"replacing {len(plan.stale)} record(s) of another configuration (overwrite)")
        for vid in plan.stale:
            store.remove_record(vid)
    store.remove_temp_files()  # left by writers killed in an earlier run; no task runs now
    previous = store.read_run() or {}
    run_doc = {
        "format": RECORD_FORMAT,
        "key": key,
        "key_doc": key_doc,
        "dataset": {"root": dataset.root, "layout": dataset.layout, "videos": len(plan.items)},
        "created": previous.get("created", time.time()) if previous.get("key") == key else time.time(),
    }
    store.write_run(dict(run_doc, status="running"))
    n_done = len(plan.items) - len(plan.todo)
    log(f"{len(plan.items)} videos: {n_done} already done, {len(plan.todo)} to compute")

    computed, _, wk = _execute(plan.todo, plan.ambiguous, job, workers, scheduler, job.device, progress, log)
    store.remove_temp_files()

    records = []
    for it in plan.items:
        rec = store.read_record(it.video_id)
        if rec is None or rec.get("key") != key:
            # the task reported success but its record is gone: say so instead of scoring a partial set
            rec = _stamp_client_failure(
                store,
                it,
                job,
                plan.ambiguous[it.video_id],
                RuntimeError("no record after the run (was the store modified?)"),
            )
        records.append(rec)
    failed = [
        (r["video_id"], f"{r['error']['type']}: {r['error']['message']}")
        for r in records
        if r["status"] != "ok"
    ]
    ok = [r for r in records if r["status"] == "ok"]
    tabs = compute_tables(ok, job.protocols, plan.iou)
    info = {
        "dataset": dataset,
        "protocols": job.protocols,
        "methods": job.methods,
        "records": records,
        "ok": ok,
        "failed": failed,
        "model": job.model,
        "frame_model": job.frame_model,
        "options": key_doc["options"],
        "iou": plan.iou,
    }
    markdown = render_markdown(tabs, info)
    doc = {
        "run": key_doc,
        "key": key,
        "videos": len(records),
        "ok": len(ok),
        "failed": [list(f) for f in failed],
        "tables": tables.to_json(tabs),
    }
    store.write_text("tables.md", markdown + "\n")
    store.write_text("tables.json", json.dumps(doc, indent=1, allow_nan=False) + "\n")
    store.write_text("tables.csv", tables.to_csv(tabs))
    seconds = time.perf_counter() - t_start
    store.write_run(
        dict(
            run_doc,
            status="finished",
            last_run={
                "finished": time.time(),
                "seconds": round(seconds, 3),
                "computed": computed,
                "skipped": n_done,
                "failed": len(failed),
                "workers": wk,
            },
        )
    )
    return Evaluation(
        tables=tabs,
        records=records,
        failed=failed,
        computed=computed,
        skipped=n_done,
        out=store.root,
        key=key,
        markdown=markdown,
        seconds=seconds,
        workers=wk,
    )


def _plan(store, wanted, ambiguous, key, key_doc, overwrite, retry_failed):
    """The videos to compute, and the ids of records of another key (to remove, with overwrite)."""
    run = store.read_run()
    if run is not None and run.get("key") != key and not overwrite:
        raise StoreConflict(_conflict_message(store, run.get("key_doc") or {}, key_doc))
    todo, stale, foreign = [], [], 0
    for it in wanted:
        rec = store.read_record(it.video_id)
        if rec is None:
            todo.append(it)
        elif rec.get("key") != key:
            foreign += 1
            stale.append(it.video_id)
            todo.append(it)
        elif rec.get("item_digest") != item_digest(it, ambiguous[it.video_id]):
            todo.append(it)  # the ground truth changed since: score again
        elif rec.get("status") != "ok" and retry_failed:
            todo.append(it)
    if foreign and not overwrite:
        raise StoreConflict(
            f"{store.root}: {foreign} record(s) were computed with another configuration "
            "(another run key); use another results folder, or overwrite=True (--overwrite) "
            "to replace them"
        )
    return todo, stale


def _conflict_message(store, old, new):
    diff = []
    for k in ("model", "frame_model", "protocols", "methods", "dataset", "ebr_ref", "record_version"):
        if old.get(k) != new.get(k):
            diff.append(k)
    for k, v in (new.get("options") or {}).items():
        if (old.get("options") or {}).get(k) != v:
            diff.append(k)
    what = ", ".join(diff) or "the run key"
    return (
        f"{store.root} holds an evaluation of another configuration (differs in: {what}); use another "
        "results folder, or overwrite=True (--overwrite) to replace its records"
    )


def _stamp_client_failure(store, item, job, ambiguous, error):
    """Record a video whose task failed outside the task's own error handling (e.g. its worker kept dying)."""
    rec = stamp(failed_record(error), item, job, ambiguous, time.perf_counter())
    rec["worker"] = {"host": None, "pid": None, "note": "recorded by the client"}
    store.write_record(rec)
    return rec


# ----------------------------------------------------------------------------- execution


def _execute(todo, ambiguous, job, workers, scheduler, device, progress, log):
    """Run the tasks; return ``(computed, failures, worker info)``."""
    total = len(todo)
    tick = progress or (lambda done, total: None)
    if workers == 0 and scheduler is None:
        info = {"kind": "in-process", "n": 0, "blas_threads": blas_threads(), "dashboard": None}
        if not todo:
            return 0, 0, info
        failures = 0
        for n, it in enumerate(todo, start=1):
            s = run_video(it, ambiguous[it.video_id], job)
            failures += s["status"] != "ok"
            tick(n, total)
        return total, failures, info
    if not todo:
        return 0, 0, {"kind": "none (nothing to compute)", "n": 0, "blas_threads": None, "dashboard": None}
    distributed = _import_distributed()
    with _cluster(distributed, workers, scheduler, device, log) as (client, info):
        failures = 0
        keys = [f"ebr-video-{n}-{it.video_id}"[:200] for n, it in enumerate(todo)]
        futures = client.map(
            run_video, todo, [ambiguous[it.video_id] for it in todo], job=job, key=keys, pure=False, retries=1
        )
        by_future = dict(zip(futures, todo, strict=True))
        done = 0
        try:
            for fut in distributed.as_completed(futures, loop=client.loop):
                it = by_future.pop(fut)
                if fut.status == "finished":
                    failures += fut.result()["status"] != "ok"
                else:  # the task itself failed: its worker died too often (KilledWorker), or writing failed
                    err = fut.exception()
                    _stamp_client_failure(Store(job.store), it, job, ambiguous[it.video_id], err)
                    log(f"{it.video_id}: failed outside the task ({type(err).__name__}: {err})")
                    failures += 1
                fut.release()
                done += 1
                tick(done, total)
        except BaseException:
            client.cancel(list(by_future))
            raise
    return total, failures, info


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise MissingDependency(
            "running on Dask needs dask[distributed]: pip install 'ebr_ref[eval]' "
            "(or workers=0 / --workers 0 for a plain loop in this process)"
        ) from None
    return distributed


@contextlib.contextmanager
def _cluster(distributed, workers, scheduler, device, log):
    """A Client on an existing scheduler, or on a LocalCluster (LocalCUDACluster) started and closed here."""
    cores = usable_cores()
    if scheduler is not None:
        client = distributed.Client(scheduler, set_as_default=False)
        try:
            threads = client.run(blas_threads)
            n = len(threads)
            info = {
                "kind": f"scheduler {scheduler}",
                "n": n,
                "blas_threads": sorted(set(threads.values()), key=str),
                "dashboard": client.dashboard_link,
            }
            log(f"cluster: {scheduler}, {n} workers; BLAS threads per worker: {_fmt(threads.values())}")
            log(f"dashboard: {client.dashboard_link}")
            yield client, info
        finally:
            client.close()
        return
    if device == "gpu":
        cluster, n, threads = _local_cuda_cluster(workers, cores)
    else:
        n = workers if workers is not None else cores
        threads = max(1, cores // n)
        cluster = local_cluster(n, threads)
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            found = client.run(blas_threads)
            info = {
                "kind": "LocalCUDACluster" if device == "gpu" else "LocalCluster",
                "n": n,
                "blas_threads": sorted(set(found.values()), key=str),
                "dashboard": client.dashboard_link,
            }
            log(
                f"cluster: {info['kind']} with {n} worker processes; BLAS threads per worker: "
                f"{_fmt(found.values())} ({cores} cores)"
            )
            if any(v is not None and v != threads for v in found.values()):
                log(
                    f"warning: asked for {threads} BLAS threads per worker, the workers have "
                    f"{_fmt(found.values())}"
                )
            note = "" if _has_bokeh() else " (needs bokeh: pip install bokeh)"
            log(f"dashboard: {client.dashboard_link}{note}")
            yield client, info
        finally:
            client.close()
    finally:
        cluster.close()


def _fmt(values):
    vals = sorted({"unknown" if v is None else str(v) for v in values})
    return ", ".join(vals) or "none"


def _has_bokeh():
    from importlib.util import find_spec

    return find_spec("bokeh") is not None


def local_cluster(n_workers=None, blas_threads=None):
    """A ``distributed.LocalCluster`` of processes, one task thread and ``blas_threads`` BLAS threads each.

    Defaults: one worker per usable core, ``cores // n_workers`` BLAS threads. This is the cluster
    :func:`evaluate` starts; start it yourself to keep it across runs (pass ``cluster.scheduler_address``
    as ``scheduler``) or to watch its workers.

    The BLAS variables must be in a worker's environment before it imports NumPy: Dask's
    ``distributed.nanny.pre-spawn-environ`` sets them before the worker process is spawned (also when
    the nanny restarts a killed worker). Dask lets the nanny process's own environment override that
    setting, so the variables are set here as well while the cluster starts, and restored after.
    """
    distributed = _import_distributed()
    import dask

    n = usable_cores() if n_workers is None else int(n_workers)
    threads = max(1, usable_cores() // n) if blas_threads is None else int(blas_threads)
    with _worker_environment(dask, blas_environment(threads)):
        return distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )


@contextlib.contextmanager
def _worker_environment(dask, env):
    """The pre-spawn environment of the workers started inside: ``env``, and no ``MALLOC_TRIM_THRESHOLD_``.

    Also turns the workers' statistical profiler off (:data:`WORKER_PROFILE`).

    Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers by default (to give memory back to the OS
    sooner). Setting it also turns off glibc's adaptive mmap threshold, so every NumPy temporary above
    128 kB is mapped and unmapped again: on the synthetic benchmark that made each task about 1.5-2x
    slower (30x the page faults). The variables are set in this process too while the workers start
    (the nanny's own environment overrides the configuration), and restored after.
    """
    names = tuple(env) + (MALLOC_TRIM,)
    saved = {v: os.environ.get(v) for v in names}
    pre = dict(dask.config.get("distributed.nanny.pre-spawn-environ") or {})
    pre.update(env)
    pre[MALLOC_TRIM] = None  # None: not set (dask drops such entries)
    try:
        os.environ.update(env)
        os.environ.pop(MALLOC_TRIM, None)
        with dask.config.set(
            {"distributed.nanny.pre-spawn-environ": pre, "distributed.worker.profile.enabled": WORKER_PROFILE}
        ):
            yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def _local_cuda_cluster(workers, cores):  # pragma: no cover - needs GPUs and dask-cuda
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise MissingDependency(
            "device='gpu' on Dask needs dask-cuda: pip install 'ebr_ref[gpu,eval]'"
        ) from None
    from .. import backend

    if not backend.gpu_available():
        raise ValueError(
            "device='gpu': CuPy with a CUDA device is not available (pip install 'ebr_ref[gpu]')"
        )
    import cupy
    import dask

    gpus = cupy.cuda.runtime.getDeviceCount()
    n = workers if workers is not None else gpus
    threads = max(1, cores // n)
    with _worker_environment(dask, blas_environment(threads)):
        cluster = LocalCUDACluster(
            n_workers=n, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
        )
    return cluster, n, threads


# ----------------------------------------------------------------------------- tables


def compute_tables(records, protos, iou=DEFAULT_IOU):
    """Tables 1-3 and the Fig. 6 analogue of a dataset run from its (successful) records."""
    out = {"table1": None, "fig6": None, "table2": None, "table3": None}
    if "pointing" in protos:
        out["table1"] = tables.pointing_table(records, class_mean=True)
    if set(TEMPORAL) & set(protos):
        out["fig6"] = tables.evidence_table(records)
    if "detection" in protos:
        out["table2"] = tables.detection_table(records, [(f"{a:g}", None, a) for a in iou])
    if "temporal-pointing" in protos:
        out["table3"] = tables.temporal_pointing_table(records)
    return out


def render_markdown(tabs, info):
    """tables.md of a dataset run: a header, then each table with its caption."""
    ds, opts = info["dataset"], info["options"]
    models = [
        f"`{r.name}` (sha256 {r.sha256[:12]})" for r in (info["model"], info["frame_model"]) if r is not None
    ]
    frames = sum(r["video"]["frames"] for r in info["ok"])
    lines = [
        f"Dataset: `{ds.root}` ({ds.layout}), {len(info['records'])} videos: {len(info['ok'])} scored, "
        f"{len(info['failed'])} failed; {frames} frames analysed.  ",
        f"Models: {', '.join(models)}; methods {', '.join(info['methods'])}; ebr_ref {__version__}.  ",
        f"Frames: every {opts['every']}, start {opts['start']}, at most {opts['max_frames'] or 'all'}; "
        f"clips of {opts['clip_length']} frames; seed steps `{_steps(opts['seed_steps'])}`; LSTM rule "
        f"`{opts['lstm_rule']}`; read-out `{opts['layer'] or 'model default'}`; fit `{opts['fit']}`.",
    ]
    if tabs["table1"] is not None:
        t1 = tabs["table1"]
        n = next(iter(t1.values()))[tables.FRAMES] if t1 else 0
        tol = "15 px at 224 px, scaled to the input"
        if opts["tolerance"] is not None:
            tol = f"{opts['tolerance']:g} px"
        lines += [
            "",
            f"**Table 1** — spatial pointing game, accuracy (%) over the annotated frames ({n} "
            f"frames; tolerance: a circle of diameter {tol}). `class mean`: the mean of the "
            "per-class accuracies. Baselines: the frame centre, a uniformly random pixel.",
            "",
        ]
        lines += tables.markdown_pointing(
            t1, [(tables.ALL, "all"), (tables.CLASS_MEAN, "class mean"), (tables.FRAMES, "frames")]
        )
    if tabs["fig6"] is not None and any(v[tables.ALL] for v in tabs["fig6"].values()):
        lines += [
            "",
            "**Evidence in and out of the ground truth** (the analogue of the paper's Fig. 6): "
            "mean over (video, class) pairs of the mean `S_t` (x 100) over the frames inside the "
            "class's segments and over the frames outside, and the share (%) of pairs whose inside "
            "mean is larger.",
            "",
        ]
        lines += tables.markdown_evidence(
            tabs["fig6"], [(tables.ALL, "")], names=("S(in)", "S(out)", "in > out")
        )
    if tabs["table2"] is not None:
        lines += [
            "",
            "**Table 2** — temporal detection, mAP (%) at each IoU threshold (the paper's Table 2 "
            "uses 0.5, its Table 4 0.1), ground-truth label known. Known length: one window of the "
            "segment's length per segment; unknown: one §4.1 window per clip and class. Unknown "
            "length: mAP, and in brackets the mean detected length (frames).",
            "",
        ]
        lines += tables.markdown_detection(tabs["table2"], [(f"{a:g}", f"IoU {a:g}") for a in info["iou"]])
    if tabs["table3"] is not None:
        t3 = tabs["table3"]
        n = next(iter(t3.values()))["segments"] if t3 else 0
        lines += [
            "",
            f"**Table 3** — temporal pointing game, accuracy (%) over {n} ground-truth segments, "
            f"each in the {opts['clip_length']}-frame clip holding its centre.",
            "",
        ]
        lines += tables.markdown_temporal_pointing(t3, [(tables.ALL, "all"), ("segments", "segments")])
    if info["failed"]:
        lines += ["", f"**Failed videos** ({len(info['failed'])}):", ""]
        lines += [f"- `{vid}`: {msg}" for vid, msg in info["failed"][:50]]
        if len(info["failed"]) > 50:
            lines.append(f"- ... and {len(info['failed']) - 50} more (tables.json lists them all)")
    return "\n".join(lines)


def _steps(s):
    return s if isinstance(s, str) else ",".join(map(str, s))
