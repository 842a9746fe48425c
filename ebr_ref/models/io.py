"""The canonical model format: ``<name>.npz`` (parameters) + ``<name>.json`` (sidecar).

The ``.npz`` (uncompressed ``numpy.savez``) holds every parameter under its
canonical name (``conv1_1.weight``, ``lstm1.W_x``, ...) in ebr_ref's layouts.
The JSON sidecar holds

- ``format``: ``"ebr_ref-canonical"``, ``version``: 1, ``gate_order``: ``"i,f,o,g"``
  (always :data:`~ebr_ref.layers.lstm.GATE_ORDER`, comma-separated; importers permute into it);
- ``kind``: ``"classifier"`` (a :class:`Model`), ``"captioner"``, or ``"weights"``
  (parameters an importer converted, with or without a runnable architecture);
- ``params_sha256``: the sha256 of the ``.npz``, and ``params``: every
  parameter's ``shape`` and ``dtype``;
- ``architecture`` (the layer list, ``Layer.to_dict``) and ``input_shape``
  (``[C, H, W]``) where the kind has them, plus kind-specific fields;
- ``meta``: what travels with the model (name, class names, preprocessing,
  pooling rounding, source file and its sha256, source format, recorded
  accuracy, ...).

:func:`write_canonical` / :func:`read_canonical` are the one reader and writer
of the format (``weights_io`` and the captioning model use them too); this
module needs numpy and the standard library only, so shipped models load with
ebr_ref alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy

from .. import backend
from ..layers.lstm import GATE_ORDER
from .model import Model
from .spec import Layer

__all__ = ["save_model", "load_model", "write_canonical", "read_canonical", "read_sidecar", "sidecar_path",
           "FORMAT", "VERSION", "SIDECAR_GATE_ORDER"]

FORMAT = "ebr_ref-canonical"
VERSION = 1
SIDECAR_GATE_ORDER = ",".join(GATE_ORDER)  # "i,f,o,g": the sidecar's spelling of GATE_ORDER


def sidecar_path(npz_path) -> str:
    """``model.npz`` -> ``model.json``."""
    root, _ = os.path.splitext(os.fspath(npz_path))
    return root + ".json"


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path, write):
    """Write through a temporary file in the same folder, then rename (no half-written files)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj, where):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, where) for v in obj]
    if isinstance(obj, numpy.integer):
        return int(obj)
    if isinstance(obj, numpy.floating):
        return float(obj)
    if isinstance(obj, numpy.bool_):
        return bool(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ValueError(f"{where}: {type(obj).__name__} is not JSON-serialisable")


def write_canonical(path, params, sidecar):
    """Write ``params`` to ``path`` (``.npz``) and ``sidecar`` (plus the format fields) beside it.

    Parameters
    ----------
    path : str or path-like
        Must end in ``.npz``.
    params : dict of str to array
        NumPy or CuPy arrays (moved to the host), canonical names.
    sidecar : dict
        JSON-serialisable fields: ``kind`` and the kind's own fields.

    Returns
    -------
    dict
        The sidecar as written.

    Raises
    ------
    ValueError
        For a bad path, a non-numeric parameter, a name with ``/``, or fields that
        are not JSON-serialisable.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"canonical model files end in .npz, got {path!r}")
    arrays = {}
    for k, v in params.items():
        a = numpy.ascontiguousarray(backend.to_numpy(v))
        if a.dtype.kind not in "biuf":
            raise ValueError(f"parameter {k} has non-numeric dtype {a.dtype}")
        if "/" in k:
            raise ValueError(f"parameter name {k!r} must not contain '/'")
        arrays[k] = a
    side = _jsonable(dict(sidecar), "sidecar")
    _atomic_write(path, lambda f: numpy.savez(f, **arrays))
    side.update({
        "format": FORMAT,
        "version": VERSION,
        "gate_order": SIDECAR_GATE_ORDER,
        "params_sha256": _sha256(path),
        "params": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()},
    })
    text = json.dumps(side, indent=1, sort_keys=True, allow_nan=False) + "\n"
    _atomic_write(sidecar_path(path), lambda f: f.write(text.encode("utf-8")))
    return side


def read_sidecar(path, *, kind=None):
    """The checked sidecar of ``path`` (``.npz``).

    Raises
    ------
    FileNotFoundError
        When the ``.npz`` or its sidecar is missing.
    ValueError
        When the sidecar is not this format or version, has another gate order, or
        (with ``kind``) is of another kind.
    """
    path = os.fspath(path)
    side_path = sidecar_path(path)
    for p in (path, side_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"canonical model: {p} does not exist")
    try:
        with open(side_path, encoding="utf-8") as f:
            side = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{side_path}: not a JSON sidecar ({e})") from None
    if not isinstance(side, dict) or side.get("format") != FORMAT:
        found = side.get("format") if isinstance(side, dict) else None
        raise ValueError(f"{side_path}: not an {FORMAT} sidecar (format = {found!r})")
    if side.get("version") != VERSION:
        raise ValueError(f"{side_path}: version {side.get('version')!r}; this reader knows {VERSION}")
    if side.get("gate_order") != SIDECAR_GATE_ORDER:
        raise ValueError(f"{side_path}: gate order {side.get('gate_order')!r}, "
                         f"expected {SIDECAR_GATE_ORDER!r}")
    if kind is not None and side.get("kind") != kind:
        raise ValueError(f"{side_path}: kind {side.get('kind')!r}, expected {kind!r}")
    return side


def read_canonical(path, *, kind=None, verify=True):
    """Read ``path`` (``.npz``) and its sidecar; return ``(params, sidecar)``.

    ``verify`` checks the ``.npz`` against the sha256 recorded in the sidecar. The
    parameters must be exactly those the sidecar lists, with its shapes and dtypes.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_sidecar`, and for a hash mismatch, an unreadable ``.npz`` or
        parameters that differ from the listing (naming the file and what differs).
    """
    path = os.fspath(path)
    side = read_sidecar(path, kind=kind)
    if verify:
        found = _sha256(path)
        if found != side.get("params_sha256"):
            raise ValueError(f"{path}: sha256 {found} differs from the sidecar's {side.get('params_sha256')}")
    try:
        with numpy.load(path, allow_pickle=False) as z:
            params = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    listed = side.get("params", {})
    missing, extra = sorted(set(listed) - set(params)), sorted(set(params) - set(listed))
    if missing or extra:
        raise ValueError(f"{path}: arrays missing from the .npz: {missing or 'none'}; not in the sidecar: {extra or 'none'}")
    for k, info in listed.items():
        a = params[k]
        if list(a.shape) != list(info.get("shape", [])) or a.dtype.str != info.get("dtype"):
            raise ValueError(f"{path}: parameter {k}: the sidecar says {info.get('shape')} {info.get('dtype')}, "
                             f"the .npz has {list(a.shape)} {a.dtype.str}")
    return params, side


def save_model(model, path, *, meta=None):
    """Write ``model`` as ``path`` (``.npz``) plus its JSON sidecar; return the sidecar dict.

    ``meta`` is merged over ``model.meta``.
    """
    return write_canonical(path, model.params, {
        "kind": "classifier",
        "input_shape": list(model.input_shape),
        "architecture": [layer.to_dict() for layer in model.layers],
        "meta": {**model.meta, **(meta or {})},
    })


def load_model(path, *, verify=True):
    """Read a canonical model (``.npz`` + ``.json`` sidecar of kind ``"classifier"``).

    Raises
    ------
    FileNotFoundError
        When either file is missing.
    ValueError
        When the sidecar is not this format, the hash differs, or the parameters
        do not fit the architecture (naming the file and what differs).
    """
    params, side = read_canonical(path, kind="classifier", verify=verify)
    try:
        layers = [Layer.from_dict(d) for d in side["architecture"]]
        return Model(layers, params, input_shape=tuple(side["input_shape"]), meta=side.get("meta", {}))
    except KeyError as e:
        raise ValueError(f"{sidecar_path(path)}: missing field {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None
