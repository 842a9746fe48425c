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
    "UserError",
    "Console",
    "load_any_model",
    "is_canonical_model",
    "resolve_targets",
    "parse_interval",
    "parse_seed_steps",
    "jsonable",
    "describe_model",
    "user_errors",
    "require_classifier",
    "require_cli_extra",
    "Terminated",
    "synthetic_training",
    "synthetic_dataset_of",
    "readout_layer",
    "check_method",
    "check_seed_steps",
    "check_interval",
    "positive_int",
    "chunk_size_arg",
    "CHUNK_SIZE_HELP",
    "nonnegative_int",
    "positive_float",
    "seed_int",
    "warn_if_synthetic_model",
    "SYNTHETIC_TITLE",
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
    stay clean; they are cleared when done (``leave=False``). Warnings
    (:meth:`warn`) go to stderr as one line each, also with ``--quiet``.
    """

    def __init__(self, quiet=False, prog="ebr-ref"):
        self.quiet = bool(quiet)
        self.prog = prog
        self.t0 = time.perf_counter()
        self.warnings = []

    def info(self, msg=""):
        if not self.quiet:
            print(msg, flush=True)

    def warn(self, msg):
        """``<prog>: warning: <msg>`` on stderr, one line (printed with ``--quiet`` too)."""
        line = " ".join(str(msg).split())
        self.warnings.append(line)
        print(f"{self.prog}: warning: {line}", file=sys.stderr, flush=True)

    def progress(self, iterable=None, *, total=None, desc=None):
        """``tqdm(iterable)`` or the iterable itself when quiet or tqdm is missing."""
        if self.quiet:
            return iterable if iterable is not None else _NullBar()
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the cli extra
            return iterable if iterable is not None else _NullBar()
        return tqdm(
            iterable, total=total, desc=desc, leave=False, disable=None, file=sys.stderr, dynamic_ncols=True
        )

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
    """True when ``path`` is an ebr_ref canonical model or captioner (``x.npz`` with an ``x.json``
    sidecar)."""
    return canonical_kind(path) in ("classifier", "captioner")


def canonical_kind(path):
    """The ``kind`` of an ebr_ref canonical file (``"classifier"`` when the sidecar predates the field),
    or None."""
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
        return captioner(
            side["architecture"],
            vocab,
            tuple(side["input_shape"]),
            static_layer=dec["static_layer"],
            pool=dec["pool"],
            cell_act=dec["cell_act"],
            params=params,
            meta=side.get("meta", {}),
        )
    except KeyError as e:
        raise ValueError(f"{sidecar_path(path)}: missing field {e.args[0]!r}") from None


def load_any_model(spec, *, prototxt=None, source=None, options=None, option="--model"):
    """A model from a shipped name, an ebr_ref canonical ``.npz``, or a foreign checkpoint.

    ``option`` is how the command line names ``spec`` in messages (``--model``,
    ``--caption-model``; None for ``convert``, whose checkpoint is positional).

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
    named = f"{option} {spec}" if option else spec
    if not os.path.exists(spec):
        if os.sep not in spec and not spec.endswith(".npz") and spec in shipped_names():
            return _load_canonical(os.path.join(data_dir(), spec + ".npz")), "shipped"
        names = ", ".join(shipped_names()) or "none"
        raise UserError(f"{named}: no such file (shipped model names: {names})")
    if os.path.isdir(spec):
        raise UserError(f"{named}: is a folder; expected a checkpoint file or a shipped model name")
    if prototxt is not None and not os.path.isfile(prototxt):
        raise UserError(f"--prototxt {prototxt}: no such file")
    if prototxt is None and source is None and canonical_kind(spec) in ("classifier", "captioner"):
        return _load_canonical(spec), "canonical"
    try:
        import weights_io
    except ImportError:  # pragma: no cover - weights_io ships with ebr_ref
        raise UserError(
            "converting a foreign checkpoint needs the weights_io package (installed with ebr_ref)"
        ) from None
    with user_errors():
        params, meta = weights_io.convert(spec, source=source, prototxt=prototxt, **(options or {}))
        arch = meta.get("architecture")
        if not arch:
            raise UserError(f"{spec}: the converter found no architecture to build a model from")
        from ..models import from_spec
        from ..models.io import check_finite

        # a converter's arrays are fresh and writable: kept as they are (no second copy of the weights);
        # read-only or memory-mapped ones are copied
        params = {
            k: v
            if isinstance(v, numpy.ndarray) and v.flags.writeable and v.flags.c_contiguous
            else numpy.array(v)
            for k, v in params.items()
        }
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


