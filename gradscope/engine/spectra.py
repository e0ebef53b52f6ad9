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
sigma_max = sqrt(largest eigenvalue of W^T W):  Lanczos with full reorthogonalisation, LANCZOS_STEPS steps
    from the last top right singular vector (W^T W is symmetric: the Ritz value's error is quadratic in the
    vector's), accepted when ||W^T W v - theta v|| <= SIGMA_TOL theta.

Whenever a check fails (a residual above its tolerance after the allowed steps, a guard Ritz value above the
refined top, more candidates than MAX_TRACKED, a NaN/Inf or an extreme scale) that block is measured exactly
(params.spectral_stats: eigvals / eigvalsh, what every iteration cost before) and the tracker re-seeds from a
full eigendecomposition.  The trainer also asks for the exact figures at iteration 0, at the last iteration (the
exported end of the run) and for a diverged one.  tests/engine/test_spectra.py checks the tracked values against
eigvals / svd within the tolerances below on trained and untrained weights, complex dominant pairs and nearly
equal moduli; docs/metrics.md states them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
LANCZOS_STEPS = (3, 7, 12)  # block Lanczos steps: a first run, then a longer one from where it ended
# The spectral radius |lambda| is then within ~1e-9 (relative) of eigvals' for the matrices of the tests
# (cond(lambda) up to ~1e2); sigma_max within ~1e-12.  TOLERANCE is what the tests assert and the docs state.
TOLERANCE = {"spectral_radius": 1e-8, "sigma_max": 1e-8}


@dataclass
class _Candidate:
    """One eigenvalue near the top (Im >= 0 of a complex pair), its unit eigenvector, and P = (W' - sigma I)^-1
    for a W' of an earlier iteration and a shift sigma just outside lambda: the preconditioner."""

    lam: complex
    x: np.ndarray  # (d,) complex
    P: np.ndarray | None = None  # (d, d) complex


def _preconditioners(W: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """(W_c - sigma_c I)^-1 for each candidate c, sigma_c = lambda_c (1 + SHIFT): (C, d, d) complex.

    The shift sits just outside the eigenvalue (radially), so the inverse stays well conditioned and keeps
    working as W moves (measured: at SHIFT = 1e-2, ~6 steps to the tolerance with a P ten iterations old; at
    SHIFT = 0, a P one iteration old often fails).  An explicit inverse: applied as one batched product."""
    d = W.shape[-1]
    sigma = lam * (1 + SHIFT)  # (C,)
    return np.linalg.inv(W - sigma[:, None, None] * np.eye(d)).astype(np.complex128)  # (C, d, d)


def _led(guard: np.ndarray, candidates: list[_Candidate]) -> np.ndarray:
    """The guard basis (d, p) led by the refined eigenvectors (real and imaginary parts), the rest of it the
    directions of the old guard that they do not already span, most significant first."""
    lead = np.column_stack([part for c in candidates for part in ((c.x.real, c.x.imag) if c.lam.imag else (c.x.real,))])
    L = np.linalg.qr(lead)[0]  # (d, q)
    p, q = guard.shape[1], L.shape[1]
    if q >= p:
        return L[:, :p]
    rest = guard - L @ (L.T @ guard)  # (d, p): what the lead does not span
    U = np.linalg.svd(rest, full_matrices=False)[0]  # (d, p)
    return np.column_stack([L, U[:, : p - q]])


@dataclass
class _Block:
    """What the tracker knows about one d x d block of W_hh between calls."""

    guard: np.ndarray  # (d, GUARD) orthonormal
    candidates: list[_Candidate] = field(default_factory=list)
    v: np.ndarray | None = None  # (d, 2) the top two right singular vectors


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
    candidates = [_Candidate(complex(lam[i]), X[:, i] / np.linalg.norm(X[:, i]), P[c]) for c, i in enumerate(near)]
    _, V = np.linalg.eigh(W.T @ W)  # (d, d)
    return _Block(guard, candidates, V[:, -2:][:, ::-1].copy())


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

    def __call__(self, W_hh: np.ndarray, exact: bool = False) -> tuple[float, float]:
        d = W_hh.shape[1]
        blocks = [np.asarray(W_hh[g * d : (g + 1) * d], dtype=np.float64) for g in range(self.gates)]  # (d, d)
        scales = [float(np.max(np.abs(b))) if b.size else 0.0 for b in blocks]
        if not all(np.isfinite(scales)) or W_hh.shape != self._shape:
            self._blocks, self._shape = [], W_hh.shape
        if not all(np.isfinite(scales)):
            return spectral_stats(W_hh, self.gates)  # (nan, nan)
        if not self._blocks:
            self._blocks = [None] * self.gates
            exact = True
        usable = [1e-100 < s < 1e100 and d >= 2 for s in scales]  # else spectral_stats' scaling is needed
        tracked = [] if exact else [g for g in range(self.gates) if self._blocks[g] is not None and usable[g]]
        radii = self._radii(blocks, tracked) if tracked else {}
        sigmas = _lanczos_sigma(blocks, self._blocks, tracked) if tracked else {}
        rho = sigma = 0.0
        for g, W in enumerate(blocks):
            radius, top = radii.get(g), sigmas.get(g)
            if radius is not None and top is not None:
                self.counts["tracked"] += 1
                rho, sigma = max(rho, radius), max(sigma, top)
                continue
            self.counts["exact" if exact or not usable[g] else "fallback"] += 1
            r, s = spectral_stats(W)
            rho, sigma = max(rho, r), max(sigma, s)
            self._blocks[g] = _seed(W, self._rng) if usable[g] else None
        return rho, sigma

    def _radii(self, blocks, tracked) -> dict[int, float | None]:
        """Every tracked block's candidates refined (all at once), then one guard step for all of them."""
        owners = [(g, c) for g in tracked for c in self._blocks[g].candidates]
        tol = {g: RESIDUAL_TOL * float(np.linalg.norm(blocks[g])) for g in tracked}
        converged = self._refine_all(blocks, tol, owners)
        out: dict[int, float | None] = {}
        guards = []
        for g in tracked:
            state = self._blocks[g]
            ok = bool(state.candidates) and all(converged[id(c)] for c in state.candidates)
            out[g] = max(abs(c.lam) for c in state.candidates) if ok else None
            # the refined eigenvectors lead the guard basis: its Ritz values for them are then exact
            guards.append(_led(state.guard, state.candidates) if ok else state.guard)
        W = np.stack([blocks[g] for g in tracked])  # (B, d, d)
        G = np.linalg.qr(W @ np.linalg.qr(np.stack(guards))[0])[0]  # (B, d, p): one subspace-iteration step
        H = np.swapaxes(G, 1, 2) @ (W @ G)  # (B, p, p): Rayleigh-Ritz
        theta, Y = np.linalg.eig(H)  # (B, p), (B, p, p)
        for b, g in enumerate(tracked):
            self._blocks[g].guard = G[b]
            radius = out[g]
            if radius is not None:
                out[g] = self._checked(blocks[g], tol[g], self._blocks[g], radius, theta[b], G[b] @ Y[b])
        return out

    def _refine_all(self, W: dict, tol: dict, owners: list) -> dict[int, bool]:
        """Refine the candidates [(block, candidate)]; a candidate that does not converge gets a fresh P at its
        best lambda and one more go.  Returns {id(candidate): converged}."""
        from .spectra_kernels import refine_eigenpair

        converged: dict[int, bool] = {}
        for g, c in owners:
            for attempt in range(2):
                if attempt:
                    c.P = _preconditioners(W[g][None], np.array([c.lam]))[0]
                x0 = np.ascontiguousarray(c.x, dtype=np.complex128)  # eig's vectors are real when all lambda are
                lam, x, done, _ = refine_eigenpair(W[g], x0, c.P, tol[g], MAX_STEPS)
                lam = complex(lam)
                c.lam, c.x = (lam, x) if lam.imag >= 0 else (lam.conjugate(), x.conj())
                if done:
                    break
            converged[id(c)] = bool(done) and np.isfinite(c.lam)
        return converged

    def _checked(self, W, tol, state: _Block, radius: float, theta: np.ndarray, ritz: np.ndarray) -> float | None:
        """The block's radius once every guard Ritz value near the top is accounted for, or None (exact)."""
        top = max(radius, float(np.max(np.abs(theta))))
        new = []
        for j in np.flatnonzero(np.abs(theta) >= (1 - MARGIN) * top):
            t = complex(theta[j])
            if t.imag < 0 or min(abs(c.lam - t) for c in state.candidates) <= MATCH * top:
                continue  # its conjugate stands for the pair / it is one we refine
            x = ritz[:, j] / np.linalg.norm(ritz[:, j])
            new.append(_Candidate(t if t.imag > 0 else complex(t.real), x if t.imag > 0 else x.real.astype(complex)))
        if len(state.candidates) + len(new) > MAX_TRACKED:
            return None
        if new:  # an eigenvalue coming close to the top: refined from its Ritz vector, with its own P
            P = _preconditioners(np.broadcast_to(W, (len(new),) + W.shape), np.array([c.lam for c in new]))
            for c, p in zip(new, P):
                c.P = p
            converged = self._refine_all({0: W}, {0: tol}, [(0, c) for c in new])
            if not all(converged.values()):
                return None
            state.candidates += new
            radius = max(radius, max(abs(c.lam) for c in new))
        if top > radius * (1 + MARGIN):
            return None  # the guard sees more than the candidates: something was missed
        kept: list[_Candidate] = []  # drop the duplicates (two converged to one eigenvalue) and the fallen
        for c in sorted(state.candidates, key=lambda c: -abs(c.lam)):
            if abs(c.lam) >= (1 - MARGIN) * radius and all(abs(c.lam - k.lam) > 1e-8 * radius for k in kept):
                kept.append(c)
        state.candidates = kept
        return radius


def _lanczos_top(W, Wt, V, steps):
    """(the three largest Ritz values of W^T W, descending; ||A X - X Theta||_F of the top two; X (d, 2) their
    vectors) from the block Krylov space of V."""
    from .spectra_kernels import lanczos_basis  # Numba: imported when something is tracked, not with the trainer

    Q, Z = lanczos_basis(W, Wt, V, steps)  # (n, d), (n, d)
    n = len(Q)
    theta, S = np.linalg.eigh(Z @ Z.T)  # ascending
    top = np.zeros(3)
    top[: min(3, n)] = theta[::-1][:3]
    X = Q.T @ S[:, ::-1][:, :2]  # (d, 2): the top Ritz vector first
    R = Wt @ (W @ X) - X * top[: X.shape[1]]  # (d, 2)
    if X.shape[1] < 2:  # a one-dimensional space: keep V's second direction for the next call
        X = np.column_stack([X, V[:, 1]])
    return top, float(np.linalg.norm(R)), X


def _lanczos_sigma(blocks, states, tracked) -> dict[int, float | None]:
    """sigma_max of the tracked blocks: block Lanczos on W^T W (blocks of 2, so that two nearly equal top
    singular values converge together) from each block's last two top right singular vectors."""
    out: dict[int, float | None] = {}
    for g in tracked:
        W = blocks[g]
        Wt = np.ascontiguousarray(W.T)
        X = states[g].v
        for steps in LANCZOS_STEPS:  # a short run first; most blocks need no more, the others restart from it
            theta, residual, X = _lanczos_top(W, Wt, X, steps)
            # Kato-Temple for the top two together: their error is at most ||R||^2 / delta, delta the distance
            # to the rest of the spectrum, estimated by the gap to the third Ritz value
            top, gap = float(theta[0]), max(float(theta[0] - theta[2]), 1e-300)
            ok = top > 0 and np.isfinite(top) and residual**2 / gap <= SIGMA_TOL * top and residual <= 1e-3 * top
            if ok:
                break
        out[g] = float(np.sqrt(top)) if ok else None
        if ok:
            states[g].v = X
    return out


__all__ = ["SpectralTracker", "TOLERANCE", "RESIDUAL_TOL", "SIGMA_TOL"]
