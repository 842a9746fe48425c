"""PyTorch peers of the engine's models, built from the same canonical parameters (for the benchmarks).

:func:`torch_vgg16` is a torchvision VGG16 carrying an ``ebr_ref`` VGG16's weights
(TorchRay's ``excitation_backprop`` runs on it); :class:`TorchVggLstm` is the
released VGG16-LSTM (VGG16 to fc7, the ReLU-cell LSTM of docs/spec.md §4.1, fc8
at every step) written with torch operations, so that its forward and autograd
backward time what a PyTorch user would run. :class:`CaffeLSTM` is that LSTM as
a torch module with Caffe's clip markers, a ReLU or tanh cell; the training
scripts (``train_synthetic.py``, ``train_motion.py``) train it. None of them uses
engine code beyond reading ``model.params``. Imported by the scripts of this
folder (run as scripts, so the folder is on ``sys.path``).
"""

import numpy
import torch
import torchvision


def _fc(params, name):
    """A float64 ``torch.nn.Linear`` holding the fc layer ``name``."""
    W = torch.from_numpy(params[f"{name}.weight"])
    fc = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
    with torch.no_grad():
        fc.weight.copy_(W)
        fc.bias.copy_(torch.from_numpy(params[f"{name}.bias"]))
    return fc


def torch_vgg16(model, *, top="fc8", dtype=numpy.float64):
    """A torchvision VGG16 (eval mode) with the weights of ``model`` (an ``ebr_ref`` VGG16 or VGG16-LSTM).

    Parameters
    ----------
    model : ebr_ref.models.Model
        Its ``conv1_1 .. conv5_3``, ``fc6``, ``fc7`` (and ``fc8`` when ``top="fc8"``) are copied.
    top : {"fc8", "fc7"}
        ``"fc7"`` stops after ``relu7``/``drop7`` (the CNN part of a VGG16-LSTM).
    dtype : numpy dtype

    Returns
    -------
    net : torch.nn.Module
        torchvision's layer layout, with no adaptive pooling (the engine has none: its fc6 reads pool5
        flattened, which is what torchvision computes at 224 x 224) and no in-place ReLU (TorchRay's probe
        makes a layer's output a leaf).
    conv5_1 : str
        The module name of conv5_1, for TorchRay's ``saliency_layer``.
    """
    params = {k: backend_to_numpy(v).astype(numpy.float64) for k, v in model.params.items()}
    net = torchvision.models.vgg16(weights=None).eval().to(torch.float64)
    net.avgpool = torch.nn.Identity()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    names = [n for n in model.layer_names if n.startswith("conv")]
    with torch.no_grad():
        for m, n in zip(convs, names, strict=True):
            m.weight.copy_(torch.from_numpy(params[f"{n}.weight"]))
            m.bias.copy_(torch.from_numpy(params[f"{n}.bias"]))
    net.classifier[0] = _fc(params, "fc6")
    net.classifier[3] = _fc(params, "fc7")
    if top == "fc8":
        net.classifier[6] = _fc(params, "fc8")
    else:
        net.classifier = net.classifier[:6]
    net = net.to(torch.float64 if dtype == numpy.float64 else torch.float32)
    conv5_1 = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)][10]
    return net, f"features.{conv5_1}"


def backend_to_numpy(a):
    """A host NumPy array of a NumPy or CuPy parameter."""
    return a.get() if hasattr(a, "get") else numpy.asarray(a)


class CaffeLSTM(torch.nn.Module):
    """docs/spec.md §4's LSTM, gate blocks i, f, o, g, Caffe's clip markers, a ReLU (default) or tanh cell.

    ``z_t = W_x x_t + b + W_h (cont_t h_{t-1})``; ``i, f, o = sigmoid(.)``,
    ``g = act(z^g)``; ``c_t = cont_t f c_{t-1} + i g``; ``h_t = o act(c_t)``.
    Parameters ``W_x (4H, D)``, ``b (4H,)``, ``W_h (4H, H)`` (ebr_ref's names and layouts).
    """

    def __init__(self, input_size, hidden, cell_act="relu"):
        super().__init__()
        self.hidden = hidden
        self.act = {"relu": torch.relu, "tanh": torch.tanh}[cell_act]
        bound = 1.0 / hidden**0.5
        self.W_x = torch.nn.Parameter(torch.empty(4 * hidden, input_size).uniform_(-bound, bound))
        self.b = torch.nn.Parameter(torch.zeros(4 * hidden))
        self.W_h = torch.nn.Parameter(torch.empty(4 * hidden, hidden).uniform_(-bound, bound))

    def forward(self, x, cont):
        """``x (T, N, D)``, ``cont (T, N)`` -> ``h (T, N, H)``."""
        T, N, _ = x.shape
        H = self.hidden
        z_in = x @ self.W_x.T + self.b  # (T, N, 4H)
        h = x.new_zeros(N, H)
        c = x.new_zeros(N, H)
        out = []
        for t in range(T):
            k = cont[t][:, None]  # (N, 1)
            z = z_in[t] + (k * h) @ self.W_h.T  # (N, 4H)
            i = torch.sigmoid(z[:, :H])
            f = torch.sigmoid(z[:, H : 2 * H])
            o = torch.sigmoid(z[:, 2 * H : 3 * H])
            g = self.act(z[:, 3 * H :])
            c = k * f * c + i * g
            h = o * self.act(c)
            out.append(h)
        return torch.stack(out)


class TorchVggLstm(torch.nn.Module):
    """The VGG16-LSTM of ``model`` in torch: VGG16 to fc7 per frame, the ReLU LSTM over frames, fc8 per step.

    The LSTM follows docs/spec.md §4.1 with the default clip markers (a new clip at frame 0, zero initial
    state): gate blocks in the engine's order i, f, o, g, ``c_t = f c_{t-1} + i relu(z_g)``,
    ``h_t = o relu(c_t)``.
    """

    def __init__(self, model, *, dtype=numpy.float32):
        super().__init__()
        self.cnn, _ = torch_vgg16(model, top="fc7", dtype=dtype)
        tdtype = torch.float64 if dtype == numpy.float64 else torch.float32
        p = {k: torch.from_numpy(backend_to_numpy(v)).to(tdtype) for k, v in model.params.items()}
        H, D = p["lstm1.W_h"].shape[1], p["lstm1.W_x"].shape[1]
        self.lstm1 = CaffeLSTM(D, H).to(tdtype)
        with torch.no_grad():
            for name in ("W_x", "b", "W_h"):
                getattr(self.lstm1, name).copy_(p[f"lstm1.{name}"])
        self.fc8 = torch.nn.Linear(*p["fc8.weight"].shape[::-1], dtype=tdtype)
        with torch.no_grad():
            self.fc8.weight.copy_(p["fc8.weight"])
            self.fc8.bias.copy_(p["fc8.bias"])
        self.eval()

    def forward(self, clip):
        """Logits ``(T, classes)`` of a clip ``(T, 3, S, S)``."""
        x = self.cnn(clip)[:, None]  # (T, 1, D)
        cont = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        cont[0] = 0  # a new clip at frame 0
        return self.fc8(self.lstm1(x, cont)[:, 0])  # (T, classes)
