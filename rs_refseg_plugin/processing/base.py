"""What the rsseg segmentation algorithms share. BackendAlgorithm: the model, device, resolution and nodata
parameters, the backend, and errors worded for the dialog (also "Segment many rasters", batch_algorithm.py).
SegmentAlgorithm: one raster's input, bands and output parameters, and the run.

processAlgorithm fills a JobParameters and runs it through the plugin's shared Backend (the same
core as the dock), in a temporary folder; only a finished job's files reach the destinations, so a
failed or cancelled run leaves no outputs. The destinations are checked before the job starts (a
folder that cannot be written, a folder or the input raster as the destination...). After the run
the job's summary goes to the Processing log, and loaded outputs are styled, named after the prompt,
the model and the time, and carry the full prompt in their metadata (outputs.py).

Messages name the dialog's fields and the dock's buttons, never a command: the backend's errors come
with `fixes` (protocol/contracts.py FIXES), worded here for the Processing dialog.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from qgis.core import (
    Qgis,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)
from qgis.PyQt.QtGui import QIcon

from ..core.backend import Backend, shared_backend
from ..core.help import help_url
from ..core.job import JobError, JobParameters
from ..core.layers import local_raster
from ..core.settings import PluginSettings
from ..core.summary import summary_lines
from ..protocol.client import BackendError, JobCancelled
from ..protocol.contracts import DEVICES, FIXES, RequestError, SegmentResult, check_device, fix_text
from .model_choices import model_choices
from .outputs import check_destinations, deliver_raster, deliver_vector, discard_raster, style_on_load

ICON = Path(__file__).parents[1] / "icon.svg"
HELP_URL = help_url("processing")  # the Processing section of docs/plugin.md, from metadata.txt's homepage
# "(see `rsseg models`)", "; run `rsseg models download X`": command-line advice in an older backend's message
_COMMAND_HINT = re.compile(r"\s*\([^()`]*`rsseg[^`]*`[^()]*\)|[;:,]?\s*\b(?:see|run|use|try)\s+`rsseg[^`]*`")
# "choose the bands with --bands": a command-line flag where the dialog has a field
_FLAG = re.compile(r"\b(?:with|using|via) --([a-z][a-z-]*)|--([a-z][a-z-]*)")
FLAG_FIELDS = {"bands": "Bands", "resolution": "Resolution", "nodata": "Nodata value", "model": "Model",
               "device": "Device", "checkpoint": "Trained checkpoint", "classes": "Classes", "sentence": "Sentence"}


def _advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """The parameter under the dialog's "Advanced Parameters"."""
    flags = getattr(Qgis, "ProcessingParameterFlag", None)  # QGIS 3.36 and later
    flag = flags.Advanced if flags is not None else QgsProcessingParameterDefinition.Flag.FlagAdvanced
    parameter.setFlags(parameter.flags() | flag)
    return parameter


def _double() -> Any:
    types = getattr(Qgis, "ProcessingNumberParameterType", None)  # QGIS 3.36 and later
    return types.Double if types is not None else QgsProcessingParameterNumber.Type.Double


def integer_type() -> Any:
    """The integer type of a number parameter, in the spelling of this QGIS."""
    types = getattr(Qgis, "ProcessingNumberParameterType", None)  # QGIS 3.36 and later
    return types.Integer if types is not None else QgsProcessingParameterNumber.Type.Integer


def folder_behaviour() -> Any:
    """The folder behaviour of a file parameter, in the spelling of this QGIS."""
    behaviours = getattr(Qgis, "ProcessingFileParameterBehavior", None)  # QGIS 3.36 and later
    return behaviours.Folder if behaviours is not None else QgsProcessingParameterFile.Behavior.Folder


