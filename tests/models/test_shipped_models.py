"""The models shipped in ebr_ref/data (trained by benchmarks/train_synthetic.py and train_motion.py).

They load with ebr_ref alone (no torch), match the sha256 recorded in their
sidecars, and reproduce the accuracy recorded at training time on a small test
split regenerated from the recorded seed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy
import pytest

from ebr_ref import synthetic
from ebr_ref.models.io import load_model, sidecar_path
from ebr_ref.models.shipped import data_dir, pretrained, shipped_names

NAMES = ("synthetic_cnn", "synthetic_cnn_lstm")
MOTION_NAMES = ("motion_cnn", "motion_cnn_lstm", "motion_cnn_lstm_tanh")  # the "motion" benchmark
ALL_NAMES = NAMES + MOTION_NAMES
BENCHMARK = {
    "synthetic_cnn": "appearance",
    "synthetic_cnn_lstm": "appearance",
    "motion_cnn": "motion",
    "motion_cnn_lstm": "motion",
    "motion_cnn_lstm_tanh": "motion",
}
CELL = {"synthetic_cnn_lstm": "relu", "motion_cnn_lstm": "relu", "motion_cnn_lstm_tanh": "tanh"}


def _sidecar(name):
    with open(os.path.join(data_dir(), name + ".json")) as f:
        return json.load(f)


# Run in a fresh interpreter: ebr_ref alone (torch must stay out of sys.modules), one BLAS thread
# (a multi-threaded OpenBLAS is many times slower on a loaded 2-core machine). The child loads both
# shipped models, regenerates the small split from the seed recorded in the sidecars and prints the
# number of correct predictions: per frame for the CNN, per clip (mean probability over the steps)
# for the CNN-LSTM.
_CHILD = """
import json, sys, numpy
from ebr_ref import synthetic
from ebr_ref.models import pretrained
cnn, rnn = pretrained("synthetic_cnn"), pretrained("synthetic_cnn_lstm")
rec = cnn.meta["test_small"]
x, clips = synthetic.make_batch(rec["clips"], "trimmed", seed=rec["seed"], num_frames=rec["frames_per_clip"])
y = numpy.array([c.label for c in clips])
frames = numpy.stack([cnn.forward(clip).argmax(axis=1) for clip in x])
probs = numpy.stack([rnn.forward(clip) for clip in x])
print(json.dumps({
    "torch_loaded": "torch" in sys.modules,
    "cnn": {"frames": int(frames.size), "correct": int((frames == y[:, None]).sum())},
    "cnn_lstm": {"clips": len(y), "correct": int((probs.mean(axis=1).argmax(axis=1) == y).sum())},
    "prob_sums": float(numpy.abs(probs.sum(axis=2) - 1).max()),
}))
"""


@pytest.fixture(scope="module")
def child():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def models():
    return {name: pretrained(name) for name in ALL_NAMES}


def test_listed_and_small():
    assert set(ALL_NAMES) <= set(shipped_names())
    d = data_dir()
    total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith((".npz", ".json")))
    assert total <= 20e6  # all package data, the captioner included


def test_load_and_run_without_torch(child):
    assert child["torch_loaded"] is False
    assert child["prob_sums"] < 1e-5


@pytest.mark.parametrize("name", ALL_NAMES)
def test_sha256_recorded(name):
    path = os.path.join(data_dir(), name + ".npz")
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == _sidecar(name)["params_sha256"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_flipped_byte_is_refused(name, tmp_path):
    src = os.path.join(data_dir(), name + ".npz")
    dst = tmp_path / (name + ".npz")
    shutil.copyfile(src, dst)
    shutil.copyfile(sidecar_path(src), sidecar_path(dst))
    load_model(dst)  # the intact copy loads
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside some parameter's bytes
    dst.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_model(dst)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_meta(name, models):
    m = models[name]
    meta = m.meta
    assert meta["name"] == name
    assert tuple(meta["class_names"]) == synthetic.generator(BENCHMARK[name]).ACTIONS
    assert meta.get("benchmark", "appearance") == BENCHMARK[name]
    assert tuple(meta["input_shape"]) == m.input_shape == (3, 64, 64)
    assert meta["readout"] in m.layer_names[: m.sequence_start]
    assert m.dtype == numpy.float32
    assert m.is_recurrent == (name in CELL)
    if m.is_recurrent:
        assert m.layers[m.sequence_start].settings["cell_act"] == CELL[name]
    for key in ("preprocessing", "torch_version", "seeds", "training", "test", "test_small"):
        assert key in meta
    assert meta["torch_forward_rel_err"] <= 1e-5


@pytest.mark.parametrize(
    "cnn_name, rnn_name",
    [
        ("synthetic_cnn", "synthetic_cnn_lstm"),
        ("motion_cnn", "motion_cnn_lstm"),
        ("motion_cnn", "motion_cnn_lstm_tanh"),
    ],
)
def test_same_cnn(models, cnn_name, rnn_name):
    """The CNN-LSTM's CNN is the classifier's, copied (frozen) up to drop7."""
    cnn, rnn = models[cnn_name], models[rnn_name]
    body = [k for k in cnn.params if not k.startswith("fc8.")]
    assert body and all(numpy.array_equal(cnn.params[k], rnn.params[k]) for k in body)
    assert cnn.layer_names[:-1] == rnn.layer_names[: rnn.sequence_start]


def test_cnn_small_split_accuracy(child):
    rec = _sidecar("synthetic_cnn")["meta"]["test_small"]
    assert child["cnn"] == {"frames": rec["frames"], "correct": rec["correct"]}


def test_cnn_lstm_small_split_accuracy(child):
    rec = _sidecar("synthetic_cnn_lstm")["meta"]["test_small"]
    assert _sidecar("synthetic_cnn")["meta"]["test_small"]["seed"] == rec["seed"]
    assert child["cnn_lstm"] == {"clips": rec["clips"], "correct": rec["correct"]}


# The motion models, in a fresh interpreter as above: the CNN's per-frame action accuracy (chance is 1/8: one
# frame cannot tell the motion classes apart) and the per-clip accuracy of both CNN-LSTMs on the small split.
_MOTION_CHILD = """
import json, sys, numpy
from ebr_ref.synthetic import motion
from ebr_ref.models import pretrained
cnn = pretrained("motion_cnn")
rnns = {name: pretrained(name) for name in ("motion_cnn_lstm", "motion_cnn_lstm_tanh")}
rec = cnn.meta["test_small"]
x, clips = motion.make_batch(rec["clips"], "trimmed", seed=rec["seed"], num_frames=rec["frames_per_clip"])
y = numpy.array([c.label for c in clips])
frames = numpy.stack([cnn.forward(clip).argmax(axis=1) for clip in x])
out = {"torch_loaded": "torch" in sys.modules,
       "motion_cnn": {"frames": int(frames.size), "correct": int((frames == y[:, None]).sum())}}
