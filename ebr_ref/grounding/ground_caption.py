"""Caption grounding (paper §4.2 and §6; docs/spec.md §5.8): cEB-R, EB-R and BP-R for a captioner.

One call of :func:`ground_caption` returns where (maps) and when (per-frame
evidence) a :class:`~ebr_ref.models.caption.CaptionModel` finds the evidence
for one or several words of a caption in a clip:

1. forward the CNN over the frames in chunks, keeping the video-feature layer's
   output of every frame (and the read-out layer's activations when they fit
   the memory budget); pool them over time;
2. decode a caption greedily, or take the given one (paper §6 forces the
   ground-truth caption), and run the decoder over it keeping every cache;
3. seed a raw 1 on the logit of each queried word at the step(s) where it was
   predicted (one signal per query, the steps of a query summed);
4. EB-R back through the vocabulary classifier, lstm2 and lstm1 through time
   (chosen rule, docs/spec.md §4) to the pooled video feature (the LSTM's static input);
   signal reaching the embedded input words leaves the visual path and is
   reported;
5. distribute the video feature's signal to the frames with the average-pool
   rule (docs/spec.md §2: in proportion to each frame's activations, 0 where the sum is
   not positive), normalise by the grand total over frames and units (eq. 5);
   for cEB-R repeat 4-5 with the classifier's weights negated (eqs. 2, 4, 6)
   and subtract (eq. 7);
6. continue EB down the CNN chunk by chunk to the read-out layer (eqs. 8-9).

The CNN part runs through a :class:`~ebr_ref.grounding.frame_cnn.FrameCNN` (steps
1 and 6), the arithmetic steps are those of :mod:`ebr_ref.grounding.algorithm`, as
for :func:`ebr_ref.grounding.ground.ground`. BP-R replaces 4-6 by the gradient of
the raw logit(s) (no normalisation). An image captioner (``pool=None``) takes a
one-frame clip through the same call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy

from .. import backend
from ..layers.embedding import embedding_eb
from ..layers.linear import linear_eb, linear_grad
from ..layers.lstm import lstm_eb, lstm_grad
from ..layers.temporal_mean import temporal_mean_eb, temporal_mean_grad
from ..models.caption import SPECIALS, CaptionModel
from ..models.model import softmax
from .algorithm import contrast, negate_classifier, normalise_by_total
from .diagnostics import caption_diagnostics, decoder_account, decoder_layer_mass
from .frame_cnn import FrameCNN, weights_memo
from .ground import Grounding, check_finite_result
from .inputs import (
    check_fused_switch,
    check_kernel_switch,
    check_lstm_rule,
    check_weights_cache,
    is_int,
    prepare,
)

__all__ = ["CaptionGrounding", "DecoderSignals", "ground_caption", "decoder_eb", "decoder_grad", "METHODS"]

METHODS = ("cEB-R", "EB-R", "BP-R")


@dataclass
class CaptionGrounding(Grounding):
    """The result of :func:`ground_caption`: a :class:`~ebr_ref.grounding.ground.Grounding` plus the caption.

    Attributes
    ----------
    maps, evidence, layer, channel_maps
        As :class:`~ebr_ref.grounding.ground.Grounding`, over the clip's ``T`` frames
        (``(K, T, ...)`` for a list of queries).
    probs : ndarray
        Word probabilities per decoder step ``(S, V)``, ``S = len(caption) + 1``:
        step ``s`` predicts ``caption[s]``, the last step ``<eos>``.
    targets : list
        The queries as given (words, phrases or caption positions).
    caption : list of str
        The grounded caption (decoded or forced).
    word_probs : ndarray
        ``(S,)``: the probability of ``caption[s]`` (then ``<eos>``) at step ``s``.
    query_steps : list of list of int
        The seeded steps of every query.
    diagnostics : dict
        ``method``, ``lstm_rule``, ``caption``, ``decoded`` (greedy or forced),
        ``seed_steps``, ``totals`` / ``totals_dual`` (eq.-5 grand totals per
        query), ``zero_totals``, ``mass_lost`` (``{"positive", "dual": {layer:
        signal entering minus leaving}, "cnn": ...}`` with the decoder's layers
        ``predict``, ``lstm2``, ``lstm1`` and the pooling ``pool``), ``decoder``
        and ``decoder_dual`` (per query: ``seed``, ``video``, ``words``,
        ``words_per_step``, ``initial_state``, ``lost`` per layer at zero
        denominators, ``frames``, ``pool_lost`` and ``word_share`` = words /
        (words + video), the share of the signal that left through the
        word-embedding path), ``chunk_size``.
    """

    caption: list = field(default_factory=list)
    word_probs: numpy.ndarray | None = None
    query_steps: list = field(default_factory=list)


class DecoderSignals(NamedTuple):
    """The result of :func:`decoder_eb`; arrays carry the leading ``K`` axis."""

    p_video: object  # (K, N, D)  signal at the video feature (the static input)
    p_h: object  # (K, S, N, H2)  signal at lstm2's hidden states (after the classifier)
    p_x2: object  # (K, S, N, H1)  signal at lstm2's inputs = lstm1's hidden states
    p_words: object  # (K, S, N)  signal that reached the embedded input word of every step
    p_state: object  # (K, N)  signal that reached the initial states of both LSTMs
    lost: dict  # {"predict", "lstm2", "lstm1"}: (K, N) signal dropped at zero denominators
    rule: str


def decoder_eb(seed, cache, *, rule, negate=False, allow_tanh=False):
    """Excitation backward through the captioning decoder, from the word logits to the video feature and
    the words.

    Parameters
    ----------
    seed : array of shape (K, S, N, V)
        Signals at the logits (one-hot seeds for grounding).
    cache : DecoderCache
        From :meth:`CaptionModel.decoder_forward`.
    rule : {"eb", "caffe"}
        The LSTM rule (docs/spec.md §4), applied to both layers.
    negate : bool
        Use the classifier's negated weights ``max(-W, 0)`` (the dual pass of eq. 6).
    allow_tanh : bool
        Allow ``rule="eb"`` with tanh cells.

    Returns
    -------
    DecoderSignals

    Notes
    -----
    ``predict`` takes the linear rule (``Z = W+ h2``, no bias); lstm2 receives
    ``P(h2)``; its input signal ``P(x2)`` is lstm1's ``P(h1)`` (a stacked LSTM
    composes with no special case); lstm1's input signal reaches the embedded
    words, which pass it whole to the word tokens (:func:`embedding_eb`). The
    video feature is the static input of one layer and receives that layer's
    ``p_static``. For ``rule="eb"`` the balance per query and video is exact:
    ``sum(seed) = sum(p_video) + sum(p_words) + p_state + sum(lost)``.
    """
    xp = backend.get_xp(seed, cache.predict.x)
    K, S, N, V = seed.shape
    c_p = negate_classifier(cache.predict) if negate else cache.predict  # eqs. 2, 4 for the dual pass
    if c_p.W_pos is None:
        c_p = c_p._replace(W_pos=xp.maximum(c_p.W, 0))  # (V, H2)  W+, formed once for z and the EB below
    z = c_p.x @ c_p.W_pos.T  # (S N, V)  the classifier's normaliser, for the loss account
    seed_flat = seed.reshape(K, S * N, V)
    lost_p = xp.where(z == 0, seed_flat, 0).reshape(K, S, N, V).sum(axis=(1, 3))  # (K, N)
    p_h = linear_eb(seed_flat, c_p).reshape(K, S, N, -1)  # (K, S, N, H2)
    sig2 = lstm_eb(p_h, cache.lstm2, rule=rule, allow_tanh=allow_tanh)  # p_x (K, S, N, H1)
    sig1 = lstm_eb(sig2.p_x, cache.lstm1, rule=rule, allow_tanh=allow_tanh)  # p_x (K, S, N, E)
    p_words = embedding_eb(sig1.p_x, cache.embed)  # (K, S, N)
    p_video = (sig2 if cache.static_layer == "lstm2" else sig1).p_static  # (K, N, D)
    p_state = sum(a.sum(axis=-1) for a in (sig1.p_h0, sig1.p_c0, sig2.p_h0, sig2.p_c0))  # (K, N)
    lost = {"predict": lost_p, "lstm2": sig2.lost.sum(axis=1), "lstm1": sig1.lost.sum(axis=1)}  # (K, N) each
    return DecoderSignals(p_video, p_h, sig2.p_x, p_words, p_state, lost, rule)


def decoder_grad(seed, cache):
    """Gradient of ``<seed, logits>`` with respect to the video feature ``(K, N, D)`` (BP-R; recurrent
    paths kept)."""
    K, S, N, V = seed.shape
    g_h = linear_grad(seed.reshape(K, S * N, V), cache.predict).reshape(K, S, N, -1)  # (K, S, N, H2)
    gr2 = lstm_grad(g_h, cache.lstm2)
    gr1 = lstm_grad(gr2.g_x, cache.lstm1)
    return (gr2 if cache.static_layer == "lstm2" else gr1).g_static  # (K, N, D)


def _queries(words, caption, vocab):
    """``(items, steps per item, single)``: each query's seeded caption steps."""
    if words is None or isinstance(words, (bytes, dict)):
        raise TypeError(
            f"words must be a word, a phrase, a caption position or a list of them, got {words!r}"
        )
    single = isinstance(words, str) or is_int(words)
    items = [words] if single else list(words)
    if not items:
        raise ValueError("words: an empty list of queries")
    text = " ".join(caption)
    steps = []
    for item in items:
        if is_int(item):
            pos = int(item)
            if not 0 <= pos < len(caption):
                raise ValueError(
                    f"caption position {pos} is out of range for the {len(caption)}-word caption {text!r}"
                )
            steps.append([pos])
            continue
        if not isinstance(item, str):
            raise TypeError(
                f"a query must be a word, a phrase (words separated by spaces) or a caption position "
                f"(int), got {item!r}"
            )
        toks = item.split()
        if not toks:
            raise ValueError("an empty word query")
        found = set()
        for w in toks:
            if w in SPECIALS:
                raise ValueError(f"cannot ground the special token {w!r}; query words of the caption")
            vocab.index(w)  # raises: not in the vocabulary
            occ = [t for t, c in enumerate(caption) if c == w]
            if not occ:
                raise ValueError(f"word {w!r} does not occur in the caption {text!r}")
            found.update(occ)
        steps.append(sorted(found))
    return items, steps, single