def _index(value: Any) -> Optional[int]:
    """An enum index as a script passes it (0, not True), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _listed(value: Any, choices: Sequence[str], parse: Callable[[str], Optional[str]] = None) -> Optional[str]:
    """The entry of an enum's list a script's value names (a position, or a name ``parse`` accepts), else None."""
    index = _index(value)
    if index is not None:
        return choices[index] if 0 <= index < len(choices) else None
    if not isinstance(value, str):
        return None
    return parse(value.strip()) if parse else (value.strip() if value.strip() in choices else None)


def named(algorithm: QgsProcessingAlgorithm, name: str) -> str:
    """"Device (DEVICE)": a parameter's label and script name, to start a message."""
    definition = algorithm.parameterDefinition(name)
    return f"{definition.description().split(' (')[0] if definition is not None else name} ({name})"


def enum_choice(algorithm: QgsProcessingAlgorithm, parameters, name: str, choices: Sequence[str], context, what: str,
                parse: Callable[[str], Optional[str]] = None, default: str = "") -> str:
    """An enum parameter as a script gives it: a position in the list or a name (``parse`` maps other spellings,
    e.g. cuda:1, to a name); each wrong one refused with a message naming the parameter."""
    raw = parameters.get(name)
    index = _index(raw)
    if index is not None:
        if 0 <= index < len(choices):
            return choices[index]
        listed = ", ".join(f"{i}: {c}" for i, c in enumerate(choices))
        raise QgsProcessingException(f"{named(algorithm, name)}: {index} is not a position in the list ({listed})")
    text = (algorithm.parameterAsString(parameters, name, context) or "").strip() or default or choices[0]
    value = parse(text) if parse else (text if text in choices else None)
    if value is None:
        raise QgsProcessingException(f"{named(algorithm, name)}: {text!r} is not a {what}; choose one of "
                                     f"{', '.join(choices)}")
    return value


