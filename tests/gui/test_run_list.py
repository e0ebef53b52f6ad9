"""The run list repaints a row at once for a new status and at most every COUNTER_REFRESH_MS for new counters
(batches of records arrive up to 20 times a second per run; each repaint of the list costs the GUI thread)."""

from gradscope import config
from gradscope.gui.model import RunState
from gradscope.gui.panels import run_list as run_list_module
from gradscope.gui.panels.run_list import RunList
from gradscope.runs import RunStatus

EXPERIMENT = """schema_version = 1
[experiment]
name = "rows"
[[runs]]
name = "a"
[[runs]]
name = "b"
"""


def test_counters_are_repainted_in_batches_and_a_new_status_at_once(qtbot):
    states = [RunState(run, color) for run, color in zip(config.loads(EXPERIMENT).runs, ("#0072B2", "#D55E00"))]
    panel = RunList()
    qtbot.addWidget(panel)
    panel.set_runs(states)
    changed: list[int] = []
    panel.model.dataChanged.connect(lambda top, _bottom: changed.append(top.row()))
    for state in states:
        panel.update_run(state)  # first sight of their status: at once
    assert changed == [0, 1]
    changed.clear()
    for _ in range(10):  # ten batches of records for each, status unchanged: nothing yet
        for state in states:
            panel.update_run(state)
    assert changed == []
    qtbot.waitUntil(lambda: sorted(changed) == [0, 1], timeout=5 * run_list_module.COUNTER_REFRESH_MS)
    qtbot.wait(2 * run_list_module.COUNTER_REFRESH_MS)
    assert sorted(changed) == [0, 1]  # one repaint per row for all ten batches
    changed.clear()
    states[1].result.status = RunStatus.COMPLETED
    panel.update_run(states[1])
    assert changed == [1]  # a new status shows at once
    assert panel.row_texts(states[1].key)[1] == states[1].status_text()
