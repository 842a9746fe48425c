"""Bounds-checked, zero-copy access to the bytes of a checkpoint.

Every reader goes through :class:`Buffer`: a read-only ``memoryview`` (of a
memory-mapped file, or of bytes already in memory) plus the file name for error
messages. Each access checks that the requested range lies inside the buffer, so
a size or offset claimed by a header can never make a reader allocate or read
past what the file holds; arrays are ``numpy.frombuffer`` views (no copy).
"""

from __future__ import annotations

import hashlib
import mmap
import os

import numpy

from .errors import CheckpointError

__all__ = ["Buffer", "open_buffer", "sha256_of"]


class Buffer:
    """A read-only byte buffer with the name of the file it came from.

    Parameters
    ----------
    data : bytes-like
        The bytes (a memory map, ``bytes`` or a ``memoryview``).
    path : str
        Used in error messages.
    """

    def __init__(self, data, path: str):
        self.view = memoryview(data).cast("B")
        self.size = len(self.view)
        self.path = path

    def error(self, detail: str) -> CheckpointError:
        """A :class:`CheckpointError` naming this buffer's file."""
        return CheckpointError(self.path, detail)

    def check(self, offset: int, length: int, what: str) -> None:
        """Raise unless ``[offset, offset + length)`` lies inside the buffer."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self.error(
                f"{what}: needs bytes [{offset}, {offset + length}) but the data has only {self.size} bytes "
                "(truncated or corrupted file)"
            )

    def bytes(self, offset: int, length: int, what: str) -> memoryview:
        """The bytes ``[offset, offset + length)`` as a memoryview (no copy)."""
        self.check(offset, length, what)
        return self.view[offset : offset + length]

    def uint(self, offset: int, nbytes: int, what: str) -> int:
        """An unsigned little-endian integer of ``nbytes`` bytes."""
        return int.from_bytes(self.bytes(offset, nbytes, what), "little")

    def array(self, offset: int, dtype, shape, what: str) -> numpy.ndarray:
        """A read-only array view of ``prod(shape)`` items of ``dtype`` at ``offset``.

        The byte count is computed with Python integers and checked against the
        buffer before anything is allocated or viewed.
        """
        dtype = numpy.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise self.error(f"{what}: negative dimension in shape {shape}")
        count = 1
        for s in shape:
            count *= s
        self.check(offset, count * dtype.itemsize, what)
        if count == 0:
            out = numpy.empty(shape, dtype)
            out.flags.writeable = False
            return out
        out = numpy.frombuffer(self.view, dtype=dtype, count=count, offset=offset).reshape(shape)
        out.flags.writeable = False
        return out


def open_buffer(path) -> Buffer:
    """Memory-map a file read-only.

    Raises
    ------
    CheckpointError
        When the file cannot be opened.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = b"" if size == 0 else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise CheckpointError(path, f"cannot open the file ({e.strerror or e})") from None
    return Buffer(data, path)


def sha256_of(path) -> str:
    """Hex SHA-256 of a file's contents (read through a memory map)."""
    buf = open_buffer(path)
    return hashlib.sha256(buf.view).hexdigest()
