"""The ``ebr-ref`` command line, run for real in subprocesses on tiny inputs.

Inputs are made here: tiny models in the canonical format, a synthetic clip
saved as PNG frames and as an MP4 written by the ffmpeg binary that
imageio-ffmpeg ships, a torchvision-style VGG16 state dict saved with torch
(converted on the fly by ``weights_io``). Every output file is decoded again;
numbers in ``results.npz`` are checked against an in-process run of
:func:`ebr_ref.grounding.ground.ground` on the decoded input, and the CLI's preprocessing
against frames read back independently (Pillow).
"""

import json
import os
import subprocess
import sys

import numpy
import pytest

from ebr_ref import synthetic
from ebr_ref.grounding.ground import ground
from ebr_ref.models import load_model, save_model, sequential

PIL = pytest.importorskip("PIL.Image")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

T = 8
NAMES = list(synthetic.ACTIONS)
IDENTITY = {
    "name": "identity",
    "channel_order": "RGB",
    "scale": 1.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
}
TINY_LSTM = [
    ("conv1", "conv", {"out_channels": 6, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("conv2", "conv", {"out_channels": 8, "kernel": 3, "padding": 1}),
    ("relu2", "relu"),
    ("pool2", "maxpool", {"kernel": 2}),
    ("flatten", "flatten"),
    ("fc7", "fc", {"out_features": 16}),
    ("relu7", "relu"),
    ("lstm1", "lstm", {"hidden": 12}),
    ("fc8", "fc", {"out_features": len(NAMES)}),
]


def run_cli(*args, cwd=None, timeout=120):
    """``python -m ebr_ref ARGS``; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "ebr_ref", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def assert_user_error(r, *needles):
    """Exit status 2, exactly one line on stderr naming the command, no traceback, nothing on stdout."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ebr-ref") and ": error: " in lines[0], lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = sequential(
        TINY_LSTM,
        (3, 32, 32),
        seed=0x71A7,
        meta={"name": "tiny_lstm", "class_names": NAMES, "readout": "conv2", "preprocessing": IDENTITY},
    )
    save_model(model, d / "tiny.npz")
    clip = synthetic.make_clip(
        "rand+GT", label="pulse", rand_label="slide", seed=0xC11, num_frames=T, size=(32, 40)
    )
    frames = numpy.rint(clip.frames.transpose(0, 2, 3, 1) * 255).astype(numpy.uint8)  # (T, 32, 40, 3)
    fdir = d / "frames"
    fdir.mkdir()
    for t in range(T):
        PIL.fromarray(frames[t]).save(fdir / f"img{t}.png")
    mp4 = d / "clip.mp4"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-y",
            "-loglevel",
            "error",
            "-framerate",
            "8",
            "-i",
            str(fdir / "img%d.png"),
            "-c:v",
            "libx264rgb",
            "-qp",
            "0",
            "-pix_fmt",
            "rgb24",
            str(mp4),
        ],
        check=True,
        capture_output=True,
    )
    with open(d / "boxes.txt", "w") as f:  # the GT actor's boxes, decoded-frame indices and pixels
        for t in range(T):
            if numpy.all(numpy.isfinite(clip.boxes[t])):
                f.write(f"{t} " + " ".join(str(int(v)) for v in clip.boxes[t]) + "\n")
    return {
        "dir": d,
        "model": d / "tiny.npz",
        "frames": fdir,
        "mp4": mp4,
        "boxes": d / "boxes.txt",
        "clip": clip,
        "pixels": frames,
    }


@pytest.fixture(scope="module")
def ground_run(assets):
    out = assets["dir"] / "out_video"
    r = run_cli(
        "ground",
        assets["mp4"],
        "--model",
        assets["model"],
        "--target",
        "pulse",
        "--target",
        "0",
        "--interval",
        "4:7",
        "--boxes",
        assets["boxes"],
        "--out",
        out,
    )
    return r, out


