"""``ebr-ref convert``: a checkpoint (Caffe, PyTorch, Keras, ONNX, ...) -> an ebr_ref canonical model.

Reads and converts with ``weights_io`` (imported here, lazily), builds the
model with :func:`ebr_ref.models.from_spec` (which checks every parameter
shape against the architecture) and writes it with
:func:`ebr_ref.models.save_model`: ``model.npz`` plus the ``model.json``
sidecar that every other command loads with ebr_ref alone. The pair is
committed as one unit (:mod:`ebr_ref.models.io`: an existing pair stays
loadable until the new one is whole); an existing pair is replaced only with
``--overwrite``; parameters with NaN or infinite values are refused.
"""

from __future__ import annotations

import os

from ._common import UserError, describe_model, load_any_model, user_errors

__all__ = ["add_parser", "run"]


def add_parser(sub, parents):
    p = sub.add_parser(
        "convert", parents=parents, help="convert a checkpoint into an ebr_ref model (.npz + .json)",
        description="Convert a checkpoint that weights_io reads (Caffe .caffemodel + prototxt, torchvision VGG16, "
                    "PyTorch/Keras LSTM, Keras VGG16, ONNX) into ebr_ref's canonical .npz + .json sidecar.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--prototxt", help="Caffe deploy prototxt (for a .caffemodel)")
    p.add_argument("--source", help="converter, when it cannot be detected (see 'ebr-ref inspect')")
    p.add_argument("--preprocessing", help="preprocessing preset recorded in the sidecar (e.g. caffe_vgg16, lrcn, "
                                           "torchvision, identity)")
    p.add_argument("--input-size", type=int, help="input size (square) for converters that take one")
    p.add_argument("--class-names", help="text file with one class name per line, stored in the sidecar")
    p.add_argument("--dtype", choices=("float32", "float64"), help="store the parameters in this dtype")
    p.add_argument("--out", required=True, help="output .npz (the sidecar is written next to it as .json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing .npz/.json pair (refused otherwise)")
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


def run(args, console):
    from ..models import save_model

    out = os.fspath(args.out)
    if not out.endswith(".npz"):
        raise UserError(f"--out {out}: canonical model files end in .npz")
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise UserError(f"--out {out}: the folder {d} does not exist")
    if not os.path.exists(args.checkpoint):
        raise UserError(f"{args.checkpoint}: no such file")
    _refuse_existing(out, args.overwrite)
    names = None
    if args.class_names is not None:
        try:
            with open(args.class_names, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--class-names {args.class_names}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    options = {}
    if args.preprocessing is not None:
        options["preprocessing"] = args.preprocessing
    if args.input_size is not None:
        options["input_size"] = args.input_size
    with console.stage("converting"):
        model, how = load_any_model(args.checkpoint, prototxt=args.prototxt, source=args.source, options=options)
    if args.dtype is not None:
        model = model.astype(args.dtype)
    meta = {}
    if names is not None:
        if len(names) != model.num_classes:
            raise UserError(f"--class-names: {len(names)} names for a model with {model.num_classes} classes")
        meta["class_names"] = names
    _refuse_existing(out, args.overwrite)  # again: the conversion may have taken a while
    with user_errors(f"--out {out}"):
        save_model(model, out, meta=meta)
    console.info(f"{args.checkpoint} [{how}] -> {out} (+ {os.path.splitext(out)[0]}.json)")
    console.info(f"model {describe_model(model)}; {len(model.layers)} layers, "
                 f"{sum(int(v.size) for v in model.params.values()):,} parameters")
    return 0
