"""Reading ``.onnx`` models (weights and the node list) without the onnx package.

Field numbers (``onnx.proto``, onnx 1.23): ``ModelProto``: ir_version 1,
graph 7, opset_import 8. ``GraphProto``: node 1, name 2, initializer 5,
input 11, output 12. ``NodeProto``: input 1, output 2, name 3, op_type 4,
attribute 5, domain 7. ``AttributeProto``: name 1, f 2, i 3, s 4, t 5, g 6,
floats 7, ints 8, strings 9, type 20. ``TensorProto``: dims 1, data_type 2,
segment 3, float_data 4, int32_data 5, int64_data 7, name 8, raw_data 9,
double_data 10, uint64_data 11, external_data 13 (key 1 / value 2 pairs),
data_location 14. ``ValueInfoProto``: name 1, type 2 (``TypeProto.tensor_type``
1: elem_type 1, shape 2 -> dim 1 -> dim_value 1 / dim_param 2).

``raw_data`` and external data are viewed without copying; the typed fields
(``float_data``...) are decoded. External files must lie inside the model's
directory (no absolute paths, no ``..`` escapes) and their offset/length must
fit the file.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy

from ._buffer import Buffer, open_buffer, widen_bf16
from .protowire import as_int, as_string, fields_by_number, iter_fields, packed_varints, repeated_numbers

__all__ = ["OnnxGraph", "OnnxNode", "read_onnx", "read_onnx_model", "onnx_tensors", "looks_like_onnx"]

# TensorProto.DataType -> numpy dtype ("bf16" widened to float32)
_ONNX_DTYPES = {
    1: "<f4",
    2: "u1",
    3: "i1",
    4: "<u2",
    5: "<i2",
    6: "<i4",
    7: "<i8",
    9: "?",
    10: "<f2",
    11: "<f8",
    12: "<u4",
    13: "<u8",
    16: "bf16",
}
_INT32_FIELD_TYPES = {2, 3, 4, 5, 6, 9, 10, 16}  # stored in int32_data when not raw
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


class OnnxNode(NamedTuple):
    op_type: str
    name: str
    inputs: list
    outputs: list
    attrs: dict
    domain: str


class OnnxGraph(NamedTuple):
    """Nodes in file (topological) order, initializers, and graph inputs ``[(name, shape)]``."""

    name: str
    nodes: list
    initializers: dict
    inputs: list
    outputs: list


def _f32(v) -> float:
    """A float32 attribute as the shortest decimal that rounds to it (0.001, not 0.0010000000474974513)."""
    return float(str(numpy.float32(v)))


def looks_like_onnx(buf: Buffer) -> bool:
    try:
        seen = set()
        for k, f in enumerate(iter_fields(buf, 0, buf.size, "probe")):
            if _MODEL_FIELDS.get(f.number, -1) != f.wire:
                return False
            seen.add(f.number)
            if k > 1000:
                break
        return 7 in seen
    except Exception:
        return False


class _Reader:
    def __init__(self, buf: Buffer, base_dir):
        self.buf = buf
        self.base_dir = base_dir
        self._external = {}

    def tensor(self, start, end, what):
        buf = self.buf
        f = fields_by_number(buf, start, end, what)
        name = as_string(buf, f[8][-1], what) if 8 in f else ""
        what = f"tensor {name!r}" if name else what
        dims = tuple(packed_varints(buf, f.get(1, []), what + " dims"))
        if any(d < 0 for d in dims):
            raise buf.error(f"{what}: negative dimension in {dims}")
        dt = as_int(buf, f[2][-1], what) if 2 in f else 0
        if 3 in f:
            raise buf.error(f"{what}: segmented tensors are not supported")
        if dt not in _ONNX_DTYPES:
            return name, None  # strings, complex, float8, int4...: not weights
        npdt = _ONNX_DTYPES[dt]
        store = "<u2" if npdt == "bf16" else npdt
        count = 1
        for d in dims:
            count *= d
        location = as_int(buf, f[14][-1], what) if 14 in f else 0
        if location == 1:
            arr = self._external_data(f.get(13, []), store, dims, what)
        elif 9 in f:
            raw = f[9][-1]
            if raw.wire != 2:
                raise buf.error(f"{what}: raw_data has wire type {raw.wire}")
            if raw.length != count * numpy.dtype(store).itemsize:
                raise buf.error(
                    f"{what}: raw_data has {raw.length} bytes, shape {dims} of {store} needs "
                    f"{count * numpy.dtype(store).itemsize}"
                )
            arr = buf.array(raw.value, store, dims, what)
        else:
            arr = self._typed(f, dt, store, what)
            if arr.size != count:
                raise buf.error(f"{what}: shape {dims} holds {count} values, the tensor has {arr.size}")
            arr = arr.reshape(dims)
        if npdt == "bf16":
            buf.charge(4 * count, what)
            arr = widen_bf16(arr)
        arr.flags.writeable = False
        return name, arr

    def _typed(self, f, dt, store, what):
        buf = self.buf
        if dt == 1:
            return repeated_numbers(buf, f.get(4, []), "<f4", what + " float_data")
        if dt == 11:
            return repeated_numbers(buf, f.get(10, []), "<f8", what + " double_data")
        if dt == 7:
            return numpy.array(packed_varints(buf, f.get(7, []), what), dtype="<i8")
        if dt in (12, 13):
            return numpy.array(
                packed_varints(buf, f.get(11, []), what, signed=False), dtype=numpy.uint64
            ).astype(store)
        vals = packed_varints(buf, f.get(5, []), what)
        if dt in (10, 16):  # float16/bfloat16 bit patterns in int32_data
            return numpy.array([v & 0xFFFF for v in vals], dtype=numpy.uint16).view(store)
        info = numpy.iinfo(store) if numpy.dtype(store).kind in "iu" else None
        if info is not None and any(v < info.min or v > info.max for v in vals):
            raise buf.error(f"{what}: int32_data value out of range for {store}")
        return numpy.array(vals, dtype=numpy.int64).astype(store)

    def _external_data(self, entries, store, dims, what):
        buf = self.buf
        kv = {}
        for e in entries:
            g = fields_by_number(buf, e.value, e.value + e.length, what + " external_data")
            k = as_string(buf, g[1][-1], what) if 1 in g else ""
            v = as_string(buf, g[2][-1], what) if 2 in g else ""
            kv[k] = v
        loc = kv.get("location")
        if not loc:
            raise buf.error(f"{what}: external data without a location")
        if self.base_dir is None:
            raise buf.error(f"{what}: external data {loc!r} but the model was not read from a file")
        if os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/"):
            raise buf.error(
                f"{what}: external data location {loc!r} must be a relative path inside the model's folder"
            )
        base = os.path.realpath(self.base_dir)
        full = os.path.realpath(os.path.join(base, loc))
        if os.path.commonpath([base, full]) != base:
            raise buf.error(f"{what}: external data location {loc!r} leaves the model's folder")
        try:
            offset = int(kv.get("offset", "0"))
            length = int(kv["length"]) if "length" in kv else None
        except ValueError:
            raise buf.error(f"{what}: external data offset/length are not integers") from None
        if full not in self._external:
            self._external[full] = open_buffer(full)  # refuses a FIFO, device or directory before opening it
        ext = self._external[full]
        itemsize = numpy.dtype(store).itemsize
        count = 1
        for d in dims:
            count *= d
        need = count * itemsize
        if length is not None and length != need:
            raise ext.error(f"{what}: external length {length} bytes, shape {dims} needs {need}")
        if offset < 0:
            raise ext.error(f"{what}: negative external offset {offset}")
        ext.check(offset, need, what)
        ext.charge(need, what)  # tensors may share external bytes; each view counts (a converter copies it)
        return ext.array(offset, store, dims, what)

    def value_info(self, start, end, what):
        buf = self.buf
        f = fields_by_number(buf, start, end, what, wanted={1, 2})
        name = as_string(buf, f[1][-1], what) if 1 in f else ""
        shape = None
        if 2 in f:
            t = fields_by_number(buf, f[2][-1].value, f[2][-1].value + f[2][-1].length, what, wanted={1})
            if 1 in t:
                tt = fields_by_number(buf, t[1][-1].value, t[1][-1].value + t[1][-1].length, what, wanted={2})
                if 2 in tt:
                    s = tt[2][-1]
                    shape = []
                    for d in fields_by_number(buf, s.value, s.value + s.length, what, wanted={1}).get(1, []):
                        dd = fields_by_number(buf, d.value, d.value + d.length, what, wanted={1, 2})
                        shape.append(
                            as_int(buf, dd[1][-1], what)
                            if 1 in dd
                            else (as_string(buf, dd[2][-1], what) if 2 in dd else None)
                        )
        return name, shape

    def attribute(self, start, end, what, depth):
        buf = self.buf
        f = fields_by_number(buf, start, end, what)
        name = as_string(buf, f[1][-1], what) if 1 in f else ""
        what = f"{what} attribute {name!r}"
        if 2 in f:
            return name, _f32(repeated_numbers(buf, f[2][-1:], "<f4", what)[0])
        if 3 in f:
            return name, as_int(buf, f[3][-1], what)
        if 4 in f:
            return name, as_string(buf, f[4][-1], what)
        if 5 in f:
            t = f[5][-1]
            return name, self.tensor(t.value, t.value + t.length, what)[1]
        if 6 in f:
            g = f[6][-1]
            return name, self.graph(g.value, g.value + g.length, what, depth + 1)
        if 7 in f:
            return name, [_f32(v) for v in repeated_numbers(buf, f[7], "<f4", what)]
        if 8 in f:
            return name, packed_varints(buf, f[8], what)
        if 9 in f:
            return name, [as_string(buf, s, what) for s in f[9]]
        if 11 in f:
            return name, [self.graph(g.value, g.value + g.length, what, depth + 1) for g in f[11]]
        return name, None

    def node(self, start, end, what, depth):
        buf = self.buf
        f = fields_by_number(buf, start, end, what)
        name = as_string(buf, f[3][-1], what) if 3 in f else ""
        op = as_string(buf, f[4][-1], what) if 4 in f else ""
        what = f"node {name or op!r}"
        attrs = {}
        for a in f.get(5, []):
            k, v = self.attribute(a.value, a.value + a.length, what, depth)
            attrs[k] = v
        return OnnxNode(
            op,
            name,
            [as_string(buf, s, what) for s in f.get(1, [])],
            [as_string(buf, s, what) for s in f.get(2, [])],
            attrs,
            as_string(buf, f[7][-1], what) if 7 in f else "",
        )

    def graph(self, start, end, what, depth=0):
        buf = self.buf
        if depth > 16:
            raise buf.error(f"{what}: subgraphs nested deeper than 16")
        f = fields_by_number(buf, start, end, what)
        name = as_string(buf, f[2][-1], what) if 2 in f else ""
        inits = {}
        for t in f.get(5, []):
            k, v = self.tensor(t.value, t.value + t.length, "initializer")
            if v is not None:
                if k in inits:
                    raise buf.error(f"duplicate initializer {k!r}")
                inits[k] = v
        nodes = [self.node(n.value, n.value + n.length, "node", depth) for n in f.get(1, [])]
        inputs = [self.value_info(v.value, v.value + v.length, "graph input") for v in f.get(11, [])]
        outputs = [self.value_info(v.value, v.value + v.length, "graph output") for v in f.get(12, [])]
        return OnnxGraph(name, nodes, inits, inputs, outputs)


def read_onnx(buf: Buffer) -> OnnxGraph:
    """Parse a ``ModelProto``; return its main graph."""
    return read_onnx_model(buf)[0]


def read_onnx_model(buf: Buffer):
    """Parse a ``ModelProto``.

    Returns
    -------
    graph : OnnxGraph
    opsets : dict
        ``{domain: version}`` of ``opset_import`` (``""`` is the default domain).
    external_bytes : int
        The total size of the external data files the initializers were read from.
    """
    f = fields_by_number(buf, 0, buf.size, "ModelProto", wanted={7, 8})
    if 7 not in f or f[7][-1].wire != 2:
        raise buf.error("not an ONNX model (no graph field)")
    opsets = {}
    for o in f.get(8, []):
        if o.wire != 2:
            raise buf.error(f"opset_import has wire type {o.wire}")
        g = fields_by_number(buf, o.value, o.value + o.length, "opset_import", wanted={1, 2})
        domain = as_string(buf, g[1][-1], "opset_import domain") if 1 in g else ""
        opsets[domain] = as_int(buf, g[2][-1], "opset_import version") if 2 in g else 0
    g = f[7][-1]
    base = os.path.dirname(os.path.abspath(buf.path)) if buf.path else None
    reader = _Reader(buf, base)
    graph = reader.graph(g.value, g.value + g.length, "graph")
    return graph, opsets, sum(e.size for e in reader._external.values())


def onnx_tensors(graph: OnnxGraph, buf: Buffer) -> dict:
    """Every initializer, ``Constant`` node value and subgraph initializer, by name.

    Subgraph tensors whose names clash with an outer one are qualified as
    ``<node name>/<attribute>/<tensor name>``.
    """
    out = {}

    def add(name, arr, qualifier):
        if name in out:
            name = f"{qualifier}/{name}"
            if name in out:
                raise buf.error(f"two tensors are both named {name!r}")
        out[name] = arr

    # an explicit stack of generators (depth first, as the file nests them), not a recursive closure: a
    # closure that refers to itself is a reference cycle, which would keep the memory-mapped file alive
    # after the caller drops the arrays (until the garbage collector runs)
    stack = [_graph_items(graph, "")]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item[0], OnnxGraph):
            stack.append(_graph_items(*item))
        else:
            add(*item)
    return out


def _graph_items(g, qual):
    """``(name, array, qualifier)`` of a graph's tensors; ``(subgraph, qualifier)`` where one is nested."""
    for k, v in g.initializers.items():
        yield k, v, qual
    for n in g.nodes:
        if n.op_type == "Constant" and isinstance(n.attrs.get("value"), numpy.ndarray) and n.outputs:
            yield n.outputs[0], n.attrs["value"], qual or n.name
        for an, av in n.attrs.items():
            for sub in av if isinstance(av, list) else [av]:
                if isinstance(sub, OnnxGraph):
                    yield sub, f"{n.name or n.op_type}/{an}"
