"""Train on your own layers: what the dock's Train tab and Processing's "Train from layers" hand the backend.

Both fill a `TrainParameters` (QGIS layers and the options) and call `to_request()`, which checks it,
resolves the raster to its file and each polygon layer to a file the backend can read, and returns a
`TrainJob`: the protocol's `TrainLayersRequest` and the temporary files made for it. A polygon layer that
is not a plain file (a memory layer, a layer with a filter or unsaved edits, a database or web layer) is
written to a temporary GeoPackage in a hidden work folder beside the bundle folder
(`<parent>/.rsseg-train-*`), which `TrainJob.finish()` removes when the run ends, however it ends.

A family that builds on a model the user trained before (RFM-Seg, protocol.training.HOST_FAMILIES) needs
that model's folder, its "host" (`check_host`; `host_rows` lists the candidates among "My models").

The progress (`train_percent`, `epoch_text`) and the summary (`result_lines`) are worded here once, for
the dock and the Processing log alike.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from qgis.core import QgsProject, QgsProviderRegistry, QgsVectorFileWriter

from ..protocol.contracts import MAX_CLASS_CHARS, MAX_CLASSES, RequestError
from ..protocol.training import (
    BUNDLE_FILE,
    DEFAULT_TRAINABLE,
    HOST_FAMILIES,
    TRAINABLE_MODELS,
    TrainLayersRequest,
    TrainLayersResult,
)
from .bundles import BUNDLE, OTHER, UNFINISHED, is_bundle, run_folder_state
from .job import JobError
from .layers import local_raster
from .run_folder import default_root

MODELS_FOLDER = "models"  # the bundles' default place: <outputs>/models/<name>
WORK_PREFIX = ".rsseg-train-"
# A TrainLayersRequest field (or one of this module's) -> the Train tab's label for it, for messages
FIELD_LABELS = {
    "raster": "Raster layer", "labels": "Label layer", "labels_layer": "Label layer", "field": "Class field",
    "classes": "Classes", "mode": "Labels", "area": "Labelled area", "area_layer": "Labelled area",
    "validation": "Validation", "validation_layer": "Validation layer", "validation_fraction": "Validation",
    "model": "Model", "epochs": "Epochs", "chip": "Chip size", "stride": "Stride", "batch_size": "Batch size",
    "lr": "Learning rate", "device": "Device", "out": "Output folder", "name": "Name", "resume": "Output folder",
    "patience": "Patience", "min_labelled": "Minimum labelled", "bands": "Bands", "resolution": "Resolution",
    "nodata": "Nodata", "percentiles": "Stretch", "host": "Host model",
}
FAMILY_NAMES = {"unetformer": "UNetFormer", "sam_head": "SAM head"}  # a bundle's builder family, for messages
# Validation choices in the order the Train tab and the Processing enum show them: (request value, label)
VALIDATION_CHOICES = (("blocks", "Spatial blocks (a checkerboard of held-out blocks)"),
                      ("east", "The east side of the raster"), ("west", "The west side of the raster"),
                      ("north", "The north side of the raster"), ("south", "The south side of the raster"),
                      ("layer", "A validation layer (its polygons are held out)"),
                      ("none", "None (no validation: the last epoch is kept)"))
MODE_CHOICES = (("area", "Labelled area: unlabelled pixels in it are background"),
                ("sparse", "Sparse: only pixels inside label polygons count"))


class TrainError(Exception):
    """Parameters that cannot make a training run. `field` names the parameter (a TrainLayersRequest field),
    `text` says what is wrong; str() is "<the Train tab's label>: <text>"."""

    def __init__(self, field_name: str, text: str):
        self.field, self.text = field_name, text
        label = FIELD_LABELS.get(field_name, "")
        super().__init__(f"{label}: {text}" if label else text)


# -- the class field's values -------------------------------------------------------------------------------
def is_null(value: Any) -> bool:
    return value is None or (hasattr(value, "isNull") and value.isNull())


def value_text(value: Any) -> str:
    """A field value as the request's class table keys it (the backend compares the text)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if hasattr(value, "toString"):
        return str(value.toString())
    return str(value)


