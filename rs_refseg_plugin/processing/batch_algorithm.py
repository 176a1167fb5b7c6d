"""`rsseg:segment_many`: "Segment many rasters", one segmentation each, on the backend's pool of warm model
workers (Ray: one per GPU, locally or on a cluster).

The same path as "Segment classes" / "Segment from a sentence": the model, device, resolution and nodata
parameters of base.BackendAlgorithm, a JobParameters checked into the SegmentRequest every raster gets
(core/job.py), the plugin's shared Backend (its `batch` request), and backend errors worded for the dialog.
Each raster's outputs go to `<output folder>/<raster name>/` (mask.tif, polygons.gpkg, result.json) and
`manifest.json` beside them holds a row per raster. Each raster that ends is a line in the log (a warning
when it failed, with its error and what fixes it); the algorithm fails only when no raster finished. Loaded
results get the segment algorithms' styling and metadata (outputs.ResultStyler), when the algorithm ends, in
the main thread.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from qgis.core import (
    Qgis,
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRasterLayer,
)

from ..core.batch_job import batch_percent, ended, manifest_path, progress_text, raster_name, read_rows
from ..core.help import help_url
from ..core.job import JobError, JobParameters
from ..core.layers import local_raster
from ..core.result_layers import ResultError, finished_at, read_result
from ..protocol.batch import CANCELLED, DONE, FAILED, MAX_RETRIES, RASTER_SUFFIXES, BatchRequest, BatchRow
from ..protocol.client import BackendError, JobCancelled
from ..protocol.contracts import (
    DEFAULT_MODELS,
    DEVICES,
    EXAMPLE_PROMPTS,
    MODES,
    OUTPUTS,
    POLYGON_LAYER,
    RequestError,
)
from .base import BackendAlgorithm, _advanced, _listed, enum_choice, folder_behaviour, integer_type
from .model_choices import model_choices
from .outputs import ResultStyler, _make_folder, _remove_folders, keep, os_reason, output_name

MAX_WORKERS = 256
HELP_URL = help_url("segment-many-rasters")  # docs/plugin.md's section


def _rasters() -> Any:
    types = getattr(Qgis, "ProcessingSourceType", None)  # QGIS 3.36 and later
    return types.Raster if types is not None else QgsProcessing.SourceType.TypeRaster


def _hint(kind: str) -> Any:
    return QgsProcessingUtils.LayerHint.Raster if kind == "mask" else QgsProcessingUtils.LayerHint.Vector


class SegmentManyAlgorithm(BackendAlgorithm):
    INPUTS, TABLE, FOLDER = "INPUTS", "TABLE", "FOLDER"
    PROMPT_MODE, PROMPT = "PROMPT_MODE", "PROMPT"
    WORKERS, ADDRESS, RETRIES, BANDS, LOAD = "WORKERS", "ADDRESS", "RETRIES", "BANDS", "LOAD"
    SKIP_DONE = "SKIP_DONE"
    OUTPUT_FOLDER, MANIFEST, DONE, FAILED = "OUTPUT_FOLDER", "MANIFEST", "DONE", "FAILED"
    mode = "classes"
    default_model = DEFAULT_MODELS["classes"]
    # a BatchRequest rule's field -> this algorithm's parameter, for messages
    FIELD_PARAMETERS = {"inputs": INPUTS, "out_dir": OUTPUT_FOLDER, "workers": WORKERS, "retries": RETRIES}

    # -- identity ----------------------------------------------------------------------------------
    def name(self):
        return "segment_many"

    def displayName(self):  # noqa: N802 - QGIS API
        return "Segment many rasters"

    def helpUrl(self):  # noqa: N802
        return HELP_URL

    def shortHelpString(self):  # noqa: N802
        return ("Segments many rasters with one prompt (or a prompt per raster from a CSV table), each raster "
                "into a folder of its own in the output folder, on warm model workers: one per GPU, on this "
                "computer or on a Ray cluster.\n\n"
                "Input rasters (INPUTS): raster layers or files (local files).\n"
                "CSV table (TABLE): a table with a raster column (paths, relative to the table's folder) and "
                "optional classes or sentence columns, a prompt per raster (an empty cell: the Prompt below).\n"
                f"Folder of rasters (FOLDER): every raster in it ({', '.join(RASTER_SUFFIXES)}).\n"
                "Give at least one of the three.\n"
                f"Prompt mode (PROMPT_MODE): {' or '.join(MODES)}.\n"
                f"Prompt (PROMPT): the classes, e.g. \"{EXAMPLE_PROMPTS['classes']}\", or a sentence, e.g. "
                f"\"{EXAMPLE_PROMPTS['sentence']}\"; empty: a trained model's own classes, or the table's.\n"
                "Model (MODEL): the models the RS RefSeg dock last listed (press Refresh in the dock to list them "
                f"again; default {self.default_model}).\n"
                "Custom model id (CUSTOM_MODEL, advanced): a model the list does not show; used instead of Model "
                "when set.\n"
                f"Device (DEVICE): {', '.join(DEVICES)}; auto picks a GPU when there is one.\n"
                "Workers (WORKERS): how many rasters run at once, each worker with its own copy of the model; 0: "
                "one per GPU, or one on a computer without a GPU.\n"
                "Ray cluster address (ADDRESS, advanced): e.g. ray://head:10001, or auto for the cluster this "
                "computer belongs to; empty: this computer.\n"
                "Retries (RETRIES, advanced): more attempts for a raster whose worker stopped or failed "
                "unexpectedly (a raster that is not readable is not tried again).\n"
                "Skip rasters done before (SKIP_DONE, advanced): keep the results of rasters an earlier run into "
                "this output folder finished with the same settings, and segment only the others (after a cancel "
                "or failures).\n"
                "Bands (BANDS, advanced): the bands fed to the model, in order, e.g. 3,2,1; empty: the red, green "
                "and blue bands by their colour, else the first ones.\n"
                "Resolution (RESOLUTION, advanced): the pixel size in metres to segment at; empty: each raster's "
                "own.\n"
                "Nodata value (NODATA, advanced): pixels of this value are left out.\n"
                "Add the results to the project (LOAD): each finished raster's mask and polygons, styled.\n"
                "Output folder (OUTPUT_FOLDER): a folder per raster (mask.tif, polygons.gpkg, result.json) and "
                "manifest.json, a row per raster (MANIFEST). DONE and FAILED count the rasters.\n\n"
                "A raster that fails is a warning in the log with its error; the others still run. The models run "
                "in the backend environment chosen in the RS RefSeg dock (Advanced → Backend Python, or Set up "
                "backend…).")

    # -- parameters --------------------------------------------------------------------------------
    def model_options(self) -> list[str]:
        """The models of both prompt modes the dock last listed (the prompt mode is a parameter here)."""
        return list(dict.fromkeys(model_choices("classes") + model_choices("sentence")))

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUTS, "Input rasters (local files)", layerType=_rasters(), optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.TABLE, "CSV table (a raster column; optional classes or sentence columns)", extension="csv",
            optional=True))
        self.addParameter(QgsProcessingParameterFile(self.FOLDER, "Folder of rasters", behavior=folder_behaviour(),
                                                     optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.PROMPT_MODE, "Prompt mode", options=list(MODES),
                                                     defaultValue=MODES[0], usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.PROMPT, "Prompt (classes or a sentence; empty: a trained model's own classes, or the table's)",
            optional=True))
        self.add_model_and_device()
        self.addParameter(QgsProcessingParameterNumber(
            self.WORKERS, "Workers (0: one per GPU)", type=integer_type(), defaultValue=0, minValue=0,
            maxValue=MAX_WORKERS))
        self.addParameter(_advanced(QgsProcessingParameterString(
            self.ADDRESS, "Ray cluster address (empty: this computer)", optional=True)))
        self.addParameter(_advanced(QgsProcessingParameterNumber(
            self.RETRIES, "Retries (for a raster whose worker stopped)", type=integer_type(), defaultValue=2,
            minValue=0, maxValue=MAX_RETRIES)))
        self.addParameter(_advanced(QgsProcessingParameterBoolean(
            self.SKIP_DONE, "Skip rasters done before (same settings, same output folder)", defaultValue=False)))
        self.addParameter(_advanced(QgsProcessingParameterString(
            self.BANDS, "Bands (in the model's order, e.g. 3,2,1; default: automatic)", optional=True)))
        self.add_grid_options()
        self.addParameter(QgsProcessingParameterBoolean(self.LOAD, "Add the results to the project",
                                                        defaultValue=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"))
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, "Manifest (a row per raster)"))
        self.addOutput(QgsProcessingOutputNumber(self.DONE, "Rasters done"))
        self.addOutput(QgsProcessingOutputNumber(self.FAILED, "Rasters failed"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS API
        """BackendAlgorithm's checks; PROMPT_MODE also takes the list's position (0: classes), and INPUTS any
        file (one that is not a raster fails alone, in the backend, and the others run)."""
        checked = dict(parameters)
        mode = _listed(parameters.get(self.PROMPT_MODE), MODES)
        if mode:
            checked[self.PROMPT_MODE] = mode
        checked.pop(self.INPUTS, None)  # read (and refused with a message naming it) by inputs()
        return super().checkParameterValues(checked, context)

    # -- reading them ------------------------------------------------------------------------------
    def prompt_mode(self, parameters, context) -> str:
        return enum_choice(self, parameters, self.PROMPT_MODE, MODES, context, "prompt mode")

    def bands(self, parameters) -> Optional[tuple[int, ...]]:
        """BANDS as "3,2,1" (the dialog) or [3, 2, 1] (a script, as the segment algorithms take it)."""
        raw = parameters.get(self.BANDS)
        if raw in (None, "") or raw == []:
            return None
        items = raw if isinstance(raw, (list, tuple)) else re.split(r"[\s,;]+", str(raw).strip())
        try:
            bands = tuple(int(str(item).strip()) for item in items if str(item).strip())
        except ValueError:
            raise QgsProcessingException(f"{self.named(self.BANDS)}: give band numbers separated by commas, e.g. "
                                         f"3,2,1 (got {raw!r})") from None
        if any(b < 1 for b in bands):
            raise QgsProcessingException(f"{self.named(self.BANDS)}: band numbers start at 1, got "
                                         f"{', '.join(map(str, bands))}")
        return bands or None

    def inputs(self, parameters, context) -> tuple[list[str], list[str]]:
        """INPUTS as files for the backend, and why the ones left out cannot be sent (a web layer...). A file
        goes as it is: the backend tells a raster it cannot read, and only that raster fails."""
        raw = parameters.get(self.INPUTS)
        if raw in (None, ""):
            return [], []
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        files: list[str] = []
        left_out: list[str] = []
        for item in items:
            layer = item if isinstance(item, QgsMapLayer) else None
            if layer is None:
                text = str(item).strip()
                if not text:
                    continue
                if os.path.isfile(text):
                    files.append(os.path.abspath(text))
                    continue
                layer = QgsProcessingUtils.mapLayerFromString(text, context)
                if layer is None:
                    left_out.append(f"“{text}” is neither a file nor a layer of the project")
                    continue
            if not isinstance(layer, QgsRasterLayer):
                left_out.append(f"“{layer.name()}” is not a raster layer")
                continue
            try:
                files.append(local_raster(layer))
            except JobError as exc:
                left_out.append(str(exc))
        return files, left_out

    def batch_request(self, parameters, context, feedback) -> tuple[BatchRequest, int]:
        """The BatchRequest, and how many inputs were left out (each a warning in the log)."""
        files, left_out = self.inputs(parameters, context)
        table = (self.parameterAsFile(parameters, self.TABLE, context) or "").strip()
        folder = (self.parameterAsFile(parameters, self.FOLDER, context) or "").strip()
        for reason in left_out:
            feedback.pushWarning(f"{self.named(self.INPUTS)}: {reason}; left out")
        inputs = files + [os.path.abspath(path) for path in (table, folder) if path]
        if not inputs:
            if left_out:
                raise QgsProcessingException(f"{self.named(self.INPUTS)}: none of them can be segmented: "
                                             + "; ".join(left_out))
            raise QgsProcessingException(f"{self.named(self.INPUTS)}: choose at least one raster, or give a CSV "
                                         f"table ({self.TABLE}) or a folder of rasters ({self.FOLDER})")
        job = JobParameters(raster="", mode=self.prompt_mode(parameters, context),
                            prompt=self.parameterAsString(parameters, self.PROMPT, context) or "",
                            model=self.model_id(parameters, context), device=self.device(parameters, context),
                            bands=self.bands(parameters), **self.grid_options(parameters, context))
        try:
            settings = job.request(prompt_optional=bool(table))
        except JobError as exc:
            if job.model and not job.prompt.strip():
                raise QgsProcessingException(f"{self.named(self.PROMPT)}: {exc}; or give a CSV table "
                                             f"({self.TABLE}) with a prompt per raster") from None
            raise QgsProcessingException(str(exc)) from None
        out = self.output_folder(parameters, context)
        address = (self.parameterAsString(parameters, self.ADDRESS, context) or "").strip() or None
        try:
            request = BatchRequest(inputs=inputs, out_dir=out, settings=settings, address=address,
                                   workers=self.parameterAsInt(parameters, self.WORKERS, context),
                                   retries=self.parameterAsInt(parameters, self.RETRIES, context),
                                   skip_done=self.parameterAsBoolean(parameters, self.SKIP_DONE, context)).validate()
        except RequestError as exc:
            name = self.FIELD_PARAMETERS.get(exc.field)
            raise QgsProcessingException(f"{self.named(name)}: {exc}" if name else str(exc)) from None
        return request, len(left_out)

    def output_folder(self, parameters, context) -> str:
        """OUTPUT_FOLDER as an absolute path: a folder, or none yet (made when the batch starts)."""
        out = (self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context) or "").strip()
        if not out:
            raise QgsProcessingException(f"{self.named(self.OUTPUT_FOLDER)}: choose a folder")
        folder = Path(os.path.abspath(out))
        if folder.exists() and not folder.is_dir():
            raise QgsProcessingException(f"{self.named(self.OUTPUT_FOLDER)}: “{folder}” is a file; choose a folder")
        return str(folder)

    def make_folder(self, out_dir: str) -> list[Path]:
        """Make the output folder (a refusal names the parameter); the folders made, for _remove_folders."""
        folder = Path(out_dir)
        try:
            created = _make_folder(folder)
        except OSError as exc:
            raise QgsProcessingException(f"{self.named(self.OUTPUT_FOLDER)}: cannot create “{folder}” "
                                         f"({os_reason(exc)})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            _remove_folders(created)
            raise QgsProcessingException(f"{self.named(self.OUTPUT_FOLDER)}: cannot write to “{folder}” "
                                         "(permission denied)")
        return created

    # -- running -----------------------------------------------------------------------------------
    def row_error(self, row: BatchRow) -> str:
        """A raster's error with its fixes in the dialog's words (as a worker's error of one raster)."""
        error = row.error or {}
        fixes = [str(f) for f in error.get("fixes") or () if isinstance(f, str)]
        return self.fixes_text(str(error.get("message") or error.get("code") or "unknown error"), fixes,
                               str(error.get("subject") or ""))

    def report(self, rows: list[BatchRow], reported: set[str], feedback) -> None:
        """A line per raster that ended and was not reported yet: done (info), failed (a warning), cancelled."""
        for row in ended(rows):
            if row.raster in reported:
                continue
            reported.add(row.raster)
            name = raster_name(row)
            if row.status == DONE:
                feedback.pushInfo(f"{name}: done in {row.seconds:.1f} s, in {row.out_dir}")
            elif row.status == CANCELLED:
                feedback.pushInfo(f"{name}: cancelled")
            else:
                feedback.pushWarning(f"{name}: {row.status}: {self.row_error(row)}")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        request, left_out = self.batch_request(parameters, context, feedback)
        manifest = manifest_path(request.out_dir)
        reported: set[str] = set()
        seen = {"ended": -1, "text": ""}

        def progress(record) -> None:
            feedback.setProgress(batch_percent(record))
            text = progress_text(record)
            if text != seen["text"]:
                seen["text"] = text
                feedback.setProgressText(text)
            if record.done > seen["ended"]:  # a raster ended: the manifest, rewritten as each one ends, says which
                seen["ended"] = record.done
                self.report(read_rows(manifest) or [], reported, feedback)

        if feedback.isCanceled():
            raise QgsProcessingException("cancelled")
        created = self.make_folder(request.out_dir)
        feedback.pushInfo(f"segmenting into {request.out_dir}; starting the model workers")
        try:  # queue=True: a run of the dock or of another algorithm ends first (one job at a time)
            result = self.backend().batch(request, progress, feedback.isCanceled, queue=True)
        except JobCancelled as exc:
            self.report(read_rows(manifest) or [], reported, feedback)
            _remove_folders(created)  # only if still empty: cancelled before the batch started
            raise QgsProcessingException(str(exc) or "cancelled") from None
        except BackendError as exc:
            _remove_folders(created)  # only if still empty: the batch did not start (a missing file, no Ray)
            raise QgsProcessingException(self.error_text(exc)) from None
        self.report(result.rows, reported, feedback)
        done = [row for row in result.rows if row.status == DONE]
        failed = result.count(FAILED) + left_out
        if not done:
            first = next((row for row in result.rows if row.status != DONE), None)
            what = f"{raster_name(first)}: {self.row_error(first)}" if first is not None else "no raster was found"
            more = f" (and {failed - 1} more failed: see the log)" if failed > 1 else ""
            raise QgsProcessingException(f"no raster finished: {what}{more}")
        feedback.pushInfo(f"{len(done)} done, {failed} failed in {result.seconds:.1f} s on {result.workers} "
                          f"worker(s) ({result.address}); manifest: {result.manifest}")
        if self.parameterAsBoolean(parameters, self.LOAD, context):
            self.load_on_completion(done, context, feedback)
        return {self.OUTPUT_FOLDER: request.out_dir, self.MANIFEST: result.manifest, self.DONE: len(done),
                self.FAILED: failed}

    def load_on_completion(self, rows: list[BatchRow], context, feedback) -> None:
        """Each finished raster's mask and polygons, to be added when the algorithm ends (in the main thread, by
        Processing), named "<raster>: <prompt> — <model> <time> (mask)" and styled as the segment algorithms'."""
        for row in rows:
            try:
                result = read_result(row.outputs.get("result") or Path(row.out_dir) / OUTPUTS["result"])
            except ResultError as exc:
                feedback.pushWarning(f"{raster_name(row)}: not added to the project: {exc}")
                continue
            when = finished_at(result) or datetime.now()
            stem = Path(row.raster).stem
            for kind, source in (("mask", result.mask),
                                 ("polygons", f"{result.polygons}|layername={POLYGON_LAYER}" if result.polygons
                                  else "")):
                if not source:
                    continue
                details = QgsProcessingContext.LayerDetails(f"{stem}: {output_name(result, kind, when)}",
                                                            context.project())
                details.forceName = True  # every mask is mask.tif: the file's name would not tell them apart
                details.layerTypeHint = _hint(kind)
                details.setPostProcessor(keep(ResultStyler(result.classes, result, kind, when)))
                context.addLayerToLoadOnCompletion(source, details)
