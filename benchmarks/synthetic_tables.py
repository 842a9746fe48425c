"""Paper Tables 1-3 (Bargal et al., CVPR 2018, §5) on a synthetic benchmark, with the shipped models.

Run: .venv/bin/python benchmarks/synthetic_tables.py [--benchmark appearance] [--rnn NAME]
                                                     [--clips1 140] [--clips2 105] [--frames2 128]
                                                     [--write docs/results.md]

``--benchmark`` names one of ``ebr_ref.synthetic.BENCHMARKS``: ``appearance``
(the default; :mod:`ebr_ref.synthetic.actions`, 7 classes, models
``synthetic_cnn`` and ``synthetic_cnn_lstm``) or ``motion``
(:mod:`ebr_ref.synthetic.motion`, 8 classes told apart only by motion, models
``motion_cnn`` and ``motion_cnn_lstm``); ``--rnn`` replaces the recurrent model
by another shipped one (e.g. ``motion_cnn_lstm_tanh``; on a tanh cell the
``eb`` rule runs with ``allow_tanh_eb=True``). Models in float32, read-out
layer ``conv3``, 16 x 16 maps for 64 x 64 frames; clips regenerated from the
seeds below: clip ``i`` of a set is the benchmark's
``make_clip(kind, i % K, seed=SeedSequence(seed).spawn(n)[i])`` for its ``K``
classes (every class equally often). Every recurrent method runs with both
LSTM rules ("caffe" and "eb"). ``--workers`` processes (default 2) share the
clips, each with one BLAS thread; the results do not depend on their number.

Table 1 — spatial pointing game
    ``--clips1`` clips of each kind "GT+rand" and "rand+GT" (16 frames, the
    boundary at frame 8), GT class as the target. EB, cEB, BP: the CNN
    classifier on the 8 GT frames, one seed per frame. EB-R, cEB-R, BP-R: the
    CNN-LSTM on the whole 16-frame clip, seeded at every step
    (``seed_steps="all"``) and, as a second setting, at the last step only (the
    released demo). A hit when the distance from the map's peak (mapped to
    input pixels) to the GT actor's inclusive box is at most ``TOLERANCE / 2``;
    accuracy = hits / (hits + misses) over the GT frames. Baselines: the frame
    centre, and a uniformly random point (seeded). Also printed: the mean
    evidence ``S_t`` of the -R methods over the GT and the rand frames (the
    analogue of the paper's Fig. 6).
Table 2 — temporal detection mAP at IoU 0.5
    ``--clips2`` "rand+GT+rand" clips of ``--frames2`` frames for each GT length
    11, 41, 65 (the paper's). Evidence ``S_t``: the thresholded GT-class
    probability (+1 where ``p >= 0.5``, else -1; the paper's rule), or the
    per-frame sums of the EB-R / cEB-R maps (``seed_steps="all"``). Known
    length: the window of L frames with the largest sum of ``S``; unknown: the
    anchor-and-grow rule of §4.1. One detection per clip (the GT class), scored
    by the mean of ``S`` over the window (the mean GT probability for the
    probability baseline); mAP over the K classes with
    :func:`ebr_ref.evaluation.metrics.mean_average_precision` (score-order matching,
    IoU >= 0.5, non-interpolated AP).
Table 3 — temporal pointing game
    The same clips (all lengths pooled). Random: one uniformly drawn frame per
    clip (seeded; the expectation ``mean(L / T)`` is printed too). Peak
    probability: the first maximum of the GT-class probability. cEB-R: the
    first maximum of ``S``. Peak probability + cEB-R: the first maximum of
    ``minmax(p) + minmax(S)``, both curves min-max scaled to [0, 1] over the
    clip and added with equal weights (the paper does not say how it combines
    them; this is our choice, made before seeing results and not tuned).

The grounding runs here, on clips generated in memory; the per-clip analysis
(:mod:`ebr_ref.evaluation.protocols`) and the tables and their rendering
(:mod:`ebr_ref.evaluation.tables`) are the code that ``ebr-ref evaluate`` runs on
datasets of video files (docs/evaluate.md). The random baselines draw from one
generator per table in clip order, as before that code was shared, so the
tables in docs/results.md regenerate unchanged.

``--write`` replaces the block between ``<!-- tables:begin -->`` and
``<!-- tables:end -->`` in the given markdown file with the tables, the command,
the data sizes and the runtime (for ``--benchmark motion``: the block
``<!-- tables:motion:begin -->`` ... ``<!-- tables:motion:end -->``, and with
``--rnn NAME`` the block named ``tables:motion:NAME``). ``--rules`` and
``--rules2`` restrict the LSTM rules (of all tables, of Tables 2-3): on the tanh
cell of ``motion_cnn_lstm_tanh`` the ``eb`` rule overflows float32 on most
128-frame clips (docs/results.md), so its tables run with ``--rules2 caffe``.

Measured at the defaults (280 + 315 clips): 548 s with 2 workers on the 2-core
development machine while other jobs kept its load average near 5 (Table 1
150 s, Tables 2-3 399 s); on the idle machine 106 s (appearance), 109 s (motion)
and 68 s (motion, tanh LSTM, ``--rules2 caffe``).
"""

