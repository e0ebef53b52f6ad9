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

import numpy as np

from .params import spectral_stats

RESIDUAL_TOL = 1e-11  # rho: ||W x - lambda x|| / ||W||_F at convergence (backward error of lambda)
SIGMA_TOL = 1e-8  # sigma_max^2: the Kato-Temple bound ||r||^2 / gap on its error, relative, at convergence
GUARD = 8  # vectors of the guard subspace
MARGIN = 1e-2  # guard Ritz values within this share of the top modulus are refined (candidates)
MATCH = 1e-3  # a guard Ritz value this close (relative) to a refined eigenvalue is that eigenvalue
MAX_TRACKED = 4  # more candidates than this (a crowded top) and the block is measured exactly
MAX_STEPS = 10  # residual inverse iteration steps per candidate and preconditioner
SHIFT = 1e-2  # the preconditioner's shift: sigma = lambda (1 + SHIFT)
LANCZOS_STEPS = 8
# The spectral radius |lambda| is then within ~1e-9 (relative) of eigvals' for the matrices of the tests
# (cond(lambda) up to ~1e2); sigma_max within ~1e-12.  TOLERANCE is what the tests assert and the docs state.
TOLERANCE = {"spectral_radius": 1e-8, "sigma_max": 1e-9}


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
    return np.linalg.inv(W - sigma[:, None, None] * np.eye(d))  # (C, d, d)


def _refine(W: np.ndarray, X: np.ndarray, P: np.ndarray, tol: np.ndarray):
    """Residual inverse iteration x <- x - P (W x - lambda x), lambda = x^H W x, for C candidates at once.

    W (C, d, d) real, X (C, d, 1) unit complex, P (C, d, d) complex, tol (C,).  Returns (lambda (C,), X,
    converged (C,) bool); a converged candidate is left as it was when it converged."""
    C = len(X)
    lam = np.zeros(C, dtype=np.complex128)
    done = np.zeros(C, dtype=bool)
    for _ in range(MAX_STEPS):
        Z = W @ np.concatenate([X.real, X.imag], axis=2)  # (C, d, 2): W x in real arithmetic
        Y = Z[:, :, :1] + 1j * Z[:, :, 1:]  # (C, d, 1)
        now = np.sum(X.conj() * Y, axis=(1, 2))  # (C,)
        R = Y - now[:, None, None] * X  # (C, d, 1)
        residual = np.linalg.norm(R, axis=(1, 2))  # (C,)
        lam = np.where(done, lam, now)
        done |= residual <= tol
        if done.all() or not np.all(np.isfinite(residual)):
            break
        X_new = X - P @ R  # (C, d, 1)
        X_new /= np.linalg.norm(X_new, axis=(1, 2), keepdims=True)
        X = np.where(done[:, None, None], X, X_new)
    return lam, X, done


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
        self._blocks: list[_Block | None] | None = None
        self._shape: tuple | None = None
        self._rng = np.random.default_rng(seed)
        self.counts = {"exact": 0, "tracked": 0, "fallback": 0}
        self._stacked: tuple | None = None  # (ids of the candidates' P, those P stacked): no copy per call

    def reset(self) -> None:
        self._blocks = None

    def __call__(self, W_hh: np.ndarray, exact: bool = False) -> tuple[float, float]:
        d = W_hh.shape[1]
        blocks = [np.asarray(W_hh[g * d : (g + 1) * d], dtype=np.float64) for g in range(self.gates)]  # (d, d)
        scales = [float(np.max(np.abs(b))) if b.size else 0.0 for b in blocks]
        if not all(np.isfinite(scales)) or W_hh.shape != self._shape:
            self._blocks, self._shape = None, W_hh.shape
        if not all(np.isfinite(scales)):
            return spectral_stats(W_hh, self.gates)  # (nan, nan)
        if self._blocks is None:
            self._blocks = [None] * self.gates
            exact = True
        usable = [1e-100 < s < 1e100 and d >= 2 for s in scales]  # else spectral_stats' scaling is needed
        tracked = [] if exact else [g for g in range(self.gates) if self._blocks[g] is not None and usable[g]]
        radii = self._radii(blocks, tracked) if tracked else {}
        sigmas = _lanczos_sigma(blocks, self._blocks, tracked) if tracked else {}
        rho = sigma = 0.0
        for g, W in enumerate(blocks):
            if radii.get(g) is not None and sigmas.get(g) is not None:
                self.counts["tracked"] += 1
                rho, sigma = max(rho, radii[g]), max(sigma, sigmas[g])
                continue
            self.counts["exact" if exact else "fallback"] += 1
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
            if out[g] is not None:
                out[g] = self._checked(blocks[g], tol[g], self._blocks[g], out[g], theta[b], G[b] @ Y[b])
        return out

    def _refine_all(self, W: dict, tol: dict, owners: list) -> dict[int, bool]:
        """Refine the candidates [(block, candidate)]; a candidate that does not converge gets a fresh P at its
        best lambda and one more go.  Returns {id(candidate): converged}."""
        converged: dict[int, bool] = {}
        for attempt in range(2):
            if not owners:
                break
            Ws = np.stack([W[g] for g, _ in owners])  # (C, d, d)
            if attempt:
                for (_, c), p in zip(owners, _preconditioners(Ws, np.array([c.lam for _, c in owners]))):
                    c.P = p
            key = tuple(id(c.P) for _, c in owners)  # the stacked P of the last call, while they are the same
            if self._stacked is None or self._stacked[0] != key:
                self._stacked = (key, np.stack([c.P for _, c in owners]))
            X = np.stack([c.x for _, c in owners])[:, :, None]  # (C, d, 1)
            lam, X, done = _refine(Ws, X, self._stacked[1], np.array([tol[g] for g, _ in owners]))
            for k, (_, c) in enumerate(owners):
                c.lam = complex(lam[k]) if lam[k].imag >= 0 else complex(lam[k]).conjugate()
                c.x = X[k, :, 0] if lam[k].imag >= 0 else X[k, :, 0].conj()
                converged[id(c)] = bool(done[k]) and np.isfinite(lam[k])
            owners = [(g, c) for g, c in owners if not converged[id(c)]]
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


