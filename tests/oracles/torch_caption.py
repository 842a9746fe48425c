"""Float64 torch oracle of caption grounding (docs/spec.md §4, §5 "Caption grounding"; paper §4.2).

Independent of ``ebr_ref``: it reads only a captioner's frame layer list
(``layer.name``, ``layer.type``, ``layer.settings``), its parameter dict (NumPy
arrays under canonical names), ``static_layer``, ``pool``, ``cell_act`` and the
two special token indices, and recomputes with torch in float64, written from SPEC:

* frame CNN forward and EB per layer: the action-model oracle's layer functions
  (``tests/oracles/torch_ebr.py``, itself independent of ebr_ref);
* mean over time: ``v = mean_t x_t``; EB ``P(x_t) = x_t P(v) / sum_t x_t``, 0 where
  the sum is not positive (docs/spec.md §2 average pooling);
* decoder: embedding by indexing, two LSTMs unrolled by hand (gates i, f, o, g,
  a fresh state at step 0), the video feature added through ``W_s`` to the gates of
  the static layer, the classifier at every step;
* greedy decoding as the plainest loop: the whole decoder re-run on the prefix at
  every step, the argmax over every token but ``<bos>``;
* LSTM rule ``"caffe"``: autograd through the unrolled cell with the recurrent
  branch detached, the gate signal ``dz`` then pushed in full through ``W_x``
  (``Z = W_x+ x_t``) and in full through ``W_s`` (``Z = W_s+ s``, summed over steps);
* LSTM rule ``"eb"``: docs/spec.md §4's conserving rule step by step, the static input one
  more child of ``g_t``;
* BP-R: torch autograd of the raw seeded logits, read at the read-out layer's output.
"""

from __future__ import annotations

import torch

from .torch_ebr import _act, _eb_layer, _forward_layer, _lstm_unroll, _ratio, _tensor

__all__ = ["oracle_features", "oracle_decoder_logits", "oracle_greedy", "oracle_ground_caption"]


def _params(model):
    return {k: _tensor(v) for k, v in model.params.items()}


def _frame_acts(model, P, clip):
    acts = [clip]
    for lay in model.layers:
        acts.append(_forward_layer(lay, P, acts[-1], None))
    return acts


def _pool(model, feats):
    return feats.mean(dim=0) if model.pool == "mean" else feats[0]


def _lstm(P, name, x, s, act):
    """Hidden states (S, H) and the per-step tensors of an LSTM with optional static input ``s``."""
    zx = x @ P[f"{name}.W_x"].T + P[f"{name}.b"]
    if s is not None:
        zx = zx + s @ P[f"{name}.W_s"].T
    cont = torch.ones(x.shape[0], dtype=x.dtype)
    cont[0] = 0
    steps = _lstm_unroll(zx, P[f"{name}.W_h"], cont, act)
    return torch.stack([st["h"] for st in steps]), steps


def _decoder(model, P, v, inputs):
    """Logits (S, V) and the intermediate tensors, for input tokens ``inputs`` (list of int)."""
    act = _act(model.cell_act)
    e = P["embed.weight"][torch.tensor(inputs)]
    s1 = v if model.static_layer == "lstm1" else None
    s2 = v if model.static_layer == "lstm2" else None
    h1, st1 = _lstm(P, "lstm1", e, s1, act)
    h2, st2 = _lstm(P, "lstm2", h1, s2, act)
    logits = h2 @ P["predict.weight"].T + P["predict.bias"]
    return logits, dict(e=e, h1=h1, h2=h2, s1=s1, s2=s2, st1=st1, st2=st2)


def oracle_features(model, clip):
    """The pooled video feature (D,) as float64 NumPy."""
    P = _params(model)
    feats = _frame_acts(model, P, _tensor(clip))[-1]
    return _pool(model, feats).numpy()


def oracle_decoder_logits(model, clip, inputs):
    """Decoder logits (S, V) for the input tokens ``inputs``."""
    P = _params(model)
    v = _pool(model, _frame_acts(model, P, _tensor(clip))[-1])
    return _decoder(model, P, v, list(inputs))[0].numpy()


