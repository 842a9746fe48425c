"""Figures of the temporal evidence on the synthetic benchmarks: the paper's Fig. 6 analogue, evidence curves.

Run: .venv/bin/python benchmarks/evidence_figures.py [--clips 56] [--out docs/images]

Writes two PNG files into ``--out``:

``fig6_evidence.png``
    The analogue of the paper's Fig. 6: the per-frame evidence ``S_t`` of cEB-R
    (every step seeded, the GT class) on 16-frame "GT+rand" and "rand+GT"
    clips, mean and standard deviation over ``--clips`` clips of each kind, for
    each benchmark and recurrent model (rows) and LSTM rule (columns). The
    clips are the first ``--clips`` of Table 1's in
    ``benchmarks/synthetic_tables.py`` (the same seeds, labels cycling over the
    classes). The ``eb`` rule on the tanh cell is left out: assumption A1
    fails and its evidence is not meaningful (docs/results.md).
``motion_evidence_curves.png``
    Four 128-frame "rand+GT+rand" clips of the motion benchmark (the first clip
    of each GT length 11, 41, 65 of Tables 2-3, and the second of length 41):
    cEB-R's ``S_t`` of ``motion_cnn_lstm`` under both rules (each divided by its
    largest absolute value over the clip), its GT-class probability and that
    of ``motion_cnn_lstm_tanh``, the GT segment shaded.

It also prints, for the 315 "rand+GT+rand" clips of Tables 2-3 on each
benchmark, what the recurrent models' probabilities do (the figures quoted in
docs/results.md): the share of GT frames and of rand frames where the GT-class
probability is at least 0.5, the per-step accuracy on the GT and on the rand
frames, and where the peak of the GT-class probability lies; and how often the
``eb`` rule on the tanh cell of ``motion_cnn_lstm_tanh`` gives non-finite
evidence in float32 on the first 12 of those clips per GT length (EB-R and
cEB-R), with the largest ``|S_t|`` in float64 on the same clips.

NumPy float32 through ebr_ref, matplotlib's object-oriented API with the Agg
canvas; about two minutes on the 2-core development machine.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402

import numpy  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ebr_ref import synthetic  # noqa: E402
from ebr_ref.grounding.ground import NonFiniteResultError, ground  # noqa: E402
from ebr_ref.models.shipped import pretrained  # noqa: E402

TABLE1_SEED = 0x7AB1  # benchmarks/synthetic_tables.py: Table 1's clips
TABLE2_SEED = 0x7AB2  # benchmarks/synthetic_tables.py: Tables 2-3's clips
LENGTHS = (11, 41, 65)
RULES = ("caffe", "eb")
ROWS = (  # benchmark, recurrent model, label, rules shown
    ("appearance", "synthetic_cnn_lstm", "ReLU LSTM", RULES),
    ("motion", "motion_cnn_lstm", "ReLU LSTM", RULES),
    ("motion", "motion_cnn_lstm_tanh", "tanh LSTM", ("caffe",)),
)


def _ground(model, clip, rule):
    """cEB-R evidence ``(T,)`` and GT-class probability ``(T,)`` of one clip, every step seeded."""
    g = ground(model, clip.frames, clip.label, method="cEB-R", lstm_rule=rule, seed_steps="all")
    return g.evidence.astype(numpy.float64), g.probs[:, clip.label].astype(numpy.float64)


def fig6(n_clips, path):
    kinds = ("GT+rand", "rand+GT")
    fig = Figure(figsize=(8.4, 2.6 * len(ROWS)))
    FigureCanvasAgg(fig)
    for r, (bench, name, label, rules) in enumerate(ROWS):
        gen = synthetic.generator(bench)
        seeds = numpy.random.SeedSequence(TABLE1_SEED).spawn(len(kinds))
        clips = {
            k: [gen.make_clip(k, i % gen.NUM_CLASSES, seed=child) for i, child in enumerate(s.spawn(n_clips))]
            for k, s in zip(kinds, seeds, strict=True)
        }
        model = pretrained(name)
        for c, rule in enumerate(RULES):
            ax = fig.add_subplot(len(ROWS), len(RULES), r * len(RULES) + c + 1)
            ax.set_title(f"{bench}: {name} ({label}), cEB-R ({rule})", fontsize=8)
            ax.tick_params(labelsize=7)
            if rule not in rules:
                note = "eb rule on a tanh cell:\nA1 fails, evidence not meaningful"
                ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            for kind, colour in zip(kinds, ("tab:green", "tab:blue"), strict=True):
                S = numpy.stack([_ground(model, clip, rule)[0] for clip in clips[kind]])  # (n, 16)
                t = numpy.arange(S.shape[1])
                m, sd = S.mean(axis=0), S.std(axis=0)
                ax.plot(t, m, color=colour, label=kind)
                ax.fill_between(t, m - sd, m + sd, color=colour, alpha=0.2, linewidth=0)
            ax.axhline(0, color="k", linewidth=0.5)
            ax.axvline(7.5, color="k", linewidth=0.5, linestyle=":")
            ax.set_xlabel("frame", fontsize=7)
            ax.set_ylabel("S_t, mean ± sd", fontsize=7)
            ax.legend(fontsize=7, loc="best")
    title = f"Evidence of the GT class on 16-frame two-action clips, {n_clips} clips of each kind"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def curves(path):
    gen = synthetic.generator("motion")
    seeds = dict(zip(LENGTHS, numpy.random.SeedSequence(TABLE2_SEED).spawn(len(LENGTHS)), strict=True))
    picks = [(11, 0), (41, 0), (41, 1), (65, 0)]
    relu, tanh = pretrained("motion_cnn_lstm"), pretrained("motion_cnn_lstm_tanh")
    fig = Figure(figsize=(9.0, 2.0 * len(picks)))
    FigureCanvasAgg(fig)
    ax = None
    for k, (L, i) in enumerate(picks):
        clip = gen.make_clip("rand+GT+rand", i % gen.NUM_CLASSES, seed=seeds[L].spawn(i + 1)[i], gt_length=L)
        ax = fig.add_subplot(len(picks), 1, k + 1)
        s, e = clip.interval
        ax.axvspan(s - 0.5, e + 0.5, color="0.85", label="GT segment")
        p = None
        for rule, colour in zip(RULES, ("tab:red", "tab:purple"), strict=True):
            S, p = _ground(relu, clip, rule)
            scaled = S / max(numpy.abs(S).max(), 1e-30)
            ax.plot(scaled, color=colour, linewidth=1, label=f"cEB-R ({rule}), scaled")
        ax.plot(p, color="k", linewidth=1, label="GT probability (ReLU)")
        p_tanh = tanh.forward(clip.frames)[:, clip.label]
        ax.plot(p_tanh, color="k", linewidth=1, linestyle="--", label="GT probability (tanh)")
        ax.axhline(0, color="k", linewidth=0.4)
        ax.axhline(0.5, color="k", linewidth=0.4, linestyle=":")
        names = gen.ACTIONS
        ax.set_title(
            f"GT '{names[clip.label]}' (L = {L}, frames {s}-{e}) inside '{names[clip.rand_label]}'",
            fontsize=8,
        )
        ax.set_xlim(-0.5, clip.frames.shape[0] - 0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6.5, loc="lower left", ncol=5)
    ax.set_xlabel("frame", fontsize=8)
    fig.suptitle("Motion benchmark, motion_cnn_lstm: evidence of the GT class on 128-frame clips", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def probability_stats(bench, name, n_clips=105, T=128):
    """What a recurrent model's probabilities do on the Tables 2-3 clips of a benchmark (a dict of shares)."""
    gen, model = synthetic.generator(bench), pretrained(name)
    seeds = numpy.random.SeedSequence(TABLE2_SEED).spawn(len(LENGTHS))
    keys = ("p>=0.5 on GT frames", "p>=0.5 on rand frames", "accuracy on GT frames", "accuracy on rand")
    acc = {k: [] for k in (*keys, "peak in the GT segment", "peak in frames 0-2")}
    for L, seed in zip(LENGTHS, seeds, strict=True):
        for i, child in enumerate(seed.spawn(n_clips)):
            clip = gen.make_clip("rand+GT+rand", i % gen.NUM_CLASSES, seed=child, num_frames=T, gt_length=L)
            probs = model.forward(clip.frames)  # (T, K)
            s, e = clip.interval
            gt = numpy.zeros(T, dtype=bool)
            gt[s : e + 1] = True
            p, pred = probs[:, clip.label], probs.argmax(axis=1)
            acc["p>=0.5 on GT frames"] += list(p[gt] >= 0.5)
            acc["p>=0.5 on rand frames"] += list(p[~gt] >= 0.5)
            acc["accuracy on GT frames"] += list(pred[gt] == clip.label)
            acc["accuracy on rand"] += list(pred[~gt] == clip.rand_label)
            peak = int(numpy.argmax(p))
            acc["peak in the GT segment"].append(s <= peak <= e)
            acc["peak in frames 0-2"].append(peak <= 2)
    return {k: float(numpy.mean(v)) for k, v in acc.items()}


