"""The step map of each cell and its two linearisations, in float64: the analysis' plain NumPy kernels.

A stream's state is s_t = h_t (RNN, GRU) or s_t = (h_t, c_t) (LSTM, stored as [h_t ; c_t], size D = 2d).
One step s_t = F(s_{t-1}, x_t) with the input held as given; its Jacobian J_t = ds_t/ds_{t-1} (D, D).

    forward(p, x_t, s_prev)  -> s_t (N, D), cache      one step for N rows (examples, or examples x steps)
    jvp(p, cache, V)         -> J_t V                  V (N, m, D): m tangent vectors per row, as rows
    vjp(p, cache, Lam)       -> (Lam J_t, dU, dA)      Lam (N, K, D): K cotangents per row, as rows;
                                                       dU: the pre-activation gradients W_hh sees
                                                       (dL/dW_hh = sum_t dU_t^T h_{t-1}), dA: those W_hx sees

Notation (docs/trace_format.md):
    RNN   z = W_hx x_t + W_hh h_{t-1} + b_h,  h_t = f(z),  J_t = diag(f'(z)) W_hh
    LSTM  [i, f, g, o] = split(W_hx x_t + W_hh h_{t-1} + b_h),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
    GRU   a = W_hx x_t + b_h,  u = W_hh h_{t-1} + b_hh,  r = sig(a_r + u_r),  z = sig(a_z + u_z),
          n = tanh(a_n + r u_n),  h_t = (1 - z) n + z h_{t-1}
A cache holds (N, w) arrays, so caches of many steps stack along N and one call linearises them all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..reference import activate


def mm(X: np.ndarray, M: np.ndarray) -> np.ndarray:
    """X @ M for X (..., a), M (a, b) as ONE matrix product over all leading axes (numpy's stacked matmul runs
    one small product per leading index: 1.5x slower for (16, 256, 256) @ (256, 256))."""
    return (X.reshape(-1, X.shape[-1]) @ M).reshape(X.shape[:-1] + (M.shape[1],))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)) without overflow warnings


# The slopes from the pre-activations, not from the outputs: 1 - tanh(z)^2 is exactly 0 in float64 once
# |z| > 19, which would make a saturated unit's exponent -inf instead of a large negative number.
def tanh_slope(z: np.ndarray) -> np.ndarray:
    """1 - tanh(z)^2 = 4 e^{-2|z|} / (1 + e^{-2|z|})^2, finite down to ~1e-308."""
    e = np.exp(-2 * np.abs(z))
    return 4 * e / (1 + e) ** 2


def sigmoid_slope(z: np.ndarray) -> np.ndarray:
    """sig(z) (1 - sig(z)) = e^{-|z|} / (1 + e^{-|z|})^2."""
    e = np.exp(-np.abs(z))
    return e / (1 + e) ** 2


def _derivative(activation: str, z: np.ndarray, h: np.ndarray) -> np.ndarray:
    """f'(z); relu'(0) = 0 as in the engine."""
    if activation == "relu":
        return (z > 0).astype(np.float64)
    if activation == "tanh":
        return tanh_slope(z)
    if activation == "sigmoid":
        return sigmoid_slope(z)
    if activation == "linear":
        return np.ones_like(z)
    raise ValueError(f"unknown activation {activation!r}")


# ------------------------------------------------------------------------------------------------------ RNN
def rnn_forward(p, x, s, activation):
    z = x @ p.W_hx.T + s @ p.W_hh.T + p.b_h  # (N, d)
    h = activate(activation, z)  # (N, d)
    return h, {"fp": _derivative(activation, z, h)}  # f'(z) (N, d)


def rnn_jvp(p, cache, V):
    JV = mm(V, p.W_hh.T)  # (N, m, d): W_hh v
    JV *= cache["fp"][:, None, :]  # diag(f') W_hh v, in place: a second (N, m, d) block freed beside the
    return JV  # first makes glibc trim and fault both in again (240 page faults a call at m = d = 256)


def rnn_vjp(p, cache, Lam):
    dz = Lam * cache["fp"][:, None, :]  # (N, K, d)
    return mm(dz, p.W_hh), dz, dz  # lam W_hh diag(f') = (dz) W_hh


# ----------------------------------------------------------------------------------------------------- LSTM
def lstm_forward(p, x, s, activation):
    d = p.W_hh.shape[1]
    h, c = s[:, :d], s[:, d:]  # (N, d) each
    z = x @ p.W_hx.T + h @ p.W_hh.T + p.b_h  # (N, 4d)
    i, f, g, o = sigmoid(z[:, :d]), sigmoid(z[:, d : 2 * d]), np.tanh(z[:, 2 * d : 3 * d]), sigmoid(z[:, 3 * d :])
    c_new = f * c + i * g  # (N, d)
    tc = np.tanh(c_new)
    slopes = np.concatenate(
        [
            sigmoid_slope(z[:, : 2 * d]),
            tanh_slope(z[:, 2 * d : 3 * d]),
            sigmoid_slope(z[:, 3 * d :]),
            tanh_slope(c_new),
        ],
        axis=1,
    )  # (N, 5d): i, f, g, o slopes and tanh'(c_t)
    cache = {"i": i, "f": f, "g": g, "o": o, "c_prev": c, "tc": tc, "slopes": slopes}
    return np.concatenate([o * tc, c_new], axis=1), cache  # (N, 2d) [h_t ; c_t]


def _lstm_terms(cache):
    """(i, f, g, o, c_{t-1}, tanh c_t) and the slopes (i', f', g', o', tanh'(c_t)), each (N, 1, d)."""
    values = tuple(cache[k][:, None, :] for k in ("i", "f", "g", "o", "c_prev", "tc"))
    slopes = cache["slopes"][:, None, :]
    d = slopes.shape[2] // 5
    return values, tuple(slopes[..., k * d : (k + 1) * d] for k in range(5))


def lstm_jvp(p, cache, V):
    d = p.W_hh.shape[1]
    dh, dc = V[..., :d], V[..., d:]  # (N, m, d) each
    dz = mm(dh, p.W_hh.T)  # (N, m, 4d)
    (i, f, g, o, c_prev, tc), (si, sf, sg, so, sc) = _lstm_terms(cache)
    di, df, dg, do = si * dz[..., :d], sf * dz[..., d : 2 * d], sg * dz[..., 2 * d : 3 * d], so * dz[..., 3 * d :]
    dc_new = df * c_prev + f * dc + di * g + i * dg  # (N, m, d)
    dh_new = do * tc + o * sc * dc_new
    return np.concatenate([dh_new, dc_new], axis=-1)  # (N, m, 2d)


def lstm_vjp(p, cache, Lam):
    d = p.W_hh.shape[1]
    lh, lc = Lam[..., :d], Lam[..., d:]  # (N, K, d): cotangents of h_t and c_t
    (i, f, g, o, c_prev, tc), (si, sf, sg, so, sc) = _lstm_terms(cache)
    dc = lc + lh * o * sc  # (N, K, d) total through c_t
    dU = np.concatenate([dc * g * si, dc * c_prev * sf, dc * i * sg, lh * tc * so], axis=-1)  # (N, K, 4d)
    return np.concatenate([mm(dU, p.W_hh), dc * f], axis=-1), dU, dU  # (N, K, 2d): [d h_{t-1} ; d c_{t-1}]


# ------------------------------------------------------------------------------------------------------ GRU
def gru_forward(p, x, s, activation):
    d = p.W_hh.shape[1]
    a = x @ p.W_hx.T + p.b_h  # (N, 3d)
    u = s @ p.W_hh.T + p.b_hh  # (N, 3d)
    r = sigmoid(a[:, :d] + u[:, :d])
    z = sigmoid(a[:, d : 2 * d] + u[:, d : 2 * d])
    a_n = a[:, 2 * d :] + r * u[:, 2 * d :]
    n = np.tanh(a_n)
    slopes = np.concatenate([sigmoid_slope(a[:, : 2 * d] + u[:, : 2 * d]), tanh_slope(a_n)], axis=1)  # (N, 3d)
    cache = {"r": r, "z": z, "n": n, "u_n": u[:, 2 * d :], "h_prev": s, "slopes": slopes}
    return (1 - z) * n + z * s, cache


def _gru_terms(cache):
    values = tuple(cache[k][:, None, :] for k in ("r", "z", "n", "u_n", "h_prev"))
    slopes = cache["slopes"][:, None, :]
    d = slopes.shape[2] // 3
    return values, tuple(slopes[..., k * d : (k + 1) * d] for k in range(3))


def gru_jvp(p, cache, V):
    d = p.W_hh.shape[1]
    (r, z, n, u_n, h_prev), (sr, sz, sn) = _gru_terms(cache)
    du = mm(V, p.W_hh.T)  # (N, m, 3d)
    dr = sr * du[..., :d]
    dz = sz * du[..., d : 2 * d]
    dn = sn * (dr * u_n + r * du[..., 2 * d :])
    return dz * (h_prev - n) + (1 - z) * dn + z * V  # (N, m, d)


def gru_vjp(p, cache, Lam):
    (r, z, n, u_n, h_prev), (sr, sz, sn) = _gru_terms(cache)
    dn = Lam * (1 - z) * sn  # (N, K, d) at n's pre-activation
    dz = Lam * (h_prev - n) * sz
    dr = dn * u_n * sr
    dU = np.concatenate([dr, dz, dn * r], axis=-1)  # (N, K, 3d): at u = W_hh h_{t-1} + b_hh
    dA = np.concatenate([dr, dz, dn], axis=-1)  # at a = W_hx x_t + b_h
    return mm(dU, p.W_hh) + Lam * z, dU, dA


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class StepMap:
    """A cell's step and its linearisations (module docstring); ``state_size(d)`` is D."""

    forward: Callable
    jvp: Callable
    vjp: Callable
    state_factor: int  # D = state_factor * d

    def state_size(self, d: int) -> int:
        return self.state_factor * d

    def jacobian(self, p, cache) -> np.ndarray:
        """J_t (N, D, D) densely: the jvp of the identity (its columns J e_j come out as rows)."""
        N = next(iter(cache.values())).shape[0]
        D = self.state_size(p.W_hh.shape[1])
        eye = np.broadcast_to(np.eye(D), (N, D, D))
        return np.swapaxes(self.jvp(p, cache, eye), 1, 2)


MAPS = {
    "rnn": StepMap(rnn_forward, rnn_jvp, rnn_vjp, 1),
    "lstm": StepMap(lstm_forward, lstm_jvp, lstm_vjp, 2),
    "gru": StepMap(gru_forward, gru_jvp, gru_vjp, 1),
}


def step_map(cell_name: str) -> StepMap:
    try:
        return MAPS[cell_name]
    except KeyError:
        raise ValueError(f"no step map for cell {cell_name!r}; expected one of {tuple(MAPS)}") from None


def stack_caches(caches: list[dict]) -> dict:
    """Caches of T steps of N rows each -> one cache of T N rows (step-major), for one call over all steps."""
    return {k: np.concatenate([c[k] for c in caches], axis=0) for k in caches[0]}


def take_steps(caches: dict, N: int, t0: int, t1: int) -> dict:
    """The rows of steps t0..t1-1 of a stacked cache (N rows per step)."""
    return {k: v[t0 * N : t1 * N] for k, v in caches.items()}
