"""LSTM layer (Caffe's ``LSTM`` with the paper's ReLU cell): forward, two EB rules, gradient.

Shapes (time-major): ``x (T, N, D)``, static input ``s (N, D_s)``, clip markers
``cont (T, N)``, initial state ``h0, c0 (N, H)``, output ``h (T, N, H)``.
Weights (docs/spec.md §1): ``W_x (4H, D)``, ``b (4H,)``, ``W_h (4H, H)``, optional
``W_s (4H, D_s)``; the ``4H`` axis holds the gate blocks in :data:`GATE_ORDER`
(Caffe's ``LSTMUnit`` order i, f, o, g). Importers permute other orders into it.

Forward (docs/spec.md §4; Caffe ``lstm_layer.cpp`` + ``lstm_unit_layer.cpp``)::

    z_t = W_x x_t + b + W_h (cont_t h_{t-1}) [+ W_s s]     blocks [i | f | o | g]
    i, f, o = sigmoid(z^i), sigmoid(z^f), sigmoid(z^o);   g = act(z^g)
    c_t = cont_t f c_{t-1} + i g
    h_t = o act(c_t)

``act`` is ReLU (the paper, the released model) or tanh. ``docs/lstm.md`` states
both EB rules with their equations and a worked example.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp
from ._eb import check_signal, safe_divide

__all__ = [
    "GATE_ORDER",
    "CELL_ACTS",
    "LSTM_RULES",
    "LSTMParams",
    "LSTMCache",
    "LSTMSignals",
    "LSTMGrads",
    "gate_slice",
    "lstm_forward",
    "lstm_eb",
    "lstm_grad",
]

GATE_ORDER = ("i", "f", "o", "g")  # block order on the 4H axis (Caffe's LSTMUnit)
CELL_ACTS = ("relu", "tanh")
LSTM_RULES = (
    "caffe",
    "eb",
)  # the EB rules through the unrolled LSTM (docs/spec.md §4); drivers and CLI offer these


class LSTMParams(NamedTuple):
    """LSTM weights; the ``4H`` axis holds the gate blocks in :data:`GATE_ORDER`."""

    W_x: object  # (4H, D)   input weights
    b: object  # (4H,)      the only bias (torch's b_ih + b_hh)
    W_h: object  # (4H, H)   recurrent weights
    W_s: object = None  # (4H, D_s)  static-input weights (Caffe's W_xc_static), or None


class LSTMCache(NamedTuple):
    """What EB and the gradient need; never mutated."""

    x: object  # (T, N, D)
    params: LSTMParams
    cont: object  # (T, N)  clip markers, in x's dtype
    static: object  # (N, D_s) or None
    cell_act: str  # "relu" or "tanh"
    gates: object  # (T, N, 4H)  i, f, o = sigmoid, g = act, blocks in GATE_ORDER
    c: object  # (T, N, H)   cell states c_t
    act_c: object  # (T, N, H)  act(c_t)
    h_in: object  # (T, N, H)   recurrent input cont_t h_{t-1} (h_{-1} = h0)
    c_prev: object  # (T, N, H)  c_{t-1} (c_{-1} = c0), before the clip marker


class LSTMSignals(NamedTuple):
    """The result of :func:`lstm_eb` (use the fields by name: ``sig.p_x``).

    Every array carries the leading ``K`` axis when the incoming signal did.
    """

    p_x: object  # (T, N, D)   signal at the inputs x_t
    p_static: object  # (N, D_s) signal at the static input, or None without one
    p_h0: object  # (N, H)     signal that reached the initial hidden state h0
    p_c0: object  # (N, H)     signal that reached the initial cell state c0
    lost: object  # (T, N)     signal dropped at zero denominators, per step
    rule: str  # "eb" or "caffe"


class LSTMGrads(NamedTuple):
    """The result of :func:`lstm_grad` (fields by name: ``grads.g_x``)."""

    g_x: object  # (T, N, D)
    g_static: object  # (N, D_s) or None
    g_h0: object  # (N, H)
    g_c0: object  # (N, H)


def gate_slice(name, H):
    """The slice of gate block ``name`` (one of :data:`GATE_ORDER`) on a ``4H`` axis."""
    k = GATE_ORDER.index(name)
    return slice(k * H, (k + 1) * H)


def _sigmoid(z, *, xp):
    """Logistic function without overflow: ``exp`` only of ``-|z|``."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _act(z, cell_act, *, xp):
    return xp.maximum(z, 0) if cell_act == "relu" else xp.tanh(z)


