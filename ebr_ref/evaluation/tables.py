"""Paper Tables 1-3 and the Fig. 6 analogue from per-video records, and their rendering.

Records are the dicts that :mod:`ebr_ref.evaluation.protocols` builds (one per
video or synthetic clip); every table here is a function of the records alone,
in their order, so the in-memory synthetic benchmark and a dataset run stored
on disk share one implementation. A record may carry:

``group``
    The column it counts in (a clip kind, a GT length); ``None`` when the
    tables have no per-group columns.
``label``
    Its class (Table 1's mean over classes).
``pointing``
    ``{row: {"hits": int, "misses": int, ...}}`` (Table 1).
``evidence_split``
    ``{row: [[mean S inside, mean S outside], ...]}`` (Fig. 6 analogue).
``video_id``, ``gt``, ``ambiguous``, ``detections``
    Table 2: ``gt`` ``[[label, start, end], ...]``, ``detections``
    ``{"known" | "unknown": {row: [[label, start, end, score], ...]}}``.
``temporal_pointing``
    ``[{"label", "segment", "values": {row: bool or float}}, ...]`` (Table 3).

Tables are plain dicts; :func:`to_json` and :func:`to_csv` serialise them and
the ``markdown_*`` functions render their bodies (the caller writes captions).
"""

from __future__ import annotations

import csv
import io

import numpy

from .metrics import Detection, Segment, mean_average_precision

__all__ = [
    "ALL",
    "FRAMES",
    "CLASS_MEAN",
    "pointing_table",
    "evidence_table",
    "detection_table",
    "temporal_pointing_table",
    "markdown_pointing",
    "markdown_evidence",
    "markdown_detection",
    "markdown_temporal_pointing",
    "pct",
    "to_json",
    "to_csv",
]

ALL = "all"
FRAMES = "frames"
CLASS_MEAN = "class mean"


def _rows_in_order(dicts):
    """The union of the keys of ``dicts``, in order of first appearance."""
    return list(dict.fromkeys(k for d in dicts for k in d))


def _ratio(h, n):
    return h / n if n else None


# ----------------------------------------------------------------------------- Table 1


def pointing_table(records, groups=(), *, class_mean=False):
    """Spatial pointing accuracy ``hits / (hits + misses)`` per row (paper §5.1, Table 1).

    Parameters
    ----------
    records : sequence of dict
        With ``pointing`` (records without it are left out), ``group`` and, for
        ``class_mean``, ``label``.
    groups : sequence
        Groups that get a column of their own (records of other groups count in
        ``all`` only).
    class_mean : bool
        Add ``CLASS_MEAN``: the mean over classes of each class's accuracy.

    Returns
    -------
    dict
        ``{row: {group: accuracy, ..., "all": accuracy, "frames": annotated frames}}``;
        an accuracy is None when no frame counts. Rows in order of first appearance.
    """
    recs = [r for r in records if r.get("pointing")]
    out = {}
    for row in _rows_in_order(r["pointing"] for r in recs):
        counts = {}  # key -> [hits, hits + misses]
        for r in recs:
            e = r["pointing"].get(row)
            if e is None:
                continue
            keys = [ALL] + ([r.get("group")] if r.get("group") in groups else [])
            if class_mean:
                keys.append(("label", r.get("label")))
            for k in keys:
                c = counts.setdefault(k, [0, 0])
                c[0] += int(e["hits"])
                c[1] += int(e["hits"]) + int(e["misses"])
        acc = {g: _ratio(*counts.get(g, (0, 0))) for g in groups}
        acc[ALL] = _ratio(*counts.get(ALL, (0, 0)))
        acc[FRAMES] = counts.get(ALL, (0, 0))[1]
        if class_mean:
            per = [_ratio(*v) for k, v in counts.items() if isinstance(k, tuple) and v[1]]
            acc[CLASS_MEAN] = float(numpy.mean(per)) if per else None
        out[row] = acc
    return out


