"""Video input: decode a video file or a folder of frames, fit the frames to a model, preprocess.

Videos are decoded with imageio's ffmpeg plugin package ``imageio-ffmpeg``
(the ffmpeg binary it ships; ``pip install ebr_ref[cli]``), frame folders with
Pillow. Both are imported inside the functions that need them, never by
``import ebr_ref``.

Conventions
-----------
* Decoded frames are ``uint8`` arrays ``(T, H, W, 3)``, RGB, in decoding order
  (frame folders: file names in natural order, ``frame2.png`` before
  ``frame10.png``).
* :func:`fit_frames` brings frames to a model's input size: ``"crop"`` (the
  default) scales the frame so that it covers the input size and crops the
  centre (the released VGG/LRCN pipelines' resize-then-centre-crop);
  ``"stretch"`` resizes to the input size, changing the aspect ratio. Resizing
  uses Pillow's bilinear filter.
* A preprocessing dict (the form ``weights_io`` writes into a model's
  sidecar) says how an RGB image with values in ``[0, 1]`` becomes the network
  input::

      x[c] = (image[channel_order[c]] * scale - mean[c]) / std[c]

  ``channel_order`` is ``"RGB"`` or ``"BGR"``; ``mean`` and ``std`` are in the
  network's channel order. A missing preprocessing entry, or a string that
  starts with ``"none"`` or ``"identity"`` or says ``"RGB in [0, 1]"`` (the
  free-text notes of the shipped synthetic models), means the identity: RGB
  in ``[0, 1]``. Any other string is refused (a preset name such as
  ``"caffe_vgg16"`` must be written out as the dict).

Frame size limit: a frame may have at most :data:`MAX_FRAME_PIXELS` pixels
(4096 x 4096, about 16.8 million; ``max_pixels=`` changes it). The size is read
from the file's header before anything is decoded (Pillow's lazy open for an
image, ffmpeg's stream description for a video), so that a small file that
claims a huge frame (a "decompression bomb") costs nothing.

Every failure caused by the input (missing path, unreadable or empty file,
a folder without images, a frame over the size limit, a bad preprocessing
entry) raises :class:`VideoError`, a ``ValueError`` whose message names the path.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy

__all__ = [
    "VideoError",
    "MAX_FRAME_PIXELS",
    "IMAGE_EXTENSIONS",
    "read_frames",
    "read_video",
    "read_frame_dir",
    "fit_frames",
    "preprocessing_of",
    "preprocess",
    "clip_for_model",
    "fit_boxes",
    "IDENTITY",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IDENTITY = {
    "name": "identity",
    "channel_order": "RGB",
    "scale": 1.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
}
FIT_MODES = ("crop", "stretch")
MAX_FRAME_PIXELS = 4096 * 4096  # pixels per decoded frame (4K UHD is 8.3 million); see the module notes


class VideoError(ValueError):
    """A video, a frame folder or a preprocessing entry could not be used; the message names it."""


def _natural_key(name):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def _check_sampling(every, max_frames, start):
    for name, v, lo in (("every", every, 1), ("start", start, 0)):
        if not isinstance(v, (int, numpy.integer)) or isinstance(v, bool) or v < lo:
            raise VideoError(f"{name} must be an integer >= {lo}, got {v!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, numpy.integer)) or max_frames < 1):
        raise VideoError(f"max_frames must be a positive integer or None, got {max_frames!r}")


def _check_max_pixels(max_pixels):
    if not isinstance(max_pixels, (int, numpy.integer)) or isinstance(max_pixels, bool) or max_pixels < 1:
        raise VideoError(f"max_pixels must be a positive integer, got {max_pixels!r}")


def _selected(k, every, start):
    return k >= start and (k - start) % every == 0


def read_frames(path, *, every=1, max_frames=None, start=0, progress=None, max_pixels=MAX_FRAME_PIXELS):
    """Decode a video file or a folder of images.

    Parameters
    ----------
    path : str or path-like
        A video file (anything ffmpeg decodes) or a folder of image files.
    every : int
        Keep every ``every``-th frame.
    max_frames : int, optional
        Stop after this many kept frames.
    start : int
        Index of the first decoded frame to keep.
    progress : callable, optional
        ``progress(iterable, total=..., desc=...)`` wrapping the decoding loop
        (for example ``tqdm.tqdm``).
    max_pixels : int
        Refuse frames with more pixels (``H * W``), checked from the header
        before decoding (default :data:`MAX_FRAME_PIXELS`).

    Returns
    -------
    frames : uint8 ndarray of shape (T, H, W, 3)
    info : dict
        ``source``, ``kind`` (``"video"`` or ``"frames"``), ``fps`` (None when
        unknown), ``indices`` (decoded index of every kept frame), ``size``
        ``(H, W)`` as decoded.

    Raises
    ------
    VideoError
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        return read_frame_dir(
            path, every=every, max_frames=max_frames, start=start, progress=progress, max_pixels=max_pixels
        )
    return read_video(
        path, every=every, max_frames=max_frames, start=start, progress=progress, max_pixels=max_pixels
    )


