"""Closed-form predictions drawn over the measured gradient profiles (Qt-free).

Setting (the lecture's): an RNN h_t = f(z_t), z_t = W_hh h_{t-1} + W_hx x_t + b_h, whose loss is scored at one
step a (the "anchor", the last scored step).  Going back in time the TOTAL gradient obeys

    dL/dh_{t-1} = W_hh^T (f'(z_t) * dL/dh_t)            for t <= a (no loss before a)

and the views compare ||dL/dh_t|| with three predictions, all anchored at the measured value at step a:

1. Mean field, ReLU.  With W_hh entries i.i.d. of variance c/d, E||W_hh^T v||^2 = c ||v||^2 and half the units
   are active, so each step back multiplies the norm by sqrt(c/2): c = 2 is the edge of chaos, c = 3 explodes
   like 1.22^(a-t), c = 1.5 vanishes like 0.87^(a-t).
2. Mean field, any activation (tanh, sigmoid, linear).  The per-unit pre-activation variance q_t obeys the
   forward map q_t = c E[f(z)^2] + q_in + q_b with z ~ N(0, q_{t-1}) and q_0 = q_in + q_b (h_{-1} = 0);
   q_in is the input's contribution (Var(W_hx) x E[x^2] per component) and q_b the bias variance.  Each step
   back from t multiplies the gradient norm by gain_t = sqrt(c E[f'(z)^2]), z ~ N(0, q_t).  After a short
   transient q_t sits at the fixed point q*, and the line's slope is log10(gain(q*)).  Expectations over
   z ~ N(0, q) use a trapezoidal rule accurate to ~1e-12 (``gaussian_expectation``; closed forms for relu and
   linear).
3. The bound of Pascanu, Mikolov & Bengio (2013): ||dh_a/dh_t|| <= (gamma sigma_max(W_hh))^(a-t), with gamma
   the bound on |f'|: 1 for tanh, relu and linear, 1/4 for sigmoid.  Measured gradients must stay below it.

Lines are returned as log10 values over t = 0..T-1 (NaN after the anchor, where the assumptions do not hold),
ready for plots that draw log10 values on linear axes.

Beyond the profile lines (each module's docstring gives its formulas and sources):
* ``criticality``: the tanh fixed point q*(sigma_w, sigma_b), chi_1 and the edge of chaos chi_1 = 1 of
  Poole et al. (2016) / Schoenholz et al. (2017), for phase diagrams; the ReLU log gain 0.5 ln(c/2).
* ``lyapunov``: the mean-field largest Lyapunov exponent and the mean of the Lyapunov spectrum of a random
  tanh RNN (Engelken, Wolf & Abbott 2020/2023).
* ``sweeps``: a run's mean-field log gain per step (0.5 ln chi_1) and the recurrent scale of its critical line,
  drawn over sweep.csv's measurements.
* ``gates``: the LSTM cell-path (prod f) and GRU update-path (prod z) decays at initialisation, as lines.

Modules: meanfield (moments, variance map, init -> variance factor), lines (anchored lines, RunTheory),
criticality, lyapunov, gates, sweeps.  Every public name is importable from gradscope.theory.
"""

# Every module's public names (its __all__, the one list of them) are gradscope.theory's.
from . import criticality, gates, lines, lyapunov, meanfield, sweeps
from .criticality import *  # noqa: F403
from .gates import *  # noqa: F403
from .lines import *  # noqa: F403
from .lyapunov import *  # noqa: F403
from .meanfield import *  # noqa: F403
from .sweeps import *  # noqa: F403

__all__ = [  # noqa: PLE0604 (the modules' lists of strings, spread)
    *meanfield.__all__,
    *lines.__all__,
    *criticality.__all__,
    *lyapunov.__all__,
    *gates.__all__,
    *sweeps.__all__,
]
