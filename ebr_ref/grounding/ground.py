"""Grounding drivers: EB, cEB, BP (per frame) and EB-R, cEB-R, BP-R (CNN-LSTM), paper Algorithm 1.

One call of :func:`ground` returns where (maps) and when (per-frame evidence) a
model finds the evidence for one or several target classes in a clip.

Recurrent methods (docs/spec.md §5) on a CNN-LSTM model, :func:`_ground_recurrent`:

1. forward the CNN over the frames in chunks to the interface layer (the
   LSTM's input), keeping the read-out layer's activations when they fit the
   memory budget (:meth:`FrameCNN.forward <ebr_ref.grounding.frame_cnn.FrameCNN.forward>`);
2. forward the sequence part (LSTM, classifier at every step), keeping its records;
3. seed a raw 1 on the target logit at the seed step(s)
   (:func:`~ebr_ref.grounding.algorithm.one_hot_seed`) and run EB-R back
   through the sequence part to the interface (paper eqs. 1-4): ``P``;
4. normalise by the grand total over frames and units (eq. 5,
   :func:`~ebr_ref.grounding.algorithm.normalise_by_total`): ``P_N``; for
   cEB-R repeat 3-4 with the classifier's weights negated (eqs. 2, 4, 6:
   :func:`~ebr_ref.grounding.algorithm.negate_classifier`): ``P_N_dual``, and
   subtract (eq. 7, :func:`~ebr_ref.grounding.algorithm.contrast`): ``Map``;
5. for every chunk of frames, run the CNN forward from the read-out layer to
   the interface again (or, with ``fast_kernels``, take the records step 1 kept
   when they fit the budget) and EB down to the read-out layer (eqs. 8-9), summed
   over channels (:meth:`FrameCNN.backward <ebr_ref.grounding.frame_cnn.FrameCNN.backward>`).

BP-R replaces 3-5 by the gradient of the raw logit (no normalisation).
Per-frame methods (EB, cEB, BP) on a CNN classifier, :func:`_ground_frames`,
seed every frame's target logit separately; cEB contrasts at the classifier's
input with no normalisation (docs/spec.md §2). The diagnostics are assembled from the
steps' return values by :func:`ebr_ref.grounding.diagnostics.action_diagnostics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy

from .. import backend
from ..layers.lstm import LSTM_RULES  # re-exported: the lstm_rule values ground() takes
from ..models.model import default_cont, softmax
from ..models.stack import run_eb, run_grad
from .algorithm import contrast, negate_classifier, normalise_by_total, one_hot_seed
from .diagnostics import action_diagnostics, sum_mass
from .frame_cnn import FrameCNN, join_chunks, weights_memo
from .inputs import (
    check_fused_switch,
    check_kernel_switch,
    check_lstm_rule,
    check_weights_cache,
    is_int,
    prepare,
)

__all__ = [
    "Grounding",
    "ground",
    "check_finite_result",
    "NonFiniteResultError",
    "METHODS",
    "RECURRENT_METHODS",
    "FRAME_METHODS",
    "LSTM_RULES",
]

RECURRENT_METHODS = ("EB-R", "cEB-R", "BP-R")
FRAME_METHODS = ("EB", "cEB", "BP")
METHODS = FRAME_METHODS + RECURRENT_METHODS


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
        ``method``, ``lstm_rule``, ``targets``, ``layer``, ``seed_steps``, ``totals``
        (eq.-5 grand totals of the positive pass per target), ``totals_dual``
        (cEB-R's negated pass, eq. 6), ``zero_totals`` (passes whose total was 0 and
        were set to zero), ``mass_lost`` (``{"positive", "dual", "cnn"}``, each
        ``{layer: signal entering minus signal leaving}`` summed over chunks; a
        ``(K,)`` vector per layer), ``lstm`` (for ``lstm_rule="eb"``: signal that
        reached the initial state and signal lost at zero denominators),
        ``chunk_size``, ``fused_readout`` (the names of the fused layers, or None),
        ``readout_recomputed`` (recurrent methods). Assembled by
        :func:`ebr_ref.grounding.diagnostics.action_diagnostics`.
    """

    maps: numpy.ndarray
    evidence: numpy.ndarray
    probs: numpy.ndarray
    targets: list
    layer: str
    channel_maps: numpy.ndarray | None = None
    diagnostics: dict = field(default_factory=dict)


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
    chunk_size="auto",
    channel_maps=False,
    allow_tanh_eb=False,
    checkpoint_budget_bytes=1 << 30,
    progress=None,
    fused_readout="auto",
    fast_kernels=True,
    tf32=False,
    weights_cache=None,
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
        EB rule through the LSTM (docs/spec.md §4).
    seed_steps : "last", "all" or sequence of int
        Steps whose target logit is seeded with a raw 1 (recurrent methods).
    dtype : dtype, optional
        Run in this dtype instead of the model's.
    cont : array of shape (T,), optional
        Clip markers (default 0 at the first frame, 1 after).
    chunk_size : int or "auto"
        Frames per CNN chunk; peak memory grows with it, not with T. ``"auto"`` (the
        default): 8 on the CPU; on a GPU, where larger chunks are faster (fewer,
        larger kernel launches; docs/performance.md), up to 32 as the free device
        memory allows (:func:`ebr_ref.grounding.frame_cnn.resolve_chunk_size`). The
        chunk size used is in ``diagnostics["chunk_size"]``.
    channel_maps : bool
        Also return the full per-channel signal at the read-out layer.
    allow_tanh_eb : bool
        Allow ``lstm_rule="eb"`` on a tanh LSTM (assumption A1 of the paper fails).
    checkpoint_budget_bytes : int
        Keep the read-out layer's activations of all frames between the two CNN
        passes when they take at most this many bytes; otherwise recompute them.
        With ``fast_kernels`` (recurrent methods), keep instead the records of every
        layer from the read-out layer to the interface when those fit, so that step 5
        runs no layer forward again (:attr:`FrameCNN.keeps_records
        <ebr_ref.grounding.frame_cnn.FrameCNN.keeps_records>`).
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
    fast_kernels : bool
        Let the conv and fc kernels take their own fast paths (shifted-view and
        flipped-adjoint convolution, :mod:`ebr_ref.layers.conv2d_fast`; ``max(W, 0)``
        a block at a time, :mod:`ebr_ref.layers.linear_fast`) where they apply.
        With it, recurrent methods also keep the first CNN pass's records above the
        read-out layer within ``checkpoint_budget_bytes`` (the same records step 5
        would compute again). False runs the reference kernels only and recomputes:
        with ``fused_readout=False`` the call is the plain reference path
        (docs/spec.md §9). Results agree to rounding.
    tf32 : bool
        Let float32 matrix products run in TF32 on the GPU's tensor cores (faster,
        about 1e-3 relative error per product instead of about 1e-7). Off by default:
        the engine then runs full float32 even where ``CUPY_TF32=1`` is set. True
        needs a float32 model on a GPU of compute capability 8.0 or later
        (:func:`ebr_ref.backend.matmul_precision`).
    weights_cache : dict, optional
        A dict the caller keeps between calls with the same model (start with
        ``{}``): ``max(W, 0)`` (and the classifier's ``max(-W, 0)``) of the fc layers
        is formed on the first call and kept there, and later calls read it instead
        of forming it again, which for VGG16's fc6 costs more than the layer's EB
        itself. It holds about as much memory as those layers' weights (480 MB for
        VGG16 in float32). An entry is formed again when the model holds another
        weight array under that name (a new model, ``astype``, ``to``, a replaced
        entry of ``params``), but not when an array is changed in place: clear the
        dict then. A ``dtype`` other than the model's casts the model afresh on
        every call, so the cache cannot help (cast the model once instead); BP and
        BP-R read no ``W+`` and leave it alone. Results do not depend on it beyond
        rounding.

    Returns
    -------
    Grounding
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_lstm_rule(lstm_rule)
    recurrent = method in RECURRENT_METHODS
    if recurrent and not model.is_recurrent:
        raise ValueError(
            f"method {method} needs a CNN-LSTM model; this model has no lstm layer (use {method[:-2]})"
        )
    if not recurrent and model.is_recurrent:
        raise ValueError(
            f"method {method} is for a per-frame CNN classifier; this model is recurrent (use {method}-R)"
        )
    backend.check_matmul_precision(model.xp, model.dtype if dtype is None else dtype, tf32)  # before any work
    check_weights_cache(weights_cache)
    model, clip = prepare(model, clip, dtype)
    if layer is None:
        layer = model.meta.get("readout", "conv5_1")
    targets, single = _parse_targets(target, model.num_classes)
    fast = check_kernel_switch(fast_kernels)
    with backend.matmul_precision(model.xp, model.dtype, tf32=tf32):  # full float32 unless asked
        frames = FrameCNN(
            model,
            clip,
            _readout_index(model, layer),
            chunk_size=chunk_size,
            channel_maps=channel_maps,
            budget_bytes=checkpoint_budget_bytes,
            fast_kernels=fast,
            signals=len(targets),
        )
        mode = "grad" if method in ("BP", "BP-R") else "eb"
        switch = check_fused_switch(fused_readout, channel_maps)
        leg, fused_layers = frames.readout_leg(mode, len(targets), switch)
        memo = weights_memo(frames.chunks, len(targets), weights_cache) if mode == "eb" else None  # max(W, 0)
        tick = _ticker(progress, clip.shape[0] * (2 if recurrent else 1))
        if recurrent:
            run = _ground_recurrent(
                model,
                frames,
                targets,
                method,
                leg,
                memo,
                tick,
                lstm_rule=lstm_rule,
                seed_steps=seed_steps,
                cont=cont,
                allow_tanh_eb=allow_tanh_eb,
            )
        else:
            run = _ground_frames(model, frames, targets, method, leg, memo, tick)
        maps, evidence, channels = run.readout.maps, run.readout.evidence, run.readout.channels  # (K, T, ...)
    if single:
        maps, evidence, channels = maps[0], evidence[0], None if channels is None else channels[0]
    return check_finite_result(
        Grounding(
            maps=backend.to_numpy(maps),
            evidence=backend.to_numpy(evidence),
            probs=backend.to_numpy(run.probs),
            targets=targets,
            layer=layer,
            channel_maps=None if channels is None else backend.to_numpy(channels),
            diagnostics=action_diagnostics(
                method=method,
                lstm_rule=lstm_rule if recurrent else None,
                targets=targets,
                layer=layer,
                chunk_size=frames.chunk_size,
                seed_steps=run.seed_steps,
                mass_lost=run.mass_lost,
                totals=run.totals,
                totals_dual=run.totals_dual,
                fused_layers=fused_layers,
                readout_recomputed=frames.readout_recomputed if recurrent else None,
                lstm=run.lstm,
            ),
        ),
        "ground",
    )


