"""Bounds-checked, zero-copy access to the bytes of a checkpoint.

Every reader goes through :class:`Buffer`: a read-only ``memoryview`` (of a
memory-mapped file, or of bytes already in memory) plus the file name for error
messages. Each access checks that the requested range lies inside the buffer, so
a size or offset claimed by a header can never make a reader allocate or read
past what the file holds; arrays are ``numpy.frombuffer`` views (no copy).

Where a reader produces more bytes than it reads (bfloat16 widened to float32,
strided torch views that a converter will copy), it charges them to the
buffer's budget (:meth:`Buffer.charge`), so that the memory one file can make
the reader allocate is bounded by what the file holds: ``AMPLIFICATION`` times
its size plus ``BUDGET_SLACK`` bytes. Only regular files are opened
(:func:`open_buffer`, :func:`read_text`): a FIFO, a device or a directory is
refused before ``open()``, which could block forever on a FIFO.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
import stat

import numpy

from .errors import CheckpointError

__all__ = ["Buffer", "open_buffer", "read_text", "sha256_of", "widen_bf16", "AMPLIFICATION", "BUDGET_SLACK"]

# The bytes one file may make a reader produce beyond views of its own bytes:
# AMPLIFICATION * file size + BUDGET_SLACK. A real checkpoint needs at most 2x
# (bfloat16 widened to float32), 4x with a state dict saved twice under two
# keys (model and EMA copies that share tensors); 8x leaves room, and the
# slack keeps tiny files with a few broadcast constants readable.
AMPLIFICATION = 8
BUDGET_SLACK = 64 << 20


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
        self.budget = AMPLIFICATION * self.size + BUDGET_SLACK
        self.spent = 0
        self._spans = _Spans()  # byte ranges claimed by zip members and HDF5 chunks
        self._root = None  # the file this buffer is a member of (its budget is charged)

    def member(self, data, what: str) -> Buffer:
        """A buffer over ``data``, a member of this file (a view of its bytes, or inflated from them).

        Errors name this file; whatever the member's readers produce beyond
        views is charged to this file's budget (:meth:`charge`), so an archive's
        members together stay within the bound of the archive.
        """
        b = Buffer(data, self.path)
        b._root = self if self._root is None else self._root
        return b

    def error(self, detail: str) -> CheckpointError:
        """A :class:`CheckpointError` naming this buffer's file."""
        return CheckpointError(self.path, detail)

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` produced from this file against its budget; raise when it is exceeded.

        Called before the bytes are allocated (or before a view that a converter
        will copy is handed out), so a file that claims more is refused without
        the allocation.
        """
        if self._root is not None:
            self._root.charge(nbytes, what)
            return
        self.spent += int(nbytes)
        if self.spent > self.budget:
            raise self.error(
                f"{what}: the tensors of this file would need {self.spent} bytes or more, more than "
                f"{AMPLIFICATION} x its size + {BUDGET_SLACK >> 20} MiB = {self.budget} bytes "
                "(views repeating the same data, or a file crafted to exhaust memory)"
            )

    def claim(self, start: int, end: int, key, what: str) -> None:
        """Record that the bytes ``[start, end)`` are the (compressed) data of one item, ``key``.

        Two items whose data share bytes -- zip members or HDF5 chunks quoting
        each other's data, the "overlapping files" zip bomb -- are refused, so
        every stored byte is inflated at most once and what a file inflates to
        stays bounded by deflate's ratio times its size. Claiming the same range
        again for the same key is allowed (the same item read twice).
        """
        clash = self._spans.add(start, max(end, start + 1), key, what)
        if clash is not None:
            s, e, desc = clash
            raise self.error(
                f"{what} shares bytes [{max(s, start)}, {min(e, end)}) with {desc} (an overlapping archive)"
            )

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


class _Spans:
    """Non-overlapping byte ranges kept sorted in blocks, so that adding one costs O(sqrt(n)).

    A plain sorted list would make n insertions in adversarial order cost n**2
    element moves (a file can list millions of chunks).
    """

    _BLOCK = 512

    def __init__(self):
        self.firsts = []  # the first start of each block
        self.starts = []  # per block: the sorted starts
        self.items = []  # per block: (end, key, description) in the same order

    def add(self, start, end, key, what):
        """Add ``[start, end)``; return ``(start, end, description)`` of a span it overlaps, or None.

        Adding a span equal to one already there with the same key is a no-op.
        """
        if not self.starts:
            self.firsts.append(start)
            self.starts.append([start])
            self.items.append([(end, key, what)])
            return None
        b = max(bisect.bisect_right(self.firsts, start) - 1, 0)
        starts, items = self.starts[b], self.items[b]
        i = bisect.bisect_right(starts, start)
        # the spans never overlap, so only the neighbours of the new one can: the last span that starts
        # at or before it, and the first one that starts after it
        before = (
            (starts[i - 1], items[i - 1])
            if i > 0
            else ((self.starts[b - 1][-1], self.items[b - 1][-1]) if b > 0 else None)
        )
        after = (
            (starts[i], items[i])
            if i < len(starts)
            else ((self.starts[b + 1][0], self.items[b + 1][0]) if b + 1 < len(self.starts) else None)
        )
        if before is not None and before[0] == start and before[1][0] == end and before[1][1] == key:
            return None
        for near in (before, after):
            if near is not None and near[0] < end and start < near[1][0]:
                return near[0], near[1][0], near[1][2]
        starts.insert(i, start)
        items.insert(i, (end, key, what))
        self.firsts[b] = starts[0]
        if len(starts) > 2 * self._BLOCK:
            half = self._BLOCK
            self.starts[b : b + 1] = [starts[:half], starts[half:]]
            self.items[b : b + 1] = [items[:half], items[half:]]
            self.firsts[b : b + 1] = [starts[0], starts[half]]
        return None


def widen_bf16(bits) -> numpy.ndarray:
    """bfloat16 bit patterns (uint16, any shape, 0-d included) as a read-only float32 array (exact).

    bfloat16 is the high half of a float32, so the value is ``bits << 16``.
    """
    out = numpy.asarray(bits).astype(numpy.uint32)  # a new array, also for a 0-d input
    out <<= 16
    out = out.view(numpy.float32)
    out.flags.writeable = False
    return out


def _kind(mode) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path):
    """A file descriptor of the regular file ``path``; anything else is refused before it is opened.

    ``os.stat`` (following symlinks) is checked first, so ``open()`` never
    touches a FIFO (it would block until a writer appears) or a device; the
    file is then opened with ``O_NONBLOCK`` and checked again with ``fstat``,
    in case it was replaced in between.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise CheckpointError(path, f"cannot open the file ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(path, f"not a regular file ({_kind(st.st_mode)}); refused without opening it")
    flags = os.O_RDONLY
    for extra in ("O_NONBLOCK", "O_NOCTTY", "O_BINARY"):
        flags |= getattr(os, extra, 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise CheckpointError(path, f"cannot open the file ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CheckpointError(path, f"not a regular file ({_kind(st.st_mode)}); it was replaced while opened")
    return fd, st.st_size


def open_buffer(path) -> Buffer:
    """Memory-map a regular file read-only.

    Raises
    ------
    CheckpointError
        When the file cannot be opened or is not a regular file (FIFO, device,
        directory, socket).
    """
    path = os.fspath(path)
    fd, size = _open_regular(path)
    try:
        data = b"" if size == 0 else mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise CheckpointError(path, f"cannot map the file ({getattr(e, 'strerror', None) or e})") from None
    finally:
        os.close(fd)
    return Buffer(data, path)


def read_text(path, what="file", max_bytes=256 << 20) -> str:
    """The UTF-8 text of a regular file (a prototxt), refused when larger than ``max_bytes``.

    Raises
    ------
    CheckpointError
        When it cannot be read, is not a regular file, or is not UTF-8.
    """
    path = os.fspath(path)
    fd, size = _open_regular(path)
    try:
        if size > max_bytes:
            raise CheckpointError(path, f"the {what} has {size} bytes, more than {max_bytes}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise CheckpointError(path, f"cannot read the {what} ({e.strerror or e})") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(path, f"the {what} is not UTF-8 text ({e})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as open()'s universal newlines


def sha256_of(path) -> str:
    """Hex SHA-256 of a file's contents (read through a memory map)."""
    buf = open_buffer(path)
    return hashlib.sha256(buf.view).hexdigest()
