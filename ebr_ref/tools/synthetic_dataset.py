"""The synthetic action benchmarks written to disk as a dataset: real video files plus annotation files.

:func:`make_dataset` renders the clips of one of the benchmarks named in
:data:`ebr_ref.synthetic.BENCHMARKS` with that benchmark's ``make_clip``:
``"appearance"`` (the default; :mod:`ebr_ref.synthetic.actions`, 7 classes) or
``"motion"`` (:mod:`ebr_ref.synthetic.motion`, 8 classes told apart only by
motion). It encodes them with the ffmpeg binary that ``imageio-ffmpeg`` ships,
and writes the annotation files of one of the layouts that
:func:`ebr_ref.evaluation.datasets.read_dataset` reads, so the whole
evaluation (decode, preprocess, ground, localise, score) runs on real files
with no download. Decoding changes the pixels (lossy codecs, 4:2:0 chroma):
scores on these files differ a little from scores on the in-memory clips, which
:func:`dataset_clips` regenerates from the same seed
(``benchmarks/decoded_vs_memory.py`` reports both).

Layouts written (``OUT`` is the output folder; ``NNNNNNN`` counts clips from 1):

``thumos14`` (default kind ``"rand+GT+rand"``, 128 frames)::

    OUT/videos/video_test_NNNNNNN.mp4        H.264 (libx264, CRF 18, yuv420p)
    OUT/annotation/<class>_test.txt          one per class, 'video start_sec end_sec' lines (may be empty)
    OUT/annotation/Ambiguous_test.txt        empty: the synthetic clips have no ambiguous frames
    OUT/annotation/detclasslist.txt          'index name' lines, the benchmark's classes (ACTIONS order)
    OUT/boxes/video_test_NNNNNNN.txt         'frame x1 y1 x2 y2' of the GT actor (0-based, inclusive)
    OUT/synthetic.json                       how the clips were made (see dataset_clips)

``ucf101`` (kind ``"trimmed"``, 16 frames)::

    OUT/classInd.txt                         '1 slide' ... '7 flicker' (motion: '1 left' ... '8 shrink')
    OUT/testlist01.txt                       '<class>/v_<class>_gGG_cCC.avi' lines, in clip order
    OUT/<class>/v_<class>_gGG_cCC.avi        MPEG-4 part 2 in AVI (ffmpeg 'mpeg4', q 2), like UCF101's Xvid
    OUT/finalAnnots.mat                      the corrected UCF101-24 struct layout (scipy.io.savemat)
    OUT/synthetic.json

``manifest`` (default kind ``"rand+GT+rand"``, 128 frames)::

    OUT/manifest.jsonl                       {"classes": [...]} then one record per clip
    OUT/videos/clip_NNNNNNN.mp4              H.264 as above
    OUT/synthetic.json

Clip ``i`` (0-based) is ``make_clip(kind, i % NUM_CLASSES, seed=SeedSequence(seed).spawn(clips)[i], ...)``
of the benchmark's generator (``ebr_ref.synthetic.generator(benchmark)``; labels
cycle through its classes), and it is item ``i`` of the dataset read back. The
class names are the benchmark's ``ACTIONS`` (those of its shipped models),
single lower-case words, as the readers need: no white space (class lists are
``index name`` lines, test lists ``path [index]`` lines), and none named
``Ambiguous`` (THUMOS14's ``Ambiguous_test.txt``). Segments are written in
seconds chosen so that :func:`ebr_ref.evaluation.annotations.seconds_to_frames`
at the written frame rate gives back the generator's frames exactly (frame ``k`` spans
``[k / fps, (k + 1) / fps)``: start ``s / fps``, end ``(e + 1) / fps``).
Everything but the video files is byte-for-byte the same for the same
arguments (the MAT-file's header text, normally a time stamp, is fixed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

import numpy

from .. import __version__
from ..evaluation.annotations import seconds_to_frames
from ..evaluation.datasets import read_dataset
from ..synthetic import BENCHMARKS, generator

__all__ = [
    "LAYOUTS",
    "KINDS_OF",
    "BENCHMARKS",
    "make_dataset",
    "dataset_clips",
    "read_synthetic_spec",
    "to_uint8",
]

LAYOUTS = ("thumos14", "ucf101", "manifest")
KINDS_OF = {  # the clip kinds each layout can hold; the first is the default
    "thumos14": ("rand+GT+rand", "GT+rand", "rand+GT"),
    "ucf101": ("trimmed",),
    "manifest": ("rand+GT+rand", "GT+rand", "rand+GT", "trimmed"),
}
DEFAULT_FRAMES = {"trimmed": 16, "GT+rand": 16, "rand+GT": 16, "rand+GT+rand": 128}
MAX_CLIPS = 100_000
H264 = {"codec": "libx264", "ext": ".mp4", "params": ["-crf", "18", "-preset", "medium"]}
MPEG4 = {"codec": "mpeg4", "ext": ".avi", "params": ["-q:v", "2"]}
SPEC_FILE = "synthetic.json"
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by ebr_ref make-dataset"


def _check_int(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or not lo <= value <= hi:
        raise ValueError(f"make_dataset: {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _spec(layout, clips, seed, frames, size, fps, kind, gt_length, benchmark):
    """The checked generation parameters as a JSON-able dict."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"make_dataset: benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"make_dataset: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    kind = KINDS_OF[layout][0] if kind is None else kind
    if kind not in KINDS_OF[layout]:
        kinds = ", ".join(KINDS_OF[layout])
        raise ValueError(f"make_dataset: a {layout} dataset holds clips of kind {kinds}; got {kind!r}")
    clips = _check_int(clips, "clips", 1, MAX_CLIPS)
    seed = _check_int(seed, "seed", 0, 2**128 - 1)
    frames = DEFAULT_FRAMES[kind] if frames is None else _check_int(frames, "frames", 2, 100_000)
    if kind == "rand+GT+rand":
        if gt_length is None:
            gt_length = max(1, frames // 3)
        gt_length = _check_int(gt_length, "gt_length", 1, frames)
        if frames - gt_length < 2:
            raise ValueError(
                f"make_dataset: 'rand+GT+rand' needs frames - gt_length >= 2, got {frames}, {gt_length}"
            )
    elif gt_length is not None:
        raise ValueError(f"make_dataset: gt_length applies to 'rand+GT+rand' clips only (kind {kind!r})")
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"make_dataset: size must be (H, W), got {size!r}") from None
    if H < 16 or W < 16 or H % 2 or W % 2 or max(H, W) > 4096:
        raise ValueError(f"make_dataset: size must be even sides in [16, 4096] (4:2:0 video), got {size!r}")
    number = isinstance(fps, (int, float)) and not isinstance(fps, bool)
    if not number or not (math.isfinite(fps) and 1 <= fps <= 240):
        raise ValueError(f"make_dataset: fps must be a number in [1, 240], got {fps!r}")
    return {
        "benchmark": benchmark,
        "layout": layout,
        "kind": kind,
        "clips": clips,
        "seed": seed,
        "frames": frames,
        "gt_length": gt_length,
        "size": [H, W],
        "fps": float(fps),
    }


