"""PyTorch checkpoints: the restricted unpickler's security, torchvision VGG16 and nn.LSTM converters.

Oracles: torch itself (torchvision's VGG forward, nn.LSTM's output), against a
torch.functional forward of the converted layer specs and a NumPy LSTM in the
canonical gate order (tests/oracles/weights_io_ref.py).
"""

import io
import pickle
import struct
import zipfile

import numpy
import pytest

import weights_io
from tests.oracles.weights_io_ref import lstm_ref, torch_spec_forward
from weights_io import CheckpointError, convert, read_tensors

torch = pytest.importorskip("torch")

SEED = 0x7042C4


# --------------------------------------------------------------------------- security


class _Evil:
    """Pickles to a call of ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker):
    import os
    import subprocess

    cmd = f"touch {marker}"
    return {
        "os.system": pickle.dumps({"w": _Evil(os.system, (cmd,))}, protocol=2),
        "builtins.eval": pickle.dumps(_Evil(eval, (f"__import__('os').system({cmd!r})",)), protocol=2),
        "builtins.exec": pickle.dumps(_Evil(exec, (f"open({str(marker)!r}, 'w')",)), protocol=2),
        "subprocess": pickle.dumps(_Evil(subprocess.call, (["touch", str(marker)],)), protocol=2),
        "INST opcode": b"(S'" + cmd.encode() + b"'\nios\nsystem\n.",
        "getattr chain": _getattr_chain(cmd),
        "nn.Module class": pickle.dumps(torch.nn.Linear(2, 2), protocol=2),
        "numpy reconstruct": pickle.dumps(numpy.zeros(2), protocol=2),
        "copyreg": pickle.dumps(_Plain(), protocol=2),
        "protocol 4": pickle.dumps({"w": _Evil(os.system, (cmd,))}, protocol=4),
    }


class _Plain:
    pass


def _getattr_chain(cmd):
    """builtins.getattr(builtins.__import__('os'), 'system')(cmd), in raw opcodes."""

    def u(text):
        b = text.encode()
        return b"X" + struct.pack("<I", len(b)) + b

    return (
        b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\n"
        + u("os")
        + b"\x85R"
        + u("system")
        + b"\x86R"
        + u(cmd)
        + b"\x85R."
    )


def _torch_zip_with(pkl: bytes) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return b.getvalue()


def _torch_legacy_with(pkl: bytes) -> bytes:
    head = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    return head + pkl + pickle.dumps([], protocol=2)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_malicious_pickles_are_refused_and_nothing_executes(tmp_path, layout):
    marker = tmp_path / "pwned"
    for name, pkl in _payloads(marker).items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        path.write_bytes(_torch_zip_with(pkl) if layout == "zip" else _torch_legacy_with(pkl))
        with pytest.raises(CheckpointError) as e:
            read_tensors(path)
        assert "refused" in str(e.value) or "malformed" in str(e.value), (name, str(e.value))
        assert str(path) in str(e.value)
        assert not marker.exists(), f"payload {name!r} executed"


def test_refusal_names_the_global(tmp_path):
    import os

    path = tmp_path / "x.pt"
    path.write_bytes(_torch_zip_with(pickle.dumps(_Evil(os.system, ("true",)), protocol=2)))
    with pytest.raises(CheckpointError, match=r"refused to load the pickled global '(posix|os)\.system'"):
        read_tensors(path)


def _storage_pickle(size, stride, offset=0, numel=4):
    """data.pkl for one float tensor with a given view (handwritten, as torch writes it)."""

    class StorageRef:
        def __reduce__(self):
            return (
                torch._utils._rebuild_tensor_v2,
                (("storage", torch.FloatStorage, "0", "cpu", numel), offset, size, stride, False, {}),
            )

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj and obj[0] == "storage":
                return obj
            return None

    b = io.BytesIO()
    P(b, protocol=2).dump({"t": StorageRef()})
    return b.getvalue()


def test_out_of_bounds_views_and_short_storages(tmp_path):
    data = numpy.arange(4, dtype="<f4").tobytes()

    def write(pkl, storage=data):
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w") as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/data/0", storage)
        p = tmp_path / "v.pt"
        p.write_bytes(b.getvalue())
        return p

    ok = write(_storage_pickle((2, 2), (2, 1)))
    numpy.testing.assert_array_equal(read_tensors(ok)["t"], [[0, 1], [2, 3]])
    with pytest.raises(CheckpointError, match="reaches element"):
        read_tensors(write(_storage_pickle((2, 2), (1000, 1))))
    with pytest.raises(CheckpointError, match="reaches element"):
        read_tensors(write(_storage_pickle((3,), (1,), offset=2)))
    with pytest.raises(CheckpointError, match="negative"):
        read_tensors(write(_storage_pickle((2,), (-1,))))
    with pytest.raises(CheckpointError, match="need 16 bytes, the record has 8"):
        read_tensors(write(_storage_pickle((2,), (1,)), storage=data[:8]))


def test_huge_claimed_sizes_do_not_allocate(tmp_path):
    # BINBYTES8 claiming 2**40 bytes, and a memo index of 2**31: refused before the unpickler runs
    bomb = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc"
    memo = b"\x80\x02K\x01r" + struct.pack("<I", 2**31) + b"."
    for pkl in (bomb, memo):
        p = tmp_path / "b.pt"
        p.write_bytes(_torch_zip_with(pkl))
        with pytest.raises(CheckpointError, match="malformed|memo index"):
            read_tensors(p)
    # a legacy storage whose header claims more elements than the tensor data says
    sd = {"w": torch.ones(3)}
    p = tmp_path / "l.pt"
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    raw = bytearray(p.read_bytes())
    pos = raw.rfind(struct.pack("<q", 3))
    raw[pos : pos + 8] = struct.pack("<q", 2**50)
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="header says"):
        read_tensors(p)


# --------------------------------------------------------------------------- torchvision VGG16


def _small_vgg(num_classes=5, dtype=torch.float32):
    from torchvision.models.vgg import VGG, make_layers

    torch.manual_seed(SEED)
    cfg = [3, 3, "M", 4, 4, "M", 4, 5, 5, "M", 5, 5, 6, "M", 6, 6, 6, "M"]
    m = VGG(make_layers(cfg), num_classes=num_classes, init_weights=False)
    m.classifier[0] = torch.nn.Linear(6 * 49, 12)
    m.classifier[3] = torch.nn.Linear(12, 10)
    m.classifier[6] = torch.nn.Linear(10, num_classes)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m.to(dtype).eval()


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_torchvision_vgg16_params_and_forward(tmp_path, fmt):
    pytest.importorskip("torchvision")
    model = _small_vgg(dtype=torch.float64)
    sd = model.state_dict()
    path = tmp_path / "vgg.pth"
    if fmt == "safetensors":
        st = pytest.importorskip("safetensors.numpy")
        path = tmp_path / "vgg.safetensors"
        st.save_file({k: v.numpy() for k, v in sd.items()}, str(path))
    else:
        torch.save(
            {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 9},
            path,
            _use_new_zipfile_serialization=fmt == "zip",
        )
    params, meta = convert(path)
    assert meta["source"]["converter"] == "torchvision_vgg16"
    assert meta["pool_rounding"] == "floor" and meta["preprocessing"]["name"] == "torchvision"
    assert meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    names = {
        "conv1_1": 0,
        "conv1_2": 2,
        "conv2_1": 5,
        "conv2_2": 7,
        "conv3_1": 10,
        "conv3_2": 12,
        "conv3_3": 14,
        "conv4_1": 17,
        "conv4_2": 19,
        "conv4_3": 21,
        "conv5_1": 24,
        "conv5_2": 26,
        "conv5_3": 28,
    }
    for c, i in names.items():
        numpy.testing.assert_array_equal(params[f"{c}.weight"], sd[f"features.{i}.weight"].numpy())
    for c, i in (("fc6", 0), ("fc7", 3), ("fc8", 6)):
        numpy.testing.assert_array_equal(params[f"{c}.bias"], sd[f"classifier.{i}.bias"].numpy())
    assert all(p.flags.c_contiguous and p.flags.writeable for p in params.values())
    x = numpy.random.default_rng(SEED).standard_normal((2, 3, 224, 224))
    got, _ = torch_spec_forward(meta["architecture"], params, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert numpy.linalg.norm(got - ref) <= 1e-10 * numpy.linalg.norm(ref)


def test_torchvision_vgg16_errors_name_the_tensor(tmp_path):
    pytest.importorskip("torchvision")
    sd = _small_vgg().state_dict()
    p = tmp_path / "a.pth"
    bad = dict(sd)
    del bad["features.12.weight"]
    torch.save(bad, p)
    with pytest.raises(CheckpointError, match=r"features\.12\.weight"):
        convert(p, source="torchvision_vgg16")
    bad = dict(sd)
    bad["classifier.3.weight"] = torch.zeros(10, 13)
    torch.save(bad, p)
    with pytest.raises(
        CheckpointError,
        match=r"classifier\.3\.weight \(for fc7\.weight\): expected shape \(10, 12\), found \(10, 13\)",
    ):
        convert(p, source="torchvision_vgg16")
    bad = dict(sd)
    bad["features.1.running_mean"] = torch.zeros(3)
    torch.save(bad, p)
    with pytest.raises(CheckpointError, match="vgg16_bn"):
        convert(p, source="torchvision_vgg16")
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="pool5"):
        convert(p, source="torchvision_vgg16", input_size=128)


@pytest.mark.parametrize(
    "size,kernel", [(224, None), (255, None), (448, [2, 2]), ((448, 224), [2, 1]), (672, [3, 3])]
)
def test_torchvision_vgg16_adaptive_avgpool(tmp_path, size, kernel):
    """AdaptiveAvgPool2d((7, 7)) on a 7k x 7k pool5 map is an average pooling with kernel = stride = k (no
    layer for k = 1); the converted model then equals torchvision's forward at that size (float64, 1e-12)."""
    pytest.importorskip("torchvision")
    from ebr_ref.models import from_spec

    net = _small_vgg(dtype=torch.float64)
    path = tmp_path / "vgg.pth"
    torch.save(net.state_dict(), path)
    params, meta = convert(path, input_size=size)
    names = [L["name"] for L in meta["architecture"]]
    pools = [L for L in meta["architecture"] if L["name"] == "avgpool"]
    if kernel is None:
        assert not pools
    else:
        assert names[names.index("pool5") + 1] == "avgpool"
        assert pools[0]["kernel"] == kernel and pools[0]["stride"] == kernel and pools[0]["count_include_pad"]
    h, w = (size, size) if isinstance(size, int) else size
    x = numpy.random.default_rng(SEED).standard_normal((1, 3, h, w))
    model = from_spec(meta["architecture"], params, meta)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = model.logits(x)
    assert numpy.linalg.norm(got - want) <= 1e-12 * numpy.linalg.norm(want)


