"""The order-to-chaos phase diagram of a random tanh network at initialisation (for the sweeps' phase plots).

Setting of Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli (2016), "Exponential expressivity in deep neural
networks through transient chaos", and Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), "Deep information
propagation": weights of variance sigma_w^2 / d, biases of variance sigma_b^2, h = tanh(z).  In the wide limit
the pre-activations of a layer (or of an RNN step, whose W_hh is the same at every step) are Gaussian with
variance q, and

    q* = sigma_w^2 E[tanh^2(sqrt(q*) z)] + sigma_b^2                 (the length fixed point; z ~ N(0, 1))
    chi_1 = sigma_w^2 E[sech^4(sqrt(q*) z)] = sigma_w^2 E[tanh'(sqrt(q*) z)^2]

chi_1 is the mean-field factor by which ||dL/dh||^2 (and the squared distance of two nearby inputs' states)
is multiplied per layer or step: chi_1 < 1 ordered (gradients vanish), chi_1 > 1 chaotic (they explode), and
chi_1 = 1 the critical line sigma_w = critical_sigma_w(sigma_b), which starts at sigma_w = 1 for sigma_b = 0.
"""

from __future__ import annotations

import math

import numpy as np

from .meanfield import derivative_second_moment, second_moment


def _tanh_moments(q: float) -> tuple[float, float]:
    """(E[tanh^2(sqrt(q) z)], E[sech^4(sqrt(q) z)])."""
    return second_moment("tanh", q), derivative_second_moment("tanh", q)


def _check_scales(**scales: float) -> None:
    for name, value in scales.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def tanh_fixed_point(sigma_w: float, sigma_b: float) -> float:
    """q* > 0 solving q = sigma_w^2 E[tanh^2(sqrt(q) z)] + sigma_b^2, z ~ N(0, 1) (Poole et al. 2016, eq. 3).

    The right side is increasing and concave in q, so for sigma_b > 0 the root is unique and stable; it is
    found by bracketing (brentq), which stays exact near the critical line where plain iteration of the map
    slows down.  For sigma_b = 0, q = 0 is always a fixed point: it is the answer for sigma_w <= 1, and for
    sigma_w > 1 (where q = 0 is unstable) the positive root is returned.
    """
    _check_scales(sigma_w=sigma_w, sigma_b=sigma_b)
    c, q_b = sigma_w**2, sigma_b**2

    def excess(q):  # > 0 below q*, < 0 above it
        return c * second_moment("tanh", q) + q_b - q

    if q_b == 0:
        if c <= 1:
            return 0.0
        lo = 1e-3 * (c - 1)  # E[tanh^2] = q - 2 q^2 + ...: excess(lo) ~ (c - 1) lo > 0
        while excess(lo) <= 0:
            lo /= 10
    else:
        lo = 0.0  # excess(0) = sigma_b^2 > 0
    hi = c + q_b + 1.0  # E[tanh^2] < 1: excess(hi) < -1
    from scipy.optimize import brentq  # here, not at import: scipy.optimize costs 0.2 s of every start-up

    return brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)


def chi_1(sigma_w: float, sigma_b: float) -> float:
    """sigma_w^2 E[sech^4(sqrt(q*) z)] at the fixed point q* (Poole et al. 2016, eq. 7; Schoenholz et al. 2017).

    The per-layer (per-step) mean-field factor of ||dL/dh||^2; log of it over 2 is the per-step log gain.
    """
    q = tanh_fixed_point(sigma_w, sigma_b)
    return sigma_w**2 * derivative_second_moment("tanh", q)


def _critical_point(q: float) -> tuple[float, float]:
    """(sigma_b^2, sigma_w) on the critical line whose fixed point is q.

    chi_1 = 1 fixes sigma_w^2 = 1 / E[sech^4(sqrt(q) z)]; the fixed-point equation then gives
    sigma_b^2 = q - sigma_w^2 E[tanh^2(sqrt(q) z)].  So q parametrises the line explicitly, and sigma_b^2(q)
    increases from 0 (like 2 q^3 / 3 for small q).
    """
    m2, m4 = _tanh_moments(q)
    sigma_w2 = 1.0 / m4
    return q - sigma_w2 * m2, math.sqrt(sigma_w2)


def critical_sigma_w(sigma_b: float) -> float:
    """The weight scale sigma_w on the edge of chaos chi_1(sigma_w, sigma_b) = 1 (Poole et al. 2016, Fig. 1).

    Solved for the fixed point q on the critical line (``_critical_point``) with brentq, so no nested
    root-finding: sigma_b^2(q) = sigma_b^2, then sigma_w = 1 / sqrt(E[sech^4(sqrt(q) z)]).  sigma_b = 0 gives 1.
    """
    _check_scales(sigma_b=sigma_b)
    target = sigma_b**2
    if target == 0:
        return 1.0
    # bracket q: sigma_b^2(q) ~ 2 q^3 / 3 for small q and grows like q for large q
    lo, hi = min(0.5, (1.5 * target) ** (1 / 3) / 2), max(1.0, 4 * target)
    while _critical_point(lo)[0] >= target:
        lo /= 2
    while _critical_point(hi)[0] <= target:
        hi *= 2
    from scipy.optimize import brentq

    q = brentq(lambda v: _critical_point(v)[0] - target, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
    return _critical_point(q)[1]


def critical_line(sigma_b=None) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_b, sigma_w) arrays of the critical line chi_1 = 1, for drawing over a (sigma_w, sigma_b) diagram.

    ``sigma_b``: the bias scales to evaluate (default 101 points from 0 to 2).  Left of the line (smaller
    sigma_w) the network is ordered, right of it chaotic.
    """
    sb = np.linspace(0.0, 2.0, 101) if sigma_b is None else np.asarray(sigma_b, dtype=np.float64).ravel()
    return sb, np.array([critical_sigma_w(float(v)) for v in sb])


def relu_log_gain(c: float) -> float:
    """0.5 ln(c / 2): the ReLU mean-field log gain of ||dL/dh|| per step, Var(W_hh) = c / d.

    Half the units are active, so E||D W^T v||^2 = (c / 2) ||v||^2 whatever the variances (the lecture's
    line; He et al. 2015 for the feed-forward case): c = 2 is the edge of chaos, with no bias dependence.
    """
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"the variance factor c must be a finite number > 0, got {c}")
    return 0.5 * math.log(c / 2)


__all__ = ["tanh_fixed_point", "chi_1", "critical_sigma_w", "critical_line", "relu_log_gain"]