def dataset_clips(
    layout,
    *,
    clips,
    seed,
    frames=None,
    size=(64, 64),
    fps=25.0,
    kind=None,
    gt_length=None,
    benchmark="appearance",
):
    """The in-memory clips of :func:`make_dataset` with the same arguments (item ``i`` is clip ``i``).

    Parameters
    ----------
    layout, clips, seed, frames, size, fps, kind, gt_length, benchmark
        As :func:`make_dataset` (``fps`` is only checked).

    Returns
    -------
    list of ebr_ref.synthetic.SyntheticClip
        Rendered by the ``benchmark``'s generator; ``to_uint8(clip.frames)`` is
        what the encoder was given for video ``i``.
    """
    spec = _spec(layout, clips, seed, frames, size, fps, kind, gt_length, benchmark)
    return list(_clips(spec))


def _clips(spec, progress=None):
    gen = generator(spec["benchmark"])
    children = numpy.random.SeedSequence(spec["seed"]).spawn(spec["clips"])
    options = {"num_frames": spec["frames"], "size": tuple(spec["size"])}
    if spec["gt_length"] is not None:
        options["gt_length"] = spec["gt_length"]
    idx = range(spec["clips"])
    it = idx if progress is None else progress(idx, total=spec["clips"], desc="rendering and encoding")
    for i in it:
        yield gen.make_clip(spec["kind"], i % gen.NUM_CLASSES, seed=children[i], **options)