def ground_caption(
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
    channel_maps=False,
    allow_tanh_eb=False,
    checkpoint_budget_bytes=1 << 30,
    fused_readout="auto",
    fast_kernels=True,
    tf32=False,
    weights_cache=None,
):
    """Ground one or several words of a caption in a clip (paper §4.2, Fig. 3).

    Parameters
    ----------
    model : ebr_ref.models.caption.CaptionModel
    clip : array of shape (T, C, H, W)
        Preprocessed frames, floating point (one frame for an image captioner).
    words : str, int or sequence of them
        What to ground. A word seeds every step where the caption has it; a
        phrase (words separated by spaces, e.g. ``"red square"``) seeds the steps
        of all its words in one signal; an int is a caption position (0-based),
        to pick one occurrence. A list gives one result per item (``K`` stacked
        signals sharing the forward pass and every normaliser).
    caption : str or sequence of str, optional
        Ground this caption (forced through the decoder) instead of the greedy one.
    method : {"cEB-R", "EB-R", "BP-R"}
    layer : str, optional
        Read-out layer of the frame part, or ``"input"``; default the model's
        ``meta["readout"]``, else ``"conv5_1"``.
    lstm_rule : {"caffe", "eb"}
        EB rule through both LSTMs (docs/spec.md §4).
    max_len : int
        Longest greedy caption (steps).
    dtype : dtype, optional
        Run in this dtype instead of the model's.
    chunk_size : int or "auto"
        Frames per CNN chunk; ``"auto"`` (the default) as in
        :func:`ebr_ref.grounding.ground.ground`.
    channel_maps : bool
        Also return the full per-channel signal at the read-out layer.
    allow_tanh_eb : bool
        Allow ``lstm_rule="eb"`` on tanh LSTMs.
    checkpoint_budget_bytes : int
        Keep the read-out layer's activations between the two CNN passes when
        they take at most this many bytes; otherwise recompute them.
    fused_readout : {"auto", True, False}
        As in :func:`ebr_ref.grounding.ground.ground` (its parameter of that name): fold the
        layers from the read-out layer up to the next max pooling into one matrix per frame
        when many queries make it cheaper.
    fast_kernels : bool
        As in :func:`ebr_ref.grounding.ground.ground`: let the conv and fc kernels
        of the frame CNN take their own fast paths; False runs the reference kernels only.
    tf32 : bool
        As in :func:`ebr_ref.grounding.ground.ground`: float32 products in TF32 on a
        GPU; off by default (full float32).
    weights_cache : dict, optional
        As in :func:`ebr_ref.grounding.ground.ground`: ``max(W, 0)`` of the frame
        CNN's fc layers kept by the caller between calls.

    Returns
    -------
    CaptionGrounding

    Raises
    ------
    ValueError
        For an unknown method, rule or layer, a word not in the vocabulary, a
        word not in the caption, a special token, an empty caption (given, or
        decoded: the model emitted ``<eos>`` first) or a bad clip.
    TypeError
        For a model that is not a captioner, or a query of the wrong type.
    """
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r} for caption grounding; expected one of {', '.join(METHODS)}"
        )
    check_lstm_rule(lstm_rule)
    if not isinstance(model, CaptionModel):
        raise TypeError(
            f"ground_caption needs a CaptionModel (ebr_ref.models.caption), got {type(model).__name__}; "
            "use ebr_ref.grounding.ground.ground for classifiers"
        )
    switch = check_fused_switch(fused_readout, channel_maps)  # before any work
    fast = check_kernel_switch(fast_kernels)
    check_weights_cache(weights_cache)
    backend.check_matmul_precision(model.xp, model.dtype if dtype is None else dtype, tf32)  # before any work
    model, clip = prepare(model, clip, dtype)  # an image captioner takes one frame
    if layer is None:
        layer = model.meta.get("readout", "conv5_1")
    with backend.matmul_precision(model.xp, model.dtype, tf32=tf32):  # full float32 unless asked
        frames = FrameCNN(
            model,
            clip,
            model.index(layer),
            chunk_size=chunk_size,
            channel_maps=channel_maps,
            budget_bytes=checkpoint_budget_bytes,
            fast_kernels=fast,
            signals=len(words) if isinstance(words, (list, tuple)) else 1,  # the queries (for "auto")
        )
        xp = model.xp

        # 1. CNN forward in chunks to the video-feature layer, pooled over time.
        features = frames.forward()  # (T, D)
        v, pool_cache = model.pool_features(features)  # (D,)

        # 2. The caption (greedy or forced) and the decoder's forward along it, keeping caches.
        if caption is None:
            decoded = model.decode_features(v, max_len=max_len)[0]
            if not decoded.words:
                raise ValueError(
                    "the model's caption is empty (it emitted <eos> first): nothing to ground; "
                    "pass caption=... to ground a given caption"
                )
            words_of_caption = decoded.words
        else:
            words_of_caption = model.vocab.split(caption)
        items, query_steps, single = _queries(words, words_of_caption, model.vocab)
        ids = numpy.array(model.vocab.encode(words_of_caption) + [model.vocab.eos], dtype=numpy.int64)  # (S,)
        inputs = numpy.concatenate([[model.vocab.bos], ids[:-1]])[:, None]  # (S, 1)
        logits, dcache = model.decoder_forward(v[None], xp.asarray(inputs))  # (S, 1, V)
        probs = backend.to_numpy(softmax(logits[:, 0]))  # (S, V)

        # 3. Seed a raw 1 on each queried word at the steps where it was predicted.
        K, S = len(items), ids.shape[0]
        V = len(model.vocab)
        seed = _word_seed(query_steps, ids, V, dtype=model.dtype, device=model.device)  # (K, S, 1, V)
        mode = "grad" if method == "BP-R" else "eb"
        leg, fused_layers = frames.readout_leg(mode, K, switch)

        def to_frames(p_video):  # (K, 1, D) -> (K, T, D): the mean over time undone (docs/spec.md §2.4)
            if pool_cache is None:
                return p_video  # an image model: the one frame is the feature
            return (temporal_mean_grad if method == "BP-R" else temporal_mean_eb)(p_video[:, 0], pool_cache)

        # 4-5. Back through the decoder to the video feature, to the frames; eqs. 5-7.
        mass_lost, totals, totals_dual, account, account_dual = {}, None, None, None, None
        if method == "BP-R":
            Map = to_frames(decoder_grad(seed, dcache))  # (K, T, D)  the gradient; no normalisation
        else:
            positive = decoder_eb(seed, dcache, rule=lstm_rule, allow_tanh=allow_tanh_eb)
            p_frames = to_frames(positive.p_video)  # (K, T, D)  P^t(a_i)
            account = decoder_account(positive, seed, p_frames)
            mass_lost["positive"] = decoder_layer_mass(positive, seed, p_frames, model.static_layer)
            P_N, totals = normalise_by_total(p_frames)  # (K, T, D), (K,)  eq. 5
            Map = P_N  # EB-R continues with P_N (paper, after eq. 9)
            if method == "cEB-R":
                dual = decoder_eb(
                    seed, dcache, rule=lstm_rule, negate=True, allow_tanh=allow_tanh_eb
                )  # the negated classifier, eqs. 2, 4
                p_frames_dual = to_frames(dual.p_video)  # (K, T, D)
                account_dual = decoder_account(dual, seed, p_frames_dual)
                mass_lost["dual"] = decoder_layer_mass(dual, seed, p_frames_dual, model.static_layer)
                P_N_dual, totals_dual = normalise_by_total(p_frames_dual)  # (K, T, D), (K,)  eq. 6
                Map = contrast(P_N, P_N_dual)  # (K, T, D)  eq. 7

        # 6. CNN part, chunk by chunk, from the read-out activations to the video-feature layer and back.
        readout = frames.backward(
            Map, leg, memo=None if method == "BP-R" else weights_memo(frames.chunks, K, weights_cache)
        )  # maps (K, T, ...)
    mass_lost["cnn"] = readout.mass
    maps, evidence, channels = readout.maps, readout.evidence, readout.channels  # (K, T, ...), (K, T), ...
    if single:
        maps, evidence, channels = maps[0], evidence[0], None if channels is None else channels[0]
    return check_finite_result(
        CaptionGrounding(
            maps=backend.to_numpy(maps),
            evidence=backend.to_numpy(evidence),
            probs=probs,
            targets=items,
            layer=layer,
            channel_maps=None if channels is None else backend.to_numpy(channels),
            diagnostics=caption_diagnostics(
                method=method,
                lstm_rule=lstm_rule if method != "BP-R" else None,
                caption=" ".join(words_of_caption),
                decoded="forced" if caption is not None else "greedy",
                targets=items,
                layer=layer,
                seed_steps=query_steps,
                chunk_size=frames.chunk_size,
                mass_lost=mass_lost,
                totals=totals,
                totals_dual=totals_dual,
                fused_layers=fused_layers,
                decoder=account,
                decoder_dual=account_dual,
                readout_recomputed=frames.readout_recomputed,
            ),
            caption=list(words_of_caption),
            word_probs=probs[numpy.arange(S), ids],
            query_steps=query_steps,
        ),
        "ground_caption",
    )


def _word_seed(query_steps, ids, V, *, dtype, device):
    """Algorithm 1 step 1 for captions: ``seed[k, s, 0, ids[s]] = 1`` at each step ``s`` of query ``k``."""
    seed = numpy.zeros((len(query_steps), ids.shape[0], 1, V), dtype=dtype)  # (K, S, 1, V)
    for k, steps in enumerate(query_steps):
        seed[k, steps, 0, ids[steps]] = 1.0
    return backend.to_device(seed, device)
