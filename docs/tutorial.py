# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: from EB to cEB-R on the shipped models
#
# This notebook walks through the four methods of the paper on one synthetic clip, with the models
# shipped in the package (no download): excitation backprop (**EB**) and its contrastive variant
# (**cEB**) on a per-frame CNN, then their extensions through an LSTM over the frames (**EB-R**,
# **cEB-R**). At each step it shows a map per frame, and it prints the numbers the paper's equations
# produce: the grand totals of eq. 5, the signal lost per layer, the per-frame evidence `S` against
# the ground truth. It ends with the two rules this engine offers through the LSTM, on the same clip.
# The equations themselves are worked out by hand in [method.md](method.md).
#
# It is stored as a plain script in jupytext's percent format (`docs/tutorial.py`): open it in
# Jupyter with jupytext, or run it with `python docs/tutorial.py`. Its pictures go to the folder named
# by the environment variable `EBR_TUTORIAL_OUT` (a temporary folder otherwise). It needs the `cli`
# extra (matplotlib, Pillow) and runs in well under a minute on 2 CPU cores; `docs/tutorial.md` is
# this notebook with its outputs, written by `python docs/make_tutorial.py`.

# %%
import os
import tempfile

import numpy

from ebr_ref import ground, synthetic
from ebr_ref.evaluation.localize import ground_unknown_length, pointing_game
from ebr_ref.evaluation.metrics import temporal_iou
from ebr_ref.models import pretrained
from ebr_ref.tools import viz

