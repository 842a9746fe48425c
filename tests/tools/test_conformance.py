"""The conformance suite (ebr_ref.tools.conformance, ``ebr-ref conformance``) and docs/conformance.

- The checked-in copy is what the engine computes now: a fresh export equals it
  file by file (expected values to 1e-12 of their scale, weights and inputs
  exactly), so it cannot drift; it stays under 5 MB.
- An independent port passes every case reading only the ``.json`` and ``.npy``
  files, in an interpreter where ebr_ref cannot even be imported, checked by the
  NumPy-only function printed on docs/verify-your-implementation.md.
- ``ebr-ref compare THEIRS.npz --case DIR/<case>`` reads a port's output for a
  case directly.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy
import pytest

from ebr_ref.cli import main
from ebr_ref.grounding.trace import trace, trace_caption
from ebr_ref.tools.conformance import CONVENTIONS, case_names, export, load_case
from tests.paths import DOCS, REPO

SUITE = DOCS / "conformance"
PAGE = DOCS / "verify-your-implementation.md"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conformance") / "suite"
    export(folder)
    return folder


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _same_json(a, b, path=""):
    """Equal JSON values, floats to 1e-9 relative (the scales depend on the last bits of BLAS sums)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-300), path
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for k in a:
            if k != "params_sha256":  # numpy.savez stamps the time into the archive: its digest changes
                _same_json(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for n, (u, v) in enumerate(zip(a, b)):
            _same_json(u, v, f"{path}[{n}]")
    else:
        assert a == b, path


def test_the_checked_in_suite_is_what_the_engine_computes(fresh):
    assert _files(SUITE) == _files(fresh)
    scales = {}
    for case in case_names():
        with open(fresh / case / "case.json", encoding="utf-8") as f:
            scales[case] = {p["file"]: p["scale"] for p in json.load(f)["points"]}
    for rel in _files(SUITE):
        ours, theirs = fresh / rel, SUITE / rel
        if rel.endswith(".json"):
            _same_json(
                json.loads(theirs.read_text(encoding="utf-8")),
                json.loads(ours.read_text(encoding="utf-8")),
                rel,
            )
        elif rel.endswith(".npz"):
            a, b = numpy.load(theirs), numpy.load(ours)
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                assert numpy.array_equal(a[k], b[k]), (rel, k)
        else:
            a, b = numpy.load(theirs), numpy.load(ours)
            assert a.shape == b.shape and a.dtype == b.dtype, rel
            case, _, inside = rel.partition(os.sep)
            if inside.startswith("expected"):
                scale = scales[case][inside.replace(os.sep, "/")]
                diff = numpy.linalg.norm(a.astype(float) - b.astype(float))
                assert diff <= 1e-12 * scale if scale > 0 else diff == 0, rel
            else:  # weights and inputs: drawn from fixed seeds, exactly
                assert numpy.array_equal(a, b), rel


def test_the_suite_is_small_and_complete():
    size = sum(os.path.getsize(SUITE / f) for f in _files(SUITE))
    assert size <= 5 * 2**20, size
    with open(SUITE / "index.json", encoding="utf-8") as f:
        index = json.load(f)
    assert [c["name"] for c in index["cases"]] == case_names()
    kinds = {(c["kind"], c["method"]) for c in index["cases"]}
    assert {("classifier", m) for m in ("EB", "cEB", "EB-R", "cEB-R", "BP-R")} <= kinds
    assert ("captioner", "cEB-R") in kinds
    exercised = {conv for c in index["cases"] for conv in c["conventions"]}
    for conv in (
        "maxpool-ties",
        "zero-denominators",
        "signed-input",
        "pool-padding",
        "pool-ceil",
        "clip-markers",
        "static-input",
        "several-targets",
        "seeds-every-step",
        "lstm-caffe",
        "lstm-eb",
        "tanh-cell",
        "zero-total",
        "eq5",
    ):
        assert conv in exercised, conv
    assert exercised == set(CONVENTIONS)  # every convention listed is exercised by some case
    cells = set()
    for name in case_names():
        with open(SUITE / name / "case.json", encoding="utf-8") as f:
            case = json.load(f)
        assert case["tolerance"] == {"float64": 1e-10, "float32": 1e-4}
        assert all(os.path.isfile(SUITE / name / p["file"]) for p in case["points"])
        assert all(os.path.isfile(SUITE / name / p) for p in case["params"].values())
        lstm = next((layer for layer in case["architecture"] if layer["type"] == "lstm"), None)
        if lstm is not None and case["settings"]["method"] != "BP-R":
            cells.add((lstm["cell_act"], case["settings"]["lstm_rule"]))
    assert cells == {("relu", "caffe"), ("relu", "eb"), ("tanh", "caffe"), ("tanh", "eb")}


def test_the_page_lists_the_cases_of_the_index():
    text = PAGE.read_text(encoding="utf-8")
    pattern = r"<!-- conformance-cases: begin -->\n(.*?)<!-- conformance-cases: end -->"
    block = re.search(pattern, text, re.S).group(1)
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()[2:]]
    with open(SUITE / "index.json", encoding="utf-8") as f:
        index = json.load(f)
    assert [(r[0].strip("`"), r[1]) for r in rows] == [(c["name"], c["method"]) for c in index["cases"]]
    m = re.search(r"wrote (\d+) cases \((\d+) points, ([\d.]+) MB\)", text)
    assert (int(m.group(1)), int(m.group(2))) == (
        len(index["cases"]),
        sum(c["points"] for c in index["cases"]),
    )
    size = sum(os.path.getsize(SUITE / f) for f in _files(SUITE))
    assert m.group(3) == f"{size / 1e6:.1f}"


