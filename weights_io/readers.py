"""Format detection and :func:`read_tensors`: every tensor of a checkpoint by name.

The format is recognised from the file's contents, never from its suffix:

============  ==========================================================  ===============================
format        recognised by                                               tensor names
============  ==========================================================  ===============================
torch         a zip with ``<prefix>/data.pkl``; or the legacy pickled      the state-dict keys; nested
              magic number ``0x1950a86a20f9469cfc6c``                      dicts joined with ``.``
npz           a zip whose members are all ``.npy``                         the member names without ``.npy``
hdf5          the HDF5 signature ``\\x89HDF\\r\\n\\x1a\\n`` (Keras,        the dataset paths, e.g.
              Caffe ``.caffemodel.h5``)                                    ``block1_conv1/block1_conv1_W_1:0``
keras         a zip with ``config.json`` and ``model.weights.h5``          the dataset paths of
              (Keras 3 ``.keras``)                                         ``model.weights.h5``
safetensors   a little-endian u64 header length followed by ``{``          the header's names
onnx          protobuf whose top-level fields are a ``ModelProto``'s       initializer names (and Constant
              (``ir_version`` varint 1, ``graph`` message 7)               node outputs)
caffe         protobuf whose top-level fields are a ``NetParameter``'s     ``<layer name>/<blob index>``
              (``layer`` 100 or ``layers`` 2 messages)
============  ==========================================================  ===============================
"""

from __future__ import annotations

from ._buffer import Buffer, open_buffer
from .caffe_binary import looks_like_caffe, read_caffemodel
from .errors import CheckpointError
from .hdf5 import H5File, find_superblock
from .keras_archive import is_keras_archive, read_keras_archive
from .onnx_reader import looks_like_onnx, onnx_tensors, read_onnx
from .safetensors_npz import looks_like_safetensors, read_npz, read_safetensors
from .torch_pickle import LEGACY_MAGIC_PREFIX, open_zip, read_torch_legacy, read_torch_zip

__all__ = ["FORMATS", "detect_format", "read_tensors", "guarded", "normalise_format"]

FORMATS = ("caffe", "torch", "safetensors", "hdf5", "keras", "onnx", "npz")
_ALIASES = {
    "caffemodel": "caffe",
    "pt": "torch",
    "pth": "torch",
    "pytorch": "torch",
    "h5": "hdf5",
    "st": "safetensors",
}
# a declared format that also accepts these contents: Keras' HDF5 files are Keras files too
_ACCEPTS = {("keras", "hdf5")}


def normalise_format(fmt):
    if fmt is None:
        return None
    f = _ALIASES.get(str(fmt).lower(), str(fmt).lower())
    if f not in FORMATS:
        raise CheckpointError(None, f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return f


def guarded(buf_or_path, fmt, fn, *args, **kwargs):
    """Call ``fn``; turn any non-CheckpointError failure into a CheckpointError naming the file."""
    path = buf_or_path.path if isinstance(buf_or_path, Buffer) else buf_or_path
    try:
        return fn(*args, **kwargs)
    except CheckpointError as e:
        if e.path is None:
            raise CheckpointError(path, e.detail) from None
        raise
    except RecursionError:
        raise CheckpointError(path, f"malformed {fmt} file: structures nested too deeply") from None
    except MemoryError:
        raise CheckpointError(path, f"malformed {fmt} file: it asks for more memory than available") from None
    except Exception as e:  # struct, zlib, unicode, index errors from a corrupted file
        raise CheckpointError(path, f"malformed {fmt} file ({type(e).__name__}: {e})") from None


def _detect(buf: Buffer):
    head = bytes(buf.view[:16])
    if buf.size == 0:
        raise buf.error("the file is empty")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        zf = open_zip(buf)
        names = zf.namelist()
        if any(n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1) for n in names):
            return "torch"
        if names and all(n.endswith(".npy") or n.endswith("/") for n in names):
            return "npz"
        if any(n.endswith("constants.pkl") for n in names):
            return "torch"
        if is_keras_archive(names):
            return "keras"
        raise buf.error(
            f"a zip archive that is neither a torch checkpoint, an .npz nor a Keras .keras "
            f"archive (members: {names[:5]})"
        )
    if head.startswith(LEGACY_MAGIC_PREFIX):
        return "torch"
    if buf.size > 262 and bytes(buf.view[257:262]) == b"ustar":
        raise buf.error(
            "a tar archive (torch's pre-0.4 tar format?) is not supported; re-save it with torch.save"
        )
    if find_superblock(buf) is not None:
        return "hdf5"
    if head.startswith(b"\x93NUMPY"):
        raise buf.error("a single .npy array; weights are expected in an .npz archive (numpy.savez)")
    if looks_like_safetensors(buf):
        return "safetensors"
    if looks_like_onnx(buf):
        return "onnx"
    if looks_like_caffe(buf):
        return "caffe"
    if head[:1] == b"\x80":
        raise buf.error("a pickle that is not a torch checkpoint (no torch magic number) is not read")
    raise buf.error(
        f"unrecognised checkpoint format (first bytes {head[:8]!r}); expected one of {', '.join(FORMATS)}"
    )


