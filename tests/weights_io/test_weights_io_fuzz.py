"""Hypothesis fuzzing: mutated and truncated files of every format raise only CheckpointError."""

import atexit
import io
import os
import shutil
import tempfile
import zipfile

import numpy
import pytest
from hypothesis import HealthCheck, example, given, settings
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
    sd = {
        "features.0.weight": torch.randn(2, 3, 3, 3),
        "features.0.bias": torch.randn(2),
        "lstm.weight_ih_l0": torch.randn(8, 3),
        "view": torch.randn(4, 4).t(),
    }
    out = {
        "torch_zip": _bytes_of(lambda p: torch.save(sd, p)),
        "torch_legacy": _bytes_of(lambda p: torch.save(sd, p, _use_new_zipfile_serialization=False)),
        "safetensors": _bytes_of(
            lambda p: st_numpy.save_file(
                {"a": rng.standard_normal((3, 2)).astype("f4"), "b": numpy.arange(4)}, p
            )
        ),
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
            f.create_dataset(
                "c", data=rng.standard_normal((6, 5)), chunks=(2, 3), compression="gzip", shuffle=True
            )

    out["hdf5"] = _bytes_of(h5)
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [
            numpy_helper.from_array(rng.standard_normal((2, 3)).astype("f4"), "W"),
            helper.make_tensor("b", TensorProto.FLOAT, [2], [1.0, 2.0]),
        ],
    )
    out["onnx"] = helper.make_model(graph).SerializeToString()
    from tests.oracles.weights_io_caffe_proto import build_schema, write_caffemodel

    schema = build_schema(package="fuzz")
    out["caffe"] = _bytes_of(
        lambda p: write_caffemodel(
            p,
            schema,
            [("ip", "InnerProduct", [rng.standard_normal((2, 3)), rng.standard_normal(2)])],
            legacy=True,
        )
    )
    with open(_PROTOTXT, "w") as f:
        f.write(
            'input: "data" input_dim: 1 input_dim: 3\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
            "inner_product_param { num_output: 2 } }\n"
        )
    return out


SAMPLES = _samples()


