"""The canonical model format: ``<name>.npz`` (parameters) + ``<name>.json`` (sidecar).

The ``.npz`` (uncompressed ``numpy.savez``) holds every parameter under its
canonical name (``conv1_1.weight``, ``lstm1.W_x``, ...) in ebr_ref's layouts.
The JSON sidecar holds

- ``format``: ``"ebr_ref-canonical"``, ``version``: 1, ``gate_order``: ``"i,f,o,g"``
  (always :data:`~ebr_ref.layers.lstm.GATE_ORDER`, comma-separated; importers permute into it);
- ``kind``: ``"classifier"`` (a :class:`Model`), ``"captioner"``, or ``"weights"``
  (parameters an importer converted, with or without a runnable architecture);
- ``params_sha256``: the sha256 of the ``.npz``, and ``params``: every
  parameter's ``shape`` and ``dtype``;
- ``architecture`` (the layer list, ``Layer.to_dict``) and ``input_shape``
  (``[C, H, W]``) where the kind has them, plus kind-specific fields;
- ``meta``: what travels with the model (name, class names, preprocessing,
  pooling rounding, source file and its sha256, source format, recorded
  accuracy, ...).

:func:`write_canonical` / :func:`read_canonical` are the one reader and writer
of the format (``weights_io`` and the captioning model use them too); this
module needs numpy and the standard library only, so shipped models load with
ebr_ref alone.

Reading (:func:`read_npz`, also used for ``ebr-ref compare``'s results files)
never trusts a header: before a member's data is read, its ``.npy`` header is
parsed and ``shape x itemsize`` must equal the member's size in the zip
directory, which in turn must fit in the file (a stored member) or in the
largest expansion deflate allows (a compressed one); object dtypes are
refused, and for a canonical file the shapes and dtypes must be the sidecar's.
Every problem of a file raises :class:`ModelFileError` (a ``ValueError``)
naming the file and the member. Parameters with NaN or infinite values are
refused when read and when written (:class:`NonFiniteError`, naming them) unless
``allow_nonfinite=True``.

Writing a pair (the commit protocol of :func:`write_canonical`): the new
``.npz`` and ``.json`` are written completely to temporary files
``.<name>.npz.tmp-<pid>-*`` and ``.<name>.json.tmp-<pid>-*`` in the target's
folder (flushed to disk), then, with SIGINT and SIGTERM held back,

1. the new sidecar is renamed to ``.<name>.json.next`` (the pending sidecar);
2. the new ``.npz`` is renamed over ``<name>.npz``;
3. the pending sidecar is renamed over ``<name>.json``.

Every rename is atomic, so at every instant either ``<name>.json`` matches
``<name>.npz`` (the old pair before step 2, the new pair after step 3) or,
between steps 2 and 3, the pending sidecar does: :func:`read_sidecar` then
reads the pending one (it checks the sha256 only when a pending sidecar
exists). A writer killed outright (SIGKILL, power loss) leaves temporaries
behind; readers ignore them, and the next :func:`write_canonical` to the same
name cleans up first: it removes temporaries whose writing process no longer
runs, and finishes (renames into place) a pending sidecar that matches the
``.npz`` or removes one that does not.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import struct
import tempfile
import zipfile
import zlib
from contextlib import contextmanager

import numpy

from .. import backend
from ..layers.lstm import GATE_ORDER
from .model import Model
from .spec import Layer

__all__ = [
    "save_model",
    "load_model",
    "write_canonical",
    "read_canonical",
    "read_sidecar",
    "sidecar_path",
    "read_npz",
    "read_npy",
    "check_finite",
    "nonfinite_parameters",
    "ModelFileError",
    "NonFiniteError",
    "FORMAT",
    "VERSION",
    "SIDECAR_GATE_ORDER",
    "MAX_SIDECAR_BYTES",
]

FORMAT = "ebr_ref-canonical"
VERSION = 1
SIDECAR_GATE_ORDER = ",".join(GATE_ORDER)  # "i,f,o,g": the sidecar's spelling of GATE_ORDER
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar is metadata; a larger one is refused unread
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand more than 1032:1 (a 258-byte match per 2-bit code)
_MAX_JSON_DEPTH = 64  # sidecars nest a few levels (meta.preprocessing.mean ...)


class ModelFileError(ValueError):
    """A canonical model file, its sidecar or an ``.npz``/``.npy`` array file that cannot be used.

    The message names the file (and the member of an archive) and the problem.
    """


class NonFiniteError(ValueError):
    """Parameters hold NaN or infinite values; the message names them (see :func:`check_finite`)."""


def sidecar_path(npz_path) -> str:
    """``model.npz`` -> ``model.json``."""
    root, _ = os.path.splitext(os.fspath(npz_path))
    return root + ".json"


def _pending_path(npz_path) -> str:
    """``dir/model.npz`` -> ``dir/.model.json.next``, the sidecar of a pair being committed."""
    side = sidecar_path(npz_path)
    return os.path.join(os.path.dirname(side), "." + os.path.basename(side) + ".next")


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- non-finite parameters -------------------------------------------------------------------------
def nonfinite_parameters(params):
    """``{name: number of NaN or infinite values}`` for the floating-point parameters that have any."""
    bad = {}
    for k, v in params.items():
        a = numpy.asarray(backend.to_numpy(v))
        if a.dtype.kind in "fc":
            n = int(a.size - numpy.count_nonzero(numpy.isfinite(a)))
            if n:
                bad[k] = n
    return bad


def check_finite(params, where):
    """Raise :class:`NonFiniteError` when a parameter holds NaN or an infinity.

    Parameters
    ----------
    params : dict of str to array
    where : str
        Named in the message (a file, or ``"save_model"``).

    Raises
    ------
    NonFiniteError
        Naming every bad parameter (the first five, and how many more) and the
        number of non-finite values in each.
    """
    bad = nonfinite_parameters(params)
    if bad:
        items = sorted(bad.items())
        shown = ", ".join(f"{k} ({n} value{'s' if n > 1 else ''})" for k, n in items[:5])
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        raise NonFiniteError(
            f"{where}: non-finite parameters (NaN or inf): {shown}{more}; refused (to "
            "look at them: allow_nonfinite=True, or 'ebr-ref inspect --allow-nonfinite')"
        )


# ---- checked readers of .npy data ------------------------------------------------------------------
def _reason(e):
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


_CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    struct.error,
    ValueError,
    UnicodeDecodeError,
    OverflowError,
    RuntimeError,
)


def _read_header(f, where, kinds):
    """Parse a ``.npy`` header from ``f``; ``(shape, fortran_order, dtype, data bytes)`` after checks."""
    fmt = numpy.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(f)
    else:  # 3.0 only serves structured dtypes with non-Latin-1 field names, which are refused anyway
        raise ModelFileError(f"{where}: .npy format version {version} is not supported")
    if dtype.hasobject:
        raise ModelFileError(f"{where}: object dtype {dtype} (pickled Python objects) is refused")
    if dtype.kind not in kinds or dtype.names is not None or dtype.subdtype is not None:
        raise ModelFileError(f"{where}: dtype {dtype} is not allowed here")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ModelFileError(f"{where}: bad shape {shape!r} in the .npy header")
    return shape, fortran, dtype, math.prod(shape) * dtype.itemsize


def _read_data(f, shape, fortran, dtype, nbytes, where):
    a = numpy.empty(math.prod(shape), dtype=dtype)
    view = memoryview(a.view(numpy.uint8)) if nbytes else None
    got = 0
    while got < nbytes:  # in blocks: a zip member's readinto would otherwise read a whole copy first
        n = f.readinto(view[got : got + (16 << 20)])
        if not n:
            raise ModelFileError(f"{where}: truncated ({got} of {nbytes} data bytes)")
        got += n
    return a.reshape(shape, order="F" if fortran else "C")


_ARRAY_KINDS = "biufcUS"  # numbers, bools and strings (results files hold a few string scalars)


def read_npy(path, *, kinds=_ARRAY_KINDS):
    """A ``.npy`` file's array, its header checked against the file's size before the data is read.

    Raises
    ------
    ModelFileError
        For a missing or unreadable file, an object dtype, a header whose
        ``shape x itemsize`` differs from the data the file holds, or a
        truncated file (naming the file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            shape, fortran, dtype, nbytes = _read_header(f, path, kinds)
            if f.tell() + nbytes != size:
                raise ModelFileError(
                    f"{path}: the .npy header says {shape} {dtype} ({nbytes} bytes) but the "
                    f"file holds {size - f.tell()} bytes of data"
                )
            return _read_data(f, shape, fortran, dtype, nbytes, path)
    except ModelFileError:
        raise
    except (OSError, *_CORRUPT) as e:
        raise ModelFileError(f"{path}: not a readable .npy file ({_reason(e)})") from None


def read_npz(path, *, expected=None, kinds=_ARRAY_KINDS, what=".npz archive"):
    """The arrays of an ``.npz`` archive, every member checked before its data is read.

    Parameters
    ----------
    path : str or path-like
    expected : dict, optional
        ``{name: {"shape": [...], "dtype": "<f8"}}`` (a sidecar's ``params``):
        the archive must hold exactly these arrays with these shapes and dtypes,
        checked from the headers before any data is read.
    kinds : str
        Allowed ``dtype.kind`` letters.
    what : str
        What the file should be, for the messages ("results file", ...).

    Returns
    -------
    dict of str to ndarray

    Raises
    ------
    ModelFileError
        For a file that is not a zip archive, a corrupt directory or member, a
        member that is not ``<name>.npy`` or appears twice, an unsupported
        compression method, sizes that do not add up (a header that claims
        more data than the member holds, a member larger than the file or than
        deflate can expand to), an object dtype, or (with ``expected``) other
        names, shapes or dtypes. The message names the file and the member.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file")
    member = None
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = _member_names(path, infos, size)
            headers = {}
            for info, name in zip(infos, names, strict=True):  # every header first: no data before all pass
                member = info.filename
                with zf.open(info) as f:
                    headers[name] = _member_header(f, info, f"{path}: member {member}", kinds)
            member = None
            if expected is not None:
                _check_expected(path, headers, expected)
            out = {}
            for info, name in zip(infos, names, strict=True):
                member = info.filename
                with zf.open(info) as f:
                    shape, fortran, dtype, nbytes = _member_header(f, info, f"{path}: member {member}", kinds)
                    out[name] = _read_data(f, shape, fortran, dtype, nbytes, f"{path}: member {member}")
            return out
    except ModelFileError:
        raise
    except (OSError, *_CORRUPT) as e:
        at = f" (member {member})" if member else ""
        raise ModelFileError(f"{path}: not a readable {what}{at}: {_reason(e)}") from None


def _member_header(f, info, where, kinds):
    shape, fortran, dtype, nbytes = _read_header(f, where, kinds)
    if f.tell() + nbytes != info.file_size:
        raise ModelFileError(
            f"{where}: the .npy header says {shape} {dtype} ({nbytes} bytes) but the member "
            f"holds {info.file_size - f.tell()} bytes of data"
        )
    return shape, fortran, dtype, nbytes


def _check_expected(path, headers, expected):
    missing, extra = sorted(set(expected) - set(headers)), sorted(set(headers) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{path}: arrays missing from the .npz: {missing or 'none'}; "
            f"not in the sidecar: {extra or 'none'}"
        )
    for name, (shape, _, dtype, _) in headers.items():
        want = expected[name] if isinstance(expected[name], dict) else {}
        if list(shape) != list(want.get("shape", [])) or dtype.str != want.get("dtype"):
            raise ModelFileError(
                f"{path}: parameter {name}: the sidecar says {want.get('shape')} "
                f"{want.get('dtype')}, the .npz has {list(shape)} {dtype.str}"
            )


def _member_names(path, infos, size):
    """The array names of an archive's members, after the checks of the zip directory."""
    names, seen, total = [], set(), 0
    for info in infos:
        where = f"{path}: member {info.filename}"
        if not info.filename.endswith(".npy") or info.is_dir():
            raise ModelFileError(f"{where}: not an .npy member (an .npz holds only <name>.npy files)")
        name = info.filename[:-4]
        if name in seen:
            raise ModelFileError(f"{where}: appears twice in the archive")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{where}: encrypted members are not supported")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise ModelFileError(
                    f"{where}: a stored member of {info.file_size} bytes with "
                    f"{info.compress_size} bytes in the archive"
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 64:
                raise ModelFileError(
                    f"{where}: claims {info.file_size} bytes from {info.compress_size} "
                    "compressed bytes, more than deflate can expand to"
                )
        else:
            raise ModelFileError(
                f"{where}: compression method {info.compress_type} is not supported "
                "(numpy writes stored or deflated members)"
            )
        if info.header_offset + info.compress_size > size:
            raise ModelFileError(f"{where}: extends past the end of the file ({size} bytes)")
        total += info.compress_size
        names.append(name)
    if total > size:  # members that overlap (each reusing the same bytes) would multiply the data
        raise ModelFileError(
            f"{path}: the members' data ({total} bytes) exceeds the file ({size} bytes): overlapping members"
        )
    return names


# ---- the sidecar -----------------------------------------------------------------------------------
def _json_depth(text):
    """The deepest nesting of ``[``/``{`` in JSON text, outside strings."""
    depth = top = 0
    in_str = escape = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            top = max(top, depth)
        elif ch in "]}":
            depth -= 1
    return top


def _load_json(path):
    """A sidecar's JSON document, refusing oversized or deeply nested files (one-line errors)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: not a file")
    size = os.path.getsize(path)
    if size > MAX_SIDECAR_BYTES:
        raise ModelFileError(f"{path}: {size} bytes; a sidecar takes at most {MAX_SIDECAR_BYTES} bytes")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{path}: not a JSON sidecar ({e})") from None
    if _json_depth(text) > _MAX_JSON_DEPTH:
        raise ModelFileError(f"{path}: JSON nested deeper than {_MAX_JSON_DEPTH} levels; not a sidecar")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{path}: not a JSON sidecar ({_reason(e)})") from None


def _check_sidecar(side, side_path, kind):
    if not isinstance(side, dict) or side.get("format") != FORMAT:
        found = side.get("format") if isinstance(side, dict) else None
        raise ModelFileError(f"{side_path}: not an {FORMAT} sidecar (format = {found!r})")
    if side.get("version") != VERSION:
        raise ModelFileError(f"{side_path}: version {side.get('version')!r}; this reader knows {VERSION}")
    if side.get("gate_order") != SIDECAR_GATE_ORDER:
        raise ModelFileError(
            f"{side_path}: gate order {side.get('gate_order')!r}, expected {SIDECAR_GATE_ORDER!r}"
        )
    if not isinstance(side.get("params", {}), dict):
        raise ModelFileError(f"{side_path}: 'params' must map names to shapes and dtypes")
    if kind is not None and side.get("kind") != kind:
        raise ModelFileError(f"{side_path}: kind {side.get('kind')!r}, expected {kind!r}")
    return side


def _pending_if_committing(path, side):
    """The pending sidecar when a commit was cut between its steps 2 and 3 (module notes), else None."""
    pending = _pending_path(path)
    if not os.path.isfile(pending):
        return None
    try:
        doc = _load_json(pending)
        found = _sha256(path)
    except (OSError, ModelFileError):
        return None
    if side is not None and side.get("params_sha256") == found:
        return None  # the pair in place is whole: the pending file is a leftover
    return doc if isinstance(doc, dict) and doc.get("params_sha256") == found else None


def read_sidecar(path, *, kind=None):
    """The checked sidecar of ``path`` (``.npz``).

    A pair whose commit was interrupted between its last two renames (module
    notes) is read through its pending sidecar.

    Raises
    ------
    FileNotFoundError
        When the ``.npz`` or its sidecar is missing.
    ModelFileError
        When the sidecar is not a regular file, too large, not JSON, not this
        format or version, has another gate order, or (with ``kind``) is of
        another kind.
    """
    path = os.fspath(path)
    side_path = sidecar_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"canonical model: {path} does not exist")
    side = _load_json(side_path) if os.path.exists(side_path) else None
    pending = _pending_if_committing(path, side if isinstance(side, dict) else None)
    if pending is not None:
        return _check_sidecar(pending, side_path, kind)
    if side is None:
        raise FileNotFoundError(f"canonical model: {side_path} does not exist")
    return _check_sidecar(side, side_path, kind)


def read_canonical(path, *, kind=None, verify=True, allow_nonfinite=False):
    """Read ``path`` (``.npz``) and its sidecar; return ``(params, sidecar)``.

    ``verify`` checks the ``.npz`` against the sha256 recorded in the sidecar. The
    parameters must be exactly those the sidecar lists, with its shapes and
    dtypes (checked from the ``.npy`` headers before any data is read,
    :func:`read_npz`), numeric, and finite unless ``allow_nonfinite``.

    Raises
    ------
    FileNotFoundError
        As :func:`read_sidecar`.
    ModelFileError
        As :func:`read_sidecar`, and for a hash mismatch, an unreadable ``.npz``
        or parameters that differ from the listing (naming the file and what
        differs).
    NonFiniteError
        For NaN or infinite parameters (naming them), unless ``allow_nonfinite``.
    """
    path = os.fspath(path)
    side = read_sidecar(path, kind=kind)
    if verify:
        found = _sha256(path)
        if found != side.get("params_sha256"):
            recorded = side.get("params_sha256")
            raise ModelFileError(f"{path}: sha256 {found} differs from the sidecar's {recorded}")
    params = read_npz(path, expected=side.get("params", {}), kinds="biuf", what=".npz")
    if not allow_nonfinite:
        check_finite(params, path)
    return params, side


# ---- writing ---------------------------------------------------------------------------------------
def _jsonable(obj, where):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, where) for v in obj]
    if isinstance(obj, numpy.integer):
        return int(obj)
    if isinstance(obj, numpy.floating):
        return float(obj)
    if isinstance(obj, numpy.bool_):
        return bool(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ValueError(f"{where}: {type(obj).__name__} is not JSON-serialisable")


@contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM back (POSIX) while the body runs; they are delivered when it ends.

    Renames that must happen together run inside it, so that Ctrl-C or a
    ``kill`` cannot stop them half-way.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # pragma: no cover - Windows
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def temp_name(path):
    """The prefix of the temporaries of ``path``: ``.<basename>.tmp-<pid>-`` in the same folder."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp-{os.getpid()}-")


