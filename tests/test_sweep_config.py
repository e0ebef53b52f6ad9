"""The [sweep] table (validated like every key), its points, init.bias_scale, and sweep.csv's measures."""

import math
from pathlib import Path

import numpy as np
import pytest

from gradscope import config
from gradscope.config import ConfigError, loads, sweep_points
from gradscope.engine import InitSpec, ModelSpec, init_params
from gradscope.sweep import log_gain_per_step, point_name, top_stream
from gradscope.theory import chi_1, critical_recurrent_scale, predicted_log_gain

BASE = """
schema_version = 1
[experiment]
name = "s"
seed = 3
[defaults]
hidden_size = 8
[defaults.task]
seq_len = 6
[[runs]]
name = "relu"
[[runs]]
name = "tanh"
activation = "tanh"
"""


def sweep(table: str):
    return loads(BASE + "[sweep]\n" + table, source="s.toml")


def test_grid_points_in_the_files_order_runs_then_values_then_seeds():
    experiment = sweep('"init.recurrent_scale" = [1.0, 2.0]\ninit.bias_scale = [0.0, 0.5, 1]\nseeds = [4, 5]')
    points = sweep_points(experiment)
    assert len(points) == 2 * 2 * 3 * 2
    assert [p.index for p in points] == list(range(24))
    first = points[:6]
    assert [(p.base, p.values, p.seed) for p in first[:4]] == [
        ("relu", (1.0, 0.0), 4),
        ("relu", (1.0, 0.0), 5),
        ("relu", (1.0, 0.5), 4),
        ("relu", (1.0, 0.5), 5),
    ]
    assert points[12].base == "tanh" and points[12].run.activation == "tanh"
    p = points[7]
    assert (p.run.init.recurrent_scale, p.run.init.bias_scale, p.run.seed) == (2.0, 0.0, 5)
    assert p.run.hidden_size == 8 and p.run.name == "relu"


def test_zip_mode_and_default_seeds():
    experiment = sweep('"init.recurrent_scale" = [1.0, 2.0]\n"hidden_size" = [4, 16]\nmode = "zip"')
    points = sweep_points(experiment)
    assert [(p.values, p.seed) for p in points[:2]] == [((1.0, 4), 3), ((2.0, 16), 3)]  # the experiment's seed
    assert points[1].run.hidden_size == 16


@pytest.mark.parametrize(
    "table, key, words",
    [
        ('"init.nonsense" = [1.0]', "sweep.init.nonsense", "unknown key"),
        ('"init.recurrent_scale" = []', "sweep.init.recurrent_scale", "empty list"),
        ('"init.recurrent_scale" = 2.0', "sweep.init.recurrent_scale", "expected a list"),
        ('"init.recurrent_scale" = [1.0, 2.0]\nhidden_size = [4]\nmode = "zip"', "sweep.mode", "hidden_size has 1"),
        ('mode = "random"\nseeds = [1]', "sweep.mode", '"grid"'),
        ("seeds = [1, -2]", "sweep.seeds", "integers >= 0"),
        ("seed = [1, 2]", "sweep.seed", "seeds = [...]"),
        ('name = ["a"]', "sweep.name", "unknown key"),
        (
            'grid = { "init.recurrent_scale" = [1.0, 2.0] }',
            "sweep.grid",
            'go directly in [sweep], e.g. "init.recurrent_scale" = [1.0, 2.0]',
        ),
        ('"init.recurrent_scale" = [1.0, -1.0]', "sweep.init.recurrent_scale", "-1.0"),
        ('activation = ["relu", "softplus"]', "sweep.activation", "softplus"),
        ("", "sweep", "no key to sweep"),
    ],
)
def test_bad_sweep_tables_are_refused_naming_the_file_and_key(table, key, words):
    with pytest.raises(ConfigError) as error:
        sweep(table)
    assert error.value.key == key
    assert str(error.value).startswith("s.toml: ") and words in str(error.value)