class NonFiniteResultError(ValueError):
    """A grounding run gave NaN or infinite maps, evidence or probabilities (:func:`check_finite_result`)."""


def check_finite_result(result, where):
    """``result`` (a :class:`Grounding`) when its arrays are finite; else :class:`NonFiniteResultError`.

    Non-finite parameters are refused when a model is loaded, but a model can
    still overflow (large activations in float32, an extreme clip); its maps
    would then be NaN, its evidence 0 or NaN, and every localisation
    meaningless. Checked once, on the returned arrays.
    """
    bad = []
    for name in ("probs", "maps", "evidence", "channel_maps"):
        a = getattr(result, name)
        if a is not None and a.dtype.kind in "fc":
            n = int(a.size - numpy.count_nonzero(numpy.isfinite(a)))
            if n:
                bad.append(f"{name} ({n} of {a.size} values)")
    if bad:
        raise NonFiniteResultError(
            f"{where}: NaN or infinite values in the {', '.join(bad)}: the model's "
            "forward or excitation backward overflowed (try float64), or its "
            "parameters are not finite"
        )
    return result


def _ground_recurrent(
    model, frames, targets, method, leg, memo, tick, *, lstm_rule, seed_steps, cont, allow_tanh_eb
):
    """EB-R, cEB-R or BP-R on a CNN-LSTM: Algorithm 1, steps in the order of the module docstring."""
    xp, T, fast = model.xp, frames.clip.shape[0], frames.fast_kernels
    seed_steps = _parse_seed_steps(seed_steps, T)
    cont = _clip_markers(cont, T, model)

    # 1. CNN forward in chunks to the interface (the LSTM's input); read-out activations (with fast_kernels:
    # the records above the read-out layer) kept if they fit.
    interface = frames.forward(tick, records=True, memo=memo)  # (T, D)

    # 2. Sequence part forward, keeping its records.
    logits, records = model.run_forward(
        interface, model.sequence_start, len(model.layers), cont=cont, keep=True, memo=memo, fast=fast
    )  # (T, C)
    seed = one_hot_seed(targets, seed_steps, T, model.num_classes, xp=xp, dtype=model.dtype)  # (K, T, C)

    # 3-4. Back through the sequence part to the interface; eqs. 5-7.
    if method == "BP-R":
        Map = run_grad(records, seed, fast=fast)  # (K, T, D)  the gradient; no normalisation
        mass_lost, totals, totals_dual, lstm = {}, None, None, None
    else:
        kw = dict(lstm_rule=lstm_rule, allow_tanh_eb=allow_tanh_eb, fast=fast)
        positive = run_eb(records, seed, **kw)  # positive.p: (K, T, D)  P^t(a_i), eqs. 1, 3
        P_N, totals = normalise_by_total(positive.p)  # (K, T, D), (K,)  eq. 5
        Map, totals_dual, lstm = P_N, None, list(positive.lstm)  # EB-R goes on with P_N (paper, after eq. 9)
        mass_lost = {"positive": sum_mass([positive.mass])}  # summed from 0.0, as over chunks
        if method == "cEB-R":
            dual = run_eb(_with_negated_classifier(model, records, memo), seed, **kw)  # (K, T, D)  eqs. 2, 4
            P_N_dual, totals_dual = normalise_by_total(dual.p)  # (K, T, D), (K,)  eq. 6
            Map = contrast(P_N, P_N_dual)  # (K, T, D)  eq. 7
            mass_lost["dual"] = sum_mass([dual.mass])  # summed from 0.0, as over chunks
            lstm += dual.lstm
        lstm = lstm if lstm_rule == "eb" else None

    # 5. CNN part, chunk by chunk, from the read-out layer's activations to the interface and back (eqs. 8-9).
    readout = frames.backward(Map, leg, memo=memo, tick=tick)  # maps (K, T, h, w) or (K, T, D)
    mass_lost["cnn"] = readout.mass
    return _Run(softmax(logits), readout, seed_steps, mass_lost, totals, totals_dual, lstm)


