"""A small reader for the protocol-buffers wire format (Caffe and ONNX files).

Only what the weight readers need: walk the fields of a message, decode varints,
and view packed or one-per-tag repeated numbers as NumPy arrays without copying.
No schema is involved: the callers know the field numbers (Caffe's and ONNX's
numbers are listed where they are used).

Wire format: each field is a varint key ``field_number << 3 | wire_type``
followed by its value: wire type 0 a varint, 1 eight bytes, 2 a varint length
and that many bytes (strings, sub-messages, packed repeated numbers), 5 four
bytes. Wire types 3 and 4 (groups) are refused.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from ._buffer import Buffer

__all__ = [
    "Field",
    "iter_fields",
    "read_varint",
    "fields_by_number",
    "packed_varints",
    "repeated_numbers",
    "as_string",
    "as_int",
]


class Field(NamedTuple):
    """One field occurrence.

    ``value`` is the integer for wire type 0; for wire type 2 it is the byte
    offset of the payload and ``length`` its size; for wire types 1 and 5 it is
    the offset of the first value and ``count`` how many consecutive values of
    the same field follow one per tag, ``stride`` bytes apart.
    """

    number: int
    wire: int
    value: int
    length: int = 0
    count: int = 1
    stride: int = 0


def read_varint(buf: Buffer, pos: int, end: int, what: str) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next position)``."""
    result = 0
    shift = 0
    view = buf.view
    while True:
        if pos >= end:
            raise buf.error(f"{what}: truncated varint at byte {pos}")
        b = view[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise buf.error(f"{what}: varint longer than 10 bytes at byte {pos}")


def _run_length(buf: Buffer, start: int, end: int, key: bytes, width: int) -> int:
    """How many ``key + value(width bytes)`` records repeat back to back from ``start``.

    Galloping search with NumPy so that a long one-per-tag run (an unpacked
    float array) is found in time linear in its length, and a single value
    costs one small comparison.
    """
    stride = len(key) + width
    keyarr = numpy.frombuffer(key, numpy.uint8)
    n_max = (end - start) // stride
    run = 0
    probe = 8
    while run < n_max:
        n = min(probe, n_max - run)
        recs = numpy.frombuffer(buf.view, numpy.uint8, count=n * stride, offset=start + run * stride)
        ok = (recs.reshape(n, stride)[:, : len(key)] == keyarr).all(axis=1)
        if not ok.all():
            return run + int(numpy.argmin(ok))
        run += n
        probe *= 4
    return run


def iter_fields(buf: Buffer, start: int, end: int, what: str):
    """Yield the :class:`Field` s of the message occupying ``[start, end)``.

    Raises
    ------
    CheckpointError
        For a truncated field, a group, an unknown wire type or a length that
        runs past ``end``.
    """
    buf.check(start, end - start, what)
    pos = start
    view = buf.view
    while pos < end:
        key_start = pos
        key, pos = read_varint(buf, pos, end, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise buf.error(f"{what}: field number 0 at byte {key_start} (not a protobuf message)")
        if wire == 0:
            value, pos = read_varint(buf, pos, end, what)
            yield Field(number, 0, value)
        elif wire == 2:
            length, pos = read_varint(buf, pos, end, what)
            if pos + length > end:
                raise buf.error(
                    f"{what}: field {number} claims {length} bytes at byte {pos} but only {end - pos} remain"
                )
            yield Field(number, 2, pos, length)
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise buf.error(f"{what}: truncated fixed-width field {number} at byte {pos}")
            key_bytes = bytes(view[key_start:pos])
            count = 1 + _run_length(buf, pos + width, end, key_bytes, width)
            stride = len(key_bytes) + width
            yield Field(number, wire, pos, count=count, stride=stride)
            pos = key_start + count * stride
        else:
            raise buf.error(f"{what}: unsupported wire type {wire} (field {number}) at byte {key_start}")


def fields_by_number(buf: Buffer, start: int, end: int, what: str, wanted=None) -> dict:
    """``{field number: [Field, ...]}`` for a message (only ``wanted`` numbers if given)."""
    out: dict[int, list] = {}
    for f in iter_fields(buf, start, end, what):
        if wanted is None or f.number in wanted:
            out.setdefault(f.number, []).append(f)
    return out


def as_string(buf: Buffer, field: Field, what: str) -> str:
    """Decode a length-delimited field as UTF-8 text."""
    if field.wire != 2:
        raise buf.error(f"{what}: expected a string (wire type 2), found wire type {field.wire}")
    try:
        return bytes(buf.bytes(field.value, field.length, what)).decode("utf-8")
    except UnicodeDecodeError:
        raise buf.error(f"{what}: string is not valid UTF-8") from None


def as_int(buf: Buffer, field: Field, what: str, signed: bool = True) -> int:
    """The integer of a varint field (two's-complement 64-bit when ``signed``)."""
    if field.wire != 0:
        raise buf.error(f"{what}: expected a varint (wire type 0), found wire type {field.wire}")
    v = field.value & 0xFFFFFFFFFFFFFFFF
    if signed and v >= 1 << 63:
        v -= 1 << 64
    return v


def packed_varints(buf: Buffer, fields, what: str, signed: bool = True) -> list[int]:
    """All values of a repeated varint field, packed (wire type 2) or not (wire type 0)."""
    out = []
    for f in fields:
        if f.wire == 0:
            out.append(as_int(buf, f, what, signed))
        elif f.wire == 2:
            pos, end = f.value, f.value + f.length
            while pos < end:
                v, pos = read_varint(buf, pos, end, what)
                v &= 0xFFFFFFFFFFFFFFFF
                if signed and v >= 1 << 63:
                    v -= 1 << 64
                out.append(v)
        else:
            raise buf.error(f"{what}: expected varints, found wire type {f.wire}")
    return out


def repeated_numbers(buf: Buffer, fields, dtype, what: str) -> numpy.ndarray:
    """A repeated fixed-width field (float, double) as one read-only array.

    A single packed occurrence, or a single run of one-per-tag values, is
    returned as a view of the buffer (no copy); several occurrences are
    concatenated (one copy).
    """
    dtype = numpy.dtype(dtype)
    width = dtype.itemsize
    parts = []
    for f in fields:
        if f.wire == 2:
            if f.length % width:
                raise buf.error(f"{what}: packed payload of {f.length} bytes is not a multiple of {width}")
            parts.append(buf.array(f.value, dtype, (f.length // width,), what))
        elif f.wire == (5 if width == 4 else 1):
            if f.count == 1:
                parts.append(buf.array(f.value, dtype, (1,), what))
            else:
                buf.check(f.value, (f.count - 1) * f.stride + width, what)
                a = numpy.ndarray(
                    (f.count,), dtype=dtype, buffer=buf.view, offset=f.value, strides=(f.stride,)
                )
                a.flags.writeable = False
                parts.append(a)
        else:
            raise buf.error(f"{what}: expected {dtype.name} values, found wire type {f.wire}")
    if not parts:
        return numpy.empty((0,), dtype)
    if len(parts) == 1:
        return parts[0]
    return numpy.concatenate(parts)
