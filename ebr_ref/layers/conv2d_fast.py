"""Fast paths of :mod:`ebr_ref.layers.conv2d`: shifted-view forward and flipped-kernel adjoint.

The reference module evaluates a convolution as im2col + one GEMM per image and
group, and its adjoint as one GEMM per image and group + col2im. On large maps
both write and re-read a column buffer of ``iC kH kW oH oW`` (or ``oC kH kW ...``)
elements per image, which costs more than the arithmetic. This module holds two
ways around that buffer, each with its own path rule; the reference functions hand
over to them when called with ``fast=True`` (their default) and the rule holds. Both
compute the same sums as the reference in another order, so results agree to
rounding (tested to 1e-12 relative in float64, tests/layers/test_conv2d_fast.py).
The rules look at shapes and hyper-parameters only, never at values.

**Shifted views** ("implicit GEMM"), :func:`shifted_views_apply` and
:func:`forward_shifted`. For stride 1 lay the zero-padded batch out once as
``(iC, N Hp Wp)``, images end to end (``Hp = iH + 2 pH``, ``Wp = iW + 2 pW``). The
input cell that kernel offset ``(u, v)`` pairs with output position ``p`` (a flat
index into the same layout) is ``p + u dH Wp + v dW``, so each kernel offset is a
contiguous shifted 2-D view of that one buffer. The ``kW`` column shifts ``v dW``
are stacked once into a buffer of ``kW iC`` rows (a third of an im2col buffer for
3 x 3 kernels, over the padded grid), and the row shifts ``u dH Wp`` are views of
it, so the convolution is ``sum_u W[:, :, u, :] @ rows(u)``: ``kH`` GEMMs of depth
``kW iCg`` on views (no copies), accumulated into an ``(oC, N Hp Wp)`` buffer from
which the valid outputs are sliced (``kH - 1`` accumulation passes over the
output instead of ``kH kW - 1`` with one GEMM per offset). A batch whose stacked
buffer would exceed a bound runs in groups of images, so that the buffer, not the batch,
bounds the memory: ``_MAX_STACKED_ELEMENTS`` (64 MiB in float32) on a GPU, and on the CPU
``_HOST_STACKED_ELEMENTS`` (4 MiB: one image at a time for every VGG16 layer at 224 x 224),
since smaller groups keep the GEMMs' operands in cache there (8 frames through VGG16 on 2
cores: 1.56 s against 1.79 s with 64 MiB groups; conv2_1 73 ms against 103 ms). The
groups of one call share their padded, stacked and accumulation buffers (fresh pages
cost more than the copies into them) and write into the output directly. Flat positions that
straddle a row or image edge are computed and thrown
away (about ``1 - oH oW / (Hp Wp)`` of the work). Rule: stride 1, at least
``_MIN_SHIFTED_CHANNELS`` channels per group on both sides (so that each
per-offset GEMM runs near BLAS peak) and an im2col buffer of at least
``_MIN_SHIFTED_COLUMN`` elements per image (VGG16's conv1_2, conv2_1, conv2_2,
conv3_2 and conv3_3 at 224 x 224). Strided layers, a first layer on RGB input and
small maps keep im2col, where the column buffer is cheap and the discarded edge work
is not (on 2 cores, float32: conv3_1 and conv4_x took as long either way, conv5_x
longer with the views; conv2_1 9.3 ms against 12.4 ms with im2col).

**Flipped-kernel adjoint**, :func:`flipped_adjoint_applies` and
:func:`adjoint_flipped`. The adjoint of a stride-1 convolution is itself a stride-1
correlation: of ``g_y`` padded by ``d (k - 1) - p`` with the kernel flipped in
space and transposed in channels within each group. It runs through the forward
(and so through the shifted views when they apply to the flipped problem),
avoiding col2im's many short strided adds at the price of a column buffer over the
output channels and a copy of ``W``. Rule: stride 1, ``pH <= dH (kH - 1)`` and
``pW <= dW (kW - 1)`` (the flipped padding is not negative), an adjoint that does not
widen the channels by more than ``_MAX_FLIPPED_WIDENING`` (``oCg / iCg``) and at least
``_MIN_FLIPPED_COLUMN`` elements ``oC kH kW iH iW`` per image. In VGG16 at 224 x 224
that is conv1_2, conv2_2, conv3_2, conv3_3, conv4_2 and conv4_3: not the layers that
widen (conv1_1 from 3 channels, conv2_1, conv3_1, conv4_1), nor the 14 x 14 conv5 layers.

The thresholds were set with benchmarks/bench_conv.py (``--compare-paths``, VGG16
float32 on 2 cores). Dimension legend as in :mod:`ebr_ref.layers.conv2d`.
"""

from __future__ import annotations

from .. import backend

__all__ = ["shifted_views_apply", "forward_shifted", "flipped_adjoint_applies", "adjoint_flipped"]