def _ground_frames(model, frames, targets, method, leg, memo, tick):
    """EB, cEB or BP on a per-frame CNN classifier: every frame is its own sample, seeded at its own logit."""
    xp = model.xp
    probs, parts, positive, dual = [], [], [], []
    for chunk, (a, b) in enumerate(frames.chunks):  # n = b - a frames each
        logits, records = frames.forward_from_readout(chunk, memo=memo)  # (n, C); records above the read-out
        probs.append(softmax(logits))
        seed = one_hot_seed(targets, list(range(b - a)), b - a, model.num_classes, xp=xp, dtype=model.dtype)
        tick(b - a)
        if method == "cEB":  # contrast at the classifier's input, no normalisation, one pass below
            top, below = records[-1:], records[:-1]
            pos = run_eb(top, seed, fast=frames.fast_kernels)  # (K, n, D)
            neg = run_eb(
                _with_negated_classifier(model, top, memo), seed, fast=frames.fast_kernels
            )  # eqs. 2, 4
            positive.append(pos.mass)
            dual.append(neg.mass)
            parts.append(leg(below, contrast(pos.p, neg.p)))
        else:  # EB: the whole way, its mass recorded as the positive pass's; BP: the gradient
            parts.append(leg(records, seed))
    readout = join_chunks(parts, xp=xp)  # maps (K, T, h, w) or (K, T, D)
    if method == "cEB":
        mass_lost = {"positive": sum_mass(positive), "dual": sum_mass(dual), "cnn": readout.mass}
    else:
        mass_lost = {"positive": readout.mass}
    return _Run(xp.concatenate(probs, axis=0), readout, "every frame", mass_lost)


