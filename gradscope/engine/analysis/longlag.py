"""Long-lag Jacobians and the lag decomposition of dL/dW_hh, along a stream's trajectory (float64).

    P_t = J_{T-1} ... J_{t+1} = ds_{T-1}/ds_t          P_{T-1} = I
    jac_sigma_max[t] = mean_b sigma_max(P_t)          jac_fro[t] = mean_b ||P_t||_F / sqrt(D)

P_t is never formed densely.  It is kept as P_t = c U N_t, with U (D, r) orthonormal columns (never formed
either), N_t (r, D) carried back by vector-Jacobian products of its rows, N_t = N_{t+1} J_{t+1} (one batched
product per lag), and c a power of 2 per example that keeps max |N_t| in [0.5, 1) (exact; the Gram of a 1e-200
product would underflow).  U has orthonormal columns, so c N_t has P_t's singular values and Frobenius norm.
N starts as I (r = D).  The products' singular values separate exponentially with the lag (their rates are
the Lyapunov exponents), so r is cut now and then (``compress``): at a lag, with N N^T = W diag(w) W^T,

    N  =  W_k W_k^T N  +  (I - W_k W_k^T) N            N <- W_k^T N  (k, D),  U <- U W_k

dropping the trailing left directions whose eigenvalues w sum to at most DROP ||N||_F^2.  What that drops is
exact to state: the two pieces' column spaces are orthogonal, so at every later lag
P^T P = (kept X)^T (kept X) + (dropped X)^T (dropped X) (X the later Jacobians): both norms are underestimates,
by ||dropped X||_F^2 / (2 ||P||_F^2) relatively for ||P||_F and ||dropped X||_2^2 / (2 sigma_max^2) for
sigma_max, second order in the dropped part.  With DROP = 1e-12 that is ~5e-13 per cut unless the later
Jacobians grow the dropped directions (the most contracted ones) ~1e5 times faster than the kept.  Measured
against the dense products: below 1e-11 relatively; tests/engine/test_analysis_lowrank.py asserts 1e-9 on
chaotic, ordered, saturated, ReLU, orthogonal, trained-like, LSTM and GRU cases.  The cuts come at lags
FIRST_CUT, then each GROWTH times the last (8 cuts at T = 100: eigh of an (r, r) Gram each; r falls from
D = 256 to ~32 on a random tanh RNN with g = 2, 29% of the dense products' flops).

sigma_max of N_t comes from subspace iteration on N N^T (a block of BLOCK vectors in the r-dimensional left
space, which does not move between cuts), warm-started from the previous lag's block: the top left singular
vectors of P_t settle along the trajectory (Oseledets), so one or two rounds usually suffice.  An example stops
when the Kato-Temple bound ||N N^T x - theta x||^2 / (theta (theta - theta_2)) on its top Ritz pair (x, theta)
says theta is within POWER_TOL of sigma_max^2, relatively; one whose top singular values lie too close for that
within POWER_MAX_ITER rounds gets the exact value instead: the top eigenvalue of the (r, r) Gram N N^T,
as at a cut, at lags before the first cut and once r <= GRAM_ROWS (where that is cheaper than iterating).

The lag decomposition: dL/dW_hh = sum_t dU_t^T h_{t-1}, and dU_t is a sum over the direct gradients G_tau
(the loss, or the layer above, at step tau >= t) carried back tau - t steps.  The part at lag k is

    dW^{(k)} = sum_t dU_t^{(k)T} h_{t-1},   dU_t^{(k)} the pre-activation gradient of (G_{t+k}, 0) J_{t+k} ... J_{t+1}

so that sum_k dW^{(k)} = dL/dW_hh exactly.  All pairs at one lag are carried back one step together.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .maps import take_steps
from .streams import Stream

POWER_TOL = 1e-10  # relative error in sigma_max^2 the subspace iteration stops at (Kato-Temple bound)
POWER_MAX_ITER = 4  # rounds before the exact eigenvalue of the Gram is cheaper
BLOCK = 8  # vectors in the subspace iteration for sigma_max
DROP = 1e-12  # a cut drops left directions holding at most this share of ||P_t||_F^2
GRAM_ROWS = 64  # at most this many rows r: sigma_max from the (r, r) Gram directly
FIRST_CUT, GROWTH = 4, 1.5  # lags of the cuts: 4, 6, 9, 14, 21, 32, 48, 72, ...


def _T(A: np.ndarray) -> np.ndarray:
    return np.swapaxes(A, -1, -2)


def top_singular_values(N: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sigma_max of each (r, D) block of N (B, r, D) by subspace iteration on N N^T from the block U (B, r, k).

    Each round: V = N^T U, the Ritz pairs (theta, y) of N N^T in span U from V^T V (theta <= sigma_max^2, from
    below), W = N V; stop when the top pair's Kato-Temple bound is below POWER_TOL (module docstring), else
    U = qr(W).  A block of k vectors converges like (sigma_{k+1} / sigma_1)^2 per round rather than
    (sigma_2 / sigma_1)^2.  Returns (sigma (B,), the next lag's start (B, r, k))."""
    finite = np.all(np.isfinite(N), axis=(1, 2))
    if not np.all(finite):  # NaN or Inf: LAPACK refuses them; those products' sigma_max is NaN
        sigma, U = np.full(N.shape[0], np.nan), np.array(U, dtype=np.float64)
        if np.any(finite):
            sigma[finite], U[finite] = top_singular_values(N[finite], U[finite])
        return sigma, U
    B = N.shape[0]
    sigma = np.zeros(B)
    with np.errstate(all="ignore"):
        U = np.linalg.qr(U)[0]  # (B, r, k)
        todo = np.ones(B, dtype=bool)  # the examples still iterating (all iterate: no copies of N)
        for _ in range(POWER_MAX_ITER):
            V = np.matmul(_T(U), N)  # (B, k, D) (N^T U)^T
            theta, Y = np.linalg.eigh(np.matmul(V, _T(V)))  # (B, k) ascending, (B, k, k): U^T N N^T U
            W = np.matmul(N, _T(V))  # (B, r, k) N N^T U
            top = theta[:, -1]
            y = Y[:, :, -1:]  # (B, k, 1) the top Ritz vector x = U y
            residual = np.matmul(W, y)[..., 0] - top[:, None] * np.matmul(U, y)[..., 0]  # (B, r) N N^T x - theta x
            gap = top - theta[:, -2] if theta.shape[1] > 1 else top
            done = np.sum(residual * residual, axis=1) <= POWER_TOL * top * gap
            sigma[todo] = np.sqrt(np.maximum(top[todo], 0))
            U = np.linalg.qr(W)[0]
            todo &= ~done & np.isfinite(top)
            if not np.any(todo):
                break
        if np.any(todo):  # close top singular values: the Gram's top eigenvalue, exact whatever the spectrum
            sigma[todo] = gram_sigma_max(N[todo])
        return sigma, U


