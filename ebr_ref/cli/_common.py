"""What the commands share: the user-error type, console output and progress, model and target resolution.

``weights_io`` is imported here lazily, inside :func:`load_any_model` and only
for a checkpoint that is not an ebr_ref canonical model (a foreign checkpoint
converted on the fly); ``convert`` and ``inspect`` import it themselves.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

import numpy

__all__ = [
    "UserError", "Console", "load_any_model", "is_canonical_model", "resolve_targets", "parse_interval",
    "parse_seed_steps", "jsonable", "prepare_out_dir", "describe_model", "user_errors", "require_classifier",
    "require_cli_extra", "Terminated",
]


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM while a command runs, so that temporaries are cleaned up."""


class UserError(Exception):
    """A mistake of the user (bad path, argument or file): printed as one line, exit code 2.

    ``prog`` names the command in the message (argparse errors set it).
    """

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


@contextmanager
def user_errors(what=None):
    """Turn the errors an input can cause (ValueError, TypeError, OSError) into :class:`UserError`.

    Used around calls whose failures are caused by the user's files or
    arguments (loading a model, validating a clip against it), never around
    the whole program, so that a genuine bug still shows its traceback.
    """
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError, OSError, KeyError) as e:
        msg = _one_line(e)
        raise UserError(f"{what}: {msg}" if what else msg) from None


def _one_line(e):
    if isinstance(e, KeyError) and e.args:
        text = f"missing entry {e.args[0]!r}"
    elif isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


class Console:
    """Informational output (stdout) and progress bars (tqdm on stderr), both silenced by ``--quiet``.

    Bars appear only on a terminal (``tqdm(disable=None)``), so logs and pipes
    stay clean; they are cleared when done (``leave=False``).
    """

    def __init__(self, quiet=False):
        self.quiet = bool(quiet)
        self.t0 = time.perf_counter()

    def info(self, msg=""):
        if not self.quiet:
            print(msg, flush=True)

    def progress(self, iterable=None, *, total=None, desc=None):
        """``tqdm(iterable)`` or the iterable itself when quiet or tqdm is missing."""
        if self.quiet:
            return iterable if iterable is not None else _NullBar()
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the cli extra
            return iterable if iterable is not None else _NullBar()
        return tqdm(iterable, total=total, desc=desc, leave=False, disable=None, file=sys.stderr,
                    dynamic_ncols=True)

    @contextmanager
    def stage(self, desc):
        """A one-step bar for a step that cannot report its own progress; yields nothing."""
        bar = self.progress(total=1, desc=desc)
        try:
            yield
            bar.update(1)
        finally:
            bar.close()


class _NullBar:
    def update(self, n=1):
        pass

    def close(self):
        pass

    def set_postfix_str(self, s):
        pass


