"""Optimizers and gradient clipping, updating a Params in place with PyTorch's semantics.

    SGD     v <- mu v + g  (v = g at the first step);   theta <- theta - lr v          (mu = 0: plain SGD)
    Adam    m <- b1 m + (1 - b1) g;   s <- b2 s + (1 - b2) g^2                      (Kingma & Ba 2015)
            theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)
    clip    if ||g|| > c: g <- g * c / ||g||   (global norm over every parameter; Pascanu et al. 2013)

States have the parameters' dtype, as in PyTorch, so float32 runs stay float32.
"""

from __future__ import annotations

import numpy as np

from .params import Params


def clip_by_global_norm(grads: Params, clip_norm: float, norm: float | None = None) -> tuple[float, bool]:
    """Scale every gradient by clip_norm / ||g|| when the global norm ||g|| exceeds clip_norm (> 0).

    ``norm``: ||g|| when the caller has it already (the engine computes it inside the kernel), else it is
    computed here.  Returns (||g|| before clipping, whether it clipped).  A non-finite norm is returned as is
    and nothing is scaled: the run is about to be stopped as diverged, and the record should show the raw
    gradient.
    """
    norm = grads.global_norm() if norm is None else float(norm)
    if clip_norm > 0 and np.isfinite(norm) and norm > clip_norm:
        scale = clip_norm / norm
        for _, g in grads.named():
            g *= g.dtype.type(scale)
        return norm, True
    return norm, False


class SGD:
    """Stochastic gradient descent with optional heavy-ball momentum (torch.optim.SGD, dampening 0)."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.0):
        self.lr, self.momentum = float(lr), float(momentum)
        self.velocity: dict[str, np.ndarray] | None = None

    def step(self, params: Params, grads: Params) -> None:
        g_named = grads.arrays()
        velocity = None  # without momentum the step is the gradient itself
        if self.momentum:
            if self.velocity is None:
                self.velocity = {name: g.copy() for name, g in g_named.items()}  # v_1 = g_1
            else:
                for name, v in self.velocity.items():
                    v *= v.dtype.type(self.momentum)
                    v += g_named[name]
            velocity = self.velocity
        for name, theta in params.named():
            lr = theta.dtype.type(self.lr)
            theta -= lr * (velocity[name] if velocity is not None else g_named[name])

    def state(self) -> dict[str, np.ndarray]:
        """What a resumed run needs to step on exactly as this one would (engine.trainer.Training.checkpoint)."""
        return {f"velocity/{name}": v.copy() for name, v in (self.velocity or {}).items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        velocity = {k.partition("/")[2]: v.copy() for k, v in state.items() if k.startswith("velocity/")}
        self.velocity = velocity or None


class Adam:
    """Adam with bias correction (torch.optim.Adam, no weight decay, no amsgrad)."""

    def __init__(self, params: Params, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.m = {name: np.zeros_like(a) for name, a in params.named()}
        self.s = {name: np.zeros_like(a) for name, a in params.named()}
        self.t = 0

    def step(self, params: Params, grads: Params) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        correction1, correction2 = 1 - b1**self.t, 1 - b2**self.t
        g_named = grads.arrays()
        for name, theta in params.named():
            g, m, s = g_named[name], self.m[name], self.s[name]
            f = theta.dtype.type
            m *= f(b1)
            m += f(1 - b1) * g
            s *= f(b2)
            s += f(1 - b2) * g * g
            denom = np.sqrt(s) / f(np.sqrt(correction2)) + f(self.eps)
            theta -= f(self.lr / correction1) * m / denom

    def state(self) -> dict[str, np.ndarray]:
        """The moments and the step count t (the bias corrections depend on it)."""
        moments = {f"m/{k}": v.copy() for k, v in self.m.items()} | {f"s/{k}": v.copy() for k, v in self.s.items()}
        return moments | {"t": np.array(self.t)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m = {k[2:]: v.copy() for k, v in state.items() if k.startswith("m/")}
        self.s = {k[2:]: v.copy() for k, v in state.items() if k.startswith("s/")}
        self.t = int(state["t"])


def make_optimizer(train_config, params: Params):
    """The optimizer named by a config.TrainConfig."""
    c = train_config
    if c.optimizer == "sgd":
        return SGD(params, c.lr, c.momentum)
    if c.optimizer == "adam":
        return Adam(params, c.lr, c.beta1, c.beta2, c.eps)
    raise ValueError(f"train.optimizer must be 'sgd' or 'adam', got {c.optimizer!r}")


__all__ = ["SGD", "Adam", "clip_by_global_norm", "make_optimizer"]
