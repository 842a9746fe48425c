"""Naive scalar-loop LSTM oracles: the forward of docs/spec.md §4 and the conserving EB rule ("eb").

Plain Python loops over time, batch and units on float64 NumPy arrays; they
share no code with ``ebr_ref.layers.lstm``. Gate blocks are located by the
fixed Caffe offsets written out here (rows ``[i; f; o; g]``), not by the
kernel's ``GATE_ORDER`` constant.
"""

import math

import numpy

BLOCK = {"i": 0, "f": 1, "o": 2, "g": 3}  # Caffe LSTMUnit rows: [i; f; o; g]


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _act(v, cell_act):
    return max(v, 0.0) if cell_act == "relu" else math.tanh(v)


def naive_forward(x, W_x, b, W_h, W_s=None, s=None, cont=None, h0=None, c0=None, cell_act="relu"):
    """Return a dict of float64 arrays: ``h, c, i, f, o, g`` (T, N, H), ``h_prev, c_prev`` (T, N, H)."""
    T, N, D = x.shape
    H = W_h.shape[1]
    if cont is None:
        cont = numpy.ones((T, N))
        cont[0] = 0
    h_prev = numpy.zeros((N, H)) if h0 is None else numpy.array(h0, dtype=float)
    c_prev = numpy.zeros((N, H)) if c0 is None else numpy.array(c0, dtype=float)
    out = {k: numpy.zeros((T, N, H)) for k in ("h", "c", "i", "f", "o", "g", "zg", "h_prev", "c_prev")}
    for t in range(T):
        h_new = numpy.zeros((N, H))
        c_new = numpy.zeros((N, H))
        for n in range(N):
            k = float(cont[t, n])
            for j in range(H):
                pre = {}
                for gate, blk in BLOCK.items():
                    r = blk * H + j
                    v = b[r]
                    for d in range(D):
                        v += W_x[r, d] * x[t, n, d]
                    for m in range(H):
                        v += W_h[r, m] * k * h_prev[n, m]
                    if W_s is not None:
                        for e in range(s.shape[1]):
                            v += W_s[r, e] * s[n, e]
                    pre[gate] = v
                i, f, o = _sig(pre["i"]), _sig(pre["f"]), _sig(pre["o"])
                g = _act(pre["g"], cell_act)
                c = k * f * c_prev[n, j] + i * g
                h = o * _act(c, cell_act)
                for name, val in (
                    ("i", i),
                    ("f", f),
                    ("o", o),
                    ("g", g),
                    ("zg", pre["g"]),
                    ("c", c),
                    ("h", h),
                ):
                    out[name][t, n, j] = val
                out["h_prev"][t, n, j] = h_prev[n, j]
                out["c_prev"][t, n, j] = c_prev[n, j]
                c_new[n, j] = c
                h_new[n, j] = h
        h_prev, c_prev = h_new, c_new
    out["cont"] = numpy.array(cont, dtype=float)
    return out


def naive_eb_conserving(fw, p_h, x, W_x, W_h, W_s=None, s=None, cell_act="relu"):
    """The "eb" rule of docs/spec.md §4 by scalar loops over the unrolled graph.

    Returns ``(p_x (T,N,D), p_s (N,D_s) or None, p_h0 (N,H), p_c0 (N,H), lost (T,N))``.
    """
    T, N, D = x.shape
    H = W_h.shape[1]
    cont = fw["cont"]
    P_h = numpy.array(p_h, dtype=float)  # receives the recurrent contributions as they are computed
    p_x = numpy.zeros((T, N, D))
    p_s = None if s is None else numpy.zeros(s.shape)
    p_h0 = numpy.zeros((N, H))
    p_c0 = numpy.zeros((N, H))
    lost = numpy.zeros((T, N))
    carry_c = numpy.zeros((N, H))  # P(c_t) arriving from step t+1
    for t in range(T - 1, -1, -1):
        new_carry = numpy.zeros((N, H))
        for n in range(N):
            k = float(cont[t, n])
            for j in range(H):
                # h_t -> c_t
                ph = P_h[t, n, j]
                if _act(fw["c"][t, n, j], cell_act) == 0:
                    lost[t, n] += ph
                    pc = carry_c[n, j]
                else:
                    pc = carry_c[n, j] + ph
                # c_t -> {c_{t-1}, g_t}
                a = k * fw["f"][t, n, j] * fw["c_prev"][t, n, j]
                bb = fw["i"][t, n, j] * fw["g"][t, n, j]
                if a + bb == 0:
                    lost[t, n] += pc
                    continue
                new_carry[n, j] = pc * a / (a + bb)
                pg = pc * bb / (a + bb)
                # g_t -> {x_t, cont_t h_{t-1}, s}, g-block rows, W+ only, no bias
                r = BLOCK["g"] * H + j
                terms_x = [max(W_x[r, d], 0.0) * x[t, n, d] for d in range(D)]
                terms_h = [max(W_h[r, m], 0.0) * k * fw["h_prev"][t, n, m] for m in range(H)]
                terms_s = [] if s is None else [max(W_s[r, e], 0.0) * s[n, e] for e in range(s.shape[1])]
                Z = sum(terms_x) + sum(terms_h) + sum(terms_s)
                if Z == 0:
                    lost[t, n] += pg
                    continue
                for d in range(D):
                    p_x[t, n, d] += terms_x[d] * pg / Z
                for m in range(H):
                    if t > 0:
                        P_h[t - 1, n, m] += terms_h[m] * pg / Z
                    else:
                        p_h0[n, m] += terms_h[m] * pg / Z
                for e in range(len(terms_s)):
                    p_s[n, e] += terms_s[e] * pg / Z
        carry_c = new_carry
    p_c0[:] = carry_c
    return p_x, p_s, p_h0, p_c0, lost
