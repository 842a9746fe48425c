"""``convert(path, source=...)``: one entry point over the per-source converters, and ``load_model``."""

from __future__ import annotations

import os

from .assemble_torch import assemble_torch_cnn_lstm
from .canonical import load_canonical, sidecar_path
from .convert_caffe import convert_caffe
from .convert_keras import convert_keras_lstm, convert_keras_vgg16, read_keras
from .convert_keras_model import convert_keras
from .convert_onnx import convert_onnx
from .convert_torch import convert_torch_lstm, convert_torchvision_vgg16
from .errors import CheckpointError
from .hdf5 import H5File
from .readers import _tensors, guarded, open_checked

__all__ = ["SOURCES", "convert", "detect_source", "load_model"]

_ASSEMBLY_OPTIONS = ("lstm", "mapping", "cut")  # the options of torch_cnn_lstm alone

SOURCES = {
    "caffe": convert_caffe,
    "torchvision_vgg16": convert_torchvision_vgg16,
    "torch_lstm": convert_torch_lstm,
    "torch_cnn_lstm": assemble_torch_cnn_lstm,
    "keras_vgg16": convert_keras_vgg16,
    "keras_lstm": convert_keras_lstm,
    "keras": convert_keras,
    "onnx": convert_onnx,
    "canonical": None,
}


def detect_source(path, prototxt=None) -> str:
    """Guess the converter for a file (see :func:`convert`)."""
    if prototxt is not None:
        return "caffe"
    buf, fmt = open_checked(path)
    if fmt == "caffe":
        raise buf.error("a Caffe .caffemodel needs its prototxt: convert(path, prototxt=...)")
    if fmt == "onnx":
        return "onnx"
    if fmt == "keras":
        return "keras"
    if fmt == "npz" and os.path.exists(sidecar_path(path)):
        return "canonical"
    if fmt == "hdf5":
        root = guarded(buf, fmt, lambda: H5File(buf).root)
        if guarded(
            buf,
            fmt,
            lambda: (
                "data" in root.members()
                and "layers" not in root.members()
                and not any(k.startswith("layer_names") for k in root.attrs)
            ),
        ):
            raise buf.error("a Caffe HDF5 snapshot needs its prototxt: convert(path, prototxt=...)")
        klayers, config, _ = guarded(buf, fmt, read_keras, buf)
        if "block1_conv1" in klayers:
            return "keras_vgg16"
        classes = {c.get("class_name") for c in (config or {}).values()} - {"InputLayer"}
        if config and classes - {"LSTM"}:
            return "keras"  # a full model with its architecture
        if config and "LSTM" in classes or any("lstm" in k.lower() for k in klayers):
            return "keras_lstm"
        raise buf.error(
            "cannot tell which Keras model this is (a weights-only file without its "
            "architecture); pass source='keras_vgg16' or 'keras_lstm', or save the model with "
            "model.save('x.keras')"
        )
    tensors = guarded(buf, fmt, _tensors, buf, fmt)
    vgg = any(k.endswith("features.0.weight") for k in tensors)
    if vgg and any(k.endswith("weight_ih_l0") for k in tensors):
        return "torch_cnn_lstm"
    if vgg:
        return "torchvision_vgg16"
    if any(k.endswith("weight_ih_l0") or k.endswith("weight_ih") for k in tensors):
        return "torch_lstm"
    raise buf.error(
        f"cannot tell which model this {fmt} file holds; pass source= (one of {', '.join(SOURCES)})"
    )


