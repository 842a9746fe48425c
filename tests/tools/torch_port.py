"""An independent float64 PyTorch port of EB, cEB, EB-R, cEB-R, BP-R and both LSTM rules, for the tests.

It is what a port author writes from docs/verify-your-implementation.md,
docs/spec.md and docs/lstm.md: it imports nothing from ebr_ref and reads a model
only as the conformance suite ships it (``case.json``: the layer list and the
settings; ``params/<name>.npy``: the weights; ``input.npy``: the clip). It
computes every named point of the method under the names the engine uses and
can plant six realistic bugs (``BUGS``), one at a time, to show what
``ebr-ref compare`` says about each:

- ``epsilon``: 1e-6 added to every EB denominator;
- ``bias_in_z``: the layer's bias inside the normaliser Z;
- ``gate_order``: the LSTM's gate blocks read as i, f, g, o (torch's order) instead of i, f, o, g;
- ``recurrent_caffe``: under rule "caffe" the recurrent branch W_h h_(t-1) receives signal too;
- ``eq5_per_frame``: eq. 5 normalised per frame instead of by one grand total;
- ``pool_last_max``: max-pool ties go to the last maximum of a window instead of the first.

Everything is written with explicit formulas (the convolution's adjoint is
torch autograd of ``conv2d``, the only use of autograd); several targets run
one after the other and are stacked.
"""

from __future__ import annotations

import json
import math
import os

import numpy
import torch
import torch.nn.functional as F

__all__ = ["BUGS", "read_case", "run_port"]

BUGS = ("epsilon", "bias_in_z", "gate_order", "recurrent_caffe", "eq5_per_frame", "pool_last_max")
EPS = 1e-6


def read_case(folder):
    """A case folder as plain data: ``{"case": case.json, "params": {name: array}, "clip": array}``."""
    with open(os.path.join(folder, "case.json"), encoding="utf-8") as f:
        case = json.load(f)
    params = {name: numpy.load(os.path.join(folder, path)) for name, path in case["params"].items()}
    return {"case": case, "params": params, "clip": numpy.load(os.path.join(folder, case["input"]))}


def _t(a):
    return torch.as_tensor(numpy.asarray(a, dtype=numpy.float64))


def _np(x):
    return x.detach().numpy().copy() if torch.is_tensor(x) else numpy.asarray(x)


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


