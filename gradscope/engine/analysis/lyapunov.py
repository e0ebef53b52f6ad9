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

and J_{t+1} A_t needs A_t only, not R_t.  So while this thread factors A_t (potrf of its Gram matrix: R_t and
the ln R_ii), a helper thread computes B = J_{t+1} A_t; then the two solve A_{t+1} = B R_t^{-1}, each for its
own state coordinates (the rows of a right triangular solve are independent), and this thread sums the Gram
matrix of A_{t+1} over its rows as they are solved, then over the helper's (syrk is a sum over rows).
Measured on the benchmark case (tanh, d = m = 256, one example, 2026-12-04): the product 0.75 ms a step,
syrk 0.43, potrf 0.27, the solve 0.70 in two parts; 1.2 ms a step on the two threads, 2.0 on one.
The split in two is fixed by the sizes alone (THREADED_FLOPS), so the numbers do not depend on the threads.
A step whose block needs Householder is done in the plain order: Q_t formed, then J_{t+1} Q_t.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue
from typing import Any

import numpy as np

from .maps import take_steps
from .orthonormal import cholesky, cholesky_qr, gram_rows, log_diagonal, orthonormalise, solve_right
from .streams import Stream

# a step with fewer product flops (2 N m D^2) runs in one thread: each of a threaded step's two meetings
# costs a wake-up (~50 us), as much as ~2.5e6 flops of the step's products (the engine's MIN_SHARD_FLOPS)
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
        with np.errstate(all="ignore"):  # numpy's error state is the thread's own: here, maybe the helper's
            return np.ascontiguousarray(stream.map.jvp(stream.p, take_steps(stream.caches, N, t, t + 1), V))

    I = np.broadcast_to(np.eye(D)[:m], (N, m, D))  # (N, m, D) Q_{-1}^T: the first m coordinate directions
    A0 = J(0, I)  # (N, m, D) A_0^T
    if 2.0 * N * m * D * D >= THREADED_FLOPS and D >= 2 and T >= 2:
        return _two_threads(J, A0, T, warmup)
    return _one_thread(J, A0, T, warmup)


def _one_thread(J, A: np.ndarray, T: int, warmup: int) -> np.ndarray:
    """The QR method in the plain order: A_t factored, Q_t formed, A_{t+1} = J_{t+1} Q_t."""
    N, m, _ = A.shape
    total = np.zeros((N, m))
    with np.errstate(all="ignore"):
        for t in range(T):
            log_r = cholesky_qr(A)  # (N, m); A now holds Q_t^T
            if log_r is None:
                return np.full(m, np.nan)  # a NaN or Inf on the trajectory: no exponents, recorded as NaN
            if t >= warmup:
                total += log_r
            if t < T - 1:
                A = J(t + 1, A)
    return np.sort(np.mean(total, axis=0) / (T - warmup))[::-1]


_STOP = object()  # told to the helper thread when the caller leaves early (NaN on the trajectory, an error)


