"""The models shipped in ebr_ref/data (trained by benchmarks/train_synthetic.py).

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
    return {name: pretrained(name) for name in NAMES}


def test_listed_and_small():
    assert set(NAMES) <= set(shipped_names())
    sizes = [os.path.getsize(os.path.join(data_dir(), n + ext)) for n in NAMES for ext in (".npz", ".json")]
    total = sum(sizes)
    assert total <= 20e6


def test_load_and_run_without_torch(child):
    assert child["torch_loaded"] is False
    assert child["prob_sums"] < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_sha256_recorded(name):
    path = os.path.join(data_dir(), name + ".npz")
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == _sidecar(name)["params_sha256"]


@pytest.mark.parametrize("name", NAMES)
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


@pytest.mark.parametrize("name", NAMES)
def test_meta(name, models):
    m = models[name]
    meta = m.meta
    assert meta["name"] == name
    assert tuple(meta["class_names"]) == synthetic.ACTIONS
    assert tuple(meta["input_shape"]) == m.input_shape == (3, 64, 64)
    assert meta["readout"] in m.layer_names[: m.sequence_start]
    assert m.dtype == numpy.float32
    assert m.is_recurrent == (name == "synthetic_cnn_lstm")
    for key in ("preprocessing", "torch_version", "seeds", "training", "test", "test_small"):
        assert key in meta
    assert meta["torch_forward_rel_err"] <= 1e-5


def test_same_cnn(models):
    """The CNN-LSTM's CNN is the classifier's, copied (frozen) up to drop7."""
    cnn, rnn = models["synthetic_cnn"], models["synthetic_cnn_lstm"]
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
