"""read_tensors / detect_format: every format read back equal to what its own library reads.

Files are written by the real libraries (torch, safetensors, h5py, onnx,
protobuf with our own Caffe schema); the reference values come from those
libraries' readers (torch.load(weights_only=True), safetensors.numpy,
h5py, onnx.numpy_helper, protobuf parsing).
"""

import shutil
import subprocess
import sys

import numpy
import pytest

import weights_io
from tests.paths import TEST_DATA
from weights_io import CheckpointError, detect_format, read_tensors

torch = pytest.importorskip("torch")

RNG_SEED = 0x77E1


def _torch_ref(path):
    obj = torch.load(path, weights_only=True, map_location="cpu")

    def flat(o, prefix=""):
        out = {}
        if isinstance(o, torch.Tensor):
            t = o.detach()
            out[prefix] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        elif isinstance(o, dict):
            for k, v in o.items():
                out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                out.update(flat(v, f"{prefix}.{i}" if prefix else str(i)))
        return out

    return flat(obj)


def _assert_same(got, ref):
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        assert got[k].shape == v.shape, k
        assert got[k].dtype == v.dtype, (k, got[k].dtype, v.dtype)
        numpy.testing.assert_array_equal(got[k], v, err_msg=k)


def _torch_objects():
    g = torch.Generator().manual_seed(RNG_SEED)
    base = torch.randn(4, 6, generator=g)
    lin = torch.nn.Linear(3, 2)
    return {
        "plain": {"w": torch.randn(3, 5, generator=g), "b": torch.randn(5, generator=g, dtype=torch.float64)},
        "dtypes": {
            "f16": torch.randn(7, generator=g).half(),
            "bf16": torch.randn(2, 3, generator=g).bfloat16(),
            "i64": torch.arange(-3, 5),
            "i32": torch.arange(4, dtype=torch.int32),
            "u8": torch.arange(5, dtype=torch.uint8),
            "bool": torch.tensor([True, False, True]),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 3),
        },
        "views": {"base": base, "col": base[:, 2], "t": base.t(), "slice": base[1:3, ::2]},
        "wrapped": {
            "state_dict": {"module.fc.weight": lin.weight, "module.fc.bias": lin.bias},
            "epoch": 7,
            "hist": [torch.ones(2), 3.5, "text"],
            "nested": {"a": {"b": torch.zeros(1)}},
        },
        "module_state": torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)).state_dict(),
        "parameter": {"p": torch.nn.Parameter(torch.randn(2, 2, generator=g))},
    }


@pytest.mark.parametrize("new_zip", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("case", list(_torch_objects()))
def test_torch_files_match_torch_load(tmp_path, case, new_zip):
    path = tmp_path / f"{case}.pth"
    torch.save(_torch_objects()[case], path, _use_new_zipfile_serialization=new_zip)
    assert detect_format(path) == "torch"
    _assert_same(read_tensors(path), _torch_ref(path))


def test_torch_zip_tensors_are_memory_mapped_views(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.arange(12.0).reshape(3, 4)}, path)
    w = read_tensors(path)["w"]
    assert not w.flags.owndata and not w.flags.writeable  # a view of the file's memory map, read-only
    with pytest.raises(ValueError):
        w[0, 0] = 1.0


def test_torch_file_saved_to_a_buffer_and_odd_names(tmp_path):
    import io

    b = io.BytesIO()
    torch.save({"x": torch.ones(3)}, b)  # prefix "archive/" when saved to a file object
    path = tmp_path / "weird.name.with.dots.pth"
    path.write_bytes(b.getvalue())
    _assert_same(read_tensors(path), _torch_ref(path))


def test_safetensors_matches_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    pytest.importorskip("ml_dtypes")
    rng = numpy.random.default_rng(RNG_SEED)
    arrays = {
        "a": rng.standard_normal((3, 4)).astype("f4"),
        "b": rng.standard_normal(5),
        "c": numpy.arange(6, dtype="i8"),
        "h": rng.standard_normal(4).astype("f2"),
        "z": numpy.zeros((0, 2), "f4"),
        "s": numpy.array(3.0, "f4"),
        "u": numpy.arange(3, dtype="u1"),
        "flag": numpy.array([True, False]),
    }
    path = tmp_path / "x.safetensors"
    st.save_file(arrays, str(path), metadata={"k": "v"})
    assert detect_format(path) == "safetensors"
    _assert_same(read_tensors(path), st.load_file(str(path)))


