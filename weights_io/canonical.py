"""The project's canonical weight format, as ``weights_io`` writes and reads it.

The format is defined once, in :mod:`ebr_ref.models.io` (``x.npz`` plus the
``x.json`` sidecar: format tag, version, gate order, the ``.npz``'s sha256 and
every parameter's shape and dtype). ``save_canonical`` stores converted
parameters with the converter's ``meta`` (source file and its sha256, source
format, gate order, pooling rounding, preprocessing, architecture, ...) as a
sidecar of kind ``"weights"``; ``load_canonical`` reads any canonical file --
also a ``"classifier"`` written by :func:`ebr_ref.models.save_model` -- memory-
mapping the arrays, and raises :class:`CheckpointError` for every problem.
"""

from __future__ import annotations

import hashlib
import os

from ebr_ref.models.io import read_sidecar, sidecar_path, write_canonical

from .errors import CheckpointError
from .readers import guarded, open_checked
from .safetensors_npz import read_npz
from .spec import check_params, trace

__all__ = ["save_canonical", "load_canonical", "sidecar_path"]

_FORMAT_FIELDS = ("format", "version", "gate_order", "kind", "params_sha256", "params")


def save_canonical(path, params: dict, meta: dict) -> None:
    """Write ``path`` (``.npz``) and its sidecar ``x.json`` (kind ``"weights"``).

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
    write_canonical(path, params, {"kind": "weights", "meta": meta})


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
        The converter's meta (for a ``"classifier"`` file: the model's meta with its
        ``architecture`` and ``input_shape``), plus ``meta["canonical"]``, the
        sidecar's format fields.

    Raises
    ------
    CheckpointError
        For a missing or malformed sidecar, a hash mismatch, or parameters that
        differ from the sidecar or do not fit the architecture.
    """
    path = os.fspath(path)
    try:
        side = read_sidecar(path)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(path, str(e)) from None
    buf, fmt = open_checked(path, "npz")
    if verify:
        digest = hashlib.sha256(buf.view).hexdigest()
        if digest != side.get("params_sha256"):
            raise buf.error(
                f"SHA-256 {digest} differs from the sidecar's {side.get('params_sha256')} "
                "(the .npz or the sidecar was changed)"
            )
    params = guarded(buf, fmt, read_npz, buf)
    listed = side.get("params", {})
    if not isinstance(listed, dict):
        raise CheckpointError(sidecar_path(path), "sidecar 'params' is not an object")
    missing, extra = sorted(set(listed) - set(params)), sorted(set(params) - set(listed))
    if missing or extra:
        raise buf.error(
            f"arrays missing from the .npz: {missing or 'none'}; not in the sidecar: {extra or 'none'}"
        )
    for k, info in listed.items():
        a = params[k]
        if list(a.shape) != list(info.get("shape", [])) or a.dtype.str != info.get("dtype"):
            raise buf.error(
                f"parameter {k}: sidecar says {info.get('shape')} {info.get('dtype')}, "
                f"the .npz has {list(a.shape)} {a.dtype.str}"
            )
    meta = dict(side.get("meta") or {})
    for k in ("architecture", "input_shape"):
        if k in side:
            meta[k] = side[k]
    meta["canonical"] = {k: side[k] for k in _FORMAT_FIELDS if k in side}
    arch, ishape = meta.get("architecture"), meta.get("input_shape")
    if arch is not None and ishape is not None:
        _, expected = trace(arch, tuple(ishape), path)
        check_params(params, expected, path)
    return params, meta
