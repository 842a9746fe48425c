"""What a new user meets on the command line, beyond the exit codes of tests/cli/test_cli.py.

* A model whose sidecar says it was trained on synthetic clips warns (one line on
  stderr, also with ``--quiet``, and in ``results.json``) when it is run on other
  input, and stays silent inside a folder written by ``ebr-ref make-dataset``.
* Every option has a help text, and the defaults the help states are the ones used.
* A model without a default read-out layer is refused with a message that names
  ``--layer`` and the model's convolution layers.
* ``convert`` creates the folder of ``--out`` as ``ground`` and ``demo`` do (and
  removes it again when the conversion fails).
* The notes under the summary table say what the reader sees: a peak of the
  evidence outside the ground truth, frames whose evidence is numerically zero.
"""

import argparse
import json

import numpy
import pytest

from ebr_ref import synthetic
from ebr_ref.cli import build_parser
from ebr_ref.cli._common import UserError
from ebr_ref.cli._report import analyse, notes
from ebr_ref.models import save_model, sequential, shipped_names
from tests.cli.test_cli import IDENTITY, TINY_LSTM, assert_user_error, run_cli

PIL = pytest.importorskip("PIL.Image")
SHIPPED = pytest.mark.skipif(
    not {"synthetic_cnn_lstm", "synthetic_captioner"} <= set(shipped_names()),
    reason="the shipped synthetic models are not installed",
)


def _subparsers():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


MINE = ("demo", "ground", "caption", "convert", "inspect")  # compare, evaluate, make-dataset: their own tests


def test_every_option_and_argument_has_help():
    for name, sub in _subparsers().items():
        if name not in MINE:
            continue
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue
            what = action.option_strings or action.dest
            assert action.help and action.help.strip(), f"ebr-ref {name}: {what}"


def test_the_seed_steps_default_in_the_help_is_the_one_used():
    sub = _subparsers()
    for name, default in (("demo", "all"), ("ground", "last")):
        action = next(a for a in sub[name]._actions if "--seed-steps" in a.option_strings)
        assert action.default == default and f"{default} (default)" in action.help, (name, action.help)


def _noise_frames(folder, n=6, size=64):
    """``n`` frames of coloured noise: not what the synthetic models were trained on."""
    folder.mkdir(parents=True)
    rng = numpy.random.default_rng(0x4E01)
    for t in range(n):
        PIL.fromarray(rng.integers(0, 256, (size, size, 3), dtype=numpy.uint8)).save(folder / f"f{t}.png")
    return folder


@SHIPPED
def test_a_synthetic_model_on_other_input_warns(tmp_path):
    frames = _noise_frames(tmp_path / "noise")
    r = run_cli(
        "ground",
        frames,
        "--model",
        "synthetic_cnn_lstm",
        "--target",
        "rotate",
        "--no-mp4",
        "--quiet",
        "--out",
        tmp_path / "g",
    )
    assert r.returncode == 0 and r.stdout == "", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "ebr-ref ground: warning: synthetic_cnn_lstm was trained on synthetic clips "
        "(ebr_ref.synthetic.make_batch)"
    ), lines
    doc = json.loads((tmp_path / "g" / "results.json").read_text())
    assert doc["warnings"] == [lines[0].split(": warning: ", 1)[1]]
    r = run_cli("caption", frames, "--model", "synthetic_captioner", "--no-mp4", "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ebr-ref caption: warning: synthetic_captioner was trained on synthetic clips")
    assert json.loads((tmp_path / "c" / "results.json").read_text())["warnings"]


