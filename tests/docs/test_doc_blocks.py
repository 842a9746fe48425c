"""Every code block of README.md and docs/*.md runs as written, or says that it is a fragment.

* Python blocks (```python): the blocks of a page run in order in one fresh
  interpreter (one namespace, as a notebook's cells), in an empty temporary
  folder. A block whose first line is a comment ``# fragment: needs ...`` is
  left out; the comment must say what the block needs. Pages whose blocks
  another test runs are listed in ``RUN_ELSEWHERE`` with that test. Some printed
  values are checked against the page (``EXPECTED``).
* Shell blocks (```console, ```shell, ```bash, ```sh or no language): every
  ``ebr-ref`` command (after the ``$`` prompt of a console block, at the start of a
  line in the others; ``\\``
  continuations joined, ``[...]`` optional parts opened) must parse with the
  real parser: its command and options exist and take the values shown. The
  demo and the samples of docs/cli.md run for real in tests/docs/test_readme.py
  and tests/docs/test_samples.py.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from ebr_ref.cli import build_parser
from ebr_ref.cli._common import UserError
from tests.paths import DOCS, REPO

PAGES = ["README.md"] + sorted(f"docs/{n}" for n in os.listdir(DOCS) if n.endswith(".md"))
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```[ \t]*$", re.S | re.M)
SHELL = ("", "console", "shell", "bash", "sh")

# pages whose Python blocks another test runs (and checks), with that test
RUN_ELSEWHERE = {
    "docs/verify-your-implementation.md": "tests/cli/test_cli_compare.py",
    "docs/tutorial.md": "tests/docs/test_tutorial.py",
}
# blocks of pages kept by others that need a '# fragment: needs ...' first line, by their first line;
# remove an entry when its page marks the block
PENDING = {}
# printed lines checked against the page, per page (the blocks print them in this order)
EXPECTED = {
    "README.md": [r"\(16, 16, 16\) \(16,\)", r"\[[-0-9.e]+\]"],
    "docs/method.md": [r"\(3, 1, 1\)", r"\[ 0\.0592  0\.0092 -0\.0684\]", r"1\.585 1\.7944", r"\(0, 1\)"],
    "docs/api.md": [
        r"\(16, 16, 16\) \(16,\) conv3",
        r"\(\d+, \d+\) \(\d+, \d+\) \d+ hits of 8",
        r"\(4, 48, 64, 3\) \(4, 3, 32, 32\) \(4, 32, 32\)",
    ],
}


def blocks(page):
    """``[(language, code), ...]`` of a page's fenced blocks, in order, dedented."""
    with open(REPO / page, encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in FENCE.finditer(text):
        indent = len(m.group(1))
        code = "\n".join(line[indent:] for line in m.group(3).splitlines())
        out.append((m.group(2).lower(), code + "\n"))
    return out


def is_fragment(code):
    return code.lstrip().startswith("# fragment")


def python_pages():
    return [p for p in PAGES if any(lang == "python" for lang, _ in blocks(p))]


def test_the_pages_are_found():
    assert "README.md" in PAGES and "docs/cli.md" in PAGES and "docs/method.md" in PAGES
    assert "docs/method.md" in python_pages() and "README.md" in python_pages()


def test_fragments_say_what_they_need():
    for page in PAGES:
        for lang, code in blocks(page):
            if lang == "python" and is_fragment(code):
                first = code.lstrip().splitlines()[0]
                assert re.match(r"# fragment: needs \S", first), (
                    f"{page}: {first!r} (write '# fragment: needs ...')"
                )


def test_pending_entries_are_still_pending():
    for (page, first), _need in PENDING.items():
        found = [code for lang, code in blocks(page) if lang == "python" and code.splitlines()[0] == first]
        assert found, f"{page}: no block starts with {first!r}; remove its PENDING entry"


@pytest.mark.parametrize("page", python_pages())
def test_python_blocks_run_as_written(page, tmp_path):
    if page in RUN_ELSEWHERE:
        other = REPO / RUN_ELSEWHERE[page]
        assert other.is_file() and page.split("/")[-1] in other.read_text(encoding="utf-8")
        pytest.skip(f"run by {RUN_ELSEWHERE[page]}")
    runnable, pending = [], []
    for lang, code in blocks(page):
        if lang != "python" or is_fragment(code):
            continue
        (pending if (page, code.splitlines()[0]) in PENDING else runnable).append(code)
    if not runnable:
        why = " (not yet marked: PENDING)" if pending else ""
        pytest.skip(f"{page}: every Python block is a fragment{why}")
    script = "\n".join(f"# ---- block {k} of {page}\n{code}" for k, code in enumerate(runnable))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert r.returncode == 0, f"{page}: a block failed\n{r.stderr[-3000:]}"
    if page in EXPECTED:
        printed = r.stdout.splitlines()
        assert len(printed) == len(EXPECTED[page]), (page, printed)
        for line, pattern in zip(printed, EXPECTED[page]):
            assert re.fullmatch(pattern, line), (page, line, pattern)


def commands(page):
    """The ``ebr-ref`` commands of a page's shell blocks, as argument lists (after ``ebr-ref``)."""
    out = []
    for lang, code in blocks(page):
        if lang not in SHELL:
            continue
        joined = code.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if lang == "console":  # a session: commands after the prompt, the rest is their output
                if not line.startswith("$ "):
                    continue
                line = line[2:].strip()
            if not line.startswith("ebr-ref ") and line != "ebr-ref":
                continue
            words = shlex.split(line, comments=True)[1:]
            words = [w.strip("[]") for w in words if w.strip("[]")]  # [--words red slides]: an optional part
            out.append(words)
    return out


def test_every_shell_command_parses():
    parser = build_parser()
    seen = 0
    for page in PAGES:
        for argv in commands(page):
            seen += 1
            try:
                args = parser.parse_args(argv)
            except UserError as e:
                pytest.fail(f"{page}: 'ebr-ref {' '.join(argv)}' does not parse: {e}")
            except SystemExit:  # --help, --version
                continue
            assert args.command, (page, argv)
    assert seen >= 15
