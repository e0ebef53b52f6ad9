"""``python -m gradscope ...``: the command line (gradscope.cli); with no arguments it opens the app."""

from .cli import main
from .terminal import exit_process

if __name__ == "__main__":
    exit_process(main())  # without the interpreter's teardown (terminal.exit_process)
