"""ONNX graphs (a linear chain of Conv/Gemm/LSTM... nodes) -> canonical parameters.

Supported nodes: Conv, Relu, MaxPool, AveragePool, GlobalAveragePool, LRN,
Dropout, Flatten, Reshape (as a flatten to ``(N, -1)``), Gemm, MatMul (+ Add
bias), LSTM (forward, one direction), Identity, Constant, Squeeze/Unsqueeze
next to an LSTM (sequence plumbing), and a final Softmax/LogSoftmax
(``meta["output"]``). Each node's first input must be the previous node's
output; weights must be initializers (or Constant nodes). Anything else raises
CheckpointError naming the node and its op type.

Transforms, per tensor (one copy each):

* Conv ``W (M, C/group, kH, kW)`` -> ``<name>.weight``: none; ``B`` -> bias: none.
* Gemm ``B``: with ``transB=1`` (PyTorch export) ``(out, in)`` -> none; with
  ``transB=0`` ``(in, out)`` -> **transpose**. ``C`` -> bias (reshaped to
  ``(out,)``). ``alpha`` and ``beta`` must be 1, ``transA`` 0.
* MatMul ``B (in, out)`` -> **transpose**; a following ``Add`` of an
  initializer gives the bias.
* LSTM ``W [1, 4H, D]``, ``R [1, 4H, H]``, ``B [1, 8H]`` (gate blocks i, o, f, c)
  -> ``W_x = W[0][blocks]``, ``W_h = R[0][blocks]``,
  ``b = (B[0][:4H] + B[0][4H:])[blocks]`` with canonical blocks i, f, o, g =
  ONNX blocks [0, 2, 1, 3]. Peepholes ``P``, ``clip``, ``input_forget``,
  non-zero initial states and reverse/bidirectional directions are refused.
  ``activations`` ``[Sigmoid, Tanh, Tanh]`` (default) gives ``cell_act="tanh"``,
  ``[Sigmoid, Relu, Relu]`` gives ``"relu"``.

Layer names (``names="auto"``, Caffe's VGG convention): convolutions
``conv{b}_{k}`` (``b`` = 1 + number of pooling layers before), pools
``pool{b}``, ReLUs after them ``relu{b}_{k}``, LRN ``norm{b}``, fully
connected ``fc6, fc7, ...`` after convolutions (``fc1, fc2...`` without),
``relu{n}``/``drop{n}`` after ``fc{n}``, ``lstm1, lstm2...``, ``flatten``.
``names="onnx"`` keeps the node names (``.`` and ``/`` replaced by ``_``).
"""

from __future__ import annotations

import numpy

from ._common import as_float, as_int, as_str, finish, interpreting, lstm_params, param, show, source_info
from .errors import CheckpointError
from .onnx_reader import read_onnx
from .presets import preset
from .readers import guarded, open_checked
from .spec import Tracer, make_layer

__all__ = ["convert_onnx"]

_SUPPORTED = ("Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "LRN", "Dropout", "Flatten", "Reshape",
              "Gemm", "MatMul", "Add", "LSTM", "Identity", "Constant", "Squeeze", "Unsqueeze", "Softmax", "LogSoftmax")


_INT32 = (1 << 31) - 1
_INT64 = (1 << 63) - 1


def _attr_int(a, key, default, what, P, lo=-_INT64 - 1, hi=_INT64) -> int:
    """An integer attribute (ONNX ``i``) in ``[lo, hi]``."""
    return as_int(a.get(key, default), P, what, f"attribute {key!r}", lo, hi)


def _attr_float(a, key, default, what, P) -> float:
    """A float attribute (ONNX ``f``; an integer is accepted)."""
    return as_float(a.get(key, default), P, what, f"attribute {key!r}")


def _attr_str(a, key, default, what, P) -> str:
    return as_str(a.get(key, default), P, what, f"attribute {key!r}")


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


