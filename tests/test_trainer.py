"""The training generator: records, recording rule, seeds, determinism, divergence, clipping, pausing."""

from pathlib import Path

import numpy as np
import pytest

from gradscope.config import RunConfig
from gradscope.engine import reference
from gradscope.engine.metrics import step_metric_names
from gradscope.engine.trainer import Training, run_training

BACKEND = "numpy"  # the Numba kernels have the same semantics; these tests check the loop, not the kernels


def make_run(**kw):
    base = {
        "name": "t",
        "hidden_size": 12,
        "task": {"name": "adding", "seq_len": 15, "batch_size": 4},
        "train": {"iterations": 10, "optimizer": "adam", "lr": 0.01},
    }
    for key, value in kw.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return RunConfig.model_validate(base)


def test_iteration_zero_is_one_pass_at_the_initial_parameters_on_the_first_batch():
    run = make_run(cell="lstm")
    training = Training(run, seed=3, backend=BACKEND)
    record = next(iter(training))
    b = training.first_batch
    expected = reference.bptt(training.spec, training.init_params, b["x"], b["target"], b["mask"], "mse")
    assert record.iteration == 0 and record.recorded and record.loss == expected.loss
    assert record.grad_norm == pytest.approx(expected.grads.global_norm(), rel=1e-12)
    for name in step_metric_names(training.spec) + ("loss_t",):
        np.testing.assert_array_equal(record.metrics[name], expected.metrics[name])
    assert record.metrics["h_norm"].shape == (1, 15)
    norms = expected.grads.norms()
    assert record.metrics["grad_norm_W_hh"] == pytest.approx([norms["layer0.W_hh"]])
    assert record.metrics["grad_norm_W_yh"] == pytest.approx(norms["readout.W_yh"])
    W_hh = training.init_params.layers[0].W_hh.astype(np.float64)
    rho = max(np.max(np.abs(np.linalg.eigvals(W_hh[g * 12 : (g + 1) * 12]))) for g in range(4))
    assert record.metrics["spectral_radius"] == pytest.approx([rho], rel=1e-9)


def test_iterations_zero_gives_one_record_and_no_update():
    run = make_run(train={"iterations": 0})
    training = Training(run, seed=0, backend=BACKEND)
    records = list(training)
    assert [r.iteration for r in records] == [0] and records[0].recorded
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(training.params.named(), training.init_params.named()))


def test_recording_rule_first_every_kth_and_last():
    records = list(run_training(make_run(train={"iterations": 11, "record_every": 4}), seed=0, backend=BACKEND))
    assert [r.iteration for r in records] == list(range(11))
    assert [r.iteration for r in records if r.recorded] == [0, 4, 8, 10]
    assert all(r.metrics == {} for r in records if not r.recorded)
    assert all("grad_h_norm" in r.metrics for r in records if r.recorded)


def test_same_run_and_seed_give_identical_records_and_the_init_params_are_a_copy():
    run = make_run(cell="lstm", train={"iterations": 6, "optimizer": "sgd", "momentum": 0.9, "lr": 0.1})
    a, b = Training(run, 5, backend=BACKEND), Training(run, 5, backend=BACKEND)
    ra, rb = list(a), list(b)
    assert [r.loss for r in ra] == [r.loss for r in rb]
    for x, y in zip(ra, rb):
        assert x.metrics.keys() == y.metrics.keys()
        assert all(np.array_equal(x.metrics[k], y.metrics[k]) for k in x.metrics)
    assert not np.array_equal(a.params.layers[0].W_hh, a.init_params.layers[0].W_hh)
    c = Training(run, 6, backend=BACKEND)
    assert not np.array_equal(c.init_params.layers[0].W_hh, a.init_params.layers[0].W_hh)


def test_runs_with_the_same_seed_see_the_same_data_whatever_their_model():
    a = Training(make_run(cell="rnn", hidden_size=8), 11, backend=BACKEND)
    b = Training(make_run(cell="lstm", hidden_size=20, init={"recurrent": "orthogonal"}), 11, backend=BACKEND)
    for key in ("x", "target", "mask"):
        np.testing.assert_array_equal(a.first_batch[key], b.first_batch[key])
    for _ in zip(range(3), a, b):
        pass
    np.testing.assert_array_equal(a.task.batch(a._data_rng)[0], b.task.batch(b._data_rng)[0])


def test_fixed_batch_reuses_the_first_batch():
    run = make_run(task={"fixed_batch": True}, train={"iterations": 3, "optimizer": "sgd", "lr": 0.0})
    losses = [r.loss for r in run_training(run, 0, backend=BACKEND)]
    assert losses[0] == losses[1] == losses[2]  # lr 0 and the same batch: same loss


