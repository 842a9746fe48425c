"""The code blocks of docs/api.md run as written, and docs/cli.md describes the parser that exists.

Each ``<!-- api-example: NAME begin/end -->`` block of docs/api.md is run in a
subprocess; what it prints is checked against the comments on its ``print``
lines (shapes and layer names). Every option that docs/cli.md shows for a
command must be an option of that command's parser.
"""

import os
import re
import subprocess
import sys

import pytest

from ebr_ref.cli import build_parser
from ebr_ref.models import shipped_names
from tests.paths import DOCS

DOCS = str(DOCS)


def _read(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def _block(text, name):
    m = re.search(rf"<!-- api-example: {name} begin -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"docs/api.md has no '{name}' block"
    return m.group(1)


def _run(code, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()


def test_video_block(tmp_path):
    pytest.importorskip("PIL")
    code = _block(_read("api.md"), "video")
    out = _run(code, tmp_path)
    assert out == ["(4, 48, 64, 3) (4, 3, 32, 32) (4, 32, 32)"]


@pytest.mark.skipif(
    "synthetic_cnn_lstm" not in shipped_names(), reason="the shipped models are not installed"
)
def test_quickstart_block(tmp_path):
    code = _block(_read("api.md"), "quickstart")
    out = _run(code, tmp_path)
    assert out[0] == "(16, 16, 16) (16,) conv3"
    m = re.fullmatch(r"\((\d+), (\d+)\) \((\d+), (\d+)\) (\d+) hits of (\d+)", out[1])
    assert m and int(m.group(6)) == 8  # rand+GT, 16 frames: the GT action's 8 annotated frames


def test_cli_page_options_exist():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    text = _read("cli.md")
    for section in re.split(r"\n## ", text)[1:]:
        m = re.match(r"`ebr-ref (\w+)`", section)
        if not m:
            continue
        cmd = m.group(1)
        known = {s for a in sub[cmd]._actions for s in a.option_strings}
        for opt in set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", section)):
            assert opt in known, f"docs/cli.md: '{opt}' is not an option of 'ebr-ref {cmd}'"
