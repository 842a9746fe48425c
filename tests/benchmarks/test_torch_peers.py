"""The PyTorch peers the benchmarks time against compute what the engine computes, and the GPU benchmark
runs (its dry run on the CPU: the engine on NumPy, torch on the CPU).

``benchmarks/torch_peers.py`` builds torch models from an engine model's parameters; a benchmark that
timed a peer computing something else would compare nothing. Here both peers' logits, and the LSTM
the training scripts train (``CaffeLSTM``), equal the engine's in float64 (the engine's kernels and
torch share no code), and ``bench_gpu_peers.py``'s recurrent section runs end to end at a small size
(TorchRay, which its VGG16 section needs, is not a test dependency).
"""

import numpy
import pytest

from ebr_ref.models import vgg16, vgg16_lstm
from tests.paths import REPO

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")


@pytest.fixture
def peers(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import torch_peers

    return torch_peers


def _clip(T, size=32):
    return numpy.random.default_rng(0xBE).uniform(-1, 1, (T, 3, size, size))


def test_torch_vgg16_equals_the_engine(peers):
    model = vgg16(7, input_size=32, seed=1)
    net, conv5_1 = peers.torch_vgg16(model)
    with torch.no_grad():
        theirs = net(torch.from_numpy(_clip(3))).numpy()
    ours = model.logits(_clip(3))
    assert numpy.linalg.norm(ours - theirs) <= 1e-12 * numpy.linalg.norm(ours)
    assert conv5_1 == "features.24"  # torchvision's index of the 11th convolution


def test_torch_vgg_lstm_equals_the_engine(peers):
    model = vgg16_lstm(5, hidden=16, input_size=32, seed=2)
    with torch.no_grad():
        theirs = peers.TorchVggLstm(model, dtype=numpy.float64)(torch.from_numpy(_clip(4))).numpy()
    ours = model.logits(_clip(4))
    assert numpy.linalg.norm(ours - theirs) <= 1e-12 * numpy.linalg.norm(ours)
    assert numpy.abs(numpy.diff(ours, axis=0)).max() > 1e-3  # the steps differ: the LSTM is exercised


def test_gpu_benchmark_dry_run(peers, capsys):
    import bench_gpu_peers

    bench_gpu_peers.main(
        ["--device", "cpu", "--size", "32", "--frames", "3", "--repeats", "1", "--skip", "vgg16"]
    )
    out = capsys.readouterr().out
    assert "VGG16-LSTM cEB-R, 3 frames " in out and "101 targets" in out
    diff = float(out.split("normwise difference ebr_ref vs torch ")[1].split()[0])
    assert diff < 1e-5  # float32 on both sides


@pytest.mark.parametrize("cell_act", ["relu", "tanh"])
def test_the_trainers_lstm_equals_the_engine_kernel(peers, cell_act):
    """The LSTM the training scripts train (``CaffeLSTM``) is the engine's ``lstm_forward``: clip markers
    that start a new clip mid-sequence included (float64)."""
    from ebr_ref.layers.lstm import LSTMParams, lstm_forward

    torch.manual_seed(0)
    lstm = peers.CaffeLSTM(5, 4, cell_act).double()
    x = numpy.random.default_rng(1).standard_normal((6, 2, 5))  # (T, N, D)
    cont = numpy.ones((6, 2))
    cont[0] = 0
    cont[3, 1] = 0  # the second sequence starts a new clip at step 3
    with torch.no_grad():
        theirs = lstm(torch.from_numpy(x), torch.from_numpy(cont)).numpy()
    p = LSTMParams(*(getattr(lstm, n).detach().numpy() for n in ("W_x", "b", "W_h")))
    ours, _ = lstm_forward(x, p, cont=cont, cell_act=cell_act)
    assert numpy.linalg.norm(ours - theirs) <= 1e-12 * numpy.linalg.norm(ours)
    assert not numpy.allclose(
        theirs[3, 1], lstm(torch.from_numpy(x), torch.ones(6, 2, dtype=torch.float64))[3, 1].detach().numpy()
    )