def _act_deriv(a, cell_act):
    """Derivative of ``act`` at ``z`` from ``a = act(z)`` (ReLU: ``1[z > 0]``, Caffe's convention at 0)."""
    return (a > 0).astype(a.dtype) if cell_act == "relu" else 1 - a * a


def _as_params(params):
    if isinstance(params, LSTMParams):
        return params
    if isinstance(params, tuple) and len(params) in (3, 4):
        return LSTMParams(*params)
    raise TypeError(
        f"lstm_forward: params must be an LSTMParams(W_x, b, W_h, W_s=None), got {type(params).__name__}"
    )


def _shape(a):
    return None if a is None else tuple(a.shape)


def _check(x, p, cont, static, h0, c0, cell_act):
    if cell_act not in CELL_ACTS:
        raise ValueError(f"lstm_forward: cell_act must be one of {CELL_ACTS}, got {cell_act!r}")
    if x.ndim != 3:
        raise ValueError(f"lstm_forward: x must be (T, N, D) time-major, got shape {tuple(x.shape)}")
    T, N, D = x.shape
    if p.W_h.ndim != 2 or p.W_h.shape[0] != 4 * p.W_h.shape[1]:
        raise ValueError(f"lstm_forward: W_h must be (4H, H), got shape {tuple(p.W_h.shape)}")
    H = p.W_h.shape[1]
    if _shape(p.W_x) != (4 * H, D):
        raise ValueError(f"lstm_forward: W_x must be (4H, D) = {(4 * H, D)}, got shape {_shape(p.W_x)}")
    if _shape(p.b) != (4 * H,):
        raise ValueError(f"lstm_forward: b must be (4H,) = {(4 * H,)}, got shape {_shape(p.b)}")
    if (static is None) != (p.W_s is None):
        raise ValueError(
            "lstm_forward: a static input needs W_s and W_s needs a static input "
            f"(got static {_shape(static)}, W_s {_shape(p.W_s)})"
        )
    if static is not None:
        if static.ndim != 2 or static.shape[0] != N:
            raise ValueError(
                f"lstm_forward: static must be (N, D_s) with N = {N}, got shape {tuple(static.shape)}"
            )
        if _shape(p.W_s) != (4 * H, static.shape[1]):
            raise ValueError(
                f"lstm_forward: W_s must be (4H, D_s) = {(4 * H, static.shape[1])}, got {_shape(p.W_s)}"
            )
    for name, a in (("h0", h0), ("c0", c0)):
        if a is not None and _shape(a) != (N, H):
            raise ValueError(f"lstm_forward: {name} must be (N, H) = {(N, H)}, got shape {_shape(a)}")
    if cont is not None and _shape(cont) != (T, N):
        raise ValueError(f"lstm_forward: cont must be (T, N) = {(T, N)}, got shape {_shape(cont)}")
    arrays = {
        "x": x,
        "W_x": p.W_x,
        "b": p.b,
        "W_h": p.W_h,
        "W_s": p.W_s,
        "static": static,
        "h0": h0,
        "c0": c0,
    }
    dtypes = {k: a.dtype for k, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) != 1:
        raise TypeError(f"lstm_forward: dtypes differ ({', '.join(f'{k} {v}' for k, v in dtypes.items())})")
    return T, N, D, H


def _clip_markers(cont, T, N, dtype, *, xp):
    if cont is None:  # a single clip: 0 at the first step, 1 after
        cont = xp.ones((T, N), dtype=dtype)
        cont[0] = 0
        return cont
    cont = xp.asarray(cont)
    if not bool(xp.all((cont == 0) | (cont == 1))):
        raise ValueError("lstm_forward: cont (clip markers) must hold only 0 (a clip's first step) and 1")
    return cont.astype(dtype)


