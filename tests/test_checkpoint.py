"""A run restored from a checkpoint goes on as the uninterrupted run does: same batches (the data stream's RNG
state), same updates (parameters and the optimizer's state), same records bit for bit; only spectral_radius and
sigma_max restart from an exact eigensolve and agree within the tracker's tolerance (engine.spectra)."""

from __future__ import annotations

import numpy as np
import pytest

from gradscope.config import loads
from gradscope.engine.spectra import TOLERANCE as SPECTRAL  # the tracker's stated relative tolerance
from gradscope.engine.trainer import Training

TEXT = """
schema_version = 1
[experiment]
name = "resume"
seed = 5
[defaults]
hidden_size = 12
cell = "{cell}"
[defaults.task]
name = "adding"
seq_len = 15
batch_size = 4
[defaults.train]
iterations = 40
optimizer = "{optimizer}"
lr = 0.01
{extra}
spectral_every = 1
[[runs]]
name = "r"
"""


def _run(cell, optimizer, extra):
    experiment = loads(TEXT.format(cell=cell, optimizer=optimizer, extra=extra))
    run = experiment.runs[0]
    return run, run.effective_seed(experiment.seed)


def _rows(records):
    return [r.columns() for r in records if r.recorded]


@pytest.mark.parametrize(
    "cell, optimizer, extra", [("rnn", "sgd", "momentum = 0.9"), ("lstm", "adam", ""), ("gru", "sgd", "")]
)
def test_a_restored_run_goes_on_as_the_uninterrupted_one(cell, optimizer, extra):
    run, seed = _run(cell, optimizer, extra)
    full = Training(run, seed, backend="numpy")
    whole = list(full)
    first = Training(run, seed, backend="numpy")
    head = [next(first) for _ in range(17)]
    state = {k: np.array(v) for k, v in first.checkpoint().items()}  # as np.load would give it back
    first.close()
    again = Training(run, seed, backend="numpy")
    again.restore(state)
    tail = list(again)
    assert [r.iteration for r in head + tail] == list(range(40))
    for got, want in zip(_rows(head + tail), _rows(whole), strict=True):
        assert list(got) == list(want)
        for name, values in want.items():
            if name in SPECTRAL:
                np.testing.assert_allclose(got[name], values, rtol=SPECTRAL[name], err_msg=name)
            else:
                np.testing.assert_array_equal(got[name], values, err_msg=name)
    for name, theta in full.params.arrays().items():  # and ends at the same parameters
        np.testing.assert_array_equal(again.params.arrays()[name], theta, err_msg=name)


def test_a_checkpoint_of_another_model_is_refused():
    run, seed = _run("rnn", "sgd", "")
    other, _ = _run("lstm", "sgd", "")
    state = Training(other, seed, backend="numpy").checkpoint()
    with pytest.raises(ValueError, match="checkpoint: "):
        Training(run, seed, backend="numpy").restore(state)
