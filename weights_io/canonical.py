"""The project's canonical weight format: an ``.npz`` of parameters plus a JSON sidecar.

``save_canonical("vgg16.npz", params, meta)`` writes ``vgg16.npz`` (uncompressed
``numpy.savez``: one ``.npy`` member per parameter, canonical names and
layouts) and ``vgg16.npz.json``: the converter's ``meta`` (source file and its
SHA-256, source format, gate order, pooling rounding, preprocessing,
architecture...) plus a ``canonical`` block with the format tag, version, the
SHA-256 of the ``.npz`` and every parameter's shape and dtype.
:func:`load_canonical` checks all of these and memory-maps the arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy

from ebr_ref.backend import to_numpy

from .errors import CheckpointError
from .readers import guarded, open_checked
from .safetensors_npz import read_npz
from .spec import check_params, trace

__all__ = ["save_canonical", "load_canonical", "sidecar_path", "CANONICAL_TAG", "CANONICAL_VERSION"]

CANONICAL_TAG = "ebr_ref-canonical-weights"
CANONICAL_VERSION = 1


def sidecar_path(path) -> str:
    """``model.npz`` -> ``model.npz.json``."""
    return os.fspath(path) + ".json"


def _jsonable(obj, where="meta"):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, where) for v in obj]
    if isinstance(obj, (numpy.integer,)):
        return int(obj)
    if isinstance(obj, (numpy.floating,)):
        return float(obj)
    if isinstance(obj, (numpy.bool_,)):
        return bool(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ValueError(f"{where}: {type(obj).__name__} is not JSON-serialisable")


def _atomic_write(path, write):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_canonical(path, params: dict, meta: dict) -> None:
    """Write ``path`` (``.npz``) and its sidecar ``path + ".json"``.

    Parameters
    ----------
    path : str
        Must end with ``.npz``.
    params : dict of str to array
        NumPy or CuPy arrays (copied to the host), canonical names.
    meta : dict
        JSON-serialisable metadata (what the converters return).

    Raises
    ------
    ValueError
        For a bad path, a non-numeric parameter or non-serialisable meta.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"save_canonical: path must end with .npz, got {path!r}")
    arrays = {}
    for k, v in params.items():
        a = numpy.ascontiguousarray(to_numpy(v))
        if a.dtype.kind not in "biuf":
            raise ValueError(f"save_canonical: parameter {k} has non-numeric dtype {a.dtype}")
        if "/" in k:
            raise ValueError(f"save_canonical: parameter name {k!r} must not contain '/'")
        arrays[k] = a
    body = _jsonable(meta)
    _atomic_write(path, lambda f: numpy.savez(f, **arrays))
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    body["canonical"] = {
        "format": CANONICAL_TAG,
        "version": CANONICAL_VERSION,
        "npz_file": os.path.basename(path),
        "npz_sha256": digest,
        "params": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()},
    }
    text = json.dumps(body, indent=1, sort_keys=False, allow_nan=False)
    _atomic_write(sidecar_path(path), lambda f: f.write(text.encode("utf-8")))


def load_canonical(path, *, verify: bool = True):
    """Read a canonical ``.npz`` and its sidecar.

    Parameters
    ----------
    path : str
    verify : bool
        Check the ``.npz``'s SHA-256 against the sidecar (reads the whole file once).

    Returns
    -------
    params : dict
        Read-only arrays, memory-mapped from the ``.npz``.
    meta : dict
        The sidecar (``meta["canonical"]`` included).

    Raises
    ------
    CheckpointError
        For a missing or malformed sidecar, a hash mismatch, or parameters that
        differ from the sidecar or do not fit the architecture.
    """
    path = os.fspath(path)
    side = sidecar_path(path)
    try:
        with open(side, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(path, f"the sidecar {os.path.basename(side)} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(side, f"unreadable sidecar ({e})") from None
    can = meta.get("canonical") if isinstance(meta, dict) else None
    if not isinstance(can, dict) or can.get("format") != CANONICAL_TAG:
        raise CheckpointError(side, f"not a canonical-weights sidecar (no 'canonical.format' = {CANONICAL_TAG!r})")
    if can.get("version") != CANONICAL_VERSION:
        raise CheckpointError(side, f"sidecar version {can.get('version')!r}; this reader knows {CANONICAL_VERSION}")
    buf, fmt = open_checked(path, "npz")
    if verify:
        digest = hashlib.sha256(buf.view).hexdigest()
        if digest != can.get("npz_sha256"):
            raise buf.error(f"SHA-256 {digest} differs from the sidecar's {can.get('npz_sha256')} "
                            "(the .npz or the sidecar was changed)")
    params = guarded(buf, fmt, read_npz, buf)
    listed = can.get("params", {})
    if not isinstance(listed, dict):
        raise CheckpointError(side, "sidecar 'canonical.params' is not an object")
    missing, extra = sorted(set(listed) - set(params)), sorted(set(params) - set(listed))
    if missing or extra:
        raise buf.error(f"arrays missing from the .npz: {missing or 'none'}; not in the sidecar: {extra or 'none'}")
    for k, info in listed.items():
        a = params[k]
        if list(a.shape) != list(info.get("shape", [])) or a.dtype.str != info.get("dtype"):
            raise buf.error(f"parameter {k}: sidecar says {info.get('shape')} {info.get('dtype')}, "
                            f"the .npz has {list(a.shape)} {a.dtype.str}")
    arch, ishape = meta.get("architecture"), meta.get("input_shape")
    if arch is not None and ishape is not None:
        _, expected = trace(arch, tuple(ishape), path)
        check_params(params, expected, path)
    return params, meta

