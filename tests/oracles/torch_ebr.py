"""Float64 torch oracle of the grounding drivers (docs/spec.md §2–§5, paper Algorithm 1).

Independent of ``ebr_ref``'s kernels and drivers: it reads only a model's layer
list (``layer.name``, ``layer.type``, ``layer.settings``) and its parameter dict
(NumPy arrays under canonical names), and recomputes everything with torch in
float64, written from SPEC:

* forward: ``F.conv2d``; pooling with Caffe's ceil formula (docs/spec.md §2) done by
  explicit padding/cropping and a floor-mode torch pool; Caffe's ACROSS_CHANNELS
  LRN by hand; the LSTM unrolled by hand (gate order i, f, o, g; ``cont`` markers;
  ReLU or tanh cell, docs/spec.md §4);
* EB of a non-negative linear map ``f+`` (fc, conv, average pool):
  ``P_in = a * d/da[f+(a) . stopgrad(P / Z)]`` with ``Z = f+(a)`` and the quotient
  exactly 0 where ``Z == 0`` (fc, conv) or ``Z <= 0`` (average pool); max pool
  routes through torch's max-pool backward (one winner, the first maximum in
  scan order, as Caffe); ReLU, dropout, LRN and flatten pass the signal on;
* LSTM rule ``"caffe"``: autograd through the unrolled cell with the recurrent
  branch ``W_h h_{t-1}`` detached, then the gate signal ``dz`` pushed through
  ``W_x`` with the linear rule (``Z = W_x+ x_t``);
* LSTM rule ``"eb"``: the conserving rule of docs/spec.md §4, by hand, step by step;
* gradients (BP, BP-R): torch autograd of the raw target logit(s), read at the
  read-out layer's output (a conv's pre-ReLU output, docs/spec.md §3).

:func:`oracle_ground` handles one target class per call. Torch's max-pool
backward routes a tie to the first maximum in scan order (checked in
tests/grounding/test_ground.py); the tests use random float data, where ties of non-zero
values do not occur.
"""

from __future__ import annotations

import numpy
import torch
import torch.nn.functional as F

__all__ = ["oracle_ground", "pool_out_size"]

RECURRENT = ("EB-R", "cEB-R", "BP-R")


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, numpy.integer)) else tuple(int(u) for u in v)


def _tensor(a):
    return torch.tensor(numpy.array(a, dtype=numpy.float64))


def _ratio(num, den, ok):
    """``num / den`` where ``ok``, exactly 0 elsewhere."""
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


# ---- pooling geometry (docs/spec.md §2) -----------------------------------------------------------------
def pool_out_size(size, kernel, stride, padding, ceil_mode):
    """Floor rule, or Caffe's ceil rule ``ceil((H + 2p - k)/s) + 1``, minus 1 if ``p > 0`` and
    ``(o-1)s >= H + p``."""
    if not ceil_mode:
        return (size + 2 * padding - kernel) // stride + 1
    o = -(-(size + 2 * padding - kernel) // stride) + 1
    if padding > 0 and (o - 1) * stride >= size + padding:
        o -= 1
    return o


def _pool_geometry(x, s):
    (kH, kW), (sH, sW), (pH, pW) = _pair(s["kernel"]), _pair(s["stride"]), _pair(s["padding"])
    iH, iW = x.shape[-2:]
    oH = pool_out_size(iH, kH, sH, pH, s["ceil_mode"])
    oW = pool_out_size(iW, kW, sW, pW, s["ceil_mode"])
    # pad (or crop) so that a floor-mode pool without padding gives exactly oH x oW windows
    pads = (pW, (oW - 1) * sW + kW - iW - pW, pH, (oH - 1) * sH + kH - iH - pH)
    return (kH, kW), (sH, sW), (pH, pW), (oH, oW), pads


def _maxpool(x, s):
    k, st, _, _, pads = _pool_geometry(x, s)
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, st)


def _window_sums(x, s):
    """Sum of every pooling window's real inputs (padding counts as 0)."""
    k, st, _, _, pads = _pool_geometry(x, s)
    C = x.shape[1]
    ones = torch.ones((C, 1) + k, dtype=x.dtype)
    return F.conv2d(F.pad(x, pads, value=0.0), ones, stride=st, groups=C)


