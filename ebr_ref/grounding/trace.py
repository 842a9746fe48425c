"""Every named point of one grounding run, for checking another implementation against the engine.

:func:`trace` (action models) and :func:`trace_caption` (captioners) run the
steps of :func:`~ebr_ref.grounding.ground.ground` and
:func:`~ebr_ref.grounding.ground_caption.ground_caption` with the fused read-out
off, through the same functions (:class:`~ebr_ref.grounding.frame_cnn.FrameCNN`'s
chunks and per-call weight memo, :meth:`LayerStack.run_forward
<ebr_ref.models.stack.LayerStack.run_forward>`, :func:`~ebr_ref.models.stack.run_eb`,
the steps of :mod:`.algorithm`), one layer at a time, and keep what every step
produced: the forward output of every layer, the signal at every layer's
output in both passes, the LSTM's per-step quantities (the ``record`` of
:func:`~ebr_ref.layers.lstm.lstm_eb`), the eq.-5 totals, the contrast and the
maps. Its ``maps``, ``evidence`` and ``probs`` are bit for bit those of the
drivers (``tests/tools/test_trace.py``). It is a tool for comparisons
(:mod:`ebr_ref.tools.compare`, :mod:`ebr_ref.tools.conformance`), not a fast
path: it holds every activation and signal of the clip in memory.

The result is a dict ``{point name: NumPy array}`` whose order is the order of
computation: the forward pass bottom to top, then the backward pass from the
seed down (within an LSTM, the forward quantities step by step from ``t = 0``,
the backward ones from ``t = T - 1``). Names (docs/verify-your-implementation.md
has the table with shapes):

- ``forward/<layer>``: every layer's output, ``(T, ...)``; for a captioner also
  ``forward/video`` (the pooled feature), ``forward/embed`` and ``tokens``;
  ``logits``, ``probs``.
- ``lstm/<layer>/gates`` ``(T, 4H)`` (blocks i, f, o, g after their
  nonlinearities), ``lstm/<layer>/c``, ``lstm/<layer>/h``.
- ``seed``; ``signal/<layer>``: the signal at the output of ``<layer>`` (the
  positive pass in the sequence part, the contrast carried down in the CNN
  part); ``signal_dual/<layer>``: the dual pass (cEB-R) in the sequence part.
- ``lstm/<layer>/p_h``, ``p_c``, ``p_rec``, ``lost`` and ``p_g``, ``Z``
  (rule ``"eb"``) or ``dz``, ``Z`` (rule ``"caffe"``; ``dz`` also for BP-R);
  ``lstm_dual/<layer>/...`` for the dual pass.
- ``interface/positive``, ``interface/dual``: ``P^t(a_i)`` at the interface
  layer (eq. 3), before eq. 5; ``totals/positive``, ``totals/dual``;
  ``normalised/positive``, ``normalised/dual`` (eqs. 5, 6); the contrast
  (eq. 7) is ``signal/<interface layer>``.
- cEB: ``classifier/positive``, ``classifier/dual`` (the two signals at the
  classifier's input, before the contrast).
- ``maps``, ``evidence`` at the read-out layer.

Backward quantities carry a leading ``K`` axis when ``target`` is a list.
"""

from __future__ import annotations

import numpy

from .. import backend
from ..layers.linear import linear_grad
from ..layers.lstm import lstm_eb, lstm_grad
from ..layers.temporal_mean import temporal_mean_eb, temporal_mean_grad
from ..models.caption import CaptionModel
from ..models.model import softmax
from ..models.stack import run_eb, run_grad
from .algorithm import channel_sum, contrast, frame_evidence, normalise_by_total, one_hot_seed
from .frame_cnn import FrameCNN, resolve_chunk_size, weights_memo
from .ground import (
    METHODS,
    RECURRENT_METHODS,
    _clip_markers,
    _parse_seed_steps,
    _parse_targets,
    _readout_index,
    _with_negated_classifier,
)
from .ground_caption import METHODS as CAPTION_METHODS
from .ground_caption import _queries, _word_seed, decoder_eb, decoder_grad
from .inputs import check_lstm_rule, prepare