def tanh_eb_overflow(n_clips=12, T=128):
    """Non-finite float32 results of the eb rule on the tanh CNN-LSTM; the largest ``|S_t|`` in float64."""
    gen, model = synthetic.generator("motion"), pretrained("motion_cnn_lstm_tanh")
    seeds = numpy.random.SeedSequence(TABLE2_SEED).spawn(len(LENGTHS))
    failed = runs = 0
    largest = 0.0
    for L, seed in zip(LENGTHS, seeds, strict=True):
        for i, child in enumerate(seed.spawn(n_clips)):
            clip = gen.make_clip("rand+GT+rand", i % gen.NUM_CLASSES, seed=child, num_frames=T, gt_length=L)
            for method in ("EB-R", "cEB-R"):
                kw = dict(method=method, lstm_rule="eb", seed_steps="all", allow_tanh_eb=True)
                runs += 1
                try:
                    ground(model, clip.frames, clip.label, **kw)
                except NonFiniteResultError:
                    failed += 1
                g = ground(model, clip.frames, clip.label, dtype=numpy.float64, **kw)
                largest = max(largest, float(numpy.abs(g.evidence).max()))
    return failed, runs, largest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=56, help="Fig. 6: clips of each kind")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "images"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    fig6(args.clips, os.path.join(args.out, "fig6_evidence.png"))
    curves(os.path.join(args.out, "motion_evidence_curves.png"))
    runs = {"synthetic_cnn_lstm": "appearance", "motion_cnn_lstm": "motion", "motion_cnn_lstm_tanh": "motion"}
    for name, bench in runs.items():
        stats = probability_stats(bench, name)
        print(f"{bench} / {name}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in stats.items()))
    failed, runs, largest = tanh_eb_overflow()
    print(
        f"motion_cnn_lstm_tanh, eb rule: {failed} of {runs} groundings non-finite in float32; "
        f"largest |S_t| in float64 {largest:.3g} (eq. 5 makes each pass sum to 1)"
    )


if __name__ == "__main__":
    main()
