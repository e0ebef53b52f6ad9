"""Numbers derived from a Lyapunov spectrum (summary.json's per-stream figures, docs/trace_format.md).

lambda_1 >= lambda_2 >= ... >= lambda_m, in nats per step:
    largest exponent        lambda_1 (> 0: chaos, nearby trajectories separate; < 0: order)
    Kaplan-Yorke dimension  k + (lambda_1 + ... + lambda_k) / |lambda_{k+1}|, k the largest j whose partial sum
                            lambda_1 + ... + lambda_j >= 0 (Kaplan & Yorke 1979); 0 when lambda_1 < 0, and m
                            when every partial sum of the m measured exponents is >= 0 (then a lower bound)
    entropy rate            the sum of the positive exponents (Pesin's identity: the Kolmogorov-Sinai entropy
                            of the attractor, in nats per step)
    gradient timescale      -1 / lambda_1 when lambda_1 < 0: the steps over which a perturbation, hence a
                            gradient carried back, shrinks by e; None otherwise
"""

from __future__ import annotations

import math

import numpy as np


def kaplan_yorke_dimension(exponents) -> float:
    lam = np.sort(np.asarray(exponents, dtype=np.float64))[::-1]
    if lam.size == 0 or np.any(np.isnan(lam)) or lam[0] == math.inf:
        return math.nan  # (-inf exponents are data: a direction a dead ReLU unit removes at once)
    partial = np.cumsum(lam)
    nonneg = np.nonzero(partial >= 0)[0]
    if nonneg.size == 0:
        return 0.0
    k = int(nonneg[-1]) + 1  # partial sums are increasing then decreasing: the last non-negative one
    if k == lam.size:
        return float(k)
    return k + float(partial[k - 1]) / abs(float(lam[k]))


def entropy_rate(exponents) -> float:
    lam = np.asarray(exponents, dtype=np.float64)
    return float(np.sum(lam[lam > 0])) if not np.any(np.isnan(lam)) else math.nan


def gradient_timescale(exponents) -> float | None:
    top = float(np.max(exponents)) if np.size(exponents) else math.nan
    return -1.0 / top if math.isfinite(top) and top < 0 else None


def spectrum_summary(exponents) -> dict:
    """The four figures of one stream's spectrum (module docstring); NaN spectra give NaN / None."""
    lam = np.asarray(exponents, dtype=np.float64)
    top = float(np.max(lam)) if lam.size and not np.any(np.isnan(lam)) else math.nan
    return {
        "lyapunov_max": top,
        "kaplan_yorke_dimension": kaplan_yorke_dimension(lam) if math.isfinite(top) else math.nan,
        "entropy_rate": entropy_rate(lam),
        "gradient_timescale": gradient_timescale(lam) if math.isfinite(top) else None,
    }