def test_safetensors_bf16_widened_exactly(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    vals = numpy.array([1.5, -2.0, 3.140625, 1e-3], dtype=ml_dtypes.bfloat16)
    path = tmp_path / "bf.safetensors"
    st.save_file({"x": vals}, str(path))
    got = read_tensors(path)["x"]
    assert got.dtype == numpy.float32
    numpy.testing.assert_array_equal(got, vals.astype(numpy.float32))


def test_npz_matches_numpy(tmp_path):
    rng = numpy.random.default_rng(RNG_SEED)
    arrays = {
        "a": rng.standard_normal((3, 4)),
        "f": numpy.asfortranarray(rng.standard_normal((2, 5)).astype("f4")),
        "i": numpy.arange(5, dtype=">i4"),
        "e": numpy.zeros((0,)),
        "conv1_1.weight": rng.standard_normal((2, 3, 1, 1)),
    }
    for compressed in (False, True):
        path = tmp_path / f"x{compressed}.npz"
        (numpy.savez_compressed if compressed else numpy.savez)(path, **arrays)
        assert detect_format(path) == "npz"
        with numpy.load(path) as ref:
            _assert_same(read_tensors(path), {k: ref[k] for k in ref.files})


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    numpy.savez(path, o=numpy.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="not numeric"):
        read_tensors(path)


def _h5_reference(path):
    h5py = pytest.importorskip("h5py")
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf":
                out[name] = obj[()] if obj.shape != () else numpy.asarray(obj[()])

        f.visititems(visit)
    return out


def _write_h5(path, **kw):
    h5py = pytest.importorskip("h5py")
    rng = numpy.random.default_rng(RNG_SEED)
    with h5py.File(path, "w", **kw) as f:
        f.attrs["layer_names"] = numpy.array([b"conv", b"dense"])
        f.attrs["vlen"] = "text"
        f.attrs["vlens"] = ["a", "bb"]
        f.attrs["nums"] = numpy.arange(3)
        g = f.create_group("conv/conv")
        g["kernel:0"] = rng.standard_normal((3, 3, 2, 4)).astype("f4")
        g["bias:0"] = rng.standard_normal(4).astype("f4")
        f.create_dataset("chunked", data=rng.standard_normal((9, 7)), chunks=(4, 3))
        if kw.get("libver") != "latest":
            f.create_dataset(
                "gz",
                data=rng.standard_normal((10, 6)).astype("f4"),
                chunks=(3, 4),
                compression="gzip",
                shuffle=True,
                fletcher32=True,
            )
        f["scalar"] = numpy.float64(2.5)
        f["big_endian"] = numpy.arange(4, dtype=">f8")
        f["half"] = numpy.arange(5, dtype="f2")
        f["ints"] = numpy.arange(-3, 3, dtype="i2")


@pytest.mark.parametrize(
    "kw",
    [{}, {"libver": ("earliest", "v110")}, {"userblock_size": 512}],
    ids=["default", "v110", "userblock"],
)
def test_hdf5_matches_h5py(tmp_path, kw):
    path = tmp_path / "w.h5"
    _write_h5(path, **kw)
    assert detect_format(path) == "hdf5"
    _assert_same(read_tensors(path), _h5_reference(path))


def test_hdf5_compact_dataset_and_attributes(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((5,))
        ds = h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_INT16, space, dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, numpy.arange(5, dtype="i2"))
        f["g"] = numpy.ones(2)
        f["g"].attrs["name"] = "user name"
        f["g"].attrs["weight_names"] = numpy.array([b"a:0", b"bb:0"])
    _assert_same(read_tensors(path), _h5_reference(path))
    from weights_io._buffer import open_buffer
    from weights_io.hdf5 import H5File

    root = H5File(open_buffer(path)).root
    assert root["g"].attrs == {"name": "user name", "weight_names": ["a:0", "bb:0"]}


def test_hdf5_unsupported_features_are_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "dense.h5"
    with h5py.File(path, "w", track_order=True) as f:
        for i in range(20):  # more than 8 links in a new-style group: dense (fractal heap) storage
            f[f"d{i}"] = numpy.zeros(2)
    with pytest.raises(CheckpointError, match="dense link storage"):
        read_tensors(path)
    path2 = tmp_path / "latest.h5"
    with h5py.File(path2, "w", libver="latest") as f:
        f.create_dataset("c", data=numpy.zeros((8, 8)), chunks=(4, 4))
    with pytest.raises(CheckpointError, match="chunk index|layout message version"):
        read_tensors(path2)


def test_onnx_initializers_match_numpy_helper(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(RNG_SEED)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype("f4"), "raw_f32"),
        numpy_helper.from_array(rng.standard_normal(3), "raw_f64"),
        helper.make_tensor("typed_f32", TensorProto.FLOAT, [2, 2], [1.0, -2.0, 3.5, 0.25]),
        helper.make_tensor("typed_f64", TensorProto.DOUBLE, [3], [1.5, -2.0, 1e-300]),
        helper.make_tensor("typed_i64", TensorProto.INT64, [3], [-1, 0, 2**40]),
        helper.make_tensor("typed_i32", TensorProto.INT32, [2], [-7, 9]),
        helper.make_tensor(
            "typed_f16",
            TensorProto.FLOAT16,
            [2],
            numpy.array([1.5, -0.25], "f2").view("u2").astype(int).tolist(),
        ),
        helper.make_tensor("typed_u8", TensorProto.UINT8, [3], [0, 7, 255]),
        helper.make_tensor("typed_bool", TensorProto.BOOL, [2], [1, 0]),
    ]
    const = helper.make_node(
        "Constant", [], ["k"], value=numpy_helper.from_array(numpy.arange(3, dtype="f4"))
    )
    node = helper.make_node("Gemm", ["x", "raw_f32"], ["y"], transB=1)
    graph = helper.make_graph(
        [const, node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    model = helper.make_model(graph)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert detect_format(path) == "onnx"
    ref = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    ref["k"] = numpy.arange(3, dtype="f4")
    _assert_same(read_tensors(path), ref)
    # external data, all tensors in one file
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save(
        model,
        str(ext / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    loaded = onnx.load(str(ext / "m.onnx"))
    ref = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    ref["k"] = numpy.arange(3, dtype="f4")
    _assert_same(read_tensors(ext / "m.onnx"), ref)


def test_onnx_external_data_cannot_leave_the_folder(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    t = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "8")):
        e = t.external_data.add()
        e.key, e.value = k, v
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    sub = tmp_path / "model"
    sub.mkdir()
    graph = helper.make_graph([], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [], [t])
    (sub / "m.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(CheckpointError, match="inside the model's folder"):
        read_tensors(sub / "m.onnx")


@pytest.mark.parametrize("version", [2, 1, 0])
@pytest.mark.parametrize("legacy", [False, True], ids=["shape", "legacy_dims"])
@pytest.mark.parametrize("double", [False, True], ids=["float", "double"])
def test_caffemodel_blobs_match_protobuf(tmp_path, version, legacy, double):
    pytest.importorskip("google.protobuf")
    from tests.oracles.weights_io_caffe_proto import build_schema, write_caffemodel

    schema = build_schema()
    rng = numpy.random.default_rng(RNG_SEED)
    layers = [
        ("conv1", "Convolution", [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)]),
        ("relu1", "ReLU", []),
        ("fc", "InnerProduct", [rng.standard_normal((5, 36)), rng.standard_normal(5)]),
    ]
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, schema, layers, version=version, legacy=legacy, double=double)
    net = schema["NetParameter"]()
    net.ParseFromString(path.read_bytes())  # protobuf's own reading of the same bytes
    entries = list(net.layer) if version == 2 else [L.layer if version == 0 else L for L in net.layers]
    ref = {}
    for L in entries:
        for i, b in enumerate(L.blobs):
            shape = (b.num, b.channels, b.height, b.width) if legacy else tuple(b.shape.dim)
            data = b.double_data if double else b.data
            ref[f"{L.name}/{i}"] = numpy.array(data, "f8" if double else "f4").reshape(shape)
    assert detect_format(path) == "caffe"
    _assert_same(read_tensors(path), ref)


def test_caffe_unpacked_floats_are_read(tmp_path):
    """A repeated float written one value per tag (wire type 5) reads like the packed form."""
    from weights_io._buffer import Buffer
    from weights_io.caffe_binary import read_caffemodel

    vals = numpy.array([1.0, -2.5, 3.25, 0.0, 7.0], "<f4")

    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def ld(field, payload):
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    shape = ld(7, ld(1, varint(5)))
    blob = shape + b"".join(varint(5 << 3 | 5) + v.tobytes() for v in vals)
    layer = ld(1, b"ip") + ld(2, b"InnerProduct") + ld(7, blob)
    data = ld(100, layer)
    _, layers = read_caffemodel(Buffer(data, "mem"))
    numpy.testing.assert_array_equal(layers[0].blobs[0], vals)


def test_detection_uses_contents_not_suffix(tmp_path):
    path = tmp_path / "actually_torch.h5"
    torch.save({"w": torch.ones(2)}, path)
    assert detect_format(path) == "torch"
    with pytest.raises(CheckpointError, match="declared as hdf5 but its contents are torch"):
        read_tensors(path, format="h5")
    assert list(read_tensors(path, format="pth")) == ["w"]


def test_empty_unknown_and_foreign_files(tmp_path):
    empty = tmp_path / "e.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_tensors(empty)
    junk = tmp_path / "j.bin"
    junk.write_bytes(b"\x07hello world, not weights")
    with pytest.raises(CheckpointError, match="unrecognised"):
        read_tensors(junk)
    with pytest.raises(CheckpointError, match="cannot open"):
        read_tensors(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="unknown format"):
        read_tensors(junk, format="tflite")
    npy = tmp_path / "a.npy"
    numpy.save(npy, numpy.zeros(2))
    with pytest.raises(CheckpointError, match="single .npy"):
        read_tensors(npy)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_tensors(path)


def test_readers_need_no_framework(tmp_path):
    """weights_io reads every format with torch, onnx, protobuf, h5py, safetensors blocked."""
    torch.save({"w": torch.ones(2)}, tmp_path / "a.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "b.pt", _use_new_zipfile_serialization=False)
    numpy.savez(tmp_path / "c.npz", w=numpy.ones(2))
    _write_h5(tmp_path / "d.h5")
    shutil.copy(TEST_DATA / "weights_io" / "keras3_lstm.weights.h5", tmp_path / "e.h5")
    names = ["a.pt", "b.pt", "c.npz", "d.h5", "e.h5"]
    try:
        import safetensors.numpy as stn

        stn.save_file({"w": numpy.ones(2, "f4")}, str(tmp_path / "f.safetensors"))
        names.append("f.safetensors")
    except ImportError:
        pass
    try:
        from onnx import TensorProto, helper, numpy_helper

        g = helper.make_graph(
            [],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [],
            [numpy_helper.from_array(numpy.ones(2, "f4"), "w")],
        )
        (tmp_path / "g.onnx").write_bytes(helper.make_model(g).SerializeToString())
        names.append("g.onnx")
        from tests.oracles.weights_io_caffe_proto import build_schema, write_caffemodel

        write_caffemodel(
            tmp_path / "h.caffemodel",
            build_schema(package="noframework"),
            [("fc", "InnerProduct", [numpy.ones((2, 3)), numpy.ones(2)])],
        )
        (tmp_path / "h.prototxt").write_text(
            'input: "data" input_shape { dim: 1 dim: 3 }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
            "inner_product_param { num_output: 2 } }\n"
        )
        names.append("h.caffemodel")
    except ImportError:
        pass
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in "
        "('torch', 'onnx', 'google', 'h5py', 'safetensors', 'keras', 'ml_dtypes'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import weights_io\n"
        f"for n in {names!r}:\n"
        f"    t = weights_io.read_tensors({str(tmp_path)!r} + '/' + n)\n"
        "    assert t, n\n"
        f"if 'h.caffemodel' in {names!r}:\n"
        f"    p, m = weights_io.convert({str(tmp_path)!r} + '/h.caffemodel', "
        f"prototxt={str(tmp_path)!r} + '/h.prototxt')\n"
        "    assert p['fc.weight'].shape == (2, 3)\n"
        "assert not any(m.split('.')[0] in ('torch', 'onnx', 'google', 'h5py', 'safetensors') "
        "for m in sys.modules)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_public_api():
    for name in (
        "read_tensors",
        "convert",
        "load_model",
        "save_canonical",
        "load_canonical",
        "CheckpointError",
    ):
        assert hasattr(weights_io, name)
    assert issubclass(CheckpointError, ValueError)
