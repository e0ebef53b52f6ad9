"""The compiled inner loops of engine.spectra: block Lanczos for sigma_max and residual inverse iteration for an
eigenvalue near the top.  Each works on one d x d block, float64; a call costs a few matrix-vector products,
so the Python around them (engine.spectra) decides, these only iterate.  Compiled on first use and cached like
every kernel (engine._jit); ``gradscope compile`` compiles them with the rest."""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def lanczos_basis(W, Wt, V, steps):
    """Block Lanczos (blocks of 2) on A = W^T W from the orthonormal columns of V (d, 2), with full
    reorthogonalisation.  W (d, d) and Wt = W^T, both C-contiguous.

    Returns (Q (n, d): orthonormal rows spanning V, A V, ..., A^steps V (a direction already spanned is left
    out), Z = Q W^T (n, d): row i is W q_i).  The small eigenproblem of Z Z^T = Q A Q^T is NumPy's (an eigh
    compiled here would cost more compile time than it saves)."""
    d = W.shape[0]
    m = min(2 * (steps + 1), d)
    Q = np.zeros((m, d))
    n = 0
    small = 1e-13 * np.sum(W * W)  # ||W||_F^2 >= ||A||_2
    for j in range(m):
        if j < 2:
            u = V[:, j].copy()
        else:
            u = np.dot(Wt, np.dot(W, Q[j - 2]))  # A q, q two rows back: the next block
        for _ in range(2):  # full reorthogonalisation, twice is enough
            for i in range(n):
                u -= np.dot(Q[i], u) * Q[i]
        norm = np.sqrt(np.dot(u, u))
        if norm > small:
            Q[n] = u / norm
            n += 1
    return Q[:n].copy(), np.dot(Q[:n], Wt)


@kernel
def refine_eigenpair(W, x, P, tol, steps):
    """Residual inverse iteration x <- x - P (W x - lambda x), lambda = x^H W x (||x|| = 1), until
    ||W x - lambda x|| <= tol or ``steps`` steps.  W (d, d) float64, x (d,) and P (d, d) complex128.

    Returns (lambda, x, converged, steps taken)."""
    lam = 0j
    for step in range(steps):
        y = np.dot(W, np.ascontiguousarray(x.real)) + 1j * np.dot(W, np.ascontiguousarray(x.imag))  # W x
        lam = np.vdot(x, y)
        r = y - lam * x
        residual = np.sqrt(np.vdot(r, r).real)
        if residual <= tol:
            return lam, x, True, step
        if not np.isfinite(residual):
            return lam, x, False, step
        x = x - np.dot(P, r)
        x = x / np.sqrt(np.vdot(x, x).real)
    return lam, x, False, steps


def compile_spectra() -> None:
    """Compile (or load from the cache) both kernels, on a tiny problem."""
    W = np.eye(3) * 0.5
    lanczos_basis(W, W.copy(), np.eye(3)[:, :2].copy(), 1)
    refine_eigenpair(W, np.ones(3, dtype=np.complex128) / np.sqrt(3), np.eye(3, dtype=np.complex128), 1e-12, 2)


__all__ = ["lanczos_basis", "refine_eigenpair", "compile_spectra"]
