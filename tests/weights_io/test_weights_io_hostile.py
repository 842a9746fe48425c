"""Hostile checkpoints: small files crafted to cost memory or time, raise other errors, or edit the loader.

One test (or a few) per class of input; every attack runs in a subprocess under a
memory limit (``resource.setrlimit(RLIMIT_AS)``) and a timeout, and must end with
a CheckpointError (or a bounded success) -- never a MemoryError, another
exception type or a hang. The files are crafted with the real libraries (torch,
h5py, onnx, protobuf) where they can write the attack, byte-level where they
cannot (patched HDF5 chunk tables, hand-written pickle opcodes).
"""

import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import numpy
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")
onnx = pytest.importorskip("onnx")
pytest.importorskip("google.protobuf")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEMORY_LIMIT = 1536 << 20  # address space of the child process
TIMEOUT = 60

# --------------------------------------------------------------------------- running an attack

_CHILD = textwrap.dedent(r"""
    import json, resource, sys, time
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import weights_io
    from weights_io import torch_pickle

    def snapshot():
        out = {}
        for key, fn in torch_pickle.ALLOWED_GLOBALS.items():
            out[".".join(key)] = [repr(getattr(fn, "__defaults__", None)),
                                  repr(sorted(getattr(fn, "__dict__", {}))),
                                  repr(getattr(fn, "__kwdefaults__", None))]
        out["torch.Size()"] = repr(torch_pickle.ALLOWED_GLOBALS[("torch", "Size")]())
        return out

    def peak_mb():  # this process's peak RSS (ru_maxrss would include the parent's, kept across exec)
        try:
            with open("/proc/self/status") as f:
                return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024
        except (OSError, StopIteration):
            return None

    for spec in json.loads(sys.argv[2]):
        before = snapshot()
        t0 = time.perf_counter()
        try:
            out = getattr(weights_io, spec["fn"])(*spec["args"], **spec["kwargs"])
            arrays = out[0] if isinstance(out, tuple) else out
            nbytes = 0
            for a in arrays.values():
                nbytes += int(a.nbytes)
                if spec.get("touch"):
                    a.copy()
            res = {"ok": True, "type": None, "n": len(arrays), "nbytes": nbytes}
        except weights_io.CheckpointError as e:
            res = {"ok": False, "type": "CheckpointError", "msg": str(e)[:2000]}
        except BaseException as e:
            res = {"ok": False, "type": type(e).__name__, "msg": str(e)[:2000]}
        res["seconds"] = time.perf_counter() - t0
        res["maxrss_mb"] = peak_mb()
        res["unchanged"] = snapshot() == before
        print(json.dumps(res), flush=True)
""")


def call(fn, *args, touch=False, **kwargs):
    """One call for :func:`attacks`: ``weights_io.<fn>(*args, **kwargs)``."""
    return {"fn": fn, "args": [str(a) for a in args], "kwargs": kwargs, "touch": touch}


def attacks(calls, limit=MEMORY_LIMIT, timeout=TIMEOUT):
    """Run the calls one after the other in one child limited to ``limit`` bytes of address space.

    Returns one report per call: ``ok``, ``type`` and ``msg`` (on failure),
    ``seconds``, ``maxrss_mb`` (the child's peak so far) and ``unchanged`` (the
    unpickler's allow-listed callables are as they were before the call).
    """
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    try:
        p = subprocess.run(
            [sys.executable, "-c", _CHILD, str(limit), json.dumps(calls)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        done = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"{calls[len(done.splitlines())]} did not return within {timeout} s")
    lines = p.stdout.strip().splitlines()
    ok = p.returncode == 0 and len(lines) == len(calls)
    assert ok, f"child failed (rc {p.returncode}): {p.stderr[-3000:]}"
    return [json.loads(x) for x in lines]


def attack(fn, *args, limit=MEMORY_LIMIT, timeout=TIMEOUT, touch=False, **kwargs):
    """:func:`attacks` with a single call; its report."""
    return attacks([call(fn, *args, touch=touch, **kwargs)], limit, timeout)[0]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(argv, timeout=TIMEOUT):
    """``ebr-ref <argv>`` in a child under the memory limit (a hang fails the test)."""
    env = dict(
        os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1"
    )
    code = "import sys; from ebr_ref.cli import main; sys.exit(main(sys.argv[1:]))"
    try:
        return subprocess.run(
            [sys.executable, "-c", code] + list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"ebr-ref {' '.join(argv)} did not return within {timeout} s")


def refused(report, *fragments):
    """Assert a CheckpointError whose message holds every fragment (case-insensitive)."""
    assert report["type"] == "CheckpointError", report
    for f in fragments:
        assert f.lower() in report["msg"].lower(), (f, report["msg"])
    assert report["unchanged"], report
    return report


# --------------------------------------------------------------------------- crafting: torch


def torch_file(path, obj, legacy=False):
    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)
    return path


