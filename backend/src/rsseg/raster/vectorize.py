"""Turn a class-id raster into per-class polygons in a GeoPackage, streaming chunk by chunk.

Why this design: class rasters can be 16k x 16k pixels, so they are read in chunk-aligned windows
and never whole. Each chunk is labelled (4-connectivity) and polygonised in *pixel* coordinates,
which are exact integers, so the pieces of one object cut by a chunk seam share identical edges and
union cleanly. Pieces that touch an interior seam wait in a pending list; after each row of chunks
the pending pieces of each class are unioned, and every merged polygon that does not reach the
bottom seam of that row can no longer grow, so it is written then (pending memory stays bounded by
the objects crossing the current seam). Only at write time are coordinates mapped with the raster
transform. Pixel counts and score sums travel with the pieces, so a merged polygon's mean score is
exact.

Choices: the layer's geometry type is "Polygon" and no MultiPolygon is ever written (components
are single polygons and topology-preserving simplification never splits one; a non-Polygon
simplification result falls back to the unsimplified polygon). `area_m2` is measured on the
unsimplified polygon, so it reflects the pixels, not the simplification. Class ids missing from
`class_names` are named "class_<id>".

Models that find separate objects (SAM 3, zero-shot referring) get one feature per object instead
(`write_instances`): two touching buildings stay two polygons, each with the model's own score, its
rank in its class and an instance_id; an object may have several parts (MultiPolygon layer).
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import fiona
import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from shapely.affinity import affine_transform
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

from ..errors import OutputError, RssegError
from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import NODATA as NODATA_CLASS
from ..protocol.contracts import POLYGON_LAYER
from .areas import _wkt, geometry_area_m2
from .outputs import GPKG_DESCRIPTION
from .source import open_raster

SCHEMA = {
    "geometry": "Polygon",
    "properties": {"class": "str", "class_id": "int", "prompt": "str", "score": "float",
                   "area_m2": "float"},
}
# Models that find separate objects (execution.tile_model.InstanceTileModel): one feature per object, which
# may have several parts, with its own score (not a mean over pixels) and its rank within its class.
INSTANCE_SCHEMA = {
    "geometry": "MultiPolygon",
    "properties": {**SCHEMA["properties"], "instance_id": "int", "rank": "int"},
}
_BATCH = 1000  # records per fiona writerecords call

Piece = tuple[Polygon, int, float]  # polygon in pixel coordinates, pixel count, score sum


@dataclass(frozen=True)
class VectorizeOptions:
    """Knobs of the vectoriser; the defaults keep every polygon exactly as the pixels draw it."""

    simplify_tolerance: float = 0.0  # map units of the raster CRS; 0 = no simplification
    min_area_m2: float = 0.0  # polygons smaller than this (square metres) are dropped
    chunk_size: int = 2048  # pixels per side of the read window


@dataclass
class ClassPolygonStats:
    """What was written for one class, for the run summary shown to the user."""

    class_id: int
    name: str
    polygons: int
    area_m2: float


def _chunk_pieces(cls_src, score_src, win: Window) -> Iterator[tuple[int, Piece, bool]]:
    """Yield (class id, piece, touches an interior seam) for each component in one chunk."""
    cls = cls_src.read(1, window=win)
    skip = {0, NODATA_CLASS} | ({int(cls_src.nodata)} if cls_src.nodata is not None else set())
    present = [int(c) for c in np.flatnonzero(np.bincount(cls.ravel(), minlength=256)) if int(c) not in skip]
    if not present:
        return
    labels = np.zeros(cls.shape, np.int32)
    label_class = [0]
    for cid in present:
        lab, k = ndimage.label(cls == cid, output=np.int32)  # default structure = 4-connectivity
        np.add(lab, len(label_class) - 1, out=lab, where=lab > 0)
        labels += lab  # the classes' regions are disjoint
        label_class += [cid] * k
    n = len(label_class)
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n)
    # label 0 (no region) also sums its scores, NaN at nodata, and is never read
    sums = np.bincount(flat, weights=score_src.read(1, window=win).ravel(), minlength=n)
    on_seam = np.zeros(n, bool)
    h, w = labels.shape
    if win.row_off > 0:
        on_seam[labels[0]] = True
    if win.row_off + h < cls_src.height:
        on_seam[labels[-1]] = True
    if win.col_off > 0:
        on_seam[labels[:, 0]] = True
    if win.col_off + w < cls_src.width:
        on_seam[labels[:, -1]] = True
    origin = Affine.translation(win.col_off, win.row_off)  # global pixel coordinates
    for geom, value in shapes(labels, mask=labels > 0, connectivity=4, transform=origin):
        lid = int(value)
        piece = (shape(geom), int(counts[lid]), float(sums[lid]))
        yield label_class[lid], piece, bool(on_seam[lid])


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Union same-class pieces; each connected result carries its pieces' summed counts/sums."""
    if len(pieces) < 2:
        return pieces
    union = shapely.unary_union([p[0] for p in pieces])
    parts = list(getattr(union, "geoms", [union]))
    # An interior point of a piece lies inside exactly one merged part.
    points = [p[0].representative_point() for p in pieces]
    piece_idx, part_idx = shapely.STRtree(parts).query(points, predicate="intersects")
    counts = np.zeros(len(parts), np.int64)
    sums = np.zeros(len(parts))
    np.add.at(counts, part_idx, [pieces[i][1] for i in piece_idx])
    np.add.at(sums, part_idx, [pieces[i][2] for i in piece_idx])
    return [(g, int(c), float(s)) for g, c, s in zip(parts, counts, sums)]


