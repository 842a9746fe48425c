"""Display steps and picture files: heat scaling, colour map, upsampling geometry, overlays, files that
decode.

Oracles: hand values, matplotlib's own 'jet' colour map, a naive bilinear
upsampler written from the cell-centre convention of ebr_ref.evaluation.localize, and
the files decoded back with Pillow / imageio.
"""

import numpy
import pytest

from ebr_ref.evaluation.localize import map_peak
from ebr_ref.tools import viz
from ebr_ref.tools.video import read_video

PIL = pytest.importorskip("PIL.Image")


def test_display_heat_clamps_and_scales():
    m = numpy.array([[[-2.0, 1.0], [0.5, 0.0]], [[4.0, -1.0], [0.0, 2.0]]])
    # clip scale: the 99th percentile of the positive values 0.5, 1, 2, 4 (linear between 2 and 4 at
    # rank 0.99 * 3 = 2.97) = 2 + 0.97 * 2 = 3.94; the 4 saturates at 1
    numpy.testing.assert_allclose(viz.display_heat(m), numpy.minimum(numpy.maximum(m, 0) / 3.94, 1.0))
    big = numpy.zeros((10, 10, 10))
    big[0, 0, 0] = 1000.0  # one extreme cell among 999 ones: the other frames stay visible
    big[1:] = 1.0
    assert viz.display_heat(big)[5].min() == 1.0
    per = viz.display_heat(m, scale="frame")
    numpy.testing.assert_allclose(per[0], numpy.maximum(m[0], 0) / 1.0)
    numpy.testing.assert_allclose(per[1], numpy.maximum(m[1], 0) / 4.0)
    z = viz.display_heat(-numpy.ones((2, 3, 3)))  # no positive value: all 0, never NaN
    assert numpy.all(z == 0)
    with pytest.raises(ValueError, match="NaN"):
        viz.display_heat(numpy.full((1, 2, 2), numpy.nan))
    with pytest.raises(ValueError, match="scale"):
        viz.display_heat(m, scale="global")


def test_jet_matches_matplotlib():
    mpl = pytest.importorskip("matplotlib")
    v = numpy.linspace(0, 1, 257)
    ref = mpl.colormaps["jet"](v)[:, :3]
    d = numpy.abs(viz.jet(v) - ref)  # the closed form rounds matplotlib's piecewise-linear segments
    assert d.max() < 0.125 and d.mean() < 0.02
    numpy.testing.assert_allclose(viz.jet([0.0, 1.0]), [[0, 0, 0.5], [0.5, 0, 0]])


def _naive_bilinear(m, H, W):
    """Output pixel (i, j) samples the map at the cell coordinate ((i + 0.5) h / H - 0.5, ...), edges
    clamped."""
    h, w = m.shape
    out = numpy.empty((H, W))
    for i in range(H):
        for j in range(W):
            u = min(max((i + 0.5) * h / H - 0.5, 0.0), h - 1)
            v = min(max((j + 0.5) * w / W - 0.5, 0.0), w - 1)
            r0, c0 = int(numpy.floor(u)), int(numpy.floor(v))
            r1, c1 = min(r0 + 1, h - 1), min(c0 + 1, w - 1)
            a, b = u - r0, v - c0
            out[i, j] = (
                (1 - a) * (1 - b) * m[r0, c0]
                + (1 - a) * b * m[r0, c1]
                + a * (1 - b) * m[r1, c0]
                + a * b * m[r1, c1]
            )
    return out


@pytest.mark.parametrize("h, w, H, W", [(2, 2, 8, 8), (3, 5, 12, 20), (4, 4, 4, 4), (7, 7, 28, 28)])
def test_upsample_is_cell_centred_bilinear(h, w, H, W):
    m = numpy.random.default_rng(0xB111).uniform(0, 1, (1, h, w))
    numpy.testing.assert_allclose(viz.upsample(m, (H, W))[0], _naive_bilinear(m[0], H, W), atol=1e-12)


