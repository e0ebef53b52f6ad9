"""Where a bidirectional layer's time goes beyond twice a unidirectional one (issue 14's 2.1x target).

    python benchmarks/profile_bidirectional.py                  # the six cells bench_engine found over 2.1x
    python benchmarks/profile_bidirectional.py --all            # every cell at the four sizes
    python benchmarks/profile_bidirectional.py --repeats 200
    python benchmarks/profile_bidirectional.py --phases         # one shard's kernel, one thread, and its readout

For each case, GradScope alone (the peers of bench_engine.py are not run), interleaved uni / bi blocks:
- ``uni``, ``bi``: the median ms of ``engine.bptt`` of one layer (the bench_engine model), on 2 threads;
- ``kernel``: the median ms inside the step kernel calls (the compiled pass of every shard, as the thread that
  runs shard 0 sees it), so ``bptt - kernel`` is the Python around them (buffers, sums, metrics dict);
- ``1 thr``: the same pass on one thread (its shards in turn): what the second core buys;
- the bidirectional pass's own extra kernels (reverse_rows of x, add_reversed and reverse_rows of Y, the
  readout's column split / join) timed alone on arrays of a shard's shape.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gradscope  # noqa: E402,F401  (GradScope's thread defaults before NumPy loads)

from peers import Case, make_data  # noqa: E402

FAILING = [
    ("rnn-tanh", (1, 100, 8, 32)),
    ("gru", (1, 100, 8, 32)),
    ("lstm", (32, 100, 32, 128)),
    ("rnn-relu", (32, 200, 64, 256)),
    ("rnn-tanh", (32, 200, 64, 256)),
    ("rnn-relu", (64, 500, 64, 512)),
]
SIZES = [(1, 100, 8, 32), (32, 100, 32, 128), (32, 200, 64, 256), (64, 500, 64, 512)]
CELLS = ["rnn-relu", "rnn-tanh", "lstm", "gru"]


class KernelClock:
    """Wraps driver.step / driver.bidirectional_step: the time of each call, in the thread that made it."""

    def __init__(self):
        from gradscope.engine import driver

        self.driver, self.calls = driver, []
        self.originals = {name: getattr(driver, name) for name in ("step", "bidirectional_step")}
        for name, kernel in self.originals.items():
            setattr(driver, name, self.timed(kernel))

    def timed(self, kernel):
        def call(*args):
            t0 = time.perf_counter()
            kernel(*args)
            self.calls.append(time.perf_counter() - t0)

        return call


def median_ms(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def model(case: Case, bidirectional: bool):
    """The benchmark's own model on the case's weights and batch (bench_engine.GradScopeStep), and a pass of it."""
    from bench_engine import GradScopeStep

    from gradscope.engine import bptt

    g = GradScopeStep(case, *make_data(case), bidirectional=bidirectional)

    def run(threads=2):
        return bptt(g.spec, g.params, g.x, g.target, g.mask, "mse", workspace=g.workspace, threads=threads)

    return g.spec, run


def extras_ms(case: Case, shard_B: int, repeats: int) -> dict:
    """The bidirectional pass's copies, alone, on a shard's arrays (the kernels' helpers have no CPython
    wrapper: each is called from a small jitted function)."""
    import numba

    from gradscope.engine import streams

    reverse_rows = numba.njit(lambda a, b0, B, out: streams.reverse_rows(a, b0, B, out))
    add_reversed = numba.njit(lambda a, out: streams.add_reversed(a, out))
    split_columns = numba.njit(lambda W, W_s: streams.split_columns(W, W_s))
    join_columns = numba.njit(lambda W_s, W: streams.join_columns(W_s, W))

    dt = np.dtype(case.dtype)
    T, n, d, k = case.T, case.n, case.d, case.k
    x = np.ones((T, shard_B, n), dt)
    X_rev = np.empty_like(x)
    Y = np.ones((T, shard_B, k), dt)
    Y_r = np.ones_like(Y)
    W = np.ones((k, 2 * d), dt)
    W_s = np.empty((2, k, d), dt)
    return {
        "reverse x": median_ms(lambda: reverse_rows(x, 0, shard_B, X_rev), repeats),
        "add_reversed Y": median_ms(lambda: add_reversed(Y_r, Y), repeats),
        "reverse dY": median_ms(lambda: reverse_rows(Y, 0, shard_B, Y_r), repeats),
        "split+join W_yh": median_ms(lambda: (split_columns(W, W_s), join_columns(W_s, W)), repeats),
    }


def profile(cell: str, size: tuple, repeats: int, clock: KernelClock) -> str:
    case = Case(cell, *size)
    runs = {bi: model(case, bi) for bi in (False, True)}
    for _, run in runs.values():  # compile / allocate
        run()
        run(threads=1)
    out = {}
    for bi, (_, run) in runs.items():
        total, kernel, one = [], [], []
        for _ in range(3):  # interleaved blocks
            total.append(median_ms(run, repeats))
            clock.calls.clear()
            median_ms(run, repeats)
            shards = run().extras["shards"]
            kernel.append(float(np.median(clock.calls)) * 1e3)
            one.append(median_ms(lambda run=run: run(threads=1), repeats))
        out[bi] = (np.median(total), np.median(kernel), np.median(one), shards)
    (u, uk, u1, s), (b, bk, b1, _) = out[False], out[True]
    extras = extras_ms(case, case.B // s, repeats)
    extra = ", ".join(f"{k} {v:.3f}" for k, v in extras.items())
    return (
        f"{cell:9s} {size!s:20s} shards {s}  uni {u:8.3f} ms (kernel {uk:8.3f}, 1 thr {u1:8.3f})  "
        f"bi {b:8.3f} ms (kernel {bk:8.3f}, 1 thr {b1:8.3f})  bi/uni {b / u:.2f}x, kernels {bk / uk:.2f}x, "
        f"1 thr {b1 / u1:.2f}x  |  per shard, ms: {extra}"
    )


class KernelArgs:
    """The arguments of the step kernel calls a pass makes (driver.step / driver.bidirectional_step)."""

    def __init__(self):
        from gradscope.engine import driver

        self.driver, self.calls = driver, {}
        self.originals = {name: getattr(driver, name) for name in ("step", "bidirectional_step")}

    def capture(self, run):
        def keep(name):
            def call(*args):
                self.calls.setdefault(name, []).append(args)
                self.originals[name](*args)

            return call

        for name in self.originals:
            setattr(self.driver, name, keep(name))
        try:
            run(threads=1)
        finally:
            for name, kernel in self.originals.items():
                setattr(self.driver, name, kernel)


class Partner:
    """A second thread that runs one call when asked and keeps the CPU time it took (shard 1 of a pair)."""

    def __init__(self):
        import threading

        self.go, self.done, self.job, self.cpu = threading.Event(), threading.Event(), None, 0.0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            self.go.wait()
            self.go.clear()
            c0 = time.thread_time()
            self.job()
            self.cpu = time.thread_time() - c0
            self.done.set()

    def pair(self, first, second) -> tuple[float, float]:
        """first() here and second() in the partner at once: (wall ms, CPU ms of both threads)."""
        self.job = second
        self.done.clear()
        t0 = time.perf_counter()
        self.go.set()
        c0 = time.thread_time()
        first()
        cpu = time.thread_time() - c0
        self.done.wait()
        return (time.perf_counter() - t0) * 1e3, (cpu + self.cpu) * 1e3


def _phase_kernels(A: dict, U: dict):
    """Compiled callers of the pieces of the two step kernels (one layer): the forward of a stream, the
    unidirectional readout chunk by chunk (readout_loss, with its G) and the bidirectional one (without its G)."""
    import numba

    from gradscope.engine import readout, step, streams

    @numba.njit
    def forward(cell, act, X, b0, W_hx, P_f, b_h, b_hh, stage, A, S, H, zero, U, m):
        step.layer_forward(cell, act, X, b0, W_hx, P_f, b_h, b_hh, stage, A, S, H, zero, U, m, zero, zero, False)

    @numba.njit
    def uni_readout(H, W_yh, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, Y, loss_t, dW_yh, dby64, G, chunk):
        t1 = H.shape[0]
        while t1 > 0:  # as step.step's backward: chunks from the end
            t0 = max(0, t1 - chunk)
            Tc = t1 - t0
            readout.readout_loss(
                H[t0:t1], W_yh, b_y, target_f[t0:t1], target_i[t0:t1], mask[t0:t1], b0, loss_kind, inv_B,
                Y[:Tc], loss_t[t0:t1], dW_yh, dby64, G[:Tc],
            )  # fmt: skip
            t1 = t0

    bi_readout = numba.njit(lambda *a: streams.bidirectional_readout(*a))
    reverse_rows = numba.njit(lambda x, b0, B, out: streams.reverse_rows(x, b0, B, out))

    def stream(D, r=None):
        at = (lambda a: a[0]) if r is None else (lambda a: a[0, r])
        X, b0 = (D["x"], D["b0"]) if r != 1 else (D["X_rev"], 0)
        W_hx = D["W_hx0"] if r is None else D["W_hx0"][r]
        M = D["M"][0 if r is None else r]
        keys = ("P_f", "b_h", "b_hh")
        head = (D["cell"], D["act"], X, b0, W_hx, *(at(D[k]) for k in keys), D["stage"])
        return head + (at(D["A"]), at(D["S"]), at(D["H"]), D["zero"], D["U"], M)

    B = A["H"].shape[3]
    keys = ("W_yh", "b_y", "target_f", "target_i", "mask", "b0", "loss_kind", "inv_B", "Y", "loss_t", "dW_yh")
    uni_args = (U["H"][0], *(U[k] for k in keys), U["dby64"], U["G"], U["chunk"])
    keys = ("W_s", "b_y", "target_f", "target_i", "mask", "b0", "loss_kind", "inv_B", "Y", "Y_r", "loss_t", "dW_s")
    bi_args = (A["H"][0, 0], A["H"][0, 1], *(A[k] for k in keys), A["dby64"])
    return {
        "uni forward": lambda: forward(*stream(U)),
        "uni readout": lambda: uni_readout(*uni_args),
        "bi forward": lambda: (
            reverse_rows(A["x"], A["b0"], B, A["X_rev"]),
            forward(*stream(A, 0)),
            forward(*stream(A, 1)),
        ),
        "bi readout": lambda: bi_readout(*bi_args),
    }


def phases(cell: str, size: tuple, repeats: int, partner: Partner) -> str:
    """The step kernels of a one-layer pass taken apart, in CPU time (thread_time: what the kernel did, not
    how long the machine's other work kept it waiting; medians of interleaved calls):
    shard 0's kernel alone (uni, bi) and its pieces (forward, readout, and the rest: the backward), then both
    shards' kernels at once on two threads, as a pass runs them (wall and CPU of both threads)."""
    import inspect

    from gradscope.engine import step, streams

    case = Case(cell, *size)
    args = KernelArgs()
    for bi in (False, True):
        args.capture(model(case, bi)[1])
    uni, bi = args.calls["step"], args.calls["bidirectional_step"]
    U = dict(zip(inspect.signature(step.step.py_func).parameters, uni[0]))
    A = dict(zip(inspect.signature(streams.bidirectional_step.py_func).parameters, bi[0]))
    runs = {"uni": lambda: step.step(*uni[0]), "bi": lambda: streams.bidirectional_step(*bi[0])}
    runs |= _phase_kernels(A, U)
    for run in runs.values():
        run()
    cpu: dict = {key: [] for key in runs}
    for _ in range(max(repeats, 5)):
        for key, run in runs.items():
            c0 = time.thread_time()
            run()
            cpu[key].append((time.thread_time() - c0) * 1e3)
    t = {key: float(np.median(v)) for key, v in cpu.items()}
    pairs = {}
    if len(uni) > 1:
        both = {"uni": (step.step, uni), "bi": (streams.bidirectional_step, bi)}
        got: dict = {key: [] for key in both}
        for _ in range(max(repeats, 5)):
            for key, (kernel, calls) in both.items():
                first, second = (lambda k=kernel, a=calls[0]: k(*a)), (lambda k=kernel, a=calls[1]: k(*a))
                got[key].append(partner.pair(first, second))
        pairs = {key: np.median(np.array(v), axis=0) for key, v in got.items()}
    back = {k: t[k] - t[f"{k} forward"] - t[f"{k} readout"] for k in ("uni", "bi")}
    line = (
        f"{cell:9s} {size!s:20s} shard of {U['H'].shape[2]} alone, CPU ms: uni {t['uni']:8.3f} = forward "
        f"{t['uni forward']:.3f} + readout {t['uni readout']:.3f} (with G) + rest {back['uni']:.3f};  "
        f"bi {t['bi']:8.3f} = forward {t['bi forward']:.3f} + readout {t['bi readout']:.3f} (without its G) + rest "
        f"{back['bi']:.3f};  bi/uni {t['bi'] / t['uni']:.3f}x, forward {t['bi forward'] / t['uni forward']:.2f}x"
    )
    if pairs:
        (uw, uc), (bw, bc) = pairs["uni"], pairs["bi"]
        line += (
            f"  |  both shards at once: wall uni {uw:.3f} bi {bw:.3f} ms = {bw / uw:.3f}x, CPU {bc / uc:.3f}x "
            f"(CPU/wall {uc / uw:.2f}, {bc / bw:.2f}: 2 when the two threads really ran together)"
        )
    return line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every cell at the four sizes")
    parser.add_argument("--repeats", type=int, default=0, help="steps per block (default: ~0.3 s per block)")
    parser.add_argument("--phases", action="store_true", help="one shard's kernel on one thread, and its readout")
    args = parser.parse_args(argv)
    cases = [(c, s) for s in SIZES for c in CELLS] if args.all else FAILING
    clock = None if args.phases else KernelClock()
    partner = Partner() if args.phases else None
    print(f"load {open('/proc/loadavg').read().split()[0]}", flush=True)
    for cell, size in cases:
        B, T, n, d = size
        repeats = args.repeats or int(np.clip(3e8 / (B * T * d * d * 8), 3, 300))
        print(phases(cell, size, repeats, partner) if partner else profile(cell, size, repeats, clock), flush=True)
    print(f"load {open('/proc/loadavg').read().split()[0]}", flush=True)


if __name__ == "__main__":
    main()
