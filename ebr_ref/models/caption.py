"""The video captioning model of paper §4.2: frames -> CNN to fc7 -> mean over time ->
two-layer LSTM -> words.

Structure (Venugopalan et al. NAACL 2015, the model grounded in paper §4.2 and §6)::

    x_t  = CNN(frame_t)                       (T_v, D)   frame part: a layer list as in ebr_ref.models
    v    = (1 / T_v) sum_t x_t                (D,)       mean over time (pool="mean"); the frame itself
                                                          for an image model (pool=None, one frame)
    e_s  = W_emb[w_{s-1}]                     (S, E)     w_{-1} = <bos>, then the previous word
    h1_s = LSTM1(e_s [, static v])            (S, H1)    lstm1
    h2_s = LSTM2(h1_s [, static v])           (S, H2)    lstm2
    y_s  = W_out h2_s + b_out                 (S, V)     predict: logits over the vocabulary

The video feature enters exactly one LSTM layer, ``static_layer`` ("lstm1" or
"lstm2"), as Caffe's static input ``W_xc_static`` (``W_s`` in
:class:`~ebr_ref.layers.lstm.LSTMParams`): added to that layer's gates at every
step, without bias. The decoder always starts from a zero state (``cont = 0``
at step 0). Dropout layers of the training-time decoder are identities at
inference and are not represented.

Parameters (canonical names): the frame part's (``conv1.weight``, ``fc7.bias``,
...), then ``embed.weight (V, E)``, ``lstm1.W_x (4H1, E)``, ``lstm1.b``,
``lstm1.W_h``, ``lstm2.W_x (4H2, H1)``, ``lstm2.b``, ``lstm2.W_h``, the static
weights ``<static_layer>.W_s (4H, D)``, and ``predict.weight (V, H2)``,
``predict.bias (V,)``. Gate blocks in :data:`~ebr_ref.layers.lstm.GATE_ORDER`.

Vocabulary: token 0 is ``<bos>`` (the first step's input, never emitted: greedy
decoding excludes it from the argmax), token 1 is ``<eos>`` (ends a caption);
words follow. A caption is a list of words without either.

Files: :func:`save_captioner` / :func:`load_captioner` write and read the
canonical format of :mod:`ebr_ref.models.io` (``.npz`` plus JSON sidecar,
sha256-verified) with ``"kind": "captioner"``, the vocabulary and the decoder
settings in the sidecar; numpy and the standard library only.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy

from .. import backend
from ..layers.embedding import embedding_forward
from ..layers.linear import linear_forward
from ..layers.lstm import CELL_ACTS, lstm_forward
from ..layers.temporal_mean import temporal_mean_forward
from .io import read_canonical, read_sidecar, sidecar_path, write_canonical
from .model import softmax
from .ops import lstm_params
from .spec import infer_shapes, param_shapes
from .stack import LayerStack
from .zoo import as_layer, init_params, vgg16_body

__all__ = [
    "SPECIALS",
    "STATIC_LAYERS",
    "POOLS",
    "KIND",
    "Vocabulary",
    "CaptionModel",
    "DecoderCache",
    "Decoded",
    "decoder_param_shapes",
    "captioner",
    "small_captioner",
    "vgg16_captioner",
    "save_captioner",
    "load_captioner",
]

SPECIALS = ("<bos>", "<eos>")
STATIC_LAYERS = ("lstm1", "lstm2")
POOLS = ("mean", None)
KIND = "captioner"
DECODER_LAYERS = ("embed", "lstm1", "lstm2", "predict")


class Vocabulary:
    """Tokens <-> indices: ``<bos>`` = 0, ``<eos>`` = 1, then the words in the given order.

    Parameters
    ----------
    words : sequence of str
        The words (no duplicates, no whitespace, not a special token).
    """

    bos = 0
    eos = 1

    def __init__(self, words):
        words = tuple(words)
        for w in words:
            if not isinstance(w, str) or not w or w != w.strip() or len(w.split()) != 1:
                raise ValueError(
                    f"vocabulary: a word must be a non-empty string without whitespace, got {w!r}"
                )
            if w in SPECIALS:
                raise ValueError(f"vocabulary: {w!r} is a special token; give only the words")
        dup = sorted({w for w in words if words.count(w) > 1})
        if dup:
            raise ValueError(f"vocabulary: duplicate word(s) {', '.join(dup)}")
        self.tokens = SPECIALS + words
        self._index = {t: k for k, t in enumerate(self.tokens)}

    @classmethod
    def from_tokens(cls, tokens):
        """Inverse of :attr:`tokens` (the specials first)."""
        tokens = tuple(tokens)
        if tokens[:2] != SPECIALS:
            raise ValueError(f"vocabulary: tokens must start with {SPECIALS}, got {tokens[:2]}")
        return cls(tokens[2:])

    @property
    def words(self):
        return self.tokens[2:]

    def __len__(self):
        return len(self.tokens)

    def __contains__(self, word):
        return word in self._index

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and other.tokens == self.tokens

    def __repr__(self):
        return f"Vocabulary({len(self.words)} words)"

    def index(self, word) -> int:
        """The index of ``word`` (a special token included)."""
        try:
            return self._index[word]
        except (KeyError, TypeError):
            raise ValueError(f"word {word!r} is not in the vocabulary ({len(self.words)} words)") from None

    def split(self, caption):
        """A caption (a string of space-separated words, or a sequence of words) as a list of words.

        Raises ``ValueError`` for an empty caption, a special token inside it or a word
        not in the vocabulary (naming it).
        """
        words = caption.split() if isinstance(caption, str) else list(caption)
        if not words:
            raise ValueError("empty caption: give at least one word")
        for w in words:
            if w in SPECIALS:
                raise ValueError(f"caption contains the special token {w!r}; give the words only")
            self.index(w)
        return words

    def encode(self, caption):
        """Word indices of a caption (no ``<bos>``, no ``<eos>``)."""
        return [self._index[w] for w in self.split(caption)]

    def decode(self, ids):
        """Words of the indices ``ids``, stopping before the first ``<eos>``; ``<bos>`` is skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i != self.bos:
                out.append(self.tokens[i])
        return out


