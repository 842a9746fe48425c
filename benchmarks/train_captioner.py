"""Train the small synthetic captioner shipped as ``ebr_ref/data/synthetic_captioner.npz/.json``.

Run: python benchmarks/train_captioner.py [--out ebr_ref/data/synthetic_captioner.npz] [--steps 4000]

The model is :func:`ebr_ref.models.caption.small_captioner` on the synthetic
captioning videos of :mod:`ebr_ref.synthetic.captions` (8 frames of 64 x 64,
two or three objects): conv 8-16-64 with 2x2 max pools and a global max pool,
fc6/fc7 of 64 units, the mean of the frames' fc7 features entering lstm2 as its
static input, a 32-d word embedding and two ReLU-cell LSTMs of 64 units (the
paper's cell). It is trained end to end with torch on the CPU (teacher forcing,
cross-entropy on every word and ``<eos>``, Adam with a one-cycle schedule), with
an auxiliary per-frame loss (which objects are visible in each frame, from a
linear head on fc7 that is not exported) that gets the CNN, trained from
scratch, going within the time budget. The parameters are written with
ebr_ref's own float64 layouts (gate order i, f, o, g, one bias per LSTM) and
checked by decoding the validation clips with ebr_ref alone: the caption
accuracy recorded in the sidecar is ebr_ref's, not torch's.

Deterministic: fixed seeds, fixed thread count, torch's deterministic
algorithms (two runs on the development machine wrote byte-identical ``.npz``
files). About 5 minutes on the idle 2-core development machine (4000 steps at
~70 ms); proportionally longer when other jobs share it (15.5 minutes for the
shipped file, with the machine's load around 3).
"""

import argparse
import os
import time

import numpy
import torch
import torch.nn.functional as F

from ebr_ref.models.caption import save_captioner, small_captioner
from ebr_ref.synthetic.actions import ACTIONS
from ebr_ref.synthetic.captions import make_caption_batch, vocabulary

TRAIN_SEED, VAL_SEED, TORCH_SEED = 0xCA97, 0x7A1, 0x5EED
CONFIG = dict(
    channels=(8, 16, 64),
    fc=64,
    global_pool="max",
    embed=32,
    hidden=(64, 64),
    static_layer="lstm2",
    cell_act="relu",
)
CLIPS = dict(num_frames=8, size=(64, 64), n_distractors=2)


