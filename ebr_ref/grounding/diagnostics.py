"""The ``diagnostics`` dict of a grounding result, assembled in one place from the steps' return values.

The steps report what they computed (eq.-5 totals, mass lost per layer, the
LSTM kernel's balance, the decoder's account); the drivers hand those values
to :func:`action_diagnostics` or :func:`caption_diagnostics`, which build the
dict documented on :class:`~ebr_ref.grounding.ground.Grounding` and
:class:`~ebr_ref.grounding.ground_caption.CaptionGrounding`. Every number is a
Python float, a list of them or a NumPy ``(K,)`` vector (one entry per target).
"""

from __future__ import annotations

from .. import backend

__all__ = [
    "sum_mass",
    "lstm_accounting",
    "decoder_account",
    "decoder_layer_mass",
    "action_diagnostics",
    "caption_diagnostics",
]


def sum_mass(parts):
    """``{layer: summed mass lost}`` over several ``{layer: (K,)}`` dicts (chunks, or passes), in order.

    Layers keep the order in which they first appear (top first, as
    :func:`ebr_ref.models.stack.run_eb` reports them).
    """
    total = {}
    for part in parts:
        for name, lost in part.items():
            total[name] = total.get(name, 0.0) + lost  # (K,)
    return total


def lstm_accounting(res):
    """Totals of the LSTM kernel's mass accounting (rule ``"eb"``), as plain floats."""
    out = {}
    for name in ("p_h0", "p_c0", "lost"):
        v = getattr(res, name, None)
        if v is not None:
            out[name] = backend.to_numpy(v).tolist()
    return out


def _floats(v):
    return [float(a) for a in backend.to_numpy(v).reshape(-1)]


def decoder_account(sig, seed, p_frames):
    """Per-query totals of one EB pass through the caption decoder and the pooling (``N = 1``).

    Parameters
    ----------
    sig : DecoderSignals
        From :func:`ebr_ref.grounding.ground_caption.decoder_eb`.
    seed : array of shape (K, S, 1, V)
    p_frames : array of shape (K, T, D)
        The signal distributed to the frames by the pooling's EB rule.

    Returns
    -------
    dict
        ``seed``, ``video``, ``words``, ``words_per_step``, ``initial_state``,
        ``lost`` (per decoder layer), ``frames``, ``pool_lost``, ``word_share``;
        one entry per query.
    """
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
        "pool_lost": [a - b for a, b in zip(video, frames, strict=True)],
        "word_share": [
            w / (w + v) if (w + v) != 0 else float("nan") for w, v in zip(words, video, strict=True)
        ],
    }


def decoder_layer_mass(sig, seed, p_frames, static_layer):
    """``{layer: signal entering minus leaving}`` (``(K,)`` each) through the decoder and the pooling."""
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


def _totals_and_mass(mass_lost, totals, totals_dual, fused_layers):
    """The entries both drivers report: mass lost, eq.-5 totals, passes with a zero total, fused layers."""
    totals = [] if totals is None else [float(v) for v in totals]
    totals_dual = [] if totals_dual is None else [float(v) for v in totals_dual]
    zero = [
        {"pass": label, "target_index": k}
        for label, tots in (("positive", totals), ("dual", totals_dual))
        for k, v in enumerate(tots)
        if v == 0
    ]
    return {
        "mass_lost": {
            "positive": mass_lost.get("positive", {}),
            "dual": mass_lost.get("dual", {}),
            "cnn": mass_lost.get("cnn", {}),
        },
        "totals": totals,
        "totals_dual": totals_dual,
        "zero_totals": zero,
        "fused_readout": fused_layers,
    }


def action_diagnostics(
    *,
    method,
    lstm_rule,
    targets,
    layer,
    chunk_size,
    seed_steps,
    mass_lost,
    totals=None,
    totals_dual=None,
    fused_layers=None,
    readout_recomputed=None,
    lstm=None,
):
    """``Grounding.diagnostics`` of :func:`ebr_ref.grounding.ground.ground`.

    Parameters
    ----------
    method, lstm_rule, targets, layer, chunk_size, seed_steps
        As run (``lstm_rule`` None for a per-frame method; ``seed_steps`` the
        steps, or ``"every frame"``).
    mass_lost : dict
        ``{"positive", "dual", "cnn"}`` (missing parts are empty): ``{layer: (K,)}`` each.
    totals, totals_dual : ndarray of shape (K,), optional
        Eq.-5 grand totals of the positive and the dual pass (None: not normalised).
    fused_layers : list of str, optional
    readout_recomputed : bool, optional
        Recurrent methods only.
    lstm : list of LSTMSignals, optional
        The LSTM kernel's results of rule ``"eb"`` (positive pass, then dual).

    Returns
    -------
    dict
    """
    diag = {
        "method": method,
        "lstm_rule": lstm_rule,
        "targets": targets,
        "layer": layer,
        "chunk_size": int(chunk_size),
        **_totals_and_mass(mass_lost, totals, totals_dual, fused_layers),
        "seed_steps": seed_steps,
    }
    if readout_recomputed is not None:
        diag["readout_recomputed"] = readout_recomputed
    if lstm:
        diag["lstm"] = [lstm_accounting(res) for res in lstm]
    return diag


def caption_diagnostics(
    *,
    method,
    lstm_rule,
    caption,
    decoded,
    targets,
    layer,
    seed_steps,
    chunk_size,
    mass_lost,
    totals=None,
    totals_dual=None,
    fused_layers=None,
    decoder=None,
    decoder_dual=None,
    readout_recomputed,
):
    """``CaptionGrounding.diagnostics`` of :func:`ebr_ref.grounding.ground_caption.ground_caption`.

    As :func:`action_diagnostics`, plus ``caption`` (the words joined),
    ``decoded`` (``"greedy"`` or ``"forced"``) and ``decoder`` /
    ``decoder_dual`` (:func:`decoder_account` of each EB pass, when run).
    """
    diag = {
        "method": method,
        "lstm_rule": lstm_rule,
        "caption": caption,
        "decoded": decoded,
        "targets": targets,
        "layer": layer,
        "seed_steps": seed_steps,
        "chunk_size": int(chunk_size),
        **_totals_and_mass(mass_lost, totals, totals_dual, fused_layers),
    }
    if decoder is not None:
        diag["decoder"] = decoder
    if decoder_dual is not None:
        diag["decoder_dual"] = decoder_dual
    diag["readout_recomputed"] = readout_recomputed
    return diag