def _sidecar(path):
    """The ebr_ref canonical sidecar of ``path`` (a dict), or None when ``path`` is not such a model.

    Read with :func:`ebr_ref.models.io.read_sidecar` (a pair whose commit was
    interrupted is read through its pending sidecar); a sidecar of this format
    that fails its checks is still returned, so that loading reports why.
    """
    from ..models.io import FORMAT, ModelFileError, _load_json, read_sidecar, sidecar_path

    if not (str(path).endswith(".npz") and os.path.isfile(path)):
        return None
    try:
        return read_sidecar(path)
    except (ModelFileError, OSError):
        pass
    try:
        doc = _load_json(sidecar_path(path))
    except (ModelFileError, OSError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def is_canonical_model(path):
    """True when ``path`` is an ebr_ref canonical model or captioner (``x.npz`` with an ``x.json`` sidecar)."""
    return canonical_kind(path) in ("classifier", "captioner")


def canonical_kind(path):
    """The ``kind`` of an ebr_ref canonical file (``"classifier"`` when the sidecar predates the field), or None."""
    side = _sidecar(path)
    return None if side is None else side.get("kind", "classifier")


def _load_canonical(path, *, allow_nonfinite=False):
    """A classifier (:func:`ebr_ref.models.load_model`) or a captioner (sidecar ``kind: captioner``).

    The one loader of canonical files for every command: the ``.npz`` is read
    by :func:`ebr_ref.models.io.read_canonical` (sha256, every ``.npy`` header
    checked against the archive and the sidecar before its data is read,
    non-finite parameters refused unless ``allow_nonfinite``). A canonical file
    of kind ``weights`` (parameters converted by ``weights_io``) goes through
    :func:`load_any_model`'s conversion path instead.
    """
    from ..models import load_model

    with user_errors():
        if (_sidecar(path) or {}).get("kind") == "captioner":
            from ..models.caption import load_captioner

            if not allow_nonfinite:
                return load_captioner(path)
            return _captioner_nonfinite(path)
        return load_model(path, allow_nonfinite=allow_nonfinite)


def _captioner_nonfinite(path):
    """:func:`~ebr_ref.models.caption.load_captioner` for inspection: non-finite parameters allowed."""
    from ..models.caption import KIND, Vocabulary, captioner
    from ..models.io import read_canonical, sidecar_path

    params, side = read_canonical(path, kind=KIND, allow_nonfinite=True)
    try:
        dec = side["decoder"]
        vocab = Vocabulary.from_tokens(side["vocabulary"])
        return captioner(side["architecture"], vocab, tuple(side["input_shape"]),
                         static_layer=dec["static_layer"], pool=dec["pool"], cell_act=dec["cell_act"],
                         params=params, meta=side.get("meta", {}))
    except KeyError as e:
        raise ValueError(f"{sidecar_path(path)}: missing field {e.args[0]!r}") from None


def load_any_model(spec, *, prototxt=None, source=None, options=None):
    """A model from a shipped name, an ebr_ref canonical ``.npz``, or a foreign checkpoint.

    Returns
    -------
    model : Model or CaptionModel
    how : str
        ``"shipped"``, ``"canonical"`` or ``"converted (<converter>)"``.

    Raises
    ------
    UserError
    """
    from ..models import shipped_names
    from ..models.shipped import data_dir

    spec = os.fspath(spec)
    if not os.path.exists(spec):
        if os.sep not in spec and not spec.endswith(".npz") and spec in shipped_names():
            return _load_canonical(os.path.join(data_dir(), spec + ".npz")), "shipped"
        names = ", ".join(shipped_names()) or "none"
        raise UserError(f"{spec}: no such file (shipped model names: {names})")
    if os.path.isdir(spec):
        raise UserError(f"{spec}: is a folder; --model takes a checkpoint file or a shipped model name")
    if prototxt is not None and not os.path.isfile(prototxt):
        raise UserError(f"{prototxt}: no such prototxt file")
    if prototxt is None and source is None and canonical_kind(spec) in ("classifier", "captioner"):
        return _load_canonical(spec), "canonical"
    try:
        import weights_io
    except ImportError:  # pragma: no cover - weights_io ships with ebr_ref
        raise UserError("converting a foreign checkpoint needs the weights_io package (installed with ebr_ref)") from None
    with user_errors():
        params, meta = weights_io.convert(spec, source=source, prototxt=prototxt, **(options or {}))
        arch = meta.get("architecture")
        if not arch:
            raise UserError(f"{spec}: the converter found no architecture to build a model from")
        from ..models import from_spec
        from ..models.io import check_finite

        params = {k: numpy.array(v) for k, v in params.items()}
        check_finite(params, spec)
        model = from_spec(arch, params, meta)
        return model, f"converted ({meta.get('source', {}).get('converter', source or 'auto')})"


def require_classifier(model, command):
    """A UserError unless ``model`` is a classifier (not a captioner)."""
    from ..models.model import Model

    if not isinstance(model, Model):
        raise UserError(f"this model is a captioner; use 'ebr-ref caption' (not '{command}')")
    return model


def describe_model(model):
    name = model.meta.get("name", "model")
    shape = "x".join(map(str, model.input_shape))
    if hasattr(model, "vocab"):
        return f"{name} (captioner, {len(model.vocab)} tokens, input {shape}, {model.dtype})"
    kind = "CNN-LSTM" if model.is_recurrent else "per-frame CNN"
    return f"{name} ({kind}, {model.num_classes} classes, input {shape}, {model.dtype})"


def class_names(model):
    names = model.meta.get("class_names")
    if isinstance(names, (list, tuple)) and len(names) == model.num_classes:
        return [str(n) for n in names]
    return [str(k) for k in range(model.num_classes)]


def resolve_targets(specs, model):
    """Class indices from names (case-insensitive) or indices; raise a UserError naming the choices."""
    names = class_names(model)
    lower = {n.lower(): k for k, n in enumerate(names)}
    out = []
    for spec in specs:
        for item in str(spec).split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() in lower:
                out.append(lower[item.lower()])
            elif item.lstrip("-").isdigit():
                k = int(item)
                if not 0 <= k < model.num_classes:
                    n = model.num_classes
                    raise UserError(f"--target {k} is out of range: the model has {n} classes (0..{n - 1})")
                out.append(k)
            else:
                shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
                raise UserError(f"--target {item!r} is not a class of this model; classes: {shown}")
    if not out:
        raise UserError("--target: give a class name or index")
    return list(dict.fromkeys(out))


def parse_interval(text, what="--interval"):
    """``"3:10"`` -> ``(3, 10)`` (inclusive frames)."""
    if text is None:
        return None
    try:
        a, b = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise UserError(f"{what} must be START:END (inclusive frame indices), got {text!r}") from None
    if a < 0 or b < a:
        raise UserError(f"{what} must satisfy 0 <= START <= END, got {text!r}")
    return a, b


def parse_seed_steps(text):
    """``last``, ``all`` or a comma-separated list of steps."""
    if text in ("last", "all"):
        return text
    try:
        steps = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--seed-steps must be 'last', 'all' or steps like 3,7,11; got {text!r}") from None
    if not steps:
        raise UserError("--seed-steps: an empty list of steps")
    return steps


def jsonable(obj):
    """A JSON-serialisable copy: NumPy scalars and arrays become numbers and lists; NaN becomes None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, numpy.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (numpy.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (numpy.integer, int)):
        return int(obj)
    if isinstance(obj, (numpy.floating, float)):
        v = float(obj)
        return v if numpy.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def require_cli_extra():
    """A UserError naming the missing packages when the ``cli`` extra is not installed."""
    from importlib.util import find_spec

    def absent(mod):
        if mod in sys.modules:
            return sys.modules[mod] is None  # blocked on purpose
        try:
            return find_spec(mod) is None
        except (ImportError, ValueError):
            return True

    missing = [name for mod, name in (("PIL", "pillow"), ("matplotlib", "matplotlib"), ("imageio", "imageio"),
                                      ("imageio_ffmpeg", "imageio-ffmpeg"), ("tqdm", "tqdm")) if absent(mod)]
    if missing:
        raise UserError(f"this command needs {', '.join(missing)}: pip install 'ebr_ref[cli]'")


def prepare_out_dir(path):
    """Create the output folder (and parents); a UserError when it cannot be made or written."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--out {path}: exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {path}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"--out {path}: the folder is not writable")
    return path
