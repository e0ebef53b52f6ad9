"""The editor of the selected run: a form over RunConfig's keys (the experiment file's names), validated by the
same pydantic models as the file, applied with "Apply" (which restarts that run).

The fields, their types, ranges, choices and defaults come from the schema (panels.fields, read from the
pydantic models); which apply to the selected cell, from the cell descriptions.  Only how a field is shown is
written here: its label and tip, what its special value means, and which scales get a slider.
"""

from __future__ import annotations

from pydantic import ValidationError
from PyQt6 import QtCore, QtGui, QtWidgets

from ...config import RunConfig
from .fields import FIELDS, FLOAT_MAX, Field, applies

# sub-table -> box title
GROUPS = {"": "Model", "init": "Initialisation", "task": "Task", "train": "Training", "analysis": "Analysis"}
# dotted key -> (label, tooltip); a schema key without an entry is shown under its own name
LABELS = {
    "name": ("Name", "The run's name (unique within the experiment)"),
    "seed": ("Seed", "The run's own seed for its parameters and data"),
    "cell": ("Cell", "rnn: h_t = f(W_hh h_{t-1} + W_hx x_t + b_h); lstm: gates i, f, g, o"),
    "activation": ("Activation f", "The RNN's nonlinearity (rnn only)"),
    "hidden_size": ("Hidden size d", "Units per layer"),
    "layers": ("Layers L", "Stacked recurrent layers"),
    "bidirectional": ("Bidirectional", "Every layer also runs in reverse; the layer above and the readout read both"),
    "architecture": (
        "Architecture",
        "stack: layers with a readout; seq2seq: an encoder of L layers whose final states start a decoder of L "
        "layers (the readout on the decoder)",
    ),
    "dtype": ("Precision", "Floating-point type of the kernels"),
    "init.recurrent": (
        "W_hh scheme",
        "gaussian: Var(W_hh) = scale / d; orthogonal / identity: gain = scale; see docs/experiments.md",
    ),
    "init.recurrent_scale": (
        "W_hh scale",
        "gaussian: c in Var(W_hh) = c / d (ReLU: 2 is critical, 3 explodes, 1.5 vanishes)",
    ),
    "init.input": ("W_hx scheme", "Scheme of the input weights W_hx"),
    "init.input_scale": ("W_hx scale", "gaussian: Var(W_hx) = scale / fan_in"),
    "init.readout_scale": ("W_yh scale", "W_yh ~ N(0, scale / d)"),
    "init.bias_scale": ("b_h variance", "b_h ~ N(0, bias_scale): the phase diagram's sigma_b^2; 0: b_h = 0"),
    "init.forget_bias": ("Forget bias", "lstm: added to the f block of b_h"),
    "init.chrono": ("Chrono init", "lstm: b_f = log U[1, T_max - 1], b_i = -b_f"),
    "init.chrono_tmax": ("Chrono T_max", "0: the task's sequence length"),
    "task.name": ("Task", "probe, adding problem, copy, character LM, tagging, lookahead; translate (seq2seq)"),
    "task.seq_len": ("Sequence length T", "Timesteps per sequence"),
    "task.batch_size": ("Batch size B", "Sequences per batch"),
    "task.input_size": ("Input size n", "probe only: input dimension (other tasks fix it)"),
    "task.output_size": ("Output size k", "probe only: target dimension (other tasks fix it)"),
    "task.symbols": ("Symbols", "copy: alphabet size"),
    "task.copy_length": ("Copy length", "copy: symbols to remember"),
    "task.text": ("Text file", "charlm: a text file (empty: the corpus shipped with GradScope)"),
    "task.fixed_batch": ("Fixed batch", "Train on the first batch at every iteration"),
    "task.target_len": ("Target length", "seq2seq: the decoder's steps (empty: the sequence length)"),
    "task.reverse_source": ("Reverse source", "seq2seq: feed the source backwards (Sutskever et al. 2014)"),
    "train.iterations": ("Iterations", "Parameter updates; 0: one pass at initialisation"),
    "train.optimizer": ("Optimizer", "sgd (with momentum) or adam"),
    "train.lr": ("Learning rate", "Step size"),
    "train.momentum": ("Momentum", "sgd: heavy-ball momentum"),
    "train.beta1": ("Adam beta1", "adam: decay of the first-moment estimate"),
    "train.beta2": ("Adam beta2", "adam: decay of the second-moment estimate"),
    "train.eps": ("Adam epsilon", "adam: added to the root of the second moment"),
    "train.clip_norm": ("Clip norm", "Clip the global gradient norm to this; 0: off"),
    "train.record_every": ("Record every", "Keep every n-th iteration in the trace"),
    "train.spectral_every": (
        "Spectrum every",
        "Measure spectral_radius and sigma_max of W_hh on every n-th iteration (an eigensolve); 0: never",
    ),
    "analysis.every": (
        "Analyse every",
        "Long-lag Jacobians, dL/dW_hh by lag, unit traces and Lyapunov exponents at iteration 0 and every n-th "
        "recorded iteration (float64, costs seconds at d = 256); 0: off",
    ),
    "analysis.jacobian": ("Jacobians", "The long-lag Jacobian norms, dL/dW_hh by lag and the unit traces"),
    "analysis.lyapunov": ("Exponents m", "How many Lyapunov exponents (QR method); at most the state size"),
    "analysis.warmup": ("Warm-up steps", "Steps run and discarded before the exponents are measured"),
    "analysis.steps": ("Measured steps", "Steps the exponents are averaged over"),
    "analysis.h0": ("Initial state", "The exponents' s_{-1}: zero, or N(0, 1) per unit (from the run's seed)"),
    "analysis.examples": ("Examples", "Trajectories the exponents are averaged over"),
}
SLIDERS = {"init.recurrent_scale": 6.0, "init.input_scale": 6.0}  # scales with a slider, and where it ends
PROBE_SIZE = 32
SIZES = ("task.input_size", "task.output_size")
# the text of an int field's lowest value (a nullable field's lowest stands for None)
SPECIAL = {
    "seed": "the experiment's seed",
    "task.input_size": "set by the task",
    "task.target_len": "the sequence length",
    "task.output_size": "set by the task",
    "init.chrono_tmax": "0: the sequence length",
    "train.iterations": "0: one pass at initialisation",
    "train.spectral_every": "0: never",
    "analysis.every": "0: off",
    "analysis.lyapunov": "0: none",
}


