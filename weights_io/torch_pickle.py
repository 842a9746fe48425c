"""PyTorch ``.pt``/``.pth`` files read without torch, through a restricted unpickler.

Two layouts (torch/serialization.py):

* **zip** (torch >= 1.6): ``<prefix>/data.pkl`` (pickle protocol 2) plus one
  ``<prefix>/data/<key>`` record of raw bytes per storage, ``<prefix>/byteorder``
  (absent in older files: little-endian). Records are stored uncompressed, so
  tensors are memory-mapped views of the file.
* **legacy** (``_use_new_zipfile_serialization=False`` and pre-1.6 files):
  consecutive pickles (magic number, protocol version 1001, sys_info, the
  object, the list of storage keys) followed, for each key in that order, by
  an int64 element count and the storage's raw bytes.

Security: :class:`_RestrictedUnpickler` resolves a global only if it is in
``ALLOWED_GLOBALS`` (``collections.OrderedDict``, the ``torch._utils``
tensor/parameter rebuild functions, ``torch.<X>Storage`` types, ``torch.Size``,
``torch.device``, dtype names and ``_codecs.encode``); each maps to a function
of this module, never to torch or builtins, and is handed to the pickle
wrapped in a frozen stand-in (:class:`_Callable`), so that a ``BUILD`` opcode
cannot set attributes (``__defaults__``, ``__dict__``...) on the functions
themselves: ``BUILD`` succeeds only on objects the load created (the
``OrderedDict`` of a state dict and its ``_metadata``). Anything else
(``os.system``, ``builtins.eval``, a pickled ``nn.Module`` class...) raises
:class:`~weights_io.errors.CheckpointError` before it can be called.

Tensor views are checked against their storage before ``as_strided`` (one
place, :func:`_materialise`, for every tensor): the last element must lie in
the storage, and a view may address at most ``VIEW_REPEAT`` times its
storage's elements plus ``VIEW_SLACK`` (zero or overlapping strides would
otherwise let a 1-element storage pose as gigabytes that a converter copies).
Every tensor handed out is charged to the file's budget
(:meth:`weights_io._buffer.Buffer.charge`; bfloat16 at 4 bytes per element),
and nested containers are flattened by :func:`weights_io._walk.flatten_dag`
(each container walked once, a budget on the names built).
"""

from __future__ import annotations

import collections
import pickle
import pickletools
import zipfile

import numpy

from ._buffer import Buffer, widen_bf16
from ._walk import flatten_dag
from .errors import CheckpointError

__all__ = ["read_torch_zip", "read_torch_legacy", "LEGACY_MAGIC_PREFIX", "flatten_tensors", "ALLOWED_GLOBALS"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# pickle of LEGACY_MAGIC with protocol 2: PROTO 2, LONG1 10 bytes, little-endian magic
LEGACY_MAGIC_PREFIX = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
# A view may address at most VIEW_REPEAT * (its storage's elements) + VIEW_SLACK
# elements: views of real checkpoints address at most their storage (slices,
# transposes, LSTM weights flattened into one storage); expand()ed constants
# repeat a few elements (the slack).
VIEW_REPEAT = 2
VIEW_SLACK = 4096

# storage type name -> numpy dtype string ("bf16": widened to float32 when materialised)
_STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "bf16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
}
_TORCH_DTYPES = {
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "float",
    "double",
    "half",
    "long",
    "int",
    "short",
    "complex64",
    "complex128",
}


class _Frozen:
    """Objects a pickle can reference but never modify (a BUILD opcode on them fails)."""

    __slots__ = ()

    def _describe(self):
        return f"a {type(self).__name__.lstrip('_')}"

    def __setattr__(self, name, value):
        raise CheckpointError(None, f"the pickle tried to set attribute {name!r} on {self._describe()}")

    def __delattr__(self, name):
        raise CheckpointError(None, f"the pickle tried to delete attribute {name!r} of {self._describe()}")

    def __setstate__(self, state):  # what the unpickler's BUILD opcode calls
        raise CheckpointError(
            None,
            f"the pickle tried to BUILD (set the state of) {self._describe()}; only "
            "objects that the load itself creates may be built",
        )


