"""Models shipped inside the package (``ebr_ref/data``), trained on the synthetic action videos.

``benchmarks/train_synthetic.py`` (the "appearance" benchmark: ``synthetic_cnn``,
``synthetic_cnn_lstm``), ``benchmarks/train_motion.py`` (the "motion" benchmark:
``motion_cnn``, ``motion_cnn_lstm``, ``motion_cnn_lstm_tanh``) and
``benchmarks/train_captioner.py`` train them and write them in the canonical
format (:mod:`ebr_ref.models.io`); :func:`pretrained` loads one by name with
ebr_ref alone, checking the sha256 recorded in its sidecar.
"""

from __future__ import annotations

import os

from .io import load_model, read_sidecar

__all__ = ["pretrained", "shipped_names", "data_dir"]


def data_dir() -> str:
    """The folder of the shipped model files."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def shipped_names():
    """Names of the shipped models (``<name>.npz`` with a ``<name>.json`` sidecar)."""
    d = data_dir()
    return sorted(
        f[:-4]
        for f in os.listdir(d)
        if f.endswith(".npz") and os.path.exists(os.path.join(d, f[:-4] + ".json"))
    )


def pretrained(name: str):
    """Load the shipped model ``name`` (see :func:`shipped_names`): a classifier or a captioner."""
    names = shipped_names()
    if name not in names:
        raise ValueError(f"no shipped model named {name!r}; available: {', '.join(names) or 'none'}")
    path = os.path.join(data_dir(), name + ".npz")
    if read_sidecar(path).get("kind") == "captioner":
        from .caption import load_captioner

        return load_captioner(path)
    return load_model(path)