def lstm_forward(x, params, *, cont=None, static=None, h0=None, c0=None, cell_act="relu"):
    """Run the LSTM over a whole sequence.

    Parameters
    ----------
    x : array of shape (T, N, D)
        Inputs, time-major.
    params : LSTMParams
        ``W_x (4H, D)``, ``b (4H,)``, ``W_h (4H, H)``, ``W_s (4H, D_s)`` or None;
        gate blocks in :data:`GATE_ORDER`.
    cont : array of shape (T, N) or None
        Clip markers, 0 or 1. Default: 0 at the first step, 1 after (one clip).
    static : array of shape (N, D_s) or None
        Static input added to every step's gates through ``W_s`` (no bias).
    h0, c0 : array of shape (N, H) or None
        Initial state (default zeros). Used only where ``cont[0] == 1``.
    cell_act : {"relu", "tanh"}
        ``act`` of the candidate ``g`` and of the cell output.

    Returns
    -------
    h : array of shape (T, N, H)
        Every hidden state.
    cache : LSTMCache

    Notes
    -----
    docs/spec.md §4 / paper §4 ("we use ReLU nonlinearities ... instead of tanh")::

        z_t = W_x x_t + b + W_h (cont_t h_{t-1}) [+ W_s s]
        c_t = cont_t sigmoid(z^f) c_{t-1} + sigmoid(z^i) act(z^g)
        h_t = sigmoid(z^o) act(c_t)

    As Caffe's ``LSTMUnit``, ``cont_t = 0`` wipes both ``h_{t-1}`` and
    ``c_{t-1}`` (Caffe folds ``cont`` into ``f``; identical for 0/1 markers).
    ``W_x x_t + b`` is one GEMM over all steps; only the recurrent product
    loops over time.
    """
    params = _as_params(params)
    W_x, b, W_h, W_s = params
    xp = get_xp(x, W_x, b, W_h, W_s, static, h0, c0, cont)
    T, N, D, H = _check(x, params, cont, static, h0, c0, cell_act)
    dt = x.dtype
    cont = _clip_markers(cont, T, N, dt, xp=xp)
    h_t = xp.zeros((N, H), dtype=dt) if h0 is None else h0
    c_t = xp.zeros((N, H), dtype=dt) if c0 is None else c0
    z_in = (x.reshape(T * N, D) @ W_x.T).reshape(T, N, 4 * H) + b  # (T, N, 4H)  every step at once
    if static is not None:
        z_in = z_in + static @ W_s.T  # (T, N, 4H)  + (N, 4H)
    gates = xp.empty((T, N, 4 * H), dtype=dt)
    c = xp.empty((T, N, H), dtype=dt)
    act_c = xp.empty((T, N, H), dtype=dt)
    h = xp.empty((T, N, H), dtype=dt)
    h_in = xp.empty((T, N, H), dtype=dt)
    c_prev = xp.empty((T, N, H), dtype=dt)
    sg = gate_slice("g", H)
    for t in range(T):
        k = cont[t][:, None]  # (N, 1)
        h_in[t] = k * h_t  # (N, H)  Caffe's h_conted
        c_prev[t] = c_t
        z = z_in[t] + h_in[t] @ W_h.T  # (N, 4H)
        a = _sigmoid(z, xp=xp)  # (N, 4H)  i, f, o (the g block is replaced next)
        a[:, sg] = _act(z[:, sg], cell_act, xp=xp)
        gates[t] = a
        i, f, o, g = (a[:, gate_slice(n, H)] for n in ("i", "f", "o", "g"))
        c_t = k * f * c_t + i * g  # (N, H)
        c[t] = c_t
        act_c[t] = _act(c_t, cell_act, xp=xp)
        h_t = o * act_c[t]  # (N, H)
        h[t] = h_t
    return h, LSTMCache(x, params, cont, static, cell_act, gates, c, act_c, h_in, c_prev)


def _stack(p, cache, name):
    """Return ``(p with a leading K axis, stacked?)`` after checking the shape against h."""
    stacked = check_signal(p, cache.c.shape, name)
    return (p if stacked else p[None]), stacked


def _unstack(stacked, *arrays):
    return tuple(a if (stacked or a is None) else a[0] for a in arrays)


