"""The sample outputs in docs/cli.md and docs/images/demo.png are what the code prints and draws today.

docs/make_samples.py regenerates them; here its check runs: every sample block of
docs/cli.md equals a fresh run's output (seconds aside), and docs/images/demo.png
has the size in pixels of a fresh demo's summary.png. The page's prose about the
demo picture is checked against the same run: the numbers it quotes, and the
explanation it gives of frame 12 (rotate's largest evidence, outside its ground
truth).
"""

import importlib.util
import json

import numpy
import pytest

from ebr_ref.models import shipped_names
from tests.paths import DOCS

PIL = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.skipif(
    not {"synthetic_cnn_lstm", "synthetic_captioner"} <= set(shipped_names()),
    reason="the shipped models are needed",
)


def _make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", DOCS / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    ms = _make_samples()
    folder = tmp_path_factory.mktemp("samples")
    texts, summary = ms.generate(str(folder))
    return ms, texts, summary, folder


def test_the_page_holds_every_sample_as_the_code_prints_it(fresh):
    ms, texts, _, _ = fresh
    page = ms.page_samples((DOCS / "cli.md").read_text(encoding="utf-8"))
    assert set(page) == set(ms.SAMPLES)
    for name, text in texts.items():
        assert ms.normalised(page[name]) == ms.normalised(text), (
            f"docs/cli.md sample '{name}': run python docs/make_samples.py"
        )


def test_the_samples_show_what_the_page_says(fresh):
    _, texts, _, _ = fresh
    assert texts["target-error"].splitlines()[1].startswith("ebr-ref ground: error: --target 'Jump'")
    warning = texts["warning"].splitlines()
    assert len(warning) == 2
    assert warning[1].startswith("ebr-ref ground: warning: synthetic_cnn_lstm was trained")
    demo = texts["demo"]
    assert "grounded its nouns 'triangle', 'diamond'" in " ".join(demo.split())
    assert "demo done in" in demo


def test_the_demo_picture_has_the_structure_of_a_fresh_one(fresh):
    ms, _, summary, _ = fresh
    with PIL.open(DOCS / "images" / "demo.png") as doc, PIL.open(summary) as new:
        assert doc.format == "PNG" and doc.size == new.size
        assert doc.mode in ("P", "RGB")
    # four rows of frames (two actions, two nouns) above a four-panel evidence plot: the rows' titles are
    # black text on white, one per row, at the heights summary_figure gives them
    img = numpy.asarray(PIL.open(summary).convert("RGB"))
    from ebr_ref.tools import viz

    entries = viz.legend_entries(gt=True, detected=True, pointing=numpy.array([1, -1, 0]))
    key = viz.legend_image(entries, img.shape[1])
    top = 24 + key.shape[0]
    for row in range(4):
        y = top + row * (112 + 40)
        band = img[y + 2 : y + 16, :300]
        assert (band.min(axis=-1) < 60).any(), f"no title text in row {row}"
    assert numpy.all(img[top + 4 * (112 + 40) - 1] == 255)  # the evidence plot starts after the four rows


def test_the_prose_on_the_demo_picture_is_true(fresh):
    _, _, _, folder = fresh
    doc = json.loads((folder / "demo" / "ebr_ref_demo" / "results.json").read_text())
    t = {x["name"].split(" ")[0].strip("'"): x for x in doc["targets"]}
    rotate, orbit, triangle, diamond = t["rotate"], t["orbit"], t["triangle"], t["diamond"]
    assert rotate["detected"] == [0, 12] and rotate["gt"] == [0, 11] and rotate["peak_frame"] == 12
    assert round(rotate["iou"], 2) == 0.92 and rotate["pointing"]["hits"] == 12 and rotate["prob"][12] < 0.01
    assert orbit["detected"] == orbit["gt"] == [12, 23] and orbit["pointing"]["hits"] == 12
    assert triangle["iou"] == 1.0 and (triangle["pointing"]["hits"], triangle["pointing"]["misses"]) == (7, 1)
    assert diamond["detected"] == [21, 23] and diamond["gt"] == [1, 20]
    assert (diamond["pointing"]["hits"], diamond["pointing"]["misses"]) == (0, 20)
    page = " ".join((DOCS / "cli.md").read_text(encoding="utf-8").split())
    for claim in (
        "is [0, 12] (IoU 0.92)",
        "(IoU 1.00) and in 7 of its 8 frames",
        "misses the diamond in all 20 frames",
        "frames 21–23",
    ):
        assert claim in page, claim
    # frame 12's evidence for rotate comes from the seeds at steps 12-23 only; its map lies on the ring
    from ebr_ref import ground, synthetic
    from ebr_ref.evaluation.localize import map_peak, pointing_hit
    from ebr_ref.models import pretrained

    model = pretrained("synthetic_cnn_lstm")
    clip = synthetic.make_clip("GT+rand", seed=doc["clip"]["seed"], num_frames=24, size=(64, 64))
    own = ground(model, clip.frames.astype(model.dtype), 1, method="cEB-R", seed_steps=list(range(12)))
    assert own.evidence[12] == 0.0
    z = numpy.load(folder / "demo" / "ebr_ref_demo" / "results.npz")
    assert clip.frame_labels[12] == orbit["index"]
    assert pointing_hit(map_peak(z["maps"][0, 12], (64, 64)), clip.actor_boxes[12][None])
