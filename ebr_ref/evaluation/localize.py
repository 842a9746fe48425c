"""Localisation from saliency: temporal grounding and the pointing games.

Paper §4.1 and §5 (Bargal et al., CVPR 2018); docs/spec.md §6. Inputs are the
per-frame results of a grounding run: the temporal evidence ``S (T,)`` (the
sum of each frame's signed map) and the per-frame maps ``(T, h, w)`` at some
read-out layer. NumPy or CuPy arrays are accepted; they are converted to NumPy
at the edge (these are O(T) or O(T h w) reductions done once per clip).

Conventions (all tested in ``tests/evaluation/test_localize.py``):

* Frames are 0-based; a temporal interval ``(start, end)`` is inclusive at both
  ends and covers ``end - start + 1`` frames.
* Every argmax takes the **first** maximum: the earliest frame of ``S``; for a
  map, the first cell in row-major (C) order.
* Unknown-length grounding grows the window while the next frame's ``S`` is
  **not negative**, i.e. ``S >= 0`` (a frame with ``S == 0`` is included).
* Pixel coordinates: ``x`` is the column and ``y`` the row; integer values are
  pixel **centres** (pixel ``(0, 0)`` spans ``[-0.5, 0.5]^2``). A box
  ``(x1, y1, x2, y2)`` is inclusive: it holds the pixels whose centres lie in
  the closed rectangle ``[x1, x2] x [y1, y2]``.
* A map cell ``(r, c)`` of an ``h x w`` map read out for an ``H x W`` input
  stands for input pixel ``x = (c + 0.5) W / w - 0.5``,
  ``y = (r + 0.5) H / h - 0.5``: the centre of the block of input pixels the
  cell covers when the layer's total stride is ``H / h`` (for ``h == H`` this
  is the identity). Receptive-field offsets of unpadded layers are ignored.
* A map whose values are all equal (for example all zero) has no peak: it is
  a **miss** in the pointing games. Non-finite values raise ``ValueError``
  (TorchRay issue #18: NaN maps counted as hits).
"""

from __future__ import annotations

import math

import numpy

from ..backend import to_numpy

__all__ = [
    "ground_unknown_length",
    "ground_known_length",
    "map_peak",
    "pointing_hit",
    "pointing_game",
    "temporal_pointing_hit",
]

_CONVENTIONS = ("diameter", "torchray")


def _as_evidence(S, name):
    S = numpy.asarray(to_numpy(S))
    if S.ndim != 1 or S.shape[0] == 0:
        raise ValueError(f"{name}: S must be a non-empty 1-D array (T,), got shape {S.shape}")
    if not numpy.all(numpy.isfinite(S)):
        raise ValueError(f"{name}: S contains NaN or infinite values")
    return S


def ground_unknown_length(S):
    """Temporal grounding with unknown action length (paper §4.1).

    The anchor is the frame with the largest evidence ``S[t]`` (the first one
    on ties). The window then grows greedily to both sides, one frame at a
    time, while the next frame's ``S`` is not negative (``S >= 0``); each side
    stops at the first negative frame or at the clip edge.

    Parameters
    ----------
    S : array of shape (T,)
        Temporal evidence: the sum of each frame's signed saliency map.

    Returns
    -------
    start, end : int
        The inclusive frame interval ``[start, end]``.

    Raises
    ------
    ValueError
        For an empty, non-1-D or non-finite ``S``.

    Notes
    -----
    When every frame is negative the anchor is still returned, as the
    one-frame window ``[anchor, anchor]``: the method always outputs a window
    (the anchor itself is never tested against 0).

    Examples
    --------
    >>> ground_unknown_length([-1.0, 0.5, 0.0, 2.0, 1.0, -0.1, 1.5])
    (1, 4)
    """
    S = _as_evidence(S, "ground_unknown_length")
    anchor = int(numpy.argmax(S))  # first maximum
    negative = S < 0
    left = numpy.flatnonzero(negative[:anchor])
    right = numpy.flatnonzero(negative[anchor + 1 :])
    start = int(left[-1]) + 1 if left.size else 0
    end = anchor + int(right[0]) if right.size else S.shape[0] - 1
    return start, end


