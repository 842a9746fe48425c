"""The canonical model format: ``<name>.npz`` (parameters) + ``<name>.json`` (sidecar).

The ``.npz`` holds every parameter under its canonical name (``conv1_1.weight``,
``lstm1.W_x``, ...) in ebr_ref's layouts. The JSON sidecar holds

- ``format``: ``"ebr_ref-canonical"``, ``version``: 1;
- ``architecture``: the layer list (``Layer.to_dict`` of every layer);
- ``input_shape``: ``[C, H, W]``;
- ``params_sha256``: the sha256 of the ``.npz`` file;
- ``gate_order``: ``"i,f,o,g"`` (always; importers permute into it);
- ``meta``: what travels with the model (name, class names, preprocessing, pooling
  rounding, source file and its sha256, source format, recorded accuracy, ...).

This module needs numpy and the standard library only, so that shipped models
load with ebr_ref alone; ``weights_io`` writes the same format.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy

from .. import backend
from .model import Model
from .spec import Layer

__all__ = ["save_model", "load_model", "sidecar_path", "FORMAT"]

FORMAT = "ebr_ref-canonical"
GATE_ORDER = "i,f,o,g"


def sidecar_path(npz_path) -> str:
    """``model.npz`` -> ``model.json``."""
    root, ext = os.path.splitext(os.fspath(npz_path))
    return root + ".json"


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model, path, *, meta=None):
    """Write ``model`` as ``path`` (``.npz``) plus its JSON sidecar; return the sidecar dict.

    ``meta`` is merged over ``model.meta``. Parameters are written as they are
    (dtype included), moved to the host first.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"canonical model files end in .npz, got {path!r}")
    arrays = {k: backend.to_numpy(v) for k, v in model.params.items()}
    with open(path, "wb") as f:
        numpy.savez(f, **arrays)
    side = {
        "format": FORMAT,
        "version": 1,
        "gate_order": GATE_ORDER,
        "input_shape": list(model.input_shape),
        "architecture": [layer.to_dict() for layer in model.layers],
        "params_sha256": _sha256(path),
        "meta": {**model.meta, **(meta or {})},
    }
    with open(sidecar_path(path), "w") as f:
        json.dump(side, f, indent=1, sort_keys=True)
        f.write("\n")
    return side


def load_model(path, *, verify=True):
    """Read a canonical model (``.npz`` + ``.json`` sidecar).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file; the sidecar is the same path with ``.json``.
    verify : bool
        Check the ``.npz`` against the sha256 recorded in the sidecar.

    Raises
    ------
    FileNotFoundError
        When either file is missing.
    ValueError
        When the sidecar is not this format, the hash differs, or the parameters
        do not fit the architecture (naming the file and what differs).
    """
    path = os.fspath(path)
    side_path = sidecar_path(path)
    for p in (path, side_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"canonical model: {p} does not exist")
    try:
        with open(side_path) as f:
            side = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{side_path}: not a JSON sidecar ({e})") from None
    if not isinstance(side, dict) or side.get("format") != FORMAT:
        raise ValueError(f"{side_path}: not an {FORMAT} sidecar (format = {side.get('format') if isinstance(side, dict) else None!r})")
    if side.get("gate_order") != GATE_ORDER:
        raise ValueError(f"{side_path}: gate order {side.get('gate_order')!r}, expected {GATE_ORDER!r}")
    if verify:
        found = _sha256(path)
        if found != side.get("params_sha256"):
            raise ValueError(f"{path}: sha256 {found} differs from the sidecar's {side.get('params_sha256')}")
    try:
        with numpy.load(path, allow_pickle=False) as z:
            params = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    layers = [Layer.from_dict(d) for d in side["architecture"]]
    try:
        return Model(layers, params, input_shape=tuple(side["input_shape"]), meta=side.get("meta", {}))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