@st.composite
def mutated(draw, data):
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "zero_run"]))
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: draw(st.integers(0, len(b) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= draw(st.integers(1, 255))
        return bytes(b)
    if kind == "overwrite":
        i = draw(st.integers(0, len(b) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        b[i : i + len(chunk)] = chunk
        return bytes(b)
    if kind == "insert":
        i = draw(st.integers(0, len(b)))
        return bytes(b[:i] + draw(st.binary(min_size=1, max_size=16)) + b[i:])
    i = draw(st.integers(0, len(b) - 1))
    n = draw(st.integers(1, 64))
    b[i : i + n] = b"\xff" * len(b[i : i + n]) if draw(st.booleans()) else b"\0" * len(b[i : i + n])
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
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
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
    raw[cd + 24 : cd + 28] = (2**32 - 2).to_bytes(4, "little")
    _check(bytes(raw), read_tensors)
    fd, p = tempfile.mkstemp(dir=_TMP, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(raw))
    with pytest.raises(CheckpointError, match="claims"):
        read_tensors(p)
    os.unlink(p)


# ====================================================== hostile structures (see test_weights_io_hostile.py)
# Each strategy below builds well-formed files whose *content* is hostile: strided views over small storages,
# containers shared by many parents, rewritten HDF5 chunk tables, non-regular files, hostile prototxt/ONNX
# fields. Sizes are drawn so that even a broken bound could allocate only a few MB in this process.

import signal  # noqa: E402
import time  # noqa: E402

from tests.weights_io import test_weights_io_hostile as hostile  # noqa: E402
from weights_io._buffer import AMPLIFICATION, BUDGET_SLACK  # noqa: E402
from weights_io._walk import MAX_STEPS  # noqa: E402
from weights_io.torch_pickle import VIEW_REPEAT, VIEW_SLACK  # noqa: E402

_HOSTILE = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


class _Timeout(Exception):
    pass


def _within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, failing (not hanging) after ``seconds`` (SIGALRM interrupts open())."""

    def alarm(_sig, _frame):
        raise _Timeout(f"{fn.__name__} did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _tmpfile(suffix=""):
    fd, p = tempfile.mkstemp(dir=_TMP, suffix=suffix)
    os.close(fd)
    return p


@st.composite
def strided_views(draw):
    """A storage of a few elements and 1-3 views of it with arbitrary offsets, sizes and strides."""
    dtype = draw(st.sampled_from(["FloatStorage", "BFloat16Storage", "HalfStorage", "LongStorage"]))
    numel = draw(st.integers(1, 64))
    views = []
    for _ in range(draw(st.integers(1, 3))):
        rank = draw(st.integers(0, 3))
        size = draw(st.lists(st.integers(0, 1 << 11), min_size=rank, max_size=rank))
        n = 1
        for s in size:
            n *= s
        if n > 1 << 20:  # at most 8 MB even if the bound were broken
            size = [min(s, 64) for s in size]
        stride = draw(st.lists(st.integers(0, 9), min_size=rank, max_size=rank))
        views.append((draw(st.integers(0, 70)), tuple(size), tuple(stride)))
    return dtype, numel, views


@_HOSTILE
@given(case=strided_views())
def test_strided_views_fuzz(case):
    """Any view: a CheckpointError, or arrays equal to torch's that repeat their storage at most "
    "VIEW_REPEAT times."""
    dtype, numel, views = case
    item = {"FloatStorage": 4, "BFloat16Storage": 2, "HalfStorage": 2, "LongStorage": 8}[dtype]
    raw = numpy.random.default_rng(numel).integers(0, 255, numel * item, dtype=numpy.uint8).tobytes()
    pid = hostile._storage_pid(dtype, "0", numel)
    sd = {f"t{i}": hostile._Rebuild(pid, off, size, stride) for i, (off, size, stride) in enumerate(views)}
    p = hostile.torch_zip_with(_tmpfile(".pt"), sd, {"0": raw})
    try:
        out = read_tensors(p)
    except CheckpointError:
        os.unlink(p)
        return
    expected = torch.load(p, weights_only=True)
    total = 0
    for name, a in out.items():
        n = int(numpy.prod(a.shape))
        assert n <= VIEW_REPEAT * numel + VIEW_SLACK or n == 0, (name, a.shape)
        total += a.nbytes
        ref = expected[name]
        ref = ref.float() if ref.dtype == torch.bfloat16 else ref
        numpy.testing.assert_array_equal(a, ref.numpy())
    assert total <= AMPLIFICATION * os.path.getsize(p) + BUDGET_SLACK
    os.unlink(p)


@st.composite
def container_dags(draw):
    """Nested dicts/lists in which later containers hold earlier ones, any number of times."""
    n = draw(st.integers(1, 24))
    nodes = []
    for i in range(n):
        # the previous container is drawn often, so that chains of shared containers (2**n paths) turn up
        kids = draw(st.lists(st.one_of(st.just(i - 1), st.integers(-2, i - 1)), max_size=3)) if i else [-1]
        nodes.append((draw(st.booleans()), kids))
    return nodes


def _build_dag(nodes, leaf):
    objs = []
    for as_dict, kids in nodes:
        items = [leaf(k) if k < 0 else objs[k] for k in kids]
        objs.append({f"k{j}": v for j, v in enumerate(items)} if as_dict else list(items))
    return objs[-1]


def _count_paths(nodes):
    """Root-to-leaf paths (leaves: index -1 or -2) of the DAG, without walking it."""
    paths = []
    for _as_dict, kids in nodes:
        paths.append(sum(1 if k < 0 else paths[k] for k in kids))
    return paths[-1]


_DOUBLING = [(False, [-1])] + [(k % 2 == 0, [k, k]) for k in range(23)]  # 2**23 paths from 24 containers


@_HOSTILE
@given(nodes=container_dags(), legacy=st.booleans())
@example(nodes=_DOUBLING, legacy=True)
def test_shared_reference_dags_fuzz(nodes, legacy):
    """A pickle DAG: every path named (few paths) or a CheckpointError (many), quickly either way."""
    tensors = {-1: torch.arange(3.0), -2: torch.ones(2, dtype=torch.bfloat16)}
    obj = _build_dag(nodes, lambda k: tensors[k])
    p = _tmpfile(".pt")
    torch.save(obj, p, _use_new_zipfile_serialization=not legacy)
    paths = _count_paths(nodes)
    t0 = time.perf_counter()
    try:
        out = _within(20, read_tensors, p)
        assert len(out) == paths
    except CheckpointError:  # only when the names would exceed the walk's budget
        assert paths > MAX_STEPS // (3 * len(nodes) + 3), paths
    assert time.perf_counter() - t0 < 10
    os.unlink(p)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=container_dags())
@example(nodes=_DOUBLING)
def test_hdf5_hard_link_dags_fuzz(nodes):
    """The same DAG as HDF5 groups with hard links: every path named or a CheckpointError, quickly."""
    p = _tmpfile(".h5")
    with h5py.File(p, "w") as f:
        groups = []
        for i, (_as_dict, kids) in enumerate(nodes):
            g = f.create_group(f"n{i}")
            for j, k in enumerate(kids):
                if k < 0:
                    g[f"d{j}"] = numpy.arange(3, dtype="f4")
                else:
                    g[f"k{j}"] = groups[k]
            groups.append(g)
    total = sum(
        _count_paths(nodes[: i + 1]) for i in range(len(nodes))
    )  # every group is linked from the root
    t0 = time.perf_counter()
    try:
        out = _within(20, read_tensors, p)
        assert len(out) == total
    except CheckpointError:
        assert total > MAX_STEPS // (3 * len(nodes) + 6), total
    assert time.perf_counter() - t0 < 10
    os.unlink(p)


def _chunked_sample():
    p = _tmpfile(".h5")
    with h5py.File(p, "w") as f:
        f.create_dataset(
            "c", data=numpy.arange(60.0).reshape(6, 10), chunks=(2, 3), compression="gzip", shuffle=True
        )
        f.create_dataset(
            "d", data=numpy.arange(7, dtype="f4"), chunks=(4,), maxshape=(None,), compression="gzip"
        )
    with open(p, "rb") as fh:
        raw = bytearray(fh.read())
    os.unlink(p)
    places = []
    for name in ("c", "d"):
        pos, tree, dims = hostile._h5_chunk_layout(raw, name)
        rank = len(dims)
        used = int.from_bytes(raw[tree + 6 : tree + 8], "little")
        entry = 8 + 8 * rank + 8  # key (size, mask, rank offsets of 8 bytes) + child address
        places.append((pos, tree, rank, used, entry))
    return bytes(raw), places


_CHUNKED, _CHUNK_PLACES = _chunked_sample()


@_HOSTILE
@given(data=st.data())
def test_chunk_table_mutations_fuzz(data):
    """Rewritten chunk dims, chunk keys, sizes, child addresses and entry counts: only CheckpointError."""
    raw = bytearray(_CHUNKED)
    for _ in range(data.draw(st.integers(1, 4))):
        pos, tree, rank, used, entry = data.draw(st.sampled_from(_CHUNK_PLACES))
        kind = data.draw(st.sampled_from(["dims", "key", "size", "child", "copy", "used"]))
        first = tree + 8 + 16
        i = data.draw(st.integers(0, used - 1))
        e = first + i * entry
        if kind == "dims":  # one chunk dimension (4 bytes each)
            d = data.draw(st.integers(0, rank - 1))
            dim = data.draw(st.integers(0, 2**32 - 1))
            raw[pos + 11 + 4 * d : pos + 15 + 4 * d] = dim.to_bytes(4, "little")
        elif kind == "key":  # one chunk offset
            d = data.draw(st.integers(0, rank - 1))
            raw[e + 8 + 8 * d : e + 16 + 8 * d] = data.draw(st.integers(0, 64)).to_bytes(8, "little")
        elif kind == "size":
            raw[e : e + 4] = data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        elif kind == "child":
            j = data.draw(st.integers(0, used - 1))
            raw[e + entry - 8 : e + entry] = raw[first + j * entry + entry - 8 : first + (j + 1) * entry]
        elif kind == "copy":  # a whole entry repeated elsewhere in the table
            j = data.draw(st.integers(0, used - 1))
            raw[e : e + entry] = raw[first + j * entry : first + (j + 1) * entry]
        else:
            raw[tree + 6 : tree + 8] = data.draw(st.integers(0, 2 * used + 2)).to_bytes(2, "little")
    _check(bytes(raw), read_tensors)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["fifo", "dir", "link_fifo", "link_dir", "dev_null", "dev_zero", "socket"]),
    use=st.sampled_from(["main", "external", "prototxt"]),
)
def test_non_regular_files_fuzz(kind, use):
    """Whatever is not a regular file is refused before it is opened (never blocks, never reads a device)."""
    import socket

    d = tempfile.mkdtemp(dir=_TMP)
    target = os.path.join(d, "target")
    sock = None
    if kind in ("fifo", "link_fifo"):
        os.mkfifo(target if kind == "fifo" else target + ".real")
    elif kind in ("dir", "link_dir"):
        os.mkdir(target if kind == "dir" else target + ".real")
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(target)
    if kind.startswith("link_"):
        os.symlink(target + ".real", target)
    elif kind.startswith("dev_"):
        os.symlink("/dev/null" if kind == "dev_null" else "/dev/zero", target)
    try:
        with pytest.raises(CheckpointError):
            if use == "main":
                _within(10, read_tensors, target)
            elif use == "external":
                model = hostile._external_model(os.path.join(d, "m.onnx"), "target")
                _within(10, read_tensors, model)
            else:
                _within(10, convert, SAMPLE_CAFFE, prototxt=target)
    finally:
        if sock is not None:
            sock.close()
        shutil.rmtree(d, True)


def _sample_file(name):
    p = os.path.join(_TMP, name)
    with open(p, "wb") as f:
        f.write(SAMPLES["caffe"])
    return p


SAMPLE_CAFFE = _sample_file("sample.caffemodel")

_FIELD_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True).map(repr),
    st.sampled_from(
        [
            '"abc"',
            "MAX",
            "AVE",
            "true",
            "{ }",
            "{ dim: 1 }",
            "[1, 2]",
            "9" * 5000,
            "0x" + "f" * 40,
            "-1",
            "0",
            "1",
            "2",
            '""',
            "nan",
            "-inf",
            "1e400",
        ]
    ),
)
# field -> (section of the template it goes into, default text of that section's field list)
_PROTOTXT_FIELDS = {
    "kernel_size": "pool",
    "stride": "pool",
    "pad": "pool",
    "pool": "pool",
    "global_pooling": "pool",
    "negative_slope": "relu",
    "local_size": "lrn",
    "alpha": "lrn",
    "beta": "lrn",
    "dropout_ratio": "drop",
    "num_output": "ip",
    "bias_term": "ip",
    "axis": "ip",
    "transpose": "ip",
}
_TEMPLATE = {
    "pool": (
        'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ kernel_size: 1 {} }} }}'
    ),
    "relu": 'layer {{ name: "r" type: "ReLU" bottom: "p" top: "p" relu_param {{ {} }} }}',
    "lrn": 'layer {{ name: "n" type: "LRN" bottom: "p" top: "p" lrn_param {{ {} }} }}',
    "drop": 'layer {{ name: "d" type: "Dropout" bottom: "p" top: "p" dropout_param {{ {} }} }}',
    "ip": (
        'layer {{ {} type: "InnerProduct" bottom: "p" top: "ip" inner_product_param {{ num_output: 2 {} }} }}'
    ),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(sorted(_PROTOTXT_FIELDS) + ["input_dim", "dim", "input", "name"]),
    value=_FIELD_VALUES,
)
def test_hostile_prototxt_fields_fuzz(field, value):
    """Any value in any field of a small prototxt: only CheckpointError (or a conversion)."""
    head = ['input: "data"', "input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }"]
    if field == "input_dim":
        head[1] = f"input_dim: 1 input_dim: {value} input_dim: 4 input_dim: 4"
    elif field == "dim":
        head[1] = f"input_shape {{ dim: 1 dim: {value} dim: 4 dim: 4 }}"
    elif field == "input":
        head[0] = f"input: {value}"
    fields = dict.fromkeys(_TEMPLATE, "")
    if field in _PROTOTXT_FIELDS:
        fields[_PROTOTXT_FIELDS[field]] = f"{field}: {value}"
    name = f"name: {value}" if field == "name" else 'name: "ip"'
    layers = [_TEMPLATE[k].format(fields[k]) for k in ("pool", "relu", "lrn", "drop")]
    layers.append(_TEMPLATE["ip"].format(name, fields["ip"]))
    p = os.path.join(_TMP, "fuzz.prototxt")
    with open(p, "w") as f:
        f.write("\n".join(head + layers) + "\n")
    try:
        _within(20, convert, SAMPLE_CAFFE, prototxt=p, strict=False)
    except CheckpointError:
        pass


