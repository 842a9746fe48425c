"""LSTM gate block orders and the permutations into ebr_ref's canonical order.

The 4H axis of every LSTM weight stacks four H-row blocks, one per gate. The
frameworks stack them differently (checked numerically against files written by
each framework, tests/weights_io/):

======== =========== ===============================================
source   order       notes
======== =========== ===============================================
ebr_ref  i, f, o, g  canonical (Caffe's ``LSTMUnit``), ``GATE_ORDER``
Caffe    i, f, o, g  one bias ``b_c`` (on the input transform)
PyTorch  i, f, g, o  two biases ``b_ih + b_hh``
Keras    i, f, c, o  ``c`` is the candidate (= ``g``); one bias; the
                     4H axis is the *last* (columns, kernels are (D, 4H))
ONNX     i, o, f, c  ``B`` = ``[Wb ‖ Rb]`` (8H), summed
======== =========== ===============================================

``g`` (and Keras/ONNX ``c``) is the candidate cell input.
"""

from __future__ import annotations

from ebr_ref.layers.lstm import GATE_ORDER as _CANONICAL

__all__ = ["GATE_ORDER", "SOURCE_GATE_ORDERS", "gate_blocks"]

GATE_ORDER = "".join(_CANONICAL)  # "ifog": ebr_ref.layers.lstm.GATE_ORDER as one string
SOURCE_GATE_ORDERS = {"caffe": "ifog", "torch": "ifgo", "keras": "ifco", "onnx": "iofc"}


def gate_blocks(source_order: str) -> list[int]:
    """For each canonical block (i, f, o, g), the index of that gate's block in the source.

    ``c`` is read as ``g``. Examples: Caffe ``"ifog"`` -> ``[0, 1, 2, 3]``;
    PyTorch ``"ifgo"`` -> ``[0, 1, 3, 2]``; Keras ``"ifco"`` -> ``[0, 1, 3, 2]``;
    ONNX ``"iofc"`` -> ``[0, 2, 1, 3]``.
    """
    src = source_order.replace("c", "g")
    if sorted(src) != sorted(GATE_ORDER):
        raise ValueError(f"gate order {source_order!r} is not a permutation of i, f, o, g")
    return [src.index(g) for g in GATE_ORDER]