for name, rnn in rnns.items():
    probs = numpy.stack([rnn.forward(clip) for clip in x])
    out[name] = {"clips": len(y), "correct": int((probs.mean(axis=1).argmax(axis=1) == y).sum()),
                 "prob_sums": float(numpy.abs(probs.sum(axis=2) - 1).max())}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def motion_child():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _MOTION_CHILD], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_motion_models_run_without_torch(motion_child):
    assert motion_child["torch_loaded"] is False
    for name in ("motion_cnn_lstm", "motion_cnn_lstm_tanh"):
        assert motion_child[name]["prob_sums"] < 1e-5


def test_motion_cnn_small_split_accuracy(motion_child):
    rec = _sidecar("motion_cnn")["meta"]["test_small"]
    assert motion_child["motion_cnn"] == {"frames": rec["frames"], "correct": rec["correct"]}


@pytest.mark.parametrize("name", ["motion_cnn_lstm", "motion_cnn_lstm_tanh"])
def test_motion_cnn_lstm_small_split_accuracy(motion_child, name):
    rec = _sidecar(name)["meta"]["test_small"]
    assert _sidecar("motion_cnn")["meta"]["test_small"]["seed"] == rec["seed"]
    got = dict(motion_child[name])
    got.pop("prob_sums")
    assert got == {"clips": rec["clips"], "correct": rec["correct"]}


def test_motion_recorded_accuracies():
    """What the sidecars record: the per-frame CNN near chance, the CNN-LSTMs far above it (trimmed clips)."""
    cnn = _sidecar("motion_cnn")["meta"]
    assert abs(cnn["test"]["accuracy"] - 1 / 8) < 0.05 and cnn["test"]["chance"] == 1 / 8
    for name in ("motion_cnn_lstm", "motion_cnn_lstm_tanh"):
        meta = _sidecar(name)["meta"]
        assert meta["training"]["kind"] == "trimmed"
        assert meta["test"]["accuracy"] >= 0.8, (name, meta["test"])
