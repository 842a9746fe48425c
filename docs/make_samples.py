"""Regenerate the sample outputs of docs/cli.md and the picture docs/images/demo.png from the code.

    python docs/make_samples.py           rewrite them in place
    python docs/make_samples.py --check   exit 1, naming each sample that differs (timings aside)

Each text sample sits in docs/cli.md between ``<!-- sample: NAME begin -->`` and
``<!-- sample: NAME end -->`` as one ``console`` block: the command after ``$``,
then what it printed (stdout and stderr, in order). The commands run with
``python -m ebr_ref`` in a fresh temporary folder, on the shipped models and on
inputs made here; seconds (``1.49 s``) vary from run to run and are compared as
``N s``. docs/images/demo.png is the summary.png of ``ebr-ref demo``, stored with
a 256-colour palette (a third of the size); ``--check`` compares its size in
pixels with a fresh run's, not its pixels, which depend on the platform's font
rendering. tests/docs/test_samples.py runs the check.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CLI_PAGE = os.path.join(HERE, "cli.md")
DEMO_PNG = os.path.join(HERE, "images", "demo.png")

# name -> (command as shown, with the prompt's "ebr-ref" for "python -m ebr_ref"; setup of the folder)
SAMPLES = {
    "target-error": ("ebr-ref ground clip.mp4 --model synthetic_cnn_lstm --target Jump --out out", None),
    "warning": (
        "ebr-ref ground my_frames/ --model synthetic_cnn_lstm --target rotate --out out --quiet",
        "noise_frames",
    ),
    "demo": ("ebr-ref demo", None),
}
_SECONDS = re.compile(r"\b\d+(\.\d+)? s\b")


def _noise_frames(folder, n=8, size=96):
    """``my_frames/``: coloured noise, footage the synthetic models never saw."""
    import numpy
    from PIL import Image

    path = os.path.join(folder, "my_frames")
    os.makedirs(path)
    rng = numpy.random.default_rng(0x5A3)
    for t in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=numpy.uint8)
        Image.fromarray(pixels).save(os.path.join(path, f"{t}.png"))


def run_sample(name, folder):
    """Run sample ``name`` in ``folder``; return its text (the command, then its output)."""
    shown, setup = SAMPLES[name]
    if setup == "noise_frames":
        _noise_frames(folder)
    argv = shlex.split(shown)[1:]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run(
        [sys.executable, "-m", "ebr_ref", *argv],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=600,
    )
    return f"$ {shown}\n{r.stdout.rstrip()}\n"


def generate(folder):
    """Every sample, run in a subfolder of ``folder``: ``({name: text}, path of the demo's summary.png)``."""
    texts = {}
    for name in SAMPLES:
        sub = os.path.join(folder, name)
        os.makedirs(sub)
        texts[name] = run_sample(name, sub)
    return texts, os.path.join(folder, "demo", "ebr_ref_demo", "summary.png")


def _block(name):
    return re.compile(
        rf"(<!-- sample: {re.escape(name)} begin -->\n```console\n)(.*?)(```\n<!-- sample: "
        rf"{re.escape(name)} end -->)",
        re.S,
    )


def page_samples(text):
    """``{name: text}`` of the samples in a page."""
    out = {}
    for name in SAMPLES:
        m = _block(name).search(text)
        if m:
            out[name] = m.group(2)
    return out


def with_samples(text, samples):
    """The page ``text`` with its sample blocks replaced by ``samples``."""
    for name, body in samples.items():
        pattern = _block(name)
        if not pattern.search(text):
            raise SystemExit(f"docs/cli.md has no '{name}' sample block")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(3), text)
    return text


def normalised(text):
    """A sample with its timings as ``N s``: what --check compares."""
    return _SECONDS.sub("N s", text)


def save_demo_png(src, dest=DEMO_PNG):
    """The demo's summary.png as a 256-colour PNG (the docs' copy)."""
    from PIL import Image

    with Image.open(src) as im:
        rgb = im.convert("RGB")
    rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        dest, format="PNG", optimize=True
    )


def png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def differences(folder):
    """The samples (and the picture) that differ from a fresh run in ``folder``: a list of names."""
    texts, summary = generate(folder)
    with open(CLI_PAGE, encoding="utf-8") as f:
        page = page_samples(f.read())
    bad = [n for n in SAMPLES if normalised(page.get(n, "")) != normalised(texts[n])]
    if not os.path.exists(DEMO_PNG) or png_size(DEMO_PNG) != png_size(summary):
        bad.append("images/demo.png")
    return bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a sample differs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ebr-samples-") as folder:
        if args.check:
            bad = differences(folder)
            for name in bad:
                print(f"differs: {name} (run python docs/make_samples.py)")
            return 1 if bad else 0
        texts, summary = generate(folder)
        with open(CLI_PAGE, encoding="utf-8") as f:
            page = f.read()
        with open(CLI_PAGE, "w", encoding="utf-8") as f:
            f.write(with_samples(page, texts))
        save_demo_png(summary)
    print(f"wrote {len(texts)} samples to {os.path.relpath(CLI_PAGE)} and {os.path.relpath(DEMO_PNG)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