def _storage_pid(dtype_name, key, numel):
    """A zip-layout persistent id naming a storage of ``numel`` elements."""
    return ("storage", getattr(torch, dtype_name), key, "cpu", numel)


class _StoragePlaceholder:
    def __init__(self, pid):
        self.pid = pid


class _Rebuild:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""

    def __init__(self, pid, offset, size, stride):
        self.args = (_StoragePlaceholder(pid), offset, tuple(size), tuple(stride))

    def __reduce__(self):
        import collections

        return torch._utils._rebuild_tensor_v2, self.args + (False, collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _StoragePlaceholder) else None


def torch_zip_with(path, obj, storages):
    """A zip-layout torch file whose data.pkl pickles ``obj`` (with :class:`_Rebuild` tensors).

    ``storages``: ``{key: raw bytes}``.
    """
    b = io.BytesIO()
    _Pickler(b, protocol=2).dump(obj)
    return torch_zip_raw(path, b.getvalue(), storages)


def torch_zip_raw(path, pkl, storages=None):
    with zipfile.ZipFile(str(path), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return path


# ------------------------------------------------------------------ crafting: HDF5 (patched in place)


def _h5_chunk_layout(raw, dataset):
    """``(layout message position, B-tree address, chunk dims)`` of a chunked dataset (h5py's default v3 "
    "layout)."""
    from weights_io._buffer import Buffer
    from weights_io.hdf5 import H5File

    ds = H5File(Buffer(bytes(raw), "x.h5")).root[dataset]
    pos, _size = ds._layout
    assert raw[pos] == 3 and raw[pos + 1] == 2, "expected a version-3 chunked layout message"
    rank = raw[pos + 2]
    addr = int.from_bytes(raw[pos + 3 : pos + 11], "little")
    dims = [int.from_bytes(raw[pos + 11 + 4 * i : pos + 15 + 4 * i], "little") for i in range(rank)]
    return pos, addr, dims


def h5_gzip_dataset(path, shape=(1,), chunks=(4,)):
    with h5py.File(str(path), "w") as f:
        f.create_dataset(
            "x",
            data=numpy.ones(shape, "f4"),
            maxshape=(None,) * len(shape),
            chunks=chunks,
            compression="gzip",
        )
    with open(path, "rb") as fh:
        return bytearray(fh.read())


def h5_big_chunk(path, elements):
    """A dataset of shape (1,) whose single gzip chunk inflates to ``elements`` float32 zeros."""
    raw = h5_gzip_dataset(path)
    pos, tree, _dims = _h5_chunk_layout(raw, "x")
    comp = zlib.compressobj(9)
    parts, zeros, left = [], bytes(1 << 20), elements * 4
    while left:
        n = min(left, len(zeros))
        parts.append(comp.compress(zeros[:n]))
        left -= n
    stream = b"".join(parts) + comp.flush()
    addr = len(raw)
    raw += stream
    raw[pos + 11 : pos + 15] = elements.to_bytes(4, "little")  # chunk dim 0
    key = tree + 8 + 16  # TREE, type, level, used, left and right siblings
    raw[key : key + 4] = len(stream).to_bytes(4, "little")
    raw[key + 24 : key + 32] = addr.to_bytes(8, "little")  # child of key 0 (rank 1: 4 + 4 + 2*8 key bytes)
    with open(path, "wb") as fh:
        fh.write(raw)
    return path


def h5_repeated_chunk(path, repeats, elements=4):
    """A (1,)-shaped gzip dataset whose chunk index lists the same chunk ``repeats`` times."""
    raw = h5_gzip_dataset(path, chunks=(4,))
    pos, tree, _dims = _h5_chunk_layout(raw, "x")
    key = tree + 8 + 16
    entry = bytes(raw[key : key + 32])  # key 0 (csize, mask, offsets (0, 0)) and its child address
    last = bytes(raw[key + 32 : key + 56])
    node = bytearray(b"TREE" + bytes([1, 0]) + repeats.to_bytes(2, "little") + b"\xff" * 16)
    node += entry * repeats + last
    addr = len(raw)
    raw += node
    raw[pos + 3 : pos + 11] = addr.to_bytes(8, "little")
    with open(path, "wb") as fh:
        fh.write(raw)
    return path


def h5_shared_chunk(path, n=50):
    """n gzip datasets whose chunk indexes all point at the first dataset's chunk (valid data for each)."""
    with h5py.File(str(path), "w") as f:
        for k in range(n):
            f.create_dataset(f"x{k}", data=numpy.ones(4, "f4"), chunks=(4,), compression="gzip")
    with open(path, "rb") as fh:
        raw = bytearray(fh.read())
    _pos, tree0, _dims = _h5_chunk_layout(raw, "x0")
    key0 = tree0 + 8 + 16
    for k in range(1, n):
        _pos, tree, _dims = _h5_chunk_layout(raw, f"x{k}")
        key = tree + 8 + 16
        raw[key : key + 4] = raw[key0 : key0 + 4]  # chunk size
        raw[key + 24 : key + 32] = raw[key0 + 24 : key0 + 32]  # child address
    with open(path, "wb") as fh:
        fh.write(raw)
    return path


def h5_dag(path, depth, leaf=True):
    """Groups g0..g<depth>; g<k> holds two hard links (a, b) to g<k-1>; g0 holds one dataset."""
    with h5py.File(str(path), "w") as f:
        g = f.create_group("g0")
        if leaf:
            g["d"] = numpy.arange(3, dtype="f4")
        for k in range(1, depth + 1):
            nxt = f.create_group(f"g{k}")
            nxt["a"] = g
            nxt["b"] = g
            g = nxt
    return path


# --------------------------------------------------------------------------- crafting: ONNX and prototxt


def onnx_model(path, nodes, inits, in_shape=(1, 3), out_name=None, extra=None):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [
            helper.make_tensor_value_info(
                out_name or (nodes[-1].output[0] if nodes[-1].output else "y"), TensorProto.FLOAT, None
            )
        ],
        inits,
    )
    model = helper.make_model(graph)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def onnx_relu_chain(path, n):
    rng = numpy.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h0"], transB=1)]
    for k in range(n):
        nodes.append(helper.make_node("Relu", [f"h{k}"], [f"h{k + 1}"]))
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 3)).astype("f4"), "W"),
        numpy_helper.from_array(numpy.zeros(2, "f4"), "b"),
    ]
    return onnx_model(path, nodes, inits)


