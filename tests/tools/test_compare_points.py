"""ebr_ref.tools.compare at every point: tolerances by dtype, computation order, steps, hints, unknown keys.

The engine's own trace, perturbed at chosen points, stands in for a port:
the report must name the first perturbed point in computation order (an
LSTM's steps from the last one down for its backward quantities, from the
first one up for its forward ones), locate the difference, and say which
convention is likely involved.
"""

import numpy
import pytest

from ebr_ref.cli import main
from ebr_ref.grounding.trace import trace, trace_caption
from ebr_ref.models import save_model, sequential
from ebr_ref.models.caption import captioner
from ebr_ref.tools.compare import FLOAT32_RTOL, FLOAT64_RTOL, compare, default_rtol, explain, format_report
from tests.tiny_models import BLOCK

T = 5


@pytest.fixture(scope="module")
def rnn():
    m = sequential(
        BLOCK + [("lstm1", "lstm", {"hidden": 4}), ("drop", "dropout"), ("fc8", "fc", {"out_features": 3})],
        (2, 6, 6),
        seed=0x7C7,
        meta={"readout": "conv1"},
    )
    clip = numpy.random.default_rng(0x7C2).uniform(0, 1, (T, 2, 6, 6))
    return m, clip


def _theirs(m, clip, target=1, **kw):
    out = dict(trace(m, clip, target, **kw))
    out.update(clip=clip, target=numpy.asarray(target, dtype=numpy.int64))
    for k in ("method", "lstm_rule", "seed_steps"):
        if k in kw:
            out[k] = kw[k]
    return out


def test_defaults_follow_the_dtype_of_their_arrays():
    assert default_rtol(numpy.float64) == FLOAT64_RTOL == 1e-10
    assert default_rtol(numpy.float32) == default_rtol(numpy.float16) == FLOAT32_RTOL == 1e-4
    assert default_rtol(numpy.int64) == 0.0


def test_the_engine_agrees_with_itself_and_float32_passes_at_its_tolerance(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip)
    rep = compare(theirs, m)
    assert rep.ok and rep.first is None and all(r.rel == 0 for r in rep.rows)
    assert len(rep.rows) == len(trace(m, clip, 1))
    f32 = {
        k: (
            v.astype(numpy.float32)
            if isinstance(v, numpy.ndarray) and v.dtype == numpy.float64 and k != "clip"
            else v
        )
        for k, v in theirs.items()
    }
    rep32 = compare(f32, m)
    assert rep32.ok and {r.rtol for r in rep32.rows} == {FLOAT32_RTOL}
    assert max(r.rel for r in rep32.rows) > 1e-9  # float32 rounding, which the float64 default would refuse
    assert not compare(f32, m, rtol=1e-10).ok


@pytest.mark.parametrize("rule", ["caffe", "eb"])
def test_a_float32_run_of_the_engine_passes_at_the_float32_default(rnn, rule):
    m, clip = rnn
    theirs = dict(trace(m, clip.astype(numpy.float32), [0, 2], dtype="float32", lstm_rule=rule))
    theirs.update(clip=clip, target=numpy.array([0, 2]), lstm_rule=rule)
    rep = compare(theirs, m)
    assert rep.ok, format_report(rep)
    assert max(r.rel for r in rep.rows) < 1e-5


def test_a_stabiliser_sized_error_fails_float64_but_passes_the_old_default(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip)
    theirs["signal/pool1"] = theirs["signal/pool1"] * (1 + 1e-7)
    rep = compare(theirs, m)
    assert not rep.ok and rep.first.name == "signal/pool1"
    assert "produced by the rule of conv1" not in rep.first.what and "rule of flat" not in rep.first.what
    assert "fc7 (fc)" in rep.first.what and "passed on by flat" in rep.first.what
    assert compare(theirs, m, rtol=1e-4).ok


