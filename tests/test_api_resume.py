"""gradscope.run(..., out=DIR, resume=True) continues a SIGKILLed `gradscope run` as `--resume` does: the run
that had finished is kept, the one killed mid-way continues from its checkpoint, and the Results (and the export)
equal an uninterrupted run's with the same seed (spectral_radius and sigma_max within engine.spectra.TOLERANCE,
as tests/test_resume.py explains)."""

import os
import signal
import subprocess
import sys

import pytest

import gradscope
from gradscope.recording import RECORDING
from tests.test_resume import CHILD, ROOT, TRAINING, _checkpoint_at, _wait_for, assert_same_but_tracked


def test_gradscope_run_resumes_a_sigkilled_recording_and_ends_as_an_uninterrupted_run(tmp_path, capfd):
    iterations = 3000
    experiment = tmp_path / "train.toml"
    experiment.write_text(TRAINING.format(long=iterations))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ["run", str(experiment), "--no-plots", "--processes", "1", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.DEVNULL)
    long_dir = out / RECORDING / "02-long"
    try:
        _wait_for(lambda: _checkpoint_at(long_dir) >= 2, 300, "a checkpoint of the long run", process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    at = _checkpoint_at(long_dir)
    assert 0 < at < iterations
    assert gradscope.open(out).state == "interrupted"

    with pytest.raises(gradscope.ConfigError, match="needs out="):
        gradscope.run(experiment, resume=True, progress=False)
    capfd.readouterr()
    resumed = gradscope.run(experiment, out=out, resume=True, progress=False, plots=False, processes=1)
    err = capfd.readouterr().err
    assert "resuming: 'short' finished before and is kept" in err
    assert f"run 'long' resumed at iteration {at} of {iterations}" in err
    assert not (out / RECORDING).exists() and (out / "02-long" / "trace.npz").exists()

    whole = gradscope.run(experiment, progress=False, processes=1)  # the same seed, never interrupted
    assert resumed.names == whole.names
    for name in whole.names:
        got, want = resumed[name], whole[name]
        assert (got.status, got.iterations) == (want.status, want.iterations)
        a, b = got.trace.to_arrays(), want.trace.to_arrays()
        assert sorted(a) == sorted(b)
        assert_same_but_tracked(a, b, name == "long", f"{name}: ")
    reopened = gradscope.open(out)
    assert reopened.state == "completed" and reopened["long"].iterations == iterations
