"""Train the two small models shipped in ``ebr_ref/data`` on the synthetic action videos.

Run: .venv/bin/python benchmarks/train_synthetic.py [--out ebr_ref/data] [--quick]

Trains with torch on the CPU (2 threads), deterministic given the seeds below:

(a) ``synthetic_cnn``: a per-frame CNN classifier with Caffe-style layer names,
    conv1(16)-relu1-pool1-conv2(32)-relu2-pool2-conv3(64)-relu3-pool3-flatten-
    fc6(128)-relu6-drop6-fc7(128)-relu7-drop7-fc8(7), all convolutions 3x3 with
    padding 1, pools 2x2 max; input (3, 64, 64) frames in [0, 1] (no
    preprocessing), trained on single frames of trimmed synthetic videos;
(b) ``synthetic_cnn_lstm``: THE SAME CNN up to drop7 (copied and frozen), then
    ``lstm1`` (a ReLU LSTM of 128 units written here by hand as docs/spec.md §4: gate
    blocks i, f, o, g, Caffe's clip markers cont = 0 at the first frame) ->
    ``lstm1_drop`` -> ``fc8`` at every step, trained LRCN style on 16-frame
    clips with a label at every step: half trimmed clips (the clip's action at
    every step), half two-action clips "GT+rand" / "rand+GT" (the action of
    each frame). Trained on trimmed clips only (as the paper's model), the
    ReLU LSTM latched on the first action it saw: on rand+GT clips the GT
    class reached probability 0.5 on 9 % of the GT frames, on 128-frame
    rand+GT+rand clips on 7 %, so every temporal table was degenerate (see
    docs/results.md).

Both are exported to ebr_ref layer lists and canonical parameters (float32);
the script checks that ebr_ref's forward equals torch's forward on test clips
(normwise relative error of the logits <= 1e-5 in float32), measures the test
accuracy with ebr_ref alone on a test split regenerated from a recorded seed
(per-frame accuracy for the CNN; per-clip accuracy for the CNN-LSTM, the argmax
of the class probabilities averaged over the 16 steps, as LRCN's clip
accuracy), also on a small split that ``tests/models/test_shipped_models.py``
recomputes, and writes ``<name>.npz`` + ``<name>.json`` with
:func:`ebr_ref.models.io.save_model`. Every figure goes into the sidecar's
``meta``.

``--quick`` trains on a tenth of the data to try the pipeline (it writes to
``--out``; do not ship its output).

Measured on the 2-core development machine (torch 2.14.1 CPU): see the
``training.seconds`` fields of the sidecars and docs/results.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # NumPy's BLAS: see benchmarks/synthetic_tables.py

import argparse
import collections
import copy
import json
import platform
import sys
import time

import numpy
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peers import CaffeLSTM

from ebr_ref import synthetic
from ebr_ref.models import sequential
from ebr_ref.models.io import load_model, save_model

TORCH_SEED = 0x5EED  # torch.manual_seed: initialisation and dropout
ORDER_SEED = 0x0D3E  # numpy permutations of the training data, one per epoch
CNN_DATA_SEED = 0xC7A1  # make_batch seed of the CNN's training clips
LSTM_DATA_SEED = 0x157A  # make_batch seed of the CNN-LSTM's training clips
TEST_SEED = 0x7E57  # the test split (trimmed 16-frame clips)
SMALL_SEED = 0x5A11  # the small split recomputed by the tests
STEPS_SEED = 0x2AC7  # two-action test clips (per-step accuracy of the CNN-LSTM)
THREADS = 2
LSTM_KINDS = ("trimmed", "GT+rand", "rand+GT")

NUM_CLASSES = synthetic.NUM_CLASSES
INPUT_SHAPE = (3, 64, 64)
HIDDEN = 128
CLIP_FRAMES = 16

CONFIG = {
    "cnn_clips": 1400,  # trimmed clips of cnn_frames frames: 200 per class
    "cnn_frames": 8,
    "cnn_epochs": 3,
    "cnn_batch": 64,
    "cnn_lr": 1e-3,
    "lstm_mix": {"trimmed": 700, "GT+rand": 350, "rand+GT": 350},  # 16-frame clips per kind
    "lstm_epochs": 30,
    "lstm_batch": 32,
    "lstm_lr": 1e-3,
    "test_clips": 210,  # 30 per class
    "small_clips": 64,
}

# ----------------------------------------------------------------------------- architecture

CNN_BODY = [  # ebr_ref layer specs; the torch modules below carry the same names
    ("conv1", "conv", {"out_channels": 16, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("conv2", "conv", {"out_channels": 32, "kernel": 3, "padding": 1}),
    ("relu2", "relu"),
    ("pool2", "maxpool", {"kernel": 2}),
    ("conv3", "conv", {"out_channels": 64, "kernel": 3, "padding": 1}),
    ("relu3", "relu"),
    ("pool3", "maxpool", {"kernel": 2}),
    ("flatten", "flatten"),
    ("fc6", "fc", {"out_features": 128}),
    ("relu6", "relu"),
    ("drop6", "dropout", {"p": 0.5}),
    ("fc7", "fc", {"out_features": 128}),
    ("relu7", "relu"),
    ("drop7", "dropout", {"p": 0.5}),
]
CNN_LAYERS = CNN_BODY + [("fc8", "fc", {"out_features": NUM_CLASSES})]
LSTM_LAYERS = CNN_BODY + [
    ("lstm1", "lstm", {"hidden": HIDDEN, "cell_act": "relu"}),
    ("lstm1_drop", "dropout", {"p": 0.5}),
    ("fc8", "fc", {"out_features": NUM_CLASSES}),
]
READOUT = "conv3"  # the last conv, as conv5 in the paper


def _torch_module(spec, in_channels, in_features):
    """One torch module for an ebr_ref layer spec; returns (module, channels, features)."""
    name, kind = spec[0], spec[1]
    s = spec[2] if len(spec) == 3 else {}
    if kind == "conv":
        return (
            nn.Conv2d(in_channels, s["out_channels"], s["kernel"], padding=s["padding"]),
            s["out_channels"],
            None,
        )
    if kind == "relu":
        return nn.ReLU(), in_channels, in_features
    if kind == "maxpool":
        return nn.MaxPool2d(s["kernel"]), in_channels, None
    if kind == "flatten":
        return nn.Flatten(), None, None
    if kind == "fc":
        return nn.Linear(in_features, s["out_features"]), None, s["out_features"]
    if kind == "dropout":
        return nn.Dropout(s["p"]), in_channels, in_features
    raise ValueError(f"no torch module for layer {name!r} ({kind})")


def torch_body(specs):
    """``nn.Sequential`` whose children carry the ebr_ref layer names (state_dict keys = canonical names)."""
    mods = collections.OrderedDict()
    channels, features = INPUT_SHAPE[0], None
    hw = INPUT_SHAPE[1]
    for spec in specs:
        if spec[1] == "fc" and features is None:
            features = channels * hw * hw
        mod, channels_new, features_new = _torch_module(spec, channels, features)
        if spec[1] == "maxpool":
            hw //= spec[2]["kernel"]
        channels, features = channels_new if channels_new is not None else channels, features_new
        mods[spec[0]] = mod
    return nn.Sequential(mods)


class CNNLSTM(nn.Module):
    """Frozen CNN body (to drop7) -> lstm1 -> lstm1_drop -> fc8 at every step."""

    def __init__(self, body, cell_act="relu", num_classes=NUM_CLASSES):
        super().__init__()
        self.body = body
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.lstm1 = CaffeLSTM(128, HIDDEN, cell_act)
        self.lstm1_drop = nn.Dropout(0.5)
        self.fc8 = nn.Linear(HIDDEN, num_classes)

    def head(self, feats, cont):
        """Sequence part: ``feats (T, N, D)`` -> logits ``(T, N, K)``."""
        return self.fc8(self.lstm1_drop(self.lstm1(feats, cont)))

    def forward(self, clips):
        """``clips (N, T, 3, H, W)`` -> logits ``(T, N, K)``."""
        N, T = clips.shape[:2]
        feats = self.body(clips.reshape(N * T, *clips.shape[2:])).reshape(N, T, -1).transpose(0, 1)
        return self.head(feats, clip_markers(T, N))


def clip_markers(T, N):
    cont = torch.ones(T, N)
    cont[0] = 0
    return cont


# ----------------------------------------------------------------------------- data


def trimmed(n, seed, frames):
    """``n`` trimmed clips ``(n, T, 3, 64, 64)`` float32 and labels ``(n,)`` (balanced, seeded)."""
    x, clips = synthetic.make_batch(n, "trimmed", seed=seed, num_frames=frames)
    return x, numpy.array([c.label for c in clips], dtype=numpy.int64)


def lstm_training_clips(mix, seed):
    """Clips ``(n, 16, 3, 64, 64)`` and per-step labels ``(n, 16)`` for the CNN-LSTM.

    ``mix`` maps a clip kind to a number of clips; every kind gets its own child
    seed (in the order of :data:`LSTM_KINDS`). The label at each step is the
    action performed in that frame (``SyntheticClip.frame_labels``).
    """
    seeds = numpy.random.SeedSequence(seed).spawn(len(LSTM_KINDS))
    xs, ys = [], []
    for kind, s in zip(LSTM_KINDS, seeds):
        if mix.get(kind, 0):
            x, clips = synthetic.make_batch(mix[kind], kind, seed=s, num_frames=CLIP_FRAMES)
            xs.append(x)
            ys.append(numpy.stack([c.frame_labels for c in clips]))
    return numpy.concatenate(xs), numpy.concatenate(ys)


# ----------------------------------------------------------------------------- training


def train_cnn(cfg, log):
    x, y = trimmed(cfg["cnn_clips"], CNN_DATA_SEED, cfg["cnn_frames"])
    n, T = x.shape[:2]
    x = torch.from_numpy(x.reshape(n * T, *INPUT_SHAPE))
    y = torch.from_numpy(numpy.repeat(y, T))
    model = torch_body(CNN_LAYERS)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["cnn_lr"])
    order = numpy.random.default_rng(ORDER_SEED)
    B = cfg["cnn_batch"]
    model.train()
    for epoch in range(cfg["cnn_epochs"]):
        perm = torch.from_numpy(order.permutation(x.shape[0]))
        total, correct, seen = 0.0, 0, 0
        for a in range(0, x.shape[0], B):
            idx = perm[a : a + B]
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
            correct += int((logits.argmax(1) == y[idx]).sum())
            seen += idx.numel()
        log(f"cnn epoch {epoch + 1}: loss {total / seen:.4f}, train accuracy {correct / seen:.4f}")
    model.eval()
    return model, {"clips": n, "frames_per_clip": T, "frames": n * T}


def train_lstm(cnn, cfg, log):
    body = copy.deepcopy(cnn[: len(CNN_BODY)])  # conv1 .. drop7, same weights, frozen
    body.eval()
    model = CNNLSTM(body)
    x, y = lstm_training_clips(cfg["lstm_mix"], LSTM_DATA_SEED)
    n, T = x.shape[:2]
    with torch.no_grad():  # the CNN is frozen and in eval mode: its features are fixed
        feats = torch.cat(
            [body(torch.from_numpy(x[a : a + 64].reshape(-1, *INPUT_SHAPE))) for a in range(0, n, 64)]
        ).reshape(n, T, -1)
    y = torch.from_numpy(y)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg["lstm_lr"])
    order = numpy.random.default_rng(ORDER_SEED + 1)
    B = cfg["lstm_batch"]
    model.lstm1.train()
    model.lstm1_drop.train()
    for epoch in range(cfg["lstm_epochs"]):
        perm = torch.from_numpy(order.permutation(n))
        total, correct, seen = 0.0, 0, 0
        for a in range(0, n, B):
            idx = perm[a : a + B]
            logits = model.head(feats[idx].transpose(0, 1), clip_markers(T, idx.numel()))  # (T, b, K)
            target = y[idx].T  # (T, b) the action of each frame
            loss = nn.functional.cross_entropy(logits.reshape(-1, NUM_CLASSES), target.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            total += loss.item() * idx.numel()
            correct += int((logits.argmax(-1) == target).sum())
            seen += idx.numel()
        if epoch % 5 == 4 or epoch == cfg["lstm_epochs"] - 1:
            log(
                f"lstm epoch {epoch + 1}: loss {total / seen:.4f}, "
                f"train per-step accuracy {correct / (seen * T):.4f}"
            )
    model.eval()
    return model, {"clips": n, "frames_per_clip": T, "frames": n * T}


# ----------------------------------------------------------------------------- export and checks


def export(torch_model, layers, meta):
    """An ebr_ref float32 model with the torch model's parameters."""
    params = {k: v.detach().numpy().astype(numpy.float32) for k, v in torch_model.state_dict().items()}
    params = {k[len("body.") :] if k.startswith("body.") else k: v for k, v in params.items()}
    return sequential(layers, INPUT_SHAPE, params=params, meta=meta)