@pytest.mark.parametrize("size", [32, 128, 256, 300, 447, 480])
def test_torchvision_vgg16_unsupported_sizes_are_named(tmp_path, size):
    net = _small_vgg()
    path = tmp_path / "vgg.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"pool5 map.*224\.\.255, 448\.\.479, 672\.\.703"):
        convert(path, input_size=size)


# --------------------------------------------------------------------------- nn.LSTM


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_lstm_matches_nn_lstm(tmp_path, dtype):
    torch.manual_seed(SEED)
    T, N, D, H = 7, 3, 5, 4
    lstm = torch.nn.LSTM(D, H, num_layers=2).to(dtype)
    path = tmp_path / "lstm.pt"
    torch.save({"model": {f"rnn.{k}": v for k, v in lstm.state_dict().items()}}, path)
    params, meta = convert(path)
    assert meta["source"]["converter"] == "torch_lstm"
    assert meta["source_gate_order"] == "ifgo" and meta["gate_order"] == "ifog" and meta["cell_act"] == "tanh"
    assert [L["name"] for L in meta["architecture"]] == ["lstm1", "lstm2"]
    assert params["lstm1.W_x"].dtype == numpy.dtype(str(dtype).replace("torch.", ""))
    x = torch.randn(T, N, D, dtype=dtype)
    with torch.no_grad():
        ref = lstm(x)[0].double().numpy()
    h = x.double().numpy()
    for L in ("lstm1", "lstm2"):
        h = lstm_ref(h, *(params[f"{L}.{f}"].astype("f8") for f in ("W_x", "b", "W_h")), cell_act="tanh")
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert numpy.linalg.norm(h - ref) <= tol * numpy.linalg.norm(ref)