def evidence_table(records, groups=()):
    """Mean evidence inside and outside the ground truth per row (the analogue of the paper's Fig. 6).

    Returns
    -------
    dict
        ``{row: {group: (mean inside, mean outside, share of pairs with inside > outside), ...,
        "all": (...)}}``; means over the pairs (one per clip and class) of each column; None for a
        column without pairs.
    """
    recs = [r for r in records if r.get("evidence_split")]
    out = {}
    for row in _rows_in_order(r["evidence_split"] for r in recs):
        pairs = {}
        for r in recs:
            for pair in r["evidence_split"].get(row, ()):
                for k in [ALL] + ([r.get("group")] if r.get("group") in groups else []):
                    pairs.setdefault(k, []).append(pair)
        cols = {}
        for k in list(groups) + [ALL]:
            if k not in pairs:
                cols[k] = None
                continue
            a = numpy.array(pairs[k], dtype=numpy.float64)  # (pairs, 2)
            cols[k] = (a[:, 0].mean(), a[:, 1].mean(), float(numpy.mean(a[:, 0] > a[:, 1])))
        out[row] = cols
    return out


# ----------------------------------------------------------------------------- Table 2


def detection_table(records, columns, *, inclusive=True, matching="score", interpolation="none"):
    """Temporal detection mAP per row, known and unknown length (paper §5.2, Table 2; Table 4 at IoU 0.1).

    Parameters
    ----------
    records : sequence of dict
        With ``video_id``, ``gt``, ``detections`` (records without ``gt`` are left
        out), optionally ``ambiguous`` and ``group``.
    columns : sequence of (key, group, alpha)
        One column per entry: the records of ``group`` (None: every record), at
        IoU threshold ``alpha``.
    inclusive, matching, interpolation
        See :func:`ebr_ref.evaluation.metrics.mean_average_precision`.

    Returns
    -------
    dict
        ``{("known" | "unknown", row): {key: (mAP, mean detected length in frames)}}``, known-length
        rows first; ``(None, None)`` for a column without ground truth.
    """
    recs = [r for r in records if r.get("gt")]
    out = {}
    for mode in ("known", "unknown"):
        for row in _rows_in_order(r["detections"][mode] for r in recs):
            cells = {}
            for key, group, alpha in columns:
                dets, gts, amb = [], [], []
                for r in recs:
                    if group is not None and r.get("group") != group:
                        continue
                    v = r["video_id"]
                    dets += [
                        Detection(v, int(c), int(s), int(e), float(sc))
                        for c, s, e, sc in r["detections"][mode].get(row, ())
                    ]
                    gts += [Segment(v, int(c), int(s), int(e)) for c, s, e in r["gt"]]
                    amb += [Segment(v, None, int(s), int(e)) for s, e in r.get("ambiguous", ())]
                if not gts:
                    cells[key] = (None, None)
                    continue
                m, _ = mean_average_precision(
                    dets,
                    gts,
                    alpha,
                    inclusive=inclusive,
                    matching=matching,
                    interpolation=interpolation,
                    ambiguous=amb,
                )
                lengths = [d.end - d.start + 1 for d in dets]
                cells[key] = (m, float(numpy.mean(lengths)) if lengths else None)
            out[(mode, row)] = cells
    return out


# ----------------------------------------------------------------------------- Table 3


def _mean(values):
    """The mean; exactly the common value when all values are equal (a pairwise sum can be 1 ulp off)."""
    first = values[0]
    if all(v == first for v in values):
        return float(first)
    return float(numpy.mean(values))


def temporal_pointing_table(records, groups=()):
    """Temporal pointing accuracy per row (paper §5.2, Table 3): the mean of the per-segment values.

    Returns
    -------
    dict
        ``{row: {group: mean, ..., "all": mean, "segments": n}}``, rows in order of first
        appearance (a hit counts 1, a miss 0; the expectation row averages its probabilities).
    """
    entries = [(r.get("group"), e) for r in records for e in r.get("temporal_pointing", ())]
    out = {}
    for row in _rows_in_order(e["values"] for _, e in entries):
        vals = {}
        for g, e in entries:
            if row in e["values"]:
                for k in [ALL] + ([g] if g in groups else []):
                    vals.setdefault(k, []).append(e["values"][row])
        cells = {k: _mean(vals[k]) if k in vals else None for k in list(groups) + [ALL]}
        cells["segments"] = len(vals.get(ALL, ()))
        out[row] = cells
    return out