class _Run(NamedTuple):
    """What a driver path computed, for :func:`ground` to return."""

    probs: object  # (T, num_classes)
    readout: object  # ReadoutMaps: maps, evidence, channels and CNN mass at the read-out layer
    seed_steps: object  # the seeded steps, or "every frame"
    mass_lost: dict  # {"positive", "dual", "cnn"}: {layer: (K,)} each
    totals: object = None  # (K,) eq.-5 grand totals of the positive pass, or None
    totals_dual: object = None  # (K,) eq.-6 grand totals of the dual pass, or None
    lstm: list = None  # LSTMSignals of rule "eb" (positive pass, then dual), or None


def _with_negated_classifier(model, records, memo):
    """The records with the classifier's weights negated: the dual pass of cEB and cEB-R (eqs. 2, 4)."""
    layer, cache = records[-1]
    W_pos = model.stack.positive_weights(layer.name, negated=True, memo=memo)  # max(-W, 0), kept in the memo
    return list(records[:-1]) + [(layer, negate_classifier(cache, W_pos=W_pos))]


def _parse_targets(target, num_classes):
    """``(targets, single)``: the class indices as a list, and whether one was given bare."""
    if target is None or isinstance(target, (str, bytes)):
        raise TypeError(f"target must be a class index (int) or a list of them, got {target!r}")
    single = numpy.isscalar(target) or (hasattr(target, "ndim") and target.ndim == 0)
    items = [target] if single else list(target)
    if not items:
        raise ValueError("target: an empty list of classes")
    out = []
    for item in items:
        if not is_int(item):
            raise TypeError(f"target must be a class index (int) or a list of them, got {item!r}")
        if not 0 <= int(item) < num_classes:
            raise ValueError(f"target {int(item)} is out of range for a model with {num_classes} classes")
        out.append(int(item))
    return out, single


