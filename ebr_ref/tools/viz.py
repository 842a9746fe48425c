"""Pictures of a grounding: heatmap overlays, animations, a contact sheet and the evidence plot.

Display steps only (docs/spec.md §5.6): the engine's maps are signed; here they are
clamped at 0 and scaled to ``[0, 1]``, either by one value for the whole clip
(``scale="clip"``, the default: frames without evidence stay dark, so the
animation shows *when* as well as *where*; the value is the 99th percentile of
the clip's positive cells, so that a few extreme cells do not make every other
frame invisible, and larger values saturate at 1) or per frame
(``scale="frame"``, the per-frame min-max display of the paper's figures, with
the minimum taken as 0). A map of an ``h x w`` read-out layer is upsampled bilinearly to the
frame with each cell centred on the block of pixels it stands for (the same
geometry as :func:`ebr_ref.evaluation.localize.map_peak`).

NumPy and SciPy only, except: text, PNG and GIF files use Pillow, the
evidence plot uses matplotlib (its object-oriented API with the Agg canvas, so
no global pyplot state is touched), MP4 files use imageio with
imageio-ffmpeg. Those imports happen inside the functions that need
them (``pip install ebr_ref[cli]``).
"""

from __future__ import annotations

import math

import numpy

from ..evaluation.localize import map_peak

__all__ = [
    "display_heat",
    "jet",
    "upsample",
    "overlay",
    "upscale",
    "annotate_frames",
    "contact_sheet",
    "evidence_plot",
    "evidence_figure",
    "write_gif",
    "write_mp4",
    "write_png",
    "display_scale",
    "summary_figure",
    "legend_entries",
    "legend_image",
    "numerically_zero",
    "evidence_scale",
    "ZERO_RTOL",
]

SCALES = ("clip", "frame")
GT_COLOUR = (40, 200, 60)  # ground truth: a green frame around a tile, a green row in the timeline
DETECTED_COLOUR = (255, 127, 14)  # the detected segment: an orange bar (as in the evidence plot)
CURSOR_COLOUR = (255, 220, 0)  # the animation's current frame on its timeline
HIT_COLOUR = (90, 255, 90)  # the map's peak inside the target's box (pointing game)
MISS_COLOUR = (255, 60, 60)  # the map's peak outside it
PEAK_COLOUR = (255, 255, 255)  # the map's peak where the frame has no box
EVIDENCE_POS, EVIDENCE_NEG = (255, 80, 0), (0, 60, 255)  # timeline: S > 0, S < 0 (full strength at max |S|)
LARGEST_COLOUR = (255, 220, 0)  # the label of the frame with the largest S (contact sheet)


def display_heat(maps, scale="clip"):
    """Signed maps ``(T, h, w)`` -> display values in ``[0, 1]`` (clamped at 0, then scaled).

    ``scale="clip"`` divides by the 99th percentile of the clip's positive
    values (linear interpolation, ``numpy.percentile``'s default) and saturates
    at 1; ``scale="frame"`` divides every frame by its own maximum.

    Examples
    --------
    >>> display_heat(numpy.array([[[-1.0, 2.0]], [[1.0, 0.0]]]), scale="frame").tolist()
    [[[0.0, 1.0]], [[1.0, 0.0]]]
    """
    if scale not in SCALES:
        raise ValueError(f"display scale must be one of {', '.join(SCALES)}, got {scale!r}")
    m = numpy.asarray(maps, dtype=numpy.float64)
    if m.ndim != 3:
        raise ValueError(f"maps must be (T, h, w), got shape {m.shape}")
    if not numpy.all(numpy.isfinite(m)):
        raise ValueError("maps contain NaN or infinite values")
    m = numpy.maximum(m, 0.0)
    if scale == "frame":
        top = m.max(axis=(1, 2), keepdims=True)
    else:
        pos = m[m > 0]
        top = numpy.full((1, 1, 1), numpy.percentile(pos, 99) if pos.size else 0.0)
    return numpy.where(top > 0, numpy.minimum(m / numpy.where(top > 0, top, 1.0), 1.0), 0.0)


