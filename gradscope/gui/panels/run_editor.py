"""The editor of the selected run: a form over RunConfig's keys (the experiment file's names), validated by the
same pydantic models as the file, applied with "Apply" (which restarts that run)."""
from __future__ import annotations

from pydantic import ValidationError
from PyQt6 import QtCore, QtGui, QtWidgets

from ...config import OPTIMIZERS, TASKS, RunConfig
from ...engine.params import ACTIVATIONS, CELLS, DTYPES, INIT_SCHEMES

# (dotted key, label, kind, options, tooltip).  kinds: text, choice, int, float, scale (slider), bool
FIELDS = {
    "Model": [
        ("name", "Name", "text", None, "The run's name (unique within the experiment)"),
        ("cell", "Cell", "choice", CELLS, "rnn: h_t = f(W_hh h_{t-1} + W_hx x_t + b_h); lstm: gates i, f, g, o"),
        ("activation", "Activation f", "choice", ACTIVATIONS, "The RNN's nonlinearity (rnn only)"),
        ("hidden_size", "Hidden size d", "int", (1, 8192), "Units per layer"),
        ("layers", "Layers L", "int", (1, 64), "Stacked recurrent layers"),
        ("dtype", "Precision", "choice", DTYPES, "Floating-point type of the kernels"),
    ],
    "Initialisation": [
        ("init.recurrent", "W_hh scheme", "choice", INIT_SCHEMES,
         "gaussian: Var(W_hh) = scale / d; orthogonal / identity: gain = scale; see docs/experiments.md"),
        ("init.recurrent_scale", "W_hh scale", "scale", (0.0, 6.0),
         "gaussian: c in Var(W_hh) = c / d (ReLU: 2 is critical, 3 explodes, 1.5 vanishes)"),
        ("init.input", "W_hx scheme", "choice", INIT_SCHEMES, "Scheme of the input weights W_hx"),
        ("init.input_scale", "W_hx scale", "scale", (0.0, 6.0), "gaussian: Var(W_hx) = scale / fan_in"),
        ("init.readout_scale", "W_yh scale", "float", (0.0, 100.0), "W_yh ~ N(0, scale / d)"),
        ("init.forget_bias", "Forget bias", "float", (-20.0, 20.0), "lstm: added to the f block of b_h"),
        ("init.chrono", "Chrono init", "bool", None, "lstm: b_f = log U[1, T_max - 1], b_i = -b_f"),
        ("init.chrono_tmax", "Chrono T_max", "int", (0, 10**6), "0: the task's sequence length"),
    ],
    "Task": [
        ("task.name", "Task", "choice", TASKS, "probe, adding problem, copy, character LM, tagging"),
        ("task.seq_len", "Sequence length T", "int", (1, 10**6), "Timesteps per sequence"),
        ("task.batch_size", "Batch size B", "int", (1, 65536), "Sequences per batch"),
        ("task.input_size", "Input size n", "int", (0, 65536), "probe only: input dimension (other tasks fix it)"),
        ("task.output_size", "Output size k", "int", (0, 65536), "probe only: target dimension (other tasks fix it)"),
        ("task.symbols", "Symbols", "int", (2, 1024), "copy: alphabet size"),
        ("task.copy_length", "Copy length", "int", (1, 10**5), "copy: symbols to remember"),
        ("task.text", "Text file", "text", None, "charlm: a text file (empty: the corpus shipped with GradScope)"),
        ("task.fixed_batch", "Fixed batch", "bool", None, "Train on the first batch at every iteration"),
    ],
    "Training": [
        ("train.iterations", "Iterations", "int", (0, 10**9), "Parameter updates; 0: one pass at initialisation"),
        ("train.optimizer", "Optimizer", "choice", OPTIMIZERS, "sgd (with momentum) or adam"),
        ("train.lr", "Learning rate", "float", (0.0, 100.0), "Step size"),
        ("train.momentum", "Momentum", "float", (0.0, 0.9999), "sgd: heavy-ball momentum"),
        ("train.beta1", "Adam beta1", "float", (0.0, 0.9999), "adam: decay of the first-moment estimate"),
        ("train.beta2", "Adam beta2", "float", (0.0, 0.9999), "adam: decay of the second-moment estimate"),
        ("train.clip_norm", "Clip norm", "float", (0.0, 1e9), "Clip the global gradient norm to this; 0: off"),
        ("train.record_every", "Record every", "int", (1, 10**9), "Keep every n-th iteration in the trace"),
        ("train.spectral_every", "Spectrum every", "int", (0, 10**9),
         "Measure spectral_radius and sigma_max of W_hh on every n-th iteration (an eigensolve); 0: never"),
    ],
}

