"""Fused channel-sum read-out: many target classes through the top conv block at the cost of a few.

An optimisation outside the reference path: the drivers import this module only
when their ``fused_readout`` switch is on (``"auto"`` or True), through
:meth:`ebr_ref.grounding.frame_cnn.FrameCNN.readout_leg`; with the switch off every
layer runs its own EB (:meth:`~ebr_ref.grounding.frame_cnn.FrameCNN.eb_to_readout`),
and the maps agree to rounding (tests/grounding/test_fused_readout.py). Equation
numbers of the form (F1) are this module's own, not the paper's.

For a fixed frame, excitation backward (and the gradient) is linear in the signal.
When :func:`ebr_ref.ground` is asked for K targets and only the channel-summed
maps at the read-out layer, the layers between the read-out layer and the first
max pooling above it (VGG16 with read-out ``conv5_1``: relu5_1, conv5_2, relu5_2,
conv5_3, relu5_3, pool5) are folded into one matrix per frame::

    M[k, n, i, j] = sum_{c, cell} G[n, (i, j), (c, cell)] p_top[k, n, c, cell]      (F1)

where ``p_top`` is the signal at the pooling's output (after the unfused EB of
every layer above it) and ``M`` the channel sum of the signal at the read-out
layer's output. ``G`` costs a few conv adjoints per frame, once; each target
then costs one row of a GEMM instead of one conv adjoint per folded conv.
The maps equal those of the unfused computation up to rounding (the same sums
taken in another order, ``p / Z`` taken as ``p * (1 / Z)``).

Construction (docs/conventions.md, "Fused read-out"). A linear functional of the
signal ``p`` at a level of the block is kept as ``F[a, b, c, n, i, j]``::

    M[n, i, j] = sum_{a, b, c} F[a, b, c, n, i, j] p[c, n, i - lo_h - a, j - lo_w - b]

(cells outside the level's grid contribute 0), i.e. one weight per channel and
per offset ``(lo_h + a, lo_w + b)`` between the read-out position and the cell.
At the read-out layer ``F = 1`` with one offset, 0. Going one layer up:

* ReLU (EB and gradient pass ``m * p`` with ``m = 1[y > 0]``): ``F *= m``, shifted.
  The factors of one level (``1 / Z`` of the convolution below, ReLU masks, the
  input ``x`` of the convolution above) are multiplied together on the level's
  grid first and applied to ``F`` in one pass; those of the top level are applied
  by the pooling scatter at the winners only.
* Convolution, EB (docs/spec.md §2, paper eq. 3): ``p_x = x * W+^T (p_y / Z)``. With
  stride 1, kernel offset ``u``, dilation ``d`` and padding ``pd`` the input cell
  ``pos - Δ`` meets output cell ``pos - Δ'`` with ``Δ' = Δ + d u - pd``, so
  ``F'[Δ'] = (1 / Z)[pos - Δ'] sum_{Δ + d u - pd = Δ'} W+[:, :, u]^T (F[Δ] x[pos - Δ])``
  (one GEMM ``(oC, kW' iC) @ (kW' iC, n h w)`` per offset ``Δ'`` and kernel row, over
  the ``kW'`` kernel columns that meet ``F``: each is a view of ``F`` and of the
  weights flipped once in ``v``, the first writes ``F'[Δ']``, the others are added;
  no zero fill, no ``(kH kW oC, n h w)`` temporary), where ``1 / Z``
  is 0 where ``Z == 0`` exactly (the safe divide of every EB kernel). The number
  of offsets grows from ``(nh, nw)`` to ``(nh + d (kH - 1), nw + d (kW - 1))``.
  Gradient: ``W`` instead of ``W+``, no ``x`` and no ``1 / Z``.
* Max pooling (the top; winner takes all, first maximum on ties): the cell
  routed to by window ``(c, cell)`` is its argmax ``w``, so
  ``G[n, pos, c, cell] = F[pos - w, c, n, pos]``. ``G`` is stored transposed,
  ``(n, C oh ow, h w + L)``, so that the at most ``nh nw`` entries of a window are
  neighbours; it is filled by one flat gather and scatter per row of offsets.

Mass accounting (EB): a folded layer loses ``sum_{l = 1} p_out`` for an indicator
``l`` on its output: ``Z == 0`` for a convolution (the safe divide drops that
signal), ``y <= 0`` for a ReLU (its mask), nothing for pooling and dropout. Each
such total is a linear functional of ``p_top``, obtained by carrying ``l`` up
the block with the adjoints of the layers above it (ReLU: ``* m``; convolution:
``conv(x * l, W+) / Z``; pooling: gather at the winners); it becomes one more row
of ``G``, so ``diagnostics["mass_lost"]`` keeps one entry per layer. Functionals
that vanish identically (a ReLU's zeros meet the next convolution's input ``x``,
which is 0 there) are skipped.

What can be folded (:func:`plan`): a 4-D read-out layer followed by ReLU,
dropout and convolutions with stride 1 and one group, up to and including a max
pooling, with at least one convolution on the way. Folding is chosen only when
it needs fewer multiply-adds than the unfused passes for K targets and its
arrays for one frame fit :data:`FOLD_BUDGET_BYTES`; frames are folded in groups
of about :data:`FOLD_GROUP_BYTES` on the CPU (at least one frame); on a GPU, where
fewer and larger launches pay, of up to :data:`FOLD_BUDGET_BYTES`. The choice depends on
shapes and K only, never on values.

Cost of the construction (VGG16-LSTM read out at ``conv5_1``, float32, random
weights, 16 frames in chunks of 8, 2 cores shared with other jobs): building and
applying ``G`` (:func:`fused_maps`) takes 1.0 s inside a 101-target cEB-R call,
was 1.5-1.7 s. Of it, the conv GEMMs of the fold (74 G multiply-adds) take about
0.5 s, the two ``Z`` convolutions 0.14 s, the GEMM with ``p_top`` 0.09 s and the
pooling scatter 0.18 s. Before: the scatter took 0.64 s (one write per cache line
and page, per offset, into ``G`` laid out ``(n, h w + L, C oh ow)``), the adds of
the per-offset GEMM results and their ``(kH kW oC, n h w)`` temporaries 0.18 s,
the factor passes over ``F`` 0.10 s (now 0.01 s). Frame groups of 2 (the 96 MiB of
:data:`FOLD_GROUP_BYTES`) took 0.95 s against 1.02 s for 1, 1.03 s for 3 and
1.28 s for one group of 8, mostly first-touch page faults of the large new arrays
(NumPy asks for transparent huge pages on them).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from ..backend import get_xp, on_host, to_numpy
from ..layers._eb import safe_divide
from ..layers.conv2d import conv2d_forward
from ..layers.geometry import pair
from ..layers.maxpool2d import maxpool2d_winners
from ..models.stack import run_eb, run_grad
from .frame_cnn import ChunkMaps
from .inputs import check_fused_switch

__all__ = [
    "FoldPlan",
    "FOLD_BUDGET_BYTES",
    "FOLD_GROUP_BYTES",
    "FusedLeg",
    "plan",
    "folded_layers",
    "fused_maps",
]

FOLD_BUDGET_BYTES = 1 << 29  # arrays of one folded frame (F, G and the pushed functionals), at most
FOLD_GROUP_BYTES = (
    3 << 25
)  # arrays of one group of folded frames on the CPU, aimed at (96 MiB; see the docstring)
_MODES = ("eb", "grad")


class FoldPlan(NamedTuple):
    """Which layers above the read-out layer are folded, and how."""

    depth: int  # layers readout_index + 1 .. readout_index + depth are folded (the last: the max pooling)
    mode: str  # "eb" or "grad"
    frames_per_group: int  # frames folded at once (FOLD_GROUP_BYTES // bytes of one frame, at least 1)
    readout_hw: tuple  # (h, w) of the read-out layer's output


def folded_layers(model, readout_index, fold):
    """Names of the layers a plan folds above the read-out layer (None without a plan)."""
    if fold is None:
        return None
    return [model.layer_names[k] for k in range(readout_index + 1, readout_index + 1 + fold.depth)]


class FusedLeg:
    """The fused leg of one chunk: the layers above the fold layer by layer, then the fold at once.

    ``FusedLeg(fold)(records, p) -> ChunkMaps``, the drop-in for
    :meth:`ebr_ref.grounding.frame_cnn.FrameCNN.eb_to_readout` (or ``grad_to_readout``,
    as ``fold.mode`` says): ``records`` run from the read-out layer up, ``p (K, n, ...)``
    is the signal at their top. The maps are the channel sums only; the mass
    lost lists the layers above the fold, then the folded layers, top first.
    """

    def __init__(self, fold):
        self.fold = fold

    def __call__(self, records, p):
        below, above = records[: self.fold.depth], records[self.fold.depth :]
        mass = {}
        if self.fold.mode == "grad":
            p = run_grad(above, p)  # (K, n, C, oh, ow)  at the pooling's output
        else:
            passed = run_eb(above, p)
            p, mass = passed.p, dict(passed.mass)  # (K, n, C, oh, ow)
        maps, lost = fused_maps(below, p, self.fold)  # (K, n, h, w)
        for name in reversed(lost):  # top first, as run_eb reports them
            mass[name] = lost[name]
        return ChunkMaps(maps, None, mass)


class _Survey(NamedTuple):
    """What folding the layers above the read-out layer would take, per frame."""

    depth: int  # layers folded, up to and including the max pooling
    fold_macs: int  # multiply-adds to build G, once
    target_macs: int  # multiply-adds per target with the fold: one GEMM row block, (F1)
    plain_macs: int  # multiply-adds per target without it: the conv adjoints
    floats: int  # size of the largest arrays of the fold (F twice, G)


def plan(model, readout_index, K, mode, *, request="auto"):
    """Decide whether the read-out above layer ``readout_index`` is fused for ``K`` targets.

    Parameters
    ----------
    model : ebr_ref.models.Model
    readout_index : int
        Index of the read-out layer (``-1`` for the input).
    K : int
        Number of stacked target signals.
    mode : {"eb", "grad"}
    request : {"auto", True, False}
        ``"auto"``: fuse when it is applicable and cheaper; True: fuse whenever
        applicable, else raise ValueError saying why; False: never.

    Returns
    -------
    FoldPlan or None
    """
    if mode not in _MODES:
        raise ValueError(f"fused read-out: unknown mode {mode!r}")
    request = check_fused_switch(request, False)
    if request is False:
        return None
    in_shape = model.input_shape if readout_index < 0 else model.shapes[readout_index]
    survey = _survey(model, readout_index, in_shape)
    why = survey if isinstance(survey, str) else None
    if why is None:
        frame_bytes = survey.floats * model.dtype.itemsize
        if request == "auto" and survey.fold_macs + K * survey.target_macs >= K * survey.plain_macs:
            why = f"not cheaper for {K} target(s)"
        elif frame_bytes > FOLD_BUDGET_BYTES:
            why = f"one frame's fold needs {frame_bytes} bytes > FOLD_BUDGET_BYTES = {FOLD_BUDGET_BYTES}"
    if why is not None:
        if request is True:
            name = "input" if readout_index < 0 else model.layer_names[readout_index]
            raise ValueError(f"fused_readout=True: cannot fuse the read-out above {name!r}: {why}")
        return None
    group_bytes = (
        FOLD_GROUP_BYTES if on_host(model.xp) else FOLD_BUDGET_BYTES
    )  # CPU: cache; GPU: fewer launches
    return FoldPlan(survey.depth, mode, int(max(1, group_bytes // frame_bytes)), tuple(in_shape[1:]))


def _survey(model, readout_index, in_shape):
    """Walk up from the read-out layer: a :class:`_Survey`, or the reason (str) the fold does not apply."""
    if len(in_shape) != 3:
        return "the read-out layer is not a (C, h, w) map"
    C, h, w = in_shape
    P = h * w
    nh = nw = 1  # offsets of the functional F
    fold = plain = 0
    peak = P * C  # floats of F for one frame
    for k in range(readout_index + 1, model.sequence_start):
        layer, out_shape = model.layers[k], model.shapes[k]
        if layer.type in ("relu", "dropout"):
            continue
        if layer.type == "conv":
            s = layer.settings
            (kH, kW), stride, (dH, dW) = (
                pair(s["kernel"], "kernel"),
                pair(s["stride"], "stride"),
                pair(s["dilation"], "dilation"),
            )
            if stride != (1, 1) or s["groups"] != 1:
                return (
                    f"layer {layer.name!r} has stride {stride} and groups {s['groups']} "
                    "(stride 1, one group needed)"
                )
            oC, oH, oW = out_shape
            fold += nh * nw * C * oC * kH * kW * P
            plain += C * oC * kH * kW * oH * oW
            nh, nw, C = nh + dH * (kH - 1), nw + dW * (kW - 1), oC
            peak = max(peak, nh * nw * C * P)
            continue
        if layer.type == "maxpool":
            if not plain:
                return "no convolution between the read-out layer and the pooling"
            top = int(numpy.prod(out_shape))
            depth = k - readout_index
            rows = P + depth  # map positions + one mass functional per folded layer
            return _Survey(depth, fold, P * top, plain, 2 * peak + rows * top)
        return f"layer {layer.name!r} ({layer.type}) cannot be folded and comes before any max pooling"
    return "no max pooling above the read-out layer in the CNN part"


def fused_maps(fold_records, p_top, plan_):
    """Channel-summed maps at the read-out layer from the signal at the fold's top.

    Parameters
    ----------
    fold_records : list of (Layer, cache)
        The forward records of the folded layers (from :meth:`LayerStack.run_forward`
        with ``keep=True``), bottom first; the last is the max pooling.
    p_top : array of shape (K, N, C, oh, ow)
        The signal at the pooling's output.
    plan_ : FoldPlan

    Returns
    -------
    maps : array of shape (K, N, h, w)
        Channel sums of the signal at the read-out layer.
    lost : dict of str to array of shape (K,)
        Mass lost in each folded layer (``mode == "eb"``), as :func:`~ebr_ref.models.stack.run_eb`
        records it; empty for the gradient.
    """
    xp = get_xp(p_top)
    K, N = p_top.shape[:2]
    g, hw = plan_.frames_per_group, plan_.readout_hw
    P = hw[0] * hw[1]
    maps = []
    lost = {}
    if plan_.mode == "eb":  # summed on the device, read back once (no host round trip per group)
        lost = {layer.name: xp.zeros(K, dtype=p_top.dtype) for layer, _ in fold_records}
    for a in range(0, N, g):  # groups of frames, for memory and speed only
        b = min(a + g, N)
        part = [(layer, _frames(cache, a, b)) for layer, cache in fold_records]
        G, rows = _fold_matrix(part, plan_.mode, (b - a,) + hw, p_top.dtype, xp=xp)  # (n, C oh ow, P + L)
        top = p_top[:, a:b].reshape(K, b - a, -1).transpose(1, 2, 0)  # (n, C oh ow, K)
        out = xp.matmul(G.transpose(0, 2, 1), top)  # (n, P + L, K)
        maps.append(out[:, :P].transpose(2, 0, 1).reshape(K, b - a, *hw))  # (K, n, h, w)
        for m, name in enumerate(rows):
            lost[name] += out[:, P + m].sum(axis=0)  # (K,)
    return xp.concatenate(maps, axis=1), {name: to_numpy(v) for name, v in lost.items()}


def _frames(cache, a, b):
    """The cache of frames ``a:b`` (batch axis 0 of every per-frame array)."""
    fields = {name: v[a:b] for name, v in cache._asdict().items() if name in ("x", "y")}
    return cache._replace(**fields)


def _windows(A, lo, n_off, out_hw, *, xp):
    """``win(a, b)[c, n, i, j] = A[n, c, i - lo_h - a, j - lo_w - b]``, 0 outside ``A``'s grid.

    ``A (n, C, Hl, Wl)``; returns the function ``win`` giving ``(C, n, h, w)`` views.
    """
    n, C, Hl, Wl = A.shape
    (lo_h, lo_w), (nh, nw), (h, w) = lo, n_off, out_hw
    top, left = max(0, lo_h + nh - 1), max(0, lo_w + nw - 1)
    bottom, right = max(0, h - lo_h - Hl), max(0, w - lo_w - Wl)
    Ap = xp.zeros((C, n, top + Hl + bottom, left + Wl + right), dtype=A.dtype)
    Ap[:, :, top : top + Hl, left : left + Wl] = A.transpose(1, 0, 2, 3)

    def win(a, b):
        i0, j0 = top - lo_h - a, left - lo_w - b
        return Ap[:, :, i0 : i0 + h, j0 : j0 + w]

    return win


def _fold_matrix(records, mode, nhw, dtype, *, xp):
    """``G (n, C oh ow, h w + L)`` of (F1), transposed: one column per map position and per folded layer's
    mass functional.

    ``nhw = (n, h, w)``: frames and the read-out layer's grid. Returns ``(G, names of the mass columns)``.
    """
    n, h, w = nhw
    P = h * w
    F = None  # (nh, nw, C, n, h, w); None means 1 with one offset
    scale = None  # (n, C or 1, Hl, Wl) the factors of the current level not yet applied to F; None: 1
    lo, n_off = (0, 0), (1, 1)
    z_inv, z_zero, w_pos = {}, {}, {}  # layer index -> 1 / Z (0 where Z == 0), the mask Z == 0, W+
    for k, (layer, cache) in enumerate(records[:-1]):
        if layer.type == "dropout":
            continue
        if layer.type == "relu":
            scale = _times(scale, (cache.y > 0).astype(dtype), xp=xp)  # (n, C, Hl, Wl)  the ReLU's mask
            continue
        # convolution, stride 1, one group (checked by plan)
        x, W = cache.x, cache.W
        (dH, dW), (pH, pW) = cache.dilation, cache.padding
        kH, kW = W.shape[2:]
        geo = dict(stride=cache.stride, padding=cache.padding, dilation=cache.dilation, groups=cache.groups)
        if mode == "eb":
            W_use = w_pos[k] = xp.maximum(W, 0)  # (oC, iC, kH, kW)
            z, _ = conv2d_forward(x, W_use, **geo)  # (n, oC, oH, oW)  step 1 of EB
            z_inv[k] = safe_divide(xp.ones_like(z), z, xp=xp)  # (n, oC, oH, oW)  0 where Z == 0
            z_zero[k] = z == 0  # (n, oC, oH, oW)  where the safe divide drops the signal
            scale = _times(scale, x, xp=xp)  # (n, iC, iH, iW)  times the input x
        else:
            W_use = W
            if F is not None and scale is None:  # no x to multiply by: zero F outside the conv's input grid
                scale = xp.ones((n, 1) + tuple(x.shape[2:]), dtype=dtype)  # (n, 1, iH, iW)
        if scale is not None:
            F = _scale(F, scale, lo, n_off, (h, w), xp=xp)  # one pass over F for all factors of the level
        F = _through_conv(F, W_use, n_off, (dH, dW), (n, h, w), xp=xp)
        lo, n_off = (lo[0] - pH, lo[1] - pW), (n_off[0] + dH * (kH - 1), n_off[1] + dW * (kW - 1))
        scale = z_inv[k] if mode == "eb" else None  # (n, oC, oH, oW)  times 1 / Z, applied with the next
    pool = records[-1][1]
    winners = _winner_cells(pool, xp=xp)  # two (n, C, oh, ow): row and column of every window's winner
    rows, names = [], []
    if mode == "eb":
        for k, (layer, _) in enumerate(records):
            row = _mass_functional(records, k, z_inv, z_zero, w_pos, winners, xp=xp)  # (n, C, oh, ow) or None
            if row is not None:
                rows.append(row)
                names.append(layer.name)
    C, oh, ow = pool.y.shape[1:]
    G = xp.zeros((n, C * oh * ow, P + len(rows)), dtype=F.dtype)  # map columns, then mass columns
    _scatter_pool(F, scale, winners, lo, (h, w), G, xp=xp)  # G[:, :, :P], times the top level's factors
    for m, row in enumerate(rows):
        G[:, :, P + m] = row.reshape(n, C * oh * ow)
    return G, names


def _times(scale, A, *, xp):
    """``scale * A`` (a new array; ``scale = None`` stands for 1)."""
    return A if scale is None else xp.multiply(scale, A)


def _scale(F, A, lo, n_off, out_hw, *, xp):
    """``F[a, b] *= A`` at the cells ``pos - offset(a, b)``; ``F = None`` stands for all ones."""
    win = _windows(A, lo, n_off, out_hw, xp=xp)
    if F is None:
        return xp.ascontiguousarray(win(0, 0))[None, None]  # (1, 1, C, n, h, w)
    for a in range(n_off[0]):  # loops over offsets only
        for b in range(n_off[1]):
            F[a, b] *= win(a, b)
    return F


def _through_conv(F, W, n_off, dil, nhw, *, xp):
    """``F'[A, B] = sum W[:, :, u, v] @ F[A - d u, B - d v]`` over channels: offsets of the conv's output
    signal.

    One GEMM per output offset and kernel row ``u``, of depth ``iC`` times the kernel columns that meet
    ``F``, on views (the weights flipped in ``v`` once, so that they line up with ``F``'s offsets); the
    ``u`` rows are summed into the output, which needs no zero fill.
    """
    n, h, w = nhw
    oC, iC, kH, kW = W.shape
    if F is None:  # the channel sum itself: 1 for every input channel
        F = xp.ones((1, 1, iC, n, h, w), dtype=W.dtype)
    (nh, nw), (dH, dW) = n_off, dil
    NH, NW = nh + dH * (kH - 1), nw + dW * (kW - 1)
    W_flip = xp.ascontiguousarray(W[:, :, :, ::-1].transpose(2, 0, 3, 1))  # (kH, oC, kW, iC)  column kW-1-v
    out = xp.empty((NH, NW, oC, n * h * w), dtype=W.dtype)  # (NH, NW, oC, n h w)
    part = xp.empty((oC, n * h * w), dtype=W.dtype)  # (oC, n h w)  one kernel row's term
    for A in range(NH):  # loops over offsets only
        for B in range(NW):
            v_lo, v_hi = max(0, -((nw - 1 - B) // dW)), min(kW - 1, B // dW)  # kernel columns meeting F
            terms = [u for u in range(kH) if 0 <= A - dH * u < nh] if v_lo <= v_hi else []
            if not terms:
                out[A, B] = 0
            for t, u in enumerate(terms):
                a, b0, b1 = A - dH * u, B - dW * v_hi, B - dW * v_lo  # F[a, b0 : b1 + 1 : dW] meets row u
                Wu = W_flip[u, :, kW - 1 - v_hi : kW - v_lo].reshape(oC, -1)  # (oC, cnt iC)  a view
                Fu = F[a, b0 : b1 + 1 : dW].reshape(-1, n * h * w)  # (cnt iC, n h w)  a view when dW == 1
                xp.matmul(Wu, Fu, out=out[A, B] if t == 0 else part)  # one GEMM
                if t > 0:
                    out[A, B] += part
    return out.reshape(NH, NW, oC, n, h, w)


def _winner_cells(pool, *, xp):
    """Row and column of every window's winner in the pooling's input grid: two ``(n, C, oh, ow)`` arrays."""
    kW, (sH, sW), (pH, pW) = pool.kernel[1], pool.stride, pool.padding
    argmax = maxpool2d_winners(pool)  # (n, C, oh, ow)
    oh, ow = argmax.shape[2:]
    ii = xp.arange(oh).reshape(1, 1, oh, 1) * sH - pH + argmax // kW
    jj = xp.arange(ow).reshape(1, 1, 1, ow) * sW - pW + argmax % kW
    return ii, jj


def _scatter_pool(F, scale, winners, lo, hw, G, *, xp):
    """``G[n, (c, cell), pos] = s[n, c, win] F[pos - lo - win, c, n, pos]`` for the map columns ``pos < h w``
    of ``G (n, C oh ow, R)``, ``win`` the winner of window ``(c, cell)`` and ``s`` the pending factors
    ``scale`` (None: 1).

    One flat gather from ``F`` and one flat scatter into ``G`` per row ``a`` of offsets, both at the
    windows and offset columns ``b`` whose read-out position ``win + lo + (a, b)`` lies in the grid; a
    window's ``nw`` entries of a row are neighbours in ``G``.
    """
    h, w = hw
    n, _, R = G.shape
    nh, nw = F.shape[:2]
    ii, jj = winners  # (n, C, oh, ow)
    C, oh, ow = ii.shape[1:]
    nn = xp.arange(n).reshape(n, 1, 1, 1)
    cc = xp.arange(C).reshape(1, C, 1, 1)
    cell = xp.arange(oh * ow).reshape(1, 1, oh, ow)
    b = xp.arange(nw)  # (nw,)  offset columns
    pos = ii * w + jj  # (n, C, oh, ow)  flat read-out position of the winner, at offset -lo
    dst = (((nn * C + cc) * (oh * ow) + cell) * R + pos).reshape(-1, 1) + b  # (m, nw)  in G, m = n C oh ow
    col_step = F[0, 0].size + 1  # from F[a, b] at position p to F[a, b + 1] at p + 1, flat
    src = ((cc * n + nn) * (h * w) + pos).reshape(-1, 1) + b * col_step  # (m, nw)  F[a, b] at pos + b
    in_w = (jj.reshape(-1, 1) + lo[1] + b >= 0) & (jj.reshape(-1, 1) + lo[1] + b < w)  # (m, nw)
    if scale is not None:
        s = xp.broadcast_to(scale, (n, C) + scale.shape[2:])[nn, cc, ii, jj]  # (n, C, oh, ow)
        s = xp.broadcast_to(s.reshape(-1, 1), dst.shape).reshape(-1)  # (m nw,)
    dst, src = dst.reshape(-1), src.reshape(-1)  # (m nw,)
    flat_G, flat_F = G.reshape(-1), F.reshape(nh, -1)  # views: G and F are contiguous
    for a in range(nh):  # loops over offset rows only
        pi = ii.reshape(-1, 1) + lo[0] + a  # (m, 1)  read-out row of the winner at offset row a
        sel = xp.flatnonzero((pi >= 0) & (pi < h) & in_w)  # (k,)  entries whose position is in the grid
        shift = (lo[0] + a) * w + lo[1]
        vals = flat_F[a][src[sel] + shift]  # (k,)
        if scale is not None:
            vals *= s[sel]
        flat_G[dst[sel] + shift] = vals


def _mass_functional(records, k, z_inv, z_zero, w_pos, winners, *, xp):
    """The row of ``G`` giving the mass lost in folded layer ``k``, or None when it is identically 0."""
    layer, cache = records[k]
    if layer.type == "conv":
        u = z_zero[k].astype(z_inv[k].dtype)  # (n, oC, oH, oW)  signal dropped by the safe divide
    elif layer.type == "relu":
        u = (cache.y <= 0).astype(cache.y.dtype)  # masked cells
    else:
        return None
    for j in range(k + 1, len(records)):  # carry the functional up with the adjoint of each EB step
        if not bool(u.any()):
            return None
        above, c = records[j]
        if above.type == "relu":
            u = u * (c.y > 0)
        elif above.type == "conv":
            v = c.x * u
            if not bool(v.any()):
                return None
            geo = dict(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups)
            u = conv2d_forward(v, w_pos[j], **geo)[0] * z_inv[j]
        elif above.type == "maxpool":
            ii, jj = winners  # the pooling is the top of the block
            n, C = u.shape[:2]
            u = u[xp.arange(n).reshape(n, 1, 1, 1), xp.arange(C).reshape(1, C, 1, 1), ii, jj]
    if not bool(u.any()):
        return None
    return u
