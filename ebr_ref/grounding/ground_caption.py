"""Caption grounding (paper §4.2 and §6; SPEC §5 "Caption grounding"): cEB-R, EB-R and BP-R for a captioner.

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
   (chosen rule, SPEC §4) to the pooled video feature (the LSTM's static input);
   signal reaching the embedded input words leaves the visual path and is
   reported;
5. distribute the video feature's signal to the frames with the average-pool
   rule (SPEC §2: in proportion to each frame's activations, 0 where the sum is
   not positive), normalise by the grand total over frames and units (eq. 5);
   for cEB-R repeat 4-5 with the classifier's weights negated (eq. 6) and
   subtract (eq. 7);
6. continue EB down the CNN chunk by chunk to the read-out layer (eqs. 8-9).

BP-R replaces 4-6 by the gradient of the raw logit(s) (no normalisation). An
image captioner (``pool=None``) takes a one-frame clip through the same call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy

from .. import backend
from .drivers import Readout, check_fused_request, frame_chunks, is_int, normalise_total, prepare, weights_memo
from .ground import Grounding
from ..layers.embedding import embedding_eb
from ..layers.linear import linear_eb, linear_grad
from ..layers.lstm import lstm_eb, lstm_grad
from ..layers.temporal_mean import temporal_mean_eb, temporal_mean_grad
from ..models.caption import SPECIALS, CaptionModel
from ..models.model import softmax

__all__ = ["CaptionGrounding", "DecoderSignals", "ground_caption", "decoder_eb", "decoder_grad", "METHODS"]

METHODS = ("cEB-R", "EB-R", "BP-R")
LSTM_RULES = ("caffe", "eb")


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
    """Excitation backward through the captioning decoder, from the word logits to the video feature and the words.

    Parameters
    ----------
    seed : array of shape (K, S, N, V)
        Signals at the logits (one-hot seeds for grounding).
    cache : DecoderCache
        From :meth:`CaptionModel.decoder_forward`.
    rule : {"eb", "caffe"}
        The LSTM rule (SPEC §4), applied to both layers.
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
    c_p = cache.predict
    if negate:
        c_p = c_p._replace(W=-c_p.W, W_pos=xp.maximum(-c_p.W, 0))
    W_pos = c_p.W_pos if c_p.W_pos is not None else xp.maximum(c_p.W, 0)
    z = c_p.x @ W_pos.T  # (S N, V)  the classifier's normaliser, for the loss account
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
    """Gradient of ``<seed, logits>`` with respect to the video feature ``(K, N, D)`` (BP-R; recurrent paths kept)."""
    K, S, N, V = seed.shape
    g_h = linear_grad(seed.reshape(K, S * N, V), cache.predict).reshape(K, S, N, -1)  # (K, S, N, H2)
    gr2 = lstm_grad(g_h, cache.lstm2)
    gr1 = lstm_grad(gr2.g_x, cache.lstm1)
    return (gr2 if cache.static_layer == "lstm2" else gr1).g_static  # (K, N, D)


def _queries(words, caption, vocab):
    """``(items, steps per item, single)``: each query's seeded caption steps."""
    if words is None or isinstance(words, (bytes, dict)):
        raise TypeError(f"words must be a word, a phrase, a caption position or a list of them, got {words!r}")
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
                raise ValueError(f"caption position {pos} is out of range for the {len(caption)}-word caption {text!r}")
            steps.append([pos])
            continue
        if not isinstance(item, str):
            raise TypeError(f"a query must be a word, a phrase (words separated by spaces) or a caption position "
                            f"(int), got {item!r}")
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


def _floats(v):
    return [float(a) for a in backend.to_numpy(v).reshape(-1)]


