"""The grounding drivers: paper Algorithm 1 for action classifiers (:mod:`.ground`) and for captioners
(:mod:`.ground_caption`).

The reference path of a call: :mod:`.inputs` (argument checks), :mod:`.frame_cnn`
(the chunked CNN part, forward and back to the read-out layer), :mod:`.algorithm`
(the arithmetic steps: seed, eq. 5 normalisation, eq. 7 contrast, channel sum) and
:mod:`.diagnostics` (the result's diagnostics). :mod:`.fused_readout`, the
many-target read-out, is an optimisation outside it: imported only when a call's
``fused_readout`` switch asks for it.
"""

from ..layers.lstm import LSTM_RULES
from .ground import METHODS, Grounding, ground
from .ground_caption import CaptionGrounding, ground_caption

__all__ = ["ground", "Grounding", "METHODS", "LSTM_RULES", "ground_caption", "CaptionGrounding"]