def jet(v):
    """The 'jet' colour map as a closed form: values in ``[0, 1]`` -> RGB in ``[0, 1]`` (``(..., 3)``)."""
    v = numpy.clip(numpy.asarray(v, dtype=numpy.float64), 0.0, 1.0)[..., None]
    centres = numpy.array([3.0, 2.0, 1.0])  # r, g, b
    return numpy.clip(1.5 - numpy.abs(4.0 * v - centres), 0.0, 1.0)


def upsample(heat, size):
    """Bilinear upsampling of ``(T, h, w)`` to ``(T, H, W)``, cells centred on their pixel blocks."""
    from scipy import ndimage

    heat = numpy.asarray(heat, dtype=numpy.float64)
    T, h, w = heat.shape
    H, W = size
    if (h, w) == (H, W):
        return heat.copy()
    out = ndimage.zoom(heat, (1, H / h, W / w), order=1, mode="nearest", grid_mode=True)
    if out.shape != (T, H, W):  # pragma: no cover - zoom rounds the output size; guard odd ratios
        out = out[:, :H, :W]
        out = numpy.pad(out, ((0, 0), (0, H - out.shape[1]), (0, W - out.shape[2])), mode="edge")
    return numpy.clip(out, 0.0, 1.0)


def overlay(frames, heat, alpha=0.6):
    """Blend a heatmap over frames: ``out = frame (1 - alpha h) + jet(h) alpha h`` per pixel.

    Parameters
    ----------
    frames : uint8 ndarray of shape (T, H, W, 3)
    heat : ndarray of shape (T, h, w)
        Display values in ``[0, 1]`` (:func:`display_heat`); upsampled to ``(H, W)``.
    alpha : float
        Opacity of the heatmap where ``h == 1``; where ``h == 0`` the frame is
        unchanged.

    Returns
    -------
    uint8 ndarray of shape (T, H, W, 3)
    """
    frames = numpy.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    heat = numpy.asarray(heat, dtype=numpy.float64)
    if heat.ndim != 3 or heat.shape[0] != frames.shape[0]:
        raise ValueError(f"heat must be (T={frames.shape[0]}, h, w), got {heat.shape}")
    h = upsample(heat, frames.shape[1:3])[..., None]  # (T, H, W, 1)
    a = alpha * h
    out = frames.astype(numpy.float64) * (1.0 - a) + 255.0 * jet(h[..., 0]) * a
    return numpy.clip(numpy.rint(out), 0, 255).astype(numpy.uint8)


def display_scale(size, target=256):
    """Integer upscaling factor that brings the larger side of ``size`` to at least ``target`` px."""
    return max(1, math.ceil(target / max(size)))


def upscale(images, factor):
    """Nearest-neighbour upscaling of ``(..., H, W, 3)`` images by an integer factor."""
    if factor == 1:
        return numpy.asarray(images)
    return numpy.repeat(numpy.repeat(images, factor, axis=-3), factor, axis=-2)


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has one bitmap font size
        return ImageFont.load_default()


def _in(t, interval):
    return interval is not None and interval[0] <= t <= interval[1]


def _timeline(T, width, evidence, t, gt, detected, height):
    """A strip under an animation frame: evidence per frame, GT and detected segments, cursor."""
    strip = numpy.zeros((height, width, 3), dtype=numpy.float64)
    cols = numpy.minimum((numpy.arange(width) * T) // width, T - 1)  # frame of each column
    s = numpy.asarray(evidence, dtype=numpy.float64)
    top = numpy.abs(s).max()
    v = s / top if top > 0 else numpy.zeros_like(s)
    red = numpy.clip(v, 0, 1)[:, None] * numpy.array(EVIDENCE_POS, dtype=float)
    blue = numpy.clip(-v, 0, 1)[:, None] * numpy.array(EVIDENCE_NEG, dtype=float)
    bar = height // 2
    strip[:bar] = (red + blue)[cols][None]
    third = max(1, (height - bar) // 2)
    gt_row = numpy.array([_in(k, gt) for k in range(T)])[cols]
    det_row = numpy.array([_in(k, detected) for k in range(T)])[cols]
    strip[bar : bar + third][:, gt_row] = GT_COLOUR
    strip[bar + third :][:, det_row] = DETECTED_COLOUR
    cursor = cols == t
    strip[:, cursor] = 0.5 * strip[:, cursor] + 0.5 * numpy.array(CURSOR_COLOUR)
    return strip.astype(numpy.uint8)


def _pad16(images):
    """Pad ``(T, H, W, 3)`` with black to multiples of 16 (video encoders' macro blocks)."""
    T, H, W, _ = images.shape
    ph, pw = (-H) % 16, (-W) % 16
    if ph == 0 and pw == 0:
        return images
    return numpy.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)))


