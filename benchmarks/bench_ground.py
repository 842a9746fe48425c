"""cEB-R on the released architecture (VGG16 to fc7, ReLU-LSTM(256), fc8): time, multi-target cost, memory.

Run: python benchmarks/bench_ground.py [--frames 16] [--classes 101] [--repeats 3] [--scaling 16,32,64,128]
[--threads 2] [--device gpu]

Prints, for a float32 224x224 clip of random frames through ``vgg16_lstm`` with
random weights:

1. the engine's forward pass of the clip, and cEB-R (forward included) to conv5_1,
   with their ratio (paper §4: "on the order of a single backward pass");
2. cEB-R for all ``--classes`` targets in one call against the single-target call
   (with ``--unfused`` also with ``fused_readout=False``, every layer's own EB);
3. for each T of ``--scaling``, in a fresh process each, the wall time and the peak
   resident memory (``VmHWM``, else ``ru_maxrss``) of one cEB-R call (``--scaling-targets``
   targets, default 1), and the time per frame.

The calls of 1 and 2 run interleaved, ``--repeats`` rounds of one each (after one
warm-up on short clips), so that load from other jobs on a shared machine hits them
alike; medians are printed with the range, and the ratios are also taken per round.
``--threads`` (default: all cores) sets ``OPENBLAS_NUM_THREADS`` and ``OMP_NUM_THREADS``
before NumPy loads.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from blas_threads import set_blas_threads  # this folder: before NumPy loads

set_blas_threads()

import numpy  # noqa: E402

from ebr_ref import backend  # noqa: E402
from ebr_ref.grounding.ground import ground  # noqa: E402
from ebr_ref.models import vgg16_lstm  # noqa: E402


def _clip(T, size=224, device="cpu"):
    rng = numpy.random.default_rng(0xC11)
    return backend.to_device(rng.uniform(-1, 1, (T, 3, size, size)).astype(numpy.float32), device)


def _model(classes, device="cpu"):
    return vgg16_lstm(classes, hidden=256, seed=0, dtype=numpy.float32).to(device)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def one_run(T, classes, chunk_size, device, n_targets):
    """Run in a child process: one cEB-R call on a T-frame clip; print JSON with time and peak RSS."""
    model, clip = _model(classes, device), _clip(T, device=device)
    targets = 3 if n_targets == 1 else list(range(n_targets))
    ground(
        model, clip[:1], targets, method="cEB-R", layer="conv5_1"
    )  # warm-up (CuPy compiles its kernels once)
    t, _ = _timed(
        lambda: ground(model, clip, targets, method="cEB-R", layer="conv5_1", chunk_size=chunk_size)
    )
    print(json.dumps({"T": T, "seconds": t, "peak_rss_gib": _peak_rss_kib() / 2**20}))


def _peak_rss_kib():
    """This process's peak resident memory in KiB.

    Linux's ``VmHWM`` belongs to the process's own address space; ``ru_maxrss``
    would also count the parent's resident memory at the time of the fork.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--classes", type=int, default=101)
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds of the timed calls")
    ap.add_argument("--threads", default=str(os.cpu_count() or 1), help="BLAS threads")
    ap.add_argument("--scaling", default="16,32,64,128")
    ap.add_argument("--scaling-targets", type=int, default=1, help="targets of each scaling run (default 1)")
    ap.add_argument(
        "--unfused", action="store_true", help="also time the multi-target call without the fused read-out"
    )
    ap.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: CuPy (results come back to the host, so every timing includes the synchronisation)",
    )
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        one_run(args.child, args.classes, args.chunk_size, args.device, args.scaling_targets)
        return

    model, clip = _model(args.classes, args.device), _clip(args.frames, device=args.device)
    backend.to_numpy(model.logits(clip[:1]))  # warm-up
    targets = list(range(args.classes))
    ground(model, clip[:2], 3, method="cEB-R", layer="conv5_1")  # warm-up: CuPy compiles its kernels once
    for fused in ("auto", False) if args.unfused else ("auto",):
        ground(model, clip[:2], targets, method="cEB-R", layer="conv5_1", fused_readout=fused)
    kw = dict(method="cEB-R", layer="conv5_1", chunk_size=args.chunk_size)
    calls = {
        "fwd": lambda: backend.to_numpy(model.logits(clip)),
        "ceb": lambda: ground(model, clip, 3, **kw),
        "multi": lambda: ground(model, clip, targets, **kw),
    }
    if args.unfused:
        calls["plain"] = lambda: ground(model, clip, targets, fused_readout=False, **kw)
    t = {name: [] for name in calls}
    out = {}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            dt, out[name] = _timed(fn)
            t[name].append(dt)

    def fmt(name):
        ts = t[name]
        return f"{statistics.median(ts):7.2f} s [{min(ts):.2f}-{max(ts):.2f}]"

    def ratio(a, b):
        per_round = [x / y for x, y in zip(t[a], t[b], strict=True)]
        return (
            f"ratio {statistics.median(t[a]) / statistics.median(t[b]):.2f}x "
            f"(per round {min(per_round):.2f}-{max(per_round):.2f})"
        )

    print(
        f"T={args.frames}, 224x224, float32, vgg16_lstm({args.classes}), chunk {args.chunk_size}, "
        f"{args.device}, threads {os.environ['OPENBLAS_NUM_THREADS']}; {args.repeats} interleaved rounds, "
        "median [min-max]"
    )
    print(f"forward pass                         : {fmt('fwd')}")
    print(f"cEB-R to conv5_1 (forward included)  : {fmt('ceb')}   {ratio('ceb', 'fwd')} forward")
    g = out["multi"]
    print(
        f"cEB-R, {args.classes} targets in one call    : {fmt('multi')}   {ratio('multi', 'ceb')} single "
        f"target; maps {g.maps.shape}; fused: {', '.join(g.diagnostics['fused_readout'] or ['none'])}"
    )
    if args.unfused:
        g0 = out["plain"]
        err = numpy.abs(g.maps - g0.maps).max() / numpy.abs(g0.maps).max()
        print(
            f"cEB-R, {args.classes} targets, unfused      : {fmt('plain')}   {ratio('plain', 'ceb')} single "
            f"target; fused vs unfused max |diff| / max |map| = {err:.1e}"
        )
    print(f"T     seconds   s/frame   peak host RSS (GiB)   ({args.scaling_targets} target(s) per call)")
    for T in [int(v) for v in args.scaling.split(",") if v]:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(T),
                "--classes",
                str(args.classes),
                "--chunk-size",
                str(args.chunk_size),
                "--device",
                args.device,
                "--scaling-targets",
                str(args.scaling_targets),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['T']:<5d} {r['seconds']:8.2f}  {r['seconds'] / r['T']:8.3f}   {r['peak_rss_gib']:8.2f}")


if __name__ == "__main__":
    main()