def test_ground_video_writes_decodable_outputs(assets, ground_run):
    r, out = ground_run
    assert r.returncode == 0, r.stderr
    assert "pulse" in r.stdout and "detected" in r.stdout and str(out) in r.stdout
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"] == "ground" and doc["method"] == "cEB-R" and doc["layer"] == "conv2"
    assert doc["lstm_rule"] == "caffe" and doc["input"]["kind"] == "video" and doc["input"]["frames"] == T
    assert [t["name"] for t in doc["targets"]] == ["pulse", "slide"]
    first = doc["targets"][0]
    assert (
        first["gt"] == [4, 7]
        and len(first["detected"]) == 2
        and 0 <= first["detected"][0] <= first["detected"][1] < T
    )
    assert isinstance(first["iou"], float) and isinstance(first["temporal_pointing_hit"], bool)
    annotated = int(numpy.all(numpy.isfinite(assets["clip"].boxes), axis=1).sum())
    assert first["pointing"]["hits"] + first["pointing"]["misses"] == annotated
    assert len(first["evidence"]) == T and "pointing" not in doc["targets"][1]
    z = numpy.load(out / "results.npz")
    assert {
        "maps",
        "evidence",
        "probs",
        "clip",
        "frames",
        "target",
        "method",
        "layer",
        "lstm_rule",
        "seed_steps",
    } <= set(z.files)
    assert (
        z["maps"].shape == (2, T, 16, 16)
        and z["evidence"].shape == (2, T)
        and z["probs"].shape == (T, len(NAMES))
    )
    assert z["target"].tolist() == [2, 0] and str(z["method"]) == "cEB-R"
    for tag in ("class-2-pulse", "class-0-slide"):
        files = doc["files"][tag]
        with PIL.open(out / files["gif"]) as im:
            assert im.n_frames == T and im.size[0] % 16 == 0 and im.size[1] % 16 == 0 and im.size[0] >= 256
        with PIL.open(out / files["contact_sheet"]) as im:
            assert im.format == "PNG" and im.size[0] > 0
        from ebr_ref.tools.video import read_video

        mp4, info = read_video(out / files["mp4"])
        assert mp4.shape[0] == T
    with PIL.open(out / "evidence.png") as im:
        assert im.format == "PNG" and im.size[0] == 800
    with PIL.open(out / doc["files"]["summary"]) as im:
        assert im.format == "PNG" and im.size[1] > 600  # two rows of frames above the two-panel plot


def test_ground_numbers_match_an_in_process_run(assets, ground_run):
    _, out = ground_run
    z = numpy.load(out / "results.npz")
    # the 32 x 40 frames, covered and centre-cropped to 32 x 32: columns 4..35 (lossless video)
    expect = assets["pixels"][:, :, 4:36].transpose(0, 3, 1, 2) / 255.0
    numpy.testing.assert_allclose(z["clip"], expect, atol=1e-12)
    model = load_model(assets["model"])
    g = ground(model, expect, [2, 0], method="cEB-R", layer="conv2")
    numpy.testing.assert_allclose(z["maps"], g.maps, rtol=1e-12, atol=1e-15)
    numpy.testing.assert_allclose(z["evidence"], g.evidence, rtol=1e-12, atol=1e-15)