def oracle_greedy(model, clip, max_len, bos=0, eos=1):
    """Emitted token ids by the plainest greedy loop (the decoder re-run on the whole prefix each step)."""
    P = _params(model)
    v = _pool(model, _frame_acts(model, P, _tensor(clip))[-1])
    inputs, out = [bos], []
    for _ in range(max_len):
        last = _decoder(model, P, v, inputs)[0][-1].clone()
        last[bos] = -float("inf")
        nxt = int(torch.argmax(last))  # the first maximal value
        out.append(nxt)
        if nxt == eos:
            break
        inputs.append(nxt)
    return out


def _lstm_eb_caffe(P, name, x, s, p_h, act):
    W_x = P[f"{name}.W_x"]
    with torch.enable_grad():
        zin = x @ W_x.T + P[f"{name}.b"]
        if s is not None:
            zin = zin + s @ P[f"{name}.W_s"].T
        zin = zin.detach().requires_grad_(True)
        cont = torch.ones(x.shape[0], dtype=x.dtype)
        cont[0] = 0
        steps = _lstm_unroll(zin, P[f"{name}.W_h"], cont, act, detach_recurrent=True)
        h = torch.stack([st["h"] for st in steps])
        (dz,) = torch.autograd.grad(h, zin, grad_outputs=p_h)
    Wp = W_x.clamp(min=0)
    z = x @ Wp.T
    p_x = x * (_ratio(dz, z, z != 0) @ Wp)
    p_s = None
    if s is not None:
        Wsp = P[f"{name}.W_s"].clamp(min=0)
        zs = s @ Wsp.T
        p_s = s * (_ratio(dz.sum(dim=0), zs, zs != 0) @ Wsp)
    return p_x, p_s


def _lstm_eb_rule(P, name, x, s, p_h, act, steps):
    """docs/spec.md §4 rule "eb" with a static input: h -> c, c -> {c_prev, g}, g -> {x, h_prev, s}."""
    W_x, W_h = P[f"{name}.W_x"], P[f"{name}.W_h"]
    H = W_h.shape[1]
    Wxg, Whg = W_x[3 * H :].clamp(min=0), W_h[3 * H :].clamp(min=0)
    Wsg = P[f"{name}.W_s"][3 * H :].clamp(min=0) if s is not None else None
    p_x = torch.zeros_like(x)
    p_s = torch.zeros_like(s) if s is not None else None
    p_h_rec = torch.zeros(H, dtype=x.dtype)
    p_c_rec = torch.zeros(H, dtype=x.dtype)
    for t in reversed(range(x.shape[0])):
        st = steps[t]
        cont = 0.0 if t == 0 else 1.0
        ph = p_h[t] + p_h_rec
        pc = torch.where(act(st["c"]) != 0, ph, torch.zeros_like(ph)) + p_c_rec
        keep = cont * st["f"] * st["c_prev"]
        new = st["i"] * st["g"]
        den = keep + new
        q = _ratio(pc, den, den != 0)
        hp = cont * st["h_prev"]
        z = x[t] @ Wxg.T + hp @ Whg.T
        if s is not None:
            z = z + s @ Wsg.T
        r = _ratio(q * new, z, z != 0)
        p_x[t] = x[t] * (r @ Wxg)
        if s is not None:
            p_s = p_s + s * (r @ Wsg)
        p_h_rec = hp * (r @ Whg)
        p_c_rec = q * keep
    return p_x, p_s


def _decoder_eb(model, P, v, fw, seed, rule, negate):
    """(P(video) (D,), total at the words, total at the video) for seed (S, V) at the logits."""
    act = _act(model.cell_act)
    W = -P["predict.weight"] if negate else P["predict.weight"]
    Wp = W.clamp(min=0)
    z = fw["h2"] @ Wp.T
    p_h2 = fw["h2"] * (_ratio(seed, z, z != 0) @ Wp)
    if rule == "caffe":
        p_h1, ps2 = _lstm_eb_caffe(P, "lstm2", fw["h1"], fw["s2"], p_h2, act)
        p_e, ps1 = _lstm_eb_caffe(P, "lstm1", fw["e"], fw["s1"], p_h1, act)
    else:
        p_h1, ps2 = _lstm_eb_rule(P, "lstm2", fw["h1"], fw["s2"], p_h2, act, fw["st2"])
        p_e, ps1 = _lstm_eb_rule(P, "lstm1", fw["e"], fw["s1"], p_h1, act, fw["st1"])
    p_v = ps2 if model.static_layer == "lstm2" else ps1
    return p_v, float(p_e.sum()), float(p_v.sum())


