"""The grounding drivers: paper Algorithm 1 for action classifiers (:mod:`.ground`) and for captioners
(:mod:`.ground_caption`), the steps they share (:mod:`.drivers`) and the many-target read-out
(:mod:`.fused_readout`, an optimisation outside the reference path)."""

from .ground import LSTM_RULES, METHODS, Grounding, ground
from .ground_caption import CaptionGrounding, ground_caption

__all__ = ["ground", "Grounding", "METHODS", "LSTM_RULES", "ground_caption", "CaptionGrounding"]