def check_interval(interval, T, what="--interval"):
    """A UserError when a ground-truth interval does not lie within the ``T`` kept frames (never clipped)."""
    if interval is None:
        return None
    a, b = interval
    if b > T - 1:
        where = "starts" if a > T - 1 else "ends"
        raise UserError(
            f"{what} {a}:{b} {where} after the clip's last kept frame ({T - 1}); the clip has "
            f"{T} kept frames, numbered from 0 after --start and --every"
        )
    return interval


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
    bad = [t for t in steps if t < 0]
    if bad:
        raise UserError(f"--seed-steps {text}: steps are frame indices >= 0; got {', '.join(map(str, bad))}")
    return steps


def check_seed_steps(steps, T, text):
    """A UserError naming ``--seed-steps`` when a listed step is not one of the ``T`` kept frames."""
    if isinstance(steps, str):
        return steps
    bad = [t for t in steps if not 0 <= t < T]
    if bad:
        raise UserError(
            f"--seed-steps {text}: step(s) {', '.join(map(str, bad))} out of range for a clip of "
            f"{T} frames (steps 0..{T - 1})"
        )
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

    missing = [
        name
        for mod, name in (
            ("PIL", "pillow"),
            ("matplotlib", "matplotlib"),
            ("imageio", "imageio"),
            ("imageio_ffmpeg", "imageio-ffmpeg"),
            ("tqdm", "tqdm"),
        )
        if absent(mod)
    ]
    if missing:
        raise UserError(f"this command needs {', '.join(missing)}: pip install 'ebr_ref[cli]'")


# ---- option types and checks that name the option --------------------------------------------------------
def _int_type(lo, what):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse_error(f"expected an integer {what}, got {text!r}") from None
        if v < lo:
            raise argparse_error(f"expected an integer {what}, got {v}")
        return v

    parse.__name__ = "integer"
    return parse


def argparse_error(msg):
    import argparse

    return argparse.ArgumentTypeError(msg)


positive_int = _int_type(1, ">= 1")
nonnegative_int = _int_type(0, ">= 0")


def chunk_size_arg(text):
    """An argparse type: ``auto`` or an integer >= 1 (``--chunk-size``)."""
    return "auto" if text == "auto" else _int_type(1, ">= 1 or 'auto'")(text)


CHUNK_SIZE_HELP = "frames per CNN chunk (memory grows with it); default auto: 8 on the CPU, up to 32 on a GPU"


