"""A many-run experiment's export (issue 9): ``gradscope run`` of 1,000 small runs, how long its export takes
after the runs finished, and the process's peak memory, against the targets (< 10 s, <= 1 GiB).

    python benchmarks/bench_export.py                  # 1,000 runs, figures included (the default export)
    python benchmarks/bench_export.py --runs 100 --no-plots
    python benchmarks/bench_export.py --runs 300 --profile /tmp/prof   # cProfile of the export and its workers

The experiment (written to a temporary folder): N runs of a tanh RNN with d = 32 on the probe task
(T = 20, B = 4, n = k = 8), 10 SGD iterations each, every iteration recorded, every metric at its default, each
run its own seed.  The command line runs in a child process exactly as ``gradscope run EXP --out DIR``, with
io.export_experiment timed from inside (the export: every run's trace.npz, trace.csv, parameters, its recorded
store linked in, summary.json, and the figures unless --no-plots); the peak RSS (VmHWM) is read just before
the export and at the end, and the largest worker process's (if any) from getrusage.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
TARGET_SECONDS, TARGET_BYTES = 10.0, 2**30

HEAD = """\
schema_version = 1

[experiment]
name = "export-benchmark"
seed = 0
description = "{runs} small runs: tanh RNN, d = 32, probe task (benchmarks/bench_export.py)"

[defaults]
cell = "rnn"
activation = "tanh"
hidden_size = 32
dtype = "float32"

[defaults.task]
name = "probe"
seq_len = 20
batch_size = 4
input_size = 8
output_size = 8

