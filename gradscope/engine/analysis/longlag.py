"""Long-lag Jacobians and the lag decomposition of dL/dW_hh, along a stream's trajectory (float64).

    P_t = J_{T-1} ... J_{t+1} = ds_{T-1}/ds_t          P_{T-1} = I
    jac_sigma_max[t] = mean_b sigma_max(P_t)          jac_fro[t] = mean_b ||P_t||_F / sqrt(D)

P_t is built back from the last step by vector-Jacobian products of its rows: row i of P_t is the gradient
of s_{T-1,i} with respect to s_t, so P_t = vjp_{t+1}(P_{t+1}), one batched product per step and no Jacobian
formed on its own.  sigma_max comes from subspace iteration on P_t P_t^T (a block of BLOCK vectors),
warm-started from the previous lag's top left singular vectors (they live in the space of s_{T-1} for every t
and settle along the trajectory, so a round or two suffice), iterated to a relative change below 1e-11; a product
whose top singular values lie too close for that within POWER_MAX_ITER rounds gets an exact SVD instead.

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

POWER_TOL = 1e-11
POWER_MAX_ITER = 100
BLOCK = 8  # vectors in the subspace iteration for sigma_max


def top_singular_values(P: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sigma_max of each (D, D) block of P (N, D, D) by subspace iteration on P P^T from the block U (N, D, k).

    Each round: V = P^T U, the Ritz value sigma = sqrt(lambda_max(V^T V)) (<= sigma_max, from below), U = qr(P V).
    A block of k vectors converges like (sigma_{k+1} / sigma_1)^2 per round rather than (sigma_2 / sigma_1)^2,
    and the warm start from the previous lag leaves a round or two.  Returns (sigma (N,), U) (the next start)."""
    finite = np.all(np.isfinite(P), axis=(1, 2))
    if not np.all(finite):  # NaN or Inf: LAPACK refuses them; those products' sigma_max is NaN
        sigma, U = np.full(P.shape[0], np.nan), np.array(U, dtype=np.float64)
        if np.any(finite):
            sigma[finite], U[finite] = top_singular_values(P[finite], U[finite])
        return sigma, U
    sigma = np.zeros(P.shape[0])
    done = np.zeros(P.shape[0], dtype=bool)
    with np.errstate(all="ignore"):
        U = np.linalg.qr(U)[0]
        PT = np.swapaxes(P, 1, 2)
        for _ in range(POWER_MAX_ITER):
            V = np.matmul(PT, U)  # (N, D, k)
            new = np.sqrt(np.maximum(np.linalg.eigvalsh(np.matmul(np.swapaxes(V, 1, 2), V))[:, -1], 0))
            done = np.abs(new - sigma) <= POWER_TOL * new
            sigma = new
            U = np.linalg.qr(np.matmul(P, V))[0]
            if np.all(done | ~np.isfinite(new)):
                break
        slow = ~done & np.isfinite(sigma)
        if np.any(slow):  # close top singular values: the SVD, exact whatever the spectrum
            sigma[slow] = np.linalg.norm(P[slow], ord=2, axis=(1, 2))
        return sigma, U


def jacobian_norms(stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """(jac_sigma_max, jac_fro), each (T,): batch means over the stream's rows (module docstring)."""
    T, N, D = stream.S.shape
    sigma, fro = np.ones(T), np.ones(T)
    P = np.broadcast_to(np.eye(D), (N, D, D)).copy()  # (N, D, D) P_{T-1} = I
    U = np.broadcast_to(np.eye(D)[:, : min(BLOCK, D)], (N, D, min(BLOCK, D)))  # the subspace iteration's start
    with np.errstate(all="ignore"):
        for t in range(T - 2, -1, -1):
            P = stream.map.vjp(stream.p, take_steps(stream.caches, N, t + 1, t + 2), P)[0]  # P_t = P_{t+1} J_{t+1}
            s, U = top_singular_values(P, U)
            sigma[t] = float(np.mean(s))
            fro[t] = float(np.mean(np.sqrt(np.einsum("nij,nij->n", P, P)))) / np.sqrt(D)
            if not np.all(np.isfinite(P)):  # NaN from here back: the products stay NaN, no more work
                sigma[:t] = fro[:t] = np.nan
                break
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
