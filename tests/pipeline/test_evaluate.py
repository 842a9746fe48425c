"""Dataset evaluation on a real Dask LocalCluster of two worker processes, on real MP4 files.

Every run here must reproduce the single-process reference run (``reference`` fixture: ``--workers 0``,
no Dask) exactly: the same tables (compared as the JSON written, floats included) and the same records.
"""

import json
import os
import shutil
import signal
import threading
import time

import pytest

import ebr_ref
from ebr_ref.cli import main
from ebr_ref.cli.evaluate import exit_status
from ebr_ref.evaluation.datasets import read_dataset
from ebr_ref.evaluation.tables import to_json
from ebr_ref.pipeline import Store, compute_tables
from ebr_ref.pipeline.blas import blas_environment
from ebr_ref.pipeline.runner import local_cluster
from ebr_ref.pipeline.store import safe_name
from tests.paths import REPO

from .conftest import CLIPS, FRAME_MODEL, MODEL, WORKERS, blas_per_worker, read_tables, science

distributed = pytest.importorskip("distributed")  # in the eval extra, which the test extra includes


def _records(results):
    store = Store(results)
    out = {}
    for name in store.record_files():
        with open(os.path.join(store.records_dir, name)) as f:
            rec = json.load(f)
        out[rec["video_id"]] = rec
    return out


def _assert_same_records(results, reference):
    ours, ref = _records(results), _records(reference)
    assert sorted(ours) == sorted(ref) and len(ref) == CLIPS
    for vid in ref:
        assert science(ours[vid]) == science(ref[vid]), vid


def _pythonpath():
    return os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])


def _run(thumos_set, out, **kwargs):
    return ebr_ref.evaluate(thumos_set, MODEL, frame_model=FRAME_MODEL, out=out, **kwargs)


def test_two_workers_equal_single_process(thumos_set, reference, tmp_path):
    lines = []
    ev = _run(thumos_set, tmp_path / "r", workers=WORKERS, log=lines.append)
    assert ev.computed == CLIPS and ev.skipped == 0 and ev.failed == []
    assert ev.workers["kind"] == "LocalCluster" and ev.workers["n"] == WORKERS
    assert ev.workers["blas_threads"] == [blas_per_worker()]  # the environment reached the workers' OpenBLAS
    assert any(line.startswith("dashboard: http") for line in lines)
    assert to_json(ev.tables) == read_tables(reference)
    assert read_tables(tmp_path / "r") == read_tables(reference)
    _assert_same_records(tmp_path / "r", reference)
    # every protocol ran: Table 1 with all six methods, Tables 2-3 with the recurrent ones
    assert list(ev.tables["table1"]) == ["centre", "random", "EB", "cEB", "BP", "EB-R", "cEB-R", "BP-R"]
    assert ev.tables["table1"]["EB"]["frames"] > 0 and ev.tables["table3"]["cEB-R"]["segments"] == CLIPS
    pids = {r["worker"]["pid"] for r in ev.records}
    assert len(pids) == WORKERS and os.getpid() not in pids  # computed in the two worker processes
    # a second run skips everything, from the records alone
    again = _run(thumos_set, tmp_path / "r", workers=WORKERS)
    assert (again.computed, again.skipped) == (0, CLIPS) and again.tables == ev.tables


