"""Constant folding for ONNX graphs: the shape and constant subgraphs exporters write, evaluated with NumPy.

torch's exporters compute an LSTM's initial state, the target of a
``view``/``flatten`` and sometimes a weight itself with small subgraphs
(``Shape -> Gather -> Unsqueeze -> Concat -> Expand``, ``ConstantOfShape``,
``Identity`` of a shared initializer, ``Transpose`` of a weight...). Once the
input's shape is known these are constants; :func:`fold_node` evaluates one
node whose inputs are all known arrays, following the ONNX operator
definitions (integer ``Div`` truncates toward zero, ``Slice`` clamps like
ONNX, ``Expand`` broadcasts both ways...).

Every result that allocates is charged to the file's budget
(:meth:`weights_io._buffer.Buffer.charge`) **before** it is allocated, its size
computed with Python integers from the operands' shapes, so a graph cannot make
the converter allocate more than the file's bound (``ConstantOfShape`` of
``[2**40]``, an ``Expand`` to a huge shape, a ``Range`` of 10**12 values...).
Views (``Identity``, ``Reshape``, ``Transpose``, ``Squeeze``, ``Unsqueeze``,
``Flatten``, ``Slice``) allocate nothing. Operands are checked (ranks, axes,
indices, integer types) and a bad one raises :class:`CheckpointError` naming
the node and the input or attribute.
"""

from __future__ import annotations

import numpy

from .errors import CheckpointError

__all__ = ["FOLDABLE", "fold_node", "onnx_dtype"]

# TensorProto.DataType -> numpy dtype (Cast, ConstantOfShape); bfloat16 and the 8-/4-bit floats are not folded
_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}


def onnx_dtype(code, path, what):
    """The numpy dtype of an ONNX ``TensorProto.DataType`` code."""
    if isinstance(code, bool) or not isinstance(code, int) or code not in _DTYPES:
        raise CheckpointError(path, f"{what}: data type {code!r} is not supported here")
    return numpy.dtype(_DTYPES[code])


class _Ctx:
    def __init__(self, node, what, path, charge):
        self.node, self.what, self.path, self._charge = node, what, path, charge

    def error(self, detail):
        return CheckpointError(self.path, f"{self.what}: {detail}")

    def alloc(self, shape, dtype):
        """Charge an array of ``shape``/``dtype`` to the budget (before it is allocated)."""
        n = 1
        for d in shape:
            if d < 0:
                raise self.error(f"negative dimension in the result shape {tuple(shape)}")
            n *= d
        self._charge(n * numpy.dtype(dtype).itemsize, self.what)

    def attr_int(self, key, default):
        v = self.node.attrs.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"attribute {key!r} must be an integer, found {v!r:.60}")
        return v

    def attr_ints(self, key):
        v = self.node.attrs.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self.error(f"attribute {key!r} must be a list of integers, found {v!r:.60}")
        return v

    def ints(self, a, role, ndim=1):
        """A 1-d (or 0-d with ``ndim=0``) integer tensor as a list of Python ints."""
        if not isinstance(a, numpy.ndarray) or a.dtype.kind not in "iu":
            raise self.error(
                f"the {role} input must be an integer tensor, found {getattr(a, 'dtype', type(a).__name__)}"
            )
        if ndim == 1 and a.ndim != 1:
            raise self.error(f"the {role} input must be 1-d, found shape {a.shape}")
        if a.size > 1 << 16:
            raise self.error(f"the {role} input has {a.size} values")
        return [int(v) for v in a.reshape(-1)]

    def axis(self, a, rank, role="axis"):
        if not -rank <= a < max(rank, 1):
            raise self.error(f"{role} {a} is out of range for rank {rank}")
        return a + rank if a < 0 else a


def _arg(ins, i, ctx, role, required=True):
    if i < len(ins) and ins[i] is not None:
        return ins[i]
    if required:
        raise ctx.error(f"input {i} ({role}) is missing")
    return None


