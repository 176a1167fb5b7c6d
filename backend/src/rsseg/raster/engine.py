"""The raster engine: one streaming pass from a source raster to class/score GeoTIFFs and polygons.

The engine knows a model only as a TileModel (normalised tiles in, logits out). Memory is bounded
by the strip width and tile size, never by the raster size; the source is opened read-only; all
outputs are staged under hidden names and renamed only when everything succeeded.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import pyogrio.errors
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy.special import expit

from ..errors import ModelError, RegionError, check_request
from ..execution.tile_model import SIGMOID, InstanceTileModel, TileModel, model_threshold
from ..execution.tile_runner import TileRunner
from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import MAX_CLASSES, NODATA, OUTPUTS, UNLABELLED, ClassSummary, SegmentRequest, SegmentResult
from .areas import row_pixel_areas_m2
from .blend import DEFAULT_STRIP_WIDTH, Spill, Strip, StripAccumulator, finished_rows, plan_strips, strip_tiles
from .captured_stderr import CapturedStderr
from .instances import InstanceCollector
from .memory import bound_heap_growth
from .normalize import Stretch, estimate_stretch
from .outputs import (
    StagedFile,
    check_outputs,
    commit_outputs,
    new_job_id,
    output_failure,
    prepare_out_dir,
    remove_stale,
    stale_note,
)
from .palette import class_colours
from .pipeline import ReadAhead, WriteBehind
from .region import Region, resolve_region
from .source import RasterSource, backing_file, is_virtual
from .tiling import Tile, TileGrid
from .vectorize import ClassPolygonStats, VectorizeOptions, vectorize_classes, write_instances
from .writer import BLOCK, ClassRasterWriter

SIGMOID_THRESHOLD = 0.5
GDAL_CACHE_MB = 8
# Failures of a write (full disk, file size limit, read-only media) as the libraries raise them
WRITE_ERRORS = (OSError, rasterio.errors.RasterioError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError)


class _Tally:
    """Per-class pixel counts, areas and score sums, accumulated as rows are written."""

    def __init__(self, crs, transform):
        self.crs, self.transform = crs, transform
        self.pixels = np.zeros(256, np.int64)
        self.area = np.zeros(256)
        self.score = np.zeros(256)

    def add(self, row0: int, classes: np.ndarray, scores: np.ndarray) -> None:
        rows = classes.shape[0]
        areas = row_pixel_areas_m2(self.crs, self.transform, row0, rows)
        ids = classes.ravel().astype(np.intp)  # bincount's own index type: cast once, not in each bincount
        if areas[0] == areas[-1] and (areas == areas[0]).all():  # a projected CRS: one area for every pixel
            counts = np.bincount(ids, minlength=256)
            self.area += counts * areas[0]
        else:  # one count per (row, class): areas are per row, so the class areas are a matrix product
            per_row = np.bincount((classes + (np.arange(rows, dtype=np.int64) * 256)[:, None]).ravel(),
                                  minlength=rows * 256).reshape(rows, 256)
            counts = per_row.sum(axis=0)
            self.area += areas @ per_row
        self.pixels += counts
        sums = np.bincount(ids, weights=scores.ravel(), minlength=256)
        if np.isnan(sums[:NODATA]).any():  # NaN scores are expected at nodata only (class 255, never read)
            sums = np.bincount(ids, weights=np.nan_to_num(scores.ravel()), minlength=256)
        self.score += sums


WHOLE_REGION_MAX = 4096  # longest side (processing pixels) a whole-region model is given at once


def tile_grid(request: SegmentRequest, model: TileModel, height: int, width: int) -> TileGrid:
    """The request's tiles, or one tile over the region for models that must see it whole.

    A referring sentence ("the building left of the pool") is about the whole region, typically the
    map view: cutting it into tiles would answer it once per tile. Such models (`whole_region`)
    get the region as one tile and resize it to their own input themselves.
    """
    if not getattr(model, "whole_region", False):
        return TileGrid(height, width, request.tile, request.overlap)
    side = max(height, width)
    if side > WHOLE_REGION_MAX:
        raise RegionError(f"the region is {width}x{height} px; a referring model looks at the whole region at "
                          f"once, up to {WHOLE_REGION_MAX} px on its longer side: zoom in (a smaller bbox or map "
                          "view), or process at a coarser grid with a resolution in metres per pixel")
    return TileGrid(height, width, max(side, 16), 0)


def decide(logits: np.ndarray, valid: np.ndarray, activation: str,
           threshold: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """Blended logits [K, h, w] -> (class ids uint8 [h, w], score of the chosen class float32).

    Class by class over contiguous planes: numpy's argmax along the first axis strides across
    them and was the slowest step of writing a row (ties go to the first class, as with argmax)."""
    classes = np.ones(logits.shape[1:], np.uint8)  # 1-based ids
    top = logits[0].copy()
    for k in range(1, logits.shape[0]):
        better = logits[k] > top
        classes[better] = k + 1
        np.maximum(top, logits[k], out=top)
    if activation == SIGMOID:
        scores = expit(top)
        threshold = SIGMOID_THRESHOLD if threshold is None else threshold
    else:  # softmax probability of the arg-max class
        total, term = np.zeros_like(top), np.empty_like(top)
        for plane in logits:
            total += np.exp(np.subtract(plane, top, out=term), out=term)
        scores = np.reciprocal(total, out=total)
    if threshold is not None:
        classes[scores < threshold] = UNLABELLED
    scores = scores.astype(np.float32, copy=False)
    if not valid.all():
        classes[~valid] = NODATA
        scores[~valid] = np.nan
    return classes, scores


class _TileReader:
    """Reads and normalises tiles of the region; pixels outside region polygons are invalid.

    It runs on the engine's reader thread (pipeline.ReadAhead), with its own handle on the raster, opened there
    as the job's source is (`open`)."""

    def __init__(self, request: SegmentRequest, n_inputs: int, region: Region, stretch: Stretch,
                 capture: CapturedStderr, timings: dict):
        self.request, self.n_inputs, self.region, self.stretch = request, n_inputs, region, stretch
        self.capture, self.timings = capture, timings
        self.source: Optional[RasterSource] = None

    def open(self) -> "_TileReader":
        request = self.request
        self.source = RasterSource(request.raster, request.bands, self.n_inputs, request.resolution, request.nodata)
        return self

    def read(self, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        win = self.region.window
        window = Window(int(win.col_off) + tile.x, int(win.row_off) + tile.y, tile.width, tile.height)
        try:
            with self.capture:  # a read can evict (write) the outputs' cached blocks: a full disk prints here
                data, valid = self.region.read(self.source, window)
            return self.stretch.apply(data, valid), valid
        finally:
            self.timings["read"] += time.perf_counter() - t0

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    @property
    def infinite_seen(self) -> bool:
        return self.source is not None and self.source.infinite_seen


def feature_identity(request: SegmentRequest, source: RasterSource, stretch: Stretch) -> str:
    """What makes a tile's model input unique besides its window: the cache key's job part."""
    local = backing_file(request.raster)  # a raster in an archive: the archive's size and time
    stat = os.stat(local) if local else None
    return json.dumps({"raster": request.raster if is_virtual(request.raster) else os.path.realpath(request.raster),
                       "size": stat and stat.st_size, "mtime_ns": stat and stat.st_mtime_ns,
                       "bands": list(source.bands), "stretch": stretch.to_dict(), "region": request.to_dict()["region"],
                       "resolution": request.resolution, "nodata": request.nodata}, sort_keys=True)


def segment(request: SegmentRequest, model: TileModel, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelToken] = None, strip_width: int = DEFAULT_STRIP_WIDTH,
            runner: Optional[TileRunner] = None, rows: Optional[tuple[int, int]] = None) -> SegmentResult:
    """Run one job through the engine and return its result record (also written as result.json).

    `runner` runs the model (device, precision, batch size, feature cache); by default a plain one.
    `rows` (first, end) makes the job one part of a raster split across workers (raster/parts.py): only the
    region's rows [first, end) are written, exactly as the whole job writes them (the tiles touching them run,
    blended with the whole grid's weights), with the scores kept uncompressed and no polygons.
    """
    bound_heap_growth()
    # GDAL's block cache defaults to 5% of RAM and would keep every block the job reads; the
    # engine reads each block about once, so a small cache bounds memory at no cost.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _segment(request, model, progress, cancel, strip_width,
                        runner or TileRunner(model, request.device, request.batch_size), rows)


