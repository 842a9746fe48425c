"""External oracles for the CNN kernels composed into a network.

On random float64 VGG-style nets with non-negative input, EB down to the input
equals zennit's ``ExcitationBackprop`` composite (bias excluded through
``zero_params='bias'``, stabiliser 1e-30 so that it does not matter), and BP
equals torch autograd. The torch network is built from the layer list here;
nothing of ebr_ref's computation is used on the torch side.
"""

import numpy
import pytest

from ebr_ref.grounding.ground import ground
from ebr_ref.models import sequential

from ..conftest import rel_err

torch = pytest.importorskip("torch")
zennit_composites = pytest.importorskip("zennit.composites")

pytestmark = pytest.mark.oracle


def _torch_net(model):
    """nn.Sequential with the model's weights (float64)."""
    nn = torch.nn
    mods = []
    for layer in model.layers:
        s, n, t = layer.settings, layer.name, layer.type
        if t == "conv":
            m = nn.Conv2d(
                model.params[f"{n}.weight"].shape[1] * s["groups"],
                s["out_channels"],
                s["kernel"],
                stride=s["stride"],
                padding=s["padding"],
                dilation=s["dilation"],
                groups=s["groups"],
                dtype=torch.float64,
            )
        elif t == "fc":
            W = model.params[f"{n}.weight"]
            m = nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
        elif t == "relu":
            m = nn.ReLU()
        elif t == "maxpool":
            m = nn.MaxPool2d(s["kernel"], s["stride"], s["padding"])
        elif t == "avgpool":
            m = nn.AvgPool2d(s["kernel"], s["stride"], s["padding"])
        elif t == "flatten":
            m = nn.Flatten()
        elif t == "dropout":
            m = nn.Dropout(s["p"])
        else:
            raise AssertionError(t)
        if t in ("conv", "fc"):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(model.params[f"{n}.weight"]))
                m.bias.copy_(torch.from_numpy(model.params[f"{n}.bias"]))
        mods.append(m)
    return nn.Sequential(*mods).eval()


def _vgg_style(seed, width=4, classes=5):
    layers = [
        ("conv1_1", "conv", {"out_channels": width, "kernel": 3, "padding": 1}),
        ("relu1_1", "relu"),
        ("conv1_2", "conv", {"out_channels": width, "kernel": 3, "padding": 1}),
        ("relu1_2", "relu"),
        ("pool1", "maxpool", {"kernel": 2}),
        ("conv2_1", "conv", {"out_channels": 2 * width, "kernel": 3, "padding": 1}),
        ("relu2_1", "relu"),
        (
            "conv2_2",
            "conv",
            {"out_channels": 2 * width, "kernel": 3, "stride": 1, "padding": 2, "dilation": 2},
        ),
        ("relu2_2", "relu"),
        ("pool2", "avgpool", {"kernel": 2}),
        ("flatten", "flatten"),
        ("fc6", "fc", {"out_features": 12}),
        ("relu6", "relu"),
        ("drop6", "dropout"),
        ("fc7", "fc", {"out_features": 12}),
        ("relu7", "relu"),
        ("drop7", "dropout"),
        ("fc8", "fc", {"out_features": classes}),
    ]
    return sequential(layers, (3, 12, 12), seed=seed)


def _zennit_eb(net, x, target):
    comp = zennit_composites.ExcitationBackprop(stabilizer=1e-30, zero_params="bias")
    xt = torch.from_numpy(x).requires_grad_(True)
    with comp.context(net) as modified:
        out = modified(xt)
        seed = torch.zeros_like(out)
        seed[:, target] = 1.0
        (rel,) = torch.autograd.grad(out, xt, grad_outputs=seed)
    return rel.detach().numpy()


@pytest.mark.parametrize("seed", [0x21, 0x22, 0x23])
def test_eb_to_input_matches_zennit(seed):
    model = _vgg_style(seed)
    x = numpy.random.default_rng(seed).uniform(0, 1, (3, 3, 12, 12))
    target = seed % 5
    ours = ground(model, x, target, method="EB", layer="input", channel_maps=True).channel_maps
    theirs = _zennit_eb(_torch_net(model), x, target)
    assert rel_err(ours, theirs) < 1e-8
    # each frame's signal sums to the seed where nothing is lost
    assert numpy.all(ours.reshape(3, -1).sum(axis=1) <= 1 + 1e-12)


@pytest.mark.parametrize("seed", [0x24, 0x25])
def test_eb_at_intermediate_layer_matches_zennit(seed):
    """Read-out at pool1's output: zennit's relevance at that module's output via a hook."""
    model = _vgg_style(seed)
    x = numpy.random.default_rng(seed).uniform(0, 1, (2, 3, 12, 12))
    net = _torch_net(model)
    k = model.index("pool1")
    head = torch.nn.Sequential(*list(net)[k + 1 :])
    with torch.no_grad():
        a = net[: k + 1](torch.from_numpy(x)).numpy()
    theirs = _zennit_eb(head, a, 1)
    ours = ground(model, x, 1, method="EB", layer="pool1", channel_maps=True).channel_maps
    assert rel_err(ours, theirs) < 1e-8


@pytest.mark.parametrize("seed", [0x26, 0x27])
def test_bp_matches_torch_autograd(seed):
    model = _vgg_style(seed)
    x = numpy.random.default_rng(seed).normal(size=(2, 3, 12, 12))
    net = _torch_net(model)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = net(xt)
    (g,) = torch.autograd.grad(out[:, 3].sum(), xt)
    ours = ground(model, x, 3, method="BP", layer="input", channel_maps=True)
    assert rel_err(ours.channel_maps, g.numpy()) < 1e-8
    probs = torch.softmax(out, dim=1).detach().numpy()
    assert rel_err(ours.probs, probs) < 1e-12