def caffe_files(tmp_path, prototxt_body, blobs):
    """A prototxt (``input: "data"`` + the body) and a caffemodel holding ``blobs`` ({layer: [arrays]})."""
    from tests.oracles.weights_io_caffe_proto import build_schema, write_caffemodel

    model = tmp_path / "net.caffemodel"
    write_caffemodel(
        str(model),
        build_schema(package="hostile"),
        [(name, "InnerProduct", arrays) for name, arrays in blobs.items()],
    )
    proto = tmp_path / "net.prototxt"
    proto.write_text(prototxt_body)
    return model, proto


_IP_HEAD = 'input: "data" input_shape { dim: 1 dim: 3 }\n'


def _ip(name="ip", bottom="data", top="ip", num_output="2"):
    return (
        f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" '
        f"inner_product_param {{ num_output: {num_output} }} }}\n"
    )


# =========================================================================== 1. strided views (torch)


def test_zero_stride_views_are_refused(tmp_path):
    """A 1-element storage viewed as (80000, 20000) with stride (0, 0): 6 GB for convert, 2 GB widened "
    "(bf16)."""
    big = torch.zeros(1).expand(80000, 20000)
    p = torch_file(tmp_path / "zero_stride.pt", {"weight_ih_l0": big, "weight_hh_l0": big})
    bf16 = torch.zeros(1, dtype=torch.bfloat16).expand(25000, 20000)
    bf = torch_file(tmp_path / "bf16.pt", {"w": bf16}, legacy=True)
    assert os.path.getsize(p) < 2000 and os.path.getsize(bf) < 1000
    read, conv, read_bf = attacks(
        [call("read_tensors", p), call("convert", p, source="torch_lstm"), call("read_tensors", bf)]
    )
    for r in (read, conv, read_bf):
        refused(r, "stride", "storage of 1 element")
        assert r["seconds"] < 5 and r["maxrss_mb"] < 500, r


def test_overlapping_strides_are_refused(tmp_path):
    """Stride (1, 1): an (n, n) view (n**2 elements, 40 GB) of a storage of 2n - 1 elements (800 KB)."""
    n = 100_000
    pid = _storage_pid("FloatStorage", "0", 2 * n - 1)
    p = torch_zip_with(
        tmp_path / "overlap.pt", {"w": _Rebuild(pid, 0, (n, n), (1, 1))}, {"0": bytes(4 * (2 * n - 1))}
    )
    refused(attack("convert", p, source="torchvision_vgg16"), "tensor w", "10000000000 elements")
    refused(attack("read_tensors", p, touch=True), "tensor w")


