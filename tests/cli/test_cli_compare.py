"""``ebr-ref compare`` and ebr_ref.tools.compare; the runnable example of docs/verify-your-implementation.md.

The page's PyTorch port (written from the paper, in torch, sharing no code
with the engine) is run verbatim in a subprocess, then the page's commands;
the reported agreement and the page's printed conclusions are checked. The
error measures of :func:`ebr_ref.tools.compare.compare_arrays` are checked on hand
values, and the contrastive reference norm against a separate EB run.
"""

import os
import re
import shutil
import subprocess
import sys

import numpy
import pytest

from ebr_ref.grounding.ground import ground
from ebr_ref.models import sequential
from ebr_ref.tools.compare import compare, compare_arrays, format_report
from tests.paths import DOCS

PAGE = os.path.join(DOCS, "verify-your-implementation.md")


def _page():
    with open(PAGE, encoding="utf-8") as f:
        return f.read()


def _between(text, name):
    m = re.search(
        rf"<!-- verify-example: {name} begin -->\s*```\w*\n(.*?)```\s*<!-- verify-example: {name} end -->",
        text,
        re.S,
    )
    assert m, f"{PAGE} has no '{name}' block"
    return m.group(1)


def _command(line):
    """A '$ ...' line of the page as an argv that runs in this environment."""
    argv = line[2:].split()
    if argv[0] == "python":
        return [sys.executable] + argv[1:]
    if argv[0] == "ebr-ref":
        return [sys.executable, "-m", "ebr_ref"] + argv[1:]
    raise AssertionError(f"unexpected command on the page: {line}")


def _last_line(out):
    return out.strip().splitlines()[-1]


def _printed_after(text, marker):
    """The ```text block that follows ``marker`` on the page."""
    i = text.index(marker)
    m = re.compile(r"```text\n(.*?)```", re.S).search(text, i)
    return m.group(1)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("verify")
    text = _page()
    (d / "port_check.py").write_text(_between(text, "script"))
    outputs = []
    for line in _between(text, "commands").splitlines():
        if line.startswith("$ "):
            outputs.append(subprocess.run(_command(line), cwd=d, capture_output=True, text=True, timeout=300))
    api = d / "api"  # the good run's files, for the page's Python block
    api.mkdir()
    for name in ("theirs.npz", "tiny_cnn_lstm.npz", "tiny_cnn_lstm.json"):
        shutil.copy(d / name, api / name)
    return d, text, outputs