def test_overlay_blends_by_heat():
    f = numpy.random.default_rng(0x0FE7).integers(0, 256, (2, 8, 8, 3), dtype=numpy.uint8)
    zero = viz.overlay(f, numpy.zeros((2, 4, 4)))
    numpy.testing.assert_array_equal(zero, f)  # no heat: the frame unchanged
    full = viz.overlay(f, numpy.ones((2, 4, 4)), alpha=1.0)
    numpy.testing.assert_array_equal(full, numpy.broadcast_to(numpy.rint(255 * viz.jet(1.0)), f.shape))
    half = viz.overlay(f, numpy.ones((2, 4, 4)), alpha=0.5)
    expect = numpy.rint(0.5 * f + 0.5 * 255 * viz.jet(1.0))
    assert numpy.abs(half.astype(float) - expect).max() <= 1
    with pytest.raises(ValueError):
        viz.overlay(f, numpy.ones((3, 4, 4)))


def test_annotate_frames_shape_and_peak_marker():
    T, H, W = 3, 20, 24
    f = numpy.zeros((T, H, W, 3), dtype=numpy.uint8)
    maps = numpy.zeros((T, 5, 6))
    maps[:, 1, 4] = 1.0  # one peak cell per frame
    S = maps.sum(axis=(1, 2))
    out = viz.annotate_frames(f, maps, S, title="x", gt=(0, 1), detected=(1, 2), min_size=64, alpha=0.0)
    k = viz.display_scale((H, W), 64)
    assert out.shape[0] == T and out.shape[1] % 16 == 0 and out.shape[2] % 16 == 0
    assert out.shape[1] >= H * k and out.shape[2] >= W * k
    x, y = map_peak(maps[0], (H, W))  # the cross is drawn in white at the peak, upscaled
    px, py = int((x + 0.5) * k), int((y + 0.5) * k)
    assert out[0, py, px].min() == 255
    # the timeline strip: ground truth (green) under frames 0..1, nothing green under frame 2
    strip = out[2, H * k : H * k + max(12, 4 * k)]  # frame 2: the cursor is away from the GT frames
    green = numpy.all(strip == viz.GT_COLOUR, axis=-1).any(axis=0)
    cols = numpy.flatnonzero(green)
    assert cols.min() == 0 and cols.max() < 2 * W * k // 3 + 1


def test_contact_sheet_layout_and_pngs(tmp_path):
    T = 10
    f = numpy.full((T, 16, 32, 3), 100, dtype=numpy.uint8)
    maps = numpy.random.default_rng(0xC0).normal(size=(T, 4, 8))
    kw = dict(title="t", gt=(2, 4), detected=(3, 3), cols=4, tile=64)
    bare = viz.contact_sheet(f, maps, maps.sum(axis=(1, 2)), legend=False, **kw)
    rows = 3
    assert bare.shape == (22 + rows * (32 + 4 + 18), 4 * (64 + 4), 3)
    img = viz.contact_sheet(f, maps, maps.sum(axis=(1, 2)), **kw)  # the legend goes between title and tiles
    key = viz.legend_image(
        viz.legend_entries(
            gt=(2, 4),
            detected=(3, 3),
            largest=f"yellow label: the largest S (frame {int(numpy.argmax(maps.sum(axis=(1, 2))))})",
        ),
        4 * (64 + 4),
        background=(24, 24, 24),
    )
    assert img.shape == (bare.shape[0] + key.shape[0], bare.shape[1], 3)
    numpy.testing.assert_array_equal(img[22 : 22 + key.shape[0]], key)
    numpy.testing.assert_array_equal(img[22 + key.shape[0] :], bare[22:])
    p = viz.write_png(str(tmp_path / "s.png"), img)
    with PIL.open(p) as im:
        assert im.size == (img.shape[1], img.shape[0]) and im.mode == "RGB"
        numpy.testing.assert_array_equal(numpy.asarray(im), img)