def broadcast_shape(shapes, ctx):
    """ONNX multidirectional broadcasting of ``shapes`` (Python ints; no allocation)."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(rank):
        dims = {s[k - rank + len(s)] for s in shapes if k - rank + len(s) >= 0}
        big = dims - {1}
        if len(big) > 1:
            raise ctx.error(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(big.pop() if big else 1)
    return tuple(out)


def _same(ins, ctx):
    return ins[0]


def _shape_of(ins, ctx):
    shape = ins[0].shape
    rank = len(shape)
    start = ctx.attr_int("start", 0)
    end = ctx.attr_int("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return numpy.array(shape[start:end], dtype=numpy.int64)


def _size(ins, ctx):
    return numpy.array(int(ins[0].size), dtype=numpy.int64)


def _axes(ins, ctx, i=1):
    """``axes`` from the attribute (before opset 13) or the input ``i``."""
    v = ctx.attr_ints("axes")
    if v is None and len(ins) > i and ins[i] is not None:
        v = ctx.ints(ins[i], "axes")
    return v


def _unsqueeze(ins, ctx):
    x = ins[0]
    axes = _axes(ins, ctx)
    if not axes:
        raise ctx.error("Unsqueeze needs axes")
    rank = x.ndim + len(axes)
    axes = sorted(ctx.axis(a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ctx.error(f"repeated axes {axes}")
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return x.reshape(shape)


def _squeeze(ins, ctx):
    x = ins[0]
    axes = _axes(ins, ctx)
    if axes is None:
        axes = [k for k, d in enumerate(x.shape) if d == 1]
    axes = {ctx.axis(a, x.ndim) for a in axes}
    if any(x.shape[a] != 1 for a in axes):
        raise ctx.error(f"squeezes axes {sorted(axes)} of shape {x.shape}, which are not all of size 1")
    return x.reshape([d for k, d in enumerate(x.shape) if k not in axes])


def reshape_target(shape, target, allowzero, ctx):
    """The output shape of ``Reshape(shape -> target)`` (``0`` copies, ``-1`` infers); Python ints."""
    out, infer = [], None
    for k, t in enumerate(target):
        if t == 0 and not allowzero:
            if k >= len(shape):
                raise ctx.error(f"target {target}: a 0 at position {k} has no input dimension to copy")
            t = shape[k]
        elif t == -1:
            if infer is not None:
                raise ctx.error(f"target {target} has more than one -1")
            infer = k
        elif t < 0:
            raise ctx.error(f"target {target} holds a negative size")
        out.append(t)
    total = 1
    for d in shape:
        total *= d
    if infer is not None:
        rest = 1
        for k, d in enumerate(out):
            if k != infer:
                rest *= d
        if rest == 0 or total % rest:
            raise ctx.error(f"cannot reshape {tuple(shape)} to {target}")
        out[infer] = total // rest
    n = 1
    for d in out:
        n *= d
    if n != total:
        raise ctx.error(f"cannot reshape {tuple(shape)} ({total} values) to {tuple(out)} ({n} values)")
    return out


def _view(x, shape, ctx):
    """``x`` reshaped: a view when possible, else a charged copy."""
    v = x.view()
    try:
        v.shape = tuple(shape)
        return v
    except AttributeError:  # not expressible as a view (a transposed array): numpy copies
        ctx.alloc(shape, x.dtype)
        return x.reshape(shape)


def _reshape(ins, ctx):
    x = ins[0]
    target = ctx.ints(_arg(ins, 1, ctx, "shape"), "shape")
    return _view(x, reshape_target(x.shape, target, ctx.attr_int("allowzero", 0), ctx), ctx)


def _flatten(ins, ctx):
    x = ins[0]
    axis = ctx.axis(ctx.attr_int("axis", 1), x.ndim + 1)
    a = 1
    for d in x.shape[:axis]:
        a *= d
    return _view(x, (a, x.size // a if a else 0), ctx)


def _transpose(ins, ctx):
    x = ins[0]
    perm = ctx.attr_ints("perm")
    if perm is None:
        perm = list(range(x.ndim))[::-1]
    if sorted(perm) != list(range(x.ndim)):
        raise ctx.error(f"perm {perm} is not a permutation of the {x.ndim} axes")
    return x.transpose(perm)


def _cast(ins, ctx):
    dt = onnx_dtype(ctx.node.attrs.get("to"), ctx.path, ctx.what)
    ctx.alloc(ins[0].shape, dt)
    return ins[0].astype(dt)


def _cast_like(ins, ctx):
    dt = _arg(ins, 1, ctx, "target_type").dtype
    ctx.alloc(ins[0].shape, dt)
    return ins[0].astype(dt)


def _gather(ins, ctx):
    data, idx = ins[0], _arg(ins, 1, ctx, "indices")
    if data.ndim == 0:
        raise ctx.error("gathers from a scalar")
    if idx.dtype.kind not in "iu":
        raise ctx.error(f"indices must be integers, found {idx.dtype}")
    axis = ctx.axis(ctx.attr_int("axis", 0), data.ndim)
    n = data.shape[axis]
    if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise ctx.error(f"an index of {idx.reshape(-1)[:8].tolist()} is out of range for size {n}")
    shape = data.shape[:axis] + idx.shape + data.shape[axis + 1 :]
    ctx.alloc(shape, data.dtype)
    return numpy.take(data, numpy.where(idx < 0, idx + n, idx).astype(numpy.int64), axis=axis)


def _concat(ins, ctx):
    xs = [x for x in ins if x is not None]
    if not xs:
        raise ctx.error("Concat of no inputs")
    rank = xs[0].ndim
    if rank == 0 or any(x.ndim != rank for x in xs):
        raise ctx.error(f"inputs of ranks {[x.ndim for x in xs]} cannot be concatenated")
    axis = ctx.axis(ctx.attr_int("axis", 0), rank)
    for x in xs:
        if x.shape[:axis] + x.shape[axis + 1 :] != xs[0].shape[:axis] + xs[0].shape[axis + 1 :]:
            raise ctx.error(f"shapes {[x.shape for x in xs]} differ outside axis {axis}")
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    dt = numpy.result_type(*xs)
    ctx.alloc(shape, dt)
    return numpy.concatenate(xs, axis=axis)


def _expand(ins, ctx):
    x = ins[0]
    target = ctx.ints(_arg(ins, 1, ctx, "shape"), "shape")
    if any(t < 0 for t in target):
        raise ctx.error(f"negative size in the shape {target}")
    shape = broadcast_shape([x.shape, tuple(target)], ctx)
    ctx.alloc(shape, x.dtype)  # a view, but every element of it may be copied into a parameter
    return numpy.broadcast_to(x, shape)


def _constant_of_shape(ins, ctx):
    shape = ctx.ints(ins[0], "shape")
    value = ctx.node.attrs.get("value")
    if value is None:
        value = numpy.zeros((1,), numpy.float32)
    if not isinstance(value, numpy.ndarray) or value.size != 1:
        raise ctx.error("attribute 'value' must be a tensor of one element")
    ctx.alloc(shape, value.dtype)
    return numpy.full(shape, value.reshape(-1)[0], dtype=value.dtype)


def _slice(ins, ctx):
    x = ins[0]
    if "starts" in ctx.node.attrs:  # opset 1-9
        starts, ends = ctx.attr_ints("starts"), ctx.attr_ints("ends") or []
        axes, steps = ctx.attr_ints("axes"), None
    else:
        starts = ctx.ints(_arg(ins, 1, ctx, "starts"), "starts")
        ends = ctx.ints(_arg(ins, 2, ctx, "ends"), "ends")
        axes = ctx.ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else None
        steps = ctx.ints(ins[4], "steps") if len(ins) > 4 and ins[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    index = [slice(None)] * x.ndim
    seen = set()
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = ctx.axis(a, x.ndim)
        if a in seen or st == 0:
            raise ctx.error(f"repeated axis {a} or a zero step")
        seen.add(a)
        n = x.shape[a]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
            index[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
            index[a] = slice(s, e if e >= 0 else None, st)
    return x[tuple(index)]


def _range(ins, ctx):
    start, limit, delta = (_arg(ins, k, ctx, r) for k, r in enumerate(("start", "limit", "delta")))
    if any(v.size != 1 for v in (start, limit, delta)):
        raise ctx.error("start, limit and delta must be scalars")
    a, b, d = (v.reshape(-1)[0] for v in (start, limit, delta))
    if d == 0:
        raise ctx.error("delta is 0")
    n = numpy.ceil((float(b) - float(a)) / float(d))
    n = int(n) if numpy.isfinite(n) and n > 0 else 0
    dt = numpy.result_type(start, limit, delta)
    ctx.alloc((n,), dt)
    return (a + numpy.arange(n) * d).astype(dt)


def _tile(ins, ctx):
    x = ins[0]
    reps = ctx.ints(_arg(ins, 1, ctx, "repeats"), "repeats")
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise ctx.error(f"repeats {reps} do not fit the shape {x.shape}")
    ctx.alloc([d * r for d, r in zip(x.shape, reps, strict=True)], x.dtype)
    return numpy.tile(x, reps)


def _int_div(a, b):
    """ONNX integer division: truncation toward zero."""
    q = numpy.floor_divide(a, b)
    r = numpy.remainder(a, b)
    return q + ((r != 0) & ((a < 0) ^ (b < 0))).astype(q.dtype)


def _binary(fn):
    def run(ins, ctx):
        a, b = ins[0], _arg(ins, 1, ctx, "B")
        shape = broadcast_shape([a.shape, b.shape], ctx)
        if fn == "Div" and a.dtype.kind in "iu" and b.dtype.kind in "iu":
            if numpy.any(b == 0):
                raise ctx.error("integer division by zero")
            ctx.alloc(shape, a.dtype)
            return _int_div(a, b).astype(a.dtype)
        ctx.alloc(shape, numpy.result_type(a, b))
        with numpy.errstate(all="ignore"):
            out = _BINARY[fn](a, b)
        return out if fn in _LOGICAL else out.astype(numpy.result_type(a, b), copy=False)

    return run


_BINARY = {
    "Add": numpy.add,
    "Sub": numpy.subtract,
    "Mul": numpy.multiply,
    "Div": numpy.divide,
    "Equal": numpy.equal,
    "Less": numpy.less,
    "Greater": numpy.greater,
    "LessOrEqual": numpy.less_equal,
    "GreaterOrEqual": numpy.greater_equal,
    "And": numpy.logical_and,
    "Or": numpy.logical_or,
    "Xor": numpy.logical_xor,
}
_LOGICAL = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"}


def _unary(fn):
    def run(ins, ctx):
        ctx.alloc(ins[0].shape, ins[0].dtype)
        with numpy.errstate(all="ignore"):
            return fn(ins[0])

    return run


def _variadic(fn):
    def run(ins, ctx):
        xs = [x for x in ins if x is not None]
        if not xs:
            raise ctx.error("no inputs")
        ctx.alloc(broadcast_shape([x.shape for x in xs], ctx), numpy.result_type(*xs))
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return numpy.asarray(out)

    return run


def _where(ins, ctx):
    c, a, b = ins[0], _arg(ins, 1, ctx, "X"), _arg(ins, 2, ctx, "Y")
    if c.dtype != numpy.bool_:
        raise ctx.error(f"the condition must be bool, found {c.dtype}")
    ctx.alloc(broadcast_shape([c.shape, a.shape, b.shape], ctx), numpy.result_type(a, b))
    return numpy.where(c, a, b)


def _reduce(fn):
    def run(ins, ctx):
        x = ins[0]
        axes = _axes(ins, ctx)
        if axes is None and ctx.attr_int("noop_with_empty_axes", 0):
            return x
        axes = tuple(range(x.ndim)) if not axes else tuple(sorted({ctx.axis(a, x.ndim) for a in axes}))
        keep = bool(ctx.attr_int("keepdims", 1))
        ctx.alloc([1 if k in axes else d for k, d in enumerate(x.shape) if keep or k not in axes], x.dtype)
        return fn(x, axis=axes, keepdims=keep).astype(x.dtype, copy=False)

    return run


FOLDERS = {
    "Identity": _same,
    "Shape": _shape_of,
    "Size": _size,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Gather": _gather,
    "Concat": _concat,
    "Expand": _expand,
    "ConstantOfShape": _constant_of_shape,
    "Slice": _slice,
    "Range": _range,
    "Tile": _tile,
    "Where": _where,
    "Neg": _unary(numpy.negative),
    "Abs": _unary(numpy.abs),
    "Not": _unary(numpy.logical_not),
    "Floor": _unary(numpy.floor),
    "Ceil": _unary(numpy.ceil),
    "Sqrt": _unary(numpy.sqrt),
    "Max": _variadic(numpy.maximum),
    "Min": _variadic(numpy.minimum),
    "Sum": _variadic(numpy.add),
    "ReduceProd": _reduce(numpy.prod),
    "ReduceSum": _reduce(numpy.sum),
    "ReduceMax": _reduce(numpy.max),
    "ReduceMin": _reduce(numpy.min),
}
FOLDERS.update({op: _binary(op) for op in _BINARY})
FOLDABLE = frozenset(FOLDERS)
# ops whose result is a view of their first input (no new bytes)
VIEWS = frozenset({"Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Slice"})


def fold_node(node, ins, what, path, charge):
    """Evaluate ``node`` on known inputs; return its first output (a read-only array).

    Parameters
    ----------
    node : OnnxNode
        Its ``op_type`` must be in :data:`FOLDABLE`.
    ins : list
        The input arrays (None for an omitted optional input). For ``Shape``
        and ``Size`` the first may be any object with ``shape``/``size``.
    what : str
        The node, for messages.
    path : str
        The file, for messages.
    charge : callable
        ``charge(nbytes, what)``, called before anything is allocated.

    Raises
    ------
    CheckpointError
        For an operand the operator does not accept (naming the node).
    """
    ctx = _Ctx(node, what, path, charge)
    if not ins or ins[0] is None:
        raise ctx.error("input 0 is missing")
    if node.op_type not in ("Shape", "Size"):
        for k, a in enumerate(ins):
            if a is not None and not isinstance(a, numpy.ndarray):
                raise ctx.error(f"input {k} is not a tensor")
    out = FOLDERS[node.op_type](ins, ctx)
    out = numpy.asarray(out)
    out.flags.writeable = False
    return out