class Port:
    """One run of one case; ``out`` collects the points."""

    def __init__(self, data, bugs=()):
        self.case, self.clip = data["case"], _t(data["clip"])
        self.P = {k: _t(v) for k, v in data["params"].items()}
        self.bugs = set(bugs)
        unknown = self.bugs - set(BUGS)
        assert not unknown, unknown
        s = self.case["settings"]
        self.method, self.rule = s["method"], s.get("lstm_rule", "caffe")
        self.arch = self.case["architecture"]
        self.out = {}

    # ---- helpers -------------------------------------------------------------------------------------------
    def div(self, a, b):
        """``a / b``, exactly 0 where ``b == 0`` (no epsilon) -- or the planted epsilon."""
        if "epsilon" in self.bugs:
            return a / (b + EPS)
        ok = b != 0
        return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.zeros_like(a))

    @staticmethod
    def split(a, b):
        """``a / b`` with 0 where ``b == 0`` (the proportional splits inside the LSTM, never stabilised)."""
        ok = b != 0
        return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.zeros_like(a))

    def act(self, z, cell):
        return torch.relu(z) if cell == "relu" else torch.tanh(z)

    @staticmethod
    def act_deriv(a, cell):
        """The derivative of ``act`` from its output: ``1[a > 0]`` (ReLU, 0 at 0) or ``1 - a^2``."""
        return (a > 0).to(a.dtype) if cell == "relu" else 1 - a * a

    # ---- pooling -------------------------------------------------------------------------------------------
    @staticmethod
    def pool_size(n, k, s, p, ceil, any_pad):
        if not ceil:
            return (n + 2 * p - k) // s + 1
        o = math.ceil((n + 2 * p - k) / s) + 1
        if any_pad and (o - 1) * s >= n + p:
            o -= 1
        return o

    def maxpool(self, x, L):
        """Max pooling; returns the output and, per output cell, the flat index of its winner in ``x``."""
        (kh, kw), (ph, pw) = _pair(L["kernel"]), _pair(L["padding"])
        sh, sw = _pair(L.get("stride") or L["kernel"])
        N, C, H, W = x.shape
        pad = ph > 0 or pw > 0
        oh = self.pool_size(H, kh, sh, ph, L.get("ceil_mode", False), pad)
        ow = self.pool_size(W, kw, sw, pw, L.get("ceil_mode", False), pad)
        Hp, Wp = max(H + 2 * ph, (oh - 1) * sh + kh), max(W + 2 * pw, (ow - 1) * sw + kw)
        xp = torch.full((N, C, Hp, Wp), -math.inf, dtype=x.dtype)
        xp[:, :, ph : ph + H, pw : pw + W] = x  # padded cells hold -inf: they never win
        win = xp.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow]  # (N, C, oh, ow, kh, kw)
        win = win.reshape(N, C, oh, ow, kh * kw)
        if "pool_last_max" in self.bugs:
            j = kh * kw - 1 - torch.argmax(torch.flip(win, (-1,)), dim=-1)
        else:
            j = torch.argmax(win, dim=-1)  # the first maximum in row-major window order
        y = torch.gather(win, -1, j[..., None])[..., 0]
        u, v = j // kw, j % kw
        rows = torch.arange(oh)[:, None] * sh + u - ph  # (N, C, oh, ow) in the unpadded input
        cols = torch.arange(ow)[None, :] * sw + v - pw
        return y, rows * W + cols

    @staticmethod
    def route(p, idx, shape):
        """Each output's whole signal to its window's winner (several windows add up)."""
        N, C, H, W = shape
        out = torch.zeros(N, C, H * W, dtype=p.dtype)
        out.scatter_add_(2, idx.reshape(N, C, -1), p.reshape(N, C, -1))
        return out.reshape(shape)

    # ---- the per-frame layers ------------------------------------------------------------------------------
    def forward(self, L, x):
        """``(y, extra)`` of one per-frame layer (``extra``: the max pool's winners)."""
        t, n = L["type"], L["name"]
        if t == "conv":
            y = F.conv2d(
                x,
                self.P[f"{n}.weight"],
                self.P.get(f"{n}.bias"),
                stride=L.get("stride", 1),
                padding=L.get("padding", 0),
                dilation=L.get("dilation", 1),
                groups=L.get("groups", 1),
            )
            return y, None
        if t == "fc":
            y = x @ self.P[f"{n}.weight"].T
            return (y + self.P[f"{n}.bias"] if f"{n}.bias" in self.P else y), None
        if t == "relu":
            return torch.relu(x), None
        if t == "maxpool":
            return self.maxpool(x, L)
        if t in ("dropout",):
            return x, None
        if t == "flatten":
            return x.reshape(x.shape[0], -1), None
        raise NotImplementedError(t)

    def conv_adjoint(self, s, x, W, L):
        a = x.detach().clone().requires_grad_()
        y = F.conv2d(
            a,
            W,
            None,
            stride=L.get("stride", 1),
            padding=L.get("padding", 0),
            dilation=L.get("dilation", 1),
            groups=L.get("groups", 1),
        )
        (g,) = torch.autograd.grad(y, a, grad_outputs=s)
        return g

    def backward(self, L, x, y, extra, p, *, mode, negate=False):
        """The signal at the input of layer ``L`` from ``p`` at its output (``mode``: "eb" or "grad")."""
        t, n = L["type"], L["name"]
        if t in ("conv", "fc"):
            W = self.P[f"{n}.weight"] * (-1 if negate else 1)
            b = self.P.get(f"{n}.bias")
            if mode == "grad":
                return self.conv_adjoint(p, x, W, L) if t == "conv" else p @ W
            Wp = W.clamp(min=0)
            if t == "conv":
                z = F.conv2d(
                    x,
                    Wp,
                    None,
                    stride=L.get("stride", 1),
                    padding=L.get("padding", 0),
                    dilation=L.get("dilation", 1),
                    groups=L.get("groups", 1),
                )
                if "bias_in_z" in self.bugs and b is not None:
                    z = z + b[:, None, None]
                return x * self.conv_adjoint(self.div(p, z), x, Wp, L)
            z = x @ Wp.T
            if "bias_in_z" in self.bugs and b is not None:
                z = z + b
            return x * (self.div(p, z) @ Wp)
        if t == "relu":
            return p * (y > 0) if mode == "eb" else p * (x > 0)
        if t == "maxpool":
            return self.route(p, extra, x.shape)
        if t == "dropout":
            return p
        if t == "flatten":
            return p.reshape(x.shape)
        raise NotImplementedError(t)

    # ---- the LSTM ------------------------------------------------------------------------------------------
    def lstm_forward(self, name, x, cont, cell, static=None):
        """Unrolled by hand: gate blocks i, f, o, g; ``cont_t = 0`` wipes h_(t-1) and c_(t-1)."""
        W_x, b, W_h = self.P[f"{name}.W_x"], self.P[f"{name}.b"], self.P[f"{name}.W_h"]
        H = W_h.shape[1]
        zx = x @ W_x.T + b
        if static is not None:
            zx = zx + static @ self.P[f"{name}.W_s"].T
        h, c = torch.zeros(H, dtype=x.dtype), torch.zeros(H, dtype=x.dtype)
        rec = {k: [] for k in ("i", "f", "o", "g", "c", "ac", "h", "h_in", "c_prev")}
        for t in range(x.shape[0]):
            h_in, c_prev = cont[t] * h, c
            z = zx[t] + W_h @ h_in
            if "gate_order" in self.bugs:  # reads the blocks as torch's i, f, g, o
                i, f, g, o = (
                    torch.sigmoid(z[:H]),
                    torch.sigmoid(z[H : 2 * H]),
                    self.act(z[2 * H : 3 * H], cell),
                    torch.sigmoid(z[3 * H :]),
                )
            else:
                i, f, o, g = (
                    torch.sigmoid(z[:H]),
                    torch.sigmoid(z[H : 2 * H]),
                    torch.sigmoid(z[2 * H : 3 * H]),
                    self.act(z[3 * H :], cell),
                )
            c = cont[t] * f * c_prev + i * g
            ac = self.act(c, cell)
            h = o * ac
            for k, v in zip(rec, (i, f, o, g, c, ac, h, h_in, c_prev)):
                rec[k].append(v)
        rec = {k: torch.stack(v) for k, v in rec.items()}  # (T, H) each
        rec.update(x=x, cont=cont, cell=cell, static=static, name=name, H=H)
        self.out[f"lstm/{name}/gates"] = torch.cat([rec["i"], rec["f"], rec["o"], rec["g"]], dim=1)
        self.out[f"lstm/{name}/c"] = rec["c"]
        self.out[f"lstm/{name}/h"] = rec["h"]
        return rec["h"], rec

    def lstm_backward(self, rec, p_h_in, prefix, mode):
        """Rule "eb", rule "caffe" or the gradient; keeps the per-step points; returns (P(x), P(static))."""
        name, x, cont, cell, s = rec["name"], rec["x"], rec["cont"], rec["cell"], rec["static"]
        W_x, b, W_h = self.P[f"{name}.W_x"], self.P[f"{name}.b"], self.P[f"{name}.W_h"]
        W_s = self.P.get(f"{name}.W_s")
        T, H = x.shape[0], rec["H"]
        i, f, o, g, c, ac, h_in, c_prev = (rec[k] for k in ("i", "f", "o", "g", "c", "ac", "h_in", "c_prev"))
        pts = {k: torch.zeros(T, H, dtype=x.dtype) for k in ("p_h", "p_c", "p_g", "p_rec")}
        pts["lost"] = torch.zeros(T, dtype=x.dtype)
        p_x = torch.zeros_like(x)
        p_s = None if s is None else torch.zeros_like(s)
        if mode == "eb" and self.rule == "eb":
            gs = slice(3 * H, 4 * H)
            Wxg, Whg = W_x[gs].clamp(min=0), W_h[gs].clamp(min=0)
            Z = x @ Wxg.T + h_in @ Whg.T  # (T, H)  the g-block normaliser, no bias
            if s is not None:
                Wsg = W_s[gs].clamp(min=0)
                Z = Z + s @ Wsg.T
            if "bias_in_z" in self.bugs:
                Z = Z + b[gs]
            pts["Z"] = Z
            from_next_h, from_next_c = torch.zeros(H, dtype=x.dtype), torch.zeros(H, dtype=x.dtype)
            for t in range(T - 1, -1, -1):
                ph = p_h_in[t] + from_next_h
                alive = ac[t] != 0
                pc = from_next_c + torch.where(alive, ph, torch.zeros_like(ph))
                share_c, share_g = cont[t] * f[t] * c_prev[t], i[t] * g[t]
                from_next_c = pc * self.split(share_c, c[t])
                pg = pc * self.split(share_g, c[t])
                q = self.div(pg, Z[t])
                p_x[t] = x[t] * (q @ Wxg)
                from_next_h = h_in[t] * (q @ Whg)
                if s is not None:
                    p_s = p_s + s * (q @ Wsg)
                lost = torch.where(alive, 0 * ph, ph).sum() + torch.where(c[t] == 0, pc, 0 * pc).sum()
                pts["lost"][t] = lost + torch.where(Z[t] == 0, pg, 0 * pg).sum()
                pts["p_h"][t], pts["p_c"][t], pts["p_g"][t], pts["p_rec"][t] = ph, pc, pg, from_next_h
        else:  # the released code's rule, or the true gradient (BP-R)
            grad = mode == "grad"
            dz = torch.zeros(T, 4 * H, dtype=x.dtype)
            from_next_h, from_next_c = torch.zeros(H, dtype=x.dtype), torch.zeros(H, dtype=x.dtype)
            for t in range(T - 1, -1, -1):
                ph = p_h_in[t] + from_next_h
                kappa = from_next_c + ph * o[t] * self.act_deriv(ac[t], cell)
                dz_i = kappa * g[t] * i[t] * (1 - i[t])
                dz_f = kappa * cont[t] * c_prev[t] * f[t] * (1 - f[t])
                dz_o = ph * ac[t] * o[t] * (1 - o[t])
                dz_g = kappa * i[t] * self.act_deriv(g[t], cell)
                blocks = [dz_i, dz_f, dz_g, dz_o] if "gate_order" in self.bugs else [dz_i, dz_f, dz_o, dz_g]
                dz[t] = torch.cat(blocks)
                from_next_c = kappa * cont[t] * f[t]
                if grad or "recurrent_caffe" in self.bugs:
                    from_next_h = cont[t] * (W_h.T @ dz[t])  # through W_h (cont_t h_(t-1))
                pts["p_h"][t], pts["p_c"][t], pts["p_rec"][t] = ph, kappa, from_next_h
            pts["dz"] = (
                torch.cat([dz[:, : 2 * H], dz[:, 3 * H :], dz[:, 2 * H : 3 * H]], 1)
                if ("gate_order" in self.bugs)
                else dz
            )  # dumped in the order i, f, o, g
            if grad:
                p_x = dz @ W_x
                if s is not None:
                    p_s = dz.sum(0) @ W_s
            else:
                Wp = W_x.clamp(min=0)
                Z = x @ Wp.T + (b if "bias_in_z" in self.bugs else 0)  # (T, 4H)  no bias, no W_h term
                pts["Z"] = Z
                p_x = x * (self.div(dz, Z) @ Wp)
                pts["lost"] = torch.where(Z == 0, dz, 0 * dz).sum(1)
                if s is not None:
                    Wsp = W_s.clamp(min=0)
                    Zs = s @ Wsp.T
                    p_s = s * (self.div(dz.sum(0), Zs) @ Wsp)
                    pts["lost"] = pts["lost"] + torch.where(Zs == 0, dz, 0 * dz).sum(1)
        names = {
            "eb": ("p_h", "p_c", "p_g", "Z", "p_rec", "lost"),
            "caffe": ("p_h", "p_c", "dz", "Z", "p_rec", "lost"),
            "grad": ("p_h", "p_c", "dz", "p_rec"),
        }["grad" if mode == "grad" else self.rule]
        for q in names:
            self.keep(f"{prefix}/{name}/{q}", pts[q])
        return p_x, p_s

    # ---- bookkeeping ---------------------------------------------------------------------------------------
    def keep(self, name, value):
        """A backward point of the current target (stacked over targets at the end)."""
        self.current[name] = value

    def eq5(self, P):
        """Eq. 5: the signal over its grand total (0 when the total is 0), or the planted per-frame totals."""
        if "eq5_per_frame" in self.bugs:
            tot = P.reshape(P.shape[0], -1).sum(1)
            return P / tot.reshape(-1, *([1] * (P.dim() - 1))), tot
        tot = P.sum()
        return (P / tot if tot != 0 else torch.zeros_like(P)), tot

    def targets(self):
        s = self.case["settings"]
        key = "words" if self.case["kind"] == "captioner" else "target"
        v = s[key]
        return (v if isinstance(v, list) else [v]), isinstance(v, list)

    def run(self):
        stacked = self.targets()[1]
        per_target = self.run_captioner() if self.case["kind"] == "captioner" else self.run_classifier()
        for name in per_target[0]:
            vals = [_np(d[name]) for d in per_target]
            shared = name.endswith("/Z")  # an LSTM's normaliser does not depend on the target: no K axis
            self.out[name] = numpy.stack(vals) if stacked and not shared else vals[0]
        return {k: _np(v) for k, v in self.out.items()}

    def cnn_forward(self, layers):
        acts, extras = [self.clip], []
        for L in layers:
            y, e = self.forward(L, acts[-1])
            acts.append(y)
            extras.append(e)
            self.out[f"forward/{L['name']}"] = y
        return acts, extras

    def cnn_backward(self, layers, acts, extras, p, mode):
        """``p`` at the output of ``layers[-1]`` down to the pixels: ``signal/<layer>``, ``maps``, ...."""
        readout = self.case["settings"]["layer"]
        names = ["input"] + [L["name"] for L in layers]
        for k in range(len(layers), -1, -1):
            self.keep(f"signal/{names[k]}", p)
            if names[k] == readout:
                maps = p.sum(1) if p.dim() == 4 else p
                self.keep("maps", maps)
                self.keep("evidence", maps.reshape(maps.shape[0], -1).sum(1))
            if k > 0:
                p = self.backward(layers[k - 1], acts[k - 1], acts[k], extras[k - 1], p, mode=mode)

    def run_classifier(self):
        s = self.case["settings"]
        seq = next((k for k, L in enumerate(self.arch) if L["type"] == "lstm"), len(self.arch))
        acts, extras = self.cnn_forward(self.arch[:seq])
        mode = "grad" if self.method in ("BP", "BP-R") else "eb"
        results = []
        if seq == len(self.arch):  # a per-frame classifier: EB, cEB, BP
            self.out["logits"] = acts[-1]
            self.out["probs"] = torch.softmax(acts[-1], dim=1)
            for target in self.targets()[0]:
                self.current = {}
                seed = torch.zeros_like(acts[-1])
                seed[:, target] = 1.0  # a raw 1 on the target logit of every frame
                self.keep("seed", seed)
                if self.method == "cEB":
                    fc = self.arch[-1]
                    self.keep(f"signal/{fc['name']}", seed)
                    pos = self.backward(fc, acts[-2], acts[-1], None, seed, mode="eb")
                    neg = self.backward(fc, acts[-2], acts[-1], None, seed, mode="eb", negate=True)
                    self.keep("classifier/positive", pos)
                    self.keep("classifier/dual", neg)
                    self.cnn_backward(self.arch[:-1], acts[:-1], extras[:-1], pos - neg, mode)
                else:
                    self.cnn_backward(self.arch, acts, extras, seed, mode)
                results.append(self.current)
            return results
        # a CNN-LSTM: the sequence part on the interface's (T, D) output
        cont = _t(s["cont"])
        x, seq_acts, recs = acts[-1], [acts[-1]], {}
        for L in self.arch[seq:]:
            if L["type"] == "lstm":
                x, recs[L["name"]] = self.lstm_forward(L["name"], x, cont, L.get("cell_act", "relu"))
            else:
                x = self.forward(L, x)[0]
            seq_acts.append(x)
            self.out[f"forward/{L['name']}"] = x
        self.out["logits"] = x
        self.out["probs"] = torch.softmax(x, dim=1)
        steps = s["seed_steps"]
        for target in self.targets()[0]:
            self.current = {}
            seed = torch.zeros_like(x)
            seed[steps, target] = 1.0
            self.keep("seed", seed)

            def one_pass(negate, sp, lp, seed=seed):
                p = seed
                layers = self.arch[seq:]
                self.keep(f"{sp}/{layers[-1]['name']}", p)
                for k in range(len(layers) - 1, -1, -1):
                    L = layers[k]
                    if L["type"] == "lstm":
                        p, _ = self.lstm_backward(recs[L["name"]], p, lp, mode)
                    else:
                        p = self.backward(
                            L,
                            seq_acts[k],
                            seq_acts[k + 1],
                            None,
                            p,
                            mode=mode,
                            negate=negate and k == len(layers) - 1,
                        )
                    if k > 0:
                        self.keep(f"{sp}/{layers[k - 1]['name']}", p)
                return p

            if mode == "grad":
                Map = one_pass(False, "signal", "lstm")
                self.keep("interface/positive", Map)
            else:
                Map = self.normalised_passes(
                    lambda: one_pass(False, "signal", "lstm"),
                    lambda: one_pass(True, "signal_dual", "lstm_dual"),
                )
            self.cnn_backward(self.arch[:seq], acts, extras, Map, mode)
            results.append(self.current)
        return results

    def normalised_passes(self, positive, dual):
        P = positive()
        self.keep("interface/positive", P)
        P_N, tot = self.eq5(P)
        self.keep("totals/positive", tot)
        self.keep("normalised/positive", P_N)
        if self.method not in ("cEB-R",):
            return P_N
        Pd = dual()
        self.keep("interface/dual", Pd)
        P_Nd, totd = self.eq5(Pd)
        self.keep("totals/dual", totd)
        self.keep("normalised/dual", P_Nd)
        return P_N - P_Nd  # eq. 7

    def run_captioner(self):
        s, dec = self.case["settings"], self.case["decoder"]
        vocab = self.case["vocabulary"]
        acts, extras = self.cnn_forward(self.arch)
        feats = acts[-1]  # (T, D)
        v = feats.mean(0) if dec["pool"] == "mean" else feats[0]
        self.out["forward/video"] = v
        ids = [vocab.index(w) for w in s["caption"].split()] + [1]  # then <eos>
        S = len(ids)
        self.out["tokens"] = numpy.array(ids, dtype=numpy.int64)
        inputs = [0] + ids[:-1]  # <bos>, then the previous words
        e = self.P["embed.weight"][inputs]  # (S, E)
        self.out["forward/embed"] = e
        cont = torch.ones(S, dtype=e.dtype)
        cont[0] = 0
        cell, st = dec["cell_act"], dec["static_layer"]
        h1, r1 = self.lstm_forward("lstm1", e, cont, cell, static=v if st == "lstm1" else None)
        self.out["forward/lstm1"] = h1
        h2, r2 = self.lstm_forward("lstm2", h1, cont, cell, static=v if st == "lstm2" else None)
        self.out["forward/lstm2"] = h2
        W, b = self.P["predict.weight"], self.P["predict.bias"]
        logits = h2 @ W.T + b
        self.out["forward/predict"] = logits
        self.out["logits"] = logits
        self.out["probs"] = torch.softmax(logits, 1)
        predict = {"type": "fc", "name": "predict"}
        results = []
        for steps in s["query_steps"]:
            self.current = {}
            seed = torch.zeros_like(logits)
            seed[steps, [ids[t] for t in steps]] = 1.0
            self.keep("seed", seed)

            def one_pass(negate, sp, lp, seed=seed):
                self.keep(f"{sp}/predict", seed)
                p2 = self.backward(predict, h2, logits, None, seed, mode="eb", negate=negate)
                self.keep(f"{sp}/lstm2", p2)
                p1, ps2 = self.lstm_backward(r2, p2, lp, "eb")
                if st == "lstm2":
                    self.keep(f"{sp}/video", ps2)
                self.keep(f"{sp}/lstm1", p1)
                pe, ps1 = self.lstm_backward(r1, p1, lp, "eb")
                if st == "lstm1":
                    self.keep(f"{sp}/video", ps1)
                self.keep(f"{sp}/embed", pe)
                self.keep(f"{sp}/words", pe.sum(1))  # each word receives its embedded vector's whole signal
                p_v = ps2 if st == "lstm2" else ps1
                if dec["pool"] != "mean":
                    return p_v[None]
                tot = feats.sum(0)  # the mean undone: in proportion to the frames' activations, 0 if sum <= 0
                ok = tot > 0
                return feats * torch.where(ok, p_v / torch.where(ok, tot, torch.ones_like(tot)), 0 * tot)

            Map = self.normalised_passes(
                lambda: one_pass(False, "signal", "lstm"), lambda: one_pass(True, "signal_dual", "lstm_dual")
            )
            self.cnn_backward(self.arch, acts, extras, Map, "eb")
            results.append(self.current)
        return results


def run_port(data, bugs=()):
    """Every point the port computes for a case (``read_case``), with the planted ``bugs``."""
    return Port(data, bugs).run()
