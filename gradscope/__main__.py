"""``python -m gradscope ...`` and the ``gradscope`` script: the command line (gradscope.cli); with no arguments it
opens the app."""

from .cli import main
from .terminal import exit_process


def entry() -> None:
    """main(), then the process ends without the interpreter's teardown (terminal.exit_process)."""
    exit_process(main())


if __name__ == "__main__":
    entry()
