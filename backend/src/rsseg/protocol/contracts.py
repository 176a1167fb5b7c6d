"""Plain, JSON-serialisable records exchanged by the CLI, the service and the QGIS plugin.

They carry no torch or rasterio objects, so the plugin can build them without importing the
backend's heavy dependencies and the worker can send them over a pipe as JSON.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

# Class-id raster conventions, shared by the writer, the vectoriser and the plugin's styles.
UNLABELLED = 0  # below the score threshold, or background of a referring mask
NODATA = 255  # no valid input pixel, or outside the requested region
MAX_CLASSES = 254

# --- one vocabulary: the words the CLI, the worker, the dock and Processing share ----------------------

MODES = ("classes", "sentence")  # prompt modes: a class list, or a referring sentence
# a model's `task` (the `models` record); "component": not run itself; "trainable": a family a user trains on
# their own layers (rsseg train layers), whose bundles then run with task "classes"
TASKS = (*MODES, "both", "component", "trainable")
NOT_RUN = ("component", "trainable")
# per prompt mode: models that run with public weights alone (no training)
DEFAULT_MODELS = {"classes": "clip-vit-b-16", "sentence": "zs-ref-clip-b16-sam-b"}
EXAMPLE_PROMPTS = {"classes": "building, road, tree, water",
                   "sentence": "the large white building next to the parking lot"}
REGIONS = ("layer", "extent", "polygons")  # the whole raster, a bbox (a map view, an extent), polygons
DEVICES = ("auto", "cpu", "cuda", "mps")  # what a device list offers; "cuda:N" picks one GPU
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
OUTPUTS = {"mask": "mask.tif", "scores": "scores.tif", "polygons": "polygons.gpkg", "result": "result.json"}
POLYGON_LAYER = "polygons"  # the layer of polygons.gpkg
MIN_TILE = 16  # pixels
# Prompt caps: a class line and a sentence name layers, legend entries and the layer group, and the
# text encoders read at most a few dozen words (a longer sentence is shortened, and a result note says so).
MAX_CLASS_CHARS = 100  # one class line, its synonyms included
MAX_SENTENCE_CHARS = 1000  # one referring sentence (white space collapsed)

# What a `models` row's `state` says about a model (rsseg.models.catalog, docs/weights.md), for a model
# picker: "ready" to run; weights missing that "download" fetches, or that must be imported ("import");
# "needs checkpoint" (a referring model that runs only with a trained checkpoint); "component" (used by
# other models, never chosen for a job itself).
MODEL_STATES = ("ready", "download", "import", "needs checkpoint", "component", "trainable")
STATE_FIXES = {"download": "download", "import": "import", "needs checkpoint": "checkpoint"}  # state -> FIXES

# --- fixes: what the user can do about an error, as data each front end words its own way -------------
# An error (rsseg.errors.RssegError, the worker's error record, client.JobFailed) carries `fixes`, names
# from FIXES, and a `subject` (usually a model id, `{model}` here). Its message never holds a command: the
# CLI appends the "cli" wording (commands), the QGIS plugin the "gui" wording (the RS RefSeg dock's
# buttons: Download, Import weights…, Choose checkpoint…, Set up backend…). See with_fixes.
FRONT_ENDS = ("cli", "gui")
FIXES: dict[str, dict[str, str]] = {
    "download": {"cli": "run `rsseg models download {model}`",
                 "gui": "press Download in the RS RefSeg dock to fetch the weights of {model}"},
    "import": {"cli": "run `rsseg models import {model} FILE`",
               "gui": "press Import weights… in the RS RefSeg dock and choose the weight file of {model}"},
    "checkpoint": {"cli": "give the checkpoint of an `rsseg train` run (--checkpoint RUN/checkpoints/step-N.json)",
                   "gui": "press Choose checkpoint… in the RS RefSeg dock and pick the step-N.json of a "
                          "training run"},
    "model": {"cli": "run it with --model {model}", "gui": "choose the model {model} in the RS RefSeg dock"},
    "models": {"cli": "see `rsseg models`", "gui": "choose a model from the RS RefSeg dock's model list"},
    "bands": {"cli": "choose the bands with --bands (e.g. --bands 1 to replicate one band)",
              "gui": "choose the bands under “Bands, resolution and nodata” in the RS RefSeg dock (Bands in the "
                     "Processing dialog)"},
    "setup": {"cli": "install the backend in that environment (`pip install rsseg`)",
              "gui": "press Set up backend… in the RS RefSeg dock"},
}
_NO_SUBJECT = {"cli": "ID", "gui": "the model"}  # `{model}` of an error that names none


def fix_text(fixes: Sequence[str], subject: str = "", front_end: str = "cli") -> str:
    """The fixes in `front_end`'s words, the first one first and the others as " (or ...)", without repeating
    the first one's verb ("run `a` (or `b`)"); "" for none. Names this version does not know (from a newer
    backend) are left out rather than shown raw."""
    if front_end not in FRONT_ENDS:
        raise ValueError(f"front end must be one of {', '.join(FRONT_ENDS)}, got {front_end!r}")
    words = [FIXES[f][front_end].format(model=subject or _NO_SUBJECT[front_end]) for f in fixes if f in FIXES]
    if not words:
        return ""
    verb = words[0].split(" ", 1)[0] + " "
    return words[0] + "".join(f" (or {w.removeprefix(verb)})" for w in words[1:])


def with_fixes(message: str, fixes: Sequence[str], subject: str = "", front_end: str = "cli") -> str:
    """What a front end shows for an error: "MESSAGE: FIX (or FIX)", or the message alone. The fixes
    follow the message's first line (a log tail may follow it)."""
    fix = fix_text(fixes, subject, front_end)
    first, newline, rest = message.partition("\n")
    return f"{first}: {fix}{newline}{rest}" if fix else message


