"""ONNX graphs as exporters write them -> canonical parameters.

The graph is read as a DAG and walked in topological order:

1. **Constants are folded.** Every node whose inputs are all known -- the
   initializers, ``Constant`` nodes, and the *shape* of the data (``Shape``,
   ``Size`` of any data tensor, whose shape follows from the graph input's) --
   is evaluated with NumPy (:mod:`weights_io.onnx_fold`): the
   ``Shape/Gather/Unsqueeze/Concat/Expand/ConstantOfShape`` subgraphs that
   torch's exporters write for an LSTM's initial state and for ``view``
   targets, ``Identity`` of a shared initializer, ``Cast``/``Transpose``/
   ``Reshape`` of a weight, ``Slice``, ``Range``, integer arithmetic...
2. **The data path is matched to engine layers.** What remains computes on
   the data; it must be one chain (each node reads the output of the layer
   before it). ``Conv``, ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``,
   ``LRN``, ``Relu``, ``Dropout``, ``Gemm``, ``MatMul`` (+ an ``Add`` of a
   constant: the bias), ``LSTM`` become layers; a final ``Softmax``/
   ``LogSoftmax`` becomes ``meta["output"]``; ``Reshape``, ``Flatten``,
   ``Transpose``, ``Squeeze``, ``Unsqueeze``, ``Identity``, ``Cast`` (to a
   float type) and no-op ``Expand`` only rearrange the data and are followed
   through a *layout*: which axes hold the frames (or time steps and the
   batch), which hold the features. A reshape that merges all the features
   (``Flatten``, ``view(N, -1)``) becomes a ``flatten`` layer; the layout
   transposes and unit axes around an LSTM (time-major ``(T, B, D)`` in,
   ``(T, 1, B, H)`` out) are checked and dropped; a ``Gemm``/``MatMul`` after
   the LSTM is applied at every step. Features flattened in another order
   than C, H, W (a transpose to channels-last before the flatten) are put
   back in order in the next fully connected or LSTM layer's input columns.
   Pooling with a 1x1 window and stride 1 is the identity and is dropped
   (``meta["onnx"]["skipped_nodes"]``).
3. Anything else on the data raises CheckpointError naming the node, its op
   type and why no engine layer fits (a branch or a join of the data path,
   channels-last features reaching a convolution or the output, a selection
   of some time steps, an op without an engine layer...).

The graph input is ``(N, C, H, W)`` (frames), ``(B, T, C, H, W)`` or
``(T, B, C, H, W)`` (clips), ``(T, B, D)``/``(B, T, D)`` (sequences) or
``(N, D)``; symbolic sample sizes are given distinct values for the walk. The
axis the LSTM runs over is the time axis (``meta["onnx"]["input"]``): to feed
an engine clip ``(T, C, H, W)`` to the ONNX model, put T there and 1 on the
other sample axes.

Transforms, per tensor (one copy each):

* Conv ``W (M, C/group, kH, kW)`` -> ``<name>.weight``: none; ``B`` -> bias: none.
* Gemm ``B``: with ``transB=1`` (PyTorch export) ``(out, in)`` -> none; with
  ``transB=0`` ``(in, out)`` -> **transpose**. ``C`` -> bias (reshaped to
  ``(out,)``). ``alpha`` and ``beta`` must be 1, ``transA`` 0.
* MatMul ``B (in, out)`` -> **transpose**; a following ``Add`` of a constant
  gives the bias (likewise an ``Add`` after a Gemm or Conv without bias).
* After a channels-last flatten, the fc weight's (or LSTM ``W_x``'s) input
  columns -> **reordered** to C, H, W (a reshape and an axis permutation).
* LSTM ``W [1, 4H, D]``, ``R [1, 4H, H]``, ``B [1, 8H]`` (gate blocks i, o, f, c)
  -> ``W_x = W[0][blocks]``, ``W_h = R[0][blocks]``,
  ``b = (B[0][:4H] + B[0][4H:])[blocks]`` with canonical blocks i, f, o, g =
  ONNX blocks [0, 2, 1, 3]. Peepholes ``P``, ``clip``, ``input_forget``,
  ``layout=1``, ``sequence_lens``, non-zero initial states and reverse/
  bidirectional directions are refused. ``activations`` ``[Sigmoid, Tanh, Tanh]``
  (default) gives ``cell_act="tanh"``, ``[Sigmoid, Relu, Relu]`` gives ``"relu"``.

Layer names: :class:`weights_io.naming.LayerNamer` (``names="auto"``: Caffe's
VGG convention; ``names="onnx"`` keeps the node names).
"""

from __future__ import annotations

import heapq
import os
from typing import NamedTuple

import numpy

from ._buffer import AMPLIFICATION
from ._common import as_float, as_int, as_str, finish, interpreting, lstm_params, param, show, source_info
from .errors import CheckpointError
from .naming import LayerNamer
from .onnx_fold import FOLDABLE, VIEWS, _Ctx, broadcast_shape, fold_node, onnx_dtype, reshape_target
from .onnx_reader import read_onnx_model
from .presets import preset
from .readers import guarded, open_checked
from .spec import Tracer, make_layer

__all__ = ["convert_onnx", "onnx_folded_constants"]

_LAYERS = (
    "Conv",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "LRN",
    "Dropout",
    "Gemm",
    "MatMul",
    "Add",
    "LSTM",
    "Softmax",
    "LogSoftmax",
)
_LAYOUT = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "Expand")
_SUPPORTED = _LAYERS + _LAYOUT + ("Shape", "Size", "Constant")
_WHY = {
    "Gather": "it selects part of the data (e.g. one time step of an LSTM's output); the engine's model "
    "keeps every frame and classifies every step (the last step's logits are the last row)",
    "Slice": "it selects part of the data (e.g. the last time step); the engine's model keeps every frame "
    "and classifies every step (the last step's logits are the last row)",
    "Concat": "it joins data paths (a concatenation); only linear chains of layers are supported",
    "Sum": "it joins data paths; only linear chains of layers are supported",
    "Sub": "it shifts the data (preprocessing inside the model?); give it as preprocessing=, not as a node",
    "Mul": "it scales the data (preprocessing inside the model?); give it as preprocessing=, not as a node",
    "Div": "it scales the data (preprocessing inside the model?); give it as preprocessing=, not as a node",
    "BatchNormalization": "the engine has no batch-norm layer (fold it into the convolution before "
    "exporting)",
}
_GENERIC_NAMES = {"", "main_graph", "torch_jit", "torch-jit-export", "torch_jit_export"}  # torch's exporters
_INT32 = (1 << 31) - 1
_INT64 = (1 << 63) - 1


