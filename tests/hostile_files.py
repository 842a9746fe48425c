"""Crafting hostile input files (tiny on disk, huge or broken inside) and running code under limits.

Shared by tests/tools/test_video.py, tests/models/test_io_hostile.py and
tests/cli/test_cli_hostile.py. Every attack runs in a child process with
``resource.setrlimit(RLIMIT_AS)`` and a timeout, so that a regression shows as
a failed test, never as a machine out of memory or a hung suite.
"""

import hashlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest

from ebr_ref import synthetic

# The command line tests' tiny model and settings (test_cli_atomic.py, test_cli_hostile.py).
LIMIT = 1 << 30
NAMES = list(synthetic.ACTIONS)
IDENTITY = {
    "name": "identity",
    "channel_order": "RGB",
    "scale": 1.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
}
TINY = [
    ("conv1", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}),
    ("relu1", "relu"),
    ("pool1", "maxpool", {"kernel": 2}),
    ("flatten", "flatten"),
    ("fc7", "fc", {"out_features": 8}),
    ("relu7", "relu"),
    ("lstm1", "lstm", {"hidden": 6}),
    ("fc8", "fc", {"out_features": len(NAMES)}),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_LIMIT = 1536 << 20  # address space of a child (Python, numpy, matplotlib and ffmpeg fit easily)
TIMEOUT = 90


def child_env():
    path = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return dict(os.environ, PYTHONPATH=path, **threads)


def limited(limit=MEMORY_LIMIT):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def run_python(code, *args, limit=MEMORY_LIMIT, timeout=TIMEOUT, cwd=None):
    """``python -c code args`` under the memory limit; the CompletedProcess (a hang fails the test)."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or ROOT,
            env=child_env(),
            preexec_fn=limited(limit),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish within {timeout} s: {code[:200]}")


def run_cli(*argv, limit=MEMORY_LIMIT, timeout=TIMEOUT, cwd=None):
    """``python -m ebr_ref ARGV`` under the memory limit and a timeout."""
    return run_python(
        "import sys; from ebr_ref.cli import main; sys.exit(main(sys.argv[1:]))",
        *argv,
        limit=limit,
        timeout=timeout,
        cwd=cwd,
    )


def assert_one_line_error(r, *needles):
    """Exit status 2, exactly one line on stderr naming the command, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("ebr-ref") and ": error: " in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---- images -----------------------------------------------------------------------------------------
def _png_chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_of_zeros(path, W, H):
    """A valid 1-bit greyscale PNG of W x H black pixels, compressed row by row (never held in memory).

    20000 x 20000 (400 megapixels) takes about 48 KB.
    """
    co = zlib.compressobj(9)
    row = b"\0" * (1 + (W + 7) // 8)  # filter byte 0, then the packed bits
    parts = [co.compress(row) for _ in range(H)]
    idat = b"".join(parts) + co.flush()
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 1, 0, 0, 0, 0))
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    with open(path, "wb") as f:
        f.write(data)
    return path


def jpeg_claiming(path, W, H):
    """A 16 x 16 JPEG written by Pillow whose frame header (SOF0) is patched to claim W x H."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    k = data.index(b"\xff\xc0")
    data[k + 5 : k + 9] = struct.pack(">HH", H, W)  # marker, length (2), precision (1), height, width
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


# ---- canonical files --------------------------------------------------------------------------------
def npy_bytes(shape, descr="<f8", data=b"", version=(1, 0)):
    """A .npy file whose header says ``shape`` and ``descr`` whatever ``data`` holds."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    if version == (1, 0):
        pad = 16 - (10 + len(header) + 1) % 16
        head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header) + pad + 1)
    else:
        pad = 16 - (12 + len(header) + 1) % 16
        head = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header) + pad + 1)
    return head + header + b" " * pad + b"\n" + data


def write_zip(path, members, *, compression=zipfile.ZIP_STORED):
    """An .npz of ``{member name: bytes}`` written with zipfile."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def reseal(npz_path, *, params=None):
    """Rewrite the sidecar of ``npz_path``: its sha256 (and optionally ``params``) then match the file."""
    side_path = os.path.splitext(npz_path)[0] + ".json"
    with open(side_path) as f:
        side = json.load(f)
    with open(npz_path, "rb") as f:
        side["params_sha256"] = hashlib.sha256(f.read()).hexdigest()
    if params is not None:
        side["params"] = params
    with open(side_path, "w") as f:
        json.dump(side, f)
    return side


def replace_member(npz_path, name, data, *, compression=zipfile.ZIP_STORED):
    """Rewrite the .npz with member ``name`` (``"fc8.bias.npy"``) replaced by ``data``; keep the others."""
    with zipfile.ZipFile(npz_path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members[name] = data
    os.unlink(npz_path)
    with zipfile.ZipFile(npz_path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d, compress_type=compression if n == name else zipfile.ZIP_STORED)
    return npz_path


def patch_central_directory(npz_path, name, *, method=None, file_size=None):
    """Patch the central-directory entry of member ``name``: compression method and/or uncompressed size."""
    with open(npz_path, "rb") as f:
        data = bytearray(f.read())
    needle = name.encode()
    k = data.rfind(b"PK\x01\x02")
    while k >= 0:
        n = struct.unpack("<H", data[k + 28 : k + 30])[0]
        if data[k + 46 : k + 46 + n] == needle:
            if method is not None:
                data[k + 10 : k + 12] = struct.pack("<H", method)
            if file_size is not None:
                data[k + 24 : k + 28] = struct.pack("<I", file_size)
            break
        k = data.rfind(b"PK\x01\x02", 0, k)
    else:
        raise AssertionError(f"{name} not in the central directory")
    with open(npz_path, "wb") as f:
        f.write(bytes(data))
    return npz_path