def read_synthetic_spec(root):
    """The generation parameters a dataset folder made by :func:`make_dataset` records, or None.

    Pass them to :func:`dataset_clips` (``dataset_clips(**spec)``, ``format``
    and ``ebr_ref_version`` removed) to regenerate the in-memory clips. A
    folder written before the motion benchmark existed records no
    ``benchmark``: its clips are the appearance benchmark's, and the
    returned dict says so (``"benchmark": "appearance"``).
    """
    path = os.path.join(os.fspath(root), SPEC_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    spec = {k: v for k, v in doc.items() if k not in ("format", "ebr_ref_version")}
    return {"benchmark": spec.pop("benchmark", "appearance"), **spec}


def to_uint8(frames):
    """``(T, 3, H, W)`` floats in ``[0, 1]`` -> ``(T, H, W, 3)`` uint8 (rounded): what the videos hold."""
    u = numpy.clip(numpy.rint(numpy.asarray(frames, dtype=numpy.float64) * 255.0), 0, 255).astype(numpy.uint8)
    return numpy.ascontiguousarray(u.transpose(0, 2, 3, 1))


def _write_video(path, frames_u8, fps, fmt):
    """Encode ``(T, H, W, 3)`` uint8 frames with imageio-ffmpeg's ffmpeg binary."""
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - the cli extra is installed in every test environment
        raise RuntimeError("writing videos needs imageio-ffmpeg: pip install 'ebr_ref[cli]'") from None
    T, H, W, _ = frames_u8.shape
    writer = imageio_ffmpeg.write_frames(
        path,
        (W, H),
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        fps=fps,
        codec=fmt["codec"],
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=list(fmt["params"]) + ["-map_metadata", "-1"],
    )
    writer.send(None)  # start ffmpeg
    try:
        for t in range(T):
            writer.send(frames_u8[t])
    finally:
        writer.close()
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise RuntimeError(f"{path}: ffmpeg wrote no video")


def _seconds(first, last, fps):
    """``(start_sec, end_sec)`` text of the inclusive frames ``[first, last]``, checked to read back."""
    t1, t2 = first / fps, (last + 1) / fps
    if seconds_to_frames(float(repr(t1)), float(repr(t2)), fps) != (first, last):  # pragma: no cover - a bug
        raise RuntimeError(f"seconds {t1!r}, {t2!r} do not give back frames {first}..{last} at {fps} fps")
    return repr(t1), repr(t2)


def _finite_runs(boxes):
    """``[(first, last)]`` inclusive runs of consecutive frames whose box is finite."""
    ok = numpy.all(numpy.isfinite(boxes), axis=1)
    runs, t = [], 0
    while t < len(ok):
        if ok[t]:
            s = t
            while t + 1 < len(ok) and ok[t + 1]:
                t += 1
            runs.append((s, t))
        t += 1
    return runs


def _box_lines(boxes):
    return "".join(
        f"{t} {int(b[0])} {int(b[1])} {int(b[2])} {int(b[3])}\n"
        for t, b in enumerate(boxes)
        if numpy.all(numpy.isfinite(b))
    )


def _write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _classes(spec):
    """The class names of the spec's benchmark, in label order."""
    return generator(spec["benchmark"]).ACTIONS


def _write_thumos14(tmp, spec, clips):
    for sub in ("videos", "annotation", "boxes"):
        os.makedirs(os.path.join(tmp, sub))
    actions = _classes(spec)
    per_class = {name: [] for name in actions}
    fps = spec["fps"]
    for i, clip in enumerate(clips, start=1):
        name = f"video_test_{i:07d}"
        _write_video(os.path.join(tmp, "videos", name + H264["ext"]), to_uint8(clip.frames), fps, H264)
        t1, t2 = _seconds(*clip.interval, fps)
        per_class[actions[clip.label]].append(f"{name} {t1} {t2}\n")
        _write_text(os.path.join(tmp, "boxes", name + ".txt"), _box_lines(clip.boxes))
    for cls, lines in per_class.items():
        _write_text(os.path.join(tmp, "annotation", f"{cls}_test.txt"), "".join(lines))
    _write_text(os.path.join(tmp, "annotation", "Ambiguous_test.txt"), "")
    _write_text(
        os.path.join(tmp, "annotation", "detclasslist.txt"),
        "".join(f"{k + 1} {n}\n" for k, n in enumerate(actions)),
    )


def _ucf_names(n, actions):
    """``Class/v_Class_gGG_cCC`` of clips ``0..n-1`` (labels cycling over ``actions``): 4 clips per group."""
    K = len(actions)
    count, out = [0] * K, []
    for i in range(n):
        k, cls = count[i % K], actions[i % K]
        count[i % K] += 1
        out.append(f"{cls}/v_{cls}_g{k // 4 + 1:02d}_c{k % 4 + 1:02d}")
    return out


def _write_mat(path, entries):
    """Write ``finalAnnots.mat``: struct array ``annot`` (num_imgs, name, tubes (ef, sf, class, boxes))."""
    import io

    import scipy.io

    annot = numpy.empty((1, len(entries)), dtype=[("num_imgs", "O"), ("name", "O"), ("tubes", "O")])
    for i, (name, num_imgs, tubes) in enumerate(entries):
        rec = numpy.empty((1, len(tubes)), dtype=[("ef", "O"), ("sf", "O"), ("class", "O"), ("boxes", "O")])
        for j, (sf, ef, cls, xywh) in enumerate(tubes):
            rec[0, j] = (
                numpy.array([[ef]], dtype=numpy.float64),
                numpy.array([[sf]], dtype=numpy.float64),
                numpy.array([[cls]], dtype=numpy.float64),
                numpy.asarray(xywh, dtype=numpy.float64),
            )
        annot[0, i] = (numpy.array([[num_imgs]], dtype=numpy.float64), name, rec)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"annot": annot}, format="5", do_compression=True, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")  # the descriptive text (a time stamp by default): fixed
    with open(path, "wb") as f:
        f.write(bytes(data))


