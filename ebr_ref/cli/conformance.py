"""``ebr-ref conformance``: write the conformance suite (:mod:`ebr_ref.tools.conformance`) for ports.

``ebr-ref conformance export DIR`` writes every case (the model as canonical
``.npz`` and plain ``.npy`` files, the clip, the settings and the expected value
at every named point) and ``DIR/index.json``; ``ebr-ref conformance list``
prints the cases and the conventions they exercise. A port's output for one
case is checked with ``ebr-ref compare THEIRS.npz --case DIR/<case>``.
"""

from __future__ import annotations

import os

from ._common import UserError, user_errors

__all__ = ["add_parser", "run"]


def add_parser(sub, parents):
    p = sub.add_parser(
        "conformance",
        parents=parents,
        help="write the conformance suite: small cases with every expected value",
        description="Small cases (a CNN, CNN-LSTMs with both cell activations and both LSTM rules, "
        "captioners) with the weights, the input and the engine's float64 value at every named "
        "point of the method, for an implementation in any framework to check itself against "
        "without ebr_ref (docs/verify-your-implementation.md).",
    )
    what = p.add_subparsers(dest="action", metavar="ACTION")
    e = what.add_parser(
        "export",
        parents=parents,
        help="write the suite into DIR",
        description="Write DIR/index.json and one folder per case.",
    )
    e.add_argument("dir", metavar="DIR")
    e.add_argument("--case", action="append", dest="cases", metavar="NAME", help="only this case; repeat")
    e.add_argument("--overwrite", action="store_true", help="replace a suite already in DIR")
    what.add_parser("list", parents=parents, help="list the cases and their conventions")
    p.set_defaults(run=run)
    return p


def run(args, console):
    from ..tools import conformance

    if args.action is None:
        raise UserError("give an action: export DIR, or list")
    if args.action == "list":
        for name in conformance.case_names():
            *_, description, conventions = conformance.build_case(name)
            print(f"{name}: {description}")
            print(f"  conventions: {', '.join(conventions)}")
        return 0
    with user_errors():
        index = conformance.export(args.dir, overwrite=args.overwrite, names=args.cases)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.dir) for f in fs)
    console.info(
        f"wrote {len(index['cases'])} cases ({sum(c['points'] for c in index['cases'])} points, "
        f"{size / 1e6:.1f} MB) to {os.path.abspath(args.dir)}"
    )
    return 0
