"""Per-video analysis for the paper's protocols: a video's grounding results and ground truth -> a record.

Paper §4.1 and §5 (Bargal et al., CVPR 2018). One video gives one record (a dict
of plain numbers and lists, JSON-able once :func:`jsonable` has run); the tables
of :mod:`ebr_ref.evaluation.tables` are computed from records only. The same
functions serve the in-memory synthetic benchmark
(``benchmarks/synthetic_tables.py``) and the dataset pipeline
(:mod:`ebr_ref.pipeline`).

Conventions
-----------
* Frames are the *analysed* frames of the video (after sampling), 0-based;
  intervals are inclusive, as in :mod:`ebr_ref.evaluation.localize`.
* A video is processed in consecutive *clips* ``(a, b)`` (inclusive) of at most
  ``clip_length`` frames (the paper divides THUMOS14 videos into 128-frame
  clips, §5.2); curves (evidence ``S``, probability ``p``) are concatenated
  over the clips.
* Table 1 (spatial pointing game, §5.1): per row (a method or a baseline) the
  per-frame outcomes ``+1`` hit, ``-1`` miss, ``0`` not annotated.
* Table 2 (detection, §5.2): the label is known. *Known length*: for every
  ground-truth segment of length ``L``, the window of ``min(L, clip length)``
  frames with the largest sum of ``S`` inside the clip that holds the
  segment's centre frame. *Unknown length*: for every clip and every class
  with a segment overlapping that clip, the §4.1 anchor-and-grow window
  inside the clip. A detection is scored by the mean of ``S`` over its window
  (the mean probability for the probability baseline, whose ``S`` is +1
  where ``p >= 0.5`` and -1 elsewhere, the paper's thresholding).
* Table 3 (temporal pointing game, §5.2): per ground-truth segment, in the
  clip that holds its centre frame: a hit when the first maximum of the curve
  over the clip lies in the segment. Rows: a uniformly random frame of the
  clip (drawn from the caller's generator), its expectation (the share of the
  clip the segment covers), the peak probability, each evidence curve, and
  each evidence curve plus the probability (both min-max scaled to [0, 1] over
  the clip, added with equal weights: our choice, the paper does not say).
* Fig. 6 analogue: per class, the mean ``S`` over the frames inside its
  segments and over the frames outside (when both exist).
"""

from __future__ import annotations

import math

import numpy

from .localize import (
    ground_known_length,
    ground_unknown_length,
    pointing_game,
    pointing_hit,
    temporal_pointing_hit,
)

__all__ = [
    "PROBABILITY",
    "RANDOM",
    "EXPECTED",
    "PEAK_PROBABILITY",
    "clip_bounds",
    "clip_of",
    "pointing_entry",
    "centre_point_outcomes",
    "random_point_outcomes",
    "evidence_split",
    "thresholded_probability",
    "minmax",
    "detections_known_length",
    "detections_unknown_length",
    "temporal_pointing",
    "temporal_record",
    "sampled_interval",
    "paper_tolerance",
    "jsonable",
]

PROBABILITY = "Probability"  # the thresholded-probability baseline of Table 2
RANDOM = "Random"  # Table 3: a uniformly random frame of the clip
EXPECTED = "Random (expected)"  # Table 3: the expectation of RANDOM
PEAK_PROBABILITY = "Peak probability"  # Table 3: the first maximum of the GT-class probability


def paper_tolerance(input_size):
    """The pointing tolerance (a diameter, px) for a network input: the paper's 15 px at 224 px, scaled.

    Examples
    --------
    >>> paper_tolerance((224, 224))
    15.0
    >>> round(paper_tolerance((64, 64)), 4)
    4.2857
    """
    return 15.0 * min(int(v) for v in input_size) / 224


def clip_bounds(T, clip_length):
    """Consecutive inclusive clips ``[(0, L - 1), (L, 2 L - 1), ...]`` covering ``T`` frames.

    Examples
    --------
    >>> clip_bounds(300, 128)
    [(0, 127), (128, 255), (256, 299)]
    """
    T, L = int(T), int(clip_length)
    if T < 1 or L < 1:
        raise ValueError(f"clip_bounds: need T >= 1 and clip_length >= 1, got T={T}, clip_length={L}")
    return [(a, min(a + L, T) - 1) for a in range(0, T, L)]