class _StorageType(_Frozen):
    __slots__ = ("name",)

    def __init__(self, name):
        object.__setattr__(self, "name", name)

    @property
    def dtype(self):
        return _STORAGE_DTYPES[self.name]

    def itemsize(self):
        return 2 if self.dtype == "bf16" else numpy.dtype(self.dtype).itemsize


class _Storage(_Frozen):
    """A storage named by a persistent id (its bytes are looked up by ``key`` after unpickling)."""

    __slots__ = ("key", "stype", "numel")

    def __init__(self, key, stype, numel):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "stype", stype)
        object.__setattr__(self, "numel", numel)


class _TensorRef(_Frozen):
    """A tensor to be materialised once its storage's bytes are known."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "stride", stride)


class _Callable(_Frozen):
    """A frozen stand-in for an allow-listed function, as the pickle sees it.

    The pickle can call it, nothing else: it has no ``__dict__``, no
    ``__defaults__`` and refuses attribute assignment, so a ``BUILD`` opcode
    on it fails instead of editing the loader's functions for the rest of the
    process.
    """

    __slots__ = ("_fn", "_name")

    def __init__(self, fn, name):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def _describe(self):
        return f"the allow-listed global {self._name!r}"

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __reduce__(self):
        raise CheckpointError(None, "an allow-listed function cannot be pickled again")


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(None, f"{what} must be an int, found {type(v).__name__}")
    return v


def _int_tuple(v, what):
    if not isinstance(v, (tuple, list)):
        raise CheckpointError(None, f"{what} must be a tuple of ints, found {type(v).__name__}")
    return tuple(_int(x, what) for x in v)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise CheckpointError(None, "tensor rebuild: first argument is not a storage")
    size = _int_tuple(size, "tensor size")
    stride = _int_tuple(stride, "tensor stride")
    if len(size) != len(stride):
        raise CheckpointError(None, f"tensor rebuild: size {size} and stride {stride} differ in length")
    return _TensorRef(storage, _int(storage_offset, "storage offset"), size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, _TensorRef):
        raise CheckpointError(None, "parameter rebuild: data is not a tensor")
    return data


def _torch_size(values=()):
    return _int_tuple(tuple(values), "torch.Size")


def _torch_device(*args):
    return "device(" + ",".join(str(a) for a in args) + ")"


def _codecs_encode(text, encoding="latin1"):
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise CheckpointError(None, "_codecs.encode: only str with latin1/utf-8/ascii is allowed")
    return text.encode(encoding)


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals and torch storage ids."""

    def __init__(self, file, path, storages, storage_source):
        super().__init__(file, encoding="latin1")
        self._reader = file
        self._path = path
        self._storages = storages
        self._source = storage_source  # "zip" (5-tuples) or "legacy" (6-tuples)

    def find_class(self, module, name):
        fn = ALLOWED_GLOBALS.get((module, name))
        if fn is not None:  # a fresh frozen stand-in: BUILD on it fails, the function itself is never exposed
            return _Callable(fn, f"{module}.{name}")
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return f"torch.{name}"
        raise CheckpointError(
            self._path,
            f"refused to load the pickled global '{module}.{name}': only tensor data (OrderedDict, "
            "torch tensor/parameter rebuild functions, storage types) is allowed; nothing was executed",
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(self._path, f"malformed persistent id {type(pid).__name__}")
        tag = pid[0].decode("latin1") if isinstance(pid[0], bytes) else pid[0]
        if tag != "storage":
            raise CheckpointError(self._path, f"unsupported persistent id type {tag!r}")
        n = 5 if self._source == "zip" else 6
        if len(pid) != n:
            raise CheckpointError(self._path, f"storage persistent id has {len(pid)} fields, expected {n}")
        stype, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(stype, _StorageType):
            raise CheckpointError(self._path, "storage persistent id does not name a torch storage type")
        if isinstance(key, bytes):
            key = key.decode("latin1")
        if not isinstance(key, (str, int)):
            raise CheckpointError(self._path, "storage key must be a string")
        key = str(key)
        numel = _int(numel, "storage size")
        if numel < 0:
            raise CheckpointError(self._path, f"storage {key}: negative size {numel}")
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = _Storage(key, stype, numel)
        elif st.stype.dtype != stype.dtype or st.numel != numel:
            raise CheckpointError(
                self._path, f"storage {key} is referenced with two different types or sizes"
            )
        if self._source == "legacy" and pid[5] is not None:
            view = pid[5]
            if not (isinstance(view, tuple) and len(view) == 3):
                raise CheckpointError(self._path, f"storage {key}: malformed view metadata")
            raise CheckpointError(self._path, f"storage {key}: legacy storage views are not supported")
        return st


class _ViewReader:
    """A minimal binary file over a memoryview (no read-ahead, so ``pos`` is exact)."""

    def __init__(self, view, pos=0):
        self.view = view
        self.pos = pos

    def read(self, n=-1):
        end = len(self.view) if n is None or n < 0 else min(len(self.view), self.pos + n)
        out = bytes(self.view[self.pos : end])
        self.pos = end
        return out

    def readinto(self, b):
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self):
        start = n = self.pos
        size = len(self.view)
        while n < size:  # search in C, 64 KiB at a time
            k = bytes(self.view[n : n + 65536]).find(b"\n")
            if k >= 0:
                return self.read(n + k + 1 - start)
            n += 65536
        return self.read(size - start)