def oracle_ground_caption(model, clip, caption_ids, steps, *, method, layer, lstm_rule="caffe", bos=0, eos=1):
    """Ground one query (the caption steps ``steps``) of a forced caption; every result float64 NumPy.

    Parameters
    ----------
    model : a captioner (``layers``, ``params``, ``static_layer``, ``pool``, ``cell_act``)
    clip : array (T, C, H, W)
    caption_ids : list of int
        The caption's word ids (no <bos>/<eos>).
    steps : list of int
        Seeded steps: a raw 1 on the logit of ``caption_ids[t]`` at each step ``t``.
    method : {"EB-R", "cEB-R", "BP-R"}
    layer : str
        Read-out layer of the frame part, or ``"input"``.
    lstm_rule : {"caffe", "eb"}

    Returns
    -------
    dict
        ``signal`` (T, ...) at the read-out layer, ``maps``, ``evidence`` (T,),
        ``positive_maps`` (EB-R alone, to scale contrastive errors), ``probs``
        (S, V), ``total``/``total_dual`` (eq.-5 totals), ``words``/``video``
        (decoder totals of the positive pass).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _ground(model, clip, caption_ids, steps, method, layer, lstm_rule, bos, eos)
    finally:
        torch.set_num_threads(threads)


def _ground(model, clip, caption_ids, steps, method, layer, lstm_rule, bos, eos):
    P = _params(model)
    layers = list(model.layers)
    names = [lay.name for lay in layers]
    r = -1 if layer == "input" else names.index(layer)
    L = len(layers)
    ids = list(caption_ids) + [eos]
    inputs = [bos] + list(caption_ids)
    S, V = len(ids), P["predict.weight"].shape[0]
    seed = torch.zeros((S, V), dtype=torch.float64)
    for t in steps:
        seed[t, ids[t]] = 1.0
    x = _tensor(clip)
    out = {"total": None, "total_dual": None, "words": None, "video": None}
    if method == "BP-R":
        with torch.enable_grad():
            x.requires_grad_(True)
            acts = _frame_acts(model, P, x)
            logits, _ = _decoder(model, P, _pool(model, acts[-1]), inputs)
            (sig,) = torch.autograd.grad((logits * seed).sum(), acts[r + 1])
        pos = sig
    else:
        acts = _frame_acts(model, P, x)
        feats = acts[-1]
        v = _pool(model, feats)
        logits, fw = _decoder(model, P, v, inputs)

        def to_frames(p_v):
            if model.pool != "mean":
                return p_v[None]
            S_ = feats.sum(dim=0)
            return feats * _ratio(p_v, S_, S_ > 0)[None]

        def pass_(negate):
            p_v, words, video = _decoder_eb(model, P, v, fw, seed, lstm_rule, negate)
            p_f = to_frames(p_v)
            tot = float(p_f.sum())
            return (p_f / tot if tot != 0 else torch.zeros_like(p_f)), tot, words, video

        p_pos, out["total"], out["words"], out["video"] = pass_(False)
        p = p_pos
        if method == "cEB-R":
            p_neg, out["total_dual"], _, _ = pass_(True)
            p = p_pos - p_neg

        def down(p):
            for k in range(L - 1, r, -1):
                p = _eb_layer(layers[k], P, acts[k], p, None, lstm_rule=lstm_rule)
            return p

        sig, pos = down(p), down(p_pos)
    probs = torch.softmax(logits.detach(), dim=-1)
    sig, pos = sig.detach().numpy(), pos.detach().numpy()
    maps = sig.sum(axis=1) if sig.ndim == 4 else sig
    pos_maps = pos.sum(axis=1) if pos.ndim == 4 else pos
    out.update(
        signal=sig,
        maps=maps,
        evidence=maps.reshape(maps.shape[0], -1).sum(axis=1),
        positive_maps=pos_maps,
        positive_signal=pos,
        probs=probs.numpy(),
    )
    return out
