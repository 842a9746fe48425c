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


@pytest.fixture(scope="module")
def models():
    return {name: pretrained(name) for name in NAMES}


@pytest.fixture(scope="module")
def small_split():
    """The small split recorded in the sidecars, regenerated (the same for both models)."""
    tests = [_sidecar(name)["meta"]["test_small"] for name in NAMES]
    assert tests[0]["seed"] == tests[1]["seed"] and tests[0]["clips"] == tests[1]["clips"]
    x, clips = synthetic.make_batch(tests[0]["clips"], "trimmed", seed=tests[0]["seed"],
                                    num_frames=tests[0]["frames_per_clip"])
    return x, numpy.array([c.label for c in clips])


def test_listed_and_small():
    assert set(NAMES) <= set(shipped_names())
    total = sum(os.path.getsize(os.path.join(data_dir(), n + ext)) for n in NAMES for ext in (".npz", ".json"))
    assert total <= 20e6


def test_load_without_torch():
    code = (
        "import sys, numpy\n"
        "from ebr_ref.models import pretrained\n"
        "from ebr_ref import synthetic\n"
        "x, _ = synthetic.make_batch(1, 'trimmed', seed=0x1, num_frames=4)\n"
        f"for name in {NAMES!r}:\n"
        "    p = pretrained(name).forward(x[0])\n"
        "    assert p.shape == (4, synthetic.NUM_CLASSES) and numpy.allclose(p.sum(axis=1), 1, atol=1e-5)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


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


def test_cnn_small_split_accuracy(models, small_split):
    x, y = small_split
    rec = models["synthetic_cnn"].meta["test_small"]
    pred = numpy.stack([models["synthetic_cnn"].forward(clip).argmax(axis=1) for clip in x])  # (n, T)
    assert pred.size == rec["frames"]
    assert int((pred == y[:, None]).sum()) == rec["correct"]


def test_cnn_lstm_small_split_accuracy(models, small_split):
    x, y = small_split
    rec = models["synthetic_cnn_lstm"].meta["test_small"]
    pred = numpy.array([int(models["synthetic_cnn_lstm"].forward(clip).mean(axis=0).argmax()) for clip in x])
    assert pred.size == rec["clips"]
    assert int((pred == y).sum()) == rec["correct"]
