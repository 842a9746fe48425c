"""Readers for the ground truth of the paper's benchmarks (§5.1, §5.2).

Two text layouts are supported, and only these:

1. **THUMOS14 temporal annotations**, as distributed with the THUMOS14
   evaluation kit: one file per class named ``<Class>_<subset>.txt``
   (``BaseballPitch_test.txt``, ``Ambiguous_test.txt``, ...), one segment per
   line ``video_name start_sec end_sec`` separated by white space, e.g.
   ``video_test_0000004 0.2 1.1``.
2. **Per-frame boxes** in a plain text layout of our choosing (the original
   UCF101-24 / THUMOS13 boxes come as VIPeR XML, and the corrected UCF101-24
   annotations of Singh et al. as ``.mat``/pickle files; neither is read
   here -- convert them to this layout first): one box per line
   ``frame x1 y1 x2 y2`` (or ``frame x y w h`` with ``box_format="xywh"``),
   separated by white space or commas; several lines may share a frame (several
   people). Boxes are inclusive pixel coordinates (see
   :mod:`ebr_ref.evaluation.localize`); ``xywh`` converts as ``x2 = x + w - 1``,
   ``y2 = y + h - 1``.

In both layouts blank lines and lines starting with ``#`` are skipped. A
malformed line raises ``ValueError`` naming the file and the 1-based line
number; so does a line longer than ``MAX_LINE_CHARS`` bytes (read in
bounded pieces, never whole) or one that is not UTF-8.

Seconds to frames
-----------------
Frame ``k`` of a video at ``fps`` frames per second spans the time
``[k / fps, (k + 1) / fps)``. A segment ``[t1, t2]`` in seconds becomes the
inclusive frames that overlap it: ``start = floor(t1 * fps)``,
``end = ceil(t2 * fps) - 1`` (at least ``start``). Products are rounded to
1e-6 frame first, so ``0.1 s * 30 fps`` is frame 3 and not 3.0000000000000004.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import NamedTuple

import numpy

__all__ = [
    "TemporalAnnotation",
    "FrameBoxes",
    "seconds_to_frames",
    "read_thumos14_temporal",
    "iter_thumos14_temporal",
    "read_thumos14_dir",
    "read_frame_boxes",
    "iter_frame_boxes",
    "iter_content_lines",
    "MAX_LINE_CHARS",
]

MAX_LINE_CHARS = 1 << 20  # longest annotation line read, in bytes (1 MiB); a longer one is an error


class TemporalAnnotation(NamedTuple):
    """One annotated segment; duck-types as :class:`ebr_ref.evaluation.metrics.Segment` (in seconds)."""

    video: str
    label: str
    start: float  # seconds
    end: float  # seconds
    start_frame: int | None  # inclusive frame interval, None without fps
    end_frame: int | None


class FrameBoxes(NamedTuple):
    """Per-frame boxes of one video, sorted by frame (stable)."""

    frames: numpy.ndarray  # (n,) int64, 0-based frame index
    boxes: numpy.ndarray  # (n, 4) float64, inclusive (x1, y1, x2, y2)

    def per_frame(self, num_frames):
        """A list of ``num_frames`` arrays of shape ``(k_t, 4)`` (``(0, 4)`` when unannotated).

        This is the ``boxes`` argument of :func:`ebr_ref.evaluation.localize.pointing_game`.

        Raises
        ------
        ValueError
            When a box lies on a frame ``>= num_frames``.
        """
        if self.frames.size and int(self.frames.max()) >= num_frames:
            raise ValueError(
                f"FrameBoxes.per_frame: box on frame {int(self.frames.max())} >= num_frames={num_frames}"
            )
        return [self.boxes[self.frames == t] for t in range(num_frames)]


def seconds_to_frames(start_sec, end_sec, fps):
    """Inclusive frame interval of a segment in seconds (see the module notes).

    Examples
    --------
    >>> seconds_to_frames(0.1, 1.0, 30)
    (3, 29)
    """
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"seconds_to_frames: fps must be positive, got {fps!r}")
    if not (0 <= start_sec <= end_sec) or not math.isfinite(end_sec):
        raise ValueError(f"seconds_to_frames: need 0 <= start <= end, got ({start_sec!r}, {end_sec!r})")
    start = math.floor(round(start_sec * fps, 6))
    end = max(start, math.ceil(round(end_sec * fps, 6)) - 1)
    return start, end


def _fps_of(fps, video, where):
    if fps is None:
        return None
    if isinstance(fps, Mapping):
        if video not in fps:
            raise ValueError(f"{where}: no fps given for video {video!r}")
        return float(fps[video])
    return float(fps)


def iter_content_lines(path, max_chars=MAX_LINE_CHARS):
    """``(lineno, stripped text)`` of a text file's content lines (not blank, not starting with ``#``).

    Lines (ended by ``\\n``; a ``\\r`` before it is stripped) are read one at a
    time with a length limit of ``max_chars`` bytes, so a hostile file costs at
    most that much memory per line; a longer line, or bytes that are not UTF-8,
    raise ``ValueError`` naming ``file:line``. A UTF-8 byte-order mark is skipped.
    """
    with open(path, "rb") as f:
        lineno = 0
        while True:
            lineno += 1
            raw = f.readline(max_chars + 1)
            if not raw:
                return
            if len(raw) > max_chars and not raw.endswith(b"\n"):
                raise ValueError(f"{path}:{lineno}: line longer than {max_chars} bytes")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if text and not text.startswith("#"):
                yield lineno, text


def _label_from_name(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    label, sep, _subset = stem.rpartition("_")
    if not sep or not label:
        raise ValueError(f"{path}: cannot take the class from the file name; expected '<Class>_<subset>.txt'")
    return label


def read_thumos14_temporal(path, fps=None, *, label=None):
    """Read one THUMOS14 ``<Class>_<subset>.txt`` file.

    Parameters
    ----------
    path : str or os.PathLike
    fps : float, mapping {video: fps}, or None
        Frame rate for the frame interval (THUMOS14 videos are mostly 30 fps,
        some about 25); None leaves the frame fields None.
    label : str or None
        The class; by default the file name without ``_<subset>.txt``.

    Returns
    -------
    list of TemporalAnnotation
        In file order.

    Raises
    ------
    ValueError
        For a line without exactly three fields, times that are not finite
        numbers, a negative start or ``end < start`` (message: ``file:line``).
    """
    return [row for _lineno, row in iter_thumos14_temporal(path, fps, label=label)]


def iter_thumos14_temporal(path, fps=None, *, label=None):
    """:func:`read_thumos14_temporal` with line numbers: yields ``(lineno, TemporalAnnotation)``.

    ``lineno`` is the 1-based line of the segment in the file (for messages
    about a segment that is well-formed but refers to something missing).
    """
    path = os.fspath(path)
    label = _label_from_name(path) if label is None else label
    for lineno, text in iter_content_lines(path):
        where = f"{path}:{lineno}"
        fields = text.split()
        if len(fields) != 3:
            raise ValueError(f"{where}: expected 'video_name start_sec end_sec', got {text!r}")
        video = fields[0]
        try:
            t1, t2 = float(fields[1]), float(fields[2])
        except ValueError:
            raise ValueError(f"{where}: start and end must be numbers (seconds), got {text!r}") from None
        if not (math.isfinite(t1) and math.isfinite(t2)) or t1 < 0 or t2 < t1:
            raise ValueError(f"{where}: need finite times with 0 <= start <= end, got {text!r}")
        rate = _fps_of(fps, video, where)
        f1, f2 = seconds_to_frames(t1, t2, rate) if rate is not None else (None, None)
        yield lineno, TemporalAnnotation(video, label, t1, t2, f1, f2)


def read_thumos14_dir(directory, subset="test", fps=None):
    """Read every ``*_<subset>.txt`` file of a THUMOS14 annotation folder.

    Parameters
    ----------
    directory : str or os.PathLike
    subset : str
        ``"test"`` or ``"val"`` (``validation`` kits name files ``_val.txt``).
    fps : float, mapping, or None
        As :func:`read_thumos14_temporal`.

    Returns
    -------
    ground_truth : list of TemporalAnnotation
        All classes except ``Ambiguous``, files in sorted name order.
    ambiguous : list of TemporalAnnotation
        The ``Ambiguous_<subset>.txt`` segments (empty when absent).

    Raises
    ------
    ValueError
        When no file matches, or for a malformed line.
    """
    directory = os.fspath(directory)
    pattern = re.compile(r"^(.+)_" + re.escape(subset) + r"\.txt$")
    names = sorted(n for n in os.listdir(directory) if pattern.match(n))
    if not names:
        raise ValueError(f"read_thumos14_dir: no '*_{subset}.txt' file in {directory}")
    gt, amb = [], []
    for n in names:
        rows = read_thumos14_temporal(os.path.join(directory, n), fps, label=pattern.match(n).group(1))
        (amb if rows and rows[0].label == "Ambiguous" else gt).extend(rows)
    return gt, amb


def read_frame_boxes(path, *, box_format="xyxy", one_based=False):
    """Read per-frame boxes (layout 2 of the module notes).

    Parameters
    ----------
    path : str or os.PathLike
    box_format : {"xyxy", "xywh"}
        ``frame x1 y1 x2 y2`` (inclusive corners) or ``frame x y w h``
        (top-left corner, width and height in pixels, ``w, h >= 1``).
    one_based : bool
        True when the file counts frames from 1 (Matlab-made files); the
        result is always 0-based.

    Returns
    -------
    FrameBoxes

    Raises
    ------
    ValueError
        For a line without exactly five fields, a non-integer or negative
        frame, non-finite coordinates, or an empty box (message: ``file:line``).
    """
    frames, boxes = [], []
    for _lineno, frame, box in iter_frame_boxes(path, box_format=box_format, one_based=one_based):
        frames.append(frame)
        boxes.append(box)
    frames = numpy.array(frames, dtype=numpy.int64)
    boxes = numpy.array(boxes, dtype=numpy.float64).reshape(-1, 4)
    order = numpy.argsort(frames, kind="stable")
    return FrameBoxes(frames[order], boxes[order])


def iter_frame_boxes(path, *, box_format="xyxy", one_based=False):
    """:func:`read_frame_boxes` line by line: yields ``(lineno, frame, (x1, y1, x2, y2))`` in file order.

    The frame is 0-based and the box inclusive ``xyxy`` whatever the file's
    layout; the checks and messages are those of :func:`read_frame_boxes`.
    """
    if box_format not in ("xyxy", "xywh"):
        raise ValueError(f"read_frame_boxes: box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    path = os.fspath(path)
    layout = "frame x1 y1 x2 y2" if box_format == "xyxy" else "frame x y w h"
    for lineno, text in iter_content_lines(path):
        where = f"{path}:{lineno}"
        fields = text.replace(",", " ").split()
        if len(fields) != 5:
            raise ValueError(f"{where}: expected '{layout}', got {text!r}")
        try:
            frame = int(fields[0])
            a, b, c, d = (float(v) for v in fields[1:])
        except ValueError:
            msg = f"{where}: expected an integer frame and four numbers ('{layout}'), got {text!r}"
            raise ValueError(msg) from None
        frame -= 1 if one_based else 0
        if frame < 0:
            raise ValueError(f"{where}: negative frame index in {text!r} (one_based={one_based})")
        if not all(math.isfinite(v) for v in (a, b, c, d)):
            raise ValueError(f"{where}: box coordinates must be finite, got {text!r}")
        if box_format == "xywh":
            if c < 1 or d < 1:
                raise ValueError(f"{where}: width and height must be >= 1, got {text!r}")
            c, d = a + c - 1, b + d - 1
        elif c < a or d < b:
            raise ValueError(f"{where}: need x2 >= x1 and y2 >= y1, got {text!r}")
        yield lineno, frame, (a, b, c, d)