def convert(path, *, source=None, prototxt=None, **options):
    """Read a checkpoint and convert it into ebr_ref's canonical parameters.

    Parameters
    ----------
    path : str
        The weights file.
    source : str, optional
        The converter, one of ``SOURCES``:

        * ``"caffe"`` -- ``.caffemodel``/``.caffemodel.h5`` + ``prototxt``
          (VGG16, the released VGG16_LSTM, CaffeNet/LRCN...);
          see :func:`weights_io.convert_caffe.convert_caffe`;
        * ``"torchvision_vgg16"`` -- a torchvision ``vgg16`` state dict;
        * ``"torch_lstm"`` -- ``nn.LSTM``/``nn.LSTMCell`` weights;
        * ``"torch_cnn_lstm"`` -- a CNN-LSTM (torchvision-VGG16 CNN, ``nn.LSTM``, linear head)
          from one state dict, or with ``lstm=`` from a VGG16 state dict and a second one holding
          the LSTM and the head; ``mapping=``, ``cut=``; see
          :func:`weights_io.assemble_torch.assemble_torch_cnn_lstm`;
        * ``"keras_vgg16"`` -- Keras applications VGG16 (legacy, full-model or Keras 3 ``.h5``);
        * ``"keras_lstm"`` -- one Keras ``LSTM`` layer;
        * ``"keras"`` -- a Keras model with its architecture (``.keras``
          archive, or ``model.save("x.h5")``): CNNs and CNN-LSTMs;
        * ``"onnx"`` -- an ONNX graph as torch's exporters write it (constant
          subgraphs folded; the Conv/Gemm/LSTM chain matched to layers);
        * ``"canonical"`` -- this project's ``.npz`` + sidecar.

        Detected from the file when None (``"caffe"`` when ``prototxt`` is given;
        ``"torch_cnn_lstm"`` when ``lstm``, ``mapping`` or ``cut`` is given, or when the file holds
        both a VGG16 and an ``nn.LSTM``).
    prototxt : str, optional
        Caffe's deploy prototxt.
    **options
        Passed to the converter (``dtype``, ``preprocessing``, ``rename``,
        ``cell_act``, ``strict``, ``input_size``/``input_shape``...).

    Returns
    -------
    params : dict of str to numpy.ndarray
        Canonical names and layouts (``conv1_1.weight (oC, iC, kH, kW)``,
        ``fc6.weight (4096, 25088)``, ``lstm1.W_x (4H, D)`` with gate blocks
        i, f, o, g...), each a fresh C-contiguous array (``canonical``: read-only
        memory-mapped views).
    meta : dict
        ``architecture`` (layer specs, see :mod:`weights_io.spec`),
        ``input_shape``, ``preprocessing``, ``pool_rounding``, ``gate_order``,
        ``source_gate_order``, ``cell_act``, ``output``, ``source`` (file,
        SHA-256, format, converter), ``name_map`` and ``transforms`` (per
        parameter: the source tensor and every transpose/permutation applied).

    Raises
    ------
    CheckpointError
        For any problem with the files (naming the file, tensor or layer).
    """
    if source is None and prototxt is None and any(options.get(k) is not None for k in _ASSEMBLY_OPTIONS):
        source = "torch_cnn_lstm"
    if source is None:
        source = detect_source(path, prototxt)
    given = sorted(k for k in _ASSEMBLY_OPTIONS if options.get(k) is not None)
    if given and source != "torch_cnn_lstm":
        raise CheckpointError(
            path, f"{', '.join(given)} only apply to source 'torch_cnn_lstm', not {source!r}"
        )
    if source not in SOURCES:
        raise CheckpointError(path, f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    if source != "torch_cnn_lstm":  # lstm=None, mapping=None, cut=None: the assembly's options, unused
        options = {k: v for k, v in options.items() if k not in _ASSEMBLY_OPTIONS}
    if source == "canonical":
        return load_canonical(path, **options)
    if source == "caffe":
        if prototxt is None:
            raise CheckpointError(path, "source 'caffe' needs prototxt=")
        return convert_caffe(path, prototxt=prototxt, **options)
    if prototxt is not None:
        raise CheckpointError(path, f"prototxt= is only used with source 'caffe', not {source!r}")
    return SOURCES[source](path, **options)


def load_model(path, *, source=None, prototxt=None, **options):
    """Convert a checkpoint and build an ``ebr_ref`` model from it.

    A thin wrapper: ``params, meta = convert(...)`` then
    ``ebr_ref.models.from_spec(meta["architecture"], params, meta)``.

    Returns
    -------
    ebr_ref.models.Model
    """
    from ebr_ref.models import from_spec

    params, meta = convert(path, source=source, prototxt=prototxt, **options)
    return from_spec(meta["architecture"], params, meta)