def _outcome(pointing, t):
    """+1 (hit), -1 (miss) or 0 (no box in frame ``t``, or no boxes at all)."""
    if pointing is None:
        return 0
    return int(numpy.sign(pointing[t]))


def _peak_colour(pointing, t):
    return {1: HIT_COLOUR, -1: MISS_COLOUR}.get(_outcome(pointing, t), PEAK_COLOUR)


def _cross(draw, x, y, r, colour, width):
    """A '+' of half-size ``r`` at ``(x, y)``, outlined in black so that it shows on any heat colour."""
    for c, w in (((0, 0, 0), width + 2), (colour, width)):
        draw.line([(x - r, y), (x + r, y)], fill=c, width=w)
        draw.line([(x, y - r), (x, y + r)], fill=c, width=w)


def _tag(draw, x, y, text, colour, font):
    """A small label on a coloured box (the pointing outcome in a tile's corner)."""
    w = draw.textlength(text, font=font)
    box = draw.textbbox((x + 2, y), text, font=font)
    draw.rectangle([x, y, x + w + 4, box[3] + 2], fill=colour)
    draw.text((x + 2, y), text, fill=(0, 0, 0), font=font)


def _has_outcomes(pointing):
    return pointing is not None and bool(numpy.any(numpy.asarray(pointing) != 0))


ZERO_RTOL = 1e-6  # |S_t| <= ZERO_RTOL * the clip's signal scale: frame t's evidence is numerically zero


def evidence_scale(maps):
    """The signal scale of a clip: the largest total ``sum |map|`` of a frame (``>= max |S_t|``)."""
    m = numpy.abs(numpy.asarray(maps, dtype=numpy.float64))
    return float(m.reshape(m.shape[0], -1).sum(axis=1).max()) if m.size else 0.0


def numerically_zero(S, rtol=ZERO_RTOL, *, scale=None):
    """Frames whose evidence is numerically zero: ``|S_t| <= rtol * scale``.

    ``scale`` is the clip's signal scale (:func:`evidence_scale` of its maps); by
    default the largest ``|S_t|``. With the maps' scale, a frame whose map holds
    signal that cancels out (cEB of a per-frame CNN sums to 0 by construction)
    counts as zero too; every frame counts when there is no signal at all.

    Examples
    --------
    >>> numerically_zero(numpy.array([1e-14, -0.5, 2e-9, 0.1]))
    [0, 2]
    >>> numerically_zero(numpy.array([3e-17, -2e-16]), scale=1.0)  # sums of maps that cancel
    [0, 1]
    """
    a = numpy.abs(numpy.asarray(S, dtype=numpy.float64))
    top = (float(a.max()) if a.size else 0.0) if scale is None else max(float(scale), 0.0)
    return [int(t) for t in numpy.flatnonzero(a <= rtol * top)]


def _zero_frames(maps):
    """The frames whose evidence (the sum of the map) is numerically zero: they show no peak marker."""
    m = numpy.asarray(maps, dtype=numpy.float64)
    return set(numerically_zero(m.reshape(m.shape[0], -1).sum(axis=1), scale=evidence_scale(m)))


def _show_peak(m, pointing, t, zero):
    """Draw frame ``t``'s peak marker: when the pointing game scored it, or when the map holds positive
    evidence and the frame's evidence is not numerically zero (``zero``, :func:`_zero_frames`)."""
    return _outcome(pointing, t) != 0 or (t not in zero and float(numpy.max(m)) > 0)


