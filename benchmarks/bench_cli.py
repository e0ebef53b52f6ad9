"""What a user feels: ``gradscope run`` as a whole process against the equivalent PyTorch script.

    python benchmarks/bench_cli.py                      # 5 repeats at 2 threads each (the issue's setting)
    python benchmarks/bench_cli.py --threads 2,1,default --repeats 3
    python benchmarks/bench_cli.py --lapack             # also: the trainer's small LAPACK calls, 1 vs 2 threads

The case (issue 9, "the cost of seeing"): an instrumented LSTM training experiment at (B, T, n, d) = (32, 100,
32, 128), 100 SGD iterations, every iteration recorded, every metric at its default, from start-up to files on
disk.  Timed, each as a whole process (wall clock, and the CPU seconds it used):

    gradscope               python -m gradscope run benchmarks/cli_lstm.toml --out DIR: the defaults, every metric
                            (the spectral radius and sigma_max of W_hh's four gate blocks every iteration
                            included) and the PNG and SVG figures: what the targets are about
    gradscope --no-plots    the same without the figures
    gradscope no spectra    --no-plots and train.spectral_every = 0: what the spectra and the figures cost
    torch                   python benchmarks/torch_equivalent.py --out FILE.npz --threads N (no spectra)

Every process gets N threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, NUMBA_NUM_THREADS; the
PyTorch script also calls torch.set_num_threads(N); GradScope's OpenBLAS stays at its default of one thread, its
N threads being its batch shards: see thread_env).  "default" sets none of them: each program as a user
runs it (GradScope: OpenBLAS on one thread, gradscope/__init__.py; PyTorch: one thread per core).  GradScope
runs on a warm Numba cache (one untimed run first; so does PyTorch, for the file cache).  The commands
alternate within each repeat, so that a change in the machine's load hits them alike.  The untimed first
PyTorch run starts from GradScope's initial parameters and first batch (--init-from), and its iteration 0 is
compared with GradScope's: the two do the same job.

Writes benchmarks/results/cli.json and cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXPERIMENT = HERE / "cli_lstm.toml"
TORCH_SCRIPT = HERE / "torch_equivalent.py"
RESULTS = HERE / "results"
TARGET_RATIO = 2.5  # issue 9: torch / gradscope, whole processes, the defaults with figures
SHARED_METRICS = (
    "h_norm",
    "c_norm",
    "grad_h_norm",
    "grad_c_norm",
    "gate_i_mean",
    "gate_f_mean",
    "gate_g_mean",
    "gate_o_mean",
)


def thread_env(threads: int, gradscope: bool = False) -> dict:
    """The environment for N threads; 0: none of the thread variables (each program's own default).

    GradScope computes on N threads through NUMBA_NUM_THREADS (its batch shards, one per thread), with the
    kernels' OpenBLAS at its default of one thread (gradscope/__init__.py): OPENBLAS_NUM_THREADS = N would
    trade its shard threads for BLAS threads (engine/driver.py: threads // BLAS threads) and run the shards one
    after the other, the slower of its two settings (2026-12-02, idle machine: 5.24 and 5.64 s against 3.94 and
    4.59 s for this benchmark's case).  So its OpenBLAS variable is left unset, as a user runs it."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if threads > 0 and not (gradscope and name == "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
        else:
            env.pop(name, None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one process, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def gradscope_command(experiment: Path, out: Path, figures: bool) -> list[str]:
    return [sys.executable, "-m", "gradscope", "run", str(experiment), "--out", str(out)] + (
        [] if figures else ["--no-plots"]
    )


def torch_command(out: Path, threads: int, init_from: Path | None = None) -> list[str]:
    return [sys.executable, str(TORCH_SCRIPT), "--out", str(out), "--threads", str(threads)] + (
        ["--init-from", str(init_from)] if init_from else []
    )


def check_gradscope_export(out: Path, spectra: bool = True) -> Path:
    """The run completed, recorded its 100 iterations and, with the defaults, the spectra of every one."""
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"][0]
    if run["status"] != "completed" or run["iterations"] != 100 or run["recorded"] != 100:
        raise RuntimeError(f"unexpected GradScope run: {run['status']}, {run['iterations']} iterations")
    if spectra:
        with np.load(out / run["dir"] / "trace.npz") as trace:
            for name in ("spectral_radius", "sigma_max"):
                if trace[name].shape[0] != 100 or not np.all(np.isfinite(trace[name])):
                    raise RuntimeError(f"{name} is not in every recorded iteration of {out}")
    return out / run["dir"]


def iteration_zero_agreement(run_dir: Path, torch_npz: Path) -> dict:
    """Largest difference at iteration 0 between GradScope's trace and PyTorch's, per metric, relative to the
    metric's largest value over the T steps (gradient norms vanish to ~1e-20 at early steps, and a gate mean can
    cross 0, so a step-by-step ratio would measure float32 rounding of tiny numbers)."""
    out = {}
    with np.load(run_dir / "trace.npz") as ours, np.load(torch_npz) as theirs:
        for name in SHARED_METRICS:
            a, b = ours[name][0, 0], theirs[name][0]  # (T,) layer 0 / (T,)
            out[name] = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        out["loss"] = float(abs(ours["loss"][0] - theirs["loss"][0]) / abs(theirs["loss"][0]))
        out["grad_norm"] = float(abs(ours["grad_norm"][0] - theirs["grad_norm"][0]) / theirs["grad_norm"][0])
    return out


def blas_info(env: dict) -> list:
    code = (
        "import json, numpy, scipy.linalg.cython_blas, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "print(json.dumps([{k: i.get(k) for k in ('user_api', 'internal_api', 'num_threads', 'version', "
        "'architecture', 'filepath')} for i in threadpool_info()]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else [{"error": proc.stderr[-500:]}]


def summarise(samples: list[tuple[float, float]]) -> dict:
    walls = sorted(w for w, _ in samples)
    cpus = sorted(c for _, c in samples)
    return {
        "wall": [round(w, 3) for w, _ in samples],
        "cpu": [round(c, 3) for _, c in samples],
        "best": walls[0],
        "median": float(np.median(walls)),
        "cpu_median": float(np.median(cpus)),
    }


def bench_threads(threads: int, repeats: int, work: Path) -> dict:
    env, ours = thread_env(threads), thread_env(threads, gradscope=True)
    plain = work / "cli_lstm_no_spectra.toml"
    plain.write_text(EXPERIMENT.read_text().replace("record_every = 1\n", "record_every = 1\nspectral_every = 0\n"))
    # Untimed: warm the Numba cache and the file cache; check both do the same job.
    warm = work / f"warm-{threads}"
    shutil.rmtree(warm, ignore_errors=True)
    timed(gradscope_command(EXPERIMENT, warm, figures=False), ours)
    run_dir = check_gradscope_export(warm)
    torch_npz = work / f"torch-warm-{threads}.npz"
    timed(torch_command(torch_npz, threads, init_from=run_dir), env)
    agreement = iteration_zero_agreement(run_dir, torch_npz)

    commands = {
        "gradscope": lambda out: gradscope_command(EXPERIMENT, out, figures=True),
        "gradscope --no-plots": lambda out: gradscope_command(EXPERIMENT, out, figures=False),
        "gradscope no spectra": lambda out: gradscope_command(plain, out, figures=False),
        "torch": lambda out: torch_command(out.with_suffix(".npz"), threads),
    }
    samples: dict[str, list] = {name: [] for name in commands}
    for repeat in range(repeats):
        order = list(commands) if repeat % 2 == 0 else list(reversed(commands))
        for name in order:
            out = work / f"{name.replace(' ', '_').replace('-', '')}-{threads}-{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            sample = timed(commands[name](out), ours if name.startswith("gradscope") else env)
            if name.startswith("gradscope"):
                check_gradscope_export(out, spectra="no spectra" not in name)
            samples[name].append(sample)
            print(
                f"  threads={threads} repeat {repeat + 1}/{repeats} {name}: {sample[0]:.2f} s wall, "
                f"{sample[1]:.2f} s CPU",
                file=sys.stderr,
            )
    result = {name: summarise(s) for name, s in samples.items()}
    torch_ = result["torch"]
    for name in ("gradscope", "gradscope --no-plots", "gradscope no spectra"):
        result[name]["torch_over_this_median"] = torch_["median"] / result[name]["median"]
        result[name]["torch_over_this_best"] = torch_["best"] / result[name]["best"]
    return {
        "threads": threads,
        "repeats": repeats,
        "iteration0_relative_difference": agreement,
        "blas": blas_info(env),
        "blas_gradscope": blas_info(ours),
        "times": result,
    }


# ------------------------------------------------------------------------------- small LAPACK calls
def bench_lapack(repeats: int = 30) -> dict:
    """spectral_stats (eigvals, eigvalsh, W^T W) of d x d matrices with NumPy's BLAS on 1 and on 2 threads,
    on an idle machine and with two busy processes competing for the two cores: why the trainer runs these
    calls on one thread (engine/trainer.py: small_linear_algebra)."""
    sys.path.insert(0, str(ROOT))
    from threadpoolctl import threadpool_limits

    from gradscope.engine.params import spectral_stats

    rng = np.random.default_rng(0)
    out = {}
    for load in (0, 2):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        try:
            time.sleep(0.3 if load else 0.0)
            for d in (128, 256, 512):
                W = rng.normal(size=(d, d)) / np.sqrt(d)
                for threads in (1, 2):
                    with threadpool_limits(threads, user_api="blas"):
                        spectral_stats(W)
                        times = []
                        for _ in range(repeats if d < 512 else max(3, repeats // 5)):
                            start = time.perf_counter()
                            spectral_stats(W)
                            times.append(time.perf_counter() - start)
                    times.sort()
                    out[f"busy={load} d={d} threads={threads}"] = {
                        "median_ms": 1e3 * float(np.median(times)),
                        "max_ms": 1e3 * times[-1],
                        "min_ms": 1e3 * times[0],
                    }
                    print(
                        f"  lapack busy={load} d={d} threads={threads}: median "
                        f"{out[f'busy={load} d={d} threads={threads}']['median_ms']:.1f} ms",
                        file=sys.stderr,
                    )
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    return out


# ---------------------------------------------------------------------------------------------- report
def markdown(report: dict) -> str:
    lines = [
        "# `gradscope run` against the equivalent PyTorch script, as whole processes",
        "",
        f"Measured {report['date']} on {report['machine']['cpus']} CPUs (load average before "
        f"{report['machine']['load_before']}, after {report['machine']['load_after']}); "
        f"python {report['versions']['python']}, numpy {report['versions']['numpy']}, "
        f"numba {report['versions']['numba']}, torch {report['versions']['torch']}.",
        "",
        f"Command: `{report['command']}`.  Case: benchmarks/cli_lstm.toml, LSTM (B, T, n, d) = (32, 100, 32, "
        f"128), 100 SGD iterations, every iteration recorded, every metric at its default (spectra every iteration); "
        f"PyTorch: benchmarks/torch_equivalent.py (the same per-timestep traces, no spectra).",
        "",
    ]
    for entry in report["results"]:
        title = (
            f"{entry['threads']} thread(s) per process"
            if entry["threads"]
            else "each program's default threads (no thread variables set)"
        )
        lines += [
            f"## {title}, {entry['repeats']} repeats",
            "",
            "| command | best wall (s) | median wall (s) | median CPU (s) | torch / this (median) | "
            "torch / this (best) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, t in entry["times"].items():
            ratio = (
                (f"{t['torch_over_this_median']:.2f}", f"{t['torch_over_this_best']:.2f}")
                if "torch_over_this_median" in t
                else ("", "")
            )
            lines.append(
                f"| {name} | {t['best']:.2f} | {t['median']:.2f} | {t['cpu_median']:.2f} | {ratio[0]} | {ratio[1]} |"
            )
        ratio = entry["times"]["gradscope"]["torch_over_this_median"]
        lines += [
            "",
            f"**Target (issue 9): `gradscope run` with the defaults and its figures at least {TARGET_RATIO}x faster "
            f"than the PyTorch script: {ratio:.2f}x on medians, "
            f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}.**",
        ]
        worst = max(entry["iteration0_relative_difference"].values())
        lines += [
            "",
            f"Iteration 0 from the same parameters and batch: GradScope and PyTorch agree to {worst:.1e} "
            f"(largest difference over the steps / largest value) or better on "
            f"{', '.join(entry['iteration0_relative_difference'])}.",
            "",
            "BLAS: "
            + "; ".join(
                f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                f"{b.get('num_threads')} threads, {Path(str(b.get('filepath'))).name})"
                for b in entry["blas"]
                if b.get("user_api") == "blas"
            ),
            "",
        ]
    if report.get("lapack"):
        lines += [
            "## The trainer's small LAPACK calls (spectral_stats), one against two BLAS threads",
            "",
            "busy = the number of spinning processes added for the measurement, on top of whatever else the "
            "machine was running (see the load averages above).",
            "",
            "| case | median (ms) | max (ms) |",
            "|---|---:|---:|",
        ]
        for case, t in report["lapack"].items():
            lines.append(f"| {case} | {t['median_ms']:.1f} | {t['max_ms']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="2", help="comma-separated thread counts, or default (default 2)")
    parser.add_argument("--lapack", action="store_true", help="also measure the small LAPACK calls")
    parser.add_argument("--out", default=str(RESULTS), help="folder for cli.json and cli.md")
    args = parser.parse_args()

    import numba
    import torch

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python"] + sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "torch": torch.__version__,
        },
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="gradscope-bench-cli-") as work:
        for threads in (0 if t.strip() == "default" else int(t) for t in args.threads.split(",")):
            report["results"].append(bench_threads(threads, args.repeats, Path(work)))
    if args.lapack:
        report["lapack"] = bench_lapack()
    report["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli.json").write_text(json.dumps(report, indent=2))
    (out / "cli.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
