"""Reference computations for the weights_io tests (no weights_io code involved).

* :func:`lstm_ref` -- a plain NumPy LSTM in ebr_ref's canonical parameter
  convention (gate blocks i, f, o, g, one bias, optional clip markers), the
  equations of SPEC.md §4 written out once per time step.
* :func:`caffe_lstm_torch` -- Caffe's LSTM layer unrolled by hand in torch,
  from Caffe's own blobs (W_xc, b_c, W_hc; LSTMUnit: i, f, o, g), with the
  cell nonlinearity as an option (the released EB-RNN fork uses ReLU).
* :func:`torch_spec_forward` -- a torch.nn.functional forward of a layer-spec
  list (the documented spec semantics), used to check converted CNN weights
  against the source framework's outputs.
"""

from __future__ import annotations

import numpy


def _sigmoid(z):
    return 1.0 / (1.0 + numpy.exp(-z))


def lstm_ref(x, W_x, b, W_h, *, cell_act="tanh", cont=None):
    """h of shape (T, N, H) for x of shape (T, N, D); gate blocks i, f, o, g."""
    T, N, _ = x.shape
    H = W_h.shape[1]
    act = numpy.tanh if cell_act == "tanh" else (lambda v: numpy.maximum(v, 0))
    h = numpy.zeros((N, H))
    c = numpy.zeros((N, H))
    out = []
    for t in range(T):
        k = 1.0 if cont is None else cont[t]
        z = x[t] @ W_x.T + b + (k * h) @ W_h.T
        i, f, o, g = (z[:, j * H : (j + 1) * H] for j in range(4))
        i, f, o, g = _sigmoid(i), _sigmoid(f), _sigmoid(o), act(g)
        c = k * f * c + i * g
        h = o * act(c)
        out.append(h)
    return numpy.stack(out)


def caffe_lstm_torch(x, W_xc, b_c, W_hc, cont, *, cell_act="relu"):
    """Caffe's unrolled LSTM (lstm_layer.cpp + LSTMUnit) in torch, float64.

    x (T, N, D), cont (T, N); returns h (T, N, H).
    """
    import torch

    x = torch.as_tensor(numpy.asarray(x, numpy.float64))
    W_xc, b_c, W_hc = (torch.as_tensor(numpy.asarray(a, numpy.float64)) for a in (W_xc, b_c, W_hc))
    cont = torch.as_tensor(numpy.asarray(cont, numpy.float64))
    T, N, _ = x.shape
    H = W_hc.shape[1]
    act = torch.tanh if cell_act == "tanh" else torch.relu
    x_transform = torch.einsum("tnd,gd->tng", x, W_xc) + b_c  # InnerProduct x_transform, axis 2
    h = torch.zeros(N, H, dtype=torch.float64)
    c = torch.zeros(N, H, dtype=torch.float64)
    hs = []
    for t in range(T):
        h_conted = cont[t][:, None] * h  # Scale layer h_conted_{t-1}
        gate = h_conted @ W_hc.T + x_transform[t]  # Eltwise SUM of transform_t and the x slice
        i = torch.sigmoid(gate[:, :H])
        f = torch.sigmoid(gate[:, H : 2 * H]) * cont[t][:, None]  # LSTMUnit folds cont into f
        o = torch.sigmoid(gate[:, 2 * H : 3 * H])
        g = act(gate[:, 3 * H :])
        c = f * c + i * g
        h = o * act(c)
        hs.append(h)
    return torch.stack(hs).numpy()


def torch_spec_forward(layers, params, x):
    """Forward a per-frame CNN (conv/relu/pools/lrn/dropout/flatten/fc layer specs) in torch, float64.

    Stops before the first ``lstm`` layer and returns ``(output, index of the next layer)``.
    """
    import torch
    import torch.nn.functional as F

    def p(name):
        return torch.as_tensor(numpy.asarray(params[name], numpy.float64))

    h = torch.as_tensor(numpy.asarray(x, numpy.float64))
    for k, L in enumerate(layers):
        t, n = L["type"], L["name"]
        if t == "conv":
            h = F.conv2d(
                h,
                p(f"{n}.weight"),
                p(f"{n}.bias") if L["bias"] else None,
                stride=L["stride"],
                padding=L["padding"],
                dilation=L["dilation"],
                groups=L["groups"],
            )
        elif t == "relu":
            h = torch.relu(h)
        elif t == "maxpool":
            h = F.max_pool2d(h, L["kernel"], L["stride"], L["padding"], ceil_mode=L["ceil_mode"])
        elif t == "avgpool":
            h = F.avg_pool2d(
                h,
                L["kernel"],
                L["stride"],
                L["padding"],
                ceil_mode=L["ceil_mode"],
                count_include_pad=L["count_include_pad"],
            )
        elif t == "lrn":
            h = F.local_response_norm(h, L["size"], L["alpha"], L["beta"], L["k"])
        elif t == "dropout":
            pass
        elif t == "flatten":
            h = h.flatten(1)
        elif t == "fc":
            h = h @ p(f"{n}.weight").T + (p(f"{n}.bias") if L["bias"] else 0)
        elif t == "lstm":
            return h.numpy(), k
        else:
            raise ValueError(f"no reference for layer type {t}")
    return h.numpy(), len(layers)
