"""The batch contract: many rasters, one segmentation each, run by a pool of warm model workers.

Standard library only: the CLI (`rsseg batch`), the worker's `batch` record and Processing's "Segment many
rasters" fill in the same BatchRequest, and read the same manifest (docs/batch.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .contracts import RequestError, SegmentRequest, check_class_names, describe_value, from_fields

MANIFEST = "manifest.json"  # in BatchRequest.out_dir: one row per raster, rewritten as each one ends
RASTER_SUFFIXES = (".tif", ".tiff", ".img", ".vrt", ".jp2")  # what a folder given as input contributes
TABLE_SUFFIX = ".csv"  # an input ending in it is a table: a `raster` column, optional `classes`/`sentence`
DONE, FAILED, CANCELLED, PENDING = "done", "failed", "cancelled", "pending"  # a raster's status
MAX_RETRIES = 10


@dataclass(frozen=True)
class BatchRequest:
    """Rasters in, one output folder per raster (`out_dir/<raster name>/`), a manifest beside them.

    `settings` is the segment request every raster gets (its `raster` and `out_dir` are replaced by each
    raster's; a table row's prompt replaces its prompt)."""

    inputs: list[str]  # raster files, glob patterns ("tiles/*.tif"), folders (their rasters) or .csv tables
    out_dir: str
    settings: SegmentRequest
    workers: int = 0  # model workers (actors); 0: one per GPU, or one on a machine without a GPU
    address: Optional[str] = None  # a Ray cluster ("ray://head:10001", "auto"); None: RAY_ADDRESS or local
    retries: int = 2  # more attempts for a raster whose worker died or failed unexpectedly (bad input: none)
    # keep a raster's outputs from an earlier run with the same settings (its result.json says so) instead of
    # segmenting it again: a batch run again after a cancel or a failure does only what is missing
    skip_done: bool = False
    # a raster of at least this many megapixels, given more than one worker, is split by rows into a part per
    # worker and merged (its outputs are those of one job); 0: never split
    split_mpx: float = 256.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "BatchRequest":
        """Inverse of to_dict; ValueError names an unknown, missing or mistyped field."""
        if not isinstance(data, dict):
            raise ValueError(f"a batch request must be an object, got {describe_value(data)}")
        request = from_fields(cls, data)
        if request.settings.classes is not None:
            check_class_names(request.settings.classes)
        return request

    def validate(self) -> "BatchRequest":
        """What needs no file: at least one input, an output folder, workers and retries in range."""
        if not self.inputs or not all(str(i).strip() for i in self.inputs):
            raise RequestError("give at least one raster, glob pattern, folder or CSV table (no empty entry)",
                               "inputs")
        if not self.out_dir.strip():
            raise RequestError("give an output folder: each raster's outputs go to a folder named after it in it",
                               "out_dir")
        if self.workers < 0:
            raise RequestError(f"workers must be 0 (one per GPU) or more, got {self.workers}", "workers")
        if not self.split_mpx >= 0:
            raise RequestError(f"split_mpx must be 0 (never split) or more megapixels, got {self.split_mpx}",
                               "split_mpx")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise RequestError(f"retries must be 0 to {MAX_RETRIES}, got {self.retries}", "retries")
        return self


@dataclass
class BatchRow:
    """One raster of a batch, as the manifest holds it."""

    raster: str
    out_dir: str
    prompt: str
    status: str = PENDING
    attempts: int = 0
    seconds: float = 0.0  # wall time of the attempt that ended it
    worker: str = ""  # the node and process that ran it
    outputs: dict[str, str] = field(default_factory=dict)  # mask, polygons, scores, result -> path
    timings: dict[str, float] = field(default_factory=dict)  # the engine's, from result.json
    pixels: int = 0
    error: dict[str, Any] = field(default_factory=dict)  # code, message, fixes, subject (as an error record)
    kept: bool = False  # done by an earlier run with the same settings (skip_done): its outputs were kept


@dataclass
class BatchResult:
    """What `run_batch` returns (and the manifest holds): a row per raster and the totals."""

    out_dir: str
    manifest: str
    workers: int
    address: str  # where Ray ran: "local" or the cluster's address
    rows: list[BatchRow]
    seconds: float
    cancelled: bool = False

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