def task_accepts(task: str, mode: str) -> bool:
    """Whether a model of `task` (ModelSpec.task, a `models` row's "task") takes prompts of `mode`."""
    return task in (mode, "both")


class RequestError(ValueError):
    """A request that breaks a rule of SegmentRequest.validate(); the message says which and what it takes.

    `field` names what is wrong: a SegmentRequest field, "prompt" (none, two, or an empty one) or
    "region". The backend turns it into its own error for that field (rsseg.errors.request_error).
    """

    field = ""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field or self.field


class ClassListError(RequestError, argparse.ArgumentTypeError):
    """A class list that cannot give distinct classes (an empty or a repeated name).

    Also an ArgumentTypeError, so that `--classes` (argparse `type=parse_class_list`) prints this
    message rather than argparse's generic "invalid parse_class_list value".
    """

    field = "classes"


def check_device(name: str) -> str:
    """`name` as torch spells it ("CUDA:1 " gives "cuda:1"); RequestError unless auto, cpu, cuda, cuda:N or mps."""
    wanted = str(name).strip().lower()
    if wanted in DEVICES or re.fullmatch(r"cuda:[0-9]+", wanted):
        return wanted
    raise RequestError(f"unknown device {name!r}; valid choices: {DEVICE_CHOICES}", "device")


def check_tiling(tile: int, overlap: int) -> None:
    """Tiles of at least MIN_TILE pixels, overlapping by 0 to half a tile."""
    if tile < MIN_TILE:
        raise RequestError(f"tile size must be at least {MIN_TILE} pixels, got {tile}", "tile")
    if not 0 <= overlap <= tile // 2:
        raise RequestError(f"overlap must be between 0 and half the tile size ({tile // 2}), got {overlap}", "overlap")


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_percentiles(percentiles: Sequence[float]) -> None:
    """The stretch percentiles of a segmentation or a training run: 0 <= low < high <= 100."""
    low, high = percentiles
    if not 0.0 <= low < high <= 100.0:
        raise RequestError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}",
                           "percentiles")


