"""GradScope's desktop app (PyQt6 + pyqtgraph): the only package that imports Qt.

app.py           QApplication, pyqtgraph options, ``main(path)``
main_window.py   layout; wires views to the controller; computes nothing
menus.py         actions, menus, toolbar, status bar, About box
controller.py    the runs, their live traces, the queue (at most runs_at_once workers), run / pause / step /
                 stop / reset
worker.py        a QThread driving runs.drive (the CLI's loop too), sending records in batches
model.py         RunData (what a view draws) and RunState (what the controller holds), both over the run's
                 runs.RunResult (Qt-free)
plotting.py      log10 axes, hover readouts, empty-state hints
views/           one file per view, each a Figure (pyqtgraph items, testable alone) and a View (widget)
panels/          run list, run editor, and the editor's fields read from the config schema
figures.py       the views rendered offscreen to PNG and SVG (export_figures), same code as the app
page_pool.py     many runs' waterfall pages, drawn by worker processes while figures.py draws the rest
page_ahead.py    gradscope run: each ended run's waterfall page drawn while the other runs compute
"""
