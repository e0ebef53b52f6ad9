"""spectral_radius and sigma_max of W_hh at every recorded iteration, without an eigensolve each time.

An eigensolve of a 128 x 128 matrix (LAPACK geev) costs about half an LSTM training step at (B, T, n, d) = (32,
100, 32, 128), and an LSTM has four gate blocks: measured from scratch, the spectra cost more than the step.  But
training moves W_hh little between iterations (there, ||dW||_2 ~ 5e-4 and the top eigenvalue ~ 1e-5 per
iteration), so a ``SpectralTracker`` keeps, per d x d block, what the last iteration found and refines it:

rho = max |lambda|:  every eigenvalue near the top (a complex pair counts once) is refined by residual inverse
    iteration (Neumaier 1985): x <- x - P (W x - lambda x), lambda = x^H W x, P = (W' - sigma I)^{-1} the inverse
    of the W' of an earlier iteration at a shift sigma just outside lambda, kept across iterations and
    refreshed when the iteration does not converge.  It converges when
    ||W x - lambda x|| <= RESIDUAL_TOL ||W||_F (||x|| = 1): then lambda is an exact eigenvalue of W + E with
    ||E||_2 <= RESIDUAL_TOL ||W||_F (E = -r x^H), and off by at most cond(lambda) ||E|| from one of W's.
    Which eigenvalues are "near the top" a guard says: a real orthonormal basis G of GUARD vectors spanning
    (approximately) W's dominant invariant subspace, one subspace-iteration step per call (G <- qr(W G)) and a
    Rayleigh-Ritz on it.  Its Ritz values within MARGIN of the largest modulus are the candidates; a new one
    starts being refined from its Ritz vector, so an eigenvalue that overtakes the top (moduli cross, a real
    pair becomes complex) is caught as it comes close.  Complex pairs and near-equal moduli are handled alike:
    each candidate is refined on its own and rho is the largest modulus of the refined ones.
sigma_max = sqrt(largest eigenvalue of W^T W):  block Lanczos (blocks of 2, so that two nearly equal top singular
    values converge together) with full reorthogonalisation, from the last top two right singular vectors,
    checked after every step from LANCZOS_FIRST_CHECK basis vectors on and accepted when a Kato-Temple bound
    ||r||^2 / gap (the top one alone, or the top two together) is below SIGMA_TOL of the top eigenvalue.

Cost: one compiled call per block and iteration (spectra_kernels.track_block: the refinement, the guard's step and
its Ritz values, the Lanczos run), so no Python runs per product or per small factorisation; P is kept in single
precision (it only preconditions: the float64 residual decides).  NumPy's real eig of the guard's 8 x 8
Rayleigh-Ritz matrix runs only when a Ritz value near the top is new.  At (32, 100, 32, 128): ~1.2 ms per
iteration for the four gate blocks and the gradient norms, ~10 % of the BPTT step (benchmarks/bench_metrics.py).

Whenever a check fails (a residual above its tolerance after the allowed steps, a guard Ritz value above the
refined top, more candidates than MAX_TRACKED, a NaN/Inf or an extreme scale) that block is measured exactly
(params.spectral_stats: eigvals / eigvalsh, what every iteration cost before) and the tracker re-seeds from a
full eigendecomposition.  The trainer also asks for the exact figures at iteration 0, at the last iteration (the
exported end of the run; nothing is seeded there, since nothing follows) and for a diverged one.
tests/engine/test_spectra.py checks the tracked values against eigvals / svd within the tolerances below on
trained and untrained weights, complex dominant pairs and nearly equal moduli; docs/metrics.md states them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .params import spectral_stats

RESIDUAL_TOL = 1e-11  # rho: ||W x - lambda x|| / ||W||_F at convergence (backward error of lambda)
SIGMA_TOL = 1e-9  # sigma_max^2: the Kato-Temple bound ||r||^2 / gap on its error, relative, at convergence
GUARD = 8  # vectors of the guard subspace
MARGIN = 1e-2  # guard Ritz values within this share of the top modulus are refined (candidates)
MATCH = 1e-3  # a guard Ritz value this close (relative) to a refined eigenvalue is that eigenvalue
MAX_TRACKED = 4  # more candidates than this (a crowded top) and the block is measured exactly
MAX_STEPS = 10  # residual inverse iteration steps per candidate and preconditioner
SHIFT = 1e-2  # the preconditioner's shift: sigma = lambda (1 + SHIFT)
LANCZOS_STEPS = 15  # block Lanczos steps at most (a basis of 32 vectors)
LANCZOS_FIRST_CHECK = 8  # basis vectors before the first convergence check (the third Ritz value, the gap, settles)
# The spectral radius |lambda| is then within ~1e-9 (relative) of eigvals' for the matrices of the tests
# (cond(lambda) up to ~1e2); sigma_max within ~1e-12.  TOLERANCE is what the tests assert and the docs state.
TOLERANCE = {"spectral_radius": 1e-8, "sigma_max": 1e-8}


def _preconditioners(W: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """(W_c - sigma_c I)^-1 for each candidate c, sigma_c = lambda_c (1 + SHIFT): (C, d, d) complex.

    The shift sits just outside the eigenvalue (radially), so the inverse stays well conditioned and keeps
    working as W moves (measured: at SHIFT = 1e-2, ~6 steps to the tolerance with a P ten iterations old; at
    SHIFT = 0, a P one iteration old often fails).  An explicit inverse, applied as one product per step, kept in
    single precision (spectra_kernels._refine: it only preconditions)."""
    d = W.shape[-1]
    sigma = lam * (1 + SHIFT)  # (C,)
    return np.linalg.inv(W - sigma[:, None, None] * np.eye(d)).astype(np.complex64)  # (C, d, d)


@dataclass
class _Block:
    """What the tracker knows about one d x d block of W_hh between calls: the candidates, eigenvalues near the
    top (Im >= 0 of a complex pair) with their unit eigenvectors and preconditioners P = (W' - sigma I)^-1 for a
    W' of an earlier iteration and a shift sigma just outside lambda, kept as arrays the kernel updates in place."""

    guard: np.ndarray  # (d, GUARD) orthonormal
    lam: np.ndarray  # (C,) complex
    X: np.ndarray  # (C, d) complex
    P: np.ndarray  # (C, d, d) complex64
    v: np.ndarray  # (d, 2) the top two right singular vectors

    def keep(self, index) -> None:
        self.lam, self.X, self.P = self.lam[index], self.X[index], self.P[index]


def _seed(W: np.ndarray, rng: np.random.Generator) -> _Block:
    """A block's state from a full eigendecomposition (eig, eigh), after an exact measurement."""
    d = len(W)
    lam, X = np.linalg.eig(W)  # (d,), (d, d)
    order = np.argsort(-np.abs(lam), kind="stable")
    top = np.abs(lam[order[0]])
    p = min(GUARD, d)
    columns = []
    for i in order:  # real and imaginary parts of the top eigenvectors span the dominant real subspace
        columns += [X[:, i].real] if lam[i].imag == 0 else [X[:, i].real, X[:, i].imag]
        if len(columns) >= p:
            break
    guard = np.linalg.qr(np.column_stack(columns[:p]) + 1e-3 * rng.standard_normal((d, p)))[0]  # (d, p)
    near = [i for i in order if np.abs(lam[i]) >= (1 - MARGIN) * top and lam[i].imag >= 0][: MAX_TRACKED + 1]
    P = _preconditioners(np.broadcast_to(W, (len(near), d, d)), lam[near])  # (C, d, d)
    vectors = np.ascontiguousarray((X[:, near] / np.linalg.norm(X[:, near], axis=0)).T, dtype=np.complex128)  # (C, d)
    _, V = np.linalg.eigh(W.T @ W)  # (d, d)
    return _Block(np.ascontiguousarray(guard), lam[near].astype(np.complex128), vectors, P, V[:, -2:][:, ::-1].copy())


class SpectralTracker:
    """(spectral radius, sigma_max) of one stream's W_hh, tracked from call to call (module docstring).

    ``tracker(W_hh, exact=False)`` returns the two floats of params.spectral_stats (the largest over the gate
    blocks); ``exact=True`` computes them as spectral_stats does.  ``counts`` says how each block was measured:
    "exact" (asked for), "tracked", "fallback" (a check failed: measured exactly).
    """

    def __init__(self, gates: int = 1, seed: int = 0):
        self.gates = gates
        self._blocks: list[Any] = []  # a _Block (or None: measured exactly) per gate block; [] before the first
        self._shape: tuple | None = None
        self._rng = np.random.default_rng(seed)
        self.counts = {"exact": 0, "tracked": 0, "fallback": 0}

    def reset(self) -> None:
        self._blocks = []

    def __call__(self, W_hh: np.ndarray, exact: bool = False, seed: bool = True) -> tuple[float, float]:
        """``seed=False``: no later call tracks from this one (the run's last iteration), so a block measured
        exactly is not seeded (a full eigendecomposition per block, ~15 ms at d = 128); the next call, if any,
        is then exact."""
        d = W_hh.shape[1]
        W64 = np.asarray(W_hh, dtype=np.float64)  # (gates d, d)
        blocks = [W64[g * d : (g + 1) * d] for g in range(self.gates)]  # (d, d) views
        scales = np.abs(W64).reshape(self.gates, -1).max(axis=1) if W64.size else np.zeros(self.gates)  # (gates,)
        if not np.isfinite(scales).all() or W_hh.shape != self._shape:
            self._blocks, self._shape = [], W_hh.shape
        if not np.isfinite(scales).all():
            return spectral_stats(W_hh, self.gates)  # (nan, nan)
        if not self._blocks:
            self._blocks = [None] * self.gates
            exact = True
        usable = [1e-100 < s < 1e100 and d >= 2 for s in scales]  # else spectral_stats' scaling is needed
        tracked = [] if exact else [g for g in range(self.gates) if self._blocks[g] is not None and usable[g]]
        found = self._track(blocks, tracked) if tracked else {}
        rho = sigma = 0.0
        for g, W in enumerate(blocks):
            radius, top = found.get(g, (None, None))
            if radius is not None and top is not None:
                self.counts["tracked"] += 1
                rho, sigma = max(rho, radius), max(sigma, top)
                continue
            self.counts["exact" if exact or not usable[g] else "fallback"] += 1
            r, s = spectral_stats(W)
            rho, sigma = max(rho, r), max(sigma, s)
            self._blocks[g] = _seed(W, self._rng) if usable[g] and seed else None
        return rho, sigma

    def _track(self, blocks, tracked) -> dict[int, tuple[float | None, float | None]]:
        """{block: (radius, sigma_max)} of the tracked blocks, None where a check failed: one compiled call per
        block (spectra_kernels.track_block); NumPy's eig of the guard's Rayleigh-Ritz matrix only when a Ritz
        value near the top is new (an eigenvalue coming close to the top)."""
        from .spectra_kernels import track_block  # Numba: imported when something is tracked, not with the trainer

        found = {}
        for g in tracked:
            state, W = self._blocks[g], blocks[g]
            done, state.guard, H, ritz_top, unmatched, sigma, V = track_block(
                W, state.guard, state.lam, state.X, state.P, state.v, RESIDUAL_TOL, MAX_STEPS, SHIFT,
                LANCZOS_STEPS, LANCZOS_FIRST_CHECK, SIGMA_TOL, (MARGIN, MATCH),
            )  # fmt: skip
            radius = float(np.max(np.abs(state.lam))) if len(done) and done.all() else None
            if radius is not None and unmatched:
                theta, Y = np.linalg.eig(H)  # (p,), (p, p): real, so a complex pair's values are exact conjugates
                radius = self._checked(W, state, radius, theta, state.guard, Y)
            elif radius is not None:
                radius = self._accounted(state, radius, float(ritz_top))
            if np.isfinite(sigma):
                state.v = V
            found[g] = (radius, float(sigma) if np.isfinite(sigma) else None)
        return found

    @staticmethod
    def _accounted(state: _Block, radius: float, ritz_top: float) -> float | None:
        """The radius when the guard sees no more than the candidates, after dropping the duplicates (two
        converged to one eigenvalue) and the fallen; None (exact) when it sees more, or the top is crowded."""
        if len(state.lam) > MAX_TRACKED:
            return None
        if max(radius, ritz_top) > radius * (1 + MARGIN):
            return None  # the guard sees more than the candidates: something was missed
        if len(state.lam) > 1:
            kept: list[int] = []
            for i in np.argsort(-np.abs(state.lam), kind="stable"):
                lam_i = state.lam[i]
                if abs(lam_i) >= (1 - MARGIN) * radius and all(abs(lam_i - state.lam[k]) > 1e-8 * radius for k in kept):
                    kept.append(int(i))
            if kept != list(range(len(state.lam))):
                state.keep(kept)
        return radius

    def _checked(self, W, state: _Block, radius, theta, G, Y) -> float | None:
        """The block's radius once every guard Ritz value near the top is accounted for, or None (exact).
        theta (p,) and Y (p, p): the Ritz values and (in the guard basis G (d, p)) vectors."""
        from .spectra_kernels import refine_candidates

        top = max(radius, float(np.max(np.abs(theta))))
        new_lam, new_x = [], []
        for j in np.flatnonzero(np.abs(theta) >= (1 - MARGIN) * top):
            t = complex(theta[j])
            if t.imag < 0 or float(np.min(np.abs(state.lam - t))) <= MATCH * top:
                continue  # its conjugate stands for the pair / it is one we refine
            x = G @ Y[:, j]  # (d,) the Ritz vector
            x = x / np.linalg.norm(x)
            new_lam.append(t if t.imag > 0 else complex(t.real))
            new_x.append(x if t.imag > 0 else x.real.astype(complex))
        if len(state.lam) + len(new_lam) > MAX_TRACKED:
            return None
        if new_lam:  # an eigenvalue coming close to the top: refined from its Ritz vector, with its own P
            lam, X = np.array(new_lam, dtype=np.complex128), np.array(new_x, dtype=np.complex128)  # (N,), (N, d)
            P = _preconditioners(np.broadcast_to(W, (len(lam),) + W.shape), lam)  # (N, d, d)
            tol = RESIDUAL_TOL * float(np.linalg.norm(W))
            if not refine_candidates(W, lam, X, P, tol, MAX_STEPS, SHIFT).all():
                return None
            state.lam, state.X = np.concatenate([state.lam, lam]), np.concatenate([state.X, X])
            state.P = np.concatenate([state.P, P])
            radius = max(radius, float(np.max(np.abs(lam))))
        return self._accounted(state, radius, top)


__all__ = ["SpectralTracker", "TOLERANCE", "RESIDUAL_TOL", "SIGMA_TOL"]