def rel_err(a, b):
    return float(numpy.linalg.norm(a - b) / numpy.linalg.norm(b))


def check_forward(ebr_cnn, ebr_lstm, cnn, lstm, clips):
    """Normwise relative error of ebr_ref's logits against torch's, float32, on a few test clips."""
    errs = {"cnn": 0.0, "cnn_lstm": 0.0}
    with torch.no_grad():
        for clip in clips:
            ref = cnn(torch.from_numpy(clip)).numpy()
            errs["cnn"] = max(errs["cnn"], rel_err(ebr_cnn.logits(clip), ref))
            ref = lstm(torch.from_numpy(clip[None]))[:, 0].numpy()
            errs["cnn_lstm"] = max(errs["cnn_lstm"], rel_err(ebr_lstm.logits(clip), ref))
    return errs


def frame_predictions(model, x, chunk=128):
    """Per-frame argmax of an ebr_ref CNN classifier over clips ``(n, T, C, H, W)`` -> ``(n, T)``."""
    n, T = x.shape[:2]
    flat = x.reshape(n * T, *x.shape[2:])
    pred = numpy.concatenate([model.forward(flat[a : a + chunk]).argmax(1) for a in range(0, n * T, chunk)])
    return pred.reshape(n, T)


def clip_predictions(model, x):
    """Per-clip argmax of the class probabilities averaged over the steps -> ``(n,)``."""
    return numpy.array([int(model.forward(clip).mean(axis=0).argmax()) for clip in x])


