"""make_dataset: the synthetic benchmarks written as real video files + annotation files, read back.

Everything here is real: the videos are encoded by the ffmpeg binary that
imageio-ffmpeg ships and decoded again with :func:`ebr_ref.tools.video.read_video`;
the annotation files are read back by :func:`ebr_ref.evaluation.datasets.read_dataset`.

Codec tolerance, measured on 64 x 64 clips (uint8 values 0..255, all pixels
of all frames; the fixture's clips and 14-clip sets of 16 and 128 frames):
H.264 (CRF 18, 4:2:0) and MPEG-4 part 2 (q 2, 4:2:0) change pixels by 4.9-5.6
on average, the 99th percentile of the absolute difference is 26-27, and single
pixels at coloured edges differ by up to ~200 (the chroma is stored at half
resolution). The tests allow a mean of 8 and a 99th percentile of 45 per clip.
The motion benchmark's clips (saturated colours, more and smaller objects)
change more: 5.2-7.0 on average, 99th percentile 44-65 on the fixture's clips
(6.9 and 61 over 70 clips of 128 frames); allowed: a mean of 10 and a 99th
percentile of 85.
"""

import json
import os
import re

import numpy
import pytest

from ebr_ref import synthetic
from ebr_ref.cli import main
from ebr_ref.evaluation.datasets import read_dataset
from ebr_ref.synthetic import ACTIONS
from ebr_ref.tools.synthetic_dataset import dataset_clips, make_dataset, read_synthetic_spec, to_uint8
from ebr_ref.tools.video import read_video

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("scipy.io")

TOLERANCE = {"appearance": (8.0, 45.0), "motion": (10.0, 85.0)}  # mean, 99th percentile per clip
ARGS = {  # tiny clips: 3 per layout
    "thumos14": {"clips": 3, "seed": 0x5EED, "frames": 16, "gt_length": 5},
    "ucf101": {"clips": 3, "seed": 0x5EED, "frames": 8},
    "manifest": {"clips": 3, "seed": 0x5EED, "frames": 12, "kind": "GT+rand"},
}


CASES = [(b, layout) for b in synthetic.BENCHMARKS for layout in ARGS]
SHIPPED = {  # the shipped models of each benchmark: their class names are the dataset's
    "appearance": ("synthetic_cnn", "synthetic_cnn_lstm"),
    "motion": ("motion_cnn", "motion_cnn_lstm", "motion_cnn_lstm_tanh"),
}


def _options(layout):
    """The ``make_clip`` options of ``ARGS[layout]``."""
    args = ARGS[layout]
    return {"num_frames": args["frames"], **({"gt_length": args["gt_length"]} if "gt_length" in args else {})}


@pytest.fixture(scope="module")
def written_all(tmp_path_factory):
    """``{(benchmark, layout): (out, dataset, clips)}``, each written once."""
    base = tmp_path_factory.mktemp("synthetic_datasets")
    out = {}
    for benchmark, layout in CASES:
        path, args = base / benchmark / layout, dict(ARGS[layout], benchmark=benchmark)
        out[benchmark, layout] = (path, make_dataset(path, layout, **args), dataset_clips(layout, **args))
    return out


@pytest.fixture(scope="module")
def written(written_all):
    """``{layout: (out, dataset, clips)}`` of the appearance benchmark (the default)."""
    return {layout: v for (b, layout), v in written_all.items() if b == "appearance"}


def _annotation_bytes(root):
    """``{relative path: bytes}`` of every file that is not a video."""
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if not n.endswith((".mp4", ".avi")):
                p = os.path.join(d, n)
                with open(p, "rb") as f:
                    files[os.path.relpath(p, root)] = f.read()
    return files


