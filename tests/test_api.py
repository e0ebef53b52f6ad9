"""gradscope.run / gradscope.open and Results: the labelled data equal the exported files, the settings are
coordinates, runs that lack a value are NaN, and an Experiment built in Python is refused like a file."""

import json

import numpy as np
import pandas as pd
import pytest

import gradscope
from gradscope import presets
from gradscope.config import ConfigError, Experiment, RunConfig, TaskConfig, TrainConfig, load
from gradscope.io import PER_DECODER_LAYER

TASK = TaskConfig(name="probe", seq_len=12, batch_size=4, input_size=3, output_size=2)


def small(name="small", runs=None, iterations=3):
    runs = runs or [
        RunConfig(name="tanh", activation="tanh", hidden_size=8, task=TASK, train=TrainConfig(iterations=iterations)),
        RunConfig(name="lstm", cell="lstm", hidden_size=8, task=TASK, train=TrainConfig(iterations=iterations)),
    ]
    return Experiment(name=name, seed=4, runs=runs)


def npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("preset", [p.name for p in presets.preset_files()])
def test_to_xarray_of_every_preset_equals_its_export(preset, tmp_path):
    experiment = load(presets.presets_dir() / preset)
    out = tmp_path / "out"
    results = gradscope.run(experiment, out=out, iterations=1, progress=False, plots=False)
    ds = results.to_xarray()
    summary = json.loads((out / "summary.json").read_text())
    assert list(ds["run"].values) == [r.name for r in experiment.runs] == [r["name"] for r in summary["runs"]]
    for entry, run in zip(summary["runs"], experiment.runs):
        arrays = npz(out / entry["dir"] / "trace.npz")
        streams = [str(s) for s in arrays.pop("streams", [f"layer{l}" for l in range(run.layers)])]
        arrays.pop("stream_len", None)
        one = ds.sel(run=run.name, iteration=arrays["iteration"])
        for name, values in arrays.items():
            if name == "iteration":
                continue
            got = one[name]
            if name in PER_DECODER_LAYER:  # (K, L): on the stream axis, under the decoder's streams
                got = got.sel(stream=[f"decoder.layer{l}" for l in range(values.shape[1])])
            elif "stream" in got.dims:
                got = got.sel(stream=streams)
            got = got.values[(slice(None),) * 1 + tuple(slice(0, n) for n in values.shape[1:])]
            np.testing.assert_array_equal(got, values.astype(np.float64), err_msg=f"{preset}: {run.name}: {name}")
        # the settings are coordinates on the run dimension
        assert ds["cell"].sel(run=run.name).item() == run.cell
        assert ds["hidden_size"].sel(run=run.name).item() == run.hidden_size
        assert ds["init.recurrent_scale"].sel(run=run.name).item() == run.init.recurrent_scale
        assert ds["task.seq_len"].sel(run=run.name).item() == run.task.seq_len
        assert ds["seed"].sel(run=run.name).item() == run.effective_seed(experiment.seed)
    reopened = gradscope.open(out).to_xarray()
    assert reopened.drop_vars("source").identical(ds.drop_vars("source"))


def test_runs_without_a_value_are_nan_and_streams_come_from_the_trace(tmp_path):
    one = small("one")  # a unidirectional 1-layer stack, T = 12
    task = TASK.model_copy(update={"seq_len": 7})
    two = small(
        "two",
        runs=[
            RunConfig(
                name="bi",
                cell="gru",
                bidirectional=True,
                layers=2,
                hidden_size=5,
                task=task,
                train=TrainConfig(iterations=5, record_every=2),
            )
        ],
    )
    gradscope.run(one, out=tmp_path / "one", progress=False, plots=False)
    gradscope.run(two, out=tmp_path / "two", progress=False, plots=False)
    results = gradscope.open(tmp_path / "one", tmp_path / "two")
    ds = results.to_xarray()
    assert list(ds["run"].values) == ["tanh", "lstm", "bi"]
    assert list(ds["stream"].values) == ["layer0", "layer0_reverse", "layer1", "layer1_reverse"]  # trace.npz's order
    assert list(ds["iteration"].values) == [0, 1, 2, 4]  # every run's, merged: 0, 1, 2 and bi's 0, 2, 4
    assert ds["grad_h_norm"].dims == ("run", "iteration", "stream", "timestep")
    assert ds["loss"].dims == ("run", "iteration")
    assert ds.sizes["timestep"] == 12
    g = ds["grad_h_norm"]
    assert np.isfinite(g.sel(run="tanh", stream="layer0", iteration=[0, 1, 2])).all()
    assert np.isnan(g.sel(run="tanh", stream="layer1")).all()  # a stream the run does not have
    assert np.isnan(g.sel(run="tanh", iteration=4)).all()  # an iteration it never computed
    assert np.isfinite(g.sel(run="bi", iteration=4, timestep=slice(0, 6))).all()
    assert np.isnan(g.sel(run="bi", timestep=slice(7, None))).all()  # its sequences are shorter
    assert np.isnan(g.sel(run="bi", iteration=1)).all()  # record_every = 2: not recorded
    assert np.isnan(ds["c_norm"].sel(run="tanh")).all()  # a tanh RNN has no cell state
    assert np.isfinite(ds["c_norm"].sel(run="lstm", stream="layer0", iteration=[0, 1, 2])).all()
    assert list(ds["cell"].values) == ["rnn", "lstm", "gru"]
    assert list(ds["bidirectional"].values) == [False, False, True]
    assert [s.endswith(n) for s, n in zip(ds["source"].values, ["one", "one", "two"])] == [True] * 3
    assert ds["stream_len"].sel(run="bi").values.tolist() == [7, 7, 7, 7]
    assert np.isnan(ds["stream_len"].sel(run="tanh", stream="layer1"))


