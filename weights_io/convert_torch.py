"""PyTorch state dicts (torchvision VGG16, ``nn.LSTM``) -> canonical parameters.

Checkpoints are read with :func:`weights_io.read_tensors` (restricted
unpickler, no torch). A state dict may sit under a wrapper key (``state_dict``,
``model``) and carry DataParallel's ``module.`` prefix; the converter finds the
prefix under which the expected keys exist. The file may also be a
``.safetensors`` or ``.npz`` holding the same keys.
"""

from __future__ import annotations

from ._common import finish, lstm_params, param, source_info
from .errors import CheckpointError
from .gates import SOURCE_GATE_ORDERS
from .presets import preset
from .readers import _tensors, guarded, open_checked
from .spec import Tracer, make_layer, trace

__all__ = [
    "convert_torchvision_vgg16",
    "convert_torch_lstm",
    "vgg16_layers",
    "adaptive_avgpool",
    "TORCHVISION_VGG16_MAP",
    "VGG16_TOPS",
    "vgg16_from_state_dict",
    "vgg16_output_widths",
    "lstm_from_state_dict",
    "find_prefix",
]

_VGG16_BLOCKS = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]


def _vgg16_feature_names():
    names, idx = [], 0
    for b, _w, n in _VGG16_BLOCKS:
        for k in range(1, n + 1):
            names.append((f"conv{b}_{k}", idx))
            idx += 2  # conv, ReLU
        idx += 1  # MaxPool
    return names


# canonical layer -> torchvision module index (make_layers(cfg "D") + classifier)
TORCHVISION_VGG16_MAP = dict(
    [(c, f"features.{i}") for c, i in _vgg16_feature_names()]
    + [("fc6", "classifier.0"), ("fc7", "classifier.3"), ("fc8", "classifier.6")]
)


def vgg16_layers(num_classes=1000, *, ceil_mode, dropout=True, include_top=True, widths=None, fc_sizes=None):
    """The VGG16 (configuration D) layer specs with Caffe's layer names.

    ``widths`` (13 conv output channels, default 64, 64, 128, ..., 512) and
    ``fc_sizes`` (fc6, fc7 sizes, default 4096, 4096) allow VGG16-shaped
    models of other widths (used by the tests).
    """
    widths = list(widths) if widths is not None else [w for _b, w, n in _VGG16_BLOCKS for _ in range(n)]
    fc_sizes = list(fc_sizes) if fc_sizes is not None else [4096, 4096]
    layers, j = [], 0
    for b, _width, n in _VGG16_BLOCKS:
        for k in range(1, n + 1):
            layers.append(
                make_layer(f"conv{b}_{k}", "conv", out_channels=int(widths[j]), kernel=3, stride=1, padding=1)
            )
            layers.append(make_layer(f"relu{b}_{k}", "relu"))
            j += 1
        layers.append(make_layer(f"pool{b}", "maxpool", kernel=2, stride=2, padding=0, ceil_mode=ceil_mode))
    if include_top:
        layers.append(make_layer("flatten", "flatten"))
        for j, out in ((6, fc_sizes[0]), (7, fc_sizes[1])):
            layers.append(make_layer(f"fc{j}", "fc", out_features=int(out)))
            layers.append(make_layer(f"relu{j}", "relu"))
            if dropout:
                layers.append(make_layer(f"drop{j}", "dropout", p=0.5))
        layers.append(make_layer("fc8", "fc", out_features=int(num_classes)))
    return layers


