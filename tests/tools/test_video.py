"""Video input: decoding (ffmpeg, Pillow), frame selection, fitting, boxes, preprocessing, errors.

Oracles: frames written by the test itself (PNG is lossless; a lossless RGB
H.264 stream made with the ffmpeg binary that imageio-ffmpeg ships decodes to
the same bytes), hand-computed geometry and preprocessing values.
"""

import os
import subprocess

import numpy
import pytest

from ebr_ref.models import sequential
from ebr_ref.tools.video import (
    IDENTITY,
    VideoError,
    clip_for_model,
    fit_boxes,
    fit_frames,
    preprocess,
    preprocessing_of,
    read_frame_dir,
    read_frames,
    read_video,
)

PIL = pytest.importorskip("PIL.Image")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


def _frames(T=6, H=24, W=32, seed=0x51D0):
    return numpy.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=numpy.uint8)


def _write_dir(path, frames, names=None):
    os.makedirs(path, exist_ok=True)
    names = names or [f"frame{t}.png" for t in range(len(frames))]
    for f, n in zip(frames, names):
        PIL.fromarray(f).save(os.path.join(path, n))
    return path


def _write_mp4(path, frames, *, lossless=True, fps=8):
    src = _write_dir(str(path) + "_src", frames, [f"{t:03d}.png" for t in range(len(frames))])
    if lossless:
        codec = ["-c:v", "libx264rgb", "-qp", "0", "-pix_fmt", "rgb24"]
    else:
        codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-framerate",
        str(fps),
        "-i",
        os.path.join(src, "%03d.png"),
        *codec,
        str(path),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return str(path)


def test_frame_dir_natural_order_and_exact_values(tmp_path):
    fr = _frames(T=12)
    order = numpy.random.default_rng(0x0DE5).permutation(12)  # written in a shuffled order: names decide
    d = _write_dir(tmp_path / "f", fr[order], [f"frame{t}.png" for t in order])
    (tmp_path / "f" / "notes.txt").write_text("x")  # a non-image file is ignored
    out, info = read_frame_dir(d)
    assert out.dtype == numpy.uint8 and out.shape == fr.shape
    numpy.testing.assert_array_equal(out, fr)  # frame2 before frame10 (lexical order would differ)
    assert info["indices"] == list(range(12)) and info["kind"] == "frames" and info["fps"] is None


def test_frame_selection(tmp_path):
    fr = _frames(T=10)
    d = _write_dir(tmp_path / "f", fr)
    out, info = read_frames(d, every=3, start=1, max_frames=2)
    assert info["indices"] == [1, 4]
    numpy.testing.assert_array_equal(out, fr[[1, 4]])


def test_lossless_video_decodes_exactly(tmp_path):
    fr = _frames(T=7, H=32, W=48)
    p = _write_mp4(tmp_path / "c.mp4", fr)
    out, info = read_video(p)
    assert info["kind"] == "video" and info["fps"] == pytest.approx(8.0)
    numpy.testing.assert_array_equal(out, fr)
    sub, info = read_frames(p, every=2, start=1)
    assert info["indices"] == [1, 3, 5]
    numpy.testing.assert_array_equal(sub, fr[[1, 3, 5]])


def test_lossy_video_is_close(tmp_path):
    x = numpy.linspace(0, 255, 48)
    smooth = numpy.broadcast_to(x[None, None, :, None], (5, 32, 48, 3)).astype(numpy.uint8)
    out, _ = read_video(_write_mp4(tmp_path / "c.mp4", smooth, lossless=False))
    assert out.shape == smooth.shape
    assert numpy.abs(out.astype(int) - smooth).mean() < 4


def test_progress_callback_wraps_decoding(tmp_path):
    fr = _frames(T=4)
    p = _write_mp4(tmp_path / "c.mp4", fr)
    seen = []

    def progress(it, total=None, desc=None):
        seen.append((total, desc))
        return it

    read_frames(p, progress=progress)
    read_frames(_write_dir(tmp_path / "d", fr), progress=progress)
    assert seen[0][1] == "decoding video" and seen[1] == (4, "reading frames")


