"""Kernels: one op family per module, each ``<op>_forward``, ``<op>_eb`` (excitation backward), ``<op>_grad``.

Every EB kernel takes a signal shaped like its layer's output, or with one
extra leading axis ``K`` of stacked signals (the normalisers are shared).
"""

from .avgpool2d import avgpool2d_eb, avgpool2d_forward, avgpool2d_grad
from .conv2d import conv2d_adjoint, conv2d_eb, conv2d_forward, conv2d_grad
from .dropout import dropout_eb, dropout_forward, dropout_grad
from .embedding import embedding_eb, embedding_forward, embedding_grad
from .flatten import flatten_eb, flatten_forward, flatten_grad
from .linear import linear_eb, linear_forward, linear_grad
from .lrn import lrn_eb, lrn_forward, lrn_grad
from .lstm import GATE_ORDER, LSTM_RULES, LSTMParams, lstm_eb, lstm_forward, lstm_grad
from .maxpool2d import maxpool2d_eb, maxpool2d_forward, maxpool2d_grad
from .relu import relu_eb, relu_forward, relu_grad

__all__ = [
    "avgpool2d_forward",
    "avgpool2d_eb",
    "avgpool2d_grad",
    "conv2d_forward",
    "conv2d_eb",
    "conv2d_grad",
    "conv2d_adjoint",
    "dropout_forward",
    "dropout_eb",
    "dropout_grad",
    "embedding_forward",
    "embedding_eb",
    "embedding_grad",
    "flatten_forward",
    "flatten_eb",
    "flatten_grad",
    "linear_forward",
    "linear_eb",
    "linear_grad",
    "lrn_forward",
    "lrn_eb",
    "lrn_grad",
    "GATE_ORDER",
    "LSTM_RULES",
    "LSTMParams",
    "lstm_forward",
    "lstm_eb",
    "lstm_grad",
    "maxpool2d_forward",
    "maxpool2d_eb",
    "maxpool2d_grad",
    "relu_forward",
    "relu_eb",
    "relu_grad",
]
