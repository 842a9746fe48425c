"""``ebr-ref`` against hostile inputs: one line on stderr and exit 2, never a traceback, under a memory limit.

Three classes of input, each crafted by the test as a tiny file:

* model and results files that lie (a ``.npy`` header claiming 10^12 floats
  with the sidecar's sha256 updated, a corrupted zip directory, a text file
  given as results) -- ``inspect``, ``ground`` and ``compare`` share one
  checked loader;
* frames over the size limit (a 48 KB PNG of 400 megapixels, a 120-megapixel
  PNG) and a ``--preprocessing`` string of 20,000 nested ``[``;
* non-finite weights (a NaN in a bias: a torch file for ``convert``, a
  canonical model for ``ground`` and ``inspect``) and a model whose float32
  forward overflows.

Every command runs in a child with ``RLIMIT_AS`` of 1 GiB and a timeout
(tests/hostile_files.py).
"""

import os

import numpy
import pytest

from ebr_ref.models import save_model, sequential
from ebr_ref.models.io import sidecar_path
from tests.hostile_files import (
    IDENTITY,
    LIMIT,
    NAMES,
    TINY,
    assert_one_line_error,
    npy_bytes,
    patch_central_directory,
    png_of_zeros,
    replace_member,
    reseal,
    run_cli,
)

PIL = pytest.importorskip("PIL.Image")


def cli(*argv, timeout=90):
    return run_cli(*argv, limit=LIMIT, timeout=timeout)


def _tiny(seed=3):
    meta = {"name": "tiny", "class_names": NAMES, "readout": "conv1", "preprocessing": IDENTITY}
    return sequential(TINY, (3, 16, 16), seed=seed, meta=meta)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    save_model(_tiny(), d / "good.npz")
    frames = d / "frames"
    frames.mkdir()
    rng = numpy.random.default_rng(0x40571)
    for t in range(4):
        PIL.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=numpy.uint8)).save(frames / f"f{t}.png")
    theirs = d / "theirs.npz"
    numpy.savez(theirs, clip=rng.random((4, 3, 16, 16)), target=numpy.int64(0))
    return d, frames, theirs


def _copy_model(d, name):
    for ext in (".npz", ".json"):
        (d / f"{name}{ext}").write_bytes((d / f"good{ext}").read_bytes())
    return d / f"{name}.npz"


# ---- class 7: model and results files ---------------------------------------------------------------------
def _lying_model(d):
    p = _copy_model(d, "liar")
    bias = _tiny().params["fc8.bias"]
    claim = (1_000_000, 1_000_000)  # 10^12 float64
    replace_member(p, "fc8.bias.npy", npy_bytes(claim, descr=bias.dtype.str, data=bias.tobytes()))
    side = reseal(p)
    side["params"]["fc8.bias"] = {"shape": list(claim), "dtype": bias.dtype.str}
    reseal(p, params=side["params"])  # the sha256 and the listing agree with the lie
    return p


def _corrupt_models(d):
    a = patch_central_directory(_copy_model(d, "method99"), "fc8.bias.npy", method=99)  # NotImplementedError
    b = _copy_model(d, "truncated")
    os.truncate(b, os.path.getsize(b) - 40)  # the end of the central directory is gone (EOFError, BadZipFile)
    for p in (a, b):
        reseal(p)
    return a, b


def test_lying_and_corrupt_model_files_give_one_line(files):
    d, frames, theirs = files
    method99, truncated = _corrupt_models(d)
    models = [
        (_lying_model(d), "member fc8.bias.npy"),
        (method99, "member fc8.bias.npy"),
        (truncated, "truncated.npz"),
    ]
    for p, needle in models:
        for argv in (
            ("inspect", p),
            ("ground", frames, "--model", p, "--target", "0", "--out", d / "o"),
            ("compare", theirs, "--model", p),
        ):
            line = assert_one_line_error(cli(*argv), p.name, needle)
            assert "MemoryError" not in line and "NotImplementedError" not in line.split(": ", 2)[0]
        assert not (d / "o").exists()


def test_hostile_results_and_clip_files_give_one_line(files):
    d, frames, theirs = files
    text = d / "notes.txt"
    text.write_text("maps 1 2 3\n")
    liar = d / "theirs_liar.npz"
    import zipfile

    with zipfile.ZipFile(liar, "w") as zf:
        zf.writestr("clip.npy", npy_bytes((10**6, 10**6), data=b"\0" * 64))
    clip = d / "clip.npy"
    clip.write_bytes(npy_bytes((10**5, 3, 10**3, 10**3), data=b"\0" * 64))
    good = d / "good.npz"
    line = assert_one_line_error(cli("compare", text, "--model", good), "notes.txt", "not a results file")
    assert "pickle" not in line
    assert_one_line_error(cli("compare", liar, "--model", good), "theirs_liar.npz", "member clip.npy")
    r = cli("compare", theirs, "--model", good, "--clip", clip)
    assert_one_line_error(r, "clip.npy", "holds 64 bytes")


