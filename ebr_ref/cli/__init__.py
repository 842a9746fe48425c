"""The ``ebr-ref`` command line (also ``python -m ebr_ref``).

Commands (one module each): ``demo``, ``ground``, ``caption``, ``convert``,
``inspect``, ``compare``, ``make-dataset``, ``evaluate``; see docs/cli.md. :func:`main` returns the exit
status: 0 on success, 1 when ``compare`` finds differences beyond its
tolerance, 2 for a user mistake (a bad path, argument or file: printed as one
line ``ebr-ref <command>: error: ...`` on stderr, never a traceback), 130 on
Ctrl-C, 143 on SIGTERM (both after removing the temporaries of an unfinished
write). An unexpected internal error prints its traceback (it is a bug;
please report it) and exits with 1.

This package imports neither torch nor CuPy; matplotlib, Pillow, imageio and
tqdm (the ``cli`` extra) are imported inside the functions that draw, read or
write files. ``weights_io`` is imported only by ``convert``, ``inspect``, and
by ``ground``/``compare``/``demo`` when ``--model`` is a foreign checkpoint
(not an ebr_ref canonical model), to convert it on the fly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import contextmanager

from .. import __version__
from ._common import Console, Terminated, UserError

__all__ = ["main", "build_parser"]

_COMMANDS = (
    "demo",
    "ground",
    "caption",
    "convert",
    "inspect",
    "compare",
    "make-dataset",
    "evaluate",
    "conformance",
)


class _Parser(argparse.ArgumentParser):
    """argparse with errors raised as UserError (one line, exit 2) instead of usage + exit."""

    def error(self, message):
        raise UserError(f"{message} (see '{self.prog} --help')", prog=self.prog)


def build_parser():
    """The argument parser of every command."""
    from importlib import import_module

    common = _Parser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars and no summary (warnings still go to stderr)",
    )
    common.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    parser = _Parser(
        prog="ebr-ref",
        description="Excitation Backprop for RNNs: ground a video model's decision in "
        "space and time (Bargal et al., CVPR 2018).",
    )
    parser.add_argument("--version", action="version", version=f"ebr_ref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        import_module(
            f".{name}_cmd" if name == "inspect" else "." + name.replace("-", "_"), __name__
        ).add_parser(sub, [common])
    return parser


_OWNER = []  # the id of the process whose SIGTERM raises (forked workers keep the default action)


def _terminate(signum, frame):
    if _OWNER and os.getpid() != _OWNER[-1]:  # a forked child: die as if no handler were installed
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


@contextmanager
def _sigterm_raises():
    """SIGTERM raises :class:`Terminated` while a command runs (main thread only): temporaries are removed."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM
        yield
        return
    _OWNER.append(os.getpid())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _OWNER.pop()


def main(argv=None):
    """Run the command line; return the exit status (see the module notes)."""
    with _sigterm_raises():
        return _main(argv)


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "ebr-ref"
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        prog = f"ebr-ref {args.command}"
        return int(args.run(args, Console(args.quiet, prog=prog)) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"{e.prog or prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:  # pragma: no cover - e.g. `ebr-ref inspect x | head`
        return 0
