"""Dense-matrix oracles: materialise a linear operator and apply EB in matrix form.

A linear map ``f`` (for example a convolution without bias) becomes the matrix
``A`` with ``A[:, k] = f(e_k)`` over the identity basis ``e_k`` of its input.
EB of that map is then, in plain matrix algebra,
``p_x = x * (A_pos^T (p_y / (A_pos x)))`` with ``A_pos = max(A, 0)``, where the
positive part is taken of the *weights* before materialising (``f_pos`` is the
same map built with ``W+``).
"""

import numpy


def as_matrix(f, in_shape):
    """Matrix ``A`` (out_size, in_size) of a linear map ``f`` on float64 NumPy input."""
    size = int(numpy.prod(in_shape))
    cols = []
    for k in range(size):
        e = numpy.zeros(size)
        e[k] = 1.0
        cols.append(numpy.asarray(f(e.reshape(in_shape)), dtype=numpy.float64).ravel())
    return numpy.stack(cols, axis=1)


def eb_matrix(A_pos, x, p_y):
    """EB through a non-negative matrix: ``x * A_pos^T (p_y / (A_pos x))``, 0/0 -> 0."""
    x = numpy.asarray(x, dtype=numpy.float64).ravel()
    p_y = numpy.asarray(p_y, dtype=numpy.float64).ravel()
    z = A_pos @ x
    s = numpy.zeros_like(z)
    nz = z != 0
    s[nz] = p_y[nz] / z[nz]
    return x * (A_pos.T @ s), float(p_y[~nz].sum())
