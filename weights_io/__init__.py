"""weights_io: import pretrained weights from standard checkpoints into ebr_ref models.

Readers for Caffe, PyTorch, safetensors, Keras HDF5, ONNX and NumPy files that
need none of those frameworks, and converters into ebr_ref's canonical names
and layouts. This package uses ebr_ref only to build models; ebr_ref never
imports it.
"""
