#!/usr/bin/env bash
# The GPU checks of docs/performance.md in one device call: the gpu-marked test suite, the peer
# benchmark (benchmarks/bench_gpu_peers.py, TF32 off and on), then the per-layer profile
# (benchmarks/profile_layers.py, 1 and 101 targets), results under $OUT.
#
# On the device machine, from the repository root, with .device_wheels/ filled by
# benchmarks/device_wheels.sh and carried along:
#     bash benchmarks/device_check.sh
# It installs the carried wheels and the package itself (no network, no dependency resolution), records
# the GPU and the versions (gpu.txt), runs `pytest -m gpu` (gpu_tests.log, gpu_tests.xml) and the
# benchmark (gpu_peers.txt) and the profiles (gpu_profile.txt). Each part has its own time limit, so that one slow part still leaves the
# others their output; the whole fits one 10-minute call.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/ebr_ref_device}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py="${PY:-python3}"  # the device image's python3 holds torch and CuPy
if compgen -G ".device_wheels/*.whl" >/dev/null; then
    $py -m pip install --quiet --no-deps --no-index .device_wheels/*.whl 2>&1 | tail -3
fi
$py -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -3
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $py -c "import sys, numpy, scipy, cupy, torch; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$out/gpu.txt"
timeout "${TESTS_S:-240}" $py -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log" | tail -25
timeout "${BENCH_S:-180}" $py benchmarks/bench_gpu_peers.py --tf32 both "$@" 2>&1 | tee "$out/gpu_peers.txt"
for k in 1 101; do
    (cd benchmarks && timeout "${PROFILE_S:-50}" $py profile_layers.py --device gpu --frames 32 --targets "$k") 2>&1
done | tee "$out/gpu_profile.txt"