class BackendAlgorithm(QgsProcessingAlgorithm):
    """An algorithm that runs models in the backend: MODEL, CUSTOM_MODEL, DEVICE, RESOLUTION and NODATA, the
    shared Backend, and backend errors worded for the dialog (FIX_WORDS)."""

    MODEL, CUSTOM_MODEL, DEVICE = "MODEL", "CUSTOM_MODEL", "DEVICE"
    RESOLUTION, NODATA = "RESOLUTION", "NODATA"
    mode = ""  # "classes" or "sentence": the Model list offers the models of this prompt mode
    default_model = ""
    # How an error's fixes read in the Processing dialog (contracts.FIXES names); others: the dock's wording
    FIX_WORDS = {
        "models": "choose another model in the Model list, or type an id the backend knows in Custom model id",
        "model": "choose {model} in the Model list (or type it in Custom model id)",
        "bands": "choose the bands in the Bands field (Advanced Parameters)",
    }

    def __init__(self):
        super().__init__()
        self._settings: Optional[PluginSettings] = None

    # -- identity ----------------------------------------------------------------------------------
    def createInstance(self):  # noqa: N802 - QGIS API
        return type(self)()

    def group(self):
        return "Segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def icon(self):
        return QIcon(str(ICON))

    def helpUrl(self):  # noqa: N802
        return HELP_URL

    # -- parameters --------------------------------------------------------------------------------
    def model_options(self) -> list[str]:
        """The Model list: the models of this prompt mode the dock last listed (model_choices)."""
        return model_choices(self.mode)

    def add_model_and_device(self) -> None:
        """MODEL: the models of this prompt mode the dock last listed (model_choices), by id; CUSTOM_MODEL:
        any other id, used instead when set; DEVICE: auto, cpu, cuda, mps."""
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=self.model_options(), defaultValue=self.default_model,
            usesStaticStrings=True))
        self.addParameter(_advanced(QgsProcessingParameterString(
            self.CUSTOM_MODEL, "Custom model id (used instead of Model when set)", optional=True)))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue="auto",
                                                     usesStaticStrings=True))

    def add_grid_options(self) -> None:
        """RESOLUTION, NODATA: the processing grid, an extra nodata value."""
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            self.RESOLUTION, "Resolution (metres per pixel; default: the raster's own)", type=_double(),
            optional=True, minValue=0.0)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            self.NODATA, "Nodata value (pixels of this value are left out)",
            type=_double(), optional=True)))

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS API
        """QGIS's checks, except that MODEL takes any model id (a script's, or one the Model list does
        not show yet: the backend checks it) and DEVICE also takes cuda:N and the list's index (0: auto)."""
        checked = dict(parameters)
        model = parameters.get(self.MODEL)
        if isinstance(model, str) and model.strip():
            checked[self.MODEL] = self.default_model
        if _listed(parameters.get(self.DEVICE), DEVICES, _device_name):
            checked[self.DEVICE] = "auto"
        return super().checkParameterValues(checked, context)

    # -- reading them ------------------------------------------------------------------------------
    def model_id(self, parameters, context) -> str:
        custom = (self.parameterAsString(parameters, self.CUSTOM_MODEL, context) or "").strip()
        return custom or (self.parameterAsString(parameters, self.MODEL, context) or "").strip()

    def device(self, parameters, context) -> str:
        return enum_choice(self, parameters, self.DEVICE, DEVICES, context, "device", _device_name, "auto")

    def _number(self, parameters, name: str, context) -> Optional[float]:
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsDouble(parameters, name, context)

    def grid_options(self, parameters, context) -> dict[str, Any]:
        """JobParameters' resolution and nodata from RESOLUTION, NODATA (None: not set)."""
        resolution = self._number(parameters, self.RESOLUTION, context)
        if resolution is not None and not resolution > 0:
            raise QgsProcessingException(f"Resolution: give the metres per pixel as a number above 0 (got "
                                         f"{resolution:g}), or leave it empty to keep the raster's own")
        return {"resolution": resolution, "nodata": self._number(parameters, self.NODATA, context)}

    def named(self, name: str) -> str:
        return named(self, name)

    def parameter_label(self, name: str) -> str:
        """A parameter's display name, as the dialog shows it (for messages)."""
        definition = self.parameterDefinition(name)
        return definition.description() if definition is not None else name

    # -- the backend -------------------------------------------------------------------------------
    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802 - runs in the main thread
        self._settings = PluginSettings.load()
        return True

    def backend(self) -> Backend:
        """The plugin's one worker (the dock's too), on the backend Python of the settings read at prepare."""
        return shared_backend(self._settings or PluginSettings.load())

    def error_text(self, exc: BackendError) -> str:
        """A backend error for the Processing dialog (fixes_text)."""
        return self.fixes_text(str(exc), getattr(exc, "fixes", ()) or (), str(getattr(exc, "subject", "") or ""))

    def fixes_text(self, message: str, fixes: Sequence[str] = (), subject: str = "") -> str:
        """An error's message (without an older backend's command hints) and its fixes in the dialog's words
        (FIX_WORDS), or the dock's (contracts.FIXES "gui"): a worker's error, or a raster's in a batch."""
        first, newline, rest = str(message).partition("\n")
        first = _COMMAND_HINT.sub("", first).strip() or first
        first = _FLAG.sub(_field_for_flag, first)
        words = []
        for name in fixes:
            if name in self.FIX_WORDS:
                words.append(self.FIX_WORDS[name].format(model=subject or "the model"))
            elif name in FIXES:
                words.append(fix_text((name,), subject, "gui"))
        if words:
            first = f"{first}: {words[0]}" + "".join(f" (or {w})" for w in words[1:])
        return f"{first}{newline}{rest}"


