"""The two rsseg algorithms: a class list over the whole raster, and a referring sentence (with a model that
finds separate objects, the best TOP_K of them, each its own polygon with its score)."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core.job import JobParameters
from ..protocol.contracts import DEFAULT_MODELS, DEVICES, EXAMPLE_PROMPTS, MAX_TOP_K
from .base import SegmentAlgorithm, integer_type
from .model_choices import cached_rows

# Each parameter in a line: the dialog's label, the script's name (processing.run), what it takes.
MODEL_HELP = ("Model (MODEL): the models the RS RefSeg dock last listed that take {what} (press Refresh in the "
              "dock to update the list; default {default}).\n"
              "Custom model id (CUSTOM_MODEL, advanced): a model the list does not show; used instead of Model when "
              "set.\n"
              f"Device (DEVICE): {', '.join(DEVICES)}; auto picks a GPU when there is one.\n")
RASTER_HELP = ("Bands (BANDS, advanced): the raster's bands fed to the model, in order (e.g. 3, 2, 1 for a "
               "raster stored blue, green, red; one band is repeated); empty: the red, green and blue bands by "
               "their colour, else the first ones.\n"
               "Resolution (RESOLUTION, advanced): the pixel size in metres to segment at, and of the mask "
               "(e.g. 0.3 for a 5 cm drone image); empty: the raster's own.\n"
               "Nodata value (NODATA, advanced): pixels of this value are left out (e.g. 0 for a black border "
               "that the raster does not mark as nodata).\n"
               "Mask (OUTPUT_RASTER): the class raster; Polygons (OUTPUT_VECTOR): its polygons (attributes "
               "class, class_id, score; for a model that finds separate objects one polygon per object, with "
               "instance_id and rank too, styled by score when loaded).\n\n"
               "The models run in the backend environment chosen in the RS RefSeg dock (Advanced → Backend "
               "Python, or Set up backend…).")


class SegmentClassesAlgorithm(SegmentAlgorithm):
    CLASSES = "CLASSES"
    mode = "classes"
    default_model = DEFAULT_MODELS["classes"]

    def name(self):
        return "segment_classes"

    def displayName(self):  # noqa: N802 - QGIS API
        return "Segment classes (open vocabulary)"

    def shortHelpString(self):  # noqa: N802
        return ("Labels every pixel of the raster with one of the classes you type, and writes the class mask "
                "and its polygons.\n\n"
                "Input raster (INPUT): a raster layer of a local file.\n"
                f"Classes (CLASSES): comma-separated, e.g. \"{EXAMPLE_PROMPTS['classes']}\". With semicolons, "
                "commas give synonyms of one class: \"road, parking lot; tree; water\". With a model you trained "
                "(Train from layers, or the dock's Train tab) it may stay empty: the model's own classes.\n"
                + MODEL_HELP.format(what="a class list", default=self.default_model) + RASTER_HELP)

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_input()
        self.addParameter(QgsProcessingParameterString(
            self.CLASSES, "Classes (e.g. building, road, tree; empty: a trained model's own)", optional=True))
        self.add_model_and_device()
        self.add_raster_options()
        self.add_outputs()

    def job_parameters(self, parameters, context, layer, raster):
        return JobParameters(raster=raster, mode="classes", model=self.default_model,
                             prompt=self.parameterAsString(parameters, self.CLASSES, context) or "")


class SegmentSentenceAlgorithm(SegmentAlgorithm):
    SENTENCE, EXTENT, CHECKPOINT, TOP_K = "SENTENCE", "EXTENT", "CHECKPOINT", "TOP_K"
    mode = "sentence"
    default_model = DEFAULT_MODELS["sentence"]
    FIX_WORDS = {**SegmentAlgorithm.FIX_WORDS,
                 "checkpoint": "choose the step-N.json of a training run in Trained checkpoint"}

    def name(self):
        return "segment_sentence"

    def displayName(self):  # noqa: N802 - QGIS API
        return "Segment from a sentence (referring)"

    def shortHelpString(self):  # noqa: N802
        return ("Finds the object a sentence describes and writes its mask and polygons.\n\n"
                "Input raster (INPUT): a raster layer of a local file.\n"
                f"Sentence (SENTENCE): e.g. \"{EXAMPLE_PROMPTS['sentence']}\".\n"
                + MODEL_HELP.format(what="a sentence", default=self.default_model)
                + "The zero-shot models run without training; the RSRefSeg models need a trained checkpoint.\n"
                "Region (EXTENT): where to look (default: the whole layer).\n"
                "Trained checkpoint (CHECKPOINT): the step-N.json of a training run; the RSRefSeg models need "
                "one (no trained weights were released), the zero-shot models take none.\n"
                f"Objects to return (TOP_K): with a model that finds separate objects (the zero-shot models), the "
                f"best K objects the sentence describes, each its own polygon with its score and rank (1 to "
                f"{MAX_TOP_K}; empty: one). Other models take none.\n" + RASTER_HELP)

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_input()
        self.addParameter(QgsProcessingParameterString(self.SENTENCE, "Sentence"))
        self.add_model_and_device()
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Region (default: the whole layer)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFile(self.CHECKPOINT,
                                                     "Trained checkpoint (step-N.json of a training run)",
                                                     extension="json", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.TOP_K, "Objects to return (top-k; models that find separate objects)", type=integer_type(),
            optional=True, minValue=1, maxValue=MAX_TOP_K))
        self.add_raster_options()
        self.add_outputs()

    def job_parameters(self, parameters, context, layer, raster):
        job = JobParameters(raster=raster, mode="sentence", model=self.default_model,
                            prompt=self.parameterAsString(parameters, self.SENTENCE, context) or "",
                            checkpoint=self.parameterAsFile(parameters, self.CHECKPOINT, context) or None,
                            top_k=self.top_k(parameters, context))
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            crs = layer.crs()
            job.region = "extent"
            job.bbox = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
            job.bbox_crs = crs.authid() or crs.toWkt() or None
        return job

    def top_k(self, parameters, context):
        """TOP_K, or None when not set; refused at once for a model the dock's list says finds no separate
        objects (a model the list lacks: the backend judges)."""
        if parameters.get(self.TOP_K) in (None, ""):
            return None
        top_k = self.parameterAsInt(parameters, self.TOP_K, context)
        model = self.model_id(parameters, context)
        row = next((r for r in cached_rows() or [] if r["id"] == model), None)
        if row is not None and row.get("instances") is False:
            label = self.parameter_label(self.TOP_K).split(" (")[0]
            raise QgsProcessingException(f"{label}: {model} returns one region for a sentence, not separate objects; "
                                         "leave it empty, or choose a zero-shot model in the Model list")
        return top_k
