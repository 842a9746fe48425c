"""Time conv2d forward, adjoint and EB against PyTorch's CPU convolution, in one process.

Shapes: VGG16's thirteen 3x3 / pad 1 convolutions on one 224 x 224 image (N = 1),
float32 by default, plus two CaffeNet layers (strided 11x11 conv1, grouped conv2)
reported separately and left out of the totals.

Columns (milliseconds, best of ``--repeat`` runs after one warm-up, and best over
``--rounds`` sweeps of the whole table, so that a busy moment on a shared machine
spoils one sweep rather than the table):

* ``fwd``: :func:`conv2d_forward` (with bias) vs ``torch.nn.functional.conv2d``.
* ``adj``: :func:`conv2d_adjoint` vs ``torch.nn.functional.conv_transpose2d``.
* ``eb``: :func:`conv2d_eb` (forward with W+, safe divide, adjoint, multiply) vs the
  same four steps written with torch (``conv2d`` with ``clamp(W, 0)``, divide,
  ``conv_transpose2d``, multiply; what TorchRay's EB does per conv layer, without
  its autograd overhead).

ebr_ref runs with its defaults (``fast=True``: the paths of
:mod:`ebr_ref.layers.conv2d_fast` where their rules admit the layer); ``--reference``
times the reference path (``fast=False``: im2col + GEMM, GEMM + col2im) instead.
``--compare-paths`` adds a table of forward and adjoint with each evaluation path
forced on every layer: the reference, and each fast path forced by moving
conv2d_fast's thresholds (how those thresholds were chosen).

torch runs with as many threads as NumPy's BLAS uses (read from OpenBLAS when it
can be, else ``os.cpu_count()``; ``--threads`` overrides both). Run::

    .venv/bin/python benchmarks/bench_conv.py [--dtype float32] [--repeat 5] [--compare-paths]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import time

import numpy
import torch

from ebr_ref.layers import conv2d_fast
from ebr_ref.layers.conv2d import conv2d_adjoint, conv2d_eb, conv2d_forward

# (name, iC, oC, size, kernel, stride, padding, groups)
VGG16 = [
    ("conv1_1", 3, 64, 224, 3, 1, 1, 1),
    ("conv1_2", 64, 64, 224, 3, 1, 1, 1),
    ("conv2_1", 64, 128, 112, 3, 1, 1, 1),
    ("conv2_2", 128, 128, 112, 3, 1, 1, 1),
    ("conv3_1", 128, 256, 56, 3, 1, 1, 1),
    ("conv3_2", 256, 256, 56, 3, 1, 1, 1),
    ("conv3_3", 256, 256, 56, 3, 1, 1, 1),
    ("conv4_1", 256, 512, 28, 3, 1, 1, 1),
    ("conv4_2", 512, 512, 28, 3, 1, 1, 1),
    ("conv4_3", 512, 512, 28, 3, 1, 1, 1),
    ("conv5_1", 512, 512, 14, 3, 1, 1, 1),
    ("conv5_2", 512, 512, 14, 3, 1, 1, 1),
    ("conv5_3", 512, 512, 14, 3, 1, 1, 1),
]
CAFFENET = [
    ("caffenet conv1", 3, 96, 227, 11, 4, 0, 1),
    ("caffenet conv2", 96, 256, 27, 5, 1, 2, 2),
]


def blas_threads() -> int:
    """Threads NumPy's OpenBLAS runs with, or ``os.cpu_count()`` when it cannot be asked."""
    with open("/proc/self/maps") as maps:
        libs = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                return int(fn())
    return os.cpu_count() or 1


