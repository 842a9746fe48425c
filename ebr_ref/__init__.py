"""ebr_ref: reference engine for Excitation Backprop for RNNs (Bargal et al., CVPR 2018).

The public entry points::

    import ebr_ref
    model = ebr_ref.models.vgg16_lstm(101)            # or ebr_ref.models.pretrained(...), load_model(...)
    result = ebr_ref.ground(model, clip, target=3)    # cEB-R to conv5_1 by default
    result.maps, result.evidence, result.diagnostics

Importing this package never imports CuPy (see :mod:`ebr_ref.backend`).
"""

__version__ = "0.1.0"

from . import backend, models  # noqa: E402
from .ground import METHODS, Grounding, ground  # noqa: E402

__all__ = ["__version__", "backend", "models", "ground", "Grounding", "METHODS"]