def test_divergence_yields_a_located_record_and_ends():
    run = make_run(
        init={"recurrent_scale": 6.0},
        hidden_size=32,
        task={"name": "probe", "seq_len": 40, "batch_size": 4},
        train={"iterations": 50, "optimizer": "sgd", "lr": 10.0, "record_every": 100},
    )
    records = list(run_training(run, 0, backend=BACKEND))
    last = records[-1]
    assert last.nonfinite is not None and last.recorded and last.iteration == len(records) - 1 < 49
    assert last.nonfinite.iteration == last.iteration
    assert last.nonfinite.quantity in ("h", "loss", "grad_h") or last.nonfinite.quantity.startswith("grad ")
    assert all(r.nonfinite is None for r in records[:-1])
    assert "h_norm" in last.metrics  # the diverged pass keeps its metrics


def test_clipping_is_recorded_and_bounds_the_update():
    run = make_run(train={"iterations": 2, "optimizer": "sgd", "lr": 1.0, "clip_norm": 1e-3})
    training = Training(run, 0, backend=BACKEND)
    first = next(iter(training))
    assert first.clipped and first.grad_norm > 1e-3
    step = np.sqrt(
        sum(
            np.sum((a.astype(np.float64) - b) ** 2)
            for (_, a), (_, b) in zip(training.params.named(), training.init_params.named())
        )
    )
    assert step == pytest.approx(1e-3, rel=1e-4)  # lr * clipped gradient


def test_close_stops_and_not_pulling_pauses():
    training = Training(make_run(train={"iterations": 100}), 0, backend=BACKEND)
    gen = iter(training)
    next(gen), next(gen)
    assert training.iteration == 2  # nothing runs between pulls
    training.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_float32_runs_stay_float32():
    training = Training(make_run(dtype="float32"), 0, backend=BACKEND)
    list(training)
    assert all(a.dtype == np.float32 for _, a in training.params.named())
    assert training.first_batch["x"].dtype == np.float32


def test_numba_backend_matches_numpy_when_available():
    pytest.importorskip("gradscope.engine.driver")
    run = make_run(dtype="float64", train={"iterations": 3})
    a = list(run_training(run, 0, backend="numpy"))
    b = list(run_training(run, 0, backend="numba"))
    for x, y in zip(a, b):
        assert x.loss == pytest.approx(y.loss, rel=1e-10)
        np.testing.assert_allclose(x.metrics["grad_h_norm"], y.metrics["grad_h_norm"], rtol=1e-9)


def test_numba_backend_is_bit_identical_run_to_run():
    pytest.importorskip("gradscope.engine.driver")
    run = make_run(cell="lstm", layers=2, train={"iterations": 4, "record_every": 1})
    a, b = list(run_training(run, 1, backend="numba")), list(run_training(run, 1, backend="numba"))
    for x, y in zip(a, b):
        assert x.loss == y.loss and x.grad_norm == y.grad_norm
        assert all(np.array_equal(x.metrics[k], y.metrics[k]) for k in x.metrics)


def test_every_gradient_metric_is_taken_before_clipping():
    # A clip far below the gradient's norm: the record must still show the raw gradient, everywhere.
    run = make_run(layers=2, train={"iterations": 2, "optimizer": "sgd", "lr": 0.1, "clip_norm": 1e-4})
    training = Training(run, seed=4, backend=BACKEND)
    record = next(iter(training))
    b = training.first_batch
    raw = reference.bptt(training.spec, training.init_params, b["x"], b["target"], b["mask"], "mse").grads.norms()
    assert record.clipped and record.grad_norm > 1e3 * 1e-4
    for l in range(2):
        for p in ("W_hx", "W_hh", "b_h"):
            assert record.metrics[f"grad_norm_{p}"][l] == pytest.approx(raw[f"layer{l}.{p}"], rel=1e-12)
    assert record.metrics["grad_norm_W_yh"] == pytest.approx(raw["readout.W_yh"], rel=1e-12)
    per_parameter = np.concatenate(
        [np.ravel(record.metrics[f"grad_norm_{p}"]) for p in ("W_hx", "W_hh", "b_h", "W_yh", "b_y")]
    )
    assert np.sqrt(np.sum(per_parameter**2)) == pytest.approx(record.grad_norm, rel=1e-12)


SPY_ON_BLAS_THREADS = """
import json, sys
import numpy as np
from threadpoolctl import threadpool_info
import gradscope.engine.trainer as trainer
from gradscope.config import RunConfig

def numpy_blas():   # thread counts of the BLAS libraries NumPy ships (the ones np.linalg calls)
    return sorted({lib["num_threads"] for lib in threadpool_info()
                   if lib["user_api"] == "blas" and "numpy" in lib["filepath"]})

seen, real = [], trainer.parameter_metrics
def spy(*args, **kwargs):
    seen.append(numpy_blas())
    return real(*args, **kwargs)
trainer.parameter_metrics = spy
run = RunConfig.model_validate({"hidden_size": 12, "task": {"name": "adding", "seq_len": 15, "batch_size": 4},
                                "train": {"iterations": 3}})
before = numpy_blas()
list(trainer.Training(run, 0, backend="numpy"))
print(json.dumps({"before": before, "seen": seen, "after": numpy_blas()}))
"""