def legend_entries(
    *,
    gt=None,
    detected=None,
    pointing=None,
    peaks=True,
    heat=True,
    frame_border=True,
    timeline=False,
    zero=False,
    largest=None,
    zero_label=False,
):
    """The legend of a picture: ``(kind, colour, text)`` entries for :func:`legend_image`.

    ``gt`` and ``detected`` may be an interval (its frames are named) or True
    (the mark is explained without frames).
    """

    def frames(iv):
        return "" if iv is True else f" [{iv[0]}, {iv[1]}]"

    out = []
    if heat:
        out.append(("gradient", None, "evidence for the target (clamped at 0)"))
    if gt is not None:
        what = "green frame" if frame_border else "green"
        out.append(("border" if frame_border else "box", GT_COLOUR, f"{what}: ground truth{frames(gt)}"))
    if detected is not None:
        out.append(("underline", DETECTED_COLOUR, f"orange bar: detected{frames(detected)}"))
    if peaks and _has_outcomes(pointing):
        pt = numpy.asarray(pointing)
        if numpy.any(pt > 0):
            out.append(("cross", HIT_COLOUR, "map peak in the target's box (hit)"))
        if numpy.any(pt < 0):
            out.append(("cross", MISS_COLOUR, "map peak outside the box (miss)"))
        if numpy.any(pt == 0):
            out.append(("cross", PEAK_COLOUR, "map peak, frame without a box"))
    elif peaks:
        out.append(("cross", PEAK_COLOUR, "map peak"))
    if largest is not None:
        out.append(("text", LARGEST_COLOUR, largest))
    if zero_label:
        out.append(
            ("text", None, f"S~0: numerically zero (|S| <= {ZERO_RTOL:g} x the largest sum |map| of a frame)")
        )
    if timeline:
        out.append(("box", EVIDENCE_POS, "timeline: S > 0"))
        out.append(("box", EVIDENCE_NEG, "S < 0"))
        out.append(("box", CURSOR_COLOUR, "this frame"))
    if zero:
        out.append(("box", (128, 128, 128), "S numerically zero"))
    return out