class TorchCaptioner(torch.nn.Module):
    """The same network as ``small_captioner(**CONFIG)``, in torch, with ebr_ref's parameter layouts."""

    def __init__(
        self,
        V,
        size=64,
        channels=(8, 16, 64),
        fc=64,
        global_pool="max",
        embed=32,
        hidden=(64, 64),
        static_layer="lstm2",
        cell_act="relu",
    ):
        super().__init__()
        assert cell_act == "relu"
        self.static_layer = static_layer
        self.convs = torch.nn.ModuleList()
        c_in = 3
        for c in channels:
            self.convs.append(torch.nn.Conv2d(c_in, c, 3, padding=1))
            c_in = c
        self.side = size // 2 ** len(channels)
        self.global_pool = global_pool
        self.fc6 = torch.nn.Linear(c_in * (1 if global_pool else self.side**2), fc)
        self.fc7 = torch.nn.Linear(fc, fc)
        H1, H2 = hidden
        self.embed = torch.nn.Parameter(torch.randn(V, embed) * (2.0 / embed) ** 0.5)
        self.lstm = torch.nn.ParameterDict()
        for name, D, H in (("lstm1", embed, H1), ("lstm2", H1, H2)):
            u = 1.0 / H**0.5
            self.lstm[f"{name}_W_x"] = torch.nn.Parameter(torch.empty(4 * H, D).uniform_(-u, u))
            self.lstm[f"{name}_W_h"] = torch.nn.Parameter(torch.empty(4 * H, H).uniform_(-u, u))
            b = torch.zeros(4 * H)
            b[H : 2 * H] = 1.0  # forget gates open at the start
            self.lstm[f"{name}_b"] = torch.nn.Parameter(b)
        H = H1 if static_layer == "lstm1" else H2
        self.lstm[f"{static_layer}_W_s"] = torch.nn.Parameter(
            torch.empty(4 * H, fc).uniform_(-1 / H**0.5, 1 / H**0.5)
        )
        self.predict = torch.nn.Linear(H2, V)
        self.aux = torch.nn.Linear(fc, len(ACTIONS))  # training only, not exported

    def features(self, frames):
        """(B, T, 3, h, w) -> (B, T, D) relu7 features."""
        B, T = frames.shape[:2]
        x = frames.reshape(B * T, *frames.shape[2:])
        for conv in self.convs:
            x = F.max_pool2d(torch.relu(conv(x)), 2)
        if self.global_pool == "max":
            x = F.max_pool2d(x, self.side)
        elif self.global_pool == "avg":
            x = F.avg_pool2d(x, self.side)
        x = torch.relu(self.fc7(torch.relu(self.fc6(x.flatten(1)))))
        return x.reshape(B, T, -1)

    def _run_lstm(self, name, x, s):
        W_x, b, W_h = self.lstm[f"{name}_W_x"], self.lstm[f"{name}_b"], self.lstm[f"{name}_W_h"]
        H = W_h.shape[1]
        zx = x @ W_x.T + b
        if s is not None:
            zx = zx + (s @ self.lstm[f"{name}_W_s"].T)[:, None]
        h = torch.zeros(x.shape[0], H)
        c = torch.zeros(x.shape[0], H)
        out = []
        for t in range(x.shape[1]):
            z = zx[:, t] + h @ W_h.T
            i, f, o = (
                torch.sigmoid(z[:, :H]),
                torch.sigmoid(z[:, H : 2 * H]),
                torch.sigmoid(z[:, 2 * H : 3 * H]),
            )
            g = torch.relu(z[:, 3 * H :])
            c = f * c + i * g
            h = o * torch.relu(c)
            out.append(h)
        return torch.stack(out, dim=1)

    def forward(self, frames, inputs):
        """Word logits (B, S, V) and the auxiliary per-frame object logits (B, T, actors)."""
        x = self.features(frames)
        v = x.mean(dim=1)
        e = self.embed[inputs]
        h1 = self._run_lstm("lstm1", e, v if self.static_layer == "lstm1" else None)
        h2 = self._run_lstm("lstm2", h1, v if self.static_layer == "lstm2" else None)
        return self.predict(h2), self.aux(x)

    def export(self):
        """Parameters under ebr_ref's canonical names, float64 NumPy."""
        P = {}
        for k, conv in enumerate(self.convs, start=1):
            P[f"conv{k}.weight"], P[f"conv{k}.bias"] = conv.weight, conv.bias
        for name in ("fc6", "fc7", "predict"):
            layer = getattr(self, name)
            P[f"{name}.weight"], P[f"{name}.bias"] = layer.weight, layer.bias
        P["embed.weight"] = self.embed
        for k, v in self.lstm.items():
            layer, field = k.split("_", 1)
            P[f"{layer}.{field}"] = v
        return {k: v.detach().double().numpy().copy() for k, v in P.items()}


def encode(clips, vocab):
    """Teacher-forcing inputs and targets (B, S), targets padded with -100."""
    S = max(len(c.words) for c in clips) + 1
    inputs = numpy.full((len(clips), S), vocab.eos, dtype=numpy.int64)
    targets = numpy.full((len(clips), S), -100, dtype=numpy.int64)
    for n, c in enumerate(clips):
        ids = vocab.encode(c.words) + [vocab.eos]
        inputs[n, : len(ids)] = [vocab.bos] + ids[:-1]
        targets[n, : len(ids)] = ids
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def frame_objects(clips):
    """Auxiliary targets (B, T, actors): which objects are visible in each frame."""
    T = clips[0].frames.shape[0]
    y = numpy.zeros((len(clips), T, len(ACTIONS)), dtype=numpy.float32)
    for n, c in enumerate(clips):
        for ob in c.objects:
            s, e = ob.interval
            y[n, s : e + 1, ACTIONS.index(ob.action)] = 1.0
    return torch.from_numpy(y)


def token_accuracy(net, frames, clips, vocab):
    """Teacher-forced accuracy of the predicted tokens (words and <eos>) on clips, with torch."""
    inputs, targets = encode(clips, vocab)
    with torch.no_grad():
        pred = net(torch.from_numpy(frames), inputs)[0].argmax(dim=-1)
    mask = targets != -100
    return float((pred[mask] == targets[mask]).double().mean())


