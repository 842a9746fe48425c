"""Compare another implementation's grounding results with this engine's, layer by layer.

The way to verify a port (PyTorch, TensorFlow, JAX, the authors' Caffe code):
dump what the port computes for one clip into an ``.npz`` file, then
:func:`compare` (or ``ebr-ref compare THEIRS.npz --model ...``) recomputes the
same quantities with this engine in float64 and reports, per entry, the
largest absolute difference, the relative errors and where the largest
difference lies. Forward quantities come first (a wrong forward explains
every later difference), then the signals from the classifier down to the
input, in backward order (``maps`` and ``evidence`` right after the signal of
their layer): the first entry that goes wrong points at the layer whose rule
differs. See docs/verify-your-implementation.md.

The ``.npz`` layout (every key optional except as noted; strings as NumPy
string scalars, e.g. ``numpy.str_("cEB-R")``):

===================  =====================================================
key                  meaning
===================  =====================================================
``clip``             ``(T, C, H, W)`` preprocessed frames (required unless
                     the clip is given separately)
``target``           class index, or ``(K,)`` indices (required unless
                     given separately)
``method``           ``"cEB-R"``, ``"EB-R"``, ``"BP-R"``, ``"cEB"``,
                     ``"EB"`` or ``"BP"`` (default: cEB-R for a CNN-LSTM,
                     cEB for a CNN)
``lstm_rule``        ``"caffe"`` (default) or ``"eb"``
``seed_steps``       ``"last"`` (default), ``"all"``, or an int array
``cont``             ``(T,)`` clip markers (default 0 then 1)
``layer``            read-out layer of ``maps`` and ``evidence`` (default:
                     the model's ``meta["readout"]``, else ``conv5_1``)
``logits``           ``(T, classes)`` classifier outputs per step
``probs``            ``(T, classes)`` softmax of the logits
``maps``             ``(T, h, w)`` signed channel sums at ``layer``
                     (``(T, D)`` at a flat layer; ``(K, T, ...)`` for K
                     targets)
``evidence``         ``(T,)`` per-frame sums of ``maps`` (``(K, T)``)
``signal/<layer>``   the full signal at the *output* of ``<layer>``
                     (``(T, C, h, w)`` or ``(T, D)``; ``(K, T, ...)``),
                     any number of layers, ``signal/input`` for pixels
===================  =====================================================

Errors (SPEC §7): ``max_abs = max |theirs - ours|``; ``max_rel = max_abs /
max |ref|``; ``rel = ||theirs - ours|| / ||ref||`` (Frobenius norms), where
``ref`` is this engine's value, except for the contrastive methods (cEB,
cEB-R), whose ``ref`` is the positive pass alone (EB, EB-R) at the same layer:
a contrast of two unit-mass passes can be nearly 0. An entry passes when
``rel <= rtol``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy

from .. import backend
from ..grounding.ground import METHODS, RECURRENT_METHODS, ground

__all__ = ["Row", "Report", "read_theirs", "compare", "format_report", "compare_arrays", "KNOWN_KEYS"]

SETTING_KEYS = ("clip", "target", "method", "lstm_rule", "seed_steps", "cont", "layer")
RESULT_KEYS = ("logits", "probs", "maps", "evidence")
KNOWN_KEYS = SETTING_KEYS + RESULT_KEYS


class Row(NamedTuple):
    """One compared entry."""

    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    rel: float
    where: str  # index of the largest |difference|, with axis names
    theirs: float  # their value there
    ours: float  # this engine's value there
    worst_frame: int | None  # the frame holding the largest share of the squared difference
    ok: bool
    note: str = ""


class Report(NamedTuple):
    """Rows in order (forward first, then signals from the classifier down) and the settings used."""

    rows: list
    settings: dict
    rtol: float
    ignored: list

    @property
    def ok(self):
        return all(r.ok for r in self.rows)


def read_theirs(path):
    """Read a comparison ``.npz`` into a dict of arrays (strings as Python str).

    Read with :func:`ebr_ref.models.io.read_npz`: every member's ``.npy`` header
    is checked against the archive before its data is read, and object
    (pickled) arrays are refused.

    Raises
    ------
    ValueError
        (:class:`~ebr_ref.models.io.ModelFileError`) For a missing file, a file
        that is not an ``.npz`` archive (saying it is not a results file), a
        corrupt archive or member (naming it).
    """
    from ..models.io import ModelFileError, read_npz

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ModelFileError(f"{path}: a single .npy array, not a results file (an .npz archive)")
    if magic[:2] != b"PK":
        raise ModelFileError(f"{path}: not a results file (an .npz archive written by numpy.savez)")
    out = read_npz(path, what="results file (.npz archive)")
    for k, v in list(out.items()):
        if v.dtype.kind in "US" and v.ndim == 0:
            out[k] = str(v)
    return out


def _setting(theirs, key, override, default=None):
    if override is not None:
        return override
    return theirs.get(key, default)


def _seed_steps(v):
    if v is None:
        return "last"
    if isinstance(v, str):
        return v
    a = numpy.asarray(v)
    if a.dtype.kind not in "iu":
        raise ValueError(f"seed_steps must be 'last', 'all' or integers, got {a.dtype} values")
    return [int(s) for s in a.reshape(-1)]


def _target(v):
    a = numpy.asarray(v)
    if a.dtype.kind not in "iu":
        raise ValueError(f"target must be an integer class index or an array of them, got {a.dtype}")
    return int(a) if a.ndim == 0 else [int(t) for t in a.reshape(-1)]


def _axes(name, ndim, stacked):
    lead = ["k"] if stacked else []
    rest = ndim - len(lead)
    if name in ("probs", "logits"):
        return ["t", "class"][:ndim]
    if name == "evidence":
        return lead + ["t"]
    if rest == 4:
        return lead + ["t", "c", "y", "x"]
    if rest == 3:
        return lead + ["t", "y", "x"]
    if rest == 2:
        return lead + ["t", "i"]
    return lead + [f"d{j}" for j in range(rest)]


def compare_arrays(name, theirs, ours, ref=None, *, rtol=1e-4, stacked=False):
    """Compare one entry; ``ref`` (default ``ours``) sets the scale of the relative errors.

    Returns
    -------
    Row
    """
    t = numpy.asarray(theirs, dtype=numpy.float64)
    o = numpy.asarray(backend.to_numpy(ours), dtype=numpy.float64)
    r = o if ref is None else numpy.asarray(backend.to_numpy(ref), dtype=numpy.float64)
    if t.shape != o.shape:
        return Row(name, tuple(t.shape), numpy.nan, numpy.nan, numpy.nan, "", numpy.nan, numpy.nan, None, False,
                   f"shape {tuple(t.shape)}, this engine's {tuple(o.shape)}")
    if not numpy.all(numpy.isfinite(t)):
        bad = int((~numpy.isfinite(t)).sum())
        return Row(name, tuple(t.shape), numpy.nan, numpy.nan, numpy.nan, "", numpy.nan, numpy.nan, None, False,
                   f"{bad} non-finite values in theirs")
    d = t - o
    ad = numpy.abs(d)
    k = int(numpy.argmax(ad)) if ad.size else 0
    idx = numpy.unravel_index(k, ad.shape) if ad.size else ()
    axes = _axes(name, t.ndim, stacked)
    where = " ".join(f"{a}={i}" for a, i in zip(axes, idx))
    max_abs = float(ad.max()) if ad.size else 0.0
    top = float(numpy.abs(r).max()) if r.size else 0.0
    nref, nd = float(numpy.linalg.norm(r)), float(numpy.linalg.norm(d))
    max_rel = max_abs / top if top > 0 else (0.0 if max_abs == 0 else numpy.inf)
    rel = nd / nref if nref > 0 else (0.0 if nd == 0 else numpy.inf)
    worst = None
    frame_axis = 1 if stacked and name not in ("probs", "logits") else 0
    if t.ndim > frame_axis and nd > 0:
        per = (d**2).sum(axis=tuple(a for a in range(d.ndim) if a != frame_axis))
        worst = int(numpy.argmax(per))
    return Row(name, tuple(t.shape), max_abs, max_rel, rel, where, float(t[idx]) if ad.size else 0.0,
               float(o[idx]) if ad.size else 0.0, worst, bool(rel <= rtol))


def compare(theirs, model, *, clip=None, target=None, method=None, layer=None, lstm_rule=None, seed_steps=None,
            cont=None, dtype="float64", rtol=1e-4, chunk_size=8, progress=None):
    """Recompute what ``theirs`` holds with this engine and compare (see the module notes).

    Parameters
    ----------
    theirs : dict or str
        The arrays (:func:`read_theirs`) or the path of the ``.npz``.
    model : ebr_ref.models.Model
    clip, target, method, layer, lstm_rule, seed_steps, cont
        Override (or supply) the corresponding entries of ``theirs``.
    dtype : str or None
        This engine's dtype (float64, the reference, by default; None keeps
        the model's).
    rtol : float
        Pass threshold on the normwise relative error ``rel``.
    progress : callable, optional
        ``progress(iterable, total=..., desc=...)`` over the engine runs.

    Returns
    -------
    Report

    Raises
    ------
    ValueError, TypeError
        For missing or inconsistent settings (no clip, no target, an unknown
        method...).
    """
    if not isinstance(theirs, dict):
        theirs = read_theirs(theirs)
    if dtype is not None:
        model = model.astype(dtype)
    clip = _setting(theirs, "clip", clip)
    if clip is None:
        raise ValueError("no clip: the .npz has no 'clip' entry and none was given")
    clip = numpy.asarray(clip)
    if clip.dtype.kind != "f":
        raise ValueError(f"clip must hold preprocessed floating-point frames, got {clip.dtype}")
    clip = clip.astype(model.dtype)
    tgt = _setting(theirs, "target", target)
    if tgt is None:
        raise ValueError("no target: the .npz has no 'target' entry and none was given")
    tgt = _target(tgt)
    stacked = isinstance(tgt, list)
    method = _setting(theirs, "method", method, "cEB-R" if model.is_recurrent else "cEB")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    rule = _setting(theirs, "lstm_rule", lstm_rule, "caffe")
    steps = _seed_steps(_setting(theirs, "seed_steps", seed_steps))
    cont = _setting(theirs, "cont", cont)
    layer = _setting(theirs, "layer", layer, model.meta.get("readout", "conv5_1"))
    kw = dict(lstm_rule=rule, seed_steps=steps, cont=cont, chunk_size=chunk_size)
    settings = {"method": method, "lstm_rule": rule if method in RECURRENT_METHODS else None, "seed_steps": steps,
                "layer": layer, "target": tgt, "dtype": str(model.dtype), "frames": int(clip.shape[0])}

    signal_layers = [k.split("/", 1)[1] for k in theirs if k.startswith("signal/")]
    ignored = sorted(k for k in theirs if k not in KNOWN_KEYS and not k.startswith("signal/"))
    needed = ([layer] if ("maps" in theirs or "evidence" in theirs or not signal_layers) else []) + signal_layers
    needed = list(dict.fromkeys(needed))
    positive = {"cEB-R": "EB-R", "cEB": "EB"}.get(method)
    runs = [(L, m) for L in needed for m in ([method] + ([positive] if positive else []))]
    results, errors = {}, {}
    it = runs if progress is None else progress(runs, total=len(runs), desc="engine runs")
    for L, m in it:
        try:
            model.index(L)
        except ValueError as e:
            errors[L] = str(e)
            continue
        results[(L, m)] = ground(model, clip, tgt, method=m, layer=L, channel_maps=True, **kw)

    rows = []
    first = next(iter(results.values()), None)
    if "logits" in theirs:
        rows.append(compare_arrays("logits", theirs["logits"], model.logits(clip, cont=_cont(cont, model)), rtol=rtol))
    if "probs" in theirs:
        probs = first.probs if first is not None else backend.to_numpy(model.forward(clip, cont=_cont(cont, model)))
        rows.append(compare_arrays("probs", theirs["probs"], probs, rtol=rtol))
    # signals in backward order (classifier side first); maps and evidence right after their layer's signal
    backward = []
    for L in signal_layers:
        backward.append((_depth(model, L), 0, _row(f"signal/{L}", theirs[f"signal/{L}"], results, errors, L, method,
                                                   positive, rtol, stacked, lambda g: g.channel_maps)))
    for n, key in enumerate(("maps", "evidence")):
        if key in theirs:
            backward.append((_depth(model, layer), 1 + n, _row(key, theirs[key], results, errors, layer, method,
                                                               positive, rtol, stacked,
                                                               lambda g, key=key: getattr(g, key))))
    rows += [r for _, _, r in sorted(backward, key=lambda item: (-item[0], item[1]))]
    return Report(rows, settings, float(rtol), ignored)


def _depth(model, L):
    """Position of a layer in the forward order (unknown names first, so that they are reported first)."""
    try:
        return model.index(L)
    except ValueError:
        return 10**9


def _cont(cont, model):
    return None if cont is None else numpy.asarray(cont).astype(model.dtype)


def _row(name, theirs, results, errors, L, method, positive, rtol, stacked, get):
    if L in errors:
        return Row(name, tuple(numpy.shape(theirs)), numpy.nan, numpy.nan, numpy.nan, "", numpy.nan, numpy.nan,
                   None, False, errors[L])
    ours = get(results[(L, method)])
    ref = get(results[(L, positive)]) if positive else None
    return compare_arrays(name, theirs, ours, ref, rtol=rtol, stacked=stacked)


def _fmt(v):
    if v is None or (isinstance(v, float) and numpy.isnan(v)):
        return "-"
    return f"{v:.3g}"


def format_report(report):
    """The report as a text table (what ``ebr-ref compare`` prints)."""
    s = report.settings
    lines = [f"this engine: {s['method']}"
             + (f" (LSTM rule {s['lstm_rule']}, seed steps {s['seed_steps']})" if s["lstm_rule"] else "")
             + f", target {s['target']}, maps at {s['layer']}, {s['frames']} frames, {s['dtype']}"]
    if s["method"] in ("cEB", "cEB-R"):
        lines.append(f"relative errors of signals are taken against the positive pass alone "
                     f"({'EB-R' if s['method'] == 'cEB-R' else 'EB'}), as SPEC §7")
    rows = [("entry", "shape", "max abs", "max rel", "rel (norm)", "largest difference at", "theirs", "ours",
             "worst frame", "")]
    for r in report.rows:
        rows.append((r.name, "x".join(map(str, r.shape)), _fmt(r.max_abs), _fmt(r.max_rel), _fmt(r.rel), r.where,
                     _fmt(r.theirs), _fmt(r.ours), "-" if r.worst_frame is None else str(r.worst_frame),
                     ("ok" if r.ok else "DIFFERS") + (f" ({r.note})" if r.note else "")))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    if report.ignored:
        lines.append(f"ignored entries: {', '.join(report.ignored)}")
    n_bad = sum(not r.ok for r in report.rows)
    lines.append(f"{len(report.rows) - n_bad}/{len(report.rows)} entries within rel <= {report.rtol:g}"
                 + ("" if n_bad == 0 else f"; first difference (forward entries, then backward order): "
                    f"{next(r.name for r in report.rows if not r.ok)}"))
    return "\n".join(lines)
