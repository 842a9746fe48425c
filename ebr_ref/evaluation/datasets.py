"""Dataset readers: the items (video file, label, ground-truth segments, per-frame boxes) of a dataset folder.

Three layouts, as users download them (details and examples: ``docs/datasets.md``):

``"thumos14"``
    A folder of test videos (``video_test_0000004.mp4``...) and the temporal
    annotation files ``<Class>_test.txt`` + ``Ambiguous_test.txt`` (read with
    :mod:`ebr_ref.evaluation.annotations`). Items: the videos with at least
    one annotated segment. See :func:`read_thumos14`.
``"ucf101"``
    ``classInd.txt`` + ``testlist0N.txt`` and the videos; optionally the
    UCF101-24 boxes (``finalAnnots.mat`` of the corrected annotations, or one
    text box file per video). See :func:`read_ucf101`.
``"manifest"``
    A JSON-lines or CSV file listing ``path, label, segments, boxes``, for
    anything else. See :func:`read_manifest`.

Conventions shared by every reader
----------------------------------
* Frames are 0-based; a frame interval ``(start_frame, end_frame)`` is
  inclusive. Segments are kept in seconds; their frames are filled in when the
  frame rate is known (given, or recorded by the layout) with
  :func:`ebr_ref.evaluation.annotations.seconds_to_frames`, else left None.
* Boxes are ``(x1, y1, x2, y2)`` inclusive pixel coordinates of the original
  video (integer values are pixel centres; ``x`` is the column), as in
  :mod:`ebr_ref.evaluation.localize`. ``VideoItem.boxes`` maps a frame to the
  tuple of its boxes (several people), frames in increasing order; frames
  without a box are absent.
* Everything is checked in the reader, before anything is returned: missing
  videos, unknown class names, malformed lines, duplicate video ids, boxes
  outside the plausible range (finite, ``x2 >= x1``, ``y2 >= y1``, every
  coordinate in ``[-BOX_SLACK, MAX_SIDE + BOX_SLACK]``), frames beyond
  ``MAX_FRAME``, an empty dataset. Each raises :class:`DatasetError` whose
  message starts with ``file:line:`` (1-based line; ``file: annot(i)`` for an
  entry of a ``.mat`` file, 1-based like MATLAB).
* Hostile input costs bounded time and memory: text is read one line at a
  time with a length limit (:data:`~ebr_ref.evaluation.annotations.MAX_LINE_CHARS`),
  a ``.mat`` file's compressed parts are measured (streamed, not kept) against
  ``MAX_MAT_BYTES`` before SciPy reads it, and folders are listed once each.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import zlib
from collections.abc import Mapping
from contextlib import contextmanager
from typing import NamedTuple

import numpy

from .annotations import (
    MAX_LINE_CHARS,
    iter_content_lines,
    iter_frame_boxes,
    iter_thumos14_temporal,
    seconds_to_frames,
)

__all__ = [
    "DatasetError",
    "GTSegment",
    "VideoItem",
    "Dataset",
    "LAYOUTS",
    "VIDEO_EXTENSIONS",
    "UCF101_24_CLASSES",
    "MAX_SIDE",
    "BOX_SLACK",
    "MAX_FRAME",
    "MAX_MAT_BYTES",
    "read_dataset",
    "detect_layout",
    "read_thumos14",
    "read_ucf101",
    "read_manifest",
    "read_class_list",
]

LAYOUTS = ("thumos14", "ucf101", "manifest")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
# The 24 classes of UCF101-24, in the order that the corrected annotations' tube field ``class`` counts
# (1-based).
UCF101_24_CLASSES = (
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
)
MAX_SIDE = 16384  # largest plausible frame side in pixels
BOX_SLACK = 16  # pixels a box may reach beyond the frame (annotation noise)
MAX_FRAME = 10_000_000  # largest plausible frame index (about 4 days at 30 fps)
MAX_MAT_BYTES = 512 << 20  # largest .mat content read, after decompression

THUMOS14_ANNOTATION_DIRS = (".", "annotation", "annotations", "TH14_Temporal_annotations_test/annotation")
THUMOS14_VIDEO_DIRS = ("videos", "TH14_test_set_mp4", ".")
UCF101_LIST_DIRS = (".", "ucfTrainTestlist")
UCF101_VIDEO_DIRS = (".", "UCF-101", "videos")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
MANIFEST_FIELDS = ("path", "label", "segments", "boxes", "fps", "id")


class DatasetError(ValueError):
    """A dataset folder or annotation file that cannot be read; the message names the file and line."""


class GTSegment(NamedTuple):
    """One ground-truth action segment, in seconds and (when the frame rate is known) inclusive frames."""

    label: int  # class index into Dataset.class_names
    start: float  # seconds
    end: float  # seconds
    start_frame: int | None  # inclusive frame interval; None while the frame rate is unknown
    end_frame: int | None


class VideoItem(NamedTuple):
    """One video of a dataset and its ground truth."""

    video_id: str  # unique within the dataset; the results store's key
    path: str  # absolute path of the video file (or frames folder)
    label: int | None  # the clip's class index (trimmed datasets), None for untrimmed videos
    segments: tuple  # of GTSegment (untrimmed datasets; empty otherwise)
    boxes: dict | None  # {frame: ((x1, y1, x2, y2), ...)} inclusive pixels of the original video, or None
    fps: float | None  # frames per second when the layout records it (else read from the video)


class Dataset(NamedTuple):
    """A listed dataset: its layout, class names and items, plus ambiguous segments (THUMOS14)."""

    layout: str  # "thumos14", "ucf101" or "manifest"
    root: str
    class_names: tuple  # of str; item labels index into it
    items: tuple  # of VideoItem, in a stable order
    ambiguous: dict  # {video_id: ((start_sec, end_sec), ...)} segments that count neither way (THUMOS14)


# ----------------------------------------------------------------------------- shared helpers


@contextmanager
def _as_dataset_errors():
    """Re-raise the ValueErrors of the annotation readers (they name ``file:line``) as DatasetError."""
    try:
        yield
    except DatasetError:
        raise
    except ValueError as e:
        raise DatasetError(str(e)) from None
    except OSError as e:
        raise DatasetError(f"{e.filename or ''}: cannot read ({e.strerror or e})") from None


def _lines(path):
    """Content lines ``(lineno, text)`` of a text file, as DatasetError on any problem."""
    it = iter_content_lines(path)
    while True:
        with _as_dataset_errors():
            row = next(it, None)
        if row is None:
            return
        yield row


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_box(box, where):
    """A plausible inclusive box as a tuple of 4 floats, or DatasetError."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise DatasetError(f"{where}: a box is four finite numbers [x1, y1, x2, y2], got {_short(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1 or y2 < y1:
        raise DatasetError(f"{where}: need x2 >= x1 and y2 >= y1, got {_short(box)}")
    lo, hi = -BOX_SLACK, MAX_SIDE + BOX_SLACK
    if min(x1, y1) < lo or max(x2, y2) > hi:
        raise DatasetError(f"{where}: box {_short(box)} outside the plausible range [{lo}, {hi}] pixels")
    return (x1, y1, x2, y2)


def _check_frame(frame, where):
    if not 0 <= frame <= MAX_FRAME:
        raise DatasetError(f"{where}: frame {frame} outside the plausible range [0, {MAX_FRAME}]")
    return frame


def _short(value, n=80):
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _fps_for(fps, video, where):
    """The frame rate for ``video`` from a number, a mapping or None."""
    if fps is None:
        return None
    if isinstance(fps, Mapping):
        if video not in fps:
            return None
        fps = fps[video]
    if not _is_number(fps) or fps <= 0:
        raise DatasetError(f"{where}: fps must be a positive number, got {_short(fps)}")
    return float(fps)


def _sorted_boxes(per_frame):
    return {f: tuple(per_frame[f]) for f in sorted(per_frame)}


class _Listing:
    """Folder listings, each read once: ``{name: is_dir}``, or None for a path that is not a folder."""

    def __init__(self):
        self._cache = {}

    def entries(self, folder):
        folder = os.path.normpath(folder)
        if folder not in self._cache:
            try:
                with os.scandir(folder) as it:
                    self._cache[folder] = {e.name: e.is_dir() for e in it}
            except (FileNotFoundError, NotADirectoryError):
                self._cache[folder] = None
            except OSError as e:
                raise DatasetError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
        return self._cache[folder]

    def find(self, folder, name, where):
        """The path of video ``name`` in ``folder``: the file itself, the same stem with another video
        extension, or a folder of frames named like the stem; None when absent."""
        folder = os.path.normpath(folder)
        entries = self.entries(folder)
        if not entries:
            return None
        if name in entries and not entries[name]:
            return os.path.join(folder, name)
        stem, ext = os.path.splitext(name)
        if ext.lower() not in VIDEO_EXTENSIONS:
            stem = name
        found = _video_files(entries, stem) + ([stem] if entries.get(stem) else [])  # a folder of frames
        if len(found) > 1:
            shown = ", ".join(sorted(found))
            raise DatasetError(f"{where}: video {name!r} is ambiguous in {folder}: {shown}")
        return os.path.join(folder, found[0]) if found else None


def _video_files(entries, stem):
    """Files of a listing named ``stem`` + a video extension (lower or upper case)."""
    out = []
    for ext in VIDEO_EXTENSIONS:
        for name in (stem + ext, stem + ext.upper()):
            if name in entries and not entries[name] and name not in out:
                out.append(name)
    return out


def read_class_list(path, *, contiguous=False):
    """Class names from a list file: ``index name`` lines (``classInd.txt``, ``detclasslist.txt``) or names.

    Parameters
    ----------
    path : str or os.PathLike
    contiguous : bool
        Require the indices to be ``1, 2, ..., N`` in file order (``classInd.txt``).

    Returns
    -------
    tuple of str
        Ordered by index (``index name`` lines; the indices need not be
        contiguous, as in THUMOS14's ``detclasslist.txt``) or in file order.

    Raises
    ------
    DatasetError
        For a malformed line, mixed forms, a repeated index or name, or an
        empty list (message: ``file:line``).
    """
    path = os.fspath(path)
    rows, form = [], None
    for lineno, text in _lines(path):
        where = f"{path}:{lineno}"
        fields = text.split()
        kind = "indexed" if len(fields) == 2 else "plain" if len(fields) == 1 else None
        if kind is None:
            raise DatasetError(f"{where}: expected 'index name' or 'name', got {_short(text)}")
        if form is not None and kind != form:
            raise DatasetError(f"{where}: mixes 'index name' and 'name' lines, got {_short(text)}")
        form = kind
        if kind == "indexed":
            if not re.fullmatch(r"[0-9]{1,9}", fields[0]) or int(fields[0]) < 1:
                raise DatasetError(f"{where}: the index must be a positive integer, got {_short(text)}")
            index, name = int(fields[0]), fields[1]
            if contiguous and index != len(rows) + 1:
                expected = len(rows) + 1
                raise DatasetError(f"{where}: expected index {expected} (1-based, in order), got {index}")
        else:
            index, name = len(rows) + 1, fields[0]
        for other_line, other_index, other_name in rows:
            if other_index == index or other_name == name:
                what = f"index {index}" if other_index == index else f"class {name!r}"
                raise DatasetError(f"{where}: {what} already given on line {other_line}")
        rows.append((lineno, index, name))
    if not rows:
        raise DatasetError(f"{path}: no class names in the file")
    return tuple(name for _, _, name in sorted(rows, key=lambda r: r[1]))


def _class_index(class_names):
    return {n: k for k, n in enumerate(class_names)}


# ----------------------------------------------------------------------------- layout detection


def _first_dir(root, candidates, test):
    for rel in candidates:
        d = os.path.normpath(os.path.join(root, rel))
        if os.path.isdir(d) and test(d):
            return d
    return None


def _has_thumos_files(d, subset="test"):
    pattern = re.compile(r"^.+_" + re.escape(subset) + r"\.txt$")
    return any(pattern.match(n) for n in os.listdir(d))


def _has_ucf_lists(d):
    return os.path.isfile(os.path.join(d, "classInd.txt")) and any(
        re.fullmatch(r"testlist\d+\.txt", n) for n in os.listdir(d)
    )


def detect_layout(root):
    """The layout of a dataset folder or manifest file (see the module notes).

    A file ending in ``.jsonl``, ``.json`` or ``.csv`` is a manifest. A folder is
    ``ucf101`` when it (or ``ucfTrainTestlist/``) holds ``classInd.txt`` and a
    ``testlistNN.txt``; ``thumos14`` when it (or ``annotation/``,
    ``annotations/``, ``TH14_Temporal_annotations_test/annotation/``) holds
    ``<Class>_test.txt`` files; ``manifest`` when it holds ``manifest.jsonl`` or
    ``manifest.csv``.

    Raises
    ------
    DatasetError
        When nothing or more than one layout matches; the message says what
        was looked for.
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise DatasetError(f"{root}: no such file or folder")
    if os.path.isfile(root):
        if root.lower().endswith((".jsonl", ".json", ".csv")):
            return "manifest"
        raise DatasetError(f"{root}: a dataset file must be a manifest (.jsonl, .json or .csv)")
    found = []
    if _first_dir(root, UCF101_LIST_DIRS, _has_ucf_lists):
        found.append("ucf101")
    if _first_dir(root, THUMOS14_ANNOTATION_DIRS, _has_thumos_files):
        found.append("thumos14")
    if any(os.path.isfile(os.path.join(root, n)) for n in MANIFEST_NAMES):
        found.append("manifest")
    if len(found) == 1:
        return found[0]
    if found:
        shown = ", ".join(found)
        raise DatasetError(f"{root}: looks like several layouts ({shown}); say which (layout=, --layout)")
    raise DatasetError(
        f"{root}: cannot tell the dataset layout; looked for classInd.txt and testlistNN.txt in . or "
        "ucfTrainTestlist/ (ucf101), <Class>_test.txt files in ., annotation/, annotations/ or "
        "TH14_Temporal_annotations_test/annotation/ (thumos14), and manifest.jsonl or manifest.csv "
        "(manifest); say which (layout=, --layout)"
    )


def read_dataset(root, layout=None, *, split=1, boxes=None, fps=None, classes=None, subset="test"):
    """List a dataset's items, every check done up front.

    Parameters
    ----------
    root : str or os.PathLike
        A dataset folder, or a manifest file.
    layout : {"thumos14", "ucf101", "manifest"} or None
        None detects it (:func:`detect_layout`).
    split : int
        UCF101 test split (``testlist0N.txt``).
    boxes : None, False, or path
        Per-frame boxes: None uses the layout's standard box file when present
        (``finalAnnots.mat`` for ucf101, a ``boxes/`` folder for thumos14),
        False reads none, a path names the file or folder. A manifest holds
        its boxes itself.
    fps : float, mapping {video_id: fps}, or None
        Frame rate for the frame intervals of segments (thumos14, manifest
        records without their own ``fps``).
    classes : sequence of str or None
        Class names (thumos14, manifest) instead of the layout's own list.
    subset : str
        THUMOS14 annotation subset (``"test"`` or ``"val"``).

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
    """
    root = os.fspath(root)
    layout = detect_layout(root) if layout is None else layout
    if layout == "thumos14":
        return read_thumos14(root, subset=subset, fps=fps, boxes=boxes, classes=classes)
    if layout == "ucf101":
        if classes is not None:
            raise DatasetError(
                f"{root}: a ucf101 dataset takes its classes from classInd.txt (classes= given)"
            )
        return read_ucf101(root, split=split, boxes=boxes)
    if layout == "manifest":
        if boxes not in (None, False):
            raise DatasetError(f"{root}: a manifest holds its own boxes (boxes= given)")
        return read_manifest(root, classes=classes, fps=fps)
    raise DatasetError(f"{root}: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


# ----------------------------------------------------------------------------- THUMOS14


def _given_classes(classes, what):
    if isinstance(classes, str) or not all(isinstance(c, str) and c for c in classes):
        raise DatasetError(f"{what}: classes must be a sequence of non-empty names, got {_short(classes)}")
    names = tuple(classes)
    if len(set(names)) != len(names) or not names:
        raise DatasetError(f"{what}: classes must be distinct and not empty, got {_short(classes)}")
    return names


def _read_text_boxes(path, where_used):
    """``{frame: [box, ...]}`` of a ``frame x1 y1 x2 y2`` file (0-based, inclusive), every box checked."""
    per_frame = {}
    with _as_dataset_errors():
        for lineno, frame, box in iter_frame_boxes(path):
            where = f"{path}:{lineno}"
            per_frame.setdefault(_check_frame(frame, where), []).append(_check_box(box, where))
    if not per_frame:
        raise DatasetError(f"{path}: no boxes in the file ({where_used})")
    return per_frame


def _box_folder(root, boxes, default):
    """The box folder or file to use: None for no boxes."""
    if boxes is False:
        return None
    if boxes is None:
        path = os.path.join(root, default)
        return path if os.path.exists(path) else None
    path = os.fspath(boxes)
    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such box file or folder")
    return path


def read_thumos14(root, *, subset="test", fps=None, boxes=None, classes=None, videos=None, annotations=None):
    """List a THUMOS14 test folder: the videos with at least one annotated segment.

    Parameters
    ----------
    root : str or os.PathLike
    subset : str
        ``"test"``: the files ``<Class>_test.txt`` and ``Ambiguous_test.txt``.
    fps : float, mapping {video: fps}, or None
        Frame rate for the segments' frames (THUMOS14 records none; its
        videos are mostly 30 fps); None leaves them None (the evaluation reads
        the rate from each video).
    boxes : None, False or path
        A folder of per-video text box files ``<video>.txt`` (``frame x1 y1 x2
        y2`` lines, 0-based frames, inclusive pixels); None uses
        ``root/boxes/`` when present. THUMOS14 itself publishes no boxes.
    classes : sequence of str or None
        The class list; by default ``detclasslist.txt`` (the evaluation kit's
        ``index name`` lines; names ordered by index), else ``classInd.txt``,
        looked for in the annotation folder and the root, else the class
        names of the annotation files in sorted order.
    videos, annotations : path or None
        The video and annotation folders; by default the first of
        ``videos/``, ``TH14_test_set_mp4/``, ``.`` that holds a video, and the
        first of ``.``, ``annotation/``, ``annotations/``,
        ``TH14_Temporal_annotations_test/annotation/`` that holds
        ``*_<subset>.txt`` files.

    Returns
    -------
    Dataset
        Items sorted by video name, ``label`` None, segments sorted by start;
        ``ambiguous`` holds the ``Ambiguous`` segments of the items.

    Raises
    ------
    DatasetError
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: not a folder")
    if annotations is None:
        ann_dir = _first_dir(root, THUMOS14_ANNOTATION_DIRS, lambda d: _has_thumos_files(d, subset))
        if ann_dir is None:
            raise DatasetError(
                f"{root}: no '<Class>_{subset}.txt' annotation file in "
                f"{', '.join(d + '/' for d in THUMOS14_ANNOTATION_DIRS)}"
            )
    else:
        ann_dir = os.path.abspath(os.fspath(annotations))
        if not os.path.isdir(ann_dir) or not _has_thumos_files(ann_dir, subset):
            raise DatasetError(f"{ann_dir}: no '<Class>_{subset}.txt' annotation file in this folder")
    pattern = re.compile(r"^(.+)_" + re.escape(subset) + r"\.txt$")
    files = sorted(n for n in os.listdir(ann_dir) if pattern.match(n))
    labels = [pattern.match(n).group(1) for n in files]
    class_file = None
    if classes is not None:
        class_names = _given_classes(classes, root)
    else:
        for name in ("detclasslist.txt", "classInd.txt"):
            class_file = next(
                (p for p in (os.path.join(ann_dir, name), os.path.join(root, name)) if os.path.isfile(p)),
                None,
            )
            if class_file:
                break
        if class_file:
            class_names = read_class_list(class_file)
        else:
            class_names = tuple(sorted(lb for lb in labels if lb != "Ambiguous"))
            if not class_names:
                raise DatasetError(f"{ann_dir}: only Ambiguous_{subset}.txt; no class annotation file")
    index = _class_index(class_names)
    segments, first_seen, ambiguous = {}, {}, {}
    for name, label in zip(files, labels, strict=True):
        path = os.path.join(ann_dir, name)
        if label != "Ambiguous" and label not in index:
            source = class_file or "the given classes"
            raise DatasetError(f"{path}:1: class {label!r} (from the file name) is not in {source}")
        with _as_dataset_errors():
            for lineno, row in iter_thumos14_temporal(path, label=label):
                where = f"{path}:{lineno}"
                rate = _fps_for(fps, row.video, where)
                f1, f2 = seconds_to_frames(row.start, row.end, rate) if rate else (None, None)
                if label == "Ambiguous":
                    ambiguous.setdefault(row.video, []).append((row.start, row.end))
                    continue
                segments.setdefault(row.video, []).append(GTSegment(index[label], row.start, row.end, f1, f2))
                first_seen.setdefault(row.video, where)
    if not segments:
        raise DatasetError(f"{ann_dir}: no annotated segment in the '*_{subset}.txt' files")
    if videos is None:
        video_dirs = [os.path.normpath(os.path.join(root, d)) for d in THUMOS14_VIDEO_DIRS]
    else:
        video_dirs = [os.path.abspath(os.fspath(videos))]
        if not os.path.isdir(video_dirs[0]):
            raise DatasetError(f"{video_dirs[0]}: the video folder does not exist")
    box_dir = _box_folder(root, boxes, "boxes")
    if box_dir is not None and not os.path.isdir(box_dir):
        raise DatasetError(f"{box_dir}: THUMOS14 boxes are a folder of '<video>.txt' files")
    listing = _Listing()
    items, missing = [], []
    for video in sorted(segments):
        where = first_seen[video]
        path = next((p for d in video_dirs if (p := listing.find(d, video, where))), None)
        if path is None:
            missing.append(where + f": video {video!r}")
            continue
        rate = _fps_for(fps, video, where)
        box_file = os.path.join(box_dir, video + ".txt") if box_dir else None
        boxes_of = None
        if box_file and os.path.isfile(box_file):
            boxes_of = _sorted_boxes(_read_text_boxes(box_file, f"boxes of {video}"))
        segs = tuple(sorted(segments[video], key=lambda s: (s.start, s.end, s.label)))
        items.append(VideoItem(video, path, None, segs, boxes_of, rate))
    if missing:
        more = f" ({len(missing) - 1} more annotated videos are missing)" if len(missing) > 1 else ""
        shown = ", ".join(video_dirs)
        raise DatasetError(
            f"{missing[0]} not found in {shown} (a file {{name}}.mp4, .avi, ... or a folder of frames){more}"
        )
    amb = {it.video_id: tuple(sorted(ambiguous[it.video_id])) for it in items if it.video_id in ambiguous}
    return Dataset("thumos14", root, class_names, tuple(items), amb)


# ----------------------------------------------------------------------------- UCF101 (+ UCF101-24 boxes)


_UCF_NAME = re.compile(r"^v_(.+)_g\d+_c\d+$")


def _safe_relpath(rel, where):
    rel = rel.replace("\\", "/")
    parts = rel.split("/")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or any(p in ("", ".", "..") for p in parts):
        raise DatasetError(
            f"{where}: expected a relative path 'Class/v_Class_gXX_cYY.avi', got {_short(rel)}"
        )
    return parts


def _read_testlist(path, class_names):
    """``[(video_id, rel_parts, label, where)]`` of a ``testlistNN.txt``."""
    index = _class_index(class_names)
    rows, seen = [], {}
    for lineno, text in _lines(path):
        where = f"{path}:{lineno}"
        fields = text.split()
        if len(fields) not in (1, 2) or (len(fields) == 2 and not fields[1].isdigit()):
            raise DatasetError(
                f"{where}: expected 'Class/v_Class_gXX_cYY.avi' (optionally a 1-based class "
                f"index), got {_short(text)}"
            )
        parts = _safe_relpath(fields[0], where)
        stem, ext = os.path.splitext(parts[-1])
        stem = stem if ext.lower() in VIDEO_EXTENSIONS else parts[-1]
        m = _UCF_NAME.match(stem)
        folder_class = parts[-2] if len(parts) > 1 else None
        name_class = m.group(1) if m else None
        if folder_class and name_class and folder_class != name_class:
            raise DatasetError(
                f"{where}: folder class {folder_class!r} and file name class {name_class!r} differ"
            )
        cls = folder_class or name_class
        if cls is None:
            raise DatasetError(
                f"{where}: cannot tell the class of {_short(fields[0])} (no 'Class/' folder, "
                "no 'v_Class_gXX_cYY' name)"
            )
        if cls not in index:
            raise DatasetError(f"{where}: class {cls!r} is not in classInd.txt")
        if len(fields) == 2 and int(fields[1]) != index[cls] + 1:
            raise DatasetError(f"{where}: class index {fields[1]} is not that of {cls!r} ({index[cls] + 1})")
        video_id = "/".join(parts[:-1] + [stem])
        if video_id in seen:
            raise DatasetError(f"{where}: video {video_id!r} already listed on line {seen[video_id]}")
        seen[video_id] = lineno
        rows.append((video_id, parts, index[cls], where))
    if not rows:
        raise DatasetError(f"{path}: no video listed")
    return rows


def _mat_expanded_size(path, limit):
    """Bytes of a MAT-file once its compressed elements are inflated (streamed; stops past ``limit``)."""
    import struct

    total = 0
    with open(path, "rb") as f:
        header = f.read(128)
        if len(header) < 128:
            raise DatasetError(f"{path}: not a MAT-file (shorter than its 128-byte header)")
        if header[:19] == b"MATLAB 7.3 MAT-file" or header[126:128] not in (b"IM", b"MI"):
            raise DatasetError(f"{path}: not a MATLAB 5 MAT-file (save it with '-v7'; v7.3/HDF5 is not read)")
        order = "<" if header[126:128] == b"IM" else ">"
        while True:
            tag = f.read(8)
            if len(tag) < 8:
                return total
            dtype, nbytes = struct.unpack(order + "II", tag)
            if dtype != 15:  # miCOMPRESSED
                total += 8 + nbytes
                f.seek(nbytes + (-nbytes % 8), os.SEEK_CUR)
            else:
                inflate, left = zlib.decompressobj(), nbytes
                while left > 0:
                    chunk = f.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
                    data = inflate.decompress(chunk, limit + 1 - total)
                    while True:
                        total += len(data)
                        if total > limit:
                            return total
                        if not inflate.unconsumed_tail:
                            break
                        data = inflate.decompress(inflate.unconsumed_tail, limit + 1 - total)
            if total > limit:
                return total


def _mat_scalar(value, what, where):
    a = numpy.asarray(value)
    if a.dtype.kind not in "iuf" or a.size != 1 or not numpy.isfinite(a.reshape(-1)[0]):
        shown = _short(a.tolist() if a.size < 9 else a)
        raise DatasetError(f"{where}: {what} must be one finite number, got {shown}")
    v = float(a.reshape(-1)[0])
    if v != int(v):
        raise DatasetError(f"{where}: {what} must be an integer, got {v}")
    return int(v)


def _mat_string(value):
    a = numpy.asarray(value)
    if a.dtype.kind == "U" and a.size == 1:
        return str(a.reshape(-1)[0])
    if a.dtype.kind == "U" and a.ndim == 2 and a.shape[0] == 1:  # char matrix read without chars_as_strings
        return "".join(a.reshape(-1))
    return None


def _records(value):
    """The elements of a MATLAB struct array (a NumPy record array) as a flat list; [] when empty."""
    a = numpy.asarray(value)
    if a.dtype.names is None:
        if a.size == 0:
            return []
        return None
    return list(a.reshape(-1, order="F"))


def _read_ucf24_mat(path, wanted, class_names, box_classes):
    """Boxes of the ``wanted`` videos from a ``finalAnnots.mat``: ``{video_id: {frame: [box]}}``."""
    import scipy.io

    try:
        size = _mat_expanded_size(path, MAX_MAT_BYTES)
    except zlib.error as e:
        raise DatasetError(f"{path}: a compressed part of the MAT-file is corrupt ({e})") from None
    if size > MAX_MAT_BYTES:
        raise DatasetError(f"{path}: more than {MAX_MAT_BYTES >> 20} MiB once decompressed; refused")
    try:
        mat = scipy.io.loadmat(
            path, squeeze_me=False, struct_as_record=True, chars_as_strings=True, variable_names=["annot"]
        )
    except (ValueError, TypeError, OSError, EOFError, NotImplementedError, IndexError, KeyError) as e:
        raise DatasetError(f"{path}: not a readable MAT-file ({type(e).__name__}: {e})") from None
    if "annot" not in mat:
        raise DatasetError(f"{path}: no variable 'annot' (the corrected UCF101-24 annotations' struct array)")
    entries = _records(mat["annot"])
    if entries is None or (entries and not {"name", "num_imgs", "tubes"} <= set(mat["annot"].dtype.names)):
        names = getattr(mat["annot"].dtype, "names", None)
        raise DatasetError(
            f"{path}: 'annot' must be a struct array with fields name, num_imgs, tubes; got fields {names}"
        )
    out, seen = {}, {}
    for i, entry in enumerate(entries, start=1):
        where = f"{path}: annot({i})"
        name = _mat_string(entry["name"])
        if name is None:
            raise DatasetError(f"{where}: 'name' must be a string like 'Class/v_Class_gXX_cYY'")
        where = f"{where} {name!r}"
        if name not in wanted:
            continue
        if name in seen:
            raise DatasetError(f"{where}: the video is also annot({seen[name]})")
        seen[name] = i
        num_imgs = _mat_scalar(entry["num_imgs"], "num_imgs", where)
        tubes = _records(entry["tubes"])
        if tubes is None or (tubes and not {"sf", "ef", "class", "boxes"} <= set(entry["tubes"].dtype.names)):
            raise DatasetError(f"{where}: 'tubes' must be a struct array with fields sf, ef, class, boxes")
        per_frame = {}
        for j, tube in enumerate(tubes, start=1):
            tw = f"{where} tubes({j})"
            sf, ef = _mat_scalar(tube["sf"], "sf", tw), _mat_scalar(tube["ef"], "ef", tw)
            cls = _mat_scalar(tube["class"], "class", tw)
            if not 1 <= sf <= ef <= num_imgs:
                raise DatasetError(f"{tw}: need 1 <= sf <= ef <= num_imgs = {num_imgs}, got sf={sf}, ef={ef}")
            if not 1 <= cls <= len(box_classes) or box_classes[cls - 1] != class_names[wanted[name]]:
                got = box_classes[cls - 1] if 1 <= cls <= len(box_classes) else "out of range"
                raise DatasetError(
                    f"{tw}: class {cls} ({got}) is not the video's class {class_names[wanted[name]]!r}"
                )
            b = numpy.asarray(tube["boxes"])
            if b.dtype.kind not in "iuf" or b.ndim != 2 or b.shape != (ef - sf + 1, 4):
                raise DatasetError(
                    f"{tw}: 'boxes' must be {ef - sf + 1} x 4 numbers (one 'x y w h' row per "
                    f"frame sf..ef), got {b.dtype} {b.shape}"
                )
            b = b.astype(numpy.float64)
            for k, (x, y, w, h) in enumerate(b.tolist()):
                if not (w >= 1 and h >= 1):
                    raise DatasetError(
                        f"{tw}: row {k + 1} of boxes: width and height must be >= 1, got {[x, y, w, h]}"
                    )
                box = _check_box((x - 1, y - 1, x + w - 2, y + h - 2), f"{tw}: row {k + 1} of boxes")
                per_frame.setdefault(sf - 1 + k, []).append(box)
        if per_frame:
            out[name] = per_frame
    return out


def _read_ucf_text_boxes(box_dir, video_id):
    for rel in (video_id + ".txt", video_id.split("/")[-1] + ".txt"):
        p = os.path.join(box_dir, *rel.split("/"))
        if os.path.isfile(p):
            return _read_text_boxes(p, f"boxes of {video_id}")
    return None


def read_ucf101(root, split=1, *, boxes=None, box_classes=None):
    """List a UCF101 test split, optionally restricted to the UCF101-24 videos with boxes.

    Parameters
    ----------
    root : str or os.PathLike
        Holds ``classInd.txt`` and ``testlistNN.txt`` (in the folder itself or
        in ``ucfTrainTestlist/``, as the official split archive unpacks), and
        the videos: ``<root>/<Class>/<name>``, ``<root>/UCF-101/<Class>/<name>``
        (the official archive), ``<root>/videos/<Class>/<name>``, or flat in
        ``<root>/videos/`` or ``<root>``. A video may also be the same name
        with another video extension (a transcoded copy) or a folder of frames
        named like the video without extension.
    split : int
        The test list ``testlist0<split>.txt``.
    boxes : None, False or path
        UCF101-24 boxes: the corrected annotations' ``finalAnnots.mat``, or a
        folder of text box files ``<Class>/<name>.txt`` or ``<name>.txt``
        (``frame x1 y1 x2 y2``, 0-based, inclusive). None uses
        ``finalAnnots.mat`` beside the lists or in the root when present;
        False reads no boxes. With boxes, the items are the test videos that
        have boxes.
    box_classes : sequence of str or None
        The list the tubes' 1-based ``class`` field counts in; by default
        :data:`UCF101_24_CLASSES` when ``classInd.txt`` holds all 24 names,
        else the ``classInd.txt`` classes themselves.

    Returns
    -------
    Dataset
        Items in test-list order; ``video_id`` is the list's path without
        extension (``Class/v_Class_gXX_cYY``, the ``name`` of the ``.mat``
        entries); ``label`` indexes the ``classInd.txt`` classes; ``fps`` None.

    Raises
    ------
    DatasetError

    Notes
    -----
    ``finalAnnots.mat`` holds a struct array ``annot``, one entry per video:
    ``name``, ``num_imgs`` and ``tubes``, a struct array with ``sf``, ``ef``
    (first and last frame, 1-based, inclusive), ``class`` (1-based in
    ``box_classes``) and ``boxes``, one ``x y w h`` row per frame ``sf..ef``
    (MATLAB pixels: 1-based, ``w`` and ``h`` in pixels). They become 0-based
    frames and inclusive 0-based boxes: frame ``sf - 1 + k`` for row ``k``,
    ``x1 = x - 1``, ``y1 = y - 1``, ``x2 = x1 + w - 1``, ``y2 = y1 + h - 1``.
    Only the entries of the listed test videos are read and checked.
    """
    root = os.path.abspath(os.fspath(root))
    if not isinstance(split, int) or isinstance(split, bool) or not 1 <= split <= 99:
        raise DatasetError(f"{root}: split must be an integer in [1, 99], got {split!r}")
    list_dir = _first_dir(root, UCF101_LIST_DIRS, lambda d: os.path.isfile(os.path.join(d, "classInd.txt")))
    if list_dir is None:
        raise DatasetError(f"{root}: no classInd.txt in {', '.join(d + '/' for d in UCF101_LIST_DIRS)}")
    class_names = read_class_list(os.path.join(list_dir, "classInd.txt"), contiguous=True)
    test_list = os.path.join(list_dir, f"testlist{split:02d}.txt")
    if not os.path.isfile(test_list):
        raise DatasetError(f"{test_list}: no such test list (split {split})")
    rows = _read_testlist(test_list, class_names)
    listing = _Listing()
    video_dirs = [os.path.join(root, d) for d in UCF101_VIDEO_DIRS]
    found, missing = {}, []
    for video_id, parts, _label, where in rows:
        candidates = [os.path.join(d, *parts) for d in video_dirs] + [
            os.path.join(root, "videos", parts[-1]),
            os.path.join(root, parts[-1]),
        ]
        path = None
        for c in candidates:
            path = listing.find(os.path.dirname(c), os.path.basename(c), where)
            if path:
                break
        if path is None:
            missing.append(f"{where}: video {'/'.join(parts)!r}")
        found[video_id] = path
    if missing:
        more = f" ({len(missing) - 1} more listed videos are missing)" if len(missing) > 1 else ""
        raise DatasetError(
            f"{missing[0]} not found under {root} (looked in <Class>/, UCF-101/<Class>/, "
            f"videos/<Class>/, videos/ and the root){more}"
        )
    if boxes is None:
        defaults = (os.path.join(list_dir, "finalAnnots.mat"), os.path.join(root, "finalAnnots.mat"))
        box_path = next((p for p in defaults if os.path.isfile(p)), None)
    else:
        box_path = _box_folder(root, boxes, "finalAnnots.mat")
    per_video = None
    if box_path is not None:
        wanted = {video_id: label for video_id, _, label, _ in rows}
        if os.path.isdir(box_path):
            per_video = {}
            for video_id in wanted:
                b = _read_ucf_text_boxes(box_path, video_id)
                if b:
                    per_video[video_id] = b
        else:
            if box_classes is None:
                box_classes = UCF101_24_CLASSES if set(UCF101_24_CLASSES) <= set(class_names) else class_names
            box_classes = _given_classes(box_classes, box_path)
            per_video = _read_ucf24_mat(box_path, wanted, class_names, box_classes)
        if not per_video:
            raise DatasetError(f"{box_path}: no video of {test_list} has boxes")
    items = []
    for video_id, _parts, label, _where in rows:
        if per_video is None:
            items.append(VideoItem(video_id, found[video_id], label, (), None, None))
        elif video_id in per_video:
            boxes_of = _sorted_boxes(per_video[video_id])
            items.append(VideoItem(video_id, found[video_id], label, (), boxes_of, None))
    return Dataset("ucf101", root, class_names, tuple(items), {})


# ----------------------------------------------------------------------------- manifest


class _Raw(NamedTuple):
    where: str
    video_id: str
    path: str
    label: str | None
    segments: list  # of (label, start, end, where)
    boxes: dict | None
    fps: float | None


def _manifest_path(path):
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        found = [os.path.join(path, n) for n in MANIFEST_NAMES if os.path.isfile(os.path.join(path, n))]
        if len(found) != 1:
            what = "both" if found else "neither"
            names = ", ".join(MANIFEST_NAMES)
            raise DatasetError(f"{path}: expected one manifest file, found {what} of {names}")
        path = found[0]
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such manifest file")
    return path


@contextmanager
def _csv_field_limit(n):
    old = csv.field_size_limit(n)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _json_cell(text, what, where):
    try:
        return json.loads(text)
    except ValueError as e:
        raise DatasetError(f"{where}: the {what} column is not JSON ({e})") from None


def _manifest_records(path):
    """``(where, record dict)`` of a manifest, and the classes of a ``{"classes": [...]}`` line (JSONL)."""
    records, classes = [], None
    if path.lower().endswith(".csv"):
        header = None
        with _csv_field_limit(MAX_LINE_CHARS + 1):
            for lineno, text in _lines(path):
                where = f"{path}:{lineno}"
                try:
                    cells = next(csv.reader([text], strict=True))
                except csv.Error as e:
                    raise DatasetError(f"{where}: not a CSV line ({e})") from None
                if header is None:
                    header = [c.strip() for c in cells]
                    bad = [c for c in header if c not in MANIFEST_FIELDS]
                    if "path" not in header or bad or len(set(header)) != len(header):
                        raise DatasetError(
                            f"{where}: the header must name distinct columns among "
                            f"{', '.join(MANIFEST_FIELDS)} including path, got {_short(text)}"
                        )
                    continue
                if len(cells) != len(header):
                    raise DatasetError(f"{where}: {len(cells)} columns, the header has {len(header)}")
                rec = {}
                for key, cell in zip(header, cells, strict=True):
                    cell = cell.strip()
                    if cell == "":
                        continue
                    if key in ("segments", "boxes"):
                        rec[key] = _json_cell(cell, key, where)
                    elif key == "fps":
                        try:
                            rec[key] = float(cell)
                        except ValueError:
                            raise DatasetError(f"{where}: fps must be a number, got {_short(cell)}") from None
                    else:
                        rec[key] = cell
                records.append((where, rec))
        if header is None:
            raise DatasetError(f"{path}: empty CSV manifest (no header line 'path,label,segments,boxes')")
        return records, classes
    for lineno, text in _lines(path):
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(text)
        except ValueError as e:
            raise DatasetError(f"{where}: not a JSON object ({e})") from None
        if not isinstance(rec, dict):
            raise DatasetError(f"{where}: each line must be a JSON object, got {type(rec).__name__}")
        if set(rec) == {"classes"}:
            if records or classes is not None:
                raise DatasetError(f'{where}: the {{"classes": [...]}} line must be the first line')
            classes = rec["classes"]
            names_ok = isinstance(classes, list) and all(isinstance(c, str) and c for c in classes)
            if not names_ok or not classes or len(set(classes)) != len(classes):
                raise DatasetError(f"{where}: 'classes' must be a list of distinct non-empty names")
            classes = (tuple(classes), where)
            continue
        records.append((where, rec))
    return records, classes


def _raw_record(where, rec, base, default_fps):
    unknown = sorted(set(rec) - set(MANIFEST_FIELDS))
    if unknown:
        raise DatasetError(
            f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(MANIFEST_FIELDS)}"
        )
    rel = rec.get("path")
    if not isinstance(rel, str) or not rel.strip():
        raise DatasetError(f"{where}: 'path' must be a non-empty string, got {_short(rel)}")
    path = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(base, rel))
    if not os.path.exists(path):
        raise DatasetError(f"{where}: video {rel!r} not found ({path})")
    label = rec.get("label")
    if label is not None and (not isinstance(label, str) or not label):
        raise DatasetError(f"{where}: 'label' must be a class name or null, got {_short(label)}")
    video_id = rec.get("id")
    if video_id is None:
        shown = os.path.relpath(path, base) if path.startswith(base + os.sep) else path
        video_id = os.path.splitext(shown)[0].replace(os.sep, "/")
    elif not isinstance(video_id, str) or not video_id:
        raise DatasetError(f"{where}: 'id' must be a non-empty string, got {_short(video_id)}")
    fps = rec.get("fps")
    if fps is not None and (not _is_number(fps) or fps <= 0):
        raise DatasetError(f"{where}: 'fps' must be a positive number or null, got {_short(fps)}")
    fps = float(fps) if fps is not None else _fps_for(default_fps, video_id, where)
    segments = rec.get("segments") or []
    if not isinstance(segments, list):
        raise DatasetError(f"{where}: 'segments' must be a list of [label, start_sec, end_sec]")
    segs = []
    for s in segments:
        if not (
            isinstance(s, list)
            and len(s) == 3
            and isinstance(s[0], str)
            and s[0]
            and _is_number(s[1])
            and _is_number(s[2])
        ):
            raise DatasetError(f"{where}: a segment is [label, start_sec, end_sec], got {_short(s)}")
        if not 0 <= s[1] <= s[2]:
            raise DatasetError(f"{where}: a segment needs 0 <= start <= end, got {_short(s)}")
        segs.append((s[0], float(s[1]), float(s[2])))
    boxes = rec.get("boxes")
    per_frame = None
    if boxes is not None:
        if not isinstance(boxes, dict):
            raise DatasetError(f"{where}: 'boxes' must be an object {{\"frame\": [[x1, y1, x2, y2], ...]}}")
        per_frame = {}
        for key, rows in boxes.items():
            if not re.fullmatch(r"[0-9]{1,9}", str(key)):
                raise DatasetError(f"{where}: a boxes key is a 0-based frame index, got {_short(key)}")
            frame = _check_frame(int(key), where)
            if not isinstance(rows, list):
                raise DatasetError(f"{where}: boxes of frame {key} must be a list of [x1, y1, x2, y2]")
            checked = [_check_box(b, f"{where}: frame {key}") for b in rows]
            if checked:
                per_frame.setdefault(frame, []).extend(checked)
    return _Raw(where, video_id, path, label, segs, per_frame, fps)