@pytest.mark.parametrize("threads", ["2", "1"])
def test_the_per_parameter_metrics_run_on_one_blas_thread_and_the_setting_is_restored(threads):
    # In a fresh process: the OpenBLAS thread count is the process's, and (OpenBLAS 0.3.30) one set from a
    # Qt thread, as the GUI tests do, cannot be changed from the main thread afterwards.
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("threadpoolctl")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads)
    proc = subprocess.run(
        [sys.executable, "-c", SPY_ON_BLAS_THREADS], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    if not found["before"]:
        pytest.skip("NumPy's BLAS is not one that threadpoolctl finds inside the numpy package")
    assert found["before"] == found["after"] == [int(threads)]  # as the process had it, before and after
    assert found["seen"] == [[1]] * 3  # one thread inside, every iteration


def test_spectral_every_thins_the_eigensolves_and_zero_turns_them_off():
    from gradscope.trace import Trace

    run = make_run(train={"iterations": 8, "record_every": 1, "spectral_every": 3, "lr": 0.05})
    trace = Trace()
    records = list(run_training(run, seed=2, backend=BACKEND))
    for record in records:
        trace.append(record)
    measured = [r.iteration for r in records if "spectral_radius" in r.metrics]
    assert measured == [0, 3, 6, 7]  # every 3rd and the last
    assert all("grad_norm_W_hh" in r.metrics for r in records)  # the gradient norms stay
    rho = trace.array("spectral_radius")[:, 0]
    assert np.all(np.isnan(rho[[1, 2, 4, 5]])) and np.all(np.isfinite(rho[measured]))
    off = list(run_training(make_run(train={"iterations": 3, "spectral_every": 0}), seed=2, backend=BACKEND))
    assert not any("spectral_radius" in r.metrics or "sigma_max" in r.metrics for r in off)
    # Same seed, same data and updates: thinning the spectrum changes nothing else.
    full = list(run_training(make_run(train={"iterations": 8, "record_every": 1, "lr": 0.05}), seed=2, backend=BACKEND))
    assert [r.loss for r in full] == [r.loss for r in records]
    # the spectrum is tracked from the previous measurement (engine.spectra): equal within the stated tolerance
    from gradscope.engine.spectra import TOLERANCE

    np.testing.assert_allclose(
        full[3].metrics["spectral_radius"], records[3].metrics["spectral_radius"], rtol=TOLERANCE["spectral_radius"]
    )


def test_the_shard_setting_splits_the_pass_and_the_bits_follow_it():
    """train.shards decides the batch split (and so the order of the sums): 1 and 2 shards agree to
    rounding but not bit for bit; the same setting gives the same bits again."""
    base = {
        "cell": "lstm",
        "hidden_size": 64,
        "task": {"name": "probe", "seq_len": 50, "batch_size": 16, "input_size": 16, "output_size": 16},
    }
    one = next(iter(Training(RunConfig.model_validate({**base, "train": {"shards": 1}}), seed=2)))
    two = next(iter(Training(RunConfig.model_validate({**base, "train": {"shards": 2}}), seed=2)))
    again = next(iter(Training(RunConfig.model_validate({**base, "train": {"shards": 2}}), seed=2)))
    assert RunConfig().train.shards == 2
    np.testing.assert_array_equal(two.metrics["grad_h_norm"], again.metrics["grad_h_norm"])
    assert not np.array_equal(one.metrics["grad_h_norm"], two.metrics["grad_h_norm"])
    np.testing.assert_allclose(one.metrics["grad_h_norm"], two.metrics["grad_h_norm"], rtol=1e-5)


def test_a_bidirectional_gru_run_records_every_stream():
    run = RunConfig.model_validate(
        {
            "cell": "gru",
            "bidirectional": True,
            "layers": 2,
            "hidden_size": 8,
            "task": {
                "name": "probe",
                "seq_len": 6,
                "batch_size": 3,
                "input_size": 4,
                "output_size": 2,
                "fixed_batch": True,
            },
            "train": {"iterations": 3, "lr": 0.1},
        }
    )
    records = list(Training(run, seed=0, backend=BACKEND))
    assert run.model_spec().streams == ("layer0", "layer0_reverse", "layer1", "layer1_reverse")
    assert records[0].metrics["grad_h_norm"].shape == (4, 6)
    assert records[0].metrics["gate_z_mean"].shape == (4, 6)
    assert records[0].metrics["grad_norm_b_hh"].shape == (4,)
    assert records[-1].loss < records[0].loss
