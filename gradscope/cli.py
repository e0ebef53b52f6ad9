"""The command line.

    gradscope                                   open the app (on the lecture's demo)
    gradscope EXPERIMENT.toml                   open the app on an experiment file (or an exported folder)
    gradscope run EXPERIMENT.toml --out DIR [--seed S] [--iterations N] [--runs NAME,...] [--no-plots] [--resume]
    gradscope validate EXPERIMENT.toml
    gradscope sweep EXPERIMENT.toml --out DIR [--workers N] [--scheduler tcp://HOST:PORT] [--resume] [--no-traces]

Exit codes: 0 done (a diverged run is a result, not an error); 2 bad input (one message naming the file, run and
key; no traceback); 1 anything else: the traceback goes to a log file whose path is printed; 130 / 143 stopped
by SIGINT (Ctrl+C) / SIGTERM, after exporting what was computed.
Progress goes to stderr: one line per run as it ends; on a terminal also a status line that follows the
running runs (iterations done, iterations per second).

This module imports only the standard library at start-up: the engine (NumPy, Numba), the config models
(pydantic) and the figures (Qt) are imported when a command needs them.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from pathlib import Path

from .terminal import (
    Console,
    StoppedBeforeRuns,
    StopRequest,
    compute_in_thread as _compute,
    load_kernels,
    log_note,
    progress_line,
    remove_if_empty,
    rescue,
)

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """A mistake of the user's: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradscope",
        description="See how gradients flow through time in RNNs.",
        epilog="gradscope [EXPERIMENT.toml | EXPORT_DIR] without a command opens the app (on the lecture's demo "
        "when given nothing).  Exit codes: 0 done, 2 bad input, 130/143 stopped by a signal (after "
        "exporting), 1 anything else (the traceback goes to a log file).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment headless and export its traces")
    run.add_argument("experiment", help="experiment file (TOML)")
    run.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier export to replace)")
    run.add_argument("--seed", type=int, help="override the experiment's seed (runs with their own seed keep it)")
    run.add_argument("--iterations", type=int, help="override train.iterations of every run")
    run.add_argument("--runs", help="comma-separated names of the runs to run (default: all)")
    run.add_argument("--no-plots", action="store_true", help="export traces only, no figures")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted recording in --out: keep its finished runs, continue the others from "
        "their last checkpoint (every ~10 s of computing)",
    )
    run.add_argument(
        "--backend",
        choices=("numba", "numpy"),
        default="numba",
        help="numba: compiled kernels (default); numpy: the plain reference engine (slow)",
    )
    run.add_argument("--processes", type=int, help="worker processes (default: chosen from the amount of work)")
    sweep = sub.add_parser("sweep", help="run every point of an experiment's [sweep] table into sweep.csv")
    sweep.add_argument("experiment", help="experiment file (TOML) with a [sweep] table")
    sweep.add_argument(
        "--out", required=True, help="folder of the sweep (new or empty; with --resume, the earlier one)"
    )
    sweep.add_argument("--workers", type=int, help="local worker processes (default: one per CPU)")
    sweep.add_argument(
        "--scheduler", help="run the points on the Dask cluster whose scheduler is here (tcp://HOST:PORT)"
    )
    sweep.add_argument("--resume", action="store_true", help="finish the sweep in --out: run only the points not done")
    sweep.add_argument("--no-traces", action="store_true", help="write sweep.csv only, not each point's export")
    sweep.add_argument("--backend", choices=("numba", "numpy"), default="numba", help="as for run")
    validate = sub.add_parser("validate", help="check an experiment file without running it")
    validate.add_argument("experiment", help="experiment file (TOML)")
    compile_ = sub.add_parser("compile", help="compile every engine kernel into the cache now (install.sh does it)")
    compile_.add_argument(
        "--jobs", type=int, help="processes compiling at once (default: one per dtype, up to the CPUs)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or (len(argv) == 1 and argv[0] not in ("run", "sweep", "validate", "compile", "-h", "--help")):
            return _open_app(argv[0] if argv else None)
        args = _parser().parse_args(argv)
        if args.command == "validate":
            return _validate(args)
        if args.command == "compile":
            return _compile_all(args)
        if args.command == "sweep":
            return _sweep(args)
        return _run(args)
    except BadInput as error:
        print(f"gradscope: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # Ctrl+C outside a run (e.g. while loading a file)
        print("gradscope: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except SystemExit as exit_:  # argparse: usage errors exit 2 after printing one message
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001  (the last resort: one line and a log, never a bare traceback)
        import traceback

        print(f"gradscope: unexpected error; {log_note(traceback.format_exc())}", file=sys.stderr)
        return EXIT_ERROR


def _load(path: str):
    from .config import ConfigError, load

    try:
        return load(path)
    except ConfigError as error:
        raise BadInput(str(error)) from None


def _open_app(path: str | None) -> int:
    """The app, on ``path``.  A bad or missing file is said on stderr in one line and the window opens all the
    same, with a dialog naming the file and the key (docs/gui.md): someone who started it from a menu sees it."""
    if path is not None and not Path(path).exists():
        print(f"gradscope: {path}: no such experiment file or exported folder", file=sys.stderr)
    elif path is not None and Path(path).is_file():
        try:
            _load(path)
        except BadInput as error:
            print(f"gradscope: {error}", file=sys.stderr)
    from .gui.app import main as app_main

    return int(app_main(path, end_process=True) or 0)  # the process ends when the window closes


def _validate(args) -> int:
    experiment = _load(args.experiment)
    print(
        f"{args.experiment}: ok, experiment {experiment.name!r} with {len(experiment.runs)} run(s): "
        f"{', '.join(r.name for r in experiment.runs)}"
        + (f"; its [sweep] has {_sweep_size(experiment)} point(s)" if experiment.sweep is not None else ""),
        file=sys.stderr,
    )
    return EXIT_OK


def _sweep_size(experiment) -> int:
    from .config import sweep_points

    return len(sweep_points(experiment))


def _compile_all(args) -> int:
    """gradscope compile: every kernel set into Numba's cache, so that no later start waits for a compile."""
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs: got {args.jobs}; expected 1 or more")
    start = time.perf_counter()
    from . import engine
    from .engine import _jit

    if not _jit.CACHE:
        print(
            "gradscope: no writable folder for the kernel cache; kernels will be compiled in every process",
            file=sys.stderr,
        )
    engine.compile_all(args.jobs)
    print(
        f"gradscope: kernels ready in {_jit.CACHE_DIR or 'memory'} ({time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
    )
    return EXIT_OK


def _select(experiment, args):
    """The experiment as it will run: --runs, --seed and --iterations applied (and exported as such)."""
    runs = list(experiment.runs)
    if args.runs:
        wanted = [name.strip() for name in args.runs.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in {r.name for r in runs}]
        if unknown:
            raise BadInput(
                f"--runs: no run named {unknown[0]!r} in {args.experiment}; the runs are "
                f"{', '.join(repr(r.name) for r in runs)}"
            )
        runs = [r for r in runs if r.name in wanted]
    if args.iterations is not None:
        if not 0 <= args.iterations < 2**63:
            raise BadInput(f"--iterations: got {args.iterations}; expected an integer from 0 to 2**63 - 1")
        runs = [
            r.model_copy(update={"train": r.train.model_copy(update={"iterations": args.iterations})}) for r in runs
        ]
    update = {"runs": runs}
    if args.seed is not None:
        if not 0 <= args.seed < 2**63:  # an experiment file's seed (TOML's integers): exported as such
            raise BadInput(f"--seed: got {args.seed}; expected an integer from 0 to 2**63 - 1")
        update["seed"] = args.seed
    if args.processes is not None and args.processes < 1:
        raise BadInput(f"--processes: got {args.processes}; expected an integer >= 1")
    return experiment.model_copy(update=update)


# ------------------------------------------------------------------------------------------------ run
def write_figures(experiment, results, plots_dir, ahead=None):
    """The figures of an export (gui.figures.export_figures), with Qt imported only now: ``gradscope run
    --no-plots`` never loads it.  Without a display Qt draws offscreen.  Called by io.export_experiment inside its
    error handling, so a Qt that cannot load is a figure failure (exit 1, traces exported), not a crash.
    ``ahead``: the pages drawn while the runs computed (gui.page_ahead), moved into plots_dir first."""
    from .gui.warmup import offscreen_without_display

    offscreen_without_display()
    from .gui.figures import export_figures

    if ahead is None:
        return export_figures(experiment, results, plots_dir)
    return export_figures(experiment, results, plots_dir, ready=ahead.move_into(plots_dir))


def _run(args) -> int:
    experiment = _select(_load(args.experiment), args)
    from .config import ConfigError
    from .experiment import check_memory, choose_processes, run_experiment
    from .io import ExportError, FigureExportError, check_output_dir, export_experiment
    from .recording import Recording
    from .runs import RunStatus

    fresh = not Path(args.out).exists()
    try:
        check_memory(experiment)  # this machine's question, before anything is compiled or run
        check_output_dir(args.out)
        recording = Recording.start(args.out, experiment, resume=args.resume)
    except (ConfigError, ExportError) as error:
        raise BadInput(str(error)) from None
    except OSError as error:
        raise BadInput(f"--out {args.out}: cannot record there: {error.strerror or error}") from None
    kept = recording.finished_runs(experiment) if args.resume else {}
    todo = [i for i in range(len(experiment.runs)) if i not in kept]
    if args.resume:
        for line in recording.resume_lines(experiment, kept, todo):
            print(line, file=sys.stderr)
    workers = choose_processes(list(experiment.runs), args.processes)
    ahead = (
        None
        if args.no_plots
        else importlib.import_module(".gui.page_ahead", __package__).for_run(
            recording.path / "plots", [r.name for r in experiment.runs], workers
        )
    )  # the ended runs' waterfall pages drawn while the others compute, when worth it
    console = Console([r.name for r in experiment.runs])
    console.line(
        f"running {experiment.name!r}: {len(experiment.runs)} run(s){f' in {workers} processes' if workers > 1 else ''}"
    )
    stop = StopRequest(tty=console.tty)
    with stop.handling():
        try:
            load_kernels(experiment, args.backend, console, stop)
        except StoppedBeforeRuns:
            console.clear()
            print(
                f"gradscope: stopped by {stop.name} before any run started; nothing exported ({args.out} "
                f"left as it was)",
                file=sys.stderr,
            )
            return stop.exit_code
        ran = _compute(
            lambda progress, on_iteration: run_experiment(
                experiment.model_copy(update={"runs": [experiment.runs[i] for i in todo]}),
                backend=args.backend,
                processes=workers,
                stop=stop,
                progress=progress if ahead is None else ahead.also(progress),
                on_iteration=lambda index, *rest: on_iteration(todo[index], *rest),
                record_to=[recording.run_dir(i, experiment.runs[i].name) for i in todo],
                resume=args.resume,
            ),
            console,
            meanwhile=None
            if args.no_plots
            else importlib.import_module(".gui.warmup", __package__).import_figure_renderer,
        )
        results = [kept[i] if i in kept else ran[todo.index(i)] for i in range(len(experiment.runs))]
        console.clear()
        stopped = stop.is_set() or any(r.status is RunStatus.STOPPED for r in results)
        computed = sum(r.iterations for r in results)
        if stopped and computed == 0:
            recording.close()
            if fresh:
                remove_if_empty(Path(args.out))
            print(
                f"gradscope: stopped before any iteration was computed; nothing exported ({args.out} left as it was)",
                file=sys.stderr,
            )
            return stop.exit_code if stop.signum is not None else 128 + signal.SIGINT
        status = EXIT_OK
        stop.exporting = True
        try:
            out = export_experiment(
                args.out,
                experiment,
                results,
                figures=None if args.no_plots else write_figures if ahead is None else ahead.writer(write_figures),
                extra_files=recording.move_stores,
            )
            print(f"exported to {out}", file=sys.stderr)
            for r in results:  # the export has every record; the live copy had stopped
                if r.store_error:
                    print(
                        f"gradscope: run {r.name!r}: recording to disk had stopped ({r.store_error})", file=sys.stderr
                    )
        except FigureExportError as error:
            print(f"gradscope: {error}; {log_note(error.details)}", file=sys.stderr)
            status = EXIT_ERROR
        except ExportError as error:
            raise BadInput(str(error)) from None
        except OSError as error:  # the destination broke after the check (disk full, permissions changed)
            status = EXIT_ERROR
            rescue(args.out, error, experiment, results, export_experiment, recording)
        finally:
            if ahead is not None:
                ahead.close()  # the export took its pages (or failed before): the worker ends
    failed = [r for r in results if r.status is RunStatus.FAILED]
    if failed:
        note = log_note("\n".join(f"run {r.name!r} failed:\n{r.error}" for r in failed), "tracebacks")
        print(f"gradscope: {len(failed)} run(s) failed; {note}", file=sys.stderr)
        status = EXIT_ERROR
    if stopped:
        cause = f"by {stop.name}" if stop.signum is not None else "by an interrupt"
        print(f"gradscope: stopped {cause}; the {computed} iteration(s) computed are exported", file=sys.stderr)
        status = stop.exit_code if stop.signum is not None else 128 + signal.SIGINT
    return status


# ---------------------------------------------------------------------------------------------- sweep
def _sweep(args) -> int:
    """gradscope sweep: every point of the file's [sweep] into --out (gradscope.sweep.run_sweep)."""
    experiment = _load(args.experiment)
    from .config import ConfigError, sweep_points
    from .experiment import check_memory
    from .sweep import SweepError, run_sweep
    from .terminal import SweepConsole

    if experiment.sweep is None:
        raise BadInput(f"{args.experiment}: no [sweep] table; expected one to sweep (docs/sweeps.md)")
    if args.workers is not None and args.workers < 1:
        raise BadInput(f"--workers: got {args.workers}; expected an integer >= 1")
    if args.workers is not None and args.scheduler:
        raise BadInput("--workers and --scheduler: give one (the cluster's workers are its own)")
    points = sweep_points(experiment)
    try:
        if not args.scheduler:  # a cluster's workers answer for their own memory
            check_memory(experiment, list({p.run.model_dump_json(): p.run for p in points}.values()))
    except ConfigError as error:
        raise BadInput(str(error)) from None
    console = SweepConsole()
    stop = StopRequest(tty=console.tty)
    console.line(f"sweeping {experiment.name!r}: {len(points)} point(s) into {args.out}")
    started = time.perf_counter()

    def compiling(done, total, name):
        if time.perf_counter() - started > 0.5:  # a cold compile takes seconds; a warm cache stays quiet
            text = f"compiling kernels: {done}/{total} {name}"
            console.console.status(text) if console.tty else console.line(text) if done == total else None

    with stop.handling():
        try:
            summary = run_sweep(
                experiment,
                args.out,
                workers=args.workers,
                scheduler=args.scheduler,
                resume=args.resume,
                traces=not args.no_traces,
                backend=args.backend,
                stop=stop,
                on_progress=console.progress,
                on_compile=compiling,
            )
        except SweepError as error:
            raise BadInput(str(error)) from None
    console.clear()
    progress = summary.progress
    resumed = f" ({progress.resumed} from before)" if progress.resumed else ""
    print(
        f"sweep: {progress.done}/{progress.total} point(s) done{resumed}, {progress.failed} failed, in "
        f"{progress.where or 'nothing to run'}; table in {summary.out / 'sweep.csv'}",
        file=sys.stderr,
    )
    status = EXIT_OK
    if summary.errors:
        errors = "\n".join(f"point {name} failed:\n{text}" for name, text in summary.errors.items())
        note = log_note(errors, "tracebacks")
        print(f"gradscope: {len(summary.errors)} point(s) failed; {note}", file=sys.stderr)
        status = EXIT_ERROR
    if summary.stopped:
        left = progress.total - progress.done
        print(
            f"gradscope: stopped by {stop.name or 'an interrupt'}; the {progress.done} finished point(s) are in "
            f"sweep.csv, {left} left: gradscope sweep {args.experiment} --out {args.out} --resume",
            file=sys.stderr,
        )
        status = stop.exit_code if stop.signum is not None else 128 + signal.SIGINT
    return status


__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT", "StopRequest", "Console", "progress_line"]
