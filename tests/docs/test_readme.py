"""The README's "Try it" commands, run verbatim in a fresh virtual environment (slow).

The block between ``<!-- readme-test: demo begin -->`` and ``<!-- readme-test:
demo end -->`` of README.md is run line by line with bash in a copy of the
repository (the files git tracks, nothing else: a second virtual environment or a
demo output folder in the checkout is not copied), with no virtual environment
active. pip may use its cache; the block installs the ``cli``
extra only, so torch must not end up in the new environment. The demo's
outputs are then decoded.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.paths import REPO

ROOT = str(REPO)
PIL = pytest.importorskip("PIL.Image")


def demo_block():
    """``(commands, source file)`` of the README's demo block."""
    for name in ("README.md",):
        path = os.path.join(ROOT, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            m = re.search(
                r"<!-- readme-test: demo begin -->\s*```\w*\n(.*?)```\s*<!-- readme-test: demo end -->",
                f.read(),
                re.S,
            )
        if m:
            return [line for line in m.group(1).splitlines() if line.strip()], name
    pytest.fail("README.md has no '<!-- readme-test: demo -->' block")


def _copy_repo(dest):
    files = (
        subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):  # deleted in the working tree
            continue
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def _clean_env():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")
    }
    here = os.path.dirname(sys.executable)  # drop this test run's own environment from PATH
    env["PATH"] = os.pathsep.join(
        p
        for p in env.get("PATH", os.defpath).split(os.pathsep)
        if p and os.path.abspath(p) != os.path.abspath(here)
    )
    return env


def python_blocks():
    """The README's Python code blocks (```python fences), in order."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_python_blocks_run_verbatim(capsys):
    blocks = python_blocks()
    assert blocks, "README.md has no Python block"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "(16, 16, 16) (16,)", printed  # the shapes the block's comment states
    assert len(printed) == 2 and printed[1].startswith("[")


@pytest.mark.slow
def test_readme_demo_runs_verbatim_in_a_fresh_venv(tmp_path):
    commands, source = demo_block()
    assert any(c.strip().startswith("ebr-ref demo") for c in commands), commands
    assert not any("torch" in c or "[test]" in c for c in commands), "the demo block must not install torch"
    repo = tmp_path / "repo"
    _copy_repo(repo)
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    r = subprocess.run(
        ["bash", "-c", script], cwd=repo, env=_clean_env(), capture_output=True, text=True, timeout=1500
    )
    assert r.returncode == 0, f"{source} block failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "demo done in" in r.stdout
    out = repo / "ebr_ref_demo"
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"] == "demo" and len(doc["targets"]) >= 2
    for tag in (t["tag"] for t in doc["targets"]):
        with PIL.open(out / doc["files"][tag]["gif"]) as im:
            assert im.n_frames == doc["clip"]["frames"] if tag.startswith("class-") else im.n_frames > 0
        with PIL.open(out / doc["files"][tag]["contact_sheet"]) as im:
            assert im.format == "PNG"
    with PIL.open(out / "evidence.png") as im:
        assert im.format == "PNG"
    venv_python = repo / ".venv" / "bin" / "python"
    probe = subprocess.run(
        [str(venv_python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert probe.stdout.strip() == "True", "the demo's environment must not contain torch"