def _avg_divisor(x, s):
    """Caffe's divisor: windows clipped to the padded input; padded cells counted unless told otherwise."""
    (kH, kW), (sH, sW), (pH, pW), (oH, oW), _ = _pool_geometry(x, s)
    iH, iW = x.shape[-2:]

    def axis(i, k, st, p, o):
        start = [j * st - p for j in range(o)]
        end = [min(a + k, i + p) for a in start]
        if s["count_include_pad"]:
            return [e - a for a, e in zip(start, end)]
        return [min(e, i) - max(a, 0) for a, e in zip(start, end)]

    dH = torch.tensor(axis(iH, kH, sH, pH, oH), dtype=x.dtype)
    dW = torch.tensor(axis(iW, kW, sW, pW, oW), dtype=x.dtype)
    return dH[:, None] * dW[None, :]


def _lrn(x, s):
    """Caffe LRN ACROSS_CHANNELS: ``x / (k + alpha/size * sum_window x^2)^beta``."""
    size, C = s["size"], x.shape[1]
    pre = (size - 1) // 2
    sq = F.pad(x * x, (0, 0, 0, 0, pre, size - 1 - pre))
    win = sum(sq[:, j : j + C] for j in range(size))
    return x * (s["k"] + s["alpha"] / size * win) ** (-s["beta"])


# ---- LSTM (docs/spec.md §4) -----------------------------------------------------------------------------
def _act(name):
    return {"relu": torch.relu, "tanh": torch.tanh}[name]


def _lstm_unroll(zx, W_h, cont, act, *, detach_recurrent=False):
    """Unrolled cell from the input projections ``zx = W_x x + b`` (T, 4H); returns per-step tensors."""
    T, H = zx.shape[0], W_h.shape[1]
    h = torch.zeros(H, dtype=zx.dtype)
    c = torch.zeros(H, dtype=zx.dtype)
    steps = []
    for t in range(T):
        hp = cont[t] * h
        z = zx[t] + (hp.detach() if detach_recurrent else hp) @ W_h.T
        i, f, o = torch.sigmoid(z[:H]), torch.sigmoid(z[H : 2 * H]), torch.sigmoid(z[2 * H : 3 * H])
        g = act(z[3 * H :])
        c_prev = c
        c = cont[t] * f * c_prev + i * g
        h_prev = h
        h = o * act(c)
        steps.append(dict(i=i, f=f, o=o, g=g, c=c, c_prev=c_prev, h_prev=h_prev, h=h))
    return steps


def _lstm_forward(x, P, name, s, cont):
    zx = x @ P[f"{name}.W_x"].T + P[f"{name}.b"]
    steps = _lstm_unroll(zx, P[f"{name}.W_h"], cont, _act(s["cell_act"]))
    return torch.stack([st["h"] for st in steps])


def _lstm_eb_caffe(x, p_h, P, name, s, cont):
    """The released code: gradient of the cell with ``W_h h_{t-1}`` detached, then linear EB through
    ``W_x``."""
    W_x = P[f"{name}.W_x"]
    with torch.enable_grad():
        zx = (x @ W_x.T + P[f"{name}.b"]).detach().requires_grad_(True)
        steps = _lstm_unroll(zx, P[f"{name}.W_h"], cont, _act(s["cell_act"]), detach_recurrent=True)
        h = torch.stack([st["h"] for st in steps])
        (dz,) = torch.autograd.grad(h, zx, grad_outputs=p_h)
    W_pos = W_x.clamp(min=0)
    z = x @ W_pos.T
    return x * (_ratio(dz, z, z != 0) @ W_pos)


def _lstm_eb_conserving(x, p_h, P, name, s, cont):
    """docs/spec.md §4 rule ``"eb"``: h -> c, c -> {c_prev, g} in proportion, g -> {x, h_prev} linear EB
    (g rows)."""
    W_x, W_h = P[f"{name}.W_x"], P[f"{name}.W_h"]
    H = W_h.shape[1]
    act = _act(s["cell_act"])
    zx = x @ W_x.T + P[f"{name}.b"]
    steps = _lstm_unroll(zx, W_h, cont, act)
    Wxg, Whg = W_x[3 * H :].clamp(min=0), W_h[3 * H :].clamp(min=0)
    p_x = torch.zeros_like(x)
    p_h_rec = torch.zeros(H, dtype=x.dtype)
    p_c_rec = torch.zeros(H, dtype=x.dtype)
    for t in reversed(range(x.shape[0])):
        st = steps[t]
        ph = p_h[t] + p_h_rec
        pc = torch.where(act(st["c"]) != 0, ph, torch.zeros_like(ph)) + p_c_rec
        keep = cont[t] * st["f"] * st["c_prev"]
        new = st["i"] * st["g"]
        den = keep + new
        q = _ratio(pc, den, den != 0)
        pg = q * new
        hp = cont[t] * st["h_prev"]
        z = x[t] @ Wxg.T + hp @ Whg.T
        r = _ratio(pg, z, z != 0)
        p_x[t] = x[t] * (r @ Wxg)
        p_h_rec = hp * (r @ Whg)
        p_c_rec = q * keep
    return p_x


