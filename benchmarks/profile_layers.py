"""Where a cEB-R call on the VGG16-LSTM spends its time, layer by layer: the profile to read before tuning.

Run: python benchmarks/profile_layers.py [--device gpu] [--frames 16] [--targets 1] [--chunk-size auto]
[--repeats 2] [--threads 2]

Times every layer's forward (``ops.forward_layer``), EB (``ops.eb_layer``) and the fused read-out
(``fused_readout.fused_maps``) inside real ``ground`` calls, by wrapping those functions for the
duration of the run. On a GPU each wrapped call is bracketed by device synchronisations and timed
with CUDA events, so that its kernels are charged to it (the synchronisations themselves make the
call slower than an unprofiled one: compare the total with ``bench_ground.py``). Printed: per
layer and phase the calls and the milliseconds per ``ground`` call, sorted, with each row's share
of the call; then what the wrapped functions do not cover (the LSTM's driver code, seeding,
normalising, copies back to the host). The model is ``vgg16_lstm`` (101 classes, hidden 256),
float32, 224 x 224, random weights; ``--targets`` classes are grounded in one call.
"""

import argparse
import collections
import time

from blas_threads import set_blas_threads  # this folder: before NumPy loads

set_blas_threads()

import numpy  # noqa: E402

from ebr_ref import backend  # noqa: E402
from ebr_ref.grounding import fused_readout  # noqa: E402
from ebr_ref.grounding.ground import ground  # noqa: E402
from ebr_ref.models import stack, vgg16_lstm  # noqa: E402


class Clock:
    """Seconds of a call: wall clock on the CPU; CUDA events between synchronisations on a GPU."""

    def __init__(self, device):
        self.cupy = None
        if device == "gpu":
            import cupy  # the profile measures the CuPy backend itself

            self.cupy = cupy

    def time(self, fn, *args, **kwargs):
        if self.cupy is None:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            return out, time.perf_counter() - t0
        start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
        self.cupy.cuda.Device().synchronize()
        start.record()
        out = fn(*args, **kwargs)
        end.record()
        end.synchronize()
        return out, self.cupy.cuda.get_elapsed_time(start, end) / 1e3


def profiled(clock, table):
    """Wrap forward_layer, eb_layer and fused_maps where the stack and the drivers call them."""
    originals = {
        (stack, "forward_layer"): stack.forward_layer,
        (stack, "eb_layer"): stack.eb_layer,
        (fused_readout, "fused_maps"): fused_readout.fused_maps,
    }

    def wrap(phase, fn, name_of):
        def timed(*args, **kwargs):
            out, seconds = clock.time(fn, *args, **kwargs)
            key = (phase,) + name_of(*args)
            table[key][0] += 1
            table[key][1] += seconds
            return out

        return timed

    stack.forward_layer = wrap(
        "forward", originals[(stack, "forward_layer")], lambda layer, *a: (layer.type, layer.name)
    )
    stack.eb_layer = wrap("EB", originals[(stack, "eb_layer")], lambda layer, *a: (layer.type, layer.name))
    fused_readout.fused_maps = wrap(
        "EB", originals[(fused_readout, "fused_maps")], lambda records, *a: ("fused", "read-out fold")
    )
    return originals


def restore(originals):
    for (module, name), fn in originals.items():
        setattr(module, name, fn)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--targets", type=int, default=1, help="classes grounded in one call (1 to 101)")
    ap.add_argument("--chunk-size", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", default=None, help="BLAS threads (read before NumPy loads)")
    args = ap.parse_args()
    chunk = args.chunk_size if args.chunk_size == "auto" else int(args.chunk_size)
    model = vgg16_lstm(101, hidden=256, input_size=args.size, seed=0, dtype=numpy.float32).to(args.device)
    rng = numpy.random.default_rng(0xC11)
    clip = backend.to_device(
        rng.uniform(-1, 1, (args.frames, 3, args.size, args.size)).astype(numpy.float32), args.device
    )
    targets = list(range(args.targets))
    clock = Clock(args.device)

    def call():
        return ground(model, clip, targets, method="cEB-R", layer="conv5_1", chunk_size=chunk)

    used_chunk = call().diagnostics["chunk_size"]  # warm-up (kernels compiled, memory pools filled)
    table = collections.defaultdict(lambda: [0, 0.0])
    originals = profiled(clock, table)
    try:
        totals = [clock.time(call)[1] for _ in range(args.repeats)]
    finally:
        restore(originals)
    per_call = sum(totals) / args.repeats
    print(
        f"cEB-R, {args.frames} frames, {args.targets} target(s), {args.device}, chunk {used_chunk}: "
        f"{per_call * 1e3:.1f} ms per call, profiled ({args.repeats} calls)"
    )
    print(f"{'phase':<8} {'layer':<16} {'type':<8} {'calls':>6} {'ms/call':>9} {'share':>6}")
    rows = sorted(table.items(), key=lambda kv: -kv[1][1])
    covered = 0.0
    for (phase, kind, name), (n, seconds) in rows:
        ms = seconds / args.repeats * 1e3
        covered += ms
        print(
            f"{phase:<8} {name:<16} {kind:<8} {n // args.repeats:>6} {ms:9.1f} {ms / (per_call * 1e3):6.1%}"
        )
    rest = per_call * 1e3 - covered
    print(f"{'other':<8} {'(not wrapped)':<16} {'':<8} {'':>6} {rest:9.1f} {rest / (per_call * 1e3):6.1%}")


if __name__ == "__main__":
    main()
