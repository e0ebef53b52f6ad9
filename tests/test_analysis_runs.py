"""Analysis in runs: the Lyapunov spectrum of random tanh RNNs against the published mean-field values, the
config keys, and analysis.npz exactly as docs/trace_format.md ("Analysis") says."""

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from gradscope.config import ConfigError, loads
from gradscope.engine import InitSpec, ModelSpec, init_params
from gradscope.engine.analysis import AnalysisSpec, qr_exponents, stack_streams
from gradscope.experiment import run_experiment
from gradscope.io import export_experiment, load_experiment_folder


def _autonomous_tanh(g: float, d: int, seed: int):
    spec = ModelSpec(cell="rnn", activation="tanh", input_size=1, hidden_size=d, output_size=1, dtype="float64")
    params = init_params(spec, InitSpec(recurrent_scale=g * g, input_scale=0.0), np.random.default_rng(seed))
    h0 = np.random.default_rng(1000 + seed).standard_normal((1, 1, d))
    return spec, params, stack_streams(spec, params, np.zeros((1500, 1, 1)), h0)[0]


@pytest.mark.parametrize(
    "g,top,mean",
    # mean-field largest exponent ln(g sqrt(E sech^4(sqrt(q*) z))) and the mean of large-network spectra
    # (Engelken, Wolf & Abbott, "Lyapunov spectra of chaotic recurrent neural networks", 2023)
    [(2.0, 0.1547, -1.1505), (3.0, 0.3102, -2.2739)],
)
def test_random_tanh_rnn_spectrum_matches_mean_field(g, top, mean):
    d, tops, means = 256, [], []
    with threadpool_limits(1):
        for seed in range(3):
            spec, params, stream = _autonomous_tanh(g, d, seed)
            tops.append(qr_exponents(stream, 4, 500)[0])
            # the mean exponent by the exact identity sum_i lambda_i = mean_t ln|det J_t| (tested in
            # tests/engine/test_analysis.py), ln|det J_t| = sum_i ln(1 - h_{t,i}^2) + ln|det W_hh|
            H = stream.H[500:, 0]
            log_det = np.mean(np.sum(np.log1p(-(H**2)), axis=1)) + np.linalg.slogdet(stream.p.W_hh)[1]
            means.append(log_det / d)
    assert abs(np.mean(tops) - top) < 0.02
    assert abs(np.mean(means) - mean) < 0.03


def test_ordered_tanh_rnn_has_negative_exponents_and_chaotic_positive():
    """The order/chaos transition at g = 1: below it every exponent is negative (ln g at the rest state)."""
    with threadpool_limits(1):
        low = qr_exponents(_autonomous_tanh(0.8, 64, 0)[2], 2, 500)[0]
        high = qr_exponents(_autonomous_tanh(1.5, 64, 0)[2], 2, 500)[0]
    assert low < -0.1 and high > 0.02


ANALYSED = """
schema_version = 1
[experiment]
name = "analysis"
seed = 3
[defaults]
cell = "rnn"
activation = "tanh"
hidden_size = 8
[defaults.task]
seq_len = 6
batch_size = 3
input_size = 2
output_size = 2
[defaults.train]
iterations = 5
record_every = 2
[defaults.analysis]
every = 2
lyapunov = 3
warmup = 10
steps = 20
h0 = "random"
examples = 2
[[runs]]
name = "rnn"
[[runs]]
name = "bilstm"
cell = "lstm"
bidirectional = true
layers = 2
"""


def test_config_keys_defaults_and_refusals():
    run = loads(ANALYSED.replace('h0 = "random"', "")).runs[0]
    assert run.analysis.h0 == "zero" and run.analysis.jacobian is True
    assert run.analysis_spec() == AnalysisSpec(every=2, lyapunov=3, warmup=10, steps=20, examples=2)
    plain = loads(ANALYSED.split("[defaults.analysis]")[0] + '[[runs]]\nname = "x"\n').runs[0]
    assert plain.analysis.every == 0 and not plain.analysis_spec().on  # the default costs nothing
    with pytest.raises(ConfigError) as err:
        loads(ANALYSED.replace("lyapunov = 3", "lyapunov = 9"))  # the rnn's state size is 8
    assert err.value.key == "analysis.lyapunov" and "8" in str(err.value)
    with pytest.raises(ConfigError) as err:
        loads(ANALYSED.replace('h0 = "random"', 'h0 = "ones"'))
    assert err.value.key == "analysis.h0"