def field_values(layer, field_name: str, limit: int = MAX_CLASSES) -> list[str]:
    """The distinct non-empty values of `field_name` as text, sorted (numerically when all are numbers).
    More than `limit` values: a TrainError (an id or a measurement, not a class field)."""
    index = layer.fields().indexOf(field_name) if layer is not None else -1
    if index < 0:
        raise TrainError("field", f"the label layer has no field “{field_name}”" if field_name
                         else "choose the field that holds each polygon's class")
    values = {value_text(v) for v in layer.uniqueValues(index, limit + 1) if not is_null(v)}
    values.discard("")
    if len(values) > limit:
        raise TrainError("field", f"“{field_name}” has more than {limit} different values: choose the field "
                                  "that holds each polygon's class")
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values, key=str.casefold)


def parse_class_table(text: str, values: list[str]) -> dict[str, Optional[str]]:
    """Processing's CLASS_TABLE: "value=name; value=name" (semicolons or new lines). Values it does not
    name keep their own text as the class name; "value=" (no name) leaves that value out. Empty: every
    value named by itself."""
    table: dict[str, Optional[str]] = {v: v for v in values}
    for part in re.split(r"[;\n]", text or ""):
        if not part.strip():
            continue
        if "=" not in part:
            raise TrainError("classes", f"“{part.strip()}” is not value=name (write e.g. “1=building; 2=road”, "
                                        "or “3=” to leave the value 3 out)")
        value, name = (s.strip() for s in part.split("=", 1))
        if value not in table:
            shown = ", ".join(values[:12]) + (", …" if len(values) > 12 else "")
            raise TrainError("classes", f"“{value}” is not a value of the class field (its values: {shown})")
        table[value] = name or None
    return table


def check_classes(classes: dict[str, Optional[str]]) -> dict[str, Optional[str]]:
    """Names stripped, at least one class named; a name is at most MAX_CLASS_CHARS long and has no comma or
    semicolon (the Segment tab's class list separates classes with them). Two values may share a name
    (they become one class)."""
    cleaned = {str(value): (name.strip() or None) if isinstance(name, str) else None
               for value, name in classes.items()}
    named = [n for n in cleaned.values() if n]
    if not named:
        raise TrainError("classes", "name at least one class (a value whose name is empty is left out)")
    for name in named:
        if "," in name or ";" in name:
            raise TrainError("classes", f"“{name}”: a class name cannot hold a comma or a semicolon")
        if len(name) > MAX_CLASS_CHARS:
            raise TrainError("classes", f"“{name[:40]}…” is longer than {MAX_CLASS_CHARS} characters")
    return cleaned


# -- the host model of a fusion family (RFM-Seg) ------------------------------------------------------------------
def family_name(family: str) -> str:
    """"unetformer" -> "UNetFormer": a builder family as the messages name it."""
    return FAMILY_NAMES.get(family, family)


def bundle_family(path: str) -> str:
    """The family of a bundle's builder ("unetformer" for "unetformer", "clip" for "clip:open-vocab"), from
    its manifest; "" when `path` is not a readable bundle."""
    folder = Path(path).expanduser()
    manifest = folder if folder.name == BUNDLE_FILE else folder / BUNDLE_FILE
    try:
        builder = json.loads(manifest.read_text(encoding="utf-8")).get("builder")
    except (OSError, ValueError, AttributeError):
        return ""
    return builder.split(":", 1)[0] if isinstance(builder, str) else ""


def host_rows(rows: list[dict], model: str) -> list[dict]:
    """The model-list rows of the user's trained models ("My models") that `model` can fuse into: bundles
    whose builder is of the family HOST_FAMILIES names for it; [] for a model that takes no host."""
    family = HOST_FAMILIES.get(model)
    if family is None:
        return []
    return [row for row in rows if row.get("bundle") and isinstance(row.get("id"), str)
            and bundle_family(row["id"]) == family]


