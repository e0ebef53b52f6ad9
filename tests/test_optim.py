"""Optimizers against hand-computed steps and torch.optim; clipping by global norm."""

import numpy as np
import pytest

from gradscope.config import TrainConfig
from gradscope.engine.optim import SGD, Adam, clip_by_global_norm, make_optimizer
from gradscope.engine.params import LayerParams, Params


def small_params(rng, dtype=np.float64):
    return Params(
        [LayerParams(rng.normal(size=(3, 2)), rng.normal(size=(3, 3)), rng.normal(size=3))],
        rng.normal(size=(2, 3)),
        rng.normal(size=2),
    ).astype(dtype)


def test_sgd_step_by_hand():
    p = Params(
        [LayerParams(np.array([[1.0, 2.0]]), np.array([[0.5]]), np.array([0.0]))], np.array([[2.0]]), np.array([1.0])
    )
    g = Params(
        [LayerParams(np.array([[0.5, -1.0]]), np.array([[2.0]]), np.array([4.0]))], np.array([[-2.0]]), np.array([0.0])
    )
    SGD(p, lr=0.1).step(p, g)
    assert np.allclose(p.layers[0].W_hx, [[0.95, 2.1]]) and np.allclose(p.layers[0].W_hh, [[0.3]])
    assert np.allclose(p.layers[0].b_h, [-0.4]) and np.allclose(p.W_yh, [[2.2]]) and np.allclose(p.b_y, [1.0])


def test_momentum_steps_by_hand():
    # v1 = g1, v2 = mu v1 + g2: theta2 = theta0 - lr g1 - lr (mu g1 + g2)
    p = Params([LayerParams(np.zeros((1, 1)), np.array([[1.0]]), np.zeros(1))], np.zeros((1, 1)), np.zeros(1))
    opt = SGD(p, lr=0.5, momentum=0.9)
    for g_value in (2.0, -1.0):
        g = Params([LayerParams(np.zeros((1, 1)), np.array([[g_value]]), np.zeros(1))], np.zeros((1, 1)), np.zeros(1))
        opt.step(p, g)
    assert p.layers[0].W_hh[0, 0] == pytest.approx(1.0 - 0.5 * 2.0 - 0.5 * (0.9 * 2.0 - 1.0))


def test_adam_first_step_by_hand():
    # At t = 1 bias correction makes the step lr * g / (|g| + eps'): -lr sign(g) for |g| >> eps.
    p = Params([LayerParams(np.zeros((1, 2)), np.array([[1.0]]), np.zeros(1))], np.zeros((1, 1)), np.zeros(1))
    g = Params([LayerParams(np.array([[3.0, -0.02]]), np.array([[1e-3]]), np.zeros(1))], np.zeros((1, 1)), np.zeros(1))
    Adam(p, lr=0.01, eps=1e-8).step(p, g)
    assert np.allclose(p.layers[0].W_hx, [[-0.01, 0.01]], rtol=1e-6)
    assert p.layers[0].W_hh[0, 0] == pytest.approx(1.0 - 0.01 * 1e-3 / (1e-3 + 1e-8))
    assert np.all(p.layers[0].b_h == 0)  # zero gradient: no step


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("sgd", {"lr": 0.05, "momentum": 0.9}),
        ("sgd", {"lr": 0.05}),
        ("adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_against_torch_optim(torch, kind, kw, dtype):
    rng = np.random.default_rng(0)
    ours = small_params(rng, dtype)
    theirs = [torch.tensor(a.copy(), requires_grad=True) for _, a in ours.named()]
    if kind == "sgd":
        opt = make_optimizer(TrainConfig(optimizer="sgd", **kw), ours)
        torch_opt = torch.optim.SGD(theirs, lr=kw["lr"], momentum=kw.get("momentum", 0.0))
    else:
        opt = make_optimizer(TrainConfig(optimizer="adam", **kw), ours)
        torch_opt = torch.optim.Adam(theirs, lr=kw["lr"], betas=(kw["beta1"], kw["beta2"]), eps=kw["eps"])
    for _ in range(7):
        grads = small_params(rng, dtype)
        for t, (_, g) in zip(theirs, grads.named()):
            t.grad = torch.tensor(g.copy())
        opt.step(ours, grads)
        torch_opt.step()
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for t, (name, a) in zip(theirs, ours.named()):
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=rtol, atol=rtol, err_msg=name)


def test_clipping_scales_to_the_threshold_and_reports_the_norm_before():
    rng = np.random.default_rng(1)
    g = small_params(rng)
    before = g.copy()
    norm = np.sqrt(sum(np.sum(a**2) for _, a in before.named()))
    reported, clipped = clip_by_global_norm(g, clip_norm=norm / 4)
    assert clipped and reported == pytest.approx(norm)
    assert g.global_norm() == pytest.approx(norm / 4)
    for (_, a), (_, b) in zip(g.named(), before.named()):
        np.testing.assert_allclose(a, b / 4)  # one common factor, directions kept


def test_clipping_leaves_small_gradients_and_disabled_clipping_alone():
    g = small_params(np.random.default_rng(2))
    before = g.copy()
    norm = g.global_norm()
    assert clip_by_global_norm(g, clip_norm=norm * 2) == (pytest.approx(norm), False)
    assert clip_by_global_norm(g, clip_norm=0.0) == (pytest.approx(norm), False)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(g.named(), before.named()))


def test_clipping_a_non_finite_gradient_reports_it_untouched():
    g = small_params(np.random.default_rng(3))
    g.W_yh[0, 0] = np.inf
    norm, clipped = clip_by_global_norm(g, clip_norm=1.0)
    assert norm == np.inf and not clipped and g.W_yh[0, 0] == np.inf


def test_clipping_uses_a_norm_the_caller_already_has():
    g, h = small_params(np.random.default_rng(4)), small_params(np.random.default_rng(4))
    norm = g.global_norm()
    assert clip_by_global_norm(g, clip_norm=norm / 3, norm=norm) == (norm, True)
    clip_by_global_norm(h, clip_norm=norm / 3)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(g.named(), h.named()))
    # The given norm is the one used: claiming a norm under the threshold leaves the arrays alone.
    assert clip_by_global_norm(g, clip_norm=norm, norm=norm / 2) == (norm / 2, False)
