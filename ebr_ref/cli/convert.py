"""``ebr-ref convert``: a checkpoint (Caffe, PyTorch, Keras, ONNX, ...) -> an ebr_ref canonical model.

Reads and converts with ``weights_io`` (imported here, lazily), builds the
model with :func:`ebr_ref.models.from_spec` (which checks every parameter
shape against the architecture) and writes it with
:func:`ebr_ref.models.save_model`: ``model.npz`` plus the ``model.json``
sidecar that every other command loads with ebr_ref alone. The pair is
committed as one unit (:mod:`ebr_ref.models.io`: an existing pair stays
loadable until the new one is whole); an existing pair is replaced only with
``--overwrite``; parameters with NaN or infinite values are refused. The
folder of ``--out`` is created when missing (as ``ground`` and ``demo`` create
theirs), and removed again when the conversion fails.
"""

from __future__ import annotations

import os

from ._common import UserError, describe_model, load_any_model, positive_int, user_errors

__all__ = ["add_parser", "run"]


def add_parser(sub, parents):
    p = sub.add_parser(
        "convert",
        parents=parents,
        help="convert a checkpoint into an ebr_ref model (.npz + .json)",
        description="Convert a checkpoint that weights_io reads (Caffe .caffemodel + prototxt, "
        "torchvision VGG16, PyTorch/Keras LSTM, Keras VGG16, ONNX) into ebr_ref's canonical .npz + .json "
        "sidecar.",
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="the checkpoint to convert (.caffemodel, .pt/.pth, .h5, .onnx, .safetensors, .npz...)",
    )
    p.add_argument("--prototxt", help="Caffe deploy prototxt (for a .caffemodel)")
    p.add_argument("--source", help="converter, when it cannot be detected (see 'ebr-ref inspect')")
    p.add_argument(
        "--preprocessing",
        help="preprocessing preset recorded in the sidecar (e.g. caffe_vgg16, lrcn, torchvision, identity)",
    )
    p.add_argument("--input-size", type=positive_int, help="input size (square) for converters that take one")
    p.add_argument("--class-names", help="text file with one class name per line, stored in the sidecar")
    p.add_argument("--dtype", choices=("float32", "float64"), help="store the parameters in this dtype")
    p.add_argument(
        "--out",
        required=True,
        help="output .npz (the sidecar is written next to it as .json; its folder is created when missing)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing .npz/.json pair (refused otherwise)"
    )
    p.set_defaults(run=run)
    return p


def _refuse_existing(out, overwrite):
    """A UserError when the pair exists (unless ``overwrite``) or a name of it is not a regular file."""
    from ..models.io import sidecar_path

    for p in (out, sidecar_path(out)):
        if os.path.lexists(p) and (os.path.isdir(p) or not os.path.isfile(p)):
            raise UserError(f"--out {out}: {p} exists and is not a regular file; not replaced")
        if os.path.lexists(p) and not overwrite:
            raise UserError(f"--out {out}: {p} exists; pass --overwrite to replace it")


def _missing_folders(out, d):
    """The folders from ``d`` up that do not exist (innermost first); a UserError for a file in the way."""
    missing = []
    while not os.path.isdir(d):
        if os.path.lexists(d):
            raise UserError(f"--out {out}: {d} exists and is not a folder")
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return missing


def run(args, console):
    out = os.fspath(args.out)
    if not out.endswith(".npz"):
        raise UserError(f"--out {out}: canonical model files end in .npz")
    if not os.path.exists(args.checkpoint):
        raise UserError(f"{args.checkpoint}: no such file")
    missing = _missing_folders(out, os.path.dirname(os.path.abspath(out)))
    if not missing:
        _refuse_existing(out, args.overwrite)
    try:
        return _convert(args, console, out, missing)
    except BaseException:
        for d in missing:  # innermost first: only the folders this run created, and only when empty
            try:
                os.rmdir(d)
            except OSError:
                break
        raise


def _convert(args, console, out, missing):
    from ..models import save_model

    names = None
    if args.class_names is not None:
        try:
            with open(args.class_names, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(
                f"--class-names {args.class_names}: cannot read ({getattr(e, 'strerror', None) or e})"
            ) from None
    options = {}
    if args.preprocessing is not None:
        options["preprocessing"] = args.preprocessing
    if args.input_size is not None:
        options["input_size"] = args.input_size
    with console.stage("converting"):
        model, how = load_any_model(
            args.checkpoint, prototxt=args.prototxt, source=args.source, options=options, option=None
        )
    if not how.startswith("converted"):
        given = [
            o for o, v in (("--input-size", args.input_size), ("--preprocessing", args.preprocessing)) if v
        ]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UserError(
                f"{' and '.join(given)} {verb} to a checkpoint a converter reads; "
                f"{args.checkpoint} is already an ebr_ref model ({how})"
            )
    if args.dtype is not None:
        model = model.astype(args.dtype)
    meta = {}
    if names is not None:
        if len(names) != model.num_classes:
            raise UserError(f"--class-names: {len(names)} names for a model with {model.num_classes} classes")
        meta["class_names"] = names
    if missing:
        try:
            os.makedirs(missing[0])
        except OSError as e:
            why = e.strerror or e
            raise UserError(f"--out {out}: cannot create the folder {missing[0]} ({why})") from None
    _refuse_existing(out, args.overwrite)  # again: the conversion may have taken a while
    with user_errors(f"--out {out}"):
        save_model(model, out, meta=meta)
    console.info(f"{args.checkpoint} [{how}] -> {out} (+ {os.path.splitext(out)[0]}.json)")
    console.info(
        f"model {describe_model(model)}; {len(model.layers)} layers, "
        f"{sum(int(v.size) for v in model.params.values()):,} parameters"
    )
    if "readout" not in model.meta and "conv5_1" not in model.layer_names:
        convs = ", ".join(n.name for n in model.layers if n.type == "conv") or "none"
        console.info(
            f"note: no default read-out layer (the sidecar names no 'readout' and there is no "
            f"conv5_1): pass --layer to ground and caption; its convolution layers: {convs}"
        )
    return 0