def positive_float(text):
    """An argparse type: a finite number > 0 (frame rates)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse_error(f"expected a number > 0, got {text!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse_error(f"expected a finite number > 0, got {text!r}")
    return v


def seed_int(text):
    """An argparse type: a non-negative integer, decimal or 0x hexadecimal (random seeds)."""
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse_error(f"expected a non-negative integer (decimal or 0x hex), got {text!r}") from None
    if v < 0:
        raise argparse_error(f"expected a non-negative integer (decimal or 0x hex), got {text!r}")
    return v


positive_float.__name__ = "number"
seed_int.__name__ = "seed"


def _conv_layers(model):
    return [layer.name for layer in model.layers if layer.type == "conv"]


def readout_layer(model, layer):
    """The read-out layer of a run (``--layer``, else the sidecar's ``readout``, else ``conv5_1``), checked.

    Raises a UserError naming ``--layer`` (and the model's convolution layers)
    when the layer does not exist, or lies in the sequence part of a CNN-LSTM
    or at the classifier's output; for a model without a default read-out
    layer, the message says to choose one with ``--layer``.
    """
    names = list(model.layer_names)
    chosen = layer if layer is not None else model.meta.get("readout", "conv5_1")
    convs = ", ".join(_conv_layers(model)) or "none"
    if chosen != "input" and chosen not in names:
        if layer is None:
            raise UserError(
                f"this model has no default read-out layer (its sidecar names no 'readout' and "
                f"it has no layer {chosen!r}): choose one with --layer; its convolution layers: "
                f"{convs} (or 'input' for the pixels)"
            )
        raise UserError(
            f"--layer {layer}: not a layer of this model; its convolution layers: {convs} (or "
            f"'input' for the pixels); all its layers: {', '.join(names)}"
        )
    if chosen == "input" or not hasattr(model, "num_classes"):
        return chosen
    k = names.index(chosen)
    how = f"--layer {layer}" if layer is not None else f"the default read-out layer {chosen!r}"
    if model.is_recurrent and k >= model.sequence_start:
        raise UserError(
            f"{how}: in the sequence part of the model; choose a layer of the CNN part (up to "
            f"{names[model.sequence_start - 1]!r}; its convolution layers: {convs}) or 'input'"
        )
    if k >= len(names) - 1:
        raise UserError(
            f"{how}: the classifier's output; choose a layer below it (convolution layers: {convs})"
        )
    return chosen


def check_method(model, method):
    """A UserError naming ``--method`` when the method does not fit the model (recurrent or per-frame)."""
    if method is None:
        return
    recurrent = method.endswith("-R")
    if recurrent and not model.is_recurrent:
        raise UserError(
            f"--method {method} needs a CNN-LSTM; this model is a per-frame CNN, not recurrent "
            f"(use --method {method[:-2]})"
        )
    if not recurrent and model.is_recurrent:
        raise UserError(
            f"--method {method} is for a per-frame CNN; this model is recurrent, a CNN-LSTM (use "
            f"--method {method}-R)"
        )


def synthetic_training(meta, _depth=0):
    """The generator of the synthetic clips a model was trained on, as its sidecar records it, or None.

    The shipped models' sidecars name the data generator of their training
    and test clips (``"generator": "ebr_ref.synthetic.make_batch(...)"``,
    ``"ebr_ref.synthetic.captions.make_caption_batch"``); any ``generator``
    entry in a module of ``ebr_ref.synthetic`` counts.
    """
    if _depth > 5:
        return None
    if isinstance(meta, dict):
        gen = meta.get("generator")
        if isinstance(gen, str) and gen.startswith("ebr_ref.synthetic"):
            return gen.split("(", 1)[0]
        items = list(meta.values())
    elif isinstance(meta, (list, tuple)):
        items = list(meta)
    else:
        return None
    for v in items[:100]:
        found = synthetic_training(v, _depth + 1)
        if found:
            return found
    return None


def synthetic_dataset_of(path, levels=3):
    """The folder of an ``ebr-ref make-dataset`` dataset holding ``path``, or None."""
    import json

    d = os.path.abspath(os.fspath(path))
    if not os.path.isdir(d):
        d = os.path.dirname(d)
    for _ in range(levels):
        spec = os.path.join(d, "synthetic.json")
        if os.path.isfile(spec) and os.path.getsize(spec) < 1 << 20:
            try:
                with open(spec, encoding="utf-8") as f:
                    if json.load(f).get("format") == "ebr_ref synthetic dataset":
                        return d
            except (OSError, ValueError, AttributeError, RecursionError):
                pass
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return None


SYNTHETIC_TITLE = "  (model trained on synthetic clips: its output means nothing on this input)"


def warn_if_synthetic_model(console, model, input_path):
    """Warn (one line on stderr) when a model trained on synthetic clips is run on other input."""
    gen = synthetic_training(model.meta)
    if gen is None or synthetic_dataset_of(input_path) is not None:
        return None
    name = model.meta.get("name", "this model")
    msg = (
        f"{name} was trained on synthetic clips ({gen}), not on real footage: on other input its maps, "
        "evidence and detected segments say nothing about the video"
    )
    console.warn(msg)
    return msg
