"""The dock's Train tab: train a segmentation model on a raster and your own polygon labels.

The panel only builds a TrainParameters (`parameters()`) and hands its checked job to a TrainTask; the
checks, the temporary GeoPackages of memory layers and the request live in core/train_job.py, shared
with Processing's "Train from layers". While a run goes the panel shows the epoch, the loss and the
validation mIoU, and a per-class IoU table; when it ends, a summary, and the dock selects the new model
in the Segment tab (`on_trained`). A family that builds on a model the user trained before (RFM-Seg:
protocol.training.HOST_FAMILIES) shows a "Host model" row: the user's trained models of that family from
the model list ("My models"), or a folder chosen with Browse….
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qgis.core import Qgis, QgsApplication, QgsMapLayerProxyModel, QgsSettings, QgsVectorLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsDoubleSpinBox, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.backend import Backend
from ..core.bundles import NEW, UNFINISHED, bundle_classes, run_folder_state
from ..core.help import open_help
from ..core.settings import PREFIX
from ..core.train_job import (
    MODE_CHOICES,
    VALIDATION_CHOICES,
    TrainError,
    TrainParameters,
    check_host,
    default_models_root,
    default_name,
    epoch_text,
    family_name,
    field_values,
    folder_name,
    host_rows,
    plural,
    result_lines,
)
from ..protocol.client import BackendError
from ..protocol.contracts import DEVICES
from ..protocol.training import DEFAULT_TRAINABLE, HOST_FAMILIES, TRAINABLE_MODELS, TrainLayersResult
from ..tasks.train_task import TrainTask
from .messages import push
from .model_picker import is_test
from .run_output import add_run_output

TRAIN_MODEL_KEY = PREFIX + "train_model"
TRAIN_DIR_KEY = PREFIX + "train_dir"
TRAIN_HOST_KEY = PREFIX + "train_host"  # the host model's folder last trained with (a model of HOST_FAMILIES)
CLASS_HINTS = ("class", "label", "type", "categ", "kind", "landcover", "land_cover", "lulc")


def trainable_rows(rows: list[dict], show_test: bool) -> list[tuple[str, str]]:
    """(id, description) of the families one can train: the model list's rows of task "trainable" (test twins
    only with `show_test`), or the protocol's list when the rows have none (not listed yet, an older backend)."""
    found = [(str(r["id"]), str(r.get("description") or "")) for r in rows
             if r.get("task") == "trainable" and (show_test or not is_test(r))]
    return found or list(TRAINABLE_MODELS.items())


def class_field_guess(layer) -> str:
    """The field that most likely holds the class: a name like class/label/type, else the first text field."""
    names = [f.name() for f in layer.fields()] if layer is not None else []
    for name in names:
        if any(hint in name.lower() for hint in CLASS_HINTS):
            return name
    for f in layer.fields() if layer is not None else []:
        if not f.isNumeric():
            return f.name()
    return names[0] if names else ""