def test_the_same_run_name_in_two_folders_is_told_apart(tmp_path):
    gradscope.run(small(), out=tmp_path / "a", progress=False, plots=False)
    gradscope.run(small(), out=tmp_path / "b", progress=False, plots=False)
    results = gradscope.open(tmp_path / "a", tmp_path / "b")
    assert results.names == ["tanh", "lstm", "tanh [b]", "lstm [b]"]
    ds = results.to_xarray()
    np.testing.assert_array_equal(ds["h_norm"].sel(run="tanh"), ds["h_norm"].sel(run="tanh [b]"))  # same seed


SEQ2SEQ = TaskConfig(name="translate", symbols=4, seq_len=6, target_len=4, batch_size=3)


@pytest.mark.parametrize("kind", ["stack", "bidirectional", "seq2seq"])
def test_to_pandas_equals_trace_csv(tmp_path, kind):
    keys = {"stack": {}, "bidirectional": {"bidirectional": True}}.get(kind, {"architecture": "seq2seq"})
    runs = [
        RunConfig(
            name='a, "quoted"',
            cell="lstm",
            layers=2,
            hidden_size=6,
            task=SEQ2SEQ if kind == "seq2seq" else TASK,
            train=TrainConfig(iterations=2),
            **keys,
        ),
        RunConfig(name="b", hidden_size=5, task=TASK, train=TrainConfig(iterations=1)),
    ]
    out = tmp_path / "out"
    results = gradscope.run(small(runs=runs), out=out, progress=False, plots=False)
    df = results.to_pandas()
    summary = json.loads((out / "summary.json").read_text())
    files = [
        pd.read_csv(
            out / e["dir"] / "trace.csv",
            dtype={"layer": "string"},
            keep_default_na=False,
            na_values={"timestep": [""], "value": []},
        )
        for e in summary["runs"]
    ]
    expected = pd.concat(files, ignore_index=True)
    assert list(df.columns) == list(expected.columns) == ["run", "iteration", "layer", "timestep", "metric", "value"]
    assert len(df) == len(expected)
    assert (df["run"].astype(str) == expected["run"].astype(str)).all()
    assert (df["iteration"] == expected["iteration"]).all()
    assert (df["layer"].fillna("") == expected["layer"]).all()
    assert (df["timestep"].astype("Float64").fillna(-1) == expected["timestep"].astype("Float64").fillna(-1)).all()
    assert (df["metric"].astype(str) == expected["metric"].astype(str)).all()
    np.testing.assert_array_equal(df["value"].to_numpy(), expected["value"].astype(float).to_numpy())
    if kind == "bidirectional":
        assert "layer1_reverse" in set(df["layer"].dropna())
    if kind == "seq2seq":
        bridge = df[df.metric == "grad_bridge_norm"]
        assert set(bridge["layer"]) == {"decoder.layer0", "decoder.layer1"}


def test_a_seq2seq_run_is_labelled_by_its_streams(tmp_path):
    run = RunConfig(
        name="s2s",
        architecture="seq2seq",
        cell="gru",
        layers=2,
        hidden_size=5,
        task=SEQ2SEQ,
        train=TrainConfig(iterations=1),
    )
    gradscope.run(small(runs=[run, small().runs[0]]), out=tmp_path / "out", progress=False, plots=False)
    ds = gradscope.open(tmp_path / "out").to_xarray()
    streams = ["encoder.layer0", "encoder.layer1", "decoder.layer0", "decoder.layer1", "layer0"]
    assert list(ds["stream"].values) == streams  # trace.npz's names, not layer numbers
    assert ds["stream_len"].sel(run="s2s").values[:4].tolist() == [6, 6, 4, 4]
    g = ds["grad_h_norm"].sel(run="s2s", iteration=0)
    assert np.isfinite(g.sel(stream="encoder.layer0", timestep=slice(0, 5))).all()
    assert np.isnan(g.sel(stream="decoder.layer0", timestep=slice(4, None))).all()  # past the decoder's 4 steps
    bridge = ds["grad_bridge_norm"].sel(run="s2s", iteration=0)
    assert np.isfinite(bridge.sel(stream=["decoder.layer0", "decoder.layer1"])).all()
    assert np.isnan(bridge.sel(stream=["encoder.layer0", "layer0"])).all()
    assert ds["architecture"].values.tolist() == ["seq2seq", "stack"]