def _parse_seed_steps(seed_steps, T):
    """The seeded steps as a sorted list of distinct ints in ``0 .. T - 1``."""
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
    bad = [t for t in steps if not 0 <= t < T]
    if bad:
        raise ValueError(f"seed_steps {bad} are out of range for a clip of {T} frames")
    return steps


def _readout_index(model, layer):
    """Index of read-out layer ``layer`` in the model's CNN part (``-1`` for ``"input"``)."""
    readout_index = model.index(layer)
    if readout_index >= model.sequence_start:
        raise ValueError(
            f"read-out layer {layer!r} is in the sequence part of the model; choose a layer of the CNN part "
            f"(up to {model.layer_names[model.sequence_start - 1]!r}) or 'input'"
        )
    if readout_index >= len(model.layers) - 1:
        raise ValueError(
            f"read-out layer {layer!r} is the classifier's output; choose a layer below the classifier "
            f"{model.layer_names[-1]!r}"
        )
    return readout_index


def _clip_markers(cont, T, model):
    """``cont (T,)`` on the model's device and dtype; the default marks a new clip at frame 0."""
    if cont is None:
        return default_cont(T, xp=model.xp, dtype=model.dtype)
    cont = backend.to_device(cont, model.device).astype(model.dtype)
    if tuple(cont.shape) != (T,):
        raise ValueError(f"cont must have shape ({T},), got {tuple(cont.shape)}")
    return cont


def _ticker(progress, total):
    """``tick(n)``: report ``n`` more frames of work to ``progress(done, total)``, if given."""
    done = [0]

    def tick(n):
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    return tick