_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _prescan(reader, path, what):
    """Walk the pickle's opcodes without executing anything, then rewind.

    CPython's unpickler allocates what a counted opcode claims (``BINBYTES8``,
    ``LONG4``...) before reading it, and grows its memo to the largest ``PUT``
    index. ``pickletools.genops`` reads each argument from the stream, so a
    length beyond the data fails here; memo indices are bounded by the number
    of opcodes (writers number them consecutively).
    """
    start = reader.pos
    n = 0
    try:
        for op, arg, _pos in pickletools.genops(reader):
            n += 1
            if op.name in _PUT_OPS and (not isinstance(arg, int) or arg > n + 16):
                raise CheckpointError(path, f"{what}: memo index {arg} is out of range")
    except CheckpointError:
        raise
    except Exception as e:  # ValueError: truncated argument / unknown opcode
        raise CheckpointError(path, f"{what}: malformed pickle ({type(e).__name__}: {e})") from None
    reader.pos = start


def _unpickle(unpickler, path, what):
    _prescan(unpickler._reader, path, what)
    try:
        return unpickler.load()
    except CheckpointError as e:
        raise CheckpointError(path, e.detail) from None
    except RecursionError:
        raise CheckpointError(path, f"{what}: pickle nested too deeply") from None
    except Exception as e:  # UnpicklingError, EOFError, TypeError from a bad REDUCE...
        raise CheckpointError(path, f"{what}: malformed pickle ({type(e).__name__}: {e})") from None


def _materialise(ref: _TensorRef, datas, buf: Buffer, name):
    """The array of a tensor: a strided view of its storage, checked against it (bfloat16 widened).

    The one place where every tensor of a torch file becomes an array: the
    view must lie inside the storage, and may address at most ``VIEW_REPEAT``
    times the storage's elements plus ``VIEW_SLACK`` (zero or overlapping
    strides), so a few bytes of pickle cannot pose as gigabytes.
    """
    path = buf.path
    st = ref.storage
    data = datas.get(st.key)
    if data is None:
        raise CheckpointError(path, f"tensor {name}: storage {st.key} has no data in the file")
    size, stride, offset = ref.size, ref.stride, ref.offset
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise CheckpointError(
            path, f"tensor {name}: negative size, stride or offset ({size}, {stride}, {offset})"
        )
    bf16 = st.stype.dtype == "bf16"
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        out = numpy.empty(size, numpy.float32 if bf16 else data.dtype)
        out.flags.writeable = False
        return out
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= st.numel:
        raise CheckpointError(
            path,
            f"tensor {name}: view (offset {offset}, size {size}, stride {stride}) reaches element {last} "
            f"of a storage of {st.numel} elements",
        )
    if numel > VIEW_REPEAT * st.numel + VIEW_SLACK:
        raise CheckpointError(
            path,
            f"tensor {name}: a view of {numel} elements (size {size}, stride {stride}) over a storage of "
            f"{st.numel} element{'' if st.numel == 1 else 's'}; zero or overlapping strides may repeat a "
            f"storage's elements at most {VIEW_REPEAT} times (plus {VIEW_SLACK})",
        )
    buf.charge(numel * (4 if bf16 else data.itemsize), f"tensor {name}")
    item = data.itemsize
    out = numpy.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    if bf16:  # bfloat16 -> float32 (exact): the high half of the float32 bits
        out = widen_bf16(out)
    return out


