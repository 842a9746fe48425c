"""The engine on a GPU (CuPy) against PyTorch and TorchRay on CUDA: same weights, same input, same process.

Run on a machine with a CUDA GPU, CuPy, torch, torchvision and TorchRay (TorchRay is
pure Python: ``pip install --no-deps torchray``)::

    python benchmarks/bench_gpu_peers.py                 # the whole table, float32, TF32 off
    python benchmarks/bench_gpu_peers.py --tf32 both     # and second rows with TF32 on, both sides
    python benchmarks/bench_gpu_peers.py --device cpu --size 64 --batches 1,2 --frames 4 --repeats 2

(the last is a dry run on NumPy and torch on the CPU, which checks the script and the peers' agreement
anywhere). Rows, each the median of ``--repeats`` timed calls after one warm-up, ratio engine / peer:

1. VGG16 (random weights, 1000 classes) on batches of ``--batches`` frames: the forward pass against
   torchvision's, and EB from the classifier to ``conv5_1`` (forward included; every frame seeded at
   its own logit of class 7) against TorchRay's ``excitation_backprop`` with ``saliency_layer`` at
   ``conv5_1``. The maps are compared (normwise relative difference; TorchRay adds 1e-20 to its
   denominators).
2. The VGG16-LSTM (101 classes, hidden 256) on ``--frames`` frames: cEB-R to ``conv5_1`` (seed at the
   last step) against the forward and backward of the same model in torch (``torch_peers.TorchVggLstm``:
   ``torch.autograd.grad`` of the target's last-step logit with respect to conv5_1's output, the
   gradient map a PyTorch user would read out there); then cEB-R for all 101 classes in one call. The
   two models' logits are compared.

Timing: on the GPU, CUDA events around each call on both sides (the engine's results come back to
the host, so its calls include that copy; torch's are synchronised); on the CPU, wall clock. Both
sides run in float32 with TF32 off (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32`` False; the engine's default). ``--tf32 on|both`` adds rows with
TF32 on on both sides: torch's two switches, and the engine's explicit option (``tf32=True`` of
:func:`ebr_ref.grounding.ground.ground`; the forward row in :func:`ebr_ref.backend.matmul_precision`).
The engine's TF32 needs a GPU, so the CPU dry run keeps TF32 off.
"""

import argparse
import functools
import statistics
import time

import numpy

from ebr_ref import backend
from ebr_ref.grounding.ground import ground
from ebr_ref.models import vgg16, vgg16_lstm


class Timer:
    """Median seconds of ``fn()`` over repeats after a warm-up, with the device's own clock on a GPU."""

    def __init__(self, device, torch):
        self.device, self.torch = device, torch
        if device == "gpu":
            import cupy  # the benchmark measures the CuPy backend itself

            self.cupy = cupy

    def _once(self, fn):
        if self.device == "cpu":
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
        self.torch.cuda.synchronize()
        start.record()
        fn()
        self.torch.cuda.synchronize()  # torch's stream; the engine's calls end on the host already
        end.record()
        end.synchronize()
        return self.cupy.cuda.get_elapsed_time(start, end) / 1e3

    def __call__(self, fn, repeats):
        fn()  # warm-up: kernel compilation, cuDNN's algorithm search, memory pools
        return statistics.median(self._once(fn) for _ in range(repeats))


def _rel(a, b):
    return float(numpy.linalg.norm(a - b) / numpy.linalg.norm(b))


def _row(what, ours, theirs, peer):
    print(f"{what:<44} {ours * 1e3:10.1f} ms  {theirs * 1e3:10.1f} ms  {ours / theirs:6.2f}x  ({peer})")