def _segment(request: SegmentRequest, model: TileModel, progress: Optional[ProgressCallback],
             cancel: Optional[CancelToken], strip_width: int, runner: TileRunner,
             rows: Optional[tuple[int, int]] = None) -> SegmentResult:
    cancel = cancel or CancelToken()
    t_start = time.perf_counter()
    timings: dict[str, float] = defaultdict(float)
    names = list(model.class_names)
    if not 1 <= len(names) <= MAX_CLASSES:
        raise ModelError(f"between 1 and {MAX_CLASSES} classes are supported, got {len(names)}")
    check_request(request, prompt=False)  # the model holds the prompt; eval and bench come here directly
    threshold = model_threshold(model, request.threshold)
    if str(request.out_dir).strip():
        check_outputs(Path(request.out_dir), request.raster)  # before anything runs: never replace the input
    job = new_job_id()
    staged: dict[str, StagedFile] = {}
    writer = None
    try:
        with RasterSource(request.raster, request.bands, model.n_inputs, request.resolution,
                          request.nodata) as source:
            region = resolve_region(request.region, source.dataset)
            grid = tile_grid(request, model, region.height, region.width)
            part = part_rows(rows, grid, model)
            stretch = estimate_stretch(source, region, request.percentiles, request.value_range)
            timings["stats"] = time.perf_counter() - t_start
            cancel.check()
            out_dir = prepare_out_dir(request.out_dir, job)  # after the input checks: bad input creates nothing
            stale = remove_stale(out_dir)
            staged.update((key, StagedFile(out_dir / name, job)) for key, name in OUTPUTS.items())
            transform = window_transform(region.window, source.transform)
            tally = _Tally(source.crs, transform)
            if part is not None:  # the part's outputs cover its rows only
                transform = transform * transform.translation(0, part[0])
            height = grid.height if part is None else part[1] - part[0]
            writer = ClassRasterWriter(staged["mask"], staged["scores"], source.crs, transform, grid.width,
                                       height, names, request.prompt, request.sentence is not None, job,
                                       keep_scores=request.write_scores)
            spill = Spill(out_dir, job)
            objects = InstanceCollector(grid, threshold) if isinstance(model, InstanceTileModel) else None
            try:
                reader = _TileReader(request, model.n_inputs, region, stretch, writer.gdal_output, timings)
                tiles_run = _stream(grid, reader.open, model, runner,
                                    feature_identity(request, source, stretch), writer, tally, threshold,
                                    strip_width, timings, progress, cancel, spill, objects, part)
            finally:
                try:
                    writer.close()  # flushes: a full disk can fail here too
                finally:
                    spill.close()
            crs = source.crs
            crs_string = crs.to_string() if crs else ""
            bands = list(source.bands)
            infinite = source.infinite_seen or reader.infinite_seen
        polygons_path, polygon_counts = None, {}
        if request.vectorise and part is None:
            t0 = time.perf_counter()
            if objects is not None:  # one polygon per object the model found
                report(progress, "vectorise", 0, 1)
                found = objects.objects()
                stats = write_instances(staged["polygons"].temp, found, crs, transform, _class_ids(names),
                                        request.prompt, _vectorize_options(request))
                report(progress, "vectorise", 1, 1)
            else:
                stats = vectorise_mask(request, staged, names, progress, cancel)
            polygon_counts = {s.class_id: s.polygons for s in stats}
            polygons_path = str(staged["polygons"].final)
            timings["vectorise"] = time.perf_counter() - t0
        cancel.check()
        timings["total"] = time.perf_counter() - t_start
        timings["outside_model"] = timings["total"] - timings["model"]
        colours = class_colours(names, request.sentence is not None)  # the mask's colour table (writer.py)
        classes = [ClassSummary(i + 1, n, colours[i], int(tally.pixels[i + 1]),
                                float(tally.area[i + 1]), polygon_counts.get(i + 1, 0),
                                float(tally.score[i + 1] / tally.pixels[i + 1]) if tally.pixels[i + 1] else None)
                   for i, n in enumerate(names)]
        notes = [f"{int(tally.pixels[UNLABELLED])} pixels unlabelled (score under the threshold)"] \
            if tally.pixels[UNLABELLED] else []
        if infinite:
            notes.append("the raster holds +-inf values: those pixels were treated as nodata (255 in the mask) and "
                         "left out of the stretch")
        if stale:
            notes.append(stale_note(stale))
        if objects is not None and request.vectorise:
            notes.append(f"{len(found)} object(s) found: one polygon each, with its own score and rank "
                         "(not one per connected region)")
        if getattr(model, "whole_region", False):
            notes.append(f"the model saw the whole region at once ({grid.width}x{grid.height} px; tile size and "
                         "overlap do not apply to referring models)")
        if request.resolution is not None:
            notes.append(f"processed at {request.resolution:g} m per pixel ({grid.width}x{grid.height} px, "
                         "resampled on read); the outputs are on that grid")
        notes += runner.notes()
        keep_scores = request.write_scores or part is not None  # a part's scores are what the merge reads
        result = SegmentResult(
            request=request.to_dict(), prompt=request.prompt, mask=str(staged["mask"].final),
            scores=str(staged["scores"].final) if keep_scores else None, polygons=polygons_path,
            crs=crs_string, transform=tuple(transform)[:6], width=grid.width, height=height,
            classes=classes, tiles=tiles_run, device=request.device, timings=dict(timings), notes=notes,
            bands=bands, stretch=stretch.to_dict(), nodata_pixels=int(tally.pixels[NODATA]),
            run={**runner.stats(), "job": job},
        )
        staged["result"].temp.write_text(json.dumps(result.to_dict(), indent=2))
        commit_outputs(staged, scores=keep_scores, polygons=request.vectorise and part is None)
        return result
    except WRITE_ERRORS as exc:
        if not staged:
            raise
        raise output_failure(staged["mask"].final.parent, exc, writer.gdal_output.text() if writer else "") \
            from exc
    finally:
        for item in staged.values():
            item.discard()


