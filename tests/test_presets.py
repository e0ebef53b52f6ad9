"""The shipped experiment files: found through the package (gradscope.models -> models/), or beside the package
in a source tree used without installing.  The installed case: tests/test_packaging.py."""

from pathlib import Path

from gradscope import config, presets

ROOT = Path(__file__).resolve().parent.parent


def test_every_file_of_models_is_a_preset_and_loads():
    files = presets.preset_files()
    assert [p.name for p in files] == sorted(p.name for p in (ROOT / "models").glob("*.toml"))
    assert all(p.read_bytes() == (ROOT / "models" / p.name).read_bytes() for p in files)
    assert presets.default_preset().name == "relu_init_scale.toml"
    for path in files:
        assert config.load(path).runs


def test_a_source_tree_without_an_installed_gradscope_models_uses_the_folder_beside_the_package(monkeypatch):
    def not_installed(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(presets.resources, "files", not_installed)
    assert presets.presets_dir() == Path(presets.__file__).resolve().parent.parent / "models"


def test_no_presets_is_an_empty_list_and_no_default(monkeypatch, tmp_path):
    monkeypatch.setattr(presets, "presets_dir", lambda: tmp_path / "stripped")
    assert presets.preset_files() == [] and presets.default_preset() is None