class DecoderCache(NamedTuple):
    """Caches of the decoder's kernels (one forward over ``S`` steps and ``N`` videos)."""

    embed: object  # EmbeddingCache: ids (S, N), table (V, E)
    lstm1: object  # LSTMCache of lstm1 (x = embedded words (S, N, E))
    lstm2: object  # LSTMCache of lstm2 (x = h1 (S, N, H1))
    predict: object  # LinearCache of predict (x = h2 as (S N, H2))
    static_layer: str  # which LSTM received the video feature


class Decoded(NamedTuple):
    """One greedily decoded (or forced) caption."""

    words: list  # the caption, no <bos>/<eos>
    ids: object  # (S,) int64 token emitted (or forced) at each step: the words, then <eos> if reached
    logits: object  # (S, V) decoder outputs per step
    probs: object  # (S, V) softmax of the logits
    ended: bool  # True when <eos> was emitted (or appended to a forced caption)


def decoder_param_shapes(V, E, H1, H2, D, static_layer):
    """``{param name: shape}`` of the decoder (vocabulary size ``V``, video feature size ``D``)."""
    if static_layer not in STATIC_LAYERS:
        raise ValueError(f"static_layer must be one of {STATIC_LAYERS}, got {static_layer!r}")
    shapes = {
        "embed.weight": (V, E),
        "lstm1.W_x": (4 * H1, E),
        "lstm1.b": (4 * H1,),
        "lstm1.W_h": (4 * H1, H1),
        "lstm2.W_x": (4 * H2, H1),
        "lstm2.b": (4 * H2,),
        "lstm2.W_h": (4 * H2, H2),
        "predict.weight": (V, H2),
        "predict.bias": (V,),
    }
    H = H1 if static_layer == "lstm1" else H2
    shapes[f"{static_layer}.W_s"] = (4 * H, D)
    return shapes


def _sizes_from(params):
    """``(E, H1, H2)`` read from the decoder's parameters."""
    try:
        E = params["embed.weight"].shape[1]
        H1 = params["lstm1.W_h"].shape[1]
        H2 = params["lstm2.W_h"].shape[1]
    except KeyError as e:
        raise ValueError(f"captioner: parameter {e.args[0]} missing") from None
    return int(E), int(H1), int(H2)