__all__ = ["trace", "trace_caption", "readout_layer", "LSTM_FORWARD", "lstm_backward_names"]

LSTM_FORWARD = ("gates", "c", "h")  # per-step forward quantities of an LSTM, in the order of one step


def lstm_backward_names(rule):
    """The per-step backward quantities of an LSTM under ``rule`` (``"eb"``, ``"caffe"``, ``"grad"``).

    The order is the order of one step's computation: what arrives at ``h_t``,
    the total at ``c_t``, the gate signals, the normaliser, what the recurrent
    branch sends to ``h_{t-1}``, what was lost.
    """
    return {
        "eb": ("p_h", "p_c", "p_g", "Z", "p_rec", "lost"),
        "caffe": ("p_h", "p_c", "dz", "Z", "p_rec", "lost"),
        "grad": ("p_h", "p_c", "dz", "p_rec"),
    }[rule]


class _Points:
    """The trace being filled: names in computation order; backward values carry the ``K`` axis."""

    def __init__(self, single):
        self.single, self.values = single, {}

    def add(self, name, value, *, k=False):
        """Keep ``value`` under ``name``; ``k``: it has the leading ``K`` axis (dropped for one target)."""
        a = backend.to_numpy(value)
        self.values[name] = numpy.asarray(a[0]) if (k and self.single) else a

    def lstm_forward(self, name, cache, h):
        """The per-step forward quantities of LSTM ``name`` (``N = 1`` squeezed), then its output ``h``."""
        self.add(f"lstm/{name}/gates", cache.gates[:, 0])  # (T, 4H)  i, f, o, g
        self.add(f"lstm/{name}/c", cache.c[:, 0])  # (T, H)
        self.add(f"lstm/{name}/h", h)  # (T, H)

    def lstm_backward(self, prefix, record, rule):
        """An LSTM kernel's record (``(K, T, 1, ...)``; ``Z (T, 1, ...)``) as ``<prefix>/<quantity>``."""
        for q in lstm_backward_names(rule):
            v = record[q]
            self.add(f"{prefix}/{q}", v[:, 0] if q == "Z" else v[:, :, 0], k=q != "Z")


