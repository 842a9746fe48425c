"""evaluation: pointing accuracy, temporal IoU, AP / mAP against hand-worked cases and transcribed
toolkits."""

from fractions import Fraction

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_ref.evaluation.metrics import (
    Detection,
    Segment,
    average_precision,
    map_at_thresholds,
    match_detections,
    mean_average_precision,
    pointing_accuracy,
    precision_recall,
    temporal_iou,
)

# ----------------------------------------------------------------------------- oracles


def iou_frames(a, b):
    """IoU of inclusive integer frame segments, as Python sets of frames (one correctly rounded division,
    as the toolkits compute it in double precision)."""
    A, B = set(range(int(a[0]), int(a[1]) + 1)), set(range(int(b[0]), int(b[1]) + 1))
    return len(A & B) / len(A | B)


def activitynet_flags(dets, gts, alpha):
    """ActivityNet's compute_average_precision_detection matching loop (score order, '>=')."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i].score)  # Python's sort is stable
    locked = [False] * len(gts)
    flags = []
    for i in order:
        d = dets[i]
        cand = [
            (iou_frames((d.start, d.end), (g.start, g.end)), j)
            for j, g in enumerate(gts)
            if g.video == d.video
        ]
        cand.sort(key=lambda c: -c[0])  # stable: the first ground truth on ties
        hit = 0
        for ov, j in cand:
            if ov < alpha:
                break
            if locked[j]:
                continue
            locked[j] = True
            hit = 1
            break
        flags.append(hit)
    return flags


def th14_updated_flags(dets, gts, alpha, amb=()):
    """TH14evalDet_Updated.m's TH14eventdetpr transcribed loop by loop (GT order, strict '>')."""
    videos = sorted({g.video for g in gts} | {d.video for d in dets})
    conf_all, flag_all = [], []
    for v in videos:
        gt = [g for g in gts if g.video == v]
        am = [a for a in amb if a.video == v]
        det = [d for d in dets if d.video == v]
        if not det:
            continue
        det = sorted(det, key=lambda d: -d.score)  # Matlab's sort is stable
        free = [True] * len(det)
        for g in gt:
            ind = [j for j in range(len(det)) if free[j]]
            if not ind:
                continue
            ovs = [iou_frames((g.start, g.end), (det[j].start, det[j].end)) for j in ind]
            im = max(range(len(ind)), key=lambda k: (ovs[k], -k))  # Matlab max: the first maximum
            if ovs[im] > alpha:
                free[ind[im]] = False
        for j, d in enumerate(det):
            in_amb = any(min(a.end, d.end) - max(a.start, d.start) + 1 > 0 for a in am)
            if not free[j]:
                conf_all.append(d.score)
                flag_all.append(1)
            elif not in_amb:
                conf_all.append(d.score)
                flag_all.append(0)
    order = sorted(range(len(conf_all)), key=lambda i: -conf_all[i])
    return [flag_all[i] for i in order]


def ap_oracle(flags, npos, interpolation):
    """AP from a ranking of 1 (TP) / 0 (FP) flags, with exact fractions."""
    tp = fp = 0
    prec, rec = [], []
    for f in flags:
        tp += f
        fp += 1 - f
        prec.append(Fraction(tp, tp + fp))
        rec.append(Fraction(tp, npos))
    if tp == 0:
        return 0.0
    if interpolation == "none":  # TH14evalDet_Updated prap(rec, prec, tmp, npos)
        return float(sum(p for p, f in zip(prec, flags) if f) / npos)
    if interpolation == "11point":  # TH14evalkit 2014 prap(rec, prec)
        total = Fraction(0)
        for k in range(11):
            ps = [p for p, r in zip(prec, rec) if r >= Fraction(k, 10)]
            total += max(ps) if ps else 0
        return float(total / 11)
    # ActivityNet interpolated_prec_rec
    mprec = [Fraction(0)] + prec + [Fraction(0)]
    mrec = [Fraction(0)] + rec + [Fraction(1)]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return float(
        sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
    )


# ----------------------------------------------------------------------------- pointing accuracy


