"""Every speed target of the open issues, with its latest figure, read off the benchmarks' saved results.

    python benchmarks/targets.py                      # a markdown table of benchmarks/results/*.json
    python benchmarks/targets.py --results DIR        # of another folder of results

Each benchmark measures its figure against peers in the same run and saves it (benchmarks/results/*.json, the
command and the machine's load with it); this script only gathers them, so the table in docs/performance.md is
regenerated, not edited.  A target whose benchmark has not been run shows as "not measured".
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine_targets import target_checks  # noqa: E402  (the engine's targets, as bench_engine.py prints them)


def _read(folder: Path, name: str) -> dict | None:
    path = folder / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _span(figures: list[str]) -> str:
    """Every row met: the smallest and the largest figure (by their leading number), else the first four."""
    numbers = [re.match(r"[-+]?[0-9.]+", f) for f in figures]
    if len(figures) <= 2 or not all(numbers):
        return ", ".join(figures[:4])
    ordered = sorted(zip((float(n.group()) for n in numbers), figures, strict=True))
    return f"from {ordered[0][1]} to {ordered[-1][1]}"


def _load(value) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)) and value:
        return "-".join(f"{float(v):.1f}" for v in value[:2])
    if isinstance(value, dict):
        return _load([value.get("before", value.get("min")), value.get("max", value.get("end"))])
    return "?"


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def add(self, issue: str, target: str, figure: str, met: bool | None, when: str, command: str) -> None:
        verdict = "not measured" if met is None else ("met" if met else "**NOT met**")
        self.rows.append((issue, target, figure, verdict, when, f"`{command}`" if command else ""))

    def missing(self, issue: str, target: str, command: str) -> None:
        self.add(issue, target, "", None, "", command)

    def markdown(self) -> str:
        head = "| issue | target | measured | | when, load | command |\n|---|---|---|---|---|---|"
        return "\n".join([head] + ["| " + " | ".join(r) + " |" for r in self.rows])


def engine_rows(table: Table, folder: Path) -> None:
    """engine.json and engine-quick.json: the newer row of each (cell, size, dtype) counts."""
    rows: dict[tuple, tuple[str, dict, dict]] = {}
    for name in ("engine.json", "engine-quick.json"):
        result = _read(folder, name)
        if result is None:
            continue
        # the date of its speed rows: of the last run that measured speed (a later --only memory keeps them)
        speed_runs = [
            (u.get("date", ""), u.get("command", ""))
            for u in result.get("updates", [])
            if "speed" in u.get("parts", [])
        ]
        date, command = max([(result.get("date", ""), result.get("command", ""))] + speed_runs)
        for r in result.get("speed", []):
            key = (r["cell"], r["B"], r["T"], r["n"], r["d"], r["dtype"])
            if key not in rows or rows[key][0] <= date:
                rows[key] = (date, r, dict(result, date=date, command=command))
    by_target: dict[str, list[tuple[dict, dict]]] = {}
    for _, r, result in rows.values():
        for c in target_checks([r], result.get("peak_gflops", {})):
            by_target.setdefault(c["target"], []).append((c, result))
    issues = {"bidirectional": "14", "gru": "14", "lstm": "9", "GradScope": "9"}
    for target, checks in by_target.items():
        met = sum(c["met"] for c, _ in checks)
        figures = ", ".join(
            f"{c['label'].split(' float')[0].replace('(', '').replace(')', '')}: {c['figure']}"
            for c, _ in checks
            if not c["met"]
        ) or _span([c["figure"] for c, _ in checks])
        dates = sorted({res.get("date", "?") for _, res in checks})
        loads = [float(v) for c, _ in checks for v in c.get("load", [])]
        when = f"{dates[-1]}, {min(loads):.1f}-{max(loads):.1f}" if loads else dates[-1]
        commands = sorted({res.get("command", "") for _, res in checks})  # the runs that measured these rows
        shown = f"met in {met} of {len(checks)}" + (f"; not met: {figures}" if met < len(checks) else f" ({figures})")
        table.add(issues.get(target.split()[0], "9"), target, shown, met == len(checks), when, " and ".join(commands))


def gather(folder: Path) -> Table:
    table = Table()
    # issue 9: the whole process
    cli = _read(folder, "cli.json")
    entry = next((e for e in (cli or {}).get("results", []) if e.get("threads") == 2), None)
    target = "`gradscope run` (defaults, figures) >= 2.5x faster than the PyTorch script"
    if entry:
        g = entry["times"]["gradscope"]
        torch = entry["times"]["torch"]
        table.add(
            "9",
            target,
            f"{g['torch_over_this_median']:.2f}x on medians ({g['median']:.2f} s against "
            f"{torch['median']:.2f} s; best {g['torch_over_this_best']:.2f}x)",
            g["torch_over_this_median"] >= 2.5,
            cli.get("date", "?"),
            cli.get("command", ""),
        )
    else:
        table.missing("9", target, "python benchmarks/bench_cli.py --threads 2 --repeats 3")
    metrics = _read(folder, "metrics.json")
    tracked = [r for r in (metrics or {}).get("runs", []) if not r.get("exact_every_iteration")]
    target = "parameter metrics <= 15% of BPTT, every iteration"
    if tracked:
        worst = max(r["share_of_sums"] for r in tracked)
        loads = [r["load"] for r in tracked]
        table.add(
            "9",
            target,
            f"{worst:.1%} at worst over {len(tracked)} runs",
            worst <= 0.15,
            f"{metrics.get('date', '?')}, {min(loads):.1f}-{max(loads):.1f}",
            metrics.get("command", ""),
        )
    else:
        table.missing("9", target, "python benchmarks/bench_metrics.py --repeats 3 --exact")
    startup = _read(folder, "startup.json")
    for key, target in (
        ("first_step", "process start -> first computed step < 0.3 s (warm cache)"),
        ("relu_demo", "`gradscope run models/relu_init_scale.toml` with figures < 1.0 s"),
    ):
        if startup and key in startup:
            s = startup[key]
            table.add(
                "9",
                target,
                f"{s['median']:.2f} s median (best {s['best']:.2f} s)",
                s["met"],
                f"{startup.get('date', '?')}, {_load([startup.get('load_before'), startup.get('load_after')])}",
                startup.get("command", ""),
            )
        else:
            table.missing("9", target, "python benchmarks/bench_startup.py")
    # the issue's target is one: "a cold compile ... under 10 s (or no compile at all on first use ...)"
    target = "a cold compile of what one process needs < 10 s, or no compile at all on first use"
    if startup and "install_check" in startup and "cold_compile" in startup:
        check, cold = startup["install_check"], startup["cold_compile"]
        compiled = [k for k, v in check["compiles_at_first_use"].items() if v]
        table.add(
            "9",
            target,
            f"{len(compiled)} of {len(check['compiles_at_first_use'])} kinds compile at first use after `gradscope "
            f"compile` (which scripts/install.sh runs, {check['install_seconds']:.0f} s); a raw cold compile takes "
            f"{cold['median']:.1f} s",
            bool(check["met"] or cold["met"]),
            f"{startup.get('date', '?')}, {_load([startup.get('load_before'), startup.get('load_after')])}",
            startup.get("command", ""),
        )
    else:
        table.missing("9", target, "python benchmarks/bench_startup.py")
    engine_rows(table, folder)
    for tab in range(5):
        gui = _read(folder, f"gui-tab{tab}.json")
        if gui is None:
            table.missing(
                "9",
                f"the app, view {tab}: 60 fps, p99 < 50 ms, runs keep 90%",
                f"xvfb-run -a python benchmarks/bench_gui.py --force --tab {tab}",
            )
            continue
        load = gui["load"]
        kept = gui.get("kept_of_headless", [])
        worst = min(kept) if kept and not any(math.isnan(k) for k in kept) else float("nan")
        forced = gui.get("kept_forced")
        figure = f"{load['frames_per_second']:.1f} fps, p99 {load['input_to_screen_ms']['p99']:.0f} ms, " + (
            f"kept {worst:.0%} at worst as the app draws (every curve of every run redrawn at every frame: "
            f"{min(forced):.0%})"
            if "live" in gui and forced
            else f"kept {worst:.0%} at worst"
        )
        met = load["frames_per_second"] >= 60 and load["input_to_screen_ms"]["p99"] < 50 and worst >= 0.9
        table.add(
            "9",
            f"the app, '{load['tab']}': 60 fps, input to screen p99 < 50 ms, runs keep >= 90%",
            figure,
            met,
            f"{gui.get('date', '?')}, {_load(gui.get('load_average'))}",
            gui.get("command", ""),
        )
    export = _read(folder, "export.json")
    target = "1,000 small runs export in < 10 s with <= 1 GiB"
    if export:
        peak = max(export["peak"], export.get("peak_workers", 0))  # the largest process: the figure workers' too
        figure = f"{export['runs']} runs: {export['export_seconds']:.1f} s, peak {peak / 2**20:.0f} MiB" + (
            "" if export.get("figures") else " (no figures)"
        )
        table.add(
            "9",
            target,
            figure,
            export["runs"] >= 1000 and export["export_met"] and export["memory_met"],
            f"{export.get('date', '?')}, {_load(export.get('load'))}",
            export.get("command", ""),
        )
    else:
        table.missing("9", target, "python benchmarks/bench_export.py --runs 1000")
    # issue 10: the analysis
    analysis = _read(folder, "analysis.json")
    for key, target, goal in (
        ("exponents m=256 d=256 steps=2000", "full spectrum (m = 256, d = 256, 2000 steps) >= 3x the NumPy loop", 3.0),
        ("exponents m=10 d=256 steps=2000", "m = 10 exponents at d = 256 < 0.5 s", 0.5),
        ("long-lag norms B=16 T=100 d=256", "long-lag norms at (16, 100, 256) < 1 s", 1.0),
    ):
        if analysis and key in analysis:
            a = analysis[key]
            if key.startswith("exponents m=256"):
                figure, met = (
                    f"{a['speedup']:.2f}x ({a['ours_s']:.2f} s against {a['numpy_loop_s']:.2f} s)",
                    (a["speedup"] >= goal),
                )
            else:
                figure, met = f"{a['ours_s']:.2f} s (NumPy loop {a['numpy_loop_s']:.2f} s)", a["ours_s"] < goal
            table.add(
                "10",
                target,
                figure,
                met,
                f"{analysis.get('date', '?')}, {_load(analysis.get('load_average_1_5_15_min'))}",
                analysis.get("command", "python benchmarks/bench_analysis.py --repeats 3"),
            )
        else:
            table.missing("10", target, "python benchmarks/bench_analysis.py --repeats 3")
    # issue 8: sweeps
    sweep = _read(folder, "sweep.json")
    if sweep:
        when = f"{sweep.get('date', '?')}, {_load(sweep.get('load_1min'))}"
        command = sweep.get("command", "python benchmarks/bench_sweep.py --rounds 2")
        s = sweep["speedup_2_over_1_points"]
        table.add(
            "8",
            "64 points: 2 local workers >= 1.8x faster than 1 (exports kept)",
            f"{s:.2f}x (--no-traces {sweep['speedup_2_over_1_points_no_traces']:.2f}x)",
            s >= 1.8,
            when,
            command,
        )
        d = sweep["dask_over_local_points"]
        table.add(
            "8",
            "Dask, 2 workers on localhost, within 15% of the local pool",
            f"{d:.2f}x the time (--no-traces {sweep['dask_over_local_points_no_traces']:.2f}x)",
            d <= 1.15,
            when,
            command,
        )
        o = sweep["overhead_ms_per_point"]
        table.add("8", "per-point overhead (dispatch and result) < 50 ms", f"{o:.1f} ms", o < 50, when, command)
    else:
        table.missing("8", "sweep speed", "python benchmarks/bench_sweep.py --rounds 2")
    # issue 11: checkpoints
    checkpoint = _read(folder, "checkpoint.json")
    if checkpoint:
        table.add(
            "11",
            f"checkpoints cost <= {checkpoint['target_share']:.0%} of a run at the default interval",
            f"{checkpoint['share_at_default']:.1%} ({checkpoint['extra_seconds_per_checkpoint'] * 1e3:.0f} ms "
            f"per checkpoint)",
            checkpoint["met"],
            _load(checkpoint.get("load_average")),
            "python benchmarks/bench_checkpoint.py",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(HERE / "results"), help="the folder of the benchmarks' JSON")
    args = parser.parse_args(argv)
    print(gather(Path(args.results)).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
