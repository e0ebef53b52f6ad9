"""sessions.prune, the app's stated policy for old sessions: one goes only when it was closed cleanly or its
recovery notice was answered, it is not among the newest KEEP_LAST, and it started more than KEEP_DAYS ago.
Interrupted and unanswered sessions, unreadable ones and other folders are never removed."""

import json
import time

from gradscope.sessions import SESSION, last_interrupted, prune

DAY = 86400.0


def _session(root, started: float, **manifest):
    name = time.strftime("%Y%m%d-%H%M%S", time.localtime(started)) + "-999999"
    path = root / name
    path.mkdir(parents=True)
    fields = {"gradscope_session": 1, "pid": 999999, "ended": None}  # a pid that is not alive
    fields.update(manifest)
    fields["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))
    (path / SESSION).write_text(json.dumps(fields))
    (path / "001-run").mkdir()  # stands for a run's recording: pruning removes the folder whole
    return path


def test_old_sessions_done_with_go_and_everything_else_stays(tmp_path):
    now = time.time()
    root = tmp_path / "sessions"
    old_ended = [_session(root, now - (40 + i) * DAY, ended="x") for i in range(3)]
    old_dismissed = _session(root, now - 50 * DAY, handled="dismissed")
    old_interrupted = _session(root, now - 60 * DAY)  # never ended, never answered: kept whatever its age
    young_ended = _session(root, now - 5 * DAY, ended="x")
    unreadable = root / "20200101-000000-1"
    unreadable.mkdir()
    (unreadable / SESSION).write_text("{not json")
    other = root / "my-notes"
    other.mkdir()

    removed = prune(root, keep_last=2, keep_days=30, now=now)  # the newest two: young_ended and old_ended[0]
    assert removed == [old_ended[1], old_ended[2], old_dismissed]
    assert set(root.iterdir()) == {young_ended, old_ended[0], old_interrupted, unreadable, other}


def test_the_newest_sessions_are_kept_however_old_and_an_interrupted_one_is_still_offered(tmp_path):
    now = time.time()
    root = tmp_path / "sessions"
    paths = [_session(root, now - (100 + i) * DAY, ended="x") for i in range(5)]  # paths[0] is the newest
    interrupted = _session(root, now - 400 * DAY)
    assert prune(root, keep_last=3, keep_days=30, now=now) == [paths[3], paths[4]]
    assert set(root.iterdir()) == {*paths[:3], interrupted}
    assert prune(root, keep_last=3, keep_days=30, now=now) == []  # nothing more to do
    assert prune(root, keep_last=0, keep_days=365 * 2, now=now) == []  # all younger than two years
    assert prune(tmp_path / "missing") == []
    # the interrupted one holds no readable recording here, so it is not offered, but it was not touched
    assert interrupted.exists() and last_interrupted(root) is None
