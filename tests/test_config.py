"""Experiment files: loading, refusing bad files with a useful message, writing them back."""

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gradscope import cli, config
from gradscope.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.toml"))
BAD = ROOT / "tests" / "data" / "bad"

# file -> the dotted key the message must name (and ConfigError.key must be), the run it names (or None)
MALFORMED = {
    "syntax_error.toml": (None, None, "line 6"),
    "unknown_top_key.toml": ("colour", None, "colour"),
    "missing_schema.toml": ("schema_version", None, "schema_version"),
    "wrong_schema.toml": ("schema_version", None, "got 2"),
    "unknown_default_key.toml": ("hiden_size", None, "unknown key"),
    "bad_cell.toml": ("cell", None, "'transformer'"),
    "bad_activation.toml": ("activation", "soft", "'softplus'"),
    "negative_hidden.toml": ("hidden_size", None, "-4"),
    "hidden_string.toml": ("hidden_size", None, "'128'"),
    "bad_dtype.toml": ("dtype", None, "'float16'"),
    "bad_init_scheme.toml": ("init.recurrent", "he", "'he'"),
    "negative_scale.toml": ("init.recurrent_scale", "neg", "-1.0"),
    "unknown_init_key.toml": ("init.recurrent_gain", None, "unknown key"),
    "bad_task.toml": ("task.name", None, "'translation'"),
    "zero_seq_len.toml": ("task.seq_len", "empty", "got 0"),
    "copy_too_short.toml": ("task.seq_len", None, "2 * copy_length + 1"),
    "missing_text.toml": ("task.text", None, "no_such_corpus.txt"),
    "adding_input_size.toml": ("task.input_size", None, "got 5"),
    "bad_optimizer.toml": ("train.optimizer", None, "'rmsprop'"),
    "negative_lr.toml": ("train.lr", "backwards", "-0.1"),
    "momentum_one.toml": ("train.momentum", None, "less than 1"),
    "record_every_zero.toml": ("train.record_every", None, "got 0"),
    "spectral_every_negative.toml": ("train.spectral_every", "sparse", "got -2"),
    "duplicate_names.toml": ("name", "twin", "'twin'"),
    "chrono_rnn.toml": ("init.chrono", "chrono rnn", "lstm"),
    "bad_seed.toml": ("experiment.seed", None, "-1"),
    "iterations_float.toml": ("train.iterations", None, "10.5"),
    "runs_not_tables.toml": ("runs", None, "array of tables"),
    "defaults_name.toml": ("defaults.name", None, "each [[runs]]"),
    "layers_bool.toml": ("layers", None, "True"),
    "identity_input.toml": ("init.input", "irnn", "square"),
    "defaults_origin.toml": ("hidden_size", "a", "set in [defaults]"),
    "target_len_on_stack.toml": ("task.target_len", "plain", 'architecture = "seq2seq"'),
    "reverse_source_on_stack.toml": ("task.reverse_source", "uni", 'architecture = "seq2seq"'),
    "bad_architecture.toml": ("architecture", None, "'transformer'"),
    "translate_on_stack.toml": ("task.name", "stacked", "'seq2seq'"),
}

# Valid files that a machine may refuse to run (tests/test_experiment.py: refused where they run, never on load).
TOO_BIG_FOR_THIS_MACHINE = ("too_big.toml",)


