"""The one exception type that every reader and converter raises."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint could not be read or converted.

    The message names the file and, where it applies, the tensor or layer, and
    what was expected against what was found. Readers raise nothing else for a
    malformed, truncated, mislabelled or malicious file: every lower-level
    failure (struct, zlib, pickle, unicode...) is wrapped in this type.

    Attributes
    ----------
    path : str or None
        The file concerned.
    detail : str
        The message without the file name.
    """

    def __init__(self, path, detail: str):
        self.path = None if path is None else str(path)
        self.detail = detail
        super().__init__(detail if path is None else f"{path}: {detail}")