def _expected(folder):
    with open(os.path.join(folder, "case.json"), encoding="utf-8") as f:
        case = json.load(f)
    return {p["name"]: numpy.load(os.path.join(folder, p["file"])) for p in case["points"]}


@pytest.mark.parametrize("name", case_names())
def test_expected_values_are_the_engines_trace(name):
    """Each case's expected values are the engine's trace of the case's own model, clip and settings."""
    folder = SUITE / name
    model, s = load_case(folder)
    if hasattr(model, "vocab"):
        ours = trace_caption(
            model,
            s["clip"],
            s["words"],
            caption=s["caption"],
            method=s["method"],
            layer=s["layer"],
            lstm_rule=s["lstm_rule"],
        )
    else:
        tanh = any(layer.type == "lstm" and layer["cell_act"] == "tanh" for layer in model.layers)
        ours = trace(
            model,
            s["clip"],
            s["target"],
            method=s["method"],
            layer=s["layer"],
            lstm_rule=s.get("lstm_rule") or "caffe",
            seed_steps=s.get("seed_steps", "last"),
            cont=s.get("cont"),
            allow_tanh_eb=tanh,
        )
    expected = _expected(folder)
    assert list(ours) == list(expected)
    for k, v in expected.items():
        scale = numpy.linalg.norm(v.astype(float)) or 1.0
        assert numpy.linalg.norm(ours[k].astype(float) - v) <= 1e-12 * scale, k


CHECKER = textwrap.dedent("""
    import importlib.abc, json, os, sys

    class NoEbrRef(importlib.abc.MetaPathFinder):  # the port must not need ebr_ref: importing it fails here
        def find_spec(self, name, path, target=None):
            if name == "ebr_ref" or name.startswith(("ebr_ref.", "weights_io")):
                raise ImportError("ebr_ref is not available to the port")
            return None

    sys.meta_path.insert(0, NoEbrRef())
    sys.path.insert(0, sys.argv[1])
    from tests.tools.torch_port import read_case, run_port
    CHECK
    suite, report = sys.argv[2], {}
    with open(os.path.join(suite, "index.json")) as f:
        index = json.load(f)
    for entry in index["cases"]:
        folder = os.path.join(suite, entry["path"])
        theirs = run_port(read_case(folder))
        with open(os.path.join(folder, "case.json")) as f:
            names = [p["name"] for p in json.load(f)["points"]]
        report[entry["name"]] = {"failures": [[n, str(r)] for n, r in check_case(folder, theirs)],
                                 "missing": [n for n in names if n not in theirs],
                                 "extra": sorted(set(theirs) - set(names))}
    report["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in ("ebr_ref", "weights_io"))
    print(json.dumps(report))
""")


