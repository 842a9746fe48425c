"""load_model: imported models' forward equals the source framework's (ebr_ref.models.from_spec)."""

import os

import numpy
import pytest

from tests.paths import TEST_DATA

pytest.importorskip("ebr_ref.models")
torch = pytest.importorskip("torch")
pytest.importorskip("google.protobuf")

from tests.oracles.weights_io_caffe_proto import build_schema, vgg16_prototxt, write_caffemodel  # noqa: E402
from tests.oracles.weights_io_ref import caffe_lstm_torch  # noqa: E402
from tests.weights_io.test_weights_io_caffe import FC, WIDTHS, caffe_cnn_forward, vgg_blobs  # noqa: E402
from weights_io import load_model  # noqa: E402

SEED = 0x30DE1
DATA = str(TEST_DATA / "weights_io")


def _rel(a, b):
    return numpy.linalg.norm(numpy.asarray(a, "f8") - b) / numpy.linalg.norm(b)


def _softmax(z):
    e = numpy.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_torchvision_vgg16_model(tmp_path, dtype, tol):
    pytest.importorskip("torchvision")
    from tests.weights_io.test_weights_io_torch import _small_vgg

    net = _small_vgg(dtype=dtype)
    path = tmp_path / "vgg.pth"
    torch.save(net.state_dict(), path)
    model = load_model(path)
    x = (
        numpy.random.default_rng(SEED)
        .standard_normal((1, 3, 224, 224))
        .astype(str(dtype).replace("torch.", ""))
    )
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)), -1).double().numpy()
    assert _rel(model.forward(x), ref) <= tol


def test_released_vgg16_lstm_model(tmp_path):
    rng = numpy.random.default_rng(SEED + 1)
    T, H = 5, 3
    blobs = vgg_blobs(rng, lstm=H, fc8="fc8-final")
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(vgg16_prototxt(WIDTHS, FC, 5, 64, lstm_hidden=H, T=T))
    write_caffemodel(tmp_path / "m.caffemodel", build_schema(), blobs)
    model = load_model(tmp_path / "m.caffemodel", prototxt=proto, dtype="float64")
    clip = rng.standard_normal((T, 3, 64, 64))
    feats, t = caffe_cnn_forward([(n, ty, [a.astype("f4") for a in arrs]) for n, ty, arrs in blobs], clip)
    W_xc, b_c, W_hc = (a.astype("f4") for a in blobs[-2][2])
    cont = numpy.ones((T, 1))
    cont[0] = 0
    h = caffe_lstm_torch(feats[:, None], W_xc, b_c, W_hc, cont, cell_act="relu")[:, 0]
    W8, b8 = (a.astype("f4").astype("f8") for a in blobs[-1][2])
    ref = _softmax(h @ W8.T + b8)
    assert _rel(model.forward(clip), ref) <= 1e-10


def test_onnx_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from tests.weights_io.test_weights_io_onnx import _cnn, _save

    rng = numpy.random.default_rng(SEED + 2)
    nodes, inits = _cnn(rng)
    path, model_proto = _save(tmp_path, nodes, inits, [2, 3, 13, 13])
    model = load_model(path)
    x = rng.standard_normal((2, 3, 13, 13)).astype("f4")
    want = ReferenceEvaluator(model_proto).run(None, {"x": x})[0]
    assert _rel(model.forward(x), want) <= 1e-5
    assert onnx  # imported for the skip


@pytest.mark.parametrize("name", ["keras3_vgg.weights.h5", "keras_legacy_vgg.h5"])
def test_keras_vgg16_model(name):
    with numpy.load(os.path.join(DATA, "keras_outputs.npz")) as f:
        x, want = f["vgg_x_nhwc"].transpose(0, 3, 1, 2).copy(), f["vgg_probs"]
    model = load_model(os.path.join(DATA, name), input_size=64)
    assert _rel(model.forward(x), want) <= 1e-5