def _file(d, name, data):
    (d / name).write_bytes(data)
    return str(d / name)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: str(d / "missing.mp4"), "no such file"),
        (lambda d: _file(d, "empty.mp4", b""), "empty"),
        (lambda d: _file(d, "junk.mp4", b"\x00garbage" * 100), "not a readable video"),
        (lambda d: _file(d, "text.mp4", b"hello\n"), "not a readable video"),
        (lambda d: (d / "nodir").mkdir() or str(d / "nodir"), "no image files"),
    ],
)
def test_input_errors_name_the_path(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(VideoError, match=match) as e:
        read_frames(path)
    assert os.path.basename(path) in str(e.value)


def test_corrupt_and_mismatched_images(tmp_path):
    d = _write_dir(tmp_path / "f", _frames(T=2))
    (tmp_path / "f" / "frame2.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match="frame2.png: not a readable image"):
        read_frames(d)
    d2 = _write_dir(tmp_path / "g", _frames(T=1, H=10, W=10))
    _write_dir(tmp_path / "g", _frames(T=1, H=12, W=10), ["frame1.png"])
    with pytest.raises(VideoError, match="differ in size"):
        read_frames(d2)


@pytest.mark.parametrize("kw", [{"every": 0}, {"start": -1}, {"max_frames": 0}, {"every": 1.5}])
def test_bad_sampling_arguments(tmp_path, kw):
    d = _write_dir(tmp_path / "f", _frames(T=2))
    with pytest.raises(VideoError):
        read_frames(d, **kw)


def test_fit_crop_keeps_the_centre_and_stretch_keeps_everything():
    # left third red, middle third green, right third blue: 30 x 90 frame
    f = numpy.zeros((1, 30, 90, 3), dtype=numpy.uint8)
    f[:, :, :30, 0] = 255
    f[:, :, 30:60, 1] = 255
    f[:, :, 60:, 2] = 255
    crop = fit_frames(f, (10, 10), "crop")  # scale 1/3 -> 10 x 30, centre columns 10..19 = the green third
    assert crop.shape == (1, 10, 10, 3)
    numpy.testing.assert_array_equal(crop[0, :, 1:-1, 1], 255)  # the filter blends only the edge columns
    assert crop[0, :, 1:-1][..., [0, 2]].max() == 0
    assert crop[0, :, :, 1].min() > 200
    st = fit_frames(f, (10, 9), "stretch")  # every third gets 3 columns
    assert st.shape == (1, 10, 9, 3)
    numpy.testing.assert_array_equal(st[0, 5, :, :].argmax(axis=1), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    same = fit_frames(f, (30, 90))
    numpy.testing.assert_array_equal(same, f)
    with pytest.raises(VideoError):
        fit_frames(f, (10, 10), "pad")


def test_fit_boxes_hand_values():
    # halving: pixel k spans [k - .5, k + .5] -> fitted pixels whose centres lie inside the scaled span
    b = fit_boxes([[10, 20, 29, 39]], (128, 128), (64, 64), "stretch")
    numpy.testing.assert_allclose(b, [[5, 10, 14, 19]])
    # crop: 64 x 128 -> 32 x 32 scales by 1/2 (32 x 64) and crops columns 16..47
    b = fit_boxes([[40, 0, 59, 9], [0, 0, 9, 9]], (64, 128), (32, 32), "crop")
    numpy.testing.assert_allclose(b[0], [4, 0, 13, 4])
    assert numpy.isnan(b[1]).all()  # wholly left of the crop


def test_preprocess_hand_values_and_dtype():
    f = numpy.array([[[[255, 0, 51]]]], dtype=numpy.uint8)  # (1, 1, 1, 3) RGB
    pre = {"channel_order": "BGR", "scale": 255.0, "mean": [1.0, 2.0, 3.0], "std": [2.0, 1.0, 4.0]}
    for dt in (numpy.float64, numpy.float32):
        x = preprocess(f, pre, dt)
        assert x.dtype == dt and x.shape == (1, 3, 1, 1)
        numpy.testing.assert_allclose(x[0, :, 0, 0], [(51 - 1) / 2, (0 - 2) / 1, (255 - 3) / 4], rtol=1e-6)
    xf = preprocess(numpy.full((2, 4, 4, 3), 0.5), IDENTITY)
    numpy.testing.assert_array_equal(xf, 0.5)


def test_preprocessing_of_meta():
    assert preprocessing_of({}) == IDENTITY
    assert preprocessing_of({"preprocessing": "none: frames in [0, 1]"}) == IDENTITY
    with pytest.raises(VideoError, match="caffe_vgg16"):
        preprocessing_of({"preprocessing": "caffe_vgg16"})
    with pytest.raises(VideoError, match="lacks"):
        preprocessing_of({"preprocessing": {"channel_order": "RGB"}})
    with pytest.raises(VideoError, match="channel_order"):
        preprocessing_of(
            {"preprocessing": {"channel_order": "XYZ", "scale": 1, "mean": [0] * 3, "std": [1] * 3}}
        )


def test_clip_for_model():
    m = sequential(
        [
            ("conv1", "conv", {"out_channels": 2, "kernel": 3, "padding": 1}),
            ("relu1", "relu"),
            ("flatten", "flatten"),
            ("fc8", "fc", {"out_features": 3}),
        ],
        (3, 8, 8),
        seed=1,
        meta={"preprocessing": {"channel_order": "RGB", "scale": 2.0, "mean": [1, 1, 1], "std": [1, 1, 1]}},
    )
    f = numpy.full((2, 16, 16, 3), 255, dtype=numpy.uint8)
    clip, disp = clip_for_model(f, m.astype("float32"))
    assert clip.shape == (2, 3, 8, 8) and clip.dtype == numpy.float32 and disp.shape == (2, 8, 8, 3)
    numpy.testing.assert_array_equal(clip, 1.0)  # 1 * 2 - 1


# ---- the frame-size limit: checked from the header, before decoding (each attack in a memory-limited child)
_READ = (
    "import sys\n"
    "from ebr_ref.tools.video import VideoError, read_frames\n"
    "try:\n"
    "    f, info = read_frames(sys.argv[1], max_pixels=int(sys.argv[2]))\n"
    "    print('ok', f.shape)\n"
    "except VideoError as e:\n"
    "    print('VideoError', e)\n"
)


def _read_limited(path, max_pixels=None):
    from ebr_ref.tools.video import MAX_FRAME_PIXELS
    from tests.hostile_files import run_python

    limit = MAX_FRAME_PIXELS if max_pixels is None else max_pixels
    r = run_python(_READ, path, limit, limit=768 << 20, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stdout.strip()


def test_oversized_frames_are_refused_from_the_header(tmp_path):
    from tests.hostile_files import jpeg_claiming, png_of_zeros

    for name in ("mp120", "mp400", "jpeg"):
        (tmp_path / name).mkdir()
    cases = {
        "mp120": png_of_zeros(tmp_path / "mp120" / "f0.png", 10000, 12000),  # Pillow warns; 1.3 GB decoded
        "mp400": png_of_zeros(tmp_path / "mp400" / "f0.png", 20000, 20000),  # 48 KB; DecompressionBombError
        "jpeg": jpeg_claiming(tmp_path / "jpeg" / "f0.jpg", 5000, 4000),  # 20 MP claimed by a 16 x 16 JPEG
    }
    assert os.path.getsize(cases["mp400"]) < 64_000
    for name, f in cases.items():
        out = _read_limited(os.path.dirname(f))
        assert out.startswith("VideoError") and os.path.basename(f) in out, (name, out)
        assert "pixels" in out, (name, out)
    assert "limit of 16,777,216 pixels" in _read_limited(os.path.dirname(cases["mp120"]))


def test_frame_size_limit_boundary_and_video_probe(tmp_path):
    frames = _frames(T=2, H=24, W=32)
    d = _write_dir(tmp_path / "f", frames)
    assert read_frames(d, max_pixels=24 * 32)[0].shape == (2, 24, 32, 3)  # exactly at the limit: accepted
    with pytest.raises(VideoError, match=r"32x24 = 768 pixels exceed the limit of 767"):
        read_frames(d, max_pixels=24 * 32 - 1)
    mp4 = _write_mp4(tmp_path / "v.mp4", frames)
    from ebr_ref.tools.video import _probe

    assert _probe(imageio_ffmpeg.get_ffmpeg_exe(), str(mp4)) == (None, (32, 24))
    assert read_video(mp4, max_pixels=768)[0].shape == (2, 24, 32, 3)
    with pytest.raises(VideoError, match="v.mp4: frames of 32x24"):
        read_video(mp4, max_pixels=700)
    with pytest.raises(VideoError, match="max_pixels"):
        read_frames(d, max_pixels=0)


def test_pillow_warning_is_not_raised_in_process(tmp_path):
    # the test configuration turns warnings into errors: a 100 MP header must give the VideoError, not
    # Pillow's DecompressionBombWarning (the file is refused before it is decoded: nothing large is allocated)
    from tests.hostile_files import png_of_zeros

    (tmp_path / "d").mkdir()
    png_of_zeros(tmp_path / "d" / "f.png", 10000, 10000)
    with pytest.raises(VideoError, match="exceed the limit"):
        read_frames(tmp_path / "d")
