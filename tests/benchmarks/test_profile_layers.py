"""``benchmarks/profile_layers.py`` runs and accounts for the whole call.

A small run (32 x 32 frames) in a fresh interpreter: every conv layer of VGG16 appears in the
forward rows, the fused read-out appears when 101 targets are grounded, and the rows add up to
no more than the call's total (the "other" line is not negative: nothing is counted twice).
"""

import re
import subprocess
import sys

import pytest

from tests.paths import REPO


@pytest.mark.parametrize("targets", [1, 101])
def test_profile_runs_and_adds_up(targets):
    cmd = [sys.executable, "profile_layers.py", "--size", "32", "--frames", "3", "--targets", str(targets)]
    out = subprocess.run(
        cmd + ["--repeats", "1", "--chunk-size", "2"],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = float(re.search(r": ([0-9.]+) ms per call", out).group(1))
    rows = re.findall(r"^(forward|EB|other)\s+(\S+).*?(-?[0-9.]+)\s+(-?[0-9.]+)%$", out, flags=re.M)
    forward_convs = {name for phase, name, *_ in rows if phase == "forward" and name.startswith("conv")}
    assert len(forward_convs) == 13
    assert ("read-out fold" in out) == (targets == 101)
    other = float(next(ms for phase, _name, ms, _share in rows if phase == "other"))
    assert other >= -(0.2 + 0.01 * total)  # what the rows count is part of the call: nothing twice