class _PolygonSink:
    """Maps pixel-coordinate polygons to the raster's CRS, measures, filters, simplifies and writes them in
    batches: the one place that turns a piece of the mask into a feature, for regions and instances alike."""

    def __init__(self, sink, crs, transform: Affine, options: VectorizeOptions, class_names: Mapping[int, str],
                 prompt: str, multi: bool = False):
        self.sink, self.crs, self.options, self.prompt, self.multi = sink, crs, options, prompt, multi
        t = transform
        self._affine = (t.a, t.b, t.d, t.e, t.xoff, t.yoff)
        self.class_names = class_names
        self.stats = {int(c): ClassPolygonStats(int(c), n, 0, 0.0) for c, n in class_names.items()}
        self._batch: list[dict] = []

    def emit(self, cid: int, geom_px, score: float, extra: Mapping[str, object] = ()) -> bool:
        """Write one feature; False when it was dropped for being under the minimum area."""
        geom = affine_transform(geom_px, self._affine)
        area = geometry_area_m2(geom, self.crs)  # unsimplified: the area of the pixels
        if area < self.options.min_area_m2:
            return False
        if self.options.simplify_tolerance > 0:
            simple = geom.simplify(self.options.simplify_tolerance, preserve_topology=True)
            if not simple.is_empty and simple.geom_type == geom.geom_type:
                geom = simple
        if self.multi and isinstance(geom, Polygon):
            geom = MultiPolygon([geom])
        name = self.class_names.get(cid, f"class_{cid}")
        st = self.stats.setdefault(cid, ClassPolygonStats(cid, name, 0, 0.0))
        st.polygons += 1
        st.area_m2 += area
        self._batch.append({"geometry": mapping(geom), "properties": {
            "class": st.name, "class_id": cid, "prompt": self.prompt, "score": score, "area_m2": area, **dict(extra)}})
        if len(self._batch) >= _BATCH:
            self.flush()
        return True

    def flush(self) -> None:
        if self._batch:
            self.sink.writerecords(self._batch)
            self._batch.clear()

    def summary(self) -> list[ClassPolygonStats]:
        return sorted(self.stats.values(), key=lambda s: s.class_id)


@contextmanager
def _staged_gpkg(out_path: Path, schema: dict, crs, prompt: str) -> Iterator[object]:
    """A GeoPackage layer written under a temporary name and renamed to `out_path` only on success."""
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise OutputError(f"{out_path}: the output folder does not exist")
    # named after out_path, so a job's staged name (and identity) is kept in the temporary one
    tmp = out_path.with_name(f".{out_path.name.lstrip('.')}.{uuid.uuid4().hex[:8]}.tmp.gpkg")
    try:
        with fiona.open(tmp, "w", driver="GPKG", layer=POLYGON_LAYER, schema=schema, crs_wkt=_wkt(crs) or "",
                        DESCRIPTION=f"{GPKG_DESCRIPTION} of {prompt}"[:500]) as sink:
            yield sink
        os.replace(tmp, out_path)
    except BaseException:
        for leftover in (tmp, *(Path(f"{tmp}{s}") for s in ("-wal", "-shm", "-journal"))):
            leftover.unlink(missing_ok=True)
        raise


