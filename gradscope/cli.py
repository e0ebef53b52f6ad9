"""The command line.

    gradscope                                   open the app (on the lecture's demo)
    gradscope EXPERIMENT.toml                   open the app on an experiment file (or an exported folder)
    gradscope run EXPERIMENT.toml --out DIR [--seed S] [--iterations N] [--runs NAME,...] [--no-plots]
    gradscope validate EXPERIMENT.toml

Exit codes: 0 done (a diverged run is a result, not an error); 2 bad input (one message naming the file, run and
key; no traceback); 1 anything else: the traceback goes to a log file whose path is printed.
Progress goes to stderr, one line per run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """A mistake of the user's: printed as one line, exit code 2."""


def log_dir() -> Path:
    """Where tracebacks go: $GRADSCOPE_LOG_DIR, else ~/.cache/gradscope/logs, else the temporary folder."""
    for candidate in (os.environ.get("GRADSCOPE_LOG_DIR"), Path.home() / ".cache" / "gradscope" / "logs",
                      Path(tempfile.gettempdir()) / "gradscope-logs"):
        if not candidate:
            continue
        try:
            Path(candidate).mkdir(parents=True, exist_ok=True)
            return Path(candidate)
        except OSError:
            continue
    return Path(tempfile.gettempdir())


def write_log(text: str) -> Path:
    path = log_dir() / f"gradscope-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(path, "a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradscope", description="See how gradients flow through time in RNNs.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment headless and export its traces")
    run.add_argument("experiment", help="experiment file (TOML)")
    run.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier export to replace)")
    run.add_argument("--seed", type=int, help="override the experiment's seed (runs with their own seed keep it)")
    run.add_argument("--iterations", type=int, help="override train.iterations of every run")
    run.add_argument("--runs", help="comma-separated names of the runs to run (default: all)")
    run.add_argument("--no-plots", action="store_true", help="export traces only, no figures")
    run.add_argument("--backend", choices=("numba", "numpy"), default="numba",
                     help="numba: compiled kernels (default); numpy: the plain reference engine (slow)")
    run.add_argument("--processes", type=int, help="worker processes (default: chosen from the amount of work)")
    validate = sub.add_parser("validate", help="check an experiment file without running it")
    validate.add_argument("experiment", help="experiment file (TOML)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or (len(argv) == 1 and argv[0] not in ("run", "validate", "-h", "--help")):
            return _open_app(argv[0] if argv else None)
        args = _parser().parse_args(argv)
        if args.command == "validate":
            return _validate(args)
        return _run(args)
    except BadInput as error:
        print(f"gradscope: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gradscope: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exit_:              # argparse: usage errors exit 2 after printing one message
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    except Exception:
        path = write_log(traceback.format_exc())
        print(f"gradscope: unexpected error; the traceback is in {path}", file=sys.stderr)
        return EXIT_ERROR


def _load(path: str):
    from .config import ConfigError, load

    try:
        return load(path)
    except ConfigError as error:
        raise BadInput(str(error)) from None


def _open_app(path: str | None) -> int:
    if path is not None and not Path(path).exists():
        raise BadInput(f"{path}: no such experiment file or exported folder")
    if path is not None and Path(path).is_file():
        _load(path)                          # a bad file gets its one-line message here too
    from .gui.app import main as app_main

    return int(app_main(path) or 0)


def _validate(args) -> int:
    experiment = _load(args.experiment)
    print(f"{args.experiment}: ok, experiment {experiment.name!r} with {len(experiment.runs)} run(s): "
          f"{', '.join(r.name for r in experiment.runs)}", file=sys.stderr)
    return EXIT_OK


def _select(experiment, args):
    """The experiment as it will run: --runs, --seed and --iterations applied (and exported as such)."""
    runs = list(experiment.runs)
    if args.runs:
        wanted = [name.strip() for name in args.runs.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in {r.name for r in runs}]
        if unknown:
            raise BadInput(f"--runs: no run named {unknown[0]!r} in {args.experiment}; the runs are "
                           f"{', '.join(repr(r.name) for r in runs)}")
        runs = [r for r in runs if r.name in wanted]
    if args.iterations is not None:
        if args.iterations < 0:
            raise BadInput(f"--iterations: got {args.iterations}; expected an integer >= 0")
        runs = [r.model_copy(update={"train": r.train.model_copy(update={"iterations": args.iterations})})
                for r in runs]
    update = {"runs": runs}
    if args.seed is not None:
        if args.seed < 0:
            raise BadInput(f"--seed: got {args.seed}; expected an integer >= 0")
        update["seed"] = args.seed
    if args.processes is not None and args.processes < 1:
        raise BadInput(f"--processes: got {args.processes}; expected an integer >= 1")
    return experiment.model_copy(update=update)


def _compile(experiment, backend: str) -> None:
    """Compile (or load from Numba's cache) the kernels every run needs.  A cold compile takes seconds, so its
    progress is shown; loading a warm cache is quick and stays quiet."""
    if backend != "numba":
        return
    from .engine import cells

    for spec in {r.model_spec() for r in experiment.runs}:
        start = time.perf_counter()

        def report(done, total, name, spec=spec, start=start):
            if time.perf_counter() - start > 0.5:
                print(f"compiling kernels for {spec.label} ({spec.dtype}): {done}/{total} {name}", file=sys.stderr)

        cells.compile_kernels(spec, progress=report)


def _progress_line(index: int, total: int, result) -> str:
    rate = result.iterations / result.wall_seconds if result.wall_seconds > 0 else float("inf")
    line = (f"[{index}/{total}] {result.name}: {result.status}, {result.iterations} iteration(s) in "
            f"{result.wall_seconds:.2f} s ({rate:.1f} it/s)")
    if len(result.trace):
        loss = result.trace.array("loss")
        line += f", loss {loss[0]:.4g} -> {loss[-1]:.4g}"
    if result.nonfinite is not None:
        line += f"; {result.nonfinite}"
    if result.error:
        line += f"; {result.error.strip().splitlines()[-1]}"
    return line


def _run(args) -> int:
    from .experiment import choose_processes, run_experiment
    from .io import ExportError, FigureExportError, check_output_dir, export_experiment

    experiment = _select(_load(args.experiment), args)
    try:
        check_output_dir(args.out)
    except ExportError as error:
        raise BadInput(str(error)) from None
    workers = choose_processes(list(experiment.runs), args.processes)
    print(f"running {experiment.name!r}: {len(experiment.runs)} run(s)"
          f"{f' in {workers} processes' if workers > 1 else ''}", file=sys.stderr)
    _compile(experiment, args.backend)
    done = [0]

    def progress(result):
        done[0] += 1
        print(_progress_line(done[0], len(experiment.runs), result), file=sys.stderr)

    results = run_experiment(experiment, backend=args.backend, processes=workers, progress=progress)
    status = EXIT_OK
    failed = [r for r in results if r.status == "failed"]
    try:
        out = export_experiment(args.out, experiment, results, figures=not args.no_plots)
        print(f"exported to {out}", file=sys.stderr)
    except FigureExportError as error:
        path = write_log(error.details)
        print(f"gradscope: {error}; the traceback is in {path}", file=sys.stderr)
        status = EXIT_ERROR
    except ExportError as error:
        raise BadInput(str(error)) from None
    if failed:
        path = write_log("\n".join(f"run {r.name!r} failed:\n{r.error}" for r in failed))
        print(f"gradscope: {len(failed)} run(s) failed; the tracebacks are in {path}", file=sys.stderr)
        status = EXIT_ERROR
    if any(r.status == "stopped" for r in results):
        status = EXIT_ERROR
    return status


__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT"]