@pytest.mark.parametrize("benchmark, layout", CASES)
def test_read_back_matches_the_generator(written_all, benchmark, layout):
    out, ds, clips = written_all[benchmark, layout]
    gen = synthetic.generator(benchmark)
    again = read_dataset(out)  # the layout is detected; the frame rate given where the layout has none
    assert again.layout == ds.layout == layout and again.class_names == ds.class_names == gen.ACTIONS
    assert len(ds.items) == len(clips) == 3
    children = numpy.random.SeedSequence(ARGS[layout]["seed"]).spawn(3)
    for i, clip in enumerate(clips):  # the benchmark's own clips, labels cycling through its classes
        expected = gen.make_clip(clip.kind, i % gen.NUM_CLASSES, seed=children[i], **_options(layout))
        assert clip.label == i % gen.NUM_CLASSES and numpy.array_equal(clip.frames, expected.frames)
    for item, clip in zip(ds.items, clips, strict=True):
        assert os.path.isfile(item.path) and item.path.startswith(str(out))
        if clip.kind == "trimmed":
            assert item.label == clip.label and item.segments == ()
        else:
            # the seconds in the files give back the generator's frames exactly at the written frame rate
            assert item.label is None and len(item.segments) == 1
            seg = item.segments[0]
            assert seg.label == clip.label and (seg.start_frame, seg.end_frame) == clip.interval
        finite = numpy.all(numpy.isfinite(clip.boxes), axis=1)
        assert item.boxes == {t: (tuple(float(v) for v in clip.boxes[t]),) for t in numpy.flatnonzero(finite)}


@pytest.mark.parametrize("benchmark, layout", CASES)
def test_decoded_frames_match_within_the_codec_tolerance(written_all, benchmark, layout):
    _, ds, clips = written_all[benchmark, layout]
    mean_tol, p99_tol = TOLERANCE[benchmark]
    for item, clip in zip(ds.items, clips, strict=True):
        frames, info = read_video(item.path)
        expected = to_uint8(clip.frames)
        assert frames.shape == expected.shape and info["fps"] == 25.0
        err = numpy.abs(frames.astype(numpy.int16) - expected.astype(numpy.int16))
        mean, p99 = err.mean(), numpy.percentile(err, 99)
        assert mean <= mean_tol and p99 <= p99_tol, (mean, p99)


def test_layout_files(written):
    out, _, clips = written["thumos14"]
    names = sorted(os.listdir(out / "annotation"))
    assert names == sorted([f"{a}_test.txt" for a in ACTIONS] + ["Ambiguous_test.txt", "detclasslist.txt"])
    s, e = clips[0].interval  # frame k spans [k / fps, (k + 1) / fps)
    expected = f"video_test_0000001 {s / 25} {(e + 1) / 25}\n"
    assert (out / "annotation" / "slide_test.txt").read_text() == expected
    assert (out / "annotation" / "Ambiguous_test.txt").read_text() == ""
    assert sorted(os.listdir(out / "videos")) == [f"video_test_{i:07d}.mp4" for i in (1, 2, 3)]
    out, _, _ = written["ucf101"]
    assert (out / "testlist01.txt").read_text().splitlines() == [
        "slide/v_slide_g01_c01.avi",
        "rotate/v_rotate_g01_c01.avi",
        "pulse/v_pulse_g01_c01.avi",
    ]
    assert (out / "classInd.txt").read_text().splitlines()[:2] == ["1 slide", "2 rotate"]
    # the .mat in the published struct layout, read here independently of the reader
    import scipy.io

    annot = scipy.io.loadmat(str(out / "finalAnnots.mat"), squeeze_me=True, struct_as_record=False)["annot"]
    first = annot[0]
    assert first.name == "slide/v_slide_g01_c01" and first.num_imgs == 8
    tube = first.tubes
    assert (tube.sf, tube.ef, tube.__dict__["class"]) == (1, 8, 1) and tube.boxes.shape == (8, 4)
    out, _, _ = written["manifest"]
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"classes": list(ACTIONS)} and len(lines) == 4
    assert set(json.loads(lines[1])) == {"path", "label", "segments", "boxes", "fps"}
    assert read_synthetic_spec(out) == {
        "benchmark": "appearance",
        "layout": "manifest",
        "kind": "GT+rand",
        "clips": 3,
        "seed": 0x5EED,
        "frames": 12,
        "gt_length": None,
        "size": [64, 64],
        "fps": 25.0,
    }


