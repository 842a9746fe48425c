"""Compare another implementation's grounding run with this engine's, at every named point of the method.

The way to verify a port (PyTorch, TensorFlow, JAX, the authors' Caffe code):
dump what the port computes for one clip into an ``.npz`` file under the
point names of :mod:`ebr_ref.grounding.trace`, then :func:`compare` (or
``ebr-ref compare THEIRS.npz --model ...``) traces the same run with this
engine in float64 and reports, per point, the largest absolute difference, the
normwise relative error and where the largest difference lies. The points are
walked in the order of computation (the forward pass bottom to top, then the
backward pass from the seed down; inside an LSTM step by step), and the report
names the **first** point that disagrees, with its step, its largest
difference and the convention most likely involved
(:func:`explain`). See docs/verify-your-implementation.md.

Keys of the ``.npz`` (strings as NumPy string scalars, e.g.
``numpy.str_("cEB-R")``):

- settings: ``clip`` ``(T, C, H, W)`` (required unless given separately),
  ``target`` (class index or ``(K,)`` indices; a captioner takes ``words`` and
  optionally ``caption`` instead), ``method``, ``lstm_rule``, ``seed_steps``,
  ``cont``, ``layer`` (the read-out layer of ``maps`` and ``evidence``);
- points: any subset of the names a trace has (``forward/<layer>``,
  ``logits``, ``probs``, ``lstm/<layer>/gates``, ``seed``,
  ``signal/<layer>``, ``lstm/<layer>/p_h``, ``totals/positive``, ``maps``, ...;
  the table is in docs/verify-your-implementation.md). A key that names no
  point of this run is reported as *not compared*, never an error; a
  ``signal/<layer>`` for a layer the model does not have fails.

Errors (docs/spec.md §7): ``max_abs = max |theirs - ours|``; ``max_rel = max_abs /
max |ref|``; ``rel = ||theirs - ours|| / ||ref||`` (Frobenius norms), where
``ref`` is this engine's value, except below the contrast of cEB and cEB-R
(``signal/<layer>`` of the CNN part, ``maps``, ``evidence``), whose ``ref`` is
the positive pass alone (EB, EB-R) at the same point: a contrast of two unit-mass
passes can be nearly 0. A point passes when ``rel <= rtol``. The default
``rtol`` follows the dtype of *their* array: ``1e-10`` for float64 (rounding in
float64 stays near ``1e-15``, while a ``1e-6`` stabiliser in a denominator moves
results by about ``1e-6``), ``1e-4`` for float32 (float32 against the float64
reference agrees to about ``1e-6``..``1e-5`` on these normalised quantities,
docs/spec.md §7.2), exact for integers. A given ``rtol`` applies to every point.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy

from .. import backend
from ..grounding.ground import METHODS, RECURRENT_METHODS
from ..grounding.trace import LSTM_FORWARD, readout_layer, trace, trace_caption
from ..layers.lstm import GATE_ORDER

__all__ = [
    "Row",
    "Report",
    "FirstDifference",
    "read_theirs",
    "compare",
    "format_report",
    "compare_arrays",
    "explain",
    "default_rtol",
    "reference_norm",
    "KNOWN_KEYS",
    "SETTING_KEYS",
    "FLOAT64_RTOL",
    "FLOAT32_RTOL",
]

SETTING_KEYS = ("clip", "target", "method", "lstm_rule", "seed_steps", "cont", "layer", "words", "caption")
RESULT_KEYS = ("logits", "probs", "maps", "evidence")
KNOWN_KEYS = SETTING_KEYS + RESULT_KEYS
FLOAT64_RTOL = 1e-10  # float64 entries: rounding is ~1e-15; an epsilon of 1e-6 in Z is ~1e-6
FLOAT32_RTOL = 1e-4  # float32 entries against the float64 reference (docs/spec.md §7.2)


def default_rtol(dtype):
    """The pass threshold for an array of ``dtype``: 1e-10 (float64), 1e-4 (other floats), 0 (integers)."""
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        return FLOAT64_RTOL if dtype.itemsize >= 8 else FLOAT32_RTOL
    return 0.0


class Row(NamedTuple):
    """One point of the comparison (an entry of their file)."""

    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    rel: float
    where: str  # index of the largest |difference|, with axis names
    theirs: float  # their value there
    ours: float  # this engine's value there
    worst_frame: int | None  # the frame (step) holding the largest share of the squared difference
    ok: bool
    note: str = ""
    rtol: float | None = None  # the threshold this row was judged by
    step: int | None = None  # per-step points: the first step (in computation order) where it goes wrong
    compared: bool = True  # False for an entry that names no point of this run (reported, never failing)


class FirstDifference(NamedTuple):
    """The first point, in computation order, that disagrees, and what it likely means."""

    name: str
    step: int | None  # the step (LSTM quantities), else None
    phase: str  # "forward" or "backward"
    where: str  # the largest difference at that point (within that step)
    theirs: float
    ours: float
    what: str  # what the point is
    likely: str  # the conventions most likely involved


class Report(NamedTuple):
    """Rows in computation order, the settings used and the first difference."""

    rows: list
    settings: dict
    rtol: float | None  # the threshold given, or None: by dtype (:func:`default_rtol`)
    ignored: list  # entries that name no point of this run (also rows with compared=False)
    first: FirstDifference | None = None

    @property
    def ok(self):
        return all(r.ok for r in self.rows)


def read_theirs(path):
    """Read a comparison ``.npz`` into a dict of arrays (0-d strings as Python str).

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


