"""An export is flushed to disk as a whole (files.sync_tree) before its rename publishes it: the flush comes
first, a disk error in it publishes nothing (an earlier export stays), and without syncfs every file is fsynced."""

import os

import numpy as np
import pytest

import gradscope.files as files
import gradscope.io as gio
from gradscope import config
from gradscope.experiment import run_experiment

EXPERIMENT = """
schema_version = 1
[experiment]
name = "sync test"
seed = 1
[defaults]
hidden_size = 6
dtype = "float64"
[defaults.task]
seq_len = 5
batch_size = 2
input_size = 3
output_size = 2
[defaults.train]
iterations = 3
[[runs]]
name = "a"
[[runs]]
name = "b"
activation = "tanh"
"""


@pytest.fixture(scope="module")
def ran():
    experiment = config.loads(EXPERIMENT)
    return experiment, run_experiment(experiment, backend="numpy", processes=1)


def test_the_folder_is_flushed_whole_before_it_is_renamed_into_place(tmp_path, monkeypatch, ran):
    experiment, results = ran
    out = tmp_path / "out"
    events = []
    real_sync, real_replace = gio.sync_tree, os.replace

    def sync(path):
        events.append(("sync", sorted(p.name for p in os.scandir(path))))
        real_sync(path)

    def replace(src, dst):
        events.append(("rename", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(gio, "sync_tree", sync)
    monkeypatch.setattr(os, "replace", replace)
    gio.export_experiment(out, experiment, results, figures=False)
    assert events[0][0] == "sync" and "summary.json" in events[0][1]  # everything written, then flushed
    assert events[1] == ("rename", "out")
    _, back = gio.load_experiment_folder(out)
    np.testing.assert_array_equal(back[1].trace.array("h_norm"), results[1].trace.array("h_norm"))


def test_a_disk_error_in_the_flush_publishes_nothing_and_keeps_the_earlier_export(tmp_path, monkeypatch, ran):
    experiment, results = ran
    out = tmp_path / "out"
    gio.export_experiment(out, experiment, results[:1], figures=False)
    before = (out / "summary.json").read_bytes()

    def broken(path):
        raise OSError(5, f"{path}: Input/output error")

    monkeypatch.setattr(gio, "sync_tree", broken)
    with pytest.raises(OSError, match="Input/output error"):
        gio.export_experiment(out, experiment, results, figures=False)
    assert (out / "summary.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_without_syncfs_every_file_and_folder_is_fsynced(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    for name in ("run/trace.npz", "run/trace.csv", "summary.json"):
        (tmp_path / name).write_bytes(b"x")
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(files, "_syncfs", lambda: None)
    monkeypatch.setattr(os, "fsync", fsync)
    files.sync_tree(tmp_path)
    expected = {str(tmp_path / n) for n in ("run/trace.npz", "run/trace.csv", "summary.json", "run")} | {str(tmp_path)}
    assert set(synced) == expected


def test_syncfs_is_used_on_linux_and_reports_a_bad_descriptor_as_oserror(tmp_path):
    if files._syncfs() is None:
        pytest.skip("no syncfs(2) here")
    files.sync_tree(tmp_path)  # the real call succeeds on a real folder
    with pytest.raises(OSError):
        files.sync_tree(tmp_path / "missing")
