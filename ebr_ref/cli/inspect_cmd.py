"""``ebr-ref inspect``: the tensors of a checkpoint and the architecture inferred from them.

For an ebr_ref canonical model (or captioner) the layer list comes from its
sidecar (ebr_ref alone). A file with NaN or infinite values is refused (one
line naming the tensors) unless ``--allow-nonfinite``, which lists them.
For any other file, ``weights_io`` (imported here, lazily) lists the
tensors (:func:`weights_io.read_tensors`) and, when a converter recognises the
file, the architecture it infers (:func:`weights_io.convert`). The module is
named ``inspect_cmd`` so that it never shadows the standard ``inspect``.
"""

from __future__ import annotations

import os

import numpy

from ._common import UserError, _load_canonical, is_canonical_model, user_errors

__all__ = ["add_parser", "run"]


def add_parser(sub, parents):
    p = sub.add_parser(
        "inspect",
        parents=parents,
        help="list a checkpoint's tensors and the architecture inferred from them",
        description="List every tensor of a checkpoint (name, shape, dtype) and the architecture a converter "
        "infers (layers, output shapes, input shape, preprocessing).",
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a checkpoint of any format weights_io reads, or an ebr_ref .npz",
    )
    p.add_argument("--prototxt", help="Caffe deploy prototxt (for a .caffemodel)")
    p.add_argument("--source", help="converter, when it cannot be detected")
    p.add_argument(
        "--max-tensors", type=int, default=200, help="list at most this many tensors (default 200)"
    )
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="list tensors with NaN or infinite values instead of refusing the file",
    )
    p.set_defaults(run=run)
    return p


def _print(console, msg=""):
    """Inspect's output is its result: printed even with --quiet."""
    print(msg, flush=True)


def _table(rows):
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _tensor_rows(tensors, limit):
    rows = [("tensor", "shape", "dtype")]
    for k, (name, t) in enumerate(tensors.items()):
        if k == limit:
            rows.append((f"... {len(tensors) - limit} more", "", ""))
            break
        rows.append((name, "x".join(map(str, t.shape)) or "scalar", str(t.dtype)))
    return rows


_QUIET_DEFAULTS = {
    "dilation": 1,
    "groups": 1,
    "bias": True,
    "ceil_mode": False,
    "count_include_pad": True,
    "padding": 0,
}


def _compact(v):
    if isinstance(v, (tuple, list)):
        return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))
    return str(v)


def _layer_rows(layers, shapes):
    rows = [("layer", "type", "output", "settings")]
    for layer, shape in zip(layers, shapes):
        shown = {
            k: _compact(v)
            for k, v in layer.settings.items()
            if _compact(v) != _compact(_QUIET_DEFAULTS.get(k, object()))
        }
        txt = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
        rows.append((layer.name, layer.type, "x".join(map(str, shape)), txt))
    return rows


