"""The conformance suite: small cases with the engine's value at every point, for ports in any framework.

:func:`export` writes, for every case of :data:`CASES`, the model (in the
canonical format, ``model.npz`` + ``model.json``, and every parameter as a plain
``params/<name>.npy``), the clip (``input.npy``), the settings and, under
``expected/<point>.npy``, the engine's float64 value at every point of the
run (:func:`ebr_ref.grounding.trace.trace`), with ``case.json`` describing them
and ``index.json`` listing the cases with the conventions each one exercises.
A port reads only ``.json`` and ``.npy`` files: it needs neither ebr_ref nor
Python. ``ebr-ref conformance export DIR`` runs :func:`export`;
``ebr-ref compare THEIRS.npz --case DIR/<case>`` checks a port's output file
for one case (:func:`load_case`). The copy in ``docs/conformance/`` is
regenerated with ``ebr-ref conformance export docs/conformance --overwrite``.

Each case is built here from :mod:`ebr_ref.models` builders and fixed seeds,
with a few weights or inputs set by hand to create the situation a
convention is about (ties at a positive maximum, a normaliser that is exactly
0, a dual pass whose total is 0, ...). The checking rule, stated in every
``case.json``: for each point, ``rel = ||theirs - expected|| / scale`` (Frobenius
norms; ``scale`` given per point: the norm of the expected value, of the
positive pass alone below a contrast, or of ``P(h_t)`` for an LSTM point that is
identically 0) must be at most the case's tolerance (``1e-10`` for float64
ports, ``1e-4`` for float32 ones); a point with ``scale`` 0 must be 0 exactly.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy

from ..grounding.ground import RECURRENT_METHODS
from ..grounding.trace import trace, trace_caption
from ..models import load_model, save_model, sequential
from ..models.caption import captioner, load_captioner, save_captioner
from ..models.io import read_sidecar
from .compare import FLOAT32_RTOL, FLOAT64_RTOL, _info, _is_forward, _layout, reference_norm

__all__ = ["CASES", "FORMAT", "build_case", "export", "load_case", "case_names"]

FORMAT = "ebr_ref-conformance"
VERSION = 1
TOLERANCE = {"float64": FLOAT64_RTOL, "float32": FLOAT32_RTOL}

CONVENTIONS = {
    "eb-rule": "fc/conv EB in four steps: Z = W+ a without the bias, 0 where Z == 0 exactly (no epsilon), "
    "the adjoint of W+, times the input (docs/spec.md §2.1)",
    "seed": "a raw 1 on the target logit (not the softmax), at the seeded steps (docs/spec.md §5.1)",
    "pass-through": "ReLU (masked by its output > 0), dropout at inference and flatten (C, H, W order) pass "
    "the signal on (docs/spec.md §2.5)",
    "maxpool-winner": "max pooling gives a window's whole signal to its winner (docs/spec.md §2.2)",
    "maxpool-ties": "ties at a positive maximum go to the FIRST maximum in row-major window order",
    "pool-padding": "padded cells hold -inf and never win",
    "pool-ceil": "Caffe's ceil rule for pooling output sizes (docs/spec.md §2.3)",
    "conv-geometry": "convolution stride and padding in the forward and in the adjoint",
    "zero-denominators": "a normaliser that is exactly 0 drops the signal arriving there (no epsilon); the "
    "bias makes the activation positive while Z = W+ a is 0",
    "signed-input": "signed (mean-subtracted) inputs are not clamped: Z may be negative, maps are signed",
    "ceb": "cEB: the classifier's weights negated for the dual pass, the two signals subtracted at the "
    "classifier's input, without normalisation (docs/spec.md §2.7)",
    "several-targets": "K targets (queries) propagated together, stacked on a leading axis",
    "lstm-caffe": "the released code's LSTM rule: the gradient of the cell, nothing through W_h, all four "
    "gate blocks through W_x's linear rule (docs/lstm.md §2.2)",
    "lstm-eb": "the conserving LSTM rule: proportional splits, the g-block normaliser over x, h and s "
    "(docs/lstm.md §2.1)",
    "tanh-cell": "the tanh cell's derivatives (1 - g^2, 1 - act(c)^2)",
    "lstm-bias": "the LSTM's bias b in the forward, never in a normaliser",
    "eq5": "eq. 5: one grand total per pass over all frames and units (docs/spec.md §5.3)",
    "dual-pass": "cEB-R's dual pass: the classifier's weights negated, normalised by its own total "
    "(eqs. 2, 4, 6)",
    "contrast-interface": "cEB-R's contrast at the interface after eq. 5, carried down the CNN (eq. 7)",
    "zero-total": "a pass whose grand total is 0 contributes 0 (not NaN)",
    "clip-markers": "cont = 0 starts a new clip: h_(t-1) and c_(t-1) are wiped (docs/lstm.md §1)",
    "seeds-every-step": "seeds at every step",
    "seeds-several-steps": "seeds at several chosen steps",
    "bp-r": "BP-R: the plain gradient of the raw logit, recurrent path included, no normalisation "
    "(docs/spec.md §3)",
    "static-input": "the captioner's pooled video feature as the static input of one LSTM (W_s)",
    "mean-over-time": "the mean over frames undone in proportion to each frame's activations, 0 where a "
    "unit's sum is not positive (docs/spec.md §2.4)",
    "words": "the signal reaching the embedded input words leaves the visual path (docs/spec.md §2.5)",
    "phrase-query": "a phrase seeds the steps of all its words; an int query is a caption position",
}


# ---- the cases -----------------------------------------------------------------------------------------
def _rng(seed):
    return numpy.random.default_rng(seed)


def _body(channels=(4, 6), fc=12, extra=()):
    layers = [
        ("conv1", "conv", {"out_channels": channels[0], "kernel": 3, "padding": 1}),
        ("relu1", "relu"),
        ("pool1", "maxpool", {"kernel": 2}),
        ("conv2", "conv", {"out_channels": channels[1], "kernel": 3, "padding": 1}),
        ("relu2", "relu"),
        ("pool2", "maxpool", {"kernel": 2}),
        ("flatten", "flatten"),
        ("fc6", "fc", {"out_features": fc}),
        ("relu6", "relu"),
        ("drop6", "dropout"),
    ]
    return layers + list(extra)


def _lstm_model(seed, *, cell="relu", classes=4, hidden=6):
    layers = _body(
        extra=[
            ("lstm1", "lstm", {"hidden": hidden, "cell_act": cell}),
            ("drop_l", "dropout"),
            ("fc8", "fc", {"out_features": classes}),
        ]
    )
    m = sequential(layers, (3, 8, 8), seed=seed, meta={"name": "conformance_cnn_lstm", "readout": "conv2"})
    r = _rng(seed + 1)
    m.params["lstm1.b"] = r.normal(0.0, 0.3, m.params["lstm1.b"].shape)  # a bias in the forward, never in Z
    m.params["fc8.bias"] = r.normal(0.0, 0.3, m.params["fc8.bias"].shape)
    return m


def _case_cnn_eb():
    m = sequential(
        _body(extra=[("fc7", "fc", {"out_features": 5})]),
        (3, 8, 8),
        seed=0x11,
        meta={"name": "conformance_cnn", "readout": "conv2"},
    )
    clip = _rng(0x12).uniform(0.0, 1.0, (3, 3, 8, 8))
    return (
        m,
        clip,
        {"method": "EB", "target": 2, "layer": "conv2"},
        (
            "A per-frame CNN classifier, EB, one target.",
            ["eb-rule", "seed", "pass-through", "maxpool-winner"],
        ),
    )


def _case_cnn_ceb_signed():
    m = sequential(
        _body(extra=[("fc7", "fc", {"out_features": 5})]),
        (3, 8, 8),
        seed=0x21,
        meta={"name": "conformance_cnn", "readout": "conv1"},
    )
    clip = _rng(0x22).uniform(-1.0, 1.0, (3, 3, 8, 8))  # mean-subtracted pixels: signed
    return (
        m,
        clip,
        {"method": "cEB", "target": [0, 3], "layer": "input"},
        (
            "A per-frame CNN on signed input, cEB, two targets, read out at the pixels.",
            ["signed-input", "ceb", "several-targets", "eb-rule"],
        ),
    )


def _case_pool_ties_ceil():
    layers = [
        ("conv1", "conv", {"out_channels": 4, "kernel": 1}),
        ("relu1", "relu"),
        ("pool1", "maxpool", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
        ("conv2", "conv", {"out_channels": 5, "kernel": 3, "stride": 2, "padding": 1}),
        ("relu2", "relu"),
        ("pool2", "maxpool", {"kernel": 2, "ceil_mode": True}),
        ("flatten", "flatten"),
        ("fc7", "fc", {"out_features": 4}),
    ]
    m = sequential(layers, (3, 10, 10), seed=0x31, meta={"name": "conformance_ties", "readout": "relu1"})
    m.params["conv1.bias"] = numpy.full(4, 0.5)  # positive activations: ties at a positive maximum
    levels = _rng(0x32).integers(1, 4, (3, 3, 5, 5)) / 4.0  # three levels, on 2x2 blocks: exact ties
    clip = numpy.repeat(numpy.repeat(levels, 2, axis=2), 2, axis=3)
    return (
        m,
        clip,
        {"method": "EB", "target": 1, "layer": "relu1"},
        (
            "Max pooling with ties at positive maxima (a 1x1 convolution of a clip constant on 2x2 blocks), "
            "padding and Caffe's ceil rule, a strided convolution.",
            ["maxpool-ties", "pool-padding", "pool-ceil", "conv-geometry", "maxpool-winner"],
        ),
    )


def _case_zero_denominators():
    layers = [
        ("conv1", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
        ("relu1", "relu"),
        ("pool1", "maxpool", {"kernel": 2}),
        ("flatten", "flatten"),
        ("fc6", "fc", {"out_features": 8}),
        ("relu6", "relu"),
        ("fc7", "fc", {"out_features": 4}),
    ]
    m = sequential(layers, (3, 8, 8), seed=0x41, meta={"name": "conformance_zero_z", "readout": "conv1"})
    W = m.params["conv1.weight"]
    W[0] = -numpy.abs(W[0])  # channel 0: W+ = 0, so Z = 0 wherever its bias makes it active
    m.params["conv1.bias"][0] = 0.5
    F = m.params["fc6.weight"]
    F[3] = -numpy.abs(F[3])  # unit 3 of fc6: Z = 0, activation relu(b) > 0
    m.params["fc6.bias"][3] = 1.0
    m.params["fc7.weight"][:, 3] = numpy.abs(m.params["fc7.weight"][:, 3])  # ... and it receives signal
    clip = _rng(0x42).uniform(0.0, 1.0, (3, 3, 8, 8))
    clip[:, :, 2:6, 2:6] = 0.0  # a black square: every Z of conv1 whose window lies in it is 0
    return (
        m,
        clip,
        {"method": "EB", "target": 0, "layer": "input"},
        (
            "Normalisers that are exactly 0 (a conv channel and an fc unit with no positive weight, "
            "activated by their bias; a black square in the input).",
            ["zero-denominators", "eb-rule"],
        ),
    )


def _case_lstm(
    rule,
    method="cEB-R",
    *,
    cell="relu",
    seed_steps="last",
    seed=0x51,
    clip_seed=0x52,
    T=5,
    target=1,
    cont=None,
    zero_dual=False,
):
    m = _lstm_model(seed, cell=cell)
    if zero_dual:
        tg = target if isinstance(target, int) else target[0]
        m.params["fc8.weight"][tg] = numpy.abs(m.params["fc8.weight"][tg])  # max(-W, 0) of its row is 0
    clip = _rng(clip_seed).uniform(0.0, 1.0, (T, 3, 8, 8))
    settings = {"method": method, "target": target, "layer": "conv2", "seed_steps": seed_steps}
    if method != "BP-R":
        settings["lstm_rule"] = rule
    if cont is not None:
        settings["cont"] = cont
    return m, clip, settings


def _case_lstm_caffe():
    return _case_lstm("caffe") + (
        (
            "A CNN-LSTM (ReLU cell), cEB-R with the released code's LSTM rule, seeded at the last step.",
            ["lstm-caffe", "lstm-bias", "eq5", "dual-pass", "contrast-interface", "seed", "eb-rule"],
        ),
    )


def _case_lstm_eb():
    return _case_lstm("eb") + (
        (
            "The same CNN-LSTM and clip, cEB-R with the conserving LSTM rule.",
            ["lstm-eb", "lstm-bias", "eq5", "dual-pass", "contrast-interface"],
        ),
    )


def _case_lstm_tanh():
    return _case_lstm("caffe", "EB-R", cell="tanh", seed_steps="all", seed=0x61, clip_seed=0x62) + (
        (
            "A tanh LSTM, EB-R with the released code's rule, seeded at every step.",
            ["tanh-cell", "lstm-caffe", "seeds-every-step", "eq5"],
        ),
    )


def _case_lstm_tanh_eb():
    return _case_lstm("eb", cell="tanh", seed=0x65, clip_seed=0x66) + (
        (
            "A tanh LSTM, cEB-R with the conserving rule (allowed on a tanh cell, whose signals may be "
            "signed).",
            ["tanh-cell", "lstm-eb", "dual-pass", "eq5"],
        ),
    )


def _case_lstm_markers():
    return _case_lstm(
        "eb", seed_steps=[2, 5], seed=0x71, clip_seed=0x72, T=6, target=[0, 2], cont=[0, 1, 1, 0, 1, 1]
    ) + (
        (
            "Two clips in one sequence (a clip marker at step 3), cEB-R with rule eb, seeds at steps 2 and "
            "5, two targets.",
            ["clip-markers", "seeds-several-steps", "several-targets", "lstm-eb", "dual-pass"],
        ),
    )


def _case_lstm_zero_total():
    return _case_lstm("caffe", seed=0x81, clip_seed=0x82, target=2, zero_dual=True) + (
        (
            "cEB-R whose dual pass has a grand total of 0 (the target's classifier row has no negative "
            "weight).",
            ["zero-total", "dual-pass", "eq5", "lstm-caffe"],
        ),
    )


def _case_lstm_bpr():
    return _case_lstm(None, "BP-R", seed=0x91, clip_seed=0x92, target=3) + (
        ("BP-R on a CNN-LSTM: the gradient of the raw logit at the last step.", ["bp-r", "seed"]),
    )


def _small_captioner(seed, static_layer):
    layers = [
        ("conv1", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
        ("relu1", "relu"),
        ("pool1", "maxpool", {"kernel": 2}),
        ("flatten", "flatten"),
        ("fc6", "fc", {"out_features": 8}),
        ("relu6", "relu"),
    ]
    m = captioner(
        layers,
        ["a", "red", "blue", "square", "disk", "slides"],
        (3, 8, 8),
        embed=4,
        hidden=(5, 6),
        static_layer=static_layer,
        seed=seed,
        meta={"name": "conformance_captioner", "readout": "conv1"},
    )
    r = _rng(seed + 1)
    for k in ("lstm1.b", "lstm2.b"):
        m.params[k] = r.normal(0.0, 0.3, m.params[k].shape)
    return m


def _case_captioner_caffe():
    m = _small_captioner(0xA1, "lstm2")
    clip = _rng(0xA2).uniform(0.0, 1.0, (3, 3, 8, 8))
    settings = {
        "method": "cEB-R",
        "words": "red",
        "caption": "a red square slides",
        "lstm_rule": "caffe",
        "layer": "conv1",
    }
    return (
        m,
        clip,
        settings,
        (
            "A video captioner (video feature the static input of lstm2), cEB-R with the released code's "
            "rule, one word of a forced caption.",
            ["static-input", "mean-over-time", "words", "lstm-caffe", "dual-pass", "eq5"],
        ),
    )


def _case_captioner_eb():
    m = _small_captioner(0xB1, "lstm1")
    clip = _rng(0xB2).uniform(0.0, 1.0, (3, 3, 8, 8))
    settings = {
        "method": "EB-R",
        "words": ["red square", 0],
        "caption": "a red square",
        "lstm_rule": "eb",
        "layer": "input",
    }
    return (
        m,
        clip,
        settings,
        (
            "A video captioner (video feature the static input of lstm1), EB-R with rule eb, a phrase and a "
            "caption position as two queries.",
            ["static-input", "mean-over-time", "phrase-query", "several-targets", "lstm-eb", "words"],
        ),
    )


CASES = {
    "cnn_eb": _case_cnn_eb,
    "cnn_ceb_signed": _case_cnn_ceb_signed,
    "cnn_pool_ties_ceil": _case_pool_ties_ceil,
    "cnn_zero_denominators": _case_zero_denominators,
    "lstm_relu_caffe": _case_lstm_caffe,
    "lstm_relu_eb": _case_lstm_eb,
    "lstm_tanh_caffe": _case_lstm_tanh,
    "lstm_tanh_eb": _case_lstm_tanh_eb,
    "lstm_markers_targets": _case_lstm_markers,
    "lstm_zero_dual_total": _case_lstm_zero_total,
    "lstm_bpr": _case_lstm_bpr,
    "captioner_caffe": _case_captioner_caffe,
    "captioner_eb_lstm1": _case_captioner_eb,
}


def case_names():
    """The names of the cases, in the suite's order."""
    return list(CASES)