def _write_ucf101(tmp, spec, clips):
    actions = _classes(spec)
    names = _ucf_names(spec["clips"], actions)
    _write_text(os.path.join(tmp, "classInd.txt"), "".join(f"{k + 1} {n}\n" for k, n in enumerate(actions)))
    _write_text(os.path.join(tmp, "testlist01.txt"), "".join(f"{n}{MPEG4['ext']}\n" for n in names))
    entries = []
    for name, clip in zip(names, clips, strict=True):
        os.makedirs(os.path.join(tmp, os.path.dirname(name)), exist_ok=True)
        _write_video(os.path.join(tmp, name + MPEG4["ext"]), to_uint8(clip.frames), spec["fps"], MPEG4)
        tubes = []
        for s, e in _finite_runs(clip.boxes):
            b = clip.boxes[s : e + 1]
            x, y, w, h = b[:, 0] + 1, b[:, 1] + 1, b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
            xywh = numpy.stack([x, y, w, h], axis=1)  # MATLAB pixels: 1-based corner, size in pixels
            tubes.append((s + 1, e + 1, clip.label + 1, xywh))  # 1-based frames; class counts classInd
        entries.append((name, len(clip.frames), tubes))
    _write_mat(os.path.join(tmp, "finalAnnots.mat"), entries)


