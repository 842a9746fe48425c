"""Tables 1-3 and the Fig. 6 analogue (ebr_ref.evaluation.tables) against hand-computed values."""

import csv
import io

import pytest

from ebr_ref.evaluation import tables as T


def _pt(h, m):
    return {"hits": h, "misses": m}


def test_pointing_table_groups_all_and_class_mean():
    records = [
        {"group": "g1", "label": 0, "pointing": {"centre": _pt(1, 3), "EB": _pt(3, 1)}},
        {"group": "g2", "label": 1, "pointing": {"centre": _pt(2, 0), "EB": _pt(1, 1)}},
        {"group": "g1", "label": 0, "pointing": {"centre": _pt(0, 0), "EB": _pt(0, 0)}},  # no annotated frame
        {"group": "g1", "label": 1},  # no pointing part (a temporal-only record)
    ]
    t = T.pointing_table(records, ("g1", "g2"), class_mean=True)
    assert list(t) == ["centre", "EB"]
    # EB: g1 3/4, g2 1/2, all 4/6, classes 0: 3/4 and 1: 1/2 -> mean 0.625
    assert t["EB"] == {"g1": 0.75, "g2": 0.5, "all": 4 / 6, "frames": 6, "class mean": 0.625}
    assert t["centre"] == {"g1": 0.25, "g2": 1.0, "all": 0.5, "frames": 6, "class mean": pytest.approx(0.625)}
    # a group without frames has no accuracy
    assert T.pointing_table(records, ("g3",))["EB"]["g3"] is None


def test_evidence_table():
    records = [
        {"group": "a", "evidence_split": {"cEB-R": [[3.0, 1.0]]}},
        {"group": "a", "evidence_split": {"cEB-R": [[1.0, 2.0]]}},
        {"group": "b", "evidence_split": {"cEB-R": [[0.5, 0.0], [0.25, 0.5]]}},
        {"group": "b", "evidence_split": {"cEB-R": []}},  # no class with frames inside and outside
    ]
    t = T.evidence_table(records, ("a", "b", "c"))
    assert t["cEB-R"]["a"] == (2.0, 1.5, 0.5)
    assert t["cEB-R"]["b"] == (0.375, 0.25, 0.5)
    assert t["cEB-R"]["all"] == (4.75 / 4, 3.5 / 4, 0.5)
    assert t["cEB-R"]["c"] is None


def _det_record(video, gt, dets, ambiguous=(), group=None):
    return {
        "video_id": video,
        "group": group,
        "gt": gt,
        "ambiguous": list(ambiguous),
        "detections": {"known": {"m": dets}, "unknown": {"m": dets}},
    }


def test_detection_table_map_lengths_and_ambiguous():
    # class 0; v1: a true positive (IoU 1) scored 0.9; v2: a false positive (IoU 0) scored 0.95, ranked first.
    # AP = (precision at the true positive, 1/2) / 2 ground truths = 0.25; mean length (10 + 6) / 2 = 8
    recs = [
        _det_record("v1", [[0, 0, 9]], [[0, 0, 9, 0.9]]),
        _det_record("v2", [[0, 10, 19]], [[0, 0, 5, 0.95]]),
    ]
    t = T.detection_table(recs, [("0.5", None, 0.5)])
    assert list(t) == [("known", "m"), ("unknown", "m")]
    assert t[("known", "m")] == {"0.5": (0.25, 8.0)}
    # the false positive overlaps an ambiguous segment of v2: dropped from the ranking, AP = 1/2
    recs[1]["ambiguous"] = [[3, 4]]
    assert T.detection_table(recs, [("0.5", None, 0.5)])[("known", "m")]["0.5"] == (0.5, 8.0)