class FloatEdit(QtWidgets.QLineEdit):
    """A float field that keeps the exact value (repr round-trips; a spin box would round to its decimals)."""

    valueChanged = QtCore.pyqtSignal(float)

    def __init__(self, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
        super().__init__()
        validator = QtGui.QDoubleValidator(lo, hi, 17, self)
        validator.setNotation(QtGui.QDoubleValidator.Notation.ScientificNotation)
        validator.setLocale(QtCore.QLocale.c())  # "0.01", never "0,01"
        self.setValidator(validator)
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.textEdited.connect(self._edited)

    def accepts(self, value: float) -> bool:
        """Within the bounds (an open bound excludes itself); NaN never."""
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def range_text(self) -> str:
        """The bounds in words: "at least 0 and below 1", "above 0", "finite"."""
        parts = []
        if self.lo > -FLOAT_MAX:
            parts.append(f"{'above' if self.lo_open else 'at least'} {self.lo:g}")
        if self.hi < FLOAT_MAX:
            parts.append(f"{'below' if self.hi_open else 'at most'} {self.hi:g}")
        return " and ".join(parts) or "finite"

    def _edited(self, _text: str) -> None:
        self.valueChanged.emit(self.value())  # NaN while incomplete: the form says what is wrong

    def value(self) -> float:
        """The typed value (NaN while the text is not a number in range: the form refuses to apply it)."""
        try:
            value = float(self.text())
        except ValueError:
            return float("nan")
        return value if self.accepts(value) else float("nan")

    def setValue(self, value: float) -> None:  # Qt-style name, like the widgets it sits among
        if self.text() != repr(float(value)):
            self.setText(repr(float(value)))
            self.valueChanged.emit(float(value))


class ScaleEdit(QtWidgets.QWidget):
    """A slider (steps of 0.01) and an exact float field for one scale."""

    valueChanged = QtCore.pyqtSignal(float)

    def __init__(self, box: FloatEdit, slider_end: float):
        super().__init__()
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(int(max(box.lo, 0.0) * 100), int(slider_end * 100))
        self.box = box
        self.box.setMaximumWidth(110)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.box)
        self.slider.valueChanged.connect(lambda v: self.box.setValue(v / 100))
        self.box.valueChanged.connect(self._box_changed)

    def _box_changed(self, value: float) -> None:
        if value == value:  # not NaN: move the slider along
            self.slider.blockSignals(True)
            self.slider.setValue(round(value * 100))
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
        forms: dict[str, QtWidgets.QFormLayout] = {}
        for spec in FIELDS.values():
            form = forms.get(spec.group)
            if form is None:
                box = QtWidgets.QGroupBox(GROUPS.get(spec.group, spec.group))
                form = forms[spec.group] = QtWidgets.QFormLayout(box)
                form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                column.addWidget(box)
            label, tip = LABELS.get(spec.key, (spec.key, spec.description or ""))
            if spec.default is not None and spec.kind != "text":
                tip = f"{tip} (default {spec.default})" if tip else f"default {spec.default}"
            widget = self._make(spec)
            widget.setToolTip(tip)
            if spec.key in SPECIAL:
                widget.setSpecialValueText(SPECIAL[spec.key])  # what the lowest value means for this key
            label_widget = QtWidgets.QLabel(label)
            label_widget.setToolTip(tip)
            form.addRow(label_widget, widget)
            self.widgets[spec.key] = widget
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

    def _make(self, spec: Field) -> QtWidgets.QWidget:
        """The widget for one schema field, with the schema's range or choices."""
        if spec.kind == "text":
            widget = QtWidgets.QLineEdit()
            widget.textChanged.connect(self._changed)
        elif spec.kind == "choice":
            widget = QtWidgets.QComboBox()
            widget.addItems([str(c) for c in spec.choices])
            widget.currentIndexChanged.connect(self._changed)
        elif spec.kind == "int":
            widget = QtWidgets.QSpinBox()
            widget.setRange(*spec.int_range())
            widget.valueChanged.connect(self._changed)
        elif spec.kind == "float":
            widget = FloatEdit(*spec.float_range(), lo_open=spec.lo_open, hi_open=spec.hi_open)
            if spec.key in SLIDERS:
                widget = ScaleEdit(widget, SLIDERS[spec.key])
            widget.valueChanged.connect(self._changed)
        elif spec.kind == "bool":
            widget = QtWidgets.QCheckBox()
            widget.toggled.connect(self._changed)
        else:
            raise ValueError(f"{spec.key}: no editor field for kind {spec.kind!r}")
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
        elif value is None:
            widget.setValue(widget.minimum())  # a nullable int's lowest value stands for None
        else:
            widget.setValue(value)

    def set_run(self, key, run: RunConfig | None) -> None:
        """Show a run's settings (None: nothing selected, the form is disabled)."""
        self.key, self.run = key, run
        self._loading = True
        if run is not None:
            flat = _flatten(run.model_dump())
            for field_key in self.widgets:
                self.set_value(field_key, flat.get(field_key))
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
                raise ValueError(f"{key}: {box.text()!r} is not a number ({box.range_text()})")
        for key, value in values.items():
            widget = self.widgets[key]
            if FIELDS[key].nullable and value == widget.minimum():
                value = None  # e.g. "set by the task", "the experiment's seed"
            if not applies(key, values):
                if key in SIZES:
                    value = None  # the task fixes these sizes
                else:
                    continue  # keep the run's value for settings that do not apply
            _set(data, key, value)
        try:
            run = RunConfig.model_validate(data)
        except ValidationError as error:
            raise ValueError(_explain(error)) from None
        from ...engine.tasks import TaskError, make_task

        try:
            make_task(run.task, run.dtype, run.architecture)
        except TaskError as error:
            raise ValueError(f"{error.key}: {error}") from None
        return run

    def _changed(self, *_):
        if self._loading:
            return
        values = self.values()
        if values["task.name"] == "probe":
            for key in SIZES:  # back to the probe: its sizes are free again
                if values[key] == self.widgets[key].minimum():
                    self._loading = True
                    self.set_value(key, PROBE_SIZE)
                    self._loading = False
        else:
            for key in SIZES:
                if values[key] != self.widgets[key].minimum():
                    self._loading = True
                    self.set_value(key, None)  # "set by the task"
                    self._loading = False
        values = self.values()
        for key, widget in self.widgets.items():
            widget.setEnabled(applies(key, values))
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