def test_small_expanded_tensors_still_read(tmp_path):
    """Broadcast constants (stride 0 over a few elements) are legitimate and stay readable."""
    t = torch.arange(3.0).expand(4, 3)
    p = torch_file(tmp_path / "expanded.pt", {"t": t, "bf": torch.ones(2, dtype=torch.bfloat16).expand(8, 2)})
    import weights_io

    out = weights_io.read_tensors(p)
    numpy.testing.assert_array_equal(out["t"], t.numpy())
    numpy.testing.assert_array_equal(out["bf"], numpy.ones((8, 2), "f4"))


def test_many_names_for_one_storage_are_bounded(tmp_path):
    """5000 names viewing one 128 KB bfloat16 storage would be widened to 1.3 GB: refused by the file's "
    "budget."""
    n = 65536
    pid = _storage_pid("BFloat16Storage", "0", n)
    sd = {f"w{i}": _Rebuild(pid, 0, (n,), (1,)) for i in range(5000)}
    p = torch_zip_with(tmp_path / "names.pt", sd, {"0": bytes(2 * n)})
    r = refused(attack("read_tensors", p), "bytes")
    assert r["maxrss_mb"] < 600, r


# =========================================================================== 2. shared references (DAGs)


def _list_dag(depth, leaf):
    x = [leaf] if leaf is not None else []
    for _ in range(depth):
        x = [x, x]
    return x


def test_pickle_dag_is_walked_once(tmp_path):
    """The list at depth k holds the list of depth k-1 twice: 2**40 paths from a 600-byte pickle."""
    with_leaf = torch_file(tmp_path / "dag.pt", _list_dag(40, torch.zeros(1)), legacy=True)
    empty = torch_file(tmp_path / "dag_empty.pt", {"x": _list_dag(40, None)})
    assert os.path.getsize(with_leaf) < 1000
    r_leaf, r_empty = attacks([call("read_tensors", with_leaf), call("read_tensors", empty)], timeout=30)
    refused(r_leaf, "names")
    assert r_empty["ok"] and r_empty["n"] == 0, r_empty
    for r in (r_leaf, r_empty):
        assert r["seconds"] < 5 and r["maxrss_mb"] < 600, r


def test_shared_subtrees_keep_every_name(tmp_path):
    """A legitimate shared sub-dict ({'model': sd, 'ema': sd}) still gives both sets of names."""
    import weights_io

    sd = {"w": torch.arange(4.0), "b": torch.ones(2, dtype=torch.bfloat16)}
    p = torch_file(tmp_path / "shared.pt", {"model": sd, "ema": sd, "small": _list_dag(3, torch.zeros(2))})
    out = weights_io.read_tensors(p)
    assert {"model.w", "model.b", "ema.w", "ema.b"} <= set(out)
    assert len([k for k in out if k.startswith("small.")]) == 8
    numpy.testing.assert_array_equal(out["ema.w"], numpy.arange(4.0, dtype="f4"))


def test_hdf5_dag_is_walked_once(tmp_path):
    """Groups holding two hard links to the previous group (48 KB): read_tensors and inspect return."""
    p = h5_dag(tmp_path / "dag.h5", 40)
    small = h5_dag(tmp_path / "small.h5", 3)
    empty = h5_dag(tmp_path / "empty.h5", 40, leaf=False)
    r, r_small, r_empty = attacks(
        [call("read_tensors", p), call("read_tensors", small), call("read_tensors", empty)], timeout=30
    )
    refused(r, "names")
    assert r_small["ok"] and r_small["n"] == 1 + 2 + 4 + 8, r_small
    assert r_empty["ok"] and r_empty["n"] == 0, r_empty
    for x in (r, r_empty):
        assert x["seconds"] < 5 and x["maxrss_mb"] < 600, x
    cli = run_cli(["inspect", str(p)], timeout=30)
    assert cli.returncode != 0 and "Traceback" not in cli.stderr and "names" in cli.stderr, cli


# =========================================================================== 3. HDF5 chunk amplification


def test_chunk_larger_than_its_share_is_refused(tmp_path):
    """One gzip chunk of 2**24 float32 zeros (64 KB compressed) for a dataset of shape (1,)."""
    p = h5_big_chunk(tmp_path / "big_chunk.h5", 1 << 24)
    r = refused(attack("read_tensors", p), "chunk")
    assert r["seconds"] < 5 and r["maxrss_mb"] < 300, r


def test_repeated_chunk_entries_are_refused(tmp_path):
    p = h5_repeated_chunk(tmp_path / "repeated.h5", 2000)
    refused(attack("read_tensors", p), "chunk", "more than once")