# ---- one point ---------------------------------------------------------------------------------------------
def _where(axes, idx, shape):
    """``"t=3 c=1 y=0 x=2"``; an axis named ``4h`` (the LSTM's gate axis) is written as its gate and unit."""
    parts = []
    for a, i, n in zip(axes, idx, shape):
        if a == "4h":
            H = n // 4
            parts.append(f"gate={GATE_ORDER[int(i) // H]} h={int(i) % H}")
        else:
            parts.append(f"{a}={int(i)}")
    return " ".join(parts)


def _default_axes(name, ndim, stacked):
    """Axis names of an entry from its name and rank (``k`` first for stacked signals)."""
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


def compare_arrays(
    name,
    theirs,
    ours,
    ref=None,
    *,
    rtol=None,
    stacked=False,
    axes=None,
    time_axis="auto",
    steps=None,
    ref_norm=None,
):
    """Compare one entry; ``ref`` (default ``ours``) sets the scale of the relative errors.

    Parameters
    ----------
    name : str
    theirs, ours : array
    ref : array, optional
        The reference of the relative errors (the positive pass below a contrast).
    rtol : float, optional
        The pass threshold on ``rel``; default :func:`default_rtol` of their dtype.
    stacked : bool
        The entry has a leading ``K`` axis (several targets).
    axes : list of str, optional
        Axis names (default from the name and rank).
    time_axis : int, None or "auto"
        The frame (step) axis for ``worst_frame`` and ``steps``; "auto": 1 when
        stacked, else 0 (None: the entry has none).
    steps : {None, "forward", "backward"}
        For per-step quantities, the order in which their steps are computed:
        the row's ``step`` is then the first step, in that order, at which the
        error accumulated over the steps so far exceeds ``rtol`` (with the
        largest difference within that step in ``where``).
    ref_norm : float, optional
        Use this norm instead of ``||ref||`` (for a point that is identically
        0 in this engine, the scale of the signal around it).

    Returns
    -------
    Row
    """
    t_raw = numpy.asarray(theirs)
    t = t_raw.astype(numpy.float64) if t_raw.dtype.kind in "biuf" else t_raw
    rtol = default_rtol(t_raw.dtype) if rtol is None else float(rtol)
    o = numpy.asarray(backend.to_numpy(ours), dtype=numpy.float64)
    r = o if ref is None else numpy.asarray(backend.to_numpy(ref), dtype=numpy.float64)
    if t.dtype.kind not in "f":
        return _failed(name, t, f"dtype {t_raw.dtype} is not numeric", rtol)
    if t.shape != o.shape:
        return _failed(name, t, f"shape {tuple(t.shape)}, this engine's {tuple(o.shape)}", rtol)
    if not numpy.all(numpy.isfinite(t)):
        bad = int((~numpy.isfinite(t)).sum())
        return _failed(name, t, f"{bad} non-finite values in theirs", rtol)
    axes = _default_axes(name, t.ndim, stacked) if axes is None else list(axes)
    if time_axis == "auto":
        time_axis = (1 if stacked and name not in ("probs", "logits") else 0) if t.ndim else None
    if time_axis is not None and time_axis >= t.ndim:
        time_axis = None
    d = t - o
    ad = numpy.abs(d)
    max_abs = float(ad.max()) if ad.size else 0.0
    top = float(numpy.abs(r).max()) if r.size else 0.0
    nref = float(numpy.linalg.norm(r)) if ref_norm is None else float(ref_norm)
    nd = float(numpy.linalg.norm(d))
    max_rel = max_abs / top if top > 0 else (0.0 if max_abs == 0 else numpy.inf)
    rel = nd / nref if nref > 0 else (0.0 if nd == 0 else numpy.inf)
    ok = bool(rel <= rtol)
    worst = step = None
    if time_axis is not None and nd > 0:
        other = tuple(a for a in range(d.ndim) if a != time_axis)
        per = (d**2).sum(axis=other)  # (T,)
        worst = int(numpy.argmax(per))
        if steps is not None and not ok:
            order = numpy.arange(per.shape[0]) if steps == "forward" else numpy.arange(per.shape[0])[::-1]
            cum = (
                numpy.sqrt(numpy.cumsum(per[order])) / nref
                if nref > 0
                else numpy.where(numpy.cumsum(per[order]) > 0, numpy.inf, 0.0)
            )
            step = int(order[int(numpy.argmax(cum > rtol))])
    if step is not None:  # the largest difference within the first failing step
        sub = numpy.take(ad, step, axis=time_axis)
        j = numpy.unravel_index(int(numpy.argmax(sub)), sub.shape) if sub.size else ()
        idx = tuple(j[:time_axis]) + (step,) + tuple(j[time_axis:])
    else:
        idx = numpy.unravel_index(int(numpy.argmax(ad)), ad.shape) if ad.size else ()
    where = _where(axes, idx, t.shape)
    return Row(
        name,
        tuple(t.shape),
        max_abs,
        max_rel,
        rel,
        where,
        float(t[idx]) if ad.size else 0.0,
        float(o[idx]) if ad.size else 0.0,
        worst,
        ok,
        "",
        rtol,
        step,
    )