def clip_of(clips, frame):
    """The clip ``(a, b)`` of ``clips`` that holds ``frame``."""
    for a, b in clips:
        if a <= frame <= b:
            return a, b
    raise ValueError(f"clip_of: frame {frame} lies in none of the clips {clips[0]}..{clips[-1]}")


def _centre(s, e):
    return (int(s) + int(e)) // 2


# ----------------------------------------------------------------------------- Table 1


def pointing_entry(outcomes):
    """``{"hits", "misses", "outcomes"}`` of one row's per-frame outcomes (+1, -1, 0)."""
    o = numpy.asarray(outcomes, dtype=numpy.int8).reshape(-1)
    return {
        "hits": int(numpy.count_nonzero(o == 1)),
        "misses": int(numpy.count_nonzero(o == -1)),
        "outcomes": o.tolist(),
    }


def _annotated(boxes):
    """Per frame: its finite boxes ``(k, 4)``; a list for any of the forms pointing_game accepts."""
    if isinstance(boxes, (list, tuple)):
        rows = [numpy.asarray(b, dtype=numpy.float64).reshape(-1, 4) for b in boxes]
    else:
        rows = list(numpy.asarray(boxes, dtype=numpy.float64).reshape(-1, 4)[:, None, :])
    return [b[numpy.all(numpy.isfinite(b), axis=1)] for b in rows]