# ---- forward and EB per layer ----------------------------------------------------------------------
def _forward_layer(layer, P, x, cont):
    s, t, n = layer.settings, layer.type, layer.name
    if t == "conv":
        return F.conv2d(
            x,
            P[f"{n}.weight"],
            P.get(f"{n}.bias"),
            stride=_pair(s["stride"]),
            padding=_pair(s["padding"]),
            dilation=_pair(s["dilation"]),
            groups=s["groups"],
        )
    if t == "fc":
        y = x @ P[f"{n}.weight"].T
        return y + P[f"{n}.bias"] if f"{n}.bias" in P else y
    if t == "relu":
        return torch.relu(x)
    if t == "maxpool":
        return _maxpool(x, s)
    if t == "avgpool":
        return _window_sums(x, s) / _avg_divisor(x, s)
    if t == "lrn":
        return _lrn(x, s)
    if t == "dropout":
        return x
    if t == "flatten":
        return x.reshape(x.shape[0], -1)
    if t == "lstm":
        return _lstm_forward(x, P, n, s, cont)
    raise NotImplementedError(f"oracle: no forward for layer type {t!r}")


def _eb_positive_map(f_pos, a, p, ok):
    """``a * d/da[f_pos(a) . stopgrad(P / Z)]`` with ``Z = f_pos(a)``, the quotient 0 where not ``ok(Z)``."""
    with torch.enable_grad():
        a_ = a.detach().requires_grad_(True)
        z = f_pos(a_)
        ratio = _ratio(p, z.detach(), ok(z.detach()))
        (g,) = torch.autograd.grad(z, a_, grad_outputs=ratio)
    return a * g


def _eb_layer(layer, P, a, p, cont, *, lstm_rule, negate=False):
    """EB through one layer with input activations ``a``; ``negate`` flips the weights (cEB's dual pass)."""
    s, t, n = layer.settings, layer.type, layer.name
    if t == "fc":
        W = -P[f"{n}.weight"] if negate else P[f"{n}.weight"]
        W_pos = W.clamp(min=0)
        z = a @ W_pos.T
        return a * (_ratio(p, z, z != 0) @ W_pos)
    if t == "conv":
        W_pos = P[f"{n}.weight"].clamp(min=0)

        def f_pos(v):
            return F.conv2d(
                v,
                W_pos,
                None,
                stride=_pair(s["stride"]),
                padding=_pair(s["padding"]),
                dilation=_pair(s["dilation"]),
                groups=s["groups"],
            )

        return _eb_positive_map(f_pos, a, p, lambda z: z != 0)
    if t == "avgpool":
        return _eb_positive_map(lambda v: _window_sums(v, s), a, p, lambda z: z > 0)
    if t == "maxpool":
        with torch.enable_grad():
            a_ = a.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(_maxpool(a_, s), a_, grad_outputs=p)
        return g
    if t in ("relu", "dropout", "lrn"):
        return p
    if t == "flatten":
        return p.reshape(a.shape)
    if t == "lstm":
        rule = {"caffe": _lstm_eb_caffe, "eb": _lstm_eb_conserving}[lstm_rule]
        return rule(a, p, P, n, s, cont)
    raise NotImplementedError(f"oracle: no EB rule for layer type {t!r}")


# ---- drivers ---------------------------------------------------------------------------------------
def _seed_steps(seed_steps, T):
    if seed_steps == "last":
        return [T - 1]
    if seed_steps == "all":
        return list(range(T))
    return sorted(set(int(v) for v in seed_steps))


