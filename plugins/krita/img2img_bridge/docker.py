"""The docker panel: Qt widgets bound to a ``Controller``. Krita adapter; GUI thread only."""

from __future__ import annotations

import traceback
from typing import Any, Callable

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Krita

from .bridge_package import DEFAULT_URL, MODEL_DEFAULT, PRESET_LABELS, STRENGTH_PRESETS, auto_guidance, auto_steps, auto_strength, p
from .canvas import KritaCanvas
from .controller import Connection, Controller, StripItem, ViewState
from .live import TICK_S, LiveState
from .qt import QPixmap, Qt, QtCore, QtGui, QTimer, QtWidgets, Relay, image_from_rgba
from .runner import JobRunner
from .settings import MAX_COUNT, MAX_GUIDANCE, MAX_SEED, MAX_STEPS, SOURCE_LABELS, Settings, Source

DOCKER_ID = "img2img_bridge"
SETTINGS_GROUP = "img2img_bridge"

#: Every docker created in this Krita session (one per window); the end-to-end tests drive them.
DOCKERS: list[BridgeDocker] = []
#: The spin boxes' lowest value stands for "auto" (Qt shows their special value text there).
AUTO_STEPS = 0
AUTO_GUIDANCE = -0.5


def load_settings(app: Krita) -> Settings:
    names = Settings().to_strings()
    return Settings.from_strings({name: app.readSetting(SETTINGS_GROUP, name, "") for name in names})


def save_settings(app: Krita, settings: Settings) -> None:
    for name, value in settings.to_strings().items():
        app.writeSetting(SETTINGS_GROUP, name, value)


class ImageView(QtWidgets.QLabel):
    """Shows an image scaled to fit, kept up to date in place."""

    def __init__(self) -> None:
        super().__init__()
        self._image: Any = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumHeight(120)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Ignored)

    def show_rgba(self, rgba: bytes, width: int, height: int) -> None:
        self._image = image_from_rgba(rgba, width, height)
        self._rescale()

    def clear_image(self) -> None:
        self._image = None
        self.clear()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._image is None:
            return
        scaled = self._image.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        self.setPixmap(QPixmap.fromImage(scaled))


