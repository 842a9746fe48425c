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

A PyTorch CNN-LSTM (a torchvision-VGG16 CNN, an ``nn.LSTM`` and a linear head)
is assembled from one state dict, or from a VGG16 state dict plus ``--lstm
FILE`` (the LSTM and the head); ``--map ROLE=PREFIX`` names the parts when
they cannot be detected and ``--cut`` the VGG16 layer that feeds the LSTM
(:mod:`weights_io.assemble_torch`).
"""

from __future__ import annotations

import argparse
import os

from ._common import (
    UserError,
    describe_model,
    is_canonical_model,
    load_any_model,
    positive_int,
    user_errors,
)

__all__ = ["add_parser", "run"]


_ROLES = ("cnn", "lstm", "head")  # weights_io.assemble_torch.ROLES (weights_io is imported lazily)
_CUTS = ("pool5", "fc6", "fc7")  # weights_io.assemble_torch.CUTS

_DESCRIPTION = """\
Convert a checkpoint that weights_io reads (Caffe .caffemodel + prototxt, torchvision VGG16,
PyTorch/Keras LSTM, Keras VGG16, Keras models, ONNX) into ebr_ref's canonical .npz + .json sidecar,
or assemble a CNN-LSTM from PyTorch state dicts."""

_EPILOG = """\
PyTorch CNN-LSTM (source torch_cnn_lstm), the CNN run on every frame, the LSTM over the frames
from a zero state, the head at every step:
  one file   torch.save(model.state_dict()) of a module holding, each under its own prefix:
               a VGG16 in torchvision's layout   <cnn>features.N.*, <cnn>classifier.N.*
               an nn.LSTM (one layer, forward)   <lstm>weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0
               a linear head                     <head>weight, <head>bias
             e.g. cnn.features.0.weight ... lstm.weight_ih_l0 ... fc.weight; detected when the file
             holds both a VGG16 and an nn.LSTM:
               ebr-ref convert cnn_lstm.pth --out model.npz
  two files  a VGG16 state dict (torchvision's vgg16-397923af.pth or your fine-tuned one) and, with
             --lstm, a state dict holding the nn.LSTM and the head:
               ebr-ref convert vgg16.pth --lstm head.pth --out model.npz
  --map ROLE=PREFIX   names a part when it cannot be detected (several candidates, or other names);
             ROLE is cnn, lstm or head, PREFIX a module path (rnn, model.rnn; empty for the top level):
               ebr-ref convert model.pth --map cnn=backbone --map lstm=rnn --map head=fc --out model.npz
  --cut pool5|fc6|fc7   the VGG16 layer whose output (after its ReLU; pool5 flattened) feeds the LSTM;
             default: the layer whose width is the LSTM's input size; of several (a whole torchvision
             VGG16: fc6 and fc7 both 4096), the CNN's last layer if it is one, else name it with --cut.
             The CNN's layers above the cut (torchvision's ImageNet classifier) are not used."""


def add_parser(sub, parents):
    p = sub.add_parser(
        "convert",
        parents=parents,
        help="convert a checkpoint into an ebr_ref model (.npz + .json)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="the checkpoint to convert (.caffemodel, .pt/.pth, .h5, .onnx, .safetensors, .npz...)",
    )
    p.add_argument("--prototxt", help="Caffe deploy prototxt (for a .caffemodel)")
    p.add_argument("--source", help="converter, when it cannot be detected (see 'ebr-ref inspect')")
    p.add_argument(
        "--lstm",
        metavar="FILE",
        help="a PyTorch state dict holding the nn.LSTM and its linear head, assembled with the VGG16 of "
        "CHECKPOINT into a CNN-LSTM (see below)",
    )
    p.add_argument(
        "--map",
        action="append",
        metavar="ROLE=PREFIX",
        help="the key prefix of a part of a PyTorch CNN-LSTM (ROLE: cnn, lstm or head), when it cannot be "
        "detected; repeat for each part",
    )
    p.add_argument(
        "--cut",
        choices=_CUTS,
        help="the VGG16 layer that feeds the LSTM of a PyTorch CNN-LSTM (default: detected from the sizes)",
    )
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
    if args.lstm is not None and not os.path.isfile(args.lstm):
        why = "is not a file" if os.path.exists(args.lstm) else "no such file"
        raise UserError(f"--lstm {args.lstm}: {why}")
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
    options = _assembly_options(args)
    source = "torch_cnn_lstm" if options else args.source
    if not options:
        _refuse_lstm_alone(args)
    if args.preprocessing is not None:
        options["preprocessing"] = args.preprocessing
    if args.input_size is not None:
        options["input_size"] = args.input_size
    with console.stage("converting"):
        model, how = load_any_model(
            args.checkpoint, prototxt=args.prototxt, source=source, options=options, option=None
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
    if isinstance(model.meta.get("assembly"), dict):
        _report_assembly(console, model.meta)
    if "readout" not in model.meta and "conv5_1" not in model.layer_names:
        convs = ", ".join(n.name for n in model.layers if n.type == "conv") or "none"
        console.info(
            f"note: no default read-out layer (the sidecar names no 'readout' and there is no "
            f"conv5_1): pass --layer to ground and caption; its convolution layers: {convs}"
        )
    return 0


def _assembly_options(args):
    """The options of weights_io's ``torch_cnn_lstm`` converter from ``--lstm``, ``--map`` and ``--cut``.

    Returns
    -------
    dict
        Empty when none of the three is given.

    Raises
    ------
    UserError
        For a bad ``--map`` item, or with ``--prototxt`` or another ``--source``.
    """
    given = [o for o, v in (("--lstm", args.lstm), ("--map", args.map), ("--cut", args.cut)) if v]
    if not given:
        return {}
    if args.prototxt is not None:
        raise UserError(f"{given[0]} assembles a PyTorch CNN-LSTM; --prototxt is for a Caffe checkpoint")
    if args.source not in (None, "torch_cnn_lstm"):
        raise UserError(f"{' and '.join(given)}: only with --source torch_cnn_lstm, not {args.source!r}")
    from weights_io.assemble_torch import parse_map

    try:
        mapping = parse_map(args.map)
    except ValueError as e:
        raise UserError(f"--map {e}") from None
    options = {"lstm": args.lstm, "mapping": mapping or None, "cut": args.cut}
    return {k: v for k, v in options.items() if v is not None}


def _refuse_lstm_alone(args):
    """A UserError for an ``nn.LSTM`` state dict given alone: no CNN, no model; say how to assemble one.

    Detection failures are left to the conversion, which reports them.
    """
    if args.source is not None or args.prototxt is not None or is_canonical_model(args.checkpoint):
        return
    import weights_io

    try:
        source = weights_io.detect_source(args.checkpoint)
    except (ValueError, OSError):
        return
    if source == "torch_lstm":
        raise UserError(
            f"{args.checkpoint} holds an nn.LSTM without a CNN, which is no model by itself; give the CNN's "
            f"state dict and this file as --lstm: ebr-ref convert vgg16.pth --lstm {args.checkpoint} --out "
            f"{args.out} (see 'ebr-ref convert --help')"
        )


def _report_assembly(console, meta):
    """Where each part of an assembled CNN-LSTM was found, the cut, and the tensors left out."""
    a = meta["assembly"]

    def at(role):
        return f"'{a[role]['prefix']}'" if a[role]["prefix"] else "(top level)"

    files = a["cnn"]["file"]
    if a["lstm"]["file"] != files:
        files = f"{files} (CNN) and {a['lstm']['file']} (LSTM, head)"
    cut, H = a["cut"]["layer"], a["lstm"]["hidden"]
    after = f"after relu{cut[2:]}" if cut.startswith("fc") else "flattened"
    console.info(
        f"assembled from {files}: CNN {at('cnn')} up to {cut} ({after}) -> nn.LSTM {at('lstm')} "
        f"({a['lstm']['input']} -> {H}, tanh cell) -> head {at('head')} ({H} -> {a['head']['classes']})"
    )
    found = {r: a[r]["found"] for r in _ROLES}
    found["cut"] = a["cut"]["found"]
    detected = [r for r, how in found.items() if how == "detected"]
    if detected:
        console.info(f"detected: {', '.join(detected)} (--map ROLE=PREFIX and --cut set them)")
    ignored = meta.get("ignored_weights") or []
    if ignored:
        shown = ", ".join(ignored[:6]) + (", ..." if len(ignored) > 6 else "")
        console.info(f"not used: {len(ignored)} tensors ({shown})")