def test_pointing_accuracy():
    assert pointing_accuracy(numpy.array([1, -1, 0, 1], dtype=numpy.int8)) == pytest.approx(2 / 3)
    assert pointing_accuracy([True, False, False, False]) == 0.25
    mean, per = pointing_accuracy([1, -1, 1, 1, 0, -1], labels=["a", "a", "b", "b", "c", "d"])
    assert per == {"a": 0.5, "b": 1.0, "d": 0.0}  # class c has only a skipped frame
    assert mean == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no hit or miss"):
        pointing_accuracy([0, 0])
    with pytest.raises(ValueError, match="no hit or miss"):
        pointing_accuracy([])
    with pytest.raises(ValueError, match=r"\+1 \(hit\)"):
        pointing_accuracy([2, 1])


# ----------------------------------------------------------------------------- temporal IoU


def test_temporal_iou_hand_cases():
    assert temporal_iou((0, 9), (5, 14)) == pytest.approx(5 / 15)
    assert temporal_iou((0, 4), (4, 9)) == pytest.approx(1 / 10)  # sharing frame 4
    assert temporal_iou((0, 3), (5, 9)) == 0.0
    assert temporal_iou((7, 7), (7, 7)) == 1.0  # one frame has length 1
    assert temporal_iou((0, 0), (0, 127)) == pytest.approx(1 / 128)  # at the clip edge
    assert temporal_iou((0.0, 10.0), (5.0, 15.0), inclusive=False) == pytest.approx(1 / 3)
    assert temporal_iou((0.0, 5.0), (5.0, 10.0), inclusive=False) == 0.0  # touching seconds
    assert temporal_iou((3.0, 3.0), (3.0, 3.0), inclusive=False) == 0.0  # empty union
    m = temporal_iou([[0, 9], [20, 29]], [[0, 4], [25, 34], [100, 101]])
    assert m.shape == (2, 3)
    numpy.testing.assert_allclose(m, [[0.5, 0, 0], [0, 5 / 15, 0]])
    with pytest.raises(ValueError, match="end >= start"):
        temporal_iou((5, 4), (0, 9))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=4, max_size=4))
def test_temporal_iou_matches_frame_sets(v):
    a, b = sorted(v[:2]), sorted(v[2:])
    assert temporal_iou(a, b) == iou_frames(a, b)


# ----------------------------------------------------------------------------- AP, hand-worked


def _gt(*segs, video="v1", label=0):
    return [Segment(video, label, s, e) for s, e in segs]


def test_ap_duplicates_and_misses():
    gt = _gt((0, 9), (20, 29)) + _gt((0, 9), video="v2")
    dets = [
        Detection("v1", 0, 0, 9, 0.9),  # TP
        Detection("v1", 0, 0, 9, 0.8),  # duplicate: FP
        Detection("v2", 0, 50, 59, 0.7),  # no overlap: FP
        Detection("v1", 0, 20, 29, 0.6),  # TP
    ]
    order, flags = match_detections(dets, gt, 0.5)
    assert order.tolist() == [0, 1, 2, 3]
    assert flags.tolist() == [1, 0, 0, 1]
    assert average_precision(dets, gt, 0.5) == pytest.approx((1 + 2 / 4) / 3)
    prec, rec = precision_recall(flags, 3)
    numpy.testing.assert_allclose(prec, [1, 1 / 2, 1 / 3, 1 / 2])
    numpy.testing.assert_allclose(rec, [1 / 3, 1 / 3, 1 / 3, 2 / 3])


def test_ap_interpolations_differ_when_precision_rises():
    # ranking TP, FP, FP, TP, TP over 3 ground truths
    gt = _gt((0, 9), (20, 29), (40, 49))
    dets = [
        Detection("v1", 0, 0, 9, 0.9),
        Detection("v1", 0, 60, 69, 0.8),
        Detection("v1", 0, 80, 89, 0.7),
        Detection("v1", 0, 20, 29, 0.6),
        Detection("v1", 0, 40, 49, 0.5),
    ]
    # precision at the TPs: 1, 2/4, 3/5
    assert average_precision(dets, gt, 0.5) == pytest.approx((1 + 0.5 + 0.6) / 3)
    assert average_precision(dets, gt, 0.5, interpolation="envelope") == pytest.approx((1 + 0.6 + 0.6) / 3)
    # 11 points: r = 0 .. 0.3 -> 1 (4 points), r = 0.4 .. 1.0 -> 0.6 (7 points)
    assert average_precision(dets, gt, 0.5, interpolation="11point") == pytest.approx((4 + 7 * 0.6) / 11)


