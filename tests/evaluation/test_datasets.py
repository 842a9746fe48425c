"""Dataset readers: THUMOS14, UCF101 (+ UCF101-24 boxes) and manifests, on small files written here.

The annotation files are written by the tests in the published formats (the
THUMOS14 text files, classInd/testlist, a ``finalAnnots.mat`` written with
``scipy.io.savemat`` in the corrected UCF101-24 struct layout, manifest CSV and
JSON lines). The readers never decode a video, so the video files here are
empty placeholders. Expected items are written out by hand, field by field.
"""

import json
import re
import zlib

import numpy
import pytest

from ebr_ref.evaluation import datasets
from ebr_ref.evaluation.annotations import MAX_LINE_CHARS
from ebr_ref.evaluation.datasets import (
    Dataset,
    DatasetError,
    GTSegment,
    VideoItem,
    detect_layout,
    read_class_list,
    read_dataset,
    read_manifest,
    read_thumos14,
    read_ucf101,
)

scipy_io = pytest.importorskip("scipy.io")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _touch(*paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def _raises(match_file, line, what):
    """pytest.raises for a DatasetError whose message starts with 'file:line:' and contains ``what``."""
    head = re.escape(f"{match_file}:{line}:") if line is not None else re.escape(f"{match_file}")
    return pytest.raises(DatasetError, match=head + ".*" + re.escape(what))


# ----------------------------------------------------------------------------- THUMOS14


def _thumos(root):
    """A small THUMOS14 test folder: 3 videos (one unannotated), 2 classes, an Ambiguous file."""
    videos = root / "TH14_test_set_mp4"
    _touch(*(videos / f"video_test_000000{k}.mp4" for k in (4, 7, 9)))
    ann = root / "annotation"
    _write(ann / "BaseballPitch_test.txt", "video_test_0000007 12.5 14.1\nvideo_test_0000004  0.2 1.1 \n")
    _write(ann / "Diving_test.txt", "# comment\n\nvideo_test_0000004\t3.0\t4.0\nvideo_test_0000004 0.1 0.5\n")
    _write(
        ann / "Ambiguous_test.txt",
        "video_test_0000004 5.0 6.0\nvideo_test_0000009 1.0 2.0\nvideo_test_0000004 2.0 2.5\n",
    )
    return root


def test_read_thumos14_items_field_by_field(tmp_path):
    root = _thumos(tmp_path / "th14")
    assert detect_layout(root) == "thumos14"
    ds = read_dataset(root)
    assert isinstance(ds, Dataset) and ds.layout == "thumos14" and ds.root == str(root)
    assert ds.class_names == ("BaseballPitch", "Diving")  # sorted file names (no class list file)
    assert len(ds.items) == 2  # video_test_0000009 has only an ambiguous segment: not an item
    v4, v7 = ds.items
    assert v4 == VideoItem(
        "video_test_0000004",
        str(root / "TH14_test_set_mp4" / "video_test_0000004.mp4"),
        None,
        (
            GTSegment(1, 0.1, 0.5, None, None),
            GTSegment(0, 0.2, 1.1, None, None),
            GTSegment(1, 3.0, 4.0, None, None),
        ),
        None,
        None,
    )
    assert v7.video_id == "video_test_0000007" and v7.segments == (GTSegment(0, 12.5, 14.1, None, None),)
    assert ds.ambiguous == {"video_test_0000004": ((2.0, 2.5), (5.0, 6.0))}
    # with a frame rate the frames are filled in (0.2 s * 30 = frame 6; 1.1 s * 30 = 33 -> last frame 32)
    ds = read_thumos14(root, fps=30)
    assert ds.items[0].segments[1] == GTSegment(0, 0.2, 1.1, 6, 32) and ds.items[0].fps == 30.0
    ds = read_thumos14(root, fps={"video_test_0000007": 25})
    assert ds.items[0].segments[0].start_frame is None and ds.items[1].segments[0][3:] == (312, 352)
    assert ds.items[1].fps == 25.0


def test_read_thumos14_class_lists_and_boxes(tmp_path):
    root = _thumos(tmp_path / "th14")
    # the evaluation kit's detclasslist.txt: 'index name' lines with UCF101 indices, ordered by index
    _write(root / "annotation" / "detclasslist.txt", "26 Diving\n7 BaseballPitch\n9 BasketballDunk\n")
    ds = read_dataset(root)
    assert ds.class_names == ("BaseballPitch", "BasketballDunk", "Diving")
    assert [s.label for s in ds.items[0].segments] == [2, 0, 2]
    assert read_thumos14(root, classes=["Diving", "BaseballPitch"]).class_names == ("Diving", "BaseballPitch")
    _write(root / "boxes" / "video_test_0000007.txt", "3 10 20 30 40\n1 0 0 5 5\n3 1 2 3 4\n")
    ds = read_dataset(root)
    assert ds.items[0].boxes is None
    assert ds.items[1].boxes == {
        1: ((0.0, 0.0, 5.0, 5.0),),
        3: ((10.0, 20.0, 30.0, 40.0), (1.0, 2.0, 3.0, 4.0)),
    }
    assert read_dataset(root, boxes=False).items[1].boxes is None


def test_read_thumos14_errors_name_file_and_line(tmp_path):
    root = _thumos(tmp_path / "th14")
    ann = root / "annotation"
    (root / "TH14_test_set_mp4" / "video_test_0000007.mp4").unlink()
    with _raises(ann / "BaseballPitch_test.txt", 1, "video 'video_test_0000007' not found"):
        read_dataset(root)
    _touch(*(root / "TH14_test_set_mp4" / f"video_test_0000007.{ext}" for ext in ("mp4", "avi")))
    with _raises(ann / "BaseballPitch_test.txt", 1, "is ambiguous"):
        read_dataset(root)
    (root / "TH14_test_set_mp4" / "video_test_0000007.avi").unlink()
    _write(ann / "Diving_test.txt", "video_test_0000004 1.0 2.0\nvideo_test_0000004 two 3.0\n")
    with _raises(ann / "Diving_test.txt", 2, "must be numbers"):
        read_dataset(root)
    _write(ann / "Diving_test.txt", "video_test_0000004 1.0 2.0\n")
    _write(ann / "detclasslist.txt", "7 BaseballPitch\n")
    with _raises(ann / "Diving_test.txt", 1, "class 'Diving' (from the file name) is not in"):
        read_dataset(root)
    _write(ann / "detclasslist.txt", "7 BaseballPitch\n26 Diving\n7 CliffDiving\n")
    with _raises(ann / "detclasslist.txt", 3, "index 7 already given on line 1"):
        read_dataset(root)
    (ann / "detclasslist.txt").unlink()
    _write(root / "boxes" / "video_test_0000004.txt", "0 1 2 3 4\n5 0 0 20000 5\n")
    with _raises(root / "boxes" / "video_test_0000004.txt", 2, "outside the plausible range"):
        read_dataset(root)


def test_read_thumos14_empty_and_missing(tmp_path):
    root = tmp_path / "th14"
    _write(root / "Diving_test.txt", "\n# nothing\n")
    _write(root / "Ambiguous_test.txt", "v 1 2\n")
    with pytest.raises(DatasetError, match="no annotated segment"):
        read_dataset(root)
    with pytest.raises(DatasetError, match="no '<Class>_test.txt' annotation file"):
        read_thumos14(tmp_path)


# ----------------------------------------------------------------------------- UCF101


UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "Biking", "Diving", "YoYo"]