def test_an_independent_port_passes_every_case_without_ebr_ref():
    pytest.importorskip("torch")
    text = PAGE.read_text(encoding="utf-8")
    check = re.search(r"<!-- conformance-check: begin -->\n```python\n(.*?)```", text, re.S).group(1)
    code = CHECKER.replace("\nCHECK\n", "\n" + check + "\n")
    r = subprocess.run(
        [sys.executable, "-c", code, str(REPO), str(SUITE)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SUITE,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report.pop("imported") == []
    assert sorted(report) == sorted(case_names())
    for name, res in report.items():
        assert res == {"failures": [], "missing": [], "extra": []}, (name, res)


def _port_output(folder, out_file, bugs=()):
    pytest.importorskip("torch")
    from tests.tools.torch_port import read_case, run_port

    numpy.savez(out_file, **run_port(read_case(folder), bugs))


def test_compare_reads_a_port_output_for_a_case(tmp_path, capsys):
    case = SUITE / "lstm_markers_targets"
    _port_output(case, tmp_path / "port.npz")
    assert main(["compare", str(tmp_path / "port.npz"), "--case", str(case)]) == 0
    out = capsys.readouterr().out
    assert "[conformance case lstm_markers_targets]" in out
    assert out.strip().splitlines()[-1] == "56/56 entries within tolerance"
    _port_output(case, tmp_path / "bug.npz", ["eq5_per_frame"])
    assert main(["compare", str(tmp_path / "bug.npz"), "--case", str(case)]) == 1
    out = capsys.readouterr().out
    assert "FIRST DIFFERENCE: totals/positive (backward pass): shape (2, 6), this engine's (2,)" in out


@pytest.mark.parametrize("name", ["captioner_eb_lstm1", "cnn_ceb_signed", "lstm_bpr"])
def test_compare_passes_the_expected_files_of_a_case(tmp_path, capsys, name):
    folder = SUITE / name
    numpy.savez(tmp_path / "expected.npz", **_expected(folder))
    assert main(["compare", str(tmp_path / "expected.npz"), "--case", str(folder), "-q"]) == 0
    out = capsys.readouterr().out
    n = len(_expected(folder))
    assert out.strip().splitlines()[-1] == f"{n}/{n} entries within tolerance"


def test_compare_case_argument_errors(tmp_path, capsys):
    theirs = tmp_path / "t.npz"
    numpy.savez(theirs, probs=numpy.zeros((3, 4)))
    assert main(["compare", str(theirs)]) == 2
    assert "no model" in capsys.readouterr().err
    assert main(["compare", str(theirs), "--case", str(SUITE / "cnn_eb"), "--model", "x.npz"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["compare", str(theirs), "--case", str(tmp_path)]) == 2
    assert "no case.json" in capsys.readouterr().err


def test_export_command(tmp_path, capsys):
    out = tmp_path / "suite"
    assert main(["conformance", "export", str(out), "--case", "cnn_eb", "--case", "lstm_relu_eb"]) == 0
    assert "wrote 2 cases" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["cnn_eb", "index.json", "lstm_relu_eb"]
    assert main(["conformance", "export", str(out), "--case", "cnn_eb"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["conformance", "export", str(out), "--case", "cnn_eb", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["cnn_eb", "index.json"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["conformance", "export", str(other), "--overwrite"]) == 2
    assert "holds no conformance suite" in capsys.readouterr().err and (other / "notes.txt").exists()
    assert main(["conformance", "export", str(tmp_path / "x"), "--case", "nope"]) == 2
    assert "no conformance case 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["conformance", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{name}: " in listing for name in case_names())
