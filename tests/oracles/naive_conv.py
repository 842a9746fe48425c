"""Naive 2-D convolution by explicit loops, and its dense matrix; shares no code with ebr_ref.

``conv2d_naive`` follows the definition (Caffe / PyTorch cross-correlation) one output
cell at a time, with the padding handled by bounds checks rather than a padded copy.
Only the batch axis is vectorised (so that the identity basis can be pushed through
in one call when materialising the matrix).
"""

import numpy


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_naive(x, W, b=None, stride=1, padding=0, dilation=1, groups=1):
    """``y[n, o, i, j] = b[o] + sum_{c,u,v} W[o, c, u, v]
    x[n, g iCg + c, i sH + u dH - pH, j sW + v dW - pW]``.

    Float64 NumPy in and out; cells outside the input count as 0.
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    W = numpy.asarray(W, dtype=numpy.float64)
    (sH, sW), (pH, pW), (dH, dW) = _pair(stride), _pair(padding), _pair(dilation)
    N, iC, iH, iW = x.shape
    oC, iCg, kH, kW = W.shape
    oCg = oC // groups
    oH = (iH + 2 * pH - dH * (kH - 1) - 1) // sH + 1
    oW = (iW + 2 * pW - dW * (kW - 1) - 1) // sW + 1
    y = numpy.zeros((N, oC, oH, oW))
    for o in range(oC):
        g = o // oCg
        for i in range(oH):
            for j in range(oW):
                acc = numpy.zeros(N) if b is None else numpy.full(N, float(b[o]))
                for c in range(iCg):
                    for u in range(kH):
                        r = i * sH + u * dH - pH
                        if not 0 <= r < iH:
                            continue
                        for v in range(kW):
                            t = j * sW + v * dW - pW
                            if 0 <= t < iW:
                                acc = acc + W[o, c, u, v] * x[:, g * iCg + c, r, t]
                y[:, o, i, j] = acc
    return y


def conv2d_matrix(W, in_shape, stride=1, padding=0, dilation=1, groups=1):
    """Dense matrix ``A`` of the bias-free convolution on inputs of shape ``in_shape``.

    Columns are the naive convolution of the identity basis (zennit's ``as_matrix``
    idea): ``A[:, k] = vec(conv(e_k))``, rows and columns in C order of ``y`` and ``x``.
    Images do not interact, so the matrix is block diagonal over the batch.
    """
    N, iC, iH, iW = in_shape
    D = iC * iH * iW
    basis = numpy.eye(D).reshape(D, iC, iH, iW)  # one image per basis vector
    block = conv2d_naive(basis, W, None, stride, padding, dilation, groups).reshape(D, -1).T  # (oC oH oW, D)
    return numpy.kron(numpy.eye(N), block)