def best_ms(f, repeat):
    time.sleep(0.2)  # let the other library's worker threads stop spinning
    f()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def bench_layer(spec, dtype, repeat, rng, fast=True):
    _, iC, oC, size, k, s, p, G = spec
    x = rng.uniform(0, 1, (1, iC, size, size)).astype(dtype)
    W = (rng.normal(size=(oC, iC // G, k, k)) * (2.0 / (iC * k * k)) ** 0.5).astype(dtype)
    b = rng.normal(size=oC).astype(dtype)
    y, cache = conv2d_forward(x, W, b, stride=s, padding=p, groups=G)
    g = rng.uniform(0, 1, y.shape).astype(dtype)
    geo = dict(stride=s, padding=p, groups=G)
    tx, tW, tb, tg = (torch.from_numpy(a) for a in (x, W, b, g))
    out_pad = tuple(
        int(v) for v in numpy.array(x.shape[2:]) - ((numpy.array(y.shape[2:]) - 1) * s - 2 * p + k)
    )
    F = torch.nn.functional

    def torch_eb():
        W_pos = tW.clamp(min=0)
        z = F.conv2d(tx, W_pos, None, **geo)
        q = torch.where(z != 0, tg / torch.where(z != 0, z, torch.ones_like(z)), torch.zeros_like(z))
        return tx * F.conv_transpose2d(q, W_pos, None, output_padding=out_pad, **geo)

    with torch.no_grad():
        ours = (
            best_ms(lambda: conv2d_forward(x, W, b, **geo, fast=fast), repeat),
            best_ms(lambda: conv2d_adjoint(g, W, x.shape, **geo, fast=fast), repeat),
            best_ms(lambda: conv2d_eb(g, cache, fast=fast), repeat),
        )
        theirs = (
            best_ms(lambda: F.conv2d(tx, tW, tb, **geo), repeat),
            best_ms(lambda: F.conv_transpose2d(tg, tW, None, output_padding=out_pad, **geo), repeat),
            best_ms(torch_eb, repeat),
        )
    return ours, theirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--reference",
        action="store_true",
        help="time ebr_ref's reference path (fast=False) instead of its default",
    )
    parser.add_argument(
        "--compare-paths",
        action="store_true",
        help="also time forward and adjoint with each evaluation path forced",
    )
    args = parser.parse_args()
    threads = args.threads or blas_threads()
    torch.set_num_threads(threads)
    rng = numpy.random.default_rng(0xC0B)
    print(
        f"numpy {numpy.__version__} (BLAS threads {blas_threads()}), torch {torch.__version__} "
        f"(threads {torch.get_num_threads()}), dtype {args.dtype}, N = 1, "
        f"best of {args.repeat} runs x {args.rounds} rounds, ebr_ref fast={not args.reference}"
    )
    columns = ("fwd ours/torch ms", "adj ours/torch ms", "eb ours/torch ms")
    print(f"{'layer':16s}" + "".join(f"{c:>22s}" for c in columns))
    specs = VGG16 + CAFFENET
    best = numpy.full((len(specs), 2, 3), numpy.inf)
    for _ in range(args.rounds):
        for i, spec in enumerate(specs):
            timed = bench_layer(spec, numpy.dtype(args.dtype), args.repeat, rng, fast=not args.reference)
            best[i] = numpy.minimum(best[i], timed)
    totals = best[: len(VGG16)].sum(axis=0)
    for spec, (ours, theirs) in zip(specs, best):
        if spec is CAFFENET[0]:
            print("-- not in the totals --")
        print(f"{spec[0]:16s}" + "".join(f"{o:10.2f} /{t:8.2f} ({o / t:4.2f})" for o, t in zip(ours, theirs)))
    print(
        f"{'VGG16 total':16s}"
        + "".join(f"{o:10.1f} /{t:8.1f} ({o / t:4.2f})" for o, t in zip(totals[0], totals[1]))
    )
    for i, col in enumerate(("forward", "adjoint", "EB")):
        print(f"total {col} ratio ours/torch: {totals[0, i] / totals[1, i]:.3f}")
    if args.compare_paths:
        compare_paths(numpy.dtype(args.dtype), args.repeat, args.rounds, rng)


@contextlib.contextmanager
def thresholds(shifted, flipped):
    """Force conv2d_fast's shifted views and flipped adjoint on or off for every eligible layer."""
    names = ("_MIN_SHIFTED_CHANNELS", "_MIN_SHIFTED_COLUMN", "_MIN_FLIPPED_COLUMN", "_MAX_FLIPPED_WIDENING")
    saved = {name: getattr(conv2d_fast, name) for name in names}
    conv2d_fast._MIN_SHIFTED_CHANNELS = 1 if shifted else 2**62
    conv2d_fast._MIN_SHIFTED_COLUMN = 0 if shifted else 2**62
    conv2d_fast._MIN_FLIPPED_COLUMN = 0 if flipped else 2**62
    conv2d_fast._MAX_FLIPPED_WIDENING = 2**62 if flipped else 0
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(conv2d_fast, name, value)


def compare_paths(dtype, repeat, rounds, rng):
    """Forward and adjoint with each evaluation path forced (see ebr_ref.layers.conv2d_fast)."""
    paths = {  # column: (op, fast, shifted views forced on, flipped adjoint forced on)
        "fwd shifted": ("fwd", True, True, False),
        "fwd im2col": ("fwd", False, False, False),  # the reference
        "adj flip+shift": ("adj", True, True, True),
        "adj flip+im2col": ("adj", True, False, True),
        "adj col2im": ("adj", False, False, False),  # the reference
    }
    print("\nforced paths (ms):" + "".join(f"{c:>16s}" for c in paths))
    for name, iC, oC, size, k, s, p, G in VGG16 + CAFFENET[1:]:
        x = rng.uniform(0, 1, (1, iC, size, size)).astype(dtype)
        W = rng.normal(size=(oC, iC // G, k, k)).astype(dtype)
        geo = dict(stride=s, padding=p, groups=G)
        y, _ = conv2d_forward(x, W, **geo)
        ops = {
            "fwd": functools.partial(conv2d_forward, x, W, **geo),
            "adj": functools.partial(conv2d_adjoint, y, W, x.shape, **geo),
        }
        best = dict.fromkeys(paths, numpy.inf)
        for _ in range(rounds):
            for column, (op, fast, shifted, flipped) in paths.items():
                with thresholds(shifted, flipped):
                    t = best_ms(functools.partial(ops[op], fast=fast), repeat)
                best[column] = min(best[column], t)
        print(f"{name:18s}" + "".join(f"{best[c]:16.2f}" for c in paths))


if __name__ == "__main__":
    main()
