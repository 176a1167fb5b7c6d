"""What every entry point (dock, right-click, Processing) hands the backend: JobParameters.

The UI and the Processing algorithms only fill this dataclass; `to_request` turns it into the
protocol's SegmentRequest, checking what can be checked before a worker starts, so a bad input is
one clear message instead of a backend round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..protocol.contracts import REGIONS, RegionSpec, RequestError, SegmentRequest
from .bundles import bundle_classes, classes_prompt
from .run_folder import default_root, new_run_folder


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
    out_dir: str = ""  # the folder each run gets a new sub-folder in; empty: run_folder.default_root()
    checkpoint: Optional[str] = None  # trained referring models
    bands: Optional[tuple[int, ...]] = None  # 1-based source bands for the model's inputs; None: automatic
    resolution: Optional[float] = None  # processing grid in metres per pixel; None: the raster's own
    nodata: Optional[float] = None  # treat this source value as nodata (a collar without a nodata flag)
    # a sentence with a model that finds separate objects: the best K, each its own polygon; None: not sent (the
    # model's default, one object). The dock and Processing set it only for such a model (its row's `instances`).
    top_k: Optional[int] = None

    def request(self, prompt_optional: bool = False) -> SegmentRequest:
        """The checked SegmentRequest, without an output folder (to_request gives it the run's; a batch gives
        each raster its own). `prompt_optional`: an empty prompt sends none (a batch whose CSV table gives each
        raster its prompt); else an empty class list is a trained model's own classes, or an error."""
        if not self.model:
            raise JobError("choose a model")
        if self.mode == "classes" and not self.prompt.strip():
            self.prompt = classes_prompt(bundle_classes(self.model))  # a trained model's own classes
        try:
            optional = {name: getattr(self, name) for name in ("nodata", "top_k")  # older backends lack them
                        if getattr(self, name) is not None}
            fields = dict(raster=self.raster, out_dir="", model=self.model, region=self._region(), tile=self.tile,
                          overlap=self.overlap, device=self.device, checkpoint=self.checkpoint or None,
                          bands=tuple(self.bands) if self.bands else None, resolution=self.resolution, **optional)
            if prompt_optional and not self.prompt.strip():
                return SegmentRequest(**fields).validate(prompt=False)
            return SegmentRequest.from_prompt(self.mode, self.prompt, **fields).validate()
        except RequestError as exc:  # e.g. the same class twice, an empty prompt, overlap over half a tile
            raise JobError(str(exc)) from None

    def to_request(self) -> SegmentRequest:
        request = self.request()
        root = self.out_dir or str(default_root())
        try:
            folder = new_run_folder(root, request.prompt)
        except OSError as exc:
            raise JobError(f"cannot create a run folder in the output folder {root}: {exc.strerror or exc}; "
                           "choose another output folder") from None
        return replace(request, out_dir=str(folder))

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
