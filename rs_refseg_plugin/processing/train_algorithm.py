"""`rsseg:train_from_layers`: train a segmentation model on a raster and a polygon label layer.

The same path as the dock's Train tab: a TrainParameters (core/train_job.py) checked and turned into the
protocol's TrainLayersRequest (memory layers and filtered layers written to a temporary GeoPackage beside
the bundle folder, removed after the run), run through the plugin's shared Backend. The output is the
bundle folder (OUTPUT) and its model id (MODEL_ID), which "Segment classes" takes as its Model (or Custom
model id), with its own classes when Classes is empty. HOST: for a family that builds on a model the user
trained before (RFM-Seg), that model's folder. Each epoch's loss and validation scores go to the
log; cancel reaches the worker. A failed run leaves no files; a cancelled one keeps its checkpoints, which
RESUME continues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import (
    Qgis,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ..core.backend import shared_backend
from ..core.help import help_url
from ..core.settings import PluginSettings
from ..core.train_job import (
    MODE_CHOICES,
    VALIDATION_CHOICES,
    TrainError,
    TrainParameters,
    epoch_text,
    family_name,
    field_values,
    parse_class_table,
    result_lines,
)
from ..protocol.client import BackendError, JobCancelled
from ..protocol.contracts import DEVICES
from ..protocol.training import DEFAULT_TRAINABLE, HOST_FAMILIES, TRAINABLE_MODELS
from .base import ICON, _advanced, _device_name, _double, _listed, enum_choice, folder_behaviour, named
from .model_choices import add_bundle_row, trainable_choices

HELP_URL = help_url("train-on-your-own-layers")


def _integer():
    types = getattr(Qgis, "ProcessingNumberParameterType", None)  # QGIS 3.36 and later
    return types.Integer if types is not None else QgsProcessingParameterNumber.Type.Integer


def _host_models() -> str:
    """"rfm-seg-r18-rn50 (a UNetFormer)": the models that take a host, without their test twins."""
    return ", ".join(f"{model} (a {family_name(family)})" for model, family in HOST_FAMILIES.items()
                     if not model.endswith("-tiny"))


def _polygons() -> list:
    return [QgsProcessing.SourceType.TypeVectorPolygon]


class TrainFromLayersAlgorithm(QgsProcessingAlgorithm):
    RASTER, LABELS, FIELD, CLASS_TABLE, MODE, AREA = "RASTER", "LABELS", "FIELD", "CLASS_TABLE", "MODE", "AREA"
    VALIDATION, VALIDATION_LAYER, MODEL, EPOCHS, CHIP = "VALIDATION", "VALIDATION_LAYER", "MODEL", "EPOCHS", "CHIP"
    STRIDE, LR, BATCH_SIZE, DEVICE, NAME, RESUME = "STRIDE", "LR", "BATCH_SIZE", "DEVICE", "NAME", "RESUME"
    HOST = "HOST"
    OUTPUT, MODEL_ID, MIOU = "OUTPUT", "MODEL_ID", "MIOU"
    # a TrainError's field -> this algorithm's parameter, for messages
    FIELD_PARAMETERS = {"raster": RASTER, "labels": LABELS, "labels_layer": LABELS, "field": FIELD,
                        "classes": CLASS_TABLE, "mode": MODE, "area": AREA, "area_layer": AREA,
                        "validation": VALIDATION, "validation_layer": VALIDATION_LAYER, "model": MODEL,
                        "epochs": EPOCHS, "chip": CHIP, "stride": STRIDE, "lr": LR, "batch_size": BATCH_SIZE,
                        "device": DEVICE, "name": NAME, "out": OUTPUT, "resume": RESUME, "host": HOST}

    def __init__(self):
        super().__init__()
        self._settings: Optional[PluginSettings] = None

    # -- identity ----------------------------------------------------------------------------------
    def createInstance(self):  # noqa: N802 - QGIS API
        return type(self)()

    def name(self):
        return "train_from_layers"

    def displayName(self):  # noqa: N802 - QGIS API
        return "Train from layers (your own labels)"

    def group(self):
        return "Training"

    def groupId(self):  # noqa: N802
        return "training"

    def icon(self):
        return QIcon(str(ICON))

    def helpUrl(self):  # noqa: N802
        return HELP_URL

    def shortHelpString(self):  # noqa: N802
        modes = "; ".join(f"{i}: {label}" for i, (_, label) in enumerate(MODE_CHOICES))
        validations = "; ".join(f"{i}: {label}" for i, (_, label) in enumerate(VALIDATION_CHOICES))
        families = "; ".join(f"{key}: {text}" for key, text in TRAINABLE_MODELS.items())
        return ("Trains a segmentation model on a raster and polygons you labelled, and saves it as a model "
                "folder that Segment classes (and the RS RefSeg dock, under My models) then runs on other "
                "rasters.\n\n"
                "Raster (RASTER): the image to learn from, a local file.\n"
                "Label polygons (LABELS): polygons with a class in a field; memory layers and filtered layers "
                "are written to a temporary GeoPackage for the run.\n"
                "Class field (FIELD): the field of the label polygons that holds the class.\n"
                "Class table (CLASS_TABLE): value=name pairs separated by semicolons, e.g. \"1=building; "
                "2=road; 3=\" (an empty name leaves that value out; two values with one name become one "
                "class); empty: every value is a class named by itself.\n"
                f"Labels (MODE): {modes}.\n"
                "Labelled area (AREA): with a labelled area, the polygons where everything is labelled "
                "(default: the whole raster).\n"
                f"Validation (VALIDATION): the part held out to score each epoch; {validations}.\n"
                "Validation layer (VALIDATION_LAYER): its polygons are held out, with Validation set to a "
                "validation layer.\n"
                f"Model (MODEL): the model to train; {families}.\n"
                "Host model (HOST): only for a model that builds on a model you trained before, "
                f"{_host_models()}: the folder of that trained model (it stays as it is); leave it empty for "
                "the others.\n"
                "Epochs (EPOCHS): passes over the training chips (training stops early when the validation "
                "score stops improving).\n"
                "Chip size (CHIP): pixels on a side of the squares the model learns from.\n"
                "Stride (STRIDE, advanced): pixels between chips (default: the chip size).\n"
                "Learning rate (LR, advanced): default: the model's own.\n"
                "Batch size (BATCH_SIZE, advanced): chips per step.\n"
                f"Device (DEVICE, advanced): {', '.join(DEVICES)}.\n"
                "Name (NAME, advanced): the model's name in model lists (default: the folder's name).\n"
                "Resume (RESUME, advanced): continue the unfinished run in the model folder.\n"
                "Model folder (OUTPUT): the trained model's folder (new or empty). Its model id (MODEL_ID) is "
                "the Model of Segment classes.\n\n"
                "Training runs in the backend environment chosen in the RS RefSeg dock (Advanced → Backend "
                "Python, or Set up backend…).")

    # -- parameters --------------------------------------------------------------------------------
    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.RASTER, "Raster (a local file)"))
        self.addParameter(QgsProcessingParameterVectorLayer(self.LABELS, "Label polygons", types=_polygons()))
        self.addParameter(QgsProcessingParameterField(self.FIELD, "Class field", parentLayerParameterName=self.LABELS))
        self.addParameter(QgsProcessingParameterString(
            self.CLASS_TABLE, "Class table (value=name; …; empty: every value by itself)", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.MODE, "Labels", options=[t for _, t in MODE_CHOICES],
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.AREA, "Labelled area (default: the whole raster)", types=_polygons(), optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.VALIDATION, "Validation", options=[t for _, t in VALIDATION_CHOICES], defaultValue=0))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.VALIDATION_LAYER, "Validation layer (with Validation: a validation layer)", types=_polygons(),
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.MODEL, "Model", options=trainable_choices(),
                                                     defaultValue=DEFAULT_TRAINABLE, usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.HOST, "Host model (the trained model's folder, for a model that builds on one)",
            behavior=folder_behaviour(), optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.EPOCHS, "Epochs", type=_integer(), defaultValue=20,
                                                       minValue=1, maxValue=1000))
        self.addParameter(QgsProcessingParameterNumber(self.CHIP, "Chip size (px)", type=_integer(),
                                                       defaultValue=256, minValue=32, maxValue=2048))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            self.STRIDE, "Stride (px; default: the chip size)", type=_integer(), optional=True, minValue=1,
            maxValue=2048)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            self.LR, "Learning rate (default: the model's own)", type=_double(), optional=True, minValue=0.0,
            maxValue=1.0)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size", type=_integer(), defaultValue=8, minValue=1, maxValue=256)))
        self.addParameter(_advanced(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=list(DEVICES), defaultValue="auto", usesStaticStrings=True)))
        self.addParameter(_advanced(QgsProcessingParameterString(
            self.NAME, "Name (default: the folder's name)", optional=True)))
        self.addParameter(_advanced(QgsProcessingParameterBoolean(
            self.RESUME, "Resume (continue the unfinished run in the model folder)", defaultValue=False)))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Model folder"))
        self.addOutput(QgsProcessingOutputString(self.MODEL_ID, "Model id (the Model of Segment classes)"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Validation mIoU"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS API
        """QGIS's checks, except that MODEL takes any trainable id (a script's, or a test twin the list hides:
        the backend checks it) and DEVICE also takes cuda:N and the list's index."""
        checked = dict(parameters)
        model = parameters.get(self.MODEL)
        if isinstance(model, str) and model.strip():
            checked[self.MODEL] = DEFAULT_TRAINABLE
        if _listed(parameters.get(self.DEVICE), DEVICES, _device_name):
            checked[self.DEVICE] = "auto"
        return super().checkParameterValues(checked, context)

    # -- reading them ------------------------------------------------------------------------------
    def _error(self, exc: TrainError) -> QgsProcessingException:
        """A TrainError worded for this dialog: the parameter's label (and script name) first."""
        name = self.FIELD_PARAMETERS.get(exc.field)
        if name is None:
            return QgsProcessingException(str(exc))
        return QgsProcessingException(f"{named(self, name)}: {exc.text}")

    def _device(self, parameters, context) -> str:
        return enum_choice(self, parameters, self.DEVICE, DEVICES, context, "device", _device_name, "auto")

    def _optional_number(self, parameters, name, context, integer: bool):
        if parameters.get(name) in (None, ""):
            return None
        value = (self.parameterAsInt if integer else self.parameterAsDouble)(parameters, name, context)
        return value or None

    def train_parameters(self, parameters, context) -> TrainParameters:
        raster = self.parameterAsRasterLayer(parameters, self.RASTER, context)
        if raster is None:
            raise QgsProcessingException(f"Raster (RASTER): cannot load {parameters.get(self.RASTER)!r}")
        labels = self.parameterAsVectorLayer(parameters, self.LABELS, context)
        if labels is None:
            raise QgsProcessingException(f"Label polygons (LABELS): cannot load {parameters.get(self.LABELS)!r}")
        fields = self.parameterAsFields(parameters, self.FIELD, context)
        field = fields[0] if fields else ""
        try:
            values = field_values(labels, field)
            classes = parse_class_table(self.parameterAsString(parameters, self.CLASS_TABLE, context) or "", values)
        except TrainError as exc:
            raise self._error(exc) from None
        mode = MODE_CHOICES[self.parameterAsEnum(parameters, self.MODE, context)][0]
        validation = VALIDATION_CHOICES[self.parameterAsEnum(parameters, self.VALIDATION, context)][0]
        area = self.parameterAsVectorLayer(parameters, self.AREA, context) \
            if parameters.get(self.AREA) not in (None, "") else None
        validation_layer = self.parameterAsVectorLayer(parameters, self.VALIDATION_LAYER, context) \
            if parameters.get(self.VALIDATION_LAYER) not in (None, "") else None
        if validation_layer is not None and validation != "layer":
            raise QgsProcessingException("Validation layer (VALIDATION_LAYER): set Validation (VALIDATION) to a "
                                         "validation layer to use it, or leave it empty")
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        return TrainParameters(
            raster=raster, labels=labels, field=field, classes=classes, out=out,
            name=(self.parameterAsString(parameters, self.NAME, context) or "").strip(),
            model=(self.parameterAsString(parameters, self.MODEL, context) or "").strip(), mode=mode,
            area=area if mode == "area" else None, validation=validation, validation_layer=validation_layer,
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            chip=self.parameterAsInt(parameters, self.CHIP, context),
            stride=self._optional_number(parameters, self.STRIDE, context, True),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            lr=self._optional_number(parameters, self.LR, context, False),
            device=self._device(parameters, context),
            host=(self.parameterAsFile(parameters, self.HOST, context) or "").strip() or None,
            resume=self.parameterAsBoolean(parameters, self.RESUME, context))

    # -- running -----------------------------------------------------------------------------------
    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802 - runs in the main thread
        self._settings = PluginSettings.load()
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        params = self.train_parameters(parameters, context)
        if params.mode == "sparse" and parameters.get(self.AREA) not in (None, ""):
            feedback.pushWarning("Labelled area (AREA) is not used with sparse labels")
        try:
            job = params.to_request()
        except TrainError as exc:
            raise self._error(exc) from None
        if job.exported:
            feedback.pushInfo(f"written to a temporary GeoPackage for the run: {', '.join(job.exported)}")
        epochs_logged = [0]

        def progress(percent: float, record) -> None:
            feedback.setProgress(percent)
            if record.stage == "train" and record.done > epochs_logged[0]:
                epochs_logged[0] = record.done
                feedback.pushInfo(epoch_text(record.done, record.total,
                                             {**(record.detail or {}), "epoch": record.done, "step": None}))
            elif record.stage == "prepare" and record.done == 0:
                feedback.setProgressText("preparing the chips")
            elif record.stage == "train" and record.done == 0 and epochs_logged[0] == 0:
                feedback.setProgressText("training")

        outcome = "failed"
        try:
            if feedback.isCanceled():
                outcome = "cancelled"
                raise QgsProcessingException("cancelled")
            backend = shared_backend(self._settings or PluginSettings.load())
            result = backend.train(job.request, progress, feedback.isCanceled, queue=True)
            outcome = "done"
        except JobCancelled:
            outcome = "cancelled"
            raise QgsProcessingException("cancelled") from None
        except BackendError as exc:
            raise QgsProcessingException(exc.text("gui")) from None
        finally:
            kept = job.finish(outcome)
            if kept:
                feedback.pushInfo(f"the checkpoints are kept in {job.request.out}: run again with Resume (RESUME) "
                                  "to continue")
        for line in result_lines(result):
            feedback.pushInfo(line)
        add_bundle_row(result.model, result.name, result.classes)
        miou = (result.metrics or {}).get("miou")
        return {self.OUTPUT: str(Path(job.request.out)), self.MODEL_ID: result.model,
                self.MIOU: float(miou) if isinstance(miou, (int, float)) else None}