def build_case(name):
    """``(model, clip, settings, description, conventions)`` of case ``name``: what :func:`export` writes."""
    if name not in CASES:
        raise ValueError(f"no conformance case {name!r}; the cases: {', '.join(CASES)}")
    model, clip, settings, (description, conventions) = CASES[name]()
    return model, clip, settings, description, conventions


def _resolved(model, clip, settings, ours):
    """The settings as a port needs them: the seeded steps, clip markers and caption steps spelled out."""
    out = dict(settings)
    T = clip.shape[0]
    if hasattr(model, "vocab"):
        caption = out["caption"].split()
        out["query_steps"] = _query_steps(out["words"], caption)
        return out
    if out["method"] in RECURRENT_METHODS:
        steps = out.get("seed_steps", "last")
        out["seed_steps"] = [T - 1] if steps == "last" else list(range(T)) if steps == "all" else list(steps)
        out["cont"] = list(out.get("cont", [0] + [1] * (T - 1)))
        out["cell_act"] = next(lay["cell_act"] for lay in model.layers if lay.type == "lstm")
        out.setdefault("lstm_rule", "caffe")
        out["allow_tanh_eb"] = out["cell_act"] == "tanh" and out["lstm_rule"] == "eb"
    else:
        out["seed_steps"] = "every frame"
    return out


