"""The results store of an evaluation: a folder with one JSON record per video, written atomically.

Layout of a results folder ``RESULTS``::

    RESULTS/run.json                    the run key, what it was computed from, the last run's summary
    RESULTS/records/<name>.json         one record per video (the commit point of that video)
    RESULTS/records/<name>.npz          its maps, only with keep_maps (written before the .json)
    RESULTS/tables.md, tables.json, tables.csv

``<name>`` is the video id with every character outside ``[A-Za-z0-9_.-]``
replaced by ``_``, plus ``-`` and 10 hex digits of the id's sha256 when the
id had to be changed (so two ids never share a file).

Every file is written to a temporary name (``.tmp-*``) in its own folder,
flushed to disk and renamed over the final name (``os.replace``: atomic on a
POSIX file system, local or NFS). A reader therefore sees a whole record or
none; a writer killed half-way leaves only a ``.tmp-*`` file, which readers
ignore and :meth:`Store.remove_temp_files` deletes. Two writers of the same
video (a task rescheduled while its first worker was still finishing) write
the same file name: the last rename wins and there is still one record.

Why a folder of small files (and not Zarr or Parquet): every video is written
once, by whichever worker computed it, with no coordination between writers;
the records are nested and ragged (curves as long as each video, a variable
number of segments and detections), which a columnar table would flatten
awkwardly; reading 3,783 records back for the tables takes seconds; and the
engine keeps needing nothing but NumPy (docs/evaluate.md, "The results store").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile

__all__ = [
    "Store",
    "RECORD_FORMAT",
    "RECORD_VERSION",
    "safe_name",
    "run_key",
    "item_digest",
    "atomic_write",
    "replace_block",
]

RECORD_FORMAT = "ebr_ref-eval-record"
RECORD_VERSION = 1
RUN_FILE = "run.json"
RECORDS_DIR = "records"
TMP_PREFIX = ".tmp-"


def _sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(doc):
    """``doc`` as compact JSON with sorted keys (the form that is hashed)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_key(doc):
    """The run key: the sha256 of ``doc`` (models' sha256s, methods, protocols, options, versions) as JSON."""
    return _sha256_text(canonical_json(doc))


def item_digest(item, ambiguous=()):
    """sha256 of a video's ground truth (label, segments, boxes, fps, path's file name, ambiguous segments).

    A record is reused only when the ground truth it was scored against is unchanged.
    """
    boxes = (
        None
        if item.boxes is None
        else [[int(f), [list(map(float, b)) for b in bs]] for f, bs in sorted(item.boxes.items())]
    )
    doc = {
        "video_id": item.video_id,
        "file": os.path.basename(os.path.normpath(item.path)),
        "label": item.label,
        "segments": [
            [int(s.label), float(s.start), float(s.end), s.start_frame, s.end_frame] for s in item.segments
        ],
        "boxes": boxes,
        "fps": item.fps,
        "ambiguous": [[float(a), float(b)] for a, b in ambiguous],
    }
    return _sha256_text(canonical_json(doc))


def safe_name(video_id):
    """The file-name stem of a video's record (see the module notes).

    Examples
    --------
    >>> safe_name("video_test_0000004")
    'video_test_0000004'
    >>> safe_name("v_Biking/g01 c02")[:22]
    'v_Biking_g01_c02-59d44'
    """
    video_id = str(video_id)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", video_id)[:150]
    if safe.startswith("."):  # no hidden files (and no clash with the .tmp- files)
        safe = "_" + safe[1:]
    if safe != video_id or not safe:
        safe = f"{safe}-{_sha256_text(video_id)[:10]}"
    return safe


def replace_block(path, text, block):
    """Replace the text between ``<!-- BLOCK:begin -->`` and ``<!-- BLOCK:end -->`` in a file by ``text``.

    The rest of the file is kept byte for byte; the file is rewritten with :func:`atomic_write`.
    Raises ValueError, naming the markers, when the file does not hold the block.
    """
    begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    with open(path, encoding="utf-8", newline="") as f:
        doc = f.read()
    if begin not in doc or end not in doc.split(begin, 1)[1]:
        raise ValueError(f"{path}: no {begin} ... {end} block to replace")
    head, rest = doc.split(begin, 1)
    tail = rest.split(end, 1)[1]
    atomic_write(path, head + begin + "\n" + text + "\n" + end + tail)


def atomic_write(path, data):
    """Write ``data`` (bytes or str) to ``path``: a flushed temporary file in its folder, then a rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class Store:
    """A results folder (see the module notes).

    Parameters
    ----------
    root : str or path-like
        The folder; :meth:`create` makes it.
    """

    def __init__(self, root):
        self.root = os.path.abspath(os.fspath(root))
        self.records_dir = os.path.join(self.root, RECORDS_DIR)

    def create(self):
        os.makedirs(self.records_dir, exist_ok=True)
        return self

    # -- run.json

    def read_run(self):
        """The run document, or None when there is none (ValueError when it cannot be read)."""
        path = os.path.join(self.root, RUN_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable run file ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise ValueError(f"{path}: not an ebr_ref evaluation run file")
        return doc

    def write_run(self, doc):
        self.write_text(RUN_FILE, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")

    def write_text(self, name, text):
        """Write ``RESULTS/name`` atomically."""
        atomic_write(os.path.join(self.root, name), text)

    # -- records

    def record_path(self, video_id):
        return os.path.join(self.records_dir, safe_name(video_id) + ".json")

    def maps_path(self, video_id):
        return os.path.join(self.records_dir, safe_name(video_id) + ".npz")

    def write_record(self, record, maps=None):
        """Write one video's record (and its maps first, when given); the .json rename commits it."""
        import numpy

        vid = record["video_id"]
        if maps:
            import io

            buf = io.BytesIO()
            numpy.savez(buf, **maps)
            atomic_write(self.maps_path(vid), buf.getvalue())
            record = dict(record, maps=os.path.basename(self.maps_path(vid)))
        text = json.dumps(record, separators=(",", ":"), allow_nan=False)
        atomic_write(self.record_path(vid), text + "\n")

    def read_record(self, video_id):
        """The record of ``video_id``; None when it has none, or an unreadable one (then it is recomputed)."""
        path = self.record_path(video_id)
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT or rec.get("video_id") != video_id:
            return None
        return rec

    def read_maps(self, video_id):
        """The maps of ``video_id`` (``{name: array}``) written with keep_maps, or None."""
        import numpy

        path = self.maps_path(video_id)
        if not os.path.exists(path):
            return None
        with numpy.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def record_files(self):
        """Names of the committed record files (``*.json``) in the store."""
        if not os.path.isdir(self.records_dir):
            return []
        names = os.listdir(self.records_dir)
        return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))

    def remove_record(self, video_id):
        for path in (self.record_path(video_id), self.maps_path(video_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def temp_files(self):
        out = []
        for folder in (self.root, self.records_dir):
            if os.path.isdir(folder):
                out += [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(TMP_PREFIX)]
        return sorted(out)

    def remove_temp_files(self):
        """Delete the ``.tmp-*`` files left by writers that were killed (call only while no task runs)."""
        n = 0
        for path in self.temp_files():
            try:
                os.unlink(path)
                n += 1
            except FileNotFoundError:
                pass
        return n