def test_gif_and_mp4_round_trip(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    T = 5
    f = numpy.zeros((T, 32, 48, 3), dtype=numpy.uint8)
    for t in range(T):
        f[t, :, t * 8 : t * 8 + 8] = (255, 0, 0)  # a red bar moving right
    g = viz.write_gif(str(tmp_path / "a.gif"), f, fps=5)
    back = iio.imread(g, index=None)
    assert back.shape[:3] == (T, 32, 48)
    assert numpy.abs(back[..., :3].astype(int) - f).max() <= 8
    with PIL.open(g) as im:
        assert im.n_frames == T and im.info["duration"] == 200 and im.info["loop"] == 0
    m = viz.write_mp4(str(tmp_path / "a.mp4"), f, fps=5)
    try:
        import imageio_ffmpeg  # noqa: F401  (the cli extra installs it; without it MP4s are skipped, documented)
    except ImportError:
        assert m is None
        return
    assert m is not None
    back, info = read_video(m)
    assert back.shape == (T, 32, 48, 3) and info["fps"] == pytest.approx(5)
    assert numpy.abs(back.astype(int) - f).mean() < 10


def test_summary_figure_layout(tmp_path):
    pytest.importorskip("matplotlib")
    T = 10
    f = numpy.zeros((T, 16, 32, 3), dtype=numpy.uint8)
    maps = numpy.ones((T, 4, 8))
    plot = viz.evidence_plot(str(tmp_path / "e.png"), [{"name": "a", "evidence": numpy.ones(T)}])
    rows = [
        {"name": "a", "frames": f, "maps": maps, "gt": (0, 4), "detected": (2, 3)},
        {"name": "b", "frames": f[:3], "maps": maps[:3]},
    ]
    img = viz.summary_figure(rows, plot, frames_per_row=5, tile=40, legend=False)
    with PIL.open(plot) as im:
        pw, ph = im.size
    row_w = [5 * (80 + 4) + 4, 3 * (80 + 4) + 4]  # frames 2:1, 40 px high
    width = max(row_w + [pw])
    assert img.shape == (2 * (40 + 40) + ph, width, 3)
    assert numpy.all(img[18, 2] == viz.GT_COLOUR)  # the first frame of row a is framed in green
    # with a title (24 px) and the legend of the marks above the rows
    full = viz.summary_figure(rows, plot, frames_per_row=5, tile=40, title="x")
    key = viz.legend_image(viz.legend_entries(gt=True, detected=True), width)
    assert full.shape == (24 + key.shape[0] + img.shape[0], width, 3)
    numpy.testing.assert_array_equal(full[24 : 24 + key.shape[0]], key)
    numpy.testing.assert_array_equal(full[24 + key.shape[0] :], img)


def test_evidence_plot_png(tmp_path):
    pytest.importorskip("matplotlib")
    S = numpy.sin(numpy.arange(12.0))
    panels = [
        {"name": "a", "evidence": S, "detected": (1, 3), "gt": (0, 4), "prob": numpy.linspace(0, 1, 12)},
        {"name": "b", "evidence": -S, "detected": None, "gt": None, "zero": [0, 1, 2, 7]},
    ]
    p = viz.evidence_plot(str(tmp_path / "e.png"), panels, title="x")
    with PIL.open(p) as im:
        assert im.format == "PNG" and im.size == (800, int(100 * (2.75 * 2 + 0.45)))


def test_evidence_plot_explains_every_mark():
    pytest.importorskip("matplotlib")
    S = numpy.sin(numpy.arange(12.0))
    panels = [
        {"name": "a", "evidence": S, "detected": (1, 3), "gt": (0, 4), "prob": numpy.linspace(0, 1, 12)},
        {"name": "b", "evidence": -S, "zero": [0, 1, 2, 7]},
    ]
    fig = viz.evidence_figure(panels, title="run")
    main = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert len(main) == 2 and fig.get_suptitle() == "run"
    labels = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in main]
    assert labels[0] == [
        "S > 0",
        "S < 0",
        "ground truth [0, 4]",
        "detected [1, 3]",
        "largest S (frame 8)",
        "probability per step (right axis)",
    ]  # sin(8) = 0.989 is the largest
    assert labels[1] == ["S > 0", "S < 0", "S numerically zero (4 frames)", "largest S (frame 11)"]
    # the numerically-zero frames are hatched: runs 0-2 and 7
    hatched = [pa for pa in main[1].patches if pa.get_hatch()]
    spans = [(round(pa.get_x() + 0.5), round(pa.get_x() + pa.get_width() - 0.5)) for pa in hatched]
    assert spans == [(0, 2), (7, 7)]


