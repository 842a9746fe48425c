"""The work on one video, as a worker runs it: decode, preprocess, ground, analyse, write the record.

:func:`run_video` is the task the runner submits once per video. It never
raises for a problem of the video itself (an unreadable or corrupt file, too
few frames, ground truth outside the video): the record is then written with
``status: "failed"`` and the error, and the run goes on. The models are loaded
once per worker process (:func:`get_model`, keyed by path and sha256), never
sent with the tasks.

:func:`analyse_video` decodes the file and hands the frames to
:func:`analyse_frames`, the analysis proper; :func:`clip_record` runs that same
analysis on in-memory frames (a synthetic clip before encoding), so that
scores on decoded files and on the frames they were encoded from come from one
implementation (``benchmarks/decoded_vs_memory.py``).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import traceback
from typing import NamedTuple

import numpy

from .. import __version__
from ..evaluation import protocols
from ..evaluation.annotations import seconds_to_frames
from ..evaluation.localize import pointing_game
from ..grounding import METHODS, ground
from .store import RECORD_FORMAT, RECORD_VERSION, Store, item_digest

__all__ = [
    "ModelRef",
    "Job",
    "get_model",
    "run_video",
    "analyse_video",
    "analyse_frames",
    "sample_frames",
    "clip_record",
    "failed_record",
    "random_seed",
    "stamp",
    "pointing_label",
]


RECURRENT_METHODS = tuple(m for m in METHODS if m.endswith("-R"))  # on a CNN-LSTM
FRAME_METHODS = tuple(m for m in METHODS if not m.endswith("-R"))  # on a per-frame CNN


class ModelRef(NamedTuple):
    """Where a worker finds a model: a canonical ``.npz`` path (or a shipped name) and its sha256."""

    spec: str  # what the user gave (a shipped name or a path)
    path: str  # absolute path of the .npz on the machine that resolved it
    sha256: str  # params_sha256 of its sidecar
    name: str  # meta name (for the tables)
    shipped: bool  # a shipped model: a worker on another machine loads its own copy by name


class Job(NamedTuple):
    """What every task of one run shares (small: no arrays, no model)."""

    store: str  # the results folder
    key: str  # the run key
    model: ModelRef | None  # the CNN-LSTM (recurrent methods, probabilities)
    frame_model: ModelRef | None  # the per-frame CNN (EB, cEB, BP)
    protocols: tuple  # of "pointing", "detection", "temporal-pointing"
    methods: tuple  # in METHODS order
    class_map: dict  # {"model": {dataset label: model class}, "frame_model": {...}}
    every: int
    start: int
    max_frames: int | None
    clip_length: int
    seed_steps: object  # "all", "last" or a tuple of steps
    lstm_rule: str
    layer: str | None
    fit: str
    dtype: str | None
    chunk_size: int
    device: str
    tolerance: float | None  # pointing diameter in px; None: the paper's 15 px at 224, scaled to the input
    keep_maps: bool
    map_size: int
    min_frames: int


_MODELS = {}  # per worker process: (path, sha256, device, dtype) -> Model
_LOCK = threading.Lock()


def get_model(ref, device="cpu", dtype=None):
    """The model of ``ref`` in this process, loaded on first use and checked against its sha256.

    Raises
    ------
    ValueError
        When the file found has another sha256 than the one the run was keyed with.
    """
    key = (ref.path, ref.sha256, device, dtype)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            from ..models.io import load_model, read_sidecar

            path = ref.path
            if ref.shipped and not os.path.exists(path):
                from ..models.shipped import data_dir

                path = os.path.join(data_dir(), ref.spec + ".npz")
            found = read_sidecar(path).get("params_sha256")
            if found != ref.sha256:
                raise ValueError(f"{path}: sha256 {found} on this worker, but the run uses {ref.sha256}")
            model = load_model(path)  # verifies the .npz against the sidecar's sha256
            if dtype is not None:
                model = model.astype(dtype)
            if device == "gpu":
                model = model.to("gpu")
            _MODELS[key] = model
        return model


def pointing_label(item):
    """The class a video's boxes belong to: its label, else the one class of its segments (else None)."""
    if item.label is not None:
        return int(item.label)
    labels = {int(s.label) for s in item.segments}
    return labels.pop() if len(labels) == 1 else None