MAX_TOP_K = 100  # objects one sentence may return


def check_top_k(top_k: int, sentence: bool) -> None:
    """How many objects a sentence returns: 1 to MAX_TOP_K, and only for a sentence (a class list keeps
    every object of every class)."""
    if not sentence:
        raise RequestError("top-k applies to a referring sentence, not to a class list (which keeps every object "
                           "of every class)", "top_k")
    if not 1 <= top_k <= MAX_TOP_K:
        raise RequestError(f"top-k must be between 1 and {MAX_TOP_K} objects, got {top_k}", "top_k")


def check_bbox(bbox: Sequence[float]) -> None:
    """Four finite numbers minx < maxx, miny < maxy (in any CRS; whether it meets the raster is the engine's)."""
    values = tuple(bbox)
    shown = "(" + ", ".join(f"{v:.10g}" if isinstance(v, (int, float)) else repr(v) for v in values) + ")"
    if len(values) != 4 or not all(is_finite(v) for v in values):
        raise RequestError(f"bbox {shown} is empty or invalid (expected four finite numbers)", "region")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise RequestError(f"bbox {shown} is empty or invalid (expected minx < maxx and miny < maxy)", "region")


def class_names(line: str) -> list[str]:
    """The names of one class line, its synonyms ("road, parking lot" -> ["road", "parking lot"]; [] when it
    names none): the one split of the request checks here and of the models' text side (models/prompts.py)."""
    return [n.strip() for n in line.split(",") if n.strip()]


def _key(name: str) -> str:
    """Names that the user means as the same: case and runs of white space do not count."""
    return " ".join(name.split()).casefold()


def check_class_names(classes: Sequence[str]) -> list[str]:
    """Refuse a class with no name, and a name given to two classes.

    A class scores as its best synonym, and ties go to the first class: a class repeating another
    ("water, WATER") or made of another's synonyms would always get 0 px, a result that misleads.
    The one check behind parse_class_list (CLI, dock, Processing) and SegmentRequest.from_dict (worker).
    A class line longer than MAX_CLASS_CHARS is refused too: it would become a layer name that long.
    """
    owner: dict[str, int] = {}
    for index, line in enumerate(classes):
        if not class_names(line):
            raise ClassListError(f"classes[{index}] ({line!r}) names no class; give a non-empty name")
        if len(line.strip()) > MAX_CLASS_CHARS:
            raise ClassListError(f"classes[{index}] ({line.strip()[:40]!r}...) is {len(line.strip())} characters "
                                 f"long; a class, its synonyms included, may have at most {MAX_CLASS_CHARS}")
        for name in class_names(line):
            first = owner.setdefault(_key(name), index)
            if first == index:
                continue
            if [_key(n) for n in class_names(classes[first])] == [_key(n) for n in class_names(line)]:
                raise ClassListError(f"duplicate class names: {classes[first]!r} and {line!r} "
                                     "(case and spacing ignored); give each class once")
            raise ClassListError(f"duplicate class names: {name!r} is a name of both {classes[first]!r} and "
                                 f"{line!r} (case and spacing ignored); give each name to one class only")
    return list(classes)


def check_prompt(classes: Optional[Sequence[str]], sentence: Optional[str]) -> None:
    """Exactly one prompt, a class list (of distinct names, check_class_names) or a sentence, not empty."""
    if (classes is None) == (sentence is None):
        raise RequestError("give either a class list or a referring sentence, not both and not neither", "prompt")
    if classes is not None:
        check_class_names(classes)
        if not classes:
            raise RequestError(f'the prompt is empty: type at least one class in the class list, e.g. '
                               f'"{EXAMPLE_PROMPTS["classes"]}"', "prompt")
    elif not sentence.strip():
        raise RequestError(f'the prompt is empty: type a sentence, e.g. "{EXAMPLE_PROMPTS["sentence"]}"', "prompt")
    elif len(" ".join(sentence.split())) > MAX_SENTENCE_CHARS:
        raise RequestError(f"the sentence is {len(' '.join(sentence.split()))} characters long; a referring "
                           f"sentence may have at most {MAX_SENTENCE_CHARS} (the text encoders read only its first "
                           "few dozen words)", "sentence")


