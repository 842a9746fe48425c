"""Localise, score and write the outputs of a grounding run (shared by ``demo``, ``ground`` and ``caption``).

One *item* is one grounded target (a class, or a word of a caption): its signed
maps ``(T, h, w)`` (or ``(T, D)`` at a flat read-out layer), its evidence
``S (T,)``, optional ground truth (an inclusive interval and per-frame boxes)
and the probability of the target per step. For every item the output folder
receives

* ``<tag>_overlay.gif`` and ``<tag>_overlay.mp4`` (MP4 when imageio-ffmpeg is
  installed): the frames with the heatmap, the map's peak, and a timeline
  strip (evidence per frame, ground truth in green, detection in white);
* ``<tag>_frames.png``: a contact sheet of every frame with its heatmap;

and, for all items together, ``evidence.png`` (per-frame evidence with the
detected segment against the ground truth), ``summary.png`` (per target a row
of evenly spaced frames with their heatmaps, above the evidence plot: paper
Fig. 5 style), ``results.json`` and ``results.npz``.
"""

from __future__ import annotations

import json
import os
import re

import numpy

from .. import __version__
from ..evaluation.metrics import temporal_iou
from ..evaluation.localize import ground_known_length, ground_unknown_length, pointing_game, temporal_pointing_hit
from ._common import UserError, jsonable

__all__ = ["analyse", "write_outputs", "print_summary", "tag_of"]


def tag_of(prefix, index, name):
    """A file-name tag such as ``class-3-bounce``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "x"
    return f"{prefix}-{index}-{safe}"[:80]


def analyse(item, input_size):
    """Add temporal grounding, pointing-game and ground-truth scores to one item (a dict), in place."""
    S = numpy.asarray(item["evidence"], dtype=numpy.float64)
    T = S.shape[0]
    if numpy.all(numpy.isfinite(S)):
        item["detected"] = ground_unknown_length(S)
        item["peak_frame"] = int(numpy.argmax(S))
    else:
        item["detected"], item["peak_frame"] = None, None
    gt = item.get("gt")
    if gt is not None:
        gt = (int(gt[0]), min(int(gt[1]), T - 1))
        item["gt"] = gt
        if gt[0] >= T:
            raise UserError(f"ground-truth interval {gt} starts after the clip's last frame ({T - 1})")
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
        item["pointing"] = {"hits": hits, "misses": misses,
                            "accuracy": hits / (hits + misses) if hits + misses else None,
                            "per_frame": outcome.tolist()}
    return item


def _write(console, what, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        raise UserError(f"writing {what}: {e.strerror or e}") from None


def write_outputs(out, display, items, *, console, fps=4.0, scale="clip", mp4=True, results=None, arrays=None,
                  title=""):
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
            kw = dict(gt=it.get("gt"), detected=it.get("detected"), scale=scale)
            frames = it.get("display", display)  # an item may carry its own clip (the demo's caption part)
            anim = viz.annotate_frames(frames, it["maps"], it["evidence"], title=it["name"], **kw)
            own["gif"] = _write(console, "the GIF", viz.write_gif, os.path.join(out, f"{it['tag']}_overlay.gif"),
                                anim, fps)
            bar.update(1)
            if mp4:
                p = _write(console, "the MP4", viz.write_mp4, os.path.join(out, f"{it['tag']}_overlay.mp4"), anim, fps)
                if p is not None:
                    own["mp4"] = p
                bar.update(1)
            sheet = viz.contact_sheet(frames, it["maps"], it["evidence"], title=f"{title}  {it['name']}".strip(), **kw)
            own["contact_sheet"] = _write(console, "the contact sheet", viz.write_png,
                                          os.path.join(out, f"{it['tag']}_frames.png"), sheet)
            bar.update(1)
        files[it["tag"]] = own
    panels = [{"name": _panel_title(it), "evidence": it["evidence"], "detected": it.get("detected"),
               "gt": it.get("gt"), "prob": it.get("prob")} for it in items]
    files["evidence_plot"] = _write(console, "the evidence plot", viz.evidence_plot,
                                    os.path.join(out, "evidence.png"), panels, title=title)
    if spatial:
        rows = [{"name": _panel_title(it), "frames": it.get("display", display), "maps": it["maps"],
                 "gt": it.get("gt"), "detected": it.get("detected"), "scale": scale} for it in items]
        files["summary"] = _write(console, "the summary figure", viz.write_png, os.path.join(out, "summary.png"),
                                  viz.summary_figure(rows, files["evidence_plot"]))
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
        results["files"] = {k: ({kk: os.path.basename(vv) for kk, vv in v.items()} if isinstance(v, dict)
                                else os.path.basename(v)) for k, v in files.items()}
        results.setdefault("ebr_ref_version", __version__)
        _write(console, "results.json", _dump_json, path, results)
    return files


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
    keys = ("tag", "name", "index", "detected", "peak_frame", "gt", "iou", "detected_known_length",
            "iou_known_length", "temporal_pointing_hit", "pointing", "word_step")
    out = {k: it[k] for k in keys if k in it}
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
        hit = "-" if it.get("temporal_pointing_hit") is None else ("yes" if it["temporal_pointing_hit"] else "no")
        p = it.get("pointing")
        pt = "-" if p is None or p["accuracy"] is None else f"{p['hits']}/{p['hits'] + p['misses']} ({p['accuracy']:.0%})"
        rows.append((it["name"], det, gt, iou, hit, pt))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        console.info("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    names = []
    for k, v in files.items():
        names.extend(os.path.basename(p) for p in (v.values() if isinstance(v, dict) else [v]))
    console.info(f"wrote {len(names)} files to {out}: {', '.join(names)}")