def test_torch_lstm_cell_and_no_bias(tmp_path):
    torch.manual_seed(SEED)
    cell = torch.nn.LSTMCell(3, 2).double()
    p = tmp_path / "cell.pt"
    torch.save(cell.state_dict(), p)
    params, _ = convert(p, source="torch_lstm")
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        h_ref, _ = cell(x)
    h = lstm_ref(x.numpy()[None], params["lstm1.W_x"], params["lstm1.b"], params["lstm1.W_h"])[0]
    numpy.testing.assert_allclose(h, h_ref.numpy(), rtol=1e-12, atol=1e-12)
    nb = torch.nn.LSTM(3, 2, bias=False)
    torch.save(nb.state_dict(), p)
    params, meta = convert(p, source="torch_lstm")
    numpy.testing.assert_array_equal(params["lstm1.b"], numpy.zeros(8, "f4"))


def test_torch_lstm_refusals(tmp_path):
    p = tmp_path / "l.pt"
    torch.save(torch.nn.LSTM(3, 2, bidirectional=True).state_dict(), p)
    with pytest.raises(CheckpointError, match="bidirectional"):
        convert(p, source="torch_lstm")
    torch.save(torch.nn.LSTM(3, 4, proj_size=2).state_dict(), p)
    with pytest.raises(CheckpointError, match="projection"):
        convert(p, source="torch_lstm")
    torch.save({"fc.weight": torch.zeros(2, 2)}, p)
    with pytest.raises(CheckpointError, match="cannot tell"):
        convert(p)
    # a prefix with no input weights under it (found by the fuzz test: was a TypeError deep inside)
    from weights_io.convert_torch import convert_torch_lstm

    torch.save({"fc.weight": torch.zeros(2, 2), "lstm.weight_hh_l0": torch.zeros(8, 2)}, p)
    for prefix in ("fc.", "lstm."):
        with pytest.raises(CheckpointError, match="no LSTM weights"):
            convert_torch_lstm(p, prefix=prefix)