def caption_accuracy(model, frames, clips, chunk=16):
    """Exact-match caption accuracy and word accuracy (position by position) of ebr_ref's greedy decoding."""
    exact, right, total = 0, 0, 0
    for n, c in enumerate(clips):
        words = model.decode(frames[n].astype(model.dtype), max_len=20, chunk_size=chunk).words
        exact += words == c.words
        right += sum(a == b for a, b in zip(words, c.words))
        total += max(len(words), len(c.words))
    return exact / len(clips), right / total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join("ebr_ref", "data", "synthetic_captioner.npz"))
    ap.add_argument("--train", type=int, default=4000, help="training clips")
    ap.add_argument("--val", type=int, default=200, help="validation clips")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument(
        "--aux-weight",
        type=float,
        default=0.5,
        help="weight of the auxiliary per-frame object loss that trains the CNN from scratch faster",
    )
    ap.add_argument(
        "--eval-every", type=int, default=0, help="print the validation token accuracy every N steps"
    )
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(TORCH_SEED)
    t0 = time.perf_counter()
    vocab = vocabulary()
    frames, clips = make_caption_batch(args.train, seed=TRAIN_SEED, **CLIPS)
    val_frames, val_clips = make_caption_batch(args.val, seed=VAL_SEED, **CLIPS)
    inputs, targets = encode(clips, vocab)
    aux_targets = frame_objects(clips)
    frames = torch.from_numpy(frames)
    print(f"data: {args.train} + {args.val} clips in {time.perf_counter() - t0:.1f} s", flush=True)

    net = TorchCaptioner(len(vocab), size=CLIPS["size"][0], **CONFIG)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    order = numpy.random.default_rng(TRAIN_SEED).permutation(args.train)
    pos = 0
    for step in range(args.steps):
        if pos + args.batch > args.train:
            order = numpy.random.default_rng([TRAIN_SEED, step]).permutation(args.train)
            pos = 0
        idx = torch.from_numpy(order[pos : pos + args.batch])
        pos += args.batch
        logits, aux = net(frames[idx], inputs[idx])
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[idx].reshape(-1), ignore_index=-100
        )
        loss = (
            loss + args.aux_weight * F.binary_cross_entropy_with_logits(aux, aux_targets[idx]) * aux.shape[-1]
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f} s", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step:
            print(
                "   val token accuracy (teacher forcing) "
                f"{token_accuracy(net, val_frames, val_clips, vocab):.3f}",
                flush=True,
            )
    train_seconds = time.perf_counter() - t0

    model = small_captioner(
        vocab,
        input_size=CLIPS["size"][0],
        **CONFIG,
        params=net.export(),
        meta={"name": "synthetic_captioner"},
    )
    exact, word_acc = caption_accuracy(model, val_frames, val_clips)
    print(
        f"ebr_ref greedy decoding on {args.val} validation clips: "
        f"exact caption {exact:.3f}, words {word_acc:.3f}"
    )
    meta = {
        "name": "synthetic_captioner",
        "readout": "conv3",
        "preprocessing": (
            "frames of ebr_ref.synthetic.captions as rendered: RGB in [0, 1], no mean, no scaling"
        ),
        "data": {
            "generator": "ebr_ref.synthetic.captions.make_caption_batch",
            "train_seed": TRAIN_SEED,
            "train_clips": args.train,
            "val_seed": VAL_SEED,
            "val_clips": args.val,
            **CLIPS,
            "size": list(CLIPS["size"]),
        },
        "training": {
            "script": "benchmarks/train_captioner.py",
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "optimizer": "Adam, one-cycle",
            "aux_weight": args.aux_weight,
            "torch": torch.__version__,
            "seconds": round(train_seconds, 1),
        },
        "accuracy": {
            "val_exact_caption": exact,
            "val_word": word_acc,
            "decoder": "ebr_ref greedy, max_len 20",
        },
    }
    side = save_captioner(model, args.out, meta=meta)
    print(
        f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.2f} MiB, "
        f"sha256 {side['params_sha256'][:16]}...)"
    )


if __name__ == "__main__":
    main()
