"""``.safetensors`` and ``.npz`` readers (memory-mapped where the file allows).

safetensors (huggingface/safetensors, "Format"): an 8-byte little-endian header
length ``N``, ``N`` bytes of JSON ``{name: {"dtype", "shape", "data_offsets":
[begin, end]}, "__metadata__": {str: str}}``, then the little-endian, C-order
byte buffer; offsets are relative to the buffer. BF16 tensors are widened to
float32 (exactly).

npz: a zip of ``.npy`` members (``numpy.savez``); stored members are viewed in
place, deflated ones (``savez_compressed``) are decompressed. The ``.npy``
header is read with ``ast.literal_eval`` and object dtypes are refused (no
pickle is ever loaded).
"""

from __future__ import annotations

import ast
import json

import numpy

from ._buffer import Buffer, widen_bf16
from .torch_pickle import _zip_entry, open_zip

__all__ = ["read_safetensors", "read_npz", "looks_like_safetensors", "parse_npy"]

_ST_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "bf16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
    "C64": "<c8",
}
_MAX_HEADER = 100_000_000


def looks_like_safetensors(buf: Buffer) -> bool:
    if buf.size < 10:
        return False
    n = buf.uint(0, 8, "header length")
    return 2 <= n <= min(_MAX_HEADER, buf.size - 8) and bytes(buf.view[8:9]) == b"{"


def read_safetensors(buf: Buffer):
    """Return ``(tensors, metadata)`` of a safetensors file."""
    n = buf.uint(0, 8, "safetensors header length")
    if n > _MAX_HEADER or 8 + n > buf.size:
        raise buf.error(
            f"safetensors header claims {n} bytes; the file has {buf.size - 8} after the length field"
        )
    try:
        header = json.loads(bytes(buf.bytes(8, n, "safetensors header")).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise buf.error(f"safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise buf.error("safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise buf.error("safetensors __metadata__ must map strings to strings")
    start = 8 + n
    data_len = buf.size - start
    spans = []
    out = {}
    for name, info in header.items():
        what = f"tensor {name!r}"
        if not isinstance(info, dict):
            raise buf.error(f"{what}: header entry is not an object")
        dt = _ST_DTYPES.get(info.get("dtype"))
        if dt is None:
            raise buf.error(
                f"{what}: unsupported dtype {info.get('dtype')!r} (known: {', '.join(_ST_DTYPES)})"
            )
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise buf.error(f"{what}: shape must be a list of non-negative ints, found {shape!r}")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        ):
            raise buf.error(f"{what}: data_offsets must be [begin, end], found {offs!r}")
        b, e = offs
        if not 0 <= b <= e <= data_len:
            raise buf.error(f"{what}: data_offsets [{b}, {e}] lie outside the {data_len}-byte data buffer")
        item = 2 if dt == "bf16" else numpy.dtype(dt).itemsize
        count = 1
        for d in shape:
            count *= d
        if e - b != count * item:
            raise buf.error(
                f"{what}: shape {shape} of {info['dtype']} needs {count * item} bytes, "
                f"data_offsets give {e - b}"
            )
        spans.append((b, e, name))
        if dt == "bf16":
            buf.charge(4 * count, what)
            raw = buf.array(start + b, "<u2", shape, what)
            a = widen_bf16(raw)
        else:
            a = buf.array(start + b, dt, shape, what)
        out[name] = a
    spans.sort()
    for (_b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise buf.error(f"tensors {n0!r} and {n1!r} overlap in the data buffer")
    return out, meta


def parse_npy(raw: memoryview, buf: Buffer, what: str):
    """A read-only array view of a ``.npy`` image held in ``raw``."""
    rb = Buffer(raw, buf.path)
    if bytes(rb.bytes(0, 6, what)) != b"\x93NUMPY":
        raise buf.error(f"{what}: not a .npy image (bad magic)")
    major = rb.view[6]
    if major == 1:
        hlen, hstart = rb.uint(8, 2, what), 10
    elif major in (2, 3):
        hlen, hstart = rb.uint(8, 4, what), 12
    else:
        raise buf.error(f"{what}: unsupported .npy version {major}")
    if hlen > 100_000:
        raise buf.error(f"{what}: .npy header of {hlen} bytes is too large")
    try:
        header = ast.literal_eval(bytes(rb.bytes(hstart, hlen, what)).decode("latin1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise buf.error(f"{what}: unreadable .npy header ({type(e).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise buf.error(f"{what}: .npy header must have exactly descr, fortran_order, shape")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str):
        raise buf.error(f"{what}: structured dtypes are not supported")
    try:
        dtype = numpy.dtype(descr)
    except TypeError:
        raise buf.error(f"{what}: unknown dtype {descr!r}") from None
    if dtype.kind not in "biufc" or dtype.hasobject:
        raise buf.error(f"{what}: dtype {descr!r} is not numeric (object arrays are never loaded)")
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise buf.error(f"{what}: bad shape {shape!r}")
    if not isinstance(fortran, bool):
        raise buf.error(f"{what}: fortran_order must be a bool")
    off = hstart + hlen
    if fortran and len(shape) > 1:
        a = rb.array(off, dtype, shape[::-1], what).T
    else:
        a = rb.array(off, dtype, shape, what)
    return a


def read_npz(buf: Buffer):
    """``{member name without .npy: array}`` of an ``.npz`` archive."""
    zf = open_zip(buf)
    try:
        infos = zf.infolist()
    except Exception as e:
        raise buf.error(f"unreadable zip directory ({type(e).__name__}: {e})") from None
    out = {}
    for info in infos:
        name = info.filename
        if info.is_dir():
            continue
        if not name.endswith(".npy"):
            raise buf.error(f"member {name!r} of the .npz archive is not a .npy file")
        key = name[:-4]
        if key in out:
            raise buf.error(f"duplicate member {name!r}")
        out[key] = parse_npy(_zip_entry(buf, zf, info), buf, f"array {key!r}")
    return out
