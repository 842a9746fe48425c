"""VGG16 forward and EB down to conv5_1: ebr_ref against TorchRay, same weights, same process.

Run: python benchmarks/bench_cnn_eb.py [--repeats 5] [--size 224]

Prints the median wall time of (a) ebr_ref's VGG16 forward, (b) ebr_ref's EB
(forward included) from the classifier down to the output of conv5_1, (c)
TorchRay's ``excitation_backprop`` with ``saliency_layer`` at conv5_1 on a
torchvision VGG16 carrying the same weights, and the ratio (b)/(c). It also
prints the normwise difference of the two maps (TorchRay adds 1e-20 to its
denominators; otherwise the rules are the same). Needs torch, torchvision and
torchray for the comparison; without them only (a) and (b) are printed.
"""

import argparse
import os
import statistics
import time

import numpy

from ebr_ref.grounding.ground import ground
from ebr_ref.models import vgg16


def _median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _torchvision_copy(model):
    """A torchvision VGG16 (eval mode) with the ebr_ref model's weights, and conv5_1's module name."""
    import torch
    import torchvision

    net = torchvision.models.vgg16(weights=None, num_classes=model.num_classes).eval()
    for m in net.modules():  # TorchRay's probe makes conv5_1's output a leaf: no in-place ReLU after it
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    names = [n for n in model.layer_names if n.startswith("conv")]
    with torch.no_grad():
        for m, n in zip(convs, names):
            m.weight.copy_(torch.from_numpy(model.params[f"{n}.weight"]))
            m.bias.copy_(torch.from_numpy(model.params[f"{n}.bias"]))
        for m, n in zip([net.classifier[0], net.classifier[3], net.classifier[6]], ["fc6", "fc7", "fc8"]):
            m.weight.copy_(torch.from_numpy(model.params[f"{n}.weight"]))
            m.bias.copy_(torch.from_numpy(model.params[f"{n}.bias"]))
    conv5_1 = [i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d)][10]
    return net, f"features.{conv5_1}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    args = ap.parse_args()

    model = vgg16(args.classes, input_size=args.size, seed=0, dtype=numpy.float32)
    rng = numpy.random.default_rng(0xBE)
    clip = rng.uniform(0, 1, (1, 3, args.size, args.size)).astype(numpy.float32)
    target = 7

    t_fwd = _median_time(lambda: model.logits(clip), args.repeats)
    t_eb = _median_time(lambda: ground(model, clip, target, method="EB", layer="conv5_1"), args.repeats)
    print(f"threads: OMP/OPENBLAS={os.environ.get('OMP_NUM_THREADS', 'default')}, cores={os.cpu_count()}")
    print(f"ebr_ref  VGG16 forward, {args.size}x{args.size} float32, 1 image : {t_fwd * 1e3:8.1f} ms")
    print(f"ebr_ref  EB to conv5_1 (forward included)             : {t_eb * 1e3:8.1f} ms")
    try:
        import torch
        from torchray.attribution.excitation_backprop import excitation_backprop
    except ImportError as e:
        print(f"TorchRay comparison skipped ({e})")
        return
    torch.set_num_threads(os.cpu_count() or 1)
    net, layer_name = _torchvision_copy(model.astype(numpy.float64))
    net = net.float()
    x = torch.from_numpy(clip)

    def torchray_eb():
        return excitation_backprop(net, x, target, saliency_layer=layer_name)

    t_tr = _median_time(torchray_eb, args.repeats)
    with torch.no_grad():
        t_tfwd = _median_time(lambda: net(x), args.repeats)
    print(f"torch    VGG16 forward (torchvision)                  : {t_tfwd * 1e3:8.1f} ms")
    print(f"TorchRay excitation_backprop to conv5_1               : {t_tr * 1e3:8.1f} ms")
    print(f"ratio ebr_ref EB / TorchRay EB                        : {t_eb / t_tr:8.2f}x (required <= 1.0)")
    ours = ground(model, clip, target, method="EB", layer="conv5_1").maps[0]
    theirs = torchray_eb().detach().numpy()[0, 0]
    err = numpy.linalg.norm(ours - theirs) / numpy.linalg.norm(theirs)
    print(f"maps: normwise difference ebr_ref vs TorchRay           : {err:.2e}")


if __name__ == "__main__":
    main()