def _cell_backward(G, cache, *, recurrent, xp, record=None):
    """Back through the unrolled cells: ``dz (K, T, N, 4H)``, and what reaches ``h0``, ``c0``.

    ``G (K, T, N, H)`` arrives at the hidden states. With ``recurrent`` the
    gate signal also flows through ``W_h`` to ``h_{t-1}`` (the true gradient);
    without it that branch receives nothing (the released code's EB). A
    ``record`` dict receives the per-step totals at ``h_t`` and ``c_t`` and what
    the recurrent branch sends to ``h_{t-1}`` (:func:`lstm_eb`'s ``record``).
    """
    gates, cont, c_prev, act_c, W_h = cache.gates, cache.cont, cache.c_prev, cache.act_c, cache.params.W_h
    K, T, N, H = G.shape
    i, f, o, g = (gates[..., gate_slice(n, H)] for n in ("i", "f", "o", "g"))  # (T, N, H) each
    k = cont[..., None]  # (T, N, 1)
    # local derivatives, every step at once: dz^o = dh * coef_o; dz^{i,f,g} = kappa * coef_{i,f,g}
    coef = {
        "i": g * i * (1 - i),
        "f": k * c_prev * f * (1 - f),
        "o": act_c * o * (1 - o),
        "g": i * _act_deriv(g, cache.cell_act),
    }  # (T, N, H) each
    B = o * _act_deriv(act_c, cache.cell_act)  # (T, N, H)  d h_t / d c_t
    keep = k * f  # (T, N, H)  d c_t / d c_{t-1}
    dz = xp.empty((K, T, N, 4 * H), dtype=G.dtype)
    dh_rec = xp.zeros((K, N, H), dtype=G.dtype)  # arriving at h_t from step t+1
    dc = xp.zeros((K, N, H), dtype=G.dtype)  # arriving at c_t from step t+1
    steps = _per_step(record, ("p_h", "p_c", "p_rec"), (K, T, N, H), G.dtype, xp=xp)  # None without a record
    for t in range(T - 1, -1, -1):
        dh = G[:, t] + dh_rec  # (K, N, H)
        kappa = dc + dh * B[t]  # (K, N, H)  total signal at c_t
        for n in GATE_ORDER:
            dz[:, t, :, gate_slice(n, H)] = (dh if n == "o" else kappa) * coef[n][t]
        dc = kappa * keep[t]  # (K, N, H)  to c_{t-1}
        if recurrent:
            dh_rec = k[t] * (dz[:, t] @ W_h)  # (K, N, H)  through W_h (cont_t h_{t-1})
        if steps is not None:  # zeros for p_rec without the recurrent path
            steps["p_h"][:, t], steps["p_c"][:, t], steps["p_rec"][:, t] = dh, kappa, dh_rec
    return dz, dh_rec, dc


def _per_step(record, names, shape, dtype, *, xp):
    """``record`` with a zero array of ``shape`` under each of ``names`` (filled step by step), or None."""
    if record is None:
        return None
    for name in names:
        record[name] = xp.zeros(shape, dtype=dtype)
    return record


def _unstack_record(record, stacked):
    """Drop the recorded signals' leading ``K`` axis (``Z`` has none) when ``p_h`` had none."""
    if record is not None and not stacked:
        for name in record:
            if name != "Z":
                record[name] = record[name][0]