def _two_threads(J, A: np.ndarray, T: int, warmup: int) -> np.ndarray:
    """The QR method on this thread and a helper of its own for the call, two meetings a step.

    Step t, A_t known to both, its Gram matrix G_t = A_t^T A_t computed here:
        here:    R_t = chol(G_t), ln R_ii  | meet: R_t, B |  rows [0, k) of B R_t^{-1}, their part of G_{t+1} | meet
        helper:  B = J_{t+1} A_t           |              |  rows [k, D) of B R_t^{-1}                        |
    after which B is A_{t+1} and this thread adds the helper's rows to G_{t+1}.  At each meeting a thread first
    hands over what it has, then waits for the other's, so only the earlier one to arrive waits (a wake-up costs
    ~50 us, a step ~1.2 ms).  At the second, the helper waits only if this thread's rows are not solved yet, and
    this thread needs the helper's only after its own part of G_{t+1} (syrk is a sum over rows).  The helper is
    a thread of the call's own, not the engine's shard pool: holding a pool thread for the whole trajectory
    would stall every other pass of the process that needs one.  A step whose factor is not trusted is done
    here in the plain order (Q_t by Householder where needed, then J_{t+1} Q_t) while the helper waits.
    """
    N, m, D = A.shape
    # this thread's share of the solve: the helper starts its rows a wake-up (~50 us) before this thread hears
    # of B, and should not wait for these at the second meeting (7/16: 2.35-2.39 s on the benchmark case, 1/2:
    # 2.45-2.64 s, 11/32: 2.46-2.48 s)
    k = D * 7 // 16
    G = np.empty((2, N, m, m))  # G_t, then R_t in place (upper triangles, Fortran order); two: t and t + 1
    log_r, total = np.empty((N, m)), np.zeros((N, m))
    to_helper: SimpleQueue = SimpleQueue()  # R_t (or False: not trusted), then A_{t+1}; or _STOP
    to_here: SimpleQueue = SimpleQueue()  # B, then "solved"; or the helper's exception

    def helper(A: Any) -> None:
        try:
            for t in range(T - 1):
                B = J(t + 1, A)  # (N, m, D) J_{t+1} A_t
                to_here.put(B)
                R = to_helper.get()
                if R is _STOP:
                    return
                if R is not False:
                    for n in range(N):
                        solve_right(R[n], B[n], k, D)
                to_here.put(True)
                A = to_helper.get()
                if A is _STOP:
                    return
        except BaseException as error:  # noqa: BLE001  handed over, so the caller never waits forever
            to_here.put(error)

    def meet() -> Any:
        got = to_here.get()
        if isinstance(got, BaseException):
            raise got
        return got

    def gram(V: np.ndarray, out: np.ndarray, r0: int, r1: int, add: bool) -> None:
        for n in range(N):
            gram_rows(V[n], out[n], r0, r1, add)

    thread = threading.Thread(target=helper, args=(A,), name="gradscope-lyapunov", daemon=True)
    try:
        thread.start()  # inside the try: a Ctrl-C right after it still tells the helper to stop
        with np.errstate(all="ignore"):
            gram(A, G[0], 0, k, add=False)
            gram(A, G[0], k, D, add=True)  # the rows in the same two parts as every later step's
            for t in range(T):
                R, G_next = G[t % 2], G[(t + 1) % 2]
                factored = np.empty(N, dtype=bool)  # (N,) whether example n's Cholesky factor can be trusted
                for n in range(N):
                    info = cholesky(R[n])
                    log_r[n], ok = log_diagonal(R[n])
                    factored[n] = info == 0 and ok
                if t == T - 1:
                    if not factored.all() and not orthonormalise(A, R, log_r, factored):
                        return np.full(m, np.nan)
                else:
                    trusted = bool(factored.all())
                    to_helper.put(R if trusted else False)  # before waiting: the helper may be done with B
                    B = meet()  # J_{t+1} A_t
                    if trusted:  # A_{t+1} = B R_t^{-1}: the first k coordinates here
                        for n in range(N):
                            solve_right(R[n], B[n], 0, k)
                        to_helper.put(B)
                        gram(B, G_next, 0, k, add=False)
                        meet()  # the helper's rows solved
                    else:  # the plain order
                        meet()
                        if not orthonormalise(A, R, log_r, factored):
                            return np.full(m, np.nan)
                        B = J(t + 1, A)
                        to_helper.put(B)
                        gram(B, G_next, 0, k, add=False)
                    gram(B, G_next, k, D, add=True)
                if t >= warmup:
                    total += log_r
                if t < T - 1:
                    A = B
    finally:
        to_helper.put(_STOP)  # stale if the helper already finished: it is the call's own queue
        if thread.ident is not None:  # started
            thread.join()
    return np.sort(np.mean(total, axis=0) / (T - warmup))[::-1]