def _rows(out):
    """``{point: fields}`` of the rows of a printed report's table (a row's second field is its shape)."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) > 4 and re.fullmatch(r"\d+(x\d+)*|\(\)", parts[1]):
            rows[parts[0]] = parts
    return rows


def _printed_names(block):
    return [
        line.split()[0]
        for line in block.splitlines()
        if line.startswith("  ") and line.split() and line.split()[0] not in ("point", "...")
    ]


def test_page_example_agrees_to_float64_rounding(ran):
    d, text, (make, cmp) = ran
    assert make.returncode == 0, make.stderr
    commands = _between(text, "commands").splitlines()
    assert make.stdout.strip() == commands[1] == "wrote theirs.npz (49 points)"
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    printed = _printed_after(text, "<!-- verify-example: commands end -->")
    assert _last_line(cmp.stdout) == _last_line(printed) == "49/49 entries within tolerance"
    rows = _rows(cmp.stdout)
    assert len(rows) == 49
    names = list(rows)
    shown = _printed_names(printed)  # the page leaves rows out ('...'), in the same order
    assert shown == [n for n in names if n in shown] and len(shown) >= 15
    for name in (
        "forward/conv1",
        "lstm/lstm1/gates",
        "logits",
        "lstm/lstm1/dz",
        "totals/positive",
        "signal_dual/lstm1",
        "signal/relu7",
        "maps",
        "signal/input",
    ):
        assert name in names
    assert (
        names.index("logits")
        < names.index("seed")
        < names.index("lstm/lstm1/p_h")
        < names.index("totals/positive")
        < names.index("signal_dual/fc8")
        < names.index("signal/relu7")
        < names.index("signal/input")
    )  # computation order
    for name, parts in rows.items():
        assert parts[-1] == "ok" and float(parts[3]) < 1e-13, (name, parts)  # "about 1e-16"
    assert "FIRST DIFFERENCE" not in cmp.stdout


def test_page_bug_example_names_fc8(ran):
    d, text, _ = ran
    r = subprocess.run(
        [sys.executable, "port_check.py", "--bias-in-z"], cwd=d, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    cmp = subprocess.run(
        [sys.executable, "-m", "ebr_ref", "compare", "theirs.npz", "--model", "tiny_cnn_lstm.npz"],
        cwd=d,
        capture_output=True,
        text=True,
    )
    assert cmp.returncode == 1
    printed = _printed_after(text, "$ python port_check.py --bias-in-z")
    assert cmp.stdout.strip().splitlines()[-4:] == printed.strip().splitlines()  # the page shows the tail
    last = _last_line(cmp.stdout)
    assert last.endswith("first difference (forward entries, then backward order): signal/lstm1")
    assert "FIRST DIFFERENCE: signal/lstm1 (backward pass)" in cmp.stdout
    assert "produced by the rule of fc8 (fc)" in cmp.stdout and "WITHOUT the bias" in cmp.stdout
    rows = _rows(cmp.stdout)
    forward = [parts for n, parts in rows.items() if n.startswith(("forward/", "lstm/lstm1/gates"))]
    assert len(forward) == 12 and all(parts[-1] == "ok" for parts in forward)
    assert rows["signal/fc8"][-1] == "ok" and rows["signal/lstm1"][-1] == "DIFFERS"
    assert rows["signal/input"][-1] == "DIFFERS"


def test_page_python_api_block(ran):
    d, text, _ = ran
    code = re.findall(r"```python\n(.*?)```", text, re.S)[-1]
    assert "from ebr_ref.tools.compare import" in code
    r = subprocess.run([sys.executable, "-c", code], cwd=d / "api", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "49/49 entries within" in r.stdout


# ---- the error measures on hand values ----------------------------------------------------------------
def test_compare_arrays_hand_values():
    ours = numpy.zeros((2, 3, 4))
    ours[1, 2, 3] = 2.0
    theirs = ours.copy()
    theirs[0, 1, 2] = 0.5
    r = compare_arrays("maps", theirs, ours, rtol=0.3)
    assert r.max_abs == 0.5 and r.max_rel == 0.25 and r.rel == pytest.approx(0.25)
    assert r.where == "t=0 y=1 x=2" and (r.theirs, r.ours) == (0.5, 0.0) and r.worst_frame == 0 and r.ok
    r = compare_arrays("maps", theirs, ours, rtol=0.2)
    assert not r.ok
    ref = numpy.full((2, 3, 4), 0.5)  # the scale of the errors comes from ref (||ref|| = 0.5 sqrt(24))
    r = compare_arrays("maps", theirs, ours, ref)
    assert r.max_rel == 1.0 and r.rel == pytest.approx(0.5 / (0.5 * 24**0.5))
    r = compare_arrays(
        "signal/conv1", numpy.zeros((2, 1, 5, 3, 3)), numpy.zeros((2, 1, 5, 3, 3)), stacked=True
    )
    assert r.where == "k=0 t=0 c=0 y=0 x=0" and r.ok and r.rel == 0.0
    assert not compare_arrays("probs", numpy.zeros((2, 3)), numpy.zeros((3, 2))).ok
    bad = compare_arrays("probs", numpy.full((2, 3), numpy.nan), numpy.zeros((2, 3)))
    assert not bad.ok and "non-finite" in bad.note


def _tiny_cnn():
    layers = [
        ("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}),
        ("relu1", "relu"),
        ("pool1", "maxpool", {"kernel": 2}),
        ("flatten", "flatten"),
        ("fc7", "fc", {"out_features": 6}),
        ("relu7", "relu"),
        ("fc8", "fc", {"out_features": 4}),
    ]
    return sequential(layers, (2, 6, 6), seed=0xC0C)


def test_contrastive_rel_uses_the_positive_pass():
    model = _tiny_cnn()
    clip = numpy.random.default_rng(0xC1).uniform(0, 1, (3, 2, 6, 6))
    ceb = ground(model, clip, 1, method="cEB", layer="pool1", channel_maps=True)
    eb = ground(model, clip, 1, method="EB", layer="pool1", channel_maps=True)
    delta = numpy.zeros_like(ceb.channel_maps)
    delta[2, 1, 0, 2] = 1e-3
    theirs = {
        "clip": clip,
        "target": numpy.int64(1),
        "method": "cEB",
        "layer": "pool1",
        "signal/pool1": ceb.channel_maps + delta,
        "maps": ceb.maps,
        "logits": model.logits(clip),
    }
    rep = compare(theirs, model, rtol=1e-12)
    rows = {r.name: r for r in rep.rows}
    assert [r.name for r in rep.rows] == ["logits", "signal/pool1", "maps"]
    r = rows["signal/pool1"]
    assert r.where == "t=2 c=1 y=0 x=2" and r.worst_frame == 2 and not r.ok
    assert r.rel == pytest.approx(1e-3 / numpy.linalg.norm(eb.channel_maps), rel=1e-9)
    assert rows["maps"].ok and rows["logits"].ok and rows["maps"].rel < 1e-14
    assert "DIFFERS" in format_report(rep) and "positive pass alone (EB)" in format_report(rep)


def test_compare_input_errors():
    model = _tiny_cnn()
    clip = numpy.zeros((1, 2, 6, 6))
    with pytest.raises(ValueError, match="no clip"):
        compare({"target": numpy.int64(0), "maps": numpy.zeros((1, 3, 3))}, model)
    with pytest.raises(ValueError, match="no target"):
        compare({"clip": clip}, model)
    with pytest.raises(ValueError, match="unknown method"):
        compare({"clip": clip, "target": numpy.int64(0), "method": "LRP"}, model)
    rep = compare({"clip": clip, "target": numpy.int64(0), "signal/conv9": numpy.zeros(3)}, model)
    assert not rep.ok and "conv9" in rep.rows[0].note