def lstm_grad(g_h, cache, *, record=None):
    """Gradient of ``<g_h, h>`` with respect to the inputs (BP-R), recurrent path included.

    Parameters
    ----------
    g_h : array of shape (T, N, H) or (K, T, N, H)
        Gradient arriving at every hidden state (zero where nothing arrives).
    cache : LSTMCache
    record : dict, optional
        Filled with the per-step gradients under the names of :func:`lstm_eb`'s
        ``record``: ``p_h`` (total at ``h_t``), ``p_c`` (total at ``c_t``),
        ``p_rec`` (what ``W_h`` sends to ``h_{t-1}``), ``dz`` (at the gate
        pre-activations). Nothing returned changes.

    Returns
    -------
    LSTMGrads
        ``g_x (T, N, D)``, ``g_static (N, D_s)`` or None, ``g_h0 (N, H)``,
        ``g_c0 (N, H)`` (each with the leading ``K`` axis when ``g_h`` has it).

    Notes
    -----
    Backpropagation through time of the forward of :func:`lstm_forward` with
    the derivatives of its actual nonlinearities (docs/spec.md §3): sigmoid', and
    ``1[z > 0]`` (ReLU, 0 at 0 as Caffe) or ``1 - tanh^2``. ``W_x`` is applied
    to the gate gradients of all steps in one GEMM after the time loop.
    """
    xp = get_xp(g_h, cache.x)
    G, stacked = _stack(g_h, cache, "lstm_grad")
    W_x, _, _, W_s = cache.params
    K, T, N, H = G.shape
    dz, g_h0, g_c0 = _cell_backward(G, cache, recurrent=True, xp=xp, record=record)  # (K, T, N, 4H)
    g_x = (dz.reshape(K * T * N, 4 * H) @ W_x).reshape(K, T, N, -1)  # (K, T, N, D)
    g_s = None if cache.static is None else dz.sum(axis=1) @ W_s  # (K, N, D_s)
    if record is not None:
        record["dz"] = dz
        _unstack_record(record, stacked)
    return LSTMGrads(*_unstack(stacked, g_x, g_s, g_h0, g_c0))


def lstm_eb(p_h, cache, *, rule, allow_tanh=False, record=None):
    """Excitation backward through the unrolled LSTM, by one of two named rules.

    Parameters
    ----------
    p_h : array of shape (T, N, H) or (K, T, N, H)
        Signal arriving at the hidden states, non-zero at any set of steps
        (the last step for the released demo); ``K`` stacked signals allowed.
    cache : LSTMCache
    rule : {"eb", "caffe"}
        ``"eb"``: the paper's EB applied to the unrolled unit, conserving.
        ``"caffe"``: the released code (sbargal/Caffe-ExcitationBP-RNNs), exactly.
    allow_tanh : bool
        Allow ``rule="eb"`` on a tanh cell (assumption A1 of the paper fails:
        ``g``, ``c``, ``h`` can be negative, so signals can be signed).
    record : dict, optional
        Filled with the rule's per-step quantities (named as in docs/lstm.md
        §2's table), each ``(T, N, ...)`` with the leading ``K``
        axis when ``p_h`` has it: ``p_h`` (``P(h_t)``, the total at ``h_t``),
        ``p_c`` (``P(c_t)``; ``kappa_t`` for ``"caffe"``), ``p_rec`` (what the
        recurrent branch ``W_h h_{t-1}`` receives at step ``t``; zeros for
        ``"caffe"``), ``lost`` ``(T, N)``, the normaliser ``Z`` (never with a
        ``K`` axis) and, for ``"eb"``, ``p_g`` (``P(g_t)``) with the g-block ``Z
        (T, N, H)``, for ``"caffe"``, ``dz`` (the gate signals ``(T, N, 4H)`` in
        :data:`GATE_ORDER`) with ``Z = W_x+ x_t (T, N, 4H)``. For the
        reference's trace (:mod:`ebr_ref.grounding.trace`); nothing returned
        changes.

    Returns
    -------
    LSTMSignals
        ``p_x (T, N, D)``, ``p_static (N, D_s)`` or None, ``p_h0 (N, H)``,
        ``p_c0 (N, H)``, ``lost (T, N)``, ``rule``; arrays carry the leading
        ``K`` axis when ``p_h`` does. Use the fields by name
        (``sig = lstm_eb(p_h, cache, rule="eb"); sig.p_x``). A stacked LSTM
        composes by feeding ``sig.p_x`` of the upper layer as ``p_h`` of the
        layer below.

    Raises
    ------
    ValueError
        For an unknown rule, a badly shaped signal, or ``rule="eb"`` on a tanh
        cell without ``allow_tanh=True``.

    Notes
    -----
    ``rule="eb"`` (docs/spec.md §4; paper eqs. 1-4 on the unrolled unit; gates are
    multiplicative weights, never signal carriers)::

        P(c_t)     += P(h_t)                          lost where act(c_t) == 0
        P(c_{t-1}) += P(c_t) cont_t f_t c_{t-1} / c_t  lost where c_t == 0
        P(g_t)      = P(c_t) i_t g_t / c_t
        Z_t = W_x^g+ x_t + W_h^g+ (cont_t h_{t-1}) + W_s^g+ s      (g-block rows, no bias)
        P(x_t)      = x_t * W_x^g+^T (P(g_t) / Z_t)    lost where Z_t == 0
        P(h_{t-1}) += cont_t h_{t-1} * W_h^g+^T (P(g_t) / Z_t)
        P(s)       += s * W_s^g+^T (P(g_t) / Z_t)

    Balance, per sample and exactly to rounding: ``sum(p_h) == sum(p_x) +
    sum(p_static) + sum(p_h0) + sum(p_c0) + sum(lost)``.

    ``rule="caffe"`` (docs/spec.md §4.3): the gate signal
    ``dz_t`` is the ordinary gradient of the cell (sigmoid derivatives, no
    normaliser) with the recurrent branch ``W_h h_{t-1}`` receiving nothing,
    so signal travels back in time only through ``c``. ``dz_t`` goes in full
    to the input branch, ``P(x_t) = x_t * W_x+^T (dz_t / (W_x+ x_t))``, and in
    full to the static branch, ``P(s) = s * W_s+^T (sum_t dz_t / (W_s+ s))``
    (the released code's GPU path). Not conserving; ``p_h0`` is exactly 0 and
    ``lost`` is the gate signal each branch drops where its normaliser is 0
    (a diagnostic, not a balance term). Both rules: 0/0 -> 0, no epsilon,
    bias never in ``Z``; the input-branch EB runs for all steps at once after
    the time loop.
    """
    if rule not in LSTM_RULES:
        raise ValueError(f"lstm_eb: rule must be one of {LSTM_RULES}, got {rule!r}")
    if rule == "eb" and cache.cell_act != "relu" and not allow_tanh:
        raise ValueError(
            "lstm_eb: rule 'eb' needs cell_act='relu' (assumption A1 of the paper: non-negative g, c, h); "
            "this LSTM uses cell_act='tanh'. Pass allow_tanh=True to run it anyway (signals may be signed)."
        )
    xp = get_xp(p_h, cache.x)
    P, stacked = _stack(p_h, cache, "lstm_eb")
    run = _eb_conserving if rule == "eb" else _eb_caffe
    out = run(P, cache, xp=xp, record=record)
    _unstack_record(record, stacked)
    return LSTMSignals(*_unstack(stacked, *out), rule)


