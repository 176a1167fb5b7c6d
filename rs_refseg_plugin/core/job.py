"""What every entry point (dock, right-click, Processing) hands the backend: JobParameters.

The UI and the Processing algorithms only fill this dataclass; `to_request` turns it into the
protocol's SegmentRequest, checking what can be checked before a worker starts, so a bad input is
one clear message instead of a backend round trip.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..protocol.contracts import REGIONS, RegionSpec, RequestError, SegmentRequest


class JobError(Exception):
    """Parameters that cannot make a job; the message says which and what was expected."""


@dataclass
class JobParameters:
    raster: str  # the raster layer's local file: core/layers.local_raster, the one check that it is one
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
        if not self.model:
            raise JobError("choose a model")
        try:
            request = SegmentRequest.from_prompt(
                self.mode, self.prompt, raster=self.raster, out_dir="", model=self.model, region=self._region(),
                tile=self.tile, overlap=self.overlap, device=self.device, checkpoint=self.checkpoint or None).validate()
        except RequestError as exc:  # e.g. the same class twice, an empty prompt, overlap over half a tile
            raise JobError(str(exc)) from None
        return replace(request, out_dir=self.out_dir or tempfile.mkdtemp(prefix="rs_refseg_"))

    def _region(self) -> RegionSpec:
        if self.region == "extent":
            return RegionSpec(bbox=tuple(self.bbox or ()), bbox_crs=self.bbox_crs)
        if self.region == "polygons":
            if not self.polygons:
                raise JobError("no polygons selected: select features of a polygon layer, or use another region")
            return RegionSpec(polygons=list(self.polygons), polygons_crs=self.polygons_crs)
        if self.region == "layer":
            return RegionSpec()
        raise JobError(f"region must be one of {', '.join(REGIONS)}, got {self.region!r}")