@SHIPPED
def test_no_warning_inside_a_synthetic_dataset_folder(tmp_path):
    root = tmp_path / "dataset"
    clip = synthetic.make_clip("trimmed", label="rotate", seed=0x5D, num_frames=6)
    frames = numpy.rint(clip.frames.transpose(0, 2, 3, 1) * 255).astype(numpy.uint8)
    (root / "videos" / "clip_0").mkdir(parents=True)
    for t, f in enumerate(frames):
        PIL.fromarray(f).save(root / "videos" / "clip_0" / f"{t}.png")
    (root / "synthetic.json").write_text(json.dumps({"format": "ebr_ref synthetic dataset", "clips": 1}))
    r = run_cli(
        "ground",
        root / "videos" / "clip_0",
        "--model",
        "synthetic_cnn_lstm",
        "--target",
        "rotate",
        "--no-mp4",
        "--quiet",
        "--out",
        tmp_path / "g",
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert json.loads((tmp_path / "g" / "results.json").read_text())["warnings"] == []


def test_no_default_readout_layer_names_the_option_and_the_conv_layers(tmp_path):
    frames = _noise_frames(tmp_path / "f", n=3, size=32)
    path = tmp_path / "converted.npz"  # no 'readout' in its sidecar, no conv5_1, as a converted model may be
    save_model(sequential(TINY_LSTM, (3, 32, 32), seed=2, meta={"preprocessing": IDENTITY}), path)
    r = run_cli("ground", frames, "--model", path, "--target", "0", "--out", tmp_path / "o")
    assert_user_error(r, "no default read-out layer", "choose one with --layer", "conv1, conv2")
    r = run_cli(
        "ground",
        frames,
        "--model",
        path,
        "--target",
        "0",
        "--layer",
        "conv2",
        "--no-mp4",
        "-q",
        "--out",
        tmp_path / "o",
    )
    assert r.returncode == 0, r.stderr
    r = run_cli("convert", path, "--out", tmp_path / "again.npz")  # convert says so when it writes one
    assert r.returncode == 0 and "no default read-out layer" in r.stdout and "--layer" in r.stdout


def test_convert_creates_the_out_folder_and_removes_it_when_it_fails(tmp_path):
    src = tmp_path / "m.npz"
    save_model(sequential(TINY_LSTM, (3, 32, 32), seed=3, meta={"readout": "conv2"}), src)
    r = run_cli("convert", src, "--out", tmp_path / "a" / "b" / "m.npz")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "b" / "m.npz").is_file() and (tmp_path / "a" / "b" / "m.json").is_file()
    names = tmp_path / "names.txt"
    names.write_text("one\ntwo\n")  # two names for seven classes: refused after the conversion
    r = run_cli("convert", src, "--class-names", names, "--out", tmp_path / "c" / "d" / "m.npz")
    assert_user_error(r, "--class-names")
    assert not (tmp_path / "c").exists()
    (tmp_path / "file").write_text("x")
    assert_user_error(run_cli("convert", src, "--out", tmp_path / "file" / "m.npz"), "--out", "not a folder")


def test_notes_say_what_the_reader_sees():
    S = numpy.array([0.2, 0.3, 0.25, 0.9, -0.1, 1e-12, -3e-13, 2e-14])
    item = analyse(
        {"name": "rotate", "evidence": S, "maps": S[:, None, None] * numpy.ones((1, 2, 2)), "gt": (0, 2)},
        (8, 8),
    )
    assert item["peak_frame"] == 3 and item["zero_frames"] == [5, 6, 7]
    lines = notes([item])
    assert lines[0] == (
        "rotate: the largest evidence S is at frame 3, 1 frame after its ground truth [0, 2] "
        "('peak in GT: no'); the evidence plot marks it"
    )
    assert lines[1] == (
        "rotate: S is numerically zero (|S| <= 1e-06 x the largest sum |map| of a frame) on "
        "3 of 8 frames (5-7): no evidence either way there (hatched grey in the evidence "
        "plot)"
    )
    inside = analyse(
        {"name": "x", "evidence": S, "maps": S[:, None, None] * numpy.ones((1, 2, 2)), "gt": (3, 4)}, (8, 8)
    )
    assert len(notes([inside])) == 1  # the peak in the ground truth: nothing to explain but the zeros
    # maps whose signal cancels in every frame (cEB of a per-frame CNN): every S is numerically zero
    maps = numpy.zeros((3, 2, 2))
    maps[:, 0, 0], maps[:, 1, 1] = 0.25, -0.25
    maps[:, 0, 1] = [1e-17, -2e-17, 0.0]
    cancelled = analyse({"name": "c", "evidence": maps.sum(axis=(1, 2)), "maps": maps}, (8, 8))
    assert cancelled["zero_frames"] == [0, 1, 2]


def test_an_interval_is_never_clipped_silently():
    with pytest.raises(UserError, match=r"interval \[1, 9\] ends after the clip's last frame \(3\)"):
        analyse({"name": "x", "evidence": numpy.ones(4), "maps": numpy.ones((4, 2, 2)), "gt": (1, 9)}, (8, 8))
