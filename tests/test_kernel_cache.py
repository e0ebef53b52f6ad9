"""Numba's kernel cache folders (engine/_jit.py): each GradScope version compiles into its own folder
gradscope-<salt>; folders of other versions unused for two weeks are removed when GradScope is imported."""

import os
import time

from gradscope.engine import _jit


def make(folder, age_days):
    folder.mkdir()
    (folder / "kernel.nbi").write_bytes(b"index")
    stamp = time.time() - age_days * 86400
    os.utime(folder, (stamp, stamp))
    return folder


def test_stale_folders_of_other_versions_go_and_the_rest_stays(tmp_path):
    ours = make(tmp_path / "gradscope-aaaaaaaaaaaa", age_days=400)  # ours, however old
    stale = make(tmp_path / "gradscope-bbbbbbbbbbbb", age_days=_jit.STALE_DAYS + 1)
    recent = make(tmp_path / "gradscope-cccccccccccc", age_days=_jit.STALE_DAYS - 1)
    foreign = make(tmp_path / "someone-elses-cache", age_days=400)  # not GradScope's
    removed = _jit.prune_stale_caches(str(ours))
    assert removed == [str(stale)]
    assert not stale.exists()
    assert ours.exists() and recent.exists() and foreign.exists()
    assert time.time() - ours.stat().st_mtime < 60  # marked as used now


def test_pruning_never_raises(tmp_path):
    assert _jit.prune_stale_caches(str(tmp_path / "missing" / "gradscope-x")) == []


def test_the_cache_in_use_is_a_salted_gradscope_folder():
    if _jit.CACHE:
        name = os.path.basename(_jit.CACHE_DIR)
        assert name == f"gradscope-{_jit.source_salt()}"
        assert time.time() - os.stat(_jit.CACHE_DIR).st_mtime < 24 * 3600  # marked at this import
