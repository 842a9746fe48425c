#!/usr/bin/env bash
# Fill .device_wheels/ (git-ignored) with the pure-Python and abi3 wheels that benchmarks/device_check.sh
# installs on a GPU machine without network access: the packages the test suite and the GPU benchmark
# import beyond what a CUDA image with torch, torchvision, CuPy, NumPy, SciPy, pytest and hypothesis
# carries (TorchRay, zennit, Dask). About 4 MB. Run from the repository root, where pip reaches an index:
#     bash benchmarks/device_wheels.sh [PYTHON_VERSION]        # default 3.12, the device image's python3
# imageio-ffmpeg (68 MB, over what a device call carries) is left out: the video tests skip or error there.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
dest=.device_wheels
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps --dest "$dest" --python-version "$py" --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux1_x86_64 \
    "dask>=2024.1" "distributed>=2024.1" partd locket tblib zict tornado zennit==0.5.1
python3 -m pip wheel --quiet --no-deps --wheel-dir "$dest" torchray  # an sdist on PyPI: built here, pure Python
ls -1 "$dest"
