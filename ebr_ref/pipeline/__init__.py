"""Dataset-level evaluation on Dask: the runner (:mod:`.runner`), the per-video task (:mod:`.task`) and
the results store (:mod:`.store`).

``ebr_ref.evaluate`` is :func:`ebr_ref.pipeline.runner.evaluate`. Dask is imported only inside the
functions that start or join a cluster, so this package imports without it.
"""

from .runner import (
    DEFAULT_IOU,
    PROTOCOLS,
    Evaluation,
    MissingDependency,
    Plan,
    StoreConflict,
    compute_tables,
    evaluate,
    local_cluster,
    plan_evaluation,
    run_plan,
)
from .store import Store

__all__ = [
    "evaluate",
    "plan_evaluation",
    "run_plan",
    "Plan",
    "Evaluation",
    "PROTOCOLS",
    "DEFAULT_IOU",
    "MissingDependency",
    "StoreConflict",
    "Store",
    "compute_tables",
    "local_cluster",
]
