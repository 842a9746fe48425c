"""The frame CNN of one grounding call: a model's per-frame part run over a clip in chunks of frames.

Both drivers (:mod:`.ground`, :mod:`.ground_caption`) go through a
:class:`FrameCNN` for everything below the interface layer (the LSTM's input of
an action model, the video-feature layer of a captioner):

- :meth:`FrameCNN.forward`: the CNN over every frame, chunk by chunk, up to
  the interface; the read-out layer's activations are kept when they fit the
  memory budget (else they are recomputed on the way back). With the kernels'
  fast paths on (``fast_kernels``) and ``records=True``, the records (caches) of
  the layers from the read-out layer up to the interface are kept instead when
  they fit the same budget, so that the way back runs no layer forward again;
- :meth:`FrameCNN.backward`: per chunk, the read-out layer's activations run
  forward again to the interface keeping their caches (or the kept records are
  taken), and the chunk's signal
  at the interface goes down to the read-out layer (paper eqs. 8-9,
  :meth:`FrameCNN.eb_to_readout`; or the gradient, :meth:`FrameCNN.grad_to_readout`),
  where it is summed over channels. Peak memory grows with the chunk, not with ``T``.

The per-chunk leg down to the read-out layer is the reference pass unless the
driver's ``fused_readout`` switch asks for the fused read-out and its plan
applies (:meth:`FrameCNN.readout_leg`); only then is :mod:`.fused_readout`
imported.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from .. import backend
from ..models.stack import run_eb, run_grad
from .algorithm import channel_sum, frame_evidence
from .diagnostics import sum_mass
from .inputs import is_int

_MEMO_PAST_CHUNKS = 3  # more chunks than this: hold max(W, 0) whole (weights_memo)
_MEMO_PAST_ROWS = 32  # more stacked signal rows per chunk than this: likewise

__all__ = [
    "FrameCNN",
    "ChunkMaps",
    "ReadoutMaps",
    "frame_chunks",
    "resolve_chunk_size",
    "auto_chunk_size",
    "frame_work_bytes",
    "weights_memo",
    "records_bytes",
    "join_chunks",
]


class ChunkMaps(NamedTuple):
    """What the leg down to the read-out layer gives for one chunk of ``n`` frames."""

    maps: object  # (K, n, h, w)  channel sums at the read-out layer, or (K, n, D) at a flat layer
    channels: object  # (K, n, C, h, w)  the full signal, when asked for; else None
    mass: dict  # {layer: (K,)} signal lost per layer (EB, top layer first); {} for the gradient


class ReadoutMaps(NamedTuple):
    """The chunks joined over the clip's ``T`` frames."""

    maps: object  # (K, T, h, w) or (K, T, D)
    evidence: object  # (K, T)  per-frame sums S
    channels: object  # (K, T, C, h, w) or None
    mass: dict  # {layer: (K,)} signal lost per layer, summed over chunks


def frame_chunks(T, chunk_size):
    """``[(a, b), ...]``: consecutive frame ranges of at most ``chunk_size`` frames covering ``0 .. T``."""
    if not is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or 'auto', got {chunk_size!r}")
    return [(a, min(a + chunk_size, T)) for a in range(0, T, chunk_size)]


AUTO_CHUNK_CPU = 8  # frames per chunk on the CPU: larger chunks were not faster there
AUTO_CHUNK_GPU = (
    32  # the most on a GPU (one H100: 64 VGG16 frames forward 0.14 s in chunks of 32, 0.30 s of 8)
)
_WORK_PER_ACTIVATION = (
    6  # arrays of a conv layer's size per frame: input, padded copy, 3 stacked shifts, output
)


def resolve_chunk_size(chunk_size, model, readout_index=-1, signals=1):
    """``chunk_size`` as an int: as given, or for ``"auto"`` chosen for the model's device.

    ``"auto"`` is :data:`AUTO_CHUNK_CPU` frames for a model on the CPU; on a GPU, where
    larger chunks mean fewer and larger kernel launches, :func:`auto_chunk_size` of the
    free device memory (:func:`ebr_ref.backend.free_device_bytes`) and
    :func:`frame_work_bytes` for ``signals`` stacked signals (targets) read out at layer
    ``readout_index``. On a GPU the choice depends on the memory free at the call, so
    the chunking (and the rounding of sums over it) may differ between calls: pass an
    int for the same bits every time; ``diagnostics["chunk_size"]`` records the value.

    Raises
    ------
    ValueError
        For anything but a positive int or ``"auto"``.
    """
    if isinstance(chunk_size, str) and chunk_size == "auto":
        free = backend.free_device_bytes(model.xp)
        if free is None:
            return AUTO_CHUNK_CPU
        return auto_chunk_size(frame_work_bytes(model, readout_index, signals), free)
    frame_chunks(1, chunk_size)  # validates
    return int(chunk_size)