def test_ap_score_ties_keep_input_order():
    gt = _gt((0, 9))
    tp, fp = Detection("v1", 0, 0, 9, 0.5), Detection("v1", 0, 30, 39, 0.5)
    assert average_precision([tp, fp], gt, 0.5) == 1.0
    assert average_precision([fp, tp], gt, 0.5) == 0.5


def test_ap_empty_detections_and_missing_ground_truth():
    assert average_precision([], _gt((0, 9)), 0.5) == 0.0
    assert average_precision([Detection("v1", 0, 50, 59, 1.0)], _gt((0, 9)), 0.5) == 0.0
    with pytest.raises(ValueError, match="no ground truth"):
        average_precision([Detection("v1", 0, 0, 9, 1.0)], [], 0.5)
    with pytest.raises(ValueError, match="alpha"):
        average_precision([], _gt((0, 9)), 0.0)
    with pytest.raises(ValueError, match="interpolation"):
        average_precision([], _gt((0, 9)), 0.5, interpolation="voc")


def test_iou_exactly_at_threshold():
    gt = _gt((0, 9))
    det = [Detection("v1", 0, 0, 4, 1.0)]  # IoU = 5 / 10 = 0.5 exactly
    assert average_precision(det, gt, 0.5) == 1.0  # '>=': a match
    assert average_precision(det, gt, 0.5, matching="thumos14") == 0.0  # the toolkit's strict '>'
    assert average_precision(det, gt, 0.5000001) == 0.0
    # the same in continuous seconds
    gt_s = [Segment("v1", 0, 0.0, 10.0)]
    det_s = [Detection("v1", 0, 0.0, 5.0, 1.0)]
    assert average_precision(det_s, gt_s, 0.5, inclusive=False) == 1.0


def test_greedy_matching_matters():
    # d1 (0.9) overlaps g1 at 7/13 and g2 at 3/20; d2 (0.8) overlaps g1 at 9/10.
    gt = _gt((0, 9), (10, 19))
    dets = [Detection("v1", 0, 3, 12, 0.9), Detection("v1", 0, 0, 8, 0.8)]
    # score order: d1 takes g1 (TP), d2 finds g1 taken and g2 at IoU 0 (FP): AP = (1/1) / 2
    assert match_detections(dets, gt, 0.5)[1].tolist() == [1, 0]
    assert average_precision(dets, gt, 0.5) == pytest.approx(0.5)
    # THUMOS14 loop: g1 takes its best free detection d2 (TP), g2 gets nothing: ranking FP, TP
    assert match_detections(dets, gt, 0.5, matching="thumos14")[1].tolist() == [0, 1]
    assert average_precision(dets, gt, 0.5, matching="thumos14") == pytest.approx(0.5 / 2)


def test_detection_takes_the_best_unmatched_ground_truth():
    # g1 = [0, 9] and g2 = [2, 14] overlap. d1 takes g1 (IoU 1). d2 = [0, 11] prefers g1 (10/12) but g1 is
    # taken, so it matches g2 (10/15 >= 0.5) -- VOC's rule (best GT even if taken) would call it a FP.
    gt = _gt((0, 9), (2, 14))
    dets = [Detection("v1", 0, 0, 9, 0.9), Detection("v1", 0, 0, 11, 0.8)]
    assert match_detections(dets, gt, 0.5)[1].tolist() == [1, 1]
    assert average_precision(dets, gt, 0.5) == 1.0


def test_ambiguous_segments_drop_overlapping_false_positives():
    gt = _gt((0, 9))
    amb = [Segment("v1", "Ambiguous", 30, 35)]
    dets = [Detection("v1", 0, 33, 50, 0.9), Detection("v1", 0, 0, 9, 0.8)]
    assert average_precision(dets, gt, 0.5) == 0.5
    order, flags = match_detections(dets, gt, 0.5, ambiguous=amb)
    assert flags.tolist() == [-1, 1]
    assert average_precision(dets, gt, 0.5, ambiguous=amb) == 1.0
    # an ambiguous segment in another video changes nothing
    assert average_precision(dets, gt, 0.5, ambiguous=[Segment("v2", "Ambiguous", 30, 35)]) == 0.5