def check_host(model: str, host: Optional[str]) -> Optional[str]:
    """The host folder for `model` (absolute, a model.json taken as its folder), or None for a model that takes
    none. TrainError("host", ...) when a host model has none, or one that is not a trained model of its family,
    and when a model that takes none is given one."""
    host = (host or "").strip()
    family = HOST_FAMILIES.get(model)
    if family is None:
        if host:
            raise TrainError("host", f"{model} trains on its own and takes no host model: leave it empty")
        return None
    wanted = family_name(family)
    if not host:
        raise TrainError("host", f"{model} fuses into a {wanted} model you trained before: choose that model")
    path = Path(host).expanduser().absolute()
    if not is_bundle(path):
        what = "does not exist" if not path.exists() else "is not a trained model folder (it has no model.json)"
        raise TrainError("host", f"“{path}” {what}: choose the folder of a {wanted} model you trained")
    folder = path.parent if path.name == BUNDLE_FILE else path
    found = bundle_family(str(folder))
    if found != family:
        raise TrainError("host", f"“{folder.name}” is a {family_name(found) or 'damaged'} model; {model} fuses "
                                 f"into a {wanted} model: choose one you trained")
    return str(folder)


# -- where the bundle goes ------------------------------------------------------------------------------------
def default_models_root(project: Optional[QgsProject] = None) -> Path:
    """The folder bundles go to by default: `models` in the run-folder default (beside the saved project)."""
    return default_root(project) / MODELS_FOLDER


def folder_name(name: str) -> str:
    """A model name as a folder name: letters, digits, spaces, dots, dashes and underscores."""
    cleaned = re.sub(r"[^\w\-. ]+", " ", name, flags=re.UNICODE)
    return " ".join(cleaned.split()).strip(" .")[:80] or "model"


def default_name(labels_name: str, now: Optional[float] = None) -> str:
    """"<label layer> <YYYY-MM-DD HHMM>"."""
    return f"{' '.join(labels_name.split())[:40] or 'model'} {time.strftime('%Y-%m-%d %H%M', time.localtime(now))}"


# -- polygon layers as files ----------------------------------------------------------------------------------
class WorkArea:
    """A hidden temporary folder beside the bundle folder, made on first use; `remove()` deletes it and any
    parent folders made for it that are still empty."""

    def __init__(self, parent: Path):
        self.parent = parent
        self.path: Optional[Path] = None
        self.created_parents: list[Path] = []

    def folder(self) -> Path:
        if self.path is None:
            missing = self.parent
            while not missing.exists() and missing.parent != missing:
                self.created_parents.append(missing)
                missing = missing.parent
            try:
                self.parent.mkdir(parents=True, exist_ok=True)
                self.path = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=self.parent))
            except OSError as exc:
                self.remove_parents()
                raise TrainError("out", f"cannot write in “{self.parent}”: {exc.strerror or exc}; choose another "
                                        "folder") from None
        return self.path

    def remove(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None

    def remove_parents(self) -> None:
        for folder in self.created_parents:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        self.created_parents = []


@dataclass
class VectorFile:
    path: str
    layer: Optional[str] = None  # a layer in a multi-layer file
    exported: bool = False  # written to the work area (a memory layer, a filter...)


def file_source(layer) -> Optional[VectorFile]:
    """The file behind an OGR layer the backend can read as it is, or None: a memory, database or web layer,
    a layer with a subset filter, unsaved edits or a geometry-type restriction."""
    if layer is None or layer.providerType() != "ogr" or layer.subsetString() or layer.isModified():
        return None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path") or ""
    extra = {k: v for k, v in parts.items() if k not in ("path", "layerName", "layerId") and not is_null(v) and v}
    if not path or extra or not Path(path).is_file():
        return None
    name = parts.get("layerName")
    name = None if is_null(name) or not name else str(name)
    if name is None and not is_null(parts.get("layerId")) and parts.get("layerId") not in ("", 0, "0"):
        return None  # a layer by its number in a multi-layer file: exported, named
    return VectorFile(path, name)


def export_layer(layer, work: WorkArea, stem: str, field_name: str) -> VectorFile:
    """Write `layer` to `<work>/<stem>.gpkg` (layer `stem`), its CRS and attributes kept."""
    target = work.folder() / f"{stem}.gpkg"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = stem
    options.fileEncoding = "UTF-8"
    context = QgsProject.instance().transformContext()
    outcome = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(target), context, options)
    error, message = outcome[0], outcome[1] if len(outcome) > 1 else ""
    if error != QgsVectorFileWriter.WriterError.NoError:
        raise TrainError(field_name, f"could not write “{layer.name()}” to a temporary GeoPackage: "
                                     f"{message or error}")
    return VectorFile(str(target), stem, exported=True)


