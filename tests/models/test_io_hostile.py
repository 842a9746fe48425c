"""The canonical format's reader and writer against hostile and broken files, and non-finite parameters.

Each crafted file is tiny; each read of one runs in a child process under a
memory limit and a timeout (tests/hostile_files.py) and must end in
:class:`~ebr_ref.models.io.ModelFileError` naming the file and the member --
never a MemoryError, NotImplementedError, EOFError or a hang. The commit
protocol of :func:`~ebr_ref.models.io.write_canonical` is checked state by
state (each intermediate state a killed writer can leave is built by hand);
tests/cli/test_cli_atomic.py kills real writers.
"""

import json
import os
import subprocess
import sys
import zipfile

import numpy
import pytest

from ebr_ref.models import load_model, save_model, sequential
from ebr_ref.models.io import (
    ModelFileError,
    NonFiniteError,
    _pending_path,
    check_finite,
    read_canonical,
    read_npy,
    read_npz,
    read_sidecar,
    sidecar_path,
    stale_temporaries,
    write_canonical,
)
from ebr_ref.tools.compare import read_theirs
from tests.hostile_files import (
    npy_bytes,
    patch_central_directory,
    reseal,
    run_python,
    write_zip,
)

LAYERS = [
    ("conv1", "conv", {"out_channels": 2, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("flatten", "flatten"),
    ("fc8", "fc", {"out_features": 3}),
]


def _model(seed=1):
    return sequential(LAYERS, (3, 4, 4), seed=seed, meta={"name": f"tiny{seed}"})


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.npz"
    save_model(_model(), path)
    return path


_CHILD = (
    "import json, sys\n"
    "from ebr_ref.models.io import load_model, read_npz, read_npy\n"
    "from ebr_ref.tools.compare import read_theirs\n"
    "fn = {'load_model': load_model, 'read_npz': read_npz, 'read_npy': read_npy,\n"
    "      'read_theirs': read_theirs}\n"
    "for name, path in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        fn[name](path)\n"
    "        res = {'type': None}\n"
    "    except BaseException as e:\n"
    "        res = {'type': type(e).__name__, 'msg': str(e)}\n"
    "    print(json.dumps(res), flush=True)\n"
)


def attack(*calls, limit=768 << 20):
    """Run ``(function name, path)`` calls in one memory-limited child; one ``{type, msg}`` per call."""
    r = run_python(_CHILD, json.dumps([(fn, str(p)) for fn, p in calls]), limit=limit, timeout=60)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == len(calls), r.stderr[-3000:]
    return [json.loads(x) for x in lines]


def refused(res, *needles):
    assert res["type"] == "ModelFileError", res
    assert "\n" not in res["msg"]
    for n in needles:
        assert n in res["msg"], (n, res["msg"])


# ---- class 7: headers that lie, corrupt archives --------------------------------------------------------
def test_a_header_claiming_1e12_floats_is_refused_before_any_allocation(saved):
    from tests.hostile_files import replace_member

    m = _model()
    claim = (1_000_000, 1_000_000)  # 10^12 float64: 8 TB
    replace_member(saved, "fc8.bias.npy", npy_bytes(claim, data=m.params["fc8.bias"].tobytes()))
    side = json.loads(_text(sidecar_path(saved)))
    params = dict(side["params"], **{"fc8.bias": {"shape": list(claim), "dtype": "<f8"}})
    reseal(saved)  # only the sha256: the sidecar's shapes disagree with the header
    (res,) = attack(("load_model", saved))
    refused(res, "m.npz", "member fc8.bias.npy", "1000000")
    reseal(saved, params=params)  # sha256 and shapes both updated to match the lie
    a, b = attack(("load_model", saved), ("read_npz", saved))
    refused(a, "m.npz", "member fc8.bias.npy", "8000000000000 bytes", "holds 24 bytes")
    refused(b, "member fc8.bias.npy", "8000000000000 bytes")


def test_deflated_members_cannot_claim_more_than_deflate_expands_to(tmp_path):
    p = write_zip(
        tmp_path / "d.npz", {"x.npy": npy_bytes((4,), data=b"\0" * 32)}, compression=zipfile.ZIP_DEFLATED
    )
    assert read_npz(p)["x"].tolist() == [0.0] * 4
    patch_central_directory(p, "x.npy", file_size=4_000_000_000)
    (res,) = attack(("read_npz", p))
    refused(res, "member x.npy", "more than deflate can expand to")


@pytest.mark.parametrize(
    "corrupt, needle",
    [
        (lambda p: patch_central_directory(p, "x.npy", method=99), "compression method 99 is not supported"),
        (lambda p: patch_central_directory(p, "x.npy", method=12), "compression method 12 is not supported"),
        (lambda p: patch_central_directory(p, "x.npy", file_size=10), "member x.npy"),
        (lambda p: os.truncate(p, os.path.getsize(p) - 30), "not a readable .npz archive"),
        (lambda p: os.truncate(p, 60), "not a readable .npz archive"),
    ],
    ids=["method-99", "bzip2", "size-lie", "truncated-directory", "truncated-data"],
)
def test_a_corrupt_zip_directory_is_one_clear_error(tmp_path, corrupt, needle):
    p = write_zip(
        tmp_path / "c.npz",
        {"x.npy": npy_bytes((4,), data=b"\0" * 32), "y.npy": npy_bytes((1,), data=b"\0" * 8)},
    )
    corrupt(str(p))
    (res,) = attack(("read_npz", p))
    refused(res, "c.npz", needle)


def test_object_dtypes_duplicates_and_foreign_members_are_refused(tmp_path):
    obj = write_zip(tmp_path / "o.npz", {"x.npy": npy_bytes((1,), descr="|O", data=b"\x80\x04N.")})
    odd = write_zip(tmp_path / "n.npz", {"x.txt": b"hello"})
    with zipfile.ZipFile(tmp_path / "dup.npz", "w") as zf:
        with pytest.warns(UserWarning, match="Duplicate name"):
            for _ in range(2):
                zf.writestr("x.npy", npy_bytes((1,), data=b"\0" * 8))
    version3 = npy_bytes((1,), data=b"\0" * 8).replace(b"\x01\x00", b"\x03\x00", 1)
    v3 = write_zip(tmp_path / "v3.npz", {"x.npy": version3})
    a, b, c, d = attack(*(("read_npz", p) for p in (obj, odd, tmp_path / "dup.npz", v3)))
    refused(a, "member x.npy", "object dtype")
    refused(b, "member x.txt", "not an .npy member")
    refused(c, "member x.npy", "appears twice")
    refused(d, "member x.npy")


def test_results_and_clip_files_go_through_the_same_checks(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("maps: 1 2 3\n")
    single = tmp_path / "single.npz"
    numpy.save(tmp_path / "single.npy", numpy.zeros(3))
    os.replace(tmp_path / "single.npy", single)
    lie = tmp_path / "clip.npy"
    lie.write_bytes(npy_bytes((10**6, 10**6), data=b"\0" * 64))
    good = tmp_path / "good.npy"
    numpy.save(good, numpy.arange(6.0).reshape(2, 3).T)  # Fortran order on disk
    a, b, c = attack(("read_theirs", text), ("read_theirs", single), ("read_npy", lie))
    refused(a, "notes.npz", "not a results file")
    assert "pickle" not in a["msg"]
    refused(b, "single.npz", "a single .npy array, not a results file")
    refused(c, "clip.npy", "holds 64 bytes")
    numpy.testing.assert_array_equal(read_npy(good), numpy.arange(6.0).reshape(2, 3).T)
    z = tmp_path / "r.npz"
    numpy.savez(z, maps=numpy.ones((2, 2)), method=numpy.str_("cEB-R"))
    assert read_theirs(z)["method"] == "cEB-R"


def test_sidecar_nesting_and_size_are_bounded(saved):
    side = sidecar_path(saved)
    doc = json.loads(_text(side))
    _write(side, json.dumps(doc)[:-1] + ', "x": ' + "[" * 20000 + "]" * 20000 + "}")
    with pytest.raises(ModelFileError, match="nested deeper"):
        read_sidecar(saved)
    os.unlink(side)
    os.mkdir(side)
    with pytest.raises(ModelFileError, match="not a file"):
        load_model(saved)


# ---- class 10: non-finite parameters --------------------------------------------------------------------
def test_non_finite_parameters_are_refused_when_written_and_read(tmp_path):
    m = _model()
    bad = {k: v.copy() for k, v in m.params.items()}
    bad["fc8.bias"][1] = numpy.nan
    bad["conv1.weight"][0, 0, 0, :2] = numpy.inf
    with pytest.raises(NonFiniteError, match=r"conv1.weight \(2 values\), fc8.bias \(1 value\)"):
        check_finite(bad, "here")
    broken = sequential(LAYERS, (3, 4, 4), params=bad)
    with pytest.raises(NonFiniteError, match="fc8.bias"):
        save_model(broken, tmp_path / "b.npz")
    assert not os.listdir(tmp_path)  # nothing written, no temporaries
    save_model(broken, tmp_path / "b.npz", allow_nonfinite=True)  # the explicit opt-out
    with pytest.raises(NonFiniteError, match=r"b.npz: non-finite parameters .*conv1.weight .*fc8.bias"):
        load_model(tmp_path / "b.npz")
    with pytest.raises(NonFiniteError, match="fc8.bias"):
        read_canonical(tmp_path / "b.npz")
    back = load_model(tmp_path / "b.npz", allow_nonfinite=True)
    assert numpy.isnan(back.params["fc8.bias"][1]) and numpy.isposinf(back.params["conv1.weight"][0, 0, 0, 0])


def test_non_finite_captioner_is_refused(tmp_path):
    from ebr_ref.models.caption import load_captioner, save_captioner, small_captioner

    m = small_captioner(["a", "red"], input_size=16, channels=(2, 2, 2), fc=4, embed=3, hidden=(3, 3), seed=3)
    m.params["predict.bias"] = m.params["predict.bias"].copy()
    m.params["predict.bias"][0] = -numpy.inf
    with pytest.raises(NonFiniteError, match="predict.bias"):
        save_captioner(m, tmp_path / "c.npz")
    write_canonical(tmp_path / "c.npz", m.params, {"kind": "captioner"}, allow_nonfinite=True)
    with pytest.raises(NonFiniteError, match="predict.bias"):
        load_captioner(tmp_path / "c.npz")


# ---- class 11: the pair is committed as one unit ----------------------------------------------------------
def _state_after_step_2(path, new_model):
    """Build by hand what a writer killed between rename 2 (the .npz) and rename 3 (the sidecar) leaves."""
    d = path.parent / "scratch"
    d.mkdir()
    save_model(new_model, d / "m.npz")
    os.replace(d / "m.json", _pending_path(path))
    os.replace(d / "m.npz", path)
    d.rmdir()


def test_a_commit_cut_between_its_renames_stays_loadable_and_is_finished(saved):
    old_json = _text(sidecar_path(saved))
    new = _model(seed=2)
    _state_after_step_2(saved, new)
    assert _text(sidecar_path(saved)) == old_json  # the old sidecar no longer matches the .npz...
    got = load_model(saved)  # ...and the pending one does: the new model loads, sha256 verified
    assert got.meta["name"] == "tiny2"
    numpy.testing.assert_array_equal(got.params["fc8.weight"], new.params["fc8.weight"])
    save_model(_model(seed=3), saved)  # the next writer finishes or clears the pending sidecar first
    assert not os.path.exists(_pending_path(saved)) and load_model(saved).meta["name"] == "tiny3"


def test_a_stale_pending_sidecar_is_ignored_and_removed(saved):
    # a commit cut before step 2: the pending sidecar names another .npz
    other = _text(sidecar_path(saved)).replace('"params_sha256": "', '"params_sha256": "0')
    _write(_pending_path(saved), other)
    assert load_model(saved).meta["name"] == "tiny1"
    save_model(_model(seed=4), saved)
    assert not os.path.exists(_pending_path(saved)) and load_model(saved).meta["name"] == "tiny4"


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(saved):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    d = saved.parent
    stale = [d / f".m.npz.tmp-{dead.pid}-abc", d / f".m.json.tmp-{dead.pid}-def"]
    live = d / f".m.npz.tmp-{os.getppid()}-ghi"  # the parent of this test process runs
    for p in stale + [live]:
        p.write_bytes(b"partial")
    assert load_model(saved).meta["name"] == "tiny1"  # readers ignore them
    found = stale_temporaries(saved) + stale_temporaries(sidecar_path(saved))
    assert sorted(found) == sorted(map(str, stale))
    save_model(_model(seed=5), saved)
    assert [p.exists() for p in stale + [live]] == [False, False, True]


def test_a_failed_write_keeps_the_old_pair_and_leaves_no_temporaries(saved, monkeypatch):
    import ebr_ref.models.io as io

    before = (saved.read_bytes(), _text(sidecar_path(saved)))
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append(os.path.basename(dst))
        if str(dst) == str(saved):  # rename 2 fails (say, the disk is gone)
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", failing)
    with pytest.raises(OSError):
        save_model(_model(seed=6), saved)
    monkeypatch.undo()
    assert calls == [".m.json.next", "m.npz"]
    assert (saved.read_bytes(), _text(sidecar_path(saved))) == before
    assert sorted(os.listdir(saved.parent)) == ["m.json", "m.npz"]
    assert load_model(saved).meta["name"] == "tiny1"


def test_a_sidecar_name_that_is_a_folder_refuses_the_write(saved):
    os.unlink(sidecar_path(saved))
    os.mkdir(sidecar_path(saved))
    data = saved.read_bytes()
    with pytest.raises(ModelFileError, match="m.json: exists and is not a regular file"):
        save_model(_model(seed=7), saved)
    assert saved.read_bytes() == data and sorted(os.listdir(saved.parent)) == ["m.json", "m.npz"]