def test_ground_frame_folder_quiet(assets):
    out = assets["dir"] / "out_frames"
    r = run_cli(
        "ground",
        assets["frames"],
        "--model",
        assets["model"],
        "--target",
        "bounce",
        "--method",
        "EB-R",
        "--lstm-rule",
        "eb",
        "--seed-steps",
        "all",
        "--fit",
        "stretch",
        "--no-mp4",
        "--quiet",
        "--dtype",
        "float32",
        "--every",
        "2",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    doc = json.loads((out / "results.json").read_text())
    assert doc["method"] == "EB-R" and doc["lstm_rule"] == "eb" and doc["dtype"] == "float32"
    assert doc["input"]["decoded_indices"] == [0, 2, 4, 6] and doc["diagnostics"]["seed_steps"] == [
        0,
        1,
        2,
        3,
    ]
    assert not any(f.endswith(".mp4") for f in os.listdir(out))
    assert numpy.load(out / "results.npz")["maps"].shape == (1, 4, 16, 16)


def _tiny_vgg_state_dict(torch):
    g = torch.Generator().manual_seed(0x7E6)
    cfg = [4, 4, "M", 4, 4, "M", 6, 6, 6, "M", 6, 6, 6, "M", 6, 6, 6, "M"]
    sd, i, c = {}, 0, 3
    for v in cfg:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(v, generator=g) * 0.01
        c, i = v, i + 2
    for k, (o, n) in zip((0, 3, 6), ((8, 6 * 49), (8, 8), (5, 8))):
        sd[f"classifier.{k}.weight"] = torch.randn(o, n, generator=g) * (2 / n) ** 0.5
        sd[f"classifier.{k}.bias"] = torch.zeros(o)
    return sd


@pytest.fixture(scope="module")
def torch_checkpoint(assets):
    torch = pytest.importorskip("torch")
    sd = _tiny_vgg_state_dict(torch)
    path = assets["dir"] / "tiny_vgg.pt"
    torch.save(sd, path)
    return path, {k: v.numpy() for k, v in sd.items()}


def test_ground_with_a_checkpoint_converted_on_the_fly(assets, torch_checkpoint):
    path, _ = torch_checkpoint
    out = assets["dir"] / "out_vgg"
    r = run_cli(
        "ground",
        assets["frames"],
        "--model",
        path,
        "--target",
        "3",
        "--max-frames",
        "2",
        "--no-mp4",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["method"] == "cEB" and doc["layer"] == "conv5_1" and doc["lstm_rule"] is None
    assert doc["model"]["loaded_as"] == "converted (torchvision_vgg16)" and doc["input"]["model_size"] == [
        224,
        224,
    ]
    assert numpy.load(out / "results.npz")["maps"].shape == (1, 2, 14, 14)


def test_convert_and_inspect(assets, torch_checkpoint):
    path, sd = torch_checkpoint
    names = assets["dir"] / "names.txt"
    names.write_text("a\nb\nc\nd\ne\n")
    target = assets["dir"] / "converted.npz"
    r = run_cli("convert", path, "--class-names", names, "--out", target)
    assert r.returncode == 0, r.stderr
    m = load_model(target)
    assert m.meta["class_names"] == list("abcde") and m.layer_names[0] == "conv1_1"
    numpy.testing.assert_array_equal(m.params["conv1_1.weight"], sd["features.0.weight"])
    numpy.testing.assert_array_equal(m.params["conv5_3.bias"], sd["features.28.bias"])
    numpy.testing.assert_array_equal(m.params["fc8.weight"], sd["classifier.6.weight"])
    r = run_cli("inspect", path)
    assert r.returncode == 0, r.stderr
    for needle in (
        "torch checkpoint",
        "features.0.weight",
        "4x3x3x3",
        "torchvision_vgg16",
        "conv5_3",
        "pool5",
        "6x7x7",
    ):
        assert needle in r.stdout, needle
    r = run_cli("inspect", target, "--quiet")
    assert (
        r.returncode == 0
        and "ebr_ref canonical model" in r.stdout
        and "classes (5): a, b, c, d, e" in r.stdout
    )
    import weights_io  # weights_io's own canonical files (kind "weights") are read through weights_io

    weights_io.save_canonical(str(assets["dir"] / "w.npz"), *weights_io.convert(str(path)))
    r = run_cli("inspect", assets["dir"] / "w.npz")
    assert r.returncode == 0 and "npz checkpoint" in r.stdout and "torchvision_vgg16" in r.stdout


def test_demo_with_a_given_model(assets):
    model = sequential(
        TINY_LSTM,
        (3, 32, 32),
        seed=0xDE7,
        meta={"name": "tiny_demo", "class_names": NAMES, "readout": "conv2", "preprocessing": IDENTITY},
    )
    save_model(model, assets["dir"] / "demo_model.npz")
    out = assets["dir"] / "out_demo"
    cap = _captioner(assets["dir"] / "demo_cap.npz", talkative=True)
    r = run_cli(
        "demo",
        "--model",
        assets["dir"] / "demo_model.npz",
        "--caption-model",
        cap,
        "--frames",
        T,
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"] == "demo" and len(doc["targets"]) == 3
    assert "caption (greedy" in r.stdout and doc["caption"]["caption"] == " ".join(["red"] * 30)
    word = doc["targets"][2]  # the caption word, on its own clip (two objects, word-level ground truth)
    # this captioner names no object ('red' 30 times): its most confident word is grounded, without a truth
    assert doc["caption"]["words"] == ["red"] and "'red'" in word["name"] and word.get("gt") is None
    pos = doc["caption"]["positions"][0]
    assert word["tag"] == f"word-{pos}-red" and f"(caption word {pos})" in word["name"]
    with PIL.open(out / doc["files"][word["tag"]]["gif"]) as im:
        assert im.n_frames == T
    assert numpy.load(out / "results.npz")["caption_maps"].shape == (1, T, 8, 8)
    a, b = doc["targets"][:2]
    assert a["gt"] == [0, T // 2 - 1] and b["gt"] == [T // 2, T - 1]  # GT+rand: the two actions' frames
    assert a["pointing"]["hits"] + a["pointing"]["misses"] == T // 2
    for line in ("predicted:", "detected", "wrote"):
        assert line in r.stdout
    assert doc["clip"]["actions"] == [a["name"], b["name"]]


@pytest.mark.skipif(
    "synthetic_cnn_lstm" not in __import__("ebr_ref.models", fromlist=["x"]).shipped_names(),
    reason="the shipped synthetic models are not installed",
)
def test_demo_default_runs_with_the_shipped_models(tmp_path):
    r = run_cli("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "ebr_ref_demo"
    doc = json.loads((out / "results.json").read_text())
    assert doc["model"]["loaded_as"] == "shipped" and len(doc["targets"]) >= 2
    assert r.stderr == ""  # synthetic models on synthetic clips: no warning
    from ebr_ref.synthetic.captions import SHAPES

    cap = doc["caption"]  # the caption's nouns, each scored against its object's frames and boxes
    words = cap["caption"].split()
    assert cap["words"] and all(w in SHAPES.values() for w in cap["words"])
    assert [words[k] for k in cap["positions"]] == cap["words"]
    nouns = [t for t in doc["targets"] if t["tag"].startswith("word-")]
    assert [t["tag"] for t in nouns] == [f"word-{k}-{w}" for k, w in zip(cap["positions"], cap["words"])]
    for t in nouns:
        assert t["object"]["shape"] in t["name"] and t["gt"] is not None
        assert t["pointing"]["hits"] + t["pointing"]["misses"] == t["gt"][1] - t["gt"][0] + 1
    for v in doc["files"].values():
        for f in v.values() if isinstance(v, dict) else [v]:
            assert (out / f).stat().st_size > 0


def test_compare_self_and_a_perturbed_copy(assets, ground_run):
    _, out = ground_run
    r = run_cli("compare", out / "results.npz", "--model", assets["model"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3/3 entries within" in r.stdout
    z = dict(numpy.load(out / "results.npz"))
    z["maps"] = z["maps"].copy()
    z["maps"][1, 3, 2, 5] += 10 * numpy.abs(z["maps"]).max()
    z["signal/pool1"] = numpy.zeros((2, T, 6, 16, 16))
    numpy.savez(assets["dir"] / "perturbed.npz", **z)
    r = run_cli("compare", assets["dir"] / "perturbed.npz", "--model", assets["model"])
    assert r.returncode == 1, r.stdout + r.stderr
    maps_line = next(line for line in r.stdout.splitlines() if line.strip().startswith("maps"))
    assert "k=1 t=3 y=2 x=5" in maps_line and "DIFFERS" in maps_line
    assert "first difference (forward entries, then backward order): maps" in r.stdout


def _captioner(path, *, talkative=False):
    """A small random captioner; ``talkative`` biases its output to 'red' and away from <eos>."""
    from ebr_ref.models.caption import save_captioner, small_captioner

    m = small_captioner(
        ["a", "red", "square", "slides", "disk", "pulses"],
        input_size=32,
        channels=(4, 4, 4),
        fc=16,
        embed=8,
        hidden=(8, 8),
        seed=0xCA9,
        meta={"preprocessing": IDENTITY},
    )
    if talkative:
        m.params["predict.bias"] = m.params["predict.bias"].copy()
        m.params["predict.bias"][m.vocab.eos] = -50.0
        m.params["predict.bias"][m.vocab.index("red")] = 50.0
    save_captioner(m, path)
    return path


def test_caption_grounds_each_word(assets):
    cap = _captioner(assets["dir"] / "cap.npz")
    out = assets["dir"] / "out_caption"
    r = run_cli(
        "caption",
        assets["frames"],
        "--model",
        cap,
        "--caption",
        "a red square slides",
        "--words",
        "red",
        "slides",
        "--no-mp4",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["caption"] == "a red square slides" and doc["decoded"] == "forced"
    assert [t["word_step"] for t in doc["targets"]] == [[1], [3]]
    # one tag scheme for caption words (as the demo's): the word's caption position
    assert set(doc["files"]) >= {"word-1-red", "word-3-slides", "evidence_plot", "json", "npz"}
    assert numpy.load(out / "results.npz")["maps"].shape == (2, T, 8, 8)
    # a captioner is not a classifier, and the other way round
    assert_user_error(
        run_cli("ground", assets["frames"], "--model", cap, "--target", "0", "--out", out), "captioner"
    )
    assert_user_error(
        run_cli("caption", assets["frames"], "--model", assets["model"], "--out", out), "classifier"
    )
    assert_user_error(
        run_cli("caption", assets["frames"], "--model", cap, "--caption", "a blue cube", "--out", out), "blue"
    )


def _bad(assets, tmp):
    junk = tmp / "junk.pt"
    junk.write_bytes(b"\x00\x01 definitely not a checkpoint" * 20)
    bad_mp4 = tmp / "bad.mp4"
    bad_mp4.write_bytes(b"\x00\x00\x00 not a video at all" * 50)
    trunc = tmp / "trunc.npz"
    trunc.write_bytes(assets["model"].read_bytes()[:200])
    (tmp / "trunc.json").write_text((assets["dir"] / "tiny.json").read_text())
    afile = tmp / "a_file"
    afile.write_text("x")
    empty = tmp / "empty_dir"
    empty.mkdir(exist_ok=True)
    m, f, o = assets["model"], assets["frames"], tmp / "o"
    no_readout = tmp / "no_readout.npz"  # no sidecar 'readout', no conv5_1 (a converted model can be so)
    save_model(sequential(TINY_LSTM, (3, 32, 32), seed=1, meta={"preprocessing": IDENTITY}), no_readout)
    cap = _captioner(tmp / "cap.npz")
    g = ("ground", f, "--model", m, "--target", "0", "--out", o)
    c = ("caption", f, "--model", cap, "--caption", "a red square slides", "--out", o)
    return [
        # every message names the option the user typed
        ((*g, "--every", "0"), "argument --every"),
        ((*g, "--start", "-1"), "argument --start"),
        ((*g, "--max-frames", "0"), "argument --max-frames"),
        ((*g, "--max-frame-pixels", "0"), "argument --max-frame-pixels"),
        ((*g, "--chunk-size", "0"), "argument --chunk-size"),
        ((*g, "--fps", "-1"), "argument --fps"),
        ((*g, "--fps", "nan"), "argument --fps"),
        ((*g, "--start", "1000"), "--start 1000"),
        ((*g, "--seed-steps", "500"), "--seed-steps 500"),
        ((*g, "--seed-steps", "-3"), "--seed-steps -3"),
        ((*g, "--interval", "5:200"), "--interval 5:200"),
        ((*g, "--interval", "1:2", "--interval", "3:4"), "--interval"),
        ((*g, "--layer", "fc8"), "--layer fc8"),
        ((*g, "--layer", "nope"), "--layer nope"),
        ((*g, "--input-size", "5"), "--input-size"),
        (("ground", f, "--model", no_readout, "--target", "0", "--out", o), "--layer"),
        (("ground", f, "--model", tmp / "nomodel.npz", "--target", "0", "--out", o), "--model"),
        (("demo", "--seed", "x", "--out", o), "argument --seed"),
        (("demo", "--seed", "-1", "--out", o), "argument --seed"),
        (("demo", "--frames", "100000", "--out", o), "argument --frames"),
        (("demo", "--caption-model", tmp / "nocap.npz", "--out", o), "--caption-model"),
        (("demo", "--caption-model", m, "--out", o), "--caption-model"),
        (("demo", "--method", "EB", "--out", o), "--method EB"),
        (("demo", "--seed-steps", "99", "--out", o), "--seed-steps 99"),
        ((*c, "--words", "blue"), "--words"),
        ((*c, "--words", "9"), "--words"),
        ((*c, "--max-len", "0"), "argument --max-len"),
        ((*c, "--chunk-size", "0"), "argument --chunk-size"),
        ((*c, "--words", "red", "--interval", "1:2", "--interval", "3:4"), "--interval"),
        ((*c, "--words", "red", "--interval", "5:200"), "--interval 5:200"),
        ((*c, "--layer", "nope"), "--layer nope"),
        (("convert", m, "--input-size", "5", "--out", tmp / "y.npz"), "--input-size"),
        (("ground", tmp / "missing.mp4", "--model", m, "--target", "0", "--out", o), "missing.mp4"),
        (("ground", f, "--model", tmp / "nomodel.npz", "--target", "0", "--out", o), "nomodel.npz"),
        (("ground", f, "--model", junk, "--target", "0", "--out", o), "junk.pt"),
        (("ground", f, "--model", trunc, "--target", "0", "--out", o), "trunc.npz"),
        (("ground", bad_mp4, "--model", m, "--target", "0", "--out", o), "bad.mp4"),
        (("ground", empty, "--model", m, "--target", "0", "--out", o), "no image files"),
        (("ground", f, "--model", m, "--target", "jump", "--out", o), "jump"),
        (("ground", f, "--model", m, "--target", "99", "--out", o), "out of range"),
        (("ground", f, "--model", m, "--target", "0", "--interval", "5-3", "--out", o), "--interval"),
        (("ground", f, "--model", m, "--target", "0", "--layer", "conv9", "--out", o), "conv9"),
        (("ground", f, "--model", m, "--target", "0", "--method", "Grad-CAM", "--out", o), "Grad-CAM"),
        (("ground", f, "--model", m, "--target", "0", "--method", "cEB", "--out", o), "recurrent"),
        (("ground", f, "--model", m, "--target", "0", "--out", afile), "not a folder"),
        (("ground", f, "--model", m, "--target", "0", "--boxes", tmp / "nob.txt", "--out", o), "nob.txt"),
        (("ground", f, "--model", m, "--target", "0", "--seed-steps", "x,y", "--out", o), "--seed-steps"),
        (("ground", f, "--model", m, "--target", "0", "--bogus", "--out", o), "--bogus"),
        (("ground", f, "--model", m), "required"),
        (("frobnicate",), "frobnicate"),
        (("demo", "--frames", "2", "--out", o), "--frames"),
        (("convert", junk, "--out", tmp / "x.npz"), "junk.pt"),
        (("convert", m, "--out", tmp / "x.bin"), ".npz"),
        (("inspect", tmp / "nothing.pt"), "nothing.pt"),
        (("inspect", junk), "junk.pt"),
        (("compare", junk, "--model", m), "junk.pt"),
        (("compare", assets["dir"] / "tiny.npz", "--model", m), "no clip"),
    ]


def test_user_mistakes_give_one_line_and_exit_2(assets, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cases = _bad(assets, tmp_path)
    with ThreadPoolExecutor(4) as pool:  # independent processes; mostly interpreter start-up
        results = list(pool.map(lambda case: run_cli(*case[0]), cases))
    for (_argv, needle), r in zip(cases, results):
        assert_user_error(r, needle)


def test_missing_cli_extra_is_a_one_line_error(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.modules['PIL'] = None\n"
        "from ebr_ref.cli import main\n"
        "sys.exit(main(['demo', '--out', 'x']))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert_user_error(r, "pillow, matplotlib", "pip install 'ebr_ref[cli]'")
    assert not (tmp_path / "x").exists()


def test_imports_stay_light():
    code = (
        "import sys, ebr_ref, ebr_ref.cli, ebr_ref.tools.video, ebr_ref.tools.viz, ebr_ref.tools.compare\n"
        "ebr_ref.cli.build_parser()\n"
        "heavy = [m for m in ('torch', 'cupy', 'matplotlib', 'PIL', 'imageio', 'imageio_ffmpeg', 'tqdm', "
        "'weights_io') if m in sys.modules]\n"
        "print(heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_console_script_and_version(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "ebr-ref")
    if not os.path.exists(script):
        pytest.skip("the ebr-ref console script is not installed in this environment (pip install -e .)")
    r = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ebr_ref ")
    r = subprocess.run([script, "ground", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--lstm-rule" in r.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminal test written for Linux")
def test_progress_bars_on_a_terminal_only(assets):
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    out = assets["dir"] / "out_tty"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ebr_ref",
            "ground",
            str(assets["mp4"]),
            "--model",
            str(assets["model"]),
            "--target",
            "1",
            "--no-mp4",
            "--out",
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    stdout, _ = p.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    tty = b"".join(chunks).decode("utf-8", "replace")
    assert p.returncode == 0
    for desc in ("decoding video", "cEB-R on 8 frames", "writing outputs"):
        assert desc in tty, (desc, tty[-500:])
    assert "it/s" in tty or "s/it" in tty
    assert b"%|" not in stdout  # the summary on stdout stays clean