from __future__ import annotations

import os

# One BLAS thread per process: the maps are small GEMMs, and a multi-threaded OpenBLAS slows down
# badly (10x and more) when the cores are shared; --workers processes use the cores instead.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy  # noqa: E402

from ebr_ref import synthetic  # noqa: E402
from ebr_ref.evaluation import protocols, tables  # noqa: E402
from ebr_ref.evaluation.localize import pointing_game  # noqa: E402
from ebr_ref.grounding.ground import ground  # noqa: E402
from ebr_ref.models.io import load_model  # noqa: E402
from ebr_ref.models.shipped import pretrained  # noqa: E402
from ebr_ref.pipeline.store import replace_block  # noqa: E402

TABLE1_SEED = 0x7AB1
TABLE2_SEED = 0x7AB2
RANDOM_SEED = 0x7AB3  # random-point baselines
TOLERANCE = protocols.paper_tolerance((64, 64))  # the paper's 15 px diameter on 224 x 224 inputs, at 64 x 64
LENGTHS = (11, 41, 65)
RULES = ("caffe", "eb")
KINDS1 = ("GT+rand", "rand+GT")
FRAME_SIZE = (64, 64)
CHUNK = 8

MODELS = {  # benchmark -> (per-frame CNN, CNN-LSTM)
    "appearance": ("synthetic_cnn", "synthetic_cnn_lstm"),
    "motion": ("motion_cnn", "motion_cnn_lstm"),
}

_MODELS = {"gen": synthetic.actions}  # per process: "gen" (the generator module), "cnn", "rnn", "tanh"
_RULES = {1: RULES, 2: RULES}  # LSTM rules of Table 1 and of Tables 2-3 (--rules, --rules2)


def _load_models(models_dir, benchmark="appearance", rnn=None):
    names = (MODELS[benchmark][0], rnn or MODELS[benchmark][1])
    if models_dir is None:
        _MODELS["cnn"], _MODELS["rnn"] = (pretrained(n) for n in names)
    else:
        _MODELS["cnn"], _MODELS["rnn"] = (load_model(os.path.join(models_dir, n + ".npz")) for n in names)
    _MODELS["gen"] = synthetic.generator(benchmark)
    _MODELS["tanh"] = _MODELS["rnn"].layers[_MODELS["rnn"].sequence_start].settings["cell_act"] == "tanh"
    return names


def clip_specs(kind, n, seed, **options):
    """``n`` clips of one kind: ``(kind, label, seed, options)``; labels cycle over the K classes."""
    seq = seed if isinstance(seed, numpy.random.SeedSequence) else numpy.random.SeedSequence(seed)
    children = seq.spawn(n)
    return [(kind, i % _MODELS["gen"].NUM_CLASSES, children[i], options) for i in range(n)]


def _make(spec):
    kind, label, seed, options = spec
    return _MODELS["gen"].make_clip(kind, label, seed=seed, **options)


def _run(fn, specs, workers):
    """``[fn(spec) for spec in specs]``, in ``workers`` processes (results in input order)."""
    if workers <= 1:
        return [fn(s) for s in specs]
    ctx = multiprocessing.get_context("fork")  # the children inherit the loaded models
    with ctx.Pool(workers) as pool:
        return pool.map(fn, specs, chunksize=2)


# ----------------------------------------------------------------------------- Table 1


def _table1_clip(spec):
    """Pointing outcomes of every method on the GT frames of one clip and the evidence split (in a worker)."""
    cnn, rnn = _MODELS["cnn"], _MODELS["rnn"]
    clip = _make(spec)
    s, e = clip.interval
    gt_frames, gt_boxes = clip.frames[s : e + 1], clip.boxes[s : e + 1]
    rows = {"centre": protocols.centre_point_outcomes(gt_boxes, FRAME_SIZE, TOLERANCE)}
    evidence = {}  # -R row -> [(mean S over the GT frames, mean S over the rand frames)]
    gt = numpy.zeros(clip.frames.shape[0], dtype=bool)
    gt[s : e + 1] = True
    for method in ("EB", "cEB", "BP"):
        g = ground(cnn, gt_frames, clip.label, method=method, chunk_size=CHUNK)
        rows[method] = pointing_game(g.maps, gt_boxes, FRAME_SIZE, TOLERANCE)
    for steps in ("all", "last"):
        g = ground(rnn, clip.frames, clip.label, method="BP-R", seed_steps=steps, chunk_size=CHUNK)
        rows[f"BP-R [{steps}]"] = pointing_game(g.maps[s : e + 1], gt_boxes, FRAME_SIZE, TOLERANCE)
        for rule in _RULES[1]:
            for method in ("EB-R", "cEB-R"):
                g = ground(
                    rnn,
                    clip.frames,
                    clip.label,
                    method=method,
                    lstm_rule=rule,
                    seed_steps=steps,
                    chunk_size=CHUNK,
                    allow_tanh_eb=_MODELS["tanh"],
                )
                name = f"{method} ({rule}) [{steps}]"
                rows[name] = pointing_game(g.maps[s : e + 1], gt_boxes, FRAME_SIZE, TOLERANCE)
                evidence[name] = [protocols.evidence_split(g.evidence, gt)]
    return {"group": spec[0], "label": clip.label, "boxes": gt_boxes, "rows": rows, "evidence": evidence}


