"""fastmath.exp / sigmoid / tanh against NumPy over the whole float range, in kernels compiled with the
project's flags (fastmath "reassoc" included), for float32 and float64.

References are computed one precision up (float64 for float32, long double for float64) and rounded.
Bound: 4 ulp of the result (we measure <= 3.1).  Results in the subnormal range are compared absolutely
(within the smallest normal number): they carry no relative precision in any implementation.
"""

import numba
import numpy as np
import pytest
from numba import types

from gradscope.engine import fastmath
from gradscope.engine.reference import sigmoid as np_sigmoid

ULP_BOUND = 4.0


def _inputs(dtype):
    rng = np.random.default_rng(7)
    big = 750.0 if dtype == np.float64 else 110.0
    parts = [
        np.linspace(-big, big, 400_001),  # the whole range, including overflow
        rng.standard_normal(200_000) * 10,
        np.linspace(-1, 1, 200_001),  # around 0 (tanh's small-|x| branch)
        np.geomspace(1e-30, 1.0, 20_000),
        -np.geomspace(1e-30, 1.0, 20_000),
        [0.625, -0.625, np.nextafter(0.625, 0), 0.0, -0.0, 1e-300, -1e-300],
    ]
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]).astype(dtype)


def _reference(name, x):
    wide = np.longdouble if x.dtype == np.float64 else np.float64
    xw = x.astype(wide)
    with np.errstate(over="ignore"):
        if name == "exp":
            return np.exp(xw)
        if name == "sigmoid":
            return 1 / (1 + np.exp(-xw))
        return np.tanh(xw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["exp", "sigmoid", "tanh"])
def test_accuracy_over_the_whole_range(name, dtype):
    x = _inputs(dtype)
    out = np.empty_like(x)
    getattr(fastmath, f"{name}_into")(x, out)
    ref = _reference(name, x)
    with np.errstate(over="ignore"):
        ref_rounded = ref.astype(dtype)
    finite = np.isfinite(ref_rounded)
    # overflow to inf exactly where the correctly rounded result overflows
    assert np.array_equal(np.isinf(out), ~finite)
    tiny = np.finfo(dtype).tiny
    normal = finite & (np.abs(ref) >= tiny)
    ulp = np.spacing(np.abs(ref_rounded[normal])).astype(np.float64)
    err = np.abs(out[normal].astype(np.float64) - ref[normal].astype(np.float64)) / ulp
    worst = int(np.argmax(err))
    assert err[worst] <= ULP_BOUND, f"{name} {err[worst]:.2f} ulp at x = {x[normal][worst]!r}"
    sub = finite & ~normal
    assert np.all(np.abs(out[sub].astype(np.float64) - ref[sub].astype(np.float64)) <= tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0], dtype=dtype)
    out = np.empty_like(x)
    fastmath.exp_into(x, out)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == 0.0 and out[3] == 1.0
    fastmath.sigmoid_into(x, out)
    assert np.isnan(out[0]) and out[1] == 1.0 and out[2] == 0.0 and out[3] == 0.5
    fastmath.tanh_into(x, out)
    assert np.isnan(out[0]) and out[1] == 1.0 and out[2] == -1.0 and out[3] == 0.0


def test_python_fallbacks_are_numpy():
    x = np.linspace(-5, 5, 11)
    assert np.array_equal(fastmath.exp(x), np.exp(x))
    assert np.array_equal(fastmath.tanh(x), np.tanh(x))
    assert np.array_equal(fastmath.sigmoid(x), np_sigmoid(x))


def test_float32_stays_float32():
    """The typed results: a float32 argument gives a float32 (Numba's float64-literal trap would not)."""

    @numba.njit
    def all_three(x):
        return fastmath.exp(x), fastmath.sigmoid(x), fastmath.tanh(x)

    all_three(np.float32(0.5))
    all_three(0.5)
    returns = {sig.args[0]: sig.return_type for sig in all_three.nopython_signatures}
    assert returns[types.float32] == types.UniTuple(types.float32, 3)
    assert returns[types.float64] == types.UniTuple(types.float64, 3)