def _lanczos_sigma(blocks, states, tracked) -> dict[int, float | None]:
    """sigma_max of the tracked blocks: block Lanczos on W^T W (blocks of 2, so that two nearly equal top
    singular values converge together) from each block's last two top right singular vectors."""
    W = np.stack([blocks[g] for g in tracked])  # (B, d, d)
    Wt = np.swapaxes(W, 1, 2)  # (B, d, d)
    B, d = W.shape[:2]
    m = min(2 * (LANCZOS_STEPS + 1), d)
    Q = np.zeros((B, d, m))  # (B, d, m): orthonormal Krylov basis (zero columns after a breakdown)
    Q[:, :, :2] = np.stack([states[g].v for g in tracked])
    for j in range(2, m, 2):
        U = Wt @ (W @ Q[:, :, j - 2 : j])  # (B, d, 2)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            U -= Q[:, :, :j] @ (np.swapaxes(Q[:, :, :j], 1, 2) @ U)
        for c in range(min(2, m - j)):  # Gram-Schmidt within the block
            u = U[:, :, c]  # (B, d)
            if c:
                u = u - Q[:, :, j] * np.sum(Q[:, :, j] * u, axis=1, keepdims=True)
            norm = np.linalg.norm(u, axis=1, keepdims=True)  # (B, 1)
            Q[:, :, j + c] = np.where(norm > 1e-13, u / np.maximum(norm, 1e-300), 0.0)
    WQ = W @ Q  # (B, d, m)
    T = np.swapaxes(WQ, 1, 2) @ WQ  # (B, m, m) = Q^T W^T W Q
    theta, S = np.linalg.eigh(T)  # ascending
    X = Q @ S[:, :, -2:]  # (B, d, 2): the top two Ritz vectors
    R = Wt @ (W @ X) - X * theta[:, None, -2:]  # (B, d, 2)
    residual = np.linalg.norm(R, axis=(1, 2))  # (B,)
    # Kato-Temple for the top two together: their error is at most ||R||^2 / delta, delta the distance to the
    # rest of the spectrum, estimated by the gap to the third Ritz value
    gap = np.maximum(theta[:, -1] - theta[:, -3], 1e-300)  # (B,)
    out: dict[int, float | None] = {}
    for b, g in enumerate(tracked):
        top = float(theta[b, -1])
        ok = top > 0 and np.isfinite(top) and residual[b] ** 2 / gap[b] <= SIGMA_TOL * top and residual[b] <= 1e-3 * top
        out[g] = float(np.sqrt(top)) if ok else None
        if ok:
            states[g].v = X[b]
    return out


__all__ = ["SpectralTracker", "TOLERANCE", "RESIDUAL_TOL", "SIGMA_TOL"]