def read_manifest(path, *, classes=None, fps=None):
    """List the videos of a manifest file (JSON lines or CSV).

    Parameters
    ----------
    path : str or os.PathLike
        ``*.jsonl`` / ``*.json`` (one JSON object per line) or ``*.csv``; or a
        folder holding ``manifest.jsonl`` or ``manifest.csv``.
    classes : sequence of str or None
        The class list. By default: a ``{"classes": [...]}`` first line
        (JSONL), else a ``classes.txt`` beside the manifest (one name a line,
        or ``index name`` lines), else the sorted names of every label and
        segment label seen.
    fps : float, mapping {video_id: fps}, or None
        Frame rate of the records without their own ``fps``.

    Returns
    -------
    Dataset
        Items in file order; ``root`` is the manifest file.

    Raises
    ------
    DatasetError

    Notes
    -----
    A JSON line is ``{"path": "videos/a.mp4", "label": "Diving" or null,
    "segments": [["Diving", start_sec, end_sec], ...], "boxes": {"12":
    [[x1, y1, x2, y2], ...], ...}, "fps": 25.0, "id": "a"}``; only ``path`` is
    required, and no other field is accepted (a misspelt field is an error, not
    silently ignored). Paths are relative to the manifest's folder (or
    absolute) and name a video file or a folder of frames. Boxes are keyed by
    0-based frame (a string, as JSON keys are) and are inclusive pixels; a
    frame with an empty list is left out. ``id`` defaults to the path relative
    to the manifest's folder without its extension.

    A CSV manifest starts with a header naming its columns, among ``path``
    (required), ``label``, ``segments``, ``boxes``, ``fps``, ``id``; the
    ``segments`` and ``boxes`` cells hold the JSON above (CSV-quoted), an empty
    cell means none. One record per line (JSON needs no line breaks).
    Blank lines and lines starting with ``#`` are skipped in both forms.
    """
    path = _manifest_path(path)
    base = os.path.dirname(path)
    records, class_line = _manifest_records(path)
    if not records:
        raise DatasetError(f"{path}: no video listed")
    raws = [_raw_record(where, rec, base, fps) for where, rec in records]
    source = None
    if classes is not None:
        class_names, source = _given_classes(classes, path), "the given classes"
    elif class_line is not None:
        class_names, source = class_line[0], f"the classes line ({class_line[1]})"
    elif os.path.isfile(os.path.join(base, "classes.txt")):
        source = os.path.join(base, "classes.txt")
        class_names = read_class_list(source)
    else:
        seen = {r.label for r in raws if r.label is not None} | {s[0] for r in raws for s in r.segments}
        class_names = tuple(sorted(seen))
    index = _class_index(class_names)
    items, ids = [], {}
    for r in raws:
        for name in [r.label] * (r.label is not None) + [s[0] for s in r.segments]:
            if name not in index:
                raise DatasetError(f"{r.where}: class {name!r} is not in {source}")
        if r.video_id in ids:
            raise DatasetError(f"{r.where}: video id {r.video_id!r} already used at {ids[r.video_id]}")
        ids[r.video_id] = r.where
        segs = []
        for name, t1, t2 in r.segments:
            f1, f2 = seconds_to_frames(t1, t2, r.fps) if r.fps else (None, None)
            segs.append(GTSegment(index[name], t1, t2, f1, f2))
        label = None if r.label is None else index[r.label]
        boxes = None if r.boxes is None else _sorted_boxes(r.boxes)
        items.append(VideoItem(r.video_id, r.path, label, tuple(segs), boxes, r.fps))
    return Dataset("manifest", path, class_names, tuple(items), {})
