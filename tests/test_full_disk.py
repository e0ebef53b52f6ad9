"""A full disk for real: ``gradscope run`` in a process whose files may not grow past a limit
(resource.RLIMIT_FSIZE, with SIGXFSZ ignored so that a write past it fails with EFBIG as a full disk fails with
ENOSPC).  Nothing is mocked: Zarr, NumPy's npz writer and the exporter meet the error where they would.  The
limit is set after the kernels are compiled, so that these test our files; the last test meets it in
Numba's own cache save, with a cold cache: the kernel still runs (engine._jit), and says so once.

    limit 100 kB: every store chunk fits, the export's trace.npz (~270 kB) does not -> fails during the export
    limit 60 kB, 1000 iterations: the store's first chunk of per-timestep norms (512 rows of ~310 B) does not
                  fit; committing every 0.05 s, it fails after some commits -> during the recording, those kept
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradscope
from gradscope.store import read_store

ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """
schema_version = 1
[experiment]
name = "small"
seed = 2
[defaults]
hidden_size = 16
[defaults.task]
name = "adding"
seq_len = 40
batch_size = 2
[defaults.train]
iterations = {iterations}
[[runs]]
name = "relu"
"""

CHILD = """
import resource, signal, sys
import gradscope
from gradscope import cli, store
limit, experiment, flush = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
store.StoreWriter.__init__.__defaults__ = (flush,)  # commits this often: several before the limit is met
gradscope.run(experiment, iterations=3, progress=False, backend="numpy")  # every kernel compiled first
import zarr  # noqa: F401  (imported here, the store's first commit comes 0.05 s into the run, not after zarr's
             # import: else a run whose iterations are quick has its first chunk full before its first commit)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(cli.main(sys.argv[4:]))
"""


def _readable(folder: Path) -> list[str]:
    """Every file under its final name opens whole (npz, json, toml, csv, zarr chunks via read_store)."""
    seen = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and path.name.endswith(".zarr"):
            read_store(path)
        if not path.is_file() or ".zarr" in str(path):
            continue
        if path.suffix == ".npz":
            with np.load(path) as npz:
                [npz[k] for k in npz.files]
        elif path.suffix == ".json":
            json.loads(path.read_text())
        seen.append(str(path.relative_to(folder)))
    return seen


@pytest.mark.parametrize("limit, during", [(100_000, "export"), (60_000, "recording")])
def test_a_full_disk_gives_one_line_exit_1_and_no_truncated_file(tmp_path, limit, during):
    experiment = tmp_path / "small.toml"
    iterations = 200 if during == "export" else 1000
    experiment.write_text(EXPERIMENT.format(iterations=iterations))
    (tmp_path / "child.py").write_text(CHILD)
    for name in ("tmp", "home"):
        (tmp_path / name).mkdir()
    out = tmp_path / "out"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        TMPDIR=str(tmp_path / "tmp"),  # the rescue's first choice: under the limit too
        HOME=str(tmp_path / "home"),  # its second (~/.cache/gradscope/rescued)
        GRADSCOPE_LOG_DIR=str(tmp_path / "logs"),
    )
    flush = 1.0 if during == "export" else 0.05
    args = [str(limit), str(experiment), str(flush), "run", str(experiment), "--out", str(out), "--no-plots"]
    args += ["--backend", "numpy"]
    done = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    said = [line for line in lines if line.startswith("gradscope:")]
    assert said == [lines[-1]], done.stderr  # one line says it all
    line = lines[-1]
    assert line.startswith(f"gradscope: cannot write {out}: File too large; nor a copy elsewhere: ")
    recording = out / "recording"
    if during == "export":
        assert line.endswith(f"every record is kept in {recording} (gradscope.open {out} reads it)")
    else:
        assert f"{recording} keeps the records written before recording stopped ('relu' from {recording}" in line

    # nothing under a final name is truncated; no export was published; the export's temporaries are gone
    assert [p.name for p in out.iterdir()] == ["recording"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert "01-relu/init_params.npz" in "\n".join(_readable(out))

    # what the recording kept equals an uninterrupted run's records, bit for bit
    reference = gradscope.run(experiment, progress=False, backend="numpy")["relu"].trace.to_arrays()
    kept_run = gradscope.open(out)["relu"]
    kept = kept_run.trace.to_arrays()
    if during == "export":
        assert str(kept_run.status) == "completed" and len(kept_run.trace) == iterations
    else:
        assert 0 < len(kept_run.trace) < iterations and str(kept_run.status) == "stopped"
        assert kept_run.interrupted_at == kept_run.iterations - 1
    K = len(kept_run.trace)
    for name, values in kept.items():
        np.testing.assert_array_equal(values, reference[name][:K], err_msg=name)


KERNEL_CHILD = """
import resource, signal, sys, warnings
import numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))  # Numba's index and data files do not fit
from gradscope.engine import _jit
@_jit.kernel
def twice_plus_one(x):
    return 2.0 * x + 1.0
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = twice_plus_one(np.float64(3.0))  # compiled here; its save fails
    second = twice_plus_one(np.arange(3.0))  # a second signature: no second try, no second warning
print(first, second.tolist(), _jit.CACHE_SAVE_ERROR is not None)
print("|".join(str(w.message) for w in caught if issubclass(w.category, _jit.KernelCacheWarning)))
"""


def test_a_kernel_whose_cache_save_meets_a_full_disk_still_runs_and_says_so_once(tmp_path):
    cache = tmp_path / "cold-cache"  # nothing compiled there yet
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(cache))
    (tmp_path / "kernel_child.py").write_text(KERNEL_CHILD)  # a file: Numba caches only functions of files
    done = subprocess.run(
        [sys.executable, str(tmp_path / "kernel_child.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result, warned = done.stdout.strip().splitlines()
    assert result == "7.0 [1.0, 3.0, 5.0] True"
    assert warned.count("cannot be saved in the cache") == 1 and "File too large" in warned
    assert "Traceback" not in done.stderr
    saved = [p for p in cache.rglob("*twice_plus_one*")]
    assert all(p.stat().st_size <= 200 for p in saved)  # at most a partial temporary Numba removed, never kept
    assert not [p for p in saved if p.suffix in (".nbc", ".nbi")]