def test_chunks_shared_by_datasets_are_refused(tmp_path):
    """Datasets whose chunk indexes point at one stored chunk: each would inflate it again."""
    p = h5_shared_chunk(tmp_path / "shared.h5")
    with h5py.File(p) as f:  # valid for libhdf5: every dataset reads the shared chunk
        assert all(float(f[f"x{k}"][:].sum()) == 4.0 for k in range(50))
    refused(attack("read_tensors", p), "chunk", "shares bytes")


def test_chunked_datasets_still_read(tmp_path):
    """Edge chunks, resizable datasets with chunks larger than the data, shuffle + gzip: unchanged."""
    import weights_io

    a = numpy.arange(7 * 5, dtype="f8").reshape(7, 5)
    with h5py.File(tmp_path / "ok.h5", "w") as f:
        f.create_dataset("edge", data=a, chunks=(3, 2), compression="gzip", shuffle=True)
        f.create_dataset(
            "grow", data=numpy.arange(10, dtype="f4"), maxshape=(None,), chunks=(1024,), compression="gzip"
        )
        f.create_dataset("plain", data=a, chunks=(7, 5))
    out = weights_io.read_tensors(tmp_path / "ok.h5")
    numpy.testing.assert_array_equal(out["edge"], a)
    numpy.testing.assert_array_equal(out["grow"], numpy.arange(10, dtype="f4"))
    numpy.testing.assert_array_equal(out["plain"], a)


# =========================================================================== 4. converters in linear time


def _caffe_relu_chain(tmp_path, n):
    rng = numpy.random.default_rng(1)
    body = (
        _IP_HEAD
        + _ip()
        + "".join(f'layer {{ name: "relu{k}" type: "ReLU" bottom: "ip" top: "ip" }}\n' for k in range(n))
    )
    return caffe_files(tmp_path, body, {"ip": [rng.standard_normal((2, 3)), rng.standard_normal(2)]})


def test_long_chains_convert_in_linear_time(tmp_path):
    import weights_io

    onnx_p = onnx_relu_chain(tmp_path / "relu.onnx", 2000)
    model, proto = _caffe_relu_chain(tmp_path, 2000)
    r_onnx, r_caffe = attacks([call("convert", onnx_p), call("convert", model, prototxt=str(proto))])
    for r in (r_onnx, r_caffe):
        assert r["ok"] and r["n"] == 2, r
        assert r["seconds"] < 2.0, r  # 23-25 s before; ~0.1-0.3 s now
    params, meta = weights_io.convert(str(onnx_p), names="onnx")
    assert len(meta["architecture"]) == 2001


def test_many_clashing_names_convert_in_linear_time(tmp_path):
    """2000 ReLU nodes after one Gemm all want the name relu6 (and 'onnx' names all clash)."""
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h0"], transB=1, name="n")]
    nodes += [helper.make_node("Relu", [f"h{k}"], [f"h{k + 1}"], name="n") for k in range(2000)]
    inits = [
        numpy_helper.from_array(numpy.ones((2, 3), "f4"), "W"),
        numpy_helper.from_array(numpy.zeros(2, "f4"), "b"),
    ]
    p = onnx_model(tmp_path / "clash.onnx", nodes, inits)
    auto, named = attacks([call("convert", p), call("convert", p, names="onnx")])
    for r in (auto, named):
        assert r["ok"] and r["seconds"] < 2.0, r


# =========================================================================== 5. non-regular files


def _external_model(path, location):
    t = TensorProto()
    t.name, t.data_type = "W", TensorProto.FLOAT
    t.dims.extend([2, 3])
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)]
    return onnx_model(path, nodes, [t])


def test_non_regular_files_are_refused_before_opening(tmp_path):
    """A FIFO (open() would block forever), a directory, a character device."""
    os.mkfifo(tmp_path / "fifo.bin")
    (tmp_path / "folder").mkdir()
    os.symlink("/dev/zero", tmp_path / "zero.bin")
    os.mkfifo(tmp_path / "net.prototxt")
    calls = [
        call("read_tensors", _external_model(tmp_path / "fifo.onnx", "fifo.bin")),
        call("convert", tmp_path / "fifo.onnx"),
        call("read_tensors", _external_model(tmp_path / "dir.onnx", "folder")),
        call("read_tensors", tmp_path / "fifo.bin"),
        call("read_tensors", "/dev/zero"),
        call("convert", tmp_path / "fifo.onnx", source="caffe", prototxt=str(tmp_path / "net.prototxt")),
    ]
    reports = attacks(calls, timeout=30)
    for c, r in zip(calls, reports):
        refused(r, "not a regular file")
        assert r["seconds"] < 5, (c, r)