def detect_format(path) -> str:
    """The format of a checkpoint file, from its contents.

    Returns
    -------
    str
        One of ``FORMATS``.

    Raises
    ------
    CheckpointError
        For an empty, unreadable or unrecognised file.
    """
    buf = open_buffer(path)
    return guarded(buf, "checkpoint", _detect, buf)


def _tensors(buf: Buffer, fmt: str) -> dict:
    if fmt == "torch":
        if bytes(buf.view[:2]) == b"PK":
            return read_torch_zip(buf)
        return read_torch_legacy(buf)
    if fmt == "npz":
        return read_npz(buf)
    if fmt == "safetensors":
        return read_safetensors(buf)[0]
    if fmt == "onnx":
        return onnx_tensors(read_onnx(buf), buf)
    if fmt == "hdf5":
        return {path: ds.read() for path, ds in H5File(buf).root.walk() if ds.is_numeric}
    if fmt == "keras":
        weights = read_keras_archive(buf)[2]
        return {path: ds.read() for path, ds in H5File(weights).root.walk() if ds.is_numeric}
    if fmt == "caffe":
        _, layers = read_caffemodel(buf)
        out = {}
        for k, layer in enumerate(layers):
            lname = layer.name or f"#{k}"
            for i, b in enumerate(layer.blobs):
                key = f"{lname}/{i}"
                if key in out:
                    raise buf.error(f"two layers named {lname!r} both hold weights")
                out[key] = b
        return out
    raise AssertionError(fmt)  # pragma: no cover


def open_checked(path, format=None):
    """Open ``path`` and detect its format; check it against ``format`` if given.

    Returns
    -------
    (Buffer, str)
    """
    buf = open_buffer(path)
    declared = guarded(buf, "checkpoint", normalise_format, format)
    try:
        found = guarded(buf, declared or "checkpoint", _detect, buf)
    except CheckpointError as e:
        if declared is not None:
            raise CheckpointError(buf.path, f"the file is not a valid {declared} file ({e.detail})") from None
        raise
    if declared is not None and declared != found and (declared, found) not in _ACCEPTS:
        raise buf.error(f"the file was declared as {declared} but its contents are {found}")
    return buf, found


def read_tensors(path, *, format=None) -> dict:
    """Every tensor of a checkpoint under its original name.

    Parameters
    ----------
    path : str or os.PathLike
    format : str, optional
        One of ``FORMATS`` (aliases: ``pt``, ``pth``, ``h5``, ``caffemodel``).
        When given, the file's contents must match it (``keras`` also
        accepts Keras' HDF5 files).

    Returns
    -------
    dict of str to numpy.ndarray
        Read-only arrays; where the format stores raw little-endian data
        (torch, safetensors, npz stored members, contiguous HDF5 datasets,
        also inside a ``.keras`` archive, ONNX ``raw_data``, Caffe packed
        blobs) they are views of a memory map
        of the file (no copy; ``.copy()`` for a writable array). Caffe blobs
        keep their stored shape (legacy 4-d shapes included). bfloat16 is
        widened to float32.

    Raises
    ------
    CheckpointError
        For an unreadable, truncated, corrupted, mislabelled or unsafe file
        (nothing else escapes).
    """
    buf, fmt = open_checked(path, format)
    return guarded(buf, fmt, _tensors, buf, fmt)