def oracle_ground(model, clip, target, *, method, layer, lstm_rule="caffe", seed_steps="last", cont=None):
    """Ground one target class; every result float64 NumPy.

    Parameters
    ----------
    model : object with ``layers`` and ``params``
    clip : array (T, C, H, W)
    target : int
    method : {"EB", "cEB", "BP", "EB-R", "cEB-R", "BP-R"}
    layer : str
        Read-out layer name or ``"input"``: the signal at that layer's output.
    lstm_rule : {"caffe", "eb"}
    seed_steps : "last", "all" or list of int (recurrent methods)
    cont : array (T,), optional

    Returns
    -------
    dict
        ``signal`` (T, ...) at the read-out layer, ``maps`` (channel sums, or the
        signal for a flat layer), ``evidence`` (T,), ``positive_maps`` (the positive
        pass alone, for normalising contrastive errors), ``probs`` (T, classes),
        ``total``, ``total_dual`` (eq.-5 totals; None where not applicable).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # tiny tensors: extra threads only spin (and slow down badly on a loaded machine)
    try:
        return _oracle_ground(
            model,
            clip,
            target,
            method=method,
            layer=layer,
            lstm_rule=lstm_rule,
            seed_steps=seed_steps,
            cont=cont,
        )
    finally:
        torch.set_num_threads(threads)


def _oracle_ground(model, clip, target, *, method, layer, lstm_rule, seed_steps, cont):
    layers = list(model.layers)
    P = {k: _tensor(v) for k, v in model.params.items()}
    names = [lay.name for lay in layers]
    r = -1 if layer == "input" else names.index(layer)
    s = next((k for k, lay in enumerate(layers) if lay.type == "lstm"), len(layers))
    L = len(layers)
    x = _tensor(clip)
    T = x.shape[0]
    if cont is None:
        cont = torch.ones(T, dtype=torch.float64)
        cont[0] = 0
    else:
        cont = _tensor(cont)
    recurrent = method in RECURRENT
    steps = _seed_steps(seed_steps, T) if recurrent else list(range(T))

    # forward, keeping every activation: acts[k] is the input of layers[k]
    with torch.set_grad_enabled(method in ("BP", "BP-R")):
        if method in ("BP", "BP-R"):
            x.requires_grad_(True)
        acts = [x]
        for lay in layers:
            acts.append(_forward_layer(lay, P, acts[-1], cont))
        logits = acts[-1]
        probs = torch.softmax(logits.detach(), dim=-1)
        total = total_dual = None
        if method in ("BP", "BP-R"):
            (sig,) = torch.autograd.grad(logits[steps, target].sum(), acts[r + 1])
            pos = sig
        else:
            acts = [a.detach() for a in acts]
            seed = torch.zeros_like(logits)
            seed[steps, target] = 1.0
            stop = s if recurrent else L - 1  # where the contrast (and eq. 5) happens
            if r >= stop:  # read-out at the classifier's output: the seed itself
                if method == "cEB":
                    raise ValueError("oracle: cEB contrasts at the classifier's input; read out below it")
                stop = r + 1

            def down(p, hi, lo, negate_top=False):
                for k in range(hi - 1, lo - 1, -1):
                    p = _eb_layer(
                        layers[k], P, acts[k], p, cont, lstm_rule=lstm_rule, negate=negate_top and k == L - 1
                    )
                return p

            p_pos = down(seed, L, stop)
            p_neg = down(seed, L, stop, negate_top=True)
            if recurrent:
                total, total_dual = float(p_pos.sum()), float(p_neg.sum())
                p_pos = p_pos / total if total != 0 else torch.zeros_like(p_pos)
                p_neg = p_neg / total_dual if total_dual != 0 else torch.zeros_like(p_neg)
            p = p_pos - p_neg if method in ("cEB", "cEB-R") else p_pos
            sig = down(p, stop, r + 1)
            pos = down(p_pos, stop, r + 1)
    sig, pos = sig.detach().numpy(), pos.detach().numpy()
    maps = sig.sum(axis=1) if sig.ndim == 4 else sig
    pos_maps = pos.sum(axis=1) if pos.ndim == 4 else pos
    return {
        "signal": sig,
        "maps": maps,
        "evidence": maps.reshape(T, -1).sum(axis=1),
        "positive_maps": pos_maps,
        "positive_signal": pos,
        "probs": probs.numpy(),
        "total": total,
        "total_dual": total_dual,
    }
