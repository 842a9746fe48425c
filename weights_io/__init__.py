"""weights_io: import pretrained weights from standard checkpoints into ebr_ref models.

Readers for Caffe, PyTorch, safetensors, Keras (HDF5 and ``.keras``), ONNX and
NumPy files that need none of those frameworks (NumPy only; memory-mapped where
the format allows), and converters into ebr_ref's canonical names and layouts
(ONNX graphs as torch's exporters write them, Keras models with their
architecture, VGG16/LSTM state dicts, CNN-LSTMs assembled from PyTorch state dicts
(:mod:`weights_io.assemble_torch`), Caffe nets). This
package uses ebr_ref (geometry, backend, model builders); ebr_ref never
imports it.

* :func:`read_tensors` -- every tensor of a checkpoint under its original name;
* :func:`convert` -- canonical parameters plus ``meta`` (architecture,
  preprocessing, gate order, pooling rounding, provenance);
* :func:`save_canonical` / :func:`load_canonical` -- the project's ``.npz`` +
  JSON sidecar format;
* :func:`load_model` -- a model built by ``ebr_ref.models.from_spec``.

Every failure caused by a file raises :class:`CheckpointError`. See
docs/weights_io.md.
"""

from .canonical import load_canonical, save_canonical, sidecar_path
from .convert import SOURCES, convert, detect_source, load_model
from .errors import CheckpointError
from .gates import GATE_ORDER, SOURCE_GATE_ORDERS, gate_blocks
from .presets import PRESETS
from .readers import FORMATS, detect_format, read_tensors
from .spec import make_layer

__all__ = [
    "CheckpointError",
    "read_tensors",
    "detect_format",
    "FORMATS",
    "convert",
    "detect_source",
    "SOURCES",
    "load_model",
    "save_canonical",
    "load_canonical",
    "sidecar_path",
    "GATE_ORDER",
    "SOURCE_GATE_ORDERS",
    "gate_blocks",
    "PRESETS",
    "make_layer",
]
