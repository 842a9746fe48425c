"""LSTM forward, EB (rules "eb" and "caffe") and gradient at the released model's size.

Run: python benchmarks/bench_lstm.py [--repeats 10] [--T 128] [--N 1] [--D 4096] [--H 256]
                                     [--dtype float32] [--device cpu|gpu] [--K 1]

Prints the median and the minimum wall time of each kernel (forward alone; each backward alone,
on a cache from one forward) and the per-step cost. The default size is the
VGG16-LSTM demo: T = 128 frames, N = 1 clip, fc7 features D = 4096, H = 256,
a signal seeded at the last step. ``--device gpu`` needs CuPy and synchronises
the device around every timed call.

Measured on the 2-core development machine (NumPy 2 + OpenBLAS, no GPU), defaults,
min of 20 runs: float32 forward 13.7 ms, EB 'eb' 9.3 ms, EB 'caffe' 17.8 ms, gradient
11.9 ms (forward + EB: 23.0 ms 'eb', 31.5 ms 'caffe'); float64 forward 24.0 ms, EB 'eb'
15.2 ms, EB 'caffe' 36.5 ms, gradient 21.8 ms. The caffe rule costs two (T N, 4H) x (4H, D)
GEMMs (the normaliser and the adjoint); the eb rule only the g block's (T N, H) x (H, D).
"""

import argparse
import os
import statistics
import time

import numpy

from ebr_ref import backend
from ebr_ref.layers.lstm import LSTMParams, lstm_eb, lstm_forward, lstm_grad


def _sync(a):
    """Wait for the device that holds ``a`` (no-op for NumPy arrays)."""
    xp = backend.get_xp(a)
    if xp is not numpy:
        xp.cuda.get_current_stream().synchronize()


def _median_time(fn, repeats):
    _sync(fn())  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--N", type=int, default=1)
    ap.add_argument("--D", type=int, default=4096)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--K", type=int, default=1, help="stacked signals (K > 1 adds a leading axis)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = ap.parse_args()
    T, N, D, H, K = args.T, args.N, args.D, args.H, args.K

    rng = numpy.random.default_rng(0xB1)
    dev = lambda a: backend.to_device(a.astype(args.dtype), args.device)  # noqa: E731
    x = dev(numpy.maximum(rng.normal(size=(T, N, D)), 0))  # post-ReLU fc7-like features
    bound = 1 / numpy.sqrt(H)
    params = LSTMParams(
        dev(rng.uniform(-bound, bound, (4 * H, D))),
        dev(numpy.zeros(4 * H)),
        dev(rng.uniform(-bound, bound, (4 * H, H))),
    )
    seed = numpy.zeros((K, T, N, H) if K > 1 else (T, N, H))
    seed[..., -1, :, :] = rng.uniform(0, 1, seed[..., -1, :, :].shape)
    p_h = dev(seed)

    h, cache = lstm_forward(x, params)
    rows = [
        ("forward", lambda: lstm_forward(x, params)[0]),
        ("EB rule 'eb'", lambda: lstm_eb(p_h, cache, rule="eb").p_x),
        ("EB rule 'caffe'", lambda: lstm_eb(p_h, cache, rule="caffe").p_x),
        ("gradient (BP-R)", lambda: lstm_grad(p_h, cache).g_x),
    ]
    print(
        f"LSTM T={T} N={N} D={D} H={H} K={K} {args.dtype} on {args.device}; "
        f"threads: OMP/OPENBLAS={os.environ.get('OMP_NUM_THREADS', 'default')}, cores={os.cpu_count()}"
    )
    times = {}
    print(f"  {'kernel':<22}  median ms     min ms   (median per step)")
    for name, fn in rows:
        med, best = times[name] = _median_time(fn, args.repeats)
        print(f"  {name:<22}: {med * 1e3:8.2f}   {best * 1e3:8.2f}   ({med / T * 1e6:7.1f} us/step)")
    for rule in ("eb", "caffe"):
        med, best = (times["forward"][k] + times[f"EB rule '{rule}'"][k] for k in (0, 1))
        print(f"  {'forward + EB ' + repr(rule):<22}: {med * 1e3:8.2f}   {best * 1e3:8.2f}")


if __name__ == "__main__":
    main()
