"""A reader for protobuf text format (Caffe ``.prototxt`` files), without a schema.

The result is a tree of :class:`Message` objects: a dict from field name to the
list of its values in file order (text format is name-based, so no field numbers
and no fork-specific schema are needed; this is why Caffe hyper-parameters are
taken from the prototxt and not from the binary, see docs/weights_io.md).

Values are ``int``, ``float``, ``str`` (quoted strings, and bare identifiers
such as enum names ``MAX``), ``bool`` (``true``/``false``) or nested
:class:`Message`.
"""

from __future__ import annotations

import re

from .errors import CheckpointError

__all__ = ["Message", "parse_prototxt"]

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n\f\v,;]+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?|inf(?:inity)?|nan)(?![\w.]))
  | (?P<ident>[A-Za-z_][\w]*)
  | (?P<punct>[:{}<>\[\]])
    """,
    re.VERBOSE,
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}
_MAX_DEPTH = 100


class Message(dict):
    """A text-format message: ``{field name: [values in file order]}``."""

    def get1(self, name, default=None):
        """The last value of ``name`` (text format: a repeated optional field keeps the last)."""
        vals = dict.get(self, name)
        return vals[-1] if vals else default

    def getall(self, name) -> list:
        """Every value of ``name`` in file order (empty list when absent)."""
        return list(dict.get(self, name, ()))


def _unescape(s: str, where: str, path) -> str:
    body = s[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    raw = bytearray()

    def flush():
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()

    while i < len(body):
        c = body[i]
        if c != "\\":
            flush()
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise CheckpointError(path, f"{where}: dangling backslash in string")
        n = body[i + 1]
        if n in _ESCAPES:
            flush()
            out.append(_ESCAPES[n])
            i += 2
        elif n in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1 :])
            raw.append(int(m.group(0), 8) & 0xFF)
            i += 1 + len(m.group(0))
        elif n in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :])
            if not m:
                raise CheckpointError(path, f"{where}: bad \\x escape in string")
            raw.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        else:
            raise CheckpointError(path, f"{where}: unknown escape \\{n} in string")
    flush()
    return "".join(out)


def _tokenize(text: str, path):
    pos = 0
    line, line_start = 1, 0
    toks = []
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CheckpointError(
                path, f"line {line}, column {pos - line_start + 1}: unexpected character {text[pos]!r}"
            )
        kind = m.lastgroup
        val = m.group(kind)
        if kind != "ws":
            toks.append((kind, val, line, pos - line_start + 1))
        nl = val.count("\n")
        if nl:
            line += nl
            line_start = m.start() + val.rfind("\n") + 1
        pos = m.end()
    return toks


_INT_RANGE = (-(1 << 63), (1 << 64) - 1)  # text format integers are int32/int64/uint32/uint64 fields
_MAX_INT_DIGITS = 20


def _number(tok: str, where: str, path):
    """A numeric token as an int or float; an integer outside the 64-bit range is a CheckpointError."""
    t = tok.lower()
    if t.lstrip("+-") in ("inf", "infinity"):
        return float("-inf") if t.startswith("-") else float("inf")
    if t.lstrip("+-") == "nan":
        return float("nan")
    digits = t.lstrip("+-")
    if digits.startswith("0x") or re.fullmatch(r"\d+", digits):
        if len(digits) > _MAX_INT_DIGITS:  # before int(): Python refuses to parse > 4300 digits anyway
            raise CheckpointError(
                path, f"{where}: integer literal of {len(digits)} digits is out of the 64-bit range"
            )
        v = int(t, 16) if digits.startswith("0x") else int(t)
        if not _INT_RANGE[0] <= v <= _INT_RANGE[1]:
            raise CheckpointError(path, f"{where}: integer {v} is out of the 64-bit range")
        return v
    return float(t.rstrip("f"))


def parse_prototxt(text: str, path=None) -> Message:
    """Parse protobuf text format into a :class:`Message` tree.

    Parameters
    ----------
    text : str
    path : str, optional
        For error messages.

    Raises
    ------
    CheckpointError
        With the line and column of the first syntax error.
    """
    toks = _tokenize(text, path)
    pos = 0

    def where(i):
        if i < len(toks):
            return f"line {toks[i][2]}, column {toks[i][3]}"
        return "end of file"

    def value(i, field):
        kind, val, _, _ = toks[i]
        here = f"{where(i)}: field {field!r}"
        if kind == "str":
            parts = [_unescape(val, where(i), path)]
            i += 1
            while i < len(toks) and toks[i][0] == "str":  # adjacent strings concatenate
                parts.append(_unescape(toks[i][1], where(i), path))
                i += 1
            return "".join(parts), i
        if kind == "num":
            return _number(val, here, path), i + 1
        if kind == "ident":
            if val in ("true", "True"):
                return True, i + 1
            if val in ("false", "False"):
                return False, i + 1
            if val in ("inf", "infinity", "nan"):
                return _number(val, here, path), i + 1
            return val, i + 1
        raise CheckpointError(path, f"{here}: expected a value, found {val!r}")

    def message(i, close, depth):
        if depth > _MAX_DEPTH:
            raise CheckpointError(path, f"{where(i)}: messages nested deeper than {_MAX_DEPTH}")
        msg = Message()
        while True:
            if i >= len(toks):
                if close is None:
                    return msg, i
                raise CheckpointError(path, f"end of file: missing {close!r}")
            kind, val, _, _ = toks[i]
            if close is not None and kind == "punct" and val == close:
                return msg, i + 1
            if kind != "ident":
                raise CheckpointError(path, f"{where(i)}: expected a field name, found {val!r}")
            name = val
            i += 1
            colon = i < len(toks) and toks[i][1] == ":" and toks[i][0] == "punct"
            if colon:
                i += 1
            if i >= len(toks):
                raise CheckpointError(path, f"end of file: field {name!r} has no value")
            kind, val, _, _ = toks[i]
            if kind == "punct" and val in "{<":
                sub, i = message(i + 1, "}" if val == "{" else ">", depth + 1)
                msg.setdefault(name, []).append(sub)
            elif kind == "punct" and val == "[" and colon:
                i += 1
                while i < len(toks) and toks[i][1] != "]":
                    if toks[i][0] == "punct" and toks[i][1] in "{<":
                        sub, i = message(i + 1, "}" if toks[i][1] == "{" else ">", depth + 1)
                        msg.setdefault(name, []).append(sub)
                    else:
                        v, i = value(i, name)
                        msg.setdefault(name, []).append(v)
                if i >= len(toks):
                    raise CheckpointError(path, "end of file: missing ']'")
                i += 1
            elif colon:
                v, i = value(i, name)
                msg.setdefault(name, []).append(v)
            else:
                raise CheckpointError(path, f"{where(i)}: expected ':' or '{{' after field {name!r}")

    root, pos = message(0, None, 0)
    return root
