"""What the per-parameter metrics cost beside the training step, inside one training run, as the trainer runs them.

    python benchmarks/bench_metrics.py                  # 3 runs of benchmarks/cli_lstm.toml (the issue's case)
    python benchmarks/bench_metrics.py --repeats 5 --exact

The case: benchmarks/cli_lstm.toml, an LSTM at (B, T, n, d) = (32, 100, 32, 128), 100 SGD iterations, every
iteration recorded, every metric at its default (spectral_every = 1).  In each run the trainer's two calls are
timed, iteration by iteration: ``bptt`` (forward, backward, every per-timestep metric) and ``parameter_metrics``
(gradient norms, spectral radius and sigma_max of W_hh's four 128 x 128 gate blocks: tracked between iterations,
engine/spectra.py).  Reported: the medians over iterations 1 .. 98 (0 and 99 are measured exactly by design) and
the share sum(parameter metrics) / sum(bptt).  ``--exact`` also times the same run measuring every iteration
exactly (eigvals / eigvalsh each time, what the trainer did before), in the same process, alternating.

Also checks every tracked value against eigvals / svd of the W_hh it was computed from.  Writes
benchmarks/results/metrics.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gradscope.config import load  # noqa: E402
from gradscope.engine import trainer as trainer_module  # noqa: E402
from gradscope.engine.spectra import TOLERANCE  # noqa: E402
from gradscope.engine.trainer import Training  # noqa: E402


def one_run(run, exact_every_iteration: bool) -> dict:
    """Time bptt and parameter_metrics per iteration; compare the spectra with eigvals / svd."""
    timings = {"bptt": [], "parameter_metrics": []}
    measured: list[np.ndarray] = []

    def timed(name, f):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = f(*args, **kwargs)
            timings[name].append(time.perf_counter() - start)
            return out

        return wrapper

    saved = trainer_module.bptt, trainer_module.parameter_metrics
    pm = saved[1]
    if exact_every_iteration:

        def pm(*args, **kwargs):  # the same call, without the tracking
            return saved[1](*args, **{**kwargs, "spectra": None})  # params.spectral_stats every time

    trainer_module.bptt, trainer_module.parameter_metrics = timed("bptt", saved[0]), timed("parameter_metrics", pm)
    try:
        training = Training(run, seed=0)
        records = []
        measured.append(training.params.layers[0].W_hh.astype(np.float64))
        for record in training:
            records.append(record)
            measured.append(training.params.layers[0].W_hh.astype(np.float64))
    finally:
        trainer_module.bptt, trainer_module.parameter_metrics = saved
    worst = {"spectral_radius": 0.0, "sigma_max": 0.0}
    d = training.spec.hidden_size
    for record, W in zip(records, measured):
        blocks = [W[g * d : (g + 1) * d] for g in range(4)]
        rho = max(float(np.max(np.abs(np.linalg.eigvals(b)))) for b in blocks)
        sigma = max(float(np.linalg.svd(b, compute_uv=False)[0]) for b in blocks)
        worst["spectral_radius"] = max(worst["spectral_radius"], abs(record.metrics["spectral_radius"][0] - rho) / rho)
        worst["sigma_max"] = max(worst["sigma_max"], abs(record.metrics["sigma_max"][0] - sigma) / sigma)
    bptt = np.array(timings["bptt"][1:-1])
    metrics = np.array(timings["parameter_metrics"][1:-1])
    return {
        "bptt_ms": 1e3 * float(np.median(bptt)),
        "parameter_metrics_ms": 1e3 * float(np.median(metrics)),
        "share_of_sums": float(metrics.sum() / bptt.sum()),
        "share_median": float(np.median(metrics / bptt)),
        "worst_relative_error": worst,
        "counts": dict(training._spectra[0].counts),  # all zero when measured exactly every iteration
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact", action="store_true", help="also time exact spectra every iteration")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    run = load(HERE / "cli_lstm.toml").runs[0]
    if run.train.spectral_every != 1:
        raise SystemExit("benchmarks/cli_lstm.toml must keep the default spectral_every = 1")
    from gradscope.engine.spectra_kernels import compile_spectra

    compile_spectra()  # loaded (or compiled) before anything is timed, as gradscope run does at start-up
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python"] + sys.argv), "runs": []}
    for repeat in range(args.repeats):
        for exact in (False, True) if args.exact else (False,):
            result = one_run(run, exact)
            result["exact_every_iteration"] = exact
            report["runs"].append(result)
            print(
                f"repeat {repeat + 1}{' exact' if exact else ''}: bptt {result['bptt_ms']:.2f} ms, parameter "
                f"metrics {result['parameter_metrics_ms']:.3f} ms, share {100 * result['share_of_sums']:.1f} % "
                f"(median {100 * result['share_median']:.1f} %), worst error {result['worst_relative_error']}, "
                f"{result['counts']}, load {result['load']:.1f}",
                file=sys.stderr,
            )
    lines = [
        "# Per-parameter metrics against the training step, in one training run",
        "",
        f"Measured {report['date']}: `{report['command']}` (benchmarks/cli_lstm.toml: LSTM (32, 100, 32, 128), "
        "100 SGD iterations, every metric every iteration).  Medians over iterations 1 .. 98; share = "
        "sum(parameter metrics) / sum(bptt).  Stated tolerance (relative, against eigvals / svd): "
        f"spectral_radius {TOLERANCE['spectral_radius']:g}, sigma_max {TOLERANCE['sigma_max']:g}.",
        "",
        "| spectra | bptt (ms) | parameter metrics (ms) | share of sums | median share | worst error rho | "
        "worst error sigma | blocks tracked / exact / fallback | load |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in report["runs"]:
        c = r["counts"]
        lines.append(
            f"| {'exact every iteration' if r['exact_every_iteration'] else 'tracked (default)'} | {r['bptt_ms']:.2f} "
            f"| {r['parameter_metrics_ms']:.3f} | {100 * r['share_of_sums']:.1f} % | {100 * r['share_median']:.1f} % "
            f"| {r['worst_relative_error']['spectral_radius']:.1e} | {r['worst_relative_error']['sigma_max']:.1e} "
            f"| {c['tracked']} / {c['exact']} / {c['fallback']} | {r['load']:.1f} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    (out / "metrics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
