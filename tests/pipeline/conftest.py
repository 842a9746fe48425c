"""A small synthetic THUMOS14-layout dataset on disk (real MP4 files) and a single-process reference run."""

import json
import os
import subprocess
import sys

import pytest

from ebr_ref.pipeline.blas import blas_environment, usable_cores
from tests.paths import REPO

CLIPS, FRAMES, SEED = 8, 32, 0xE7A1
MODEL, FRAME_MODEL = "synthetic_cnn_lstm", "synthetic_cnn"
WORKERS = 2


def blas_per_worker():
    """The BLAS threads each of the WORKERS workers of a default local cluster gets on this machine."""
    return max(1, usable_cores() // WORKERS)


@pytest.fixture(scope="session")
def thumos_set(tmp_path_factory):
    """8 rand+GT+rand clips of 32 frames at 64 x 64 as a THUMOS14-layout folder (segments and boxes)."""
    from ebr_ref.tools.synthetic_dataset import make_dataset

    out = tmp_path_factory.mktemp("datasets") / "thumos"
    make_dataset(out, "thumos14", clips=CLIPS, seed=SEED, frames=FRAMES)
    return str(out)


def run_cli(args, *, env=None, **kwargs):
    """``python -m ebr_ref ARGS`` in a subprocess (the repository first on the path)."""
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [e.get("PYTHONPATH")] if p])
    return subprocess.run(
        [sys.executable, "-m", "ebr_ref"] + [str(a) for a in args],
        env=e,
        capture_output=True,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="session")
def reference(thumos_set, tmp_path_factory):
    """The single-process run (``--workers 0``, no Dask) of thumos_set, with the workers' BLAS threads.

    Returns the results folder; its tables.json and records are what every other run must reproduce.
    """
    out = tmp_path_factory.mktemp("reference") / "results"
    env = dict(os.environ, **blas_environment(blas_per_worker()))
    r = run_cli(
        [
            "evaluate",
            thumos_set,
            "--model",
            MODEL,
            "--frame-model",
            FRAME_MODEL,
            "--out",
            out,
            "--workers",
            "0",
            "-q",
        ],
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return str(out)


def read_tables(results):
    with open(os.path.join(results, "tables.json")) as f:
        return json.load(f)["tables"]


def science(record):
    """A record without the fields that say where and when it was computed."""
    return {k: v for k, v in record.items() if k not in ("worker", "finished", "wall_s", "seconds")}