def run(args, console):
    path = os.fspath(args.checkpoint)
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a checkpoint file")
    if args.prototxt is not None and not os.path.isfile(args.prototxt):
        raise UserError(f"--prototxt {args.prototxt}: no such file")
    if args.max_tensors < 0:
        raise UserError(f"--max-tensors must be >= 0, got {args.max_tensors}")
    size = os.path.getsize(path)
    if args.prototxt is None and args.source is None and is_canonical_model(path):
        model = _load_canonical(path, allow_nonfinite=True)
        _refuse_nonfinite(path, model.params, args.allow_nonfinite)
        kind = "captioner" if hasattr(model, "vocab") else "model"
        _print(
            console,
            f"{path}: ebr_ref canonical {kind} ({size / 1e6:.2f} MB, "
            f"sidecar {os.path.splitext(path)[0]}.json)",
        )
        _print(
            console,
            f"{len(model.params)} tensors, {sum(int(v.size) for v in model.params.values()):,} parameters",
        )
        for line in _table(_tensor_rows(model.params, args.max_tensors)):
            _print(console, line)
        _list_nonfinite(console, model.params, args.allow_nonfinite)
        _describe(
            console, model.layers, model.shapes, model.input_shape, model.meta, model.meta.get("class_names")
        )
        if hasattr(model, "vocab"):
            words = model.vocab.words
            _print(
                console,
                f"decoder: embed {model.embed_dim}, hidden {model.hidden}, static input at "
                f"{model.static_layer}, pool {model.pool}, cell {model.cell_act}; vocabulary "
                f"{len(model.vocab)} tokens: {', '.join(words[:30])}{' ...' if len(words) > 30 else ''}",
            )
        return 0
    import weights_io

    with user_errors():
        fmt = weights_io.detect_format(path)
        tensors = weights_io.read_tensors(path)
    _refuse_nonfinite(path, tensors, args.allow_nonfinite)
    n = sum(int(numpy.prod(t.shape)) for t in tensors.values())
    _print(console, f"{path}: {fmt} checkpoint ({size / 1e6:.2f} MB)")
    _print(console, f"{len(tensors)} tensors, {n:,} values")
    for line in _table(_tensor_rows(tensors, args.max_tensors)):
        _print(console, line)
    _list_nonfinite(console, tensors, args.allow_nonfinite)
    try:
        params, meta = weights_io.convert(path, source=args.source, prototxt=args.prototxt)
    except (ValueError, TypeError, OSError) as e:
        _print(console, f"architecture: not inferred ({' '.join(str(e).split())})")
        return 0
    from ..models.spec import Layer, infer_shapes

    with user_errors("architecture"):
        layers = [Layer.from_dict(d) for d in meta["architecture"]]
        shapes = infer_shapes(layers, tuple(meta["input_shape"]))
    src = meta.get("source", {})
    _print(
        console, f"converter {src.get('converter', args.source or '?')}: {len(params)} canonical parameters"
    )
    names = meta.get("class_names")
    _describe(console, layers, shapes, tuple(meta["input_shape"]), meta, names)
    return 0


def _refuse_nonfinite(path, tensors, allow):
    """A one-line UserError naming the tensors with NaN or infinite values, unless ``--allow-nonfinite``."""
    from ..models.io import check_finite

    if not allow:
        with user_errors():
            check_finite(tensors, path)


def _list_nonfinite(console, tensors, allow):
    """With ``--allow-nonfinite``: the tensors with NaN or infinite values and how many each holds."""
    from ..models.io import nonfinite_parameters

    if not allow:
        return
    bad = nonfinite_parameters(tensors)
    if bad:
        _print(
            console,
            f"non-finite values (NaN or inf) in {len(bad)} tensors; such a model is refused by "
            "ground, convert and load_model:",
        )
        rows = [(k, f"{n:,}", f"{int(numpy.prod(tensors[k].shape)):,}") for k, n in sorted(bad.items())]
        for line in _table([("tensor", "non-finite values", "of")] + rows):
            _print(console, line)
    else:
        _print(console, "non-finite values: none")


def _describe(console, layers, shapes, input_shape, meta, names):
    _print(console, f"architecture: {len(layers)} layers, input {'x'.join(map(str, input_shape))}")
    for line in _table(_layer_rows(layers, shapes)):
        _print(console, line)
    pre = meta.get("preprocessing")
    if isinstance(pre, dict):
        pre = ", ".join(f"{k}={v}" for k, v in pre.items())
    _print(console, f"preprocessing: {pre if pre is not None else 'not recorded (identity: RGB in [0, 1])'}")
    for key in ("gate_order", "source_gate_order", "cell_act", "pool_rounding", "readout"):
        if meta.get(key) is not None:
            _print(console, f"{key}: {meta[key]}")
    if names:
        shown = ", ".join(map(str, names[:20])) + (" ..." if len(names) > 20 else "")
        _print(console, f"classes ({len(names)}): {shown}")
