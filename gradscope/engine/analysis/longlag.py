"""Long-lag Jacobians and the lag decomposition of dL/dW_hh, along a stream's trajectory (float64).

    P_t = J_{T-1} ... J_{t+1} = ds_{T-1}/ds_t          P_{T-1} = I
    jac_sigma_max[t] = mean_b sigma_max(P_t)          jac_fro[t] = mean_b ||P_t||_F / sqrt(D)

P_t is never formed densely.  It is kept as P_t = c U N_t, with U (D, r) orthonormal columns (never formed
either), N_t (r, D) carried back by vector-Jacobian products of its rows, N_t = N_{t+1} J_{t+1} (one batched
product per lag), and c a power of 2 per example, changed (exactly) only when ||N_t||_F leaves
[2^-RANGE, 2^RANGE] (the Gram of a 1e-200 product would underflow; rescaling every lag cost two passes over N).
U has orthonormal columns, so c N_t has P_t's singular values and Frobenius norm.
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
FIRST_CUT, then each GROWTH times the last (6 cuts at T = 100: dsyrk + dsyevd of an (r, r) Gram each; r
falls from D = 256 to 133 at lag 10 and 29 at lag 80 on a random tanh RNN with g = 2).  A cut at r = 256 costs
as much as ~8 lags of products, so the first waits until it drops half the rows.

sigma_max of N_t comes from Lanczos on N N^T (``top_singular_values``: two passes over N a step, no Gram),
started from the previous lag's top Ritz vector (the r-dimensional left space does not move between cuts, and
the top left singular vector of P_t settles along the trajectory (Oseledets)), or from e_1 after a cut (the
top direction there).  It stops on the Kato-Temple bound residual^2 / (theta (theta - theta_2)) <= POWER_TOL
of sigma_max^2; theta_2, the second Ritz value, stands in for the second eigenvalue, so a top pair the Krylov
space has not yet resolved can pass early: at POWER_TOL = 1e-11 a pair 1e-6 apart is still found to 1e-10
(tests), at 1e-10 it was not.  Measured on the benchmark case: 35 steps at lag 1, 12-16 before the first cut,
5-8 after, within 1e-13 of the SVD.  An example not certified within POWER_MAX_ITER steps gets the exact value,
the top eigenvalue of the (r, r) Gram by dsyrk + dsyevr (that eigenvalue alone).

The lag decomposition: dL/dW_hh = sum_t dU_t^T h_{t-1}, and dU_t is a sum over the direct gradients G_tau
(the loss, or the layer above, at step tau >= t) carried back tau - t steps.  The part at lag k is

    dW^{(k)} = sum_t dU_t^{(k)T} h_{t-1},   dU_t^{(k)} the pre-activation gradient of (G_{t+k}, 0) J_{t+k} ... J_{t+1}

so that sum_k dW^{(k)} = dL/dW_hh exactly.  All pairs at one lag are carried back one step together.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.linalg import blas, lapack

from .maps import take_steps
from .streams import Stream

POWER_TOL = 1e-11  # relative error in sigma_max^2 at which Lanczos stops (Kato-Temple bound)
POWER_MAX_ITER = 96  # Lanczos steps before the exact eigenvalue of the Gram is cheaper
CHECKS = frozenset((2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 19, 22, 26, 30, 35, 40, 46, 53, 61, 70, 80))  # eigh of T_j
EPS = 1e-14  # beta_j below EPS theta: the Krylov space is invariant (to rounding) and theta exact
DROP = 1e-12  # a cut drops left directions holding at most this share of ||P_t||_F^2
RANGE = 128  # N is rescaled (by a power of 2) when ||N||_F leaves [2^-RANGE, 2^RANGE]
FIRST_CUT, GROWTH = 10, 1.5  # lags of the cuts: 10, 15, 23, 35, 53, 80, ...
SHARDS, MIN_SHARD_ROWS = 2, 4  # the rows are split in SHARDS (each at least MIN_SHARD_ROWS) run on threads


def _T(A: np.ndarray) -> np.ndarray:
    return np.swapaxes(A, -1, -2)


def top_singular_values(N: np.ndarray, x: np.ndarray, fro: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """sigma_max of each (r, D) block of N (B, r, D) by Lanczos on N N^T from the start vectors x (B, r).

    Iteration j: z = N (N^T q_j) (two passes over N, no Gram formed), alpha_j = q_j . z, z orthogonalised
    against every earlier q (twice: full reorthogonalisation, so no ghost copies), beta_j = |z|, q_{j+1} = z /
    beta_j.  The top eigenvalue theta of the tridiagonal T_j (alpha on the diagonal, beta beside it) is the
    top Ritz value of N N^T on the Krylov space, from below, and its Ritz pair's residual is beta_j |y_j| (y_j
    the last component of T_j's top eigenvector).  An example is done when the Kato-Temple bound
    residual^2 / (theta (theta - theta_2)) puts theta within POWER_TOL of sigma_max^2 relatively (theta_2 the
    next Ritz value), or when beta_j vanishes (its Krylov space is invariant: theta is exact).  Lanczos
    converges like exp(-4 j sqrt(gap)) rather than subspace iteration's gap^j, and a start near the top
    vector (the previous lag's, below) needs a few steps.  Those not done within POWER_MAX_ITER steps get the
    exact value (gram_sigma_max).  ``fro`` (B,), ||N||_F if the caller has it, saves a pass over N for the
    scale check: a block far from 1 is scaled by a power of 2 first (exact), as N N^T of 1e-160 underflows.
    Returns (sigma (B,), the top Ritz vectors (B, r): the next lag's start)."""
    finite = np.all(np.isfinite(N), axis=(1, 2)) & np.all(np.isfinite(x), axis=1)
    if not np.all(finite):  # NaN or Inf: those products' sigma_max is NaN, and LAPACK refuses them
        sigma, x = np.full(N.shape[0], np.nan), np.array(x, dtype=np.float64)
        if np.any(finite):
            sigma[finite], x[finite] = top_singular_values(N[finite], x[finite])
        return sigma, x
    if fro is None:
        fro = np.sqrt(np.einsum("nij,nij->n", N, N))
    far = ((fro < 2.0**-RANGE) | (fro > 2.0**RANGE)) & (fro > 0)  # (B,) a zero block stays (sigma_max 0)
    if np.any(far):
        e = np.where(far, np.frexp(fro)[1], 0)  # (B,) ||N||_F = m 2^e
        sigma, x = top_singular_values(np.ldexp(N, -e[:, None, None]), x, np.ldexp(fro, -e))
        return np.ldexp(sigma, e), x
    B, r, _ = N.shape
    steps = min(POWER_MAX_ITER, r)
    with np.errstate(all="ignore"):
        norm = np.linalg.norm(x, axis=1)  # (B,)
        x = np.where(norm[:, None] > 0, x, 1.0)  # a zero start (nothing known) -> the all-ones vector
        Q = np.zeros((B, steps + 1, r))  # the Lanczos vectors q_0 .. q_steps, as rows
        Q[:, 0] = x / np.linalg.norm(x, axis=1, keepdims=True)
        alpha, beta = np.zeros((B, steps)), np.zeros((B, steps))
        NT = _T(N)  # (B, D, r)
        for j in range(steps):
            q = Q[:, j : j + 1]  # (B, 1, r)
            z = np.matmul(np.matmul(q, N), NT)[:, 0]  # (B, r) (N N^T q)^T
            alpha[:, j] = np.einsum("br,br->b", q[:, 0], z)
            done_q = Q[:, : j + 1]  # (B, j+1, r)
            for _ in range(2):  # classical Gram-Schmidt twice against q_0 .. q_j
                z -= np.matmul(np.matmul(done_q, z[:, :, None])[:, None, :, 0], done_q)[:, 0]
            beta[:, j] = np.linalg.norm(z, axis=1)
            k = j + 1
            if k in CHECKS or k == steps:
                theta, Y = np.linalg.eigh(_tridiagonal(alpha[:, :k], beta[:, : k - 1]))  # (B, k), (B, k, k)
                top = theta[:, -1]
                residual = beta[:, j] * np.abs(Y[:, -1, -1])  # (B,) |N N^T x - theta x|, x = Q^T y
                gap = top - theta[:, -2] if k > 1 else top
                done = (residual * residual <= POWER_TOL * top * gap) | (beta[:, j] <= EPS * top)
                if np.all(done) or k == steps:
                    break
            Q[:, j + 1] = z / np.where(beta[:, j] > 0, beta[:, j], 1.0)[:, None]  # a vanished beta: q = 0
        sigma = np.sqrt(np.maximum(top, 0))
        x = np.matmul(Y[:, None, :, -1], Q[:, :k])[:, 0]  # (B, r) the top Ritz vectors
        if not np.all(done):  # close top singular values: the Gram's top eigenvalue, exact whatever the spectrum
            sigma[~done] = gram_sigma_max(N[~done])
        return sigma, x


def _tridiagonal(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(B, k, k) the symmetric tridiagonal matrices with diagonals alpha (B, k) and off-diagonals beta (B, k-1)."""
    B, k = alpha.shape
    T = np.zeros((B, k, k))
    i = np.arange(k)
    T[:, i, i] = alpha
    T[:, i[:-1], i[1:]] = T[:, i[1:], i[:-1]] = beta
    return T


def gram_sigma_max(N: np.ndarray) -> np.ndarray:
    """(B,) sigma_max of each (r, D) block of N (B, r, D): sqrt of the top eigenvalue of the (r, r) Gram N N^T
    (relative error ~eps), by LAPACK directly: dsyrk for the upper triangle of N N^T (half the flops of a
    matmul), then dsyevr for the top eigenvalue alone (no eigenvectors, no other eigenvalues found): 1.5x less
    time than eigvalsh at r = 256.  N must be finite (the caller's check)."""
    B, r, _ = N.shape
    sigma = np.full(B, np.nan)
    for b in range(B):
        G = blas.dsyrk(1.0, N[b].T, trans=1)  # (r, r) upper triangle of N N^T; N[b].T is Fortran-ordered (D, r)
        w, _, found, _, info = lapack.dsyevr(G, compute_v=0, range="I", il=r, iu=r, lower=0, overwrite_a=1)
        if info != 0 or found != 1:  # dsyevr's bisection can fail on a cluster (seen: a scaled orthogonal N)
            w = np.linalg.eigvalsh(N[b] @ N[b].T)[-1:]  # the full symmetric eigensolver, which does not
        sigma[b] = np.sqrt(max(w[0], 0.0))
    return sigma


def compress(N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cut (module docstring): N (B, r, D) -> (W_k^T N (B, k, D), sigma_max (B,), ||N||_F (B,)), with one k
    for the batch (the largest any example needs) and the rows in descending order of their singular values.
    Per example: dsyrk for the upper triangle of N N^T, dsyevd (divide and conquer) on it in place."""
    B, r, _ = N.shape
    w, W = np.empty((B, r)), np.empty((B, r, r))  # N N^T = W diag(w) W^T, w ascending
    for b in range(B):
        G = blas.dsyrk(1.0, N[b].T, trans=1)  # (r, r) upper triangle of N N^T
        w[b], W[b], info = lapack.dsyevd(G, compute_v=1, lower=0, overwrite_a=1)
        if info != 0:  # not seen; the batched solver as the fallback
            w[b], W[b] = np.linalg.eigh(N[b] @ N[b].T)
    w = np.maximum(w, 0)  # rounding can leave the smallest slightly negative
    total = np.sum(w, axis=1)  # (B,) ||N||_F^2
    dropped = np.sum(np.cumsum(w, axis=1) <= DROP * total[:, None], axis=1)  # (B,) trailing directions within DROP
    k = max(r - int(dropped.min()), 1)
    W_k = W[:, :, ::-1][:, :, :k]  # (B, r, k) the top k, descending
    return np.matmul(_T(W_k), N), np.sqrt(w[:, -1]), np.sqrt(total)


def jacobian_norms(stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """(jac_sigma_max, jac_fro), each (T,): batch means over the stream's rows (module docstring).

    Examples never interact, so the rows are split into SHARDS halves (as a training pass splits its batch,
    engine.shards), each carried back in a thread of its own with one BLAS thread: NumPy's products and eigh (the
    vector-Jacobian products, Lanczos) release the GIL; the cuts' SciPy wrappers (dsyrk, dsyevd, dsyevr) hold
    it, about a sixth of the time (docs/performance.md).  The split depends only on the batch size, so the
    numbers are the same whatever the threads that compute them (each shard compresses to the rank its own rows
    need)."""
    T, B, _ = stream.S.shape
    bounds = [(0, B)] if B < 2 * MIN_SHARD_ROWS else [(B * i // SHARDS, B * (i + 1) // SHARDS) for i in range(SHARDS)]
    if len(bounds) == 1:
        parts = [_example_norms(stream, 0, B)]
    else:
        from ..shards import executor

        rest = [executor().submit(_example_norms, stream, b0, b1) for b0, b1 in bounds[1:]]
        parts = [_example_norms(stream, *bounds[0])] + [job.result() for job in rest]
    s, f = np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1)  # (T, B)
    return np.mean(s, axis=1), np.mean(f, axis=1)


def _example_norms(stream: Stream, b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
    """sigma_max(P_t) and ||P_t||_F / sqrt(D), (T, b1 - b0) each, for the stream's rows b0 .. b1-1."""
    T, B_all, D = stream.S.shape
    B = b1 - b0
    sigma, fro = np.ones((T, B)), np.ones((T, B))
    N = np.broadcast_to(np.eye(D), (B, D, D)).copy()  # (B, r, D) N_{T-1} = I, r = D
    x = np.ones((B, D))  # (B, r) Lanczos' start: the previous lag's top left singular vector once there is one
    cut, scale = FIRST_CUT, np.ones(B)  # (B,) P_t = scale U N_t
    with np.errstate(all="ignore"):
        for t in range(T - 2, -1, -1):
            rows = {k: v[b0:b1] for k, v in take_steps(stream.caches, B_all, t + 1, t + 2).items()}  # step t+1's
            N = stream.map.vjp(stream.p, rows, N)[0]  # N_t = N_{t+1} J_{t+1}
            f = np.sqrt(np.einsum("nij,nij->n", N, N))  # (B,) ||N_t||_F = ||P_t||_F / scale
            if not np.all(np.isfinite(f)):  # NaN from here back: the products stay NaN, no more work
                s, _ = top_singular_values(N, x)
                sigma[t], fro[t] = scale * s, scale * f / np.sqrt(D)
                sigma[:t] = fro[:t] = np.nan
                break
            far = ((f < 2.0**-RANGE) | (f > 2.0**RANGE)) & (f > 0)  # (B,) the Gram N N^T could under/overflow
            if np.any(far):  # rescale those by a power of 2 (exact) to ||N||_F in [0.5, 1)
                e = np.where(far, np.frexp(f)[1], 0)  # (B,)
                N, f, scale = np.ldexp(N, -e[:, None, None]), np.ldexp(f, -e), np.ldexp(scale, e)
            lag = T - 1 - t
            if lag == cut:
                N, s, _ = compress(N)  # exact sigma_max; the rows come in descending order of singular value
                x, cut = np.zeros((B, N.shape[1])), int(np.ceil(lag * GROWTH))
                x[:, 0] = 1  # the top left singular vector at the cut, a good start for the next lags
            else:
                s, x = top_singular_values(N, x, f)
            sigma[t], fro[t] = scale * s, scale * f / np.sqrt(D)
    return sigma, fro


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
