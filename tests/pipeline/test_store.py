"""The results store, the run key and the per-video task, in this process (``workers=0``: no Dask)."""

import importlib.util
import json
import math
import os

import numpy
import pytest

import ebr_ref
from ebr_ref import backend
from ebr_ref.evaluation.annotations import seconds_to_frames
from ebr_ref.evaluation.datasets import read_dataset
from ebr_ref.pipeline import MissingDependency, Store, StoreConflict
from ebr_ref.pipeline.store import RECORD_FORMAT, atomic_write, item_digest, replace_block, run_key, safe_name
from ebr_ref.pipeline.task import _downsample

from .conftest import FRAME_MODEL, MODEL


def _read(path):
    with open(path) as f:
        return f.read()


def _record(vid, **fields):
    return {"format": RECORD_FORMAT, "video_id": vid, "status": "ok", **fields}


def test_docstring_examples():
    import doctest

    from ebr_ref.pipeline import store

    result = doctest.testmod(store, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_safe_names_never_collide():
    assert safe_name("video_test_0000004") == "video_test_0000004"
    names = {safe_name(v) for v in ("a b", "a_b", "a/b", ".hidden", "")}
    assert len(names) == 5 and all(n and not n.startswith(".") and "/" not in n for n in names)


def test_atomic_write_and_records(tmp_path):
    store = Store(tmp_path / "r").create()
    atomic_write(os.path.join(store.root, "x.txt"), "hello")
    assert _read(os.path.join(store.root, "x.txt")) == "hello" and not store.temp_files()
    maps = {"cEB-R.0": numpy.ones((2, 3, 3), dtype=numpy.float16)}
    store.write_record(_record("v 1", n=1), maps)
    rec = store.read_record("v 1")
    assert rec["n"] == 1 and rec["maps"] == safe_name("v 1") + ".npz"
    assert store.read_maps("v 1")["cEB-R.0"].shape == (2, 3, 3)
    assert store.read_record("v 2") is None
    # a record of another video under this name, a truncated file, a foreign JSON: not records (recomputed)
    with open(store.record_path("v 2"), "w") as f:
        f.write('{"format": "ebr_ref-eval-record", "video_id": "v 2", "sta')
    assert store.read_record("v 2") is None
    atomic_write(store.record_path("v 3"), json.dumps(_record("other")))
    assert store.read_record("v 3") is None
    # what a writer killed mid-write leaves: ignored by readers, removed by remove_temp_files
    with open(os.path.join(store.records_dir, ".tmp-abc"), "w") as f:
        f.write("{")
    assert ".tmp-abc" not in store.record_files() and len(store.temp_files()) == 1
    assert store.remove_temp_files() == 1 and not store.temp_files()


def test_run_key_and_item_digest(thumos_set):
    doc = {"model": {"sha256": "ab"}, "methods": ["cEB-R"], "options": {"every": 1}}
    assert run_key(doc) == run_key(json.loads(json.dumps(doc)))
    assert run_key(doc) != run_key(dict(doc, options={"every": 2}))
    item = read_dataset(thumos_set).items[0]
    assert item_digest(item) == item_digest(item._replace(path="/elsewhere/" + os.path.basename(item.path)))
    moved = item._replace(segments=(item.segments[0]._replace(end=item.segments[0].end + 0.04),))
    assert item_digest(item) != item_digest(moved)
    assert item_digest(item) != item_digest(item, ambiguous=((0.0, 0.1),))


def test_downsample_block_means():
    maps = numpy.arange(2 * 5 * 4, dtype=numpy.float32).reshape(2, 5, 4)
    out = _downsample(maps, 3)  # factor ceil(5 / 3) = 2: rows {0, 1}, {2, 3}, {4}; columns {0, 1}, {2, 3}
    assert out.dtype == numpy.float16 and out.shape == (2, 3, 2)
    assert out[0].tolist() == [[2.5, 4.5], [10.5, 12.5], [16.5, 18.5]]  # e.g. (0 + 1 + 4 + 5) / 4 = 2.5
    assert _downsample(maps, 8).tolist() == maps.astype(numpy.float16).tolist()


def test_conflicting_configuration_refused_then_overwritten(thumos_set, tmp_path):
    out = tmp_path / "r"
    first = ebr_ref.evaluate(thumos_set, MODEL, out=out, protocol="detection", workers=0, limit=2)
    assert first.computed == 2
    with pytest.raises(StoreConflict, match="differs in: lstm_rule"):
        ebr_ref.evaluate(thumos_set, MODEL, out=out, protocol="detection", workers=0, limit=2, lstm_rule="eb")
    assert first.key == json.loads(_read(out / "run.json"))["key"]  # the refused run wrote nothing
    again = ebr_ref.evaluate(
        thumos_set, MODEL, out=out, protocol="detection", workers=0, limit=3, lstm_rule="eb", overwrite=True
    )
    assert (again.computed, again.skipped) == (3, 0) and again.key != first.key
    assert all(r["key"] == again.key for r in again.records)
    assert json.loads(_read(out / "run.json"))["key"] == again.key


def test_changed_ground_truth_is_scored_again(thumos_set, tmp_path):
    ds = read_dataset(thumos_set)
    ds = ds._replace(items=ds.items[:3])
    out = tmp_path / "r"
    ebr_ref.evaluate(ds, MODEL, out=out, protocol="temporal-pointing", workers=0)
    seg = ds.items[1].segments[0]
    start, _ = seconds_to_frames(seg.start, seg.end, 25.0)
    changed = ds.items[1]._replace(segments=(seg._replace(start=seg.start + 1 / 25),))  # one frame later
    ds2 = ds._replace(items=(ds.items[0], changed, ds.items[2]))
    ev = ebr_ref.evaluate(ds2, MODEL, out=out, protocol="temporal-pointing", workers=0)
    assert (ev.computed, ev.skipped) == (1, 2)
    assert ev.records[1]["gt"][0][1] == start + 1


def test_sampled_frames_keep_the_ground_truth(thumos_set, tmp_path):
    """--every 2: the segments and boxes follow the kept frames; maps are kept (downsampled) on request."""
    ds = read_dataset(thumos_set)
    item = ds.items[0]
    ev = ebr_ref.evaluate(
        thumos_set,
        MODEL,
        frame_model=FRAME_MODEL,
        out=tmp_path / "r",
        workers=0,
        every=2,
        limit=1,
        keep_maps=True,
        map_size=8,
    )
    rec = ev.records[0]
    assert rec["status"] == "ok" and rec["video"]["frames"] == 16
    seg = item.segments[0]
    s, e = seconds_to_frames(seg.start, seg.end, 25.0)  # the video's frame rate
    assert rec["gt"] == [[seg.label, math.ceil(s / 2), e // 2]]  # kept frame j is decoded frame 2 j
    annotated = [j for j in range(16) if 2 * j in item.boxes]
    assert [j for j, o in enumerate(rec["pointing"]["EB"]["outcomes"]) if o] == annotated
    maps = Store(tmp_path / "r").read_maps(item.video_id)
    kept = maps[f"cEB-R.{seg.label}"]
    assert kept.shape == (16, 8, 8) and kept.dtype == numpy.float16
    # the per-frame methods run on the annotated frames only
    assert maps["annotated_frames"].tolist() == annotated
    assert maps[f"EB.{seg.label}"].shape == (len(annotated), 8, 8)


def test_too_short_videos_fail_and_tables_still_render(thumos_set, tmp_path):
    ev = ebr_ref.evaluate(
        thumos_set, MODEL, out=tmp_path / "r", workers=0, protocol="detection", max_frames=1, limit=2
    )
    assert len(ev.failed) == 2 and all("1 frame(s) after sampling" in msg for _, msg in ev.failed)
    assert ev.tables["table2"] == {} and "2 failed" in ev.markdown
    assert json.loads(_read(tmp_path / "r" / "tables.json"))["ok"] == 0


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present: the GPU run is not an error there")
def test_gpu_without_gpu_is_a_clear_error(thumos_set, tmp_path):
    with pytest.raises(MissingDependency, match=r"ebr_ref\[gpu\]"):
        ebr_ref.evaluate(thumos_set, MODEL, out=tmp_path / "r", workers=0, device="gpu", limit=1)


@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is not None, reason="dask-cuda is installed")
def test_gpu_cluster_without_dask_cuda_names_the_extra(thumos_set, tmp_path):
    with pytest.raises(MissingDependency, match=r"dask-cuda: pip install 'ebr_ref\[gpu,eval\]'"):
        ebr_ref.evaluate(thumos_set, MODEL, out=tmp_path / "r", workers=2, device="gpu", limit=1)


def test_replace_block_keeps_the_rest_of_the_file(tmp_path):
    page = tmp_path / "page.md"
    page.write_bytes(b"intro\r\n<!-- t:begin -->\nold\n<!-- t:end -->\n<!-- u:begin -->\nu\n<!-- u:end -->\n")
    replace_block(page, "new | table", "t")
    assert page.read_bytes() == (
        b"intro\r\n<!-- t:begin -->\nnew | table\n<!-- t:end -->\n<!-- u:begin -->\nu\n<!-- u:end -->\n"
    )
    assert os.listdir(tmp_path) == ["page.md"]  # no temporary file left


@pytest.mark.parametrize("text", ["no markers\n", "<!-- w:end -->\n<!-- w:begin -->\n", "<!-- w:begin -->\n"])
def test_replace_block_refuses_a_file_without_the_block(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ValueError, match="no <!-- w:begin --> ... <!-- w:end --> block to replace"):
        replace_block(page, "x", "w")
    assert page.read_text() == text
