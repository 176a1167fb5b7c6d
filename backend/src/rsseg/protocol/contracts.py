"""Plain, JSON-serialisable records exchanged by the CLI, the service and the QGIS plugin.

They carry no torch or rasterio objects, so the plugin can build them without importing the
backend's heavy dependencies and the worker can send them over a pipe as JSON.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional

# Class-id raster conventions, shared by the writer, the vectoriser and the plugin's styles.
UNLABELLED = 0  # below the score threshold, or background of a referring mask
NODATA = 255  # no valid input pixel, or outside the requested region
MAX_CLASSES = 254


def parse_class_list(text: str) -> list[str]:
    """"a, b, c": three classes; with semicolons (or new lines), "road, parking lot; tree": classes
    whose commas give synonyms. The one parser of the CLI, the QGIS dock and the Processing algorithms."""
    separator = ";" if ";" in text or "\n" in text.strip() else ","
    items = (c.strip().strip(",").strip() for c in text.replace("\n", separator).split(separator))
    return [c for c in items if c]


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
    threshold: Optional[float] = None  # score under which a pixel is "unlabelled"
    # Logit refinement of the open-vocabulary models (None: the model's default; docs/refinement.md)
    upsample: Optional[str] = None  # "bilinear", "guided" or "jbu"
    sam_refine: Optional[str] = None  # "off", "peaks" or "vote" (needs the model's SAM weights)
    checkpoint: Optional[str] = None  # a trained RSRefSeg: the JSON of an `rsseg train` checkpoint
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
        chosen = (("upsample", self.upsample), ("sam_refine", self.sam_refine), ("checkpoint", self.checkpoint))
        return {k: v for k, v in chosen if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentRequest":
        """Inverse of to_dict; unknown or missing fields raise ValueError naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(names))}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in data]
        if missing:
            raise ValueError(f"missing required field(s) {', '.join(missing)}")
        data = dict(data)
        region = dict(data.get("region") or {})
        if region.get("bbox") is not None:
            region["bbox"] = tuple(region["bbox"])
        data["region"] = RegionSpec(**region)
        for key in ("bands", "percentiles", "value_range"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


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