class HistoryStrip(QtWidgets.QListWidget):
    """The thumbnails of the shown document's results, newest job first, a thin gap between jobs."""

    ICON = 64

    def __init__(self) -> None:
        super().__init__()
        self._shown: object = None
        self.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.setFlow(QtWidgets.QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setMovement(QtWidgets.QListView.Movement.Static)
        self.setIconSize(QtCore.QSize(self.ICON, self.ICON))
        self.setMaximumHeight(2 * self.ICON + 40)

    def show_items(self, jobs: tuple[tuple[StripItem, ...], ...], picked: tuple[str, int] | None) -> None:
        if (jobs, picked) == self._shown:
            return
        self._shown = (jobs, picked)
        self.blockSignals(True)
        self.clear()
        for number, items in enumerate(jobs):
            if number:
                gap = QtWidgets.QListWidgetItem("")
                gap.setFlags(Qt.ItemFlag.NoItemFlags)
                gap.setSizeHint(QtCore.QSize(6, self.ICON))
                self.addItem(gap)
            for item in items:
                row = QtWidgets.QListWidgetItem(f"#{item.index + 1}" if item.done else "…")
                if item.thumbnail is not None:
                    row.setIcon(QtGui.QIcon(QPixmap.fromImage(image_from_rgba(*item.thumbnail))))
                row.setToolTip(item.tooltip)
                row.setData(Qt.ItemDataRole.UserRole, [item.job_id, item.index])
                if not item.done:
                    row.setFlags(Qt.ItemFlag.ItemIsEnabled)
                self.addItem(row)
                if item.key == picked:
                    row.setSelected(True)
        self.blockSignals(False)


class BridgeDocker(DockWidget):
    """The img2img docker: settings, Generate/Cancel, Live, Apply/Discard."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("img2img Bridge")
        self._app = Krita.instance()
        self._loading = True
        self._closed = False
        self._recipe: p.Recipe | None = None
        self._build(load_settings(self._app))
        self.relay = Relay(self._on_updates)
        self.runner = JobRunner(self.relay.post, name=f"krita-{self._app.version()}")
        self.controller = Controller(KritaCanvas(self._app), self.runner, self.settings, self._render)
        self.live_timer = QTimer(self)
        self.live_timer.setInterval(int(TICK_S * 1000))
        self._connect_signals()
        self._loading = False
        self._rendered_image: object = None
        self._render(self.controller.state)
        self._app.notifier().applicationClosing.connect(self.shutdown)
        DOCKERS.append(self)
        self.controller.connect()

    def canvasChanged(self, canvas: Any) -> None:
        """Jobs follow the active document when they start; the docker shows the state of the active one."""
        self._guarded(self.controller.document_changed)()

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.live_timer.stop()
        self.controller.close()

    # --- settings -------------------------------------------------------------------------

    def settings(self) -> Settings:
        seed_text = self.seed_edit.text().strip()
        steps, live_steps, guidance = self.steps_spin.value(), self.live_steps_spin.value(), self.guidance_spin.value()
        return Settings(
            url=self.url_edit.text().strip() or DEFAULT_URL,
            token=self.token_edit.text().strip(),
            prompt=self.prompt_edit.toPlainText().strip(),
            negative_prompt=self.negative_edit.text().strip(),
            strength=None if self._strength_auto else self.strength_slider.value() / 100,
            steps=None if steps == AUTO_STEPS else steps,
            guidance=None if guidance <= AUTO_GUIDANCE else guidance,
            fixed_seed=self.seed_fixed_check.isChecked(),
            seed=min(MAX_SEED, int(seed_text)) if seed_text.isdigit() else 0,
            model=self.model_combo.currentText(),
            source=Source(self.source_combo.currentData()),
            from_canvas=self.canvas_check.isChecked(),
            live_steps=None if live_steps == AUTO_STEPS else live_steps,
            live_on_canvas=self.live_canvas_check.isChecked(),
            match_seams=self.seams_check.isChecked(),
            count=self.count_spin.value(),
        )

    def _save(self) -> None:
        if not self._loading:
            save_settings(self._app, self.settings())

    # --- widgets --------------------------------------------------------------------------

    def _build(self, settings: Settings) -> None:
        W = QtWidgets
        root = W.QWidget()
        layout = W.QVBoxLayout(root)

        self.connection_label = W.QLabel()
        self.connection_label.setWordWrap(True)
        self.reconnect_button = W.QPushButton("Reconnect")
        layout.addLayout(_row(self.connection_label, self.reconnect_button, stretch_first=True))

        form = W.QFormLayout()
        self.url_edit = W.QLineEdit(settings.url)
        self.token_edit = W.QLineEdit(settings.token)
        self.token_edit.setEchoMode(W.QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("none")
        self.model_combo = W.QComboBox()
        if settings.model:
            self.model_combo.addItem(settings.model)
        form.addRow("Bridge", self.url_edit)
        form.addRow("Token", self.token_edit)
        form.addRow("Model", self.model_combo)

        self.prompt_edit = W.QPlainTextEdit(settings.prompt)
        self.prompt_edit.setPlaceholderText("Describe the result")
        self.prompt_edit.setMaximumHeight(80)
        self.negative_edit = W.QLineEdit(settings.negative_prompt)
        self.negative_edit.setPlaceholderText("What to avoid")
        form.addRow("Prompt", self.prompt_edit)
        form.addRow("Negative", self.negative_edit)

        self.source_combo = W.QComboBox()
        for source, label in SOURCE_LABELS.items():
            self.source_combo.addItem(label, source.value)
        self.source_combo.setCurrentIndex(list(SOURCE_LABELS).index(settings.source))
        self.canvas_check = W.QCheckBox("Visible canvas")
        self.canvas_check.setToolTip("Read all visible layers instead of the active layer")
        self.canvas_check.setChecked(settings.from_canvas)
        self.seams_check = W.QCheckBox("Match seams")
        self.seams_check.setToolTip("Match the regenerated area's colours to the kept pixels around it")
        self.seams_check.setChecked(settings.match_seams)
        form.addRow("Source", _row(self.source_combo, self.canvas_check, stretch_first=True))
        form.addRow("", self.seams_check)

        self.strength_slider = W.QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setRange(1, 100)
        self._strength_auto = settings.strength is None
        self.strength_slider.setValue(round((settings.strength or STRENGTH_PRESETS["medium"]) * 100))
        self.strength_label = W.QLabel()
        self.preset_buttons: dict[str, Any] = {}
        presets = W.QHBoxLayout()
        for name, label in PRESET_LABELS.items():
            button = W.QPushButton(label)
            value = STRENGTH_PRESETS.get(name)
            button.setToolTip("The model's own strength" if value is None else f"Strength {value:.2f}")
            self.preset_buttons[name] = button
            presets.addWidget(button)
        form.addRow("Strength", _row(self.strength_slider, self.strength_label, stretch_first=True))
        form.addRow("", presets)

        self.steps_spin = W.QSpinBox()
        self.steps_spin.setRange(AUTO_STEPS, MAX_STEPS)
        self.steps_spin.setValue(AUTO_STEPS if settings.steps is None else settings.steps)
        self.steps_spin.setToolTip("Denoising steps of the full schedule; img2img runs about steps × strength of them")
        self.guidance_spin = W.QDoubleSpinBox()
        self.guidance_spin.setRange(AUTO_GUIDANCE, MAX_GUIDANCE)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setValue(AUTO_GUIDANCE if settings.guidance is None else settings.guidance)
        self.guidance_spin.setToolTip("Classifier-free guidance; 1 or less turns it off (turbo and LCM models want it off)")
        form.addRow("Steps", _row(self.steps_spin, W.QLabel("Guidance"), self.guidance_spin))

        self.seed_fixed_check = W.QCheckBox("Fixed")
        self.seed_fixed_check.setChecked(settings.fixed_seed)
        self.seed_edit = W.QLineEdit(str(settings.seed))
        self.seed_edit.setValidator(QtGui.QRegularExpressionValidator(QtCore.QRegularExpression(r"\d{0,10}")))
        self.used_seed_label = W.QLabel()
        self.reuse_seed_button = W.QPushButton("Reuse")
        self.reuse_seed_button.setToolTip("Fix the seed of the last result")
        self.count_spin = W.QSpinBox()
        self.count_spin.setRange(1, MAX_COUNT)
        self.count_spin.setValue(settings.count)
        self.count_spin.setToolTip("Variations per Generate, seeds seed, seed + 1, …: pick one in the history strip")
        form.addRow("Seed", _row(self.seed_fixed_check, self.seed_edit, W.QLabel("Variations"), self.count_spin))
        form.addRow("", _row(self.used_seed_label, self.reuse_seed_button, stretch_first=True))
        layout.addLayout(form)

        self.generate_button = W.QPushButton("Generate")
        self.cancel_button = W.QPushButton("Cancel")
        layout.addLayout(_row(self.generate_button, self.cancel_button))
        self.progress_bar = W.QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        layout.addWidget(self.progress_bar)

        self.live_check = W.QCheckBox("Live")
        self.live_check.setToolTip("Regenerate whenever the source changes")
        self.live_canvas_check = W.QCheckBox("Show on canvas")
        self.live_canvas_check.setToolTip("Also show live results in the [Preview] layer (not with 'Visible canvas')")
        self.live_canvas_check.setChecked(settings.live_on_canvas)
        self.live_steps_spin = W.QSpinBox()
        self.live_steps_spin.setRange(AUTO_STEPS, MAX_STEPS)
        self.live_steps_spin.setValue(AUTO_STEPS if settings.live_steps is None else settings.live_steps)
        self.live_steps_spin.setToolTip("Steps of live jobs; auto: the model's live recipe")
        self.live_steps_label = W.QLabel("Live steps")
        self.live_steps_label.setBuddy(self.live_steps_spin)
        layout.addLayout(_row(self.live_check, self.live_canvas_check, self.live_steps_label, self.live_steps_spin))
        self.live_view = ImageView()
        layout.addWidget(self.live_view, 1)
        self.live_stats_label = W.QLabel()
        self.live_stats_label.setToolTip("Live frames shown per second; latency from a change seen on the canvas to its frame shown")
        layout.addWidget(self.live_stats_label)

        self.strip = HistoryStrip()
        layout.addWidget(self.strip)
        self.reuse_settings_button = W.QPushButton("Reuse settings")
        self.reuse_settings_button.setToolTip("Put the picked result's prompt, strength, steps, guidance, seed and model back")
        layout.addLayout(_row(W.QLabel("History: click to show on the canvas"), self.reuse_settings_button, stretch_first=True))

        self.apply_button = W.QPushButton("Apply")
        self.apply_button.setToolTip("Keep the result as a new layer")
        self.discard_button = W.QPushButton("Discard")
        layout.addLayout(_row(self.apply_button, self.discard_button))

        self.status_label = W.QLabel()
        self.status_label.setWordWrap(True)
        self.error_label = W.QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #e05050")
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        self._show_recipe(None)
        self.setWidget(root)

    def _guarded(self, action: Callable[..., None], *, with_args: bool = False) -> Callable[..., None]:
        """A slot that shows an error in the docker instead of raising into Krita (whose hook opens a dialog)."""

        def slot(*args: Any) -> None:
            try:
                action(*args) if with_args else action()
            except Exception as exc:
                traceback.print_exc()
                self.error_label.setText(f"Internal error in the plug-in: {exc.__class__.__name__}: {exc}")

        return slot

    def _connect_signals(self) -> None:
        c, guard = self.controller, self._guarded
        self.live_timer.timeout.connect(guard(c.tick))
        self.reconnect_button.clicked.connect(guard(self._reconnect))
        self.generate_button.clicked.connect(guard(c.generate))
        self.cancel_button.clicked.connect(guard(c.cancel))
        self.apply_button.clicked.connect(guard(c.apply))
        self.discard_button.clicked.connect(guard(c.discard))
        self.live_check.toggled.connect(guard(c.set_live, with_args=True))
        self.model_combo.activated.connect(guard(self._select_model, with_args=True))
        self.reuse_seed_button.clicked.connect(guard(self._reuse_seed))
        self.reuse_settings_button.clicked.connect(guard(self._reuse_settings))
        self.strip.itemClicked.connect(guard(self._pick, with_args=True))
        self.strength_slider.valueChanged.connect(self._strength_moved)
        for name, button in self.preset_buttons.items():
            button.clicked.connect(lambda _=False, name=name: self._use_preset(name))
        for signal in (
            self.url_edit.editingFinished,
            self.token_edit.editingFinished,
            self.prompt_edit.textChanged,
            self.negative_edit.textChanged,
            self.source_combo.currentIndexChanged,
            self.canvas_check.toggled,
            self.steps_spin.valueChanged,
            self.guidance_spin.valueChanged,
            self.seed_fixed_check.toggled,
            self.seed_edit.textChanged,
            self.live_steps_spin.valueChanged,
            self.live_canvas_check.toggled,
            self.seams_check.toggled,
            self.count_spin.valueChanged,
        ):
            signal.connect(self._save)

    def _reconnect(self) -> None:
        self._save()
        self.controller.connect()

    def _select_model(self, index: int) -> None:
        self._save()
        self.controller.select_model(self.model_combo.itemText(index))

    def _use_preset(self, name: str) -> None:
        self._strength_auto = name == MODEL_DEFAULT
        if not self._strength_auto:
            self.strength_slider.blockSignals(True)
            self.strength_slider.setValue(round(STRENGTH_PRESETS[name] * 100))
            self.strength_slider.blockSignals(False)
        self._show_recipe(self._recipe)
        self._save()

    def _strength_moved(self) -> None:
        """The artist moved the slider: that strength is sent from now on."""
        self._strength_auto = False
        self._show_recipe(self._recipe)
        self._save()

    def _show_recipe(self, recipe: p.Recipe | None) -> None:
        """What "auto" means for the selected model, in the spin boxes' special texts and the strength row."""
        self._recipe = recipe
        self.steps_spin.setSpecialValueText(auto_steps(recipe))
        self.live_steps_spin.setSpecialValueText(auto_steps(recipe, live=True))
        self.guidance_spin.setSpecialValueText(auto_guidance(recipe))
        for spin in (self.steps_spin, self.live_steps_spin, self.guidance_spin):
            spin.updateGeometry()  # Qt does not tell the layout that a new special text changed the width it wants
        if not self._strength_auto:
            self.strength_label.setText(f"{self.strength_slider.value() / 100:.2f}")
            return
        self.strength_label.setText(auto_strength(recipe))
        if recipe is not None:  # the slider shows the model's strength without it becoming the artist's choice
            self.strength_slider.blockSignals(True)
            self.strength_slider.setValue(round(recipe.strength * 100))
            self.strength_slider.blockSignals(False)

    def _reuse_seed(self) -> None:
        seed = self.controller.state.seed
        if seed is not None:
            self.seed_edit.setText(str(seed))
            self.seed_fixed_check.setChecked(True)

    def _pick(self, item: Any) -> None:
        key = item.data(Qt.ItemDataRole.UserRole)
        if key is not None:
            self.controller.pick(str(key[0]), int(key[1]))

    def _reuse_settings(self) -> None:
        picked = self.controller.state.picked
        settings = None if picked is None else self.controller.settings_of(*picked)
        if settings is None:
            return
        self.prompt_edit.setPlainText(settings.prompt)
        self.negative_edit.setText(settings.negative_prompt)
        if settings.strength is None:
            self._use_preset(MODEL_DEFAULT)
        else:
            self.strength_slider.setValue(round(settings.strength * 100))
            self._strength_auto = False
            self._show_recipe(self._recipe)
        self.steps_spin.setValue(AUTO_STEPS if settings.steps is None else settings.steps)
        self.guidance_spin.setValue(AUTO_GUIDANCE if settings.guidance is None else settings.guidance)
        self.seed_edit.setText(str(settings.seed))
        self.seed_fixed_check.setChecked(True)
        if settings.model and settings.model != self.model_combo.currentText():
            index = self.model_combo.findText(settings.model)
            if index >= 0:
                self.model_combo.setCurrentIndex(index)
                self._select_model(index)
        self._save()

    # --- controller output ----------------------------------------------------------------

    def _on_updates(self, updates: list[Any]) -> None:
        if not self._closed:
            self._guarded(self.controller.handle, with_args=True)(updates)

    def _render(self, state: ViewState) -> None:
        self.connection_label.setText(state.connection_text)
        self.reconnect_button.setEnabled(state.connection is not Connection.CONNECTING)
        self._show_models(state)
        if state.recipe != self._recipe:
            self._show_recipe(state.recipe)
        live = state.live is not LiveState.OFF
        self.generate_button.setEnabled(not state.running and not live)
        self.cancel_button.setEnabled(state.running)
        self.progress_bar.setValue(0 if state.progress is None else round(state.progress * 1000))
        self.apply_button.setEnabled(state.result_ready)
        self.discard_button.setEnabled(state.result_ready)
        self.used_seed_label.setText("" if state.seed is None else f"Seed used: {state.seed}")
        self.reuse_seed_button.setEnabled(state.seed is not None)
        if self.live_check.isChecked() != live:
            self.live_check.blockSignals(True)
            self.live_check.setChecked(live)
            self.live_check.blockSignals(False)
        if live and not self.live_timer.isActive():
            self.live_timer.start()
        elif not live and self.live_timer.isActive():
            self.live_timer.stop()
        if state.live_image is not self._rendered_image:
            self._rendered_image = state.live_image
            if state.live_image is None:
                self.live_view.clear_image()
            else:
                self.live_view.show_rgba(*state.live_image)
        self.live_stats_label.setText(state.live_stats.describe() if live else "")
        self.strip.show_items(state.strip, state.picked)
        self.reuse_settings_button.setEnabled(state.picked is not None)
        self.status_label.setText(state.status)
        self.error_label.setText(state.error)

    def _show_models(self, state: ViewState) -> None:
        combo = self.model_combo
        names = tuple(combo.itemText(i) for i in range(combo.count()))
        wanted = state.models or names
        current = state.model or combo.currentText()
        if names == wanted and combo.currentText() == current:
            return
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(list(wanted))
        if current and current not in wanted:
            combo.addItem(current)
        combo.setCurrentIndex(max(0, combo.findText(current)))
        combo.blockSignals(False)


def _row(*widgets: Any, stretch_first: bool = False) -> Any:
    row = QtWidgets.QHBoxLayout()
    for i, widget in enumerate(widgets):
        row.addWidget(widget, 1 if stretch_first and i == 0 else 0)
    return row


def _dock_right() -> Any:
    # PyQt6 only knows the scoped name; older sip builds only the unscoped one
    scoped = getattr(DockWidgetFactoryBase, "DockPosition", None)
    position = getattr(scoped, "DockRight", None)
    return DockWidgetFactoryBase.DockRight if position is None else position


def register(app: Krita | None = None) -> None:
    """Register the docker with Krita (called when Krita loads the plug-in)."""
    (app or Krita.instance()).addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, _dock_right(), BridgeDocker))