def test_a_bad_value_names_the_run_it_breaks():
    with pytest.raises(ConfigError, match=r"run 'relu' with task.seq_len = 0") as error:
        sweep('"task.seq_len" = [5, 0]')
    assert error.value.run == "relu"


def test_dumps_writes_the_sweep_and_loads_back_the_same(tmp_path):
    experiment = sweep('"init.recurrent_scale" = [1.0, 2.0]\nseeds = [0, 1]')
    again = loads(config.dumps(experiment))
    assert again.sweep == experiment.sweep
    assert [p.run for p in sweep_points(again)] == [p.run for p in sweep_points(experiment)]


def test_a_file_without_sweep_has_none():
    assert loads(BASE).sweep is None and sweep_points(loads(BASE)) == []


def test_shipped_sweep_presets_expand():
    models = Path(__file__).resolve().parent.parent / "models"
    relu = config.load(models / "sweep_relu_init_scale.toml")
    tanh = config.load(models / "sweep_tanh_phase_diagram.toml")
    assert len(sweep_points(relu)) == 9 * 8 and len(sweep_points(tanh)) == 8 * 6 * 2


# ------------------------------------------------------------------------------------------ init.bias_scale
def test_bias_scale_draws_b_h_with_that_variance_and_nothing_else_changes():
    spec = ModelSpec(cell="rnn", hidden_size=512, input_size=4, output_size=2, layers=2, dtype="float64")
    plain = init_params(spec, InitSpec(), np.random.default_rng(1))
    biased = init_params(spec, InitSpec(bias_scale=0.25), np.random.default_rng(1))
    assert np.all(plain.layers[0].b_h == 0)
    np.testing.assert_array_equal(plain.layers[0].W_hh, biased.layers[0].W_hh)  # drawn before the bias
    b = np.concatenate([layer.b_h for layer in biased.layers])  # (1024,)
    # the sample variance of 1024 N(0, 0.25) draws has a standard error of 0.25 * sqrt(2 / 1024) = 0.011
    assert np.var(b) == pytest.approx(0.25, abs=0.04) and abs(np.mean(b)) < 0.05


def test_bias_scale_is_validated_and_reaches_the_engine():
    with pytest.raises(ConfigError, match=r"init\.bias_scale"):
        loads(BASE.replace("hidden_size = 8", "hidden_size = 8\ninit.bias_scale = -0.1"))
    run = loads(BASE.replace("hidden_size = 8", "hidden_size = 8\ninit.bias_scale = 0.3")).runs[0]
    assert run.init_spec().bias_scale == 0.3
    with pytest.raises(ValueError, match="bias_scale"):
        InitSpec(bias_scale=math.inf)


def test_bias_scale_enters_the_mean_field_prediction_as_poole_et_al_sigma_b():
    run = config.RunConfig(
        activation="tanh", init=config.InitConfig(recurrent_scale=1.69, input_scale=0.0, bias_scale=0.09)
    )
    assert predicted_log_gain(run) == pytest.approx(0.5 * math.log(0.940), abs=1e-3)  # chi_1(1.3, 0.3) = 0.940
    assert predicted_log_gain(run) == pytest.approx(0.5 * math.log(chi_1(1.3, 0.3)), rel=1e-9)
    assert critical_recurrent_scale(run) == pytest.approx(1.3956**2, abs=2e-3)  # critical sigma_w at sigma_b = 0.3
    relu = config.RunConfig(init=config.InitConfig(recurrent_scale=3.0))
    assert predicted_log_gain(relu) == pytest.approx(0.5 * math.log(1.5)) and critical_recurrent_scale(relu) == 2.0
    assert critical_recurrent_scale(config.RunConfig(cell="lstm")) is None