# which keys apply, given the others (disabled otherwise)
APPLIES = {
    "activation": lambda v: v["cell"] == "rnn",
    "init.forget_bias": lambda v: v["cell"] == "lstm",
    "init.chrono": lambda v: v["cell"] == "lstm",
    "init.chrono_tmax": lambda v: v["cell"] == "lstm" and v["init.chrono"],
    "task.input_size": lambda v: v["task.name"] == "probe",
    "task.output_size": lambda v: v["task.name"] == "probe",
    "task.symbols": lambda v: v["task.name"] == "copy",
    "task.copy_length": lambda v: v["task.name"] == "copy",
    "task.text": lambda v: v["task.name"] == "charlm",
    "train.momentum": lambda v: v["train.optimizer"] == "sgd",
    "train.beta1": lambda v: v["train.optimizer"] == "adam",
    "train.beta2": lambda v: v["train.optimizer"] == "adam",
}
PROBE_SIZE = 32
SIZES = ("task.input_size", "task.output_size")
SPECIAL = {"task.input_size": "set by the task", "task.output_size": "set by the task",
           "init.chrono_tmax": "0: the sequence length", "train.iterations": "0: one pass at initialisation",
           "train.spectral_every": "0: never"}


class FloatEdit(QtWidgets.QLineEdit):
    """A float field that keeps the exact value (repr round-trips; a spin box would round to its decimals)."""

    valueChanged = QtCore.pyqtSignal(float)

    def __init__(self, lo: float, hi: float):
        super().__init__()
        validator = QtGui.QDoubleValidator(lo, hi, 17, self)
        validator.setNotation(QtGui.QDoubleValidator.Notation.ScientificNotation)
        validator.setLocale(QtCore.QLocale.c())                 # "0.01", never "0,01"
        self.setValidator(validator)
        self.lo, self.hi = lo, hi
        self.textEdited.connect(self._edited)

    def _edited(self, _text: str) -> None:
        self.valueChanged.emit(self.value())          # NaN while incomplete: the form says what is wrong

    def value(self) -> float:
        """The typed value (NaN while the text is not a number in range: the form refuses to apply it)."""
        try:
            value = float(self.text())
        except ValueError:
            return float("nan")
        return value if self.lo <= value <= self.hi else float("nan")

    def setValue(self, value: float) -> None:  # Qt-style name, like the widgets it sits among
        if self.text() != repr(float(value)):
            self.setText(repr(float(value)))
            self.valueChanged.emit(float(value))


class ScaleEdit(QtWidgets.QWidget):
    """A slider (steps of 0.01) and an exact float field for one scale."""

    valueChanged = QtCore.pyqtSignal(float)

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(int(lo * 100), int(hi * 100))
        self.box = FloatEdit(lo, 1e6)
        self.box.setMaximumWidth(110)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.box)
        self.slider.valueChanged.connect(lambda v: self.box.setValue(v / 100))
        self.box.valueChanged.connect(self._box_changed)

    def _box_changed(self, value: float) -> None:
        if value == value:                           # not NaN: move the slider along
            self.slider.blockSignals(True)
            self.slider.setValue(int(round(value * 100)))
            self.slider.blockSignals(False)
        self.valueChanged.emit(value)

    def value(self) -> float:
        return self.box.value()

    def setValue(self, value: float) -> None:  # Qt-style name
        self.box.setValue(value)


