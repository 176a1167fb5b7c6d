"""The RS RefSeg dock: choose a raster, type classes or a sentence, Run; or train a model on your own
layers in its Train tab (ui/train_panel.py).

In sentence mode the chosen model's row decides the rest: a line under the model list says whether it runs
without training (zero-shot) or needs a trained checkpoint; a model that finds separate objects (`instances`)
gets "Objects to return (top-k)" (sent as the request's top_k) and takes no checkpoint.

The dock only builds a JobParameters (`parameters()`) and hands it to a SegmentTask; everything
else (the worker, progress, cancel, adding layers) lives in the shared core and the task. A model the
Train tab trained is selected here with its classes (`select_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from qgis.core import Qgis, QgsApplication, QgsMapLayerProxyModel, QgsRasterLayer, QgsSettings, QgsTask
from qgis.gui import (
    QgsCollapsibleGroupBox,
    QgsDockWidget,
    QgsDoubleSpinBox,
    QgsFileWidget,
    QgsMapLayerComboBox,
    QgsMapToolExtent,
)
from qgis.PyQt.QtCore import QDir
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.backend import Backend, shared_backend
from ..core.bundles import bundle_classes, classes_prompt
from ..core.help import open_help
from ..core.job import JobError, JobParameters
from ..core.layers import local_raster
from ..core.result_layers import AddedResult
from ..core.run_folder import default_root
from ..core.settings import PREFIX, PluginSettings
from ..core.summary import summary_lines
from ..processing.model_choices import cached_rows
from ..protocol.client import BackendError
from ..protocol.contracts import DEVICES, EXAMPLE_PROMPTS, MAX_TOP_K
from ..protocol.training import TrainLayersResult
from ..tasks.model_tasks import DownloadTask, ImportTask, ModelsTask
from ..tasks.segment_task import SegmentTask
from .band_picker import BandPicker
from .first_run import FirstRunPanel, Step, next_step
from .messages import push
from .model_picker import fill_combo, finds_objects, needs_checkpoint, picker_items, zero_shot
from .run_output import add_run_output
from .train_panel import TrainPanel

# The region choices: (label, JobParameters.region, how its bounds are found).
REGION_CHOICES = (("Whole layer", "layer"), ("Current map view", "extent"), ("Drawn rectangle", "drawn"),
                  ("Selected polygons", "polygons"))
MODELS_CACHE = PREFIX + "models_cache"  # the last model list, for the Processing algorithms' choices


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
        self.fix_subject = ""  # the model a failed job said to download or import (may be a component)
        self.python_dialog: Optional[QFileDialog] = None
        self.last_added: Optional[AddedResult] = None
        self.last_result = None  # the SegmentResult of the last run that added layers
        self._build()
        self._refresh_prompts()
        self._layer_changed(self.layer.currentLayer())
        self._show_default_folder()
        if self.python.filePath():
            self.refresh_models()  # so the list and the first-run panel say what is installed

    # -- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget(self)
        layout = QVBoxLayout(body)
        self.first_run = FirstRunPanel(self._act, self)
        form = QFormLayout()
        self.layer = QgsMapLayerComboBox(body)
        self.layer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.layer.layerChanged.connect(self._layer_changed)
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
        self.model.currentIndexChanged.connect(lambda _: self._update_first_run())
        self.model.activated.connect(lambda _: self._model_picked())  # the user's choice, not a refill
        self.model.editTextChanged.connect(lambda _: self._update_first_run())  # a typed id
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
        self.model_hint = QLabel("", body)  # sentence mode: zero-shot, or needs a trained checkpoint
        self.model_hint.setObjectName("RsRefSegModelHint")
        self.model_hint.setWordWrap(True)
        self.model_hint.setVisible(False)
        form.addRow("", self.model_hint)
        self.checkpoint = QgsFileWidget(body)
        self.checkpoint.setFilter("rsseg checkpoint (*.json)")
        self.checkpoint.setToolTip("A trained referring model: the step-N.json file in the checkpoints folder "
                                   "of a training run (zero-shot models take none)")
        self.checkpoint.fileChanged.connect(lambda _: self._update_first_run())
        form.addRow("Checkpoint", self.checkpoint)
        self.top_k_label = QLabel("Objects to return (top-k)", body)
        self.top_k = QSpinBox(body)
        self.top_k.setRange(1, MAX_TOP_K)
        self.top_k.setValue(self.settings.top_k)
        tip = ("The best K objects the sentence describes, each its own polygon with the model's score and its rank "
               "(for models that find separate objects)")
        self.top_k.setToolTip(tip)
        self.top_k_label.setToolTip(tip)
        form.addRow(self.top_k_label, self.top_k)

        self.device = QComboBox(body)
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(self.settings.device)
        form.addRow("Device", self.device)

        self.region = QComboBox(body)
        for label, key in REGION_CHOICES:
            self.region.addItem(label, key)
        self.draw_button = QPushButton("Draw…", body)
        self.draw_button.setToolTip("Drag a rectangle on the map: the region to segment")
        self.draw_button.clicked.connect(self.draw_rectangle)
        regions = QHBoxLayout()
        regions.addWidget(self.region, 1)
        regions.addWidget(self.draw_button)
        self.drawn: Optional[tuple[tuple[float, float, float, float], str]] = None  # bbox and CRS WKT
        self.rectangle_tool: Optional[QgsMapToolExtent] = None
        self.polygons = QgsMapLayerComboBox(body)
        self.polygons.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.region.currentIndexChanged.connect(lambda _: self._region_changed())
        self.polygons.setEnabled(False)
        form.addRow("Region", regions)
        form.addRow("Polygon layer", self.polygons)

        self.out_dir = QgsFileWidget(body)
        self.out_dir.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out_dir.setFilePath(self.settings.out_dir)
        self.out_dir.setToolTip("Each run writes a new sub-folder here; empty: beside the saved project "
                                "(rs_refseg_outputs), or in the QGIS profile while the project is unsaved")
        form.addRow("Output folder", self.out_dir)
        layout.addLayout(form)

        inputs = QgsCollapsibleGroupBox("Bands, resolution and nodata", body)
        inputs.setCollapsed(True)
        inp = QFormLayout(inputs)
        self.bands = BandPicker(inputs)
        inp.addRow("Bands", self.bands)
        self.resolution = QgsDoubleSpinBox(inputs)
        self.resolution.setRange(0.0, 10000.0)
        self.resolution.setDecimals(2)
        self.resolution.setSpecialValueText("the raster's own")
        self.resolution.setSuffix(" m/px")
        self.resolution.setClearValue(0.0)
        self.resolution.setToolTip("Process on a grid of this many metres per pixel (0: the raster's own grid)")
        inp.addRow("Resolution", self.resolution)
        nodata = QHBoxLayout()
        self.nodata_on = QCheckBox("Treat", inputs)
        self.nodata = QgsDoubleSpinBox(inputs)
        self.nodata.setRange(-1e12, 1e12)
        self.nodata.setDecimals(4)
        self.nodata.setEnabled(False)
        self.nodata_on.toggled.connect(self.nodata.setEnabled)
        nodata.addWidget(self.nodata_on)
        nodata.addWidget(self.nodata, 1)
        nodata.addWidget(QLabel("as nodata", inputs))
        self.nodata_on.setToolTip("For a black collar without a nodata flag: pixels of this value are left out")
        inp.addRow("Nodata", nodata)
        layout.addWidget(inputs)

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
        self.python.fileChanged.connect(lambda _: self._python_changed())
        adv.addRow("Backend Python", self.python)
        self.show_test = QCheckBox("Show test models (random weights, for checking the set-up)", advanced)
        self.show_test.setChecked(self.settings.show_test_models)
        self.show_test.toggled.connect(lambda _: self._show_test_toggled())
        adv.addRow(self.show_test)
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
        self.help_button = QPushButton("Help", body)
        self.help_button.setToolTip("Open the plugin's documentation in the browser")
        self.help_button.clicked.connect(lambda: open_help("the-dock"))
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.help_button)
        layout.addLayout(buttons)
        output = add_run_output(layout, body, "RsRefSegSummary")
        self.progress, self.status, self.summary, self.log = output.progress, output.status, output.summary, output.log
        self.train_panel = TrainPanel(self.iface, self.backend, self._trained, self,
                                      on_fix=lambda fixes, subject: self._offer_fix(fixes, subject, "Start training"),
                                      on_weights=self._family_weights)
        outer = QWidget(self)
        column = QVBoxLayout(outer)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.first_run)  # above the tabs: what it asks for (a backend, weights) serves both
        self.tabs = QTabWidget(outer)
        self.tabs.setObjectName("RsRefSegTabs")
        self.tabs.addTab(body, "Segment")
        self.tabs.addTab(self.train_panel, "Train")
        column.addWidget(self.tabs, 1)
        self.setWidget(outer)

    # -- state -------------------------------------------------------------------------------------
    def mode(self) -> str:
        return "sentence" if self.mode_sentence.isChecked() else "classes"

    def region_key(self) -> str:
        return self.region.currentData()

    def set_layer(self, layer: QgsRasterLayer) -> None:
        self.layer.setLayer(layer)

    def _layer_changed(self, layer) -> None:
        self.bands.set_layer(layer if isinstance(layer, QgsRasterLayer) else None)

    def _region_changed(self) -> None:
        key = self.region_key()
        self.polygons.setEnabled(key == "polygons")
        if key == "polygons":
            self._prefer_user_polygons()
        if key == "drawn" and self.drawn is None:
            self.draw_rectangle()

    def _prefer_user_polygons(self) -> None:
        """The polygon list starts on one of the user's layers, not on a result the plugin added."""
        current = self.polygons.currentLayer()
        if current is not None and not current.customProperty("rs_refseg/result", False):
            return
        for i in range(self.polygons.count()):
            layer = self.polygons.layer(i)
            if layer is not None and not layer.customProperty("rs_refseg/result", False):
                self.polygons.setLayer(layer)
                return

    def draw_rectangle(self) -> None:
        """Let the user drag a rectangle on the map; it becomes the "Drawn rectangle" region."""
        canvas = self.iface.mapCanvas()
        self.rectangle_tool = QgsMapToolExtent(canvas)
        self.rectangle_tool.extentChanged.connect(self.rectangle_drawn)
        canvas.setMapTool(self.rectangle_tool)
        self.write_log("drag a rectangle on the map…")

    def rectangle_drawn(self, rect) -> None:
        canvas = self.iface.mapCanvas()
        if rect.isEmpty():
            return
        self.drawn = ((rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
                      canvas.mapSettings().destinationCrs().toWkt())
        self.region.setCurrentIndex(self.region.findData("drawn"))
        if self.rectangle_tool is not None:
            canvas.unsetMapTool(self.rectangle_tool)
        self.write_log(f"region: the drawn rectangle {rect.toString(2)}")

    def _refresh_prompts(self) -> None:
        mode = self.mode()
        recent = self.settings.recent_sentences if mode == "sentence" else self.settings.recent_classes
        self.prompt.clear()
        self.prompt.addItems(recent)
        self.prompt.setEditText(recent[0] if recent else "")
        self.prompt.lineEdit().setPlaceholderText(EXAMPLE_PROMPTS[mode])
        self._fill_models()

    def _fill_models(self) -> None:
        mode = self.mode()
        chosen = self.model_id() if self.model.count() else \
            self.settings.model_sentence if mode == "sentence" else self.settings.model_classes
        self.model.blockSignals(True)
        fill_combo(self.model, picker_items(self.models, mode, self.show_test.isChecked()), chosen)
        self.model.blockSignals(False)
        self._update_first_run()

    def _family_weights(self, action: str, family: str) -> None:
        """The Train tab's Download / Import weights… for the pretrained weights a family starts from."""
        previous, self.fix_subject = self.fix_subject, family  # what download_model / import_weights act on
        try:
            (self.download_model if action == "download" else self.import_weights)()
        finally:
            self.fix_subject = previous

    def _show_test_toggled(self) -> None:
        self._fill_models()
        self.train_panel.set_models(self.models, self.show_test.isChecked())

    def _model_picked(self) -> None:
        """A trained model ("My models") picked in the list: its classes become the class list."""
        classes = bundle_classes(self.model_id(), self.models)
        if classes:
            self.mode_classes.setChecked(True)
            self.prompt.setEditText(classes_prompt(classes))

    def select_model(self, model: str, classes: list[str]) -> None:
        """Select `model` for a class-list run with `classes` (a model the Train tab has just trained; the
        list may not show it until the model list is refreshed, so it is typed until then)."""
        self.mode_classes.setChecked(True)
        self.settings.model_classes = model
        self._fill_models()
        index = self.model.findData(model)
        if index >= 0:
            self.model.setCurrentIndex(index)
        else:
            self.model.setEditText(model)
        if classes:
            self.prompt.setEditText(classes_prompt(classes))
        self._update_first_run()

    def _trained(self, result: TrainLayersResult) -> None:
        """The Train tab trained a model: list the models again and select it here with its classes."""
        self.write_log(f"trained “{result.name}”: selected as the model ({result.model})")
        self.select_model(result.model, result.classes)
        self.refresh_models()

    def model_id(self) -> str:
        """The id picked from the list (its item data), or typed."""
        data = self.model.currentData()
        if data and self.model.currentText() == self.model.itemText(self.model.currentIndex()):
            return str(data)
        return self.model.currentText().split(" — ")[0].strip()

    def _offer_fix(self, fixes: tuple[str, ...], subject: str, again: str = "Run") -> None:
        """A failed job's fixes become the first-run panel's buttons (a download is of `subject`, which may be
        a part of the chosen model, e.g. its SAM)."""
        actions = [f for f in fixes if f in ("download", "import", "checkpoint", "setup")]
        if not actions:
            return
        self.fix_subject = subject
        needs = {"download": f"“{subject}” needs its weights.", "import": f"“{subject}” needs its weights file.",
                 "checkpoint": "This model needs a trained checkpoint.",
                 "setup": "The backend environment is not usable."}
        self.first_run.show_step(Step(needs[actions[0]] + f" Press the button below, then {again} again.", actions))

    def _update_first_run(self) -> None:
        self.fix_subject = ""
        listing = isinstance(self.side_task, ModelsTask)
        rows = self.models if self.models or not self.python.filePath() else None
        checkpoint = self.checkpoint.filePath() if self.takes_checkpoint() else ""
        self.first_run.show_step(next_step(self.python.filePath(), rows, self.model_id(), checkpoint, listing))
        self._update_model_options()

    def model_row(self) -> Optional[dict]:
        """The chosen model's row: from the listed models, else from the list kept from the last session (so a
        model's kind is known before the worker answers); None for an id no list has."""
        model = self.model_id()
        for rows in (self.models, [] if self.models else cached_rows() or []):
            row = next((r for r in rows if r.get("id") == model), None)
            if row is not None:
                return row
        return None

    def takes_top_k(self) -> bool:
        """A sentence with a model that finds separate objects: "Objects to return (top-k)" applies."""
        return self.mode() == "sentence" and finds_objects(self.model_row())

    def takes_checkpoint(self) -> bool:
        """A sentence with a model that may take a trained checkpoint (not one that finds objects zero-shot)."""
        return self.mode() == "sentence" and not finds_objects(self.model_row())

    def _update_model_options(self) -> None:
        """Top-k, the checkpoint field and the line under the model list, for the chosen model and mode."""
        top_k = self.takes_top_k()
        for widget in (self.top_k_label, self.top_k):
            widget.setVisible(top_k)
            widget.setEnabled(top_k)
        self.checkpoint.setEnabled(self.takes_checkpoint())
        row = self.model_row() if self.mode() == "sentence" else None
        hint = ""
        if row is not None and needs_checkpoint(row) and not self.checkpoint.filePath():
            hint = ("Needs a trained checkpoint: press “Choose checkpoint…” (or fill Checkpoint below), or choose a "
                    "zero-shot model, which runs without one.")
        elif row is not None and zero_shot(row):
            hint = "Zero-shot: runs without training or a checkpoint." + (
                " Each object it finds is its own polygon with its score." if finds_objects(row) else "")
        self.model_hint.setText(hint)
        self.model_hint.setVisible(bool(hint))

    def _act(self, action: str) -> None:
        """A first-run panel button (first_run.ACTIONS) runs the dock's action of the same name."""
        {"setup": self.set_up_backend, "python": self.choose_python, "download": self.download_model,
         "import": self.import_weights, "checkpoint": self.choose_checkpoint,
         "refresh": self.refresh_models}[action]()

    def parameters(self) -> JobParameters:
        """The job the dock describes (raises JobError for what is missing)."""
        layer = self.layer.currentLayer()
        if layer is None:
            raise JobError("choose a raster layer")
        region = self.region_key()
        params = JobParameters(raster=local_raster(layer), mode=self.mode(), prompt=self.prompt.currentText(),
                               model=self.model_id(), device=self.device.currentText(),
                               region="extent" if region == "drawn" else region,
                               tile=self.tile.value(), overlap=self.overlap.value(), out_dir=self.out_dir.filePath(),
                               checkpoint=(self.checkpoint.filePath() or None) if self.takes_checkpoint() else None,
                               bands=self.bands.bands(), resolution=self.resolution.value() or None,
                               nodata=self.nodata.value() if self.nodata_on.isChecked() else None,
                               top_k=self.top_k.value() if self.takes_top_k() else None)
        if region == "drawn":
            if self.drawn is None:
                raise JobError("no rectangle drawn yet: press Draw… and drag a rectangle on the map")
            params.bbox, params.bbox_crs = self.drawn
        elif params.region == "extent":
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

    def _show_default_folder(self) -> None:
        self.out_dir.lineEdit().setPlaceholderText(f"{default_root()} (a new sub-folder per run)")

    def _save_settings(self, params: JobParameters) -> None:
        self.settings.python = self.python.filePath()
        self.settings.show_test_models = self.show_test.isChecked()
        self.settings.device = params.device
        self.settings.out_dir = self.out_dir.filePath()
        self.settings.top_k = self.top_k.value()
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
        self.summary.setVisible(False)
        self.task = SegmentTask(backend, request, on_done=self._done)
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
        task, self.task = self.task, None
        result = task.result if task is not None else None
        if task is not None and task.fixes:
            self._offer_fix(task.fixes, task.subject or self.model_id())
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText("")
        bar = self.iface.messageBar()
        if added is not None:
            self.last_added = added
            self.progress.setValue(100)
            for layer in (added.raster, added.vector):
                if layer is not None:
                    layer.setCustomProperty("rs_refseg/result", True)
            self.last_result = result
            self.show_summary(added, result)
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

    def show_summary(self, added: AddedResult, result) -> None:
        lines = summary_lines(result) if result is not None else []
        folder = Path(result.mask).parent if result is not None else None
        text = "\n".join([f"“{added.group.name()}”", *lines] + ([f"Outputs: {folder}"] if folder else []))
        self.summary.setText(text)
        self.summary.setVisible(True)
        for line in lines:
            self.write_log(f"  {line}")

    def write_log(self, text: str) -> None:
        self.log.appendPlainText(text)

    def _side(self, task: QgsTask) -> None:
        self.side_task = task
        QgsApplication.taskManager().addTask(task)

    def refresh_models(self) -> None:
        if isinstance(self.side_task, ModelsTask):
            return  # already listing
        backend = self._backend_or_warn()
        if backend is None:
            return
        self.write_log("listing models…")
        self._side(ModelsTask(backend, self._models_listed))
        self._update_first_run()

    def _python_changed(self) -> None:
        self.models = []
        self._fill_models()
        if self.python.filePath():
            self.refresh_models()

    def _models_listed(self, rows: Optional[list], error: str) -> None:
        self.side_task = None
        if error:
            push(self.iface.messageBar(), f"could not list the models: {error}", Qgis.MessageLevel.Warning)
            self._update_first_run()
            return
        self.models = rows or []
        QgsSettings().setValue(MODELS_CACHE, json.dumps(self.models))
        self._fill_models()
        self.train_panel.set_models(self.models, self.show_test.isChecked())
        self.write_log(f"{len(self.models)} models")

    def download_model(self) -> None:
        model = self.fix_subject or self.model_id()
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
        self.side_task = None
        self.progress.setValue(0)
        if error:
            self.write_log(f"download of {model} failed: {error}")
            push(self.iface.messageBar(), f"download of {model} failed: {error}", Qgis.MessageLevel.Critical)
        else:
            for path in files or []:
                self.write_log(f"installed and verified: {path}")
            push(self.iface.messageBar(), f"{model}: weights installed and verified", Qgis.MessageLevel.Success)
            self.refresh_models()

    def import_weights(self) -> None:
        """Copy a weights file downloaded elsewhere into the backend's weights folder (size and sha256 checked)."""
        model = self.fix_subject or self.model_id()
        if not model:
            push(self.iface.messageBar(), "choose a model first", Qgis.MessageLevel.Warning)
            return
        path, _ = QFileDialog.getOpenFileName(self, f"Import the weights file of {model}", "",
                                              "Weights (*.pt *.pth *.bin *.safetensors *.ckpt);;All files (*)")
        if not path:
            return
        backend = self._backend_or_warn()
        if backend is None:
            return
        self.write_log(f"importing {path} as the weights of {model}…")
        task = ImportTask(backend, model, path, lambda files, error: self._downloaded(model, files, error))
        task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        self._side(task)

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a trained checkpoint", "",
                                              "Trained checkpoint (*.json)")
        if path:
            self.checkpoint.setFilePath(path)

    def choose_python(self) -> None:
        """An environment that already has the backend: its Python interpreter (a window-modal dialog that
        does not block QGIS; `python_dialog` is kept for whoever drives it)."""
        self.python_dialog = QFileDialog(self, "Choose the Python of an environment with the rsseg backend "
                                               "(bin/python, or python.exe on Windows)")
        self.python_dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        # Qt's own dialog: it shows hidden folders such as .venv, and behaves the same on every platform
        self.python_dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        self.python_dialog.setFilter(self.python_dialog.filter() | QDir.Filter.Hidden)
        self.python_dialog.fileSelected.connect(self._backend_installed)
        self.python_dialog.open()

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
        self.settings.python = python
        self.settings.save()
        self.write_log(f"backend ready: {python}")
        if self.python.filePath() == python:
            self.refresh_models()
        else:
            self.python.setFilePath(python)  # fileChanged: lists the models

    def shutdown(self) -> None:
        """Before the dock goes (plugin unload): its running tasks are cancelled and will not call back into
        it (a task finishing later would otherwise call a deleted widget)."""
        for task in (self.task, self.side_task):
            if task is not None:
                task.on_done = lambda *args: None
                task.cancel()
        self.task = self.side_task = None
        self.train_panel.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.settings.python = self.python.filePath()
        self.settings.save()
        super().closeEvent(event)