def test_motion_layout_files(written_all):
    """The motion benchmark's classes in every layout's class files, names and records."""
    from ebr_ref.synthetic import motion

    out, _, clips = written_all["motion", "thumos14"]
    names = sorted(os.listdir(out / "annotation"))
    expected = [f"{a}_test.txt" for a in motion.ACTIONS] + ["Ambiguous_test.txt", "detclasslist.txt"]
    assert names == sorted(expected) and len(motion.ACTIONS) == 8
    assert (out / "annotation" / "detclasslist.txt").read_text().splitlines() == [
        f"{k + 1} {a}" for k, a in enumerate(motion.ACTIONS)
    ]
    s, e = clips[2].interval
    assert (out / "annotation" / "up_test.txt").read_text() == f"video_test_0000003 {s / 25} {(e + 1) / 25}\n"
    out, _, _ = written_all["motion", "ucf101"]
    assert (out / "testlist01.txt").read_text().splitlines() == [
        "left/v_left_g01_c01.avi",
        "right/v_right_g01_c01.avi",
        "up/v_up_g01_c01.avi",
    ]
    assert (out / "classInd.txt").read_text().splitlines()[-1] == "8 shrink"
    out, _, clips = written_all["motion", "manifest"]
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"classes": list(motion.ACTIONS)}
    assert json.loads(lines[2])["segments"][0][0] == "right"
    spec = read_synthetic_spec(out)
    assert spec["benchmark"] == "motion" and spec["kind"] == "GT+rand"
    again = dataset_clips(**spec)  # the recorded spec regenerates the motion clips
    assert all(numpy.array_equal(a.frames, b.frames) for a, b in zip(again, clips, strict=True))


@pytest.mark.parametrize("benchmark", synthetic.BENCHMARKS)
def test_class_names_pass_the_readers_rules(benchmark):
    """Every reader takes the class names as written, and the shipped models of the benchmark name them."""
    from ebr_ref.models.io import read_sidecar
    from ebr_ref.models.shipped import data_dir

    names = synthetic.generator(benchmark).ACTIONS
    for name in names:
        # one token of a class list line ('index name') and of a test list path; a THUMOS14 annotation
        # file name '<Class>_test.txt' and a UCF101 'Class/v_Class_gGG_cCC' name that read back as it
        assert name.split() == [name] and "/" not in name and name != "Ambiguous"
        assert re.fullmatch(r"^(.+)_test\.txt$", f"{name}_test.txt").group(1) == name
        assert re.match(r"^v_(.+)_g\d+_c\d+$", f"v_{name}_g01_c02").group(1) == name
    assert len({n.lower() for n in names}) == len(names)  # models match dataset classes case-insensitively
    for model in SHIPPED[benchmark]:
        side = read_sidecar(os.path.join(data_dir(), model + ".npz"))
        assert tuple(side["meta"]["class_names"]) == names, model


def test_spec_without_a_benchmark_is_the_appearance_benchmark(written, tmp_path):
    """A folder written before the motion benchmark (no ``benchmark`` recorded) holds appearance clips."""
    out, _, clips = written["manifest"]
    with open(out / "synthetic.json") as f:
        doc = json.load(f)
    assert doc.pop("benchmark") == "appearance"
    (tmp_path / "synthetic.json").write_text(json.dumps(doc))
    spec = read_synthetic_spec(tmp_path)
    assert spec == read_synthetic_spec(out) and spec["benchmark"] == "appearance"
    assert all(
        numpy.array_equal(a.frames, b.frames) for a, b in zip(dataset_clips(**spec), clips, strict=True)
    )


def test_deterministic_from_the_seed(written_all, written, tmp_path):
    for benchmark, layout in CASES:
        out, _, _ = written_all[benchmark, layout]
        again = tmp_path / benchmark / layout
        make_dataset(again, layout, benchmark=benchmark, **ARGS[layout])
        assert _annotation_bytes(again) == _annotation_bytes(out)
    motion = written_all["motion", "manifest"][1]
    assert motion.items[0].boxes != written["manifest"][1].items[0].boxes  # another benchmark, the same seed
    other = make_dataset(tmp_path / "other", "manifest", **{**ARGS["manifest"], "seed": 1})
    assert other.items[0].boxes != written["manifest"][1].items[0].boxes