def flatten_tensors(obj, datas, buf: Buffer):
    """``{dotted name: array}`` for every tensor in a (nested) dict/list checkpoint.

    Keys of nested dicts are joined with ``.`` (``{'model': {'fc.weight': t}}``
    gives ``model.fc.weight``), list items use their index; other values are
    skipped. A container shared by several parents (the pickle's memo) is
    walked once and its tensors appear under every path to it; the same tensor
    object becomes one array. Every name handed out is charged to the file's
    budget (:meth:`Buffer.charge`), as a converter may copy it.
    """
    arrays = {}  # id(_TensorRef) -> array
    refs = []  # keeps the refs alive while their ids are keys

    def expand(o):
        if isinstance(o, _TensorRef):
            return ("leaf", o)
        if isinstance(o, (dict, list, tuple)):
            return ("node", id(o), (lambda: o.items()) if isinstance(o, dict) else (lambda: enumerate(o)))
        return None

    out = {}
    for name, ref in flatten_dag(obj, expand, buf.path, sep="."):
        if name in out:
            raise CheckpointError(buf.path, f"two tensors flatten to the same name {name!r}")
        a = arrays.get(id(ref))
        if a is None:
            a = arrays[id(ref)] = _materialise(ref, datas, buf, name or "<root>")
            refs.append(ref)
        else:  # the same tensor under another name: a converter may copy it once more
            buf.charge(a.nbytes, f"tensor {name}")
        out[name] = a
    return out