def centre_point_outcomes(boxes, input_size, tolerance):
    """Pointing outcomes of the centre pixel ``(W // 2, H // 2)`` on every frame (the "centre" baseline).

    Parameters
    ----------
    boxes : array of shape (T, 4), or a sequence of T arrays of shape (k, 4)
        As :func:`ebr_ref.evaluation.localize.pointing_game`.
    input_size : (int, int)
        ``(H, W)``.
    tolerance : float
        Diameter in pixels.

    Returns
    -------
    int8 array of shape (T,)
    """
    H, W = (int(v) for v in input_size)
    centre = numpy.zeros((len(_annotated(boxes)), H, W), dtype=numpy.float32)
    centre[:, H // 2, W // 2] = 1
    return pointing_game(centre, boxes, (H, W), tolerance)


def random_point_outcomes(boxes, input_size, tolerance, rng):
    """Pointing outcomes of a uniformly random pixel on every annotated frame (the "random" baseline).

    One draw ``rng.integers(0, (W, H), size=(n, 2))`` gives the ``(x, y)`` of the
    ``n`` annotated frames, in frame order.

    Returns
    -------
    int8 array of shape (T,)
        ``0`` on frames without boxes.
    """
    H, W = (int(v) for v in input_size)
    per = _annotated(boxes)
    idx = [t for t, b in enumerate(per) if b.shape[0]]
    pts = rng.integers(0, (W, H), size=(len(idx), 2)).astype(float)
    out = numpy.zeros(len(per), dtype=numpy.int8)
    for (x, y), t in zip(pts, idx, strict=True):
        out[t] = 1 if pointing_hit((x, y), per[t], tolerance) else -1
    return out


def evidence_split(S, inside):
    """``(mean S inside, mean S outside)`` in float64, or None when either part is empty (Fig. 6 analogue)."""
    S = numpy.asarray(S).astype(numpy.float64)
    inside = numpy.asarray(inside, dtype=bool)
    if not inside.any() or inside.all():
        return None
    return float(S[inside].mean()), float(S[~inside].mean())


# ----------------------------------------------------------------------------- Tables 2 and 3


def thresholded_probability(p):
    """The paper's probability baseline curve: +1 where ``p >= 0.5``, else -1 (§5.2)."""
    return numpy.where(numpy.asarray(p) >= 0.5, 1.0, -1.0)


def minmax(v):
    """``v`` scaled to [0, 1] by its minimum and maximum (all zeros for a constant ``v``)."""
    v = numpy.asarray(v, dtype=numpy.float64)
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else numpy.zeros_like(v)


def _detection(S, score, a, window):
    s, e = window
    return [int(a + s), int(a + e), float(numpy.mean(score[s : e + 1]))]


def detections_known_length(S, score, segments, clips):
    """Known-length detections: one per ground-truth segment (see the module notes).

    Parameters
    ----------
    S : array of shape (T,)
        The evidence (or the thresholded probability).
    score : array of shape (T,)
        The curve whose mean over the window scores the detection.
    segments : sequence of (start, end)
        The class's ground-truth segments, inclusive frames.
    clips : sequence of (a, b)

    Returns
    -------
    list of [start, end, score]
    """
    S, score = numpy.asarray(S, dtype=numpy.float64), numpy.asarray(score, dtype=numpy.float64)
    out = []
    for s, e in segments:
        a, b = clip_of(clips, _centre(s, e))
        L = min(int(e) - int(s) + 1, b - a + 1)
        out.append(_detection(S, score[a : b + 1], a, ground_known_length(S[a : b + 1], L)))
    return out


def detections_unknown_length(S, score, segments, clips):
    """Unknown-length detections: one per clip that a segment of the class overlaps (see the module notes)."""
    S, score = numpy.asarray(S, dtype=numpy.float64), numpy.asarray(score, dtype=numpy.float64)
    out = []
    for a, b in clips:
        if any(s <= b and e >= a for s, e in segments):
            out.append(_detection(S, score[a : b + 1], a, ground_unknown_length(S[a : b + 1])))
    return out


def temporal_pointing(p, curves, segment, clips, rng):
    """Table 3 values of one ground-truth segment: ``{row: bool}`` plus the random expectation.

    Parameters
    ----------
    p : array of shape (T,)
        The class's probability.
    curves : dict of str to array of shape (T,)
        Evidence curves; each gives a row and a "peak probability + <name>" row.
    segment : (start, end)
    clips : sequence of (a, b)
    rng : numpy.random.Generator
        One draw ``rng.integers(n)`` (``n`` frames in the clip).

    Returns
    -------
    dict
        Rows ``RANDOM``, ``EXPECTED`` (a float in [0, 1]), ``PEAK_PROBABILITY``, then per curve
        ``name`` and ``"Peak probability + name"``, in that order.
    """
    s, e = int(segment[0]), int(segment[1])
    a, b = clip_of(clips, _centre(s, e))
    n = b - a + 1
    rel = (s - a, e - a)
    t = int(rng.integers(n))
    p_clip = numpy.asarray(p, dtype=numpy.float64)[a : b + 1]
    values = {
        RANDOM: bool(s <= a + t <= e),
        EXPECTED: (min(e, b) - max(s, a) + 1) / n,
        PEAK_PROBABILITY: temporal_pointing_hit(p_clip, rel),
    }
    for name, S in curves.items():
        S_clip = numpy.asarray(S, dtype=numpy.float64)[a : b + 1]
        values[name] = temporal_pointing_hit(S_clip, rel)
        values[f"{PEAK_PROBABILITY} + {name}"] = temporal_pointing_hit(minmax(p_clip) + minmax(S_clip), rel)
    return values


def temporal_record(probs, curves, gt, clips, rng, *, pointing_curves=None, ambiguous=()):
    """The temporal part of a video's record: detections (Table 2), pointing (Table 3), the Fig. 6 split.

    Parameters
    ----------
    probs : dict of label to array of shape (T,)
        The probability of every ground-truth class of the video.
    curves : dict of str to (dict of label to array of shape (T,))
        Evidence ``S`` per method name and class.
    gt : sequence of (label, start, end)
        Ground-truth segments in analysed frames (inclusive), sorted as the caller wants them counted.
    clips : sequence of (a, b)
    rng : numpy.random.Generator
        For the random-frame row (one draw per segment, in ``gt`` order).
    pointing_curves : sequence of str, optional
        The methods of ``curves`` that get Table 3 rows (default: all).
    ambiguous : sequence of (start, end)
        Segments that count neither way in the detection mAP (THUMOS14).

    Returns
    -------
    dict
        ``gt``, ``ambiguous``, ``detections`` (``{"known" | "unknown": {row: [[label, start, end, score],
        ...]}}``, rows ``Probability`` then the methods), ``temporal_pointing`` (one entry per segment:
        ``label``, ``segment``, ``values``) and ``evidence_split`` (``{method: [[in, out], ...]}``, one pair
        per class that has frames inside and outside its segments).
    """
    pointing_curves = list(curves) if pointing_curves is None else list(pointing_curves)
    labels = list(dict.fromkeys(int(g[0]) for g in gt))
    seg_of = {c: [(int(s), int(e)) for lab, s, e in gt if int(lab) == c] for c in labels}
    T = clips[-1][1] + 1
    dets = {"known": {}, "unknown": {}}
    rows = [(PROBABILITY, None)] + [(m, m) for m in curves]
    for name, method in rows:
        for mode, fn in (("known", detections_known_length), ("unknown", detections_unknown_length)):
            out = []
            for c in labels:
                p = numpy.asarray(probs[c], dtype=numpy.float64)
                if method is None:
                    S, score = thresholded_probability(p), p
                else:
                    S = score = curves[method][c]
                out += [[c] + d for d in fn(S, score, seg_of[c], clips)]
            dets[mode][name] = out
    pointing = []
    for lab, s, e in gt:
        c = int(lab)
        pc = {m: curves[m][c] for m in pointing_curves}
        pointing.append(
            {
                "label": c,
                "segment": [int(s), int(e)],
                "values": temporal_pointing(probs[c], pc, (s, e), clips, rng),
            }
        )
    split = {}
    for m, per_class in curves.items():
        pairs = []
        for c in labels:
            inside = numpy.zeros(T, dtype=bool)
            for s, e in seg_of[c]:
                inside[s : e + 1] = True
            pair = evidence_split(per_class[c], inside)
            if pair is not None:
                pairs.append(list(pair))
        split[m] = pairs
    return {
        "gt": [[int(lab), int(s), int(e)] for lab, s, e in gt],
        "ambiguous": [[int(s), int(e)] for s, e in ambiguous],
        "detections": dets,
        "temporal_pointing": pointing,
        "evidence_split": split,
    }


def sampled_interval(start, end, indices):
    """An inclusive interval of decoded frames as an interval of analysed (kept) frames, or None.

    ``indices`` are the decoded index of every kept frame (ascending). The result
    holds the kept frames that fall in ``[start, end]``; a segment that falls
    between two kept frames becomes the kept frame nearest its centre; a
    segment wholly after the last or before the first kept frame gives None.

    Examples
    --------
    >>> sampled_interval(10, 20, [0, 3, 6, 9, 12, 15, 18, 21])
    (4, 6)
    >>> sampled_interval(13, 14, [0, 3, 6, 9, 12, 15, 18, 21])
    (4, 4)
    >>> sampled_interval(30, 40, [0, 3, 6]) is None
    True
    """
    idx = numpy.asarray(indices, dtype=numpy.int64)
    if idx.size == 0 or start > idx[-1] or end < idx[0]:
        return None
    first = int(numpy.searchsorted(idx, start, side="left"))
    last = int(numpy.searchsorted(idx, end, side="right")) - 1
    if last >= first:
        return first, last
    centre = (start + end) / 2
    k = int(numpy.argmin(numpy.abs(idx - centre)))  # first nearest
    return k, k


def jsonable(obj):
    """A JSON-serialisable copy: NumPy numbers and arrays become Python numbers and lists; tuples lists.

    Non-finite floats raise ValueError (a record never holds NaN).
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, numpy.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, numpy.bool_)):
        return bool(obj)
    if isinstance(obj, (int, numpy.integer)):
        return int(obj)
    if isinstance(obj, (float, numpy.floating)):
        v = float(obj)
        if not math.isfinite(v):
            raise ValueError(f"jsonable: a non-finite number ({v}) in a record")
        return v
    if obj is None or isinstance(obj, str):
        return obj
    raise ValueError(f"jsonable: {type(obj).__name__} is not JSON-serialisable")
