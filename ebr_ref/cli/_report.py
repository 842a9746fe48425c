"""Localise, score and write the outputs of a grounding run (shared by ``demo``, ``ground`` and ``caption``).

One *item* is one grounded target (a class, or a word of a caption): its signed
maps ``(T, h, w)`` (or ``(T, D)`` at a flat read-out layer), its evidence
``S (T,)``, optional ground truth (an inclusive interval and per-frame boxes)
and the probability of the target per step. For every item the output folder
receives

* ``<tag>_overlay.gif`` and ``<tag>_overlay.mp4`` (MP4 when imageio-ffmpeg is
  installed): the frames with the heatmap, the map's peak (coloured by the
  pointing game where boxes are given), a timeline strip (evidence per frame,
  ground truth in green, detection in orange) and a legend;
* ``<tag>_frames.png``: a contact sheet of every frame with its heatmap, with a legend;

and, for all items together, ``evidence.png`` (per-frame evidence with the
detected segment against the ground truth, a legend per panel), ``summary.png``
(its title and legend, per target a row of evenly spaced frames with their
heatmaps, always including the frame of the largest evidence, above the
evidence plot: paper Fig. 5 style), ``results.json`` and ``results.npz``.
Every picture explains its own marks; :func:`notes` says in words what the
summary table cannot (a peak outside the ground truth, evidence that is
numerically zero).
"""

from __future__ import annotations

import json
import os
import re

import numpy

from .. import __version__
from ..evaluation.localize import (
    ground_known_length,
    ground_unknown_length,
    pointing_game,
    temporal_pointing_hit,
)
from ..evaluation.metrics import temporal_iou
from ..models.io import signals_held
from ..tools.viz import ZERO_RTOL, evidence_scale, numerically_zero
from ._common import UserError, jsonable

__all__ = ["analyse", "write_outputs", "print_summary", "tag_of", "word_tag", "notes"]


