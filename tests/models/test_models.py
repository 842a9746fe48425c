"""Model builders and the Model container: structure against published figures, errors, conversions."""

import numpy
import pytest

from ebr_ref.models import Layer, Model, caffenet, infer_shapes, sequential, vgg16, vgg16_lstm
from ebr_ref.models.zoo import vgg16_body


def _count(params):
    return sum(int(numpy.prod(v.shape)) for v in params.values())


def test_vgg16_structure_matches_the_published_network():
    layers = vgg16_body(224) + [Layer("fc8", "fc", {"out_features": 1000})]
    from ebr_ref.models import param_shapes

    shapes = param_shapes(layers, (3, 224, 224))
    # VGG16 (configuration D) has 138,357,544 parameters (Simonyan & Zisserman; torchvision's count).
    assert sum(int(numpy.prod(s)) for s in shapes.values()) == 138_357_544
    out = dict(zip([la.name for la in layers], infer_shapes(layers, (3, 224, 224))))
    assert out["conv5_1"] == (512, 14, 14) and out["pool5"] == (512, 7, 7) and out["fc6"] == (4096,)
    assert shapes["fc6.weight"] == (4096, 25088)


def test_caffenet_structure_matches_the_bvlc_reference():
    model = caffenet(1000, seed=1)
    # BVLC reference CaffeNet: 60,965,224 parameters; conv1 55x55, pool1 27x27, pool2 13x13, pool5 6x6.
    assert _count(model.params) == 60_965_224
    out = dict(zip(model.layer_names, model.shapes))
    assert out["conv1"] == (96, 55, 55) and out["pool1"] == (96, 27, 27)
    assert out["pool2"] == (256, 13, 13) and out["pool5"] == (256, 6, 6)
    assert model.params["conv2.weight"].shape == (256, 48, 5, 5)  # groups = 2


def test_vgg16_lstm_names_and_shapes():
    model = vgg16_lstm(101, hidden=256, input_size=32, seed=3)
    assert model.is_recurrent and model.layer_names[model.sequence_start] == "lstm1"
    assert model.params["lstm1.W_x"].shape == (1024, 4096)
    assert model.params["lstm1.W_h"].shape == (1024, 256)
    assert model.params["fc8.weight"].shape == (101, 256)
    assert model.layer_names[-3:] == ("lstm1", "lstm1_drop", "fc8")