def _ucf(root, videos="UCF-101"):
    class_ind = "".join(f"{k} {n}\n" for k, n in enumerate(UCF_CLASSES, 1))
    _write(root / "ucfTrainTestlist" / "classInd.txt", class_ind)
    _write(
        root / "ucfTrainTestlist" / "testlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nBasketball/v_Basketball_g01_c01.avi\r\n"
        "Biking/v_Biking_g02_c03.avi\r\nYoYo/v_YoYo_g07_c04.avi\r\n",
    )
    _write(root / "ucfTrainTestlist" / "trainlist01.txt", "Diving/v_Diving_g08_c01.avi 4\n")
    for rel in (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "Basketball/v_Basketball_g01_c01.avi",
        "Biking/v_Biking_g02_c03.avi",
    ):
        _touch(root / videos / rel)
    _touch(root / "videos" / "v_YoYo_g07_c04.mp4")  # flat folder, transcoded to MP4
    return root


def test_read_ucf101_items_field_by_field(tmp_path):
    root = _ucf(tmp_path / "ucf")
    assert detect_layout(root) == "ucf101"
    ds = read_dataset(root)
    assert ds.layout == "ucf101" and ds.class_names == tuple(UCF_CLASSES) and ds.ambiguous == {}
    ucf = root / "UCF-101"
    assert ds.items == (
        VideoItem(
            "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01",
            str(ucf / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi"),
            0,
            (),
            None,
            None,
        ),
        VideoItem(
            "Basketball/v_Basketball_g01_c01",
            str(ucf / "Basketball" / "v_Basketball_g01_c01.avi"),
            1,
            (),
            None,
            None,
        ),
        VideoItem("Biking/v_Biking_g02_c03", str(ucf / "Biking" / "v_Biking_g02_c03.avi"), 2, (), None, None),
        VideoItem("YoYo/v_YoYo_g07_c04", str(root / "videos" / "v_YoYo_g07_c04.mp4"), 4, (), None, None),
    )
    with pytest.raises(DatasetError, match="testlist02.txt: no such test list"):
        read_ucf101(root, split=2)


def test_read_ucf101_frames_folders_and_class_folders(tmp_path):
    root = tmp_path / "ucf"
    _write(root / "classInd.txt", "1 Basketball\n2 Biking\n")
    _write(root / "testlist01.txt", "Basketball/v_Basketball_g01_c01\nv_Biking_g01_c01.avi\n")
    (root / "Basketball" / "v_Basketball_g01_c01").mkdir(parents=True)  # a folder of frames
    _touch(root / "v_Biking_g01_c01.avi")
    ds = read_dataset(root)
    assert [(it.video_id, it.path, it.label) for it in ds.items] == [
        ("Basketball/v_Basketball_g01_c01", str(root / "Basketball" / "v_Basketball_g01_c01"), 0),
        ("v_Biking_g01_c01", str(root / "v_Biking_g01_c01.avi"), 1),
    ]


AEM = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"


@pytest.mark.parametrize(
    "where, text, line, what",
    [
        ("classInd.txt", "1 ApplyEyeMakeup\n3 Basketball\n", 2, "expected index 2"),
        ("classInd.txt", "1 ApplyEyeMakeup\n2 ApplyEyeMakeup\n", 2, "class 'ApplyEyeMakeup' already given"),
        ("classInd.txt", "1 ApplyEyeMakeup extra\n", 1, "expected 'index name' or 'name'"),
        ("testlist01.txt", AEM + "Juggling/v_Juggling_g01_c01.avi\n", 2, "class 'Juggling' is not in"),
        ("testlist01.txt", AEM + AEM, 2, "already listed on line 1"),
        ("testlist01.txt", "../etc/v_YoYo_g01_c01.avi\n", 1, "expected a relative path"),
        ("testlist01.txt", "Basketball/v_Biking_g01_c01.avi\n", 1, "folder class 'Basketball' and file name"),
        ("testlist01.txt", "Basketball/v_Basketball_g01_c01.avi 3\n", 1, "class index 3 is not that of"),
        ("testlist01.txt", "Basketball/v_Basketball_g09_c09.avi\n", 1, "_g09_c09.avi' not found"),
    ],
)
def test_read_ucf101_errors_name_file_and_line(tmp_path, where, text, line, what):
    root = _ucf(tmp_path / "ucf")
    path = _write(root / "ucfTrainTestlist" / where, text)
    with _raises(path, line, what):
        read_dataset(root)


# ----------------------------------------------------------------------------- UCF101-24 boxes (.mat)

UCF24 = [  # classInd of a UCF101 subset holding the 24 UCF101-24 classes (their order matters, not indices)
    "ApplyEyeMakeup",
    "Basketball",
    "BasketballDunk",
    "Biking",
    "CliffDiving",
    "CricketBowling",
    "Diving",
    "Fencing",
    "FloorGymnastics",
    "GolfSwing",
    "HorseRiding",
    "IceDancing",
    "LongJump",
    "PoleVault",
    "RopeClimbing",
    "SalsaSpin",
    "SkateBoarding",
    "Skiing",
    "Skijet",
    "SoccerJuggling",
    "Surfing",
    "TennisSwing",
    "TrampolineJumping",
    "VolleyballSpiking",
    "WalkingWithDog",
    "YoYo",
]


def _struct_array(rows, fields):
    """A MATLAB 1 x n struct array for savemat: a NumPy record array of object fields."""
    a = numpy.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for j, row in enumerate(rows):
        for f in fields:
            a[0, j][f] = row[f]
    return a


def _tube(sf, ef, cls, boxes):
    def scalar(v):
        return numpy.array([[float(v)]])  # MATLAB doubles, 1 x 1

    boxes = numpy.array(boxes, dtype=numpy.float64).reshape(-1, 4)
    return {"ef": scalar(ef), "sf": scalar(sf), "class": scalar(cls), "boxes": boxes}


def _ucf24(root, *, annot=None, basketball_tubes=None):
    """UCF101-24-style folder: Basketball and Biking test videos with tubes, YoYo without; a train entry."""
    _write(root / "classInd.txt", "".join(f"{k} {n}\n" for k, n in enumerate(UCF24, 1)))
    _write(
        root / "testlist01.txt",
        "Basketball/v_Basketball_g01_c01.avi\nBiking/v_Biking_g01_c02.avi\nYoYo/v_YoYo_g01_c01.avi\n",
    )
    _touch(
        root / "Basketball/v_Basketball_g01_c01.avi",
        root / "Biking/v_Biking_g01_c02.avi",
        root / "YoYo/v_YoYo_g01_c01.avi",
    )
    if annot is None:
        b_tubes = basketball_tubes or [
            # class 1 = Basketball (the 24 classes' order); frames 2..4 (1-based), one 'x y w h' row per frame
            _tube(2, 4, 1, [[11, 21, 30, 40], [12, 21, 30, 40], [13, 22, 30, 40]]),
            _tube(4, 5, 1, [[101, 51, 10, 20], [102, 51, 10, 20]]),  # a second person from frame 4
        ]
        entries = [
            {
                "num_imgs": numpy.array([[6.0]]),
                "name": "Basketball/v_Basketball_g01_c01",
                "tubes": _struct_array(b_tubes, ["ef", "sf", "class", "boxes"]),
            },
            {
                "num_imgs": numpy.array([[40.0]]),
                "name": "Diving/v_Diving_g08_c01",  # a train video: not read
                "tubes": _struct_array([_tube(5, 1, 99, [[0, 0, 0, 0]])], ["ef", "sf", "class", "boxes"]),
            },
            # one tube given as a MATLAB 1 x 1 struct (a dict for savemat); class 3 = Biking
            {
                "num_imgs": numpy.array([[3.0]]),
                "name": "Biking/v_Biking_g01_c02",
                "tubes": _tube(1, 1, 3, [[1, 1, 320, 240]]),
            },
        ]
        annot = _struct_array(entries, ["num_imgs", "name", "tubes"])
    scipy_io.savemat(str(root / "finalAnnots.mat"), {"annot": annot}, do_compression=True)
    return root


def test_read_ucf24_mat_boxes(tmp_path):
    root = _ucf24(tmp_path / "ucf24")
    ds = read_dataset(root)  # finalAnnots.mat beside the lists is used by default
    assert [it.video_id for it in ds.items] == ["Basketball/v_Basketball_g01_c01", "Biking/v_Biking_g01_c02"]
    b, k = ds.items
    assert (b.label, b.segments, b.fps) == (1, (), None) and k.label == 3
    # x1 = x - 1, y1 = y - 1, x2 = x1 + w - 1, y2 = y1 + h - 1; frame = sf - 1 + row
    assert b.boxes == {
        1: ((10.0, 20.0, 39.0, 59.0),),
        2: ((11.0, 20.0, 40.0, 59.0),),
        3: ((12.0, 21.0, 41.0, 60.0), (100.0, 50.0, 109.0, 69.0)),
        4: ((101.0, 50.0, 110.0, 69.0),),
    }
    assert k.boxes == {0: ((0.0, 0.0, 319.0, 239.0),)}
    assert len(read_dataset(root, boxes=False).items) == 3  # without boxes: the whole test list


def test_read_ucf24_text_box_folder(tmp_path):
    root = _ucf24(tmp_path / "ucf24")
    _write(root / "boxes" / "Biking" / "v_Biking_g01_c02.txt", "0 1 2 3 4\n")
    ds = read_ucf101(root, boxes=root / "boxes")
    assert [(it.video_id, it.boxes) for it in ds.items] == [
        ("Biking/v_Biking_g01_c02", {0: ((1.0, 2.0, 3.0, 4.0),)})
    ]


@pytest.mark.parametrize(
    "tube, what",
    [
        (_tube(3, 2, 1, numpy.zeros((0, 4))), "need 1 <= sf <= ef <= num_imgs = 6"),
        (_tube(2, 7, 1, numpy.ones((6, 4))), "need 1 <= sf <= ef <= num_imgs = 6"),
        (_tube(2, 3, 1, numpy.ones((3, 4))), "'boxes' must be 2 x 4 numbers"),
        (_tube(2, 3, 2, numpy.ones((2, 4))), "class 2 (BasketballDunk) is not the video's class"),
        (_tube(2, 3, 25, numpy.ones((2, 4))), "class 25 (out of range)"),
        (_tube(2.5, 3, 1, numpy.ones((2, 4))), "sf must be an integer"),
        (_tube(2, 3, 1, [[1, 1, 0, 5], [1, 1, 5, 5]]), "row 1 of boxes: width and height must be >= 1"),
        (_tube(2, 3, 1, [[1, 1, 5, 5], [1, 1, 5, 99999]]), "row 2 of boxes: box"),
    ],
)
def test_read_ucf24_mat_errors_name_the_entry(tmp_path, tube, what):
    root = _ucf24(tmp_path / "ucf24", basketball_tubes=[tube])
    mat = root / "finalAnnots.mat"
    head = f"{mat}: annot(1) 'Basketball/v_Basketball_g01_c01' tubes(1)"
    with pytest.raises(DatasetError, match=re.escape(head) + ".*" + re.escape(what)):
        read_dataset(root)


def test_read_ucf24_mat_file_errors(tmp_path, monkeypatch):
    root = _ucf24(tmp_path / "ucf24")
    mat = root / "finalAnnots.mat"
    scipy_io.savemat(str(mat), {"annotations": numpy.zeros(3)})
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: no variable 'annot'")):
        read_dataset(root)
    scipy_io.savemat(str(mat), {"annot": numpy.zeros(3)})
    with pytest.raises(DatasetError, match="'annot' must be a struct array with fields name, num_imgs"):
        read_dataset(root)
    entries = [
        {
            "num_imgs": numpy.array([[6.0]]),
            "name": "Basketball/v_Basketball_g01_c01",
            "tubes": _tube(1, 1, 1, [[1, 1, 2, 2]]),
        }
    ] * 2
    scipy_io.savemat(str(mat), {"annot": _struct_array(entries, ["num_imgs", "name", "tubes"])})
    head = f"{mat}: annot(2) 'Basketball/v_Basketball_g01_c01': the video is also annot(1)"
    with pytest.raises(DatasetError, match=re.escape(head)):
        read_dataset(root)
    entries = [
        {"num_imgs": numpy.array([[6.0]]), "name": "YoYo/v_YoYo_g09_c01", "tubes": numpy.zeros((0, 0))}
    ]
    scipy_io.savemat(str(mat), {"annot": _struct_array(entries, ["num_imgs", "name", "tubes"])})
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: no video of") + ".*testlist01.txt has boxes"):
        read_dataset(root)
    mat.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ." + b" " * 200)
    with pytest.raises(DatasetError, match="v7.3/HDF5 is not read"):
        read_dataset(root)
    mat.write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match="not a MAT-file"):
        read_dataset(root)
    # a compressed element that inflates beyond the limit is refused before SciPy reads it
    _ucf24(root)
    monkeypatch.setattr(datasets, "MAX_MAT_BYTES", 200)
    with pytest.raises(DatasetError, match="once decompressed; refused"):
        read_dataset(root)
    monkeypatch.undo()
    data = bytearray(mat.read_bytes())
    data[128 + 8 + 2 : 128 + 8 + 40] = bytes(38)  # garble the first compressed element's zlib stream
    mat.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=re.escape(str(mat))):
        read_dataset(root)


