"""Many rasters, one segmentation each ("Segment many rasters"): what the plugin reads of a running batch.

The request is the protocol's BatchRequest, whose `settings` come from JobParameters.request() (the same
checked contract as one raster: prompt, model, device, bands, resolution, nodata); the backend runs it on a
pool of warm model workers (Ray) and writes each raster's outputs to `<output folder>/<raster name>/` with a
manifest beside them (protocol/batch.py). Here: the batch's progress records as a percentage and a line,
the manifest's rows as they end, and a row in a few words.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

from ..protocol.batch import MANIFEST, PENDING, BatchRow
from ..protocol.messages import ProgressRecord
from .backend import stage_percent
from .summary import short

_ROW_FIELDS = {f.name for f in fields(BatchRow)}


def _running(record: ProgressRecord) -> dict[str, dict[str, Any]]:
    running = (getattr(record, "detail", None) or {}).get("running")
    return {str(k): v for k, v in running.items() if isinstance(v, dict)} if isinstance(running, dict) else {}


def batch_percent(record: ProgressRecord) -> float:
    """The batch's progress: the rasters that ended, plus the share done of each running one."""
    if not record.total:
        return 0.0
    partial = 0.0
    for job in _running(record).values():
        try:
            partial += stage_percent(str(job.get("stage", "")), int(job.get("done", 0)), int(job.get("total", 0))) / 100
        except (TypeError, ValueError):
            continue
    return 100.0 * min(float(record.total), record.done + partial) / record.total


def progress_text(record: ProgressRecord) -> str:
    """"2 of 5 rasters ended (1 failed); running: a.tif, b.tif": it changes only as rasters start and end (the
    Processing dialog logs each new text)."""
    failed = (getattr(record, "detail", None) or {}).get("failed")
    text = f"{record.done} of {record.total} rasters ended"
    if isinstance(failed, int) and failed:
        text += f" ({failed} failed)"
    running = _running(record)
    if running:
        text += "; running: " + ", ".join(short(name, 40) for name in running)
    return text


def manifest_path(out_dir: str) -> Path:
    return Path(out_dir) / MANIFEST


def read_rows(manifest: Path) -> Optional[list[BatchRow]]:
    """The manifest's rows (rewritten atomically as each raster ends), or None when it cannot be read yet."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return [BatchRow(**{k: v for k, v in row.items() if k in _ROW_FIELDS}) for row in data["rows"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def ended(rows: list[BatchRow]) -> list[BatchRow]:
    return [row for row in rows if row.status != PENDING]


def raster_name(row: BatchRow) -> str:
    return Path(row.raster).name or row.raster
