"""One raster split by rows across workers, and the merge of its parts into the job's own outputs.

Why rows: a part job (`engine.segment(..., rows=...)`) runs every tile touching its rows, blended with the whole
grid's weights, so its rows are exactly the whole job's (mask and scores, bit for bit); the parts need no seams
stitched, only stacked. Polygons are made after the merge from the whole mask, so a region crossing a part's edge
is one polygon, as in a single job. The merge writes through the engine's writer and vectoriser and stages every
file as a job does: nothing partial is left if it fails or is cancelled.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
from rasterio.windows import Window

from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import OUTPUTS, ClassSummary, SegmentRequest, SegmentResult
from .engine import vectorise_mask
from .outputs import (
    StagedFile,
    commit_outputs,
    is_stale_note,
    new_job_id,
    output_failure,
    prepare_out_dir,
    remove_stale,
    stale_note,
)
from .writer import BLOCK, ClassRasterWriter

PART_FOLDER = ".rsseg-parts"  # inside the raster's output folder: one sub-folder per part, removed by the merge
COPY_ROWS = 4 * BLOCK  # rows copied from a part at a time


def split_rows(height: int, parts: int) -> list[tuple[int, int]]:
    """`parts` bands of rows about equal in height, cut on GeoTIFF block rows (fewer when the raster is short)."""
    blocks = -(-height // BLOCK)
    parts = max(1, min(parts, blocks))
    cuts = [round(k * blocks / parts) * BLOCK for k in range(parts)] + [height]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if a < b]


def part_folder(out_dir: str, index: int) -> str:
    return str(Path(out_dir) / PART_FOLDER / f"part-{index:03d}")


def merge_parts(request: SegmentRequest, parts: list[SegmentResult], progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None) -> SegmentResult:
    """The job's outputs in `request.out_dir` from its parts (in row order): mask and scores stacked, polygons
    from the whole mask, the result record summed over the parts. The parts' folder is removed once the outputs
    are in place; a failed or cancelled merge leaves only the parts (a retry merges them again, the batch removes
    them when it gives up)."""
    cancel = cancel or CancelToken()
    t_start = time.perf_counter()
    out_dir = prepare_out_dir(request.out_dir)
    job = new_job_id()
    stale = remove_stale(out_dir)
    staged = {key: StagedFile(out_dir / name, job) for key, name in OUTPUTS.items()}
    try:
        result = _merge(request, parts, staged, job, stale, t_start, progress, cancel)
    except (OSError, rasterio.errors.RasterioError) as exc:
        raise output_failure(out_dir, exc) from exc
    finally:
        for item in staged.values():
            item.discard()
    shutil.rmtree(out_dir / PART_FOLDER, ignore_errors=True)
    return result


def _merge(request: SegmentRequest, parts: list[SegmentResult], staged: dict[str, StagedFile], job: str,
           stale: list[str], t_start: float, progress, cancel: CancelToken) -> SegmentResult:
    first = parts[0]
    names = [c.name for c in first.classes]
    width, height = first.width, sum(p.height for p in parts)
    with rasterio.open(first.mask) as src:
        crs, transform = src.crs, src.transform
    writer = ClassRasterWriter(staged["mask"], staged["scores"], crs, transform, width, height, names, request.prompt,
                               request.sentence is not None, job, keep_scores=request.write_scores)
    try:
        row0, total = 0, -(-height // COPY_ROWS)
        for part in parts:
            with rasterio.open(part.mask) as mask, rasterio.open(part.scores) as scores:
                for r in range(0, part.height, COPY_ROWS):
                    cancel.check()
                    window = Window(0, r, width, min(COPY_ROWS, part.height - r))
                    writer.write(Window(0, row0 + r, width, window.height), mask.read(1, window=window),
                                 scores.read(1, window=window))
                    report(progress, "merge", (row0 + r) // COPY_ROWS + 1, total)
            row0 += part.height
    finally:
        writer.close()
    timings = {key: sum(p.timings.get(key, 0.0) for p in parts) for key in first.timings}
    polygons_path, polygon_counts = None, {}
    if request.vectorise:
        t0 = time.perf_counter()
        stats = vectorise_mask(request, staged, names, progress, cancel)
        polygon_counts = {s.class_id: s.polygons for s in stats}
        polygons_path = str(staged["polygons"].final)
        timings["vectorise"] = time.perf_counter() - t0
    cancel.check()
    timings["merge"] = time.perf_counter() - t_start
    notes = [n for n in first.notes if not is_stale_note(n)]
    notes.append(f"split by rows into {len(parts)} parts run on separate workers and merged (the mask is the one a "
                 "single job makes)")
    if stale:
        notes.append(stale_note(stale))
    result = SegmentResult(
        request=request.to_dict(), prompt=request.prompt, mask=str(staged["mask"].final),
        scores=str(staged["scores"].final) if request.write_scores else None, polygons=polygons_path,
        crs=first.crs, transform=tuple(transform)[:6], width=width, height=height,
        classes=[_summed([p.classes[i] for p in parts], polygon_counts) for i in range(len(names))],
        tiles=sum(p.tiles for p in parts), device=first.device, timings=timings, notes=notes, bands=first.bands,
        stretch=first.stretch, nodata_pixels=sum(p.nodata_pixels for p in parts),
        run={**first.run, "job": job, "parts": [p.run.get("job") for p in parts]})
    staged["result"].temp.write_text(json.dumps(result.to_dict(), indent=2))
    commit_outputs(staged, scores=request.write_scores, polygons=request.vectorise)
    return result


def _summed(classes: list[ClassSummary], polygons: dict[int, int]) -> ClassSummary:
    """One class over the parts: pixels and areas added, the mean score weighted by pixels."""
    pixels = sum(c.pixels for c in classes)
    areas = [c.area_m2 for c in classes]
    scored = sum(c.mean_score * c.pixels for c in classes if c.mean_score is not None)
    return ClassSummary(classes[0].id, classes[0].name, classes[0].colour, pixels,
                        None if any(a is None for a in areas) else float(np.sum(areas)), polygons.get(classes[0].id, 0),
                        scored / pixels if pixels else None)
