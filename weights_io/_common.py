"""Helpers shared by the converters: one-copy parameter building and the meta dict."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import os

import numpy

from ._buffer import Buffer
from .errors import CheckpointError
from .gates import GATE_ORDER, gate_blocks
from .spec import check_params, pool_rounding, trace

__all__ = [
    "param",
    "lstm_params",
    "source_info",
    "finish",
    "META_VERSION",
    "interpreting",
    "show",
    "as_int",
    "as_float",
    "as_str",
]

META_VERSION = 1


@contextlib.contextmanager
def interpreting(path, what):
    """Name the file and the layer/node when interpreting one of its entries fails.

    The converters validate the fields they read explicitly (:func:`as_int`...,
    naming the field); this guard is the backstop around one layer's or
    node's interpretation: an IndexError, KeyError, TypeError, ValueError,
    OverflowError or ZeroDivisionError raised by a value the file holds becomes
    a CheckpointError naming the file and ``what`` (the layer or node and its
    type), with the original message.
    """
    try:
        yield
    except CheckpointError:
        raise
    except (IndexError, KeyError, TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
        detail = f"{what}: cannot interpret its fields ({type(e).__name__}: {e})"
        raise CheckpointError(path, detail) from None


def show(v, n=60) -> str:
    """``repr(v)``, shortened for an error message."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def as_int(v, path, what, field, lo=0, hi=(1 << 63) - 1) -> int:
    """``v`` as an int in ``[lo, hi]`` (not a bool, float or str), else a CheckpointError naming ``field``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(path, f"{what}: {field} must be an integer, found {show(v)}")
    if not lo <= v <= hi:
        raise CheckpointError(path, f"{what}: {field} = {show(v)} is outside [{lo}, {hi}]")
    return int(v)


def as_float(v, path, what, field) -> float:
    """``v`` (an int or float, finite) as a float, else a CheckpointError naming ``field``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CheckpointError(path, f"{what}: {field} must be a number, found {show(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise CheckpointError(path, f"{what}: {field} = {show(v)} does not fit a float") from None
    if not math.isfinite(f):
        raise CheckpointError(path, f"{what}: {field} must be finite, found {f}")
    return f


def as_str(v, path, what, field) -> str:
    """``v`` as a str, else a CheckpointError naming ``field``."""
    if not isinstance(v, str):
        raise CheckpointError(path, f"{what}: {field} must be a string, found {show(v)}")
    return v


def param(src, *, dtype=None, shape=None, transpose=None):
    """A new C-contiguous parameter from a (read-only) source view, in one copy.

    ``shape`` reshapes the source first (a view), ``transpose`` permutes its
    axes (a view); then exactly one copy converts to ``dtype`` (the source's
    floating dtype when None) and makes the array contiguous.
    """
    a = src if shape is None else src.reshape(shape)
    if transpose is not None:
        a = a.transpose(transpose)
    dt = (
        numpy.dtype(dtype)
        if dtype is not None
        else (a.dtype if a.dtype.kind == "f" else numpy.dtype("float32"))
    )
    out = numpy.empty(a.shape, dt.newbyteorder("="))
    numpy.copyto(out, a, casting="unsafe")
    return out


def lstm_params(H, source_order, *, W_x, W_h, b_parts, W_s=None, dtype=None, transposed=False):
    """Canonical LSTM parameters (gate blocks i, f, o, g), one copy per tensor.

    Parameters
    ----------
    H : int
        Hidden size.
    source_order : str
        The source's gate order (``"ifgo"``, ``"ifco"``, ``"iofc"``, ``"ifog"``).
    W_x, W_h, W_s : arrays
        ``(4H, D)`` (or ``(D, 4H)`` when ``transposed``, Keras).
    b_parts : list of arrays
        ``(4H,)`` biases to be summed (two for PyTorch/ONNX, one otherwise, none
        for no bias).
    transposed : bool
        The 4H axis is the last axis of the weights (Keras kernels).

    Returns
    -------
    dict
        ``{"W_x", "W_h", "b"[, "W_s"]}``.
    """
    blocks = gate_blocks(source_order)
    first = W_x

    def dt():
        if dtype is not None:
            return numpy.dtype(dtype)
        return first.dtype if first.dtype.kind == "f" else numpy.dtype("float32")

    def rows(src):
        src_rows = src.T if transposed else src  # (4H, D) view
        out = numpy.empty(src_rows.shape, dt().newbyteorder("="))
        for k, s in enumerate(blocks):
            out[k * H : (k + 1) * H] = src_rows[s * H : (s + 1) * H]
        return out

    out = {"W_x": rows(W_x), "W_h": rows(W_h)}
    if W_s is not None:
        out["W_s"] = rows(W_s)
    b = numpy.zeros((4 * H,), dt().newbyteorder("="))
    for part in b_parts:
        for k, s in enumerate(blocks):
            b[k * H : (k + 1) * H] += part[s * H : (s + 1) * H]
    out["b"] = b
    return out


def source_info(buf: Buffer, fmt: str, converter: str) -> dict:
    """``{"path", "file", "sha256", "size", "format", "converter"}`` for the meta dict."""
    return {
        "path": os.path.abspath(buf.path),
        "file": os.path.basename(buf.path),
        "sha256": hashlib.sha256(buf.view).hexdigest(),
        "size": buf.size,
        "format": fmt,
        "converter": converter,
    }


def finish(params, layers, input_shape, meta, path):
    """Check every parameter against the architecture and complete ``meta``.

    Raises
    ------
    CheckpointError
        For missing/unexpected parameters or a shape mismatch.
    """
    names = [L["name"] for L in layers]
    counts = collections.Counter(names)
    dup = sorted(n for n, c in counts.items() if c > 1)
    if dup:
        raise CheckpointError(path, f"duplicate layer name(s) after renaming: {dup}")
    bad = [n for n in names if "." in n]
    if bad:
        raise CheckpointError(path, f"layer names must not contain '.': {bad}")
    _, expected = trace(layers, input_shape, path)
    check_params(params, expected, path)
    has_lstm = any(L["type"] == "lstm" for L in layers)
    out = {"meta_version": META_VERSION}
    out.update(meta)
    out["architecture"] = layers
    out["input_shape"] = list(input_shape)
    out["pool_rounding"] = pool_rounding(layers)
    out["gate_order"] = GATE_ORDER if has_lstm else None
    out.setdefault("source_gate_order", None)
    if not has_lstm:
        out["source_gate_order"] = None
    out["params"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in params.items()}
    return params, out