def test_map_excludes_classes_without_ground_truth():
    gt = _gt((0, 9), label="a") + _gt((20, 29), label="b")
    dets = [
        Detection("v1", "a", 0, 9, 0.9),  # class a: AP 1
        Detection("v1", "c", 0, 9, 0.8),  # class c: no ground truth -> excluded
    ]
    m, per = mean_average_precision(dets, gt, 0.5)
    assert per == {"a": 1.0, "b": 0.0}  # b has ground truth and no detection: 0
    assert m == 0.5
    # detections of the wrong class never match
    assert mean_average_precision([Detection("v1", "b", 0, 9, 0.9)], gt, 0.5)[0] == 0.0
    with pytest.raises(ValueError, match="no ground truth"):
        mean_average_precision(dets, [], 0.5)


def test_map_at_thresholds():
    gt = _gt((0, 9))
    dets = [Detection("v1", 0, 0, 5, 1.0)]  # IoU 0.6
    out = map_at_thresholds(dets, gt)
    assert list(out) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert all(v == 1.0 for v in out.values())
    assert map_at_thresholds(dets, gt, alphas=(0.6, 0.7)) == {0.6: 1.0, 0.7: 0.0}


def test_inputs_are_not_modified():
    gt = _gt((0, 9), (20, 29))
    dets = [Detection("v1", 0, 20, 29, 0.2), Detection("v1", 0, 0, 9, 0.9)]
    gt_before, dets_before = list(gt), list(dets)
    average_precision(dets, gt, 0.5, matching="thumos14")
    assert gt == gt_before and dets == dets_before


# ----------------------------------------------------------------------------- AP vs transcribed toolkits

_seg = st.tuples(st.integers(0, 30), st.integers(0, 8)).map(lambda t: (t[0], t[0] + t[1]))


@st.composite
def _problem(draw):
    videos = ["v_b", "v_a"]  # not in sorted order on purpose
    gts = [Segment(draw(st.sampled_from(videos)), 0, *draw(_seg)) for _ in range(draw(st.integers(1, 4)))]
    dets = [
        Detection(draw(st.sampled_from(videos)), 0, *draw(_seg), draw(st.sampled_from([0.1, 0.5, 0.7, 0.9])))
        for _ in range(draw(st.integers(0, 7)))
    ]
    amb = [
        Segment(draw(st.sampled_from(videos)), "Ambiguous", *draw(_seg))
        for _ in range(draw(st.integers(0, 1)))
    ]
    return gts, dets, amb


@settings(max_examples=150, deadline=None)
@given(_problem(), st.sampled_from([0.1, 0.3, 0.5, 1 / 3]), st.sampled_from(["none", "envelope", "11point"]))
def test_score_matching_matches_activitynet_loop(problem, alpha, interpolation):
    gts, dets, _ = problem
    expect_flags = activitynet_flags(dets, gts, alpha)
    assert match_detections(dets, gts, alpha)[1].tolist() == expect_flags
    ap = average_precision(dets, gts, alpha, interpolation=interpolation)
    assert ap == pytest.approx(ap_oracle(expect_flags, len(gts), interpolation), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(_problem(), st.sampled_from([0.1, 0.3, 0.5]), st.sampled_from(["none", "11point"]))
def test_thumos14_matching_matches_toolkit_transcription(problem, alpha, interpolation):
    gts, dets, amb = problem
    expect_flags = th14_updated_flags(dets, gts, alpha, amb)
    _, flags = match_detections(dets, gts, alpha, matching="thumos14", ambiguous=amb)
    assert [f for f in flags.tolist() if f >= 0] == expect_flags
    ap = average_precision(dets, gts, alpha, matching="thumos14", interpolation=interpolation, ambiguous=amb)
    assert ap == pytest.approx(ap_oracle(expect_flags, len(gts), interpolation), abs=1e-12)