class CaptionModel:
    """A video (or image) captioning model: a frame CNN, a pooling over time and a two-layer LSTM decoder.

    Parameters
    ----------
    frame_layers : sequence of Layer
        The frame part, input pixels to the video feature (fc7); its last output
        must be flat ``(D,)``. No ``lstm`` layers.
    params : dict of str to array
        Canonical names (module docstring), one backend and one floating dtype.
    vocab : Vocabulary
    input_shape : tuple
        ``(C, H, W)`` of one preprocessed frame.
    static_layer : {"lstm1", "lstm2"}
        The LSTM layer that receives the video feature as its static input.
    pool : {"mean", None}
        ``"mean"``: the video feature is the mean of the frames' features. None:
        an image model; clips must have one frame, whose feature is used as is.
    cell_act : {"relu", "tanh"}
        The LSTMs' cell nonlinearity (the paper's models: ReLU).
    meta : dict, optional
        Travels with the model (``name``, ``readout``, ``preprocessing``...).

    Attributes
    ----------
    layers : tuple of Layer
        The frame part only (the decoder has a fixed structure).
    stack : LayerStack
        The frame part with the parameters: what runs it, frame by frame.
    shapes : list of tuple
        Per-sample output shape of every layer of the frame part.
    params, vocab, input_shape, static_layer, pool, cell_act, meta, dtype, xp
    feature_dim : int
        ``D``, the video feature's size.
    embed_dim, hidden : int, (int, int)
        ``E`` and ``(H1, H2)``.
    """

    def __init__(
        self,
        frame_layers,
        params,
        vocab,
        *,
        input_shape,
        static_layer="lstm2",
        pool="mean",
        cell_act="relu",
        meta=None,
    ):
        self.layers = tuple(frame_layers)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.meta = dict(meta or {})
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"captioner: vocab must be a Vocabulary, got {type(vocab).__name__}")
        if static_layer not in STATIC_LAYERS:
            raise ValueError(f"captioner: static_layer must be one of {STATIC_LAYERS}, got {static_layer!r}")
        if pool not in POOLS:
            raise ValueError(f"captioner: pool must be 'mean' or None, got {pool!r}")
        if cell_act not in CELL_ACTS:
            raise ValueError(f"captioner: cell_act must be one of {CELL_ACTS}, got {cell_act!r}")
        self.vocab, self.static_layer, self.pool, self.cell_act = vocab, static_layer, pool, cell_act
        names = [layer.name for layer in self.layers]
        if not self.layers:
            raise ValueError("captioner: the frame part has no layers")
        dup = sorted({n for n in names if names.count(n) > 1 or n in DECODER_LAYERS})
        if dup:
            raise ValueError(
                f"captioner: duplicate or reserved layer name(s) {', '.join(dup)} "
                f"(the decoder uses {', '.join(DECODER_LAYERS)})"
            )
        if any(layer.type == "lstm" for layer in self.layers):
            raise ValueError(
                "captioner: the frame part cannot contain an lstm layer (the decoder is separate)"
            )
        shapes = infer_shapes(self.layers, self.input_shape)
        if len(shapes[-1]) != 1:
            raise ValueError(
                f"captioner: the frame part must end with a flat feature (D,), got {shapes[-1]} "
                f"from layer {names[-1]!r}"
            )
        self.feature_dim = int(shapes[-1][0])
        params = dict(params)
        E, H1, H2 = _sizes_from(params)
        expected = param_shapes(self.layers, self.input_shape)
        expected.update(decoder_param_shapes(len(vocab), E, H1, H2, self.feature_dim, static_layer))
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        if missing or extra:
            raise ValueError(f"captioner: parameters missing {missing}, unexpected {extra}")
        for k, shape in expected.items():
            if tuple(params[k].shape) != shape:
                raise ValueError(
                    f"captioner: parameter {k} has shape {tuple(params[k].shape)}, expected {shape}"
                )
        self.xp = backend.get_xp(*params.values())
        dtypes = {numpy.dtype(v.dtype) for v in params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
            raise TypeError(
                f"captioner: parameters must share one floating dtype, found {sorted(map(str, dtypes))}"
            )
        self.params = params
        self.dtype = next(iter(dtypes))
        self.embed_dim, self.hidden = E, (H1, H2)
        self.stack = LayerStack(
            self.layers, params, input_shape=self.input_shape, shapes=shapes, dtype=self.dtype, xp=self.xp
        )
        self.shapes = self.stack.shapes

    # ---- structure (the frame part) ---------------------------------------------------------
    @property
    def layer_names(self):
        return self.stack.layer_names

    @property
    def device(self) -> str:
        return self.stack.device

    @property
    def sequence_start(self) -> int:
        """Every layer of the frame part runs per frame (as the CNN part of a :class:`Model`)."""
        return len(self.layers)

    def index(self, name: str) -> int:
        """Position of layer ``name`` of the frame part; ``-1`` for ``"input"``."""
        return self.stack.index(name)

    # ---- conversions ---------------------------------------------------------------------------
    def _with_params(self, params):
        return CaptionModel(
            self.layers,
            params,
            self.vocab,
            input_shape=self.input_shape,
            static_layer=self.static_layer,
            pool=self.pool,
            cell_act=self.cell_act,
            meta=self.meta,
        )

    def astype(self, dtype):
        """A new model with every parameter cast to ``dtype`` (float32 or float64)."""
        dtype = numpy.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"model dtype must be floating, got {dtype}")
        return self._with_params({k: v.astype(dtype) for k, v in self.params.items()})

    def to(self, device: str):
        """A new model with its parameters on ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy)."""
        return self._with_params({k: backend.to_device(v, device) for k, v in self.params.items()})

    # ---- forward -------------------------------------------------------------------------------
    def check_clip(self, clip):
        """Validate a preprocessed clip ``(T, C, H, W)``; an image model (``pool=None``) takes one frame."""
        self.stack.check_clip(clip)
        if self.pool is None and clip.shape[0] != 1:
            raise ValueError(
                f"this captioner has no pooling over time (an image model): give one frame, got "
                f"{clip.shape[0]}"
            )

    def features(self, clip, *, chunk_size=16):
        """The frame part's output for every frame, ``(T, D)``, run ``chunk_size`` frames at a time."""
        self.check_clip(clip)
        T = clip.shape[0]
        out = [
            self.stack.run_forward(clip[a : a + chunk_size], 0, len(self.layers))[0]
            for a in range(0, T, chunk_size)
        ]
        return self.xp.concatenate(out, axis=0)

    def pool_features(self, feats):
        """The video feature ``(D,)`` of the frames' features ``(T, D)``, and the pooling cache (None if no
        pooling)."""
        if self.pool is None:
            if feats.shape[0] != 1:
                raise ValueError(f"an image captioner takes one frame, got {feats.shape[0]}")
            return feats[0], None
        return temporal_mean_forward(feats)

    def video_feature(self, clip, *, chunk_size=16):
        """The pooled video feature ``(D,)`` of a preprocessed clip."""
        return self.pool_features(self.features(clip, chunk_size=chunk_size))[0]

    def decoder_forward(self, v, ids):
        """Run the decoder over given input tokens.

        Parameters
        ----------
        v : array of shape (N, D)
            Video features.
        ids : integer array of shape (S, N)
            Input token of every step (``<bos>``, then the previous words).

        Returns
        -------
        logits : array of shape (S, N, V)
        cache : DecoderCache
        """
        if v.ndim != 2 or v.shape[1] != self.feature_dim:
            raise ValueError(f"decoder: v must be (N, {self.feature_dim}), got shape {tuple(v.shape)}")
        if ids.ndim != 2 or ids.shape[1] != v.shape[0]:
            raise ValueError(
                f"decoder: ids must be (S, N) with N = {v.shape[0]}, got shape {tuple(ids.shape)}"
            )
        if ids.shape[0] == 0:
            raise ValueError("decoder: no steps to run (S = 0)")
        S, N = ids.shape
        e, c_e = embedding_forward(ids, self.params["embed.weight"])  # (S, N, E)
        s1 = v if self.static_layer == "lstm1" else None
        s2 = v if self.static_layer == "lstm2" else None
        P = self.params
        h1, c_1 = lstm_forward(e, lstm_params(P, "lstm1"), static=s1, cell_act=self.cell_act)  # (S, N, H1)
        h2, c_2 = lstm_forward(h1, lstm_params(P, "lstm2"), static=s2, cell_act=self.cell_act)  # (S, N, H2)
        W = P["predict.weight"]  # (V, H2)
        y, c_p = linear_forward(
            h2.reshape(S * N, -1), W, P["predict.bias"], W_pos=self.xp.maximum(W, 0)
        )  # (S N, V)
        return y.reshape(S, N, -1), DecoderCache(c_e, c_1, c_2, c_p, self.static_layer)

    def _greedy(self, v, max_len):
        """Greedy decoding of ``N`` videos step by step; returns ids ``(S, N)`` and logits ``(S, N, V)``."""
        xp, dt = self.xp, self.dtype
        N = v.shape[0]
        s1 = v if self.static_layer == "lstm1" else None
        s2 = v if self.static_layer == "lstm2" else None
        W, b = self.params["predict.weight"], self.params["predict.bias"]
        prev = xp.full((1, N), self.vocab.bos, dtype=xp.int64)
        state = [None, None, None, None]  # h1, c1, h2, c2
        done = numpy.zeros(N, dtype=bool)
        ids, logits = [], []
        for t in range(max_len):
            cont = xp.full((1, N), 0 if t == 0 else 1, dtype=dt)
            e, _ = embedding_forward(prev, self.params["embed.weight"])  # (1, N, E)
            h1, c_1 = lstm_forward(
                e,
                lstm_params(self.params, "lstm1"),
                cont=cont,
                static=s1,
                h0=state[0],
                c0=state[1],
                cell_act=self.cell_act,
            )
            h2, c_2 = lstm_forward(
                h1,
                lstm_params(self.params, "lstm2"),
                cont=cont,
                static=s2,
                h0=state[2],
                c0=state[3],
                cell_act=self.cell_act,
            )
            state = [h1[0], c_1.c[0], h2[0], c_2.c[0]]
            y = h2[0] @ W.T + b  # (N, V)
            masked = y.copy()
            masked[:, self.vocab.bos] = -numpy.inf  # <bos> is never emitted
            nxt = masked.argmax(axis=1)  # (N,)  first maximum on ties
            ids.append(nxt)
            logits.append(y)
            done |= backend.to_numpy(nxt == self.vocab.eos)
            if done.all():
                break
            prev = nxt[None].astype(xp.int64)
        return xp.stack(ids), xp.stack(logits)  # (S, N), (S, N, V)

    def decode_features(self, v, *, max_len=30):
        """Greedy captions of video features ``v (N, D)`` (or ``(D,)``): a list of :class:`Decoded`.

        At every step the emitted token is the argmax of the logits over every
        token but ``<bos>`` (the first maximum on ties); decoding stops at
        ``<eos>`` or after ``max_len`` steps (then the caption has ``max_len``
        words and ``ended`` is False).
        """
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len!r}")
        single = v.ndim == 1
        v = v[None] if single else v
        if v.ndim != 2 or v.shape[1] != self.feature_dim:
            raise ValueError(
                f"decode: v must be (N, {self.feature_dim}) or ({self.feature_dim},), got {tuple(v.shape)}"
            )
        ids, logits = self._greedy(v, int(max_len))
        ids, logits = backend.to_numpy(ids), backend.to_numpy(logits)
        out = []
        for n in range(v.shape[0]):
            seq = ids[:, n]
            ended = bool((seq == self.vocab.eos).any())
            S = int(numpy.argmax(seq == self.vocab.eos)) + 1 if ended else seq.shape[0]
            lg = logits[:S, n]
            out.append(
                Decoded(
                    self.vocab.decode(seq[:S]),
                    seq[:S].astype(numpy.int64),
                    lg,
                    backend.to_numpy(softmax(lg)),
                    ended,
                )
            )
        return out

    def force_features(self, v, caption):
        """The decoder's outputs along a given caption (paper §6: ground-truth captions are forced).

        Returns a :class:`Decoded` whose ``ids`` are the caption's words followed by
        ``<eos>``; ``logits`` and ``probs`` are the decoder's outputs at those
        ``len(caption) + 1`` steps (inputs ``<bos>``, then the caption's words).
        """
        words = self.vocab.split(caption)
        ids = numpy.array(self.vocab.encode(words) + [self.vocab.eos], dtype=numpy.int64)
        inputs = numpy.concatenate([[self.vocab.bos], ids[:-1]])[:, None]  # (S, 1)
        v = v[None] if v.ndim == 1 else v
        logits, _ = self.decoder_forward(v, self.xp.asarray(inputs))
        lg = backend.to_numpy(logits[:, 0])
        return Decoded(words, ids, lg, backend.to_numpy(softmax(lg)), True)

    def decode(self, clip, *, max_len=30, caption=None, chunk_size=16):
        """Greedy caption of a preprocessed clip ``(T, C, H, W)``, or the outputs along a forced
        ``caption``."""
        v = self.video_feature(clip, chunk_size=chunk_size)
        if caption is not None:
            return self.force_features(v, caption)
        return self.decode_features(v, max_len=max_len)[0]


