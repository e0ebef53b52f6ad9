"""The small two-run experiment (tanh "a", ReLU "b", {iterations} to fill in) that the app's recording tests and
the runs' process tests share: a few milliseconds an iteration on either engine."""

SMALL = """schema_version = 1
[experiment]
name = "small"
seed = 3
[defaults]
activation = "tanh"
hidden_size = 12
[defaults.task]
name = "probe"
seq_len = 10
batch_size = 4
input_size = 3
output_size = 2
[defaults.train]
iterations = {iterations}
lr = 0.01
[[runs]]
name = "a"
[[runs]]
name = "b"
activation = "relu"
"""