def _flat_size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class _Namer:
    def __init__(self, mode, has_conv):
        self.mode, self.has_conv = mode, has_conv
        self.block, self.k, self.fc, self.lstm = 1, 0, 0, 0
        self.last = None
        self.used = set()
        self.next_suffix = {}  # base name -> where the search for a free variant resumes (linear in all)

    def _free(self, base, variant):
        """The first free ``variant(base, j)``, j = 1, 2...; each search resumes where the last one ended."""
        j = self.next_suffix.get(base, 1)
        name = variant(base, j)
        while name in self.used:
            j += 1
            name = variant(base, j)
        self.next_suffix[base] = j
        self.used.add(name)
        return name

    def __call__(self, kind, node, idx):
        if self.mode == "onnx":
            base = (node.name or f"{node.op_type}_{idx}").replace(".", "_").replace("/", "_").strip("_") or f"n{idx}"
            return self._free(base, lambda b, j: b if j == 1 else f"{b}_{j}")
        last = self.last
        if kind == "conv":
            self.k += 1
            name = f"conv{self.block}_{self.k}"
            self.last = ("conv", f"{self.block}_{self.k}")
        elif kind in ("maxpool", "avgpool"):
            name = f"pool{self.block}"
            self.block += 1
            self.k = 0
            self.last = ("pool", str(self.block - 1))
        elif kind == "fc":
            self.fc += 1
            n = self.fc + 5 if self.has_conv else self.fc
            name = f"fc{n}"
            self.last = ("fc", str(n))
        elif kind == "lstm":
            self.lstm += 1
            name = f"lstm{self.lstm}"
            self.last = ("lstm", str(self.lstm))
        elif kind == "relu":
            name = f"relu{last[1]}" if last and last[0] in ("conv", "fc") else f"relu_{idx}"
        elif kind == "dropout":
            name = (f"drop{last[1]}" if last and last[0] == "fc" else
                    f"lstm{last[1]}_drop" if last and last[0] == "lstm" else f"drop_{idx}")
        elif kind == "lrn":
            name = f"norm{last[1]}" if last and last[0] == "pool" else f"norm{self.block}"
        elif kind == "flatten":
            name = "flatten"
        else:
            name = f"{kind}_{idx}"
        return self._free(name, lambda b, j: b + "_" * (j - 1))


