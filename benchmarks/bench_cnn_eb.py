"""VGG16 forward and EB down to conv5_1: ebr_ref against TorchRay, same weights, same process.

Run: python benchmarks/bench_cnn_eb.py [--repeats 5] [--size 224] [--threads 2]

Prints the median wall time (and the range) of (a) ebr_ref's VGG16 forward, (b) ebr_ref's EB
(forward included) from the classifier down to the output of conv5_1, without and with a
``weights_cache`` kept between calls (``max(W, 0)`` of fc6-fc8 formed once), (c)
TorchRay's ``excitation_backprop`` with ``saliency_layer`` at conv5_1 on a
torchvision VGG16 carrying the same weights, and the ratio (b)/(c). It also
prints the normwise difference of the two maps (TorchRay adds 1e-20 to its
denominators; otherwise the rules are the same). Needs torch, torchvision and
torchray for the comparison; without them only (a) and (b) are printed.

The timed calls run interleaved (one of each per round, ``--repeats`` rounds after
one warm-up round), so that load from other jobs on a shared machine hits them
alike. ``--threads`` (default: all cores) is set for OpenBLAS (``OPENBLAS_NUM_THREADS``
and ``OMP_NUM_THREADS``, before NumPy loads) and for torch (``torch.set_num_threads``).
"""

import argparse
import os
import statistics
import time

from blas_threads import set_blas_threads  # this folder: before NumPy loads

set_blas_threads()

import numpy  # noqa: E402

from ebr_ref.grounding.ground import ground  # noqa: E402
from ebr_ref.models import vgg16  # noqa: E402


def _interleaved(fns, repeats):
    """``{name: [seconds, ...]}``: one warm-up round, then ``repeats`` rounds calling each of ``fns`` once."""
    times = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    return times


def _fmt(ts):
    """Median and range of a list of seconds, in ms."""
    return f"{statistics.median(ts) * 1e3:8.1f} ms  [{min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--threads", default=str(os.cpu_count() or 1), help="BLAS and torch threads")
    args = ap.parse_args()

    model = vgg16(args.classes, input_size=args.size, seed=0, dtype=numpy.float32)
    kept = {}  # the caller's weights_cache: max(W, 0) of fc6-fc8, formed by the warm-up round
    rng = numpy.random.default_rng(0xBE)
    clip = rng.uniform(0, 1, (1, 3, args.size, args.size)).astype(numpy.float32)
    target = 7
    fns = {
        "fwd": lambda: model.logits(clip),
        "eb": lambda: ground(model, clip, target, method="EB", layer="conv5_1"),
        "kept": lambda: ground(model, clip, target, method="EB", layer="conv5_1", weights_cache=kept),
    }
    try:
        import torch
        from torch_peers import torch_vgg16  # this folder: the script's own
        from torchray.attribution.excitation_backprop import excitation_backprop
    except ImportError as e:
        torch = None
        print(f"TorchRay comparison skipped ({e})")
    if torch is not None:
        torch.set_num_threads(int(args.threads))
        net, layer_name = torch_vgg16(model, dtype=numpy.float32)
        x = torch.from_numpy(clip)

        def torchray_eb():
            return excitation_backprop(net, x, target, saliency_layer=layer_name)

        def torch_forward():
            with torch.no_grad():
                return net(x)

        fns.update(tr=torchray_eb, tfwd=torch_forward)
    t = _interleaved(fns, args.repeats)
    torch_threads = "n/a" if torch is None else torch.get_num_threads()
    print(
        f"threads: OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, torch {torch_threads}, "
        f"cores={os.cpu_count()}; {args.repeats} interleaved rounds, median [min-max]"
    )
    print(f"ebr_ref  VGG16 forward, {args.size}x{args.size} float32, 1 image : {_fmt(t['fwd'])}")
    print(f"ebr_ref  EB to conv5_1 (forward included)             : {_fmt(t['eb'])}")
    print(f"ebr_ref  the same with weights_cache (W+ kept)        : {_fmt(t['kept'])}")
    if torch is None:
        return
    print(f"torch    VGG16 forward (torchvision)                  : {_fmt(t['tfwd'])}")
    print(f"TorchRay excitation_backprop to conv5_1               : {_fmt(t['tr'])}")
    for key, what in (
        ("eb", "ratio ebr_ref EB / TorchRay EB"),
        ("kept", "ratio with weights_cache / TorchRay"),
    ):
        ratios = [e / r for e, r in zip(t[key], t["tr"], strict=True)]  # same round, same load
        t_eb, t_tr = statistics.median(t[key]), statistics.median(t["tr"])
        print(
            f"{what:<54}: {t_eb / t_tr:8.2f}x "
            f"(per round: median {statistics.median(ratios):.2f}, {min(ratios):.2f}-{max(ratios):.2f})"
        )
    ours = ground(model, clip, target, method="EB", layer="conv5_1").maps[0]
    theirs = torchray_eb().detach().numpy()[0, 0]
    err = numpy.linalg.norm(ours - theirs) / numpy.linalg.norm(theirs)
    print(f"maps: normwise difference ebr_ref vs TorchRay           : {err:.2e}")


if __name__ == "__main__":
    main()