# ---- what the points are -------------------------------------------------------------------------------
class _Info(NamedTuple):
    """What the naming and the hints need to know about the model and the run."""

    types: dict  # layer name -> type (both parts; a captioner's decoder as lstm / fc / embed)
    above: dict  # layer name -> the layer above it, whose rule produces the signal at its output
    cnn: tuple  # names of the per-frame (CNN) layers, bottom first
    interface: str  # the last per-frame layer
    classifier: str
    method: str
    rule: str | None
    captioner: bool
    static_layer: str | None


def _info(model, method, rule):
    if hasattr(model, "vocab"):
        cnn = tuple(model.layer_names)
        types = {n: layer.type for n, layer in zip(cnn, model.layers)}
        types.update({"embed": "embed", "lstm1": "lstm", "lstm2": "lstm", "predict": "fc"})
        above = {}
        names = ("input",) + cnn
        for k, n in enumerate(names[:-1]):
            above[n] = names[k + 1]
        above[cnn[-1]] = "pool over time"
        above.update(
            {
                "embed": "lstm1",
                "lstm1": "lstm2",
                "lstm2": "predict",
                "video": model.static_layer,
                "words": "embed",
            }
        )
        return _Info(types, above, cnn, cnn[-1], "predict", method, rule, True, model.static_layer)
    names = ("input",) + tuple(model.layer_names)
    types = {layer.name: layer.type for layer in model.layers}
    above = {names[k]: names[k + 1] for k in range(len(names) - 1)}
    cnn = tuple(model.layer_names[: model.sequence_start])
    interface = cnn[-1] if cnn else "input"
    return _Info(types, above, cnn, interface, model.layer_names[-1], method, rule, False, None)


def _is_lstm_point(name):
    parts = name.split("/")
    return len(parts) == 3 and parts[0] in ("lstm", "lstm_dual")


def _is_forward(name):
    if name in ("logits", "probs", "tokens") or name.startswith("forward/"):
        return True
    return _is_lstm_point(name) and name.rsplit("/", 1)[1] in LSTM_FORWARD


def _layout(name, ndim, stacked, info):
    """``(axes, time_axis, steps, has_k)`` of a point of this engine's trace."""
    k = stacked and not _is_forward(name) and not (_is_lstm_point(name) and name.endswith("/Z"))
    lead = ["k"] if k else []
    rest = ndim - len(lead)
    t = 1 if k else 0
    if _is_lstm_point(name):
        q = name.rsplit("/", 1)[1]
        steps = "forward" if q in LSTM_FORWARD else "backward"
        if q == "lost":
            return lead + ["t"], t, steps, k
        wide = q in ("gates", "dz") or (q == "Z" and info.rule == "caffe")
        return lead + ["t", "4h" if wide else "h"], t, steps, k
    if name.startswith("totals/"):
        return lead, None, None, k
    if name in ("forward/video", "signal/video", "signal_dual/video"):
        return lead + ["i"], None, None, k
    if name in ("tokens", "signal/words", "signal_dual/words", "evidence"):
        return lead + ["t"], t, None, k
    top = name in (f"signal/{info.classifier}", f"signal_dual/{info.classifier}")
    if top or name in ("logits", "probs", "seed", f"forward/{info.classifier}"):
        return lead + ["t", "class"], t, None, k
    return _default_axes(name, ndim, k), (t if rest else None), None, k