def _write_temp(path, write):
    """Write through ``write(f)`` to a new temporary beside ``path``, flushed to disk; return its name."""
    prefix = temp_name(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(prefix), prefix=os.path.basename(prefix))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(p):
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def pid_alive(pid):
    """Whether a process with this id runs (on this machine)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:  # pragma: no cover
        return True
    return True


def stale_temporaries(path):
    """Temporaries of ``path`` (``.<basename>.tmp-<pid>-*``) whose writing process no longer runs."""
    d, base = os.path.split(os.path.abspath(path))
    head = f".{base}.tmp-"
    out = []
    try:
        entries = os.listdir(d)
    except OSError:
        return out
    for n in entries:
        if n.startswith(head):
            pid = n[len(head) :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                out.append(os.path.join(d, n))
    return sorted(out)


def _recover(path):
    """Clean up after a writer of ``path`` that was killed outright (module notes)."""
    for p in (path, sidecar_path(path)):
        for tmp in stale_temporaries(p):
            if os.path.isfile(tmp) and not os.path.islink(tmp):
                _unlink(tmp)
    pending = _pending_path(path)
    if not os.path.isfile(pending):
        return
    side_path = sidecar_path(path)
    try:
        side = _load_json(side_path) if os.path.isfile(side_path) else None
    except ModelFileError:
        side = None
    doc = None
    if os.path.isfile(path):
        doc = _pending_if_committing(path, side if isinstance(side, dict) else None)
    if doc is not None and not os.path.isdir(side_path):
        os.replace(pending, side_path)  # finish the interrupted commit: the pending sidecar matches the .npz
    else:
        _unlink(pending)


def _check_target(path):
    for p in (path, sidecar_path(path)):
        if os.path.lexists(p) and (os.path.isdir(p) or not os.path.isfile(p)):
            raise ModelFileError(f"{p}: exists and is not a regular file; not replaced")


def write_canonical(path, params, sidecar, *, allow_nonfinite=False):
    """Write ``params`` to ``path`` (``.npz``) and ``sidecar`` (plus the format fields) beside it.

    The pair is committed as one unit (module notes): until the new pair is
    whole, the old pair (if any) stays in place and loadable; a failure or an
    interrupt removes the temporaries.

    Parameters
    ----------
    path : str or path-like
        Must end in ``.npz``.
    params : dict of str to array
        NumPy or CuPy arrays (moved to the host), canonical names.
    sidecar : dict
        JSON-serialisable fields: ``kind`` and the kind's own fields.
    allow_nonfinite : bool
        Write parameters with NaN or infinite values (refused by default).

    Returns
    -------
    dict
        The sidecar as written.

    Raises
    ------
    ValueError
        For a bad path, a non-numeric parameter, a name with ``/``, or fields that
        are not JSON-serialisable.
    NonFiniteError
        For NaN or infinite parameters, unless ``allow_nonfinite``.
    ModelFileError
        When ``path`` or its sidecar exists and is not a regular file.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"canonical model files end in .npz, got {path!r}")
    arrays = {}
    for k, v in params.items():
        a = numpy.ascontiguousarray(backend.to_numpy(v))
        if a.dtype.kind not in "biuf":
            raise ValueError(f"parameter {k} has non-numeric dtype {a.dtype}")
        if "/" in k:
            raise ValueError(f"parameter name {k!r} must not contain '/'")
        arrays[k] = a
    if not allow_nonfinite:
        check_finite(arrays, path)
    side = _jsonable(dict(sidecar), "sidecar")
    _recover(path)
    _check_target(path)
    tmp_npz = tmp_json = None
    pending = _pending_path(path)
    try:
        tmp_npz = _write_temp(path, lambda f: numpy.savez(f, **arrays))
        side.update(
            {
                "format": FORMAT,
                "version": VERSION,
                "gate_order": SIDECAR_GATE_ORDER,
                "params_sha256": _sha256(tmp_npz),
                "params": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()},
            }
        )
        text = json.dumps(side, indent=1, sort_keys=True, allow_nan=False) + "\n"
        tmp_json = _write_temp(sidecar_path(path), lambda f: f.write(text.encode("utf-8")))
        with signals_held():
            os.replace(tmp_json, pending)  # 1. the new sidecar, pending
            tmp_json = None
            try:
                os.replace(tmp_npz, path)  # 2. the new parameters (readers use the pending sidecar)
            except BaseException:
                _unlink(pending)  # nothing changed: the old pair is still in place
                raise
            tmp_npz = None
            os.replace(pending, sidecar_path(path))  # 3. the new pair is whole
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        for tmp in (tmp_npz, tmp_json):
            if tmp is not None:
                _unlink(tmp)
    return side


