"""What a sweep's plots draw over the measurements: the mean-field log gain per step of a run's top layer, and
the recurrent scale of the critical line (chi_1 = 1) for the run's other settings.

The measured quantity (sweep.csv's log_gain_per_step) is the slope of ln ||dL/dh_t|| per step back in time.
Mean field multiplies ||dL/dh||^2 by chi_1 = c E[f'(z)^2], z ~ N(0, q*), per step, so the prediction is

    log gain per step = 0.5 ln chi_1:   relu 0.5 ln(c / 2) (whatever the variances);
                                        tanh 0.5 ln chi_1(sigma_w, sigma_b)

with sigma_w^2 = c (Var(W_hh) = c / d) and sigma_b^2 = q_in + q_b: an RNN step's pre-activation also receives
the input's variance q_in (Var(W_hx) E[x^2]) beside the bias's q_b (init.bias_scale), so with the input
switched off (init.input_scale = 0) the tanh prediction is exactly Poole et al. (2016)'s chi_1(sigma_w, sigma_b)
(gradscope.theory.criticality).  Runs are read duck-typed (a config.RunConfig), through RunTheory.
"""

from __future__ import annotations

import math

from .criticality import critical_sigma_w
from .lines import RunTheory
from .meanfield import fixed_point_variance, gain_squared, variance_factor

CRITICAL_C = {"relu": 2.0, "linear": 1.0}  # c E[f'^2] = 1 needs no fixed point for these


def predicted_log_gain(run) -> float | None:
    """0.5 ln chi_1 of the run's top layer at its variance fixed point (NaN past a ReLU's or linear run's
    divergence is not an issue: their gain needs no fixed point); None without mean-field theory (gated cells,
    identity W_hh)."""
    theory = RunTheory.for_run(run)
    if theory is None or theory.c is None:
        return None
    if theory.activation in CRITICAL_C:
        g2 = theory.c / 2 if theory.activation == "relu" else theory.c
    else:
        q_star = fixed_point_variance(theory.activation, theory.c, float(theory.q_in[-1]), theory.q_b)
        g2 = gain_squared(theory.activation, theory.c, q_star)
    return 0.5 * math.log(g2) if g2 > 0 else -math.inf


def critical_recurrent_scale(run) -> float | None:
    """The init.recurrent_scale at which the run's top layer is critical (chi_1 = 1), its other settings as
    they are: relu c = 2, linear c = 1, tanh c = critical_sigma_w(sqrt(q_in + q_b))^2, turned into the scale of
    the run's W_hh scheme (theory.meanfield.variance_factor is linear in the scale for gaussian and uniform,
    quadratic for the others).  None for other activations, gated cells and identity W_hh."""
    theory = RunTheory.for_run(run)
    if theory is None or theory.c is None:
        return None
    if theory.activation in CRITICAL_C:
        c = CRITICAL_C[theory.activation]
    elif theory.activation == "tanh":
        c = critical_sigma_w(math.sqrt(float(theory.q_in[-1]) + theory.q_b)) ** 2
    else:
        return None
    d = run.hidden_size
    unit = variance_factor(run.init.recurrent, 1.0, d, d, d)  # c at scale 1
    if not unit:
        return None
    return c / unit if run.init.recurrent in ("gaussian", "uniform") else math.sqrt(c / unit)


__all__ = ["predicted_log_gain", "critical_recurrent_scale"]