_ATTR_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32),
    st.text(max_size=8),
    st.lists(st.integers(-(2**40), 2**40), max_size=5),
    st.lists(st.floats(width=32), max_size=4),
    st.lists(st.sampled_from(["Sigmoid", "Tanh", "Relu", "x"]), max_size=4),
)
_ONNX_ATTRS = {
    "Conv": ["kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"],
    "MaxPool": ["kernel_shape", "strides", "pads", "ceil_mode", "dilations", "auto_pad"],
    "AveragePool": ["kernel_shape", "count_include_pad", "ceil_mode"],
    "LRN": ["size", "alpha", "beta", "bias"],
    "Dropout": ["ratio"],
    "Flatten": ["axis"],
    "Gemm": ["alpha", "beta", "transA", "transB"],
    "Softmax": ["axis"],
    "LSTM": ["hidden_size", "activations", "direction", "clip", "input_forget", "layout"],
}


def _onnx_template(op, attrs):
    from onnx import numpy_helper

    f4 = numpy.float32
    if op == "LSTM":
        nodes = [helper_node("LSTM", ["x", "W", "R"], ["y"], attrs)]
        inits = [
            numpy_helper.from_array(numpy.ones((1, 8, 3), f4), "W"),
            numpy_helper.from_array(numpy.ones((1, 8, 2), f4), "R"),
        ]
        return nodes, inits, (1, 1, 3)
    nodes = [helper_node("Conv", ["x", "Wc"], ["c"], attrs if op == "Conv" else {})]
    prev = "c"
    for k, o in enumerate(["MaxPool", "AveragePool", "LRN", "Dropout", "Flatten"]):
        extra = {"kernel_shape": [1, 1]} if o.endswith("Pool") else {"size": 1} if o == "LRN" else {}
        if o == op:
            extra = dict(extra, **attrs)
        nodes.append(helper_node(o, [prev], [f"h{k}"], extra))
        prev = f"h{k}"
    gemm = dict({"transB": 1}, **(attrs if op == "Gemm" else {}))
    nodes.append(helper_node("Gemm", [prev, "Wg"], ["g"], gemm))
    nodes.append(helper_node("Softmax", ["g"], ["y"], attrs if op == "Softmax" else {}))
    inits = [
        numpy_helper.from_array(numpy.ones((2, 3, 1, 1), f4), "Wc"),
        numpy_helper.from_array(numpy.ones((2, 2 * 4 * 4), f4), "Wg"),
    ]
    return nodes, inits, (1, 3, 4, 4)


def helper_node(op, inputs, outputs, attrs):
    return onnx.helper.make_node(op, inputs, outputs, **attrs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_onnx_fields_fuzz(data):
    """Any value of any attribute of a small Conv/pool/LRN/Gemm or LSTM graph: only CheckpointError."""
    op = data.draw(st.sampled_from(sorted(_ONNX_ATTRS)))
    attrs = {}
    for name in data.draw(st.lists(st.sampled_from(_ONNX_ATTRS[op]), min_size=1, max_size=3, unique=True)):
        value = data.draw(_ATTR_VALUES)
        if isinstance(value, list) and not value:
            continue
        attrs[name] = value
    nodes, inits, shape = _onnx_template(op, attrs)
    p = hostile.onnx_model(_tmpfile(".onnx"), nodes, inits, in_shape=shape, out_name="y")
    with open(p, "rb") as f:
        blob = f.read()
    _check(blob, convert)
    os.unlink(p)
