"""Throughput of the dataset evaluation (``ebr_ref.evaluate``) on a synthetic THUMOS14-layout set.

Run: .venv/bin/python benchmarks/bench_evaluate.py [--videos 64] [--frames 128] [--data DIR] [--repeats 1]

Writes ``--videos`` rand+GT+rand clips of ``--frames`` frames (64 x 64, H.264) as
a THUMOS14-layout folder (``ebr_ref.tools.synthetic_dataset.make_dataset``;
kept in ``--data`` when given, so a second run skips it), then evaluates
Tables 2-3 (EB-R and cEB-R with ``synthetic_cnn_lstm``, 128-frame clips) four
ways, each into a fresh results folder and timed around the ``evaluate`` call:

1. a plain loop in one process (``workers=0``, no Dask), in a subprocess with
   one BLAS thread;
2. a ``LocalCluster`` of 1 worker process with one BLAS thread;
3. a ``LocalCluster`` of 2 worker processes with one BLAS thread each (what
   ``evaluate`` starts by default on 2 cores);
4. ``evaluate(..., workers=2)`` again on the finished folder of 3 (the resume:
   every video skipped).

Runs 2 and 3 are timed from the cluster's start to its close (the start, about
a second, is part of the overhead). Printed: seconds and videos per second of
each, the speed-up of 2 workers over 1, the overhead of the 1-worker cluster
over the plain loop, the resume time as a share of the first run, and the CPU
seconds per video of each (the processes and their ffmpeg children, user +
system; the cluster runs also count the client and the scheduler): on a machine
shared with other jobs the wall times move with the load, the CPU times much
less. The
tables of runs 1-3 are checked to be equal (they are computed from the stored
records). ``--threaded`` also times 1 worker with ``cores`` BLAS threads (the
``workers x threads = cores`` rule for ``--workers 1``). The load average
before and after is printed too: on a shared machine the figures move by tens
of percent, and a multi-threaded OpenBLAS can be many times slower.
``--interleave K`` then alternates K runs of each of a plain loop in this
process, a kept 1-worker and a kept 2-worker cluster, and prints the minimum and
the median of each (the minimum is the run least disturbed by other jobs).
"""

from __future__ import annotations

import os

# One BLAS thread in this process too (before NumPy loads): the interleaved plain loop runs here.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from ebr_ref.pipeline.blas import blas_environment, usable_cores  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "synthetic_cnn_lstm"
PROTOCOL = ["detection", "temporal-pointing"]
SEED = 0xBE7C


def _make(data, videos, frames):
    from ebr_ref.tools.synthetic_dataset import make_dataset, read_synthetic_spec

    spec = read_synthetic_spec(data) if os.path.isdir(data) else None
    if spec and spec.get("clips") == videos and spec.get("frames") == frames and spec.get("seed") == SEED:
        return 0.0
    t0 = time.perf_counter()
    make_dataset(data, "thumos14", clips=videos, seed=SEED, frames=frames, overwrite=True)
    return time.perf_counter() - t0


_PLAIN = """
import json, resource, sys, time
import ebr_ref
data, out, model, protocol = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
t0, c0 = time.perf_counter(), cpu()
ev = ebr_ref.evaluate(data, model, out=out, protocol=protocol, workers=0)
print(json.dumps({"seconds": time.perf_counter() - t0, "computed": ev.computed, "cpu": cpu() - c0,
                  "blas": ev.workers["blas_threads"]}))
"""