def parse_class_list(text: str) -> list[str]:
    """"a, b, c": three classes; with semicolons (or new lines), "road, parking lot; tree": classes
    whose commas give synonyms. The one parser of the CLI, the QGIS dock and the Processing algorithms.

    Raises ClassListError (a ValueError) for a name given twice; an empty text gives [].
    """
    separator = ";" if ";" in text or "\n" in text.strip() else ","
    items = (c.strip().strip(",").strip() for c in text.replace("\n", separator).split(separator))
    return check_class_names([c for c in items if c])


# --- request validation: one converter driven by the dataclass field types --------------------------

def describe_value(value: Any) -> str:
    """A received value described in JSON's words (the request usually arrives as JSON)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return repr(value) if isinstance(value, (int, float)) else f"a {type(value).__name__}"


def _expected(tp: Any) -> str:
    """What a field of type `tp` takes, in words: "a list of 4 numbers", "an integer or null"."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union:
        return " or ".join([_expected(a) for a in args if a is not type(None)] + ["null"])
    if origin is tuple and args[-1] is not Ellipsis:
        return f"a list of {len(args)} {_expected(args[0]).split(' ', 1)[1]}s"
    if origin in (tuple, list):
        return f"a list of {_expected(args[0]).split(' ', 1)[1]}s"
    if is_dataclass(tp):
        return f"an object with {', '.join(f.name for f in fields(tp))} (or null)"
    return {int: "an integer", float: "a finite number", str: "a string", bool: "true or false",
            dict: "an object"}.get(origin or tp, str(tp))


# What a JSON value must be for each (origin) type of the dataclass fields; bool is an int in Python.
_ACCEPTS = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
            float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool),
            tuple: lambda v: isinstance(v, (list, tuple)), list: lambda v: isinstance(v, (list, tuple)),
            dict: lambda v: isinstance(v, dict)}