class RunEditor(QtWidgets.QWidget):
    """Edits one RunConfig.  ``applied(key, RunConfig)`` when the user applies a valid edit."""

    applied = QtCore.pyqtSignal(int, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.widgets: dict[str, QtWidgets.QWidget] = {}
        self.key = None
        self.run: RunConfig | None = None
        self._loading = False
        form_host = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(form_host)
        column.setContentsMargins(0, 0, 0, 0)
        for group, fields in FIELDS.items():
            box = QtWidgets.QGroupBox(group)
            form = QtWidgets.QFormLayout(box)
            form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for key, label, kind, options, tip in fields:
                widget = self._make(kind, options)
                widget.setToolTip(tip)
                if key in SPECIAL:
                    widget.setSpecialValueText(SPECIAL[key])       # what 0 means for this key
                label_widget = QtWidgets.QLabel(label)
                label_widget.setToolTip(tip)
                form.addRow(label_widget, widget)
                self.widgets[key] = widget
            column.addWidget(box)
        column.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(form_host)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.apply_button.setToolTip("Use these settings for the run (its trace is cleared; press Run again)")
        self.revert_button = QtWidgets.QPushButton("Revert")
        self.revert_button.setToolTip("Back to the run's current settings")
        self.apply_button.clicked.connect(self.apply)
        self.revert_button.clicked.connect(lambda: self.set_run(self.key, self.run))
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.apply_button)
        buttons.addWidget(self.revert_button)
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.message)
        outer.addLayout(buttons)
        self.set_run(None, None)

    def _make(self, kind: str, options) -> QtWidgets.QWidget:
        if kind == "text":
            widget = QtWidgets.QLineEdit()
            widget.textChanged.connect(self._changed)
        elif kind == "choice":
            widget = QtWidgets.QComboBox()
            widget.addItems(list(options))
            widget.currentIndexChanged.connect(self._changed)
        elif kind == "int":
            widget = QtWidgets.QSpinBox()
            widget.setRange(*options)
            widget.valueChanged.connect(self._changed)
        elif kind == "float":
            widget = FloatEdit(*options)
            widget.valueChanged.connect(self._changed)
        elif kind == "scale":
            widget = ScaleEdit(*options)
            widget.valueChanged.connect(self._changed)
        elif kind == "bool":
            widget = QtWidgets.QCheckBox()
            widget.toggled.connect(self._changed)
        else:
            raise ValueError(f"unknown field kind {kind!r}")
        return widget

    # ------------------------------------------------------------------------------ values
    def values(self) -> dict:
        """Every field's value by dotted key."""
        out = {}
        for key, widget in self.widgets.items():
            if isinstance(widget, (FloatEdit, ScaleEdit)):
                out[key] = widget.value()
            elif isinstance(widget, QtWidgets.QLineEdit):
                out[key] = widget.text()
            elif isinstance(widget, QtWidgets.QComboBox):
                out[key] = widget.currentText()
            elif isinstance(widget, QtWidgets.QCheckBox):
                out[key] = widget.isChecked()
            elif isinstance(widget, QtWidgets.QSpinBox):
                out[key] = int(widget.value())
            else:
                raise TypeError(f"{key}: no value for a {type(widget).__name__}")
        return out

    def set_value(self, key: str, value) -> None:
        """Set one field (as a user would); tests and presets use it."""
        widget = self.widgets[key]
        if isinstance(widget, (FloatEdit, ScaleEdit)):
            widget.setValue(value)
        elif isinstance(widget, QtWidgets.QLineEdit):
            widget.setText("" if value is None else str(value))
        elif isinstance(widget, QtWidgets.QComboBox):
            index = widget.findText(str(value))
            if index < 0:
                choices = [widget.itemText(i) for i in range(widget.count())]
                raise ValueError(f"{key}: {value!r} is not one of {choices}")
            widget.setCurrentIndex(index)
        elif isinstance(widget, QtWidgets.QCheckBox):
            widget.setChecked(bool(value))
        elif value is not None:
            widget.setValue(value)

    def set_run(self, key, run: RunConfig | None) -> None:
        """Show a run's settings (None: nothing selected, the form is disabled)."""
        self.key, self.run = key, run
        self._loading = True
        if run is not None:
            flat = _flatten(run.model_dump())
            for field_key in self.widgets:
                value = flat.get(field_key)
                if field_key in SIZES and value is None:
                    value = 0                       # "set by the task"
                self.set_value(field_key, value)
        self._loading = False
        self.setEnabled(run is not None)
        self._changed()
        self.apply_button.setEnabled(False)

    def edited_run(self) -> RunConfig:
        """The form as a RunConfig (raises ValueError with a readable message if it is not valid)."""
        values = self.values()
        data = self.run.model_dump() if self.run is not None else {}
        for key, widget in self.widgets.items():
            if isinstance(widget, (FloatEdit, ScaleEdit)) and widget.isEnabled() and values[key] != values[key]:
                box = widget if isinstance(widget, FloatEdit) else widget.box
                raise ValueError(f"{key}: {box.text()!r} is not a number from {box.lo:g} to {box.hi:g}")
        for key, value in values.items():
            applies = APPLIES.get(key)
            if applies is not None and not applies(values):
                if key in SIZES:
                    value = None                    # the task fixes these sizes
                else:
                    continue                        # keep the run's value for settings that do not apply
            _set(data, key, value)
        try:
            run = RunConfig.model_validate(data)
        except ValidationError as error:
            raise ValueError(_explain(error)) from None
        from ...engine.tasks import TaskError, make_task

        try:
            make_task(run.task, run.dtype)
        except TaskError as error:
            raise ValueError(f"{error.key}: {error}") from None
        return run

    def _changed(self, *_):
        if self._loading:
            return
        values = self.values()
        if values["task.name"] == "probe":
            for key in SIZES:                       # back to the probe: its sizes are free again
                if values[key] == 0:
                    self._loading = True
                    self.set_value(key, PROBE_SIZE)
                    self._loading = False
        else:
            for key in SIZES:
                if values[key] != 0:
                    self._loading = True
                    self.set_value(key, 0)
                    self._loading = False
        values = self.values()
        for key, applies in APPLIES.items():
            self.widgets[key].setEnabled(applies(values))
        if self.run is None:
            self.message.setText("")
            return
        try:
            run = self.edited_run()
        except ValueError as error:
            self.message.setText(str(error))
            self.apply_button.setEnabled(False)
            return
        self.message.setText("")
        self.apply_button.setEnabled(run != self.run)

    def apply(self) -> bool:
        """Validate and emit ``applied``; False (with the message shown) if the settings are not valid."""
        try:
            run = self.edited_run()
        except ValueError as error:
            self.message.setText(str(error))
            return False
        if self.key is not None:
            self.applied.emit(self.key, run)
        self.run = run
        self.apply_button.setEnabled(False)
        return True


def _flatten(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _set(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def _explain(error: ValidationError) -> str:
    """One line per problem: the dotted key and pydantic's message."""
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "value_error":
            message = str(err.get("ctx", {}).get("error", message))
        lines.append(f"{key}: {message}" if key else message)
    return "; ".join(lines)