def test_builders_are_deterministic_and_seeded():
    a, b, c = (vgg16(5, input_size=32, seed=s) for s in (4, 4, 5))
    assert all(numpy.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not numpy.array_equal(a.params["conv1_1.weight"], c.params["conv1_1.weight"])


def test_astype_and_to_return_new_models():
    m = vgg16(3, input_size=32, seed=0)
    m32 = m.astype(numpy.float32)
    assert m32 is not m and m32.dtype == numpy.float32 and m.dtype == numpy.float64
    assert all(v.dtype == numpy.float32 for v in m32.params.values())
    assert m.to("cpu").device == "cpu"
    with pytest.raises(TypeError, match="floating"):
        m.astype(numpy.int32)


def _tiny():
    return [
        ("conv1", "conv", {"out_channels": 2, "kernel": 3}),
        ("relu1", "relu"),
        ("flat", "flatten"),
        ("fc8", "fc", {"out_features": 3}),
    ]


def test_model_rejects_bad_structures_and_params():
    with pytest.raises(ValueError, match="unknown layer type 'softmax'"):
        sequential([("s", "softmax")] + _tiny(), (1, 5, 5))
    with pytest.raises(ValueError, match="duplicate layer name"):
        sequential(_tiny() + [("fc8", "fc", {"out_features": 3})], (1, 5, 5))
    with pytest.raises(ValueError, match="missing setting"):
        sequential([("c", "conv", {"kernel": 3})], (1, 5, 5))
    with pytest.raises(ValueError, match="unknown setting"):
        sequential([("c", "conv", {"kernel": 3, "out_channels": 1, "strides": 2})], (1, 5, 5))
    with pytest.raises(ValueError, match="last layer must be the classifier"):
        sequential(_tiny()[:3], (1, 5, 5))
    with pytest.raises(ValueError, match="add a flatten layer"):
        sequential(
            [("c", "conv", {"out_channels": 2, "kernel": 3}), ("fc8", "fc", {"out_features": 3})], (1, 5, 5)
        )
    good = sequential(_tiny(), (1, 5, 5))
    bad = dict(good.params)
    bad["conv1.weight"] = numpy.zeros((2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"conv1.weight has shape \(2, 1, 2, 2\), expected \(2, 1, 3, 3\)"):
        Model(good.layers, bad, input_shape=(1, 5, 5))
    del bad["conv1.weight"]
    with pytest.raises(ValueError, match="missing \\['conv1.weight'\\]"):
        Model(good.layers, bad, input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="unknown layer name 'conv9'"):
        good.index("conv9")


def test_layer_dict_roundtrip():
    la = Layer("pool1", "maxpool", {"kernel": 3, "stride": 2, "ceil_mode": True})
    assert Layer.from_dict(la.to_dict()).settings == la.settings
    assert la["padding"] == 0


def test_canonical_roundtrip_and_tampering(tmp_path):
    from ebr_ref.models.io import load_model, save_model, sidecar_path

    model = sequential(_tiny(), (1, 5, 5), seed=9, meta={"name": "tiny", "class_names": ["a", "b", "c"]})
    path = tmp_path / "tiny.npz"
    side = save_model(model, path, meta={"accuracy": 0.5})
    back = load_model(path)
    assert back.layer_names == model.layer_names and back.meta["accuracy"] == 0.5
    assert all(numpy.array_equal(back.params[k], model.params[k]) for k in model.params)
    x = numpy.random.default_rng(1).normal(size=(2, 1, 5, 5))
    assert numpy.array_equal(back.forward(x), model.forward(x))
    assert len(side["params_sha256"]) == 64
    # a changed byte in the parameters is caught by the recorded sha256
    data = bytearray(path.read_bytes())
    data[-30] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"x")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an ebr_ref-canonical sidecar"):
        load_model(tmp_path / "bad.npz")
    assert sidecar_path("a/b.npz") == "a/b.json"


def test_pool_shape_inference_matches_the_kernel_with_caffe_cross_axis_rule():
    # ceil mode, padding on one axis only: Caffe's correction applies to both axes
    layers = [
        ("pool", "maxpool", {"kernel": 2, "stride": 2, "padding": (1, 0), "ceil_mode": True}),
        ("flat", "flatten"),
        ("fc8", "fc", {"out_features": 2}),
    ]
    m = sequential(layers, (1, 5, 6), seed=0)
    y, _ = m.run_forward(numpy.zeros((1, 1, 5, 6)), 0, 1)
    assert y.shape[1:] == m.shapes[0]


def test_ground_sees_weights_changed_between_calls():
    """No state is kept between driver calls: changing a weight in place changes the next result."""
    from ebr_ref.grounding.ground import ground

    layers = _tiny()[:3] + [
        ("fc7", "fc", {"out_features": 4}),
        ("relu7", "relu"),
        ("fc8", "fc", {"out_features": 3}),
    ]
    model = sequential(layers, (1, 5, 5), seed=2)
    x = numpy.random.default_rng(3).uniform(0, 1, (2, 1, 5, 5))
    first = ground(model, x, 1, method="cEB", layer="input").maps
    model.params["fc8.weight"] *= -1  # the released notebook's in-place negation
    fresh = sequential(layers, (1, 5, 5), params=dict(model.params))
    assert numpy.array_equal(
        ground(model, x, 1, method="cEB", layer="input").maps,
        ground(fresh, x, 1, method="cEB", layer="input").maps,
    )
    assert not numpy.allclose(ground(model, x, 1, method="cEB", layer="input").maps, first)


def test_ground_reports_progress_per_chunk():
    from ebr_ref.grounding.ground import ground

    layers = _tiny()[:3] + [
        ("fc7", "fc", {"out_features": 4}),
        ("relu7", "relu"),
        ("lstm1", "lstm", {"hidden": 3}),
        ("fc8", "fc", {"out_features": 3}),
    ]
    model = sequential(layers, (1, 5, 5), seed=4)
    x = numpy.random.default_rng(5).uniform(0, 1, (5, 1, 5, 5))
    seen = []
    ground(
        model, x, 0, method="cEB-R", layer="conv1", chunk_size=2, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(2, 10), (4, 10), (5, 10), (7, 10), (9, 10), (10, 10)]


def test_float32_builder_equals_cast_of_float64():
    a = vgg16(3, input_size=32, seed=6, dtype=numpy.float32)
    b = vgg16(3, input_size=32, seed=6).astype(numpy.float32)
    assert a.dtype == numpy.float32
    assert all(numpy.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_saved_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    from ebr_ref.models.io import save_model, sidecar_path

    path = tmp_path / "m.npz"
    save_model(sequential(_tiny(), (1, 5, 5), seed=1), path)
    mask = os.umask(0)
    os.umask(mask)
    for p in (path, sidecar_path(path)):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~mask
