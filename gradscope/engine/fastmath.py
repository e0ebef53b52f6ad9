"""exp, sigmoid and tanh that LLVM can vectorise, for float32 and float64.

llvmlite here has no SVML, so ``math.exp`` in a Numba loop is a scalar libm call (~2.4 ns per float32);
these are branch-free (every test is a select), so a loop calling them runs 8-16 lanes at a time
(~0.3 ns per float32 exp with AVX-512).  Called from a kernel, ``exp(x)`` picks the float32 or float64
version by the type of x; called from Python, it is NumPy's.

exp(x) = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2, |r| <= ln(2)/2.  ln 2 is split Cody-Waite
style, ln 2 = C1 + C2 with C1 short enough that n*C1 is exact, so r carries no cancellation error.
e^r: float32, the Cephes expf polynomial (degree 7); float64, the Cephes Pade form
e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)).  2^n is assembled from its IEEE bits as 2^(n//2) * 2^(n - n//2), so both
factors stay normal numbers and results that underflow to subnormals or overflow to inf come out right
(the first factor is applied by an integer add to the exponent bits of e^r, which no fastmath flag can
reorder).
NaN gives NaN, exp(+inf) = inf, exp(-inf) = 0.

sigmoid(x) = 1 / (1 + exp(-x)): exact limits 0 and 1, relative error that of exp.
tanh(x): for |x| < 0.625 an odd Cephes approximation x + x^3 P(x^2) (float32: polynomial, float64:
rational), which avoids the cancellation of 1 - 2/(e^{2|x|} + 1); that formula, with the sign of x,
above.  tanh(+-inf) = +-1, tanh(NaN) = NaN.

Accuracy (tests/engine/test_fastmath.py, against NumPy over the whole range): float32 within 4 ulp,
float64 within a few ulp.  They are inlined into the calling kernel and take its flags; the range reduction
uses fma, so "reassoc" cannot turn x - n*C1 - n*C2 into x - n*(C1 + C2).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from . import _jit


# --------------------------------------------------------------------------------- IEEE bits -> float
@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif bits.bitwidth < 32:
            value = builder.sext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f64_from_bits(typingctx, bits):
    """Reinterpret a 64-bit integer as a float64 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth < 64:
            value = builder.sext(value, ir.IntType(64))
        return builder.bitcast(value, ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma).  LLVM never reassociates through it, whatever the flags."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t, t, t]))
        return builder.call(fn, args)

    return a(a, a, a), codegen


@intrinsic
def _select(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM select: no branch, so it vectorises and inlines cleanly."""
    if not (isinstance(cond, types.Boolean) and isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return a(cond, a, b), codegen


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float32 (as int32) or float64 (as int64)."""
    if x == types.float32:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))

        return types.int32(x), codegen
    if x == types.float64:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(64))

        return types.int64(x), codegen
    return None


# ------------------------------------------------------------------------------------------ float32
# Every constant is a np.float32: a bare Python float would promote the arithmetic to float64 in Numba.
_F32_LO, _F32_HI = np.float32(-104.0), np.float32(89.0)  # e^-104 < smallest subnormal, e^89 > max
_F32_LOG2E = np.float32(1.44269504088896341)
_F32_C1, _F32_C2 = np.float32(0.693359375), np.float32(-2.12194440e-4)  # C1 + C2 = ln 2
_F32_P = (
    np.float32(1.9875691500e-4),
    np.float32(1.3981999507e-3),
    np.float32(8.3334519073e-3),
    np.float32(4.1665795894e-2),
    np.float32(1.6666665459e-1),
    np.float32(5.0000001201e-1),
)
_F32_HALF, _F32_ONE, _F32_TWO = np.float32(0.5), np.float32(1.0), np.float32(2.0)
_F32_TANH_SMALL = np.float32(0.625)
_F32_T = (
    np.float32(-5.70498872745e-3),
    np.float32(2.06390887954e-2),
    np.float32(-5.37397155531e-2),
    np.float32(1.33314422036e-1),
    np.float32(-3.33332819422e-1),
)