def _eb_conserving(P, cache, *, xp, record=None):
    """Rule "eb": returns ``(p_x, p_static, p_h0, p_c0, lost)``, each with the K axis."""
    x, static, gates, h_in = cache.x, cache.static, cache.gates, cache.h_in
    W_x, _, W_h, W_s = cache.params
    K, T, N, H = P.shape
    D = x.shape[-1]
    sg = gate_slice("g", H)
    Wx_pos = xp.maximum(W_x[sg], 0)  # (H, D)  g-block rows, excitatory only
    Wh_pos = xp.maximum(W_h[sg], 0)  # (H, H)
    z = (x.reshape(T * N, D) @ Wx_pos.T).reshape(T, N, H) + h_in @ Wh_pos.T  # (T, N, H)  step 1, all steps
    if static is not None:
        Ws_pos = xp.maximum(W_s[sg], 0)  # (H, D_s)
        z = z + static @ Ws_pos.T  # (T, N, H)
    share_c = (
        cache.cont[..., None] * gates[..., gate_slice("f", H)] * cache.c_prev
    )  # (T, N, H)  cont f c_{t-1}
    share_g = gates[..., gate_slice("i", H)] * gates[..., sg]  # (T, N, H)  i g
    den = share_c + share_g  # (T, N, H)  = c_t
    frac_c = safe_divide(share_c, den, xp=xp)  # (T, N, H)  in [0, 1]: fractions first, so no overflow
    frac_g = safe_divide(share_g, den, xp=xp)  # (T, N, H)  (0 where c_t == 0)
    alive = cache.act_c != 0  # (T, N, H)  h_t -> c_t passes
    q = xp.empty((K, T, N, H), dtype=P.dtype)  # P(g_t) / Z_t
    lost = xp.empty((K, T, N), dtype=P.dtype)
    p_hrec = xp.zeros((K, N, H), dtype=P.dtype)  # arriving at h_t from step t+1
    p_c = xp.zeros((K, N, H), dtype=P.dtype)  # arriving at c_t from step t+1
    steps = _per_step(record, ("p_h", "p_c", "p_g", "p_rec"), (K, T, N, H), P.dtype, xp=xp)  # or None
    for t in range(T - 1, -1, -1):
        p_ht = P[:, t] + p_hrec  # (K, N, H)
        p_ct = p_c + xp.where(alive[t], p_ht, 0)  # (K, N, H)  h_t -> c_t (gate o is a weight)
        p_c = p_ct * frac_c[t]  # (K, N, H)  -> c_{t-1}
        p_g = p_ct * frac_g[t]  # (K, N, H)  -> g_t
        q[:, t] = safe_divide(p_g, z[t], xp=xp)  # (K, N, H)  step 2, 0 where Z == 0
        p_hrec = h_in[t] * (q[:, t] @ Wh_pos)  # (K, N, H)  steps 3-4 for h_{t-1}
        dropped = xp.where(alive[t], 0, p_ht) + xp.where(den[t] == 0, p_ct, 0) + xp.where(z[t] == 0, p_g, 0)
        lost[:, t] = dropped.sum(axis=-1)  # (K, N)
        if steps is not None:
            steps["p_h"][:, t], steps["p_c"][:, t] = p_ht, p_ct
            steps["p_g"][:, t], steps["p_rec"][:, t] = p_g, p_hrec
    if record is not None:
        record["Z"], record["lost"] = z, lost  # (T, N, H), (K, T, N)
    p_x = x * (q.reshape(K * T * N, H) @ Wx_pos).reshape(K, T, N, D)  # (K, T, N, D)  steps 3-4, all steps
    p_s = None if static is None else static * (q.sum(axis=1) @ Ws_pos)  # (K, N, D_s)
    return p_x, p_s, p_hrec, p_c, lost