def test_external_data_symlink_to_a_device_is_refused(tmp_path):
    """A symlink inside the folder to /dev/zero: refused (it leaves the folder, and it is not a regular "
    "file)."""
    os.symlink("/dev/zero", tmp_path / "zero.bin")
    refused(attack("read_tensors", _external_model(tmp_path / "zero.onnx", "zero.bin"), timeout=30))


# ====================================================================== 6. hostile fields -> CheckpointError


def _conv_inits():
    return [numpy_helper.from_array(numpy.ones((2, 3, 1, 1), "f4"), "W")]


def _lstm_inits(H=2, D=3):
    return [
        numpy_helper.from_array(numpy.ones((1, 4 * H, D), "f4"), "W"),
        numpy_helper.from_array(numpy.ones((1, 4 * H, H), "f4"), "R"),
    ]


def _gemm():
    return helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1)


_GEMM_INITS = [
    numpy_helper.from_array(numpy.ones((2, 3), "f4"), "W"),
    numpy_helper.from_array(numpy.zeros(2, "f4"), "b"),
]
_IMG = (1, 3, 4, 4)


def _node(op, inputs=("h",), outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def _conv_then(op, **attrs):
    return [_node("Conv", ["x", "W"], ["h"]), _node(op, **attrs)]


def _conv(**attrs):
    return [_node("Conv", ["x", "W"], ["y"], **attrs)]


def _lstm(**attrs):
    return [_node("LSTM", ["x", "W", "R"], ["y"], **attrs)]


_SEQ = (1, 1, 3)
_RATIO = numpy_helper.from_array(numpy.zeros((0,), "f4"), "r")
_FLOAT_SHAPE = numpy_helper.from_array(numpy.array([1.5, numpy.nan], "f4"), "s")

# (case, nodes, initializers, graph input shape, fragments the message must hold)
ONNX_CASES = [
    ("node without outputs", [_gemm(), _node("Relu", outputs=())], _GEMM_INITS, (1, 3), ["Relu", "output"]),
    ("MaxPool without kernel_shape", _conv_then("MaxPool"), _conv_inits(), _IMG, ["MaxPool", "kernel_shape"]),
    ("LSTM hidden_size=[2]", _lstm(hidden_size=[2]), _lstm_inits(), _SEQ, ["hidden_size"]),
    ("Conv group as a string", _conv(group="two"), _conv_inits(), _IMG, ["group"]),
    ("Conv strides of one value", _conv(strides=[1]), _conv_inits(), _IMG, ["strides"]),
    ("Conv pads as floats", _conv(pads=[0.5, 0.5, 0.5, 0.5]), _conv_inits(), _IMG, ["pads"]),
    ("Conv huge kernel", _conv(kernel_shape=[2**40, 1]), _conv_inits(), _IMG, ["kernel_shape"]),
    ("LRN without size", _conv_then("LRN"), _conv_inits(), _IMG, ["LRN", "size"]),
    ("LSTM activations as an int", _lstm(activations=3), _lstm_inits(), _SEQ, ["activations"]),
    (
        "Gemm alpha as a string",
        [_node("Gemm", ["x", "W", "b"], ["y"], transB=1, alpha="one")],
        _GEMM_INITS,
        (1, 3),
        ["alpha"],
    ),
    ("Softmax axis as a list", [_gemm(), _node("Softmax", axis=[1, 2])], _GEMM_INITS, (1, 3), ["axis"]),
    (
        "Dropout with an empty ratio",
        [_gemm(), _node("Dropout", ["h", "r"])],
        _GEMM_INITS + [_RATIO],
        (1, 3),
        ["ratio"],
    ),
    (
        "Reshape to a float shape",
        [_node("Conv", ["x", "W"], ["h"]), _node("Reshape", ["h", "s"])],
        _conv_inits() + [_FLOAT_SHAPE],
        _IMG,
        ["shape"],
    ),
    (
        "Gemm weight of a string type",
        [_node("Gemm", ["x", "W"], ["y"], transB=1)],
        [helper.make_tensor("W", TensorProto.STRING, [1], [b"a"])],
        (1, 3),
        ["W"],
    ),
]


def test_hostile_onnx_fields(tmp_path):
    """Each case: a CheckpointError naming the file, the node and the field (one child runs them all)."""
    calls = []
    for k, (_case, nodes, inits, shape, _fragments) in enumerate(ONNX_CASES):
        p = onnx_model(tmp_path / f"m{k}.onnx", nodes, inits, in_shape=shape, out_name="y")
        calls.append(call("convert", p))
    for k, ((case, *_, fragments), r) in enumerate(zip(ONNX_CASES, attacks(calls))):
        assert r["type"] == "CheckpointError", (case, r)
        refused(r, f"m{k}.onnx", *fragments)


_LSTM_NET = (
    'input: "data" input_shape { dim: 1 dim: 3 } input: "clip" input_shape { dim: 1 dim: 1 }\n'
    'layer { name: "r" type: "Reshape" bottom: "data" top: "seq" '
    "reshape_param { shape { dim: 1 dim: 1 dim: 3 } } }\n"
)

# (case, prototxt, fragments)
PROTOTXT_CASES = [
    ("num_output a string", _IP_HEAD + _ip(num_output='"abc"'), ["num_output"]),
    ("num_output of 5000 digits", _IP_HEAD + _ip(num_output="9" * 5000), ["line 2"]),
    ("num_output beyond int64", _IP_HEAD + _ip(num_output=str(2**70)), ["num_output"]),
    ("num_output negative", _IP_HEAD + _ip(num_output="-2"), ["num_output"]),
    ("input as a message", "input: { dim: 1 }\n" + _ip(), ["input"]),
    ("input_dim a string", 'input: "data" input_dim: "x" input_dim: 3\n' + _ip(), ["input_dim"]),
    ("layer name a message", _IP_HEAD + _ip().replace('name: "ip"', "name { x: 1 }"), ["name"]),
    ("bottom a number", _IP_HEAD + _ip().replace('bottom: "data"', "bottom: 3"), ["bottom"]),
    (
        "pool a message",
        _IP_HEAD + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { '
        "pool { } kernel_size: 1 } }\n" + _ip(bottom="p"),
        ["pool"],
    ),
    (
        "kernel_size a float",
        _IP_HEAD.replace("dim: 3", "dim: 3 dim: 1 dim: 1")
        + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 1.5 } }\n'
        + _ip(bottom="p"),
        ["kernel_size"],
    ),
    (
        "dropout_ratio a string",
        _IP_HEAD + _ip() + 'layer { name: "d" type: "Dropout" bottom: "ip" top: "ip" '
        'dropout_param { dropout_ratio: "half" } }\n',
        ["dropout_ratio"],
    ),
    (
        "negative_slope an identifier",
        _IP_HEAD + _ip() + 'layer { name: "r" type: "ReLU" bottom: "ip" '
        'top: "ip" relu_param { negative_slope: LEAKY } }\n',
        ["negative_slope"],
    ),
    (
        "reshape dim a string",
        _IP_HEAD + 'layer { name: "r" type: "Reshape" bottom: "data" top: "s" '
        'reshape_param { shape { dim: "a" } } }\n' + _ip(bottom="s"),
        ["dim"],
    ),
    ("type a number (V2)", _IP_HEAD + _ip().replace('type: "InnerProduct"', "type: 7"), ["type"]),
    ("axis a message", _IP_HEAD + _ip().replace("num_output: 2", "num_output: 2 axis { }"), ["axis"]),
    (
        "bias_term a string",
        _IP_HEAD + _ip().replace("num_output: 2", 'num_output: 2 bias_term: "yes"'),
        ["bias_term"],
    ),
    (
        "LSTM num_output a string",
        _LSTM_NET + 'layer { name: "ip" type: "LSTM" bottom: "seq" bottom: "clip" '
        'top: "h" recurrent_param { num_output: "x" } }\n',
        ["num_output"],
    ),
]