# ---- class 8: frames over the size limit, --preprocessing -------------------------------------------------
def test_oversized_frames_and_deep_preprocessing_give_one_line(files):
    d, frames, _ = files
    bomb, big = d / "bomb", d / "big"
    bomb.mkdir()
    big.mkdir()
    png_of_zeros(bomb / "f0.png", 20000, 20000)  # 400 megapixels in about 48 KB
    png_of_zeros(big / "f0.png", 10000, 12000)  # 120 megapixels: Pillow alone accepts it (about 1.3 GB)
    assert os.path.getsize(bomb / "f0.png") < 64_000
    m, o = d / "good.npz", d / "o8"
    assert_one_line_error(cli("ground", bomb, "--model", m, "--target", "0", "--out", o), "f0.png", "pixels")
    assert_one_line_error(
        cli("ground", big, "--model", m, "--target", "0", "--out", o),
        "f0.png",
        "12000 = 120,000,000 pixels exceed the limit of 16,777,216",
    )
    assert_one_line_error(
        cli("ground", frames, "--model", m, "--target", "0", "--out", o, "--max-frame-pixels", "255"),
        "16x16 = 256 pixels exceed the limit of 255",
    )
    deep = "[" * 20000 + "]" * 20000
    assert_one_line_error(
        cli("ground", frames, "--model", m, "--target", "0", "--out", o, "--preprocessing", deep),
        "--preprocessing",
    )
    deep_ok_length = '{"mean": ' + "[" * 1000 + "]" * 1000 + "}"
    assert_one_line_error(
        cli("ground", frames, "--model", m, "--target", "0", "--out", o, "--preprocessing", deep_ok_length),
        "--preprocessing",
        "nested too deeply",
    )
    assert not o.exists()


# ---- class 10: non-finite weights -----------------------------------------------------------------------
def _nan_model(d):
    m = _tiny()
    m.params["fc8.bias"] = m.params["fc8.bias"].copy()
    m.params["fc8.bias"][2] = numpy.nan
    save_model(m, d / "nan.npz", allow_nonfinite=True)
    return d / "nan.npz"


def test_nan_weights_are_refused_naming_the_parameter(files):
    d, frames, theirs = files
    nan = _nan_model(d)
    o = d / "o10"
    assert_one_line_error(
        cli("ground", frames, "--model", nan, "--target", "0", "--out", o),
        "nan.npz",
        "fc8.bias",
        "non-finite",
    )
    assert_one_line_error(cli("compare", theirs, "--model", nan), "fc8.bias", "non-finite")
    line = assert_one_line_error(cli("inspect", nan), "fc8.bias", "--allow-nonfinite")
    assert "non-finite" in line
    r = cli("inspect", nan, "--allow-nonfinite")
    assert r.returncode == 0, r.stderr
    assert "non-finite values (NaN or inf) in 1 tensors" in r.stdout
    table = r.stdout.split("non-finite values (NaN or inf)", 1)[1].splitlines()
    assert table[1].split() == ["tensor", "non-finite", "values", "of"]
    assert table[2].split() == ["fc8.bias", "1", "7"], table
    assert "non-finite values: none" in cli("inspect", d / "good.npz", "--allow-nonfinite").stdout
    assert not o.exists()


def test_a_model_that_overflows_is_reported_not_grounded(files):
    d, frames, _ = files
    m = _tiny().astype("float32")
    for k in ("conv1.weight", "fc7.weight"):
        m.params[k] = m.params[k] * numpy.float32(1e30)  # finite weights; float32 activations overflow
    save_model(m, d / "overflow.npz")
    argv = ("ground", frames, "--model", d / "overflow.npz", "--target", "0", "--out", d / "o11")
    assert_one_line_error(cli(*argv), "NaN or infinite values", "overflowed")
    assert not (d / "o11").exists()


def _tiny_vgg_state_dict(torch):
    """A torchvision-VGG16-shaped state dict with few channels (as tests/cli/test_cli.py)."""
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
    for k, (o, n) in zip((0, 3, 6), ((8, 6 * 49), (8, 8), (5, 8)), strict=True):
        sd[f"classifier.{k}.weight"] = torch.randn(o, n, generator=g) * (2 / n) ** 0.5
        sd[f"classifier.{k}.bias"] = torch.zeros(o)
    return sd


def test_convert_refuses_a_torch_file_with_a_nan(files):
    torch = pytest.importorskip("torch")
    d, frames, _ = files
    sd = _tiny_vgg_state_dict(torch)
    sd["classifier.6.bias"][3] = float("nan")  # fc8.bias in ebr_ref's names
    torch.save(sd, d / "vgg_nan.pt")
    out = d / "vgg.npz"
    for argv in (
        ("convert", d / "vgg_nan.pt", "--out", out),
        ("ground", frames, "--model", d / "vgg_nan.pt", "--target", "0", "--out", d / "o12"),
    ):
        line = assert_one_line_error(cli(*argv), "vgg_nan.pt")
        assert "fc8.bias" in line or "classifier.6.bias" in line, line
        assert "non-finite" in line or "nan" in line.lower(), line
    assert not out.exists() and not os.path.exists(sidecar_path(out)) and not (d / "o12").exists()
    assert not [n for n in os.listdir(d) if n.startswith(".vgg")]