def vector_file(layer, work: WorkArea, stem: str, field_name: str, single: bool = False) -> VectorFile:
    """The layer's own file when the backend can read it, else a temporary GeoPackage. `single`: the request
    has no field for a layer name, so a layer of a multi-layer file is exported too."""
    found = file_source(layer)
    if found is not None and single and found.layer is not None and len(layer.dataProvider().subLayers()) > 1:
        found = None
    return found or export_layer(layer, work, stem, field_name)


# -- the run -----------------------------------------------------------------------------------------------------
@dataclass
class TrainJob:
    """A checked request and what was made for it; `finish(outcome)` tidies up once the run has ended."""

    request: TrainLayersRequest
    work: WorkArea
    existed: bool  # the bundle folder was there before (an empty one, or a run being resumed)
    exported: list[str] = field(default_factory=list)  # the names of the layers written to the work area

    def finish(self, outcome: str) -> bool:
        """`outcome`: "done", "cancelled" or "failed". The temporary GeoPackages always go. A run that ends
        without a model keeps its last finished epoch (the backend's checkpoint) for Resume; one that finished
        no epoch leaves no files (the backend removes its own; anything else it made is removed here, and a
        resumed run's folder is left as it was). Returns whether a checkpoint was kept."""
        self.work.remove()
        out = Path(self.request.out)
        if outcome == "done":
            return False
        if run_folder_state(out) == UNFINISHED:
            return True
        if self.request.resume:
            return False
        if self.existed:
            for child in list(out.iterdir()) if out.is_dir() else []:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
            self.work.remove_parents()
        return False


