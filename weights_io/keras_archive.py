"""Keras 3 ``.keras`` archives (``model.save("x.keras")``, Keras' default format).

A zip archive (members stored, not compressed, as Keras writes it) of:

* ``config.json`` -- the model's architecture (``{"class_name": "Sequential" |
  "Functional", "config": {"layers": [...]}}``), read as JSON data: nothing of
  it is executed or imported;
* ``metadata.json`` -- ``{"keras_version", "date_saved"}``;
* ``model.weights.h5`` -- the weights, in Keras 3's ``layers/<key>/vars/<i>``
  HDF5 layout (read with :mod:`weights_io.hdf5`, memory-mapped in place when
  the member is stored).

Bounds: the JSON members are limited to :data:`MAX_JSON` bytes each and their
parsed size is charged to the file's budget; a compressed weights member is
charged for its inflated size before it is inflated (and its claimed size is
bounded by deflate's ratio); the weights member's readers charge the
archive's budget (:meth:`weights_io._buffer.Buffer.member`).
"""

from __future__ import annotations

import json
import zipfile

from ._buffer import Buffer
from .torch_pickle import _zip_entry, open_zip

__all__ = ["MAX_JSON", "is_keras_archive", "read_keras_archive"]

MAX_JSON = 16 << 20
_PARSED = 8  # Python objects of parsed JSON take several times the text; charged per byte of text


def is_keras_archive(names) -> bool:
    """Whether zip member ``names`` are a Keras 3 archive's."""
    return "config.json" in names and "model.weights.h5" in names


def _json(buf: Buffer, zf, info, name):
    if info.file_size > MAX_JSON:
        raise buf.error(f"{name} in the archive has {info.file_size} bytes, more than {MAX_JSON}")
    buf.charge(_PARSED * info.file_size, f"{name} (parsed)")
    raw = bytes(_zip_entry(buf, zf, info))
    try:
        obj = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise buf.error(f"{name} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise buf.error(f"{name} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise buf.error(f"{name} must hold a JSON object, found {type(obj).__name__}")
    return obj


def read_keras_archive(buf: Buffer):
    """The parts of a ``.keras`` archive.

    Returns
    -------
    config : dict
        ``config.json``.
    metadata : dict
        ``metadata.json`` (``{}`` when absent).
    weights : Buffer
        The ``model.weights.h5`` member, charging this file's budget.

    Raises
    ------
    CheckpointError
        For a missing member, invalid JSON, or a member beyond the bounds.
    """
    zf = open_zip(buf)
    try:
        infos = {}
        for info in zf.infolist():
            if info.filename in infos:
                raise buf.error(f"the archive holds two members named {info.filename!r}")
            infos[info.filename] = info
    except zipfile.BadZipFile as e:
        raise buf.error(f"unreadable zip directory ({e})") from None
    for need in ("config.json", "model.weights.h5"):
        if need not in infos:
            raise buf.error(f"a Keras archive needs the member {need!r}; found {sorted(infos)[:8]}")
    config = _json(buf, zf, infos["config.json"], "config.json")
    metadata = _json(buf, zf, infos["metadata.json"], "metadata.json") if "metadata.json" in infos else {}
    h5 = infos["model.weights.h5"]
    if h5.compress_type != zipfile.ZIP_STORED:
        buf.charge(h5.file_size, "zip member 'model.weights.h5' (inflated)")
    data = _zip_entry(buf, zf, h5)
    return config, metadata, buf.member(data, "model.weights.h5")
