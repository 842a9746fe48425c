"""Grounding drivers: EB, cEB, BP (per frame) and EB-R, cEB-R, BP-R (CNN-LSTM), paper Algorithm 1.

One call of :func:`ground` returns where (maps) and when (per-frame evidence) a
model finds the evidence for one or several target classes in a clip.

Recurrent methods (SPEC §5) on a CNN-LSTM model:

1. forward the CNN over the frames in chunks, keeping the interface
   activations (the LSTM's input) of every frame and, when they fit the memory
   budget, the read-out layer's activations (else they are recomputed);
2. forward the sequence part (LSTM, classifier at every step);
3. seed a raw 1 on the target logit at the seed step(s) and run EB-R back
   through the sequence part to the interface: ``P^t``;
4. normalise by the grand total over frames and units (eq. 5); for cEB-R
   repeat with the classifier weights negated (eq. 6) and subtract (eq. 7);
5. for every chunk of frames, run the CNN forward from the read-out layer to
   the interface again and EB down to the read-out layer (eqs. 8-9).

BP-R replaces 3-5 by the gradient of the raw logit (no normalisation).
Per-frame methods (EB, cEB, BP) on a CNN classifier seed every frame's target
logit separately; cEB contrasts at the classifier's input with no
normalisation (SPEC §2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from .. import backend
from .drivers import Readout, frame_chunks, is_int, normalise_total, prepare, weights_memo
from ..models.model import default_cont, softmax

__all__ = ["Grounding", "ground", "METHODS"]

RECURRENT_METHODS = ("EB-R", "cEB-R", "BP-R")
FRAME_METHODS = ("EB", "cEB", "BP")
METHODS = FRAME_METHODS + RECURRENT_METHODS
LSTM_RULES = ("caffe", "eb")


@dataclass
class Grounding:
    """The result of :func:`ground`; every array is NumPy, whatever the backend.

    Attributes
    ----------
    maps : ndarray
        Signed signal at the read-out layer summed over channels, ``(T, h, w)``, or
        ``(K, T, h, w)`` for K targets. A flat read-out layer (fc) gives ``(T, D)``
        (``(K, T, D)``), the signal itself.
    evidence : ndarray
        Per-frame sums of ``maps``, ``(T,)`` or ``(K, T)`` (temporal evidence ``S``).
    probs : ndarray
        Class probabilities per step ``(T, num_classes)`` (softmax of the logits).
    targets : list of int
    layer : str
        The read-out layer.
    channel_maps : ndarray or None
        The full signal at the read-out layer, ``(T, C, h, w)`` or ``(K, T, C, h, w)``,
        when asked for.
    diagnostics : dict
        ``method``, ``lstm_rule``, ``seed_steps``, ``totals`` (eq.-5 grand totals of
        the positive pass per target), ``totals_dual`` (cEB-R's negated pass),
        ``zero_totals`` (passes whose total was 0 and were set to zero), ``mass_lost``
        (``{"positive", "dual", "cnn"}``, each ``{layer: signal entering minus signal
        leaving}`` summed over chunks; a ``(K,)`` vector per layer), ``lstm`` (for ``lstm_rule="eb"``: signal that reached the initial
        state and signal lost at zero denominators), ``chunk_size``, ``fused_readout``
        (the names of the fused layers, or None).
    """

    maps: numpy.ndarray
    evidence: numpy.ndarray
    probs: numpy.ndarray
    targets: list
    layer: str
    channel_maps: numpy.ndarray | None = None
    diagnostics: dict = field(default_factory=dict)


def _targets(target, num_classes):
    if target is None or isinstance(target, (str, bytes)):
        raise TypeError(f"target must be a class index (int) or a list of them, got {target!r}")
    single = numpy.isscalar(target) or (hasattr(target, "ndim") and target.ndim == 0)
    items = [target] if single else list(target)
    if not items:
        raise ValueError("target: an empty list of classes")
    out = []
    for t in items:
        if not is_int(t):
            raise TypeError(f"target must be a class index (int) or a list of them, got {t!r}")
        if not 0 <= int(t) < num_classes:
            raise ValueError(f"target {int(t)} is out of range for a model with {num_classes} classes")
        out.append(int(t))
    return out, single


def _seed_steps(seed_steps, T):
    if isinstance(seed_steps, str):
        if seed_steps == "last":
            return [T - 1]
        if seed_steps == "all":
            return list(range(T))
        raise ValueError(f"seed_steps must be 'last', 'all' or a list of steps, got {seed_steps!r}")
    if isinstance(seed_steps, (bytes, dict)) or not hasattr(seed_steps, "__iter__"):
        raise TypeError(f"seed_steps must be 'last', 'all' or a list of int steps, got {seed_steps!r}")
    items = list(seed_steps)
    if not all(is_int(v) for v in items):
        raise TypeError(f"seed_steps must be 'last', 'all' or a list of int steps, got {seed_steps!r}")
    steps = sorted({int(v) for v in items})
    if not steps:
        raise ValueError("seed_steps: an empty list of steps")
    bad = [s for s in steps if not 0 <= s < T]
    if bad:
        raise ValueError(f"seed_steps {bad} are out of range for a clip of {T} frames")
    return steps


def _negate_classifier(model, steps, memo):
    """Steps with the top (classifier) layer's weights negated: the dual pass of cEB / cEB-R."""
    layer, cache = steps[-1]
    dual = cache._replace(W=-cache.W, W_pos=model.positive_weights(layer.name, negated=True, memo=memo))
    return list(steps[:-1]) + [(layer, dual)]


def ground(
    model,
    clip,
    target,
    *,
    method="cEB-R",
    layer=None,
    lstm_rule="caffe",
    seed_steps="last",
    dtype=None,
    cont=None,
    chunk_size=8,
    channel_maps=False,
    allow_tanh_eb=False,
    checkpoint_budget_bytes=1 << 30,
    progress=None,
    fused_readout="auto",
):
    """Ground one or several target classes of a model in a clip.

    Parameters
    ----------
    model : ebr_ref.models.Model
        A CNN classifier (methods EB, cEB, BP) or a CNN-LSTM (EB-R, cEB-R, BP-R).
    clip : array of shape (T, C, H, W)
        Preprocessed frames, floating point; moved to the model's device and cast
        to its dtype.
    target : int or sequence of int
        Class index, or several (one call shares the forward pass and every
        normaliser ``Z`` among them).
    method : {"cEB-R", "EB-R", "BP-R", "cEB", "EB", "BP"}
    layer : str, optional
        Read-out layer: any layer of the CNN part (up to the LSTM's input), or
        ``"input"``. The map is the signal at that layer's output. Default: the
        model's ``meta["readout"]`` if it names one, else ``"conv5_1"`` (the
        released demo's read-out for VGG16).
    lstm_rule : {"caffe", "eb"}
        EB rule through the LSTM (SPEC §4).
    seed_steps : "last", "all" or sequence of int
        Steps whose target logit is seeded with a raw 1 (recurrent methods).
    dtype : dtype, optional
        Run in this dtype instead of the model's.
    cont : array of shape (T,), optional
        Clip markers (default 0 at the first frame, 1 after).
    chunk_size : int
        Frames per CNN chunk; peak memory grows with it, not with T. On a GPU
        larger chunks are faster (fewer kernel launches; docs/performance.md).
    channel_maps : bool
        Also return the full per-channel signal at the read-out layer.
    allow_tanh_eb : bool
        Allow ``lstm_rule="eb"`` on a tanh LSTM (assumption A1 of the paper fails).
    checkpoint_budget_bytes : int
        Keep the read-out layer's activations of all frames between the two CNN
        passes when they take at most this many bytes; otherwise recompute them.
    progress : callable, optional
        Called as ``progress(done, total)`` after every chunk of CNN work (a
        recurrent method passes over the frames twice: ``total = 2 T``; a per-frame
        method once: ``total = T``).
    fused_readout : {"auto", True, False}
        Fold the layers from the read-out layer up to the next max pooling into
        one matrix per frame (:mod:`ebr_ref.grounding.fused_readout`), so that each extra
        target costs a GEMM row block instead of conv adjoints. ``"auto"`` fuses
        when that is applicable and needs fewer multiply-adds (several targets,
        no ``channel_maps``); True insists (ValueError saying why it cannot);
        False runs every layer's own EB. Maps agree with the unfused passes to
        rounding (docs/conventions.md, "Fused read-out").

    Returns
    -------
    Grounding
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if lstm_rule not in LSTM_RULES:
        raise ValueError(f"unknown lstm_rule {lstm_rule!r}; expected 'caffe' or 'eb'")
    recurrent = method in RECURRENT_METHODS
    if recurrent and not model.is_recurrent:
        raise ValueError(f"method {method} needs a CNN-LSTM model; this model has no lstm layer (use {method[:-2]})")
    if not recurrent and model.is_recurrent:
        raise ValueError(f"method {method} is for a per-frame CNN classifier; this model is recurrent (use {method}-R)")
    model, clip = prepare(model, clip, dtype)
    if layer is None:
        layer = model.meta.get("readout", "conv5_1")
    targets, single = _targets(target, model.num_classes)
    r = model.index(layer)
    if r >= model.sequence_start:
        raise ValueError(
            f"read-out layer {layer!r} is in the sequence part of the model; choose a layer of the CNN part "
            f"(up to {model.layer_names[model.sequence_start - 1]!r}) or 'input'"
        )
    if r >= len(model.layers) - 1:
        raise ValueError(
            f"read-out layer {layer!r} is the classifier's output; choose a layer below the classifier "
            f"{model.layer_names[-1]!r}"
        )
    chunks = frame_chunks(clip.shape[0], chunk_size)
    mode = "grad" if method in ("BP", "BP-R") else "eb"
    readout = Readout.planned(model, r, len(targets), mode, request=fused_readout, keep_channels=channel_maps)
    diag = {
        "method": method, "lstm_rule": lstm_rule if recurrent else None, "targets": targets, "layer": layer,
        "chunk_size": int(chunk_size), "mass_lost": {"positive": {}, "dual": {}, "cnn": {}}, "totals": [], "totals_dual": [], "zero_totals": [],
        "fused_readout": readout.fused_layers,
    }
    run = _ground_recurrent if recurrent else _ground_frames
    tick = _ticker(progress, clip.shape[0] * (2 if recurrent else 1))
    probs = run(model, clip, targets, method, r, chunks, diag, readout, lstm_rule=lstm_rule,
                seed_steps=seed_steps, cont=cont, allow_tanh_eb=allow_tanh_eb,
                budget=checkpoint_budget_bytes, tick=tick)
    maps, evidence, p_read = readout.result()  # (K, T, h, w) or (K, T, D); (K, T); (K, T, C, h, w) or None
    if single:
        maps, evidence, p_read = maps[0], evidence[0], None if p_read is None else p_read[0]
    return Grounding(
        maps=backend.to_numpy(maps),
        evidence=backend.to_numpy(evidence),
        probs=backend.to_numpy(probs),
        targets=targets,
        layer=layer,
        channel_maps=None if p_read is None else backend.to_numpy(p_read),
        diagnostics=diag,
    )


def _ticker(progress, total):
    """``tick(n)``: report ``n`` more frames of work to ``progress(done, total)``, if given."""
    done = [0]

    def tick(n):
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    return tick


def _one_hot_seed(targets, steps, T, C, *, xp, dtype):
    seed = xp.zeros((len(targets), T, C), dtype=dtype)  # (K, T, C)
    for k, c in enumerate(targets):
        seed[k, steps, c] = 1
    return seed


def _ground_recurrent(model, clip, targets, method, r, chunks, diag, readout, *, lstm_rule, seed_steps, cont,
                      allow_tanh_eb, budget, tick):
    xp, T, s = model.xp, clip.shape[0], model.sequence_start
    memo = weights_memo(chunks, len(targets))
    steps_seed = _seed_steps(seed_steps, T)
    diag["seed_steps"] = steps_seed
    if cont is None:
        cont = default_cont(T, xp=xp, dtype=model.dtype)
    else:
        cont = backend.to_device(cont, model.device).astype(model.dtype)
        if tuple(cont.shape) != (T,):
            raise ValueError(f"cont must have shape ({T},), got {tuple(cont.shape)}")

    # 1. CNN forward in chunks: keep interface activations, and read-out activations if they fit.
    keep_readout = r >= 0 and numpy.prod(model.shapes[r]) * T * model.dtype.itemsize <= budget
    kept, interface = [], []
    for a, b in chunks:
        x_r, _ = model.run_forward(clip[a:b], 0, r + 1)
        if keep_readout:
            kept.append(x_r)
        x_s, _ = model.run_forward(x_r, r + 1, s)
        interface.append(x_s)
        tick(b - a)
    interface = xp.concatenate(interface, axis=0)  # (T, D)
    diag["readout_recomputed"] = not keep_readout and r >= 0

    # 2. Sequence part forward, keeping caches.
    logits, seq_steps = model.run_forward(interface, s, len(model.layers), cont=cont, keep=True, memo=memo)
    probs = softmax(logits)
    seed = _one_hot_seed(targets, steps_seed, T, model.num_classes, xp=xp, dtype=model.dtype)  # (K, T, C)

    # 3-4. Back through the sequence part to the interface, eq. 5-7.
    if method == "BP-R":
        p_int = model.run_grad(seq_steps, seed)  # (K, T, D), no normalisation
    else:
        lstm_res = []
        kw = dict(lstm_rule=lstm_rule, allow_tanh_eb=allow_tanh_eb, stacked=True, lstm_results=lstm_res)
        p_pos = model.run_eb(seq_steps, seed, mass=diag["mass_lost"]["positive"], **kw)  # (K, T, D)
        p_int = normalise_total(p_pos, True, xp, diag["totals"], diag["zero_totals"], "positive")
        if method == "cEB-R":
            p_neg = model.run_eb(_negate_classifier(model, seq_steps, memo), seed, mass=diag["mass_lost"]["dual"], **kw)
            p_int = p_int - normalise_total(p_neg, True, xp, diag["totals_dual"], diag["zero_totals"], "dual")
        if lstm_rule == "eb" and lstm_res:
            diag["lstm"] = [_lstm_accounting(res) for res in lstm_res]

    # 5. CNN part, chunk by chunk, from the read-out layer's activations to the interface and back.
    for n, (a, b) in enumerate(chunks):
        x_r = kept[n] if keep_readout else (clip[a:b] if r < 0 else model.run_forward(clip[a:b], 0, r + 1)[0])
        _, steps = model.run_forward(x_r, r + 1, s, keep=True, memo=memo)
        readout(steps, p_int[:, a:b], diag["mass_lost"]["cnn"])
        tick(b - a)
    return probs


def _lstm_accounting(res):
    """Totals of the LSTM kernel's mass accounting (rule 'eb'), as plain floats."""
    out = {}
    for name in ("p_h0", "p_c0", "lost"):
        v = getattr(res, name, None)
        if v is not None:
            out[name] = backend.to_numpy(v).tolist()
    return out


def _ground_frames(model, clip, targets, method, r, chunks, diag, readout, *, tick, **_):
    xp, L = model.xp, len(model.layers)
    memo = weights_memo(chunks, len(targets))
    diag["seed_steps"] = "every frame"
    probs = []
    for a, b in chunks:
        x_r = clip[a:b] if r < 0 else model.run_forward(clip[a:b], 0, r + 1)[0]
        logits, steps = model.run_forward(x_r, r + 1, L, keep=True, memo=memo)
        probs.append(softmax(logits))
        seed = _one_hot_seed(targets, list(range(b - a)), b - a, model.num_classes, xp=xp, dtype=model.dtype)
        tick(b - a)
        mass = diag["mass_lost"]
        if method == "cEB":  # contrast at the classifier's input, no normalisation, one pass below
            top, below = steps[-1:], steps[:-1]
            p_cls = model.run_eb(top, seed, stacked=True, mass=mass["positive"]) - model.run_eb(
                _negate_classifier(model, top, memo), seed, stacked=True, mass=mass["dual"])
            readout(below, p_cls, mass["cnn"])
        else:  # EB: the whole way, its mass recorded as "positive"; BP: the gradient
            readout(steps, seed, mass["positive"])
    return xp.concatenate(probs, axis=0)