def test_hostile_prototxt_fields(tmp_path):
    """Each case: a CheckpointError naming the prototxt, the layer (or line) and the field."""
    rng = numpy.random.default_rng(2)
    calls = []
    for k, (_case, text, _fragments) in enumerate(PROTOTXT_CASES):
        d = tmp_path / f"c{k}"
        d.mkdir()
        model, proto = caffe_files(d, text, {"ip": [rng.standard_normal((2, 3)), rng.standard_normal(2)]})
        calls.append(call("convert", model, prototxt=str(proto)))
    for (case, _text, fragments), r in zip(PROTOTXT_CASES, attacks(calls)):
        assert r["type"] == "CheckpointError", (case, r)
        refused(r, "net.prototxt", *fragments)


# ====================================================================== 9. a pickle cannot edit the loader


def _u(text):
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


_SET_DEFAULTS = b"\x80\x02ctorch\nSize\nN}" + _u("__defaults__") + b"K\x07K\x07\x86\x85s\x86b0}."
_SET_DICT = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}" + _u("evil") + b"K\x01sb0}."
_SET_KWDEFAULTS = (
    b"\x80\x02ctorch._utils\n_rebuild_parameter\nN}"
    + _u("__kwdefaults__")
    + b"}"
    + _u("x")
    + b"K\x01s"
    + b"s\x86b0}."
)
_SET_CODE = b"\x80\x02c_codecs\nencode\nN}" + _u("__code__") + b"Ns\x86b0}."
_SET_CLASS_ATTR = b"\x80\x02ccollections\nOrderedDict\nN}" + _u("keys") + b"Ns\x86b0}."
_SET_STORAGE_TYPE = b"\x80\x02ctorch\nFloatStorage\nN}" + _u("name") + b"X\x01\x00\x00\x00xs\x86b0}."
_SET_DEVICE_DICT = b"\x80\x02ctorch\ndevice\n}" + _u("__globals__") + b"}sb0}."