def test_the_first_difference_in_an_lstm_is_walked_step_by_step(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip, lstm_rule="eb")
    theirs["lstm/lstm1/p_c"] = theirs["lstm/lstm1/p_c"].copy()
    theirs["lstm/lstm1/p_c"][2, 1] += 0.1  # the backward walks t = 4, 3, 2, ...: p_c at t = 2 comes first ...
    theirs["lstm/lstm1/p_h"] = theirs["lstm/lstm1/p_h"].copy()
    theirs["lstm/lstm1/p_h"][1, 0] += 0.1  # ... before p_h at t = 1, though p_h is listed before p_c
    theirs["lstm/lstm1/gates"] = theirs["lstm/lstm1/gates"].copy()
    theirs["lstm/lstm1/gates"][3, 13] += (
        0.1  # the forward walks t = 0, 1, ...: c at t = 2 before gates at t = 3
    )
    theirs["lstm/lstm1/c"] = theirs["lstm/lstm1/c"].copy()
    theirs["lstm/lstm1/c"][2, 2] += 0.1
    rep = compare(theirs, m)
    rows = {r.name: r for r in rep.rows}
    assert rows["lstm/lstm1/gates"].step == 3 and rows["lstm/lstm1/gates"].where == "t=3 gate=g h=1"
    assert (
        rows["lstm/lstm1/c"].step == 2
        and rows["lstm/lstm1/p_h"].step == 1
        and rows["lstm/lstm1/p_c"].step == 2
    )
    assert (rep.first.name, rep.first.step, rep.first.phase) == ("lstm/lstm1/c", 2, "forward")
    del theirs["lstm/lstm1/c"], theirs["lstm/lstm1/gates"]
    rep = compare(theirs, m)
    assert (rep.first.name, rep.first.step, rep.first.phase) == ("lstm/lstm1/p_c", 2, "backward")
    assert rep.first.where == "t=2 h=1" and "act(c_t) != 0" in rep.first.likely
    text = format_report(rep)
    assert "FIRST DIFFERENCE: lstm/lstm1/p_c at t=2 (backward pass); largest difference at t=2 h=1" in text
    assert text.splitlines()[-1].endswith(": lstm/lstm1/p_c at t=2")
    assert "DIFFERS from t=1" in next(
        line for line in text.splitlines() if line.startswith("  lstm/lstm1/p_h ")
    )


def test_a_dual_pass_difference_points_at_the_negation(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip)
    theirs["signal_dual/drop"] = theirs["signal_dual/drop"] * 1.01
    rep = compare(theirs, m)
    assert rep.first.name == "signal_dual/drop" and "negated" in rep.first.likely
    assert all(
        r.ok
        for r in rep.rows
        if not r.name.startswith(
            ("signal_dual/", "lstm_dual/", "interface/dual", "totals/dual", "normalised/dual", "signal/")
        )
    )


def test_unknown_entries_are_reported_not_fatal(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip, method="EB-R")
    theirs.update(
        {
            "my_debug/x": numpy.zeros(3),
            "signal_dual/fc8": numpy.zeros((T, 3)),
            "lstm/lstm1/p_g": numpy.zeros((T, 4)),
        }
    )
    rep = compare(theirs, m)
    assert rep.ok and rep.ignored == ["lstm/lstm1/p_g", "my_debug/x", "signal_dual/fc8"]
    skipped = {r.name: r.note for r in rep.rows if not r.compared}
    assert skipped["signal_dual/fc8"] == "not a point of EB-R"
    assert skipped["lstm/lstm1/p_g"] == "not a point of EB-R with LSTM rule 'caffe'"
    text = format_report(rep)
    assert "not compared: " in text and f"{len(rep.rows) - 3}/{len(rep.rows) - 3} entries within" in text
    theirs["signal/conv9"] = numpy.zeros(2)
    rep = compare(theirs, m)
    assert not rep.ok and rep.rows[0].name == "signal/conv9" and "unknown layer 'conv9'" in rep.rows[0].note


def test_sequence_part_signals_and_a_bad_layer_are_not_fatal(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip)
    keep = {k: theirs[k] for k in ("clip", "target", "signal/lstm1", "signal/fc8", "maps")}
    keep["layer"] = "lstm1"  # not a read-out layer: maps fail with the reason, the signals are compared
    rep = compare(keep, m)
    rows = {r.name: r for r in rep.rows}
    assert rows["signal/lstm1"].ok and rows["signal/fc8"].ok
    assert not rows["maps"].ok and "sequence part" in rows["maps"].note


def test_shape_mismatch_names_the_point_and_its_shape(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip)
    theirs["totals/positive"] = numpy.ones(T)
    rep = compare(theirs, m)
    assert rep.first.name == "totals/positive" and "ONE total" in rep.first.likely
    assert "FIRST DIFFERENCE: totals/positive (backward pass): shape (5,), this engine's ()" in format_report(
        rep
    )


def test_several_targets_and_seed_steps(rnn):
    m, clip = rnn
    theirs = _theirs(m, clip, [0, 2], seed_steps=[1, 4], lstm_rule="caffe")
    theirs["seed_steps"] = numpy.array([1, 4])
    assert compare(theirs, m).ok
    theirs["lstm/lstm1/dz"] = theirs["lstm/lstm1/dz"].copy()
    theirs["lstm/lstm1/dz"][1, 4, 10] += 1.0
    rep = compare(theirs, m)
    assert (rep.first.name, rep.first.step, rep.first.where) == ("lstm/lstm1/dz", 4, "k=1 t=4 gate=o h=2")


