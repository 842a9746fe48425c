"""Flattening nested containers that may share children: pickled dicts/lists and HDF5 groups.

A checkpoint is a tree only in appearance. A pickle's memo and HDF5's hard links
let one container appear under several parents, so a file of a few hundred
bytes can describe a DAG with ``2**depth`` paths (the list at depth k holding
the list of depth k-1 twice). :func:`flatten_dag` walks each container once
(memoised by identity: ``id()`` of a Python object, the object-header address
of an HDF5 group), reuses the names found below a container for every further
path to it, and charges every name it builds to one budget, so the work and the
memory are bounded whatever the file claims.
"""

from __future__ import annotations

from .errors import CheckpointError

__all__ = ["flatten_dag", "MAX_DEPTH", "MAX_STEPS"]

MAX_DEPTH = 64
# Names built (one per (container, name below it) pair, plus one per member
# visited). A state dict of N tensors nested d levels deep costs about N * d;
# real checkpoints stay far below (VGG16: 32 tensors; large language models:
# thousands per file).
MAX_STEPS = 1_000_000


def flatten_dag(root, expand, path, *, sep=".", what="checkpoint", max_depth=MAX_DEPTH, max_steps=MAX_STEPS):
    """``[(name, leaf value)]`` for every path from ``root`` to a leaf, in walk order.

    Parameters
    ----------
    root : object
    expand : callable
        ``expand(node)`` returns ``("leaf", value)``, ``("node", key, items)``
        -- ``key`` a hashable identity, ``items()`` an iterable of ``(name,
        child)`` -- or None for a node to ignore.
    path : str
        The file, for error messages.
    sep : str
        Joins the names along a path; a leaf at the root is named ``""``.
    max_depth, max_steps : int
        Nesting deeper than ``max_depth``, or more than ``max_steps`` names
        built (shared containers count once per path), is a CheckpointError.

    A container reached again while it is being walked (a cycle) contributes
    nothing on that path.
    """
    memo = {}
    active = set()
    steps = 0

    def spend(n, where):
        nonlocal steps
        steps += n
        if steps > max_steps:
            raise CheckpointError(
                path,
                f"{what} has more than {max_steps} names or members (at {where or '<root>'!r}); containers "
                "shared by many parents (a pickle's memo, HDF5 hard links) multiply the paths",
            )

    def rec(node, depth, where, walk):
        e = expand(node)
        if e is None:
            return ()
        if e[0] == "leaf":
            spend(1, where)
            return (("", e[1]),)
        _, key, items = e
        found = memo.get(key)
        if found is not None:
            spend(len(found) + 1, where)
            return found
        if key in active:
            return ()
        if depth > max_depth:
            raise CheckpointError(path, f"{what} nested deeper than {max_depth} levels at {where!r}")
        active.add(key)
        out = []
        for name, child in items():
            name = str(name)
            spend(1, where)
            below = walk(child, depth + 1, f"{where}{sep}{name}" if where else name, walk)
            spend(len(below), where)
            out.extend((f"{name}{sep}{rel}" if rel else name, v) for rel, v in below)
        active.discard(key)
        memo[key] = out
        return out

    # rec is handed itself instead of naming itself: a function that refers to itself through its closure
    # cell is a reference cycle, which would keep expand's containers (and through them the memory-mapped
    # file) alive after the walk until the garbage collector runs
    return list(rec(root, 0, "", rec))