def trace(
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
    allow_tanh_eb=False,
):
    """Every named point of one :func:`~ebr_ref.grounding.ground.ground` call (module notes).

    Parameters
    ----------
    model, clip, target, method, lstm_rule, seed_steps, dtype, cont, chunk_size, allow_tanh_eb
        As :func:`~ebr_ref.grounding.ground.ground` (the fused read-out is off).
    layer : str, optional
        Where ``maps`` and ``evidence`` are read (the signal is traced down to
        the input pixels in any case). Default: the model's ``meta["readout"]``,
        else ``conv5_1``; when the model has neither, ``maps`` and ``evidence``
        are left out.

    Returns
    -------
    dict of str to ndarray
        Every point, in computation order.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_lstm_rule(lstm_rule)
    if isinstance(model, CaptionModel):
        raise TypeError("trace takes an action model; trace a captioner with trace_caption")
    recurrent = method in RECURRENT_METHODS
    if recurrent != model.is_recurrent:
        kind = "a CNN-LSTM" if model.is_recurrent else "a per-frame CNN classifier"
        raise ValueError(f"method {method} does not fit this model ({kind})")
    model, clip = prepare(model, clip, dtype)
    readout = _readout(model, layer)
    targets, single = _parse_targets(target, model.num_classes)
    K, T, xp = len(targets), clip.shape[0], model.xp
    r = -1 if readout is None else readout[0]
    chunk_size = resolve_chunk_size(chunk_size, model, r, K)  # as the driver resolves "auto"
    chunks = FrameCNN(model, clip, -1, chunk_size=chunk_size).chunks
    memo = weights_memo(chunks, K)  # the driver's max(W, 0) memo: the same EB kernels run
    mode = "grad" if method in ("BP", "BP-R") else "eb"
    pts = _Points(single)
    top = model.sequence_start  # CNN layers 0 .. top - 1 run per frame
    records, outputs = _cnn_forward(model, clip, chunks, top, memo, pts)
    if recurrent:
        marks = _clip_markers(cont, T, model)  # (T,)
        x, seq = xp.concatenate([o[-1] for o in outputs], axis=0), []  # (T, D)  the interface
        for k in range(top, len(model.layers)):  # the sequence part, one layer at a time
            x, rec = model.run_forward(x, k, k + 1, cont=marks, keep=True, memo=memo)
            seq += rec
            if model.layers[k].type == "lstm":
                pts.lstm_forward(model.layer_names[k], rec[0][1], x)
            pts.add(f"forward/{model.layer_names[k]}", x)
        pts.add("logits", x)  # (T, C)
        pts.add("probs", softmax(x))
        seed = one_hot_seed(
            targets, _parse_seed_steps(seed_steps, T), T, model.num_classes, xp=xp, dtype=model.dtype
        )  # (K, T, C)
        pts.add("seed", seed, k=True)
        if mode == "grad":
            Map = _sequence_backward(seq, seed, "grad", False, "signal", "lstm", pts)  # (K, T, D)
        else:
            Map = _normalised_passes(
                lambda sp, lp: _sequence_backward(seq, seed, lstm_rule, allow_tanh_eb, sp, lp, pts),
                lambda sp, lp: _sequence_backward(
                    _with_negated_classifier(model, seq, memo), seed, lstm_rule, allow_tanh_eb, sp, lp, pts
                ),
                method == "cEB-R",
                pts,
            )
        _cnn_backward(model, records, chunks, Map, mode, top, readout, pts)
        return pts.values
    pts.add("logits", xp.concatenate([o[-1] for o in outputs], axis=0))  # (T, C)
    pts.add("probs", xp.concatenate([softmax(o[-1]) for o in outputs], axis=0))  # per chunk, as the driver
    seed = one_hot_seed(targets, list(range(T)), T, model.num_classes, xp=xp, dtype=model.dtype)  # (K, T, C)
    pts.add("seed", seed, k=True)
    if method != "cEB":
        _cnn_backward(model, records, chunks, seed, mode, top, readout, pts)
        return pts.values
    fc = top - 1  # the classifier's index: cEB contrasts at its input, without normalisation
    pts.add(f"signal/{model.layer_names[fc]}", seed, k=True)
    pos, neg = [], []
    for c, (a, b) in enumerate(chunks):
        head = records[c][fc:]  # the classifier's record
        pos.append(run_eb(head, seed[:, a:b]).p)  # (K, n, D)
        neg.append(run_eb(_with_negated_classifier(model, head, memo), seed[:, a:b]).p)  # eqs. 2, 4
    pos, neg = xp.concatenate(pos, axis=1), xp.concatenate(neg, axis=1)  # (K, T, D)
    pts.add("classifier/positive", pos, k=True)
    pts.add("classifier/dual", neg, k=True)
    _cnn_backward(model, [r[:fc] for r in records], chunks, contrast(pos, neg), mode, fc, readout, pts)
    return pts.values


def trace_caption(
    model,
    clip,
    words,
    *,
    caption=None,
    method="cEB-R",
    layer=None,
    lstm_rule="caffe",
    max_len=30,
    dtype=None,
    chunk_size="auto",
    allow_tanh_eb=False,
):
    """Every named point of one :func:`~ebr_ref.grounding.ground_caption.ground_caption` call (module notes).

    Parameters
    ----------
    model, clip, words, caption, method, lstm_rule, max_len, dtype, chunk_size, allow_tanh_eb
        As :func:`~ebr_ref.grounding.ground_caption.ground_caption` (the fused
        read-out is off).
    layer : str, optional
        Where ``maps`` and ``evidence`` are read, as for :func:`trace`.

    Returns
    -------
    dict of str to ndarray
        Every point, in computation order. The decoder's steps ``S`` (the
        caption's words, then ``<eos>``) take the place of the frames in its
        names; ``tokens (S,)`` is the caption's token ids followed by ``<eos>``.
    """
    if method not in CAPTION_METHODS:
        raise ValueError(
            f"unknown method {method!r} for caption grounding; expected one of {', '.join(CAPTION_METHODS)}"
        )
    check_lstm_rule(lstm_rule)
    if not isinstance(model, CaptionModel):
        raise TypeError(f"trace_caption needs a CaptionModel, got {type(model).__name__}")
    model, clip = prepare(model, clip, dtype)
    readout = _readout(model, layer)
    xp, top = model.xp, len(model.layers)
    r = -1 if readout is None else readout[0]
    queries = len(words) if isinstance(words, (list, tuple)) else 1
    chunk_size = resolve_chunk_size(chunk_size, model, r, queries)  # as the driver resolves "auto"
    frames = FrameCNN(model, clip, -1, chunk_size=chunk_size)
    v, pool_cache = model.pool_features(frames.forward())  # (D,)  as the driver's step 1
    if caption is None:
        words_of_caption = model.decode_features(v, max_len=max_len)[0].words
        if not words_of_caption:
            raise ValueError("the model's caption is empty (it emitted <eos> first): nothing to ground")
    else:
        words_of_caption = model.vocab.split(caption)
    items, query_steps, single = _queries(words, words_of_caption, model.vocab)
    ids = numpy.array(model.vocab.encode(words_of_caption) + [model.vocab.eos], dtype="int64")  # (S,)
    K, V = len(items), len(model.vocab)
    memo = weights_memo(frames.chunks, K)  # the driver's memo of the way back
    pts = _Points(single)
    records, _ = _cnn_forward(model, clip, frames.chunks, top, memo, pts)
    pts.add("forward/video", v)
    pts.add("tokens", ids)
    inputs = numpy.concatenate([[model.vocab.bos], ids[:-1]])[:, None]  # (S, 1)
    logits, dc = model.decoder_forward(v[None], xp.asarray(inputs))  # (S, 1, V)
    pts.add("forward/embed", dc.lstm1.x[:, 0])  # (S, E)
    pts.lstm_forward("lstm1", dc.lstm1, dc.lstm2.x[:, 0])
    pts.add("forward/lstm1", dc.lstm2.x[:, 0])  # (S, H1)
    pts.lstm_forward("lstm2", dc.lstm2, dc.predict.x)
    pts.add("forward/lstm2", dc.predict.x)  # (S, H2)
    pts.add("forward/predict", logits[:, 0])
    pts.add("logits", logits[:, 0])  # (S, V)
    pts.add("probs", softmax(logits[:, 0]))
    seed = _word_seed(query_steps, ids, V, dtype=model.dtype, device=model.device)  # (K, S, 1, V)
    pts.add("seed", seed[:, :, 0], k=True)

    def to_frames(p_video):  # (K, 1, D) -> (K, T, D), as the driver
        if pool_cache is None:
            return p_video
        return (temporal_mean_grad if method == "BP-R" else temporal_mean_eb)(p_video[:, 0], pool_cache)

    if method == "BP-R":
        Map = to_frames(decoder_grad(seed, dc))  # (K, T, D)
        _decoder_grad_points(seed, dc, pts)
        pts.add("interface/positive", Map, k=True)
    else:

        def one_pass(negate):
            def run(sp, lp):
                sig = decoder_eb(seed, dc, rule=lstm_rule, negate=negate, allow_tanh=allow_tanh_eb)
                _decoder_points(sig, seed, dc, lstm_rule, allow_tanh_eb, sp, lp, pts)
                return to_frames(sig.p_video)  # (K, T, D)  P^t(a_i)

            return run

        Map = _normalised_passes(one_pass(False), one_pass(True), method == "cEB-R", pts)
    _cnn_backward(model, records, frames.chunks, Map, "grad" if method == "BP-R" else "eb", top, readout, pts)
    return pts.values


def readout_layer(model, layer):
    """The index of read-out layer ``layer`` in the per-frame part (``-1`` for ``"input"``).

    Raises
    ------
    ValueError
        For a layer the model does not have, or one that cannot be a read-out
        layer (in the sequence part, or the classifier's output), as the drivers.
    """
    if isinstance(model, CaptionModel):
        return model.index(layer)
    return _readout_index(model, layer)


def _readout(model, layer):
    """``(index, name)`` of the read-out layer (index ``-1`` for the pixels), or None when there is none."""
    if layer is None:
        layer = model.meta.get("readout", "conv5_1")
        if layer != "input" and layer not in model.layer_names:
            return None
    return readout_layer(model, layer), layer


def _cnn_forward(model, clip, chunks, stop, memo, pts):
    """Layers ``0 .. stop - 1`` chunk by chunk, one layer at a time, keeping ``forward/<layer>``.

    Returns ``records``, per chunk the ``(layer, cache)`` list of those layers
    (built with the call's ``memo``, as the driver's way back builds them), and
    ``outputs``, per chunk every layer's output.
    """
    records, outputs = [], []
    for a, b in chunks:
        x, rec, outs = clip[a:b], [], []
        for k in range(stop):
            x, r = model.stack.run_forward(x, k, k + 1, keep=True, memo=memo)
            rec += r
            outs.append(x)
        records.append(rec)
        outputs.append(outs)
    for k in range(stop):
        pts.add(f"forward/{model.layer_names[k]}", model.xp.concatenate([o[k] for o in outputs], axis=0))
    return records, outputs


def _sequence_backward(records, p, rule, allow_tanh, sp, lp, pts):
    """The sequence part from its top down to the interface, one layer at a time, keeping every point.

    ``rule`` is ``"grad"`` for BP-R, else the LSTM rule.
    ``sp``/``lp``: the prefixes of the signals (``signal``, ``signal_dual``) and
    of the LSTM's per-step quantities (``lstm``, ``lstm_dual``). Returns the
    signal at the interface ``(K, T, D)``.
    """
    pts.add(f"{sp}/{records[-1][0].name}", p, k=True)
    for i in range(len(records) - 1, -1, -1):
        layer, cache = records[i]
        if rule == "grad":
            p_in = run_grad(records[i : i + 1], p)
        else:
            p_in = run_eb(records[i : i + 1], p, lstm_rule=rule, allow_tanh_eb=allow_tanh).p
        if layer.type == "lstm":  # the kernel once more, for its per-step quantities (the same arithmetic)
            rec = {}
            if rule == "grad":
                lstm_grad(p[..., None, :], cache, record=rec)
            else:
                lstm_eb(p[..., None, :], cache, rule=rule, allow_tanh=allow_tanh, record=rec)
            pts.lstm_backward(f"{lp}/{layer.name}", rec, rule)
        if i > 0:
            pts.add(f"{sp}/{records[i - 1][0].name}", p_in, k=True)
        p = p_in
    if rule == "grad":
        pts.add("interface/positive", p, k=True)
    return p  # (K, T, D)


def _normalised_passes(positive, dual, contrastive, pts):
    """Eqs. 5-7 on the passes ``positive(sp, lp)`` and ``dual(sp, lp)``: the ``Map`` at the interface."""
    P = positive("signal", "lstm")  # (K, T, D)  P^t(a_i)
    pts.add("interface/positive", P, k=True)
    P_N, totals = normalise_by_total(P)  # eq. 5
    pts.add("totals/positive", totals, k=True)
    pts.add("normalised/positive", P_N, k=True)
    if not contrastive:
        return P_N  # EB-R continues with P_N
    P_dual = dual("signal_dual", "lstm_dual")  # the classifier's weights negated, eqs. 2, 4
    pts.add("interface/dual", P_dual, k=True)
    P_N_dual, totals_dual = normalise_by_total(P_dual)  # eq. 6
    pts.add("totals/dual", totals_dual, k=True)
    pts.add("normalised/dual", P_N_dual, k=True)
    return contrast(P_N, P_N_dual)  # eq. 7


def _cnn_backward(model, records, chunks, p, mode, top, readout, pts):
    """The signal ``p (K, T, ...)`` at the output of layer ``top - 1`` down to the pixels, chunk by chunk.

    Keeps ``signal/<layer>`` for every layer below (``signal/input`` last) and,
    at the read-out layer, ``maps`` and ``evidence`` as the driver sums them.
    """
    xp = model.xp
    got = {k: [] for k in range(-1, top)}  # k: the signal at layer k's output, per chunk
    for c, (a, b) in enumerate(chunks):
        q = p[:, a:b]  # (K, n, ...)
        got[top - 1].append(q)
        for k in range(top - 1, -1, -1):
            rec = records[c][k : k + 1]
            q = run_grad(rec, q) if mode == "grad" else run_eb(rec, q).p
            got[k - 1].append(q)
    for k in range(top - 1, -2, -1):
        name = "input" if k < 0 else model.layer_names[k]
        pts.add(f"signal/{name}", xp.concatenate(got[k], axis=1), k=True)
        if readout is not None and readout[0] == k:
            maps = xp.concatenate([channel_sum(q) for q in got[k]], axis=1)  # (K, T, h, w) or (K, T, D)
            pts.add("maps", maps, k=True)
            pts.add("evidence", frame_evidence(maps), k=True)


def _decoder_points(sig, seed, dc, rule, allow_tanh, sp, lp, pts):
    """The named points of one decoder EB pass (:func:`decoder_eb`), with its LSTMs' per-step quantities."""
    pts.add(f"{sp}/predict", seed[:, :, 0], k=True)  # (K, S, V)
    pts.add(f"{sp}/lstm2", sig.p_h[:, :, 0], k=True)  # (K, S, H2)
    rec = {}
    lstm_eb(sig.p_h, dc.lstm2, rule=rule, allow_tanh=allow_tanh, record=rec)
    pts.lstm_backward(f"{lp}/lstm2", rec, rule)
    if dc.static_layer == "lstm2":
        pts.add(f"{sp}/video", sig.p_video[:, 0], k=True)  # (K, D)
    pts.add(f"{sp}/lstm1", sig.p_x2[:, :, 0], k=True)  # (K, S, H1)
    rec = {}
    sig1 = lstm_eb(sig.p_x2, dc.lstm1, rule=rule, allow_tanh=allow_tanh, record=rec)
    pts.lstm_backward(f"{lp}/lstm1", rec, rule)
    if dc.static_layer == "lstm1":
        pts.add(f"{sp}/video", sig.p_video[:, 0], k=True)
    pts.add(f"{sp}/embed", sig1.p_x[:, :, 0], k=True)  # (K, S, E)
    pts.add(f"{sp}/words", sig.p_words[:, :, 0], k=True)  # (K, S)


def _decoder_grad_points(seed, dc, pts):
    """The named points of the decoder's gradient (BP-R), through the kernels :func:`decoder_grad` calls."""
    K, S, N, V = seed.shape
    pts.add("signal/predict", seed[:, :, 0], k=True)
    g_h = linear_grad(seed.reshape(K, S * N, V), dc.predict).reshape(K, S, N, -1)  # (K, S, 1, H2)
    pts.add("signal/lstm2", g_h[:, :, 0], k=True)
    rec = {}
    gr2 = lstm_grad(g_h, dc.lstm2, record=rec)
    pts.lstm_backward("lstm/lstm2", rec, "grad")
    pts.add("signal/lstm1", gr2.g_x[:, :, 0], k=True)
    rec = {}
    gr1 = lstm_grad(gr2.g_x, dc.lstm1, record=rec)
    pts.lstm_backward("lstm/lstm1", rec, "grad")
    pts.add("signal/embed", gr1.g_x[:, :, 0], k=True)
    pts.add("signal/video", (gr2 if dc.static_layer == "lstm2" else gr1).g_static[:, 0], k=True)