def _attr_int(a, key, default, what, P, lo=-_INT64 - 1, hi=_INT64) -> int:
    """An integer attribute (ONNX ``i``) in ``[lo, hi]``."""
    return as_int(a.get(key, default), P, what, f"attribute {key!r}", lo, hi)


def _attr_float(a, key, default, what, P) -> float:
    """A float attribute (ONNX ``f``; an integer is accepted)."""
    return as_float(a.get(key, default), P, what, f"attribute {key!r}")


def _attr_str(a, key, default, what, P) -> str:
    v = a.get(key, default)
    if isinstance(v, bytes):  # pragma: no cover - the reader decodes strings
        v = v.decode("utf-8", "replace")
    return as_str(v, P, what, f"attribute {key!r}")


def _attr_ints(a, key, what, P, lo, hi=_INT32):
    """An integer-list attribute (ONNX ``ints``), or None when absent."""
    v = a.get(key)
    if v is None:
        return None
    if not isinstance(v, list):
        raise CheckpointError(P, f"{what}: attribute {key!r} must be a list of integers, found {show(v)}")
    return [as_int(x, P, what, f"attribute {key!r}", lo, hi) for x in v]


def _attr_strs(a, key, what, P):
    v = a.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise CheckpointError(P, f"{what}: attribute {key!r} must be a list of strings, found {show(v)}")
    return v


def _pads(a, what, P):
    pads = _attr_ints(a, "pads", what, P, 0)
    if pads is None:
        return [0, 0]
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise CheckpointError(P, f"{what}: asymmetric padding {pads} is not supported (attribute 'pads')")
    return [pads[0], pads[1]]


def _pair(a, key, default, what, P):
    """A 2-d window attribute (``kernel_shape``, ``strides``, ``dilations``): two positive ints."""
    v = _attr_ints(a, key, what, P, 1)
    if v is None:
        if default is None:
            raise CheckpointError(P, f"{what}: the required attribute {key!r} is missing")
        return [default, default] if not isinstance(default, list) else default
    if len(v) != 2:
        raise CheckpointError(P, f"{what}: attribute {key!r} = {v}: only 2-d operations are supported")
    return v


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class _Axis(NamedTuple):
    """One axis of a data tensor: ``S`` samples (frames; time steps, batch), ``U`` unit, ``F`` features.

    ``labels`` (S): the graph input's sample axes merged into this one, in
    order (only those larger than 1); ``dims`` (F): the engine feature
    dimensions it holds, in the tensor's (row-major) order.
    """

    kind: str
    labels: tuple = ()
    dims: tuple = ()


_UNIT = _Axis("U")


class _Data(NamedTuple):
    """A tensor computed from the graph input: layout (None when not followed), shape, chain position."""

    axes: tuple
    shape: tuple
    serial: int
    state: bool = False  # an LSTM's final state (Y_h, Y_c)

    @property
    def size(self):
        return _prod(self.shape)