BUILD_CASES = {
    "torch.Size __defaults__": _SET_DEFAULTS,
    "_rebuild_tensor_v2 __dict__": _SET_DICT,
    "_rebuild_parameter __kwdefaults__": _SET_KWDEFAULTS,
    "_codecs.encode __code__": _SET_CODE,
    "OrderedDict class attribute": _SET_CLASS_ATTR,
    "storage type": _SET_STORAGE_TYPE,
    "torch.device __dict__": _SET_DEVICE_DICT,
}


def test_build_cannot_modify_allowlisted_callables(tmp_path):
    """BUILD on an allow-listed global (not an object the loader made) is refused and changes nothing."""
    calls = []
    for k, pkl in enumerate(BUILD_CASES.values()):
        p = torch_zip_raw(tmp_path / f"build{k}.pt", pkl)
        calls.append(call("read_tensors", p))
        calls.append(call("read_tensors", p))  # a second load sees the same, unchanged loader
    for case, r in zip([c for c in BUILD_CASES for _ in (0, 1)], attacks(calls)):
        assert r["unchanged"], (case, r)
        refused(r, "build")


def test_build_on_objects_the_loader_made_still_works(tmp_path):
    """state_dict()'s OrderedDict carries ``_metadata`` set by BUILD: still read, in both layouts."""
    import weights_io

    sd = torch.nn.Linear(3, 2).state_dict()
    assert hasattr(sd, "_metadata")
    for legacy in (False, True):
        out = weights_io.read_tensors(torch_file(tmp_path / f"sd{legacy}.pt", sd, legacy=legacy))
        assert sorted(out) == ["bias", "weight"]


# =========================================================================== zip members sharing their data


def _local_header(name, crc, csize, usize):
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, csize, usize, len(name), 0) + name


def _central_entry(name, crc, csize, usize, offset):
    fields = (0x02014B50, 20, 20, 0, 8, 0, 0, crc, csize, usize, len(name), 0, 0, 0, 0, 0, offset)
    return struct.pack("<IHHHHHHIIIHHHHHII", *fields) + name


def zip_overlap(path, payload):
    """Two members whose deflate data overlap (D. Fifield's "overlapping files" zip bomb, two files deep).

    Member ``b`` is a deflate stream of ``payload``; member ``a`` starts earlier:
    a stored deflate block quoting ``b``'s local header, then ``b``'s stream. Both
    are valid; every further member could reuse the same compressed kernel.
    """
    kernel = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = kernel.compress(payload) + kernel.flush()
    b_name, a_name = b"b.npy", b"a.npy"
    b_crc = zlib.crc32(payload)
    b_head = _local_header(b_name, b_crc, len(kernel), len(payload))
    # a stored deflate block (not the final one) whose content is b's local header
    quoted = b"\x00" + struct.pack("<HH", len(b_head), 0xFFFF ^ len(b_head)) + b_head
    a_out = b_head + payload
    a_head = _local_header(a_name, zlib.crc32(a_out), len(quoted) + len(kernel), len(a_out))
    body = a_head + quoted + kernel
    b_offset = len(a_head) + 5
    cd = _central_entry(b_name, b_crc, len(kernel), len(payload), b_offset) + _central_entry(
        a_name, zlib.crc32(a_out), len(quoted) + len(kernel), len(a_out), 0
    )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(cd), len(body), 0)
    path.write_bytes(body + cd + end)
    return path


def test_zip_members_sharing_data_are_refused(tmp_path):
    """Zip members whose compressed data overlap: each compressed byte may be inflated once."""
    p = zip_overlap(tmp_path / "overlap.npz", _npy_bytes(numpy.zeros(250_000, "f4")))
    with zipfile.ZipFile(p) as z:  # a valid archive: both members inflate
        assert len(z.read("a.npy")) > len(z.read("b.npy")) > 1_000_000
    refused(attack("read_tensors", p), "share")


def _npy_bytes(a):
    f = io.BytesIO()
    numpy.save(f, a)
    return f.getvalue()
