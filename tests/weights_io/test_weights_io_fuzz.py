"""Hypothesis fuzzing: mutated and truncated files of every format raise only CheckpointError."""

import atexit
import io
import os
import shutil
import tempfile
import zipfile

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weights_io import CheckpointError, convert, read_tensors

torch = pytest.importorskip("torch")
pytest.importorskip("google.protobuf")
h5py = pytest.importorskip("h5py")
onnx = pytest.importorskip("onnx")
st_numpy = pytest.importorskip("safetensors.numpy")

SEED = 0xF022
_TMP = tempfile.mkdtemp(prefix="wio-fuzz-")
atexit.register(shutil.rmtree, _TMP, True)
_PROTOTXT = os.path.join(_TMP, "p.prototxt")


def _bytes_of(write):
    fd, p = tempfile.mkstemp(dir=_TMP)
    os.close(fd)
    write(p)
    with open(p, "rb") as f:
        data = f.read()
    os.unlink(p)
    return data


def _savez(p, fn, **arrays):
    with open(p, "wb") as f:
        fn(f, **arrays)


def _samples():
    rng = numpy.random.default_rng(SEED)
    sd = {"features.0.weight": torch.randn(2, 3, 3, 3), "features.0.bias": torch.randn(2),
          "lstm.weight_ih_l0": torch.randn(8, 3), "view": torch.randn(4, 4).t()}
    out = {
        "torch_zip": _bytes_of(lambda p: torch.save(sd, p)),
        "torch_legacy": _bytes_of(lambda p: torch.save(sd, p, _use_new_zipfile_serialization=False)),
        "safetensors": _bytes_of(lambda p: st_numpy.save_file({"a": rng.standard_normal((3, 2)).astype("f4"),
                                                              "b": numpy.arange(4)}, p)),
        "npz": _bytes_of(lambda p: _savez(p, numpy.savez, a=numpy.arange(6.0), b=numpy.ones((2, 2), "f4"))),
        "npz_deflated": _bytes_of(lambda p: _savez(p, numpy.savez_compressed, a=numpy.arange(60.0))),
    }

    def h5(p):
        with h5py.File(p, "w") as f:
            f.attrs["layer_names"] = numpy.array([b"d"])
            f.attrs["v"] = ["x", "yy"]
            g = f.create_group("d")
            g.attrs["weight_names"] = numpy.array([b"d/kernel:0"])
            g["d/kernel:0"] = rng.standard_normal((3, 2)).astype("f4")
            f.create_dataset("c", data=rng.standard_normal((6, 5)), chunks=(2, 3), compression="gzip", shuffle=True)

    out["hdf5"] = _bytes_of(h5)
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(rng.standard_normal((2, 3)).astype("f4"), "W"),
         helper.make_tensor("b", TensorProto.FLOAT, [2], [1.0, 2.0])])
    out["onnx"] = helper.make_model(graph).SerializeToString()
    from tests.oracles.weights_io_caffe_proto import build_schema, write_caffemodel

    schema = build_schema(package="fuzz")
    out["caffe"] = _bytes_of(lambda p: write_caffemodel(
        p, schema, [("ip", "InnerProduct", [rng.standard_normal((2, 3)), rng.standard_normal(2)])], legacy=True))
    with open(_PROTOTXT, "w") as f:
        f.write('input: "data" input_dim: 1 input_dim: 3\n'
                'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }\n')
    return out


SAMPLES = _samples()


@st.composite
def mutated(draw, data):
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "zero_run"]))
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:draw(st.integers(0, len(b) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= draw(st.integers(1, 255))
        return bytes(b)
    if kind == "overwrite":
        i = draw(st.integers(0, len(b) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        b[i:i + len(chunk)] = chunk
        return bytes(b)
    if kind == "insert":
        i = draw(st.integers(0, len(b)))
        return bytes(b[:i] + draw(st.binary(min_size=1, max_size=16)) + b[i:])
    i = draw(st.integers(0, len(b) - 1))
    n = draw(st.integers(1, 64))
    b[i:i + n] = b"\xff" * len(b[i:i + n]) if draw(st.booleans()) else b"\0" * len(b[i:i + n])
    return bytes(b)


def _check(data, fn):
    fd, p = tempfile.mkstemp(dir=_TMP)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        out = fn(p)
        arrays = out[0] if isinstance(out, tuple) else out
        for a in arrays.values():
            numpy.array(a, copy=True)  # touch every byte (no arithmetic: no overflow warnings)
    except CheckpointError:
        pass
    finally:
        os.unlink(p)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_files_raise_only_checkpoint_error(fmt, data):
    blob = data.draw(mutated(SAMPLES[fmt]))
    _check(blob, read_tensors)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_through_converters(data):
    fmt = data.draw(st.sampled_from(["caffe", "torch_zip", "torch_legacy"]))
    blob = data.draw(mutated(SAMPLES[fmt]))
    if fmt == "caffe":
        _check(blob, lambda p: convert(p, prototxt=_PROTOTXT))
    else:
        _check(blob, lambda p: convert(p, source="torch_lstm", prefix="lstm."))


def test_valid_samples_read():
    for fmt, blob in SAMPLES.items():
        fd, p = tempfile.mkstemp(dir=_TMP)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        assert read_tensors(p), fmt
        os.unlink(p)


def test_zip_bomb_claims_are_refused():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.npy", b"\0" * 2_000_000)
    raw = bytearray(b.getvalue())
    # claim a 4 GB uncompressed size in the central directory
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (2 ** 32 - 2).to_bytes(4, "little")
    _check(bytes(raw), read_tensors)
    fd, p = tempfile.mkstemp(dir=_TMP, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(raw))
    with pytest.raises(CheckpointError, match="claims"):
        read_tensors(p)
    os.unlink(p)
