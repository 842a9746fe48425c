"""docs/method.md: every number of its worked examples is recomputed twice and compared with the page.

1. An independent oracle written here from docs/spec.md §2, §4 (rule "caffe") and §5:
   explicit per-step formulas in float64 with Python loops over time, sharing no
   code with the engine.
2. The engine itself: :func:`ebr_ref.grounding.ground.ground` on a model built from the
   same numbers (and :func:`ebr_ref.evaluation.localize.ground_unknown_length`).

The page holds each example between ``<!-- method-example: NAME begin -->`` and
``<!-- method-example: NAME end -->`` as lines ``name = value  # comment`` (a
number or a list, nested lists for matrices). Every value is printed rounded to
4 decimals (trailing zeros dropped) and compared to within half a unit of the
4th decimal. Running this
file (``python tests/docs/test_docs_method.py``) prints the blocks from the oracle,
to paste into the page when an example changes.
"""

import re

import numpy

from ebr_ref.evaluation.localize import ground_unknown_length
from ebr_ref.grounding.ground import ground
from ebr_ref.models import sequential
from tests.paths import DOCS

DOC = str(DOCS / "method.md")

# ---- the examples' inputs (also printed on the page, and read back from it by the tests) -------------
MLP = {
    "x": [1.0, 2.0, 1.0],
    "W1": [[1.0, -1.0, 2.0], [0.5, 1.0, -1.0]],
    "b1": [0.5, 0.0],
    "W2": [[2.0, -1.0], [-1.0, 1.0]],
    "b2": [0.0, 0.0],
    "target": 0,
}
RNN = {
    "frames": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.5, 0.0, 1.0]],
    "W7": [[1.0, 0.5, -0.5], [-0.5, 1.0, 1.0]],
    "b7": [0.0, 0.0],
    "W_x": [
        [0.5, 0.5],
        [0.5, 0.5],
        [0.25, 0.25],
        [0.25, 0.25],
        [0.5, 0.5],
        [0.5, 0.5],
        [1.0, 0.25],
        [0.25, 1.0],
    ],
    "b": [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    "W_h": [[0.0, 0.0]] * 6 + [[0.5, 0.0], [0.0, 0.5]],
    "W8": [[1.0, -1.0], [-1.0, 1.0]],
    "b8": [0.0, 0.0],
    "target": 0,
}


# ---- oracle -------------------------------------------------------------------------------------------
def _safe(num, den):
    den = numpy.asarray(den, dtype=float)
    return numpy.where(den != 0, numpy.asarray(num, dtype=float) / numpy.where(den != 0, den, 1.0), 0.0)


def _eb_linear(p_out, a, W):
    """P(a) = a * W+^T (P_out / (W+ a)), 0 where the normaliser is 0 (docs/spec.md §2)."""
    Wp = numpy.maximum(W, 0.0)
    return a * (Wp.T @ _safe(p_out, Wp @ a))


def oracle_mlp(v):
    x, W1, b1, W2, b2 = (numpy.array(v[k], dtype=float) for k in ("x", "W1", "b1", "W2", "b2"))
    h = numpy.maximum(W1 @ x + b1, 0.0)
    logits = W2 @ h + b2
    seed = numpy.eye(len(b2))[int(v["target"])]
    out = {"h": h, "logits": logits, "Z2": numpy.maximum(W2, 0) @ h, "Z1": numpy.maximum(W1, 0) @ x}
    out["P_h"] = _eb_linear(seed, h, W2)  # classifier input
    out["P_x"] = _eb_linear(out["P_h"], x, W1)  # EB map at the input
    out["Zbar2"] = numpy.maximum(-W2, 0) @ h
    out["Pbar_h"] = _eb_linear(seed, h, -W2)  # negated classifier
    out["Pbar_x"] = _eb_linear(out["Pbar_h"], x, W1)
    out["contrast_h"] = out["P_h"] - out["Pbar_h"]  # cEB: subtract at the classifier input
    out["cEB_x"] = x * (numpy.maximum(W1, 0).T @ _safe(out["contrast_h"], out["Z1"]))
    return out


