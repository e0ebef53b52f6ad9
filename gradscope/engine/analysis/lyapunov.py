"""Lyapunov exponents of a stream's step map by the QR method (Benettin et al. 1980; Shimada & Nagashima 1979).

Along a trajectory s_t = F(s_{t-1}, x_t), m tangent vectors Q (D, m) are carried forward and
re-orthonormalised at every step:

    J_t Q_{t-1} = Q_t R_t   (thin QR, R_t upper triangular)       lambda_i = (1/steps) sum_t ln |R_t[i, i]|

over the measured steps, after ``warmup`` steps whose R are discarded (they align Q with the growing
directions).  In float64, in nats per step, averaged over the examples (rows) and sorted descending.
The sum of all D exponents is the volume growth rate, the mean of ln |det J_t| along the same steps.

The thin QR of each step is a Cholesky QR (orthonormal.py: A^T A = R^T R, Q = A R^{-1}, three level-3 BLAS
calls on the tangent block in place), falling back to Householder on a step whose block is too ill-conditioned
for it.  The exponents agree with a Householder loop's to 1e-8 nats per step (tests/engine/test_analysis_speed.py;
the argument is there); those below ln(eps) + 6 (directions dead ReLU units remove) are rounding in either method.

The step is arranged so that its two halves run at once on two threads.  A_t = J_t Q_{t-1} is the block to
factor; the jvp is linear, so the next block is

    A_{t+1} = J_{t+1} Q_t = (J_{t+1} A_t) R_t^{-1}

and J_{t+1} A_t needs A_t only, not R_t.  So while one thread factors A_t (syrk, potrf: R_t and the ln R_ii),
another computes B = J_{t+1} A_t; then the two solve A_{t+1} = B R_t^{-1} for half of the state's coordinates
each (the rows of a right triangular solve are independent).  Measured on the benchmark case (tanh, d = m =
256, one example): the products 0.68 ms a step, syrk + potrf 0.80, the solve 0.67 (docs/performance.md).
The split in two is fixed by the sizes alone (THREADED_FLOPS), so the numbers do not depend on the threads.
A step whose block needs Householder is done in the plain order: Q_t formed, then J_{t+1} Q_t.
"""

from __future__ import annotations

from queue import SimpleQueue
from typing import Any

import numpy as np

from .maps import take_steps
from .orthonormal import gram_cholesky, householder, log_diagonal, solve_right
from .streams import Stream

# a step with fewer product flops (2 N m D^2) runs in one thread: handing work to a thread costs ~50 us (the
# engine's MIN_SHARD_FLOPS; engine.shards, which imports Numba, is imported only when a step is threaded)
THREADED_FLOPS = 2e7


def qr_exponents(stream: Stream, m: int, warmup: int) -> np.ndarray:
    """(m,) the first m exponents of ``stream``'s step map, measured over its steps past ``warmup``."""
    T, N, D = stream.S.shape
    if not 1 <= m <= D:
        raise ValueError(f"the number of exponents must be between 1 and the state size {D}, got {m}")
    if not 0 <= warmup < T:
        raise ValueError(f"warmup must leave steps to measure: warmup = {warmup}, steps in all = {T}")

    def J(t: int, V: np.ndarray) -> np.ndarray:
        """(N, m, D) (J_t V^T)^T, C-contiguous: the tangent vectors of V (N, m, D) carried through step t."""
        with np.errstate(all="ignore"):  # numpy's error state is the thread's own: here, maybe the pool's
            return np.ascontiguousarray(stream.map.jvp(stream.p, take_steps(stream.caches, N, t, t + 1), V))

    pool = None
    halves = [(0, D)]
    if 2.0 * N * m * D * D >= THREADED_FLOPS and D >= 2:
        from ..shards import executor

        pool, halves = executor(), [(0, D // 2), (D // 2, D)]

    def solve(B: np.ndarray, r0: int, r1: int) -> None:
        for n in range(N):
            solve_right(R[n], B[n], r0, r1)

    def look_ahead(t: int, A: np.ndarray, handoff: SimpleQueue, go: SimpleQueue) -> None:
        """In the pool's thread: B = J_{t+1} A_t, handed over; then, when told R_t is trusted, B's second half
        of the coordinates times R_t^{-1}.  One task a step: each hand-over between the threads costs a wake-up."""
        try:
            B = J(t + 1, A)
        except BaseException as error:  # handed over, so the caller never waits for B forever
            handoff.put(error)
            raise
        handoff.put(B)
        if go.get():
            solve(B, *halves[1])

    I = np.broadcast_to(np.eye(D)[:m], (N, m, D))  # (N, m, D) Q_{-1}^T: the first m coordinate directions
    A: Any = J(0, I)  # (N, m, D) A_0^T (None after the last step)
    R = np.empty((N, m, m))  # R_t per example (upper triangles, Fortran order)
    log_r = np.empty((N, m))  # ln R_t[i, i]
    total = np.zeros((N, m))
    handoff: SimpleQueue = SimpleQueue()
    go: SimpleQueue = SimpleQueue()
    with np.errstate(all="ignore"):
        for t in range(T):
            last = t == T - 1
            ahead = None if last or pool is None else pool.submit(look_ahead, t, A, handoff, go)
            factored = np.empty(N, dtype=bool)  # (N,) whether example n's Cholesky factor can be trusted
            for n in range(N):  # R_t: A_t = Q_t R_t
                info = gram_cholesky(A[n], R[n])
                log_r[n], ok = log_diagonal(R[n])
                factored[n] = info == 0 and ok
            trusted = bool(factored.all())
            B = None
            if ahead is not None:
                B = handoff.get()  # (N, m, D) J_{t+1} A_t
                go.put(trusted)
                if isinstance(B, BaseException):
                    ahead.result()  # raises it here
            elif trusted and not last:
                B = J(t + 1, A)
            if not trusted:  # this step in the plain order: Q_t (Householder where needed), then J_{t+1} Q_t
                if ahead is not None:
                    ahead.result()
                for n in range(N):
                    if factored[n]:
                        solve_right(R[n], A[n])
                        continue
                    lr = householder(A[n])
                    if lr is None:
                        return np.full(m, np.nan)  # a NaN or Inf on the trajectory: no exponents, recorded as NaN
                    log_r[n] = lr
                B = None if last else J(t + 1, A)
            elif B is not None:  # A_{t+1} = B R_t^{-1}: the first half of the coordinates here, the rest there
                solve(B, *halves[0])  # all of them without the pool
                if ahead is not None:
                    ahead.result()
            if t >= warmup:
                total += log_r
            A = B
    return np.sort(np.mean(total, axis=0) / (T - warmup))[::-1]