_MIN_SHIFTED_CHANNELS = 16  # least iCg and oCg
_MIN_SHIFTED_COLUMN = 2**22  # elements of one image's im2col buffer, iC kH kW oH oW (16 MiB in float32)
_MAX_STACKED_ELEMENTS = 2**24  # stacked rows kW iC Hp Wp of one group of images on a GPU (64 MiB in float32)
_HOST_STACKED_ELEMENTS = 2**20  # the same on the CPU (4 MiB in float32; at least one image per group)
_MIN_FLIPPED_COLUMN = 2**21  # elements oC kH kW iH iW per image
_MAX_FLIPPED_WIDENING = 1  # largest oCg / iCg


def shifted_views_apply(W_shape, groups, stride, out_hw):
    """Whether :func:`forward_shifted` is taken for this geometry (see the module docstring).

    Parameters
    ----------
    W_shape : tuple of int
        ``(oC, iCg, kH, kW)``.
    groups : int
    stride : pair of int
    out_hw : pair of int
        ``(oH, oW)``.

    Returns
    -------
    bool
    """
    oC, iCg, kH, kW = W_shape
    column = groups * iCg * kH * kW * out_hw[0] * out_hw[1]
    return (
        tuple(stride) == (1, 1)
        and min(iCg, oC // groups) >= _MIN_SHIFTED_CHANNELS
        and column >= _MIN_SHIFTED_COLUMN
    )


def forward_shifted(x, W, b, padding, dilation, groups, out_hw, *, xp):
    """Stride-1 convolution by shifted views of one padded buffer (geometry already validated).

    Parameters
    ----------
    x : array of shape (N, iC, iH, iW)
    W : array of shape (oC, iCg, kH, kW)
    b : array of shape (oC,) or None
    padding, dilation : pair of int
    groups : int
    out_hw : pair of int
        ``(oH, oW)`` of the stride-1 convolution.
    xp : module

    Returns
    -------
    y : array of shape (N, oC, oH, oW)
        Contiguous; equal to :func:`ebr_ref.layers.conv2d.conv2d_forward` to rounding.
    """
    N, iC, iH, iW = x.shape
    oC, iCg, kH, kW = W.shape
    G, oCg = groups, oC // groups
    Hp, Wp = iH + 2 * padding[0], iW + 2 * padding[1]
    bound = _HOST_STACKED_ELEMENTS if backend.on_host(xp) else _MAX_STACKED_ELEMENTS  # cache, or memory
    per_group = max(1, bound // (kW * iC * Hp * Wp))  # images whose stacked rows fit
    W_u = W.reshape(G, oCg, iCg, kH, kW).transpose(3, 0, 1, 4, 2)  # (kH, G, oCg, kW, iCg)
    W_u = xp.ascontiguousarray(W_u).reshape(kH, G, oCg, kW * iCg)  # once for every group of images
    y = xp.empty((N, oC) + tuple(out_hw), dtype=x.dtype)  # a large batch: groups of images, so that
    scratch = {}  # the buffers of one group, reused by the next of the same size (no new pages)
    for n in range(0, N, per_group):  # the stacked buffer stays bounded (loop over image groups)
        x_n = x[n : n + per_group]
        _forward_stacked(x_n, W_u, b, padding, dilation, out_hw, y[n : n + per_group], scratch, xp=xp)
    return y


def _forward_stacked(x, W_u, b, padding, dilation, out_hw, y, scratch, *, xp):
    """:func:`forward_shifted` on one group of images (all of ``x`` at once), written into ``y``.

    ``W_u (kH, G, oCg, kW iCg)``: the weights by kernel row, columns stacked as the rows
    buffer. ``scratch``: a dict of this call's buffers, reused when a group has the
    same size as the one before (the last group of a batch may be smaller).
    """
    N, iC, iH, iW = x.shape
    kH, G, oCg, kWiCg = W_u.shape
    oC, iCg = G * oCg, iC // G
    kW = kWiCg // iCg
    (pH, pW), (dH, dW), (oH, oW) = padding, dilation, out_hw
    Hp, Wp = iH + 2 * pH, iW + 2 * pW
    S = N * Hp * Wp
    if scratch.get("N") != N:  # new buffers; x_pad's zero border is written once and kept
        scratch.clear()
        scratch["N"] = N
        scratch["x_pad"] = xp.zeros((iC, N, Hp, Wp), dtype=x.dtype)  # images end to end, channels first
    x_pad = scratch["x_pad"]
    x_pad[:, :, pH : pH + iH, pW : pW + iW] = x.transpose(1, 0, 2, 3)  # the interior, every group
    L = S - (kH - 1) * dH * Wp - (kW - 1) * dW  # every valid output position p < L
    R = L + (kH - 1) * dH * Wp  # columns of the stacked buffer that the row shifts read
    src = x_pad.reshape(G, iCg, S)
    rows = _buffer(
        scratch, "rows", (G, kW, iCg, R), x.dtype, xp=xp
    )  # rows[g, v, c, p] = x_pad[g iCg + c, p + v dW]
    for v in range(kW):  # loop over column offsets only
        rows[:, v] = src[:, :, v * dW : v * dW + R]
    acc = _buffer(
        scratch, "acc", (oC, N, Hp, Wp), x.dtype, xp=xp
    )  # output at flat index p = (n Hp + i) Wp + j
    tmp = _buffer(scratch, "tmp", (G, oCg, L), x.dtype, xp=xp) if kH > 1 else None
    starts = [u * dH * Wp for u in range(kH)]  # flat shift of row offset u
    _shifted_matmul(W_u, rows.reshape(G, kW * iCg, R), starts, acc.reshape(G, oCg, S)[:, :, :L], tmp, xp=xp)
    valid = acc[:, :, :oH, :oW].transpose(1, 0, 2, 3)  # (N, oC, oH, oW) view
    if b is None:
        y[...] = valid
    else:
        xp.add(valid, b.reshape(1, oC, 1, 1), out=y)
    return y


def _buffer(scratch, name, shape, dtype, *, xp):
    """``scratch[name]``, an uninitialised array of ``shape``, made once per group size."""
    if name not in scratch:
        scratch[name] = xp.empty(shape, dtype=dtype)
    return scratch[name]


def _shifted_matmul(W_k, src, starts, out, tmp, *, xp):
    """``out = sum_k W_k[k] @ src[:, :, starts[k] : starts[k] + L]`` with ``L = out.shape[-1]``.

    ``W_k (kH, G, M, C)`` contiguous, ``src (G, C, S)`` with a contiguous last
    axis, ``out (G, M, L)`` (may be a view with a contiguous last axis), ``tmp`` an
    array of ``out``'s shape for the terms after the first (None when there is one
    term): each term is one batched GEMM over the group axis on a view of ``src``.
    """
    L = out.shape[-1]
    xp.matmul(W_k[0], src[:, :, starts[0] : starts[0] + L], out=out)
    for k in range(1, len(starts)):  # loop over row offsets only
        xp.matmul(W_k[k], src[:, :, starts[k] : starts[k] + L], out=tmp)
        out += tmp
    return out


def _flip_padding(W_shape, padding, dilation):
    """Padding ``d (k - 1) - p`` of the flipped correlation, per axis (negative: not applicable)."""
    kH, kW = W_shape[2:]
    (pH, pW), (dH, dW) = padding, dilation
    return (dH * (kH - 1) - pH, dW * (kW - 1) - pW)


def flipped_adjoint_applies(W_shape, groups, stride, padding, dilation, in_hw):
    """Whether :func:`adjoint_flipped` is taken for this geometry (see the module docstring).

    Parameters
    ----------
    W_shape : tuple of int
        ``(oC, iCg, kH, kW)``.
    groups : int
    stride, padding, dilation : pair of int
    in_hw : pair of int
        ``(iH, iW)``, the size of the forward input (the adjoint's output).

    Returns
    -------
    bool
    """
    oC, iCg, kH, kW = W_shape
    return (
        tuple(stride) == (1, 1)
        and min(_flip_padding(W_shape, padding, dilation)) >= 0
        and oC // groups <= _MAX_FLIPPED_WIDENING * iCg
        and oC * kH * kW * in_hw[0] * in_hw[1] >= _MIN_FLIPPED_COLUMN
    )


def adjoint_flipped(g, W, padding, dilation, groups, *, forward, xp):
    """Adjoint of a stride-1 convolution as a correlation with the flipped kernel.

    Parameters
    ----------
    g : array of shape (B, oC, oH, oW)
        Signal at the output (stacked signals folded into the batch axis).
    W : array of shape (oC, iCg, kH, kW)
    padding, dilation : pair of int
        Those of the forward convolution; ``d (k - 1) - p >= 0`` on both axes.
    groups : int
    forward : callable
        :func:`ebr_ref.layers.conv2d.conv2d_forward`, which runs the flipped
        correlation (through :func:`forward_shifted` when that applies to it). It is
        passed in because the reference module imports this one.
    xp : module

    Returns
    -------
    g_x : array of shape (B, iC, iH, iW)
        Equal to the reference adjoint (GEMM + col2im) to rounding.
    """
    oC, iCg, kH, kW = W.shape
    G, oCg = groups, oC // groups
    W_flip = W.reshape(G, oCg, iCg, kH, kW)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    W_flip = xp.ascontiguousarray(W_flip).reshape(iCg * G, oCg, kH, kW)  # (iC, oCg, kH, kW)
    flip_pad = _flip_padding(W.shape, padding, dilation)
    g_x, _ = forward(g, W_flip, padding=flip_pad, dilation=dilation, groups=groups)  # (B, iC, iH, iW)
    return g_x
