"""Display steps and picture files: heat scaling, colour map, upsampling geometry, overlays, files that decode.

Oracles: hand values, matplotlib's own 'jet' colour map, a naive bilinear
upsampler written from the cell-centre convention of ebr_ref.evaluation.localize, and
the files decoded back with Pillow / imageio.
"""

import numpy
import pytest

from ebr_ref.tools import viz
from ebr_ref.evaluation.localize import map_peak
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
    """Output pixel (i, j) samples the map at the cell coordinate ((i + 0.5) h / H - 0.5, ...), edges clamped."""
    h, w = m.shape
    out = numpy.empty((H, W))
    for i in range(H):
        for j in range(W):
            u = min(max((i + 0.5) * h / H - 0.5, 0.0), h - 1)
            v = min(max((j + 0.5) * w / W - 0.5, 0.0), w - 1)
            r0, c0 = int(numpy.floor(u)), int(numpy.floor(v))
            r1, c1 = min(r0 + 1, h - 1), min(c0 + 1, w - 1)
            a, b = u - r0, v - c0
            out[i, j] = ((1 - a) * (1 - b) * m[r0, c0] + (1 - a) * b * m[r0, c1]
                         + a * (1 - b) * m[r1, c0] + a * b * m[r1, c1])
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
    img = viz.contact_sheet(f, maps, maps.sum(axis=(1, 2)), title="t", gt=(2, 4), detected=(3, 3), cols=4, tile=64)
    rows = 3
    assert img.shape == (22 + rows * (32 + 4 + 18), 4 * (64 + 4), 3)
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
    rows = [{"name": "a", "frames": f, "maps": maps, "gt": (0, 4), "detected": (2, 3)},
            {"name": "b", "frames": f[:3], "maps": maps[:3]}]
    img = viz.summary_figure(rows, plot, frames_per_row=5, tile=40)
    with PIL.open(plot) as im:
        pw, ph = im.size
    row_w = [5 * (80 + 4) + 4, 3 * (80 + 4) + 4]  # frames 2:1, 40 px high
    assert img.shape == (2 * (40 + 40) + ph, max(row_w + [pw]), 3)
    assert numpy.all(img[18, 2] == viz.GT_COLOUR)  # the first frame of row a is framed in green


def test_evidence_plot_png(tmp_path):
    pytest.importorskip("matplotlib")
    S = numpy.sin(numpy.arange(12.0))
    panels = [{"name": "a", "evidence": S, "detected": (1, 3), "gt": (0, 4), "prob": numpy.linspace(0, 1, 12)},
              {"name": "b", "evidence": -S, "detected": None, "gt": None}]
    p = viz.evidence_plot(str(tmp_path / "e.png"), panels, title="x")
    with PIL.open(p) as im:
        assert im.format == "PNG" and im.size == (800, int(100 * (2.4 * 2 + 0.6)))