def explain(name, info):
    """``(what, likely)``: what point ``name`` is, and the conventions most likely involved when it is the
    first to differ (``info``: the model and the run, from :func:`compare`; docs/verify-your-implementation.md
    §5 has examples)."""
    parts = name.split("/")
    head, layer = parts[0], (parts[1] if len(parts) > 1 else None)
    if name in ("logits", "forward/" + info.classifier) or (info.captioner and name == "forward/predict"):
        return (
            "the classifier's outputs (logits) at every step",
            "the forward below it; the classifier's weights (out, in) and bias; compare the last forward "
            "point that agrees",
        )
    if name == "probs":
        return (
            "the softmax of the logits at every step",
            "dump logits too: saturated probabilities hide forward differences; softmax per step",
        )
    if name == "tokens":
        return (
            "the caption's token ids, then <eos>",
            "greedy decoding takes the first maximum of the logits over every token but <bos>; or force "
            "the caption given in the settings",
        )
    if head == "forward":
        return _explain_forward(layer, info)
    if _is_lstm_point(name):
        return _explain_lstm(parts[2], head == "lstm_dual", info)
    if name == "seed" or (head in ("signal", "signal_dual") and layer in (info.classifier,)):
        return (
            "the seed: the signal at the classifier's output",
            "a raw 1 on the target logit (not its softmax, not the logit's value), at the seeded steps "
            "only (seed_steps 'last' = the last step; a captioner: every step where the queried word is "
            "predicted); K targets stack along a leading axis",
        )
    if head == "classifier":
        if layer == "dual":
            return (
                "cEB's dual pass at the classifier's input",
                "the classifier's weights negated (W̄ = -W; the bias untouched) and EB with max(-W, 0), "
                "the same seed (paper eqs. 2, 4)",
            )
        return (
            "cEB's positive pass at the classifier's input",
            "the EB rule of the classifier: Z = W+ a without the bias, no epsilon (docs/spec.md §2.1)",
        )
    if head == "interface":
        return _explain_interface(layer == "dual", info)
    if head in ("totals", "normalised"):
        return (
            f"eq. 5{'' if layer == 'positive' else ' (eq. 6, the dual pass)'}: "
            + ("the grand total" if head == "totals" else "the signal divided by its grand total"),
            "ONE total per target and pass over all frames and all units (not per frame, not per unit); "
            "a zero total makes that pass 0, never NaN (docs/spec.md §5.3)",
        )
    if name in ("maps", "evidence"):
        return (
            "the read-out: the signal at the read-out layer summed over channels"
            + (", then over each frame" if name == "evidence" else ""),
            "the sums only (the signal at the read-out layer agrees): channel sum per frame; the map of "
            "layer L is the signal at L's output",
        )
    if head in ("signal", "signal_dual") and layer in ("video", "words", "embed"):
        return _explain_decoder_input(layer, info)
    if head in ("signal", "signal_dual"):
        return _explain_signal(layer, head == "signal_dual", info)
    return ("a point of the engine's trace", "")


_FORWARD = {
    "conv": "the convolution: weights (out, in/groups, kH, kW), a cross-correlation (not flipped), its "
    "stride, padding, dilation and groups",
    "fc": "the fully connected layer: weights (out, in), y = W x + b; the flatten before it in C, H, W order",
    "maxpool": "max pooling: the output size (floor, or Caffe's ceil rule per layer, docs/spec.md §2.3); "
    "padded cells hold -inf",
    "avgpool": "average pooling: the output size (floor/ceil) and the divisor (count_include_pad)",
    "relu": "ReLU",
    "dropout": "dropout at inference is the identity (no rescaling)",
    "lrn": "Caffe's across-channel LRN: y = x (k + alpha/n sum x^2)^(-beta)",
    "flatten": "flatten in C, H, W order (row-major over the trailing axes)",
    "lstm": "the LSTM's hidden states h_t = o act(c_t)",
}


def _explain_forward(layer, info):
    if layer == "video":
        return (
            "the video feature: the mean over frames of the last frame layer's output",
            "the mean over frames",
        )
    if layer == "embed":
        return ("the embedded input words (<bos>, then the caption's words)", "the embedding table rows")
    t = info.types.get(layer)
    if t == "lstm":
        return ("the LSTM's output h_t", _LSTM_FORWARD_HINT)
    return (f"the output of {layer} ({t}) for every frame", _FORWARD.get(t, ""))


_LSTM_FORWARD_HINT = (
    "gate blocks i, f, o, g on the 4H axis (Caffe's order; torch's nn.LSTM is i, f, g, o: "
    "permute blocks [0, 1, 3, 2]); one bias b (torch's b_ih + b_hh); sigmoid for i, f, o "
    "and the cell's act (ReLU for the paper's cell) for g; c_t = cont_t f c_(t-1) + i g; "
    "clip markers cont = 0 wipe h_(t-1) and c_(t-1) (docs/lstm.md §1)"
)