def test_detection_table_columns_by_group_and_threshold():
    # v1 (group 11): detection (0, 9) against GT (0, 4): IoU 5 / 10 = 0.5; v2 (group 41): exact
    recs = [
        _det_record("v1", [[1, 0, 4]], [[1, 0, 9, 1.0]], group=11),
        _det_record("v2", [[2, 0, 40]], [[2, 0, 40, 1.0]], group=41),
    ]
    cols = [("L11", 11, 0.5), ("L41", 41, 0.5), ("strict", None, 0.6), ("none", 99, 0.5)]
    t = T.detection_table(recs, cols)[("known", "m")]
    assert t["L11"] == (1.0, 10.0) and t["L41"] == (1.0, 41.0)
    assert t["strict"] == (0.5, 25.5)  # class 1 misses at IoU 0.6, class 2 hits: mAP (0 + 1) / 2
    assert t["none"] == (None, None)


def test_temporal_pointing_table():
    records = [
        {
            "group": 11,
            "temporal_pointing": [
                {"values": {"Random": True, "Random (expected)": 0.5}},
                {"values": {"Random": False, "Random (expected)": 0.25}},
            ],
        },
        {"group": 41, "temporal_pointing": [{"values": {"Random": True, "Random (expected)": 1.0}}]},
        {"group": 41},
    ]
    t = T.temporal_pointing_table(records, (11, 41))
    assert t["Random"] == {11: 0.5, 41: 1.0, "all": 2 / 3, "segments": 3}
    assert t["Random (expected)"] == {11: 0.375, 41: 1.0, "all": pytest.approx(1.75 / 3), "segments": 3}
    # the mean of equal values is that value exactly (0.1 + 0.1 + 0.1 summed is not 3 * 0.1)
    same = [{"group": None, "temporal_pointing": [{"values": {"e": 0.1}}] * 3}]
    assert T.temporal_pointing_table(same)["e"]["all"] == 0.1


def test_markdown_rendering():
    t1 = {"EB": {"a": 0.5, "all": 0.755, "frames": 8}}
    assert T.markdown_pointing(t1, [("a", "A"), ("all", "all"), ("frames", "n")]) == [
        "| method | A | all | n |",
        "|---|---|---|---|",
        "| EB | 50.0 | 75.5 | 8 |",
    ]
    fig6 = {"cEB-R": {"a": (0.0294, -0.0294, 0.921), "b": None}}
    assert T.markdown_evidence(fig6, [("a", "A"), ("b", "B")]) == [
        "| method | A: S(GT) | S(rand) | GT > rand | B: S(GT) | S(rand) | GT > rand |",
        "|---|---|---|---|---|---|---|",
        "| cEB-R | 2.94 | -2.94 | 92.1 | - | - | - |",
    ]
    t2 = {("known", "P"): {11: (1.0, 11.0)}, ("unknown", "P"): {11: (0.796, 10.4)}}
    assert T.markdown_detection(t2, [(11, "L = 11")], labels={"P": "Probability"}) == [
        "| length | method | L = 11 |",
        "|---|---|---|",
        "| known | Probability | 100.0 |",
        "| unknown | Probability | 79.6 (10) |",
    ]
    t3 = {"Random": {"all": 0.314, "segments": 3}}
    assert T.markdown_temporal_pointing(t3, [("all", "all"), ("segments", "n")]) == [
        "| method | all | n |",
        "|---|---|---|",
        "| Random | 31.4 | 3 |",
    ]
    assert T.pct(None) == "-" and T.pct(0.5, 2) == "50.00"


def test_json_and_csv():
    tabs = {
        "table1": {"EB": {"all": 0.5, "frames": 4}},
        "table2": {("known", "m"): {"0.5": (0.25, 8.0)}},
        "table3": None,
    }
    doc = T.to_json(tabs)
    assert doc == {
        "table1": {"EB": {"all": 0.5, "frames": 4}},
        "table2": {"known | m": {"0.5": [0.25, 8.0]}},
        "table3": None,
    }
    rows = list(csv.reader(io.StringIO(T.to_csv(tabs))))
    assert rows[0] == ["table", "row", "column", "value", "value2", "value3"]
    assert ["table1", "EB", "all", "0.5"] in rows and ["table1", "EB", "frames", "4"] in rows
    assert ["table2", "known | m", "0.5", "0.25", "8.0"] in rows