# ----------------------------------------------------------------------------- rendering


def pct(v, digits=1):
    """A fraction as a percentage with ``digits`` decimals; ``-`` for None."""
    return "-" if v is None else f"{100 * v:.{digits}f}"


def _line(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _rule(n):
    return "|" + "---|" * n


def markdown_pointing(table, columns, labels=None):
    """Markdown lines of Table 1: ``columns`` is a sequence of (key, header)."""
    labels = labels or {}
    lines = [_line(["method"] + [h for _, h in columns]), _rule(len(columns) + 1)]
    for row, acc in table.items():
        cells = [acc.get(k) if k == FRAMES else pct(acc.get(k)) for k, _ in columns]
        lines.append(_line([labels.get(row, row)] + cells))
    return lines


def markdown_evidence(table, columns, names=("S(GT)", "S(rand)", "GT > rand"), labels=None):
    """Markdown lines of the Fig. 6 analogue: per column key its header prefix, three cells each (x 100)."""
    labels = labels or {}
    head = []
    for _, h in columns:
        head += [f"{h}: {names[0]}" if h else names[0], names[1], names[2]]
    lines = [_line(["method"] + head), _rule(len(head) + 1)]
    for row, cols in table.items():
        cells = []
        for key, _ in columns:
            if cols.get(key) is None:
                cells += ["-", "-", "-"]
                continue
            g, r, share = cols[key]
            cells += [f"{100 * g:.2f}", f"{100 * r:.2f}", pct(share)]
        lines.append(_line([labels.get(row, row)] + cells))
    return lines


def markdown_detection(table, columns, labels=None):
    """Markdown lines of Table 2: ``columns`` (key, header); unknown-length cells add the mean length."""
    labels = labels or {}
    lines = [_line(["length", "method"] + [h for _, h in columns]), "|---|---|" + "---|" * len(columns)]
    for (mode, row), cells in table.items():
        out = []
        for key, _ in columns:
            m, length = cells.get(key, (None, None))
            out.append(pct(m) + ("" if mode == "known" or length is None else f" ({length:.0f})"))
        lines.append(_line([mode, labels.get(row, row)] + out))
    return lines


def markdown_temporal_pointing(table, columns, labels=None):
    """Markdown lines of Table 3: ``columns`` (key, header)."""
    labels = labels or {}
    lines = [_line(["method"] + [h for _, h in columns]), _rule(len(columns) + 1)]
    for row, cells in table.items():
        lines.append(
            _line(
                [labels.get(row, row)]
                + [cells.get(k) if k == "segments" else pct(cells.get(k)) for k, _ in columns]
            )
        )
    return lines


def _plain(v):
    if isinstance(v, (numpy.floating, numpy.integer)):
        return v.item()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def to_json(tables):
    """A JSON-able copy of ``{"table1": ..., "fig6": ..., "table2": ..., "table3": ...}`` (any of them).

    Table 2's ``(mode, row)`` keys become ``"mode | row"``; every other key becomes a string.
    """
    out = {}
    for name, table in tables.items():
        if table is None:
            out[name] = None
            continue
        t = {}
        for row, cells in table.items():
            rk = " | ".join(row) if isinstance(row, tuple) else str(row)
            t[rk] = {str(k): _plain(v) for k, v in cells.items()}
        out[name] = t
    return out


def to_csv(tables):
    """Every cell of the tables as CSV rows ``table,row,column,value[,value2,value3]`` (one string)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "column", "value", "value2", "value3"])
    for name, table in to_json(tables).items():
        for row, cells in (table or {}).items():
            for col, v in cells.items():
                vals = v if isinstance(v, list) else [v]
                w.writerow(
                    [name, row, col]
                    + ["" if x is None else repr(x) if isinstance(x, float) else x for x in vals]
                )
    return buf.getvalue()