def _explain_lstm(q, dual, info):
    rule = "grad" if info.method == "BP-R" else info.rule
    side = "the dual pass's " if dual else ""
    dual_hint = (
        "; the positive pass agrees: look at the dual pass's seed side, the classifier's negated "
        "weights (W̄ = -W, bias untouched, EB with max(-W, 0))"
        if dual
        else ""
    )
    if q == "gates":
        return ("the gates i, f, o, g after their nonlinearities at step t", _LSTM_FORWARD_HINT)
    if q == "c":
        return ("the cell state c_t", _LSTM_FORWARD_HINT)
    if q == "h":
        return ("the hidden state h_t = o act(c_t)", _LSTM_FORWARD_HINT)
    what = {
        "p_h": f"{side}P(h_t): the signal at h_t (the seed side at step t"
        + (" plus what step t+1 sent through W_h)" if rule in ("eb", "grad") else ")"),
        "p_c": f"{side}P(c_t): the total signal at the cell state c_t"
        + (" (kappa_t)" if rule != "eb" else ""),
        "p_g": f"{side}P(g_t): the candidate's share of P(c_t)",
        "dz": f"{side}the gate signals dz_t (blocks i, f, o, g)",
        "Z": "the normaliser of the input branch" + (" (g-block rows)" if rule == "eb" else ""),
        "p_rec": f"{side}the signal the recurrent branch W_h h_(t-1) receives at step t",
        "lost": f"{side}the signal dropped at zero denominators at step t",
    }.get(q, f"{side}{q}")
    if rule == "grad":
        likely = (
            "BP-R is the plain gradient of the raw logit through the unrolled LSTM, recurrent path "
            "included, ReLU derivative 1[z > 0] (0 at 0)"
        )
    elif rule == "caffe":
        likely = {
            "p_h": "under rule 'caffe' the recurrent branch sends nothing back: P(h_t) is the signal from "
            "above at step t only; a difference at t < T-1 means signal went through W_h h_(t-1) "
            "(detach h_(t-1))",
            "p_c": "kappa_t = P(c_(t+1)) cont f_(t+1) + P(h_t) o_t act'(c_t): the gradient of the cell, "
            "act'(0) = 0 (docs/lstm.md §2.2)",
            "dz": "the ordinary gradient of the cell: dz^i = kappa g i(1-i), dz^f = cont kappa c_(t-1) "
            "f(1-f), dz^o = P(h_t) act(c_t) o(1-o), dz^g = kappa i act'(z^g); blocks in the order i, "
            "f, o, g",
            "Z": "Z = W_x+ x_t over all four blocks, without the bias and without a W_h term",
            "p_rec": "under rule 'caffe' (the released code) the recurrent branch W_h h_(t-1) receives "
            "nothing: detach h_(t-1) in the cell's input (docs/lstm.md §2.2)",
            "lost": "gate signal dropped where W_x+ x_t == 0 exactly (no epsilon)",
        }.get(q, "")
    else:
        likely = {
            "p_h": "P(h_t) = the signal from above at t plus cont h_(t-1) (W_h^g+)^T (P(g_(t+1)) / Z_(t+1)) "
            "from step t+1 (docs/lstm.md §2.1)",
            "p_c": "P(c_t) = what step t+1 sent to c_t (P(c_(t+1)) cont f c_t / c_(t+1)) plus P(h_t) where "
            "act(c_t) != 0; gate o is a weight, not a carrier",
            "p_g": "P(g_t) = P(c_t) i_t g_t / c_t (0 where c_t == 0); gates are weights, never carriers",
            "Z": "Z_t = W_x^g+ x_t + W_h^g+ cont h_(t-1) (+ W_s^g+ s): the g-block rows only, no bias",
            "p_rec": "the recurrent share cont h_(t-1) (W_h^g+)^T (P(g_t) / Z_t)",
            "lost": "signal dropped where act(c_t), c_t or Z_t is exactly 0 (no epsilon)",
        }.get(q, "")
    return what, likely + dual_hint


def _explain_interface(dual, info):
    side = "the dual pass" if dual else "the positive pass"
    if info.captioner:
        what = f"{side}'s signal at the frames' video features, before eq. 5"
        likely = (
            "the mean over time undone: each unit's signal goes to the frames in proportion to their "
            "activations, 0 where the unit's sum over frames is not positive (docs/spec.md §2.4)"
        )
    elif info.method == "BP-R":
        what, likely = "the gradient at the LSTM's input", "the gradient of W_x x_t: W_x^T dz_t"
    else:
        what = f"{side}'s signal P^t(a_i) at the LSTM's input (eq. 3), before eq. 5"
        likely = (
            "rule 'caffe': P(x_t) = x_t (W_x+)^T (dz_t / (W_x+ x_t)) over all four gate blocks, no "
            "bias, no epsilon"
            if info.rule == "caffe"
            else "rule 'eb': P(x_t) = x_t (W_x^g+)^T (P(g_t) / Z_t), the g-block rows only"
        )
    if dual:
        likely += "; if only the dual pass differs: the classifier's negated weights (W̄ = -W, bias kept)"
    return what, likely


def _explain_decoder_input(layer, info):
    if layer == "video":
        return (
            f"the signal at the pooled video feature (the static input of {info.static_layer})",
            "rule 'caffe': the full dz summed over steps through W_s's linear rule (the released code's "
            "GPU path); rule 'eb': the static input is one child of g_t beside x_t and h_(t-1)",
        )
    if layer == "words":
        return (
            "the signal that reached each step's input word",
            "the whole signal of each embedded vector, summed over its units (docs/spec.md §2.5)",
        )
    return (
        "the signal at the embedded input words (lstm1's input branch)",
        "lstm1's input branch, as at an action model's LSTM input",
    )


_PASS_THROUGH = ("relu", "dropout", "flatten", "lrn")