def _eb_caffe(P, cache, *, xp, record=None):
    """Rule "caffe": returns ``(p_x, p_static, p_h0, p_c0, lost)``, each with the K axis."""
    x, static = cache.x, cache.static
    W_x, _, _, W_s = cache.params
    K, T, N, H = P.shape
    D = x.shape[-1]
    dz, _, p_c0 = _cell_backward(P, cache, recurrent=False, xp=xp, record=record)  # (K, T, N, 4H)  W_h gets 0
    Wx_pos = xp.maximum(W_x, 0)  # (4H, D)
    z = (x.reshape(T * N, D) @ Wx_pos.T).reshape(T, N, 4 * H)  # (T, N, 4H)  step 1, no bias, no W_h term
    s = safe_divide(dz, z, xp=xp)  # (K, T, N, 4H)  step 2
    p_x = x * (s.reshape(K * T * N, 4 * H) @ Wx_pos).reshape(K, T, N, D)  # (K, T, N, D)  steps 3-4
    lost = xp.where(z == 0, dz, 0).sum(axis=-1)  # (K, T, N)
    p_s = None
    if static is not None:  # the full dz also goes to the static branch (GPU path of the released code)
        Ws_pos = xp.maximum(W_s, 0)  # (4H, D_s)
        z_s = static @ Ws_pos.T  # (N, 4H)  step 1
        p_s = static * (safe_divide(dz.sum(axis=1), z_s, xp=xp) @ Ws_pos)  # (K, N, D_s)  steps 2-4
        lost = lost + xp.where(z_s == 0, dz, 0).sum(axis=-1)  # (K, T, N)
    if record is not None:
        record["dz"], record["Z"], record["lost"] = dz, z, lost  # (K, T, N, 4H), (T, N, 4H), (K, T, N)
    return p_x, p_s, xp.zeros((K, N, H), dtype=P.dtype), p_c0, lost
