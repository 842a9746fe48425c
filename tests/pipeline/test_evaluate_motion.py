"""The motion benchmark on disk and through ``ebr-ref evaluate``, end to end, on a real Dask LocalCluster.

``ebr-ref make-dataset --benchmark motion`` writes a THUMOS14-layout folder of
real MP4 files (4 short rand+GT+rand clips); ``ebr-ref evaluate`` grounds it
with the shipped motion models on two worker processes and writes the records
and the tables, whose classes are the motion benchmark's.
"""

import json
import os

import pytest

from ebr_ref.cli import main
from ebr_ref.evaluation.datasets import read_dataset
from ebr_ref.pipeline import Store
from ebr_ref.synthetic import motion
from ebr_ref.tools.synthetic_dataset import read_synthetic_spec

from .conftest import WORKERS

distributed = pytest.importorskip("distributed")  # in the eval extra, which the test extra includes

CLIPS, FRAMES, SEED = 4, 24, 0x3071
MODEL, FRAME_MODEL = "motion_cnn_lstm", "motion_cnn"


@pytest.fixture(scope="module")
def motion_set(tmp_path_factory):
    """4 motion rand+GT+rand clips of 24 frames at 64 x 64 as a THUMOS14-layout folder, via the CLI."""
    out = tmp_path_factory.mktemp("datasets") / "motion"
    argv = ["make-dataset", str(out), "--layout", "thumos14", "--benchmark", "motion"]
    argv += ["--clips", str(CLIPS), "--frames", str(FRAMES), "--seed", str(SEED), "-q"]
    assert main(argv) == 0
    return str(out)


def test_motion_dataset_through_evaluate(motion_set, tmp_path, capsys):
    ds = read_dataset(motion_set)
    assert ds.class_names == motion.ACTIONS and read_synthetic_spec(motion_set)["benchmark"] == "motion"
    assert [it.segments[0].label for it in ds.items] == list(range(CLIPS))  # left, right, up, down
    out = tmp_path / "r"
    argv = ["evaluate", motion_set, "--model", MODEL, "--frame-model", FRAME_MODEL, "--out", str(out)]
    assert main(argv + ["--workers", str(WORKERS)]) == 0
    text = capsys.readouterr().out
    assert (
        f"(thumos14, {CLIPS} videos, 8 classes)" in text
        and f"{CLIPS} videos computed, 0 reused, 0 failed" in text
    )
    assert "cluster: LocalCluster with 2 worker processes" in text
    # the records: one per clip, computed in the workers, scored against the motion classes
    store = Store(out)
    assert len(store.record_files()) == CLIPS
    records = [store.read_record(it.video_id) for it in ds.items]
    assert all(r["status"] == "ok" for r in records)
    assert len({r["worker"]["pid"] for r in records} - {os.getpid()}) >= 1
    assert [r["labels"] for r in records] == [[k] for k in range(CLIPS)]
    assert all(len(r["probs"][str(k)]) == FRAMES for k, r in enumerate(records))
    with open(out / "run.json") as f:
        key_doc = json.load(f)["key_doc"]
    assert key_doc["dataset"]["class_names"] == list(motion.ACTIONS)
    assert key_doc["model"]["name"] == MODEL and key_doc["frame_model"]["name"] == FRAME_MODEL
    # the tables: every protocol, every default method
    with open(out / "tables.json") as f:
        doc = json.load(f)
    assert doc["ok"] == CLIPS and doc["failed"] == []
    tabs = doc["tables"]
    assert list(tabs["table1"]) == ["centre", "random", "EB", "cEB", "BP", "EB-R", "cEB-R", "BP-R"]
    assert tabs["table1"]["EB-R"]["frames"] == sum(len(it.boxes) for it in ds.items)
    assert tabs["table3"]["cEB-R"]["segments"] == CLIPS
    assert {"known | EB-R", "unknown | cEB-R"} <= set(tabs["table2"])
    assert "**Table 1**" in (out / "tables.md").read_text() and (out / "tables.csv").read_text()


def test_appearance_models_refuse_the_motion_classes(motion_set, tmp_path, capsys):
    """The classes are matched by name: the appearance benchmark's model has none of the motion classes."""
    argv = ["evaluate", motion_set, "--model", "synthetic_cnn_lstm", "--out", str(tmp_path / "r")]
    assert main(argv + ["--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "dataset classes not among the model's class names: left, right, up, down" in err
    assert not (tmp_path / "r").exists()