def _explain_signal(layer, dual, info):
    recurrent = info.captioner or info.method in ("cEB-R", "EB-R")
    up, passed = info.above.get(layer), []
    while info.types.get(up) in _PASS_THROUGH and not (recurrent and layer == info.interface):
        passed.append(up)  # a layer that passes the signal on: the rule that changed it lies above
        if recurrent and up == info.interface:
            break
        up = info.above.get(up)
    via = f", passed on by {', '.join(reversed(passed))}" if passed else ""
    side = "the dual pass's " if dual else ""
    if recurrent and info.interface in (layer, *passed):
        return (
            ("the contrast (eq. 7) P_N - P̄_N" if info.method == "cEB-R" else "the normalised signal P_N")
            + f" at the interface {info.interface}{via}",
            "eq. 7 subtracts the dual pass after eq. 5, both passes normalised by their own grand "
            "totals; the CNN part then carries the difference down",
        )
    up_type = "pool over time" if up == "pool over time" else info.types.get(up)
    what = f"{side}the signal at the output of {layer}, produced by the rule of {up} ({up_type}){via}"
    if info.method == "cEB" and up == info.classifier:
        return (
            f"cEB's contrast at the classifier's input{via}",
            "the two passes subtracted at the classifier's input, without normalisation (docs/spec.md §2.7)",
        )
    if dual and up == info.classifier:
        return (
            what,
            "the dual pass: the classifier's weights negated (W̄ = -W; the bias untouched, it "
            "never enters Z) and EB with max(-W, 0), the same raw seed (paper eqs. 2, 4)",
        )
    if up_type == "lstm":
        return (what, "the LSTM's input branch (see interface/positive)")
    if info.method in ("BP", "BP-R"):
        return (what, "the gradient of this layer (no normalisation anywhere)")
    likely = {
        "fc": f"the EB rule of {up}: Z = W+ a WITHOUT the bias, no epsilon (0 where Z == 0 exactly), W+ = "
        "max(W, 0), the input multiplied by the adjoint (docs/spec.md §2.1)",
        "conv": f"the EB rule of {up}: Z = conv(a, W+) WITHOUT the bias, no epsilon (0 where Z == 0 "
        "exactly); the adjoint with the forward's stride, padding, dilation, groups; signed inputs "
        "are not clamped",
        "maxpool": f"the max-pooling rule of {up}: the whole signal of a window goes to its winner; ties go "
        "to the FIRST maximum in row-major window order; padded cells never win (docs/spec.md "
        "§2.2)",
        "avgpool": f"the average-pooling rule of {up}: P = a P_out / S over the window's real cells, 0 where "
        "S <= 0 (docs/spec.md §2.4)",
        "relu": f"{up} passes the signal, masked where its output is 0",
        "dropout": f"{up} (dropout) passes the signal unchanged at inference",
        "lrn": f"EB treats {up} (LRN) as the identity",
        "flatten": f"{up} reshapes back in C, H, W order",
    }.get(up_type, "")
    return what, likely


# ---- the comparison -------------------------------------------------------------------------------------
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


def _words(v):
    """The captioner's query: a str, an int position, or a list of them (a 1-d string or int array)."""
    if isinstance(v, (str, int, list)):
        return v
    a = numpy.asarray(v)
    if a.ndim == 0:
        return str(a) if a.dtype.kind in "US" else int(a)
    return [str(w) if a.dtype.kind in "US" else int(w) for w in a.reshape(-1)]


def _caption(v):
    if v is None or isinstance(v, str):
        return v
    return " ".join(str(w) for w in numpy.asarray(v).reshape(-1))