def test_existing_out_is_refused_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = {"clips": 1, "seed": 3, "frames": 8}
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        make_dataset(out, "ucf101", **args)
    assert os.listdir(out) == ["keep.txt"]
    ds = make_dataset(out, "ucf101", overwrite=True, **args)
    assert len(ds.items) == 1 and not (out / "keep.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(make_dataset(empty, "thumos14", kind="GT+rand", **args).items) == 1


class _Interrupted(Exception):
    pass


def _fail_after(n):
    """A progress wrapper that raises after ``n`` clips: a failure midway, from a real caller."""

    def progress(iterable, **_):
        for k, x in enumerate(iterable):
            if k == n:
                raise _Interrupted(f"stopped after {n} clips")
            yield x

    return progress


@pytest.mark.parametrize("layout", list(ARGS))
def test_failure_midway_leaves_nothing(tmp_path, layout):
    out = tmp_path / "ds"
    with pytest.raises(_Interrupted):
        make_dataset(out, layout, progress=_fail_after(2), **ARGS[layout])
    assert os.listdir(tmp_path) == []  # no OUT and no temporary folder


def test_failure_midway_keeps_the_previous_out(tmp_path):
    out = tmp_path / "ds"
    make_dataset(out, "manifest", clips=1, seed=1, frames=8, kind="trimmed")
    before = _annotation_bytes(out)
    with pytest.raises(_Interrupted):
        make_dataset(
            out,
            "manifest",
            clips=3,
            seed=2,
            frames=8,
            kind="trimmed",
            overwrite=True,
            progress=_fail_after(1),
        )
    assert _annotation_bytes(out) == before and sorted(os.listdir(tmp_path)) == ["ds"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_read_only_parent_leaves_nothing(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            make_dataset(parent / "ds", "ucf101", clips=1, seed=0, frames=8)
        assert os.listdir(parent) == []
    finally:
        parent.chmod(0o755)


@pytest.mark.parametrize(
    "layout, kwargs, what",
    [
        ("kinetics", {}, "layout must be one of"),
        ("ucf101", {"kind": "GT+rand"}, "holds clips of kind trimmed"),
        ("thumos14", {"clips": 0}, "clips must be an integer"),
        ("thumos14", {"size": (63, 64)}, "even sides"),
        ("thumos14", {"frames": 4, "gt_length": 3}, "frames - gt_length >= 2"),
        ("manifest", {"kind": "trimmed", "gt_length": 3}, "gt_length applies to 'rand+GT+rand'"),
        ("manifest", {"fps": 0}, "fps must be a number"),
        ("thumos14", {"benchmark": "motions"}, "benchmark must be one of appearance, motion"),
    ],
)
def test_bad_arguments(tmp_path, layout, kwargs, what):
    args = {"clips": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=re.escape(what)):
        make_dataset(tmp_path / "ds", layout, **args)
    assert os.listdir(tmp_path) == []


def test_cli_make_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    argv = [
        "make-dataset",
        str(out),
        "--layout",
        "manifest",
        "--clips",
        "2",
        "--seed",
        "7",
        "--frames",
        "8",
        "--kind",
        "trimmed",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"wrote 2 clips (appearance benchmark, manifest layout, 4 files) to {out}" in text
    assert "read back: 2 items, 7 classes, 0 segments, 2 items with boxes" in text
    ds = read_dataset(out)
    assert [it.label for it in ds.items] == [0, 1]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ebr-ref make-dataset: error: ") and "--overwrite" in err and "\n" not in err
    assert main(argv + ["--overwrite", "-q"]) == 0 and capsys.readouterr().out == ""
    motion = tmp_path / "motion"
    argv = ["make-dataset", str(motion), "--layout", "ucf101", "--clips", "2", "--frames", "8"]
    assert main(argv + ["--benchmark", "motion"]) == 0
    text = capsys.readouterr().out
    assert f"wrote 2 clips (motion benchmark, ucf101 layout, 6 files) to {motion}" in text
    assert "read back: 2 items, 8 classes, 0 segments, 2 items with boxes" in text
    assert read_dataset(motion).class_names == synthetic.motion.ACTIONS
    assert read_synthetic_spec(motion)["benchmark"] == "motion"
    assert main(argv[:2] + ["--benchmark", "shapes"] + argv[2:]) == 2
    assert "invalid choice: 'shapes'" in capsys.readouterr().err
    bad = ["make-dataset", str(tmp_path / "x"), "--layout", "ucf101", "--clips", "1", "--size", "64"]
    assert main(bad) == 2
    assert "--size must be HxW" in capsys.readouterr().err