def _zip_entry(buf: Buffer, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """The bytes of a zip member: a view of the file when stored, else decompressed."""
    h = info.header_offset
    if bytes(buf.bytes(h, 4, f"zip member {info.filename}")) != b"PK\x03\x04":
        raise buf.error(f"zip member {info.filename}: bad local header signature")
    n = buf.uint(h + 26, 2, "zip local header")
    m = buf.uint(h + 28, 2, "zip local header")
    buf.claim(h, h + 30 + n + m + info.compress_size, info.filename, f"zip member {info.filename!r}")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise buf.error(f"zip member {info.filename}: stored member with differing sizes")
        return buf.bytes(h + 30 + n + m, info.file_size, f"zip member {info.filename}")
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise buf.error(f"zip member {info.filename}: unsupported compression method {info.compress_type}")
    if info.file_size > 1032 * max(info.compress_size, 1) + 1024:  # deflate cannot expand beyond ~1032:1
        raise buf.error(
            f"zip member {info.filename}: claims {info.file_size} bytes from {info.compress_size} "
            "compressed bytes"
        )
    return memoryview(zf.read(info))


def open_zip(buf: Buffer):
    """A ``zipfile.ZipFile`` over the buffer (errors become CheckpointError)."""
    try:
        return zipfile.ZipFile(_ViewReaderSeekable(buf.view))
    except Exception as e:
        raise buf.error(f"not a readable zip archive ({type(e).__name__}: {e})") from None


class _ViewReaderSeekable:
    """A seekable read-only file over a memoryview (for zipfile)."""

    def __init__(self, view):
        self.view = view
        self.pos = 0

    def seekable(self):
        return True

    def seek(self, off, whence=0):
        self.pos = off if whence == 0 else (self.pos + off if whence == 1 else len(self.view) + off)
        if self.pos < 0:
            raise OSError("negative seek position")
        return self.pos

    def tell(self):
        return self.pos

    def read(self, n=-1):
        end = len(self.view) if n is None or n < 0 else min(len(self.view), self.pos + n)
        out = bytes(self.view[self.pos : end])
        self.pos = max(self.pos, end)
        return out


def read_torch_zip(buf: Buffer):
    """Read a zip-format torch checkpoint; return ``{dotted name: array}``."""
    zf = open_zip(buf)
    try:
        infos = {i.filename: i for i in zf.infolist()}
    except Exception as e:
        raise buf.error(f"unreadable zip directory ({type(e).__name__}: {e})") from None
    pkls = [n for n in infos if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    if any(n.endswith("constants.pkl") for n in infos) and any(
        "/code/" in n or n.startswith("code/") for n in infos
    ):
        raise buf.error(
            "this is a TorchScript archive (torch.jit.save), not a state_dict; "
            "save model.state_dict() instead"
        )
    if len(pkls) != 1:
        raise buf.error(f"expected one '<prefix>/data.pkl' in the zip archive, found {len(pkls)}")
    prefix = pkls[0][: -len("data.pkl")]
    order = "<"
    if prefix + "byteorder" in infos:
        bo = bytes(_zip_entry(buf, zf, infos[prefix + "byteorder"]))
        if bo not in (b"little", b"big"):
            raise buf.error(f"unknown byteorder record {bo[:16]!r}")
        order = "<" if bo == b"little" else ">"
    storages, datas = {}, {}
    pkl = _zip_entry(buf, zf, infos[pkls[0]])
    obj = _unpickle(_RestrictedUnpickler(_ViewReader(pkl), buf.path, storages, "zip"), buf.path, "data.pkl")
    for key, st in storages.items():
        name = f"{prefix}data/{key}"
        if name not in infos:
            raise buf.error(f"storage record {name} is missing from the archive")
        raw = _zip_entry(buf, zf, infos[name])
        nbytes = st.numel * st.stype.itemsize()
        if len(raw) < nbytes:
            raise buf.error(
                f"storage {key}: {st.numel} elements need {nbytes} bytes, the record has {len(raw)}"
            )
        datas[key] = _storage_array(raw[:nbytes], st, order)
    return flatten_tensors(obj, datas, buf)


def _storage_array(raw, st, order):
    dt = "u2" if st.stype.dtype == "bf16" else st.stype.dtype
    dtype = numpy.dtype(dt).newbyteorder(order) if numpy.dtype(dt).itemsize > 1 else numpy.dtype(dt)
    a = numpy.frombuffer(raw, dtype=dtype, count=st.numel) if st.numel else numpy.empty((0,), dtype)
    a.flags.writeable = False
    return a


def read_torch_legacy(buf: Buffer):
    """Read a legacy (non-zip) torch checkpoint; return ``{dotted name: array}``."""
    storages, datas = {}, {}
    reader = _ViewReader(buf.view)

    def load(what, source="legacy"):
        return _unpickle(_RestrictedUnpickler(reader, buf.path, storages, source), buf.path, what)

    magic = load("magic number")
    if magic != LEGACY_MAGIC:
        raise buf.error("not a legacy torch file (wrong magic number)")
    proto = load("protocol version")
    if proto != LEGACY_PROTOCOL:
        raise buf.error(f"unsupported legacy protocol version {proto!r}, expected {LEGACY_PROTOCOL}")
    sys_info = load("sys_info")
    order = "<"
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        order = ">"
    obj = load("checkpoint object")
    keys = load("storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, (str, bytes, int)) for k in keys):
        raise buf.error("legacy storage key list is malformed")
    pos = reader.pos
    for key in keys:
        key = key.decode("latin1") if isinstance(key, bytes) else str(key)
        st = storages.get(key)
        if st is None:
            raise buf.error(f"storage {key} is listed but no tensor uses it")
        numel = int.from_bytes(
            buf.bytes(pos, 8, f"storage {key} size"), "little" if order == "<" else "big", signed=True
        )
        if numel != st.numel:
            raise buf.error(f"storage {key}: header says {numel} elements, the tensor data says {st.numel}")
        nbytes = numel * st.stype.itemsize()
        datas[key] = _storage_array(buf.bytes(pos + 8, nbytes, f"storage {key} data"), st, order)
        pos += 8 + nbytes
    return flatten_tensors(obj, datas, buf)
