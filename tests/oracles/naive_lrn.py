"""Naive loops for Caffe's across-channel LRN (float64 NumPy), from ``lrn_layer.cpp``'s definition."""

import numpy


def naive_lrn(x, size, alpha, beta, k):
    """``y[c] = x[c] (k + alpha / n sum_{|c' - c| <= (n-1)/2} x[c']^2)^(-beta)``, one cell at a time."""
    x = numpy.asarray(x, dtype=numpy.float64)
    N, C, H, W = x.shape
    half = (size - 1) // 2
    y = numpy.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    sq = 0.0
                    for cc in range(c - half, c + half + 1):
                        if 0 <= cc < C:
                            sq += x[n, cc, h, w] ** 2
                    y[n, c, h, w] = x[n, c, h, w] * (k + alpha / size * sq) ** (-beta)
    return y
