"""benchmarks/decoded_vs_memory.py: accuracies on decoded files beside those on the in-memory clips.

The script's core (``compare``) runs here at a tiny size (3 motion clips of 16
frames, no Dask), with spies on the two functions both columns must share: the
per-video analysis of in-memory frames (``ebr_ref.pipeline.task.clip_record``,
which must be given the regenerated clips, not the decoded ones) and the table
code (``ebr_ref.pipeline.runner.compute_tables``, called once per column).
"""

import importlib.util
import os

import numpy
import pytest

from ebr_ref.evaluation import tables
from ebr_ref.pipeline import runner, task
from ebr_ref.pipeline.store import replace_block
from ebr_ref.tools.synthetic_dataset import dataset_clips, to_uint8
from ebr_ref.tools.video import read_frames
from tests.paths import REPO

pytest.importorskip("imageio_ffmpeg")

ARGS = {"benchmark": "motion", "layout": "thumos14", "clips": 3, "seed": 0xD3C0, "frames": 16}


def _script():
    spec = importlib.util.spec_from_file_location(
        "decoded_vs_memory", REPO / "benchmarks" / "decoded_vs_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def spied(script, tmp_path_factory):
    """``(comparison, clip_record inputs, compute_tables calls)`` of one tiny run with spies installed."""
    inputs, calls = [], []
    real_record, real_tables = task.clip_record, runner.compute_tables

    def record_spy(item, job, frames, fps, ambiguous=()):
        inputs.append((item.video_id, frames.copy(), fps))
        return real_record(item, job, frames, fps, ambiguous)

    def tables_spy(records, protos, iou=runner.DEFAULT_IOU):
        out = real_tables(records, protos, iou)
        calls.append((list(records), out))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task, "clip_record", record_spy)
        mp.setattr(runner, "compute_tables", tables_spy)
        result = script.compare(tmp_path_factory.mktemp("dvm"), workers=0, **ARGS)
    return result, inputs, calls


def test_the_in_memory_column_is_computed_from_the_regenerated_clips(spied):
    result, inputs, _ = spied
    ds = result.plan.dataset
    clips = dataset_clips(ARGS["layout"], **{k: v for k, v in ARGS.items() if k != "layout"})
    assert [vid for vid, _, _ in inputs] == [it.video_id for it in ds.items] and len(inputs) == 3
    assert result.spec["benchmark"] == "motion" and ds.class_names[:3] == ("left", "right", "up")
    for (_, frames, fps), clip, item in zip(inputs, clips, ds.items, strict=True):
        assert numpy.array_equal(frames, to_uint8(clip.frames)) and fps == 25.0
        decoded, _ = read_frames(item.path)
        assert decoded.shape == frames.shape and not numpy.array_equal(decoded, frames)
    # the records of the two columns: the same videos and ground truth, other pixels
    dec, mem = result.records["decoded"], result.records["memory"]
    assert [r["video_id"] for r in dec] == [r["video_id"] for r in mem]
    assert [r["gt"] for r in dec] == [r["gt"] for r in mem] and [r["key"] for r in dec] == [
        r["key"] for r in mem
    ]
    assert any(d["evidence"] != m["evidence"] for d, m in zip(dec, mem, strict=True))
    # the pixel change reported is that between the decoded files and these clips
    diffs = [
        numpy.abs(read_frames(it.path)[0].astype(int) - frames.astype(int))
        for it, (_, frames, _) in zip(ds.items, inputs, strict=True)
    ]
    assert result.pixel_change["mean"] == pytest.approx(numpy.concatenate([d.ravel() for d in diffs]).mean())
    assert result.pixel_change["mean"] > 1


def test_both_columns_come_from_the_same_table_code(spied):
    result, _, calls = spied
    assert len(calls) == 2  # run_plan's, on the decoded records; then the in-memory records'
    (dec_records, dec_tables), (mem_records, mem_tables) = calls
    assert [r["video_id"] for r in dec_records] == [r["video_id"] for r in result.records["decoded"]]
    assert mem_records == result.records["memory"]
    assert result.tables["decoded"] is dec_tables and result.tables["memory"] is mem_tables
    assert tables.to_json(runner.compute_tables(dec_records, result.plan.job.protocols)) == tables.to_json(
        dec_tables
    )


def test_side_by_side_table(script, spied, tmp_path):
    result, _, _ = spied
    dec, mem = result.tables["decoded"], result.tables["memory"]
    rows = script.side_by_side(dec, mem, result.plan.iou)
    t1 = [r for r in rows if r[0].startswith("1 ")]
    assert [r[1] for r in t1] == list(dec["table1"]) and all(r[2] == "accuracy" for r in t1)
    assert all((a, b) == (dec["table1"][m]["all"], mem["table1"][m]["all"]) for _, m, _, a, b in t1)
    t2 = [r for r in rows if r[0].startswith("2 ")]
    assert len(t2) == len(dec["table2"]) * len(result.plan.iou)
    _, method, measure, a, b = t2[-1]
    assert measure == "mAP, unknown length, IoU 0.5" and (a, b) == (
        dec["table2"][("unknown", method)]["0.5"][0],
        mem["table2"][("unknown", method)]["0.5"][0],
    )
    t3 = [r for r in rows if r[0].startswith("3 ")]
    assert [r[1] for r in t3] == list(dec["table3"])
    assert len(rows) == len(t1) + len(t2) + len(t3)
    info = {"command": "cmd", "machine": "m", "workers": "no Dask", "load": 0.5, "seconds": 3.0}
    text = script.render(result, info)
    assert "Benchmark `motion`, layout `thumos14`: 3 clips of 16 frames" in text
    assert f"{result.pixel_change['mean']:.2f} grey levels" in text
    assert text.count("\n| ") == len(rows) + 1  # the header and one line per row
    # --write replaces the benchmark's block and nothing else
    page = tmp_path / "page.md"
    page.write_text(
        "a\n<!-- decoded-vs-memory:motion:begin -->\nold\n<!-- decoded-vs-memory:motion:end -->\nb\n"
    )
    replace_block(page, text, "decoded-vs-memory:motion")
    expected = (
        f"a\n<!-- decoded-vs-memory:motion:begin -->\n{text}\n<!-- decoded-vs-memory:motion:end -->\nb\n"
    )
    assert page.read_text() == expected
    with pytest.raises(ValueError, match="no <!-- decoded-vs-memory:appearance:begin -->"):
        replace_block(page, text, "decoded-vs-memory:appearance")


def test_main_prints_the_table(script, tmp_path, capsys):
    script.main(
        ["--clips", "2", "--frames", "8", "--layout", "ucf101", "--workers", "0", "--dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert "Benchmark `appearance`, layout `ucf101`: 2 clips of 8 frames (trimmed" in out
    assert "MPEG-4 part 2 AVI" in out and "| 1 (pointing) | EB-R | accuracy |" in out
    assert "2 (detection)" not in out  # trimmed clips: no segments, Table 1 only


def test_on_dask_workers_both_columns_are_those_of_one_process(script, spied, tmp_path):
    """``--workers 2``: the decoded videos and the in-memory clips run on a LocalCluster's two workers."""
    pytest.importorskip("distributed")
    result, _, _ = spied
    lines = []
    on_dask = script.compare(tmp_path, workers=2, log=lines.append, **ARGS)
    assert any(line.startswith("cluster: ") for line in lines)
    for column in ("decoded", "memory"):
        pids = {r["worker"]["pid"] for r in on_dask.records[column]}
        assert pids and os.getpid() not in pids, column
        assert tables.to_json(on_dask.tables[column]) == tables.to_json(result.tables[column]), column