def evaluate(ebr_cnn, ebr_lstm, n, seed):
    x, y = trimmed(n, seed, CLIP_FRAMES)
    fp = frame_predictions(ebr_cnn, x)
    cp = clip_predictions(ebr_lstm, x)
    cnn = {"seed": seed, "clips": n, "frames": int(fp.size), "correct": int((fp == y[:, None]).sum())}
    cnn["accuracy"] = cnn["correct"] / cnn["frames"]
    lstm = {"seed": seed, "clips": n, "correct": int((cp == y).sum())}
    lstm["accuracy"] = lstm["correct"] / n
    return cnn, lstm, x


def evaluate_steps(ebr_lstm, n, seed):
    """Per-step accuracy of the CNN-LSTM on ``n`` GT+rand and ``n`` rand+GT clips (the action of each
    frame)."""
    correct = total = 0
    for kind, s in zip(("GT+rand", "rand+GT"), numpy.random.SeedSequence(seed).spawn(2)):
        _, clips = synthetic.make_batch(n, kind, seed=s, num_frames=CLIP_FRAMES)
        for c in clips:
            correct += int((ebr_lstm.forward(c.frames).argmax(axis=1) == c.frame_labels).sum())
            total += c.frame_labels.size
    return {
        "seed": seed,
        "clips_per_kind": n,
        "kinds": ["GT+rand", "rand+GT"],
        "frames": total,
        "correct": correct,
        "accuracy": correct / total,
        "metric": "per-step accuracy against the action of each frame",
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "ebr_ref", "data"))
    )
    ap.add_argument("--quick", action="store_true", help="a tenth of the data, to try the pipeline")
    args = ap.parse_args(argv)
    cfg = dict(CONFIG)
    if args.quick:
        for k in ("cnn_clips", "test_clips"):
            cfg[k] //= 10
        cfg["lstm_mix"] = {k: v // 10 for k, v in cfg["lstm_mix"].items()}
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(TORCH_SEED)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    cnn, cnn_data = train_cnn(cfg, log)
    t_cnn = time.perf_counter() - t_start
    lstm, lstm_data = train_lstm(cnn, cfg, log)
    t_lstm = time.perf_counter() - t_start - t_cnn

    class_names = list(synthetic.ACTIONS)
    common = {
        "class_names": class_names,
        "readout": READOUT,
        "input_shape": list(INPUT_SHAPE),
        "preprocessing": "none: frames as ebr_ref.synthetic renders them, RGB float32 in [0, 1], (3, 64, 64)",
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "python": platform.python_version(),
        "script": "benchmarks/train_synthetic.py",
        "seeds": {
            "torch": TORCH_SEED,
            "data_order": ORDER_SEED,
            "cnn_data": CNN_DATA_SEED,
            "lstm_data": LSTM_DATA_SEED,
            "test": TEST_SEED,
            "small_test": SMALL_SEED,
            "two_action_test": STEPS_SEED,
        },
        "torch_threads": THREADS,
    }
    ebr_cnn = export(cnn, CNN_LAYERS, {"name": "synthetic_cnn", **common})
    ebr_lstm = export(lstm, LSTM_LAYERS, {"name": "synthetic_cnn_lstm", **common})

    t0 = time.perf_counter()
    cnn_test, lstm_test, x_test = evaluate(ebr_cnn, ebr_lstm, cfg["test_clips"], TEST_SEED)
    cnn_small, lstm_small, _ = evaluate(ebr_cnn, ebr_lstm, cfg["small_clips"], SMALL_SEED)
    lstm_steps = evaluate_steps(ebr_lstm, cfg["test_clips"] // 2, STEPS_SEED)
    t_eval = time.perf_counter() - t0
    errs = check_forward(ebr_cnn, ebr_lstm, cnn, lstm, x_test[:8])
    log(f"forward check (ebr_ref vs torch, float32, normwise logits): {errs}")
    if max(errs.values()) > 1e-5:
        raise SystemExit(f"ebr_ref's forward differs from torch's: {errs}")
    log(
        f"test: cnn per-frame accuracy {cnn_test['accuracy']:.4f} "
        f"({cnn_test['correct']}/{cnn_test['frames']}), "
        f"cnn-lstm per-clip accuracy {lstm_test['accuracy']:.4f} "
        f"({lstm_test['correct']}/{lstm_test['clips']})"
    )
    log(f"two-action clips: cnn-lstm per-step accuracy {lstm_steps['accuracy']:.4f}")
    log(
        f"small split: cnn {cnn_small['accuracy']:.4f}, cnn-lstm {lstm_small['accuracy']:.4f}; "
        f"evaluation {t_eval:.1f} s"
    )

    test_note = {
        "kind": "trimmed",
        "frames_per_clip": CLIP_FRAMES,
        "generator": "ebr_ref.synthetic.make_batch(clips, 'trimmed', seed=seed, num_frames=16)",
    }
    frame_metric = "per-frame accuracy (argmax of the frame's probabilities)"
    clip_metric = "per-clip accuracy: argmax of the probabilities averaged over the 16 steps"
    cnn_meta = {
        "architecture_note": "per-frame classifier; conv 3x3 pad 1, max pool 2x2 (floor)",
        "training": {
            **cnn_data,
            "epochs": cfg["cnn_epochs"],
            "batch": cfg["cnn_batch"],
            "optimizer": "Adam",
            "lr": cfg["cnn_lr"],
            "loss": "cross-entropy per frame",
            "seconds": round(t_cnn, 1),
        },
        "test": {**test_note, **cnn_test, "metric": frame_metric},
        "test_small": {**test_note, **cnn_small, "metric": frame_metric},
        "torch_forward_rel_err": errs["cnn"],
    }
    lstm_meta = {
        "architecture_note": (
            "synthetic_cnn's layers conv1..drop7 (copied, frozen) -> lstm1 (ReLU cell, "
            f"H={HIDDEN}, gates i,f,o,g, cont 0 at the first frame) -> lstm1_drop -> fc8 "
            "at every step"
        ),
        "training": {
            **lstm_data,
            "clips_per_kind": cfg["lstm_mix"],
            "epochs": cfg["lstm_epochs"],
            "batch": cfg["lstm_batch"],
            "optimizer": "Adam",
            "lr": cfg["lstm_lr"],
            "grad_clip_norm": 5.0,
            "loss": "cross-entropy at every step against the action of that frame (LRCN style)",
            "note": (
                "half the clips are two-action clips (GT+rand, rand+GT) with per-frame labels; trained "
                "on trimmed clips only, the ReLU LSTM latched on the first action of a clip"
            ),
            "seconds": round(t_lstm, 1),
        },
        "test": {**test_note, **lstm_test, "metric": clip_metric},
        "test_small": {**test_note, **lstm_small, "metric": clip_metric},
        "test_two_action": lstm_steps,
        "torch_forward_rel_err": errs["cnn_lstm"],
    }
    os.makedirs(args.out, exist_ok=True)
    for model, meta in ((ebr_cnn, cnn_meta), (ebr_lstm, lstm_meta)):
        path = os.path.join(args.out, model.meta["name"] + ".npz")
        save_model(model, path, meta=meta)
        again = load_model(path)  # the saved files reproduce the small-split figure
        if again.is_recurrent:
            x, y = trimmed(cfg["small_clips"], SMALL_SEED, CLIP_FRAMES)
            assert int((clip_predictions(again, x) == y).sum()) == meta["test_small"]["correct"]
        log(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    log(f"done: cnn training {t_cnn:.1f} s, lstm training {t_lstm:.1f} s")
    json.dump({"cnn": cnn_meta, "cnn_lstm": lstm_meta}, sys.stdout, indent=1, default=str)
    print()


if __name__ == "__main__":
    main()
