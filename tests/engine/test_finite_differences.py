"""Central finite differences of the engine's own loss agree with every entry of every parameter gradient,
on tiny float64 models of every cell kind, 1 and 2 layers, both losses.

(L(w + e) - L(w - e)) / 2e has truncation error O(e^2 L''') and rounding error O(eps L / e); with
e = 1e-6 * max(1, |w|) both are ~1e-10 relative to the loss, so we ask for agreement within
1e-6 relative plus 1e-9 absolute.  A ReLU kink within reach of the step would void the check: the
test asserts that no pre-activation is that close to 0.
"""

import numpy as np
import pytest

from gradscope.engine import bptt, reference

from ._helpers import CELL_KINDS, label, make_batch, make_model

T, B = 4, 2


def _loss(spec, params, batch, loss_kind):
    return bptt(spec, params, *batch, loss_kind, check=False).loss


def _min_abs_preactivation(spec, params, x):
    """The smallest |z| over every unit, step and example (for the ReLU kink check)."""
    inputs, smallest = x, np.inf
    for p in params.layers:
        H, _ = reference.rnn_forward(inputs, p, spec.activation)
        H_prev = np.concatenate([np.zeros_like(H[:1]), H[:-1]])
        Z = inputs @ p.W_hx.T + H_prev @ p.W_hh.T + p.b_h
        smallest = min(smallest, float(np.min(np.abs(Z))))
        inputs = H
    return smallest


@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell,activation", CELL_KINDS, ids=[label(*c) for c in CELL_KINDS])
def test_every_gradient_entry_matches_central_differences(cell, activation, layers, loss_kind):
    rng = np.random.default_rng(100 + 10 * layers + (loss_kind == "ce"))
    spec, params = make_model(cell, activation, layers, "float64", rng, n=3, d=3, k=2, recurrent_scale=1.2)
    batch = make_batch(spec, T, B, loss_kind, rng)
    if activation == "relu" and cell == "rnn":
        assert _min_abs_preactivation(spec, params, batch[0]) > 1e-4
    grads = bptt(spec, params, *batch, loss_kind).grads
    checked = 0
    for (name, w), (_, g) in zip(params.named(), grads.named()):
        fd = np.empty_like(w)
        for index in np.ndindex(w.shape):
            original = w[index]
            e = 1e-6 * max(1.0, abs(original))
            w[index] = original + e
            up = _loss(spec, params, batch, loss_kind)
            w[index] = original - e
            down = _loss(spec, params, batch, loss_kind)
            w[index] = original
            fd[index] = (up - down) / (2 * e)
            checked += 1
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9, err_msg=name)
    assert checked == sum(a.size for _, a in params.named())