[defaults.train]
iterations = 10
optimizer = "sgd"
lr = 0.01
record_every = 1
"""

CHILD = textwrap.dedent("""
    import cProfile, json, os, resource, subprocess, sys, time
    import gradscope.io
    from gradscope import cli

    PROFILE = os.environ.get("GRADSCOPE_BENCH_PROFILE")  # a folder: export.prof and worker-<k>.prof go there
    if PROFILE:
        from gradscope.gui import page_pool

        class ProfiledPopen(subprocess.Popen):  # each figure worker run under cProfile, its stats to a file
            count = 0

            def __init__(self, args, *rest, **kwargs):
                if list(args[1:]) == ["-m", page_pool.__name__]:
                    ProfiledPopen.count += 1
                    out = os.path.join(PROFILE, f"worker-{ProfiledPopen.count}.prof")
                    args = [args[0], "-m", "cProfile", "-o", out, *args[1:]]
                super().__init__(args, *rest, **kwargs)

        page_pool.subprocess = type("Subprocess", (), {"Popen": ProfiledPopen, "PIPE": subprocess.PIPE})

    def high_water():  # this process's peak RSS so far, bytes
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    timing = {}
    export = gradscope.io.export_experiment

    def timed_export(*args, **kwargs):
        timing["peak_before_export"] = high_water()
        profiler = cProfile.Profile() if PROFILE else None
        start = time.perf_counter()
        try:
            if profiler is None:
                return export(*args, **kwargs)
            return profiler.runcall(export, *args, **kwargs)
        finally:
            timing["export_seconds"] = time.perf_counter() - start
            if profiler is not None:
                profiler.dump_stats(os.path.join(PROFILE, "export.prof"))

    gradscope.io.export_experiment = timed_export  # cli._run imports it from gradscope.io when it runs
    try:  # how many waterfall pages the export kept from those drawn while the runs computed (gui/page_ahead.py)
        from gradscope.gui import figures

        kept_pages = figures._kept_pages

        def counted(*args, **kwargs):
            kept, done = kept_pages(*args, **kwargs)
            timing["pages_drawn_ahead"] = len(done)
            return kept, done

        figures._kept_pages = counted
    except (ImportError, AttributeError):  # an older tree, without pages drawn ahead
        pass
    start = time.perf_counter()
    code = cli.main(sys.argv[1:])
    timing["whole_seconds"] = time.perf_counter() - start
    timing["peak"] = high_water()
    timing["peak_workers"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    timing["exit"] = code
    print(json.dumps(timing))
""")


def experiment_text(runs: int) -> str:
    return HEAD.format(runs=runs) + "".join(f'\n[[runs]]\nname = "run {i:04d}"\nseed = {i}\n' for i in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--no-plots", action="store_true", help="export the traces only")
    parser.add_argument(
        "--profile", metavar="DIR", help="cProfile the export (DIR/export.prof) and its figure workers (worker-k.prof)"
    )
    parser.add_argument("--out", default=str(RESULTS), help="folder for export.json and export.md")
    args = parser.parse_args()
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = "2"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        env["GRADSCOPE_BENCH_PROFILE"] = str(Path(args.profile).absolute())
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="gradscope-bench-export-") as tmp:
        experiment = Path(tmp) / "many_runs.toml"
        experiment.write_text(experiment_text(args.runs))
        out = Path(tmp) / "out"
        command = [sys.executable, "-c", CHILD, "run", str(experiment), "--out", str(out)]
        command += ["--no-plots"] if args.no_plots else []
        proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise SystemExit(f"the run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        timing = json.loads(proc.stdout.strip().splitlines()[-1])
        summary = json.loads((out / "summary.json").read_text())
        files = sum(len(f) for _, _, f in os.walk(out))
        plots = len(list((out / "plots").glob("*"))) if (out / "plots").exists() else 0
        shutil.rmtree(out, ignore_errors=True)
    peak = max(timing["peak"], timing["peak_workers"])
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python"] + sys.argv),
        "runs": args.runs,
        "runs_exported": len(summary["runs"]),
        "figures": not args.no_plots,
        "files": files,
        "figure_files": plots,
        "load": [load_before, round(os.getloadavg()[0], 2)],
        **timing,
        "export_met": timing["export_seconds"] < TARGET_SECONDS,
        "memory_met": peak <= TARGET_BYTES,
    }
    if args.profile:  # a profile's timings are not the benchmark's: printed, not written to results/
        print(markdown(report))
        print_profiles(Path(args.profile))
        return
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "export.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out_dir / "export.md").write_text(text)
    print(text)


def print_profiles(folder: Path, lines: int = 30) -> None:
    """The export's and each figure worker's profile, by cumulative and by own time."""
    import pstats

    for path in sorted(folder.glob("*.prof")):
        for order in ("cumulative", "tottime"):
            print(f"\n===== {path.name}, by {order} =====")
            pstats.Stats(str(path)).sort_stats(order).print_stats(lines)


def markdown(r: dict) -> str:
    mib = 2**20
    peak = max(r["peak"], r["peak_workers"])
    return "\n".join(
        [
            "# A many-run experiment's export (benchmarks/bench_export.py)",
            "",
            f"Measured {r['date']} (load average {r['load'][0]} before, {r['load'][1]} after); command "
            f"`{r['command']}`: {r['runs']} runs (tanh RNN, d = 32, probe task T = 20, B = 4, 10 iterations "
            f"each), {'figures included' if r['figures'] else 'traces only (--no-plots)'}; {r['files']} files "
            f"exported ({r['figure_files']} figure files).",
            "",
            "| figure | measured | target | met |",
            "|---|---:|---:|---|",
            f"| the export, after the runs finished | {r['export_seconds']:.1f} s | < {TARGET_SECONDS:g} s | "
            f"{'yes' if r['export_met'] else 'NO'} |",
            f"| peak RSS of the process (largest worker: {r['peak_workers'] / mib:.0f} MiB) | {peak / mib:.0f} MiB "
            f"| <= {TARGET_BYTES / mib:.0f} MiB | {'yes' if r['memory_met'] else 'NO'} |",
            "",
            f"Peak RSS just before the export: {r['peak_before_export'] / mib:.0f} MiB; the whole command "
            f"{r['whole_seconds']:.1f} s; waterfall pages drawn while the runs computed and kept by the export: "
            f"{r.get('pages_drawn_ahead', 0)}.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