# ------------------------------------------------------------------------------------------ the measures
def test_log_gain_per_step_is_the_least_squares_slope_against_the_lag():
    rng = np.random.default_rng(0)
    T = 50
    g = np.exp(0.3 * (T - 1 - np.arange(T)) + rng.normal(0, 0.1, T))  # grows back in time by e^0.3 per step
    lag = T - 1 - np.arange(T)
    assert log_gain_per_step(g) == pytest.approx(np.polyfit(lag, np.log(g), 1)[0], rel=1e-12)
    assert log_gain_per_step(g) == pytest.approx(0.3, abs=0.01)
    broken = g.copy()
    broken[[3, 10, 20]] = [np.nan, np.inf, 0.0]  # skipped: not finite and positive
    keep = np.isfinite(broken) & (broken > 0)
    assert log_gain_per_step(broken) == pytest.approx(np.polyfit(lag[keep], np.log(g[keep]), 1)[0], rel=1e-12)
    assert math.isnan(log_gain_per_step(np.array([1.0, np.nan, 0.0])))


def test_the_top_stream_is_the_decoders_last_or_the_top_layers_forward_one():
    assert top_stream(["layer0", "layer1", "layer2"]) == 2
    assert top_stream(["layer0", "layer0_reverse", "layer1", "layer1_reverse"]) == 2
    assert top_stream(["encoder.layer0", "encoder.layer0_reverse", "decoder.layer0", "decoder.layer1"]) == 3


def test_point_names_sort_like_the_points():
    assert point_name(7, 64) == "0007" and point_name(12345, 20000) == "12345"
    names = [point_name(i, 12000) for i in range(12000)]
    assert sorted(names) == names


def test_a_seq2seq_points_gain_is_the_decoders_top_stream_without_its_padding():
    from gradscope.sweep import compute_point

    experiment = loads(
        BASE.replace("hidden_size = 8", 'hidden_size = 8\narchitecture = "seq2seq"\nlayers = 2').replace(
            "seq_len = 6", "seq_len = 10\ntarget_len = 5"
        )
        + '[sweep]\n"init.recurrent_scale" = [2.0]'
    )
    point = sweep_points(experiment)[0]
    outcome = compute_point(point.index, point.run, point.seed, "numpy")
    streams = point.run.model_spec().streams
    assert streams[-1] == "decoder.layer1" and top_stream(streams) == len(streams) - 1
    g = outcome.result.trace.array("grad_h_norm")[0, -1]  # (T,): 5 decoder steps, then NaN padding
    assert np.isnan(g[5:]).all()
    lag = 4 - np.arange(5)  # the lag from the decoder's last step
    assert outcome.measured["log_gain_per_step"] == pytest.approx(np.polyfit(lag, np.log(g[:5]), 1)[0], rel=1e-9)


def test_validate_counts_the_points(tmp_path, capsys):
    from gradscope import cli

    path = tmp_path / "s.toml"
    path.write_text(BASE + '[sweep]\n"init.recurrent_scale" = [1.0, 2.0]\nseeds = [0, 1, 2]')
    assert cli.main(["validate", str(path)]) == 0
    assert "its [sweep] has 12 point(s)" in capsys.readouterr().err
    path.write_text(BASE + '[sweep]\n"init.recurrent_scale" = []')
    assert cli.main(["validate", str(path)]) == 2
    assert "sweep.init.recurrent_scale: got an empty list" in capsys.readouterr().err


def test_lyapunov_max_is_read_from_the_runs_analysis_at_iteration_0():
    from gradscope.config import loads
    from gradscope.experiment import run_experiment
    from gradscope.sweep.table import lyapunov_max, measure

    experiment = loads(
        """
schema_version = 1
[defaults]
activation = "tanh"
hidden_size = 6
[defaults.task]
seq_len = 8
batch_size = 2
input_size = 2
output_size = 2
[defaults.analysis]
every = 1
lyapunov = 3
warmup = 10
steps = 30
"""
    )
    (result,) = run_experiment(experiment, processes=1)
    exponents = result.analysis.to_arrays()["lyapunov"]  # (Ka, S, m), descending
    assert lyapunov_max(result, 0) == exponents[0, 0, 0]
    assert measure(result)["lyapunov_max"] == exponents[0, 0, 0]
