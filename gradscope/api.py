"""GradScope from Python: the functions at the top of the package, the same code the command line runs.

    import gradscope
    results = gradscope.run("models/relu_init_scale.toml")          # or a config.Experiment built in Python
    results = gradscope.run(experiment, out="runs/relu", iterations=200, runs=["relu 3/n"], seed=1)
    results = gradscope.open("runs/relu")                          # an export, a recording, a killed run
    results = gradscope.open("runs/relu", "runs/relu-rerun")        # several folders, overlaid
    results.to_xarray(), results.to_pandas(), results.figure("through_time")

This module sits above the GUI (pyproject.toml's layers): it hands ``Results`` the GUI's renderer, imported only
when a figure is drawn, so ``gradscope.run`` without figures never loads Qt.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from .config import ConfigError, Experiment, dumps, load, loads
from .results import Results


def _render(results, experiment, view, fmt, size) -> bytes:
    from .gui.inline import render_view

    return render_view(results, experiment, view, fmt, size)


def _write_figures(experiment, results, plots_dir):
    from .gui.figures import export_figures

    return export_figures(experiment, results, plots_dir)


def validated(experiment: Experiment | str | os.PathLike) -> Experiment:
    """An experiment file loaded (a path, or a shipped preset's name: "relu_init_scale"), or an Experiment
    built in Python checked exactly as a file is (its TOML
    through config.loads): two runs with one name, a bad key or a task that cannot be built are refused
    with the file's ConfigError, naming the run and the key."""
    if isinstance(experiment, str | os.PathLike):
        path = Path(experiment)
        if not path.exists() and len(path.parts) == 1:  # a shipped preset by name: "relu_init_scale"
            from .presets import presets_dir

            shipped = presets_dir() / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
            path = shipped if shipped.exists() else path
        return load(path)
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"experiment: got {type(experiment).__name__}; expected a path or a gradscope.config.Experiment"
        )
    source = experiment.source if experiment.source is not None else f"<experiment {experiment.name!r}>"
    checked = loads(dumps(experiment), source=source)
    return checked.model_copy(update={"source": experiment.source})


def run(
    experiment: Experiment | str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    seed: int | None = None,
    iterations: int | None = None,
    runs: list[str] | None = None,
    progress: bool = True,
    plots: bool = True,
    backend: str = "numba",
    processes: int | None = None,
    resume: bool = False,
) -> Results:
    """Run every run of ``experiment`` (a path, a shipped preset's name or an Experiment) and return their
    Results.

    ``out``: record into this folder as the runs go and export there at the end, as ``gradscope run --out``
    does (traces, figures unless ``plots=False``); without it, nothing touches the disk.  ``seed``,
    ``iterations``, ``runs``: as --seed, --iterations, --runs.  ``progress``: a bar per run (tqdm; in a
    notebook its widget).  Interrupting the kernel (or Ctrl+C) stops the runs after their iteration and keeps
    what they computed.  ``resume``: continue the killed or stopped recording in ``out``, as ``gradscope run
    --resume`` does (its finished runs kept, the others from their checkpoints; a line each on stderr).  Raises
    ConfigError before anything runs when the experiment or an option is refused.
    """
    from .experiment import check_memory, run_experiment, select

    chosen = select(validated(experiment), runs=runs, seed=seed, iterations=iterations)
    check_memory(chosen)
    if resume and out is None:
        raise ConfigError("resume=True needs out=: the folder of the recording to continue")
    recording = None
    kept: dict = {}  # index -> RunResult: the runs a resumed recording had finished
    todo = list(range(len(chosen.runs)))
    if out is not None:
        from .io import check_output_dir
        from .recording import Recording

        check_output_dir(out)
        recording = Recording.start(out, chosen, resume=resume)
        if resume:
            kept = recording.finished_runs(chosen)
            todo = [i for i in todo if i not in kept]
            for line in recording.resume_lines(chosen, kept, todo):
                print(line, file=sys.stderr)
    bars = _Bars(chosen) if progress else None
    try:
        ran = run_experiment(
            chosen.model_copy(update={"runs": [chosen.runs[i] for i in todo]}),
            backend=backend,
            processes=processes,
            progress=bars.finished if bars else None,
            on_iteration=(lambda index, *rest: bars.update(todo[index], *rest)) if bars else None,
            record_to=[recording.run_dir(i, chosen.runs[i].name) for i in todo] if recording else None,
            resume=resume,
        )
    finally:
        if bars:
            bars.close()
    results = [kept[i] if i in kept else ran[todo.index(i)] for i in range(len(chosen.runs))]
    sources: list[Path | None] = [None] * len(results)
    if recording is not None and out is not None:
        from .io import export_experiment

        if sum(r.iterations for r in results) == 0:
            recording.close()
        else:
            folder = export_experiment(
                out, chosen, results, figures=_write_figures if plots else None, extra_files=recording.move_stores
            )
            sources = [folder] * len(results)
    state = "stopped" if any(str(r.status) == "stopped" for r in results) else "completed"
    return Results(chosen, results, state=state, sources=sources, renderer=_render)