def ground_known_length(S, length):
    """The window of ``length`` frames with the largest sum of ``S`` (paper §5.2).

    Parameters
    ----------
    S : array of shape (T,)
    length : int
        The known action length ``L`` in frames, ``1 <= L <= T``.

    Returns
    -------
    start, end : int
        The inclusive interval ``[start, start + L - 1]``.

    Raises
    ------
    ValueError
        For ``L < 1``, ``L > T``, or an invalid ``S``.

    Notes
    -----
    Windows are compared by their **exact** sums: every float64 value is a
    dyadic rational, so the values are scaled to integers by the largest
    power of two among their denominators and every window sum is a
    difference of exact integer prefix sums (Python integers; O(T) additions).
    Floating-point sums would not do: the same values added in another order
    round differently (below, ``-0.1 + 0.9 + 0.8 + 0.7`` gives 2.3 and
    ``0.9 + 0.8 + 0.7 - 0.1`` gives 2.3000000000000003), so of two windows with
    equal exact sums the later one could win. Among windows with equal exact
    sums the earliest wins.

    Examples
    --------
    >>> ground_known_length([0.0, 1.0, 1.0, 0.0, 2.0], 2)
    (1, 2)
    >>> ground_known_length([-0.1, 0.9, 0.8, 0.7, -0.1], 4)  # the same four values: an exact tie
    (0, 3)
    """
    S = _as_evidence(S, "ground_known_length")
    L = int(length)
    if L != length or L < 1 or L > S.shape[0]:
        raise ValueError(
            f"ground_known_length: length must be an integer in [1, T={S.shape[0]}], got {length!r}"
        )
    P = _exact_prefix_sums(S)  # P[t] = D * (S[0] + ... + S[t-1]) exactly, one common scale D > 0
    best, start = None, 0
    for s in range(S.shape[0] - L + 1):
        w = P[s + L] - P[s]
        if best is None or w > best:  # strictly larger: the earliest of equal windows stays
            best, start = w, s
    return start, start + L - 1


