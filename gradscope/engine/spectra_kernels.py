"""The compiled inner loops of engine.spectra: one call per gate block and iteration does the block's whole
tracked step (residual inverse iteration of the eigenvalues near the top, the guard's subspace step, block Lanczos
for sigma_max), so no Python runs per matrix-vector product, per small QR or per Lanczos restart.  Float64 (the
preconditioners complex64).  The guard's small Rayleigh-Ritz matrix gets its eigenvalues here, from the complex
eigensolver (Numba's eig of a real matrix cannot return complex ones), which is enough to tell whether one near
the top is new; when one is, the caller redoes it with NumPy's real eig, whose conjugate pairs are exact, to
start refining it.  Compiled on first use and cached like every kernel (engine._jit); ``gradscope compile``
compiles them with the rest."""

from __future__ import annotations

import numpy as np

from ._jit import helper, kernel


@helper
def _refine(W, x, P, tol, steps):
    """Residual inverse iteration x <- x - P (W x - lambda x), lambda = x^H W x (||x|| = 1), until
    ||W x - lambda x|| <= tol or ``steps`` steps.  W (d, d) float64, x (d,) complex128, P (d, d) complex64.

    P only preconditions: the residual, which decides convergence and what lambda is exact for, is float64,
    and P's rounding (1e-7 relative) is far below its staleness (P is the inverse for an earlier W), so keeping
    it in single precision halves the cost of the step's largest product and changes the convergence rate by
    nothing measurable.  Returns (lambda, x, converged)."""
    d = W.shape[0]
    parts = np.empty((2, d))  # real and imaginary part of x: W x as one pass over W
    lam = 0j
    for _ in range(steps):
        parts[0], parts[1] = x.real, x.imag
        Wx = np.dot(parts, W.T)  # (2, d)
        y = Wx[0] + 1j * Wx[1]  # (d,) W x
        lam = np.vdot(x, y)
        r = y - lam * x  # (d,)
        residual = np.sqrt(np.vdot(r, r).real)
        if residual <= tol:
            return lam, x, True
        if not np.isfinite(residual):
            return lam, x, False
        x = x - residual * np.dot(P, (r / residual).astype(np.complex64)).astype(np.complex128)
        x = x / np.sqrt(np.vdot(x, x).real)
    return lam, x, False


@helper
def _refine_all(W, lam, X, P, tol, steps, shift):
    """Refine every candidate c (lam (C,), X (C, d) its unit eigenvectors, P (C, d, d) complex64 its
    preconditioners; all updated in place, the eigenvalue of a complex pair kept with Im >= 0).  A candidate that
    does not converge gets a fresh P = (W - lambda (1 + shift) I)^-1 at its best lambda and one more go.
    Returns converged (C,)."""
    d = W.shape[0]
    done = np.zeros(lam.shape[0], dtype=np.bool_)
    for c in range(lam.shape[0]):
        converged = False
        for attempt in range(2):
            if attempt:
                P[c] = np.linalg.inv(W - (lam[c] * (1 + shift)) * np.eye(d)).astype(np.complex64)  # (d, d)
            value, x, converged = _refine(W, np.ascontiguousarray(X[c]), np.ascontiguousarray(P[c]), tol, steps)
            if value.imag < 0:  # the other eigenvalue of the pair
                value, x = np.conj(value), np.conj(x)
            lam[c], X[c] = value, x
            if converged:
                break
        done[c] = converged and np.isfinite(lam[c].real) and np.isfinite(lam[c].imag)
    return done


@kernel
def refine_candidates(W, lam, X, P, tol, steps, shift):
    """_refine_all from Python: for eigenvalues a guard has just seen coming close to the top."""
    return _refine_all(W, lam, X, P, tol, steps, shift)


