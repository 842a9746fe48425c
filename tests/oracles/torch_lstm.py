"""PyTorch float64 oracles for the LSTM: a hand-unrolled cell with autograd, the released code's EB
rebuilt with ``detach``, and the gate-order mapping from ``torch.nn.LSTM``.

Gate rows are located by explicit Caffe offsets (``[i; f; o; g]``) here, not by
the kernel's constant. Import only after ``pytest.importorskip("torch")``.
"""

import numpy
import torch

TORCH_GATE_ORDER = ("i", "f", "g", "o")  # torch.nn.LSTM's blocks on the 4H axis
CAFFE_BLOCK = {"i": 0, "f": 1, "o": 2, "g": 3}  # ours (Caffe's): [i; f; o; g]


def torch_block_perm(order):
    """``perm`` with ``ours_block[k] = torch_block[perm[k]]`` for our gate order ``order``."""
    return [TORCH_GATE_ORDER.index(name) for name in order]


def permute_blocks(a, perm):
    """Reorder the 4 blocks of the leading axis of ``a`` (NumPy) by ``perm``."""
    H = a.shape[0] // 4
    return numpy.concatenate([a[p * H : (p + 1) * H] for p in perm], axis=0)


def params_from_torch(lstm, layer, order):
    """``(W_x, b, W_h)`` float64 NumPy arrays in our gate order from a ``torch.nn.LSTM`` layer.

    torch's two biases are summed (``b = b_ih + b_hh``).
    """
    perm = torch_block_perm(order)
    get = lambda name: getattr(lstm, f"{name}_l{layer}").detach().to(torch.float64).numpy()  # noqa: E731
    W_x = permute_blocks(get("weight_ih"), perm)
    W_h = permute_blocks(get("weight_hh"), perm)
    b = permute_blocks(get("bias_ih") + get("bias_hh"), perm)
    return W_x, b, W_h


def _t(a, grad=False):
    return None if a is None else torch.tensor(numpy.asarray(a, dtype=numpy.float64), requires_grad=grad)


def unrolled(
    x, W_x, b, W_h, cont, h0, c0, cell_act, W_s=None, s=None, cut_recurrent=False, split_inputs=False
):
    """Hand-unrolled Caffe/SPEC LSTM in torch; returns ``(h (T,N,H), leaves)``.

    ``cut_recurrent`` detaches ``W_h (cont h_{t-1})`` (the branch receives no
    gradient). ``split_inputs`` makes ``u = W_x x`` (T, N, 4H) and ``v = W_s s``
    (N, 4H) leaves of their own, so that their gradients are the gate signal.
    """
    act = torch.relu if cell_act == "relu" else torch.tanh
    T, N, _ = x.shape
    H = W_h.shape[1]
    W_x, b, W_h, W_s, cont = _t(W_x), _t(b), _t(W_h), _t(W_s), _t(cont)
    leaves = {}
    if split_inputs:
        leaves["u"] = _t(numpy.asarray(x) @ numpy.asarray(W_x).T, grad=True)
        u = leaves["u"]
        if s is not None:
            leaves["v"] = _t(numpy.asarray(s) @ numpy.asarray(W_s).T, grad=True)
    else:
        leaves["x"] = _t(x, grad=True)
        u = leaves["x"] @ W_x.T
        if s is not None:
            leaves["s"] = _t(s, grad=True)
            leaves["v"] = leaves["s"] @ W_s.T
    leaves["h0"] = _t(numpy.zeros((N, H)) if h0 is None else h0, grad=True)
    leaves["c0"] = _t(numpy.zeros((N, H)) if c0 is None else c0, grad=True)
    h_prev, c_prev = leaves["h0"], leaves["c0"]
    blk = lambda z, name: z[:, CAFFE_BLOCK[name] * H : (CAFFE_BLOCK[name] + 1) * H]  # noqa: E731
    hs = []
    for t in range(T):
        k = cont[t][:, None]
        rec = (k * h_prev) @ W_h.T
        z = u[t] + b + (rec.detach() if cut_recurrent else rec)
        if s is not None:
            z = z + leaves["v"]
        i, f, o = torch.sigmoid(blk(z, "i")), torch.sigmoid(blk(z, "f")), torch.sigmoid(blk(z, "o"))
        g = act(blk(z, "g"))
        c_prev = k * f * c_prev + i * g
        h_prev = o * act(c_prev)
        hs.append(h_prev)
    return torch.stack(hs), leaves


def autograd_vjp(g_h, x, W_x, b, W_h, cont, h0=None, c0=None, cell_act="relu", W_s=None, s=None):
    """``(g_x, g_s, g_h0, g_c0)`` of ``<g_h, h>`` by torch autograd through the unrolled LSTM."""
    h, lv = unrolled(x, W_x, b, W_h, cont, h0, c0, cell_act, W_s, s)
    (h * _t(g_h)).sum().backward()
    g = lambda name: None if name not in lv else _grad_or_zeros(lv[name])  # noqa: E731
    return g("x"), g("s"), g("h0"), g("c0")


def _grad_or_zeros(leaf):
    return numpy.zeros(tuple(leaf.shape)) if leaf.grad is None else leaf.grad.numpy()


def _eb_linear(a, W, p):
    """EB linear rule in torch: ``a * W+^T (p / (W+ a))``, 0 where the normaliser is 0."""
    a, W, p = _t(a), _t(W), _t(p)
    W_pos = W.clamp(min=0)
    z = a @ W_pos.T
    q = torch.where(z != 0, p / torch.where(z != 0, z, torch.ones_like(z)), torch.zeros_like(z))
    return (a * (q @ W_pos)).numpy()


def caffe_eb(p_h, x, W_x, b, W_h, cont, h0=None, c0=None, cell_act="relu", W_s=None, s=None):
    """The released code's LSTM EB (docs/spec.md §4.3), built independently in torch.

    Gate signal by autograd with the recurrent branch detached; then the EB
    linear rule on the input branch (``Z = W_x+ x_t``) and on the static branch
    (``Z_s = W_s+ s``, signal summed over steps). Returns a dict with
    ``p_x, p_s, p_c0, p_h0, dz (T,N,4H), dz_s (N,4H)``.
    """
    h, lv = unrolled(x, W_x, b, W_h, cont, h0, c0, cell_act, W_s, s, cut_recurrent=True, split_inputs=True)
    (h * _t(p_h)).sum().backward()
    dz = lv["u"].grad.numpy()
    T, N, D = x.shape
    out = {
        "dz": dz,
        "p_x": _eb_linear(numpy.reshape(x, (T * N, D)), W_x, dz.reshape(T * N, -1)).reshape(T, N, D),
        "p_c0": _grad_or_zeros(lv["c0"]),
        "p_h0": _grad_or_zeros(lv["h0"]),  # None from autograd: h0 feeds only the cut branch
        "p_s": None,
    }
    if s is not None:
        out["dz_s"] = lv["v"].grad.numpy()
        out["p_s"] = _eb_linear(s, W_s, out["dz_s"])
    return out
