"""What the command-line tests share: a small experiment (two iterations' worth of work in a fraction of a
second) and ``gradscope run`` called in-process on the NumPy backend without figures."""

from gradscope import cli

SMALL_HEADER = """
schema_version = 1
[experiment]
name = "small"
seed = 2
[defaults]
hidden_size = 8
[defaults.task]
name = "adding"
seq_len = 10
batch_size = 2
[defaults.train]
iterations = 3
[[runs]]
name = "relu"
"""


def run(*args) -> int:
    return cli.main(["run", *map(str, args), "--backend", "numpy", "--no-plots"])