def _sigmoid(z):
    return 1.0 / (1.0 + numpy.exp(-z))


def _lstm_caffe(p_h, xs, W_x, b, W_h):
    """Forward of the ReLU LSTM (cont = 0, 1, 1, ...) and the released code's backward (docs/spec.md §4,
    rule caffe)."""
    T, H = len(xs), W_h.shape[1]
    h, c = numpy.zeros(H), numpy.zeros(H)
    fw = []
    for t in range(T):
        cont = 0.0 if t == 0 else 1.0
        z = W_x @ xs[t] + b + W_h @ (cont * h)
        i, f, o, zg = _sigmoid(z[:H]), _sigmoid(z[H : 2 * H]), _sigmoid(z[2 * H : 3 * H]), z[3 * H :]
        g = numpy.maximum(zg, 0.0)
        c_prev = c
        c = cont * f * c_prev + i * g
        h = o * numpy.maximum(c, 0.0)
        fw.append({"i": i, "f": f, "o": o, "g": g, "zg": zg, "c": c, "c_prev": c_prev, "h": h, "cont": cont})
    p_x, kappas, dzs = [None] * T, [None] * T, [None] * T
    carry = numpy.zeros(H)  # P(c_t) arriving from step t + 1
    for t in reversed(range(T)):
        s = fw[t]
        kappa = carry + p_h[t] * s["o"] * (s["c"] > 0)
        dz = numpy.concatenate(
            [
                kappa * s["g"] * s["i"] * (1 - s["i"]),
                s["cont"] * kappa * s["c_prev"] * s["f"] * (1 - s["f"]),
                p_h[t] * numpy.maximum(s["c"], 0.0) * s["o"] * (1 - s["o"]),
                kappa * s["i"] * (s["zg"] > 0),
            ]
        )
        carry = s["cont"] * s["f"] * kappa
        kappas[t], dzs[t] = kappa, dz
        p_x[t] = _eb_linear(dz, xs[t], W_x)  # the input branch W_x x_t; nothing to W_h h_{t-1}
    return fw, numpy.array(p_x), numpy.array(kappas), numpy.array(dzs)


def oracle_rnn(v):
    fr, W7, b7, W_x, b, W_h, W8, b8 = (
        numpy.array(v[k], dtype=float) for k in ("frames", "W7", "b7", "W_x", "b", "W_h", "W8", "b8")
    )
    T = fr.shape[0]
    xs = numpy.maximum(fr @ W7.T + b7, 0.0)  # interface activations (relu7), (T, D)
    out = {"x": xs}
    seed = numpy.zeros((T, len(b8)))
    seed[-1, int(v["target"])] = 1.0  # the last step, raw 1 on the target logit
    for tag, W in (("pos", W8), ("dual", -W8)):
        fw, _, _, _ = _lstm_caffe(numpy.zeros((T, W_h.shape[1])), xs, W_x, b, W_h)
        hs = numpy.array([s["h"] for s in fw])
        p_h = numpy.array([_eb_linear(seed[t], hs[t], W) for t in range(T)])  # fc8 per step
        _, p_x, kappa, dz = _lstm_caffe(p_h, xs, W_x, b, W_h)
        total = p_x.sum()
        out[f"P_h.{tag}"] = p_h[-1]
        out[f"kappa.{tag}"] = kappa
        out[f"P.{tag}"] = p_x  # P^t(a_i) at the interface, unnormalised
        out[f"total.{tag}"] = total
        out[f"P_N.{tag}"] = p_x / total if total != 0 else numpy.zeros_like(p_x)  # eq. 5 / eq. 6
    out["h"] = hs
    logits = hs @ W8.T + b8
    e = numpy.exp(logits - logits.max(axis=1, keepdims=True))
    out["probs"] = e / e.sum(axis=1, keepdims=True)
    out["Map.interface"] = out["P_N.pos"] - out["P_N.dual"]  # eq. 7
    Z7 = fr @ numpy.maximum(W7, 0).T  # (T, D) normalisers of fc7 (no bias)
    for name, sig in (("EB-R", out["P_N.pos"]), ("cEB-R", out["Map.interface"])):
        m = fr * (_safe(sig, Z7) @ numpy.maximum(W7, 0))  # eqs. 8-9 down to the input pixels
        out[f"{name}.map"] = m
        out[f"{name}.S"] = m.sum(axis=1)
        out[f"{name}.segment"] = numpy.array(_segment(out[f"{name}.S"]))
    return out