def _exact_prefix_sums(S):
    """Prefix sums ``[0, D S[0], D (S[0] + S[1]), ...]`` as exact Python integers, for one scale ``D > 0``."""
    if S.dtype.kind in "biu":
        ints = [int(v) for v in S.tolist()]
    else:
        ratios = [v.as_integer_ratio() for v in S.astype(numpy.float64).tolist()]  # exact: d is a power of 2
        D = max(d for _, d in ratios)
        ints = [n * (D // d) for n, d in ratios]
    P = [0] * (len(ints) + 1)
    acc = 0
    for t, v in enumerate(ints):
        acc += v
        P[t + 1] = acc
    return P


def map_peak(saliency, input_size):
    """The maximum of one frame's map, in input-pixel coordinates.

    Parameters
    ----------
    saliency : array of shape (h, w)
        The map at any read-out layer (for example ``conv5_1``: 14 x 14 for a
        224 x 224 input).
    input_size : (int, int)
        ``(H, W)`` of the network input the map belongs to.

    Returns
    -------
    (x, y) : tuple of float, or None
        The centre of the peak cell mapped to input pixels,
        ``x = (c + 0.5) W / w - 0.5``, ``y = (r + 0.5) H / h - 0.5``, where
        ``(r, c)`` is the first maximum in row-major order. ``None`` when every
        value of the map is equal (a flat map has no peak).

    Raises
    ------
    ValueError
        For a map that is not 2-D, is empty, or holds non-finite values, or a
        bad ``input_size``.
    """
    m = numpy.asarray(to_numpy(saliency))
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"map_peak: the map must be a non-empty 2-D array (h, w), got shape {m.shape}")
    if not numpy.all(numpy.isfinite(m)):
        raise ValueError("map_peak: the map contains NaN or infinite values")
    H, W = _input_size(input_size, "map_peak")
    if m.max() == m.min():
        return None
    h, w = m.shape
    r, c = numpy.unravel_index(int(numpy.argmax(m)), m.shape)  # first maximum, row-major
    return (float((c + 0.5) * W / w - 0.5), float((r + 0.5) * H / h - 0.5))


def _input_size(input_size, name):
    try:
        H, W = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: input_size must be (H, W), got {input_size!r}") from None
    if H < 1 or W < 1:
        raise ValueError(f"{name}: input_size must be positive, got {input_size!r}")
    return H, W


def _as_boxes(boxes, name):
    b = numpy.asarray(to_numpy(boxes), dtype=numpy.float64)
    if b.ndim == 1:
        b = b[None, :]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: boxes must be (4,) or (k, 4) as (x1, y1, x2, y2), got shape {b.shape}")
    if numpy.any(b[:, 2] < b[:, 0]) or numpy.any(b[:, 3] < b[:, 1]):
        raise ValueError(f"{name}: boxes need x2 >= x1 and y2 >= y1, got {b.tolist()}")
    return b


def pointing_hit(point, boxes, tolerance=15.0, *, convention="diameter"):
    """Whether a point hits a ground-truth box (Zhang et al. 2016 pointing game).

    Parameters
    ----------
    point : (float, float)
        ``(x, y)`` in input-pixel coordinates (see the module notes).
    boxes : array of shape (4,) or (k, 4)
        Inclusive boxes ``(x1, y1, x2, y2)``; a hit on any box counts. Rows
        with NaN are ignored; no valid row gives a miss.
    tolerance : float
        With ``convention="diameter"`` (the default, paper §5.1): the diameter
        of the circle drawn around the point, 15 px. With
        ``convention="torchray"``: TorchRay's radius-like tolerance (its
        default is also 15, i.e. a circle of 30 px diameter).
    convention : {"diameter", "torchray"}
        ``"diameter"``: a hit when the closed disk of diameter ``tolerance``
        around the point meets the closed rectangle ``[x1, x2] x [y1, y2]``,
        i.e. when the Euclidean distance from the point to the box is
        ``<= tolerance / 2``. ``"torchray"``: TorchRay's
        ``PointingGame.evaluate`` (``torchray/benchmark/pointing_game.py``):
        a hit when some integer pixel ``(u, v)`` of the box mask satisfies
        ``(u - x)^2 + (v - y)^2 < tolerance^2`` (strict, radius ``tolerance``,
        distances to pixel centres only).

    Returns
    -------
    bool

    Examples
    --------
    >>> pointing_hit((10.0, 0.0), (0, 0, 2.5, 4))
    True
    >>> pointing_hit((10.01, 0.0), (0, 0, 2.5, 4))
    False
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"pointing_hit: convention must be one of {_CONVENTIONS}, got {convention!r}")
    tolerance = float(tolerance)
    if not tolerance >= 0:
        raise ValueError(f"pointing_hit: tolerance must be >= 0, got {tolerance}")
    x, y = (float(v) for v in point)
    b = _as_boxes(boxes, "pointing_hit")
    b = b[numpy.all(numpy.isfinite(b), axis=1)]
    if b.shape[0] == 0:
        return False
    x1, y1, x2, y2 = b.T
    if convention == "diameter":
        dx = numpy.maximum(numpy.maximum(x1 - x, x - x2), 0.0)  # 0 inside the box's x range
        dy = numpy.maximum(numpy.maximum(y1 - y, y - y2), 0.0)
        return bool(numpy.any(dx * dx + dy * dy <= (tolerance / 2) ** 2))
    # torchray: nearest integer pixel of each box (the two axes separate)
    u_lo, u_hi = numpy.ceil(x1), numpy.floor(x2)
    v_lo, v_hi = numpy.ceil(y1), numpy.floor(y2)
    nonempty = (u_lo <= u_hi) & (v_lo <= v_hi)
    u = numpy.clip(numpy.round(x), u_lo, u_hi)
    v = numpy.clip(numpy.round(y), v_lo, v_hi)
    return bool(numpy.any(nonempty & ((u - x) ** 2 + (v - y) ** 2 < tolerance**2)))


def pointing_game(maps, boxes, input_size, tolerance=15.0, *, convention="diameter"):
    """The spatial pointing game over the frames of a clip (paper §5.1).

    Parameters
    ----------
    maps : array of shape (T, h, w)
        Per-frame saliency maps at the read-out layer (signed maps are fine:
        only the location of the maximum matters).
    boxes : array of shape (T, 4), or a sequence of T arrays of shape (k_t, 4)
        Inclusive ground-truth boxes in input pixels; a frame whose boxes are
        all NaN (or an empty ``(0, 4)`` array) is not annotated.
    input_size : (int, int)
        ``(H, W)`` of the network input.
    tolerance : float
        See :func:`pointing_hit` (15 px diameter by default).
    convention : {"diameter", "torchray"}
        See :func:`pointing_hit`.

    Returns
    -------
    outcome : int8 array of shape (T,)
        ``+1`` hit, ``-1`` miss, ``0`` skipped (no annotation), as TorchRay's
        ``PointingGame.evaluate``. A flat map on an annotated frame is a miss.
    """
    m = numpy.asarray(to_numpy(maps))
    if m.ndim != 3:
        raise ValueError(f"pointing_game: maps must be (T, h, w), got shape {m.shape}")
    T = m.shape[0]
    if isinstance(boxes, (list, tuple)):
        per_frame = list(boxes)
    else:
        b = numpy.asarray(to_numpy(boxes), dtype=numpy.float64)
        if b.shape != (T, 4):
            raise ValueError(
                f"pointing_game: boxes must be (T={T}, 4) or a list of T (k, 4) arrays, got {b.shape}"
            )
        per_frame = list(b)
    if len(per_frame) != T:
        raise ValueError(f"pointing_game: {T} maps but {len(per_frame)} frames of boxes")
    outcome = numpy.zeros(T, dtype=numpy.int8)
    for t in range(T):
        bt = numpy.asarray(per_frame[t], dtype=numpy.float64).reshape(-1, 4)
        bt = bt[numpy.all(numpy.isfinite(bt), axis=1)]
        if bt.shape[0] == 0:
            continue  # not annotated: skipped
        point = map_peak(m[t], input_size)
        hit = point is not None and pointing_hit(point, bt, tolerance, convention=convention)
        outcome[t] = 1 if hit else -1
    return outcome


def temporal_pointing_hit(S, interval):
    """Temporal pointing game (paper §5.2, Table 3): is the peak of ``S`` inside the interval?

    Parameters
    ----------
    S : array of shape (T,)
        The evidence (or any per-frame score, e.g. the class probability for
        the "peak probability" baseline).
    interval : (int, int)
        Inclusive ground-truth frames ``[start, end]``.

    Returns
    -------
    bool
        True when the first maximum of ``S`` lies in ``[start, end]``. A flat
        ``S`` (all values equal, including ``T == 1``) has no peak: False.
    """
    S = _as_evidence(S, "temporal_pointing_hit")
    start, end = interval
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(
            f"temporal_pointing_hit: interval must be (start, end) with end >= start, got {interval!r}"
        )
    if S.max() == S.min():
        return False
    peak = int(numpy.argmax(S))
    return bool(start <= peak <= end)
