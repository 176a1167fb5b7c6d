"""What both rsseg algorithms share: input, model, device and output parameters, and the run.

processAlgorithm fills a JobParameters and runs it through the plugin's shared Backend (the same
core as the dock), in a temporary folder; only a finished job's files reach the destinations, so a
failed or cancelled run leaves no outputs. The destinations are checked before the job starts (a
folder that cannot be written, a folder or the input raster as the destination...).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)
from qgis.PyQt.QtGui import QIcon

from ..core.backend import shared_backend
from ..core.job import JobError, JobParameters
from ..core.layers import local_raster
from ..core.settings import PluginSettings
from ..protocol.client import BackendError, JobCancelled
from ..protocol.contracts import DEVICES, SegmentResult
from .outputs import check_destinations, deliver_raster, deliver_vector, discard_raster, style_on_load

ICON = Path(__file__).parents[1] / "icon.svg"


class SegmentAlgorithm(QgsProcessingAlgorithm):
    INPUT, MODEL, DEVICE = "INPUT", "MODEL", "DEVICE"
    OUTPUT_RASTER, OUTPUT_VECTOR = "OUTPUT_RASTER", "OUTPUT_VECTOR"
    default_model = ""

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

    # -- parameters --------------------------------------------------------------------------------
    def add_input(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster (a local file)"))

    def add_model_and_device(self) -> None:
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model id (see `rsseg models`)",
                                                       defaultValue=self.default_model))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue="auto",
                                                     usesStaticStrings=True))

    def add_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_RASTER, "Mask"))
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT_VECTOR, "Polygons",
                                                                  type=QgsProcessing.SourceType.TypeVectorPolygon))

    # -- running -----------------------------------------------------------------------------------
    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802 - runs in the main thread
        self._settings = PluginSettings.load()
        return True

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
        job.model = (self.parameterAsString(parameters, self.MODEL, context) or "").strip()
        job.device = self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto"
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
        style_on_load(context, dest_raster, result.classes)
        style_on_load(context, dest_vector, result.classes)
        for c in result.classes:
            feedback.pushInfo(f"{c.name}: {c.pixels} px, {c.polygons} polygons")
        return {self.OUTPUT_RASTER: dest_raster, self.OUTPUT_VECTOR: dest_vector}

    def parameter_label(self, name: str) -> str:
        """A parameter's display name, as the dialog shows it (for messages)."""
        definition = self.parameterDefinition(name)
        return definition.description() if definition is not None else name

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
            backend = shared_backend(self._settings or PluginSettings.load())
            result = backend.run_job(request, progress, feedback.isCanceled, queue=True)
        except JobCancelled:
            raise QgsProcessingException("cancelled") from None
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        if feedback.isCanceled():  # cancelled after the last progress event: drop the finished job
            raise QgsProcessingException("cancelled")
        return result