@helper
def _led(guard, lam, X):
    """The guard basis (d, p) led by the refined eigenvectors (real and imaginary parts), the rest of it the
    directions of the old guard that they do not already span, most significant first."""
    d, p = guard.shape
    q = 0
    for c in range(lam.shape[0]):
        q += 2 if lam[c].imag != 0 else 1
    lead = np.empty((d, q))
    j = 0
    for c in range(lam.shape[0]):
        lead[:, j] = X[c].real
        j += 1
        if lam[c].imag != 0:
            lead[:, j] = X[c].imag
            j += 1
    L = np.ascontiguousarray(np.linalg.qr(lead)[0])  # (d, q)
    q = L.shape[1]
    out = np.empty((d, p))
    if q >= p:
        out[:, :] = L[:, :p]
        return out
    rest = guard - np.dot(L, np.dot(np.ascontiguousarray(L.T), guard))  # (d, p): what the lead does not span
    U = np.linalg.svd(rest, full_matrices=False)[0]  # (d, p)
    out[:, :q] = L
    out[:, q:] = U[:, : p - q]
    return out


@helper
def _lanczos_sigma(W, V, max_steps, first_check, tol):
    """sigma_max of W by block Lanczos (blocks of 2, full reorthogonalisation) on A = W^T W from V (d, 2), its
    last two top right singular vectors: the basis Q spans V, A V, ..., one block more per step, and A Q is kept
    (each A q is needed for the next block anyway), so the Ritz pairs and their residual R = A X - X Theta cost no
    extra product.  From ``first_check`` basis vectors on, after every step, the top one is accepted when a
    Kato-Temple bound ||r||^2 / delta is below ``tol`` of it: for the top Ritz pair alone (delta, the distance to
    the rest of the spectrum, estimated by the gap to the second Ritz value), or for the top two together (R of
    both; delta estimated by the gap to the third).

    Returns (sigma_max, or NaN when ``max_steps`` steps did not converge; the top two Ritz vectors (d, 2))."""
    d = W.shape[0]
    m = min(2 * (max_steps + 1), d)
    Q = np.zeros((m, d))  # rows: the orthonormal basis
    AQ = np.zeros((m, d))  # rows: A q
    small = 1e-13 * np.sum(W * W)  # ||W||_F^2 >= ||A||_2
    X = np.ascontiguousarray(V)  # (d, 2)
    block = np.ascontiguousarray(V.T)  # (2, d): the next block, before orthogonalisation
    n = 0
    for _ in range(max_steps + 1):
        start = n
        for j in range(block.shape[0]):
            if n == m:
                break
            u = block[j].copy()
            for _ in range(2):  # full reorthogonalisation, twice is enough
                for i in range(n):
                    u -= np.dot(Q[i], u) * Q[i]
            norm = np.sqrt(np.dot(u, u))
            if norm > small:
                Q[n] = u / norm
                n += 1
        if n == start:
            break  # an invariant subspace: nothing new to add
        AQ[start:n] = np.dot(np.dot(Q[start:n], W.T), W)  # (k, d): rows (W^T W q)^T, one pass over W each way
        block = AQ[start:n]
        if n < first_check and n < m:
            continue
        M = np.dot(Q[:n], AQ[:n].T)  # (n, n) = Q A Q^T
        theta, S = np.linalg.eigh(0.5 * (M + M.T))  # ascending: the Ritz values of A on span(Q)
        top = np.zeros(3)
        for i in range(min(3, n)):
            top[i] = theta[n - 1 - i]
        k = min(2, n)
        Y = np.empty((n, k))
        for i in range(k):
            Y[:, i] = S[:, n - 1 - i]
        Xk = np.dot(Q[:n].T, Y)  # (d, k): the top Ritz vector first
        R = np.dot(AQ[:n].T, Y) - Xk * top[:k]  # (d, k)
        residual = np.sqrt(np.sum(R * R))
        X = np.empty((d, 2))
        X[:, :k] = Xk
        if k < 2:  # a one-dimensional space: keep V's second direction for the next call
            X[:, 1] = V[:, 1]
        # Kato-Temple: the top one alone (the gap to the second Ritz value), or the top two together (the gap
        # to the third), so that two nearly equal top values converge together and a close third does not slow
        # the top one down
        r0 = np.sqrt(np.sum(R[:, 0] * R[:, 0]))
        alone = r0**2 / max(top[0] - top[1], 1e-300)
        pair = residual**2 / max(top[0] - top[2], 1e-300)
        if top[0] > 0 and np.isfinite(top[0]) and min(alone, pair) <= tol * top[0] and residual <= 1e-3 * top[0]:
            return np.sqrt(top[0]), X
        if n == m:
            break
    return np.nan, X


