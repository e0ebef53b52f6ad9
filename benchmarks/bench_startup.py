"""Start-up as a user feels it (issue 9), each figure a whole process, against its target:

    python benchmarks/bench_startup.py                 # the three figures below, ~1.5 min; writes results/startup.*
    python benchmarks/bench_startup.py --repeats 3 --skip-cold

    first step       process start -> the first computed LSTM step at (B, T, n, d) = (32, 100, 32, 128) on a warm
                     Numba cache (the engine imported, the kernels loaded, one bptt call)    target < 0.3 s
    relu demo        gradscope run models/relu_init_scale.toml --out DIR, its figures included, warm cache
                                                                                              target < 1.0 s
    cold compile     the same command on an EMPTY kernel cache, minus its warm time: the compile that one process
                     needs (its model's kernels, engine.plan.model_plan, and the spectra's)  target < 10 s
    or, the issue's alternative: no compile at all on first use.  `gradscope compile` (what scripts/install.sh
                     runs) on another EMPTY cache, timed; then one process per dtype x cell x architecture a user
                     can pick (18) runs compile_kernels and a pass of that model and counts Numba's cache misses
                     (compiles): met when every one is 0.  Minutes (the install compile); --skip-install-check.

"Process start" is the parent's clock just before it starts the child (time.time() on both sides, so the
interpreter's own start-up is counted).  Every process gets 2 threads (as bench_cli.py).  Medians of the
repeats; the 1-minute load average is printed beside each, since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DEMO = ROOT / "models" / "relu_init_scale.toml"
TARGETS = {"first_step": 0.3, "relu_demo": 1.0, "cold_compile": 10.0}  # seconds

FIRST_STEP_CHILD = textwrap.dedent("""
    import time
    import numpy as np
    from gradscope.engine import InitSpec, ModelSpec, bptt, init_params
    spec = ModelSpec(cell="lstm", input_size=32, hidden_size=128, output_size=32)
    params = init_params(spec, InitSpec(), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 32, 32)).astype(np.float32)  # (T, B, n)
    target = rng.normal(size=(100, 32, 32)).astype(np.float32)  # (T, B, k)
    bptt(spec, params, x, target, np.ones((100, 32), np.float32), "mse")
    print(time.time())
""")


def environment(cache: str | None) -> dict:
    """2 threads; the kernel cache ``cache`` (None: the one this environment uses, warm after one run)."""
    env = dict(os.environ)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = cache
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = "2"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run(command: list[str], env: dict) -> tuple[float, str]:
    """(seconds from just before the start to the exit, stdout) of one process, which must succeed."""
    start = time.time()
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def first_step(env: dict) -> float:
    start = time.time()
    _, out = run([sys.executable, "-c", FIRST_STEP_CHILD], env)
    return float(out.split()[-1]) - start


def demo_command(out: Path, plots: bool = True) -> list[str]:
    return [sys.executable, "-m", "gradscope", "run", str(DEMO), "--out", str(out)] + ([] if plots else ["--no-plots"])


def demo(env: dict, work: Path, plots: bool = True) -> float:
    out = work / "demo"
    shutil.rmtree(out, ignore_errors=True)
    seconds, _ = run(demo_command(out, plots), env)
    if plots and not (out / "plots" / "composite.png").exists():
        raise RuntimeError(f"no figures in {out}")
    return seconds


FIRST_USE_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from gradscope.engine import InitSpec, ModelSpec, bptt, compile_kernels, init_params, plan, spectra_kernels
    cell, dtype, architecture, bidirectional = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    spec = ModelSpec(cell=cell, dtype=dtype, architecture=architecture, bidirectional=bidirectional,
                     input_size=8, hidden_size=32, output_size=8)
    compile_kernels(spec)
    rng = np.random.default_rng(0)
    T, B = 20, 64
    x = rng.normal(size=(T, B, 8)).astype(spec.np_dtype)
    dec = rng.normal(size=(T, B, 8)).astype(spec.np_dtype) if spec.seq2seq else None
    target = rng.normal(size=(T, B, 8)).astype(spec.np_dtype)
    bptt(spec, init_params(spec, InitSpec(), rng), x, target, np.ones((T, B), spec.np_dtype), "mse", decoder_x=dec)
    kernels = [d for dt in plan.KERNEL_DTYPES for _, d, _ in plan.kernel_plan(dt)]
    kernels += [getattr(spectra_kernels, name) for name in spectra_kernels.KERNELS]
    print(sum(sum(d.stats.cache_misses.values()) for d in kernels))
""")
FIRST_USE_MODELS = [
    (cell, dtype, architecture, bidirectional)
    for dtype in ("float32", "float64")
    for cell in ("rnn", "lstm", "gru")
    for architecture, bidirectional in (("stack", False), ("stack", True), ("seq2seq", False))
]


