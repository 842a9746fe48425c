"""Layer names for converters that build an architecture from a graph (ONNX, Keras model configs)."""

from __future__ import annotations

__all__ = ["LayerNamer"]


class LayerNamer:
    """Caffe's VGG naming (``names="auto"``) or the source's own names.

    Auto names: convolutions ``conv{b}_{k}`` (``b`` = 1 + the pooling layers
    before), pools ``pool{b}``, ReLUs after them ``relu{b}_{k}``, LRN
    ``norm{b}``, fully connected ``fc6, fc7, ...`` after convolutions (``fc1,
    fc2...`` without), ``relu{n}``/``drop{n}`` after ``fc{n}``, ``lstm1,
    lstm2...``, ``flatten``. Source names have ``.`` and ``/`` replaced by
    ``_``. Clashes get a suffix; each search for a free name resumes where the
    last one for the same base ended, so n clashing names cost O(n).

    Parameters
    ----------
    mode : str
        ``"auto"``, or any other value to keep the source names.
    has_conv : bool
        Whether the network has convolutions (fc numbering starts at 6 then).
    """

    def __init__(self, mode, has_conv):
        self.mode, self.has_conv = mode, has_conv
        self.block, self.k, self.fc, self.lstm = 1, 0, 0, 0
        self.last = None
        self.used = set()
        self.next_suffix = {}  # base name -> where the search for a free variant resumes (linear in all)

    def _free(self, base, variant):
        """The first free ``variant(base, j)``, j = 1, 2...; each search resumes where the last one ended."""
        j = self.next_suffix.get(base, 1)
        name = variant(base, j)
        while name in self.used:
            j += 1
            name = variant(base, j)
        self.next_suffix[base] = j
        self.used.add(name)
        return name

    def reserve(self, name):
        """Mark ``name`` as taken (a layer named by the converter itself)."""
        self.used.add(name)

    def __call__(self, kind, source_name, idx, op="n"):
        """The name of the next layer of type ``kind``.

        ``source_name`` is the node's or layer's own name (may be empty; then
        ``{op}_{idx}``); ``idx`` (the node's position) also names layers that
        the auto scheme has no name for.
        """
        if self.mode != "auto":
            base = (source_name or f"{op}_{idx}").replace(".", "_").replace("/", "_").strip("_") or f"n{idx}"
            return self._free(base, lambda b, j: b if j == 1 else f"{b}_{j}")
        last = self.last
        if kind == "conv":
            self.k += 1
            name = f"conv{self.block}_{self.k}"
            self.last = ("conv", f"{self.block}_{self.k}")
        elif kind in ("maxpool", "avgpool"):
            name = f"pool{self.block}"
            self.block += 1
            self.k = 0
            self.last = ("pool", str(self.block - 1))
        elif kind == "fc":
            self.fc += 1
            n = self.fc + 5 if self.has_conv else self.fc
            name = f"fc{n}"
            self.last = ("fc", str(n))
        elif kind == "lstm":
            self.lstm += 1
            name = f"lstm{self.lstm}"
            self.last = ("lstm", str(self.lstm))
        elif kind == "relu":
            name = f"relu{last[1]}" if last and last[0] in ("conv", "fc") else f"relu_{idx}"
        elif kind == "dropout":
            name = (
                f"drop{last[1]}"
                if last and last[0] == "fc"
                else f"lstm{last[1]}_drop"
                if last and last[0] == "lstm"
                else f"drop_{idx}"
            )
        elif kind == "lrn":
            name = f"norm{last[1]}" if last and last[0] == "pool" else f"norm{self.block}"
        elif kind == "flatten":
            name = "flatten"
        else:
            name = f"{kind}_{idx}"
        return self._free(name, lambda b, j: b + "_" * (j - 1))
