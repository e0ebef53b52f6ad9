"""first_nonfinite's shortcut: when the pass's gradient norms are all finite it answers from them at once; a
non-finite norm still names its array and stream (metrics.first_nonfinite)."""

from __future__ import annotations

import numpy as np
import pytest

from gradscope.engine.metrics import first_nonfinite
from gradscope.engine.params import LayerParams, Params


def _pass(L: int = 2, T: int = 5):
    rng = np.random.default_rng(0)
    metrics = {"h_norm": rng.random((L, T)), "grad_h_norm": rng.random((L, T)), "loss_t": rng.random(T)}
    layers = [LayerParams(rng.random((3, 2)), rng.random((3, 3)), rng.random(3)) for _ in range(L)]
    grads = Params(layers, rng.random((2, 3)), rng.random(2))
    return metrics, grads, np.array([np.linalg.norm(g) for _, g in grads.named()])


def test_finite_norms_mean_a_finite_pass():
    metrics, grads, norms = _pass()
    assert first_nonfinite(metrics, grads, norms) is None


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("index", range(8))
def test_a_nonfinite_norm_names_its_array(index, bad):
    metrics, grads, norms = _pass()
    norms[index] = bad
    names = [name for name, _ in grads.named()]
    found = first_nonfinite(metrics, grads, norms)
    assert found is not None and found.quantity == f"grad {names[index]}"
    stream = names[index].rpartition(".")[0]
    assert found.layer == (int(stream[5:]) if stream.startswith("layer") else None)


def test_without_norms_the_arrays_are_scanned():
    metrics, grads, _ = _pass()
    grads.layers[1].W_hh[0, 0] = np.nan
    found = first_nonfinite(metrics, grads)
    assert found is not None and found.quantity == "grad layer1.W_hh" and found.layer == 1