def convert_onnx(path, *, names="auto", rename=None, preprocessing=None, dtype=None, input_shape=None, cell_act=None):
    """Convert an ONNX model (see the module docstring for the node set and transforms).

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
        ``(C, H, W)`` (or ``(D,)``) when the graph input has symbolic sizes.
    cell_act : {"tanh", "relu"}, optional
        Must agree with the LSTM's ``activations`` when given.

    Returns
    -------
    params, meta
    """
    buf, fmt = open_checked(path)
    if fmt != "onnx":
        raise buf.error(f"expected an ONNX model, found a {fmt} file")
    graph = guarded(buf, fmt, read_onnx, buf)
    P = buf.path
    rename = dict(rename or {})
    inits = dict(graph.initializers)
    nodes = []
    for n in graph.nodes:
        if n.op_type == "Constant":
            if n.outputs and isinstance(n.attrs.get("value"), numpy.ndarray):
                inits[n.outputs[0]] = n.attrs["value"]
            continue
        nodes.append(n)
    data_inputs = [(nm, shp) for nm, shp in graph.inputs if nm not in inits]
    if len(data_inputs) != 1:
        raise CheckpointError(P, f"expected one graph input besides the initializers, found {[d[0] for d in data_inputs]}")
    cur, in_dims = data_inputs[0]
    if input_shape is None:
        dims = list(in_dims or [])
        feat = dims[1:] if len(dims) in (2, 4) else dims[2:] if len(dims) == 3 else None
        if not feat or not all(isinstance(d, int) and d > 0 for d in feat):
            raise CheckpointError(P, f"graph input {cur!r} has shape {in_dims}; pass input_shape=")
        input_shape = tuple(feat)
    input_shape = tuple(int(d) for d in input_shape)
    namer = _Namer(names, any(n.op_type == "Conv" for n in nodes))
    if names not in ("auto", "onnx"):
        raise CheckpointError(P, f"names must be 'auto' or 'onnx', got {names!r}")
    tracer = Tracer(input_shape, P)  # traces each layer once (a chain of n nodes in linear time)
    layers = tracer.layers
    params, name_map, transforms, used_inits = {}, {}, {}, set()
    output, seq_ok = None, False
    skip = set()

    def init(node, i, role, required=True):
        if i >= len(node.inputs) or not node.inputs[i]:
            if required:
                raise CheckpointError(P, f"node {node.name or node.op_type!r}: input {i} ({role}) is missing")
            return None
        nm = node.inputs[i]
        if nm not in inits:
            raise CheckpointError(P, f"node {node.name or node.op_type!r}: {role} {nm!r} is not an initializer")
        if nm in used_inits:  # an initializer shared by several nodes: each of them copies it
            buf.charge(inits[nm].nbytes, f"initializer {nm!r} (used again, as {role})")
        used_inits.add(nm)
        return inits[nm]

    def add(layer):
        return tracer.add(layer)

    for idx, n in enumerate(nodes):
        if idx in skip:
            continue
        what = f"node {n.name or idx!r} ({n.op_type})"
        a = n.attrs
        if n.op_type not in _SUPPORTED:
            raise CheckpointError(P, f"{what}: unsupported op type {n.op_type!r} (supported: {', '.join(_SUPPORTED)})")
        if not n.inputs or n.inputs[0] != cur:
            raise CheckpointError(P, f"{what}: reads {n.inputs[:1]} but the previous output is {cur!r}; only linear "
                                     "chains are supported")
        if not n.outputs or not n.outputs[0]:
            raise CheckpointError(P, f"{what}: the node has no output (its 'output' field is empty)")
        if output is not None:
            raise CheckpointError(P, f"{what}: nodes after the final Softmax are not supported")
        with interpreting(P, what):
            cur_shape = tracer.shape
            op = n.op_type
            if op == "Conv":
                W = init(n, 1, "weight")
                B = init(n, 2, "bias", required=False)
                if _attr_str(a, "auto_pad", "NOTSET", what, P) not in ("NOTSET", "VALID"):
                    raise CheckpointError(P, f"{what}: auto_pad {a['auto_pad']!r} is not supported")
                if W.ndim != 4:
                    raise CheckpointError(P, f"{what}: weight of shape {W.shape}; only 2-d convolutions "
                                             "are supported")
                nm = namer("conv", n, idx)
                name = rename.get(nm, nm)
                kernel = _pair(a, "kernel_shape", [int(d) for d in W.shape[2:]], what, P)
                _, expect = add(make_layer(name, "conv", out_channels=int(W.shape[0]), kernel=kernel,
                                           stride=_pair(a, "strides", 1, what, P), padding=_pads(a, what, P),
                                           dilation=_pair(a, "dilations", 1, what, P),
                                           groups=_attr_int(a, "group", 1, what, P, 1, _INT32),
                                           bias=B is not None))
                for field, arr, src in (("weight", W, n.inputs[1]),
                                        ("bias", B, n.inputs[2] if B is not None else None)):
                    if arr is None:
                        continue
                    k = f"{name}.{field}"
                    if tuple(arr.shape) != expect[k]:
                        raise CheckpointError(P, f"initializer {src!r} (for {k}): expected shape "
                                                 f"{expect[k]}, "
                                                 f"found {tuple(arr.shape)}")
                    params[k], name_map[k], transforms[k] = param(arr, dtype=dtype), src, "none"
            elif op in ("MaxPool", "AveragePool", "GlobalAveragePool"):
                kind = "maxpool" if op == "MaxPool" else "avgpool"
                if op == "GlobalAveragePool":
                    if len(cur_shape) != 3:
                        raise CheckpointError(P, f"{what}: needs a (C, H, W) input, got {cur_shape}")
                    k, s, pad, ceil, cip = [cur_shape[1], cur_shape[2]], [1, 1], [0, 0], False, True
                else:
                    if _attr_str(a, "auto_pad", "NOTSET", what, P) not in ("NOTSET", "VALID"):
                        raise CheckpointError(P, f"{what}: auto_pad {a['auto_pad']!r} is not supported")
                    if any(d != 1 for d in _attr_ints(a, "dilations", what, P, 1) or [1, 1]):
                        raise CheckpointError(P, f"{what}: dilated pooling is not supported")
                    k = _pair(a, "kernel_shape", None, what, P)
                    s = _pair(a, "strides", 1, what, P)
                    pad = _pads(a, what, P)
                    ceil = bool(_attr_int(a, "ceil_mode", 0, what, P, 0, 1))
                    cip = bool(_attr_int(a, "count_include_pad", 0, what, P, 0, 1))
                extra = {"count_include_pad": cip} if kind == "avgpool" else {}
                nm = namer(kind, n, idx)
                name = rename.get(nm, nm)
                add(make_layer(name, kind, kernel=k, stride=s, padding=pad, ceil_mode=ceil, **extra))
            elif op == "Relu":
                nm = namer("relu", n, idx)
                add(make_layer(rename.get(nm, nm), "relu"))
            elif op == "LRN":
                if "size" not in a:
                    raise CheckpointError(P, f"{what}: the required attribute 'size' is missing")
                nm = namer("lrn", n, idx)
                add(make_layer(rename.get(nm, nm), "lrn", size=_attr_int(a, "size", None, what, P, 1, _INT32),
                               alpha=_attr_float(a, "alpha", 1e-4, what, P),
                               beta=_attr_float(a, "beta", 0.75, what, P),
                               k=_attr_float(a, "bias", 1.0, what, P)))
            elif op == "Dropout":
                ratio = _attr_float(a, "ratio", 0.5, what, P)
                if len(n.inputs) > 1 and n.inputs[1]:
                    r = init(n, 1, "ratio")
                    if r.size != 1 or r.dtype.kind not in "fiu":
                        raise CheckpointError(P, f"{what}: the ratio input {n.inputs[1]!r} must hold one "
                                                 f"number, found shape {r.shape} of {r.dtype}")
                    ratio = as_float(float(r.reshape(-1)[0]), P, what, "ratio")
                nm = namer("dropout", n, idx)
                add(make_layer(rename.get(nm, nm), "dropout", p=ratio))
            elif op in ("Flatten", "Reshape"):
                if op == "Flatten" and _attr_int(a, "axis", 1, what, P) != 1:
                    raise CheckpointError(P, f"{what}: only axis=1 is supported")
                if op == "Reshape":
                    sh = init(n, 1, "shape")
                    if sh.dtype.kind not in "iu" or sh.ndim != 1:
                        raise CheckpointError(P, f"{what}: the shape input {n.inputs[1]!r} must be a 1-d "
                                                 f"integer tensor, found shape {sh.shape} of {sh.dtype}")
                    shp = [int(v) for v in sh]
                    if len(shp) != 2 or shp[1] not in (-1, _flat_size(cur_shape)):
                        raise CheckpointError(P, f"{what}: only a reshape to (N, -1) is supported, found "
                                                 f"{shp}")
                if len(cur_shape) > 1:
                    nm = namer("flatten", n, idx)
                    add(make_layer(rename.get(nm, nm), "flatten"))
            elif op in ("Gemm", "MatMul"):
                Bm = init(n, 1, "weight")
                if Bm.ndim != 2:
                    raise CheckpointError(P, f"{what}: weight of shape {Bm.shape} is not 2-d")
                if op == "Gemm":
                    if (_attr_int(a, "transA", 0, what, P) or _attr_float(a, "alpha", 1.0, what, P) != 1.0
                            or _attr_float(a, "beta", 1.0, what, P) != 1.0):
                        raise CheckpointError(P, f"{what}: transA, alpha != 1 and beta != 1 are not "
                                                 "supported")
                    transposed = not _attr_int(a, "transB", 0, what, P)
                    C = init(n, 2, "bias", required=False)
                    bias_src = n.inputs[2] if C is not None else None
                else:
                    transposed = True
                    C, bias_src = None, None
                    nxt = nodes[idx + 1] if idx + 1 < len(nodes) else None
                    if (nxt is not None and nxt.op_type == "Add" and nxt.outputs and nxt.outputs[0]
                            and n.outputs[0] in nxt.inputs):
                        other = [x for x in nxt.inputs if x != n.outputs[0]]
                        if len(other) == 1 and other[0] in inits:
                            C, bias_src = inits[other[0]], other[0]
                            used_inits.add(other[0])
                            skip.add(idx + 1)
                            cur = nxt.outputs[0]
                out_f = int(Bm.shape[0] if not transposed else Bm.shape[1])
                nm = namer("fc", n, idx)
                name = rename.get(nm, nm)
                _, expect = add(make_layer(name, "fc", out_features=out_f, bias=C is not None))
                wk = f"{name}.weight"
                want = expect[wk][::-1] if transposed else expect[wk]
                if tuple(Bm.shape) != tuple(want):
                    raise CheckpointError(P, f"initializer {n.inputs[1]!r} (for {wk}): expected shape "
                                             f"{tuple(want)}, "
                                             f"found {tuple(Bm.shape)}")
                params[wk] = param(Bm, dtype=dtype, transpose=(1, 0) if transposed else None)
                name_map[wk] = n.inputs[1]
                transforms[wk] = "transpose (in, out) -> (out, in)" if transposed else "none (transB=1)"
                if C is not None:
                    bk = f"{name}.bias"
                    if C.size != out_f:
                        raise CheckpointError(P, f"initializer {bias_src!r} (for {bk}): expected {out_f} "
                                                 f"values, found {C.size}")
                    params[bk] = param(C, dtype=dtype, shape=(out_f,))
                    name_map[bk], transforms[bk] = bias_src, "none"
                if op == "MatMul" and C is not None:
                    continue  # cur was set to the Add's output
            elif op == "Add":
                raise CheckpointError(P, f"{what}: an Add that is not the bias of a MatMul is not supported")
            elif op == "LSTM":
                if _attr_str(a, "direction", "forward", what, P) != "forward":
                    raise CheckpointError(P, f"{what}: direction {a['direction']!r} is not supported "
                                             "(forward only)")
                for bad in ("clip",):
                    if a.get(bad) is not None:
                        raise CheckpointError(P, f"{what}: attribute {bad!r} is not supported")
                if _attr_int(a, "input_forget", 0, what, P) or _attr_int(a, "layout", 0, what, P):
                    raise CheckpointError(P, f"{what}: input_forget and layout=1 are not supported")
                acts = _attr_strs(a, "activations", what, P) or ["Sigmoid", "Tanh", "Tanh"]
                acts = [x.lower() for x in acts]
                if acts == ["sigmoid", "tanh", "tanh"]:
                    act = "tanh"
                elif acts == ["sigmoid", "relu", "relu"]:
                    act = "relu"
                else:
                    raise CheckpointError(P, f"{what}: activations {a.get('activations')} are not supported")
                if cell_act is not None and cell_act != act:
                    raise CheckpointError(P, f"{what}: the graph's LSTM uses {act}, cell_act={cell_act!r} "
                                             "was asked")
                W, R = init(n, 1, "W"), init(n, 2, "R")
                B = init(n, 3, "B", required=False)
                if len(n.inputs) > 4 and n.inputs[4]:
                    raise CheckpointError(P, f"{what}: sequence_lens is not supported")
                for i, role in ((5, "initial_h"), (6, "initial_c"), (7, "P (peepholes)")):
                    v = init(n, i, role, required=False)
                    if v is not None and numpy.any(v != 0):
                        raise CheckpointError(P, f"{what}: a non-zero {role} is not supported")
                if W.ndim != 3 or W.shape[0] != 1 or R.ndim != 3 or R.shape[0] != 1:
                    raise CheckpointError(P, f"{what}: W {W.shape} / R {R.shape} must be [1, 4H, D] / "
                                             "[1, 4H, H]")
                H = int(R.shape[2])
                if "hidden_size" in a and _attr_int(a, "hidden_size", None, what, P, 1) != H:
                    raise CheckpointError(P, f"{what}: hidden_size {a['hidden_size']} but R has shape "
                                             f"{R.shape}")
                nm = namer("lstm", n, idx)
                name = rename.get(nm, nm)
                D = 1
                for d in cur_shape:
                    D *= d
                if len(cur_shape) > 1:
                    add(make_layer(f"{name}_flatten", "flatten"))
                _, expect = add(make_layer(name, "lstm", hidden=H, cell_act=act))
                if tuple(W.shape[1:]) != expect[f"{name}.W_x"] or tuple(R.shape[1:]) != expect[f"{name}.W_h"]:
                    raise CheckpointError(P, f"{what}: W {W.shape} / R {R.shape}, expected [1, {4 * H}, "
                                             f"{D}] / [1, {4 * H}, {H}]")
                parts = []
                if B is not None:
                    if tuple(B.shape) != (1, 8 * H):
                        raise CheckpointError(P, f"{what}: B has shape {B.shape}, expected [1, {8 * H}]")
                    parts = [B[0, :4 * H], B[0, 4 * H:]]
                lp = lstm_params(H, "iofc", W_x=W[0], W_h=R[0], b_parts=parts, dtype=dtype)
                blk = "gate blocks i,o,f,c -> i,f,o,g (source blocks [0,2,1,3])"
                b_src = n.inputs[3] if B is not None else ""
                b_tr = f"B[0][:4H] + B[0][4H:]: {blk}" if B is not None else "zeros (no B)"
                for field, src, tr in (("W_x", n.inputs[1], f"W[0]: {blk}"),
                                       ("W_h", n.inputs[2], f"R[0]: {blk}"), ("b", b_src, b_tr)):
                    k = f"{name}.{field}"
                    params[k], name_map[k], transforms[k] = lp[field], src, tr
                seq_ok = True
            elif op in ("Squeeze", "Unsqueeze"):
                nxt = nodes[idx + 1] if idx + 1 < len(nodes) else None
                if not (seq_ok or (nxt is not None and nxt.op_type in ("LSTM", "Squeeze", "Unsqueeze"))):
                    raise CheckpointError(P, f"{what}: Squeeze/Unsqueeze are only supported next to an LSTM")
            elif op in ("Softmax", "LogSoftmax"):
                output = {"type": op.lower(), "axis": _attr_int(a, "axis", -1, what, P, -_INT32, _INT32)}
            elif op == "Identity":
                pass
            if op not in ("Squeeze", "Unsqueeze", "LSTM"):
                seq_ok = seq_ok and op in ("Identity",)
        cur = n.outputs[0]
    has_lstm = any(L["type"] == "lstm" for L in layers)
    meta = {
        "name": graph.name,
        "source": source_info(buf, fmt, "onnx"),
        "source_gate_order": "iofc" if has_lstm else None,
        "cell_act": next((L["cell_act"] for L in layers if L["type"] == "lstm"), None),
        "preprocessing": preset(preprocessing),
        "output": output,
        "name_map": name_map,
        "transforms": transforms,
        "ignored_weights": sorted(k for k, v in inits.items() if k not in used_inits and v.dtype.kind == "f"),
    }
    return finish(params, layers, input_shape, meta, P)