def test_every_malformed_file_is_listed():
    assert sorted(p.name for p in BAD.glob("*.toml")) == sorted([*MALFORMED, *TOO_BIG_FOR_THIS_MACHINE])
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_is_refused_naming_file_and_key(name, capsys):
    key, run, detail = MALFORMED[name]
    path = BAD / name
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    error = caught.value
    message = str(error)
    assert error.source == str(path)
    assert message.startswith(str(path))
    assert error.key == key
    if key is not None:
        assert key in message
    if run is not None:
        assert error.run == run and repr(run) in message
    assert detail in message
    # the command line: exit 2, one message naming the file and the key, no traceback
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and (key is None or key in err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_refused_run_touches_nothing_on_disk(tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main(["run", str(BAD / "negative_scale.toml"), "--out", str(out), "--backend", "numpy"]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "init.recurrent_scale" in capsys.readouterr().err


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_shipped_experiments_load(path):
    experiment = config.load(path)
    assert experiment.runs and experiment.source == path
    assert path.read_text().lstrip().startswith("#"), "each shipped file opens with a comment saying what it shows"
    for run in experiment.runs:
        spec = run.model_spec()
        assert spec.hidden_size == run.hidden_size and spec.layers == run.layers
    # dumps -> loads gives the same resolved runs
    again = config.loads(config.dumps(experiment), source="<dumped>")
    assert again.runs == experiment.runs and again.seed == experiment.seed and again.name == experiment.name


def test_defaults_are_overridden_by_runs_with_dotted_keys():
    experiment = config.loads("""
schema_version = 1
[experiment]
name = "e"
seed = 7
[defaults]
hidden_size = 64
[defaults.init]
recurrent_scale = 2.0
input_scale = 0.5
[[runs]]
name = "a"
init.recurrent_scale = 3.0
[[runs]]
name = "b"
seed = 3
""")
    a, b = experiment.runs
    assert (a.init.recurrent_scale, a.init.input_scale, a.hidden_size) == (3.0, 0.5, 64)
    assert (b.init.recurrent_scale, b.init.input_scale) == (2.0, 0.5)
    assert a.effective_seed(experiment.seed) == 7 and b.effective_seed(experiment.seed) == 3


def test_file_without_runs_is_one_run_named_after_the_experiment():
    experiment = config.loads('schema_version = 1\n[experiment]\nname = "solo"\n[defaults]\nlayers = 2\n')
    assert [r.name for r in experiment.runs] == ["solo"] and experiment.runs[0].layers == 2


def test_model_and_init_spec_follow_the_task():
    run = RunConfig.model_validate(
        {
            "cell": "lstm",
            "hidden_size": 16,
            "task": {"name": "copy", "symbols": 5, "copy_length": 3, "seq_len": 12},
            "init": {"forget_bias": 1.0, "readout_scale": 0.5},
        }
    )
    spec = run.model_spec()
    assert (spec.input_size, spec.output_size, spec.cell) == (7, 5, "lstm")
    init = run.init_spec()
    assert (init.forget_bias, init.readout_scale) == (1.0, 0.5)


def test_model_dump_round_trips_and_runs_are_frozen():
    run = RunConfig.model_validate({"name": "x", "task": {"name": "adding", "seq_len": 20}})
    assert RunConfig.model_validate(run.model_dump()) == run
    with pytest.raises(ValidationError, match="frozen"):
        run.hidden_size = 3
    edited = run.model_copy(update={"hidden_size": 8})
    assert edited.hidden_size == 8 and run.hidden_size == 128


def test_relative_text_is_resolved_against_the_experiment_file(tmp_path):
    (tmp_path / "corpus.txt").write_text("abcabcabd " * 20)
    path = tmp_path / "lm.toml"
    path.write_text('schema_version = 1\n[defaults.task]\nname = "charlm"\nseq_len = 10\ntext = "corpus.txt"\n')
    run = config.load(path).runs[0]
    assert Path(run.task.text) == tmp_path / "corpus.txt"
    assert run.model_spec().input_size == 5  # a, b, c, d, space


def test_save_keeps_comments_and_writes_only_changes(tmp_path):
    source = tmp_path / "mine.toml"
    source.write_text("""# my experiment: keep this comment
schema_version = 1

[experiment]
name = "mine"   # the name
seed = 1

[defaults]
hidden_size = 32  # small
[defaults.task]
seq_len = 20

[[runs]]
name = "a"
init.recurrent_scale = 3.0  # explodes

[[runs]]
name = "b"
""")
    experiment = config.load(source)
    a, b = experiment.runs
    a2 = a.model_copy(update={"init": a.init.model_copy(update={"recurrent_scale": 2.5})})
    c = b.model_copy(update={"name": "c", "cell": "lstm", "init": b.init.model_copy(update={"forget_bias": 1.0})})
    edited = experiment.model_copy(update={"runs": [a2, c]})
    config.save(edited, source)
    text = source.read_text()
    for comment in ("# my experiment: keep this comment", "# the name", "# small", "# explodes"):
        assert comment in text
    assert 'name = "b"' not in text
    again = config.load(source)
    assert again.runs == [a2, c]
    assert "recurrent_scale = 2.5" in text and "forget_bias = 1.0" in text
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_save_of_an_experiment_without_a_file_writes_everything(tmp_path):
    experiment = config.loads('schema_version = 1\n[[runs]]\nname = "x"\nactivation = "tanh"\n')
    config.save(experiment, tmp_path / "new.toml")
    assert config.load(tmp_path / "new.toml").runs == experiment.runs


def test_a_file_too_big_for_this_machine_is_still_valid(capsys):
    """Validity is the file's, not the machine's: validate accepts it (running it is another matter)."""
    path = BAD / "too_big.toml"
    run = config.load(path).runs[0]
    assert run.hidden_size == 65536
    assert cli.main(["validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().err


def test_accepted_task_names_are_the_engine_registry():
    from gradscope.engine.tasks import TASK_CLASSES

    assert config.TASKS == tuple(TASK_CLASSES)
    for name in TASK_CLASSES:
        assert RunConfig.model_validate({"task": {"name": name}}).task.name == name
    with pytest.raises(Exception, match="translation"):
        RunConfig.model_validate({"task": {"name": "translation"}})


def test_memory_estimate_counts_the_cell_blocks():
    """(G + 2) L T B d state floats: the gate count G is the cell description's."""
    from gradscope.engine.cells import cell

    def estimate(cell_name: str, d: int) -> int:
        return RunConfig.model_validate(
            {"cell": cell_name, "hidden_size": d, "task": {"seq_len": 7, "batch_size": 3}}
        ).memory_estimate()

    for name in ("rnn", "lstm"):
        G = cell(name).blocks
        # doubling d adds (G + 2) L T B d state floats, and the weights' G d (n + d + 1) grow with it
        states = (G + 2) * 1 * 7 * 3

        def weights(d: int, G: int = G) -> int:  # n = k = 32, the probe
            return G * d * (32 + d + 1) + 32 * (d + 1)

        assert estimate(name, 20) - estimate(name, 10) == 4 * (states * 10 + 4 * (weights(20) - weights(10)))
    assert cell("lstm").blocks == 4 and cell("rnn").blocks == 1


def test_the_fields_accept_exactly_the_registries_names():
    """The fields' Literal types are the engine's (one source); the name tuples are derived from them with
    get_args, so a cell or task added to its registry but not to its Literal would be refused: caught here."""
    from typing import get_args

    from gradscope.engine.cells import ACTIVATION_METRIC, ACTIVATIONS, CELL_NAMES, CELLS
    from gradscope.engine.params import DTYPES, INIT_SCHEMES
    from gradscope.engine.tasks import TASK_CLASSES, TASK_NAMES

    assert CELL_NAMES == tuple(CELLS) and TASK_NAMES == tuple(TASK_CLASSES)  # same names, same order
    assert ACTIVATIONS == tuple(ACTIVATION_METRIC)
    fields = {
        (RunConfig, "cell"): CELL_NAMES,
        (RunConfig, "activation"): ACTIVATIONS,
        (RunConfig, "dtype"): DTYPES,
        (config.InitConfig, "recurrent"): INIT_SCHEMES,
        (config.InitConfig, "input"): INIT_SCHEMES,
        (config.TaskConfig, "name"): TASK_NAMES,
        (config.TrainConfig, "optimizer"): config.OPTIMIZERS,
    }
    for (model, key), names in fields.items():
        assert get_args(model.model_fields[key].annotation) == names, key
    for name in TASK_NAMES:  # each accepted name builds (the probe's sizes are free)
        assert config.TaskConfig(name=name, seq_len=30).name == name


def test_the_config_package_keeps_every_public_name():
    import importlib

    for name in config.__all__:
        assert getattr(config, name) is not None
    for module in ("schema", "loading", "saving"):
        assert importlib.import_module(f"gradscope.config.{module}")
    package = Path(config.__file__).parent
    assert package.name == "config" and all(len(p.read_text().splitlines()) <= 400 for p in package.glob("*.py"))


def test_config_and_io_import_atomic_writes_from_their_own_module():
    """No import circle: config and io both take atomic writes from gradscope.files, which imports neither."""
    import subprocess

    code = (
        "import sys, gradscope.files; before = sorted(m for m in sys.modules if m.startswith('gradscope'));"
        "import gradscope.config.saving as s, gradscope.io as io, gradscope.files as f;"
        "print(before, s.atomic_write_text is f.atomic_write_text, io.atomic_write_bytes is f.atomic_write_bytes)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "['gradscope', 'gradscope.files'] True True"


def test_config_imports_no_qt():
    import subprocess

    code = (
        "import sys, gradscope.config, gradscope.engine.trainer, gradscope.io, gradscope.experiment, "
        "gradscope.cli; print(any(m.startswith(('PyQt6', 'pyqtgraph')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_saving_an_unchanged_shipped_file_leaves_it_byte_for_byte(path, tmp_path):
    copy = tmp_path / path.name
    copy.write_text(path.read_text())
    config.save(config.load(copy), copy)
    assert copy.read_text() == path.read_text()


def test_save_drops_removed_runs_and_reorders_when_asked(tmp_path):
    source = tmp_path / "three.toml"
    source.write_text(
        'schema_version = 1\n# runs follow\n[[runs]]\nname = "a"\n\n[[runs]]\nname = "b"\n'
        'hidden_size = 8  # tiny\n\n[[runs]]\nname = "c"\n'
    )
    experiment = config.load(source)
    a, b, c = experiment.runs
    config.save(experiment.model_copy(update={"runs": [a, c]}), source)
    assert [r.name for r in config.load(source).runs] == ["a", "c"] and "# runs follow" in source.read_text()
    config.save(experiment.model_copy(update={"runs": [b, a]}), source)
    again = config.load(source)
    assert again.runs == [b, a]