def legend_image(entries, width, *, background=(255, 255, 255), size=11, pad=4):
    """The legend ``entries`` (:func:`legend_entries`) in lines that fit ``width`` pixels; uint8 (h, w, 3)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    fg = (0, 0, 0) if sum(background) > 380 else (235, 235, 235)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sw, line_h, gap = size + 2, size + 7, 10
    lines, x = [[]], pad
    for kind, colour, text in entries:
        w = (
            (0 if kind == "text" else sw + 4)
            + (2 * sw if kind == "gradient" else 0)
            + int(probe.textlength(text, font=font))
        )
        if lines[-1] and x + w > width - pad:
            lines.append([])
            x = pad
        lines[-1].append((x, kind, colour, text))
        x += w + gap
    im = Image.new("RGB", (width, pad + line_h * len(lines)), background)
    draw = ImageDraw.Draw(im)
    for n, line in enumerate(lines):
        y = pad + n * line_h
        for x, kind, colour, text in line:
            y1 = y + sw - 1
            if kind == "border":
                draw.rectangle([x, y, x + sw - 1, y1], outline=colour, width=3)
            elif kind == "box":
                draw.rectangle([x, y, x + sw - 1, y1], fill=colour)
            elif kind == "underline":
                draw.rectangle([x, y1 - 3, x + sw - 1, y1], fill=colour)
            elif kind == "cross":
                draw.rectangle([x, y, x + sw - 1, y1], fill=(90, 90, 90))
                _cross(draw, x + sw // 2, y + sw // 2, sw // 2 - 2, colour, 2)
            elif kind == "text":  # the text itself in the colour it explains
                draw.text((x, y - 1), text, fill=colour or fg, font=font)
                continue
            elif kind == "gradient":
                ramp = (255 * jet(numpy.linspace(0, 1, 3 * sw))).astype(numpy.uint8)  # (3 sw, 3)
                draw_im = Image.fromarray(numpy.repeat(ramp[None], sw, axis=0))
                im.paste(draw_im, (x, y))
                draw.text((x + 3 * sw + 4, y - 1), text, fill=fg, font=font)
                continue
            draw.text((x + sw + 4, y - 1), text, fill=fg, font=font)
    return numpy.asarray(im)


def annotate_frames(
    frames,
    maps,
    evidence,
    *,
    title="",
    gt=None,
    detected=None,
    scale="clip",
    alpha=0.6,
    min_size=256,
    peaks=True,
    pointing=None,
    legend=True,
):
    """Animation frames: heatmap overlay, peak marker, label, a timeline strip and a legend.

    Parameters
    ----------
    frames : uint8 ndarray of shape (T, H, W, 3)
        The frames the model saw (fitted to its input size).
    maps : ndarray of shape (T, h, w)
        Signed maps at the read-out layer.
    evidence : ndarray of shape (T,)
        Per-frame evidence ``S``.
    title : str
        Drawn in the top-left corner of every frame.
    gt, detected : (int, int), optional
        Inclusive frame intervals drawn on the timeline (green: ground truth,
        orange: detected).
    scale : {"clip", "frame"}
    alpha : float
    min_size : int
        Frames are upscaled by an integer factor to at least this many pixels.
    peaks : bool
        Mark each frame's map maximum (the pointing-game point) with a cross.
    pointing : array of shape (T,), optional
        The pointing game per frame (+1 hit, -1 miss, 0 no box): the cross is
        green or red, and the frame says "hit" or "miss".
    legend : bool
        Explain the marks below the timeline.

    Returns
    -------
    uint8 ndarray of shape (T, H', W', 3)
        ``H'`` and ``W'`` are multiples of 16.
    """
    from PIL import Image, ImageDraw

    frames = numpy.asarray(frames)
    T, H, W, _ = frames.shape
    maps = numpy.asarray(maps, dtype=numpy.float64)
    if maps.ndim != 3 or maps.shape[0] != T:
        raise ValueError(f"maps must be (T={T}, h, w), got {maps.shape}")
    f = display_scale((H, W), min_size)
    img = upscale(overlay(frames, display_heat(maps, scale), alpha), f)  # (T, fH, fW, 3)
    zero = _zero_frames(maps)
    strip_h = max(12, f * 4)
    font = _font(max(10, min(16, f * W // 20)))
    key = None
    if legend:
        entries = legend_entries(
            gt=gt, detected=detected, pointing=pointing, peaks=peaks, frame_border=False, timeline=True
        )
        key = legend_image(entries, W * f, background=(0, 0, 0), size=10)
    out = []
    for t in range(T):
        parts = [img[t], _timeline(T, W * f, evidence, t, gt, detected, strip_h)]
        parts += [key] if key is not None else []
        canvas = Image.fromarray(numpy.concatenate(parts))
        draw = ImageDraw.Draw(canvas)
        if peaks and _show_peak(maps[t], pointing, t, zero):
            p = map_peak(maps[t], (H, W))
            if p is not None:
                x, y = (p[0] + 0.5) * f, (p[1] + 0.5) * f
                _cross(draw, x, y, max(3, f * 2), _peak_colour(pointing, t), max(1, f // 2))
        label = f"{title}  t={t}  S={float(evidence[t]):+.3g}".strip()
        draw.text((3, 2), label, fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        if _outcome(pointing, t):
            _tag(
                draw,
                3,
                f * H - font.size - 6,
                "hit" if _outcome(pointing, t) > 0 else "miss",
                _peak_colour(pointing, t),
                font,
            )
        out.append(numpy.asarray(canvas))
    return _pad16(numpy.stack(out))


def contact_sheet(
    frames,
    maps,
    evidence,
    *,
    title="",
    gt=None,
    detected=None,
    scale="clip",
    alpha=0.6,
    cols=8,
    tile=128,
    pointing=None,
    peaks=True,
    legend=True,
):
    """One image of every frame with its heatmap, labelled, in a grid, with a legend of its marks.

    Tiles are framed in green when the frame is inside ``gt`` and underlined in
    orange when inside ``detected``; each label shows the frame index and ``S``;
    a cross marks the map's peak (green: inside the target's box, red: outside,
    white: no box), and a tile says "hit" or "miss" when ``pointing`` is given.

    Returns
    -------
    uint8 ndarray of shape (header + legend + rows * (th + 4 + 18), cols * (tw + 4), 3)
        ``th x tw`` is the tile size (the longer side ``tile`` px), ``header``
        22 px when there is a title, and the legend's height
        (:func:`legend_image`) when ``legend``.
    """
    from PIL import Image, ImageDraw

    frames = numpy.asarray(frames)
    T, H, W, _ = frames.shape
    maps = numpy.asarray(maps, dtype=numpy.float64)
    ov = overlay(frames, display_heat(maps, scale), alpha)
    cols = max(1, min(int(cols), T))
    rows = -(-T // cols)
    th, tw = (tile, max(1, round(tile * W / H))) if H >= W else (max(1, round(tile * H / W)), tile)
    width = cols * (tw + 4)
    S = numpy.asarray(evidence, dtype=numpy.float64)
    finite = S.size and numpy.all(numpy.isfinite(S))
    largest = int(numpy.argmax(S)) if finite and numpy.any(S != 0) else None
    zero = set(numerically_zero(S, scale=evidence_scale(maps))) if finite else set()
    key = None
    if legend:
        label = None if largest is None else f"yellow label: the largest S (frame {largest})"
        entries = legend_entries(
            gt=gt, detected=detected, pointing=pointing, peaks=peaks, zero_label=bool(zero), largest=label
        )
        key = legend_image(entries, width, background=(24, 24, 24))
    label_h, header = 18, 22 if title else 0
    top = header + (key.shape[0] if key is not None else 0)
    sheet = Image.new("RGB", (width, top + rows * (th + 4 + label_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    if title:
        draw.text((4, 4), title, fill=(255, 255, 255), font=_font(14))
    if key is not None:
        sheet.paste(Image.fromarray(key), (0, header))
    for t in range(T):
        r, c = divmod(t, cols)
        x0, y0 = c * (tw + 4), top + r * (th + 4 + label_h)
        im = Image.fromarray(ov[t]).resize((tw, th), Image.NEAREST if th >= H else Image.BILINEAR)
        if _in(t, gt):
            draw.rectangle([x0, y0, x0 + tw + 3, y0 + th + 3], fill=GT_COLOUR)
        sheet.paste(im, (x0 + 2, y0 + 2))
        if _in(t, detected):
            draw.rectangle([x0 + 2, y0 + th + 1, x0 + tw + 1, y0 + th + 3], fill=DETECTED_COLOUR)
        if peaks and _show_peak(maps[t], pointing, t, zero):
            p = map_peak(maps[t], (H, W))
            if p is not None:
                x, y = x0 + 2 + (p[0] + 0.5) * tw / W, y0 + 2 + (p[1] + 0.5) * th / H
                _cross(draw, x, y, max(3, tw // 24), _peak_colour(pointing, t), 2)
        if _outcome(pointing, t):
            word = "hit" if _outcome(pointing, t) > 0 else "miss"
            _tag(draw, x0 + 3, y0 + 3, word, _peak_colour(pointing, t), _font(11))
        colour = LARGEST_COLOUR if t == largest else (230, 230, 230)
        value = "S~0" if t in zero else f"S={float(S[t]):+.2g}"
        draw.text((x0 + 2, y0 + th + 5), f"t={t} {value}", fill=colour, font=font)
    return numpy.asarray(sheet)


def _zero_runs(frames):
    """Contiguous runs ``(first, last)`` of sorted frame indices."""
    runs = []
    for t in frames:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return runs


def evidence_plot(path, panels, *, title=""):
    """A PNG plot of per-frame evidence, one panel per target, each with a legend of its marks.

    Parameters
    ----------
    path : str or file object
    panels : list of dict
        Each ``{"name", "evidence" (T,), "detected" (s, e) or None, "gt" (s, e)
        or None, "prob" (T,) optional, "zero" (frames) optional}``: bars of
        ``S`` (red positive, blue negative), the ground-truth interval shaded
        green, the detected interval as an orange band along the top, the
        frame of the largest ``S`` marked with a black triangle, frames whose
        ``S`` is numerically zero hatched grey, and the target's probability
        per step as a dashed grey line on the right axis.
    title : str
    """
    evidence_figure(panels, title=title).savefig(path, format="png")
    return path


def evidence_figure(panels, *, title=""):
    """The matplotlib ``Figure`` that :func:`evidence_plot` saves (Agg canvas; no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(panels)
    fig = Figure(figsize=(8, 2.75 * n + (0.45 if title else 0.1)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, p in zip(axes, panels):
        s = numpy.asarray(p["evidence"], dtype=numpy.float64)
        t = numpy.arange(s.shape[0])
        ax.bar(t, s, color=numpy.where(s >= 0, "#d62728", "#1f77b4"), width=0.8, zorder=2)
        ax.axhline(0, color="k", lw=0.6, zorder=1)
        handles = [Patch(color="#d62728", label="S > 0"), Patch(color="#1f77b4", label="S < 0")]
        if p.get("gt") is not None:
            g0, g1 = p["gt"]
            ax.axvspan(g0 - 0.5, g1 + 0.5, color="#2ca02c", alpha=0.18, zorder=0)
            handles.append(Patch(color="#2ca02c", alpha=0.3, label=f"ground truth [{g0}, {g1}]"))
        if p.get("detected") is not None:
            d0, d1 = p["detected"]
            ax.axvspan(d0 - 0.5, d1 + 0.5, ymin=0.93, ymax=1.0, color="#ff7f0e", zorder=3)
            handles.append(Patch(color="#ff7f0e", label=f"detected [{d0}, {d1}]"))
        zero = list(p.get("zero") or [])
        if zero:
            for a, b in _zero_runs(zero):
                ax.axvspan(
                    a - 0.5, b + 0.5, ymax=0.9, facecolor="0.88", edgecolor="0.6", hatch="///", lw=0, zorder=0
                )
            handles.append(
                Patch(
                    facecolor="0.88",
                    edgecolor="0.6",
                    hatch="///",
                    label=f"S numerically zero ({len(zero)} frames)",
                )
            )
        if s.size and numpy.all(numpy.isfinite(s)) and numpy.any(s != 0):
            k = int(numpy.argmax(s))
            ax.plot(
                [k],
                [1.0],
                marker="v",
                color="k",
                ms=6,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                zorder=4,
                ls="none",
            )
            handles.append(
                Line2D([], [], marker="v", color="k", ls="none", ms=6, label=f"largest S (frame {k})")
            )
        if p.get("prob") is not None:
            ax2 = ax.twinx()
            ax2.plot(t, p["prob"], color="0.35", lw=1.2, ls="--", marker=".", ms=3)
            ax2.set_ylim(0, 1.05)
            ax2.set_ylabel("probability", fontsize=8, color="0.35")
            ax2.tick_params(labelsize=7, colors="0.35")
            handles.append(
                Line2D(
                    [],
                    [],
                    color="0.35",
                    lw=1.2,
                    ls="--",
                    marker=".",
                    ms=3,
                    label="probability per step (right axis)",
                )
            )
        ax.set_xlim(-0.5, s.shape[0] - 0.5)
        ax.set_ylabel("evidence S", fontsize=8)
        ax.set_xlabel("frame", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(p["name"], fontsize=9, loc="left")
        ax.legend(
            handles=handles,
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(0.0, -0.2),
            ncol=4,
            frameon=False,
            borderaxespad=0.0,
            handlelength=1.6,
            columnspacing=1.2,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def summary_figure(rows, plot_path=None, *, frames_per_row=8, tile=112, title="", legend=True):
    """One picture of a run (paper Fig. 5 style): its title and a legend of the marks, per target a row of
    evenly spaced frames with their heatmaps, then the evidence plot.

    Parameters
    ----------
    rows : list of dict
        ``{"name", "frames" (T, H, W, 3) uint8, "maps" (T, h, w), "gt", "detected", "scale", "pointing",
        "largest"}`` (``pointing`` optional: +1/-1/0 per frame, the pointing game; ``largest`` optional:
        the frame of the largest ``S``, always among the frames shown, labelled "largest S").
    plot_path : str or file object, optional
        A PNG (:func:`evidence_plot`, best without its own title) appended below the rows.
    frames_per_row, tile : int
        Frames shown per target and their height in pixels.
    title : str
        Drawn at the top, above the legend.
    legend : bool

    Returns
    -------
    uint8 ndarray of shape (H, W, 3)
    """
    from PIL import Image, ImageDraw

    blocks = []
    font, small = _font(14), _font(11)
    for row in rows:
        fr = numpy.asarray(row["frames"])
        T, H, W, _ = fr.shape
        idx = numpy.unique(numpy.linspace(0, T - 1, min(frames_per_row, T)).round().astype(int))
        largest = row.get("largest")
        if largest is not None and largest not in idx:  # the frame of the largest S replaces its neighbour
            idx[numpy.argmin(numpy.abs(idx - largest))] = largest
            idx = numpy.unique(idx)
        maps = numpy.asarray(row["maps"], dtype=numpy.float64)
        zero = _zero_frames(maps)
        heat = display_heat(maps, row.get("scale", "clip"))[idx]  # the scale of the whole clip
        ov = overlay(fr[idx], heat)
        pointing = row.get("pointing")
        tw = max(1, round(tile * W / H))
        strip = Image.new("RGB", (len(idx) * (tw + 4) + 4, tile + 40), (255, 255, 255))
        draw = ImageDraw.Draw(strip)
        draw.text((4, 2), row["name"], fill=(0, 0, 0), font=font)
        for n, t in enumerate(idx):
            x0 = 4 + n * (tw + 4)
            if _in(t, row.get("gt")):
                draw.rectangle([x0 - 2, 18, x0 + tw + 1, 20 + tile + 1], fill=GT_COLOUR)
            strip.paste(Image.fromarray(ov[n]).resize((tw, tile), Image.BILINEAR), (x0, 20))
            p = map_peak(maps[t], (H, W)) if _show_peak(maps[t], pointing, t, zero) else None
            if p is not None:
                _cross(
                    draw,
                    x0 + (p[0] + 0.5) * tw / W,
                    20 + (p[1] + 0.5) * tile / H,
                    max(3, tw // 22),
                    _peak_colour(pointing, t),
                    2,
                )
            if _outcome(pointing, t):
                word = "hit" if _outcome(pointing, t) > 0 else "miss"
                _tag(draw, x0 + 2, 22, word, _peak_colour(pointing, t), small)
            if _in(t, row.get("detected")):
                draw.rectangle([x0, 20 + tile + 2, x0 + tw - 1, 20 + tile + 5], fill=DETECTED_COLOUR)
            label = f"t={t}" + (", largest S" if t == largest else "")
            draw.text((x0, 26 + tile), label, fill=(0, 0, 0), font=small)
        blocks.append(strip)
    if plot_path is not None:
        with Image.open(plot_path) as im:
            blocks.append(im.convert("RGB"))
    width = max(b.width for b in blocks)
    head = []
    if title:
        t_im = Image.new("RGB", (width, 24), (255, 255, 255))
        ImageDraw.Draw(t_im).text((4, 4), title, fill=(0, 0, 0), font=font)
        head.append(t_im)
    if legend and rows:
        pointing = numpy.concatenate(
            [
                numpy.asarray(r.get("pointing"), dtype=float).ravel()
                for r in rows
                if r.get("pointing") is not None
            ]
            or [numpy.zeros(0)]
        )
        entries = legend_entries(
            gt=True if any(r.get("gt") is not None for r in rows) else None,
            detected=True if any(r.get("detected") is not None for r in rows) else None,
            pointing=pointing if pointing.size else None,
        )
        head.append(Image.fromarray(legend_image(entries, width)))
    blocks = head + blocks
    out = Image.new("RGB", (width, sum(b.height for b in blocks)), (255, 255, 255))
    y = 0
    for b in blocks:
        out.paste(b, (0, y))
        y += b.height
    return numpy.asarray(out)


def write_png(path, image):
    """Write a uint8 ``(H, W, 3)`` image as PNG (Pillow)."""
    from PIL import Image

    Image.fromarray(numpy.asarray(image, dtype=numpy.uint8)).save(path, format="PNG")
    return path


def write_gif(path, frames, fps=4.0):
    """Write uint8 ``(T, H, W, 3)`` frames as a looping GIF (Pillow; 256 colours per frame, fast octree,
    no dither)."""
    from PIL import Image

    frames = numpy.asarray(frames, dtype=numpy.uint8)
    ims = [
        Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        for f in frames
    ]
    ims[0].save(
        path, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000.0 / fps)), loop=0
    )
    return path


def write_mp4(path, frames, fps=4.0):
    """Write uint8 ``(T, H, W, 3)`` frames as H.264 MP4; None when imageio-ffmpeg is missing.

    Sides must be multiples of 16 (:func:`annotate_frames` pads them).
    """
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()  # raises when the binary is missing
    except (ImportError, RuntimeError):
        return None
    iio.imwrite(
        path,
        numpy.asarray(frames, dtype=numpy.uint8),
        plugin="FFMPEG",
        fps=fps,
        codec="libx264",
        macro_block_size=16,
        pixelformat="yuv420p",
        ffmpeg_log_level="error",
    )
    return path
