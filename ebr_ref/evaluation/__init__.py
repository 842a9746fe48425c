"""Evaluation: temporal and spatial localisation (:mod:`.localize`), the metrics of the paper's protocols
(:mod:`.metrics`: temporal IoU, AP/mAP) and annotation readers (:mod:`.annotations`)."""