def vectorize_classes(
    class_path: Path,
    score_path: Path,
    out_path: Path,
    class_names: Mapping[int, str],
    prompt: str,
    options: VectorizeOptions = VectorizeOptions(),
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[ClassPolygonStats]:
    """Write one polygon per connected class region (never cut at chunk seams) to a GeoPackage.

    The file appears at `out_path` only on success (temporary file + os.replace)."""
    class_path, score_path = Path(class_path), Path(score_path)
    if options.chunk_size < 1:
        raise RssegError(f"chunk_size must be a positive pixel count, got {options.chunk_size}")
    with open_raster(class_path) as cls_src, open_raster(score_path) as score_src:
        if (score_src.shape, score_src.transform) != (cls_src.shape, cls_src.transform):
            raise RssegError(f"{score_path}: score raster is not on the grid of {class_path}")
        with _staged_gpkg(out_path, SCHEMA, cls_src.crs, prompt) as sink:
            polygons = _PolygonSink(sink, cls_src.crs, cls_src.transform, options, class_names, prompt)
            _vectorize(cls_src, score_src, polygons, options, progress, cancel)
            polygons.flush()
    return polygons.summary()


def _vectorize(cls_src, score_src, polygons: _PolygonSink, options, progress, cancel) -> None:
    def emit(cid: int, piece: Piece) -> None:
        polygons.emit(cid, piece[0], piece[2] / piece[1])

    cs, height, width = options.chunk_size, cls_src.height, cls_src.width
    total, done = -(-height // cs) * -(-width // cs), 0
    pending: dict[int, list[Piece]] = {}
    for r0 in range(0, height, cs):
        for c0 in range(0, width, cs):
            if cancel is not None:
                cancel.check()
            win = Window(c0, r0, min(cs, width - c0), min(cs, height - r0))
            for cid, piece, on_seam in _chunk_pieces(cls_src, score_src, win):
                if on_seam:
                    pending.setdefault(cid, []).append(piece)
                else:
                    emit(cid, piece)
            done += 1
            report(progress, "vectorise", done, total)
        # Every chunk above this row's bottom seam is read: merged polygons that stop short
        # of that seam are complete.
        seam = r0 + cs
        for cid, pieces in pending.items():
            keep = []
            for piece in _merge(pieces):
                if seam >= height or piece[0].bounds[3] < seam:
                    emit(cid, piece)
                else:
                    keep.append(piece)
            pending[cid] = keep


@dataclass(frozen=True)
class FoundObject:
    """An instance placed on the output grid: its pixels as a polygon in pixel coordinates."""

    class_id: int
    score: float
    geometry: object  # shapely Polygon or MultiPolygon, output-grid pixel coordinates


def instance_geometry(mask: np.ndarray, x0: int, y0: int):
    """An instance's pixels (bool [h, w] at x0, y0 of the output grid) as one (Multi)Polygon in pixel units.

    The parts are 4-connected components, so they share no edge (at most a corner): they make a valid
    MultiPolygon as they are, with no union to compute (which is slow for a ragged mask's many parts)."""
    parts = [shape(geom) for geom, _ in shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                                              transform=Affine.translation(x0, y0))]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def write_instances(out_path: Path, objects: list[FoundObject], crs, transform: Affine,
                    class_names: Mapping[int, str], prompt: str,
                    options: VectorizeOptions = VectorizeOptions()) -> list[ClassPolygonStats]:
    """One feature per object (not per connected region), best first per class, with its score, its rank in
    its class and an instance_id; written like vectorize_classes (staged, renamed on success)."""
    ordered = sorted(objects, key=lambda o: (o.class_id, -o.score))
    with _staged_gpkg(out_path, INSTANCE_SCHEMA, crs, prompt) as sink:
        polygons = _PolygonSink(sink, crs, transform, options, class_names, prompt, multi=True)
        rank: dict[int, int] = {}
        for obj in ordered:
            place = rank.get(obj.class_id, 0) + 1
            if polygons.emit(obj.class_id, obj.geometry, obj.score,
                             {"instance_id": sum(rank.values()) + 1, "rank": place}):
                rank[obj.class_id] = place
        polygons.flush()
    return polygons.summary()
