"""The analysis' speed (engine/analysis) against a plain NumPy loop of the same algorithm, measured alternately
in one process on one BLAS thread per thread (the trainer's setting: engine.trainer.small_linear_algebra).
Ours runs a big enough step on the engine's 2 threads (lyapunov.py: the next step's products while this one is
factored); so the full-spectrum loop is timed twice, with NumPy's BLAS on 1 and on 2 threads (SciPy's, which
the loop does not use, kept at 1 so no idle pool spins beside it), and the faster of the two is the peer.  The
long-lag norms run their batch as 2 shards on the engine's 2 threads, as the trainer runs a batch; their loop
is single-threaded NumPy (its per-example products are too small for a second BLAS thread to pay).

    python benchmarks/bench_analysis.py                 # the issue's cases, 3 repeats; results/analysis.json
    python benchmarks/bench_analysis.py --repeats 1 --steps 300
    python benchmarks/bench_analysis.py --skip-long-lag     # the two exponent targets only (~1 min)

Each line prints the target, our time, the loop's, the ratio and "met" or "NOT met", with the load average
(the machine is shared: ratios measured in the same run are what count).

Cases (tanh RNN, Var(W_hh) = 4 / d, autonomous, from h_{-1} ~ N(0, 1)):
    exponents m = 256, d = 256 over STEPS steps   engine.analysis.qr_exponents  vs  h = tanh(W h); Q, R = qr(J Q)
    exponents m = 10,  d = 256 over STEPS steps   the same with 10 tangent vectors
    long-lag norms at (B, T, d) = (16, 100, 256)  engine.analysis.jacobian_norms  vs  P = P J (dense J), then
                                                  np.linalg.norm(P, 2) and the Frobenius norm of every product
The loop's exponents and norms are compared with ours (they must agree to 1e-9).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradscope.engine import InitSpec, ModelSpec, init_params  # noqa: E402
from gradscope.engine.analysis import jacobian_norms, qr_exponents, stack_streams  # noqa: E402


def numpy_exponents(W, h, m, steps):
    """The QR method written out: the reference loop."""
    Q, total = np.eye(len(h))[:, :m], np.zeros(m)
    for _ in range(steps):
        h = np.tanh(W @ h)
        Q, R = np.linalg.qr(((1 - h * h)[:, None] * W) @ Q)
        total += np.log(np.abs(np.diag(R)))
    return np.sort(total / steps)[::-1]


def numpy_norms(W, H):
    """Dense P_t = P_{t+1} J_{t+1} per example, with SVD and Frobenius norms: the reference loop."""
    T, B, d = H.shape
    sigma, fro = np.ones((B, T)), np.ones((B, T))
    for b in range(B):
        P = np.eye(d)
        for t in range(T - 2, -1, -1):
            P = P @ ((1 - H[t + 1, b] ** 2)[:, None] * W)
            sigma[b, t], fro[b, t] = np.linalg.norm(P, 2), np.linalg.norm(P) / np.sqrt(d)
    return sigma.mean(0), fro.mean(0)


# the targets: (kind, bound): "speedup" needs loop / ours >= bound, "seconds" needs ours < bound
TARGETS = {"exponents m=256": ("speedup", 3.0), "exponents m=10": ("seconds", 0.5), "long-lag norms": ("seconds", 1.0)}


def verdict(name: str, ours: float, loop: float) -> str:
    kind, bound = next(v for k, v in TARGETS.items() if name.startswith(k))
    met = loop / ours >= bound if kind == "speedup" else ours < bound
    goal = f"target x{bound:g} vs the loop" if kind == "speedup" else f"target < {bound:g} s"
    return f"{goal:22s} {'met' if met else 'NOT met'}"


@contextmanager
def numpy_blas_threads(n: int):
    """NumPy's BLAS on ``n`` threads meanwhile, every other BLAS library (SciPy's) left as it is."""
    from gradscope.engine.shards import blas_controller, kernel_blas_controllers

    scipy_own = {lib.filepath for lib in kernel_blas_controllers()}
    numpy_own = [
        lib for lib in blas_controller().lib_controllers if lib.user_api == "blas" and lib.filepath not in scipy_own
    ]
    before = [lib.num_threads for lib in numpy_own]
    for lib in numpy_own:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, k in zip(numpy_own, before, strict=True):
            lib.set_num_threads(k)


def timed(f):
    start = time.perf_counter()
    out = f()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--skip-long-lag", action="store_true", help="only the two exponent cases")
    args = parser.parse_args(argv)
    d = 256
    spec = ModelSpec(cell="rnn", activation="tanh", input_size=1, hidden_size=d, output_size=1, dtype="float64")
    params = init_params(spec, InitSpec(recurrent_scale=4.0, input_scale=0.0), np.random.default_rng(0))
    W = params.layers[0].W_hh
    h0 = np.random.default_rng(1).standard_normal((1, 1, d))
    rows: dict[str, dict[str, list[float]]] = {}
    with threadpool_limits(1):
        for _ in range(args.repeats):
            for m in (256, 10):
                name = f"exponents m={m} d={d} steps={args.steps}"
                ours, lam = timed(
                    lambda m=m: qr_exponents(stack_streams(spec, params, np.zeros((args.steps, 1, 1)), h0)[0], m, 0)
                )
                loop, ref = timed(lambda m=m: numpy_exponents(W, h0[0, 0], m, args.steps))
                assert np.allclose(lam, ref, atol=1e-9), (lam[:3], ref[:3])
                rows.setdefault(name, {"ours": [], "numpy_loop": [], "numpy_loop_1_thread": []})
                rows[name]["ours"].append(ours)
                rows[name]["numpy_loop_1_thread"].append(loop)
                if m == 256:
                    with numpy_blas_threads(2):
                        loop_2 = timed(lambda m=m: numpy_exponents(W, h0[0, 0], m, args.steps))[0]
                    rows[name].setdefault("numpy_loop_2_threads", []).append(loop_2)
                    loop = min(loop, loop_2)
                rows[name]["numpy_loop"].append(loop)
            if args.skip_long_lag:
                continue
            spec_b = ModelSpec(
                cell="rnn", activation="tanh", input_size=32, hidden_size=d, output_size=1, dtype="float64"
            )
            params_b = init_params(spec_b, InitSpec(recurrent_scale=4.0), np.random.default_rng(0))
            x = np.random.default_rng(2).standard_normal((100, 16, 32))
            stream = stack_streams(spec_b, params_b, x)[0]
            W_b = params_b.layers[0].W_hh
            ours, (s, f) = timed(lambda stream=stream: jacobian_norms(stream))
            loop, (s_ref, f_ref) = timed(lambda stream=stream, W_b=W_b: numpy_norms(W_b, stream.H))
            assert np.allclose(s, s_ref, rtol=1e-9) and np.allclose(f, f_ref, rtol=1e-9)
            rows.setdefault("long-lag norms B=16 T=100 d=256", {"ours": [], "numpy_loop": []})
            rows["long-lag norms B=16 T=100 d=256"]["ours"].append(ours)
            rows["long-lag norms B=16 T=100 d=256"]["numpy_loop"].append(loop)
    load = os.getloadavg()
    summary: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": "python benchmarks/bench_analysis.py " + " ".join(sys.argv[1:]),
        "load_average_1_5_15_min": load,
    }
    for name, r in rows.items():
        ours, loop = float(np.median(r["ours"])), float(np.median(r["numpy_loop"]))
        summary[name] = {"ours_s": ours, "numpy_loop_s": loop, "speedup": loop / ours, "runs": r}
        if "numpy_loop_2_threads" in r:
            one, two = float(np.median(r["numpy_loop_1_thread"])), float(np.median(r["numpy_loop_2_threads"]))
            print(f"  the loop with NumPy's BLAS on 1 thread {one:.2f} s, on 2 threads {two:.2f} s (each run's faster)")
        print(
            f"{name:40s} ours {ours:6.2f} s  numpy loop {loop:6.2f} s  x{loop / ours:5.2f}  {verdict(name, ours, loop)}"
        )
    print(
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores (medians of {args.repeats})"
    )
    if not args.skip_long_lag and args.steps == 2000:  # the configuration: keep it as the record
        out = ROOT / "benchmarks" / "results" / "analysis.json"
        out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
