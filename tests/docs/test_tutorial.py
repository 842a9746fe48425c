"""The tutorial notebook docs/tutorial.py runs, fast, and docs/tutorial.md is its rendering with its outputs.

docs/make_tutorial.py runs the notebook's cells in order (as Jupyter would) and
renders docs/tutorial.md: its text, its code, what each cell printed and the
pictures it showed (docs/images/tutorial_*.png). Here the notebook runs once: it
must take less than a minute of CPU (so, on 2 cores, less than a minute), the
page must be exactly its rendering (the code blocks of docs/tutorial.md are the
notebook's cells, which is why tests/docs/test_doc_blocks.py leaves them to this
test), and every picture must exist with the size of a fresh one. The notebook
must also cover what it promises: a map per method, the eq.-5 totals, the mass
lost per layer, the evidence against the ground truth and the two LSTM rules.
"""

import importlib.util

import pytest

from ebr_ref.models import shipped_names
from tests.paths import DOCS

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.skipif(
    not {"synthetic_cnn", "synthetic_cnn_lstm"} <= set(shipped_names()),
    reason="the shipped models are needed",
)


def _make_tutorial():
    spec = importlib.util.spec_from_file_location("make_tutorial", DOCS / "make_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    mt = _make_tutorial()
    folder = tmp_path_factory.mktemp("tutorial")
    done, cpu = mt.run(str(folder))
    return mt, done, cpu


def test_the_notebook_runs_in_under_a_minute(ran):
    _, done, cpu = ran
    assert any(kind == "code" for kind, *_ in done)
    assert cpu < 60, f"the tutorial took {cpu:.0f} s of CPU"


def test_the_page_is_the_rendered_notebook(ran):
    mt, done, _ = ran
    page = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    assert page == mt.markdown(done), "docs/tutorial.md is out of date: run python docs/make_tutorial.py"
    for *_, pictures in done:
        for path in pictures:
            mine = DOCS / "images" / path.split("/")[-1]
            assert mine.is_file(), mine
            with PIL.open(mine) as a, PIL.open(path) as b:
                assert a.size == b.size, mine


def test_the_notebook_covers_what_it_promises(ran):
    _, done, _ = ran
    pictures = [p.split("/")[-1] for *_, shown in done for p in shown]
    assert pictures == [
        "tutorial_eb.png",
        "tutorial_ceb.png",
        "tutorial_ebr.png",
        "tutorial_cebr.png",
        "tutorial_evidence.png",
        "tutorial_rules.png",
    ]
    printed = "\n".join(out for _, _, out, _ in done)
    for needle in (
        "eq.-5 grand total",
        "eq.-5 grand totals: target",
        "positive: {'lstm1'",
        "ground truth: frames",
        "cEB-R: detected",
        "caffe: grand totals",
        "   eb: grand totals 1.0000 / 1.0000",
    ):
        assert needle in printed, needle


def test_the_percent_format_round_trips():
    mt = _make_tutorial()
    source = (DOCS / "tutorial.py").read_text(encoding="utf-8")
    kinds = [kind for kind, _ in mt.cells(source)]
    assert kinds[0] == "markdown" and kinds.count("code") >= 8
    assert source.startswith("# ---\n# jupyter:\n#   jupytext:\n") and "format_name: percent" in source