def compare(
    theirs,
    model,
    *,
    clip=None,
    target=None,
    method=None,
    layer=None,
    lstm_rule=None,
    seed_steps=None,
    cont=None,
    words=None,
    caption=None,
    dtype="float64",
    rtol=None,
    chunk_size=8,
    progress=None,
):
    """Trace the run ``theirs`` describes with this engine and compare every point it holds (module notes).

    Parameters
    ----------
    theirs : dict or str
        The arrays (:func:`read_theirs`) or the path of the ``.npz``.
    model : Model or CaptionModel
    clip, target, method, layer, lstm_rule, seed_steps, cont, words, caption
        Override (or supply) the corresponding entries of ``theirs``
        (``words`` and ``caption`` for a captioner).
    dtype : str or None
        This engine's dtype (float64, the reference, by default; None keeps
        the model's).
    rtol : float, optional
        Pass threshold on the normwise relative error ``rel`` of every point;
        default by the dtype of their array (:func:`default_rtol`).
    chunk_size : int
        Frames per CNN chunk of the engine's run.
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
    captioner = hasattr(model, "vocab")
    clip = _setting(theirs, "clip", clip)
    if clip is None:
        raise ValueError("no clip: the .npz has no 'clip' entry and none was given")
    clip = numpy.asarray(clip)
    if clip.dtype.kind != "f":
        raise ValueError(f"clip must hold preprocessed floating-point frames, got {clip.dtype}")
    clip = clip.astype(model.dtype)
    if captioner:
        query = _setting(theirs, "words", words)
        if query is None:
            raise ValueError(
                "no words: a captioner's comparison needs the queried 'words' (a word, a "
                "phrase, a caption position or a list of them)"
            )
        query = _words(query)
        stacked = isinstance(query, list)
        method = _setting(theirs, "method", method, "cEB-R")
    else:
        tgt = _setting(theirs, "target", target)
        if tgt is None:
            raise ValueError("no target: the .npz has no 'target' entry and none was given")
        query = _target(tgt)
        stacked = isinstance(query, list)
        method = _setting(theirs, "method", method, "cEB-R" if model.is_recurrent else "cEB")
    known = ("cEB-R", "EB-R", "BP-R") if captioner else METHODS
    if method not in known:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(known)}")
    rule = _setting(theirs, "lstm_rule", lstm_rule, "caffe")
    recurrent = captioner or method in RECURRENT_METHODS
    layer = _setting(theirs, "layer", layer, model.meta.get("readout", "conv5_1"))
    steps = _seed_steps(_setting(theirs, "seed_steps", seed_steps))
    cont = _setting(theirs, "cont", cont)
    settings = {
        "method": method,
        "lstm_rule": rule if recurrent and method != "BP-R" else None,
        "seed_steps": steps if not captioner else None,
        "layer": layer,
        ("words" if captioner else "target"): query,
        "dtype": str(model.dtype),
        "frames": int(clip.shape[0]),
    }
    try:
        readout_layer(model, layer)
        layer_error = None
    except ValueError as e:
        layer_error = str(e)
    tanh = (
        model.cell_act
        if captioner
        else next((lay["cell_act"] for lay in model.layers if lay.type == "lstm"), "relu")
    ) == "tanh"
    positive = {"cEB-R": "EB-R", "cEB": "EB"}.get(method)
    info = _info(model, method, rule if recurrent else None)
    below_contrast = {f"signal/{n}" for n in info.cnn} | {"signal/input", "maps", "evidence"}
    need_ref = positive is not None and any(k in below_contrast for k in theirs)
    runs = [method] + ([positive] if need_ref else [])
    traces = {}
    it = runs if progress is None else progress(runs, total=len(runs), desc="engine runs")
    for m in it:
        kw = dict(
            method=m,
            layer=None if layer_error else layer,
            lstm_rule=rule,
            chunk_size=chunk_size,
            allow_tanh_eb=tanh,
        )
        if captioner:
            forced = _caption(_setting(theirs, "caption", caption))
            traces[m] = trace_caption(model, clip, query, caption=forced, **kw)
        else:
            traces[m] = trace(model, clip, query, seed_steps=steps, cont=cont, **kw)
    ours = traces[method]
    if captioner:
        settings["caption"] = " ".join(model.vocab.decode(ours["tokens"]))
    order = {k: n for n, k in enumerate(ours)}
    rows, unknown_layers, ignored = [], [], []
    for key in theirs:
        if key in SETTING_KEYS:
            continue
        if key in ("maps", "evidence") and layer_error:
            unknown_layers.append(_failed(key, theirs[key], layer_error, rtol))
        elif key in ours:
            ref = traces[positive][key] if (need_ref and key in below_contrast) else None
            rows.append(_compare_point(key, theirs[key], ours, ref, stacked, info, rtol))
        elif key.startswith("signal/") and key[7:] not in (*info.types, "input", "video", "words"):
            note = f"unknown layer {key.split('/', 1)[1]!r}: this model has input, {', '.join(info.types)}"
            unknown_layers.append(_failed(key, theirs[key], note, rtol))
        else:
            ignored.append(key)
    rows.sort(key=lambda r: order[r.name])
    not_compared = [
        _failed(k, theirs[k], _why_not(k, method, rule), None)._replace(ok=True, compared=False)
        for k in ignored
    ]  # reported, never failing
    rows = unknown_layers + rows
    first = _first_difference(rows, info)
    rtol = None if rtol is None else float(rtol)
    return Report(rows + not_compared, settings, rtol, sorted(ignored), first)


def _failed(name, theirs, note, rtol):
    nan = numpy.nan
    return Row(name, tuple(numpy.shape(theirs)), nan, nan, nan, "", nan, nan, None, False, note, rtol)


def _why_not(key, method, rule):
    head = key.split("/", 1)[0]
    if head in ("signal_dual", "lstm_dual", "classifier") or key in (
        "interface/dual",
        "totals/dual",
        "normalised/dual",
    ):
        return f"not a point of {method}"
    if head in ("lstm", "lstm_dual", "interface", "totals", "normalised"):
        return f"not a point of {method}" + (f" with LSTM rule {rule!r}" if rule and head == "lstm" else "")
    return "not a point of the engine's trace"


def reference_norm(key, ours, ref=None):
    """The norm that point ``key``'s difference is divided by (the ``scale`` of the conformance suite).

    ``||ref||`` when given (the positive pass alone, below a contrast) and not 0
    (a positive pass whose total was 0 contributes nothing: the contrast is then
    the dual pass alone and its own norm is the scale), else ``||ours[key]||``;
    for an LSTM point that is identically 0 in this engine (``p_rec`` under rule
    "caffe", ``lost`` without zero denominators), the norm of ``P(h_t)`` of the
    same LSTM and pass, so that rounding noise in a port passes and a real
    signal does not.
    """
    o = numpy.asarray(ours[key], dtype=numpy.float64)
    if ref is not None and numpy.any(ref):
        return float(numpy.linalg.norm(numpy.asarray(ref, dtype=numpy.float64)))
    if _is_lstm_point(key) and key.rsplit("/", 1)[1] in ("p_rec", "lost") and not numpy.any(o):
        return float(numpy.linalg.norm(ours[key.rsplit("/", 1)[0] + "/p_h"]))
    return float(numpy.linalg.norm(o))


def _compare_point(key, theirs, ours, ref, stacked, info, rtol):
    o = ours[key]
    axes, time_axis, steps, _ = _layout(key, numpy.ndim(o), stacked, info)
    return compare_arrays(
        key,
        theirs,
        o,
        ref,
        rtol=rtol,
        stacked=stacked,
        axes=axes,
        time_axis=time_axis,
        steps=steps,
        ref_norm=reference_norm(key, ours, ref),
    )


def _step_rank(item, forward):
    """The order of ``(n, row)``'s first failure in an LSTM block: its step, then its place within a step."""
    n, r = item
    if r.step is None:  # the whole point differs (its shape, say): before any step
        return (-1, n)
    return (r.step if forward else -r.step, n)