class TrainPanel(QWidget):
    """The Train tab. `backend()` gives the session's backend (raises BackendError); `on_trained(result)` is
    called after a run that produced a model; `on_fix(fixes, subject)` after one that failed for something a
    button fixes (a base model's weights to download: the dock's first-run panel offers it);
    `on_weights(action, family)` when its Download / Import weights… button is pressed for the pretrained
    weights a family starts from; `set_models(rows, show_test)` refills the model family list."""

    def __init__(self, iface, backend: Callable[[], Backend], on_trained: Callable[[TrainLayersResult], None],
                 parent: Optional[QWidget] = None,
                 on_fix: Optional[Callable[[tuple[str, ...], str], None]] = None,
                 on_weights: Optional[Callable[[str, str], None]] = None):
        super().__init__(parent)
        self.setObjectName("RsRefSegTrain")
        self.iface = iface
        self.backend = backend
        self.on_trained = on_trained
        self.on_fix = on_fix
        self.on_weights = on_weights  # ("download" or "import", family id): the dock's buttons of that name
        self.task: Optional[TrainTask] = None
        self.last_result: Optional[TrainLayersResult] = None
        self.rows: list[dict] = []
        self.show_test = False
        self._name_touched = False
        self._epochs_logged = 0
        self._build()
        self.set_models([], False)
        self._labels_changed(self.labels.currentLayer())
        self._mode_changed()
        self._validation_changed()

    # -- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        body = QWidget(scroll)
        layout = QVBoxLayout(body)
        intro = QLabel("Train a model on a raster and your own polygons; it then segments other rasters "
                       "from the Segment tab (under “My models”).", body)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.raster = QgsMapLayerComboBox(body)
        self.raster.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        form.addRow("Raster layer", self.raster)
        self.labels = QgsMapLayerComboBox(body)
        self.labels.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.labels.setToolTip("The polygons you drew or have: each one's class is in the class field")
        self.labels.layerChanged.connect(self._labels_changed)
        form.addRow("Label layer", self.labels)
        self.field = QgsFieldComboBox(body)
        self.field.fieldChanged.connect(lambda _: self.fill_classes())
        form.addRow("Class field", self.field)
        self.classes = QTableWidget(0, 2, body)
        self.classes.setHorizontalHeaderLabels(["Value", "Class name"])
        self.classes.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.classes.horizontalHeader().setStretchLastSection(True)
        self.classes.verticalHeader().setVisible(False)
        self.classes.setMinimumHeight(90)
        self.classes.setMaximumHeight(170)
        self.classes.setToolTip("Each value of the class field and the class it trains; clear a name to leave "
                                "those polygons out, give two values one name to merge them")
        form.addRow("Classes", self.classes)
        self.classes_note = QLabel("Clear a name to leave that value out; one name on several values merges them.",
                                   body)
        self.classes_note.setWordWrap(True)
        form.addRow("", self.classes_note)

        self.mode = QComboBox(body)
        for key, label in MODE_CHOICES:
            self.mode.addItem(label, key)
        self.mode.currentIndexChanged.connect(lambda _: self._mode_changed())
        form.addRow("Labels", self.mode)
        self.area = QgsMapLayerComboBox(body)
        self.area.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.area.setAllowEmptyLayer(True, "the whole raster")
        self.area.setLayer(None)
        self.area.setToolTip("Where you labelled everything: unlabelled pixels inside it are background "
                             "(empty: the whole raster)")
        form.addRow("Labelled area", self.area)
        self.validation = QComboBox(body)
        for key, label in VALIDATION_CHOICES:
            self.validation.addItem(label, key)
        self.validation.setToolTip("The part of the raster held out to score each epoch (never random chips, "
                                   "which would sit beside training chips)")
        self.validation.currentIndexChanged.connect(lambda _: self._validation_changed())
        form.addRow("Validation", self.validation)
        self.validation_layer = QgsMapLayerComboBox(body)
        self.validation_layer.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.validation_layer.setAllowEmptyLayer(True, "choose a polygon layer")
        self.validation_layer.setLayer(None)
        form.addRow("Validation layer", self.validation_layer)
        self.model = QComboBox(body)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(22)
        self.model.currentIndexChanged.connect(lambda _: self._family_changed())
        form.addRow("Model", self.model)
        weights = QHBoxLayout()
        self.weights_note = QLabel("", body)
        self.weights_note.setWordWrap(True)
        self.weights_button = QPushButton("Download", body)
        self.weights_button.clicked.connect(self._get_weights)
        weights.addWidget(self.weights_note, 1)
        weights.addWidget(self.weights_button)
        self.weights_row = QWidget(body)
        self.weights_row.setLayout(weights)
        weights.setContentsMargins(0, 0, 0, 0)
        self.weights_row.setVisible(False)
        form.addRow("", self.weights_row)
        # a fusion family (HOST_FAMILIES) builds on a model the user trained before: its "host", shown only then
        self.host = QComboBox(body)
        self.host.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.host.setMinimumContentsLength(22)
        self.host.setToolTip("The model you trained before that this model builds on; it stays as it is")
        self.host_browse = QPushButton("Browse…", body)
        self.host_browse.setToolTip("Choose the folder of a model you trained (the folder that holds its model.json)")
        self.host_browse.clicked.connect(self.browse_host)
        host = QHBoxLayout()
        host.setContentsMargins(0, 0, 0, 0)
        host.addWidget(self.host, 1)
        host.addWidget(self.host_browse)
        self.host_row = QWidget(body)
        self.host_row.setLayout(host)
        self.host_label = QLabel("Host model", body)
        form.addRow(self.host_label, self.host_row)
        self.host_note = QLabel("", body)
        self.host_note.setWordWrap(True)
        form.addRow("", self.host_note)
        self.epochs = QSpinBox(body)
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(20)
        self.epochs.setToolTip("Passes over the training chips; training stops earlier when the validation "
                               "mIoU has not improved for 5 epochs")
        form.addRow("Epochs", self.epochs)
        self.name = QLineEdit(body)
        self.name.setToolTip("The model's name under “My models”; its folder is named after it")
        self.name.textEdited.connect(self._name_edited)
        self.name.textChanged.connect(lambda _: self._output_changed())
        form.addRow("Name", self.name)
        self.folder = QgsFileWidget(body)
        self.folder.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder.setFilePath(str(QgsSettings().value(TRAIN_DIR_KEY, "") or ""))
        self.folder.fileChanged.connect(lambda _: self._output_changed())
        form.addRow("Save in", self.folder)
        self.where = QLabel("", body)
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("", self.where)
        layout.addLayout(form)

        advanced = QgsCollapsibleGroupBox("Advanced", body)
        advanced.setCollapsed(True)
        adv = QFormLayout(advanced)
        self.chip = QSpinBox(advanced)
        self.chip.setRange(32, 2048)
        self.chip.setSingleStep(32)
        self.chip.setValue(256)
        self.chip.setToolTip("The square the model sees at a time, in pixels")
        adv.addRow("Chip size (px)", self.chip)
        self.stride = QSpinBox(advanced)
        self.stride.setRange(0, 2048)
        self.stride.setSingleStep(32)
        self.stride.setSpecialValueText("the chip size")
        self.stride.setToolTip("Step between chips (smaller than the chip: overlapping chips, more of them)")
        adv.addRow("Stride (px)", self.stride)
        self.lr = QgsDoubleSpinBox(advanced)
        self.lr.setDecimals(6)
        self.lr.setRange(0.0, 0.5)
        self.lr.setSingleStep(0.0001)
        self.lr.setSpecialValueText("the model's default")
        self.lr.setClearValue(0.0)
        adv.addRow("Learning rate", self.lr)
        self.batch_size = QSpinBox(advanced)
        self.batch_size.setRange(1, 256)
        self.batch_size.setValue(8)
        adv.addRow("Batch size", self.batch_size)
        self.device = QComboBox(advanced)
        self.device.addItems(list(DEVICES))
        adv.addRow("Device", self.device)
        layout.addWidget(advanced)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training", body)
        self.start_button.clicked.connect(lambda: self.start())
        self.resume_button = QPushButton("Resume", body)
        self.resume_button.setToolTip("Continue the unfinished run in this folder from its last checkpoint")
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.resume_button.setVisible(False)
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.help_button = QPushButton("Help", body)
        self.help_button.clicked.connect(lambda: open_help("train-on-your-own-layers"))
        for button in (self.start_button, self.resume_button, self.cancel_button, self.help_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.iou = QTableWidget(0, 2, body)
        self.iou.setHorizontalHeaderLabels(["Class", "Validation IoU"])
        self.iou.horizontalHeader().setStretchLastSection(True)
        self.iou.verticalHeader().setVisible(False)
        self.iou.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.iou.setMaximumHeight(140)
        self.iou.setVisible(False)
        output = add_run_output(layout, body, "RsRefSegTrainSummary", extra=(self.iou,))
        self.progress, self.status, self.summary, self.log = output.progress, output.status, output.summary, output.log
        self.log.setMinimumHeight(80)
        scroll.setWidget(body)
        outer.addWidget(scroll)

    # -- state -------------------------------------------------------------------------------------
    def set_models(self, rows: list[dict], show_test: bool) -> None:
        """The model families from the worker's model list (the dock calls this when it lists them)."""
        self.rows, self.show_test = list(rows), show_test
        chosen = self.model.currentData() or str(QgsSettings().value(TRAIN_MODEL_KEY, "") or DEFAULT_TRAINABLE)
        self.model.clear()
        for model_id, description in trainable_rows(self.rows, show_test):
            self.model.addItem(model_id, model_id)
            if description:
                self.model.setItemData(self.model.count() - 1, description, Qt.ItemDataRole.ToolTipRole)
        index = self.model.findData(chosen)
        self.model.setCurrentIndex(index if index >= 0 else max(0, self.model.findData(DEFAULT_TRAINABLE)))
        self._family_changed()

    def family_row(self) -> Optional[dict]:
        model = self.model.currentData()
        return next((r for r in self.rows if r.get("id") == model), None)

    def _family_changed(self) -> None:
        """A family whose pretrained weights are missing: say so, with the button that gets them. A family
        that builds on a model the user trained (HOST_FAMILIES) shows the Host model row."""
        self.fill_hosts()
        row = self.family_row()
        weights = (row or {}).get("weights") or []
        missing = [w for w in weights if not w.get("present")]
        if row is None or row.get("weights_present", True) or not missing:
            self.weights_row.setVisible(False)
            return
        size = sum(int(w.get("size") or 0) for w in missing)
        shown = f" ({size / 2**20:,.0f} MB)" if size else ""
        downloadable = all(w.get("urls") for w in missing)
        self.weights_button.setText("Download" if downloadable else "Import weights…")
        self.weights_note.setText(f"{row['id']} starts from pretrained weights{shown} that are not installed; "
                                  f"without them it trains from scratch. Press {self.weights_button.text()}.")
        self.weights_row.setVisible(True)

    # -- the host model ---------------------------------------------------------------------------
    def fill_hosts(self) -> None:
        """The Host model row, shown only for a family of HOST_FAMILIES: the user's trained models of the family it
        builds on (from the model list), the folder chosen last time (or with Browse…) too; the choice is kept."""
        model = self.model.currentData() or ""
        family = HOST_FAMILIES.get(model)
        for widget in (self.host_label, self.host_row, self.host_note):
            widget.setVisible(family is not None)
        if family is None:
            return
        chosen = self.host.currentData() or str(QgsSettings().value(TRAIN_HOST_KEY, "") or "")
        self.host.clear()
        for row in host_rows(self.rows, model):
            self._add_host(row["id"], str(row.get("name") or Path(row["id"]).name), row.get("classes"))
        if chosen and self.host.findData(chosen) < 0:
            try:
                chosen = check_host(model, chosen) or ""
            except TrainError:
                chosen = ""  # no longer there, or of another family: not offered
            if chosen and self.host.findData(chosen) < 0:
                self._add_host(chosen)
        index = self.host.findData(chosen) if chosen else -1
        self.host.setCurrentIndex(index if index >= 0 else min(0, self.host.count() - 1))
        wanted = family_name(family)
        if self.host.count():
            self.host_note.setText(f"{model} builds on a {wanted} model you trained before, which stays as it is: "
                                   "choose it here, or press Browse… to pick its folder.")
        else:
            self.host_note.setText(f"{model} builds on a {wanted} model you trained before, and My models has none: "
                                   f"train a {wanted} first (choose it as the Model), or press Browse… to pick the "
                                   "folder of one.")

    def _add_host(self, folder: str, name: str = "", classes=None) -> None:
        classes = classes if isinstance(classes, list) else bundle_classes(folder)
        self.host.addItem(f"{name or Path(folder).name}" + (f" — {', '.join(map(str, classes))}" if classes else ""),
                          folder)
        self.host.setItemData(self.host.count() - 1, folder, Qt.ItemDataRole.ToolTipRole)

    def host_folder(self) -> str:
        """The chosen host model's folder ("" when none)."""
        return str(self.host.currentData() or "")

    def set_host(self, path: str) -> bool:
        """Choose the trained model in `path` (its folder, or its model.json) as the host, as Browse… does; a
        folder that is not a trained model of the right family is refused with a message naming the field."""
        try:
            folder = check_host(self.model.currentData() or "", path)
        except TrainError as exc:
            push(self.iface.messageBar(), str(exc), Qgis.MessageLevel.Warning)
            return False
        if folder is None:
            return False
        folder = str(Path(folder).resolve())  # as the model list names a trained model
        if self.host.findData(folder) < 0:
            self._add_host(folder)
        self.host.setCurrentIndex(self.host.findData(folder))
        self.fill_hosts()  # the same list, this folder chosen; the note says there is one now
        return True

    def browse_host(self) -> None:
        family = HOST_FAMILIES.get(self.model.currentData() or "")
        start = self.host_folder() or str(default_models_root())
        path = QFileDialog.getExistingDirectory(self, f"Choose the folder of the {family_name(family or '')} model "
                                                      "you trained", str(Path(start).parent))
        if path:
            self.set_host(path)

    def _get_weights(self) -> None:
        model = self.model.currentData()
        if model and self.on_weights is not None:
            self.on_weights("download" if self.weights_button.text() == "Download" else "import", model)

    def _labels_changed(self, layer) -> None:
        self.field.setLayer(layer)
        if layer is not None:
            guess = class_field_guess(layer)
            if guess and guess != self.field.currentField():
                self.field.setField(guess)
        self.fill_classes()
        if not self._name_touched:
            self.suggest_name()

    def suggest_name(self) -> None:
        """"<label layer> <date time>", with " 2", " 3"... when that folder is taken."""
        layer = self.labels.currentLayer()
        if layer is None:
            self.name.setText("")
            return
        base = default_name(layer.name())
        root = Path(self.folder.filePath()) if self.folder.filePath() else default_models_root()
        name = base
        for n in range(2, 1000):
            if run_folder_state(root / folder_name(name)) == NEW:
                break
            name = f"{base} {n}"
        self.name.setText(name)

    def _name_edited(self, _text: str) -> None:
        self._name_touched = True

    def fill_classes(self) -> None:
        """One row per value of the class field: the value, and its class name (the value itself to start)."""
        self.classes.setRowCount(0)
        layer, name = self.labels.currentLayer(), self.field.currentField()
        if not isinstance(layer, QgsVectorLayer) or not name:
            self.classes_note.setText("Choose the label layer and the field that holds each polygon's class.")
            return
        try:
            values = field_values(layer, name)
        except TrainError as exc:
            self.classes_note.setText(exc.text[0].upper() + exc.text[1:] + ".")
            return
        for row, value in enumerate(values):
            self.classes.insertRow(row)
            item = QTableWidgetItem(value)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.classes.setItem(row, 0, item)
            self.classes.setItem(row, 1, QTableWidgetItem(value))
        count = f"{len(values)} value{'' if len(values) == 1 else 's'}"
        self.classes_note.setText(f"{count}. Clear a name to leave that value out; one name on several values merges "
                                  "them." if values else f"“{name}” is empty in every polygon.")

    def class_table(self) -> dict[str, Optional[str]]:
        """Value -> class name (None: left out), as the table shows it."""
        table = {}
        for row in range(self.classes.rowCount()):
            value, name = self.classes.item(row, 0), self.classes.item(row, 1)
            text = name.text().strip() if name is not None else ""
            table[value.text()] = text or None
        return table

    def set_class_name(self, value: str, name: str) -> None:
        """Type `name` for `value` in the table (as a user does; "" leaves the value out)."""
        for row in range(self.classes.rowCount()):
            if self.classes.item(row, 0).text() == value:
                self.classes.item(row, 1).setText(name)
                return
        raise KeyError(value)

    def _mode_changed(self) -> None:
        self.area.setEnabled(self.mode.currentData() == "area")

    def _validation_changed(self) -> None:
        self.validation_layer.setEnabled(self.validation.currentData() == "layer")

    def bundle_folder(self) -> Path:
        """Where the model goes: <Save in, or <outputs>/models>/<name>."""
        root = Path(self.folder.filePath()) if self.folder.filePath() else default_models_root()
        return root / folder_name(self.name.text())

    def _output_changed(self) -> None:
        self.folder.lineEdit().setPlaceholderText(str(default_models_root()))
        folder = self.bundle_folder()
        unfinished = run_folder_state(folder) == UNFINISHED
        self.where.setText(f"The model goes to {folder}" + (" (an unfinished run is there: Resume continues it)"
                                                            if unfinished else ""))
        self.resume_button.setVisible(unfinished)

    def parameters(self, resume: bool = False) -> TrainParameters:
        """The run the tab describes (TrainParameters.to_request() checks it)."""
        return TrainParameters(
            raster=self.raster.currentLayer(), labels=self.labels.currentLayer(), field=self.field.currentField(),
            classes=self.class_table(), out=str(self.bundle_folder()), name=self.name.text().strip(),
            model=self.model.currentData() or "", mode=self.mode.currentData(),
            area=self.area.currentLayer() if self.mode.currentData() == "area" else None,
            validation=self.validation.currentData(),
            validation_layer=self.validation_layer.currentLayer() if self.validation.currentData() == "layer" else None,
            epochs=self.epochs.value(), chip=self.chip.value(), stride=self.stride.value() or None,
            batch_size=self.batch_size.value(), lr=self.lr.value() or None, device=self.device.currentText(),
            host=self.host_folder() if self.model.currentData() in HOST_FAMILIES else None, resume=resume)

    # -- actions -----------------------------------------------------------------------------------
    def start(self, resume: bool = False) -> None:
        if self.task is not None:
            return
        bar = self.iface.messageBar()
        try:
            backend = self.backend()
            job = self.parameters(resume).to_request()
        except (TrainError, BackendError) as exc:
            push(bar, str(exc), Qgis.MessageLevel.Warning)
            return
        settings = QgsSettings()
        settings.setValue(TRAIN_MODEL_KEY, job.request.model)
        settings.setValue(TRAIN_DIR_KEY, self.folder.filePath())
        if job.request.host:
            settings.setValue(TRAIN_HOST_KEY, job.request.host)
        self.last_result = None
        self._epochs_logged = 0
        self.summary.setVisible(False)
        self.iou.setRowCount(0)
        self.iou.setVisible(False)
        self.progress.setValue(0)
        request = job.request
        self.write_log(f"{'resume' if resume else 'train'}: {request.model} on {request.raster}, classes from "
                       f"“{request.field}” of {request.labels}, {plural(request.epochs, 'epoch')} → {request.out}"
                       + (f" (host model {request.host})" if request.host else ""))
        if job.exported:
            self.write_log(f"written to a temporary GeoPackage for the run (removed after it): "
                           f"{', '.join(job.exported)}")
        self.task = TrainTask(backend, job, on_done=self._done)
        self.task.progressChanged.connect(self._progress)
        self.start_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("waiting for the backend…")
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.write_log("cancelling…")
            self.task.cancel()

    def _progress(self, value: float) -> None:
        task = self.task
        if task is None:
            return
        self.progress.setValue(int(value))
        stage, done, total, detail, epochs = task.snapshot()
        for line in epochs[self._epochs_logged:]:
            self.write_log(line)
        self._epochs_logged = len(epochs)
        if stage == "train":
            self.status.setText(epoch_text(done, total, {"epoch": min(done + 1, total), **detail}))
        elif stage:
            self.status.setText(f"{'preparing the chips' if stage == 'prepare' else stage} "
                                f"({done}/{total})" if total else stage)
        if isinstance(detail.get("iou"), dict) and detail["iou"]:
            self.show_iou(detail["iou"])

    def show_iou(self, iou: dict) -> None:
        self.iou.setRowCount(len(iou))
        for row, (name, value) in enumerate(iou.items()):
            self.iou.setItem(row, 0, QTableWidgetItem(str(name)))
            number = f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"
            item = QTableWidgetItem(number)
            item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            self.iou.setItem(row, 1, item)
        self.iou.setVisible(True)

    def _done(self, result: Optional[TrainLayersResult], message: str, details: str) -> None:
        task, self.task = self.task, None
        if task is not None:
            for line in task.snapshot()[4][self._epochs_logged:]:
                self.write_log(line)
        self.start_button.setEnabled(True)
        self.resume_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText("")
        self._output_changed()
        bar = self.iface.messageBar()
        if result is not None:
            self.last_result = result
            self.progress.setValue(100)
            self.show_summary(result)
            miou = (result.metrics or {}).get("miou")
            score = f", validation mIoU {miou:.3f}" if isinstance(miou, (int, float)) else ""
            push(bar, f"trained “{result.name}”{score}; it is selected in the Segment tab",
                 Qgis.MessageLevel.Success)
            self.on_trained(result)
            self._name_touched = False
            self.suggest_name()  # a fresh name for the next run
        elif message.startswith("cancelled"):
            self.progress.setValue(0)
            self.write_log(message)
            push(bar, message, Qgis.MessageLevel.Info)
        else:
            self.progress.setValue(0)
            self.write_log(f"failed: {message}" + (f"\n{details}" if details else ""))
            push(bar, message, Qgis.MessageLevel.Critical, details)
            if task is not None and task.fixes and self.on_fix is not None:
                self.on_fix(task.fixes, task.subject or (task.job.request.model if task.job else ""))

    def show_summary(self, result: TrainLayersResult) -> None:
        lines = result_lines(result)
        self.summary.setText("\n".join(lines))
        self.summary.setVisible(True)
        if (result.metrics or {}).get("iou"):
            self.show_iou(result.metrics["iou"])
        for line in lines:
            self.write_log(f"  {line}")

    def write_log(self, text: str) -> None:
        self.log.appendPlainText(text)

    def shutdown(self) -> None:
        """Before the dock goes: a running task is cancelled and will not call back into the panel."""
        if self.task is not None:
            self.task.on_done = lambda *args: None
            self.task.cancel()
            self.task = None
