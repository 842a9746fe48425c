"""Six planted bugs in an independent float64 torch port, each caught by ``compare`` and named.

The port (``tests/tools/torch_port.py``) imports nothing from ebr_ref and reads
two cases of the conformance suite as plain ``.json`` and ``.npy`` files. With
no bug it agrees with the engine at every point to rounding. With one bug
planted, :func:`ebr_ref.tools.compare.compare` at its default tolerances must
fail and name, as the first difference, the point where the bug acts: the
classifier's rule for an epsilon or a bias in ``Z``, the LSTM's gates in the
forward for the gate order, the LSTM's recurrent branch at the last step for
signal through ``W_h`` under rule "caffe", eq. 5's totals for a per-frame
normalisation, the max pool's input for the tie rule. The expected names are
read from the table of docs/verify-your-implementation.md §5, so the page
cannot drift from what the report says.
"""

import re

import numpy
import pytest

from ebr_ref.tools.compare import compare, format_report
from ebr_ref.tools.conformance import export, load_case
from tests.paths import DOCS

torch_port = pytest.importorskip("tests.tools.torch_port", reason="needs torch")
PAGE = DOCS / "verify-your-implementation.md"

LIKELY = {  # what the hint must say for each bug
    "epsilon": "no epsilon",
    "bias_in_z": "WITHOUT the bias",
    "gate_order": "gate blocks i, f, o, g",
    "recurrent_caffe": "receives nothing",
    "eq5_per_frame": "ONE total per target and pass",
    "pool_last_max": "FIRST maximum",
}


def _table():
    """``[(bug, case, point, step)]`` from the page's table of planted bugs."""
    text = PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- planted-bugs: begin -->\n(.*?)<!-- planted-bugs: end -->", text, re.S).group(1)
    rows = []
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        bug = re.match(r"`(\w+)`", cells[0]).group(1)
        case = cells[1].strip("`")
        m = re.fullmatch(r"`([\w/]+)`(?: at t=(\d+))?", cells[2])
        rows.append((bug, case, m.group(1), None if m.group(2) is None else int(m.group(2))))
    return rows


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted") / "suite"
    export(folder, names=sorted({case for _, case, _, _ in _table()}))
    return folder


def _compare(suite, case, bugs=(), **kw):
    folder = suite / case
    out = torch_port.run_port(torch_port.read_case(folder), bugs)
    model, settings = load_case(folder)
    settings.pop("name"), settings.pop("rtol")
    return compare(out, model, **settings, **kw)


def test_the_page_table_plants_every_bug():
    assert sorted(bug for bug, *_ in _table()) == sorted(torch_port.BUGS)


@pytest.mark.parametrize("case", ["lstm_relu_caffe", "cnn_pool_ties_ceil"])
def test_the_correct_port_passes_at_every_point(suite, case):
    rep = _compare(suite, case)
    assert rep.ok and rep.first is None and rep.rtol is None, format_report(rep)
    assert all(r.compared for r in rep.rows) and len(rep.rows) >= 20
    assert max(r.rel for r in rep.rows) < 1e-13


@pytest.mark.parametrize("bug, case, point, step", _table(), ids=[row[0] for row in _table()])
def test_a_planted_bug_is_caught_at_the_defaults_and_named(suite, bug, case, point, step):
    rep = _compare(suite, case, [bug])
    assert not rep.ok and rep.rtol is None
    f = rep.first
    assert (f.name, f.step) == (point, step), format_report(rep)
    assert LIKELY[bug] in f.likely, f.likely
    if bug == "gate_order":
        assert f.phase == "forward" and f.step == 0
    else:
        assert f.phase == "backward"
        assert all(r.ok for r in rep.rows if r.name.startswith("forward/") or r.name in ("logits", "probs"))
    text = format_report(rep)
    at = "" if step is None else f" at t={step}"
    assert f"FIRST DIFFERENCE: {point}{at} (" in text
    assert text.splitlines()[-1].endswith(
        f"first difference (forward entries, then backward order): {point}{at}"
    )


