"""``python -m gradscope ...``: the command line (gradscope.cli); with no arguments it opens the app."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