def test_worker_killed_mid_run(thumos_set, reference, tmp_path):
    """SIGKILL a worker while it runs a task: Dask reschedules the task; one record per video, same tables."""
    out = tmp_path / "r"
    with local_cluster(WORKERS, blas_per_worker()) as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        result, error = {}, []

        def evaluate():
            try:
                result["ev"] = _run(thumos_set, out, scheduler=cluster.scheduler_address)
            except BaseException as e:  # pragma: no cover - reported below
                error.append(e)

        runner = threading.Thread(target=evaluate)
        runner.start()
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and runner.is_alive():
            # once the first record exists (models loaded, tasks flowing), kill a worker that runs a task
            if Store(out).record_files():
                busy = [(w, keys) for w, keys in client.processing().items() if keys and w in pids]
                if busy:
                    worker, keys = busy[0]
                    killed = (pids[worker], list(keys), time.time())
                    os.kill(pids[worker], signal.SIGKILL)
            time.sleep(0.005)
        runner.join(timeout=180)
        assert not runner.is_alive() and not error, error
    assert killed is not None, "the run finished before a worker could be killed"
    pid, keys, t_kill = killed
    assert not os.path.exists(f"/proc/{pid}")
    ev = result["ev"]
    assert ev.failed == [] and ev.computed == CLIPS
    assert to_json(ev.tables) == read_tables(reference)
    _assert_same_records(out, reference)
    files = Store(out).record_files()
    assert len(files) == CLIPS and not Store(out).temp_files()  # one record per video, nothing partial left
    for key in keys:  # the video the killed worker was running: computed again elsewhere, unless already done
        vid = next(r["video_id"] for r in ev.records if key.endswith(r["video_id"]))
        rec = _records(out)[vid]
        assert rec["worker"]["pid"] != pid or rec["finished"] < t_kill


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_and_resumed(thumos_set, reference, tmp_path, signum):
    """Stop the command mid-run (Ctrl-C, or SIGTERM from a batch system), run it again: only the missing
    videos are computed."""
    import subprocess
    import sys

    out = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    args = [
        sys.executable,
        "-m",
        "ebr_ref",
        "evaluate",
        thumos_set,
        "--model",
        MODEL,
        "--frame-model",
        FRAME_MODEL,
        "--out",
        str(out),
        "--workers",
        str(WORKERS),
        "-q",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(Store(out).record_files()) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    done = {name[: -len(".json")] for name in Store(out).record_files()}
    assert 2 <= len(done) < CLIPS
    t_resume = time.time()
    ev = _run(thumos_set, out, workers=WORKERS)
    assert (ev.computed, ev.skipped) == (CLIPS - len(done), len(done))
    recomputed = {safe_name(r["video_id"]) for r in ev.records if r["finished"] > t_resume}
    assert recomputed.isdisjoint(done) and len(recomputed) == CLIPS - len(done)
    assert to_json(ev.tables) == read_tables(reference)
    _assert_same_records(out, reference)


def test_corrupt_video_recorded_as_failed(thumos_set, reference, tmp_path, capsys):
    data = tmp_path / "thumos"
    shutil.copytree(thumos_set, data)
    bad = sorted(os.listdir(data / "videos"))[3]
    with open(data / "videos" / bad, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # an MP4 header, then garbage
    out = tmp_path / "r"
    status = main(
        [
            "evaluate",
            str(data),
            "--model",
            MODEL,
            "--frame-model",
            FRAME_MODEL,
            "--out",
            str(out),
            "--workers",
            str(WORKERS),
        ]
    )
    text = capsys.readouterr().out
    assert status == exit_status(1) == 3
    vid = bad[: -len(".mp4")]
    assert f"failed: {vid}: VideoError" in text and "7 scored, 1 failed" in text
    rec = _records(out)[vid]
    assert rec["status"] == "failed" and rec["error"]["type"] == "VideoError"
    assert bad in rec["error"]["message"]
    # the other seven are scored exactly as in the reference, and the tables are theirs
    ref, ours = _records(reference), _records(out)
    ordered = [ref[it.video_id] for it in read_dataset(thumos_set).items if it.video_id != vid]
    assert len(ordered) == CLIPS - 1
    for r in ordered:
        a, b = science(ours[r["video_id"]]), science(r)
        assert a.pop("video").pop("path") != b.pop("video").pop("path")  # a copy of the dataset
        assert a == b
    expected = to_json(compute_tables(ordered, ("pointing", "detection", "temporal-pointing")))
    assert read_tables(out) == expected
    with open(out / "tables.json") as f:
        assert json.load(f)["failed"] == [[vid, rec["error"]["type"] + ": " + rec["error"]["message"]]]
    # a re-run keeps the failure (exit status again 3) and computes nothing; --retry-failed tries it again
    assert (
        main(
            [
                "evaluate",
                str(data),
                "--model",
                MODEL,
                "--frame-model",
                FRAME_MODEL,
                "--out",
                str(out),
                "--workers",
                "0",
                "-q",
            ]
        )
        == 3
    )
    ev = _run(str(data), out, workers=0, retry_failed=True)
    assert (ev.computed, ev.skipped, len(ev.failed)) == (1, CLIPS - 1, 1)


def test_no_dask_plain_loop_and_clear_error(thumos_set, reference, tmp_path):
    """Without Dask, ebr_ref imports, --workers 0 runs, and a Dask run names the eval extra."""
    args = f"{thumos_set!r}, {MODEL!r}, frame_model={FRAME_MODEL!r}, out={str(tmp_path / 'r')!r}"
    code = (
        "import sys\n"
        "sys.modules['dask'] = sys.modules['distributed'] = None\n"
        "import ebr_ref\n"
        "from ebr_ref.pipeline import MissingDependency\n"
        f"ev = ebr_ref.evaluate({args}, workers=0, limit=2)\n"
        "assert ev.computed == 2 and sys.modules['dask'] is None\n"
        "try:\n"
        f"    ebr_ref.evaluate({args}, workers=2)\n"
        "except MissingDependency as e:\n"
        "    print('MISSING', e)\n"
    )
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=_pythonpath(), **blas_environment(blas_per_worker()))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "MISSING" in r.stdout and "ebr_ref[eval]" in r.stdout
    ref, ours = _records(reference), _records(tmp_path / "r")
    assert len(ours) == 2 and all(science(ours[v]) == science(ref[v]) for v in ours)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --model"),
        (["--model", FRAME_MODEL], "not a CNN-LSTM"),
        (["--model", MODEL, "--methods", "EB,EB-R", "--protocol", "detection"], "per-frame methods"),
        (["--model", MODEL, "--methods", "EB-R,XY"], "--methods: expected"),
        (["--model", "no_such_model"], "no shipped model"),
        (["--model", MODEL, "--iou", "0,1"], "--iou"),
    ],
)
def test_cli_user_errors(thumos_set, tmp_path, capsys, args, message):
    status = main(["evaluate", thumos_set, "--out", str(tmp_path / "r"), "--workers", "0"] + args)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.startswith("ebr-ref evaluate: error:")
    assert not (tmp_path / "r").exists()  # nothing written for a refused run


def test_cli_missing_dataset(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), "--model", MODEL, "--out", str(tmp_path / "r")]) == 2
    assert "nothing" in capsys.readouterr().err