def auto_chunk_size(per_frame_bytes, free_bytes):
    """Frames per chunk on a GPU: the most, up to :data:`AUTO_CHUNK_GPU`, whose working arrays
    (``per_frame_bytes`` each) take at most half of ``free_bytes``; at least 1."""
    return int(max(1, min(AUTO_CHUNK_GPU, free_bytes // (2 * max(per_frame_bytes, 1)))))


def frame_work_bytes(model, readout_index=-1, signals=1):
    """A rough bound of the bytes one frame holds at once in a chunk, forward and back.

    :data:`_WORK_PER_ACTIVATION` arrays of the largest activation of the per-frame part
    (input included), plus as many of ``signals`` stacked signals of the largest
    activation from the read-out layer's output up (the way back carries ``(K, n, ...)``
    signals there; for 20 targets read out at VGG16's conv1_2 these dominate).
    """
    top = model.sequence_start
    sizes = [numpy.prod(model.input_shape if k < 0 else model.shapes[k]) for k in range(-1, top)]
    back = sizes[readout_index + 1 :] or [0]  # sizes[k + 1] is layer k's output
    return int(_WORK_PER_ACTIVATION * (max(sizes) + signals * max(back))) * model.dtype.itemsize


def weights_memo(chunks, K, kept=None):
    """A per-call dict keeping ``max(±W, 0)`` of fc layers when they are reused, else None.

    ``kept``, the caller's own dict (the drivers' ``weights_cache``, checked by
    :func:`ebr_ref.grounding.inputs.check_weights_cache`), is returned as it is
    whatever the call's size, so that calls after the first find W+ formed.

    W+ is worth holding whole when many chunks (or many stacked signal rows) pass
    through the same layer; for a few passes with few rows :func:`ebr_ref.layers.linear.linear_eb`
    forms it block by block, which is cheaper: a blocked pass reads ``W`` once and
    forms each block of W+ in cache (about 3 reads of ``W`` in time), while holding
    W+ costs a 400 MB write to fresh memory for VGG16's fc6 (about 3 reads) and two
    reads of it per chunk, so the blocked passes win up to 3 chunks.
    """
    if kept is not None:
        return kept
    rows = K * max(b - a for a, b in chunks)
    return {} if len(chunks) > _MEMO_PAST_CHUNKS or rows > _MEMO_PAST_ROWS else None


def records_bytes(model, readout_index, top):
    """Bytes per frame of the records from the read-out layer up to layer ``top`` (exclusive), an upper bound.

    Counts the read-out layer's output and the output of every layer above it
    (a layer's cache holds its input, the output below it, and at most its own
    output), plus the ``scale`` array an LRN layer's cache holds beside them
    (the size of its input); parameters are shared, not counted.
    """
    shapes = [model.input_shape if k < 0 else model.shapes[k] for k in range(readout_index, top)]
    shapes += [model.shapes[k] for k in range(readout_index + 1, top) if model.layers[k].type == "lrn"]
    return int(sum(numpy.prod(shape) for shape in shapes)) * model.dtype.itemsize


def join_chunks(parts, *, xp):
    """The :class:`ChunkMaps` of consecutive chunks joined along the frame axis: a :class:`ReadoutMaps`."""
    maps = xp.concatenate([part.maps for part in parts], axis=1)  # (K, T, h, w) or (K, T, D)
    channels = None
    if parts[0].channels is not None:
        channels = xp.concatenate([part.channels for part in parts], axis=1)  # (K, T, C, h, w)
    return ReadoutMaps(maps, frame_evidence(maps), channels, sum_mass(part.mass for part in parts))


class FrameCNN:
    """A model's per-frame part over one clip: chunked forward to the interface, back to the read-out layer.

    Parameters
    ----------
    model : Model or CaptionModel
        Its ``stack`` runs the layers; layers ``0 .. sequence_start - 1`` run per frame.
    clip : array of shape (T, C, H, W)
        Checked, on the model's device and dtype.
    readout_index : int
        Index of the read-out layer (``-1``: the input pixels).
    chunk_size : int or "auto"
        Frames per chunk (:func:`resolve_chunk_size`).
    signals : int
        Stacked signals (targets) the way back will carry, for ``"auto"``.
    channel_maps : bool
        Keep the full per-channel signal at the read-out layer too.
    budget_bytes : int
        Keep the read-out layer's activations of all frames between the two
        passes when they take at most this many bytes (and, with ``fast_kernels``,
        the records of the layers above it when all of those fit).
    fast_kernels : bool
        Let the conv and fc kernels take their own fast paths (``fast=`` of
        :mod:`ebr_ref.layers.conv2d` and :mod:`ebr_ref.layers.linear`), and let
        :meth:`forward` keep the records above the read-out layer; False runs the
        reference kernels only, and the way back recomputes the layers above the
        read-out layer (Algorithm 1 as written).

    Attributes
    ----------
    chunk_size : int
        Frames per chunk, ``"auto"`` resolved.
    chunks : list of (int, int)
        The frame ranges, in order.
    keeps_readout : bool
        Whether :meth:`forward` keeps the read-out layer's activations.
    keeps_records : bool
        Whether :meth:`forward` called with ``records=True`` keeps the records of
        the layers from the read-out layer to the interface (see :func:`records_bytes`).
    """

    def __init__(
        self,
        model,
        clip,
        readout_index,
        *,
        chunk_size,
        channel_maps=False,
        budget_bytes=0,
        fast_kernels=True,
        signals=1,
    ):
        self.model, self.stack, self.top = model, model.stack, model.sequence_start
        self.fast_kernels = fast_kernels
        self.clip, self.readout_index, self.channel_maps = clip, readout_index, channel_maps
        self.chunk_size = resolve_chunk_size(chunk_size, model, readout_index, signals)
        self.chunks = frame_chunks(clip.shape[0], self.chunk_size)
        self.keeps_readout = readout_index >= 0 and (
            numpy.prod(model.shapes[readout_index]) * clip.shape[0] * model.dtype.itemsize <= budget_bytes
        )
        self.keeps_records = fast_kernels and (
            records_bytes(model, readout_index, self.top) * clip.shape[0] <= budget_bytes
        )
        self._kept = []  # read-out activations per chunk, filled by forward() when kept
        self._records = []  # records above the read-out layer per chunk, filled by forward(records=True)

    @property
    def readout_recomputed(self) -> bool:
        """True when the way back recomputes the read-out layer's activations (over the budget)."""
        return self.readout_index >= 0 and not self.keeps_readout

    def forward(self, tick=None, *, records=False, memo=None):
        """The CNN over every frame to the interface layer, chunk by chunk.

        Parameters
        ----------
        tick : callable, optional
            Called as ``tick(n)`` after each chunk of ``n`` frames.
        records : bool
            Keep the records of the layers above the read-out layer for
            :meth:`backward` when :attr:`keeps_records` (the caller then passes
            :meth:`backward` the same ``memo``); else only the read-out
            activations, when :attr:`keeps_readout`.
        memo : dict, optional
            The call's ``max(W, 0)`` memo (:func:`weights_memo`), for the kept records.

        Returns
        -------
        array of shape (T, D)
            The interface activations of every frame.
        """
        r, features = self.readout_index, []
        keep = records and self.keeps_records
        for a, b in self.chunks:
            x_r, _ = self._forward(self.clip[a:b], 0, r + 1)  # (n, ...)  the read-out layer's output
            if keep:  # the same records as forward_from_readout would compute again
                y, chunk_records = self._forward(x_r, r + 1, self.top, keep=True, memo=memo)  # (n, D)
                self._records.append(chunk_records)
            else:
                if self.keeps_readout:
                    self._kept.append(x_r)
                y, _ = self._forward(x_r, r + 1, self.top)  # (n, D)
            features.append(y)
            if tick is not None:
                tick(b - a)
        return self.model.xp.concatenate(features, axis=0)  # (T, D)

    def readout_activations(self, chunk):
        """The read-out layer's output in chunk number ``chunk``: kept, the clip itself, or recomputed."""
        if self._kept:
            return self._kept[chunk]
        a, b = self.chunks[chunk]
        if self.readout_index < 0:
            return self.clip[a:b]  # (n, C, H, W)
        return self._forward(self.clip[a:b], 0, self.readout_index + 1)[0]  # (n, ...)

    def forward_from_readout(self, chunk, *, memo=None):
        """Chunk number ``chunk`` from the read-out layer to the top of the per-frame part: ``(y, records)``.

        ``memo``: the call's dict of ``max(W, 0)`` (:func:`weights_memo`), or None.
        """
        x_r = self.readout_activations(chunk)  # (n, ...)  the chunk's n = b - a frames
        return self._forward(x_r, self.readout_index + 1, self.top, keep=True, memo=memo)

    def _forward(self, x, start, stop, *, keep=False, memo=None):
        """:meth:`LayerStack.run_forward` with this call's kernel switch."""
        return self.stack.run_forward(x, start, stop, keep=keep, memo=memo, fast=self.fast_kernels)

    def eb_to_readout(self, records, p):
        """Eqs. 8-9 for one chunk: EB from the top of ``records`` down to the read-out layer.

        Parameters
        ----------
        records : list of (Layer, cache)
            From :meth:`forward_from_readout` (or a part of them, bottom first).
        p : array of shape (K, n, ...)
            ``Map^t(a_j)`` at the top of ``records`` for the chunk's ``n`` frames.

        Returns
        -------
        ChunkMaps
        """
        passed = run_eb(records, p, fast=self.fast_kernels)  # p: (K, n, C, h, w) or (K, n, D) at the read-out
        return ChunkMaps(channel_sum(passed.p), passed.p if self.channel_maps else None, passed.mass)

    def grad_to_readout(self, records, g):
        """The gradient for one chunk, from the top of ``records`` down to the read-out layer (BP, BP-R)."""
        g = run_grad(records, g, fast=self.fast_kernels)  # (K, n, C, h, w) or (K, n, D)
        return ChunkMaps(channel_sum(g), g if self.channel_maps else None, {})

    def readout_leg(self, mode, K, switch):
        """The per-chunk leg down to the read-out layer for ``K`` signals, and the fused layers' names.

        Parameters
        ----------
        mode : {"eb", "grad"}
        K : int
        switch : {"auto", True, False}
            The driver's ``fused_readout`` argument, checked
            (:func:`~ebr_ref.grounding.inputs.check_fused_switch`).

        Returns
        -------
        leg : callable
            ``leg(records, p) -> ChunkMaps``: :meth:`eb_to_readout` or
            :meth:`grad_to_readout`, or the fused read-out when the switch is on
            and :func:`ebr_ref.grounding.fused_readout.plan` folds layers.
        fused_layers : list of str or None
        """
        reference = self.eb_to_readout if mode == "eb" else self.grad_to_readout
        if switch is False or self.channel_maps:  # the switch is off: the read-out plan is not consulted
            return reference, None
        from . import fused_readout  # the optimisation, imported only when the switch asks for it

        fold = fused_readout.plan(self.model, self.readout_index, K, mode, request=switch)
        if fold is None:
            return reference, None
        return fused_readout.FusedLeg(fold), fused_readout.folded_layers(self.model, self.readout_index, fold)

    def backward(self, p, leg, *, memo=None, tick=None):
        """Algorithm 1 step 6: every chunk's signal at the interface down to the read-out layer.

        Parameters
        ----------
        p : array of shape (K, T, D)
            The signal at the interface layer (``Map``, ``P_N`` or a gradient).
        leg : callable
            From :meth:`readout_leg`.
        memo : dict, optional
            The call's ``max(W, 0)`` memo (:func:`weights_memo`); the one given to
            :meth:`forward` when it kept the records (they are used once, then freed).
        tick : callable, optional
            Called as ``tick(n)`` after each chunk of ``n`` frames.

        Returns
        -------
        ReadoutMaps
        """
        parts = []
        for chunk, (a, b) in enumerate(self.chunks):
            if self._records and self._records[chunk] is not None:
                records, self._records[chunk] = self._records[chunk], None  # kept by forward(); freed as used
            else:
                _, records = self.forward_from_readout(chunk, memo=memo)
            parts.append(leg(records, p[:, a:b]))  # p[:, a:b]: (K, n, D)
            if tick is not None:
                tick(b - a)
        return join_chunks(parts, xp=self.model.xp)