def open(*paths: str | os.PathLike) -> Results:  # noqa: A001  (gradscope.open, as the issue names it)
    """The runs in one or more folders, overlaid: exported folders, folders still being written, folders of
    killed runs (each run "interrupted at iteration i"), and sweep folders (every point, and sweep.csv).
    Runs whose names repeat across folders are told apart by their folder's name."""
    from .recording import open_folder
    from .sessions import open_any

    if not paths:
        raise TypeError("gradscope.open: give at least one folder")
    folders, sweep = [], None
    for path in paths:
        path = Path(path)
        if (path / "sweep.csv").exists() and (path / "points").is_dir():
            import pandas as pd

            sweep = pd.read_csv(path / "sweep.csv")
            folders += [open_folder(p) for p in sorted((path / "points").iterdir()) if p.is_dir()]
        else:
            folders.append(open_any(path))  # a session of the app too (gradscope.sessions)
    runs, streams, analysis = [], {}, {}
    sources: list[Path | None] = []
    taken: set[str] = set()
    for folder in folders:
        for result in folder.results:
            old = result.name
            if old in taken:  # the same name in another folder: told apart by the folder's name
                new = f"{old} [{folder.path.name}]"
                result = dataclasses.replace(result, name=new, run=result.run.model_copy(update={"name": new}))
            taken.add(result.name)
            runs.append(result)
            sources.append(folder.path)
            if old in folder.streams:
                streams[result.name] = folder.streams[old]
            if old in folder.analysis:
                analysis[result.name] = folder.analysis[old]
    states = {folder.state for folder in folders}
    state = next((s for s in ("recording", "interrupted") if s in states), "completed")
    first = folders[0].experiment
    name = " + ".join(dict.fromkeys(f.experiment.name for f in folders))
    experiment = first.model_copy(update={"runs": [r.run for r in runs], "name": name})
    return Results(experiment, runs, state, sources, streams, analysis, sweep, renderer=_render)


def _tqdm():
    """tqdm.auto (the notebook's widget in Jupyter) when ipywidgets is there to draw it; else the text bar (what
    tqdm.auto would fall back to, after a warning)."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm


class _Bars:
    """A tqdm bar per run (tqdm.auto: the notebook's widget, else the terminal's), made as its run starts."""

    def __init__(self, experiment: Experiment):
        self.names = [r.name for r in experiment.runs]
        self.bars: dict[int, object] = {}

    def update(self, index: int, done: int, total: int, seconds: float) -> None:
        tqdm = _tqdm()
        bar = self.bars.get(index)
        if bar is None:
            bar = self.bars[index] = tqdm(total=total, desc=self.names[index], unit="it", leave=True)
        bar.update(done - bar.n)  # type: ignore[attr-defined]

    def finished(self, result) -> None:
        bar = self.bars.pop(self.names.index(result.name), None)
        if bar is not None:
            bar.set_postfix_str(str(result.status))  # type: ignore[attr-defined]
            bar.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()  # type: ignore[attr-defined]
        self.bars.clear()


__all__ = ["run", "open", "validated", "Results", "ConfigError"]