def test_hints_name_the_rule_of_the_layer_that_produced_a_signal(rnn):
    m, clip = rnn
    from ebr_ref.tools.compare import _info

    info = _info(m, "cEB-R", "caffe")
    what, likely = explain("signal/relu1", info)
    assert "rule of pool1 (maxpool)" in what and "FIRST maximum" in likely
    what, likely = explain("signal/lstm1", info)
    assert "rule of fc8 (fc), passed on by drop" in what and "WITHOUT the bias" in likely
    what, likely = explain("signal/fc7", info)
    assert "contrast (eq. 7)" in what and "passed on by relu7" in what
    what, likely = explain("lstm/lstm1/p_rec", info)
    assert "receives nothing" in likely
    assert "gate blocks i, f, o, g" in explain("lstm/lstm1/gates", info)[1]
    assert "Caffe's ceil rule" in explain("forward/pool1", info)[1]
    assert "raw 1" in explain("seed", info)[1]
    eb = _info(m, "cEB-R", "eb")
    assert "g-block rows" in explain("lstm/lstm1/Z", eb)[1] and "P(g_t)" in explain("lstm/lstm1/p_g", eb)[0]


def test_a_captioner_is_compared_at_its_decoder_points(tmp_path, capsys):
    from ebr_ref.models.caption import save_captioner

    cap = captioner(
        BLOCK,
        ["a", "red", "square"],
        (2, 6, 6),
        embed=3,
        hidden=(4, 5),
        seed=0x7C3,
        meta={"readout": "conv1"},
    )
    clip = numpy.random.default_rng(0x7C4).uniform(0, 1, (3, 2, 6, 6))
    theirs = dict(trace_caption(cap, clip, "red", caption="a red square"))
    theirs.update(clip=clip, words="red", caption="a red square")
    rep = compare(theirs, cap)
    assert rep.ok and rep.settings["caption"] == "a red square"
    assert {r.rtol for r in rep.rows if r.name == "tokens"} == {0.0}
    theirs["signal/video"] = theirs["signal/video"] * 1.001
    rep = compare(theirs, cap)
    assert rep.first.name == "signal/video" and "static" in rep.first.what and "GPU path" in rep.first.likely
    theirs["tokens"] = theirs["tokens"][::-1].copy()
    rep = compare(theirs, cap)
    assert rep.first.name == "tokens" and not {r.name: r for r in rep.rows}["tokens"].ok
    save_captioner(cap, tmp_path / "cap.npz")
    numpy.savez(tmp_path / "theirs.npz", **{k: v for k, v in theirs.items() if k not in ("words", "caption")})
    assert (
        main(
            [
                "compare",
                str(tmp_path / "theirs.npz"),
                "--model",
                str(tmp_path / "cap.npz"),
                "--words",
                "red",
                "--caption",
                "a red square",
            ]
        )
        == 1
    )
    assert "FIRST DIFFERENCE: tokens (forward pass)" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "theirs.npz"), "--model", str(tmp_path / "cap.npz")]) == 2
    assert "no words" in capsys.readouterr().err


def test_cli_rtol_still_overrides(rnn, tmp_path, capsys):
    m, clip = rnn
    save_model(m, tmp_path / "m.npz")
    theirs = _theirs(m, clip)
    theirs["maps"] = theirs["maps"] * (1 + 1e-6)
    numpy.savez(tmp_path / "t.npz", **theirs)
    assert main(["compare", str(tmp_path / "t.npz"), "--model", str(tmp_path / "m.npz")]) == 1
    out = capsys.readouterr().out
    assert "rel <= 1e-10 (float64 entries) or 0.0001 (float32 entries)" in out
    assert (
        out.strip().splitlines()[-1].endswith("first difference (forward entries, then backward order): maps")
    )
    assert (
        main(["compare", str(tmp_path / "t.npz"), "--model", str(tmp_path / "m.npz"), "--rtol", "1e-4"]) == 0
    )
    assert (
        capsys.readouterr().out.strip().splitlines()[-1] == f"{len(theirs) - 2}/{len(theirs) - 2} entries "
        "within rel <= 0.0001"
    )
    assert main(["compare", str(tmp_path / "t.npz"), "--model", str(tmp_path / "m.npz"), "--rtol", "0"]) == 2