def _cpu(children=True):
    """CPU seconds of this process (and of its reaped children: a worker's ffmpeg), user + system."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    total = a.ru_utime + a.ru_stime
    if children:
        b = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += b.ru_utime + b.ru_stime
    return total


def plain_loop(data, out, threads):
    env = dict(os.environ, **blas_environment(threads))
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run(
        [sys.executable, "-c", _PLAIN, data, out, MODEL, ",".join(PROTOCOL)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def cluster_run(data, out, workers, threads=None):
    """Evaluate on a local cluster of ``workers`` processes with ``threads`` BLAS threads each (None: the
    default cluster of ``evaluate(workers=...)``), timed from the cluster's start to its close.

    ``cpu`` adds the CPU seconds the workers (and their ffmpeg children) spent during the evaluate call
    and those of this process (client and scheduler) over the whole run.
    """
    import distributed

    import ebr_ref
    from ebr_ref.pipeline.runner import local_cluster

    t0, c0 = time.perf_counter(), _cpu(children=False)  # the workers are this process's children
    if threads is None:
        ev = ebr_ref.evaluate(data, MODEL, out=out, protocol=PROTOCOL, workers=workers)
        worker_cpu = None
    else:
        with local_cluster(workers, threads) as cluster, distributed.Client(cluster) as client:
            before = client.run(_cpu)
            ev = ebr_ref.evaluate(
                data, MODEL, out=out, protocol=PROTOCOL, scheduler=cluster.scheduler_address
            )
            after = client.run(_cpu)
            worker_cpu = sum(after[w] - before[w] for w in after)
    seconds, own_cpu = time.perf_counter() - t0, _cpu(children=False) - c0
    started = time.time() - seconds
    task = [r["wall_s"] for r in ev.records if r["finished"] >= started]
    return {
        "seconds": seconds,
        "computed": ev.computed,
        "skipped": ev.skipped,
        "blas": ev.workers["blas_threads"],
        "task_s": sum(task) / len(task) if task else None,
        "cpu": None if worker_cpu is None else worker_cpu + own_cpu,
        "client_cpu": own_cpu,
    }


def interleaved(data, tmp, rounds):
    """Wall seconds of ``rounds`` alternating evaluations: a plain loop in this process (one BLAS thread),
    a kept 1-worker cluster and a kept 2-worker cluster.

    The clusters stay up (their start is not timed) and the three kinds of run alternate, so that a burst
    of load from other jobs hits all alike; the minimum of each is its least disturbed run.
    """
    import ebr_ref
    from ebr_ref.pipeline.runner import local_cluster

    times = {0: [], 1: [], 2: []}
    with local_cluster(1, 1) as one, local_cluster(2, 1) as two:
        for r in range(rounds):
            for n, cluster in ((0, None), (1, one), (2, two)):
                where = {"workers": 0} if cluster is None else {"scheduler": cluster.scheduler_address}
                t0 = time.perf_counter()
                out = os.path.join(tmp, f"interleaved-{n}-{r}")
                ebr_ref.evaluate(data, MODEL, out=out, protocol=PROTOCOL, **where)
                times[n].append(time.perf_counter() - t0)
    return times


def _tables(out):
    with open(os.path.join(out, "tables.json")) as f:
        return json.load(f)["tables"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=64, help="videos in the synthetic set (default 64)")
    ap.add_argument("--frames", type=int, default=128, help="frames per video (default 128)")
    ap.add_argument("--data", help="dataset folder to write or reuse (default: a temporary folder)")
    ap.add_argument("--repeats", type=int, default=1, help="repeat the timed runs (default 1)")
    ap.add_argument(
        "--threaded", action="store_true", help="also time 1 worker with one BLAS thread per core"
    )
    ap.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="K",
        help="also time K alternating runs: plain loop, kept 1- and 2-worker clusters",
    )
    args = ap.parse_args(argv)
    cores = usable_cores()
    tmp = tempfile.mkdtemp(prefix="bench_evaluate-")
    data = args.data or os.path.join(tmp, "thumos")
    t_make = _make(data, args.videos, args.frames)
    print(
        f"{cores} cores, Python {platform.python_version()}; {args.videos} videos x {args.frames} frames "
        f"(64 x 64, THUMOS14 layout; written in {t_make:.1f} s); {MODEL}, methods EB-R, cEB-R, "
        f"protocols {', '.join(PROTOCOL)}"
    )
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    rows = []
    for rep in range(args.repeats):
        base = os.path.join(tmp, f"rep{rep}")
        plain = plain_loop(data, base + "-plain", 1)
        one = cluster_run(data, base + "-w1", 1, 1)
        two = cluster_run(data, base + "-w2", 2, 1)
        resume = cluster_run(data, base + "-w2", 2)
        assert _tables(base + "-plain") == _tables(base + "-w1") == _tables(base + "-w2"), "tables differ"
        assert (resume["computed"], resume["skipped"]) == (0, args.videos)
        rows.append((plain, one, two, resume))
        n = args.videos
        print(
            f"run {rep + 1}: plain loop {plain['seconds']:.1f} s ({n / plain['seconds']:.2f} videos/s, "
            f"BLAS {plain['blas']}); 1 worker {one['seconds']:.1f} s ({n / one['seconds']:.2f}/s, BLAS "
            f"{one['blas']}); 2 workers {two['seconds']:.1f} s ({n / two['seconds']:.2f}/s, BLAS "
            f"{two['blas']}); resume {resume['seconds']:.2f} s"
        )
        overhead = 100 * (one["seconds"] / plain["seconds"] - 1)
        print(
            f"  speed-up 2 workers / 1 worker: {one['seconds'] / two['seconds']:.2f}x; overhead of the "
            f"1-worker cluster over the plain loop: {overhead:+.1f} %; "
            f"resume: {100 * resume['seconds'] / two['seconds']:.1f} % of the first 2-worker run"
        )
        print(
            f"  per video: {two['seconds'] / n:.3f} s of wall time with 2 workers on {cores} cores; one "
            f"task (decode, ground, analyse, write) takes {two['task_s']:.3f} s in a 2-worker run, "
            f"{one['task_s']:.3f} s in a 1-worker run"
        )
        print(
            f"  CPU seconds per video (user + system, ffmpeg included): plain loop {plain['cpu'] / n:.3f}; "
            f"1 worker {one['cpu'] / n:.3f} (of which client and scheduler {one['client_cpu'] / n:.3f}); "
            f"2 workers {two['cpu'] / n:.3f} ({two['client_cpu'] / n:.3f})"
        )
    if args.threaded:
        threaded = cluster_run(data, os.path.join(tmp, "threaded-w1"), 1, cores)
        assert _tables(os.path.join(tmp, "threaded-w1")) == _tables(os.path.join(tmp, "rep0-w1"))
        rate = args.videos / threaded["seconds"]
        print(
            f"1 worker with {cores} BLAS threads: {threaded['seconds']:.1f} s ({rate:.2f} videos/s; "
            f"one task {threaded['task_s']:.3f} s)"
        )
    if args.interleave:
        t = {n: sorted(v) for n, v in interleaved(data, tmp, args.interleave).items()}
        lo = {n: v[0] for n, v in t.items()}
        med = {n: v[len(v) // 2] for n, v in t.items()}
        print(
            f"interleaved, {args.interleave} runs each (cluster start not timed), min / median: "
            f"plain loop {lo[0]:.1f} / {med[0]:.1f} s; 1 worker {lo[1]:.1f} / {med[1]:.1f} s; "
            f"2 workers {lo[2]:.1f} / {med[2]:.1f} s"
        )
        over_lo, over_med = 100 * (lo[1] / lo[0] - 1), 100 * (med[1] / med[0] - 1)
        print(
            f"  speed-up 2 workers / 1 worker: {lo[1] / lo[2]:.2f}x (minima), {med[1] / med[2]:.2f}x "
            f"(medians); 1-worker cluster over the plain loop: {over_lo:+.1f} % (minima), "
            f"{over_med:+.1f} % (medians)"
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"results in {tmp}")


if __name__ == "__main__":
    main()