class SegmentAlgorithm(BackendAlgorithm):
    INPUT, BANDS = "INPUT", "BANDS"
    OUTPUT_RASTER, OUTPUT_VECTOR = "OUTPUT_RASTER", "OUTPUT_VECTOR"

    # -- parameters --------------------------------------------------------------------------------
    def add_input(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster (a local file)"))

    def add_raster_options(self) -> None:
        """BANDS, RESOLUTION, NODATA: which bands feed the model, the processing grid, an extra nodata value."""
        self.addParameter(_advanced(QgsProcessingParameterBand(
            self.BANDS, "Bands (in the model's order; default: automatic)", parentLayerParameterName=self.INPUT,
            optional=True, allowMultiple=True)))
        self.add_grid_options()

    def add_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_RASTER, "Mask"))
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT_VECTOR, "Polygons",
                                                                  type=QgsProcessing.SourceType.TypeVectorPolygon))

    def raster_options(self, parameters, context) -> dict[str, Any]:
        """JobParameters' bands, resolution and nodata from BANDS, RESOLUTION, NODATA (None: not set)."""
        bands = tuple(self.parameterAsInts(parameters, self.BANDS, context) or ())  # () when not set
        if any(b < 1 for b in bands):
            raise QgsProcessingException(f"Bands: band numbers start at 1, got {', '.join(map(str, bands))}")
        return {"bands": bands or None, **self.grid_options(parameters, context)}

    # -- running -----------------------------------------------------------------------------------
    def job_parameters(self, parameters, context, layer, raster: str) -> JobParameters:
        """The mode's JobParameters (prompt, region...) from the algorithm's own parameters."""
        raise NotImplementedError

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(f"cannot load the input raster {parameters.get(self.INPUT)!r}")
        try:
            raster = local_raster(layer)
        except JobError as exc:
            raise QgsProcessingException(str(exc)) from None
        job = self.job_parameters(parameters, context, layer, raster)
        job.model = self.model_id(parameters, context)
        job.device = self.device(parameters, context)
        for key, value in self.raster_options(parameters, context).items():
            setattr(job, key, value)
        dest_raster = self.parameterAsOutputLayer(parameters, self.OUTPUT_RASTER, context)
        dest_vector = self.parameterAsOutputLayer(parameters, self.OUTPUT_VECTOR, context)
        raster_label = self.parameter_label(self.OUTPUT_RASTER)
        vector_label = self.parameter_label(self.OUTPUT_VECTOR)
        check_destinations([(raster_label, dest_raster), (vector_label, dest_vector)], raster)
        work = Path(tempfile.mkdtemp(prefix="rsseg_", dir=QgsProcessingUtils.tempFolder()))
        job.out_dir = str(work / "out")
        try:
            result = self._run(job, feedback)
            feedback.setProgressText("writing the outputs")
            deliver_raster(result.mask, dest_raster, raster_label)
            if result.polygons:
                try:
                    deliver_vector(result.polygons, dest_vector, vector_label)
                except QgsProcessingException:
                    discard_raster(dest_raster)  # all or nothing: no mask without its polygons
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        when = datetime.now()
        style_on_load(context, dest_raster, result, "mask", when)
        style_on_load(context, dest_vector, result, "polygons", when)
        for line in summary_lines(result):
            feedback.pushInfo(line)
        return {self.OUTPUT_RASTER: dest_raster, self.OUTPUT_VECTOR: dest_vector}

    def _run(self, job: JobParameters, feedback) -> SegmentResult:
        try:
            request = job.to_request()
        except JobError as exc:
            raise QgsProcessingException(str(exc)) from None
        stage = [""]

        def progress(percent: float, name: str) -> None:
            if name != stage[0]:
                stage[0] = name
                feedback.setProgressText(name)
            feedback.setProgress(percent)

        if feedback.isCanceled():
            raise QgsProcessingException("cancelled")
        try:  # queue=True: concurrent runs (batch, models) wait for the backend's one job at a time
            result = self.backend().run_job(request, progress, feedback.isCanceled, queue=True)
        except JobCancelled:
            raise QgsProcessingException("cancelled") from None
        except BackendError as exc:
            raise QgsProcessingException(self.error_text(exc)) from None
        if feedback.isCanceled():  # cancelled after the last progress event: drop the finished job
            raise QgsProcessingException("cancelled")
        return result


def _field_for_flag(match: re.Match) -> str:
    """"with --bands" -> "in the Bands field", "--bands" -> "the Bands field"; an unknown flag stays."""
    field = FLAG_FIELDS.get(match.group(1) or match.group(2))
    if field is None:
        return match.group(0)
    return f"in the {field} field" if match.group(1) else f"the {field} field"


def _device_name(text: str) -> Optional[str]:
    """auto, cpu, cuda, cuda:N or mps as torch spells it, or None."""
    try:
        return check_device(text)
    except RequestError:
        return None