@dataclass
class TrainParameters:
    """What the Train tab and the Processing algorithm describe: QGIS layers and the options."""

    raster: Any  # a raster layer of a local file
    labels: Any  # a polygon layer
    field: str  # its class field
    out: str  # the bundle folder
    classes: Optional[dict[str, Optional[str]]] = None  # value (as text) -> class name, None: left out
    name: str = ""  # shown under "My models" (default: the folder's name)
    model: str = DEFAULT_TRAINABLE
    mode: str = "area"
    area: Any = None  # mode "area": the labelled-area polygons (None: the whole raster)
    validation: str = "blocks"
    validation_layer: Any = None
    epochs: int = 20
    chip: int = 256
    stride: Optional[int] = None
    batch_size: int = 8
    lr: Optional[float] = None
    device: str = "auto"
    host: Optional[str] = None  # for a model of HOST_MODELS: the folder of the trained model it fuses into
    resume: bool = False

    def check(self) -> tuple[str, dict[str, Optional[str]], Path]:
        """What needs no file written: the raster's file, the class table and the bundle folder (and the host
        model's folder)."""
        if self.raster is None:
            raise TrainError("raster", "choose the raster layer to train on")
        try:
            raster = local_raster(self.raster)
        except JobError as exc:
            raise TrainError("raster", str(exc)) from None
        if self.labels is None:
            raise TrainError("labels", "choose the polygon layer with your labels")
        if self.labels.featureCount() == 0:
            raise TrainError("labels", f"“{self.labels.name()}” has no polygons")
        if not self.field:
            raise TrainError("field", "choose the field that holds each polygon's class")
        values = field_values(self.labels, self.field)
        if not values:
            raise TrainError("field", f"“{self.field}” is empty in every polygon: choose the class field")
        classes = check_classes({v: v for v in values} if self.classes is None else self.classes)
        if self.mode not in dict(MODE_CHOICES):
            raise TrainError("mode", f"must be one of {', '.join(dict(MODE_CHOICES))}, got {self.mode!r}")
        if self.mode == "sparse" and self.area is not None:
            raise TrainError("area", "a labelled-area layer goes with “Labelled area”; with sparse labels only the "
                                     "pixels inside label polygons count")
        if self.validation not in dict(VALIDATION_CHOICES):
            raise TrainError("validation", f"must be one of {', '.join(dict(VALIDATION_CHOICES))}, "
                                           f"got {self.validation!r}")
        if self.validation == "layer" and self.validation_layer is None:
            raise TrainError("validation_layer", "choose the polygon layer whose areas are held out for validation")
        if not self.model:
            raise TrainError("model", f"choose a model to train ({', '.join(TRAINABLE_MODELS)})")
        self.host_folder()
        return raster, classes, self._out()

    def host_folder(self) -> Optional[str]:
        """The checked host folder (check_host); a resumed run keeps the host it started with, so its host is
        passed on unchecked."""
        if self.resume:
            host = (self.host or "").strip()
            return host if host and self.model in HOST_FAMILIES else None
        return check_host(self.model, self.host)

    def _out(self) -> Path:
        if not str(self.out).strip():
            raise TrainError("out", "choose the folder the trained model is saved in")
        out = Path(self.out).expanduser().absolute()
        state = run_folder_state(out)
        if self.resume and state != UNFINISHED:
            raise TrainError("resume", f"“{out}” holds no unfinished training run to resume")
        if not self.resume and state == UNFINISHED:
            raise TrainError("out", f"“{out}” holds an unfinished training run: resume it, or choose another name")
        if not self.resume and state == BUNDLE:
            raise TrainError("out", f"“{out}” already holds a trained model: choose another name")
        if not self.resume and state == OTHER:
            raise TrainError("out", f"“{out}” is not an empty folder: choose another name")
        return out

    def to_request(self) -> TrainJob:
        """Check, write the layers the backend cannot read as they are, and build the request. Raises
        TrainError (naming the field); leaves nothing behind when it does."""
        raster, classes, out = self.check()
        work = WorkArea(out.parent)
        exported = []
        try:
            labels = vector_file(self.labels, work, "labels", "labels")
            area = vector_file(self.area, work, "area", "area") if self.mode == "area" and self.area else None
            validation = vector_file(self.validation_layer, work, "validation", "validation_layer", single=True) \
                if self.validation == "layer" else None
            exported = [layer.name() for layer, found in ((self.labels, labels), (self.area, area),
                                                          (self.validation_layer, validation))
                        if found is not None and found.exported]
            request = TrainLayersRequest(
                raster=raster, labels=labels.path, labels_layer=labels.layer, field=self.field, out=str(out),
                model=self.model, classes=classes, mode=self.mode, area=area.path if area else None,
                area_layer=area.layer if area else None, validation=self.validation,
                validation_layer=validation.path if validation else None,
                name=self.name.strip() or None, epochs=int(self.epochs), chip=int(self.chip),
                stride=int(self.stride) if self.stride else None, batch_size=int(self.batch_size),
                lr=float(self.lr) if self.lr else None, device=self.device or "auto", host=self.host_folder(),
                resume=self.resume).validate()
        except RequestError as exc:
            work.remove()
            work.remove_parents()
            raise TrainError(exc.field or "", str(exc)) from None
        except BaseException:
            work.remove()
            work.remove_parents()
            raise
        return TrainJob(request, work, existed=out.exists(), exported=exported)