def _class_ids(names: list[str]) -> dict[int, str]:
    return {i + 1: n for i, n in enumerate(names)}  # the mask's 1-based class ids


def _vectorize_options(request: SegmentRequest) -> VectorizeOptions:
    return VectorizeOptions(request.simplify_tolerance, request.min_area_m2)


def vectorise_mask(request: SegmentRequest, staged: dict[str, StagedFile], names: list[str], progress,
                   cancel: CancelToken) -> list[ClassPolygonStats]:
    """Polygons of a job's staged mask, scored from its staged scores: a job's, and a merge of parts' (parts.py)."""
    return vectorize_classes(staged["mask"].temp, staged["scores"].temp, staged["polygons"].temp, _class_ids(names),
                             request.prompt, _vectorize_options(request), progress, cancel)


def _chunks(tiles: list[Tile], new: set[int], runner: TileRunner):
    """Row-major runs of tiles holding at most one batch of `new` tiles (those that need the model)."""
    chunk, compute = [], 0
    for tile in tiles:
        chunk.append(tile)
        if tile.index in new:
            compute += 1
            if compute >= runner.batch_size:  # the runner may shrink its batch after out-of-memory
                yield chunk
                chunk, compute = [], 0
    if chunk:
        yield chunk


def part_rows(rows: Optional[tuple[int, int]], grid: TileGrid, model: TileModel) -> Optional[tuple[int, int]]:
    """The rows of a part job, checked; None for a whole job."""
    if rows is None:
        return None
    first, end = (int(r) for r in rows)
    if not 0 <= first < end <= grid.height:
        raise ValueError(f"rows {first}-{end} are not inside the region's {grid.height} rows")
    if isinstance(model, InstanceTileModel) or getattr(model, "whole_region", False):
        raise ModelError("a model that finds separate objects or looks at the whole region cannot run on a part "
                         "of the raster")
    return first, end


