"""The canonical .npz + JSON sidecar: round trip, provenance, and tamper detection."""

import hashlib
import json
import os
import pathlib

import numpy
import pytest

from weights_io import CheckpointError, convert, load_canonical, save_canonical, sidecar_path

torch = pytest.importorskip("torch")

SEED = 0xCA7


@pytest.fixture
def converted(tmp_path):
    torch.manual_seed(SEED)
    src = tmp_path / "lstm.pt"
    torch.save(torch.nn.LSTM(4, 3).state_dict(), src)
    return src, convert(src)


def test_round_trip_and_provenance(tmp_path, converted):
    src, (params, meta) = converted
    out = tmp_path / "lstm_canonical.npz"
    save_canonical(out, params, meta)
    assert os.path.exists(sidecar_path(out)) and sidecar_path(out).endswith("lstm_canonical.json")
    side = json.loads(pathlib.Path(sidecar_path(out)).read_text())
    assert (
        side["format"] == "ebr_ref-canonical"
        and side["kind"] == "weights"
        and side["gate_order"] == "i,f,o,g"
    )
    assert side["meta"]["source"]["file"] == "lstm.pt" and side["meta"]["source"]["format"] == "torch"
    assert side["meta"]["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert side["meta"]["gate_order"] == "ifog" and side["meta"]["source_gate_order"] == "ifgo"
    assert side["meta"]["architecture"] == meta["architecture"]
    assert side["params"]["lstm1.W_x"] == {"shape": [12, 4], "dtype": "<f4"}
    p2, m2 = load_canonical(out)
    assert sorted(p2) == sorted(params)
    for k in params:
        numpy.testing.assert_array_equal(p2[k], params[k])
        assert p2[k].dtype == params[k].dtype and not p2[k].flags.writeable
    assert {k: v for k, v in m2.items() if k != "canonical"} == json.loads(json.dumps(meta))
    p3, m3 = convert(out)  # detected as canonical through its sidecar
    assert (
        m3["canonical"]["params_sha256"]
        == side["params_sha256"]
        == hashlib.sha256(out.read_bytes()).hexdigest()
    )


def test_tampering_is_detected(tmp_path, converted):
    _, (params, meta) = converted
    out = tmp_path / "m.npz"
    save_canonical(out, params, meta)
    good = out.read_bytes()
    numpy.savez(out, **{k: v + 1 for k, v in params.items()})
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_canonical(out)
    numpy.savez(out, **dict(params, extra=numpy.zeros(2)))
    with pytest.raises(CheckpointError, match="extra"):
        load_canonical(out, verify=False)
    out.write_bytes(good)
    side = json.loads(pathlib.Path(sidecar_path(out)).read_text())
    side["meta"]["architecture"][0]["hidden"] = 4
    pathlib.Path(sidecar_path(out)).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"lstm1\.W_x"):
        load_canonical(out)
    side["format"] = "something else"
    pathlib.Path(sidecar_path(out)).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="not an ebr_ref-canonical sidecar"):
        load_canonical(out)
    os.unlink(sidecar_path(out))
    with pytest.raises(CheckpointError, match=r"lstm.*\.json does not exist|m\.json does not exist"):
        load_canonical(out)


def test_save_rejects_bad_input(tmp_path, converted):
    _, (params, meta) = converted
    with pytest.raises(ValueError, match=".npz"):
        save_canonical(tmp_path / "x.bin", params, meta)
    with pytest.raises(ValueError, match="JSON"):
        save_canonical(tmp_path / "x.npz", params, dict(meta, bad=object()))
    save_canonical(tmp_path / "y.npz", params, dict(meta, n=numpy.int64(3), f=numpy.float32(0.5)))
    assert load_canonical(tmp_path / "y.npz")[1]["n"] == 3
