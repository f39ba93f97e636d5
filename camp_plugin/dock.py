"""The Camp Mapper dock: Train, Detect and Settings tabs, built in code.

A thin layer: it collects a TrainRequest/DetectRequest from the widgets, lets
:mod:`camp_plugin.workflows` validate it (messages go to the message bar, never a traceback), and
runs the work in a :class:`CampTask`. Layers are added in the task's ``finished`` callback, on the
main thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsRasterLayer,
)
from qgis.gui import QgsDockWidget, QgsExtentGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSlot
from qgis.PyQt.QtGui import QFont, QIcon
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from trainer.environment import EnvironmentReport
from trainer.errors import CampError

from . import resource_path, results, workflows
from .execution import check_interpreter, resolve_runner
from .settings import EXECUTIONS, CampSettings
from .tasks import CampTask, TaskOutcome

TITLE = "Camp Mapper"
EXECUTION_LABELS = {"auto": "Automatic (QGIS's Python if it has torch)", "in_process": "QGIS's own Python",
                    "subprocess": "A separate Python (below)"}


class JobPanel(QWidget):
    """Run button, Cancel, progress bar and a status line shared by the Train and Detect tabs."""

    def __init__(self, run_text: str, icon: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton(QIcon(str(resource_path("icons", icon))), run_text)
        self.run_button.setMinimumHeight(30)
        font = self.run_button.font()
        font.setBold(True)
        self.run_button.setFont(font)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextBrowserInteraction)
        self.status.setOpenExternalLinks(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 3)
        buttons.addWidget(self.cancel_button, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)

    def running(self, task: CampTask) -> None:
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.bar.setValue(0)
        # Bound slots of this widget: Qt drops the connections if the dock is deleted first.
        task.progressChanged.connect(self.set_progress)
        task.message.connect(self.status.setText)
        self.cancel_button.clicked.connect(task.cancel)

    @pyqtSlot(float)
    def set_progress(self, value: float) -> None:
        self.bar.setValue(int(value))

    def idle(self, text: str) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        try:
            self.cancel_button.clicked.disconnect()
        except TypeError:
            pass  # nothing connected
        self.status.setText(text)


def _form_group(title: str) -> tuple[QGroupBox, QFormLayout]:
    box = QGroupBox(title)
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
    return box, form


def _spin(minimum: int, maximum: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(minimum, maximum)
    spin.setValue(value)
    return spin


class CampDock(QgsDockWidget):
    def __init__(self, iface, parent: QWidget | None = None) -> None:  # noqa: ANN001
        super().__init__(TITLE, parent)
        self.setObjectName("CampMapperDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.tasks: dict[str, CampTask] = {}
        self.tabs = QTabWidget()
        self.tabs.addTab(self._scroll(self._build_train()), QIcon(str(resource_path("icons", "train.svg"))), "Train")
        self.tabs.addTab(self._scroll(self._build_detect()), QIcon(str(resource_path("icons", "detect.svg"))), "Detect")
        self.tabs.addTab(self._scroll(self._build_settings()), QIcon(str(resource_path("icons", "settings.svg"))),
                         "Settings")
        self.setWidget(self.tabs)
        self.load_settings()

    # ------------------------------------------------------------ layout

    @staticmethod
    def _scroll(widget: QWidget) -> QScrollArea:
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QScrollArea.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        area.setWidget(widget)
        return area

    def _extent_box(self, title: str) -> QgsExtentGroupBox:
        box = QgsExtentGroupBox()
        box.setTitle(title)
        box.setCheckable(False)
        box.setMapCanvas(self.canvas)
        crs = self.canvas.mapSettings().destinationCrs()
        box.setOutputCrs(crs)
        box.setOriginalExtent(self.canvas.extent(), crs)
        box.setCurrentExtent(self.canvas.extent(), crs)
        box.setOutputExtentFromCurrent()
        return box

    def _imagery_combo(self) -> QgsMapLayerComboBox:
        combo = QgsMapLayerComboBox()
        combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        combo.setAllowEmptyLayer(True)
        combo.setToolTip("Any raster layer of the project: XYZ/TMS (e.g. OpenAerialMap), WMS, or a local orthophoto. "
                         "It is read through QGIS, so its cache, proxy and authentication apply.")
        return combo

    def _build_train(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        data, form = _form_group("Data")
        self.train_imagery = self._imagery_combo()
        self.train_url = QLineEdit()
        self.train_url.setPlaceholderText("…or an XYZ/TMS URL: https://…/{z}/{x}/{y}.png")
        self.train_labels = QgsMapLayerComboBox()
        self.train_labels.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.train_labels.setAllowEmptyLayer(True)
        self.train_labels.setToolTip("Empty: OpenStreetMap polygons matching the tag filter")
        self.train_osm_filter = QLineEdit("building")
        self.train_osm_filter.setToolTip("'building', 'amenity=refugee_site', several separated by ';'")
        form.addRow("Imagery", self.train_imagery)
        form.addRow("", self.train_url)
        form.addRow("Labels layer", self.train_labels)
        form.addRow("OSM tags", self.train_osm_filter)
        layout.addWidget(data)
        self.train_extent = self._extent_box("Training extent")
        layout.addWidget(self.train_extent)
        model, form = _form_group("Model")
        self.train_zoom = _spin(10, 23, 19)
        self.train_zoom.setToolTip("XYZ zoom of the chip grid: 19 ≈ 30 cm/px, 21 ≈ 7.5 cm/px at the equator")
        self.train_epochs = _spin(1, 1000, 30)
        self.train_batch = _spin(1, 512, 8)
        self.train_lr = QDoubleSpinBox()
        self.train_lr.setDecimals(5)
        self.train_lr.setRange(0.00001, 1.0)
        self.train_lr.setSingleStep(0.0005)
        self.train_lr.setValue(0.003)
        self.train_width = QComboBox()
        for channels, label in ((8, "tiny (8)"), (16, "small (16, CPU)"), (32, "standard (32, GPU)")):
            self.train_width.addItem(label, channels)
        self.train_width.setCurrentIndex(1)
        self.train_device = QComboBox()
        for value, label in (("auto", "Automatic"), ("cpu", "CPU"), ("gpu", "GPU")):
            self.train_device.addItem(label, value)
        zoom_epochs = QHBoxLayout()
        zoom_epochs.addWidget(self.train_zoom)
        zoom_epochs.addWidget(QLabel("Epochs"))
        zoom_epochs.addWidget(self.train_epochs)
        batch_lr = QHBoxLayout()
        batch_lr.addWidget(self.train_batch)
        batch_lr.addWidget(QLabel("Learning rate"))
        batch_lr.addWidget(self.train_lr)
        form.addRow("Zoom", zoom_epochs)
        form.addRow("Batch size", batch_lr)
        form.addRow("Network", self.train_width)
        form.addRow("Device", self.train_device)
        self.train_out = QgsFileWidget()
        self.train_out.setStorageMode(QgsFileWidget.GetDirectory)
        self.train_out.lineEdit().setPlaceholderText("automatic: a new folder under the runs folder")
        form.addRow("Output folder", self.train_out)
        layout.addWidget(model)
        self.train_panel = JobPanel("Train", "train.svg")
        self.train_panel.run_button.clicked.connect(self.start_train)
        layout.addWidget(self.train_panel)
        layout.addStretch(1)
        return page

    def _build_detect(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        box, form = _form_group("Model and imagery")
        self.detect_model = QgsFileWidget()
        self.detect_model.setFilter("Models (*.onnx *.dlpk *.pt model_card.json);;All files (*)")
        self.detect_model.lineEdit().setPlaceholderText("a run folder, .onnx, .dlpk — or 'last'")
        last = QPushButton("Last trained")
        last.setToolTip("Use the model trained last from this panel")
        last.clicked.connect(lambda: self.detect_model.setFilePath("last"))
        model_row = QHBoxLayout()
        model_row.addWidget(self.detect_model, 1)
        model_row.addWidget(last)
        self.detect_imagery = self._imagery_combo()
        form.addRow("Model", model_row)
        form.addRow("Imagery", self.detect_imagery)
        layout.addWidget(box)
        self.detect_extent = self._extent_box("Detection extent")
        layout.addWidget(self.detect_extent)
        options, form = _form_group("Options")
        self.detect_threshold = QDoubleSpinBox()
        self.detect_threshold.setRange(0.0, 1.0)
        self.detect_threshold.setSingleStep(0.05)
        self.detect_threshold.setSpecialValueText("from the model")
        self.detect_threshold.setValue(0.0)
        self.detect_min_area = QDoubleSpinBox()
        self.detect_min_area.setRange(0.0, 10000.0)
        self.detect_min_area.setValue(2.0)
        self.detect_min_area.setSuffix(" m²")
        self.detect_out = QgsFileWidget()
        self.detect_out.setStorageMode(QgsFileWidget.GetDirectory)
        self.detect_out.lineEdit().setPlaceholderText("automatic: a new folder under the runs folder")
        form.addRow("Threshold", self.detect_threshold)
        form.addRow("Smallest footprint", self.detect_min_area)
        form.addRow("Output folder", self.detect_out)
        layout.addWidget(options)
        self.detect_panel = JobPanel("Detect", "detect.svg")
        self.detect_panel.run_button.clicked.connect(self.start_detect)
        layout.addWidget(self.detect_panel)
        layout.addStretch(1)
        return page

    def _build_settings(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        box, form = _form_group("Where jobs run")
        self.settings_execution = QComboBox()
        for value in EXECUTIONS:
            self.settings_execution.addItem(EXECUTION_LABELS[value], value)
        self.settings_python = QgsFileWidget()
        self.settings_python.lineEdit().setPlaceholderText("e.g. ~/venvs/camp/bin/python")
        self.settings_runs = QgsFileWidget()
        self.settings_runs.setStorageMode(QgsFileWidget.GetDirectory)
        self.settings_runs.lineEdit().setPlaceholderText(str(Path.home() / "camp-mapper"))
        form.addRow("Run jobs in", self.settings_execution)
        form.addRow("Python for jobs", self.settings_python)
        form.addRow("Runs folder", self.settings_runs)
        layout.addWidget(box)
        buttons = QHBoxLayout()
        save = QPushButton("Save")
        save.clicked.connect(self.save_settings)
        self.check_button = QPushButton("Check environment")
        self.check_button.clicked.connect(self.check_environment)
        buttons.addWidget(save)
        buttons.addWidget(self.check_button)
        layout.addLayout(buttons)
        self.env_report = QPlainTextEdit()
        self.env_report.setReadOnly(True)
        self.env_report.setFont(QFont("monospace", 8))
        self.env_report.setPlaceholderText("Check environment: Python, torch, CUDA/GPU, missing packages and "
                                           "the pip command that installs them.")
        layout.addWidget(self.env_report, 1)
        return page

    def show_tab(self, name: str) -> None:
        self.tabs.setCurrentIndex({"train": 0, "detect": 1, "settings": 2}.get(name, 0))

    # ------------------------------------------------------------ settings

    def load_settings(self) -> None:
        settings = CampSettings.load()
        self.settings_execution.setCurrentIndex(max(0, self.settings_execution.findData(settings.execution)))
        self.settings_python.setFilePath(settings.python)
        self.settings_runs.setFilePath(settings.runs_dir)

    def current_settings(self) -> CampSettings:
        stored = CampSettings.load()
        return CampSettings(python=self.settings_python.filePath().strip(),
                            execution=self.settings_execution.currentData(),
                            runs_dir=self.settings_runs.filePath().strip(), last_model=stored.last_model)

    def save_settings(self) -> None:
        self.current_settings().save()
        self.push("Settings saved", Qgis.Info, duration=3)

    def check_environment(self) -> None:
        settings = self.current_settings()
        python = settings.python if settings.execution != "in_process" and settings.python else None
        self.env_report.setPlainText(f"Checking {python or 'QGIS’s own Python'} …")

        def done(outcome: TaskOutcome) -> None:
            self.check_button.setEnabled(True)
            if outcome.ok:
                self.env_report.setPlainText(EnvironmentReport.from_dict(outcome.result).summary())
            else:
                self.env_report.setPlainText(outcome.error)

        self.check_button.setEnabled(False)
        self._start("env", CampTask("Camp Mapper: check environment", lambda progress: check_interpreter(python), done))

    # ------------------------------------------------------------ helpers

    def push(self, text: str, level: Any = Qgis.Info, duration: int = 10) -> None:
        self.iface.messageBar().pushMessage(TITLE, text, level, duration)

    def _fail(self, panel: JobPanel, error: str) -> None:
        panel.idle(error)
        self.push(error, Qgis.Critical, duration=0)

    def _start(self, key: str, task: CampTask) -> CampTask:
        self.tasks[key] = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _output_folder(self, widget: QgsFileWidget, kind: str) -> Path:
        text = widget.filePath().strip()
        return Path(text).expanduser() if text else workflows.timestamped_folder(self.current_settings().runs_path, kind)

    @staticmethod
    def _layer(combo: QgsMapLayerComboBox) -> QgsRasterLayer | None:
        layer = combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    # ------------------------------------------------------------ train

    def train_request(self) -> workflows.TrainRequest:
        extent_crs = self.train_extent.outputCrs()
        return workflows.TrainRequest(
            imagery=self._layer(self.train_imagery), imagery_url=self.train_url.text().strip(),
            extent=self.train_extent.outputExtent(), extent_crs=extent_crs,
            out=self._output_folder(self.train_out, "train"), zoom=self.train_zoom.value(),
            labels=self.train_labels.currentLayer(), osm_filter=self.train_osm_filter.text().strip() or "building",
            epochs=self.train_epochs.value(), batch_size=self.train_batch.value(), lr=self.train_lr.value(),
            base_channels=int(self.train_width.currentData()), accelerator=self.train_device.currentData())

    def start_train(self, request: workflows.TrainRequest | None = None) -> CampTask | None:
        """Validate and start training; returns the task, or None after showing why not."""
        try:
            plan = workflows.plan_train(request or self.train_request())
            runner = resolve_runner(self.current_settings())
        except CampError as exc:
            self._fail(self.train_panel, str(exc))
            return None

        def done(outcome: TaskOutcome) -> None:
            if outcome.ok:
                settings = self.current_settings()
                CampSettings(settings.python, settings.execution, settings.runs_dir, str(plan.run_folder)).save()
                self.detect_model.setFilePath(str(plan.run_folder))
                text = results.train_message({**outcome.result, "run": str(plan.run_folder)})
                self.train_panel.idle(text)
                self.push(text, Qgis.Success, duration=0)
            elif outcome.status == "cancelled":
                self.train_panel.idle("Training cancelled; no model was written.")
                self.push("Training cancelled; no model was written.", Qgis.Warning)
            else:
                self._fail(self.train_panel, f"Training failed: {outcome.error}")

        task = CampTask(f"Camp Mapper: train on {plan.out.name} ({runner.describe()})",
                        lambda progress: workflows.execute_train(plan, runner, progress), done)
        self.train_panel.running(task)
        return self._start("train", task)

    # ------------------------------------------------------------ detect

    def detect_request(self) -> workflows.DetectRequest:
        threshold = self.detect_threshold.value()
        return workflows.DetectRequest(
            model=self.detect_model.filePath(), imagery=self._layer(self.detect_imagery),
            extent=self.detect_extent.outputExtent(), extent_crs=self.detect_extent.outputCrs(),
            out=self._output_folder(self.detect_out, "detect"), threshold=threshold if threshold > 0 else None,
            min_area_m2=self.detect_min_area.value(), last_trained=self.current_settings().last_model,
            fallback_pixel_size=self.canvas.mapUnitsPerPixel())

    def start_detect(self, request: workflows.DetectRequest | None = None) -> CampTask | None:
        """Validate and start detection; returns the task, or None after showing why not."""
        try:
            plan = workflows.plan_detect(request or self.detect_request())
            runner = resolve_runner(self.current_settings())
        except CampError as exc:
            self._fail(self.detect_panel, str(exc))
            return None

        def done(outcome: TaskOutcome) -> None:
            if outcome.ok:
                try:
                    results.load_detection(outcome.result.get("out", plan.out), plan.name)
                except OSError as exc:
                    self._fail(self.detect_panel, str(exc))
                    return
                text = results.detect_message(outcome.result)
                self.detect_panel.idle(text)
                self.push(text, Qgis.Success, duration=0)
            elif outcome.status == "cancelled":
                self.detect_panel.idle("Detection cancelled; earlier results were kept.")
                self.push("Detection cancelled; earlier results were kept.", Qgis.Warning)
            else:
                self._fail(self.detect_panel, f"Detection failed: {outcome.error}")

        task = CampTask(f"Camp Mapper: detect {plan.name} ({runner.describe()})",
                        lambda progress: workflows.execute_detect(plan, runner, progress), done)
        self.detect_panel.running(task)
        return self._start("detect", task)

    def shutdown(self) -> None:
        """Cancel running jobs when the plugin unloads; their results no longer reach this dock."""
        for task in self.tasks.values():
            try:
                task.detach()
                task.cancel()
            except RuntimeError:
                pass  # already finished and deleted by the task manager
        self.tasks.clear()