def test_gate_block_tables():
    assert weights_io.GATE_ORDER == "ifog"
    assert weights_io.gate_blocks("ifgo") == [0, 1, 3, 2]
    assert weights_io.gate_blocks("ifco") == [0, 1, 3, 2]
    assert weights_io.gate_blocks("iofc") == [0, 2, 1, 3]
    assert weights_io.gate_blocks("ifog") == [0, 1, 2, 3]


def _rewrite_zip(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)


def test_big_endian_and_old_zip_without_byteorder(tmp_path):
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "i": torch.arange(5, dtype=torch.int64)}
    src = tmp_path / "le.pt"
    torch.save(sd, src)

    def to_big(name, data):
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name and not name.endswith("serialization_id"):
            item = 4 if len(data) == 24 else 8  # w: 6 float32 (24 bytes), i: 5 int64 (40 bytes)
            return numpy.frombuffer(data, f"<u{item}").byteswap().tobytes()
        return data

    _rewrite_zip(src, tmp_path / "be.pt", to_big)
    got = read_tensors(tmp_path / "be.pt")
    numpy.testing.assert_array_equal(got["w"], sd["w"].numpy())
    numpy.testing.assert_array_equal(got["i"], sd["i"].numpy())
    assert got["w"].dtype.byteorder == ">"
    from weights_io._common import param

    native = param(got["w"])  # converters copy into native byte order
    assert native.dtype == numpy.float32 and native.dtype.isnative
    numpy.testing.assert_array_equal(native, sd["w"].numpy())
    _rewrite_zip(src, tmp_path / "old.pt", lambda n, d: None if n.endswith("/byteorder") else d)
    numpy.testing.assert_array_equal(read_tensors(tmp_path / "old.pt")["w"], sd["w"].numpy())
