"""``python -m ebr_ref``: the ``ebr-ref`` command line (see :mod:`ebr_ref.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