OUT = os.environ.get("EBR_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="ebr-tutorial-")
shown = []  # the pictures, in order


def rounded(values, decimals=3):
    """Values rounded for printing, without negative zeros."""
    return numpy.round(values, decimals) + 0.0


def lost_per_layer(g, pass_="positive"):
    """The signal lost per layer in one pass (``diagnostics["mass_lost"]``), the layers where it is not 0."""
    per_layer = g.diagnostics["mass_lost"][pass_]
    lost = {layer: round(float(m[0]), 4) for layer, m in per_layer.items() if abs(float(m[0])) > 1e-12}
    return lost or "none"


def show(fig, name):
    """Save a figure as OUT/tutorial_<name>.png (and display it in a notebook)."""
    path = os.path.join(OUT, f"tutorial_{name}.png")
    fig.savefig(path, format="png")
    shown.append(path)
    try:
        from IPython.display import Image, display

        if get_ipython() is not None:  # defined in IPython only
            display(Image(filename=path))
    except (ImportError, NameError):
        pass


# %% [markdown]
# ## 1. A clip and two models
#
# `synthetic.make_clip("rand+GT", ...)` renders 16 frames of 64 x 64: another action in the first
# half, then the *ground-truth* (GT) action in the second half, with the actor's box in every GT
# frame. The shipped models were trained on such clips (`benchmarks/train_synthetic.py`): a per-frame
# CNN (`synthetic_cnn`) and the same CNN followed by an LSTM (`synthetic_cnn_lstm`). We use them in
# float64, so that the printed numbers do not depend on the order of float32 sums.

# %%
cnn = pretrained("synthetic_cnn").astype("float64")
lstm = pretrained("synthetic_cnn_lstm").astype("float64")
clip = synthetic.make_clip("rand+GT", seed=4, num_frames=16)
names = synthetic.ACTIONS
target = int(clip.label)
frames = numpy.rint(clip.frames.transpose(0, 2, 3, 1) * 255).astype(numpy.uint8)  # (T, H, W, 3) for display
print(
    "frames",
    clip.frames.shape,
    "| first half:",
    names[clip.rand_label],
    "| GT:",
    names[target],
    "in frames",
    clip.interval,
)
print("read-out layer of both models:", lstm.meta["readout"], "| layers:", ", ".join(lstm.layer_names))


# %%
def map_row(g, title, every=2):
    """Every other frame with its map (clamped at 0, one scale for the clip); GT frames framed in green."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heat = viz.overlay(frames, viz.display_heat(g.maps))
    idx = list(range(0, len(frames), every))
    fig = Figure(figsize=(1.2 * len(idx), 2.05), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(idx))
    for ax, t in zip(axes, idx):
        ax.imshow(heat[t])
        ax.set_xticks([])
        ax.set_yticks([])
        gt = clip.interval[0] <= t <= clip.interval[1]
        for side in ax.spines.values():
            side.set(color="#28c83c" if gt else "0.7", linewidth=3 if gt else 0.5)
        ax.set_title(f"t={t}\nS={rounded(g.evidence[t]):+.3f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.text(
        0.5,
        0.0,
        "heat: evidence for the target, clamped at 0 (one scale for the clip); green border: "
        "ground-truth frame; S: the frame's evidence (sum of its signed map)",
        ha="center",
        va="bottom",
        fontsize=6.5,
    )
    return fig


# %% [markdown]
# ## 2. EB on the per-frame CNN
#
# EB seeds a raw 1 on the target's logit and passes it down, layer by layer, to the read-out layer
# `conv3`: each unit receives the share of its parents' signal that its positive contributions made
# (method.md §1). A per-frame CNN is grounded frame by frame: every frame starts with one unit of
# signal, so its evidence `S` is 1 wherever nothing is lost on the way. EB says *where* in each
# frame, not *when*.

# %%
eb = ground(cnn, clip.frames, target, method="EB")
show(map_row(eb, f"EB on synthetic_cnn, target '{names[target]}'"), "eb")
print("S per frame:", rounded(eb.evidence))
print("signal lost per layer at zero denominators:", lost_per_layer(eb))

# %% [markdown]
# ## 3. cEB: what is specific to the class
#
# EB of any class lights up whatever the network finds salient. cEB also runs EB for a *dual* class
# whose classifier weights are negated, and subtracts its signal at the classifier's input (paper
# eqs. 2-4). The map becomes signed: positive where the evidence is specific to the target, negative
# where it speaks for the other classes. Both passes carry one unit of signal, so each frame's `S` is
# 0 (up to rounding): a per-frame cEB map says where, and its sum says nothing.

# %%
ceb = ground(cnn, clip.frames, target, method="cEB")
show(map_row(ceb, f"cEB on synthetic_cnn, target '{names[target]}'"), "ceb")
scale = viz.evidence_scale(ceb.maps)  # the largest sum of |map| over a frame
print(
    f"a frame's sum of |map|: up to {scale:.3f}; every |S| below 1e-12 of that:",
    bool(numpy.all(numpy.abs(ceb.evidence) < 1e-12 * scale)),
)

# %% [markdown]
# ## 4. EB-R: through the LSTM, over time
#
# The CNN-LSTM classifies at every step; the seed sits on the target's logit at the last step (the
# released demo's choice; `seed_steps="all"` seeds every step). EB-R passes the signal back through
# the LSTM to every frame's features (Algorithm 1), then divides by **one grand total over all frames**
# (eq. 5), so that frames stay comparable, and continues down each frame's CNN. The evidence `S` now
# says *when*: it sums to 1 over the clip, minus what is lost below the LSTM.

# %%
ebr = ground(lstm, clip.frames, target, method="EB-R")
show(map_row(ebr, f"EB-R on synthetic_cnn_lstm, target '{names[target]}', seeded at the last step"), "ebr")
print("S per frame:", rounded(ebr.evidence))
print("sum of S:", round(float(ebr.evidence.sum()), 6))
print("eq.-5 grand total (before the division):", round(ebr.diagnostics["totals"][0], 4))

# %% [markdown]
# The grand total is not 1: with the released code's rule (`lstm_rule="caffe"`, section 7) the signal
# inside the LSTM follows the gradient of the cell and is not conserved; eq. 5 normalises whatever
# arrives. EB-R's evidence grows towards the last step, the one that was seeded: what the LSTM "looked
# at" last, whatever the class.
#
# ## 5. cEB-R: contrastive, through time
#
# cEB-R repeats EB-R for the dual class, normalises it by its own grand total and subtracts at the
# LSTM's input (eqs. 6-7); the difference continues down each frame's CNN (eqs. 8-9).

# %%
cebr = ground(lstm, clip.frames, target, method="cEB-R")
show(map_row(cebr, f"cEB-R on synthetic_cnn_lstm, target '{names[target]}', seeded at the last step"), "cebr")
print("S per frame:", rounded(cebr.evidence))
print(
    "eq.-5 grand totals: target",
    round(cebr.diagnostics["totals"][0], 4),
    "| dual",
    round(cebr.diagnostics["totals_dual"][0], 4),
)

# %% [markdown]
# ## 6. The signal lost per layer
#
# Where a normaliser `Z` is exactly 0, EB has nowhere to send that signal: it is lost, and the engine
# reports how much, per layer and per pass (`diagnostics["mass_lost"]`: the signal entering a layer
# minus the signal leaving it). A negative number is signal *created*: the caffe rule through the
# LSTM does not conserve it (the reason for eq. 5).

# %%
for pass_ in ("positive", "dual", "cnn"):  # the target's pass, the dual class's pass, the CNN below the LSTM
    print(f"{pass_:>8}: {lost_per_layer(cebr, pass_)}")

# %% [markdown]
# ## 7. When: the evidence against the ground truth
#
# The paper localises an action in time from `S` alone (§4.1): anchor at the frame of largest `S`,
# grow to both sides while the next frame's `S` is not negative. The four methods on the same clip:

# %%
panels, rows = [], []
for name, g in (("EB", eb), ("cEB", ceb), ("EB-R", ebr), ("cEB-R", cebr)):
    det = ground_unknown_length(g.evidence)
    hits = pointing_game(g.maps, clip.boxes, (64, 64))
    iou = temporal_iou(det, clip.interval)
    rows.append(
        f"{name:>6}: detected {det}, temporal IoU {iou:.2f}, pointing game {(hits == 1).sum()}/"
        f"{(hits != 0).sum()}"
    )
    panels.append(
        {
            "name": f"{name}  |  detected {list(det)}  |  IoU {iou:.2f}",
            "evidence": g.evidence,
            "detected": det,
            "gt": clip.interval,
            "prob": g.probs[:, target],
            "zero": viz.numerically_zero(g.evidence, scale=viz.evidence_scale(g.maps)),
        }
    )
print(f"ground truth: frames {clip.interval}")
print("\n".join(rows))
fig = viz.evidence_figure(panels, title=f"per-frame evidence S for '{names[target]}'")
fig.set_dpi(80)
show(fig, "evidence")

# %% [markdown]
# EB finds the actor in every GT frame (the pointing game: the map's peak on the actor's box) but,
# with one unit of signal per frame, cannot tell when; cEB's sums are zero by construction (hatched:
# numerically zero), so its "detection" is noise. Through the LSTM, EB-R's evidence piles up at the
# seeded last step, and cEB-R's contrast keeps what is specific to the class: positive over the GT
# frames, zero or negative before them. On this clip cEB-R also ends with a strongly negative last
# frame, so its detected segment stops one frame short. These are one clip's numbers; over many clips
# the rates are in [results.md](results.md).
#
# ## 8. Two rules through the LSTM, on the same clip
#
# `lstm_rule="caffe"` (the default) follows the released Caffe code: inside the cell the signal takes
# the gradient path (sigmoid derivatives included) and goes back in time through the cell state only.
# `lstm_rule="eb"` applies EB proper to the unrolled cell, with the gates as weights: the signal is
# conserved step by step ([lstm.md](lstm.md) puts both side by side).

# %%
panels = []
for rule in ("caffe", "eb"):
    g = ground(lstm, clip.frames, target, method="cEB-R", lstm_rule=rule)
    det = ground_unknown_length(g.evidence)
    last = abs(g.evidence[-1]) / numpy.abs(g.evidence).sum()
    print(
        f"{rule:>5}: grand totals {g.diagnostics['totals'][0]:.4f} / {g.diagnostics['totals_dual'][0]:.4f} "
        f"(target / dual); lost in the target's pass: {lost_per_layer(g)}"
    )
    print(
        f"       share of |S| in the last frame {last:.2f}; detected {det}, IoU "
        f"{temporal_iou(det, clip.interval):.2f}"
    )
    panels.append(
        {
            "name": f"cEB-R, lstm_rule='{rule}'  |  detected {list(det)}",
            "evidence": g.evidence,
            "detected": det,
            "gt": clip.interval,
            "prob": g.probs[:, target],
        }
    )
fig = viz.evidence_figure(panels, title="the same clip, the two LSTM rules")
fig.set_dpi(80)
show(fig, "rules")

# %% [markdown]
# With the eb rule the grand totals are 1 (nothing is created or lost inside the LSTM), and the
# evidence is spread over the frames; with the caffe rule about half of it sits in the last, seeded,
# frame. On this clip the eb rule's detection is shorter. Which to use: `caffe` to reproduce the
# paper's released code, `eb` for an explanation that conserves the signal.
# Both are tested against independent implementations (`tests/grounding/`, `tests/layers/test_lstm.py`).
#
# Next: ground your own video with `ebr-ref ground` ([cli.md](cli.md)), or check another
# implementation against this one ([verify-your-implementation.md](verify-your-implementation.md)).
