"""``ebr-ref evaluate`` (being written)."""

from ._common import UserError


def add_parser(sub, parents):
    p = sub.add_parser("evaluate", parents=parents, help="(being written)")
    p.set_defaults(run=run)
    return p


def run(args, console):
    raise UserError("not available yet")