def _query_steps(words, caption):
    items = words if isinstance(words, list) else [words]
    steps = []
    for item in items:
        if isinstance(item, int):
            steps.append([item])
        else:
            steps.append(sorted({t for w in item.split() for t, c in enumerate(caption) if c == w}))
    return steps


def _run(model, clip, settings, method):
    s = dict(settings, method=method)
    if hasattr(model, "vocab"):
        return trace_caption(
            model,
            clip,
            s["words"],
            caption=s["caption"],
            method=method,
            layer=s["layer"],
            lstm_rule=s.get("lstm_rule", "caffe"),
        )
    cont = s.get("cont")
    tanh = any(lay.type == "lstm" and lay["cell_act"] == "tanh" for lay in model.layers)
    return trace(
        model,
        clip,
        s["target"],
        method=method,
        layer=s["layer"],
        lstm_rule=s.get("lstm_rule", "caffe"),
        seed_steps=s.get("seed_steps", "last"),
        cont=None if cont is None else numpy.array(cont, float),
        allow_tanh_eb=tanh,
    )


def _write_case(folder, name):
    model, clip, settings, description, conventions = build_case(name)
    method = settings["method"]
    ours = _run(model, clip, settings, method)
    positive = {"cEB-R": "EB-R", "cEB": "EB"}.get(method)
    pos = _run(model, clip, settings, positive) if positive else None
    info = _info(model, method, settings.get("lstm_rule") if method != "BP-R" else None)
    below = {f"signal/{n}" for n in info.cnn} | {"signal/input", "maps", "evidence"}
    stacked = isinstance(settings.get("target", settings.get("words")), list)
    os.makedirs(os.path.join(folder, "params"))
    captioner_model = hasattr(model, "vocab")
    (save_captioner if captioner_model else save_model)(model, os.path.join(folder, "model.npz"))
    params = {}
    for k in sorted(model.params):
        numpy.save(os.path.join(folder, "params", f"{k}.npy"), model.params[k])
        params[k] = f"params/{k}.npy"
    numpy.save(os.path.join(folder, "input.npy"), clip)
    points = []
    for key, value in ours.items():
        path = f"expected/{key}.npy"
        os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
        numpy.save(os.path.join(folder, path), value)
        axes, time_axis, steps, _ = _layout(key, value.ndim, stacked, info)
        ref = pos[key] if (pos is not None and key in below) else None
        points.append(
            {
                "name": key,
                "file": path,
                "shape": list(value.shape),
                "dtype": value.dtype.name,
                "scale": reference_norm(key, ours, ref),
                "phase": "forward" if _is_forward(key) else "backward",
                "axes": axes,
                "time_axis": time_axis,
                "steps": steps,
            }
        )
    side = read_sidecar(os.path.join(folder, "model.npz"))
    case = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "description": description,
        "conventions": {c: CONVENTIONS[c] for c in conventions},
        "kind": "captioner" if captioner_model else "classifier",
        "input_shape": list(model.input_shape),
        "architecture": side["architecture"],
        "settings": _resolved(model, clip, settings, ours),
        "tolerance": dict(TOLERANCE),
        "check": "for each point: rel = ||theirs - expected|| / scale (Frobenius norms, float64) <= "
        "tolerance[dtype of theirs]; a point whose scale is 0 must be exactly 0",
        "model": "model.npz",
        "params": params,
        "input": "input.npy",
        "points": points,
    }
    if captioner_model:
        case["decoder"] = side["decoder"]
        case["vocabulary"] = side["vocabulary"]
    with open(os.path.join(folder, "case.json"), "w", encoding="utf-8") as f:
        json.dump(case, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return {
        "name": name,
        "path": f"{name}/",
        "kind": case["kind"],
        "method": method,
        "conventions": list(conventions),
        "description": description,
        "tolerance": dict(TOLERANCE),
        "points": len(points),
    }


def export(folder, *, overwrite=False, names=None):
    """Write the suite (or the cases ``names``) into ``folder``: ``index.json`` and one folder per case.

    Parameters
    ----------
    folder : str or path-like
        Created; an existing folder must be empty, or hold a suite (an
        ``index.json`` of this format) and ``overwrite`` be true (it is then
        replaced).
    overwrite : bool
    names : list of str, optional
        A subset of :func:`case_names`.

    Returns
    -------
    dict
        The index.
    """
    folder = os.fspath(folder)
    names = case_names() if names is None else list(names)
    for n in names:
        if n not in CASES:
            raise ValueError(f"no conformance case {n!r}; the cases: {', '.join(CASES)}")
    if os.path.exists(folder):
        if not os.path.isdir(folder):
            raise ValueError(f"{folder}: exists and is not a folder")
        if os.listdir(folder):
            if not _is_suite(folder):
                raise ValueError(
                    f"{folder}: a folder that is not empty and holds no conformance suite; choose another"
                )
            if not overwrite:
                raise ValueError(
                    f"{folder}: holds a conformance suite already (pass overwrite=True / "
                    "--overwrite to replace it)"
                )
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(folder))}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        cases = [_write_case(os.path.join(tmp, n), n) for n in names]
        index = {
            "format": FORMAT,
            "version": VERSION,
            "regenerate": "ebr-ref conformance export DIR --overwrite",
            "point_names": "docs/verify-your-implementation.md (section 'Point names')",
            "tolerance": dict(TOLERANCE),
            "conventions": {c: CONVENTIONS[c] for c in CONVENTIONS},
            "cases": cases,
        }
        with open(os.path.join(tmp, "index.json"), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1, ensure_ascii=False)
            f.write("\n")
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def _is_suite(folder):
    try:
        with open(os.path.join(folder, "index.json"), encoding="utf-8") as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_case(folder):
    """A case folder as ``(model, settings)`` for :func:`ebr_ref.tools.compare.compare`.

    ``settings`` holds ``name``, ``clip``, the run's settings (``target`` or
    ``words`` and ``caption``, ``method``, ``lstm_rule``, ``seed_steps``,
    ``cont``, ``layer``) and ``rtol`` (None: the suite's tolerances are
    compare's defaults).

    Raises
    ------
    ValueError
        For a folder that is not a case of this suite (naming what is missing).
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, "case.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder}: no case.json (a case folder of 'ebr-ref conformance export' holds one)")
    with open(path, encoding="utf-8") as f:
        case = json.load(f)
    if case.get("format") != FORMAT:
        raise ValueError(f"{path}: not a case of the conformance suite (format {case.get('format')!r})")
    model_path = os.path.join(folder, case["model"])
    model = (load_captioner if case["kind"] == "captioner" else load_model)(model_path)
    s = case["settings"]
    clip = numpy.load(os.path.join(folder, case["input"]), allow_pickle=False)
    out = {"name": case["name"], "clip": clip, "method": s["method"], "layer": s["layer"], "rtol": None}
    if case["kind"] == "captioner":
        out.update(words=s["words"], caption=s["caption"], lstm_rule=s.get("lstm_rule"))
    else:
        out["target"] = s["target"]
        if s["method"] in RECURRENT_METHODS:
            out.update(
                seed_steps=s["seed_steps"],
                cont=numpy.array(s["cont"], dtype=numpy.float64),
                lstm_rule=s.get("lstm_rule"),
            )
    return model, out