def random_seed(video_id, stream):
    """The seed of a video's random baselines: independent of the order and the place videos are computed."""
    import hashlib

    digest = hashlib.sha256(f"ebr_ref-random-baseline\0{video_id}\0{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _downsample(maps, size):
    """Block means over ``ceil(side / size)`` cells so that no side exceeds ``size``; float16."""
    maps = numpy.asarray(maps, dtype=numpy.float32)
    if maps.ndim < 3:
        return maps.astype(numpy.float16)
    h, w = maps.shape[-2:]
    f = max(1, math.ceil(max(h, w) / size))
    if f > 1:
        rows, cols = numpy.arange(0, h, f), numpy.arange(0, w, f)
        s = numpy.add.reduceat(numpy.add.reduceat(maps, rows, axis=-2), cols, axis=-1)
        nr = numpy.minimum(rows + f, h) - rows
        nc = numpy.minimum(cols + f, w) - cols
        maps = s / (nr[:, None] * nc[None, :])
    return maps.astype(numpy.float16)


def _segments_in_frames(item, fps, indices, spans, where):
    """Spans ``[(label or None, start_sec, end_sec, start_frame, end_frame)]`` as analysed frames.

    Returns the kept ``(label, start, end)`` and the number that fall outside the analysed frames.
    """
    out, outside = [], 0
    for label, t0, t1, f0, f1 in spans:
        if f0 is None:
            if not fps:
                raise ValueError(
                    f"{where}: the frame rate is unknown (not in the dataset, not in the "
                    "video), so segments in seconds cannot become frames"
                )
            f0, f1 = seconds_to_frames(t0, t1, fps)
        iv = protocols.sampled_interval(int(f0), int(f1), indices)
        if iv is None:
            outside += 1
        else:
            out.append((label, iv[0], iv[1]))
    return out, outside


def _boxes_for(item, indices, size_in, size_out, fit):
    """Per analysed frame, the item's boxes mapped onto a model's input (``(0, 4)`` when none)."""
    from ..tools.video import fit_boxes

    per = []
    for k in indices:
        b = item.boxes.get(int(k)) if item.boxes else None
        per.append(
            fit_boxes(numpy.asarray(b, dtype=numpy.float64).reshape(-1, 4), size_in, size_out, fit)
            if b
            else numpy.zeros((0, 4))
        )
    return per


def _size(model):
    return tuple(int(v) for v in model.input_shape[1:3])


def analyse_video(item, job, ambiguous=()):
    """Decode, preprocess, ground and analyse one video; return ``(record, maps)`` (maps: None unless kept).

    Raises
    ------
    Exception
        Whatever the video causes (VideoError for an unreadable file, ValueError for one too short...);
        :func:`run_video` records it.
    """
    from ..tools.video import read_frames

    t0 = time.perf_counter()
    frames, info = read_frames(item.path, every=job.every, max_frames=job.max_frames, start=job.start)
    return analyse_frames(item, job, frames, info, ambiguous, decode_seconds=time.perf_counter() - t0)


def analyse_frames(item, job, frames, info, ambiguous=(), *, decode_seconds=0.0):
    """Preprocess, ground and analyse one video's sampled frames; return ``(record, maps)``.

    Parameters
    ----------
    item : ebr_ref.evaluation.datasets.VideoItem
    job : Job
    frames : uint8 ndarray of shape (T, H, W, 3)
        The analysed frames (after sampling).
    info : dict
        ``fps`` (used when ``item.fps`` is None), ``indices`` (the original index of every analysed
        frame) and ``size`` ``(H, W)``: what :func:`ebr_ref.tools.video.read_frames` returns.
    ambiguous : sequence of (start_sec, end_sec)
    decode_seconds : float
        Recorded in the record's ``seconds``.

    Raises
    ------
    Exception
        As :func:`analyse_video`.
    """
    from ..tools.video import VideoError, clip_for_model

    T = int(frames.shape[0])
    if T < job.min_frames:
        raise VideoError(f"{item.path}: {T} frame(s) after sampling; at least {job.min_frames} are needed")
    fps = item.fps or info["fps"]
    indices = list(info["indices"])
    size_in = tuple(int(v) for v in info["size"])
    clips = protocols.clip_bounds(T, job.clip_length)
    point_label = pointing_label(item)
    want_pointing = "pointing" in job.protocols and bool(item.boxes) and point_label is not None
    want_temporal = bool({"detection", "temporal-pointing"} & set(job.protocols)) and bool(item.segments)
    spans = [(s.label, s.start, s.end, s.start_frame, s.end_frame) for s in item.segments if want_temporal]
    gt, outside = _segments_in_frames(item, fps, indices, spans, item.path)
    gt.sort(key=lambda g: (g[1], g[2], g[0]))
    amb, _ = _segments_in_frames(
        item, fps, indices, [(None, a, b, None, None) for a, b in ambiguous], item.path
    )
    labels = [point_label] if want_pointing else []
    labels += [c for c in sorted({int(g[0]) for g in gt}) if c not in labels]
    if not labels:
        raise ValueError(
            f"{item.path}: no ground truth left to score (segments outside the analysed frames, or no label)"
        )
    recurrent = [m for m in job.methods if m in RECURRENT_METHODS]
    frame_methods = [m for m in job.methods if m in FRAME_METHODS] if want_pointing else []
    rnn = get_model(job.model, job.device, job.dtype) if job.model is not None else None
    cnn = get_model(job.frame_model, job.device, job.dtype) if frame_methods else None
    kw = dict(lstm_rule=job.lstm_rule, seed_steps=job.seed_steps, layer=job.layer, chunk_size=job.chunk_size)
    maps, evidence, probs = {}, {}, []
    t1 = time.perf_counter()
    if recurrent:
        targets = [job.class_map["model"][c] for c in labels]
        for a, b in clips:
            x = clip_for_model(frames[a : b + 1], rnn, fit=job.fit)[0]
            for k, m in enumerate(recurrent):
                g = ground(rnn, x, targets, method=m, **kw)
                maps.setdefault(m, []).append(g.maps)  # (K, Tc, h, w)
                evidence.setdefault(m, []).append(g.evidence)  # (K, Tc)
                if k == 0:
                    probs.append(g.probs)  # (Tc, C)
    # the per-frame methods count in Table 1 only: run them on the annotated frames alone
    annotated = [j for j, k in enumerate(indices) if item.boxes.get(int(k))] if frame_methods else []
    if annotated:
        targets = [job.class_map["frame_model"][point_label]]
        sub = frames[annotated]
        for a, b in protocols.clip_bounds(len(annotated), job.clip_length):
            x = clip_for_model(sub[a : b + 1], cnn, fit=job.fit)[0]
            for m in frame_methods:
                g = ground(cnn, x, targets, method=m, layer=job.layer, chunk_size=job.chunk_size)
                maps.setdefault(m, []).append(g.maps)  # (1, Ta, h, w): the boxes' class, annotated frames
    maps = {m: numpy.concatenate(v, axis=1) for m, v in maps.items()}  # (K, T, ...)
    evidence = {m: numpy.concatenate(v, axis=1) for m, v in evidence.items()}  # (K, T)
    probs = numpy.concatenate(probs, axis=0) if probs else None  # (T, C)
    t_ground = time.perf_counter() - t1
    row = {c: k for k, c in enumerate(labels)}
    record = {
        "label": None if item.label is None else int(item.label),
        "group": None,
        "video": {
            "path": item.path,
            "fps": fps,
            "decoded_size": list(size_in),
            "frames": T,
            "first_frame": indices[0],
            "last_frame": indices[-1],
            "every": job.every,
        },
        "clips": [list(c) for c in clips],
        "labels": labels,
    }
    if probs is not None:
        classes = job.class_map["model"]
        record["probs"] = {str(c): probs[:, classes[c]].tolist() for c in labels}
        mean = probs.mean(axis=0)
        record["predicted"] = {"model_class": int(numpy.argmax(mean)), "mean_prob": float(mean.max())}
    record["evidence"] = {m: {str(c): evidence[m][row[c]].tolist() for c in labels} for m in recurrent}
    if want_pointing:
        record["pointing"] = _pointing(
            item,
            job,
            labels.index(point_label),
            maps,
            rnn,
            cnn,
            recurrent,
            frame_methods,
            indices,
            size_in,
            annotated,
        )
    if want_temporal and gt:
        classes = job.class_map["model"]
        rng = numpy.random.default_rng(random_seed(item.video_id, "temporal"))
        tl = sorted({int(g[0]) for g in gt})
        rec = protocols.temporal_record(
            {c: probs[:, classes[c]] for c in tl},
            {m: {c: evidence[m][row[c]] for c in tl} for m in recurrent},
            gt,
            clips,
            rng,
            pointing_curves=recurrent,
            ambiguous=[(s, e) for _, s, e in amb],
        )
        record.update(rec)
        record["gt_outside"] = outside
    record["seconds"] = {"decode": round(decode_seconds, 4), "ground": round(t_ground, 4)}
    kept = None
    if job.keep_maps:
        kept = {f"{m}.{c}": _downsample(maps[m][row[c]], job.map_size) for m in recurrent for c in labels}
        kept.update(
            {f"{m}.{point_label}": _downsample(maps[m][0], job.map_size) for m in frame_methods if m in maps}
        )
        if annotated:
            kept["annotated_frames"] = numpy.asarray(annotated, dtype=numpy.int64)  # frames of EB, cEB, BP
    return record, kept


def sample_frames(frames, fps, job):
    """In-memory frames sampled as :func:`ebr_ref.tools.video.read_frames` samples a video for ``job``.

    Parameters
    ----------
    frames : uint8 ndarray of shape (T, H, W, 3)
        Every frame of the video, as a decoder would give them.
    fps : float or None
        The frame rate (``info["fps"]`` of a decoded video).
    job : Job
        Its ``start``, ``every`` and ``max_frames``: frame ``k`` is kept when ``k >= start`` and
        ``(k - start) % every == 0``, the first ``max_frames`` of them.

    Returns
    -------
    frames : uint8 ndarray of shape (T', H, W, 3)
    info : dict
        ``fps``, ``indices`` (the kept frames' indices) and ``size`` ``(H, W)``, as ``read_frames`` gives.

    Raises
    ------
    ValueError
        For frames that are not ``(T, H, W, 3)`` uint8, or when no frame is kept.
    """
    frames = numpy.asarray(frames)
    if frames.dtype != numpy.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    indices = list(range(job.start, frames.shape[0], job.every))[: job.max_frames]
    if not indices:
        raise ValueError(f"no frame kept of {frames.shape[0]} (start={job.start}, every={job.every})")
    info = {"fps": fps, "indices": indices, "size": tuple(int(v) for v in frames.shape[1:3])}
    return frames[indices], info


def clip_record(item, job, frames, fps, ambiguous=()):
    """The record :func:`run_video` computes for ``item``, from in-memory frames instead of its file.

    The same analysis (:func:`analyse_frames`) on frames that were never encoded, so that scores on
    a dataset's decoded videos can be compared with scores on the frames they were encoded from
    (``benchmarks/decoded_vs_memory.py``). Nothing is written; a problem raises. The record carries
    the item's key and digest like a decoded one: never put it into a results store, where a rerun
    would take it for the video's own result.

    Parameters
    ----------
    item : ebr_ref.evaluation.datasets.VideoItem
        Its ground truth is used; its file is not read.
    job : Job
        As planned for the dataset (:func:`ebr_ref.pipeline.plan_evaluation`).
    frames : uint8 ndarray of shape (T, H, W, 3)
        Every frame of the video; sampled with :func:`sample_frames`.
    fps : float or None
        The frame rate when ``item.fps`` is None.
    ambiguous : sequence of (start_sec, end_sec)

    Returns
    -------
    dict
        The record, stamped as a stored one (:func:`stamp`); maps are not kept.
    """
    started = time.perf_counter()
    frames, info = sample_frames(frames, fps, job)
    record, _ = analyse_frames(item, job, frames, info, ambiguous)
    return stamp(record, item, job, ambiguous, started)


def _pointing(item, job, k, maps, rnn, cnn, recurrent, frame_methods, indices, size_in, annotated):
    """Table 1 rows of one video: centre, random, then every method (target ``k``: the boxes' class).

    The maps of the per-frame methods cover the ``annotated`` frames only.
    """
    base = rnn if rnn is not None else cnn
    boxes = {}

    def geometry(model):
        size = _size(model)
        if size not in boxes:
            boxes[size] = _boxes_for(item, indices, size_in, size, job.fit)
        tol = job.tolerance if job.tolerance is not None else protocols.paper_tolerance(size)
        return boxes[size], size, tol

    b, size, tol = geometry(base)
    rng = numpy.random.default_rng(random_seed(item.video_id, "pointing"))
    rows = {
        "centre": protocols.centre_point_outcomes(b, size, tol),
        "random": protocols.random_point_outcomes(b, size, tol, rng),
    }
    for m in frame_methods + recurrent:
        b, size, tol = geometry(cnn if m in frame_methods else rnn)
        if m in frame_methods and not annotated:
            rows[m] = numpy.zeros(len(b), dtype=numpy.int8)
            continue
        if maps[m].ndim != 4:
            raise ValueError(
                f"the read-out layer of {m} gives no spatial map (shape {maps[m].shape[2:]}); "
                "choose a convolutional layer"
            )
        if m in frame_methods:
            out = numpy.zeros(len(b), dtype=numpy.int8)
            out[annotated] = pointing_game(maps[m][0], [b[j] for j in annotated], size, tol)
            rows[m] = out
        else:
            rows[m] = pointing_game(maps[m][k], b, size, tol)
    return {name: protocols.pointing_entry(o) for name, o in rows.items()}


def failed_record(error, tb=None):
    """The body of a failed video's record."""
    msg = " ".join(str(error).split()) or type(error).__name__
    return {"status": "failed", "error": {"type": type(error).__name__, "message": msg, "traceback": tb}}


def stamp(record, item, job, ambiguous, started):
    """Add the fields every record has (ids, run key, ground-truth digest, worker, times)."""
    record.update(
        {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "ebr_ref": __version__,
            "video_id": item.video_id,
            "key": job.key,
            "item_digest": item_digest(item, ambiguous),
            "worker": {"host": socket.gethostname(), "pid": os.getpid()},
            "finished": time.time(),
            "wall_s": round(time.perf_counter() - started, 4),
        }
    )
    record.setdefault("status", "ok")
    record.setdefault("error", None)
    return record


def run_video(item, ambiguous, job):
    """The task: compute one video's record and write it to the store; return a small summary.

    Parameters
    ----------
    item : ebr_ref.evaluation.datasets.VideoItem
    ambiguous : sequence of (start_sec, end_sec)
        The video's ambiguous segments (THUMOS14).
    job : Job

    Returns
    -------
    dict
        ``video_id``, ``status`` ("ok" or "failed"), ``error`` (one line or None), ``seconds``.
    """
    started = time.perf_counter()
    maps = None
    try:
        record, maps = analyse_video(item, job, ambiguous)
    except Exception as e:  # the video's own failure: recorded, the run goes on
        record = failed_record(e, traceback.format_exc(limit=-4))
    record = stamp(record, item, job, ambiguous, started)
    Store(job.store).write_record(record, maps)
    err = record["error"]
    return {
        "video_id": item.video_id,
        "status": record["status"],
        "error": None if err is None else f"{err['type']}: {err['message']}",
        "seconds": record["wall_s"],
    }