def test_the_rule_named_for_a_signal_is_the_layer_that_produced_it(suite):
    eps = _compare(suite, "lstm_relu_caffe", ["epsilon"]).first
    assert "produced by the rule of fc8 (fc)" in eps.what  # signal/drop_l: fc8's output, through the dropout
    ties = _compare(suite, "cnn_pool_ties_ceil", ["pool_last_max"])
    assert "produced by the rule of pool1 (maxpool)" in ties.first.what
    rows = {r.name: r for r in ties.rows}
    assert rows["signal/pool1"].ok and not rows["signal/relu1"].ok  # the tie rule acts at the pool's input


def test_recurrent_bug_is_named_at_the_step_where_it_acts(suite):
    rows = {r.name: r for r in _compare(suite, "lstm_relu_caffe", ["recurrent_caffe"]).rows}
    assert rows["signal/lstm1"].ok and rows["lstm/lstm1/Z"].ok  # the signal from above agrees
    assert rows["lstm/lstm1/p_rec"].step == 4 and rows["lstm/lstm1/p_h"].step == 3  # then h_3 receives it
    assert rows["lstm_dual/lstm1/p_rec"].step == 4


def test_an_epsilon_is_invisible_below_the_interface_at_the_old_default(suite):
    """Eq. 5 divides most of a stabiliser's effect out: at rtol 1e-4 all from the interface down passed."""
    rep = _compare(suite, "lstm_relu_caffe", ["epsilon"], rtol=1e-4)
    above = ("signal/fc8", "signal/drop_l", "signal/lstm1")
    below = [r for r in rep.rows if r.name.startswith("signal/") and r.name not in above]
    below += [r for r in rep.rows if r.name in ("maps", "evidence")]
    assert len(below) >= 10 and all(r.ok for r in below)
    assert max(r.rel for r in below) < 1e-5
    default = {r.name: r for r in _compare(suite, "lstm_relu_caffe", ["epsilon"]).rows}
    assert not any(default[r.name].ok for r in below)


def test_the_page_shows_the_report_of_the_recurrent_bug(suite):
    """Section 5's printed report: its rows (name and status), first-difference lines and last line."""
    text = PAGE.read_text(encoding="utf-8")
    i = text.index("`recurrent_caffe` bug (rows left out")
    block = re.compile(r"```text\n(.*?)```", re.S).search(text, i).group(1).strip().splitlines()
    printed = format_report(_compare(suite, "lstm_relu_caffe", ["recurrent_caffe"])).splitlines()

    def status(line):  # the row's point and its status (ok, DIFFERS, DIFFERS from t=...)
        m = re.fullmatch(r"  (\S+) .*?  (ok|DIFFERS.*)", line)
        return m and (m.group(1), m.group(2))

    rows = dict(filter(None, map(status, printed)))
    shown = list(filter(None, map(status, block)))
    assert len(shown) >= 5
    for name, state in shown:
        assert rows[name] == state, (name, state)
    tail = [
        line
        for line in block
        if not line.startswith("  ") or line.startswith(("  lstm/lstm1/p_rec is", "  likely:"))
    ]
    for line in tail:
        assert line in printed, line


def test_only_logits_and_probs_catch_the_gate_order_too(suite):
    """A port that dumps only the classifier's outputs: the gate order still fails at the defaults."""
    folder = suite / "lstm_relu_caffe"
    out = torch_port.run_port(torch_port.read_case(folder), ["gate_order"])
    model, settings = load_case(folder)
    settings.pop("name"), settings.pop("rtol")
    probs_only = compare({"probs": out["probs"]}, model, **settings)
    assert not probs_only.ok and probs_only.first.name == "probs"
    both = compare({"probs": out["probs"], "logits": out["logits"]}, model, **settings)
    assert both.first.name == "logits"
    assert numpy.all([not r.ok for r in both.rows])