def table1(n_clips, workers):
    """Table 1 and the Fig. 6 analogue from the records of ``n_clips`` clips of each kind."""
    seeds = numpy.random.SeedSequence(TABLE1_SEED).spawn(len(KINDS1))
    rng = numpy.random.default_rng(RANDOM_SEED)
    records = []
    for kind, seed in zip(KINDS1, seeds, strict=True):
        for res in _run(_table1_clip, clip_specs(kind, n_clips, seed), workers):
            rows = dict(res["rows"])  # centre, then the methods; the random baseline is drawn here, in order
            random = protocols.random_point_outcomes(res["boxes"], FRAME_SIZE, TOLERANCE, rng)
            rows = {"centre": rows.pop("centre"), "random": random, **rows}
            records.append(
                {
                    "group": res["group"],
                    "label": res["label"],
                    "pointing": {k: protocols.pointing_entry(v) for k, v in rows.items()},
                    "evidence_split": res["evidence"],
                }
            )
    return tables.pointing_table(records, KINDS1), tables.evidence_table(records, KINDS1)


# ----------------------------------------------------------------------------- Tables 2 and 3


def _temporal_clip(spec):
    """GT-class probability and the evidence of every method on one rand+GT+rand clip (in a worker)."""
    rnn = _MODELS["rnn"]
    clip = _make(spec)
    curves, probs = {}, None
    for rule in _RULES[2]:
        for method in ("EB-R", "cEB-R"):
            g = ground(
                rnn,
                clip.frames,
                clip.label,
                method=method,
                lstm_rule=rule,
                seed_steps="all",
                chunk_size=CHUNK,
                allow_tanh_eb=_MODELS["tanh"],
            )
            curves[f"{method} ({rule})"] = g.evidence.astype(numpy.float64)
            probs = g.probs[:, clip.label].astype(numpy.float64)
    return {
        "label": clip.label,
        "interval": clip.interval,
        "T": clip.frames.shape[0],
        "p": probs,
        "S": curves,
    }


def temporal(n_clips, T, workers):
    """Records of rand+GT+rand clips for every GT length (one clip is one video): detections, pointing."""
    seeds = numpy.random.SeedSequence(TABLE2_SEED).spawn(len(LENGTHS))
    specs, names = [], []
    for L, seed in zip(LENGTHS, seeds, strict=True):
        specs += clip_specs("rand+GT+rand", n_clips, seed, num_frames=T, gt_length=L)
        names += [(L, f"L{L}_{i:03d}") for i in range(n_clips)]
    rng = numpy.random.default_rng(RANDOM_SEED + 1)  # Table 3's random frames, one per clip in this order
    records = []
    for res, (L, video) in zip(_run(_temporal_clip, specs, workers), names, strict=True):
        c = res["label"]
        rec = protocols.temporal_record(
            {c: res["p"]},
            {m: {c: S} for m, S in res["S"].items()},
            [(c, *res["interval"])],
            protocols.clip_bounds(res["T"], res["T"]),
            rng,
            pointing_curves=[f"cEB-R ({rule})" for rule in _RULES[2]],
        )
        records.append({"video_id": video, "group": L, "label": c, **rec})
    return records


def table2(records):
    """mAP at IoU 0.5 per method, known / unknown length, per GT length."""
    return tables.detection_table(records, [(L, L, 0.5) for L in LENGTHS])


def table3(records):
    """Temporal pointing accuracy per method (all lengths pooled, and per length)."""
    return tables.temporal_pointing_table(records, LENGTHS)


# ----------------------------------------------------------------------------- output


