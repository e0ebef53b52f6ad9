"""The small loops every kernel shares: zeroing, row views, and norms that neither overflow nor lose NaN.

A row pass sums its squares in the model's precision, at the loop's full vector width, and ``row_norm`` takes
the row again in float64 (``vector_norm``) when that sum overflowed, is NaN or is so small that squares
underflowed.  ``vector_norm`` keeps a second sum, of (v 2^-600)^2, used only when the first is infinite: a norm
is then infinite exactly when its vector holds an Inf, and NaN stays NaN.  Sums over rows (the metrics, a bias
gradient) accumulate in float64.
"""

from __future__ import annotations

import math

import numpy as np

from . import _jit

SCALE_DOWN = 2.0**-600  # second sum of squares, of v * 2^-600: cannot overflow for any float64 v
SCALE_UP = 2.0**600
# A row's sum of squares in float32 is trusted from here up (to its overflow): below it, squares of values
# under ~1e-19 fall out of float32's normal range and a vanishing state's norm would read low or 0.  The
# rows below it are summed again in float64 (``row_norm``); what the float32 sum can lose above it is
# at most d * 2^-126 / 2^-90, under 1e-8 of it for any d we run.
TRUSTED_SUM = 2.0**-90


@_jit.helper
def fill_zero(v):
    """v[:] = 0 for a 1-D array (a plain loop: Numba's slice assignment costs seconds of compile time)."""
    for i in range(v.shape[0]):
        v[i] = 0


@_jit.helper
def add_row(v, acc):
    """acc (c,) float64 += v (c,): a bias gradient's sum over rows, kept in float64 (it adds B T terms).
    Its own loop, called row after row, so the row pass beside it keeps the model's vector width and the
    sum's order (rows in turn, each unit on its own) is the one it always had."""
    for j in range(v.shape[0]):
        acc[j] += np.float64(v[j])


@_jit.helper
def rows(a):
    """(m, B, c) -> the (m*B, c) view of the same rows (one function, so one compiled reshape)."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


@_jit.inline
def norm_from_sums(ss, ss_scaled):
    """sqrt of a sum of squares kept twice: plainly (exact for small values) and of v * 2^-600 (which
    cannot overflow); the second is used only when the first overflowed and it was kept (float64 models:
    for float32 it is 0, and an infinite plain sum means an Inf entry).  NaN stays NaN, Inf stays Inf."""
    if ss == np.inf and ss_scaled > 0:
        return math.sqrt(ss_scaled) * SCALE_UP
    return math.sqrt(ss)


@_jit.inline
def row_norm(ss, v):
    """||v||_2 from ss, v's sum of squares in v's own precision (a row's loop keeps its full vector width):
    sqrt(ss) when ss is finite and not below TRUSTED_SUM, else ``vector_norm(v)`` (float64, cannot overflow
    or underflow a float32's square).  NaN stays NaN, Inf stays Inf."""
    if TRUSTED_SUM <= ss < np.inf:
        return math.sqrt(np.float64(ss))
    return vector_norm(v)


@_jit.kernel
def vector_norm(v):
    """||v||_2 of a 1-D array, accumulated in float64 without overflow."""
    ss = 0.0
    ss_scaled = 0.0
    for i in range(v.shape[0]):
        x = np.float64(v[i])
        ss += x * x
        xs = x * SCALE_DOWN
        ss_scaled += xs * xs
    return norm_from_sums(ss, ss_scaled)
