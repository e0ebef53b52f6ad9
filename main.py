"""Start GradScope from a source checkout: ``python main.py [EXPERIMENT.toml]`` opens the app,
``python main.py run EXPERIMENT.toml --out DIR`` runs it headless (see gradscope/cli.py)."""

import sys

from gradscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
