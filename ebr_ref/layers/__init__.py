"""Kernels: one op family per module, each ``<op>_forward``, ``<op>_eb``, ``<op>_grad``."""

from .linear import LinearCache, linear_eb, linear_forward, linear_grad

__all__ = ["LinearCache", "linear_forward", "linear_eb", "linear_grad"]