def _convert(value: Any, tp: Any, name: str, expected: str = "") -> Any:
    """`value` as type `tp`, or ValueError naming the field: ints are not bools, floats are finite."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _convert(value, inner, name, _expected(tp))
    if is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be {_expected(tp)}, got {describe_value(value)}")
        return from_fields(tp, value, f"{name}.")
    fixed = origin is tuple and args[-1] is not Ellipsis  # tuple[float, float]: exactly two
    if not _ACCEPTS[origin or tp](value) or (fixed and len(value) != len(args)):
        raise ValueError(f"{name} must be {expected or _expected(tp)}, got {describe_value(value)}")
    if tp is float:
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        return float(value)
    if origin is tuple:
        return tuple(_convert(v, args[i if fixed else 0], f"{name}[{i}]") for i, v in enumerate(value))
    if origin is list:
        return [_convert(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _missing(cls: type, data: dict[str, Any], prefix: str = "") -> list[str]:
    """The required fields of dataclass `cls` (no default) that `data` lacks."""
    return [prefix + f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
            and f.name not in data]


def from_fields(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a JSON object; unknown, missing or mistyped fields raise ValueError."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(repr(prefix + u) for u in unknown)}; known: "
                         f"{', '.join(sorted(names))}")
    missing = _missing(cls, data, prefix)
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(missing)}")
    hints = _hints(cls)
    return cls(**{key: _convert(value, hints[key], prefix + key) for key, value in data.items()})


@dataclass(frozen=True)
class RegionSpec:
    """Where to segment: the whole raster (default), a bounding box, or polygons (outside masked)."""

    bbox: Optional[tuple[float, float, float, float]] = None
    bbox_crs: Optional[str] = None  # any CRS string rasterio understands; default: the raster's
    polygons: Optional[list[dict[str, Any]]] = None  # GeoJSON geometry dicts
    polygons_crs: Optional[str] = None

    @property
    def is_whole(self) -> bool:
        return self.bbox is None and not self.polygons


@dataclass(frozen=True)
class SegmentRequest:
    """One segmentation job: what to read, which prompt and model, how to tile, where to write."""

    raster: str
    out_dir: str
    model: str = "test"
    classes: Optional[list[str]] = None
    sentence: Optional[str] = None
    bands: Optional[tuple[int, ...]] = None  # 1-based source bands mapped to the model's inputs
    region: RegionSpec = field(default_factory=RegionSpec)
    tile: int = 512
    overlap: int = 64
    batch_size: int = 0  # tiles per model call; 0: chosen from free GPU memory (4 on CPU)
    device: str = "auto"
    resolution: Optional[float] = None  # processing grid in metres per pixel; None: the raster's own grid
    percentiles: tuple[float, float] = (2.0, 98.0)
    value_range: Optional[tuple[float, float]] = None  # fixed stretch instead of percentiles
    nodata: Optional[float] = None  # a source value that is nodata in every band read, instead of the file's own
    threshold: Optional[float] = None  # score under which a pixel is "unlabelled"
    # Logit refinement of the open-vocabulary models (None: the model's default; docs/refinement.md)
    upsample: Optional[str] = None  # "bilinear", "guided" or "jbu"
    sam_refine: Optional[str] = None  # "off", "peaks" or "vote" (needs the model's SAM weights)
    checkpoint: Optional[str] = None  # a trained RSRefSeg: the JSON of an `rsseg train` checkpoint
    # A sentence with a model that finds objects (zero-shot referring, SAM 3): the best `top_k` of them,
    # each its own polygon with its score and rank (None: the model's default, one for referring)
    top_k: Optional[int] = None
    write_scores: bool = False
    vectorise: bool = True
    simplify_tolerance: float = 0.0  # map units
    min_area_m2: float = 0.0

    @property
    def prompt(self) -> str:
        if self.sentence is not None:
            return self.sentence
        classes = self.classes or []
        return ("; " if any("," in c for c in classes) else ", ").join(classes)  # parse_class_list reads it back

    @property
    def model_options(self) -> dict[str, Any]:
        """The per-request overrides of the model's config that were set."""
        chosen = (("upsample", self.upsample), ("sam_refine", self.sam_refine), ("checkpoint", self.checkpoint),
                  ("top_k", self.top_k))
        return {k: v for k, v in chosen if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_prompt(cls, mode: str, prompt: Union[str, Sequence[str]], **fields: Any) -> "SegmentRequest":
        """The request for what a user typed: a class list ("water, tree", or already a list) in mode
        "classes", one sentence (whitespace collapsed) in mode "sentence"; `fields` are the others."""
        if mode not in MODES:
            raise RequestError(f"prompt mode must be one of {', '.join(MODES)}, got {mode!r}", "mode")
        if mode == "classes":
            return cls(classes=parse_class_list(prompt) if isinstance(prompt, str) else list(prompt), **fields)
        return cls(sentence=" ".join(str(prompt).split()), **fields)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentRequest":
        """Inverse of to_dict, and the worker's check of what a client sent: an unknown, missing or
        mistyped field, a NaN or infinite number, or a repeated class name raises ValueError naming
        the field and what it takes (the worker answers it with a ProtocolError record)."""
        if not isinstance(data, dict):
            raise ValueError(f"a segment request must be an object, got {describe_value(data)}")
        request = from_fields(cls, data)
        if request.classes is not None:
            check_class_names(request.classes)
        return request

    def validate(self, prompt: bool = True) -> "SegmentRequest":
        """The rules every entry point checks before a job runs (the dock and Processing through
        JobParameters, the CLI, the worker and the engine); returns the request, or raises RequestError
        with the one message of the first rule broken. What needs the raster (a bbox inside it, bands,
        a resolution needing a CRS) is the engine's. `prompt=False` leaves out check_prompt: the
        engine's check, whose model already holds the prompt."""
        if prompt:
            check_prompt(self.classes, self.sentence)
        check_tiling(self.tile, self.overlap)
        if self.batch_size < 0:
            raise RequestError(f"batch size must be at least 1 (or 0 for automatic), got {self.batch_size}",
                               "batch_size")
        numbers = {"threshold": "threshold", "simplify_tolerance": "simplify tolerance", "min_area_m2": "minimum area",
                   "percentiles": "percentiles", "value_range": "value range", "nodata": "nodata value"}
        for name, label in numbers.items():  # (the bbox and the resolution have their own messages)
            value = getattr(self, name)
            several = isinstance(value, (tuple, list))
            values = value if several else () if value is None else (value,)
            if not all(is_finite(v) for v in values):
                raise RequestError(f"{label} must be {'finite numbers' if several else 'a finite number'}, got "
                                   f"{', '.join(map(str, values)) if several else value}", name)
        if self.top_k is not None:
            check_top_k(self.top_k, self.sentence is not None or not prompt)
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise RequestError(f"threshold must be a score between 0 and 1, got {self.threshold}", "threshold")
        if self.simplify_tolerance < 0 or self.min_area_m2 < 0:
            raise RequestError(f"simplify tolerance and minimum area must not be negative, got "
                               f"{self.simplify_tolerance} and {self.min_area_m2}", "simplify_tolerance")
        self._check_stretch()
        if self.resolution is not None and not (is_finite(self.resolution) and self.resolution > 0):
            raise RequestError(f"processing resolution must be a positive number of metres per pixel, "
                               f"got {self.resolution}", "resolution")
        if self.region.bbox is not None:
            check_bbox(self.region.bbox)
        check_device(self.device)
        return self

    def _check_stretch(self) -> None:
        check_percentiles(self.percentiles)
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise RequestError(f"value range must be two finite numbers low < high, got {self.value_range[0]}, "
                               f"{self.value_range[1]}", "value_range")


@dataclass
class ClassSummary:
    id: int
    name: str
    colour: str  # "#rrggbb"
    pixels: int = 0
    area_m2: Optional[float] = None  # None only if the CRS has no known linear unit
    polygons: int = 0
    mean_score: Optional[float] = None


@dataclass
class SegmentResult:
    """What a finished job produced; written as result.json beside the outputs."""

    request: dict[str, Any]
    prompt: str  # the class list joined by ", " or the sentence: layer group name, polygon attribute
    mask: str
    scores: Optional[str]
    polygons: Optional[str]
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int
    classes: list[ClassSummary]
    tiles: int
    device: str
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    bands: list[int] = field(default_factory=list)  # source bands fed to the model, in order
    stretch: dict[str, Any] = field(default_factory=dict)  # per-band low/high of the stretch
    nodata_pixels: int = 0
    run: dict[str, Any] = field(default_factory=dict)  # how it ran: precision, batch size, OOM halvings, cache

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "SegmentResult":
        """The record as the worker sends it (or result.json holds it); ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"a result record is an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        missing = sorted(_missing(cls, data))
        if missing:
            raise ValueError(f"the result record lacks {', '.join(missing)}")
        classes = data["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, dict) for c in classes):
            raise ValueError("the result record's classes must be a list of objects")
        try:
            summaries = [ClassSummary(**c) for c in classes]
        except TypeError as exc:
            raise ValueError(f"a class of the result record does not fit: {exc}") from None
        known = {k: v for k, v in data.items() if k in names}  # newer backends may add fields
        return cls(**{**known, "classes": summaries, "transform": tuple(data["transform"])})
