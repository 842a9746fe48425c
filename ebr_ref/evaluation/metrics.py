"""Evaluation metrics: pointing-game accuracy, temporal IoU, detection AP and mAP.

Paper §5 (Bargal et al., CVPR 2018); docs/spec.md §6. Pure NumPy; inputs may be NumPy
or CuPy arrays or Python sequences.

Temporal segments
-----------------
``(start, end)`` with ``end >= start``. Two measures are supported:

* ``inclusive=True`` (default; frame indices): ``[s, e]`` covers the
  ``e - s + 1`` frames ``s, ..., e``; a one-frame segment ``[s, s]`` has
  length 1 and two segments sharing one frame intersect in 1.
* ``inclusive=False`` (continuous times, e.g. THUMOS14 seconds): length
  ``e - s``, as the THUMOS14 toolkit's ``intervaloverlapvalseconds``.

``IoU = |A ∩ B| / |A ∪ B|`` with ``|A ∪ B| = |A| + |B| - |A ∩ B|``; 0 when the
union is empty (two zero-length continuous segments).

Detection AP (THUMOS14 / ActivityNet)
-------------------------------------
Detections and ground truth are matched per class and per video. Two
independent choices reproduce the published evaluation codes:

``matching="score"`` (default)
    Detections in descending score order (ties keep input order); each one
    takes the still-unmatched ground truth with the highest IoU (the first
    such ground truth on ties) and is a true positive when that IoU is
    ``>= alpha`` (exactly at the threshold counts); otherwise, or when every
    ground truth is taken, it is a false positive (duplicates are false
    positives). This is ActivityNet's ``compute_average_precision_detection``.
``matching="thumos14"``
    The loop of the THUMOS14 Matlab toolkit (``TH14eventdetpr.m``): ground
    truths in input order; each takes, among the still-free detections of the
    video (sorted by descending score), the one with the highest IoU (the
    highest-scoring one on ties) when that IoU is **strictly** ``> alpha``.
    The ranking then breaks score ties by video name, then by score order
    inside the video, as the stable sorts of ``TH14evalDet_Updated.m`` do.
    (The 2014 code ranked every true positive before every false positive of
    equal score, the bug the updated code fixed; that is not reproduced.)

``interpolation="none"`` (default)
    ``AP = sum of the precision at each true positive / number of ground
    truths`` (non-interpolated), the ``prap(rec, prec, tmp, npos)`` of
    ``TH14evalDet_Updated.m`` (Shou et al., CVPR 2016), the THUMOS14 code that
    detection papers report since 2016.
``interpolation="11point"``
    The original 2014 ``TH14evalkit`` ``prap(rec, prec)``: the mean over
    ``r = 0, 0.1, ..., 1`` of ``max(prec[rec >= r])`` (0 when empty). Here
    ``rec >= r`` is decided exactly, as ``10 * tp >= k * n_gt``; the Matlab
    code compares floats, which can differ at exact ties such as ``rec = 0.3``.
``interpolation="envelope"``
    ActivityNet / VOC2010+: the area under the monotone precision envelope.

So ``("thumos14", "none")`` is ``TH14evalDet_Updated``, ``("thumos14",
"11point")`` is the 2014 ``TH14evalDet``, and ``("score", "envelope")`` is
ActivityNet's evaluation. The engine's default ``("score", "none")`` is
greedy score-order matching with ``>=``, scored with THUMOS14's
non-interpolated AP.

Ambiguous segments (THUMOS14's ``Ambiguous_test.txt``) are optional: a
detection that is not a true positive and overlaps (positive intersection)
an ambiguous segment of its video is dropped from the ranking, as in the
toolkit. A class with detections but no ground truth is excluded from the
mAP; a class with ground truth and no detection has AP 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from ..backend import to_numpy

__all__ = [
    "Segment",
    "Detection",
    "pointing_accuracy",
    "temporal_iou",
    "match_detections",
    "precision_recall",
    "average_precision",
    "mean_average_precision",
    "map_at_thresholds",
    "THUMOS14_ALPHAS",
]

THUMOS14_ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5)
_MATCHINGS = ("score", "thumos14")
_INTERPOLATIONS = ("none", "11point", "envelope")


class Segment(NamedTuple):
    """A ground-truth (or ambiguous) temporal segment."""

    video: str
    label: object  # class id or name
    start: float
    end: float


class Detection(NamedTuple):
    """A scored temporal detection."""

    video: str
    label: object
    start: float
    end: float
    score: float


def pointing_accuracy(outcomes, labels=None):
    """Pointing-game accuracy ``hits / (hits + misses)`` (paper §5.1).

    Parameters
    ----------
    outcomes : array of shape (n,)
        ``+1`` hit, ``-1`` miss, ``0`` skipped (as returned by
        :func:`ebr_ref.evaluation.localize.pointing_game`), or booleans (True hit,
        False miss).
    labels : array of shape (n,) or None
        Class of each outcome. When given, the accuracy is computed per class
        and the result is ``(mean over classes, {label: accuracy})``; classes
        whose outcomes are all skipped are left out.

    Returns
    -------
    float, or (float, dict)

    Raises
    ------
    ValueError
        When no outcome is a hit or a miss (the accuracy is undefined), or for
        values other than -1, 0, +1.
    """
    o = numpy.asarray(to_numpy(outcomes)).reshape(-1)
    if o.dtype == bool:
        o = numpy.where(o, 1, -1)
    if not numpy.all(numpy.isin(o, (-1, 0, 1))):
        raise ValueError("pointing_accuracy: outcomes must be +1 (hit), -1 (miss) or 0 (skipped)")
    if labels is None:
        n = int(numpy.count_nonzero(o))
        if n == 0:
            raise ValueError(
                "pointing_accuracy: no hit or miss to count (all outcomes skipped or none given)"
            )
        return int(numpy.count_nonzero(o == 1)) / n
    lab = numpy.asarray(to_numpy(labels)).reshape(-1)
    if lab.shape != o.shape:
        raise ValueError(f"pointing_accuracy: {o.shape[0]} outcomes but {lab.shape[0]} labels")
    per_class = {}
    for c in sorted(set(lab[o != 0].tolist())):
        oc = o[lab == c]
        per_class[c] = int(numpy.count_nonzero(oc == 1)) / int(numpy.count_nonzero(oc))
    if not per_class:
        raise ValueError("pointing_accuracy: no hit or miss to count (all outcomes skipped or none given)")
    return float(numpy.mean(list(per_class.values()))), per_class


def _as_segments(a, name):
    a = numpy.asarray(to_numpy(a), dtype=numpy.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name}: segments must be (2,) or (n, 2) as (start, end), got shape {a.shape}")
    if not numpy.all(numpy.isfinite(a)) or numpy.any(a[:, 1] < a[:, 0]):
        raise ValueError(f"{name}: segments need finite values with end >= start, got {a.tolist()}")
    return a


def temporal_iou(a, b, *, inclusive=True):
    """Temporal intersection over union.

    Parameters
    ----------
    a : array of shape (2,) or (n, 2)
    b : array of shape (2,) or (m, 2)
    inclusive : bool
        True: inclusive frame segments (length ``e - s + 1``); False:
        continuous intervals (length ``e - s``). See the module notes.

    Returns
    -------
    float for two single segments, else array of shape (n, m)

    Examples
    --------
    >>> temporal_iou((0, 9), (5, 14))
    0.3333333333333333
    >>> temporal_iou((0.0, 10.0), (5.0, 15.0), inclusive=False)
    0.3333333333333333
    """
    single = numpy.ndim(to_numpy(a)) == 1 and numpy.ndim(to_numpy(b)) == 1
    A = _as_segments(a, "temporal_iou")  # (n, 2)
    B = _as_segments(b, "temporal_iou")  # (m, 2)
    one = 1.0 if inclusive else 0.0
    inter = numpy.minimum(A[:, None, 1], B[None, :, 1]) - numpy.maximum(A[:, None, 0], B[None, :, 0]) + one
    inter = numpy.maximum(inter, 0.0)  # (n, m)
    union = (A[:, 1] - A[:, 0] + one)[:, None] + (B[:, 1] - B[:, 0] + one)[None, :] - inter
    iou = numpy.divide(inter, union, out=numpy.zeros_like(inter), where=union > 0)
    return float(iou[0, 0]) if single else iou


def _check_options(matching, interpolation, alpha, name):
    if matching not in _MATCHINGS:
        raise ValueError(f"{name}: matching must be one of {_MATCHINGS}, got {matching!r}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"{name}: interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    if not 0 < alpha <= 1:
        raise ValueError(f"{name}: alpha must be in (0, 1], got {alpha!r}")


def match_detections(detections, ground_truth, alpha, *, inclusive=True, matching="score", ambiguous=()):
    """Label each detection of ONE class true positive, false positive or ignored.

    Labels of the inputs are not looked at: pass one class's detections and
    ground truth (see :func:`mean_average_precision` for the grouping).

    Parameters
    ----------
    detections : sequence of Detection
    ground_truth : sequence of Segment
    alpha : float
        The temporal IoU threshold.
    inclusive : bool
        Segment measure, see :func:`temporal_iou`.
    matching : {"score", "thumos14"}
        See the module notes (``>= alpha`` for ``"score"``, ``> alpha`` for
        the toolkit's ``"thumos14"``).
    ambiguous : sequence of Segment
        Segments whose overlapping false positives are dropped.

    Returns
    -------
    order : int array of shape (n,)
        The ranking: indices into ``detections``, best first.
    flags : int8 array of shape (n,)
        In ranking order: 1 true positive, 0 false positive, -1 dropped
        (overlaps an ambiguous segment).
    """
    _check_options(matching, "none", alpha, "match_detections")
    dets = list(detections)
    n = len(dets)
    scores = numpy.array([float(d.score) for d in dets], dtype=numpy.float64)
    if not numpy.all(numpy.isfinite(scores)):
        raise ValueError("match_detections: detection scores must be finite")
    tp = numpy.zeros(n, dtype=bool)
    dropped = numpy.zeros(n, dtype=bool)
    gt_by_video, amb_by_video, det_by_video = {}, {}, {}
    for g in ground_truth:
        gt_by_video.setdefault(g.video, []).append((g.start, g.end))
    for g in ambiguous:
        amb_by_video.setdefault(g.video, []).append((g.start, g.end))
    for i, d in enumerate(dets):
        det_by_video.setdefault(d.video, []).append(i)
    rank_in_video = numpy.zeros(n, dtype=numpy.int64)
    for video, idx in det_by_video.items():
        idx = numpy.array(idx)
        idx = idx[numpy.argsort(-scores[idx], kind="stable")]  # (k,) score order, ties keep input order
        rank_in_video[idx] = numpy.arange(idx.size)
        dsegs = numpy.array([(dets[i].start, dets[i].end) for i in idx], dtype=numpy.float64)
        gsegs = gt_by_video.get(video, [])
        if gsegs:
            ov = temporal_iou(numpy.array(gsegs), dsegs, inclusive=inclusive).reshape(
                len(gsegs), idx.size
            )  # (g, k)
            tp[idx] = _match_video(ov, alpha, matching)
        if video in amb_by_video:
            inter = _intersects(numpy.array(amb_by_video[video]), dsegs, inclusive)  # (k,)
            dropped[idx] = inter & ~tp[idx]
    if matching == "score":
        order = numpy.argsort(-scores, kind="stable")
    else:  # the toolkit: videos in sorted-name order, score order inside, then a stable sort by score
        names = sorted(det_by_video)
        vid_rank = {v: r for r, v in enumerate(names)}
        vkey = numpy.array([vid_rank[d.video] for d in dets], dtype=numpy.int64)
        order = numpy.lexsort((rank_in_video, vkey, -scores))
    flags = numpy.where(dropped, -1, tp.astype(numpy.int8)).astype(numpy.int8)
    return order, flags[order]


def _match_video(ov, alpha, matching):
    """True-positive flags of one video's detections (columns of ``ov``, in score order)."""
    g, k = ov.shape
    taken = numpy.zeros(k, dtype=bool)
    if matching == "score":
        gt_free = numpy.ones(g, dtype=bool)
        for j in range(k):  # detections, best score first
            cand = numpy.where(gt_free, ov[:, j], -1.0)
            i = int(numpy.argmax(cand))  # highest IoU among unmatched GT, first on ties
            if gt_free[i] and ov[i, j] >= alpha:
                gt_free[i] = False
                taken[j] = True
        return taken
    for i in range(g):  # ground truths in input order (TH14eventdetpr.m)
        free = numpy.flatnonzero(~taken)
        if free.size == 0:
            break
        j = free[int(numpy.argmax(ov[i, free]))]  # highest IoU among free detections, best score on ties
        if ov[i, j] > alpha:
            taken[j] = True
    return taken


def _intersects(amb, dsegs, inclusive):
    one = 1.0 if inclusive else 0.0
    inter = (
        numpy.minimum(amb[:, None, 1], dsegs[None, :, 1])
        - numpy.maximum(amb[:, None, 0], dsegs[None, :, 0])
        + one
    )
    return numpy.any(inter > 0, axis=0)


def precision_recall(flags, n_gt):
    """Precision and recall along a ranking.

    Parameters
    ----------
    flags : int array of shape (n,)
        1 true positive, 0 false positive, -1 dropped, in ranking order.
    n_gt : int
        Number of ground-truth segments (> 0).

    Returns
    -------
    precision, recall : float64 arrays of shape (n_kept,)
    """
    f = numpy.asarray(flags)
    f = f[f >= 0]
    tp = numpy.cumsum(f == 1)
    fp = numpy.cumsum(f == 0)
    denom = numpy.maximum(tp + fp, 1)
    return tp / denom, tp / float(n_gt)


def _ap_from_flags(flags, n_gt, interpolation):
    f = numpy.asarray(flags)
    f = f[f >= 0]
    if f.size == 0 or not numpy.any(f == 1):
        return 0.0
    prec, rec = precision_recall(f, n_gt)
    if interpolation == "none":
        return float(prec[f == 1].sum() / n_gt)
    if interpolation == "11point":
        tp = numpy.cumsum(f == 1)
        ap = 0.0
        for k in range(11):
            reach = 10 * tp >= k * n_gt  # rec >= k / 10, exactly
            ap += float(prec[reach].max()) if numpy.any(reach) else 0.0
        return ap / 11
    mprec = numpy.concatenate([[0.0], prec, [0.0]])
    mrec = numpy.concatenate([[0.0], rec, [1.0]])
    mprec = numpy.maximum.accumulate(mprec[::-1])[::-1]  # monotone envelope
    idx = numpy.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(numpy.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision(
    detections, ground_truth, alpha, *, inclusive=True, matching="score", interpolation="none", ambiguous=()
):
    """Average precision of ONE class's detections at temporal IoU ``alpha``.

    Parameters
    ----------
    detections : sequence of Detection
    ground_truth : sequence of Segment
        At least one segment.
    alpha : float
        IoU threshold in (0, 1] (0 would let disjoint segments match).
    inclusive : bool
        Segment measure, see :func:`temporal_iou`.
    matching : {"score", "thumos14"}
    interpolation : {"none", "11point", "envelope"}
        See the module notes.
    ambiguous : sequence of Segment

    Returns
    -------
    float
        0 when there are no detections or no true positive.

    Raises
    ------
    ValueError
        When ``ground_truth`` is empty (AP is undefined; the toolkit asserts).
    """
    _check_options(matching, interpolation, alpha, "average_precision")
    gt = list(ground_truth)
    if not gt:
        raise ValueError("average_precision: no ground truth for this class (AP is undefined)")
    dets = list(detections)
    if not dets:
        return 0.0
    _, flags = match_detections(dets, gt, alpha, inclusive=inclusive, matching=matching, ambiguous=ambiguous)
    return _ap_from_flags(flags, len(gt), interpolation)


def mean_average_precision(
    detections, ground_truth, alpha, *, inclusive=True, matching="score", interpolation="none", ambiguous=()
):
    """mAP over the classes that have ground truth.

    Detections and ground truth are grouped by ``label``. Classes with
    ground truth and no detection score 0; classes with detections but no
    ground truth are excluded. ``ambiguous`` segments apply to every class.

    Returns
    -------
    mAP : float
    per_class : dict
        ``{label: AP}`` for every class with ground truth.

    Raises
    ------
    ValueError
        When there is no ground truth at all.
    """
    _check_options(matching, interpolation, alpha, "mean_average_precision")
    gt_by, det_by = {}, {}
    for g in ground_truth:
        gt_by.setdefault(g.label, []).append(g)
    for d in detections:
        det_by.setdefault(d.label, []).append(d)
    if not gt_by:
        raise ValueError("mean_average_precision: no ground truth (mAP is undefined)")
    amb = list(ambiguous)
    per_class = {}
    try:
        classes = sorted(gt_by)
    except TypeError:  # labels of mixed types
        classes = sorted(gt_by, key=repr)
    for c in classes:
        per_class[c] = average_precision(
            det_by.get(c, []),
            gt_by[c],
            alpha,
            inclusive=inclusive,
            matching=matching,
            interpolation=interpolation,
            ambiguous=amb,
        )
    return float(numpy.mean(list(per_class.values()))), per_class


def map_at_thresholds(detections, ground_truth, alphas=THUMOS14_ALPHAS, **options):
    """``{alpha: mAP}`` for several IoU thresholds (THUMOS14: 0.1, ..., 0.5).

    ``options`` are those of :func:`mean_average_precision`.
    """
    dets, gt = list(detections), list(ground_truth)
    return {float(a): mean_average_precision(dets, gt, a, **options)[0] for a in alphas}