def _keep_going(kept, max_frames):
    return max_frames is None or kept < max_frames


_VIDEO_SIZE = re.compile(r"(?<![\w.])([1-9]\d{0,8})x([1-9]\d{0,8})(?![\w.])")


def _probe(exe, path):
    """Ask ffmpeg whether ``path`` holds a video stream.

    Returns ``(reason, size)``: the reason (last ffmpeg message) when there is
    no readable video stream, else None; and the first video stream's
    ``(W, H)`` from its description, or None when ffmpeg did not state it.
    """
    import subprocess

    try:
        r = subprocess.run([exe, "-hide_banner", "-nostdin", "-i", path], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"ffmpeg could not run ({_reason(e)})", None
    err = r.stderr.decode("utf-8", "replace")
    for line in err.splitlines():
        if "Video:" in line:
            m = _VIDEO_SIZE.search(line.split("Video:", 1)[1])
            return None, (int(m.group(1)), int(m.group(2))) if m else None
    lines = [ln.strip() for ln in err.splitlines() if ln.strip() and "At least one output file" not in ln]
    return (lines[-1] if lines else "no video stream"), None


def _check_pixels(path, W, H, max_pixels):
    if W * H > max_pixels:
        raise VideoError(
            f"{path}: frames of {W}x{H} = {W * H:,} pixels exceed the limit of {max_pixels:,} "
            "pixels per frame (max_pixels; ebr-ref --max-frame-pixels)"
        )


def _decode(gen, path, every, max_frames, start, progress, max_pixels):
    frames, indices, fps = [], [], None
    try:
        meta = next(gen)
        W, H = (int(v) for v in meta["size"])
        _check_pixels(path, W, H, max_pixels)  # before the first frame is read
        fps = float(meta["fps"]) if meta.get("fps") else None
        duration = meta.get("duration")
        total = int(round(fps * float(duration))) if fps and duration and numpy.isfinite(duration) else None
        it = gen if progress is None else progress(gen, total=total, desc="decoding video")
        try:
            for k, buf in enumerate(it):
                if not _keep_going(len(frames), max_frames):
                    break
                if _selected(k, every, start):
                    frames.append(numpy.frombuffer(buf, dtype=numpy.uint8).reshape(H, W, 3).copy())
                    indices.append(k)
        finally:
            if it is not gen and hasattr(it, "close"):
                it.close()
    except VideoError:
        raise
    except Exception as e:  # imageio-ffmpeg raises OSError, RuntimeError, ValueError... for a bad stream
        what = "not a readable video" if not indices else f"decoding failed after {len(indices)} frames"
        raise VideoError(f"{path}: {what} ({_reason(e)})") from None
    return frames, indices, fps


def read_video(path, *, every=1, max_frames=None, start=0, progress=None, max_pixels=MAX_FRAME_PIXELS):
    """Decode a video file with imageio's ffmpeg plugin, ``imageio-ffmpeg`` (see :func:`read_frames`).

    The file is probed first (``ffmpeg -i``), so that an unreadable file, or a
    frame size over ``max_pixels``, gives a clear error before decoding starts;
    frames are then streamed as RGB24 by ``imageio_ffmpeg.read_frames``, whose
    generator is always closed (ffmpeg stopped, pipes closed), also when
    ``max_frames`` stops early.
    """
    path = os.fspath(path)
    _check_sampling(every, max_frames, start)
    _check_max_pixels(max_pixels)
    if not os.path.isfile(path):
        raise VideoError(f"{path}: not a file")
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - the cli extra is installed in every test environment
        raise VideoError(
            "reading videos needs imageio and imageio-ffmpeg: pip install 'ebr_ref[cli]'"
        ) from None
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: the file is empty")
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:  # pragma: no cover
        raise VideoError(f"no ffmpeg binary ({_reason(e)})") from None
    why, size = _probe(exe, path)
    if why is not None:
        raise VideoError(f"{path}: not a readable video ({why})")
    if size is not None:
        _check_pixels(path, size[0], size[1], max_pixels)
    with warnings.catch_warnings():
        # imageio-ffmpeg (0.4-0.6) leaves ffmpeg's stdin/stdout pipes to the garbage collector when ffmpeg
        # has already exited at the end of the stream; they are freed when the generator is dropped below.
        warnings.simplefilter("ignore", ResourceWarning)
        gen = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        try:
            frames, indices, fps = _decode(gen, path, every, max_frames, start, progress, max_pixels)
        finally:
            gen.close()  # stops ffmpeg if it still runs
            del gen
    if not frames:
        raise VideoError(f"{path}: no frames decoded (start={start}, every={every})")
    out = numpy.stack(frames)
    return out, {"source": path, "kind": "video", "fps": fps, "indices": indices, "size": out.shape[1:3]}


def read_frame_dir(path, *, every=1, max_frames=None, start=0, progress=None, max_pixels=MAX_FRAME_PIXELS):
    """Read the images of a folder with Pillow, in natural file-name order (see :func:`read_frames`).

    Each image's size is read from its header (Pillow opens lazily) and
    checked against ``max_pixels`` before it is decoded; Pillow's own
    decompression-bomb check is replaced by this limit.
    """
    path = os.fspath(path)
    _check_sampling(every, max_frames, start)
    _check_max_pixels(max_pixels)
    if not os.path.isdir(path):
        raise VideoError(f"{path}: not a folder")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover
        raise VideoError("reading frame folders needs Pillow: pip install 'ebr_ref[cli]'") from None
    names = sorted((n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
    if not names:
        raise VideoError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    chosen = [(k, n) for k, n in enumerate(names) if _selected(k, every, start)]
    if max_frames is not None:
        chosen = chosen[:max_frames]
    if not chosen:
        raise VideoError(f"{path}: no frames selected ({len(names)} images, start={start}, every={every})")
    it = chosen if progress is None else progress(chosen, total=len(chosen), desc="reading frames")
    frames = []
    for _, n in it:
        frames.append(_read_image(os.path.join(path, n), Image, UnidentifiedImageError, max_pixels))
    sizes = {fr.shape[:2] for fr in frames}
    if len(sizes) > 1:
        raise VideoError(
            f"{path}: the images differ in size ({sorted(sizes)[:3]}...); frames must share one size"
        )
    out = numpy.stack(frames)
    return out, {
        "source": path,
        "kind": "frames",
        "fps": None,
        "indices": [k for k, _ in chosen],
        "size": out.shape[1:3],
        "files": [n for _, n in chosen],
    }


def _read_image(f, Image, UnidentifiedImageError, max_pixels):
    """One image file as uint8 RGB ``(H, W, 3)``, its size checked from the header before decoding."""
    try:
        with warnings.catch_warnings():
            # max_pixels replaces Pillow's limit (its warning at MAX_IMAGE_PIXELS, its error at twice that)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(f)
    except Image.DecompressionBombError as e:
        raise VideoError(
            f"{f}: the image is larger than Pillow decodes ({_reason(e)}); the limit is "
            f"{max_pixels:,} pixels per frame"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise VideoError(f"{f}: not a readable image ({_reason(e)})") from None
    with im:
        W, H = im.size
        _check_pixels(f, W, H, max_pixels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return numpy.asarray(im.convert("RGB"))
        except Image.DecompressionBombError as e:
            raise VideoError(f"{f}: the image is larger than Pillow decodes ({_reason(e)})") from None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as e:
            raise VideoError(f"{f}: not a readable image ({_reason(e)})") from None


def _reason(e):
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def fit_frames(frames, size, mode="crop"):
    """Resize (and centre-crop) frames to ``size``.

    Parameters
    ----------
    frames : uint8 ndarray of shape (T, H, W, 3)
    size : (int, int)
        ``(h, w)``, the model's input size.
    mode : {"crop", "stretch"}
        See the module notes.

    Returns
    -------
    uint8 ndarray of shape (T, h, w, 3)
    """
    if mode not in FIT_MODES:
        raise VideoError(f"fit mode must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    frames = numpy.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != numpy.uint8:
        raise VideoError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    h, w = (int(v) for v in size)
    T, H, W, _ = frames.shape
    if (H, W) == (h, w):
        return frames.copy()
    from PIL import Image

    sy, sx, top, left = _fit_geometry((H, W), (h, w), mode)
    rh, rw = int(round(H * sy)), int(round(W * sx))
    box = None if mode == "stretch" else (left, top, left + w, top + h)
    out = numpy.empty((T, h, w, 3), dtype=numpy.uint8)
    for t in range(T):  # one Pillow resize per frame
        im = Image.fromarray(frames[t]).resize((rw, rh), Image.BILINEAR)
        out[t] = numpy.asarray(im if box is None else im.crop(box))
    return out


def _fit_geometry(size_in, size_out, mode):
    """``(sy, sx, top, left)``: a fitted pixel edge ``e' = e * s - offset`` for an input edge ``e``."""
    H, W = size_in
    h, w = size_out
    if mode == "stretch":
        return h / H, w / W, 0, 0
    s = max(h / H, w / W)
    rh, rw = max(h, int(round(H * s))), max(w, int(round(W * s)))
    return rh / H, rw / W, (rh - h) // 2, (rw - w) // 2


def fit_boxes(boxes, size_in, size_out, mode="crop"):
    """Map inclusive pixel boxes ``(n, 4)`` of the decoded frames onto the fitted frames.

    Pixel ``k`` spans ``[k - 0.5, k + 0.5]``; an edge at ``e`` in the decoded
    frame lies at ``(e + 0.5) s - 0.5 - offset`` in the fitted frame (scale
    ``s``, crop offset). The result is the inclusive box of the fitted pixels
    whose centres lie inside the mapped box (closed), clipped to the frame. Boxes that fall
    wholly outside the crop become NaN rows (not annotated).
    """
    if mode not in FIT_MODES:
        raise VideoError(f"fit mode must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    b = numpy.asarray(boxes, dtype=numpy.float64).reshape(-1, 4)
    sy, sx, top, left = _fit_geometry(size_in, size_out, mode)
    h, w = size_out
    # an input edge e maps to (e + 0.5) s - 0.5 - offset; keep the fitted pixels whose centres lie inside
    x1 = numpy.ceil(b[:, 0] * sx - 0.5 - left)
    y1 = numpy.ceil(b[:, 1] * sy - 0.5 - top)
    x2 = numpy.floor((b[:, 2] + 1) * sx - 0.5 - left)
    y2 = numpy.floor((b[:, 3] + 1) * sy - 0.5 - top)
    out = numpy.stack(
        [
            numpy.clip(x1, 0, w - 1),
            numpy.clip(y1, 0, h - 1),
            numpy.clip(x2, 0, w - 1),
            numpy.clip(y2, 0, h - 1),
        ],
        axis=1,
    )
    outside = (x2 < 0) | (y2 < 0) | (x1 > w - 1) | (y1 > h - 1) | (x2 < x1) | (y2 < y1)
    out[outside] = numpy.nan
    return out


def preprocessing_of(meta):
    """The preprocessing dict of a model's ``meta`` (see the module notes).

    Raises
    ------
    VideoError
        For a string that names no known case, or an incomplete dict.
    """
    spec = (meta or {}).get("preprocessing")
    if spec is None:
        return dict(IDENTITY)
    if isinstance(spec, str):
        low = spec.lower()
        if low.startswith(("none", "identity")) or ("rgb in [0, 1]" in low and "bgr" not in low):
            return dict(IDENTITY)
        raise VideoError(
            f"the model's preprocessing entry {spec!r} is a name; ebr_ref needs the full dict "
            "(channel_order, scale, mean, std) in the sidecar, or pass --preprocessing"
        )
    if not isinstance(spec, dict):
        raise VideoError(f"the model's preprocessing entry must be a dict, got {type(spec).__name__}")
    missing = {"channel_order", "scale", "mean", "std"} - set(spec)
    if missing:
        raise VideoError(f"the model's preprocessing dict lacks {', '.join(sorted(missing))}")
    if str(spec["channel_order"]).upper() not in ("RGB", "BGR"):
        raise VideoError(f"preprocessing channel_order must be RGB or BGR, got {spec['channel_order']!r}")
    if len(spec["mean"]) != 3 or len(spec["std"]) != 3 or not all(float(s) != 0 for s in spec["std"]):
        raise VideoError(
            f"preprocessing mean and std need 3 values each (std non-zero), got {spec['mean']}, {spec['std']}"
        )
    return dict(spec)


def preprocess(frames, preprocessing, dtype=numpy.float64):
    """Network input ``(T, 3, H, W)`` from RGB frames.

    Parameters
    ----------
    frames : ndarray of shape (T, H, W, 3)
        ``uint8`` (0..255, divided by 255 first) or floating point in ``[0, 1]``.
    preprocessing : dict
        As returned by :func:`preprocessing_of`.
    dtype : dtype

    Returns
    -------
    ndarray of shape (T, 3, H, W)
    """
    frames = numpy.asarray(frames)
    dtype = numpy.dtype(dtype)
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise VideoError(f"frames must be (T, H, W, 3), got {frames.shape}")
    img = frames.astype(dtype) / 255 if frames.dtype == numpy.uint8 else frames.astype(dtype)
    img = img.transpose(0, 3, 1, 2)  # (T, 3, H, W) RGB
    if str(preprocessing["channel_order"]).upper() == "BGR":
        img = img[:, ::-1]
    mean = numpy.asarray(preprocessing["mean"], dtype=dtype)[None, :, None, None]
    std = numpy.asarray(preprocessing["std"], dtype=dtype)[None, :, None, None]
    x = (img * dtype.type(preprocessing["scale"]) - mean) / std
    return numpy.ascontiguousarray(x)


def clip_for_model(frames, model, *, fit="crop", preprocessing=None):
    """Fit decoded frames to a model and preprocess them.

    Parameters
    ----------
    frames : uint8 ndarray of shape (T, H, W, 3)
    model : ebr_ref.models.Model
        Its ``input_shape`` gives the size; ``meta["preprocessing"]`` the
        preprocessing unless ``preprocessing`` is given.
    fit : {"crop", "stretch"}
    preprocessing : dict, optional

    Returns
    -------
    clip : ndarray of shape (T, 3, h, w)
        In the model's dtype, on the host.
    display : uint8 ndarray of shape (T, h, w, 3)
        The fitted frames (what the maps are drawn on).
    """
    C, h, w = model.input_shape
    if C != 3:
        raise VideoError(f"the model takes {C}-channel frames; video input gives RGB (3 channels)")
    display = fit_frames(frames, (h, w), fit)
    pre = preprocessing_of({"preprocessing": preprocessing} if preprocessing is not None else model.meta)
    return preprocess(display, pre, numpy.dtype(model.dtype)), display
