"""A CNN-LSTM assembled from PyTorch state dicts: a torchvision-VGG16 CNN, an ``nn.LSTM`` and a linear head.

The engine's layer list is the authors' VGG16-LSTM layout (the released
Caffe model, :mod:`weights_io.convert_caffe`): ``conv1_1 ... pool5``,
``flatten``, ``fc6, relu6, drop6``, ``fc7, relu7, drop7`` (up to the cut),
``lstm1`` (tanh cell), ``fc8`` (the head, applied at every time step).

Sources (read with :func:`weights_io.read_tensors`, no torch):

* **one file**: ``torch.save(model.state_dict())`` of a module holding the
  three parts, each under its own key prefix: the CNN in torchvision's VGG16
  layout (``<cnn>features.N.*``, ``<cnn>classifier.N.*``), an ``nn.LSTM``
  (``<lstm>weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``)
  and an ``nn.Linear`` head (``<head>weight``, ``<head>bias``);
* **two files**: a VGG16 state dict (torchvision's ``vgg16-397923af.pth``, or
  a fine-tuned one) and a second state dict holding the ``nn.LSTM`` and the
  head.

The prefixes are detected when each part occurs once (one key ending in
``features.0.weight``, one in ``weight_ih_l0``, one linear layer left over);
otherwise ``mapping`` names them (``--map ROLE=PREFIX`` on the command line).
The cut (the VGG16 layer whose output, after its ReLU, feeds the LSTM:
``pool5``, ``fc6`` or ``fc7``) is ``cut``, or else the one layer the CNN holds
whose width equals the LSTM's input size; when several do, the CNN's last layer
if it is one of them (a CNN cut where the LSTM reads it), else an error asks for
``cut`` (a whole torchvision VGG16: fc6 and fc7 are both 4096 wide). The CNN's fully connected layers
above the cut (torchvision's ImageNet classifier ``classifier.6``) are not
used: they are listed in ``meta["ignored_weights"]``.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy

from ._common import finish, param, source_info
from .convert_torch import (
    TORCHVISION_VGG16_MAP,
    _load,
    lstm_from_state_dict,
    vgg16_from_state_dict,
    vgg16_output_widths,
)
from .errors import CheckpointError
from .gates import SOURCE_GATE_ORDERS
from .presets import preset
from .spec import make_layer

__all__ = ["assemble_torch_cnn_lstm", "parse_map", "check_mapping", "ROLES", "CUTS", "MAP_SYNTAX"]

ROLES = ("cnn", "lstm", "head")
CUTS = ("pool5", "fc6", "fc7")
MAP_SYNTAX = (
    "name the parts with --map cnn=PREFIX --map lstm=PREFIX --map head=PREFIX "
    "(e.g. --map cnn=backbone --map lstm=rnn --map head=fc; an empty PREFIX is the top level; "
    "in Python mapping={'cnn': 'backbone', 'lstm': 'rnn', 'head': 'fc'})"
)
_VGG_MARKER = "features.0.weight"
_LSTM_MARKER = "weight_ih_l0"
_VGG_PARTS = ("features.", "classifier.")
_LSTM_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")
_SHOW = 8


class _File(NamedTuple):
    """One checkpoint read: its buffer, format, tensors (original names) and path."""

    buf: object
    fmt: str
    tensors: dict
    path: str


def _open(path) -> _File:
    buf, fmt, tensors = _load(path, "CNN-LSTM")
    return _File(buf, fmt, tensors, buf.path)


# --------------------------------------------------------------------------- the mapping


def normalise_prefix(value, role) -> str:
    """A module path (``rnn``, ``rnn.``, ``model.rnn``; ``""`` for the top level) as a key prefix ``"rnn."``.

    Raises
    ------
    ValueError
        For a value that is not a str or not a dotted module path.
    """
    if not isinstance(value, str):
        raise ValueError(f"the {role} prefix must be a string, got {value!r}")
    path = value[:-1] if value.endswith(".") else value
    if path == "":
        return ""
    if any(part == "" or part != part.strip() for part in path.split(".")):
        raise ValueError(
            f"the {role} prefix {value!r} is not a module path (names joined by '.', "
            "such as rnn or model.rnn; empty for the top level)"
        )
    return path + "."


def check_mapping(mapping) -> dict:
    """``{role: prefix}`` with known roles and normalised prefixes (:func:`normalise_prefix`).

    Raises
    ------
    ValueError
        For an unknown role or a bad prefix.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ValueError(f"mapping must be a dict {{role: prefix}}, got {type(mapping).__name__}")
    bad = [r for r in mapping if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role(s) {', '.join(map(repr, bad))}: the roles are {', '.join(ROLES)}")
    return {role: normalise_prefix(v, role) for role, v in mapping.items()}


def parse_map(items) -> dict:
    """``["cnn=backbone", "lstm=rnn.", "head=fc"]`` -> ``{"cnn": "backbone.", "lstm": "rnn.", ...}``.

    Raises
    ------
    ValueError
        Naming the item: no ``=``, an unknown role, a role given twice, a bad prefix.
    """
    out = {}
    for item in items or ():
        role, sep, value = str(item).partition("=")
        role = role.strip()
        if not sep:
            raise ValueError(f"{item!r} is not ROLE=PREFIX (ROLE one of {', '.join(ROLES)}, e.g. lstm=rnn)")
        if role not in ROLES:
            raise ValueError(f"{item!r}: unknown role {role!r}; the roles are {', '.join(ROLES)}")
        if role in out:
            raise ValueError(f"{item!r}: the role {role!r} is given twice")
        try:
            out[role] = normalise_prefix(value, role)
        except ValueError as e:
            raise ValueError(f"{item!r}: {e}") from None
    return out


# --------------------------------------------------------------------------- finding the parts


def _prefixes_with(tensors, marker):
    """Sorted prefixes ``p`` (``""`` or ending in ``.``) such that ``p + marker`` is a key."""
    out = set()
    for k in tensors:
        if k.endswith(marker):
            p = k[: -len(marker)]
            if p == "" or p.endswith("."):
                out.add(p)
    return sorted(out)


def _module_of(key):
    """``"fc.weight"`` -> ``("fc.", "weight")``; ``"weight"`` -> ``("", "weight")``."""
    head, _, leaf = key.rpartition(".")
    return (head + "." if head else ""), leaf


def _linear_modules(tensors, keys):
    """``{prefix: (in, out)}`` of the groups of ``keys`` that look like an ``nn.Linear``.

    A group (the keys of one module) is a linear layer when its leaves are ``weight`` (2-d) and
    optionally ``bias``.
    """
    groups = {}
    for k in keys:
        p, leaf = _module_of(k)
        groups.setdefault(p, set()).add(leaf)
    out = {}
    for p, leaves in groups.items():
        w = tensors.get(p + "weight")
        if leaves <= {"weight", "bias"} and w is not None and w.ndim == 2:
            out[p] = (int(w.shape[1]), int(w.shape[0]))
    return out


def _shown(items):
    items = list(items)
    return ", ".join(items[:_SHOW]) + (f", ... ({len(items)} in all)" if len(items) > _SHOW else "")


def _lstm_summary(tensors, p):
    w_ih, w_hh = tensors.get(p + "weight_ih_l0"), tensors.get(p + "weight_hh_l0")
    layers = len({m.group(3) for k in tensors if k.startswith(p) and (m := _LSTM_KEY.fullmatch(k[len(p) :]))})
    bits = []
    if w_ih is not None and w_hh is not None and w_ih.ndim == 2 and w_hh.ndim == 2:
        bits.append(f"input {w_ih.shape[1]}, hidden {w_hh.shape[1]}")
    if layers > 1:
        bits.append(f"{layers} layers")
    if p + "weight_ih_l0_reverse" in tensors:
        bits.append("bidirectional")
    return "nn.LSTM" + (f" ({', '.join(bits)})" if bits else "")


def describe(tensors) -> str:
    """What a state dict holds, by prefix: VGG16-layout CNNs, ``nn.LSTM`` modules, linear layers, the rest.

    Used in the messages that ask for a mapping, so that the prefixes to pass can be read off them.
    """
    vgg = _prefixes_with(tensors, _VGG_MARKER)[:_SHOW]  # capped: the loops below stay linear in the keys
    lstm = _prefixes_with(tensors, _LSTM_MARKER)[:_SHOW]
    claimed = {k for p in vgg for k in tensors if k.startswith(p) and k[len(p) :].startswith(_VGG_PARTS)}
    claimed |= {k for p in lstm for k in tensors if k.startswith(p) and _LSTM_KEY.fullmatch(k[len(p) :])}
    rest = [k for k in tensors if k not in claimed]
    linear = _linear_modules(tensors, rest)
    other = [k for k in rest if _module_of(k)[0] not in linear]
    parts = [f"{p!r}: a VGG16-layout CNN (features.N / classifier.N)" for p in vgg]
    parts += [f"{p!r}: {_lstm_summary(tensors, p)}" for p in lstm]
    parts += [f"{p!r}: a linear layer ({i} -> {o})" for p, (i, o) in sorted(linear.items())]
    if other:
        parts.append(f"other tensors: {_shown(other)}")
    return "; ".join(parts) if parts else "no tensors"


def _resolve(f: _File, prefix, role):
    """The key prefix of a mapped ``prefix``: as given, or under one wrapper (``state_dict.``, ``module.``).

    Raises
    ------
    CheckpointError
        When no key starts with it (naming what the file holds) or several wrappers hold it.
    """
    if prefix == "" or any(k.startswith(prefix) for k in f.tensors):
        return prefix
    found = set()
    for k in f.tensors:
        i = k.find("." + prefix)
        while i >= 0:
            found.add(k[: i + 1] + prefix)
            i = k.find("." + prefix, i + 1)
    if not found:
        raise CheckpointError(
            f.path,
            f"map {role}={prefix}: no tensor name starts with {prefix!r} (nor contains it after a wrapper "
            f"such as 'state_dict.'); the file holds {describe(f.tensors)}",
        )
    if len(found) > 1:
        raise CheckpointError(
            f.path,
            f"map {role}={prefix}: {prefix!r} occurs under several prefixes "
            f"({_shown(map(repr, sorted(found)))}); map the full prefix",
        )
    return found.pop()


def _detect(f: _File, role, marker, what):
    """The one prefix under which ``marker`` exists, else a CheckpointError listing what the file holds."""
    found = _prefixes_with(f.tensors, marker)
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(
            f.path,
            f"no {role} found (no {what}: no key ends with {marker!r}); the file holds "
            f"{describe(f.tensors)}; {MAP_SYNTAX}",
        )
    raise CheckpointError(
        f.path,
        f"several {what}s found (prefixes {_shown(map(repr, found))}): which one is the {role}? {MAP_SYNTAX}",
    )


def _prefix(f: _File, role, mapping, marker, what):
    """``(prefix, "mapped" or "detected")`` of a role."""
    if role in mapping:
        return _resolve(f, mapping[role], role), "mapped"
    return _detect(f, role, marker, what), "detected"


# --------------------------------------------------------------------------- the three parts


def _lstm_state(f: _File, prefix):
    """The ``nn.LSTM``'s tensors (keys relative to ``prefix``) and the file's keys they are; refuses what the
    engine's one-layer LSTM cannot be (bidirectional, projected, stacked, a GRU or RNN).

    Returns
    -------
    sd : dict
    keys : list of str
    """
    keys = [k for k in f.tensors if k.startswith(prefix) and _LSTM_KEY.fullmatch(k[len(prefix) :])]
    sd = {k[len(prefix) :]: f.tensors[k] for k in keys}
    where = f"the nn.LSTM at {prefix!r}"
    if _LSTM_MARKER not in sd:
        cell = " (an nn.LSTMCell, which is not supported)" if prefix + "weight_ih" in f.tensors else ""
        raise CheckpointError(
            f.path,
            f"no nn.LSTM weights under {prefix!r}: expected {prefix}weight_ih_l0, weight_hh_l0, bias_ih_l0, "
            f"bias_hh_l0{cell}; the file holds {describe(f.tensors)}; {MAP_SYNTAX}",
        )
    if any(k.endswith("_reverse") for k in sd):
        raise CheckpointError(
            f.path,
            f"{where} is bidirectional (weight_ih_l0_reverse...): bidirectional LSTMs are not supported",
        )
    if any(k.startswith("weight_hr") for k in sd):
        raise CheckpointError(
            f.path, f"{where} has a projection (weight_hr_l0, proj_size > 0): projections are not supported"
        )
    n = len({_LSTM_KEY.fullmatch(k).group(3) for k in sd})
    if n > 1:
        raise CheckpointError(
            f.path,
            f"{where} has {n} layers (weight_ih_l0 ... weight_ih_l{n - 1}, num_layers={n}): not supported, "
            "the engine's model has one lstm layer",
        )
    for name, shape in (("weight_ih_l0", "(4H, D)"), ("weight_hh_l0", "(4H, H)")):
        w = sd.get(name)
        if w is None or w.ndim != 2 or 0 in w.shape:
            found = "missing" if w is None else f"of shape {tuple(w.shape)}"
            raise CheckpointError(f.path, f"tensor {prefix}{name} {shape} of {where} is {found}")
    _refuse_other_rnns(sd, prefix, f.path)
    return sd, keys


def _refuse_other_rnns(sd, prefix, path):
    """nn.GRU and nn.RNN share nn.LSTM's names; their ``weight_hh_l0`` is (3H, H) and (H, H)."""
    w = sd["weight_hh_l0"]
    if w.shape[0] == 4 * w.shape[1]:
        return
    kind = {3: "an nn.GRU", 1: "an nn.RNN"}.get(
        w.shape[0] // w.shape[1] if w.shape[0] % w.shape[1] == 0 else 0
    )
    guess = f" ({kind}?)" if kind else ""
    raise CheckpointError(
        path,
        f"tensor {prefix}weight_hh_l0 has shape {tuple(w.shape)}, not (4H, H){guess}: "
        "only nn.LSTM is supported",
    )


def _head_prefix(f: _File, mapping, claimed, H):
    """``(prefix, "mapped" or "detected")`` of the linear head among the tensors not ``claimed``."""
    if "head" in mapping:
        return _resolve(f, mapping["head"], "head"), "mapped"
    rest = [k for k in f.tensors if k not in claimed]
    linear = _linear_modules(f.tensors, rest)
    if len(linear) > 1:
        fitting = {p: io for p, io in linear.items() if io[0] == H}
        linear = fitting if len(fitting) == 1 else linear
    if len(linear) == 1:
        return next(iter(linear)), "detected"
    if not linear:
        raise CheckpointError(
            f.path,
            "no linear head found: besides the CNN and the LSTM there is no nn.Linear "
            f"(PREFIX weight (classes, {H}), PREFIX bias); the file holds {describe(f.tensors)}; "
            f"{MAP_SYNTAX}",
        )
    shown = _shown(f"{p!r} ({i} -> {o})" for p, (i, o) in sorted(linear.items()))
    raise CheckpointError(
        f.path, f"several linear layers could be the head: {shown}; which one? {MAP_SYNTAX}"
    )


def _head_part(f: _File, prefix, H, lstm_where, dtype):
    """The ``fc8`` layer (the head, at every step) and its parameters.

    Returns
    -------
    layer, params, name_map, transforms, keys
    """
    w, b = f.tensors.get(prefix + "weight"), f.tensors.get(prefix + "bias")
    if w is None:
        under = [k for k in f.tensors if k.startswith(prefix)]
        raise CheckpointError(
            f.path,
            f"no linear head under {prefix!r}: expected {prefix}weight (classes, {H}) and {prefix}bias; "
            f"found under it: {_shown(under) or 'nothing'}",
        )
    if w.ndim != 2:
        raise CheckpointError(
            f.path, f"tensor {prefix}weight (the head): expected (classes, in), found {w.shape}"
        )
    C, n_in = int(w.shape[0]), int(w.shape[1])
    if n_in != H:
        raise CheckpointError(
            f.path,
            f"sizes do not chain: the head {prefix!r} takes {n_in} inputs ({prefix}weight is "
            f"{tuple(w.shape)}) but {lstm_where} has hidden size {H}",
        )
    if b is not None and tuple(b.shape) != (C,):
        raise CheckpointError(
            f.path, f"tensor {prefix}bias (the head): expected shape {(C,)}, found {b.shape}"
        )
    layer = make_layer("fc8", "fc", out_features=C, bias=b is not None)
    params = {"fc8.weight": param(w, dtype=dtype)}
    name_map, transforms = {"fc8.weight": prefix + "weight"}, {"fc8.weight": "none"}
    if b is not None:
        params["fc8.bias"] = param(b, dtype=dtype)
        name_map["fc8.bias"], transforms["fc8.bias"] = prefix + "bias", "none"
    keys = [k for k in (prefix + "weight", prefix + "bias") if k in f.tensors]
    return layer, params, name_map, transforms, keys


def _cnn_state(f: _File, prefix):
    """The CNN's tensors (``features.*``, ``classifier.*`` under ``prefix``), keys relative to it."""
    sd = {
        k[len(prefix) :]: v
        for k, v in f.tensors.items()
        if k.startswith(prefix) and k[len(prefix) :].startswith(_VGG_PARTS)
    }
    if _VGG_MARKER not in sd:
        raise CheckpointError(
            f.path,
            f"no VGG16-layout CNN under {prefix!r}: expected {prefix}features.0.weight ... "
            f"{prefix}classifier.N.*; the file holds {describe(f.tensors)}; {MAP_SYNTAX}",
        )
    known = {f"{tv}.{fld}" for tv in TORCHVISION_VGG16_MAP.values() for fld in ("weight", "bias")}
    extra = sorted(set(sd) - known)
    if extra:
        hint = " (BatchNorm keys: vgg16_bn is not supported)" if any("running_" in e for e in extra) else ""
        raise CheckpointError(
            f.path, f"unexpected tensors in the CNN {prefix!r}: {_shown(prefix + e for e in extra)}{hint}"
        )
    return sd


def _choose_cut(cut, widths, D, cnn_prefix, lstm_where, path):
    """``(cut, "given" or "detected")``: the CNN layer feeding the LSTM, its width checked against ``D``."""
    sizes = ", ".join(f"{c} {widths[c]}" for c in CUTS if c in widths)
    if cut is not None:
        if cut not in widths:
            src = TORCHVISION_VGG16_MAP[cut]
            raise CheckpointError(path, f"cut {cut}: the CNN {cnn_prefix!r} has no {cnn_prefix}{src}.weight")
        if widths[cut] != D:
            raise CheckpointError(
                path,
                f"sizes do not chain: the CNN's output at {cut} has {widths[cut]} features but {lstm_where} "
                f"takes inputs of size {D} (the CNN's outputs: {sizes})",
            )
        return cut, "given"
    fits = [c for c in CUTS if widths.get(c) == D]
    if not fits:
        raise CheckpointError(
            path,
            f"sizes do not chain: {lstm_where} takes inputs of size {D} but none of the CNN's outputs has "
            f"that size ({sizes}; pool5 depends on the input size)",
        )
    top = [c for c in CUTS + ("fc8",) if c in widths][-1]  # the CNN's last layer
    if len(fits) > 1 and fits[-1] != top:  # e.g. a whole torchvision VGG16: fc6 and fc7 both 4096 wide
        raise CheckpointError(
            path,
            f"which layer feeds the LSTM is ambiguous: {' and '.join(fits)} both give {lstm_where}'s input "
            f"size {D}, and the CNN holds layers above them ({sizes}, fc8 {widths.get('fc8', '-')}); "
            f"name it with --cut {'|'.join(fits)} (cut= in Python)",
        )
    return fits[-1], "detected"


def _root(prefixes):
    """The longest common module path of ``prefixes`` (``["m.cnn.", "m.rnn."]`` -> ``"m."``)."""
    paths = [p.split(".")[:-1] for p in prefixes]
    common = []
    for names in zip(*paths):
        if any(n != names[0] for n in names):
            break
        common.append(names[0])
    return "".join(n + "." for n in common)


def _leftovers(f: _File, claimed, root, strict, what):
    """The tensors of ``f`` no part uses, which are ignored (returned, sorted) or refused.

    Those outside ``root`` (the module holding the parts: an EMA copy, an optimizer's state beside the
    model) are ignored; those inside it belong to another layer of the model and are refused when
    ``strict``.
    """
    rest = sorted(k for k in f.tensors if k not in claimed)
    inside = [k for k in rest if k.startswith(root)]
    if inside and strict:
        where = f" under {root!r}" if root else ""
        raise CheckpointError(
            f.path,
            f"tensors{where} that are not part of the {what}: {_shown(inside)}; a model with other layers "
            f"cannot be converted (or check the prefixes: {MAP_SYNTAX})",
        )
    return rest


# --------------------------------------------------------------------------- the converter


def assemble_torch_cnn_lstm(
    path,
    *,
    lstm=None,
    mapping=None,
    cut=None,
    preprocessing="torchvision",
    dtype=None,
    input_size=224,
    strict=True,
):
    """Convert a PyTorch CNN-LSTM (VGG16 CNN, ``nn.LSTM``, linear head) from one or two state dicts.

    Transforms: the CNN's as :func:`weights_io.convert_torch.convert_torchvision_vgg16` (none); the LSTM's as
    :func:`weights_io.convert_torch.convert_torch_lstm` (gate blocks i, f, g, o -> i, f, o, g, the two
    biases summed, tanh cell); the head ``weight (classes, H)``, ``bias``: none. The engine runs the CNN on
    every frame, the LSTM over the frames from a zero state, and the head at every step: torch's
    ``head(lstm(cnn(frames))[0])``.

    Parameters
    ----------
    path : str
        The state dict holding the CNN (and, without ``lstm``, the LSTM and the head too).
    lstm : str, optional
        A second state dict holding the ``nn.LSTM`` and the head.
    mapping : dict, optional
        ``{"cnn": prefix, "lstm": prefix, "head": prefix}`` (any of them; module paths such as
        ``"backbone"`` or ``"model.rnn."``, ``""`` for the top level); the others are detected.
    cut : str, optional
        ``"pool5"``, ``"fc6"`` or ``"fc7"``: the CNN layer whose output (after its ReLU; pool5 flattened)
        feeds the LSTM. Default: the layer whose width equals the LSTM's input size; of several, the
        CNN's last layer if it is one of them, else a CheckpointError asks for ``cut``.
    preprocessing : str or dict
        Preset recorded in the meta (default torchvision's).
    dtype : numpy dtype, optional
    input_size : int or (int, int)
        The frame size (as :func:`~weights_io.convert_torch.convert_torchvision_vgg16`).
    strict : bool
        Refuse tensors that belong to no part (another layer of the model); when False they are listed in
        ``meta["ignored_weights"]``. The CNN's layers above the cut are always listed there.

    Returns
    -------
    params, meta
        ``meta["assembly"]`` records each part's file and prefix (and whether it was mapped or
        detected) and the cut.

    Raises
    ------
    CheckpointError
        Naming the file and the problem: a part not found or found several times (with what the file
        holds and the mapping syntax), a bidirectional, multi-layer or projected LSTM, sizes that do not
        chain (both sizes), unexpected tensors.
    """
    try:
        mapping = check_mapping(mapping)
    except ValueError as e:
        raise CheckpointError(path, str(e)) from None
    if cut is not None and cut not in CUTS:
        raise CheckpointError(path, f"cut must be one of {', '.join(CUTS)}, got {cut!r}")
    cnn_f = _open(path)
    lstm_f = cnn_f if lstm is None else _open(lstm)
    cnn_prefix, cnn_how = _prefix(cnn_f, "cnn", mapping, _VGG_MARKER, "VGG16-layout CNN")
    lstm_prefix, lstm_how = _prefix(lstm_f, "lstm", mapping, _LSTM_MARKER, "nn.LSTM")
    cnn_sd = _cnn_state(cnn_f, cnn_prefix)
    cnn_keys = {cnn_prefix + k for k in cnn_sd}
    lstm_sd, lstm_keys = _lstm_state(lstm_f, lstm_prefix)
    D, H = int(lstm_sd[_LSTM_MARKER].shape[-1]), int(lstm_sd["weight_hh_l0"].shape[1])
    lstm_where = f"the nn.LSTM {lstm_prefix!r}" + (f" of {os.path.basename(lstm_f.path)}" if lstm else "")
    claimed = set(lstm_keys) | (cnn_keys if lstm is None else set())
    head_prefix, head_how = _head_prefix(lstm_f, mapping, claimed, H)
    if dtype is None:
        head_tensors = [lstm_f.tensors.get(head_prefix + f) for f in ("weight", "bias")]
        dtype = _common_dtype([*cnn_sd.values(), *lstm_sd.values(), *head_tensors])
    head_layer, head_p, head_names, head_tr, head_keys = _head_part(lstm_f, head_prefix, H, lstm_where, dtype)
    _refuse_overlap(lstm_f.path, cnn_keys if lstm is None else set(), lstm_keys, head_keys)
    lstm_layers, _, lstm_p, lstm_names, lstm_tr = lstm_from_state_dict(
        lstm_sd, prefix=lstm_prefix, path=lstm_f.path, names=["lstm1"], dtype=dtype
    )
    widths = vgg16_output_widths(cnn_sd, prefix=cnn_prefix, path=cnn_f.path, input_size=input_size)
    cut, cut_how = _choose_cut(cut, widths, D, cnn_prefix, lstm_where, cnn_f.path)
    layers, input_shape, params, name_map, transforms = vgg16_from_state_dict(
        cnn_sd, prefix=cnn_prefix, path=cnn_f.path, input_size=input_size, top=cut, dtype=dtype
    )
    above = sorted(k for k in cnn_keys if k not in set(name_map.values()))
    parts = {"cnn": (cnn_f, cnn_prefix, cnn_how), "lstm": (lstm_f, lstm_prefix, lstm_how)}
    parts["head"] = (lstm_f, head_prefix, head_how)
    ignored = _unused(parts, cnn_keys, set(lstm_keys) | set(head_keys), strict, two_files=lstm is not None)
    layers += lstm_layers + [head_layer]
    for part in ((lstm_p, lstm_names, lstm_tr), (head_p, head_names, head_tr)):
        params.update(part[0])
        name_map.update(part[1])
        transforms.update(part[2])
    assembly = _assembly(parts, D, H, head_layer["out_features"], (cut, cut_how, widths), above)
    meta = {
        "name": "vgg16_lstm",
        "source": _sources(cnn_f, None if lstm is None else lstm_f),
        "source_gate_order": SOURCE_GATE_ORDERS["torch"],
        "cell_act": "tanh",
        "preprocessing": preset(preprocessing),
        "output": None,
        "name_map": name_map,
        "transforms": transforms,
        "ignored_weights": sorted(above + ignored),
        "assembly": assembly,
    }
    return finish(params, layers, input_shape, meta, cnn_f.path)


def _unused(parts, cnn_keys, lstm_keys, strict, two_files):
    """The tensors no part uses, outside the model's module (inside it: refused when ``strict``).

    ``parts`` is ``{role: (file, prefix, found)}``; ``lstm_keys`` are the LSTM's and the head's tensors.
    """
    cnn_f, cnn_prefix, _ = parts["cnn"]
    if not two_files:
        root = _root([p for _, p, _ in parts.values()])
        return _leftovers(cnn_f, cnn_keys | lstm_keys, root, strict, "CNN-LSTM")
    root = _root([parts["lstm"][1], parts["head"][1]])
    ignored = _leftovers(cnn_f, cnn_keys, cnn_prefix, strict, "CNN")
    return ignored + _leftovers(parts["lstm"][0], lstm_keys, root, strict, "LSTM and its head")


def _sources(cnn_f: _File, lstm_f):
    """``meta["source"]``: the first file's, with the second file's (if any) under ``"lstm"``."""
    source = source_info(cnn_f.buf, cnn_f.fmt, "torch_cnn_lstm")
    if lstm_f is not None:
        source["lstm"] = source_info(lstm_f.buf, lstm_f.fmt, "torch_cnn_lstm")
    return source


def _assembly(parts, D, H, classes, cut, above):
    """``meta["assembly"]``: each part's file, prefix and how it was found; the sizes; the cut."""
    out = {
        r: {"file": os.path.basename(f.path), "prefix": p, "found": how} for r, (f, p, how) in parts.items()
    }
    out["lstm"].update(input=int(D), hidden=int(H))
    out["head"]["classes"] = int(classes)
    layer, found, widths = cut
    out["cut"] = {"layer": layer, "found": found, "widths": widths}
    out["above_cut"] = above
    return out


def _common_dtype(tensors):
    """None when the parameters' dtypes agree, else the one that holds them all (float32 + float64 ->
    float64): a model has one dtype. A tensor's parameter dtype is its own when floating, else float32
    (as :func:`weights_io._common.param` converts it)."""
    f32 = numpy.dtype("float32")
    dts = {t.dtype if t.dtype.kind == "f" else f32 for t in tensors if t is not None}
    return None if len(dts) <= 1 else numpy.result_type(*dts)


def _refuse_overlap(path, cnn_keys, lstm_keys, head_keys):
    """A CheckpointError when two parts claim one tensor (nested prefixes)."""
    parts = {"cnn": set(cnn_keys), "lstm": set(lstm_keys), "head": set(head_keys)}
    for i, a in enumerate(ROLES):
        for b in ROLES[i + 1 :]:
            both = sorted(parts[a] & parts[b])
            if both:
                raise CheckpointError(
                    path, f"the {a} and the {b} claim the same tensors ({_shown(both)}); check the prefixes"
                )
