"""Mean-field moments and the forward variance map of a random RNN at initialisation (the lecture's setting:
see gradscope.theory for the overview)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# gamma: sup |f'(z)| for each activation (the Pascanu bound's per-step factor besides sigma_max(W_hh))
DERIVATIVE_BOUND = {"tanh": 1.0, "relu": 1.0, "linear": 1.0, "sigmoid": 0.25}
ACTIVATIONS = tuple(DERIVATIVE_BOUND)


# ------------------------------------------------------------------------------------------ expectations
@lru_cache(maxsize=16)
def _normal_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes on [-10, 10] and trapezoid weights phi(z) dz for E[g(Z)], Z ~ N(0, 1) (tails < 1e-22)."""
    z = np.linspace(-10.0, 10.0, n)  # (n,)
    w = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * (z[1] - z[0])  # (n,) ends ~1e-23: no half weights
    return z, w


def gaussian_expectation(g, q: float) -> float:
    """E[g(z)] for z ~ N(0, q), by the trapezoidal rule on a grid that resolves g on the scale of z.

    E[g(z)] = sum_i phi(z_i) dz g(sqrt(q) z_i), z_i evenly spaced on [-10, 10] with spacing
    min(1, 1/sqrt(q)) / 16.  For analytic, rapidly decaying integrands the trapezoidal rule converges
    geometrically (1e-12 relative against scipy's adaptive quad for tanh^2, tanh'^2, sigmoid^2 and sigmoid'^2,
    q = 1e-4..1e4).  Plain Gauss-Hermite quadrature is not used because its nodes are too sparse near 0
    once sqrt(q) z is wide: with 80 nodes E[tanh'(z)^2] came out 3% low at q = 9 and 43% low at q = 30,
    and more than ~250 nodes overflow numpy's hermegauss.  g must accept arrays.
    """
    if q < 0 or not math.isfinite(q):
        raise ValueError(f"the variance q must be finite and >= 0, got {q}")
    s = math.sqrt(q)
    z, w = _normal_grid(int(320 * max(1.0, s)) | 1)  # odd n: z = 0 is a node
    return float(np.dot(w, g(s * z)))


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)) without overflow


def _check_activation(activation: str) -> None:
    if activation not in DERIVATIVE_BOUND:
        raise ValueError(f"no mean-field theory for activation {activation!r}; expected one of {ACTIVATIONS}")


def second_moment(activation: str, q: float) -> float:
    """E[f(z)^2], z ~ N(0, q): the mean square of a unit's output given its pre-activation variance."""
    _check_activation(activation)
    if activation == "relu":
        return q / 2  # half of a symmetric distribution's second moment
    if activation == "linear":
        return q
    f = np.tanh if activation == "tanh" else _sigmoid
    return gaussian_expectation(lambda z: f(z) ** 2, q)


def derivative_second_moment(activation: str, q: float) -> float:
    """E[f'(z)^2], z ~ N(0, q)."""
    _check_activation(activation)
    if activation == "relu":
        return 0.5 if q > 0 else 0.0  # f'(z) = 1 on the half z > 0 (and f'(0) = 0, as in the engine)
    if activation == "linear":
        return 1.0
    if activation == "tanh":
        return gaussian_expectation(lambda z: (1 - np.tanh(z) ** 2) ** 2, q)
    return gaussian_expectation(lambda z: (_sigmoid(z) * (1 - _sigmoid(z))) ** 2, q)


# --------------------------------------------------------------------------------------- the variance map
def variance_map(activation: str, q: float, c: float, q_in: float, q_b: float = 0.0) -> float:
    """One step of the forward map: q_t = c E[f(z)^2] + q_in + q_b, z ~ N(0, q_{t-1})."""
    return c * second_moment(activation, q) + q_in + q_b


def variance_trajectory(activation: str, c: float, q_in, T: int, q_b: float = 0.0) -> np.ndarray:
    """(T,) pre-activation variances q_0..q_{T-1}, starting from h_{-1} = 0 (so q_0 = q_in + q_b).

    ``q_in`` is a number or a (T,) array (a layer above the first sees an input whose variance changes with t).
    Diverging variances (relu with c > 2) become inf, never an error.
    """
    q_in = np.broadcast_to(np.asarray(q_in, dtype=np.float64), (T,))
    q = np.empty(T)
    q[0] = float(q_in[0]) + q_b
    for t in range(1, T):
        # once a variance is infinite (relu past the edge of chaos) it stays so; quadrature at inf gives NaN
        q[t] = variance_map(activation, q[t - 1], c, float(q_in[t]), q_b) if math.isfinite(q[t - 1]) else math.inf
    return q