def _input_hw(size, path):
    """``(H, W)`` from an int or a pair."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        h, w = size
    else:
        h = w = size
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CheckpointError(path, f"input_size must be a positive int or a pair of them, got {size!r}")
    return int(h), int(w)


def adaptive_avgpool(in_hw, out_hw, path, image_hw, name="avgpool"):
    """The engine layer for ``AdaptiveAvgPool2d(out_hw)`` on an ``in_hw`` map: None (identity) or an avgpool.

    torch's adaptive windows along an axis of ``n`` cells pooled to ``m`` are
    ``[floor(i n / m), ceil((i + 1) n / m))``: uniform and disjoint -- an
    average pooling with ``kernel = stride = n / m`` -- exactly when ``m``
    divides ``n``; otherwise they overlap and differ in size, which no engine
    layer represents (the message names the input sizes that work).
    """
    (n_h, n_w), (m_h, m_w) = in_hw, out_hw
    if (n_h, n_w) == (m_h, m_w):
        return None
    if n_h % m_h == 0 and n_w % m_w == 0:
        k = [n_h // m_h, n_w // m_w]
        return make_layer(
            name, "avgpool", kernel=k, stride=k, padding=0, ceil_mode=False, count_include_pad=True
        )
    raise CheckpointError(
        path,
        (
            f"input size {image_hw[0]}x{image_hw[1]} gives a {n_h}x{n_w} pool5 map; torchvision's "
            f"AdaptiveAvgPool2d(({m_h}, {m_w})) is represented exactly only when pool5 is {m_h}k x {m_w}k "
            "(uniform windows: an average pooling, or the identity for k = 1), i.e. for input sizes "
            "224..255, 448..479, 672..703, ... (32*7k to 32*7k + 31 pixels per side); other sizes would "
            "need an adaptive pooling layer (overlapping windows), which the engine does not have: resize "
            "the frames to one of these sizes"
        ),
    )


def _out_dim(t, what, path):
    if t is None:
        raise CheckpointError(path, f"tensor {what} is missing")
    if t.ndim < 2:
        raise CheckpointError(
            path, f"tensor {what}: expected a weight matrix/kernel, found shape {tuple(t.shape)}"
        )
    return int(t.shape[0])


def find_prefix(tensors: dict, marker: str, path, what: str) -> str:
    """The key prefix under which ``marker`` exists (``''``, ``'module.'``, ``'state_dict.'``...)."""
    cands = sorted((k[: -len(marker)] for k in tensors if k.endswith(marker)), key=len)
    cands = [c for c in cands if c == "" or c.endswith(".")]
    if not cands:
        raise CheckpointError(
            path, f"no {what} found: no key ends with {marker!r} (keys: {list(tensors)[:8]}...)"
        )
    if len(cands) > 1 and len(cands[0]) == len(cands[1]):
        raise CheckpointError(path, f"several {what}s found (prefixes {cands}); pass prefix=")
    return cands[0]


VGG16_TOPS = ("pool5", "fc6", "fc7", "fc8")


def _vgg16_body(sd, prefix, path, input_shape):
    """The conv part (``conv1_1`` ... ``pool5``, plus torchvision's adaptive pooling when it is a layer).

    Widths are read from the weights; nothing is copied.
    """
    convs = [c for c in TORCHVISION_VGG16_MAP if c.startswith("conv")]
    widths = [
        _out_dim(
            sd.get(f"{TORCHVISION_VGG16_MAP[c]}.weight"), prefix + TORCHVISION_VGG16_MAP[c] + ".weight", path
        )
        for c in convs
    ]
    layers = vgg16_layers(ceil_mode=False, include_top=False, widths=widths)
    shapes, _ = trace(layers, input_shape, path)
    adaptive = adaptive_avgpool(shapes[-1][1:], (7, 7), path, input_shape[1:])
    if adaptive is not None:
        layers.append(adaptive)
    return layers


def vgg16_output_widths(sd, *, prefix, path, input_size):
    """The output width of each possible top of a torchvision-layout VGG16, without copying anything.

    Parameters
    ----------
    sd : dict
        The VGG16's tensors, keys relative to ``prefix`` (``features.0.weight``...).
    prefix : str
        For messages.
    path : str
        For messages.
    input_size : int or (int, int)

    Returns
    -------
    dict
        ``{"pool5": C*H*W (flattened, after the adaptive pooling), "fc6": out, "fc7": out, "fc8": out}``
        for the tops whose weights ``sd`` holds (``classifier.0``, ``.3``, ``.6``).
    """
    input_shape = (3,) + _input_hw(input_size, path)
    layers = _vgg16_body(sd, prefix, path, input_shape)
    shapes, _ = trace(layers, input_shape, path)
    out = {"pool5": int(shapes[-1][0] * shapes[-1][1] * shapes[-1][2])}
    for c in VGG16_TOPS[1:]:
        w = sd.get(f"{TORCHVISION_VGG16_MAP[c]}.weight")
        if w is not None:
            out[c] = _out_dim(w, prefix + TORCHVISION_VGG16_MAP[c] + ".weight", path)
    return out


def vgg16_from_state_dict(sd, *, prefix, path, input_size, top="fc8", dtype=None):
    """Engine layers and canonical parameters of a torchvision-layout VGG16, from ``conv1_1`` up to ``top``.

    The layers are those of :func:`convert_torchvision_vgg16`: ``conv1_1`` ...
    ``pool5`` (+ ``avgpool`` where torchvision's adaptive pooling is one),
    ``flatten``, then per fully connected layer up to ``top``: ``fc6, relu6,
    drop6``, ``fc7, relu7, drop7``, ``fc8`` (no ReLU). Parameters are copied
    once, with no transform.

    Parameters
    ----------
    sd : dict
        The VGG16's tensors, keys relative to ``prefix``.
    prefix : str
        The prefix the keys had in the file (for ``name_map`` and messages).
    path : str
        For messages.
    input_size : int or (int, int)
    top : str
        ``"pool5"`` (the flattened pooled map), ``"fc6"``, ``"fc7"`` or ``"fc8"``.
    dtype : numpy dtype, optional

    Returns
    -------
    layers, input_shape, params, name_map, transforms
    """
    if top not in VGG16_TOPS:
        raise ValueError(f"top must be one of {', '.join(VGG16_TOPS)}, got {top!r}")
    input_shape = (3,) + _input_hw(input_size, path)
    layers = _vgg16_body(sd, prefix, path, input_shape)
    layers.append(make_layer("flatten", "flatten"))
    fcs = list(VGG16_TOPS[1 : VGG16_TOPS.index(top) + 1])
    for c in fcs:
        src = f"{TORCHVISION_VGG16_MAP[c]}.weight"
        layers.append(make_layer(c, "fc", out_features=_out_dim(sd.get(src), prefix + src, path)))
        if c != "fc8":
            layers += [make_layer(f"relu{c[2:]}", "relu"), make_layer(f"drop{c[2:]}", "dropout", p=0.5)]
    _, expect = trace(layers, input_shape, path)
    params, name_map, transforms = {}, {}, {}
    for canon, tv in TORCHVISION_VGG16_MAP.items():
        if canon.startswith("fc") and canon not in fcs:
            continue
        for field in ("weight", "bias"):
            k, src = f"{canon}.{field}", f"{tv}.{field}"
            if src not in sd:
                raise CheckpointError(path, f"tensor {prefix}{src} (for {k}) is missing")
            if tuple(sd[src].shape) != expect[k]:
                raise CheckpointError(
                    path,
                    f"tensor {prefix}{src} (for {k}): expected shape {expect[k]}, "
                    f"found {tuple(sd[src].shape)}",
                )
            params[k] = param(sd[src], dtype=dtype)
            name_map[k], transforms[k] = prefix + src, "none"
    return layers, input_shape, params, name_map, transforms


def _load(path, what):
    buf, fmt = open_checked(path)
    if fmt not in ("torch", "safetensors", "npz"):
        raise buf.error(f"expected a PyTorch state dict (torch, safetensors or npz file), found a {fmt} file")
    return buf, fmt, guarded(buf, fmt, _tensors, buf, fmt)


def convert_torchvision_vgg16(
    path, *, prefix=None, preprocessing="torchvision", dtype=None, input_size=224, strict=True
):
    """Convert a torchvision ``vgg16`` state dict.

    Name map (torchvision ``make_layers`` for cfg "D"): ``features.{0,2}`` ->
    ``conv1_{1,2}``, ``features.{5,7}`` -> ``conv2_*``, ``features.{10,12,14}``
    -> ``conv3_*``, ``features.{17,19,21}`` -> ``conv4_*``,
    ``features.{24,26,28}`` -> ``conv5_*``, ``classifier.{0,3,6}`` ->
    ``fc6, fc7, fc8``.

    Transforms: **none**. torchvision's conv weights are ``(oC, iC, kH, kW)``
    and its ``Linear`` weights ``(out, in)``; ``classifier.0`` expects the
    pool5 map flattened C, H, W, like Caffe's fc6. Pools are floor-mode
    (``MaxPool2d(2, 2)``). torchvision's ``AdaptiveAvgPool2d((7, 7))`` is the
    identity for inputs whose pool5 map is 7x7 (224..255 pixels; no layer)
    and an average pooling with kernel = stride = k for a 7k x 7k map (448..479,
    672..703... pixels; a layer ``avgpool`` after ``pool5``); other sizes are
    refused with the list of supported ones (:func:`adaptive_avgpool`).

    Parameters
    ----------
    path : str
    prefix : str, optional
        Key prefix of the state dict (found automatically).
    preprocessing : str or dict
        ``"torchvision"`` (IMAGENET1K_V1) or ``"torchvision_features"``
        (the Caffe-style IMAGENET1K_FEATURES port).
    dtype : numpy dtype, optional
    input_size : int or (int, int)
        The frame size (square when an int).
    strict : bool
        Refuse unexpected keys under the prefix (e.g. BatchNorm of vgg16_bn).

    Returns
    -------
    params, meta
    """
    buf, fmt, tensors = _load(path, "vgg16")
    P = buf.path
    if prefix is None:
        prefix = find_prefix(tensors, "features.0.weight", P, "VGG16 state dict")
    sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "classifier.6.weight" not in sd:
        raise CheckpointError(
            P, "tensor classifier.6.weight (fc8) not found; expected a torchvision vgg16 state dict"
        )
    layers, input_shape, params, name_map, transforms = vgg16_from_state_dict(
        sd, prefix=prefix, path=P, input_size=input_size, top="fc8", dtype=dtype
    )
    extra = sorted(
        set(sd) - {f"{tv}.{f}" for tv in TORCHVISION_VGG16_MAP.values() for f in ("weight", "bias")}
    )
    if extra and strict:
        hint = (
            " (BatchNorm keys: vgg16_bn is not supported)" if any("running_mean" in e for e in extra) else ""
        )
        raise CheckpointError(P, f"unexpected tensors in the state dict: {extra[:10]}{hint}")
    meta = {
        "name": "vgg16",
        "source": source_info(buf, fmt, "torchvision_vgg16"),
        "preprocessing": preset(preprocessing),
        "output": None,
        "name_map": name_map,
        "transforms": transforms,
        "ignored_weights": sorted(set(tensors) - set(name_map.values())),
    }
    return finish(params, layers, input_shape, meta, P)


def convert_torch_lstm(path, *, prefix=None, names=None, dtype=None):
    """Convert ``nn.LSTM`` (or ``nn.LSTMCell``) weights.

    For each layer ``k``: ``weight_ih_l{k}`` (4H, D), ``weight_hh_l{k}`` (4H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H) (``nn.LSTMCell``: ``weight_ih``...).

    Transforms (gate blocks: PyTorch i, f, g, o -> canonical i, f, o, g, i.e.
    source blocks [0, 1, 3, 2]):

    * ``W_x = weight_ih[blocks]`` (row-block permutation),
    * ``W_h = weight_hh[blocks]``,
    * ``b = (bias_ih + bias_hh)[blocks]`` (the two biases summed; zero without bias).

    Bidirectional LSTMs (``_reverse``) and projections (``weight_hr``) are
    refused. The cell is tanh (``cell_act="tanh"``).

    Parameters
    ----------
    path : str
    prefix : str, optional
        Key prefix of the LSTM module (``"lstm."``, found automatically).
    names : list of str, optional
        Canonical layer names; default ``lstm1``, ``lstm2``...
    dtype : numpy dtype, optional

    Returns
    -------
    params, meta
        ``meta["architecture"]`` lists the LSTM layers only; ``input_shape`` is ``[D]``.
    """
    buf, fmt, tensors = _load(path, "LSTM")
    P = buf.path
    cell = False
    if prefix is None:
        try:
            prefix = find_prefix(tensors, "weight_ih_l0", P, "nn.LSTM")
        except CheckpointError:
            prefix = find_prefix(tensors, "weight_ih", P, "nn.LSTM or nn.LSTMCell")
            cell = True
    else:
        cell = f"{prefix}weight_ih" in tensors and f"{prefix}weight_ih_l0" not in tensors
    sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    layers, input_shape, params, name_map, transforms = lstm_from_state_dict(
        sd, prefix=prefix, path=P, cell=cell, names=names, dtype=dtype
    )
    meta = {
        "name": "lstm",
        "source": source_info(buf, fmt, "torch_lstm"),
        "source_gate_order": "ifgo",
        "cell_act": "tanh",
        "preprocessing": None,
        "output": None,
        "name_map": name_map,
        "transforms": transforms,
    }
    return finish(params, layers, input_shape, meta, P)


def lstm_from_state_dict(sd, *, prefix, path, cell=False, names=None, dtype=None):
    """Engine ``lstm`` layers and canonical parameters from ``nn.LSTM`` (or ``nn.LSTMCell``) tensors.

    The transforms of :func:`convert_torch_lstm`: gate blocks i, f, g, o ->
    i, f, o, g (``lstm_params`` with the source order ``"ifgo"``), the two
    biases summed; tanh cell. Bidirectional and projected LSTMs are refused.

    Parameters
    ----------
    sd : dict
        The LSTM's tensors, keys relative to ``prefix`` (``weight_ih_l0``...).
    prefix : str
        The prefix the keys had in the file (for ``name_map`` and messages).
    path : str
        For messages.
    cell : bool
        ``nn.LSTMCell`` keys (``weight_ih``, no ``_l{k}`` suffix).
    names : list of str, optional
        Canonical layer names; default ``lstm1``, ``lstm2``...
    dtype : numpy dtype, optional

    Returns
    -------
    layers, input_shape, params, name_map, transforms
        ``input_shape`` is ``(D,)``.
    """
    P = path
    if any(k.endswith("_reverse") for k in sd):
        raise CheckpointError(P, "bidirectional LSTMs (weight_*_reverse) are not supported")
    if any(k.startswith("weight_hr") for k in sd):
        raise CheckpointError(P, "LSTMs with projections (weight_hr_l*, proj_size > 0) are not supported")
    n_layers = 1 if cell else len([k for k in sd if k.startswith("weight_ih_l")])
    if n_layers == 0:
        raise CheckpointError(P, f"no LSTM weights (weight_ih_l0, weight_ih) under the prefix {prefix!r}")
    names = names or [f"lstm{k + 1}" for k in range(n_layers)]
    if len(names) != n_layers:
        raise CheckpointError(P, f"{len(names)} names given for {n_layers} LSTM layers")
    params, name_map, transforms, layers = {}, {}, {}, []
    input_shape = tracer = None
    for k, name in enumerate(names):
        sfx = "" if cell else f"_l{k}"
        keys = {f: f"{f}{sfx}" for f in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        for f in ("weight_ih", "weight_hh"):
            if keys[f] not in sd:
                raise CheckpointError(P, f"tensor {prefix}{keys[f]} is missing")
        W_ih, W_hh = sd[keys["weight_ih"]], sd[keys["weight_hh"]]
        if W_hh.ndim != 2 or W_hh.shape[0] != 4 * W_hh.shape[1]:
            raise CheckpointError(
                P, f"tensor {prefix}{keys['weight_hh']}: expected shape (4H, H), found {W_hh.shape}"
            )
        H = int(W_hh.shape[1])
        has_b = keys["bias_ih"] in sd or keys["bias_hh"] in sd
        if has_b and not (keys["bias_ih"] in sd and keys["bias_hh"] in sd):
            raise CheckpointError(P, f"layer {k}: only one of bias_ih/bias_hh is present")
        if W_ih.ndim != 2:
            raise CheckpointError(
                P, f"tensor {prefix}{keys['weight_ih']}: expected (4H, D), found {W_ih.shape}"
            )
        if input_shape is None:
            input_shape = (int(W_ih.shape[1]),)
            tracer = Tracer(input_shape, P)
            layers = tracer.layers
        _, expect = tracer.add(make_layer(name, "lstm", hidden=H, cell_act="tanh"))
        for src, key in ((keys["weight_ih"], f"{name}.W_x"), (keys["weight_hh"], f"{name}.W_h")):
            if tuple(sd[src].shape) != expect[key]:
                raise CheckpointError(
                    P,
                    f"tensor {prefix}{src} (for {key}): expected shape {expect[key]}, "
                    f"found {tuple(sd[src].shape)}",
                )
        b_parts = []
        if has_b:
            for src in (keys["bias_ih"], keys["bias_hh"]):
                if tuple(sd[src].shape) != (4 * H,):
                    raise CheckpointError(
                        P, f"tensor {prefix}{src}: expected shape {(4 * H,)}, found {tuple(sd[src].shape)}"
                    )
                b_parts.append(sd[src])
        lp = lstm_params(H, SOURCE_GATE_ORDERS["torch"], W_x=W_ih, W_h=W_hh, b_parts=b_parts, dtype=dtype)
        for field, src, tr in (
            ("W_x", keys["weight_ih"], "gate blocks i,f,g,o -> i,f,o,g (source blocks [0,1,3,2])"),
            ("W_h", keys["weight_hh"], "gate blocks i,f,g,o -> i,f,o,g (source blocks [0,1,3,2])"),
            (
                "b",
                f"{keys['bias_ih']} + {keys['bias_hh']}" if has_b else "(no bias: zeros)",
                "bias_ih + bias_hh, gate blocks [0,1,3,2]",
            ),
        ):
            params[f"{name}.{field}"] = lp[field]
            name_map[f"{name}.{field}"] = (prefix + src) if has_b or field != "b" else src
            transforms[f"{name}.{field}"] = tr
    return layers, input_shape, params, name_map, transforms
