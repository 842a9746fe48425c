"""Float64 central finite differences (CS231n-style, contracted with an upstream signal)."""

import numpy


def numerical_vjp(f, x, g_y, h=1e-6):
    """``d/dx <f(x), g_y>`` by central differences, one coordinate at a time."""
    x = numpy.array(x, dtype=numpy.float64)
    g = numpy.zeros_like(x)
    it = numpy.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = numpy.sum(numpy.asarray(f(x)) * g_y)
        x[i] = old - h
        fm = numpy.sum(numpy.asarray(f(x)) * g_y)
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g