def tag_of(prefix, index, name):
    """A file-name tag such as ``class-3-bounce``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "x"
    return f"{prefix}-{index}-{safe}"[:80]


def word_tag(steps, word):
    """The tag of a grounded caption word, the same in ``caption`` and ``demo``: ``word-<position>-<word>``.

    ``steps`` are the caption positions (0-based) the word was seeded at: one
    position (``word-2-slides``), or several joined by ``_`` when a word queried
    by its text occurs more than once (``word-0_4-a``).
    """
    return tag_of("word", "_".join(str(int(k)) for k in steps), word)


def analyse(item, input_size):
    """Add temporal grounding, pointing-game and ground-truth scores to one item (a dict), in place."""
    S = numpy.asarray(item["evidence"], dtype=numpy.float64)
    T = S.shape[0]
    if numpy.all(numpy.isfinite(S)):
        item["detected"] = ground_unknown_length(S)
        item["peak_frame"] = int(numpy.argmax(S))
        m = numpy.asarray(item["maps"], dtype=numpy.float64)
        scale = evidence_scale(m) if numpy.all(numpy.isfinite(m)) else None
        item["zero_frames"] = numerically_zero(S, scale=scale)
    else:
        item["detected"], item["peak_frame"] = None, None
    gt = item.get("gt")
    if gt is not None:
        gt = (int(gt[0]), int(gt[1]))
        item["gt"] = gt
        if gt[1] >= T:
            raise UserError(
                f"ground-truth interval [{gt[0]}, {gt[1]}] ends after the clip's last frame ({T - 1})"
            )
        if item["detected"] is not None:
            item["iou"] = temporal_iou(item["detected"], gt)
            L = gt[1] - gt[0] + 1
            item["detected_known_length"] = ground_known_length(S, L)
            item["iou_known_length"] = temporal_iou(item["detected_known_length"], gt)
            item["temporal_pointing_hit"] = temporal_pointing_hit(S, gt)
    boxes = item.get("boxes")
    maps = numpy.asarray(item["maps"])
    if boxes is not None and maps.ndim == 3 and numpy.all(numpy.isfinite(maps)):
        outcome = pointing_game(maps, boxes, input_size)
        hits, misses = int((outcome == 1).sum()), int((outcome == -1).sum())
        item["pointing"] = {
            "hits": hits,
            "misses": misses,
            "accuracy": hits / (hits + misses) if hits + misses else None,
            "per_frame": outcome.tolist(),
        }
    return item


def _runs(frames):
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out, k = [], 0
    while k < len(frames):
        j = k
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + 1:
            j += 1
        out.append(str(frames[k]) if j == k else f"{frames[k]}-{frames[j]}")
        k = j + 1
    return ", ".join(out)


def notes(items):
    """Plain-language notes on what a reader sees in the table and the pictures (one line each)."""
    lines = []
    for it in items:
        name = it["name"]
        T = len(it["evidence"])
        peak, gt = it.get("peak_frame"), it.get("gt")
        if peak is not None and gt is not None and not gt[0] <= peak <= gt[1]:
            off = gt[0] - peak if peak < gt[0] else peak - gt[1]
            side = "before" if peak < gt[0] else "after"
            frames = f"{off} frame{'s' * (off != 1)}"
            lines.append(
                f"{name}: the largest evidence S is at frame {peak}, {frames} {side} its ground "
                f"truth [{gt[0]}, {gt[1]}] ('peak in GT: no'); the evidence plot marks it"
            )
        zero = it.get("zero_frames") or []
        if zero:
            det = it.get("detected")
            inside = sum(1 for t in zero if det is not None and det[0] <= t <= det[1])
            extra = f"; {inside} of them lie in the detected segment" if inside else ""
            lines.append(
                f"{name}: S is numerically zero (|S| <= {ZERO_RTOL:g} x the largest sum |map| of a "
                f"frame) on {len(zero)} of {T} frames ({_runs(zero)}): no evidence either way "
                f"there{extra} (hatched grey in the evidence plot)"
            )
    return lines


def _write(console, what, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        raise UserError(f"writing {what}: {e.strerror or e}") from None


def write_outputs(
    out, display, items, *, console, fps=4.0, scale="clip", mp4=True, results=None, arrays=None, title=""
):
    """Write every picture and the results files; return ``{item tag: {kind: path}}`` plus the shared files.

    Parameters
    ----------
    out : str
        An existing, writable folder.
    display : uint8 ndarray of shape (T, H, W, 3)
        The frames the model saw.
    items : list of dict
        Analysed items (:func:`analyse`), each with ``tag`` and ``name``.
    results : dict
        The JSON document (written as ``results.json``; ``files`` is added).
    arrays : dict of str to ndarray
        Written to ``results.npz`` (see docs/cli.md for the keys).
    """
    from ..tools import viz

    files = {}
    spatial = all(numpy.asarray(it["maps"]).ndim == 3 for it in items)
    bar = console.progress(total=len(items) * (2 + int(mp4)) + 1, desc="writing outputs")
    for it in items:
        own = {}
        if spatial:
            pointing = (it.get("pointing") or {}).get("per_frame")
            kw = dict(gt=it.get("gt"), detected=it.get("detected"), scale=scale, pointing=pointing)
            frames = it.get("display", display)  # an item may carry its own clip (the demo's caption part)
            anim = viz.annotate_frames(frames, it["maps"], it["evidence"], title=it["name"], **kw)
            own["gif"] = _write(
                console, "the GIF", viz.write_gif, os.path.join(out, f"{it['tag']}_overlay.gif"), anim, fps
            )
            bar.update(1)
            if mp4:
                p = _write(
                    console,
                    "the MP4",
                    viz.write_mp4,
                    os.path.join(out, f"{it['tag']}_overlay.mp4"),
                    anim,
                    fps,
                )
                if p is not None:
                    own["mp4"] = p
                bar.update(1)
            head = f"{it['name']}  |  {title}" if title else it["name"]
            sheet = viz.contact_sheet(frames, it["maps"], it["evidence"], title=head, **kw)
            own["contact_sheet"] = _write(
                console,
                "the contact sheet",
                viz.write_png,
                os.path.join(out, f"{it['tag']}_frames.png"),
                sheet,
            )
            bar.update(1)
        files[it["tag"]] = own
    with signals_held():  # matplotlib's weakref callbacks: see _plots
        _plots(console, out, files, items, display, scale, spatial, title)
    bar.update(1)
    bar.close()
    if arrays is not None:
        path = os.path.join(out, "results.npz")
        _write(console, "results.npz", _savez, path, arrays)
        files["npz"] = path
    if results is not None:
        path = os.path.join(out, "results.json")
        files["json"] = path
        results = dict(results)
        results["files"] = {
            k: (
                {kk: os.path.basename(vv) for kk, vv in v.items()}
                if isinstance(v, dict)
                else os.path.basename(v)
            )
            for k, v in files.items()
        }
        results.setdefault("ebr_ref_version", __version__)
        _write(console, "results.json", _dump_json, path, results)
    return files


def _plots(console, out, files, items, display, scale, spatial, title):
    """``evidence.png`` and ``summary.png``.

    Run with SIGINT and SIGTERM held back, and the garbage collected before they
    are let through: matplotlib frees its figures through weakref callbacks, and
    the exception a signal raises inside such a callback (Ctrl-C, or SIGTERM,
    which the command line turns into an exception) would be printed as an
    ignored traceback instead of stopping the run.
    """
    import gc
    import io

    from ..tools import viz

    panels = [
        {
            "name": _panel_title(it),
            "evidence": it["evidence"],
            "detected": it.get("detected"),
            "gt": it.get("gt"),
            "prob": it.get("prob"),
            "zero": it.get("zero_frames"),
        }
        for it in items
    ]
    files["evidence_plot"] = _write(
        console,
        "the evidence plot",
        viz.evidence_plot,
        os.path.join(out, "evidence.png"),
        panels,
        title=title,
    )
    if spatial:
        rows = [
            {
                "name": _panel_title(it),
                "frames": it.get("display", display),
                "maps": it["maps"],
                "gt": it.get("gt"),
                "detected": it.get("detected"),
                "scale": scale,
                "pointing": (it.get("pointing") or {}).get("per_frame"),
                "largest": it.get("peak_frame"),
            }
            for it in items
        ]
        plot = viz.evidence_plot(io.BytesIO(), panels)  # untitled: the summary's title is at its top
        plot.seek(0)
        files["summary"] = _write(
            console,
            "the summary figure",
            viz.write_png,
            os.path.join(out, "summary.png"),
            viz.summary_figure(rows, plot, title=title),
        )
    gc.collect()


def _savez(path, arrays):
    with open(path, "wb") as f:
        numpy.savez(f, **arrays)


def _dump_json(path, doc):
    with open(path, "w") as f:
        json.dump(jsonable(doc), f, indent=1)
        f.write("\n")


def _panel_title(it):
    parts = [it["name"]]
    if it.get("detected") is not None:
        parts.append(f"detected [{it['detected'][0]}, {it['detected'][1]}]")
    if it.get("gt") is not None:
        parts.append(f"ground truth [{it['gt'][0]}, {it['gt'][1]}]")
        if it.get("iou") is not None:
            parts.append(f"IoU {it['iou']:.2f}")
    if it.get("pointing") is not None and it["pointing"]["accuracy"] is not None:
        p = it["pointing"]
        parts.append(f"pointing {p['hits']}/{p['hits'] + p['misses']}")
    return "  |  ".join(parts)


def item_json(it):
    """The JSON entry of one item (no large arrays except the evidence)."""
    keys = (
        "tag",
        "name",
        "index",
        "detected",
        "peak_frame",
        "gt",
        "iou",
        "detected_known_length",
        "iou_known_length",
        "temporal_pointing_hit",
        "pointing",
        "word_step",
        "object",
    )
    out = {k: it[k] for k in keys if k in it}
    if "zero_frames" in it:
        out["zero_evidence_frames"] = list(it["zero_frames"])
    out["evidence"] = numpy.asarray(it["evidence"]).tolist()
    if it.get("prob") is not None:
        out["prob"] = numpy.asarray(it["prob"]).tolist()
    return out


def print_summary(console, items, files, out):
    """The table printed at the end of ``demo``, ``ground`` and ``caption``."""
    rows = [("target", "detected", "ground truth", "IoU", "peak in GT", "pointing hits")]
    for it in items:
        det = "-" if it.get("detected") is None else f"[{it['detected'][0]}, {it['detected'][1]}]"
        gt = "-" if it.get("gt") is None else f"[{it['gt'][0]}, {it['gt'][1]}]"
        iou = "-" if it.get("iou") is None else f"{it['iou']:.2f}"
        hit = (
            "-"
            if it.get("temporal_pointing_hit") is None
            else ("yes" if it["temporal_pointing_hit"] else "no")
        )
        p = it.get("pointing")
        pt = (
            "-"
            if p is None or p["accuracy"] is None
            else f"{p['hits']}/{p['hits'] + p['misses']} ({p['accuracy']:.0%})"
        )
        rows.append((it["name"], det, gt, iou, hit, pt))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        console.info("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    for line in notes(items):
        console.info(_wrap(f"note: {line}"))
    console.info(files_line(files, out))


def _wrap(text, width=100):
    """One message as lines of at most ``width`` characters, continuation lines indented."""
    import textwrap

    return textwrap.fill(
        text, width=width, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False
    )


def files_line(files, out):
    """``wrote N files to OUT: ...``: the shared files, then each per-target kind once, with the tags."""
    shared, per, tags = [], [], []
    for key, v in files.items():
        if isinstance(v, dict):
            tags.append(key)
            for p in v.values():
                kind = os.path.basename(p)[len(key) :]
                if kind not in per:
                    per.append(kind)
        else:
            shared.append(os.path.basename(v))
    n = len(shared) + sum(len(v) for v in files.values() if isinstance(v, dict))
    line = f"wrote {n} files to {out}: {', '.join(shared)}"
    if tags and per:
        line += f"; per target {', '.join('TAG' + k for k in per)} for TAG = {', '.join(tags)}"
    return _wrap(line)