def _exp32(x):
    xc = min(max(x, _F32_LO), _F32_HI)
    n = np.floor(xc * _F32_LOG2E + _F32_HALF)  # round(x / ln 2)
    r = _fma(-n, _F32_C1, xc)  # exact
    r = _fma(-n, _F32_C2, r)  # |r| <= ln(2)/2
    p = _F32_P[0]
    p = p * r + _F32_P[1]
    p = p * r + _F32_P[2]
    p = p * r + _F32_P[3]
    p = p * r + _F32_P[4]
    p = p * r + _F32_P[5]
    p = p * (r * r) + r + _F32_ONE  # e^r
    ni = np.int32(n)
    n1 = ni >> 1
    n2 = ni - n1
    # p * 2^n1 by adding n1 to p's exponent field (p ~ 1, so this stays normal), then one multiply by
    # 2^n2 rounds, underflows or overflows correctly.  Integer steps: no flag can reorder them.
    y = _f32_from_bits(_bits(p) + (n1 << 23)) * _f32_from_bits((n2 + 127) << 23)
    return _select(x != x, x, y)  # NaN stays NaN


def _sigmoid32(x):
    return _F32_ONE / (_F32_ONE + exp(-x))


def _tanh32(x):
    a = abs(x)
    z = x * x
    small = ((((_F32_T[0] * z + _F32_T[1]) * z + _F32_T[2]) * z + _F32_T[3]) * z + _F32_T[4]) * z * x + x
    large = math.copysign(_F32_ONE - _F32_TWO / (exp(_F32_TWO * a) + _F32_ONE), x)  # e^inf = inf gives 1
    return _select(a < _F32_TANH_SMALL, small, large)  # NaN: large is NaN


# ------------------------------------------------------------------------------------------ float64
_F64_LO, _F64_HI = -746.0, 710.0
_F64_LOG2E = 1.4426950408889634074
_F64_C1, _F64_C2 = 6.93145751953125e-1, 1.42860682030941723212e-6  # C1 + C2 = ln 2
_F64_EP = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_F64_EQ = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1, 2.00000000000000000009e0)
_F64_TP = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_F64_TQ = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)


def _exp64(x):
    xc = min(max(x, _F64_LO), _F64_HI)
    n = np.floor(xc * _F64_LOG2E + 0.5)
    r = _fma(-n, _F64_C1, xc)
    r = _fma(-n, _F64_C2, r)
    rr = r * r
    pr = r * ((_F64_EP[0] * rr + _F64_EP[1]) * rr + _F64_EP[2])
    q = ((_F64_EQ[0] * rr + _F64_EQ[1]) * rr + _F64_EQ[2]) * rr + _F64_EQ[3]
    p = 1.0 + 2.0 * (pr / (q - pr))  # e^r
    ni = np.int64(n)
    n1 = ni >> 1
    n2 = ni - n1
    y = _f64_from_bits(_bits(p) + (n1 << 52)) * _f64_from_bits((n2 + 1023) << 52)
    return _select(x != x, x, y)


def _sigmoid64(x):
    return 1.0 / (1.0 + exp(-x))


def _tanh64(x):
    a = abs(x)
    z = x * x
    p = (_F64_TP[0] * z + _F64_TP[1]) * z + _F64_TP[2]
    q = ((z + _F64_TQ[0]) * z + _F64_TQ[1]) * z + _F64_TQ[2]
    small = x + x * z * (p / q)
    large = math.copysign(1.0 - 2.0 / (exp(2.0 * a) + 1.0), x)
    return _select(a < 0.625, small, large)


# ------------------------------------------------------------------ the generic names kernels call
def exp(x):
    """e^x (NumPy's when called from Python)."""
    return np.exp(x)


def sigmoid(x):
    """1 / (1 + e^-x) (NumPy's exp when called from Python)."""
    return 1 / (1 + np.exp(-x))


def tanh(x):
    """tanh x (NumPy's when called from Python)."""
    return np.tanh(x)


_jit.scalar_overload(exp, {types.float32: _exp32, types.float64: _exp64})
_jit.scalar_overload(sigmoid, {types.float32: _sigmoid32, types.float64: _sigmoid64})
_jit.scalar_overload(tanh, {types.float32: _tanh32, types.float64: _tanh64})


# ------------------------------------------------------ array kernels (tests and twins: np.exp, ...)
@_jit.kernel
def exp_into(x, out):
    """out[i] = exp(x[i]) over 1-D arrays."""
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@_jit.kernel
def sigmoid_into(x, out):
    """out[i] = 1 / (1 + exp(-x[i])) over 1-D arrays."""
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


@_jit.kernel
def tanh_into(x, out):
    """out[i] = tanh(x[i]) over 1-D arrays."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


KERNELS = (exp_into, sigmoid_into, tanh_into)