def save_model(model, path, *, meta=None, allow_nonfinite=False):
    """Write ``model`` as ``path`` (``.npz``) plus its JSON sidecar; return the sidecar dict.

    ``meta`` is merged over ``model.meta``. NaN or infinite parameters are
    refused (:class:`NonFiniteError`) unless ``allow_nonfinite``.
    """
    return write_canonical(
        path,
        model.params,
        {
            "kind": "classifier",
            "input_shape": list(model.input_shape),
            "architecture": [layer.to_dict() for layer in model.layers],
            "meta": {**model.meta, **(meta or {})},
        },
        allow_nonfinite=allow_nonfinite,
    )


def load_model(path, *, verify=True, allow_nonfinite=False):
    """Read a canonical model (``.npz`` + ``.json`` sidecar of kind ``"classifier"``).

    Parameters
    ----------
    path : str or path-like
    verify : bool
        Check the ``.npz`` against the sidecar's sha256.
    allow_nonfinite : bool
        Load parameters with NaN or infinite values (for inspection); refused
        by default (:class:`NonFiniteError`, naming them).

    Raises
    ------
    FileNotFoundError
        When either file is missing.
    ModelFileError
        When the sidecar is not this format, the hash differs, or the ``.npz``
        is unreadable or does not match the sidecar (naming the file and what
        differs).
    NonFiniteError
        For NaN or infinite parameters, unless ``allow_nonfinite``.
    ValueError
        When the parameters do not fit the architecture.
    """
    params, side = read_canonical(path, kind="classifier", verify=verify, allow_nonfinite=allow_nonfinite)
    try:
        layers = [Layer.from_dict(d) for d in side["architecture"]]
        return Model(layers, params, input_shape=tuple(side["input_shape"]), meta=side.get("meta", {}))
    except KeyError as e:
        raise ModelFileError(f"{sidecar_path(path)}: missing field {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None
