"""ebr_ref: reference engine for Excitation Backprop for RNNs (Bargal et al., CVPR 2018).

The public entry points::

    import ebr_ref
    model = ebr_ref.models.vgg16_lstm(101)            # or ebr_ref.models.pretrained(...), load_model(...)
    result = ebr_ref.ground(model, clip, target=3)    # cEB-R to conv5_1 by default
    result.maps, result.evidence, result.diagnostics

The package is layered; each subpackage imports only from those above it in this list:

- :mod:`ebr_ref.backend`: the NumPy/CuPy array backend (the only module that names CuPy);
- :mod:`ebr_ref.layers`: the kernels (forward, excitation backward, gradient per op);
- :mod:`ebr_ref.models`: models as explicit layer lists, the canonical file format, shipped models;
- :mod:`ebr_ref.grounding`: the drivers (paper Algorithm 1 for classifiers and captioners);
- :mod:`ebr_ref.evaluation` and :mod:`ebr_ref.synthetic`: localisation, metrics, annotation
  readers; the synthetic benchmarks;
- :mod:`ebr_ref.tools`: video input, pictures, comparison with another implementation;
- :mod:`ebr_ref.pipeline`: dataset-level evaluation on Dask (``ebr_ref.evaluate``, imported on first use);
- :mod:`ebr_ref.cli`: the ``ebr-ref`` command line.

Importing this package never imports CuPy (see :mod:`ebr_ref.backend`).
"""

__version__ = "0.1.0"

from . import backend, layers, models
from .grounding import (
    LSTM_RULES,
    METHODS,
    CaptionGrounding,
    Grounding,
    ground,
    ground_caption,
)

__all__ = [
    "__version__",
    "backend",
    "layers",
    "models",
    "ground",
    "Grounding",
    "METHODS",
    "LSTM_RULES",
    "ground_caption",
    "CaptionGrounding",
    "evaluate",
]


def __getattr__(name):
    """``ebr_ref.evaluate`` is :func:`ebr_ref.pipeline.evaluate`, imported on first use (needs no Dask)."""
    if name == "evaluate":
        from .pipeline import evaluate

        return evaluate
    raise AttributeError(f"module 'ebr_ref' has no attribute {name!r}")
