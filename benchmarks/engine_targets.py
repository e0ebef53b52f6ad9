"""The engine's speed targets (issues 9 and 14), read off the rows of one bench_engine.py speed run.

    python benchmarks/bench_engine.py --only speed ...          # prints these lines at its end
    python benchmarks/engine_targets.py [benchmarks/results/engine.json]     # again, from a saved run

Every figure is a ratio of medians measured in the same run (the peers interleaved), so the machine's load hits
both sides alike; each line says the target, the figure and whether it is met.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BIDIRECTIONAL_MAX = 2.1  # issue 14: a bidirectional layer at most 2.1x the time of a unidirectional one
LSTM_VS_FUSED_MIN = 1.3  # issue 9: LSTM at (32, 100, 32, 128) at least 1.3x faster than PyTorch fused
GRU_FUSED_SIZES = {(32, 100, 32, 128), (32, 200, 64, 256), (64, 500, 64, 512)}  # issue 14: the three larger
PEAK_SHARE_MIN = 0.85  # issue 9: at the two large sizes, >= 85% of the sgemm peak measured in the same run
LARGE_SIZES = {(32, 200, 64, 256), (64, 500, 64, 512)}


def _size(row: dict) -> tuple[int, int, int, int]:
    return row["B"], row["T"], row["n"], row["d"]


def target_checks(speed: list[dict], peak_gflops: dict[str, float]) -> list[dict]:
    """One check per target and measured row: {"target", "label", "figure", "met"}."""
    checks = []

    def check(target: str, label: str, figure: str, met: bool) -> None:
        checks.append({"target": target, "label": label, "figure": figure, "met": bool(met), "load": row_load})

    for r in speed:
        row_load = list(r.get("load", []))  # the load average at the row's start and end
        label = f"{r['cell']} ({r['B']}, {r['T']}, {r['n']}, {r['d']}) {r['dtype']}"
        if "bidirectional_vs_unidirectional" in r:
            ratio = r["bidirectional_vs_unidirectional"]  # of steps taken in turn, where the run measured it so
            figure = f"{ratio:.2f}x" + (" in turn" if "bidirectional_pairs" in r else "")
            check(f"bidirectional / uni <= {BIDIRECTIONAL_MAX}x", label, figure, ratio <= BIDIRECTIONAL_MAX)
        if r["cell"] == "lstm" and _size(r) == (32, 100, 32, 128) and "speedup_vs_torch_fused" in r:
            s = r["speedup_vs_torch_fused"]
            check(f"lstm vs PyTorch fused >= {LSTM_VS_FUSED_MIN}x", label, f"{s:.2f}x", s >= LSTM_VS_FUSED_MIN)
        if r["cell"] == "gru" and "speedup_vs_torch_instrumented" in r:  # issue 14: ahead everywhere
            s = r["speedup_vs_torch_instrumented"]
            check("gru ahead of PyTorch instrumented", label, f"{s:.2f}x", s > 1.0)
        if r["cell"] == "gru" and _size(r) in GRU_FUSED_SIZES and "speedup_vs_torch_fused" in r:
            s = r["speedup_vs_torch_fused"]
            check("gru ahead of PyTorch fused (3 larger sizes)", label, f"{s:.2f}x", s > 1.0)
        if _size(r) in LARGE_SIZES and r["dtype"] == "float32" and "float32" in peak_gflops:  # the sgemm peak
            share = r["gradscope_gflops"] / peak_gflops[r["dtype"]]
            figure = f"{share:.0%} of {peak_gflops[r['dtype']]:.0f} GFLOP/s"
            check(f"GradScope >= {PEAK_SHARE_MIN:.0%} of the sgemm peak", label, figure, share >= PEAK_SHARE_MIN)
    return checks


def target_lines(speed: list[dict], peak_gflops: dict[str, float]) -> list[str]:
    """One line per target and measured row: 'target: figure -> met | NOT met', then a count per target."""
    checks = target_checks(speed, peak_gflops)
    lines = [
        f"{c['target']:44s} {c['label']:48s} {c['figure']:>24s} -> {'met' if c['met'] else 'NOT met'}" for c in checks
    ]
    tally: dict[str, list[int]] = {}
    for c in checks:
        tally.setdefault(c["target"], [0, 0])
        tally[c["target"]][0] += c["met"]
        tally[c["target"]][1] += 1
    return lines + [f"{target}: met in {done} of {total}" for target, (done, total) in tally.items()]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).resolve().parent / "results" / "engine.json"
    result = json.loads(path.read_text())
    print(f"{path} ({result.get('date', '?')}; load {result.get('load', float('nan')):.1f} at the start)")
    print("\n".join(target_lines(result.get("speed", []), result.get("peak_gflops", {}))))


if __name__ == "__main__":
    main()