def _tile_rows(grid: TileGrid, part: Optional[tuple[int, int]]) -> range:
    """The tile rows a job runs: all, or those touching a part's rows (they blend into them)."""
    if part is None:
        return range(len(grid.ys))
    touching = [r for r, y in enumerate(grid.ys) if y < part[1] and y + grid.tile_height > part[0]]
    return range(touching[0], touching[-1] + 1)


def _new_tiles(grid: TileGrid, strips: list[Strip], tile_rows: range) -> list[list[Tile]]:
    """Per strip, the tiles it reads and runs: a tile crossing into the next strip is read (and run) once, in
    the first strip; the next strip takes its spilled logits."""
    seen: set[int] = set()
    per_strip = []
    for strip in strips:
        fresh = [tile for tile in strip_tiles(grid, strip, tile_rows) if tile.index not in seen]
        seen.update(tile.index for tile in fresh)
        per_strip.append(fresh)
    return per_strip


def _stream(grid: TileGrid, open_reader, model: TileModel, runner: TileRunner, identity: str,
            writer: ClassRasterWriter, tally: _Tally, threshold: Optional[float], strip_width: int, timings: dict,
            progress, cancel: CancelToken, spill: Spill, objects: Optional[InstanceCollector],
            part: Optional[tuple[int, int]] = None) -> int:
    """Tiles -> model -> blend -> finished rows written; returns the number of tiles the model ran on.

    Tiles are read on a reader thread ahead of the model, and finished rows are decided, tallied and
    written on a writer thread behind it (pipeline.py); the model and the blending run here."""
    strips = plan_strips(grid, strip_width, BLOCK)
    tile_rows = _tile_rows(grid, part)
    total, done, run = len(tile_rows) * len(grid.xs), 0, 0
    first, end = part or (0, grid.height)

    def write(window: Window, blended: np.ndarray, valid: np.ndarray) -> None:
        t0 = time.perf_counter()
        row0 = int(window.row_off)
        a, b = max(first, row0), min(end, row0 + len(valid))  # a part writes its own rows only
        if a < b:
            classes, scores = decide(blended[:, a - row0:b - row0], valid[a - row0:b - row0], model.activation,
                                     threshold)
            writer.write(Window(window.col_off, a - first, window.width, b - a), classes, scores)
            tally.add(a, classes, scores)
        timings["write"] += time.perf_counter() - t0

    def progressed() -> None:
        with writer.gdal_output.quiet:  # never into the stderr capture of a read or write on the other threads
            report(progress, "segment", done, total)

    progressed()
    fresh = _new_tiles(grid, strips, tile_rows)
    reads = ReadAhead([tile for tiles in fresh for tile in tiles], open_reader, depth=max(1, runner.batch_size) + 1)
    rows = WriteBehind(write, depth=2)
    try:
        for strip, new_tiles in zip(strips, fresh):
            acc = StripAccumulator(grid, strip, len(model.class_names), grid.ys[tile_rows.start])
            remaining = [len(strip.cols)] * len(grid.ys)  # tiles still to add, per tile row
            new = {tile.index for tile in new_tiles}
            for chunk in _chunks(strip_tiles(grid, strip, tile_rows), new, runner):
                cancel.check()
                t0 = time.perf_counter()
                read = {}
                for tile in chunk:
                    if tile.index in new:
                        got, read[tile.index] = reads.next()
                        if got.index != tile.index:
                            raise RuntimeError(f"tile {got.index} read where tile {tile.index} was due")
                timings["read_wait"] += time.perf_counter() - t0
                todo = [i for i, (_, valid) in read.items() if valid.any()]  # all-nodata tiles skip the model
                logits = {}
                if todo:
                    t0 = time.perf_counter()
                    keys = [f"{identity}|{t.x},{t.y},{t.width},{t.height}" for t in chunk if t.index in todo]
                    out = runner(np.stack([read[i][0] for i in todo]), keys, cancel)
                    timings["model"] += time.perf_counter() - t0
                    expected = (len(todo), len(model.class_names), grid.tile_height, grid.tile_width)
                    if out.shape != expected:
                        raise ModelError(f"model returned logits of shape {out.shape}, expected {expected}")
                    logits = dict(zip(todo, out))
                    run += len(todo)
                    if objects is not None:
                        tiles = {t.index: t for t in chunk}
                        for index, found in zip(todo, runner.take_instances()):
                            objects.add(tiles[index], found, read[index][1])
                t0 = time.perf_counter()
                for tile in chunk:
                    if tile.index in read:
                        done += 1
                        tile_logits = logits.get(tile.index)
                        if tile_logits is not None:
                            acc.add(tile, tile_logits, read[tile.index][1])
                        if tile.x + tile.width > strip.x1:
                            spill.save(tile, strip.x1, tile_logits, read[tile.index][1])
                    else:
                        spilled = spill.load(tile)
                        if spilled is not None:
                            acc.add(tile, spilled[0], spilled[1], spilled[2])
                    remaining[tile.row] -= 1
                    if remaining[tile.row] == 0:
                        for row0, blended, valid in acc.pop(finished_rows(grid, tile.row)):
                            rows.put(Window(strip.x0, row0, strip.x1 - strip.x0, len(valid)), blended, valid)
                timings["blend"] += time.perf_counter() - t0
                progressed()
            del acc  # before the next strip's is made: both at once held 21 MB more at every strip change
        t0 = time.perf_counter()
        rows.finish()
        timings["write_wait"] += time.perf_counter() - t0
    finally:
        reads.stop()
        rows.stop()
    return run