def fixed_point_variance(
    activation: str, c: float, q_in: float, q_b: float = 0.0, tol: float = 1e-12, max_iter: int = 10_000
) -> float:
    """q* with q* = c E[f(z)^2] + q_in + q_b, z ~ N(0, q*): where the forward variance settles.

    The map is increasing in q (tanh^2 and sigmoid^2 grow with the spread of z), so iterating it from
    q_0 = q_in + q_b climbs monotonically to the smallest fixed point above q_0; it is what a network started
    from h_{-1} = 0 converges to.  relu and linear have the closed form q* = (q_in + q_b) / (1 - c E') with
    E' = 1/2 or 1, and no fixed point (inf) once c E' >= 1.
    """
    _check_activation(activation)
    q0 = q_in + q_b
    if activation in ("relu", "linear"):
        slope = c / 2 if activation == "relu" else c
        return q0 / (1 - slope) if slope < 1 else math.inf
    q = q0
    for _ in range(max_iter):
        nxt = variance_map(activation, q, c, q_in, q_b)
        if abs(nxt - q) <= tol * max(1.0, q):
            return nxt
        q = nxt
    raise RuntimeError(f"the variance map of {activation} with c = {c} did not settle in {max_iter} steps")


def gain_squared(activation: str, c: float, q: float) -> float:
    """c E[f'(z)^2], z ~ N(0, q): the mean-field factor of ||dL/dh||^2 per step back in time."""
    return c * derivative_second_moment(activation, q)


def mean_field_gain(activation: str, c: float, q_in: float = 1.0, q_b: float = 0.0) -> float:
    """sqrt(c E[f'(z)^2]) at the fixed point z ~ N(0, q*): the steady per-step gain back in time.

    relu: sqrt(c / 2), whatever the variances (the lecture's line).
    """
    if activation == "relu":
        return math.sqrt(c / 2)
    q_star = fixed_point_variance(activation, c, q_in, q_b)
    return math.sqrt(gain_squared(activation, c, q_star))


# ----------------------------------------------------------------------- initialisation -> variance factor
def variance_factor(scheme: str, scale: float, fan_in: int, fan_out: int, hidden_size: int) -> float | None:
    """c such that the entries of a freshly initialised (fan_out, fan_in) matrix have variance c / fan_in.

    Mirrors gradscope.engine.params.init_matrix: gaussian and uniform c = scale; xavier
    c = 2 scale^2 fan_in / (fan_in + fan_out); kaiming c = 2 scale^2; orthogonal c = scale^2 fan_in /
    max(fan_in, fan_out); pytorch (U(-k, k), k = scale / sqrt(d)) c = scale^2 fan_in / (3 d).
    identity is not random: None (mean field does not describe it).
    """
    if scheme in ("gaussian", "uniform"):
        return float(scale)
    if scheme == "xavier":
        return 2.0 * scale**2 * fan_in / (fan_in + fan_out)
    if scheme == "kaiming":
        return 2.0 * scale**2
    if scheme == "orthogonal":
        return scale**2 * fan_in / max(fan_in, fan_out)
    if scheme == "pytorch":
        return scale**2 * fan_in / (3.0 * hidden_size)
    if scheme == "identity":
        return None
    raise ValueError(f"unknown initialisation scheme {scheme!r}")


def layer_input_variances(
    activation: str,
    c_rec: float,
    c_in: float,
    input_second_moment,
    layers: int,
    T: int,
    q_b: float = 0.0,
    c_in_upper: float | None = None,
) -> np.ndarray:
    """(layers, T) pre-activation variances q^{(l)}_t of a freshly initialised stacked RNN.

    Layer 0 gets q_in,t = c_in E[x_t^2] (``input_second_moment``: a number or (T,) per step); layer l > 0
    gets q_in,t = c_in_upper E[f(z^{(l-1)}_t)^2] from the layer below (c_in_upper defaults to c_in).
    """
    c_up = c_in if c_in_upper is None else c_in_upper
    q = np.empty((layers, T))
    q_in = c_in * np.broadcast_to(np.asarray(input_second_moment, dtype=np.float64), (T,))  # (T,)
    for l in range(layers):
        q[l] = variance_trajectory(activation, c_rec, q_in, T, q_b)
        q_in = np.array([c_up * second_moment(activation, v) if math.isfinite(v) else math.inf for v in q[l]])
    return q


__all__ = [
    "DERIVATIVE_BOUND",
    "ACTIVATIONS",
    "gaussian_expectation",
    "second_moment",
    "derivative_second_moment",
    "variance_map",
    "variance_trajectory",
    "fixed_point_variance",
    "gain_squared",
    "mean_field_gain",
    "variance_factor",
    "layer_input_variances",
]
