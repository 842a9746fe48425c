"""Outputs are written as units: no half-written file, no mix of two runs, no overwrite without --overwrite.

The protocols are in ebr_ref/cli/_outputs.py (``ground``, ``caption``,
``demo``) and ebr_ref/models/io.py (the ``.npz``/``.json`` pair of
``convert``). Real writers are killed: ``python -m ebr_ref convert`` and
``ground`` run in subprocesses (under a memory limit and a timeout) and get
SIGKILL or SIGTERM after random delays spread over a whole run; afterwards
the previous outputs still load (the pair's sha256 matches; every file that
``results.json`` lists exists and ``results.npz`` reads back), SIGTERM leaves
no temporary, and what SIGKILL leaves is cleaned up by the next run. A full
disk is simulated with ``RLIMIT_FSIZE``.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

from ebr_ref.cli._outputs import COMMIT_RECORD, STAGE_PREFIX, OutputSet
from ebr_ref.models import load_model, save_model, sequential
from ebr_ref.models.io import read_npz, sidecar_path
from tests.hostile_files import IDENTITY, LIMIT, NAMES, ROOT, TINY, assert_one_line_error, child_env, run_cli

PIL = pytest.importorskip("PIL.Image")

# about 2.9 M parameters, 23 MB in float64: writing the pair takes a while
BIG = [
    ("flatten", "flatten"),
    ("fc7", "fc", {"out_features": 1200}),
    ("relu7", "relu"),
    ("fc8", "fc", {"out_features": 1200}),
]


def cli(*argv, timeout=120):
    return run_cli(*argv, limit=LIMIT, timeout=timeout)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("atomic")
    meta = {"name": "tiny", "class_names": NAMES, "readout": "conv1", "preprocessing": IDENTITY}
    save_model(sequential(TINY, (3, 16, 16), seed=3, meta=meta), d / "tiny.npz")
    frames = d / "frames"
    frames.mkdir()
    rng = numpy.random.default_rng(0xA70)
    for t in range(4):
        PIL.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=numpy.uint8)).save(frames / f"f{t}.png")
    for seed in (1, 2):
        save_model(sequential(BIG, (3, 20, 20), seed=seed, meta={"name": f"big{seed}"}), d / f"big{seed}.npz")
    return d, frames


def _ground(assets, out, *extra):
    d, frames = assets
    return cli("ground", frames, "--model", d / "tiny.npz", "--no-mp4", "-q", "--out", out, *extra)


def _snapshot(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder)) if (folder / n).is_file()}


def _check_outputs(out, whole=True):
    """The invariant of an output folder: results.json parses, lists existing files, results.npz reads back.

    ``whole``: results.npz is of the same run as results.json (its targets), as
    always holds when no staging folder is left.
    """
    doc = json.loads((out / "results.json").read_text())
    listed = []
    for v in doc["files"].values():
        listed += list(v.values()) if isinstance(v, dict) else [v]
    for f in listed:
        assert (out / f).is_file(), f
    z = read_npz(out / "results.npz")
    if whole:
        assert z["target"].tolist() == [t["index"] for t in doc["targets"]]
    return doc, listed


def _stages(folder):
    return [n for n in os.listdir(folder) if n.startswith(STAGE_PREFIX)]


def _pair_temporaries(out):
    base = os.path.basename(out)[:-4]
    return sorted(
        n
        for n in os.listdir(os.path.dirname(out))
        if n.startswith((f".{base}.npz.tmp-", f".{base}.json.tmp-", f".{base}.json.next"))
    )


# ---- refusing to overwrite; what --overwrite replaces ---------------------------------------------------
def test_ground_refuses_an_old_run_and_overwrite_replaces_it_whole(assets):
    d, _ = assets
    out = d / "out_refuse"
    r = _ground(assets, out, "--target", "1")
    assert r.returncode == 0, r.stderr
    (out / "notes.txt").write_text("mine")  # a file of the user's: never touched
    before = _snapshot(out)
    assert_one_line_error(_ground(assets, out, "--target", "2"), "results.json exists", "--overwrite")
    assert _snapshot(out) == before and not _stages(out)
    r = _ground(assets, out, "--target", "2", "--overwrite")
    assert r.returncode == 0, r.stderr
    doc, listed = _check_outputs(out)
    assert [t["index"] for t in doc["targets"]] == [2]
    assert sorted(os.listdir(out)) == sorted(listed + ["notes.txt"])  # the class-1 pictures are gone
    assert (out / "notes.txt").read_text() == "mine"


def test_a_failed_rerun_leaves_the_old_run_untouched(assets):
    d, _ = assets
    out = d / "out_failed"
    assert _ground(assets, out, "--target", "1").returncode == 0
    before = _snapshot(out)
    assert_one_line_error(_ground(assets, out, "--target", "2", "--overwrite", "--layer", "conv9"), "conv9")
    assert _snapshot(out) == before and not _stages(out)
    assert_one_line_error(_ground(assets, d / "fresh", "--target", "2", "--layer", "conv9"), "conv9")
    assert not (d / "fresh").exists()  # a folder the failed run created is removed again


def test_convert_refuses_existing_files_and_folders(assets):
    d, _ = assets
    out = d / "out_results"
    assert _ground(assets, out, "--target", "1").returncode == 0
    before = _snapshot(out)
    assert_one_line_error(
        cli("convert", d / "tiny.npz", "--out", out / "results.npz"), "results.npz exists", "--overwrite"
    )
    assert _snapshot(out) == before
    target = d / "conv.npz"
    assert cli("convert", d / "big1.npz", "--out", target).returncode == 0
    assert_one_line_error(cli("convert", d / "big2.npz", "--out", target), "conv.npz exists", "--overwrite")
    assert load_model(target).meta["name"] == "big1"
    data = target.read_bytes()
    os.unlink(sidecar_path(target))
    os.mkdir(sidecar_path(target))  # the sidecar's name is a folder: refused even with --overwrite
    assert_one_line_error(
        cli("convert", d / "big2.npz", "--out", target, "--overwrite"), "conv.json", "not a regular file"
    )
    assert target.read_bytes() == data and not _pair_temporaries(str(target))
    os.rmdir(sidecar_path(target))


# ---- a full disk ---------------------------------------------------------------------------------------
def _full_disk(max_bytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead

    return apply


def _run_full_disk(argv, max_bytes):
    code = "import sys; from ebr_ref.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=child_env(),
        preexec_fn=_full_disk(max_bytes),
    )


def test_a_full_disk_keeps_the_old_outputs(assets):
    d, frames = assets
    out = d / "out_full"
    assert _ground(assets, out, "--target", "1").returncode == 0
    before = _snapshot(out)
    r = _run_full_disk(
        [
            "ground",
            frames,
            "--model",
            d / "tiny.npz",
            "--no-mp4",
            "-q",
            "--out",
            out,
            "--target",
            "3",
            "--overwrite",
        ],
        20_000,
    )
    assert_one_line_error(r, "File too large")
    assert _snapshot(out) == before and not _stages(out)
    target = d / "full.npz"
    assert cli("convert", d / "big1.npz", "--out", target).returncode == 0
    pair = (target.read_bytes(), Path(sidecar_path(target)).read_bytes())
    r = _run_full_disk(["convert", d / "big2.npz", "--out", target, "--overwrite"], 1_000_000)
    assert_one_line_error(r, "full.npz", "File too large")
    assert (target.read_bytes(), Path(sidecar_path(target)).read_bytes()) == pair
    assert not _pair_temporaries(str(target))


# ---- killed writers ---------------------------------------------------------------------------------------
def _spawn(argv):
    code = "import sys; from ebr_ref.cli import main; sys.exit(main(sys.argv[1:]))"

    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=child_env(),
        preexec_fn=apply,
    )


def _kill_after(argv, delay, sig):
    p = _spawn(argv)
    time.sleep(delay)
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"{argv[0]} did not stop after signal {sig}")
    return p.returncode, err.decode()


def _duration(argv):
    t0 = time.perf_counter()
    p = _spawn(argv)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()[-2000:]
    return time.perf_counter() - t0


def _delays(seed, duration, n):
    rng = numpy.random.default_rng(seed)
    return sorted(float(x) for x in rng.uniform(0.05, 1.1, n) * duration)


def test_killed_convert_keeps_a_loadable_pair(assets):
    d, _ = assets
    target = str(d / "killed.npz")
    names = {n: load_model(d / f"{n}.npz").params["fc8.bias"] for n in ("big1", "big2")}
    assert cli("convert", d / "big1.npz", "--out", target).returncode == 0
    argv = ["convert", d / "big2.npz", "--out", target, "--overwrite", "-q"]
    full = _duration(argv)  # also leaves big2 in place
    seen = {"big1": 0, "big2": 0}
    for k, (sig, delay) in enumerate(
        [(s, t) for s in (signal.SIGTERM, signal.SIGKILL) for t in _delays(0xC0DE + s, full, 6)]
    ):
        src = "big1" if k % 2 == 0 else "big2"
        rc, err = _kill_after(["convert", d / f"{src}.npz", "--out", target, "--overwrite", "-q"], delay, sig)
        m = load_model(target)  # the sidecar's sha256 matches the .npz: an old or a new pair, whole
        assert m.meta["name"] in names
        numpy.testing.assert_array_equal(m.params["fc8.bias"], names[m.meta["name"]])
        seen[m.meta["name"]] += 1
        if sig == signal.SIGTERM:
            assert rc in (0, 143, -signal.SIGTERM), (rc, err)  # -15: before ebr_ref set its handler up
            assert not _pair_temporaries(target), (delay, _pair_temporaries(target))
            assert "Traceback" not in err, err
        left = _pair_temporaries(target)
        if left:  # only after SIGKILL: the next writer removes them (readers ignore them)
            assert sig == signal.SIGKILL
            assert cli("convert", d / "big1.npz", "--out", target, "--overwrite").returncode == 0
            assert not _pair_temporaries(target) and load_model(target).meta["name"] == "big1"
    assert sum(seen.values()) == 12


def test_killed_ground_keeps_a_whole_run(assets):
    d, frames = assets
    out = d / "out_killed"
    base = ["ground", frames, "--model", d / "tiny.npz", "--no-mp4", "-q", "--out", out, "--overwrite"]
    full = _duration(base + ["--target", "1"])
    for k, (sig, delay) in enumerate(
        [(s, t) for s in (signal.SIGTERM, signal.SIGKILL) for t in _delays(0x6A0 + s, full, 4)]
    ):
        rc, err = _kill_after(base + ["--target", str(2 + k % 2)], delay, sig)
        _check_outputs(out, whole=False)  # each file whole, each listed file present, whatever the moment
        if sig == signal.SIGTERM:
            assert rc in (0, 143, -signal.SIGTERM), (rc, err)
            assert not _stages(out) and "Traceback" not in err, (delay, err)
        if _stages(out):  # SIGKILL: the next run removes the staging folder (or finishes a cut commit)
            assert sig == signal.SIGKILL
            r = _ground(assets, out, "--target", "1", "--overwrite")
            assert r.returncode == 0, r.stderr
            assert not _stages(out)
        doc, listed = _check_outputs(out)  # one run's files, nothing else
        assert sorted(os.listdir(out)) == sorted(listed)


# ---- recovery from a killed writer, state by state --------------------------------------------------------
def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_staging_folders_are_removed_or_finished(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"files": {"a": {"gif": "a.gif"}, "json": "results.json"}}))
    (out / "a.gif").write_text("old a")
    pid = _dead_pid()
    cut = out / f"{STAGE_PREFIX}{pid}-x1"  # killed before its commit: discarded
    cut.mkdir()
    (cut / "results.json").write_text("{}")
    committing = out / f"{STAGE_PREFIX}{pid}-x2"  # killed during its commit: finished
    committing.mkdir()
    (committing / "b.gif").write_text("new b")
    doc = {"files": {"b": {"gif": "b.gif"}, "json": "results.json"}}
    (committing / "results.json").write_text(json.dumps(doc))
    record = {"names": ["b.gif", "results.json"], "stale": ["a.gif"]}
    (committing / COMMIT_RECORD).write_text(json.dumps(record))
    live = out / f"{STAGE_PREFIX}{os.getppid()}-x3"  # a running writer's: left alone
    live.mkdir()
    OutputSet(out, overwrite=True).prepare()
    assert sorted(os.listdir(out)) == sorted(["b.gif", "results.json", live.name])
    assert json.loads((out / "results.json").read_text())["files"]["b"]["gif"] == "b.gif"
    with pytest.raises(Exception, match="results.json exists"):
        OutputSet(out).prepare()