def test_mat_expanded_size_counts_inflated_bytes(tmp_path):
    """The measured size is that of the inflated stream, not kept (a 64 MiB zlib bomb, cut at the limit)."""
    body = zlib.compress(bytes(64 << 20), 9)
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + bytes(8) + b"\x00\x01IM"
    tag = (15).to_bytes(4, "little") + len(body).to_bytes(4, "little")
    path = tmp_path / "bomb.mat"
    path.write_bytes(header + tag + body)
    assert datasets._mat_expanded_size(str(path), 1 << 20) == (1 << 20) + 1
    assert datasets._mat_expanded_size(str(path), 128 << 20) == 64 << 20


# ----------------------------------------------------------------------------- manifests


def _videos(root, *names):
    _touch(*(root / n for n in names))


def test_read_manifest_jsonl_field_by_field(tmp_path):
    root = tmp_path / "m"
    _videos(root, "clips/a.mp4", "b.avi")
    (root / "frames_c").mkdir()
    lines = [
        {"classes": ["run", "jump", "swim"]},
        {
            "path": "clips/a.mp4",
            "label": None,
            "segments": [["jump", 1.0, 2.0], ["run", 0.1, 1.0]],
            "boxes": {"12": [[1, 2, 3, 4], [5, 6, 7, 8]], "3": [[0, 0, 10, 10]], "4": []},
            "fps": 30,
        },
        {"path": "b.avi", "label": "swim", "id": "video-b"},
        {"path": str(root / "frames_c"), "label": "run"},
    ]
    _write(root / "manifest.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert detect_layout(root) == "manifest" and detect_layout(root / "manifest.jsonl") == "manifest"
    ds = read_dataset(root)
    assert ds.layout == "manifest" and ds.root == str(root / "manifest.jsonl")
    assert ds.class_names == ("run", "jump", "swim")
    assert ds.items == (
        VideoItem(
            "clips/a",
            str(root / "clips" / "a.mp4"),
            None,
            (GTSegment(1, 1.0, 2.0, 30, 59), GTSegment(0, 0.1, 1.0, 3, 29)),
            {3: ((0.0, 0.0, 10.0, 10.0),), 12: ((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0))},
            30.0,
        ),
        VideoItem("video-b", str(root / "b.avi"), 2, (), None, None),
        VideoItem("frames_c", str(root / "frames_c"), 0, (), None, None),
    )
    ds = read_manifest(root / "manifest.jsonl", fps=25)  # the records' own fps wins
    assert [it.fps for it in ds.items] == [30.0, 25.0, 25.0]


def test_read_manifest_csv_and_class_sources(tmp_path):
    root = tmp_path / "m"
    _videos(root, "a.mp4", "b.mp4")
    text = (
        "path,label,segments,boxes,fps\n"
        'a.mp4,,"[[""jump"", 0.0, 0.5]]","{""0"": [[1, 2, 3, 4]]}",10\n'
        "# a comment\n"
        "b.mp4,run,,,\n"
    )
    _write(root / "list.csv", text)
    ds = read_dataset(root / "list.csv")
    assert ds.class_names == ("jump", "run")  # the labels seen, sorted
    assert ds.items == (
        VideoItem(
            "a",
            str(root / "a.mp4"),
            None,
            (GTSegment(0, 0.0, 0.5, 0, 4),),
            {0: ((1.0, 2.0, 3.0, 4.0),)},
            10.0,
        ),
        VideoItem("b", str(root / "b.mp4"), 1, (), None, None),
    )
    _write(root / "classes.txt", "run\njump\nwalk\n")
    assert read_manifest(root / "list.csv").class_names == ("run", "jump", "walk")
    assert read_manifest(root / "list.csv", classes=["jump", "run"]).items[1].label == 1
    _write(root / "classes.txt", "run\n")
    with _raises(root / "list.csv", 2, "class 'jump' is not in " + str(root / "classes.txt")):
        read_manifest(root / "list.csv")


@pytest.mark.parametrize(
    "line, what",
    [
        ('{"path": "a.mp4"', "not a JSON object"),
        ('["a.mp4"]', "each line must be a JSON object"),
        ('{"path": "a.mp4", "segment": []}', "unknown field(s) segment"),
        ('{"path": "missing.mp4"}', "video 'missing.mp4' not found"),
        ('{"path": ""}', "'path' must be a non-empty string"),
        ('{"path": "a.mp4", "label": "fly"}', "class 'fly' is not in the classes line"),
        ('{"path": "a.mp4", "segments": [["run", 2.0, 1.0]]}', "0 <= start <= end"),
        ('{"path": "a.mp4", "segments": [["run", 1.0]]}', "a segment is [label, start_sec, end_sec]"),
        ('{"path": "a.mp4", "segments": [["run", 0, NaN]]}', "a segment is [label, start_sec, end_sec]"),
        ('{"path": "a.mp4", "boxes": {"-1": [[0, 0, 1, 1]]}}', "a boxes key is a 0-based frame index"),
        ('{"path": "a.mp4", "boxes": {"1": [[5, 0, 1, 1]]}}', "need x2 >= x1"),
        ('{"path": "a.mp4", "boxes": {"1": [[0, 0, 1, 1e9]]}}', "outside the plausible range"),
        ('{"path": "a.mp4", "boxes": {"1": [[0, 0, 1, true]]}}', "a box is four finite numbers"),
        ('{"path": "a.mp4", "boxes": {"99999999": [[0, 0, 1, 1]]}}', "outside the plausible range [0, 1000"),
        ('{"path": "a.mp4", "fps": 0}', "'fps' must be a positive number"),
        ('{"path": "b.mp4", "id": "a"}', "video id 'a' already used at"),
        ('{"classes": ["run"]}', 'the {"classes": [...]} line must be the first line'),
    ],
)
def test_read_manifest_errors_name_file_and_line(tmp_path, line, what):
    root = tmp_path / "m"
    _videos(root, "a.mp4", "b.mp4")
    head = '{"classes": ["run", "jump"]}\n{"path": "a.mp4", "label": "run"}\n\n'
    path = _write(root / "manifest.jsonl", head + line + "\n")
    with _raises(path, 4, what):
        read_dataset(root)


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("video,label\na.mp4,run\n", 1, "the header must name distinct columns"),
        ("path,label\na.mp4,run,extra\n", 2, "3 columns, the header has 2"),
        ('path,segments\na.mp4,"[[1, 2"\n', 2, "the segments column is not JSON"),
        ("path,fps\na.mp4,fast\n", 2, "fps must be a number"),
        ('path,label\n"a.mp4,run\n', 2, "not a CSV line"),
    ],
)
def test_read_manifest_csv_errors(tmp_path, text, line, what):
    root = tmp_path / "m"
    _videos(root, "a.mp4")
    path = _write(root / "manifest.csv", text)
    with _raises(path, line, what):
        read_dataset(root)


