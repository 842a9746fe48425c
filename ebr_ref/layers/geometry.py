"""Output sizes of sliding-window layers (convolution and pooling), in one place.

Notation (docs/notation.md): ``iH`` input size, ``kH`` kernel size, ``sH``
stride, ``pH`` padding, ``dH`` dilation, ``oH`` output size; the same for widths.
"""

from __future__ import annotations

import math

__all__ = ["out_size", "pool_out_hw", "pair"]


def pair(v, name: str) -> tuple[int, int]:
    """Return ``(v, v)`` for an int, or validate a pair of ints.

    Raises
    ------
    ValueError
        When ``v`` is not an int or a pair of ints.
    """
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return (int(v), int(v))
    try:
        a, b = v
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    if not all(isinstance(u, int) and not isinstance(u, bool) for u in (a, b)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return (int(a), int(b))


def out_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Number of window positions along one axis.

    Parameters
    ----------
    size, kernel, stride, padding, dilation : int
        ``iH, kH, sH, pH, dH``.
    ceil_mode : bool
        False: PyTorch's floor rule ``oH = floor((iH + 2 pH - dH (kH - 1) - 1) / sH) + 1``.
        True: Caffe's pooling rule ``oH = ceil((iH + 2 pH - kE) / sH) + 1`` with the
        effective kernel ``kE = dH (kH - 1) + 1``, then ``oH -= 1`` when ``pH > 0`` and
        the last window would start at or after ``iH + pH`` (it would cover only
        padding). PyTorch's ``ceil_mode`` drops a last window that starts in the right
        padding even when ``pH == 0``; the two differ only when ``sH > kH`` and there is
        no padding (docs/conventions.md).

    Returns
    -------
    int
        ``oH``.

    Raises
    ------
    ValueError
        For non-positive kernel, stride or dilation, negative padding, or an input
        smaller than the (dilated) kernel.
    """
    if kernel < 1 or stride < 1 or dilation < 1:
        raise ValueError(
            f"kernel, stride and dilation must be >= 1, got kernel={kernel}, "
            f"stride={stride}, dilation={dilation}"
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    k_eff = dilation * (kernel - 1) + 1
    span = size + 2 * padding - k_eff
    if span < 0:
        raise ValueError(
            f"input of size {size} (padding {padding}) is smaller than the kernel of effective size {k_eff}"
        )
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if padding > 0 and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_out_hw(in_hw, kernel, stride, padding, ceil_mode, name="pool"):
    """Output size ``(oH, oW)`` of a 2-D pooling window, Caffe's corrections included.

    Parameters
    ----------
    in_hw, kernel, stride, padding : pair of int
    ceil_mode : bool
        Caffe's ceil rule (see :func:`out_size`), with Caffe's last-window
        correction applied on *both* axes as soon as either axis is padded
        (``PoolingLayer::Reshape`` tests ``pad_h_ || pad_w_``).
    name : str
        The op, for error messages.

    Raises
    ------
    ValueError
        For an input smaller than the kernel, or a ceil-mode last window that lies
        wholly outside the image (Caffe's rule with ``sH > kH`` and no padding).
    """
    out_hw = []
    for axis, i, k, s, p in zip("HW", in_hw, kernel, stride, padding):
        if i + 2 * p < k:
            raise ValueError(f"{name}: input {axis} = {i} with padding {p} is smaller than the kernel {k}")
        o = out_size(i, k, s, p, 1, ceil_mode)
        if ceil_mode and any(padding) and (o - 1) * s >= i + p:
            o -= 1  # Caffe drops such a last window on both axes when either axis is padded
        if (o - 1) * s - p >= i:
            raise ValueError(
                f"{name}: with ceil_mode the last window along {axis} "
                f"starts at {(o - 1) * s - p} >= {axis} = {i} "
                f"and covers no input (Caffe's ceil rule with stride {s} > kernel {k} and no padding); "
                "use ceil_mode=False or pad the input"
            )
        out_hw.append(o)
    return tuple(out_hw)
