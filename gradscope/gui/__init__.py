"""GradScope's desktop app (PyQt6 + pyqtgraph): the only package that imports Qt.

    app.py           QApplication, pyqtgraph options, ``main(path)``
    main_window.py   layout, menus, shortcuts; wires views to the controller; computes nothing
    controller.py    one worker thread per run, the live traces, run / pause / step / stop / reset
    worker.py        pulls Records from engine.trainer.Training in a QThread and sends them in batches
    model.py         RunData: what a view needs to draw one run (Qt-free)
    plotting.py      log10 axes, hover readouts, empty-state hints
    views/           one file per view, each a Figure (pyqtgraph items, testable alone) and a View (widget)
    panels/          run list and run editor
    figures.py       the views rendered offscreen to PNG and SVG (export_figures), same code as the app
"""