# -- progress and the result ------------------------------------------------------------------------------------
def train_percent(stage: str, done: int, total: int, detail: Optional[dict] = None) -> Optional[float]:
    """A progress record as a percentage: "prepare" 0–5 %, "train" 5–100 % by epochs (within an epoch by its
    steps); None for a stage it does not know."""
    if stage == "prepare":
        return 5.0 * (done / total if total else 0.0)
    if stage == "train":
        detail = detail or {}
        fraction = done / total if total else 0.0
        step, steps = detail.get("step"), detail.get("steps")  # optimizer steps of the whole run
        if isinstance(step, int) and isinstance(steps, int) and 0 < step <= steps:
            fraction = max(fraction, step / steps)
        return 5.0 + 95.0 * min(1.0, fraction)
    return None


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def epoch_text(done: int, total: int, detail: Optional[dict]) -> str:
    """"epoch 3/20, step 40/120: loss 0.412, validation mIoU 0.581 (best 0.601, epoch 2)"."""
    detail = detail or {}
    epoch = detail.get("epoch", done)
    text = f"epoch {epoch}/{total}"
    step, steps = detail.get("step"), detail.get("steps")
    if isinstance(step, int) and isinstance(steps, int) and 0 < step <= steps:
        text += f", step {step}/{steps}"
    parts = []
    if isinstance(detail.get("loss"), (int, float)):
        parts.append(f"loss {detail['loss']:.4f}")
    if isinstance(detail.get("val_miou"), (int, float)):
        parts.append(f"validation mIoU {detail['val_miou']:.3f}")
    best = detail.get("best_miou")
    if isinstance(best, (int, float)) and detail.get("best_epoch"):
        parts.append(f"(best {best:.3f}, epoch {detail['best_epoch']})")
    return text + (": " + ", ".join(parts).replace(", (", " (") if parts else "")


def read_result(record: dict) -> TrainLayersResult:
    """The worker's result record as a TrainLayersResult (missing numbers as 0, missing lists empty)."""
    defaults: dict[str, Any] = {"model": "", "name": "", "classes": [], "epochs": 0, "best_epoch": 0,
                                "stopped": "epochs", "seconds": 0.0, "train_chips": 0, "val_chips": 0,
                                "metrics": {}, "notes": []}
    values = {f.name: record.get(f.name, defaults[f.name]) for f in fields(TrainLayersResult)}
    if not values["model"] and record.get("bundle"):
        values["model"] = str(record["bundle"])
    if not values["model"]:
        raise ValueError("the backend's training result names no model")
    values["name"] = values["name"] or Path(values["model"]).name
    values["metrics"] = values["metrics"] if isinstance(values["metrics"], dict) else {}
    values["classes"] = [str(c) for c in values["classes"] or []]
    values["notes"] = [str(n) for n in values["notes"] or []]
    return TrainLayersResult(**values)


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def duration(seconds: float) -> str:
    seconds = float(seconds or 0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def result_lines(result: TrainLayersResult) -> list[str]:
    """The finished run in a few lines: the validation score, per-class IoU, epochs and time, chips, notes."""
    metrics = result.metrics or {}
    miou = metrics.get("miou")
    lines = [f"“{result.name}”: validation mIoU {_score(miou)}" if miou is not None
             else f"“{result.name}”: no validation score (no validation chips)"]
    for name, value in (metrics.get("iou") or {}).items():
        lines.append(f"  {name}: IoU {_score(value)}")
    stop = "stopped early (no better validation mIoU)" if result.stopped == "early" else "all epochs run"
    best = f", weights of epoch {result.best_epoch}" if result.best_epoch else ""
    lines.append(f"{plural(result.epochs, 'epoch')} in {duration(result.seconds)}, {stop}{best}")
    lines.append(f"{result.train_chips:,} training chips, {result.val_chips:,} validation chips")
    lines.extend(result.notes)
    lines.append(f"Model folder: {result.model}")
    return lines