def _set_tf32(torch, on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def vgg16_rows(args, torch, timer, tdev):
    """Section 1: VGG16 forward and EB to conv5_1 per batch size."""
    from torch_peers import torch_vgg16  # this folder: the script's own
    from torchray.attribution.excitation_backprop import excitation_backprop

    model = vgg16(1000, input_size=args.size, seed=0, dtype=numpy.float32)
    net, conv5_1 = torch_vgg16(model, dtype=numpy.float32)
    net = net.to(tdev)
    model = model.to(args.device)
    rng = numpy.random.default_rng(0)
    for B in args.batches:
        clip = rng.uniform(-1, 1, (B, 3, args.size, args.size)).astype(numpy.float32)
        _vgg16_batch(args, torch, timer, (model, net, conv5_1, excitation_backprop), clip, tdev)


def _vgg16_batch(args, torch, timer, models, clip, tdev):
    """Section 1's rows for one batch."""
    model, net, conv5_1, excitation_backprop = models
    B = clip.shape[0]
    x = torch.from_numpy(clip).to(tdev)
    on_device = backend.to_device(clip, args.device)

    def ours_forward(tf32=False):
        with backend.matmul_precision(model.xp, model.dtype, tf32=tf32):
            return backend.to_numpy(model.logits(on_device))

    def torch_forward():
        with torch.no_grad():
            return net(x)

    def ours_eb(tf32=False):
        return ground(model, on_device, 7, method="EB", layer="conv5_1", tf32=tf32)

    def torchray_eb():
        return excitation_backprop(net, x, 7, saliency_layer=conv5_1)

    for tf32 in args.tf32_rows:
        _set_tf32(torch, tf32)
        tag = " (TF32 on)" if tf32 else ""
        f_ours = timer(functools.partial(ours_forward, tf32), args.repeats)
        f_torch = timer(torch_forward, args.repeats)
        _row(f"VGG16 forward, batch {B}{tag}", f_ours, f_torch, "torchvision")
        e_ours, e_torch = (
            timer(functools.partial(ours_eb, tf32), args.repeats),
            timer(torchray_eb, args.repeats),
        )
        _row(f"VGG16 EB to conv5_1, batch {B}{tag}", e_ours, e_torch, "TorchRay")
    _set_tf32(torch, False)
    maps = ours_eb().maps  # (B, 14, 14) at 224
    theirs = torchray_eb().detach().cpu().numpy()[:, 0]
    print(f"    maps, batch {B}: normwise difference ebr_ref vs TorchRay {_rel(maps, theirs):.2e}")


def lstm_rows(args, torch, timer, tdev):
    """Section 2: VGG16-LSTM cEB-R against torch's forward and backward, and the 101-target call."""
    from torch_peers import TorchVggLstm, torch_vgg16

    model = vgg16_lstm(101, hidden=256, input_size=args.size, seed=0, dtype=numpy.float32)
    peer = TorchVggLstm(model, dtype=numpy.float32).to(tdev)
    _, conv5_1 = torch_vgg16(model, top="fc7")
    readout = []  # conv5_1's output of the last forward pass
    peer.cnn.get_submodule(conv5_1).register_forward_hook(lambda m, i, out: readout.append(out))
    model = model.to(args.device)
    rng = numpy.random.default_rng(1)
    for T in args.frames:
        clip = rng.uniform(-1, 1, (T, 3, args.size, args.size)).astype(numpy.float32)
        _lstm_clip(args, torch, timer, (model, peer, readout), clip, tdev)


def _lstm_clip(args, torch, timer, models, clip, tdev):
    """Section 2's rows for one clip."""
    model, peer, readout = models
    T = clip.shape[0]
    x = torch.from_numpy(clip).to(tdev)
    on_device = backend.to_device(clip, args.device)
    kw = dict(method="cEB-R", layer="conv5_1", chunk_size=args.chunk_size)

    def ours_one(tf32=False):
        return ground(model, on_device, 3, tf32=tf32, **kw)

    def ours_all(tf32=False):
        return ground(model, on_device, list(range(101)), tf32=tf32, **kw)

    def torch_fwd_bwd():
        readout.clear()
        logit = peer(x)[-1, 3]
        return torch.autograd.grad(logit, readout[0])[0]  # (T, 512, 14, 14) at 224

    one = {}  # the single-target time per TF32 setting
    for tf32 in args.tf32_rows:
        _set_tf32(torch, tf32)
        tag = " (TF32 on)" if tf32 else ""
        one[tf32], peer_t = (
            timer(functools.partial(ours_one, tf32), args.repeats),
            timer(torch_fwd_bwd, args.repeats),
        )
        _row(f"VGG16-LSTM cEB-R, {T} frames{tag}", one[tf32], peer_t, "torch forward+backward")
    _set_tf32(torch, False)
    tf32 = args.tf32_rows[0]  # the first setting asked for
    many = timer(functools.partial(ours_all, tf32), args.repeats)
    tag = " (TF32 on)" if tf32 else ""
    print(
        f"{f'VGG16-LSTM cEB-R, {T} frames, 101 targets{tag}':<44} {many * 1e3:10.1f} ms  "
        f"({many / one[tf32]:.2f}x one target)"
    )
    with torch.no_grad():
        theirs = peer(x).cpu().numpy()
    ours = backend.to_numpy(model.logits(on_device))
    print(f"    logits, {T} frames: normwise difference ebr_ref vs torch {_rel(ours, theirs):.2e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", default="1,16,64", help="VGG16 batch sizes (default 1,16,64)")
    ap.add_argument("--frames", default="16,128", help="VGG16-LSTM clip lengths (default 16,128)")
    ap.add_argument("--chunk-size", type=int, default=32, help="the engine's frames per CNN chunk")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--tf32", choices=("off", "on", "both"), default="off", help="rows with TF32 on both sides"
    )
    ap.add_argument("--skip", choices=("vgg16", "lstm"), action="append", default=[])
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.frames = [int(t) for t in args.frames.split(",")]
    args.tf32_rows = {"off": [False], "on": [True], "both": [False, True]}[args.tf32]
    if args.device == "cpu" and args.tf32 != "off":
        print("--device cpu: TF32 is a GPU mode; the dry run keeps it off")
        args.tf32_rows = [False]
    import torch

    if args.device == "gpu" and not (backend.gpu_available() and torch.cuda.is_available()):
        raise SystemExit("--device gpu needs CuPy with a CUDA device and torch with CUDA")
    tdev = "cuda" if args.device == "gpu" else "cpu"
    _set_tf32(torch, False)
    timer = Timer(args.device, torch)
    name = torch.cuda.get_device_name() if args.device == "gpu" else "CPU"
    print(f"{name}; float32, {args.size}x{args.size}; median of {args.repeats} after a warm-up")
    print(f"{'':<44} {'ebr_ref':>13}  {'peer':>13}  {'ratio':>7}")
    if "vgg16" not in args.skip:
        vgg16_rows(args, torch, timer, tdev)
    if "lstm" not in args.skip:
        lstm_rows(args, torch, timer, tdev)


if __name__ == "__main__":
    main()
