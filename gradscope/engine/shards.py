"""How a pass is split over the batch and run on threads: shards, chunks, the thread pool.

Examples never interact in BPTT, so a big enough pass splits its batch into shards, each running the whole
step kernel on its rows, and adds their gradients and per-step sums in shard order.  How many shards there are
fixes the bits of the result; it is a setting (``shards``, DEFAULT_SHARDS unless told), never the machine's
CPU count, so an experiment gives the same numbers on every machine.  How many threads run them at once
changes only the speed: thread w runs shards w, w + threads, ...
"""

from __future__ import annotations

import itertools
import os
import threading

import numba

from .cells import cell
from .params import DEFAULT_SHARDS, ModelSpec

MAX_THREADS = 8  # threads a pass uses at most (the shards beyond run in turn)
CHUNK_ROWS = 1024  # backward chunk: about this many (t, b) rows, so chunk buffers stay small
MIN_SHARD_ROWS = 8  # examples per shard at least: below, BLAS's small-matrix overheads dominate
MIN_SHARD_FLOPS = 2e7  # a pass with fewer FLOPs runs whole (handing a shard to a thread costs ~50 us)


def chunk_steps(T: int, B: int) -> int:
    """Steps per backward chunk: about CHUNK_ROWS (t, b) rows, at least 1, at most T."""
    return max(1, min(T, -(-CHUNK_ROWS // B)))


def pass_flops(spec: ModelSpec, T: int, B: int) -> float:
    """Multiply-adds x 2 of a pass's matrix products (forward, recurrence both ways, weight gradients)."""
    G, d, k = cell(spec.cell).blocks, spec.hidden_size, spec.output_size
    per_row = spec.directions * sum(3 * G * d * (spec.layer_input_size(l) + d) for l in range(spec.layers))
    per_row += 3 * spec.readout_size * k
    return 2.0 * T * B * per_row


# ------------------------------------------------------------------------------------- threads
def default_threads() -> int:
    """Threads a pass may use unless told: Numba's setting (NUMBA_NUM_THREADS; by default every CPU)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_kernel_blas = None  # threadpoolctl's controllers of the kernels' BLAS, looked up once
_controller = None  # threadpoolctl's ThreadpoolController of the process, made once


def blas_controller():
    """threadpoolctl's ThreadpoolController, made once per process and shared (with the trainer's
    small_linear_algebra): listing the libraries resolves the path of every one the process has loaded, ~50 ms."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController  # ~25 ms to import: only once something trains

        _controller = ThreadpoolController()
    return _controller


def kernel_blas_controllers() -> list:
    """threadpoolctl's handles on the BLAS library the kernels call: SciPy's (Numba calls it through
    scipy.linalg.cython_blas), told from NumPy's by the folder it was loaded from; every BLAS library if
    none is SciPy's own (a system install where both share one).  Empty without threadpoolctl."""
    global _kernel_blas
    if _kernel_blas is None:
        try:
            blas = [lib for lib in blas_controller().lib_controllers if lib.user_api == "blas"]
        except Exception:  # no threadpoolctl, or a library it cannot handle  # noqa: BLE001
            blas = []
        scipy_own = [lib for lib in blas if "scipy" in os.path.basename(os.path.dirname(str(lib.filepath)))]
        _kernel_blas = scipy_own or blas
    return _kernel_blas


def kernel_blas_threads() -> int:
    """Threads of the BLAS library the kernels call, as set now (1 if it cannot be told).

    GradScope sets it to 1 (gradscope/__init__.py).  A user who raises it gets parallel GEMMs instead of
    shards, not both: two shards each waking a pool of busy-waiting BLAS threads would fight for the cores.
    """
    try:
        return max([1] + [int(lib.num_threads) for lib in kernel_blas_controllers()])
    except Exception:  # noqa: BLE001
        return 1


def shard_rows(spec: ModelSpec, T: int, B: int, shards: int | None = None) -> list[tuple[int, int]]:
    """How a pass splits its batch: [(b0, b1), ...], as many shards as asked (DEFAULT_SHARDS).

    Examples never interact in BPTT: each shard runs the whole pass on its rows, with the loss weighted by
    the WHOLE batch's 1/B, and the shards' gradients and per-step sums add up to the batch's.  One shard
    (the whole batch) when ``shards`` is 1, when a shard would hold fewer than MIN_SHARD_ROWS examples, or
    when the pass is too small to gain from threads (MIN_SHARD_FLOPS).  The split depends only on these
    numbers, so the same settings give bit-identical results whatever the threads that compute them.
    """
    shards = DEFAULT_SHARDS if shards is None else max(1, int(shards))
    shards = min(shards, B // MIN_SHARD_ROWS)
    if shards <= 1 or pass_flops(spec, T, B) < MIN_SHARD_FLOPS:
        return [(0, B)]
    bounds = [B * s // shards for s in range(shards + 1)]
    return list(itertools.pairwise(bounds))


_pool = None
_pool_lock = threading.Lock()


def executor():
    """The threads that run the shards a pass does not run in its own thread."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            workers = max(1, min(MAX_THREADS, os.cpu_count() or 1) - 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradscope-shard")
        return _pool


def shutdown_threads() -> None:
    """End the shard threads (idle between passes); the next threaded pass starts new ones.  For programs
    that tear down in order (the app, before its QApplication goes)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)
