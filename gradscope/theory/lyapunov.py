"""Mean-field Lyapunov exponents of a random tanh RNN (for the analysis views).

Setting: h_t = tanh(a_t), a_t = W h_{t-1} + u_t, W_ij i.i.d. N(0, g^2 / d), u_t the input drive, i.i.d. over
units and steps with variance sigma_in^2 (sigma_in = 0: the autonomous network).  The Jacobian of one step is
J_t = dh_t/dh_{t-1} = diag(1 - h_t^2) W, and the Lyapunov exponents lambda_1 >= ... >= lambda_d are the
growth rates of the singular values of J_t ... J_1 (Engelken, Wolf & Abbott 2020/2023, "Lyapunov spectra of
chaotic recurrent neural networks", whose discrete-time network is this one).

In the wide limit the pre-activations a_t are Gaussian with variance q*, the fixed point of
q = g^2 E[tanh^2(sqrt(q) z)] + sigma_in^2 (the same map as gradscope.theory.criticality with sigma_w = g,
sigma_b = sigma_in; Molgedey, Schuchhardt & Schuster 1992 for the largest exponent of this network).
"""

from __future__ import annotations

import math

import numpy as np

from .criticality import chi_1, critical_sigma_w, relu_log_gain, tanh_fixed_point
from .meanfield import gaussian_expectation, mean_field_gain


def largest_lyapunov_exponent(g: float, sigma_in: float = 0.0) -> float:
    """lambda_max = ln(g sqrt(E[sech^4(sqrt(q*) z)])) = 0.5 ln chi_1(g, sigma_in), z ~ N(0, 1).

    A tangent vector v (independent of the units' current slopes, in the wide limit) grows per step by
    ||J_t v||^2 / ||v||^2 -> g^2 E[tanh'(a)^2] with a ~ N(0, q*).  Positive: chaos; negative: order.
    For sigma_in = 0 and g <= 1, q* = 0 and lambda_max = ln g (the rest state h = 0 with J = W, whose
    spectral radius is g by the circular law).
    """
    return 0.5 * math.log(chi_1(g, sigma_in))


def mean_field_largest_exponent(activation: str, c: float, q_in: float = 0.0, q_b: float = 0.0) -> float:
    """lambda_max of a random RNN with Var(W_hh) = c / d and input + bias variance q_in + q_b per unit, in nats
    per step: the analysis views' line (it is also the log of the profile's mean-field gain per step).

    tanh: ``largest_lyapunov_exponent(sqrt(c), sqrt(q_in + q_b))``, whose fixed point is the positive one above
    the transition (an autonomous network started away from 0); relu: 0.5 ln(c / 2) (criticality.relu_log_gain),
    whatever the variances; sigmoid, linear: ln of meanfield.mean_field_gain at its fixed point (inf past it: the
    linear network's, or a relu one's, variance has none).
    """
    if activation == "tanh":
        return largest_lyapunov_exponent(math.sqrt(c), math.sqrt(q_in + q_b))
    if activation == "relu":
        return relu_log_gain(c)
    gain = mean_field_gain(activation, c, q_in, q_b)
    return math.log(gain) if gain > 0 else -math.inf


def chaos_onset_gain(sigma_in: float = 0.0) -> float:
    """The g where lambda_max = 0: the critical line chi_1 = 1 at sigma_b = sigma_in; 1 for sigma_in = 0."""
    return critical_sigma_w(sigma_in)


def _log_sech2(x):
    """ln(1 - tanh(x)^2) = -2 ln cosh x, written so that it stays finite for |x| up to ~1e308."""
    a = np.abs(x)
    return 2 * (math.log(2.0) - a - np.log1p(np.exp(-2 * a)))


def ginibre_mean_log_det(d: int | None = None) -> float:
    """(1/d) E ln|det G| for a real d x d matrix G of i.i.d. N(0, 1/d) entries; -1/2 as d -> infinity.

    Exact for finite d: by the Bartlett (QR) decomposition |det G|^2 d^d is a product of independent
    chi-square variables with 1..d degrees of freedom, and E ln chi^2_k = psi(k/2) + ln 2 (Goodman 1963), so
    (1/d) E ln|det G| = (1/(2d)) sum_{k=1}^{d} (psi(k/2) + ln 2) - (1/2) ln d = -1/2 - O(ln d / d)
    (-0.5018 at d = 1000).  A matrix of variance g^2 / d adds ln g.
    """
    if d is None:
        return -0.5
    if int(d) != d or d < 1:
        raise ValueError(f"the matrix size d must be an integer >= 1, got {d!r}")
    k = np.arange(1, int(d) + 1)
    from scipy.special import digamma  # here, not at import (start-up time)

    return float(0.5 * np.mean(digamma(k / 2) + math.log(2.0)) - 0.5 * math.log(d))


def mean_lyapunov_exponent(g: float, sigma_in: float = 0.0, d: int | None = None) -> float:
    """(1/d) sum_i lambda_i ~ E_z[ln(1 - tanh^2(sqrt(q*) z))] + ln g + (1/d) E ln|det G|  (-> ln g - 1/2).

    What is exact and what is approximated:
    * exact for any d: the sum of all exponents is the volume growth rate, lim (1/T) sum_t ln|det J_t|, and
      ln|det J_t| = sum_i ln(1 - h_{t,i}^2) + ln|det W|, with ln|det W| the same at every step;
    * mean field (d -> infinity): the average over units and steps of ln(1 - h_{t,i}^2) is replaced by
      E_z[ln sech^2(sqrt(q*) z)], i.e. the pre-activations are taken to be N(0, q*) on the attractor and their
      distribution independent of the realisation of W;
    * random matrix: (1/d) ln|det W| = ln g + (1/d) ln|det G| is replaced by its Ginibre mean,
      ``ginibre_mean_log_det(d)`` (-1/2 for d = None, the d -> infinity limit; its fluctuation from one W to
      the next is O(sqrt(ln d) / d)).
    Neither the mean field nor the Ginibre limit knows about finite-d corrections to q* or to the slopes'
    distribution; pass d to include the exact finite-d mean of the determinant term.  Simulated d = 1000
    networks (g = 2, 3) scatter by ~0.01 around the formula from one W to the next, without visible bias.
    """
    q = tanh_fixed_point(g, sigma_in)
    log_slope = gaussian_expectation(_log_sech2, q)  # E[ln tanh'(a)], a ~ N(0, q*)
    return log_slope + math.log(g) + ginibre_mean_log_det(d)


__all__ = [
    "mean_field_largest_exponent",
    "largest_lyapunov_exponent",
    "chaos_onset_gain",
    "ginibre_mean_log_det",
    "mean_lyapunov_exponent",
]