def test_an_experiment_built_in_python_is_validated_like_a_file(tmp_path):
    twice = [RunConfig(name="same", task=TASK), RunConfig(name="same", activation="tanh", task=TASK)]
    with pytest.raises(ValueError, match="'same' is used by an earlier run"):
        Experiment(runs=twice)
    duplicated = Experiment(runs=twice[:1]).model_copy(update={"runs": twice})  # model_copy does not validate
    with pytest.raises(ConfigError, match=r"run 'same' \(runs\[1\]\): name: 'same' is used by an earlier run") as error:
        gradscope.run(duplicated, out=tmp_path / "out", progress=False)
    assert error.value.key == "name"
    assert not (tmp_path / "out").exists()  # refused before anything touched the disk
    square = RunConfig(name="id", hidden_size=8, task=TASK, init={"input": "identity"})
    with pytest.raises(ConfigError, match=r"init.input: got \"identity\", which needs a square W_hx"):
        gradscope.run(Experiment(runs=[square]), progress=False)
    with pytest.raises(ConfigError, match=r"runs: no run named 'nope'"):
        gradscope.run(small(), runs=["nope"], progress=False)
    with pytest.raises(ConfigError, match=r"iterations: got -1; expected an integer from 0 to 2\*\*63 - 1"):
        gradscope.run(small(), iterations=-1, progress=False)
    with pytest.raises(ConfigError, match="no such experiment file"):
        gradscope.run(tmp_path / "missing.toml", progress=False)


def test_run_options_and_progress_bars(capsys):
    results = gradscope.run(small(), runs=["lstm"], iterations=4, seed=7, progress=True)
    assert results.names == ["lstm"]
    assert results["lstm"].iterations == 4 and results["lstm"].seed == 7
    assert results.state == "completed"
    assert "lstm: completed, 4 iteration(s)" in repr(results)
    err = capsys.readouterr().err
    assert "lstm" in err and "4/4" in err  # tqdm's bar, on stderr outside a notebook
    assert "<table>" in results._repr_html_()


def test_open_refuses_what_is_not_a_gradscope_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an exported folder"):
        gradscope.open(tmp_path)


def test_analysis_results_join_the_dataset(tmp_path):
    from gradscope.config import AnalysisConfig

    analysed = RunConfig(
        name="analysed",
        activation="tanh",
        hidden_size=6,
        task=TASK,
        train=TrainConfig(iterations=2),
        analysis=AnalysisConfig(every=1, lyapunov=2, warmup=5, steps=10),
    )
    results = gradscope.run(small(runs=[analysed, small().runs[0]]), out=tmp_path / "out", progress=False, plots=False)
    ds = results.to_xarray()
    assert ds["jac_sigma_max"].dims == ("run", "analysis_iteration", "stream", "timestep")
    assert ds["lyapunov"].dims == ("run", "analysis_iteration", "stream", "exponent")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    arrays = npz(tmp_path / "out" / summary["runs"][0]["dir"] / "analysis.npz")
    got = ds["jac_sigma_max"].sel(run="analysed", analysis_iteration=arrays["iteration"], stream="layer0")
    np.testing.assert_array_equal(got.values, arrays["jac_sigma_max"][:, 0, :])
    assert np.isnan(ds["lyapunov"].sel(run="tanh")).all()  # no analysis for that run
    reopened = gradscope.open(tmp_path / "out").to_xarray()
    np.testing.assert_array_equal(reopened["lyapunov"].values, ds["lyapunov"].values)


SWEEP = """schema_version = 1
[experiment]
name = "tiny-sweep"
[defaults]
activation = "tanh"
hidden_size = 6
[defaults.task]
name = "probe"
seq_len = 8
batch_size = 2
input_size = 3
output_size = 2
[[runs]]
name = "tanh"
[sweep]
"init.recurrent_scale" = [0.5, 2.0]
seeds = [0]
"""


def test_open_a_sweep_folder_gives_every_point_and_its_table(tmp_path):
    from gradscope.sweep import run_sweep

    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    run_sweep(load(path), tmp_path / "out", workers=1)
    results = gradscope.open(tmp_path / "out")
    assert len(results) == 2
    ds = results.to_xarray()
    assert sorted(ds["init.recurrent_scale"].values.tolist()) == [0.5, 2.0]
    assert ds.sizes["point"] == 2 and "sweep.log_gain_per_step" in ds