def _account(sig, seed, p_frames):
    """Per-query totals of one EB pass through the decoder and the pooling (N = 1)."""
    video = _floats(sig.p_video.sum(axis=(1, 2)))
    words = _floats(sig.p_words.sum(axis=(1, 2)))
    frames = _floats(p_frames.sum(axis=(1, 2)))
    return {
        "seed": _floats(seed.sum(axis=(1, 2, 3))),
        "video": video,
        "words": words,
        "words_per_step": backend.to_numpy(sig.p_words[:, :, 0]).tolist(),
        "initial_state": _floats(sig.p_state[:, 0]),
        "lost": {k: _floats(v[:, 0]) for k, v in sig.lost.items()},
        "frames": frames,
        "pool_lost": [a - b for a, b in zip(video, frames)],
        "word_share": [w / (w + v) if (w + v) != 0 else float("nan") for w, v in zip(words, video)],
    }


def _layer_mass(sig, seed, p_frames, static_layer):
    """``{layer: signal entering minus leaving}`` (a ``(K,)`` vector each) through the decoder and the pooling."""
    K = seed.shape[0]

    def tot(a):
        return backend.to_numpy(a.reshape(K, -1).sum(axis=1))

    video = tot(sig.p_video)
    s2 = video if static_layer == "lstm2" else 0.0
    s1 = video if static_layer == "lstm1" else 0.0
    return {
        "predict": tot(seed) - tot(sig.p_h),
        "lstm2": tot(sig.p_h) - tot(sig.p_x2) - s2,
        "lstm1": tot(sig.p_x2) - tot(sig.p_words) - s1,
        "pool": video - tot(p_frames),
    }


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
    chunk_size=8,
    channel_maps=False,
    allow_tanh_eb=False,
    checkpoint_budget_bytes=1 << 30,
    fused_readout="auto",
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
        EB rule through both LSTMs (SPEC §4).
    max_len : int
        Longest greedy caption (steps).
    dtype : dtype, optional
        Run in this dtype instead of the model's.
    chunk_size : int
        Frames per CNN chunk.
    channel_maps : bool
        Also return the full per-channel signal at the read-out layer.
    allow_tanh_eb : bool
        Allow ``lstm_rule="eb"`` on tanh LSTMs.
    checkpoint_budget_bytes : int
        Keep the read-out layer's activations between the two CNN passes when
        they take at most this many bytes; otherwise recompute them.
    fused_readout : {"auto", True, False}
        As in :func:`ebr_ref.grounding.ground.ground` (its parameter of that name): fold the layers from the read-out
        layer up to the next max pooling into one matrix per frame when many
        queries make it cheaper.

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
        raise ValueError(f"unknown method {method!r} for caption grounding; expected one of {', '.join(METHODS)}")
    if lstm_rule not in LSTM_RULES:
        raise ValueError(f"unknown lstm_rule {lstm_rule!r}; expected 'caffe' or 'eb'")
    if not isinstance(model, CaptionModel):
        raise TypeError(f"ground_caption needs a CaptionModel (ebr_ref.models.caption), got {type(model).__name__}; "
                        "use ebr_ref.grounding.ground.ground for classifiers")
    fused_readout = check_fused_request(fused_readout, channel_maps)  # before any work
    model, clip = prepare(model, clip, dtype)
    model._check_frames(clip)
    if layer is None:
        layer = model.meta.get("readout", "conv5_1")
    r = model.index(layer)
    xp, T, s = model.xp, clip.shape[0], len(model.layers)
    chunks = frame_chunks(T, chunk_size)

    # 1. CNN forward in chunks: the video-feature layer's output of every frame, read-out kept if it fits.
    keep_readout = r >= 0 and numpy.prod(model.shapes[r]) * T * model.dtype.itemsize <= checkpoint_budget_bytes
    readout, feats = [], []
    for a, b in chunks:
        x_r, _ = model.run_forward(clip[a:b], 0, r + 1)
        if keep_readout:
            readout.append(x_r)
        feats.append(model.run_forward(x_r, r + 1, s)[0])
    feats = xp.concatenate(feats, axis=0)  # (T, D)
    v, pool_cache = model.pool_features(feats)  # (D,)

    # 2. The caption (greedy or forced) and the decoder's forward along it, keeping caches.
    if caption is None:
        decoded = model.decode_features(v, max_len=max_len)[0]
        if not decoded.words:
            raise ValueError("the model's caption is empty (it emitted <eos> first): nothing to ground; "
                             "pass caption=... to ground a given caption")
        cap = decoded.words
    else:
        cap = model.vocab.split(caption)
    items, steps, single = _queries(words, cap, model.vocab)
    ids = numpy.array(model.vocab.encode(cap) + [model.vocab.eos], dtype=numpy.int64)  # (S,) predicted tokens
    inputs = numpy.concatenate([[model.vocab.bos], ids[:-1]])[:, None]  # (S, 1)
    logits, dcache = model.decoder_forward(v[None], xp.asarray(inputs))  # (S, 1, V)
    probs = backend.to_numpy(softmax(logits[:, 0]))  # (S, V)
    K, S, V = len(items), ids.shape[0], len(model.vocab)
    seed_np = numpy.zeros((K, S, 1, V), dtype=model.dtype)
    for k, st in enumerate(steps):
        seed_np[k, st, 0, ids[st]] = 1.0
    seed = backend.to_device(seed_np, model.device)  # (K, S, 1, V)

    mode = "grad" if method == "BP-R" else "eb"
    leg = Readout.planned(model, r, K, mode, request=fused_readout, keep_channels=channel_maps)
    diag = {
        "method": method, "lstm_rule": lstm_rule if method != "BP-R" else None, "caption": " ".join(cap),
        "decoded": "forced" if caption is not None else "greedy", "targets": items, "layer": layer,
        "seed_steps": steps, "chunk_size": int(chunk_size),
        "mass_lost": {"positive": {}, "dual": {}, "cnn": {}}, "totals": [], "totals_dual": [], "zero_totals": [],
        "fused_readout": leg.fused_layers,
    }

    def to_frames(p_video):  # (K, 1, D) -> (K, T, D)
        if pool_cache is None:
            return p_video  # an image model: the one frame is the feature
        return (temporal_mean_grad if method == "BP-R" else temporal_mean_eb)(p_video[:, 0], pool_cache)

    # 3-5. Back through the decoder to the video feature, to the frames; eqs. 5-7.
    if method == "BP-R":
        p_int = to_frames(decoder_grad(seed, dcache))  # (K, T, D), no normalisation
    else:
        passes = [("positive", False)] + ([("dual", True)] if method == "cEB-R" else [])
        p_int = None
        for label, negate in passes:
            sig = decoder_eb(seed, dcache, rule=lstm_rule, negate=negate, allow_tanh=allow_tanh_eb)
            p_frames = to_frames(sig.p_video)  # (K, T, D)
            diag["decoder" if not negate else "decoder_dual"] = _account(sig, seed, p_frames)
            diag["mass_lost"][label] = _layer_mass(sig, seed, p_frames, model.static_layer)
            totals = diag["totals" if not negate else "totals_dual"]
            p_n = normalise_total(p_frames, True, xp, totals, diag["zero_totals"], label)
            p_int = p_n if p_int is None else p_int - p_n

    # 6. CNN part, chunk by chunk, from the read-out layer's activations to the video-feature layer and back.
    memo = weights_memo(chunks, K)
    for n, (a, b) in enumerate(chunks):
        x_r = readout[n] if keep_readout else (clip[a:b] if r < 0 else model.run_forward(clip[a:b], 0, r + 1)[0])
        _, cnn_steps = model.run_forward(x_r, r + 1, s, keep=True, memo=memo)
        leg(cnn_steps, p_int[:, a:b], diag["mass_lost"]["cnn"])
    diag["readout_recomputed"] = not keep_readout and r >= 0
    maps, evidence, p_read = leg.result()  # (K, T, ...), (K, T), (K, T, C, h, w) or None
    if single:
        maps, evidence, p_read = maps[0], evidence[0], None if p_read is None else p_read[0]
    return CaptionGrounding(
        maps=backend.to_numpy(maps),
        evidence=backend.to_numpy(evidence),
        probs=probs,
        targets=items,
        layer=layer,
        channel_maps=None if p_read is None else backend.to_numpy(p_read),
        diagnostics=diag,
        caption=list(cap),
        word_probs=probs[numpy.arange(S), ids],
        query_steps=steps,
    )
