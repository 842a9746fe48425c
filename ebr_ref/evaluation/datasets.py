"""Dataset readers: the items (video file, label, ground-truth segments, per-frame boxes) of a dataset folder.

Layouts: THUMOS14 test, UCF101 (+ UCF101-24 boxes), and a plain manifest.
Every reader checks the whole dataset up front and raises :class:`DatasetError`
naming the file and line of the first problem, before any work is scheduled.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DatasetError", "GTSegment", "VideoItem", "Dataset"]


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
    boxes: dict | None  # {frame index: ((x1, y1, x2, y2), ...)} inclusive pixels of the original video, or None
    fps: float | None  # frames per second when the layout records it (else read from the video)


class Dataset(NamedTuple):
    """A listed dataset: its layout, class names and items, plus ambiguous segments (THUMOS14)."""

    layout: str  # "thumos14", "ucf101" or "manifest"
    root: str
    class_names: tuple  # of str; item labels index into it
    items: tuple  # of VideoItem, in a stable order
    ambiguous: dict  # {video_id: ((start_sec, end_sec), ...)} segments that count neither way (THUMOS14)
