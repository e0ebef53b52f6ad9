"""Sweeps: many runs over a grid of settings, on local worker processes or a Dask cluster (docs/sweeps.md;
the file format and the table are docs/trace_format.md, "Sweeps").

    experiment = config.load("models/sweep_relu_init_scale.toml")      # a file with a [sweep] table
    summary = run_sweep(experiment, "out/relu", workers=2)             # sweep.csv, points/<point>/ ...
    summary = run_sweep(experiment, "out/relu", scheduler="tcp://host:8786", resume=True)

    table.py    sweep.csv's columns and values: the log gain per step of the top stream, lyapunov_max
    pools.py    where points run: LocalPool (worker processes), DaskPool (a distributed cluster)
    heap.py     the heap a point runs with: glibc's ceilings for its thresholds (a Dask nanny lowers them)
    runner.py   run_sweep: the folder, the dispatch loop, resume
    theory.py   what the sweep's plots draw over the measurements (mean-field curve, critical line)
"""

from .pools import DaskPool, LocalPool, PointOutcome, SweepError, compute_point
from .runner import MANIFEST, POINTS, TABLE, SweepProgress, SweepSummary, run_sweep
from .table import columns, log_gain_per_step, lyapunov_max, measure, point_name, read_table, top_stream

__all__ = [
    "run_sweep",
    "SweepProgress",
    "SweepSummary",
    "SweepError",
    "LocalPool",
    "DaskPool",
    "PointOutcome",
    "compute_point",
    "columns",
    "point_name",
    "read_table",
    "top_stream",
    "log_gain_per_step",
    "lyapunov_max",
    "measure",
    "MANIFEST",
    "TABLE",
    "POINTS",
]