# ---- builders ------------------------------------------------------------------------------------
def _as_vocab(vocab):
    return vocab if isinstance(vocab, Vocabulary) else Vocabulary(vocab)


def _init_decoder(shapes, rng):
    """Decoder parameters with the conventions of :func:`ebr_ref.models.zoo.init_params`."""
    out = {}
    for name, shape in shapes.items():
        field = name.rsplit(".", 1)[1]
        if field == "weight":
            out[name] = rng.normal(0.0, math.sqrt(2.0 / shape[1]), shape)
        elif field == "bias":
            out[name] = rng.normal(0.0, 0.01, shape)
        elif field in ("W_x", "W_h", "W_s"):
            out[name] = rng.uniform(-1.0, 1.0, shape) / math.sqrt(shape[0] // 4)
        else:  # "b"
            out[name] = numpy.zeros(shape)
    return out


def captioner(
    frame_layers,
    vocab,
    input_shape,
    *,
    embed=32,
    hidden=(64, 64),
    static_layer="lstm2",
    pool="mean",
    cell_act="relu",
    seed=None,
    params=None,
    meta=None,
):
    """Build a captioning model from a frame layer list.

    Parameters
    ----------
    frame_layers : sequence
        Items as for :func:`ebr_ref.models.sequential` (``Layer``, dict or
        ``(name, type[, settings])``), pixels to the flat video feature.
    vocab : Vocabulary or sequence of str
        The vocabulary, or its words.
    input_shape : tuple
        ``(C, H, W)``.
    embed : int
        Word embedding size ``E``.
    hidden : (int, int)
        Hidden sizes ``(H1, H2)`` of lstm1 and lstm2.
    static_layer, pool, cell_act
        As :class:`CaptionModel`.
    seed : int, optional
        Seed of the random initialisation (frame part as
        :func:`~ebr_ref.models.zoo.init_params`, then the decoder in the same
        conventions: weights He-normal, LSTM matrices uniform ``±1/sqrt(H)``,
        LSTM biases 0).
    params : dict, optional
        All parameters under canonical names (then ``embed``/``hidden`` are read from them).
    meta : dict, optional

    Returns
    -------
    CaptionModel
    """
    layers = [as_layer(item) for item in frame_layers]
    vocab = _as_vocab(vocab)
    if params is None:
        H1, H2 = (int(h) for h in hidden)
        seed = 0 if seed is None else seed
        params = init_params(layers, input_shape, seed)
        D = infer_shapes(layers, input_shape)[-1]
        if len(D) != 1:
            raise ValueError(f"captioner: the frame part must end with a flat feature (D,), got {D}")
        rng = numpy.random.default_rng(numpy.random.SeedSequence(seed).spawn(2)[1])
        params.update(
            _init_decoder(decoder_param_shapes(len(vocab), int(embed), H1, H2, D[0], static_layer), rng)
        )
    return CaptionModel(
        layers,
        params,
        vocab,
        input_shape=input_shape,
        static_layer=static_layer,
        pool=pool,
        cell_act=cell_act,
        meta=meta,
    )


def small_captioner(
    vocab,
    *,
    input_size=64,
    channels=(8, 16, 64),
    fc=64,
    global_pool="max",
    embed=32,
    hidden=(64, 64),
    static_layer="lstm2",
    pool="mean",
    cell_act="relu",
    seed=None,
    params=None,
    meta=None,
):
    """A small captioner for the synthetic videos (and tests).

    Frame part: ``conv1..convK`` (3x3, padding 1, ReLU, each followed by a 2x2
    max pool ``pool1..K``), then with ``global_pool`` ("max" or "avg") a pooling
    ``gpool`` over the whole remaining map (translation invariance: an object
    is recognised wherever it is), ``flatten``, ``fc6`` and ``fc7`` (``fc``
    units, ReLU ``relu6``/``relu7``); the video feature is relu7's output.
    Input ``(3, input_size, input_size)``, ``input_size`` a multiple of
    ``2 ** len(channels)``.
    """
    side = input_size // 2 ** len(channels)
    if side * 2 ** len(channels) != input_size or side < 1:
        raise ValueError(
            f"small_captioner: input_size must be a multiple of {2 ** len(channels)}, got {input_size}"
        )
    if global_pool not in ("max", "avg", None):
        raise ValueError(f"small_captioner: global_pool must be 'max', 'avg' or None, got {global_pool!r}")
    layers = []
    for k, width in enumerate(channels, start=1):
        layers += [
            (f"conv{k}", "conv", {"out_channels": int(width), "kernel": 3, "padding": 1}),
            (f"relu{k}", "relu"),
            (f"pool{k}", "maxpool", {"kernel": 2}),
        ]
    if global_pool is not None:
        layers.append(("gpool", f"{global_pool}pool", {"kernel": side}))
    layers += [
        ("flatten", "flatten"),
        ("fc6", "fc", {"out_features": int(fc)}),
        ("relu6", "relu"),
        ("fc7", "fc", {"out_features": int(fc)}),
        ("relu7", "relu"),
    ]
    meta = {"name": "small_captioner", "readout": f"conv{len(channels)}", **(meta or {})}
    return captioner(
        layers,
        vocab,
        (3, input_size, input_size),
        embed=embed,
        hidden=hidden,
        static_layer=static_layer,
        pool=pool,
        cell_act=cell_act,
        seed=seed,
        params=params,
        meta=meta,
    )


def vgg16_captioner(
    vocab,
    *,
    hidden=(1000, 1000),
    embed=1000,
    input_size=224,
    static_layer="lstm2",
    pool="mean",
    cell_act="relu",
    seed=None,
    params=None,
):
    """The captioner of paper §4.2 / §6 (Venugopalan et al. 2015): VGG16 to fc7, mean pool, two-layer LSTM.

    The frame part is VGG16 with Caffe's names up to ``drop7`` (its output, the
    4096-d fc7 feature after ReLU and inference dropout, is pooled); ``pool=None``
    gives the image model of §6 (Flickr30kEntities: the same model without the
    average pooling). Hidden and embedding sizes are parameters (the paper's
    model: 1000 and 1000).
    """
    return captioner(
        vgg16_body(input_size),
        vocab,
        (3, input_size, input_size),
        embed=embed,
        hidden=hidden,
        static_layer=static_layer,
        pool=pool,
        cell_act=cell_act,
        seed=seed,
        params=params,
        meta={"name": "vgg16_captioner", "readout": "conv5_1"},
    )


# ---- files ---------------------------------------------------------------------------------------
def save_captioner(model, path, *, meta=None):
    """Write a :class:`CaptionModel` as ``path`` (``.npz``) plus its JSON sidecar; return the sidecar dict.

    Written by :func:`ebr_ref.models.io.write_canonical` (format, version, gate
    order, sha256, the ``params`` listing of every array's shape and dtype), with
    ``"kind": "captioner"``, the input shape, the frame part's ``architecture``,
    ``vocabulary`` (every token, specials first), ``decoder`` (``embed``,
    ``hidden``, ``static_layer``, ``pool``, ``cell_act``) and meta.
    """
    return write_canonical(
        path,
        model.params,
        {
            "kind": KIND,
            "input_shape": list(model.input_shape),
            "architecture": [layer.to_dict() for layer in model.layers],
            "decoder": {
                "embed": model.embed_dim,
                "hidden": list(model.hidden),
                "static_layer": model.static_layer,
                "pool": model.pool,
                "cell_act": model.cell_act,
            },
            "vocabulary": list(model.vocab.tokens),
            "meta": {**model.meta, **(meta or {})},
        },
    )


def load_captioner(path, *, verify=True):
    """Read a captioner written by :func:`save_captioner` (``.npz`` + ``.json``), with ebr_ref alone.

    Raises
    ------
    FileNotFoundError
        When either file is missing.
    ValueError
        When the sidecar is not a canonical captioner sidecar, the sha256 differs
        or the parameters do not fit (naming the file and what differs).
    """
    side = read_sidecar(path)
    if side.get("kind") != KIND:
        raise ValueError(
            f"{sidecar_path(path)}: kind {side.get('kind')!r}, expected {KIND!r} "
            "(use ebr_ref.models.load_model for classifiers)"
        )
    params, side = read_canonical(path, kind=KIND, verify=verify)
    try:
        dec = side["decoder"]
        return captioner(
            side["architecture"],
            Vocabulary.from_tokens(side["vocabulary"]),
            tuple(side["input_shape"]),
            static_layer=dec["static_layer"],
            pool=dec["pool"],
            cell_act=dec["cell_act"],
            params=params,
            meta=side.get("meta", {}),
        )
    except KeyError as e:
        raise ValueError(f"{sidecar_path(path)}: missing field {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None