def _first_difference(rows, info):
    """The first failing point in computation order; inside an LSTM block, step by step."""
    units, current = [], None
    for r in rows:
        block = None
        if _is_lstm_point(r.name):  # one LSTM's forward or backward quantities, compared step by step
            block = r.name.rsplit("/", 1)[0] + ("F" if _is_forward(r.name) else "B")
        if block is not None and current is not None and current[0] == block:
            current[1].append(r)
        else:
            current = (block, [r])
            units.append(current)
    for block, members in units:
        bad = [(n, r) for n, r in enumerate(members) if not r.ok]
        if not bad:
            continue
        forward = block is not None and block.endswith("F")
        r = bad[0][1] if block is None else min(bad, key=lambda item: _step_rank(item, forward))[1]
        what, likely = explain(r.name, info)
        phase = "forward" if _is_forward(r.name) else "backward"
        return FirstDifference(r.name, r.step, phase, r.where, r.theirs, r.ours, what, likely)
    return None


# ---- the report -----------------------------------------------------------------------------------------
def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and numpy.isnan(v)):
        return "-"
    return f"{v:.{digits}g}"


def format_report(report):
    """The report as text (what ``ebr-ref compare`` prints)."""
    s = report.settings
    what = f"target {s['target']}" if "target" in s else f'words {s["words"]!r} of "{s.get("caption", "")}"'
    lines = [
        f"this engine: {s['method']}"
        + (
            f" (LSTM rule {s['lstm_rule']}" + (f", seed steps {s['seed_steps']})" if s["seed_steps"] else ")")
            if s["lstm_rule"]
            else ""
        )
        + f", {what}, maps at {s['layer']}, {s['frames']} frames, {s['dtype']}"
    ]
    if report.rtol is None:
        tol = f"rel <= {FLOAT64_RTOL:g} (float64 entries) or {FLOAT32_RTOL:g} (float32 entries)"
    else:
        tol = f"rel <= {report.rtol:g}"
    lines.append(
        f"pass: {tol}; rel = ||theirs - ours|| / ||ours||"
        + (
            f", below the contrast ||ours|| of the positive pass alone "
            f"({'EB-R' if s['method'] == 'cEB-R' else 'EB'}), as docs/spec.md §7"
            if s["method"] in ("cEB", "cEB-R")
            else ""
        )
    )
    compared = [r for r in report.rows if r.compared]
    table = [
        ("point", "shape", "max abs", "rel (norm)", "largest difference at", "theirs", "ours", "worst t", "")
    ]
    for r in compared:
        status = "ok" if r.ok else "DIFFERS" + (f" from t={r.step}" if r.step is not None else "")
        table.append(
            (
                r.name,
                "x".join(map(str, r.shape)) or "()",
                _fmt(r.max_abs),
                _fmt(r.rel),
                r.where,
                _fmt(r.theirs),
                _fmt(r.ours),
                "-" if r.worst_frame is None else str(r.worst_frame),
                status + (f" ({r.note})" if r.note else ""),
            )
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table]
    skipped = [r for r in report.rows if not r.compared]
    if skipped:
        lines.append("not compared: " + ", ".join(f"{r.name} ({r.note})" for r in skipped))
    f = report.first
    if f is not None:
        at = f" at t={f.step}" if f.step is not None else ""
        note = next((r.note for r in report.rows if r.name == f.name and r.note), "")
        if note:
            lines.append(f"FIRST DIFFERENCE: {f.name}{at} ({f.phase} pass): {note}")
        else:
            lines.append(
                f"FIRST DIFFERENCE: {f.name}{at} ({f.phase} pass); largest difference at {f.where}: "
                f"theirs {_fmt(f.theirs, 8)}, ours {_fmt(f.ours, 8)} (difference "
                f"{f.theirs - f.ours:.3g})"
            )
        lines.append(f"  {f.name} is {f.what}")
        if f.likely:
            lines.append(f"  likely: {f.likely}")
    n_bad = sum(not r.ok for r in compared)
    tail = (
        ""
        if f is None
        else (
            f"; first difference (forward entries, then backward order): {f.name}"
            + (f" at t={f.step}" if f.step is not None else "")
        )
    )
    within = f"rel <= {report.rtol:g}" if report.rtol is not None else "tolerance"
    lines.append(f"{len(compared) - n_bad}/{len(compared)} entries within {within}{tail}")
    return "\n".join(lines)
