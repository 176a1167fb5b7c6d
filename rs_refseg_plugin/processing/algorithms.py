"""The two rsseg algorithms: a class list over the whole raster, and a referring sentence."""

from __future__ import annotations

from qgis.core import QgsProcessingParameterExtent, QgsProcessingParameterFile, QgsProcessingParameterString

from ..core.job import JobParameters
from ..protocol.contracts import DEFAULT_MODELS
from .base import SegmentAlgorithm


class SegmentClassesAlgorithm(SegmentAlgorithm):
    CLASSES = "CLASSES"
    default_model = DEFAULT_MODELS["classes"]

    def name(self):
        return "segment_classes"

    def displayName(self):  # noqa: N802 - QGIS API
        return "Segment classes (open vocabulary)"

    def shortHelpString(self):  # noqa: N802
        return ("Labels every pixel of the raster with one of the classes you type, and writes the class mask "
                "and its polygons (attributes class, class_id, score).\n\n"
                "CLASSES: comma-separated, e.g. \"building, road, tree, water\". With semicolons, commas give "
                "synonyms of one class: \"road, parking lot; tree; water\".\n"
                "MODEL: an open-vocabulary model id of `rsseg models` (clip-vit-b-16, remoteclip-vit-b-32...).\n"
                "The models run in the rsseg backend environment set in the RS RefSeg settings.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_input()
        self.addParameter(QgsProcessingParameterString(self.CLASSES, "Classes (e.g. building, road, tree)"))
        self.add_model_and_device()
        self.add_outputs()

    def job_parameters(self, parameters, context, layer, raster):
        return JobParameters(raster=raster, mode="classes", model=self.default_model,
                             prompt=self.parameterAsString(parameters, self.CLASSES, context) or "")


class SegmentSentenceAlgorithm(SegmentAlgorithm):
    SENTENCE, EXTENT, CHECKPOINT = "SENTENCE", "EXTENT", "CHECKPOINT"
    default_model = DEFAULT_MODELS["sentence"]

    def name(self):
        return "segment_sentence"

    def displayName(self):  # noqa: N802 - QGIS API
        return "Segment from a sentence (referring)"

    def shortHelpString(self):  # noqa: N802
        return ("Finds the object a sentence describes, e.g. \"the large white building next to the parking lot\", "
                "and writes its mask and polygons.\n\n"
                "EXTENT: the region to look in (default: the whole layer).\n"
                "MODEL: a referring model id of `rsseg models`; CHECKPOINT: the JSON of a checkpoint trained with "
                "`rsseg train` (the released RSRefSeg configuration needs one).\n"
                "The models run in the rsseg backend environment set in the RS RefSeg settings.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_input()
        self.addParameter(QgsProcessingParameterString(self.SENTENCE, "Sentence"))
        self.add_model_and_device()
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Region (default: the whole layer)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFile(self.CHECKPOINT, "Trained checkpoint (rsseg train JSON)",
                                                     extension="json", optional=True))
        self.add_outputs()

    def job_parameters(self, parameters, context, layer, raster):
        job = JobParameters(raster=raster, mode="sentence", model=self.default_model,
                            prompt=self.parameterAsString(parameters, self.SENTENCE, context) or "",
                            checkpoint=self.parameterAsFile(parameters, self.CHECKPOINT, context) or None)
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            crs = layer.crs()
            job.region = "extent"
            job.bbox = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
            job.bbox_crs = crs.authid() or crs.toWkt() or None
        return job