def test_read_manifest_empty_and_hostile_lines(tmp_path):
    root = tmp_path / "m"
    path = _write(root / "manifest.jsonl", '{"classes": ["run"]}\n')
    with pytest.raises(DatasetError, match=re.escape(f"{path}: no video listed")):
        read_dataset(root)
    _write(root / "manifest.jsonl", '{"path": "a.mp4"}\n' + "x" * (MAX_LINE_CHARS + 10) + "\n")
    with _raises(path, 2, f"line longer than {MAX_LINE_CHARS} bytes"):
        read_dataset(root)
    path.write_bytes(b'{"path": "a.mp4"}\n{"path": "\xff\xfe"}\n')
    with _raises(path, 2, "not UTF-8 text"):
        read_dataset(root)


# ----------------------------------------------------------------------------- detection and dispatch


def test_detect_layout_says_what_it_looked_for(tmp_path):
    looked = "cannot tell the dataset layout; looked for classInd.txt and testlistNN.txt.*<Class>_test.txt"
    with pytest.raises(DatasetError, match=looked + ".*manifest.jsonl or manifest.csv"):
        detect_layout(tmp_path)
    with pytest.raises(DatasetError, match="no such file or folder"):
        read_dataset(tmp_path / "nothing")
    _write(tmp_path / "manifest.jsonl", "")
    _write(tmp_path / "Diving_test.txt", "")
    with pytest.raises(DatasetError, match=r"several layouts \(thumos14, manifest\)"):
        detect_layout(tmp_path)
    with pytest.raises(DatasetError, match="must be a manifest"):
        detect_layout(_write(tmp_path / "list.txt", ""))


def test_read_dataset_options_that_do_not_apply(tmp_path):
    root = _ucf(tmp_path / "ucf")
    with pytest.raises(DatasetError, match="takes its classes from classInd.txt"):
        read_dataset(root, classes=["a"])
    with pytest.raises(DatasetError, match="unknown layout 'kinetics'"):
        read_dataset(root, "kinetics")
    with pytest.raises(DatasetError, match="a manifest holds its own boxes"):
        read_dataset(tmp_path, "manifest", boxes=tmp_path)


def test_read_class_list_forms(tmp_path):
    assert read_class_list(_write(tmp_path / "a.txt", "b\na\n")) == ("b", "a")
    assert read_class_list(_write(tmp_path / "b.txt", "9 b\n2 a\n")) == ("a", "b")
    with _raises(tmp_path / "c.txt", 2, "mixes 'index name' and 'name' lines"):
        read_class_list(_write(tmp_path / "c.txt", "1 a\nb\n"))
    with pytest.raises(DatasetError, match="no class names"):
        read_class_list(_write(tmp_path / "d.txt", "# none\n"))
