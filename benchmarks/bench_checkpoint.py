"""What checkpoints and their fsyncs cost a recorded run (gradscope.checkpoint, store.RunStore.sync).

    python benchmarks/bench_checkpoint.py               # benchmarks/cli_lstm.toml's LSTM, 3 repeats
    python benchmarks/bench_checkpoint.py --repeats 5 --iterations 60

The case: benchmarks/cli_lstm.toml's LSTM at (B, T, n, d) = (32, 100, 32, 128), recording into a folder as
``gradscope run`` does (experiment.execute_run with record_to).  Measured:

    take      the training thread's share of one checkpoint: checkpoint_state (a copy of the parameters, the
              optimizer state and the RNG state), median of 20
    fsync     the store thread's: RunStore.sync before each checkpoint, and the checkpoint's atomic write
    runs      whole runs, alternated within each repeat: a checkpoint every EVERY s (ten times the default
              rate) against none (CHECKPOINT_SECONDS = inf); (with - without) / checkpoints is what one
              checkpoint adds to a run, the store thread's work included (it shares the 2 cores and the GIL)

Target (issue 11, "fsync at each checkpoint, not every chunk"): checkpoints cost a run under 2% of its time at the
default CHECKPOINT_SECONDS (max(added per checkpoint, take) / CHECKPOINT_SECONDS < 0.02).  Prints the numbers
and whether the target is met; writes benchmarks/results/checkpoint.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gradscope import checkpoint, store  # noqa: E402
from gradscope.config import load  # noqa: E402
from gradscope.experiment import execute_run  # noqa: E402

TARGET_SHARE = 0.02
EVERY = 1.0  # seconds between checkpoints in the timed runs: ten times the default rate, to be measurable


def _run(run, seed, folder: Path, every: float) -> float:
    checkpoint.CHECKPOINT_SECONDS = every
    start = time.perf_counter()
    result = execute_run(run, seed, record_to=folder)
    assert str(result.status) == "completed", result.error
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=60)
    args = parser.parse_args()
    experiment = load(HERE / "cli_lstm.toml")
    run = experiment.runs[0]
    run = run.model_copy(update={"train": run.train.model_copy(update={"iterations": args.iterations})})
    seed = run.effective_seed(experiment.seed)
    default = checkpoint.CHECKPOINT_SECONDS
    with tempfile.TemporaryDirectory(prefix="gradscope-bench-checkpoint-") as tmp:
        tmp_path = Path(tmp)
        _run(run, seed, tmp_path / "warm", math.inf)  # kernels loaded, caches warm

        from gradscope.engine.trainer import Training
        from gradscope.runs import RunResult

        training = Training(run, seed)
        result = RunResult.for_run(run, seed)
        next(iter(training))
        takes = []
        for _ in range(20):
            t = time.perf_counter()
            checkpoint.checkpoint_state(training, result)
            takes.append(time.perf_counter() - t)
        training.close()

        syncs: list[float] = []  # the store thread's fsync and the checkpoint's write, each checkpoint
        written: list[float] = []
        sync, write = store.RunStore.sync, checkpoint.write_checkpoint

        def timed_sync(self):
            t = time.perf_counter()
            sync(self)
            syncs.append(time.perf_counter() - t)

        def timed_write(run_dir, state):
            t = time.perf_counter()
            write(run_dir, state)
            written.append(time.perf_counter() - t)

        store.RunStore.sync, checkpoint.write_checkpoint = timed_sync, timed_write  # type: ignore[method-assign]
        ratios, extras = [], []
        try:
            for repeat in range(args.repeats):
                before = len(written)
                often = _run(run, seed, tmp_path / f"often-{repeat}", EVERY)
                count = len(written) - before
                never = _run(run, seed, tmp_path / f"never-{repeat}", math.inf)
                ratios.append(often / never)
                extras.append((often - never) / max(count, 1))
                print(
                    f"repeat {repeat + 1}: {count} checkpoint(s) every {EVERY:g} s: {often:.2f} s, none: "
                    f"{never:.2f} s, ratio {often / never:.3f}"
                )
        finally:
            store.RunStore.sync, checkpoint.write_checkpoint = sync, write  # type: ignore[method-assign]
    checkpoint.CHECKPOINT_SECONDS = default
    take = statistics.median(takes)
    extra = statistics.median(extras)  # wall seconds a checkpoint adds to a run, whoever's thread pays
    share = max(extra, take) / default
    report = {
        "take_seconds": take,
        "sync_seconds_median": statistics.median(syncs),
        "write_seconds_median": statistics.median(written),
        "ratio_vs_none": statistics.median(ratios),
        "every_seconds": EVERY,
        "extra_seconds_per_checkpoint": extra,
        "share_at_default": share,
        "target_share": TARGET_SHARE,
        "met": share < TARGET_SHARE,
        "load_average": os.getloadavg()[0],
    }
    print(
        f"take (training thread) {take * 1e3:.2f} ms; store thread: fsync {report['sync_seconds_median'] * 1e3:.0f} "
        f"ms, checkpoint write {report['write_seconds_median'] * 1e3:.0f} ms (medians); a run with a checkpoint "
        f"every {EVERY:g} s / none: {report['ratio_vs_none']:.3f}, {extra * 1e3:.0f} ms more per checkpoint"
    )
    print(
        f"target: a run's time spent on checkpoints at CHECKPOINT_SECONDS = {default:g} s: {share:.3%} < "
        f"{TARGET_SHARE:.0%}: {'met' if report['met'] else 'NOT met'} (load average {report['load_average']:.1f})"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "checkpoint.json").write_text(json.dumps(report, indent=2))
    return 0 if report["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