def test_export_writes_analysis_npz_as_the_contract_says(tmp_path):
    experiment = loads(ANALYSED)
    results = run_experiment(experiment, processes=1)
    out = export_experiment(tmp_path / "out", experiment, results)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 2
    for entry, S, D in zip(summary["runs"], (1, 4), (8, 16)):
        with np.load(out / entry["dir"] / "analysis.npz") as npz:
            a = {k: npz[k] for k in npz.files}
        # recorded iterations 0, 2, 4 (record_every 2); every 2nd recorded one: 0 and 4
        np.testing.assert_array_equal(a["iteration"], [0, 4])
        assert set(a) == {"iteration", "jac_sigma_max", "jac_fro", "lyapunov", "lyapunov_h0", "grad_W_hh_by_lag"}
        assert a["jac_sigma_max"].shape == a["jac_fro"].shape == a["grad_W_hh_by_lag"].shape == (2, S, 6)
        assert a["lyapunov"].shape == (2, S, 3) and a["lyapunov_h0"].shape == (S, 2, D)
        # P = I at each stream's last step: t = T-1, or t = 0 for a reverse stream (t is the input position)
        streams = results[summary["runs"].index(entry)].run.model_spec().streams
        last = [0 if name.endswith("_reverse") else -1 for name in streams]
        np.testing.assert_array_equal(a["jac_sigma_max"][:, np.arange(S), last], 1.0)
        np.testing.assert_array_equal(a["jac_fro"][:, np.arange(S), last], 1.0)
        with np.load(out / entry["dir"] / "units.npz") as npz:
            u = {k: npz[k] for k in npz.files}
        d = 8
        np.testing.assert_array_equal(u["iteration"], [0, 4])
        assert u["unit_h"].shape == u["unit_grad_h"].shape == (2, S, 6, d)
        assert ("unit_gates" in u) == (S == 4) and (S == 1 or u["unit_gates"].shape == (2, S, 6, 4 * d))
        assert np.all(np.diff(a["lyapunov"], axis=2) <= 0)  # descending
        figures = entry["analysis"][-1]["streams"]
        assert list(figures) == list(results[summary["runs"].index(entry)].run.model_spec().streams)
        top = a["lyapunov"][-1, 0, 0]
        assert figures[next(iter(figures))]["lyapunov_max"] == pytest.approx(top)
        assert entry["analysis"][-1]["iteration"] == 4
    _, back = load_experiment_folder(out)
    for result, entry in zip(back, summary["runs"]):
        arrays = result.analysis.to_arrays()
        with np.load(out / entry["dir"] / "analysis.npz") as npz:
            for key in npz.files:
                np.testing.assert_array_equal(arrays[key], npz[key])


def test_analysis_of_iteration_0_is_recomputed_from_the_exported_files(tmp_path):
    """What the folder holds suffices: init_params.npz and first_batch.npz give iteration 0's row again."""
    from gradscope.engine import Params
    from gradscope.engine.analysis import analyse

    experiment = loads(ANALYSED)
    out = export_experiment(tmp_path / "out", experiment, run_experiment(experiment, processes=1))
    run = experiment.runs[1]
    with np.load(out / "02-bilstm" / "init_params.npz") as npz:
        params = Params.from_arrays({k: npz[k] for k in npz.files})
    with np.load(out / "02-bilstm" / "first_batch.npz") as npz:
        x, target, mask = npz["x"], npz["target"], npz["mask"]
    row = analyse(run.model_spec(), params, (x, target, mask), "mse", AnalysisSpec(every=1))
    with np.load(out / "02-bilstm" / "analysis.npz") as npz:
        np.testing.assert_allclose(npz["jac_sigma_max"][0], row["jac_sigma_max"], rtol=1e-12)
        np.testing.assert_allclose(npz["grad_W_hh_by_lag"][0], row["grad_W_hh_by_lag"], rtol=1e-12)


def test_seq2seq_run_exports_analysis_for_encoder_and_decoder_streams(tmp_path):
    text = ANALYSED.replace('[[runs]]\nname = "bilstm"\ncell = "lstm"\nbidirectional = true\nlayers = 2\n', "").replace(
        'name = "rnn"', 'name = "s2s"\narchitecture = "seq2seq"\nbidirectional = true\ntask.target_len = 4'
    )
    experiment = loads(text)
    out = export_experiment(tmp_path / "out", experiment, run_experiment(experiment, processes=1))
    with np.load(out / "01-s2s" / "analysis.npz") as npz:
        a = {k: npz[k] for k in npz.files}
    streams = experiment.runs[0].model_spec().streams
    assert streams == ("encoder.layer0", "encoder.layer0_reverse", "decoder.layer0")
    assert a["jac_sigma_max"].shape == (2, 3, 6) and a["lyapunov"].shape == (2, 3, 3)
    np.testing.assert_array_equal(a["jac_sigma_max"][:, [0, 1, 2], [5, 0, 3]], 1.0)  # each stream's last step
    assert np.all(np.isnan(a["jac_sigma_max"][:, 2, 4:])) and np.all(np.isfinite(a["jac_sigma_max"][:, :, :4]))
    assert np.all(np.isnan(a["grad_W_hh_by_lag"][:, 2, 4:]))  # the decoder has 4 steps: lags 0..3
    assert np.all(np.isfinite(a["lyapunov"]))