def test_numerically_zero():
    assert viz.numerically_zero([1e-14, -0.5, 2e-9, 0.1]) == [0, 2]
    assert viz.numerically_zero([0.0, 0.0]) == [0, 1]  # no evidence at all: every frame
    assert viz.numerically_zero([1.0, -1e-6, 1.1e-6]) == [1]  # the bound is inclusive, relative to max |S|


def test_pointing_outcomes_and_legends_in_every_picture():
    T, H, W = 4, 16, 16
    f = numpy.full((T, H, W, 3), 90, dtype=numpy.uint8)
    maps = numpy.zeros((T, 4, 4))
    maps[:, 1, 2] = 1.0  # the peak cell: x = (2 + 0.5) * 4 - 0.5 = 9.5, y = 5.5 in frame pixels
    maps[3] = -1.0  # no positive evidence: no peak marker unless the frame is scored
    pointing = numpy.array([1, -1, 0, 0])
    entries = viz.legend_entries(gt=(0, 1), detected=(1, 2), pointing=pointing)
    texts = [e[2] for e in entries]
    assert texts == [
        "evidence for the target (clamped at 0)",
        "green frame: ground truth [0, 1]",
        "orange bar: detected [1, 2]",
        "map peak in the target's box (hit)",
        "map peak outside the box (miss)",
        "map peak, frame without a box",
    ]
    hits_only = [e[2] for e in viz.legend_entries(pointing=numpy.array([1, 1]))][1:]
    assert hits_only == ["map peak in the target's box (hit)"]
    sheet = viz.contact_sheet(
        f,
        maps,
        maps.sum(axis=(1, 2)),
        gt=(0, 1),
        detected=(1, 2),
        pointing=pointing,
        cols=4,
        tile=64,
        legend=False,
    )
    k = 64 / W  # tiles are 64 px for 16 px frames; the cross is centred on the peak
    for t, colour in ((0, viz.HIT_COLOUR), (1, viz.MISS_COLOUR), (2, viz.PEAK_COLOUR)):
        x, y = 2 + t * 68 + round(10 * k), 2 + round(6 * k)
        assert tuple(sheet[y, x]) == colour, (t, tuple(sheet[y, x]))
    x3, y3 = 2 + 3 * 68 + round(10 * k), 2 + round(6 * k)
    assert tuple(sheet[y3, x3]) not in (viz.HIT_COLOUR, viz.MISS_COLOUR, viz.PEAK_COLOUR)
    anim = viz.annotate_frames(f, maps, maps.sum(axis=(1, 2)), gt=(0, 1), pointing=pointing, min_size=64)
    bare = viz.annotate_frames(
        f, maps, maps.sum(axis=(1, 2)), gt=(0, 1), pointing=pointing, min_size=64, legend=False
    )
    assert anim.shape[1] > bare.shape[1] and anim.shape[1] % 16 == 0  # the legend below the timeline
    assert tuple(anim[0, round(6 * k), round(10 * k)]) == viz.HIT_COLOUR