def gram_sigma_max(N: np.ndarray) -> np.ndarray:
    """(B,) sigma_max of each (r, D) block of N (B, r, D): sqrt of N N^T's top eigenvalue (relative error ~eps)."""
    return np.sqrt(np.maximum(np.linalg.eigvalsh(np.matmul(N, _T(N)))[:, -1], 0))


def compress(N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cut (module docstring): N (B, r, D) -> (W_k^T N (B, k, D), sigma_max (B,), ||N||_F (B,)), with one k
    for the batch (the largest any example needs) and the rows in descending order of their singular values."""
    w, W = np.linalg.eigh(np.matmul(N, _T(N)))  # (B, r) ascending, (B, r, r): N N^T = W diag(w) W^T
    w = np.maximum(w, 0)  # rounding can leave the smallest slightly negative
    total = np.sum(w, axis=1)  # (B,) ||N||_F^2
    dropped = np.sum(np.cumsum(w, axis=1) <= DROP * total[:, None], axis=1)  # (B,) trailing directions within DROP
    k = max(N.shape[1] - int(dropped.min()), 1)
    W_k = W[:, :, ::-1][:, :, :k]  # (B, r, k) the top k, descending
    return np.matmul(_T(W_k), N), np.sqrt(w[:, -1]), np.sqrt(total)


def jacobian_norms(stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """(jac_sigma_max, jac_fro), each (T,): batch means over the stream's rows (module docstring)."""
    T, B, D = stream.S.shape
    sigma, fro = np.ones(T), np.ones(T)
    N = np.broadcast_to(np.eye(D), (B, D, D)).copy()  # (B, r, D) N_{T-1} = I, r = D
    U = _start(B, D)
    cut, scale = FIRST_CUT, np.ones(B)  # (B,) N is kept at max |N| in [0.5, 1): P_t = scale U N_t
    with np.errstate(all="ignore"):
        for t in range(T - 2, -1, -1):
            N = stream.map.vjp(stream.p, take_steps(stream.caches, B, t + 1, t + 2), N)[0]  # N_t = N_{t+1} J_{t+1}
            if not np.all(np.isfinite(N)):  # NaN from here back: the products stay NaN, no more work
                s, _ = top_singular_values(N, U)
                sigma[t] = float(np.mean(scale * s))
                fro[t] = float(np.mean(scale * np.sqrt(np.einsum("nij,nij->n", N, N)))) / np.sqrt(D)
                sigma[:t] = fro[:t] = np.nan
                break
            lag = T - 1 - t
            e = np.frexp(np.max(np.abs(N), axis=(1, 2)))[1]  # (B,) max |N| = m 2^e, m in [0.5, 1)
            N = np.ldexp(N, -e[:, None, None])  # exact: a power of 2; the Gram of 1e-200 would underflow
            scale = np.ldexp(scale, e)  # (B,) P_t = scale U N_t
            if lag == cut:
                N, s, f = compress(N)
                U, cut = _start(B, N.shape[1]), int(np.ceil(lag * GROWTH))
            elif lag < FIRST_CUT or N.shape[1] <= GRAM_ROWS:  # the exact value is cheaper (module docstring)
                s = gram_sigma_max(N)
                f = np.sqrt(np.einsum("nij,nij->n", N, N))
            else:
                s, U = top_singular_values(N, U)
                f = np.sqrt(np.einsum("nij,nij->n", N, N))  # (B,) ||N_t||_F = ||P_t||_F
            sigma[t] = float(np.mean(scale * s))
            fro[t] = float(np.mean(scale * f)) / np.sqrt(D)
    return sigma, fro


def _start(B: int, r: int) -> np.ndarray:
    """(B, r, k) the subspace iteration's start after a cut: the top k left singular directions, e_1 .. e_k."""
    k = min(BLOCK, r)
    return np.broadcast_to(np.eye(r)[:, :k], (B, r, k)).copy()


def lag_terms(stream: Stream, G: np.ndarray) -> Iterator[np.ndarray]:
    """dW^{(k)} (G d, d) for k = 0 .. T-1 (module docstring), from the direct cotangents G (T, N, D) (or
    (T, N, d): on h only)."""
    T, N, D = stream.S.shape
    d = stream.d
    H_prev = stream.H_prev().reshape(T * N, d)  # (T N, d) h_{t-1}, step-major
    V = np.zeros((T, N, D))
    V[..., : G.shape[2]] = G  # V^{(0)}_t = G_t
    with np.errstate(all="ignore"):
        for k in range(T):
            rows = T - k  # steps t = 0 .. T-1-k receive from t + k
            lam = V.reshape(rows * N, 1, D)
            lam_prev, dU, _ = stream.map.vjp(stream.p, take_steps(stream.caches, N, 0, rows), lam)
            yield dU[:, 0].T @ H_prev[: rows * N]  # (G d, d)
            V = lam_prev[N:, 0].reshape(rows - 1, N, D)  # V^{(k+1)}_{t-1} from step t


def grad_W_hh_by_lag(stream: Stream, G: np.ndarray) -> np.ndarray:
    """(T,) the Frobenius norm of dW^{(k)} at each lag k."""
    return np.array([np.sqrt(np.sum(term * term)) for term in lag_terms(stream, G)])
