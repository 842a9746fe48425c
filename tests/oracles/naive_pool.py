"""Naive nested-loop pooling, written from Caffe's ``pooling_layer.cpp`` loops (float64 NumPy).

Shares no code with :mod:`ebr_ref.layers.maxpool2d` / ``avgpool2d``: output
sizes, window bounds, divisors, the first-maximum scan and the EB sums are all
spelled out per output cell.
"""

import math

import numpy


def out_hw(in_hw, kernel, stride, padding, ceil_mode):
    """Floor: ``(i + 2p - k) // s + 1``. Ceil: Caffe's ``PoolingLayer::Reshape`` literally:
    ``ceil((i + 2p - k) / s) + 1`` per axis, then, if ``pad_h || pad_w``, minus 1 on each axis
    whose last window starts at or after ``i + p``."""
    (iH, iW), (kH, kW), (sH, sW), (pH, pW) = in_hw, kernel, stride, padding
    if not ceil_mode:
        return (iH + 2 * pH - kH) // sH + 1, (iW + 2 * pW - kW) // sW + 1
    oH = int(math.ceil((iH + 2 * pH - kH) / sH)) + 1
    oW = int(math.ceil((iW + 2 * pW - kW) / sW)) + 1
    if pH or pW:
        if (oH - 1) * sH >= iH + pH:
            oH -= 1
        if (oW - 1) * sW >= iW + pW:
            oW -= 1
    return oH, oW


def has_empty_window(in_hw, kernel, stride, padding, ceil_mode):
    """True when the last window along some axis holds no input cell."""
    o = out_hw(in_hw, kernel, stride, padding, ceil_mode)
    return any((o[a] - 1) * stride[a] - padding[a] >= in_hw[a] for a in (0, 1))


def _windows(in_hw, kernel, stride, padding, ceil_mode):
    """Yield ``(oh, ow, hstart, hend, wstart, wend, pool_size, real_size)`` as Caffe computes them."""
    (iH, iW), (kH, kW), (sH, sW), (pH, pW) = in_hw, kernel, stride, padding
    oH, oW = out_hw(in_hw, kernel, stride, padding, ceil_mode)
    for oh in range(oH):
        for ow in range(oW):
            hstart = oh * sH - pH
            wstart = ow * sW - pW
            hend = min(hstart + kH, iH + pH)
            wend = min(wstart + kW, iW + pW)
            pool_size = (hend - hstart) * (wend - wstart)  # before clipping to the image
            hstart, wstart = max(hstart, 0), max(wstart, 0)
            hend, wend = min(hend, iH), min(wend, iW)
            real_size = (hend - hstart) * (wend - wstart)
            yield oh, ow, hstart, hend, wstart, wend, pool_size, real_size


def naive_maxpool(x, kernel, stride, padding, ceil_mode):
    """Forward max pooling; returns ``(y, winners)`` with ``winners[n, c, oh, ow] = (h, w)``.

    The scan keeps a strictly greater value only, so ties go to the first
    maximum in row-major order (Caffe's ``bottom_data[index] > top_data[pool_index]``).
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    N, C, iH, iW = x.shape
    oH, oW = out_hw((iH, iW), kernel, stride, padding, ceil_mode)
    y = numpy.zeros((N, C, oH, oW))
    winners = numpy.zeros((N, C, oH, oW, 2), dtype=int)
    for n in range(N):
        for c in range(C):
            for oh, ow, h0, h1, w0, w1, _, _ in _windows((iH, iW), kernel, stride, padding, ceil_mode):
                best, arg = -numpy.inf, None
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        if arg is None or x[n, c, h, w] > best:
                            best, arg = x[n, c, h, w], (h, w)
                y[n, c, oh, ow] = best
                winners[n, c, oh, ow] = arg
    return y, winners


def naive_maxpool_backward(winners, p_y, in_hw):
    """Route each output's signal to its winner, accumulating (EB and gradient alike)."""
    N, C, oH, oW = p_y.shape
    p_x = numpy.zeros((N, C) + tuple(in_hw))
    for n in range(N):
        for c in range(C):
            for oh in range(oH):
                for ow in range(oW):
                    h, w = winners[n, c, oh, ow]
                    p_x[n, c, h, w] += p_y[n, c, oh, ow]
    return p_x


def naive_avgpool(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """Forward average pooling with Caffe's / PyTorch's divisor."""
    x = numpy.asarray(x, dtype=numpy.float64)
    N, C, iH, iW = x.shape
    oH, oW = out_hw((iH, iW), kernel, stride, padding, ceil_mode)
    y = numpy.zeros((N, C, oH, oW))
    for n in range(N):
        for c in range(C):
            for oh, ow, h0, h1, w0, w1, pool_size, real_size in _windows(
                (iH, iW), kernel, stride, padding, ceil_mode
            ):
                total = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        total += x[n, c, h, w]
                y[n, c, oh, ow] = total / (pool_size if count_include_pad else real_size)
    return y


def naive_avgpool_grad(g_y, in_hw, kernel, stride, padding, ceil_mode, count_include_pad):
    """``g_x[i] = sum over windows holding i of g_y / divisor``."""
    N, C = g_y.shape[:2]
    g_x = numpy.zeros((N, C) + tuple(in_hw))
    for n in range(N):
        for c in range(C):
            for oh, ow, h0, h1, w0, w1, pool_size, real_size in _windows(
                in_hw, kernel, stride, padding, ceil_mode
            ):
                d = pool_size if count_include_pad else real_size
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        g_x[n, c, h, w] += g_y[n, c, oh, ow] / d
    return g_x


def naive_avgpool_eb(x, p_y, kernel, stride, padding, ceil_mode):
    """EB with equal weights: ``P_i = a_i sum_j P_j / S_j``, 0 where ``S_j <= 0``.

    Returns ``(p_x, lost)`` where ``lost`` is the signal of the windows with ``S <= 0``.
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    N, C, iH, iW = x.shape
    p_x = numpy.zeros_like(x)
    lost = 0.0
    for n in range(N):
        for c in range(C):
            for oh, ow, h0, h1, w0, w1, _, _ in _windows((iH, iW), kernel, stride, padding, ceil_mode):
                S = sum(x[n, c, h, w] for h in range(h0, h1) for w in range(w0, w1))
                if not S > 0:
                    lost += p_y[n, c, oh, ow]
                    continue
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        p_x[n, c, h, w] += x[n, c, h, w] * p_y[n, c, oh, ow] / S
    return p_x, lost
