"""ebr_ref: reference engine for Excitation Backprop for RNNs (Bargal et al., CVPR 2018).

Importing this package never imports CuPy (see :mod:`ebr_ref.backend`).
"""

__version__ = "0.1.0"
