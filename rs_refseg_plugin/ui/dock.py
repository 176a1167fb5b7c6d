"""The RS RefSeg dock: choose a raster, type classes or a sentence, Run.

The dock only builds a JobParameters (`parameters()`) and hands it to a SegmentTask; everything
else (the worker, progress, cancel, adding layers) lives in the shared core and the task.
"""

from __future__ import annotations

import json
from typing import Optional

from qgis.core import Qgis, QgsApplication, QgsMapLayerProxyModel, QgsRasterLayer, QgsTask
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.backend import Backend, shared_backend
from ..core.job import JobError, JobParameters
from ..core.layers import local_raster
from ..core.result_layers import AddedResult
from ..core.settings import PluginSettings
from ..protocol.client import BackendError
from ..protocol.contracts import DEVICES, EXAMPLE_PROMPTS, REGIONS, task_accepts
from ..tasks.model_tasks import DownloadTask, ModelsTask
from ..tasks.segment_task import SegmentTask
from .messages import push

REGION_LABELS = ("Whole layer", "Current map view", "Selected polygons")  # of contracts.REGIONS, in order


class SegmentDock(QgsDockWidget):
    """Everything an analyst sets for one job, and its progress."""

    def __init__(self, iface, parent: Optional[QWidget] = None):
        super().__init__("RS RefSeg", parent)
        self.setObjectName("RsRefSegDock")
        self.iface = iface
        self.settings = PluginSettings.load()
        self.task: Optional[SegmentTask] = None
        self.side_task: Optional[QgsTask] = None  # model list / download / diagnostics
        self.models: list[dict] = []
        self.last_added: Optional[AddedResult] = None
        self._build()
        self._refresh_prompts()

    # -- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget(self)
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self.layer = QgsMapLayerComboBox(body)
        self.layer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        form.addRow("Raster layer", self.layer)

        modes = QHBoxLayout()
        self.mode_classes, self.mode_sentence = QRadioButton("Class list", body), QRadioButton("Sentence", body)
        self.mode_group = QButtonGroup(body)
        for button in (self.mode_classes, self.mode_sentence):
            self.mode_group.addButton(button)
            modes.addWidget(button)
        self.mode_classes.setChecked(True)
        self.mode_classes.toggled.connect(lambda _: self._refresh_prompts())
        form.addRow("Prompt", modes)
        self.prompt = QComboBox(body)
        self.prompt.setEditable(True)
        self.prompt.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        form.addRow("", self.prompt)

        models = QHBoxLayout()
        self.model = QComboBox(body)
        self.model.setEditable(True)  # an id the list does not show yet still works
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(22)
        self.refresh_button = QPushButton("Refresh", body)
        self.refresh_button.setToolTip("List the backend's models and which have their weights installed")
        self.refresh_button.clicked.connect(self.refresh_models)
        self.download_button = QPushButton("Download", body)
        self.download_button.setToolTip("Download the chosen model's weights (checksum verified)")
        self.download_button.clicked.connect(self.download_model)
        models.addWidget(self.model, 1)
        models.addWidget(self.refresh_button)
        models.addWidget(self.download_button)
        form.addRow("Model", models)
        self.checkpoint = QgsFileWidget(body)
        self.checkpoint.setFilter("rsseg checkpoint (*.json)")
        self.checkpoint.setToolTip("A trained referring model: RUN/checkpoints/step-N.json of `rsseg train`")
        form.addRow("Checkpoint", self.checkpoint)

        self.device = QComboBox(body)
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(self.settings.device)
        form.addRow("Device", self.device)

        self.region = QComboBox(body)
        for key, label in zip(REGIONS, REGION_LABELS):
            self.region.addItem(label, key)
        self.polygons = QgsMapLayerComboBox(body)
        self.polygons.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.region.currentIndexChanged.connect(lambda _: self.polygons.setEnabled(self.region_key() == "polygons"))
        self.polygons.setEnabled(False)
        form.addRow("Region", self.region)
        form.addRow("Polygon layer", self.polygons)

        self.out_dir = QgsFileWidget(body)
        self.out_dir.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out_dir.setFilePath(self.settings.out_dir)
        self.out_dir.lineEdit().setPlaceholderText("temporary outputs")
        form.addRow("Output folder", self.out_dir)
        layout.addLayout(form)

        advanced = QgsCollapsibleGroupBox("Advanced", body)
        advanced.setCollapsed(True)
        adv = QFormLayout(advanced)
        self.tile, self.overlap = QSpinBox(advanced), QSpinBox(advanced)
        self.tile.setRange(64, 4096)
        self.tile.setSingleStep(64)
        self.tile.setValue(512)
        self.overlap.setRange(0, 2048)
        self.overlap.setValue(64)
        adv.addRow("Tile size (px)", self.tile)
        adv.addRow("Tile overlap (px)", self.overlap)
        self.python = QgsFileWidget(advanced)
        self.python.setFilePath(self.settings.python)
        self.python.setToolTip("The Python interpreter of the environment with the rsseg backend")
        adv.addRow("Backend Python", self.python)
        tools = QHBoxLayout()
        self.setup_button = QPushButton("Set up backend…", advanced)
        self.setup_button.clicked.connect(self.set_up_backend)
        self.diagnostics_button = QPushButton("Diagnostics…", advanced)
        self.diagnostics_button.clicked.connect(self.show_diagnostics)
        tools.addWidget(self.setup_button)
        tools.addWidget(self.diagnostics_button)
        adv.addRow(tools)
        layout.addWidget(advanced)

        buttons = QHBoxLayout()
        self.run_button, self.cancel_button = QPushButton("Run", body), QPushButton("Cancel", body)
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel("", body)
        layout.addWidget(self.status)
        self.log = QPlainTextEdit(body)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        layout.addWidget(self.log, 1)
        self.setWidget(body)

    # -- state -------------------------------------------------------------------------------------
    def mode(self) -> str:
        return "sentence" if self.mode_sentence.isChecked() else "classes"

    def region_key(self) -> str:
        return self.region.currentData()

    def set_layer(self, layer: QgsRasterLayer) -> None:
        self.layer.setLayer(layer)

    def _refresh_prompts(self) -> None:
        mode = self.mode()
        recent = self.settings.recent_sentences if mode == "sentence" else self.settings.recent_classes
        self.prompt.clear()
        self.prompt.addItems(recent)
        self.prompt.setEditText(recent[0] if recent else "")
        self.prompt.lineEdit().setPlaceholderText(EXAMPLE_PROMPTS[mode])
        self.checkpoint.setEnabled(mode == "sentence")
        self._fill_models()

    def _fill_models(self) -> None:
        mode = self.mode()
        chosen = self.settings.model_sentence if mode == "sentence" else self.settings.model_classes
        self.model.clear()
        for row in self.models:
            if task_accepts(row.get("task"), mode):
                state = "installed" if row.get("weights_present") else "download needed"
                self.model.addItem(f"{row['id']} ({state})", row["id"])
        index = self.model.findData(chosen)
        if index >= 0:
            self.model.setCurrentIndex(index)
        else:
            self.model.setEditText(chosen)

    def model_id(self) -> str:
        """The id typed, or picked from the list (whose items read "id (state)")."""
        return self.model.currentText().split(" (")[0].strip()

    def parameters(self) -> JobParameters:
        """The job the dock describes (raises JobError for what is missing)."""
        layer = self.layer.currentLayer()
        if layer is None:
            raise JobError("choose a raster layer")
        params = JobParameters(raster=local_raster(layer), mode=self.mode(), prompt=self.prompt.currentText(),
                               model=self.model_id(), device=self.device.currentText(), region=self.region_key(),
                               tile=self.tile.value(), overlap=self.overlap.value(), out_dir=self.out_dir.filePath(),
                               checkpoint=(self.checkpoint.filePath() or None) if self.mode() == "sentence" else None)
        if params.region == "extent":
            canvas = self.iface.mapCanvas()
            extent = canvas.extent()
            params.bbox = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
            params.bbox_crs = canvas.mapSettings().destinationCrs().toWkt()
        elif params.region == "polygons":
            polygons = self.polygons.currentLayer()
            if polygons is None:
                raise JobError("choose the polygon layer whose selected features are the region")
            params.polygons = [json.loads(f.geometry().asJson()) for f in polygons.selectedFeatures()]
            params.polygons_crs = polygons.crs().toWkt()
        return params

    def _save_settings(self, params: JobParameters) -> None:
        self.settings.python = self.python.filePath()
        self.settings.device = params.device
        self.settings.out_dir = self.out_dir.filePath()
        if params.mode == "sentence":
            self.settings.model_sentence = params.model
        else:
            self.settings.model_classes = params.model
        self.settings.remember(params.mode, params.prompt.strip())
        self.settings.save()

    def backend(self) -> Backend:
        self.settings.python = self.python.filePath()
        return shared_backend(self.settings)

    def _backend_or_warn(self) -> Optional[Backend]:
        """The backend for a side request, or None after saying in the bar why there is none."""
        try:
            return self.backend()
        except BackendError as exc:
            push(self.iface.messageBar(), str(exc), Qgis.MessageLevel.Warning)
            return None

    # -- actions -----------------------------------------------------------------------------------
    def run(self) -> None:
        if self.task is not None:
            return
        try:
            params = self.parameters()
            request = params.to_request()
            backend = self.backend()
        except (JobError, BackendError) as exc:
            push(self.iface.messageBar(), str(exc), Qgis.MessageLevel.Warning)
            return
        self._save_settings(params)
        self.last_added = None
        self.task = SegmentTask(backend, request, temporary_out=not params.out_dir, on_done=self._done)
        self.task.progressChanged.connect(self._progress)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.write_log(f"run: {request.prompt!r} with {request.model} on {request.raster}")
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.write_log("cancelling…")
            self.task.cancel()

    def _progress(self, value: float) -> None:
        self.progress.setValue(int(value))
        if self.task is not None and self.task.stage:
            self.status.setText(self.task.stage)

    def _done(self, added: Optional[AddedResult], message: str, details: str) -> None:
        self.task = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText("")
        bar = self.iface.messageBar()
        if added is not None:
            self.last_added = added
            self.progress.setValue(100)
            self.write_log(f"done: added “{added.group.name()}”")
            push(bar, f"added “{added.group.name()}”", Qgis.MessageLevel.Success)
        elif message.startswith("cancelled"):
            self.progress.setValue(0)
            self.write_log(message)
            push(bar, message, Qgis.MessageLevel.Info)
        else:
            self.progress.setValue(0)
            self.write_log(f"failed: {message}" + (f"\n{details}" if details else ""))
            push(bar, message, Qgis.MessageLevel.Critical, details)

    def write_log(self, text: str) -> None:
        self.log.appendPlainText(text)

    def _side(self, task: QgsTask) -> None:
        self.side_task = task
        QgsApplication.taskManager().addTask(task)

    def refresh_models(self) -> None:
        backend = self._backend_or_warn()
        if backend is None:
            return
        self.write_log("listing models…")
        self._side(ModelsTask(backend, self._models_listed))

    def _models_listed(self, rows: Optional[list], error: str) -> None:
        if error:
            push(self.iface.messageBar(), f"could not list the models: {error}", Qgis.MessageLevel.Warning)
            return
        self.models = rows or []
        self._fill_models()
        self.write_log(f"{len(self.models)} models")

    def download_model(self) -> None:
        model = self.model_id()
        if not model:
            push(self.iface.messageBar(), "choose a model first", Qgis.MessageLevel.Warning)
            return
        backend = self._backend_or_warn()
        if backend is None:
            return
        self.write_log(f"downloading the weights of {model}…")
        task = DownloadTask(backend, model, lambda files, error: self._downloaded(model, files, error))
        task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        self._side(task)

    def _downloaded(self, model: str, files: Optional[list], error: str) -> None:
        self.progress.setValue(0)
        if error:
            self.write_log(f"download of {model} failed: {error}")
            push(self.iface.messageBar(), f"download of {model} failed: {error}", Qgis.MessageLevel.Critical)
        else:
            for path in files or []:
                self.write_log(f"installed and verified: {path}")
            push(self.iface.messageBar(), f"{model}: weights installed and verified", Qgis.MessageLevel.Success)
            self.refresh_models()

    def show_diagnostics(self) -> None:
        from .diagnostics import DiagnosticsDialog

        backend = self._backend_or_warn()
        if backend is None:
            return
        DiagnosticsDialog(backend, self).show()

    def set_up_backend(self) -> None:
        from .setup_dialog import SetupDialog

        dialog = SetupDialog(self)
        dialog.installed.connect(self._backend_installed)
        dialog.show()

    def _backend_installed(self, python: str) -> None:
        self.python.setFilePath(python)
        self.settings.python = python
        self.settings.save()
        self.write_log(f"backend ready: {python}")
        self.refresh_models()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.settings.python = self.python.filePath()
        self.settings.save()
        super().closeEvent(event)

