"""``ebr-ref make-dataset`` (being written)."""

from ._common import UserError


def add_parser(sub, parents):
    p = sub.add_parser("make-dataset", parents=parents, help="(being written)")
    p.set_defaults(run=run)
    return p


def run(args, console):
    raise UserError("not available yet")