def render(t1, fig6, t2, t3, info):
    lines = []
    lines.append(f"Command: `{info['command']}`  ")
    bench = f"{info['benchmark']} benchmark"
    lines.append(
        f"Benchmark: `{info['benchmark']}`. Models: `{info['models']}`; {info['machine']}; "
        f"runtime {info['seconds']:.0f} s "
        f"(Table 1 {info['t1']:.0f} s, Tables 2-3 {info['t2']:.0f} s)."
    )
    lines.append("")
    lines.append(
        f"**Table 1** ({bench}) — spatial pointing game, accuracy (%), tolerance {TOLERANCE:.2f} px "
        "diameter at 64 x 64, read-out `conv3` (16 x 16). "
        f"{info['clips1']} clips of each kind, 16 frames, the 8 GT frames of each clip scored "
        f"({t1['EB']['frames']} frames in all). "
        "`[all]`: seed at every step; `[last]`: seed at the last step only."
    )
    lines.append("")
    lines += tables.markdown_pointing(t1, [(k, k) for k in KINDS1] + [(tables.ALL, "all")])
    lines.append("")
    lines.append(
        f"**Evidence on the same clips** ({bench}; the analogue of the paper's Fig. 6): "
        "mean over clips of the mean `S_t` (x 100; eq. 5 makes each pass sum to 1 "
        "over the 16 frames, so a uniform positive map gives 6.25) over the GT frames "
        "and over the rand frames, and the share of clips (%) whose GT frames have the larger mean."
    )
    lines.append("")
    lines += tables.markdown_evidence(fig6, [(k, k) for k in KINDS1])
    lines.append("")
    lines.append(
        f"**Table 2** ({bench}) — temporal detection, mAP (%) at IoU 0.5, "
        f"{info['clips2']} rand+GT+rand clips of {info['frames2']} frames per GT length, "
        "seed at every step. Unknown length: mAP, and in brackets the mean length of the "
        "detected windows (frames)."
    )
    lines.append("")
    lines += tables.markdown_detection(t2, [(L, f"L = {L}") for L in LENGTHS])
    lines.append("")
    n3 = info["clips2"] * len(LENGTHS)
    lines.append(f"**Table 3** ({bench}) — temporal pointing game, accuracy (%), the same {n3} clips.")
    lines.append("")
    lines += tables.markdown_temporal_pointing(
        t3,
        [(L, f"L = {L}") for L in LENGTHS] + [(tables.ALL, "all")],
        labels={protocols.EXPECTED: "Random (expected, L/T)"},
    )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", choices=synthetic.BENCHMARKS, default="appearance", help="clips, models")
    ap.add_argument("--rnn", default=None, help="another shipped recurrent model (e.g. motion_cnn_lstm_tanh)")
    ap.add_argument("--rules", default=",".join(RULES), help="LSTM rules, comma-separated (default caffe,eb)")
    ap.add_argument("--rules2", default=None, help="LSTM rules of Tables 2-3 (default: those of --rules)")
    ap.add_argument("--clips1", type=int, default=140, help="Table 1: clips of each kind (GT+rand, rand+GT)")
    ap.add_argument("--clips2", type=int, default=105, help="Tables 2-3: rand+GT+rand clips per GT length")
    ap.add_argument("--frames2", type=int, default=128, help="Tables 2-3: frames per clip")
    ap.add_argument("--models-dir", default=None, help="load the models from here instead of ebr_ref/data")
    ap.add_argument("--workers", type=int, default=2, help="processes (one BLAS thread each)")
    ap.add_argument("--write", default=None, help="markdown file whose tables block is replaced")
    args = ap.parse_args(argv)
    names = _load_models(args.models_dir, args.benchmark, args.rnn)
    _RULES[1] = tuple(args.rules.split(","))
    _RULES[2] = _RULES[1] if args.rules2 is None else tuple(args.rules2.split(","))
    t0 = time.perf_counter()
    t1, fig6 = table1(args.clips1, args.workers)
    t_1 = time.perf_counter() - t0
    records = temporal(args.clips2, args.frames2, args.workers)
    t2, t3 = table2(records), table3(records)
    seconds = time.perf_counter() - t0
    args_used = list(sys.argv[1:] if argv is None else argv)
    cmd = " ".join([".venv/bin/python", "benchmarks/synthetic_tables.py"] + args_used)
    info = {
        "command": cmd,
        "seconds": seconds,
        "t1": t_1,
        "t2": seconds - t_1,
        "benchmark": args.benchmark,
        "models": ", ".join(names) + ("" if args.models_dir is None else f" from {args.models_dir}"),
        "machine": f"{os.cpu_count()} cores, numpy {numpy.__version__}, Python {platform.python_version()}",
        "clips1": args.clips1,
        "clips2": args.clips2,
        "frames2": args.frames2,
        "workers": args.workers,
    }
    text = render(t1, fig6, t2, t3, info)
    print(text)
    if args.write:
        block = "tables" if args.benchmark == "appearance" else f"tables:{args.benchmark}"
        replace_block(args.write, text, block if args.rnn is None else f"{block}:{args.rnn}")


if __name__ == "__main__":
    main()