@kernel
def track_block(W, guard, lam, X, P, V, residual_tol, steps, shift, lanczos_steps, first_check, sigma_tol, near):
    """One tracked step of one d x d block W (engine.spectra): its candidates (lam, X, P) refined in place to
    ||W x - lambda x|| <= residual_tol ||W||_F; one subspace-iteration step of the guard (d, p), led by the
    refined eigenvectors when all converged, and its Ritz values (eigenvalues of H = G^T W G); block Lanczos for
    sigma_max from V (d, 2).  ``near`` = (MARGIN, MATCH) of engine.spectra.

    Returns (converged (C,), the new guard G (d, p), H (p, p), the largest Ritz modulus, whether a Ritz value
    within MARGIN of the top is not within MATCH of a candidate (or its conjugate): then the caller redoes the
    Rayleigh-Ritz with NumPy's real eig, which keeps conjugate pairs exact, and refines it; sigma_max (NaN: not
    converged); the new top two right singular vectors (d, 2))."""
    done = _refine_all(W, lam, X, P, residual_tol * np.sqrt(np.sum(W * W)), steps, shift)
    led = lam.shape[0] > 0 and np.all(done)
    G0 = _led(guard, lam, X) if led else np.ascontiguousarray(guard)  # (d, p) orthonormal
    G = np.ascontiguousarray(np.linalg.qr(np.dot(W, G0))[0])  # (d, p): one subspace-iteration step
    H = np.dot(np.ascontiguousarray(G.T), np.dot(W, G))  # (p, p)
    theta = np.linalg.eigvals(H.astype(np.complex128))  # (p,)
    ritz_top = np.max(np.abs(theta))
    top = ritz_top
    for c in range(lam.shape[0]):
        top = max(top, abs(lam[c]))
    unmatched = False
    for t in theta:
        if abs(t) >= (1 - near[0]) * top:
            matched = False
            for c in range(lam.shape[0]):
                matched |= min(abs(lam[c] - t), abs(np.conj(lam[c]) - t)) <= near[1] * top
            unmatched |= not matched
    sigma, V_new = _lanczos_sigma(W, V, lanczos_steps, first_check, sigma_tol)
    return done, G, H, ritz_top, unmatched, sigma, V_new


def compile_spectra(rare: bool = True) -> None:
    """Compile (or load from the cache) the kernels, on a tiny problem: track_block always, refine_candidates
    (called only when an eigenvalue comes close to the top) when ``rare``: ``gradscope compile`` compiles it with
    the rest, a run loads it when it first needs it (~30 ms less at start-up)."""
    W = np.diag([0.5, 0.3, 0.1])
    lam = np.array([0.5 + 0j])
    X = np.eye(3, dtype=np.complex128)[:1].copy()
    P = np.linalg.inv(W - 0.505 * np.eye(3)).astype(np.complex64)[None].copy()
    guard, V = np.eye(3)[:, :2].copy(), np.eye(3)[:, :2].copy()
    track_block(W, guard, lam, X, P, V, 1e-12, 2, 1e-2, 2, 4, 1e-9, (1e-2, 1e-3))
    if rare:
        refine_candidates(W, lam, X, P, 1e-12, 2, 1e-2)


KERNELS = ("track_block", "refine_candidates")  # what gradscope compile compiles (tests/engine/test_kernel_plan.py)
LOADED = ("track_block",)  # what every process that trains loads at start-up (compile_spectra(rare=False))

__all__ = ["track_block", "refine_candidates", "compile_spectra", "KERNELS", "LOADED"]