class _Converter:
    def __init__(self, buf, graph, opsets, *, names, rename, dtype, cell_act):
        self.buf, self.graph, self.P = buf, graph, buf.path
        self.opset = opsets.get("", opsets.get("ai.onnx", 0)) or 0
        self.rename, self.dtype, self.cell_act = dict(rename or {}), dtype, cell_act
        self.names = names
        self.values = dict(graph.initializers)
        self.origin = {k: k for k in graph.initializers}  # a value -> the initializer it is a view of
        self.folded = {}
        self.serial = 0
        self.head = None
        self.final = None
        self.sizes = {}
        self.time = None  # the labels of the LSTM's time axis
        self.params, self.name_map, self.transforms = {}, {}, {}
        self.used = set()
        self.skipped = []
        self.fresh = None  # (layer name, kind, serial): a conv/fc without bias that an Add may complete
        self.cols = None  # a flatten's feature order to undo in the next fc/LSTM: (sizes, axes, node)
        self.namer = None
        self.eng = None
        self.tracer = None
        self.input_info = None

    # ------------------------------------------------------------------ errors and helpers
    def err(self, detail):
        return CheckpointError(self.P, detail)

    def _describe(self, d):
        roles = []
        for ax in d.axes or ():
            if ax.kind == "U":
                roles.append("1")
            elif ax.kind == "F":
                roles.append("features")
            else:
                roles.append(
                    "time" if self.time is not None and ax.labels == self.time and ax.labels else "frames"
                )
        return f"shape {tuple(d.shape)} ({', '.join(roles)})" if d.axes else f"shape {tuple(d.shape)}"

    def _name(self, kind, n, idx):
        nm = self.namer(kind, n.name, idx, n.op_type)
        return self.rename.get(nm, nm)

    def _add(self, spec):
        return self.tracer.add(spec)

    def _atoms(self, d):
        """Per axis, the non-unit dimensions it holds: ``("s", label, size)`` or ``("f", index, size)``."""
        out = []
        for ax in d.axes:
            if ax.kind == "S":
                out.append([("s", lb, self.sizes[lb]) for lb in ax.labels])
            elif ax.kind == "F":
                out.append([("f", k, self.eng[k]) for k in ax.dims if self.eng[k] != 1])
            else:
                out.append([])
        return out

    def _nonunit(self):
        return [k for k, s in enumerate(self.eng) if s != 1]

    def _new_data(self, axes, shape, name):
        self.serial += 1
        self.head = name
        return _Data(tuple(axes), tuple(shape), self.serial)

    # ------------------------------------------------------------------ the graph input
    def setup_input(self, input_shape, input_size, assume=(2, 3)):
        P, graph = self.P, self.graph
        data_inputs = [(nm, shp) for nm, shp in graph.inputs if nm not in graph.initializers]
        if len(data_inputs) != 1:
            found = [d[0] for d in data_inputs]
            raise self.err(f"expected one graph input besides the initializers, found {found}")
        name, dims = data_inputs[0]
        dims = list(dims) if dims is not None else None
        if input_shape is not None:
            feat = [as_int(v, P, "input_shape", "a size", 1) for v in input_shape]
            rank = len(dims) if dims else len(feat) + 1
            ns = rank - len(feat)
        else:
            if not dims:
                raise self.err(f"graph input {name!r} has no shape; pass input_shape=")
            rank = len(dims)
            ns = {2: 1, 3: 2, 4: 1, 5: 2}.get(rank, 0)
            feat = dims[ns:] if ns else None
            if input_size is not None and feat is not None and len(feat) == 3:
                s = as_int(input_size, P, "input_size", "the size", 1)
                if not (isinstance(feat[0], int) and feat[0] > 0):
                    raise self.err(f"graph input {name!r} has shape {dims}; pass input_shape=(C, H, W)")
                feat = [feat[0], s, s]
            if not feat or not all(isinstance(v, int) and v > 0 for v in feat):
                raise self.err(f"graph input {name!r} has shape {dims}; pass input_shape=")
        if ns not in (1, 2) or len(feat) not in (1, 3):
            raise self.err(
                f"graph input {name!r} of shape {dims} with features {feat}: expected (N, C, H, "
                "W), (B, T, C, H, W), (T, B, D), (B, T, D) or (N, D)"
            )
        free = iter(assume)
        self.assumed = {}
        axes, shape = [], []
        for i in range(ns):
            v = dims[i] if dims and i < len(dims) else None
            if not (isinstance(v, int) and v > 0):
                v = next(free)  # a symbolic size: a value > 1, distinct from the other sample axis
                self.assumed[i] = v
            if v > 1:
                lb = f"a{i}"
                self.sizes[lb] = v
                axes.append(_Axis("S", (lb,)))
            else:
                axes.append(_UNIT)
            shape.append(v)
        for k, v in enumerate(feat):
            axes.append(_Axis("F", (), (k,)))
            shape.append(v)
        self.eng = tuple(feat)
        self.tracer = Tracer(self.eng, P)
        self.input_info = {
            "name": name,
            "shape": dims,
            "sample_axes": list(range(ns)),
            "assumed_sizes": {str(k): v for k, v in self.assumed.items()},
        }
        self.values[name] = _Data(tuple(axes), tuple(shape), 0)
        self.head = name
        return tuple(feat)

    # ------------------------------------------------------------------ order
    def order(self):
        """Node indices in a topological order (the file's when it already is one)."""
        nodes = self.graph.nodes
        produced = {}
        for i, n in enumerate(nodes):
            for o in n.outputs:
                if not o:
                    continue
                if o in produced or o in self.values:
                    raise self.err(
                        f"node {n.name or i!r} ({n.op_type}): its output {o!r} is also produced "
                        "elsewhere (an ONNX value is assigned once)"
                    )
                produced[o] = i
        deps = [{produced[x] for x in n.inputs if x in produced} for n in nodes]
        if all(j < i for i, d in enumerate(deps) for j in d):
            return list(range(len(nodes)))
        users = [[] for _ in nodes]
        count = [0] * len(nodes)
        for i, d in enumerate(deps):
            for j in d:
                if j != i:
                    users[j].append(i)
                    count[i] += 1
                else:
                    raise self.err(f"node {nodes[i].name or i!r} ({nodes[i].op_type}) reads its own output")
        ready = [i for i, c in enumerate(count) if c == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            i = heapq.heappop(ready)
            out.append(i)
            for u in users[i]:
                count[u] -= 1
                if count[u] == 0:
                    heapq.heappush(ready, u)
        if len(out) != len(nodes):
            raise self.err("the graph has a cycle")
        return out

    # ------------------------------------------------------------------ one node
    def run(self):
        nodes = self.graph.nodes
        self.namer = LayerNamer(self.names, any(n.op_type == "Conv" for n in nodes))
        for idx in self.order():
            n = nodes[idx]
            what = f"node {n.name or idx!r} ({n.op_type})"
            with interpreting(self.P, what):
                self.node(idx, n, what)

    def node(self, idx, n, what):
        op = n.op_type
        if not n.outputs or not n.outputs[0]:
            if op == "LSTM" and any(n.outputs):
                raise self.err(
                    f"{what}: only the LSTM's final state (Y_h/Y_c) is used; the engine's model "
                    "classifies the LSTM's output at every step (Y) -- apply the head to every "
                    "step; the last step's logits are then the last row"
                )
            raise self.err(f"{what}: the node has no output (its 'output' field is empty)")
        if n.domain not in ("", "ai.onnx"):
            raise self.err(
                f"{what}: op {op!r} of the domain {n.domain!r} is not supported (standard ONNX "
                "operators only)"
            )
        if op == "Constant":
            self.values[n.outputs[0]] = self.constant(n, what)
            return
        ins = []
        for x in n.inputs:
            if not x:
                ins.append(None)
                continue
            if x not in self.values:
                raise self.err(
                    f"{what}: input {x!r} is neither an initializer of a supported type, the "
                    "graph input nor the output of a node"
                )
            ins.append(self.values[x])
        datas = [k for k, v in enumerate(ins) if isinstance(v, _Data)]
        if op not in ("Shape", "Size") and any(ins[k].state for k in datas):
            k = next(k for k in datas if ins[k].state)
            raise self.err(
                f"{what}: reads {n.inputs[k]!r}, an LSTM's final state (Y_h/Y_c); the engine's "
                "model classifies the LSTM's output at every step (Y) -- apply the head to every "
                "step; the last step's logits are then the last row"
            )
        if not datas:
            if op not in FOLDABLE:
                raise self.err(
                    f"{what}: unsupported op type {op!r} (on constants; supported: "
                    f"{', '.join(sorted(FOLDABLE))})"
                )
            self.fold(n, ins, what)
        elif op in ("Shape", "Size"):
            if datas != [0]:
                raise self.err(f"{what}: input 0 must be the tensor whose shape is taken")
            self.fold(n, ins, what)
        elif op in _LAYOUT:
            self.layout(n, ins, datas, what)
        elif op in _LAYERS:
            self.layer(idx, n, ins, datas, what)
        else:
            why = _WHY.get(op, "no engine layer computes it")
            raise self.err(
                f"{what}: unsupported op type {op!r} on the data: {why} (supported: "
                f"{', '.join(_SUPPORTED)}, and constant subgraphs)"
            )

    def constant(self, n, what):
        a = n.attrs
        if isinstance(a.get("value"), numpy.ndarray):
            return a["value"]
        for key, dt in (("value_float", numpy.float32), ("value_int", numpy.int64)):
            if key in a:
                v = (
                    as_float(a[key], self.P, what, f"attribute {key!r}")
                    if dt is numpy.float32
                    else _attr_int(a, key, None, what, self.P)
                )
                return numpy.array(v, dt)
        if "value_ints" in a:
            return numpy.array(_attr_ints(a, "value_ints", what, self.P, -_INT64 - 1, _INT64), numpy.int64)
        if "value_floats" in a:
            v = a["value_floats"]
            if not isinstance(v, list):
                raise self.err(f"{what}: attribute 'value_floats' must be a list of numbers, found {show(v)}")
            vals = [as_float(x, self.P, what, "attribute 'value_floats'") for x in v]
            return numpy.array(vals, numpy.float32)
        raise self.err(f"{what}: a Constant without a numeric value (attributes {sorted(a)})")

    def fold(self, n, ins, what):
        out = fold_node(n, ins, what, self.P, self.buf.charge)
        name = n.outputs[0]
        self.values[name] = out
        self.folded[name] = out
        if n.op_type in VIEWS and n.inputs[0] in self.origin:
            self.origin[name] = self.origin[n.inputs[0]]

    # ------------------------------------------------------------------ constants read by layers
    def const(self, n, i, role, what, required=True):
        if i >= len(n.inputs) or not n.inputs[i]:
            if required:
                raise self.err(f"node {n.name or n.op_type!r}: input {i} ({role}) is missing")
            return None
        nm = n.inputs[i]
        v = self.values[nm]
        if isinstance(v, _Data):
            raise self.err(f"{what}: {role} {nm!r} is computed from the data, not a constant")
        src = self.origin.get(nm, nm)
        if src in self.used:  # an initializer shared by several nodes: each of them copies it
            self.buf.charge(v.nbytes, f"initializer {src!r} (used again, as {role})")
        self.used.add(src)
        return v

    def ints_input(self, n, i, role, what):
        v = self.values.get(n.inputs[i]) if i < len(n.inputs) and n.inputs[i] else None
        if v is None:
            return None
        if isinstance(v, _Data):
            raise self.err(f"{what}: its {role} input {n.inputs[i]!r} is computed from the data values")
        if v.dtype.kind not in "iu" or v.ndim != 1:
            raise self.err(
                f"{what}: the {role} input {n.inputs[i]!r} must be a 1-d integer tensor, found "
                f"shape {v.shape} of {v.dtype}"
            )
        return [int(x) for x in v]

    # ------------------------------------------------------------------ layout ops on the data
    def layout(self, n, ins, datas, what):
        if datas != [0]:
            raise self.err(f"{what}: only its first input may come from the data")
        d, op, a = ins[0], n.op_type, n.attrs
        ctx = _Ctx(n, what, self.P, self.buf.charge)
        tracked = d.axes is not None and d.serial == self.serial and not d.state
        out = d
        if op == "Cast":
            if onnx_dtype(a.get("to"), self.P, what).kind != "f":
                raise self.err(f"{what}: casts the data to a non-float type")
        elif op == "Expand":
            target = self.ints_input(n, 1, "shape", what) or []
            if broadcast_shape([d.shape, tuple(target)], ctx) != tuple(d.shape):
                raise self.err(f"{what}: Expand repeats the data to {target}; no engine layer does that")
        elif op in ("Reshape", "Flatten"):
            if op == "Reshape":
                target = self.ints_input(n, 1, "shape", what)
                if target is None:
                    raise self.err(f"{what}: the shape input is missing")
                target = reshape_target(d.shape, target, _attr_int(a, "allowzero", 0, what, self.P), ctx)
            else:
                axis = ctx.axis(_attr_int(a, "axis", 1, what, self.P), len(d.shape) + 1)
                target = [_prod(d.shape[:axis]), _prod(d.shape[axis:])]
            if tracked:
                out = self.reshape(d, target, what, n)
            else:
                out = d._replace(axes=None, shape=tuple(target))
        elif op == "Transpose":
            perm = _attr_ints(a, "perm", what, self.P, 0)
            perm = list(range(len(d.shape)))[::-1] if perm is None else perm
            if sorted(perm) != list(range(len(d.shape))):
                raise self.err(f"{what}: perm {perm} is not a permutation of {len(d.shape)} axes")
            shape = tuple(d.shape[p] for p in perm)
            out = d._replace(axes=None, shape=shape)
            if tracked:  # feature axes may be reordered (channels-last): a flatten into fc absorbs that
                out = d._replace(axes=tuple(d.axes[p] for p in perm), shape=shape)
        elif op in ("Squeeze", "Unsqueeze"):
            axes_v = _attr_ints(a, "axes", what, self.P, -_INT32 - 1)
            if axes_v is None and len(n.inputs) > 1 and n.inputs[1]:
                axes_v = self.ints_input(n, 1, "axes", what)
            rank = len(d.shape)
            if op == "Squeeze":
                drop = (
                    {k for k, s in enumerate(d.shape) if s == 1}
                    if axes_v is None
                    else {ctx.axis(x, rank) for x in axes_v}
                )
                if any(d.shape[k] != 1 for k in drop):
                    raise self.err(
                        f"{what}: squeezes axes {sorted(drop)} of {self._describe(d)}, which are "
                        "not all of size 1"
                    )
                keep = [k for k in range(rank) if k not in drop]
                out = d._replace(
                    shape=tuple(d.shape[k] for k in keep),
                    axes=tuple(d.axes[k] for k in keep) if tracked else None,
                )
            else:
                if not axes_v:
                    raise self.err(f"{what}: Unsqueeze needs axes")
                ins_at = sorted({ctx.axis(x, rank + len(axes_v)) for x in axes_v})
                if len(ins_at) != len(axes_v):
                    raise self.err(f"{what}: repeated axes {axes_v}")
                shape, axes = list(d.shape), list(d.axes) if tracked else None
                for k in ins_at:
                    shape.insert(k, 1)
                    if axes is not None:
                        axes.insert(k, _UNIT)
                out = d._replace(shape=tuple(shape), axes=tuple(axes) if axes is not None else None)
        if out.serial == self.serial and not out.state:
            self.head = n.outputs[0]
        self.values[n.outputs[0]] = out

    def reshape(self, d, target, what, n):
        """The layout of ``d`` reshaped to ``target``; a flatten layer when all the features are merged."""
        flat = [a for at in self._atoms(d) for a in at]
        axes, i, merged = [], 0, False
        for t in target:
            if t == 1:
                axes.append(_UNIT)
                continue
            if t == 0:
                raise self.err(f"{what}: reshapes {self._describe(d)} to {tuple(target)}, an empty tensor")
            group, p = [], 1
            while p < t and i < len(flat):
                group.append(flat[i])
                p *= flat[i][2]
                i += 1
            if p != t:
                raise self.err(
                    f"{what}: reshapes {self._describe(d)} to {tuple(target)}, which splits an "
                    "axis; only merging axes (a flatten) has an engine layer"
                )
            kinds = {g[0] for g in group}
            if kinds == {"s"}:
                axes.append(_Axis("S", tuple(g[1] for g in group)))
            elif kinds == {"f"}:
                idx = tuple(g[1] for g in group)
                axes.append(_Axis("F", (), idx))
                merged = merged or (len(idx) > 1 and sorted(idx) == self._nonunit())
            else:
                raise self.err(
                    f"{what}: reshapes {self._describe(d)} to {tuple(target)}, which merges "
                    "frames or time steps with features; no engine layer does that"
                )
        out = _Data(tuple(axes), tuple(target), d.serial)
        if merged and len(self.eng) > 1:
            out = self.flatten(out, what, n.outputs[0], n.name)
        return out

    def flatten(self, d, what, out_name, node_name=None):
        """Emit a flatten layer: the features become one axis.

        The engine flattens C, H, W (row-major, as ONNX's reshape of an
        ``(N, C, H, W)`` tensor). When the tensor holds the features in
        another order (a transpose to channels-last before the flatten), the
        order is kept in :attr:`cols` and the next fully connected or LSTM
        layer's weight columns are permuted to the engine's order.
        """
        atoms = self._atoms(d)
        order = [k for at in atoms for kind, k, _ in at if kind == "f"]
        nu = self._nonunit()
        if order != nu:
            self.cols = ([self.eng[k] for k in order], [order.index(k) for k in nu], what)
        nm = self.namer("flatten", node_name, len(self.tracer.layers), "flatten")
        self._add(make_layer(self.rename.get(nm, nm), "flatten"))
        self.eng = (_prod(self.eng),)
        axes = [
            ax if ax.kind != "F" else (_Axis("F", (), (0,)) if at else _UNIT)
            for ax, at in zip(d.axes, atoms, strict=True)
        ]
        return self._new_data(axes, d.shape, out_name)

    def permuted(self, W, rows_out):
        """``W`` with its input columns in the engine's order (one copy), when a flatten left them permuted.

        ``W`` is ``(out, in)`` (``rows_out``) or ``(in, out)``; returns
        ``(array, transform)`` with the array ``(out, in)``.
        """
        sizes, axes, _ = self.cols
        self.cols = None
        n_out = W.shape[0] if rows_out else W.shape[1]
        if rows_out:
            view = dict(shape=(n_out, *sizes), transpose=(0, *[1 + a for a in axes]))
        else:
            view = dict(shape=(*sizes, n_out), transpose=(len(sizes), *axes))
        out = param(W, dtype=self.dtype, **view).reshape(n_out, _prod(sizes))
        how = (
            f"columns reordered from the graph's flattened feature order (sizes {sizes}) to C, H, W (axes "
            f"{axes})"
        )
        return out, how

    def flat_last(self, d, what, out_name):
        """``d`` with every feature in its last axis (a flatten layer first when they are still C, H, W)."""
        atoms = self._atoms(d)
        feats_last = [k for kind, k, _ in atoms[-1] if kind == "f"] if atoms else []
        others = any(kind == "f" for at in atoms[:-1] for kind, _, _ in at)
        samples_last = atoms and any(kind == "s" for kind, _, _ in atoms[-1])
        if not atoms or others or sorted(feats_last) != self._nonunit() or samples_last:
            raise self.err(
                f"{what}: needs every feature in the last axis of its input, found {self._describe(d)}"
            )
        if len(self.eng) > 1:
            d = self.flatten(d, what, out_name)
        axes = tuple(_UNIT if ax.kind == "F" else ax for ax in d.axes[:-1]) + (_Axis("F", (), (0,)),)
        return d._replace(axes=axes)

    def frame(self, d, what):
        """Check that ``d`` is ``(N, C, H, W)``: frames on axis 0, the features in engine order."""
        ok = (
            len(self.eng) == 3
            and len(d.axes) == 4
            and tuple(d.shape[1:]) == self.eng
            and d.axes[0].kind != "F"
        )
        if ok:
            atoms = self._atoms(d)
            ok = not any(kind == "f" for kind, _, _ in atoms[0]) and all(
                [k for kind, k, _ in atoms[j + 1] if kind == "f"] == ([j] if self.eng[j] != 1 else [])
                for j in range(3)
            )
        if not ok:
            raise self.err(
                f"{what}: needs an (N, C, H, W) input with the frames on axis 0, found {self._describe(d)}"
            )

    def take(self, d, name, what):
        if self.final is not None:
            raise self.err(f"{what}: nodes after the final Softmax are not supported")
        if d.state:
            raise self.err(
                f"{what}: reads {name!r}, an LSTM's final state (Y_h/Y_c); the engine's model "
                "classifies the LSTM's output at every step (Y) -- apply the head to every step; "
                "the last step's logits are then the last row"
            )
        if d.serial != self.serial or d.axes is None:
            raise self.err(
                f"{what}: reads {name!r} but the layer chain continued at {self.head!r}; only "
                "linear chains are supported (the data path branches here)"
            )

    # ------------------------------------------------------------------ layers
    def layer(self, idx, n, ins, datas, what):
        op, a, P = n.op_type, n.attrs, self.P
        if op == "Add":
            return self.add(n, ins, datas, what)
        if len(datas) > 1:
            raise self.err(
                f"{what}: joins two data paths ({[n.inputs[k] for k in datas]}); only linear "
                "chains are supported"
            )
        if datas != [0]:
            raise self.err(
                f"{what}: the data is its input {datas[0]}, not its input 0; no engine layer computes that"
            )
        d = ins[0]
        self.take(d, n.inputs[0], what)
        out_name = n.outputs[0]
        self.fresh = None
        if op == "Conv":
            self.frame(d, what)
            W = self.const(n, 1, "weight", what)
            B = self.const(n, 2, "bias", what, required=False)
            if _attr_str(a, "auto_pad", "NOTSET", what, P) not in ("NOTSET", "VALID"):
                raise self.err(f"{what}: auto_pad {a['auto_pad']!r} is not supported")
            if W.ndim != 4:
                raise self.err(f"{what}: weight of shape {W.shape}; only 2-d convolutions are supported")
            name = self._name("conv", n, idx)
            kernel = _pair(a, "kernel_shape", [int(s) for s in W.shape[2:]], what, P)
            shapes, expect = self._add(
                make_layer(
                    name,
                    "conv",
                    out_channels=int(W.shape[0]),
                    kernel=kernel,
                    stride=_pair(a, "strides", 1, what, P),
                    padding=_pads(a, what, P),
                    dilation=_pair(a, "dilations", 1, what, P),
                    groups=_attr_int(a, "group", 1, what, P, 1, _INT32),
                    bias=B is not None,
                )
            )
            b_src = n.inputs[2] if B is not None else None
            for field, arr, src in (("weight", W, n.inputs[1]), ("bias", B, b_src)):
                if arr is None:
                    continue
                k = f"{name}.{field}"
                if tuple(arr.shape) != expect[k]:
                    raise self.err(
                        f"initializer {src!r} (for {k}): expected shape {expect[k]}, found {tuple(arr.shape)}"
                    )
                self.params[k] = param(arr, dtype=self.dtype)
                self.name_map[k], self.transforms[k] = src, "none"
            self.eng = shapes[-1]
            out = self._frame_out(d, out_name)
            if B is None:
                self.fresh = (name, "conv", out.serial)
        elif op in ("MaxPool", "AveragePool", "GlobalAveragePool"):
            self.frame(d, what)
            kind = "maxpool" if op == "MaxPool" else "avgpool"
            if op == "GlobalAveragePool":
                k, s, pad, ceil, cip = [self.eng[1], self.eng[2]], [1, 1], [0, 0], False, True
            else:
                if _attr_str(a, "auto_pad", "NOTSET", what, P) not in ("NOTSET", "VALID"):
                    raise self.err(f"{what}: auto_pad {a['auto_pad']!r} is not supported")
                if any(v != 1 for v in _attr_ints(a, "dilations", what, P, 1) or [1, 1]):
                    raise self.err(f"{what}: dilated pooling is not supported")
                k = _pair(a, "kernel_shape", None, what, P)
                s = _pair(a, "strides", 1, what, P)
                pad = _pads(a, what, P)
                ceil = bool(_attr_int(a, "ceil_mode", 0, what, P, 0, 1))
                cip = bool(_attr_int(a, "count_include_pad", 0, what, P, 0, 1))
            if k == [1, 1] and s == [1, 1] and pad == [0, 0]:  # the identity (adaptive pooling to its size)
                self.skipped.append(n.name or f"{op}_{idx}")
                self.head = out_name
                self.values[out_name] = d
                return
            extra = {"count_include_pad": cip} if kind == "avgpool" else {}
            shapes, _ = self._add(
                make_layer(
                    self._name(kind, n, idx), kind, kernel=k, stride=s, padding=pad, ceil_mode=ceil, **extra
                )
            )
            self.eng = shapes[-1]
            out = self._frame_out(d, out_name)
        elif op == "Relu":
            self._add(make_layer(self._name("relu", n, idx), "relu"))
            out = self._new_data(d.axes, d.shape, out_name)
        elif op == "LRN":
            self.frame(d, what)
            if "size" not in a:
                raise self.err(f"{what}: the required attribute 'size' is missing")
            self._add(
                make_layer(
                    self._name("lrn", n, idx),
                    "lrn",
                    size=_attr_int(a, "size", None, what, P, 1, _INT32),
                    alpha=_attr_float(a, "alpha", 1e-4, what, P),
                    beta=_attr_float(a, "beta", 0.75, what, P),
                    k=_attr_float(a, "bias", 1.0, what, P),
                )
            )
            out = self._new_data(d.axes, d.shape, out_name)
        elif op == "Dropout":
            ratio = _attr_float(a, "ratio", 0.5, what, P)
            if len(n.inputs) > 1 and n.inputs[1]:
                r = self.const(n, 1, "ratio", what)
                if r.size != 1 or r.dtype.kind not in "fiu":
                    raise self.err(
                        f"{what}: the ratio input {n.inputs[1]!r} must hold one number, found "
                        "shape "
                        f"{r.shape} of {r.dtype}"
                    )
                ratio = as_float(float(r.reshape(-1)[0]), P, what, "ratio")
            if len(n.inputs) > 2 and n.inputs[2]:
                tm = self.const(n, 2, "training_mode", what)
                if tm.size != 1 or bool(tm.reshape(-1)[0]):
                    raise self.err(f"{what}: dropout in training mode is not supported")
            self._add(make_layer(self._name("dropout", n, idx), "dropout", p=ratio))
            out = self._new_data(d.axes, d.shape, out_name)
        elif op in ("Gemm", "MatMul"):
            out = self.fc(idx, n, d, what)
        elif op == "LSTM":
            out = self.lstm(idx, n, d, what)
        else:  # Softmax, LogSoftmax
            rank = len(d.shape)
            default = -1 if self.opset >= 13 or not self.opset else 1
            raw = _attr_int(a, "axis", default, what, P, -_INT32, _INT32)
            if not -rank <= raw < rank or (raw + rank if raw < 0 else raw) != rank - 1:
                raise self.err(
                    f"{what}: axis {raw} of {self._describe(d)}: only a softmax over the last "
                    "axis (the classes) is supported"
                )
            if len(self.eng) != 1 or self.cols is not None:
                raise self.err(
                    f"{what}: a softmax over {self._describe(d)}; only a softmax over the "
                    "classes of a fully connected layer is supported"
                )
            self.flat_last(d, what, out_name)
            self.final = {"type": op.lower(), "axis": raw}
            out = d
            self.head = out_name
        self.values[out_name] = out

    def _frame_out(self, d, out_name):
        axes = (d.axes[0], _Axis("F", (), (0,)), _Axis("F", (), (1,)), _Axis("F", (), (2,)))
        return self._new_data(axes, (d.shape[0],) + tuple(self.eng), out_name)

    def fc(self, idx, n, d, what):
        op, a, P = n.op_type, n.attrs, self.P
        Bm = self.const(n, 1, "weight", what)
        if Bm.ndim != 2:
            raise self.err(f"{what}: weight of shape {Bm.shape} is not 2-d")
        if op == "Gemm":
            if (
                _attr_int(a, "transA", 0, what, P)
                or _attr_float(a, "alpha", 1.0, what, P) != 1.0
                or _attr_float(a, "beta", 1.0, what, P) != 1.0
            ):
                raise self.err(f"{what}: transA, alpha != 1 and beta != 1 are not supported")
            transposed = not _attr_int(a, "transB", 0, what, P)
            C = self.const(n, 2, "bias", what, required=False)
            bias_src = n.inputs[2] if C is not None else None
        else:
            transposed = True
            C, bias_src = None, None
        d = self.flat_last(d, what, n.outputs[0])
        if op == "Gemm" and len(d.shape) != 2:
            raise self.err(f"{what}: Gemm needs a 2-d input, found {self._describe(d)}")
        out_f = int(Bm.shape[0] if not transposed else Bm.shape[1])
        name = self._name("fc", n, idx)
        _, expect = self._add(make_layer(name, "fc", out_features=out_f, bias=C is not None))
        wk = f"{name}.weight"
        want = expect[wk][::-1] if transposed else expect[wk]
        if tuple(Bm.shape) != tuple(want):
            raise self.err(
                f"initializer {n.inputs[1]!r} (for {wk}): expected shape {tuple(want)}, found "
                f"{tuple(Bm.shape)}"
            )
        self.name_map[wk] = n.inputs[1]
        if self.cols is not None:
            self.params[wk], how = self.permuted(Bm, rows_out=not transposed)
            self.transforms[wk] = ("transpose (in, out) -> (out, in), " if transposed else "") + how
        else:
            self.params[wk] = param(Bm, dtype=self.dtype, transpose=(1, 0) if transposed else None)
            self.transforms[wk] = "transpose (in, out) -> (out, in)" if transposed else "none (transB=1)"
        if C is not None:
            bk = f"{name}.bias"
            if C.size != out_f:
                raise self.err(
                    f"initializer {bias_src!r} (for {bk}): expected {out_f} values, found {C.size}"
                )
            self.params[bk] = param(C, dtype=self.dtype, shape=(out_f,))
            self.name_map[bk], self.transforms[bk] = bias_src, "none"
        self.eng = (out_f,)
        out = self._new_data(d.axes, tuple(d.shape[:-1]) + (out_f,), n.outputs[0])
        if C is None:
            self.fresh = (name, "fc", out.serial)
        return out

    def add(self, n, ins, datas, what):
        if len(datas) != 1:
            raise self.err(
                f"{what}: adds two data tensors (a residual connection); only linear chains are supported"
            )
        k = datas[0]
        d, c = ins[k], ins[1 - k] if len(ins) == 2 else None
        self.take(d, n.inputs[k], what)
        fresh, self.fresh = self.fresh, None
        if c is None or fresh is None or fresh[2] != d.serial:
            raise self.err(
                f"{what}: an Add that is not the bias of a MatMul is not supported (it adds to "
                f"{self._describe(d)})"
            )
        name, kind, _ = fresh
        layer = self.tracer.layers[-1]
        width = layer["out_features"] if kind == "fc" else layer["out_channels"]
        shape = tuple(int(s) for s in c.shape)
        if kind == "conv":
            self.frame(d, what)
        ok = c.size == width and (
            kind == "fc"
            and shape[-1:] == (width,)
            and len(shape) <= len(d.shape)
            and d.axes[-1].kind == "F"
            or kind == "conv"
            and shape in ((width, 1, 1), (1, width, 1, 1))
        )
        if not ok:
            raise self.err(
                f"{what}: adds a constant of shape {shape} to {self._describe(d)}; only a bias of "
                f"{width} values (one per output) is supported"
            )
        bk = f"{name}.bias"
        src = n.inputs[1 - k]
        self.const(n, 1 - k, "bias", what)
        layer["bias"] = True
        self.tracer.params[bk] = (width,)
        self.params[bk] = param(c, dtype=self.dtype, shape=(width,))
        self.name_map[bk], self.transforms[bk] = src, "none (an Add after the layer)"
        self.head = n.outputs[0]
        self.values[n.outputs[0]] = d

    def lstm(self, idx, n, d, what):
        a, P = n.attrs, self.P
        if _attr_str(a, "direction", "forward", what, P) != "forward":
            raise self.err(f"{what}: direction {a['direction']!r} is not supported (forward only)")
        if a.get("clip") is not None:
            raise self.err(f"{what}: attribute 'clip' is not supported")
        if _attr_int(a, "input_forget", 0, what, P) or _attr_int(a, "layout", 0, what, P):
            raise self.err(f"{what}: input_forget and layout=1 are not supported")
        acts = _attr_strs(a, "activations", what, P) or ["Sigmoid", "Tanh", "Tanh"]
        acts = [x.lower() for x in acts]
        if acts == ["sigmoid", "tanh", "tanh"]:
            act = "tanh"
        elif acts == ["sigmoid", "relu", "relu"]:
            act = "relu"
        else:
            raise self.err(f"{what}: activations {a.get('activations')} are not supported")
        if self.cell_act is not None and self.cell_act != act:
            raise self.err(f"{what}: the graph's LSTM uses {act}, cell_act={self.cell_act!r} was asked")
        W, R = self.const(n, 1, "W", what), self.const(n, 2, "R", what)
        B = self.const(n, 3, "B", what, required=False)
        if len(n.inputs) > 4 and n.inputs[4]:
            raise self.err(f"{what}: sequence_lens is not supported")
        for i, role in ((5, "initial_h"), (6, "initial_c"), (7, "P (peepholes)")):
            v = self.const(n, i, role, what, required=False)
            if v is not None and numpy.any(v != 0):
                raise self.err(f"{what}: a non-zero {role} is not supported")
        if W.ndim != 3 or W.shape[0] != 1 or R.ndim != 3 or R.shape[0] != 1:
            raise self.err(f"{what}: W {W.shape} / R {R.shape} must be [1, 4H, D] / [1, 4H, H]")
        H = int(R.shape[2])
        if "hidden_size" in a and _attr_int(a, "hidden_size", None, what, P, 1) != H:
            raise self.err(f"{what}: hidden_size {a['hidden_size']} but R has shape {R.shape}")
        d = self.flat_last(d, what, n.outputs[0])
        if len(d.axes) != 3:
            raise self.err(f"{what}: needs a (T, B, D) input, found {self._describe(d)}")
        t_ax, b_ax = d.axes[0], d.axes[1]
        if len(t_ax.labels) > 1:
            raise self.err(
                f"{what}: its time axis merges several input axes ({self._describe(d)}); the "
                "engine's LSTM runs over one clip's frames"
            )
        if not t_ax.labels and b_ax.labels:
            raise self.err(
                f"{what}: its time axis has length 1 and its batch axis holds the frames "
                f"({self._describe(d)}); the engine's LSTM runs over the frames"
            )
        if self.time is not None and t_ax.labels != self.time:
            raise self.err(f"{what}: runs over another axis than the LSTM before it")
        self.time = t_ax.labels
        name = self._name("lstm", n, idx)
        _, expect = self._add(make_layer(name, "lstm", hidden=H, cell_act=act))
        D = self.eng[0]
        if tuple(W.shape[1:]) != expect[f"{name}.W_x"] or tuple(R.shape[1:]) != expect[f"{name}.W_h"]:
            raise self.err(
                f"{what}: W {W.shape} / R {R.shape}, expected [1, {4 * H}, {D}] / [1, {4 * H}, {H}]"
            )
        parts = []
        if B is not None:
            if tuple(B.shape) != (1, 8 * H):
                raise self.err(f"{what}: B has shape {B.shape}, expected [1, {8 * H}]")
            parts = [B[0, : 4 * H], B[0, 4 * H :]]
        W_x, w_how = W[0], ""
        if self.cols is not None:  # a second copy of W_x, the small input-to-gates matrix
            W_x, w_how = self.permuted(W_x, rows_out=True)
            w_how = "; " + w_how
        lp = lstm_params(H, "iofc", W_x=W_x, W_h=R[0], b_parts=parts, dtype=self.dtype)
        blk = "gate blocks i,o,f,c -> i,f,o,g (source blocks [0,2,1,3])"
        b_src = n.inputs[3] if B is not None else ""
        b_tr = f"B[0][:4H] + B[0][4H:]: {blk}" if B is not None else "zeros (no B)"
        for field, src, tr in (
            ("W_x", n.inputs[1], f"W[0]: {blk}{w_how}"),
            ("W_h", n.inputs[2], f"R[0]: {blk}"),
            ("b", b_src, b_tr),
        ):
            k = f"{name}.{field}"
            self.params[k], self.name_map[k], self.transforms[k] = lp[field], src, tr
        self.eng = (H,)
        T, Bn = d.shape[0], d.shape[1]
        out = self._new_data((t_ax, _UNIT, b_ax, _Axis("F", (), (0,))), (T, 1, Bn, H), n.outputs[0])
        for extra in n.outputs[1:3]:
            if extra:
                self.values[extra] = _Data(None, (1, Bn, H), out.serial, state=True)
        return out

    # ------------------------------------------------------------------ the end
    def result(self, preprocessing, name):
        outs = [nm for nm, _ in self.graph.outputs]
        ends = [
            nm
            for nm in outs
            if isinstance(self.values.get(nm), _Data)
            and not self.values[nm].state
            and self.values[nm].serial == self.serial
            and self.values[nm].axes is not None
        ]
        if not ends:
            raise self.err(
                f"the graph's outputs {outs} do not include the end of the layer chain ({self.head!r})"
            )
        if self.cols is not None:
            raise self.err(
                f"{self.cols[2]}: flattens the features in another order than C, H, W (a "
                "channels-last layout) and no fully connected or LSTM layer follows to absorb it"
            )
        layers = self.tracer.layers
        has_lstm = any(L["type"] == "lstm" for L in layers)
        info = dict(self.input_info)
        labels = {f"a{i}": i for i in info["sample_axes"]}
        info["time_axis"] = labels[self.time[0]] if has_lstm and self.time else None
        stem = os.path.splitext(os.path.basename(self.P))[0]
        used_names = {self.origin.get(v, v) for v in self.name_map.values()}
        meta = {
            "name": name or (self.graph.name if self.graph.name not in _GENERIC_NAMES else stem),
            "source": source_info(self.buf, "onnx", "onnx"),
            "source_gate_order": "iofc" if has_lstm else None,
            "cell_act": next((L["cell_act"] for L in layers if L["type"] == "lstm"), None),
            "preprocessing": preset(preprocessing),
            "output": self.final,
            "name_map": self.name_map,
            "transforms": self.transforms,
            "ignored_weights": sorted(
                k
                for k, v in self.graph.initializers.items()
                if k not in self.used and k not in used_names and v.dtype.kind == "f"
            ),
            "onnx": {
                "opset": self.opset,
                "input": info,
                "folded_nodes": len(self.folded),
                "skipped_nodes": self.skipped,
                "ignored_outputs": [o for o in outs if o not in ends],
            },
        }
        return finish(self.params, layers, self.tracer.input_shape, meta, self.P)


def _convert(path, *, names, rename, preprocessing, dtype, input_shape, input_size, cell_act, name):
    buf, fmt = open_checked(path)
    if fmt != "onnx":
        raise buf.error(f"expected an ONNX model, found a {fmt} file")
    graph, opsets, external = guarded(buf, fmt, read_onnx_model, buf)
    if names not in ("auto", "onnx"):
        raise CheckpointError(buf.path, f"names must be 'auto' or 'onnx', got {names!r}")
    buf.budget += AMPLIFICATION * external  # folded constants may derive from external weights
    spent = buf.spent
    first = None
    for assume in _assumptions(graph):
        buf.spent = spent  # each attempt is charged afresh
        conv = _Converter(buf, graph, opsets, names=names, rename=rename, dtype=dtype, cell_act=cell_act)
        conv.setup_input(input_shape, input_size, assume)
        try:
            conv.run()
            return conv, conv.result(preprocessing, name)
        except CheckpointError as e:
            if not conv.assumed:
                raise
            first = first or e
    raise first


def _assumptions(graph):
    """Values for symbolic sample sizes: 2 and 3, then the sizes the graph's outputs declare.

    The dynamo exporter may declare an input axis dynamic yet bake its example
    size into a ``Reshape`` target; the graph then only runs with that size,
    which its outputs usually declare (``y: [5, 3]``).
    """
    yield (2, 3)
    seen = {(2, 3)}
    sizes = []
    for _, shape in graph.outputs:
        for v in shape or ():
            if isinstance(v, int) and v > 1 and v not in sizes:
                sizes.append(v)
    for a in sizes[:4]:
        for b in [a + 1] + sizes[:4]:
            if a != b and (a, b) not in seen:
                seen.add((a, b))
                yield (a, b)


def convert_onnx(
    path,
    *,
    names="auto",
    rename=None,
    preprocessing=None,
    dtype=None,
    input_shape=None,
    input_size=None,
    cell_act=None,
    name=None,
):
    """Convert an ONNX model (see the module docstring for the graph walk, the node set and transforms).

    Parameters
    ----------
    path : str
    names : {"auto", "onnx"}
    rename : dict, optional
        Applied after naming.
    preprocessing : str or dict, optional
        Not recorded in ONNX files; None unless given.
    dtype : numpy dtype, optional
    input_shape : tuple, optional
        ``(C, H, W)`` (or ``(D,)``) of one frame, when the graph input has
        symbolic sizes (or to convert for another size).
    input_size : int, optional
        ``(C, input_size, input_size)`` with the graph's channels.
    cell_act : {"tanh", "relu"}, optional
        Must agree with the LSTM's ``activations`` when given.
    name : str, optional
        ``meta["name"]``; default: the graph's name, or the file's stem when
        the exporter wrote a generic one (``main_graph``, ``torch_jit``).

    Returns
    -------
    params, meta
        ``meta["onnx"]``: ``opset``, ``input`` (the graph input's ``name``,
        ``shape``, ``sample_axes`` and ``time_axis``), ``folded_nodes``,
        ``skipped_nodes``, ``ignored_outputs``.
    """
    _, out = _convert(
        path,
        names=names,
        rename=rename,
        preprocessing=preprocessing,
        dtype=dtype,
        input_shape=input_shape,
        input_size=input_size,
        cell_act=cell_act,
        name=name,
    )
    return out


def onnx_folded_constants(path, **options):
    """The constants the converter folded, ``{value name: array}`` (for checking against an ONNX runtime).

    Takes the options of :func:`convert_onnx`; the values are those computed
    for the graph input's shape (symbolic sample sizes given 2 and 3).
    """
    opts = {
        "names": "auto",
        "rename": None,
        "preprocessing": None,
        "dtype": None,
        "input_shape": None,
        "input_size": None,
        "cell_act": None,
        "name": None,
    }
    opts.update(options)
    conv, _ = _convert(path, **opts)
    return dict(conv.folded)
