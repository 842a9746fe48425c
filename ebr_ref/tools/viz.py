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
    "write_gif",
    "write_mp4",
    "write_png",
    "display_scale",
    "summary_figure",
]

SCALES = ("clip", "frame")
GT_COLOUR = (40, 200, 60)
DETECTED_COLOUR = (255, 255, 255)
CURSOR_COLOUR = (255, 220, 0)


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
    red = numpy.stack([255 * numpy.clip(v, 0, 1), 80 * numpy.clip(v, 0, 1), numpy.zeros_like(v)], axis=1)
    blue = numpy.stack([numpy.zeros_like(v), 60 * numpy.clip(-v, 0, 1), 255 * numpy.clip(-v, 0, 1)], axis=1)
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


def annotate_frames(frames, maps, evidence, *, title="", gt=None, detected=None, scale="clip", alpha=0.6,
                    min_size=256, peaks=True):
    """Animation frames: heatmap overlay, peak marker, label and a timeline strip.

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
        white: detected).
    scale : {"clip", "frame"}
    alpha : float
    min_size : int
        Frames are upscaled by an integer factor to at least this many pixels.
    peaks : bool
        Mark each frame's map maximum (the pointing-game point) with a cross.

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
    strip_h = max(12, f * 4)
    font = _font(max(10, min(16, f * W // 20)))
    out = []
    for t in range(T):
        canvas = Image.fromarray(numpy.concatenate([img[t], _timeline(T, W * f, evidence, t, gt, detected, strip_h)]))
        draw = ImageDraw.Draw(canvas)
        if peaks:
            p = map_peak(maps[t], (H, W))
            if p is not None:
                x, y = (p[0] + 0.5) * f, (p[1] + 0.5) * f
                r = max(3, f * 2)
                draw.line([(x - r, y), (x + r, y)], fill=(255, 255, 255), width=max(1, f // 2))
                draw.line([(x, y - r), (x, y + r)], fill=(255, 255, 255), width=max(1, f // 2))
        label = f"{title}  t={t}  S={float(evidence[t]):+.3g}".strip()
        draw.text((3, 2), label, fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        out.append(numpy.asarray(canvas))
    return _pad16(numpy.stack(out))


def contact_sheet(frames, maps, evidence, *, title="", gt=None, detected=None, scale="clip", alpha=0.6,
                  cols=8, tile=128):
    """One image of every frame with its heatmap, labelled, in a grid.

    Tiles are framed in green when the frame is inside ``gt`` and underlined in
    white when inside ``detected``; each label shows the frame index and ``S``.

    Returns
    -------
    uint8 ndarray of shape (rows * (tile + 20) + header, cols * tile, 3)
    """
    from PIL import Image, ImageDraw

    frames = numpy.asarray(frames)
    T, H, W, _ = frames.shape
    ov = overlay(frames, display_heat(maps, scale), alpha)
    cols = max(1, min(int(cols), T))
    rows = -(-T // cols)
    th, tw = (tile, max(1, round(tile * W / H))) if H >= W else (max(1, round(tile * H / W)), tile)
    label_h, header = 18, 22 if title else 0
    sheet = Image.new("RGB", (cols * (tw + 4), header + rows * (th + 4 + label_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    if title:
        draw.text((4, 4), title, fill=(255, 255, 255), font=_font(14))
    for t in range(T):
        r, c = divmod(t, cols)
        x0, y0 = c * (tw + 4), header + r * (th + 4 + label_h)
        im = Image.fromarray(ov[t]).resize((tw, th), Image.NEAREST if th >= H else Image.BILINEAR)
        if _in(t, gt):
            draw.rectangle([x0, y0, x0 + tw + 3, y0 + th + 3], fill=GT_COLOUR)
        sheet.paste(im, (x0 + 2, y0 + 2))
        if _in(t, detected):
            draw.rectangle([x0 + 2, y0 + th + 2, x0 + tw + 1, y0 + th + 3], fill=DETECTED_COLOUR)
        draw.text((x0 + 2, y0 + th + 5), f"t={t} S={float(evidence[t]):+.2g}", fill=(230, 230, 230), font=font)
    return numpy.asarray(sheet)


def evidence_plot(path, panels, *, title=""):
    """A PNG plot of per-frame evidence, one panel per target.

    Parameters
    ----------
    path : str
    panels : list of dict
        Each ``{"name", "evidence" (T,), "detected" (s, e) or None, "gt" (s, e)
        or None, "prob" (T,) optional}``: bars of ``S`` (red positive, blue
        negative), the ground-truth interval shaded green, the detected
        interval as an orange band above the axis, and the class probability
        per step as a grey line on a second axis.
    title : str
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = len(panels)
    fig = Figure(figsize=(8, 2.4 * n + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, p in zip(axes, panels):
        s = numpy.asarray(p["evidence"], dtype=numpy.float64)
        t = numpy.arange(s.shape[0])
        ax.bar(t, s, color=numpy.where(s >= 0, "#d62728", "#1f77b4"), width=0.8, zorder=2)
        ax.axhline(0, color="k", lw=0.6, zorder=1)
        handles = []
        if p.get("gt") is not None:
            g0, g1 = p["gt"]
            ax.axvspan(g0 - 0.5, g1 + 0.5, color="#2ca02c", alpha=0.18, zorder=0)
            handles.append(Patch(color="#2ca02c", alpha=0.3, label=f"ground truth [{g0}, {g1}]"))
        if p.get("detected") is not None:
            d0, d1 = p["detected"]
            ax.axvspan(d0 - 0.5, d1 + 0.5, ymin=0.93, ymax=1.0, color="#ff7f0e", zorder=3)
            handles.append(Patch(color="#ff7f0e", label=f"detected [{d0}, {d1}]"))
        if p.get("prob") is not None:
            ax2 = ax.twinx()
            ax2.plot(t, p["prob"], color="0.35", lw=1.2, ls="--", marker=".", ms=3)
            ax2.set_ylim(0, 1.05)
            ax2.set_ylabel("probability", fontsize=8, color="0.35")
            ax2.tick_params(labelsize=7, colors="0.35")
        ax.set_xlim(-0.5, s.shape[0] - 0.5)
        ax.set_ylabel("evidence S", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(p["name"], fontsize=9, loc="left")
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)
    axes[-1].set_xlabel("frame", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def summary_figure(rows, plot_path=None, *, frames_per_row=8, tile=112, title=""):
    """One picture of a run (paper Fig. 5 style): per target a row of evenly spaced frames with their
    heatmaps, then the evidence plot.

    Parameters
    ----------
    rows : list of dict
        ``{"name", "frames" (T, H, W, 3) uint8, "maps" (T, h, w), "gt", "detected", "scale"}``.
    plot_path : str, optional
        A PNG (:func:`evidence_plot`) appended below the rows.
    frames_per_row, tile : int
        Frames shown per target and their height in pixels.

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
        heat = display_heat(row["maps"], row.get("scale", "clip"))[idx]  # the scale of the whole clip
        ov = overlay(fr[idx], heat)
        tw = max(1, round(tile * W / H))
        strip = Image.new("RGB", (len(idx) * (tw + 4) + 4, tile + 40), (255, 255, 255))
        draw = ImageDraw.Draw(strip)
        draw.text((4, 2), row["name"], fill=(0, 0, 0), font=font)
        for n, t in enumerate(idx):
            x0 = 4 + n * (tw + 4)
            if _in(t, row.get("gt")):
                draw.rectangle([x0 - 2, 18, x0 + tw + 1, 20 + tile + 1], fill=GT_COLOUR)
            strip.paste(Image.fromarray(ov[n]).resize((tw, tile), Image.BILINEAR), (x0, 20))
            mark = "  detected" if _in(t, row.get("detected")) else ""
            draw.text((x0, 22 + tile), f"t={t}{mark}", fill=(0, 0, 0), font=small)
        blocks.append(strip)
    if plot_path is not None:
        with Image.open(plot_path) as im:
            blocks.append(im.convert("RGB"))
    width = max(b.width for b in blocks)
    head = 24 if title else 0
    out = Image.new("RGB", (width, head + sum(b.height for b in blocks)), (255, 255, 255))
    if title:
        ImageDraw.Draw(out).text((4, 4), title, fill=(0, 0, 0), font=font)
    y = head
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
    """Write uint8 ``(T, H, W, 3)`` frames as a looping GIF (Pillow; 256 colours per frame, fast octree, no dither)."""
    from PIL import Image

    frames = numpy.asarray(frames, dtype=numpy.uint8)
    ims = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
           for f in frames]
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=int(round(1000.0 / fps)), loop=0)
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
    iio.imwrite(path, numpy.asarray(frames, dtype=numpy.uint8), plugin="FFMPEG", fps=fps, codec="libx264",
                macro_block_size=16, pixelformat="yuv420p", ffmpeg_log_level="error")
    return path