def install_check(work: Path) -> dict:
    """`gradscope compile` on an empty cache (timed), then the first use of every model kind a user can pick,
    each in a process of its own, counting compiles (Numba's cache misses)."""
    env = environment(str(work / "cache-install"))
    seconds, _ = run([sys.executable, "-m", "gradscope", "compile"], env)
    print(f"  gradscope compile (install): {seconds:.1f} s, load {load()}", file=sys.stderr)
    compiles = {}
    for model in FIRST_USE_MODELS:
        _, out = run([sys.executable, "-c", FIRST_USE_CHILD, *map(str, model[:3]), "1" if model[3] else "0"], env)
        compiles[" ".join(map(str, model[:3])) + (" bidirectional" if model[3] else "")] = int(out.split()[-1])
    first_use = [k for k, v in compiles.items() if v]
    print(f"  first uses that compiled: {first_use or 'none'} of {len(compiles)}", file=sys.stderr)
    return {"install_seconds": seconds, "compiles_at_first_use": compiles, "met": not first_use}


def figure(name: str, samples: list[float]) -> dict:
    median = float(np.median(samples))
    return {
        "samples": [round(s, 3) for s in samples],
        "median": median,
        "best": float(min(samples)),
        "target": TARGETS[name],
        "met": median < TARGETS[name],
    }


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-cold", action="store_true", help="leave out the cold compile (~30 s)")
    parser.add_argument(
        "--skip-install-check", action="store_true", help="leave out gradscope compile + the first-use check"
    )
    parser.add_argument("--out", default=str(RESULTS), help="folder for startup.json and startup.md")
    args = parser.parse_args()
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python"] + sys.argv)}
    report["load_before"] = load()
    with tempfile.TemporaryDirectory(prefix="gradscope-bench-startup-") as tmp:
        work = Path(tmp)
        env = environment(None)
        demo(env, work)  # untimed: fills the cache if it was empty, and the file cache
        first_step(env)
        steps, demos, plain = [], [], []
        for repeat in range(args.repeats):  # alternating, so that the load hits both alike
            steps.append(first_step(env))
            demos.append(demo(env, work))
            plain.append(demo(env, work, plots=False))
            print(
                f"  repeat {repeat + 1}/{args.repeats}: first step {steps[-1]:.3f} s, relu demo {demos[-1]:.2f} s "
                f"(--no-plots {plain[-1]:.2f} s), load {load()}",
                file=sys.stderr,
            )
        report["first_step"] = figure("first_step", steps)
        report["relu_demo"] = figure("relu_demo", demos)
        report["relu_demo_no_plots"] = {"samples": [round(s, 3) for s in plain], "median": float(np.median(plain))}
        if not args.skip_cold:
            cold_cache = str(work / "cache-cold")
            cold = demo(environment(cold_cache), work, plots=False)
            report["cold_whole_process"] = cold
            report["cold_compile"] = figure("cold_compile", [cold - report["relu_demo_no_plots"]["median"]])
            print(f"  cold: {cold:.1f} s whole process (--no-plots), load {load()}", file=sys.stderr)
        if not args.skip_install_check:
            report["install_check"] = install_check(work)
    report["load_after"] = load()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out / "startup.md").write_text(text)
    print(text)


def markdown(report: dict) -> str:
    rows = [
        ("process start -> first computed LSTM step (32, 100, 32, 128), warm cache", "first_step"),
        ("`gradscope run models/relu_init_scale.toml` with its figures, warm cache", "relu_demo"),
        ("cold compile one process needs (relu demo on an empty cache, minus its warm time)", "cold_compile"),
    ]
    lines = [
        "# Start-up, whole processes (benchmarks/bench_startup.py)",
        "",
        f"Measured {report['date']}, load average {report['load_before']} before, {report['load_after']} after; "
        f"command `{report['command']}`; 2 threads per process; medians.",
        "",
        "| figure | median | best | target | met |",
        "|---|---:|---:|---:|---|",
    ]
    for label, key in rows:
        if key in report:
            f = report[key]
            lines.append(
                f"| {label} | {f['median']:.3f} s | {f['best']:.3f} s | < {f['target']:g} s | "
                f"{'yes' if f['met'] else 'NO'} |"
            )
    lines += ["", f"The relu demo with `--no-plots`: {report['relu_demo_no_plots']['median']:.3f} s (median)."]
    if "cold_whole_process" in report:
        lines.append(f"The cold whole process (`--no-plots`): {report['cold_whole_process']:.1f} s.")
    if "install_check" in report:
        check = report["install_check"]
        compiled = [k for k, v in check["compiles_at_first_use"].items() if v]
        lines += [
            "",
            f"**The cold-compile target's alternative, no compile at all on first use: "
            f"{'met' if check['met'] else 'NOT met'}.**  `gradscope compile` (scripts/install.sh) took "
            f"{check['install_seconds']:.1f} s on an empty cache; then the first use of each of the "
            f"{len(check['compiles_at_first_use'])} dtype x cell x architecture kinds, each in a process of its "
            f"own (compile_kernels and a pass), compiled "
            + (f"in {', '.join(compiled)}." if compiled else "nothing (0 cache misses in every one)."),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