def _segment(S):
    """Anchor at the first maximum, grow while the next frame's S >= 0 (docs/spec.md §6), written out."""
    a = int(numpy.argmax(S))
    s = a
    while s - 1 >= 0 and S[s - 1] >= 0:
        s -= 1
    e = a
    while e + 1 < len(S) and S[e + 1] >= 0:
        e += 1
    return s, e


# ---- the page ------------------------------------------------------------------------------------------
_LINE = re.compile(r"^([A-Za-z_][\w.\-]*)\s*=\s*(\[[-\d.,\s\[\]]*\]|-?[\d.]+)\s*(#.*)?$")
TOL = 0.5e-4 + 1e-12  # the page rounds to 4 decimals


def read_block(name, path=DOC):
    """``{name: (array, raw text)}`` of one example block."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(
        rf"<!-- method-example: {name} begin -->(.*?)<!-- method-example: {name} end -->", text, re.S
    )
    assert m, f"docs/method.md has no block '{name}'"
    out = {}
    for line in m.group(1).splitlines():
        lm = _LINE.match(line.strip())
        if lm:
            value = numpy.array(
                eval(lm.group(2), {"__builtins__": {}}), dtype=float
            )  # numbers and lists only
            out[lm.group(1)] = (value, lm.group(2))
    return out


def _check(page, name, value):
    printed, raw = page[name]
    value = numpy.asarray(value, dtype=float)
    assert printed.shape == value.shape, (name, printed.shape, value.shape)
    bad = numpy.abs(printed - value) > TOL
    assert not bad.any(), (
        f"docs/method.md: {name} = {raw} but the computation gives {numpy.round(value, 6).tolist()}"
    )


MLP_SHOWN = ("h", "logits", "Z2", "P_h", "Z1", "P_x", "Zbar2", "Pbar_h", "Pbar_x", "contrast_h", "cEB_x")
RNN_SHOWN = (
    "x",
    "h",
    "probs",
    "P_h.pos",
    "kappa.pos",
    "P.pos",
    "total.pos",
    "P_N.pos",
    "P_h.dual",
    "kappa.dual",
    "P.dual",
    "total.dual",
    "P_N.dual",
    "Map.interface",
    "EB-R.map",
    "EB-R.S",
    "EB-R.segment",
    "cEB-R.map",
    "cEB-R.S",
    "cEB-R.segment",
)


def _inputs(page, v):
    return {k: page[k][0].tolist() if k != "target" else int(page[k][0]) for k in v}


def test_the_page_blocks_parse():
    for name, v, shown in (("mlp", MLP, MLP_SHOWN), ("rnn", RNN, RNN_SHOWN)):
        assert set(read_block(name)) == set(v) | set(shown), name


def test_mlp_page_inputs_are_the_example():
    page = read_block("mlp")
    assert _inputs(page, MLP) == MLP


def test_mlp_numbers_match_the_oracle():
    page = read_block("mlp")
    ref = oracle_mlp(_inputs(page, MLP))
    for name in MLP_SHOWN:
        _check(page, name, ref[name])


def _mlp_model(v):
    P = {
        "fc1.weight": numpy.array(v["W1"]),
        "fc1.bias": numpy.array(v["b1"]),
        "fc2.weight": numpy.array(v["W2"]),
        "fc2.bias": numpy.array(v["b2"]),
    }
    layers = [
        ("flatten", "flatten"),
        ("fc1", "fc", {"out_features": 2}),
        ("relu1", "relu"),
        ("fc2", "fc", {"out_features": 2}),
    ]
    return sequential(layers, (3, 1, 1), params=P)


def test_mlp_numbers_match_the_engine():
    page = read_block("mlp")
    v = _inputs(page, MLP)
    model = _mlp_model(v)
    clip = numpy.array(v["x"]).reshape(1, 3, 1, 1)
    eb_in = ground(model, clip, v["target"], method="EB", layer="input", channel_maps=True)
    _check(page, "P_x", eb_in.channel_maps[0, :, 0, 0])
    _check(page, "P_h", ground(model, clip, v["target"], method="EB", layer="relu1").maps[0])
    ceb = ground(model, clip, v["target"], method="cEB", layer="input", channel_maps=True)
    _check(page, "cEB_x", ceb.channel_maps[0, :, 0, 0])
    _check(page, "contrast_h", ground(model, clip, v["target"], method="cEB", layer="relu1").maps[0])
    _check(page, "logits", model.logits(clip)[0])


def test_rnn_page_inputs_are_the_example():
    page = read_block("rnn")
    assert _inputs(page, RNN) == RNN


def test_rnn_numbers_match_the_oracle():
    page = read_block("rnn")
    ref = oracle_rnn(_inputs(page, RNN))
    for name in RNN_SHOWN:
        _check(page, name, ref[name])


def _rnn_model(v):
    P = {
        "fc7.weight": numpy.array(v["W7"]),
        "fc7.bias": numpy.array(v["b7"]),
        "lstm1.W_x": numpy.array(v["W_x"]),
        "lstm1.b": numpy.array(v["b"]),
        "lstm1.W_h": numpy.array(v["W_h"]),
        "fc8.weight": numpy.array(v["W8"]),
        "fc8.bias": numpy.array(v["b8"]),
    }
    layers = [
        ("flatten", "flatten"),
        ("fc7", "fc", {"out_features": 2}),
        ("relu7", "relu"),
        ("lstm1", "lstm", {"hidden": 2, "cell_act": "relu"}),
        ("fc8", "fc", {"out_features": 2}),
    ]
    return sequential(layers, (3, 1, 1), params=P)


def test_rnn_numbers_match_the_engine():
    page = read_block("rnn")
    v = _inputs(page, RNN)
    model = _rnn_model(v)
    clip = numpy.array(v["frames"]).reshape(-1, 3, 1, 1)
    _check(page, "probs", model.forward(clip))
    ebr_int = ground(model, clip, v["target"], method="EB-R", layer="relu7")
    _check(page, "P_N.pos", ebr_int.maps)
    _check(page, "total.pos", ebr_int.diagnostics["totals"][0])
    cebr_int = ground(model, clip, v["target"], method="cEB-R", layer="relu7")
    _check(page, "Map.interface", cebr_int.maps)
    _check(page, "total.dual", cebr_int.diagnostics["totals_dual"][0])
    for name in ("EB-R", "cEB-R"):
        g = ground(model, clip, v["target"], method=name, layer="input", channel_maps=True)
        _check(page, f"{name}.map", g.channel_maps[:, :, 0, 0])
        _check(page, f"{name}.S", g.evidence)
        _check(page, f"{name}.segment", ground_unknown_length(g.evidence))


def _fmt(a):
    a = numpy.asarray(a, dtype=float)
    if a.ndim == 0:
        text = f"{float(a):.4f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return "[" + ", ".join(_fmt(v) for v in a) + "]"


if __name__ == "__main__":  # pragma: no cover - prints the page's blocks from the oracle
    for title, v, fn, shown in (("mlp", MLP, oracle_mlp, MLP_SHOWN), ("rnn", RNN, oracle_rnn, RNN_SHOWN)):
        print(f"== {title}")
        for k, val in v.items():
            print(f"{k} = {_fmt(val) if k != 'target' else val}")
        ref = fn(v)
        for k in shown:
            print(f"{k} = {_fmt(ref[k])}")