def _write_manifest(tmp, spec, clips):
    os.makedirs(os.path.join(tmp, "videos"))
    fps, actions = spec["fps"], _classes(spec)
    lines = [json.dumps({"classes": list(actions)}) + "\n"]
    for i, clip in enumerate(clips, start=1):
        rel = f"videos/clip_{i:07d}{H264['ext']}"
        _write_video(os.path.join(tmp, *rel.split("/")), to_uint8(clip.frames), fps, H264)
        rec = {"path": rel, "label": None, "segments": [], "fps": fps}
        if clip.kind == "trimmed":
            rec["label"] = actions[clip.label]
        else:
            t1, t2 = _seconds(*clip.interval, fps)
            rec["segments"] = [[actions[clip.label], float(t1), float(t2)]]
        rec["boxes"] = {
            str(t): [[int(v) for v in b]] for t, b in enumerate(clip.boxes) if numpy.all(numpy.isfinite(b))
        }
        lines.append(json.dumps(rec) + "\n")
    _write_text(os.path.join(tmp, "manifest.jsonl"), "".join(lines))


_WRITERS = {"thumos14": _write_thumos14, "ucf101": _write_ucf101, "manifest": _write_manifest}


def make_dataset(
    out,
    layout,
    *,
    clips,
    seed,
    frames=None,
    size=(64, 64),
    fps=25.0,
    kind=None,
    gt_length=None,
    benchmark="appearance",
    overwrite=False,
    progress=None,
):
    """Write a synthetic benchmark as a dataset folder of real video files (see the module notes).

    Parameters
    ----------
    out : str or os.PathLike
        The folder to create. It must not exist or be empty, unless
        ``overwrite`` (then it is replaced, whole, at the end).
    layout : {"thumos14", "ucf101", "manifest"}
    clips : int
        Number of clips (labels cycle through the classes).
    seed : int
        Seed of the clips (non-negative).
    frames : int or None
        Frames per clip; by default 128 for ``"rand+GT+rand"``, 16 otherwise.
    size : (int, int)
        ``(H, W)``, even sides (4:2:0 video), at least 16.
    fps : float
        Frame rate of the video files; the annotation seconds are computed at it.
    kind : str or None
        Clip composition (:data:`KINDS_OF` lists what each layout holds).
    gt_length : int or None
        GT frames of a ``"rand+GT+rand"`` clip; by default ``frames // 3``.
    benchmark : {"appearance", "motion"}
        The clips and classes (:data:`ebr_ref.synthetic.BENCHMARKS`): the
        appearance benchmark's 7 classes, or the motion benchmark's 8 classes
        that one frame cannot tell apart. Recorded in ``synthetic.json``.
    overwrite : bool
    progress : callable, optional
        ``progress(iterable, total=..., desc=...)`` wrapping the clip loop.

    Returns
    -------
    ebr_ref.evaluation.datasets.Dataset
        The folder read back with ``read_dataset(out, layout, fps=fps)``.

    Raises
    ------
    ValueError
        For a bad argument.
    FileExistsError
        When ``out`` exists (and is not an empty folder) without ``overwrite``.
    OSError
        When the folder cannot be written. Nothing is left behind on any
        failure: the files are written into a temporary folder beside ``out``
        (``.<name>.tmp-*``) that is renamed into place at the end, or removed.
    """
    spec = _spec(layout, clips, seed, frames, size, fps, kind, gt_length, benchmark)
    out = os.path.abspath(os.fspath(out))
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise FileExistsError(f"{out}: exists and is not a folder")
        if os.listdir(out) and not overwrite:
            raise FileExistsError(
                f"{out}: the folder exists and is not empty (overwrite=True, --overwrite, replaces it)"
            )
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    old = None
    try:
        _WRITERS[layout](tmp, spec, _clips(spec, progress))
        doc = {"format": "ebr_ref synthetic dataset", **spec, "ebr_ref_version": __version__}
        _write_text(os.path.join(tmp, SPEC_FILE), json.dumps(doc, indent=2) + "\n")
        read_dataset(tmp, layout, fps=spec["fps"])  # the readers accept what was written
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder made normally follows the umask
        if os.path.isdir(out):
            if os.listdir(out):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
                os.replace(out, os.path.join(old, "out"))
            else:
                os.rmdir(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(out) and os.path.isdir(os.path.join(old, "out")):
            os.replace(os.path.join(old, "out"), out)  # put the previous folder back
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return read_dataset(out, layout, fps=spec["fps"])


def _umask():
    """The process's umask, read without changing it (Linux), else the common 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
