"""What every entry point (dock, right-click, Processing) hands the backend: JobParameters.

The UI and the Processing algorithms only fill this dataclass; `to_request` turns it into the
protocol's SegmentRequest, checking what can be checked before a worker starts, so a bad input is
one clear message instead of a backend round trip.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..protocol.contracts import RegionSpec, SegmentRequest, parse_class_list

MODES = ("classes", "sentence")
REGIONS = ("layer", "extent", "polygons")


class JobError(Exception):
    """Parameters that cannot make a job; the message says which and what was expected."""


@dataclass
class JobParameters:
    raster: str  # the raster layer's file
    mode: str  # "classes" or "sentence"
    prompt: str  # "building, road, tree" or "the large white building"
    model: str
    device: str = "auto"
    region: str = "layer"  # the whole layer, a bbox ("extent"), or polygons
    bbox: Optional[tuple[float, float, float, float]] = None
    bbox_crs: Optional[str] = None
    polygons: list[dict[str, Any]] = field(default_factory=list)  # GeoJSON geometries
    polygons_crs: Optional[str] = None
    tile: int = 512
    overlap: int = 64
    out_dir: str = ""  # empty: a new temporary folder
    checkpoint: Optional[str] = None  # trained referring models

    def to_request(self) -> SegmentRequest:
        if not self.raster or not Path(self.raster).is_file():
            raise JobError(f"the raster layer's file {self.raster!r} is not a local file (the backend reads files; "
                           "save or export the layer as a GeoTIFF first)")
        if self.mode not in MODES:
            raise JobError(f"prompt mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.model:
            raise JobError("choose a model")
        classes = sentence = None
        if self.mode == "classes":
            try:
                classes = parse_class_list(self.prompt)
            except ValueError as exc:  # e.g. the same class twice
                raise JobError(str(exc)) from None
            if not classes:
                raise JobError('type at least one class, e.g. "building, road, tree, water"')
        else:
            sentence = " ".join(self.prompt.split())
            if not sentence:
                raise JobError('type a sentence, e.g. "the large white building next to the parking lot"')
        if self.region == "extent":
            if self.bbox is None or not (self.bbox[0] < self.bbox[2] and self.bbox[1] < self.bbox[3]):
                raise JobError(f"the map extent {self.bbox} is empty")
            region = RegionSpec(bbox=tuple(self.bbox), bbox_crs=self.bbox_crs)
        elif self.region == "polygons":
            if not self.polygons:
                raise JobError("no polygons selected: select features of a polygon layer, or use another region")
            region = RegionSpec(polygons=list(self.polygons), polygons_crs=self.polygons_crs)
        elif self.region == "layer":
            region = RegionSpec()
        else:
            raise JobError(f"region must be one of {', '.join(REGIONS)}, got {self.region!r}")
        if not 16 <= self.tile or not 0 <= self.overlap <= self.tile // 2:
            raise JobError(f"tile size must be at least 16 px and overlap between 0 and half of it; got tile "
                           f"{self.tile}, overlap {self.overlap}")
        out_dir = self.out_dir or tempfile.mkdtemp(prefix="rs_refseg_")
        return SegmentRequest(raster=self.raster, out_dir=out_dir, model=self.model, classes=classes,
                              sentence=sentence, region=region, tile=self.tile, overlap=self.overlap,
                              device=self.device, checkpoint=self.checkpoint or None)
