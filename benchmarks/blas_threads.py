"""``--threads N`` of a benchmark's command line, given to OpenBLAS before NumPy loads (it reads its thread
count once, at load). Imported first by the scripts of this folder that take ``--threads``."""

import os
import sys


def threads_from_argv(argv=None):
    """The ``--threads`` value of ``argv`` (default ``sys.argv``), or the number of cores."""
    argv = sys.argv if argv is None else argv
    for k, a in enumerate(argv):
        if a == "--threads" and k + 1 < len(argv):
            return argv[k + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return str(os.cpu_count() or 1)


def set_blas_threads(argv=None):
    """Set ``OPENBLAS_NUM_THREADS`` and ``OMP_NUM_THREADS`` from ``--threads``; return the value."""
    n = threads_from_argv(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = n
    return n
