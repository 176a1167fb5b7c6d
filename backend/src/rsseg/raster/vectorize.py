"""Turn a class-id raster into per-class polygons in a GeoPackage, streaming chunk by chunk.

Why this design: class rasters can be 16k x 16k pixels, so they are read in chunk-aligned windows
and never whole. Each chunk is polygonised (GDAL, 4-connectivity) in *pixel* coordinates, which
are exact integers, so the pieces of one object cut by a chunk seam share identical edges and
union cleanly. Pieces that touch an interior seam wait; pixels facing each other across a seam with
the same class join their pieces in a union-find (`_SeamJoins`). After each row of chunks, a region
none of whose pieces reaches the bottom seam of that row can no longer grow: its pieces are unioned
once (a coverage union, the pieces noded at the pixel corners of the seams they meet on) and
written. Unioning the growing polygon with each new row instead made time grow with the square of a
tall region's height. Only at write time are coordinates mapped with the raster transform. Pixel
counts and score sums travel with the pieces, so a merged polygon's mean score is exact; they are
read off each polygon's vertical edges and the scores summed along the rows (`_pixel_sums`), and
which piece owns each pixel along a chunk side off its edges on that side, so no pixel is labelled.

Bounded memory: regions are joined across chunk seams inside the blocks of a coarse grid only
(`region_grid`, 8192 px by default), so a region spanning the raster is written as one polygon per
block it crosses instead of being held whole while it grows; a region whose pieces hold more than
MAX_JOINED_VERTICES (250,000) vertices (a class forming one network, a road grid) is written as its
pieces, cut at the chunk seams (1024 px; 512 on a busy mask), since unioning it costs GEOS memory in
proportion to its size, and as soon as its pieces pass that count, not at the end of their chunk row
(`_SeamJoins` sums the vertices per region as pieces join); a chunk's regions are polygonised and
written POLYGON_BATCH and _BATCH (or _BATCH_VERTICES) at a time, so per-pixel speckle (millions of one-pixel
regions) costs time in proportion to the pixels and memory in proportion to one chunk, which is
512² on such a mask (`chunk_size_for`). Measured: the whole job's peak RSS with `rsseg bench`.

Speed: chunks are read and their scores summed, and complete regions unioned, on worker threads
(array and GEOS work, which let go of the GIL) while the main thread polygonises (GDAL's polygonize
holds the GIL); regions become shapely arrays with one call per batch and are written with pyogrio
as WKB and columns, never one Python record per feature.

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

import itertools
import os
import threading
import uuid
import warnings
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping, Optional

import numpy as np
import pyogrio.raw
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, shape

from ..errors import OutputError, RssegError
from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import NODATA as NODATA_CLASS
from ..protocol.contracts import POLYGON_LAYER
from .areas import _wkt, geometry_areas_m2
from .normalize import sample_windows
from .outputs import GPKG_DESCRIPTION
from .region import Region
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
_BATCH = 50_000  # features per GeoPackage append
_BATCH_VERTICES = 1_000_000  # or fewer, when they hold this many vertices: held features would grow with the raster
# GeoPackage 1.2: what QGIS's older GDAL (3.6, Debian 12) reads without a warning; newer GDALs write 1.4 by default
GPKG_VERSION = "1.2"
POLYGON_BATCH = 10_000  # regions gathered into shapely polygons at once
POLYGON_BATCH_VERTICES = 200_000  # or fewer, when they hold this many vertices
CHUNK = 1024  # pixels per side of a chunk
BUSY_CHUNK, BUSY_CHANGES = 512, 0.05  # and of a busy mask's: one where this share of neighbours differ (sampled)
MAX_JOINED_VERTICES = 250_000  # a region whose pieces hold more is written cut at the chunk seams
_DTYPES = {"str": object, "int": np.int64, "float": np.float64}  # the schema's field types as arrays


@dataclass(frozen=True)
class VectorizeOptions:
    """Knobs of the vectoriser; the defaults keep every polygon exactly as the pixels draw it."""

    simplify_tolerance: float = 0.0  # map units of the raster CRS; 0 = no simplification
    min_area_m2: float = 0.0  # polygons smaller than this (square metres) are dropped
    chunk_size: int = 0  # pixels per side of the read window; 0: CHUNK, or BUSY_CHUNK for a busy mask
    # regions are cut on a grid of this many pixels (rounded up to whole chunks; 0: never): what bounds the
    # memory a region spanning the raster (a road network) would otherwise take while it is merged
    region_grid: int = 8192


@dataclass
class ClassPolygonStats:
    """What was written for one class, for the run summary shown to the user."""

    class_id: int
    name: str
    polygons: int
    area_m2: float


@dataclass
class _Pieces:
    """Connected regions as arrays: polygons in pixel coordinates with their class, pixel count and score sum."""

    cid: np.ndarray
    geom: np.ndarray
    count: np.ndarray
    sums: np.ndarray

    def __len__(self) -> int:
        return len(self.cid)

    def take(self, which: np.ndarray) -> "_Pieces":
        return _Pieces(self.cid[which], self.geom[which], self.count[which], self.sums[which])

    @staticmethod
    def join(parts: list["_Pieces"]) -> "_Pieces":
        parts = [_NO_PIECES, *parts]
        return _Pieces(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("cid", "geom", "count", "sums")))


_NO_PIECES = _Pieces(np.zeros(0, np.int64), np.empty(0, object), np.zeros(0, np.int64), np.zeros(0))


def _spans(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every integer of the ranges [lo, hi) (all hi > lo) with the index of its range."""
    length = hi - lo
    which = np.repeat(np.arange(len(lo)), length)
    return lo[which] + np.arange(len(which)) - (np.cumsum(length) - length)[which], which


@dataclass
class _Chunk:
    """One chunk of the class raster read for polygonising: its classes, which pixels are regions, and its
    scores summed along each row (what a polygon's score sum is read from)."""

    win: Window
    cls: np.ndarray  # uint8 [h, w]
    keep: Optional[np.ndarray]  # bool [h, w]: pixels of a class that is vectorised; None when all are
    row_sums: np.ndarray  # float64 [h, w + 1]: row_sums[r, c] = sum of the scores left of column c in row r

    def pieces(self, interior: dict[str, bool]) -> Iterator[tuple[_Pieces, dict[str, tuple], np.ndarray]]:
        """The chunk's 4-connected regions as polygons in global pixel coordinates, a batch at a time, with
        their pixel counts and score sums; the positions their pixels take along each side of the chunk,
        {side: (positions, region index in the batch)}; and which touch a side that is a seam (`interior`)."""
        x0, y0, h, w = int(self.win.col_off), int(self.win.row_off), int(self.win.height), int(self.win.width)
        for values, xy, ring_ends, poly_ends in _rings(self.cls, self.keep, Affine.translation(x0, y0)):
            geom = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_ends, poly_ends))
            poly = np.repeat(np.arange(len(values)), np.diff(poly_ends))[
                np.repeat(np.arange(len(ring_ends) - 1), np.diff(ring_ends))][:-1]  # the polygon of each edge
            a, b = xy[:-1] - (x0, y0), xy[1:] - (x0, y0)
            edge = np.ones(len(a), bool)
            edge[ring_ends[1:-1] - 1] = False  # from a ring's last vertex to the next ring's first: no edge
            count, sums = _pixel_sums(a, b, edge, poly, len(values), self.row_sums)
            sides = {}
            for side, axis, at in (("top", 1, 0), ("bottom", 1, h), ("left", 0, 0), ("right", 0, w)):
                # a side's pixels are those whose outer edge lies on it: edges along the side, in pixel units
                along = np.flatnonzero(edge & (a[:, axis] == at) & (b[:, axis] == at))
                lo = np.minimum(a[along, 1 - axis], b[along, 1 - axis]).astype(np.int64)
                hi = np.maximum(a[along, 1 - axis], b[along, 1 - axis]).astype(np.int64)
                positions, which = _spans(lo, hi)
                sides[side] = positions, poly[along][which]
            on_seam = np.zeros(len(values), bool)
            for side, (_, owner) in sides.items():
                if interior[side]:
                    on_seam[owner] = True
            yield _Pieces(values, geom, count, sums), sides, on_seam


def _pixel_sums(a: np.ndarray, b: np.ndarray, edge: np.ndarray, poly: np.ndarray, n: int,
                row_sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count and score sum of each polygon from its vertical edges alone (Green's theorem on the pixel
    grid): an edge at column x down rows [y0, y1) adds what lies left of x in those rows, an edge up takes it
    away, so each row keeps exactly its pixels inside the polygon, holes included. Edges run along rings
    whose orientation GDAL keeps (shells one way, holes the other), so the sign of the count is the sign of
    the sum. Why: it costs one look-up per unit of edge instead of labelling every pixel of the chunk once
    per class (the labelling was half of a chunk's time)."""
    vertical = np.flatnonzero(edge & (a[:, 0] == b[:, 0]))
    x = a[vertical, 0].astype(np.int64)
    ya, yb = a[vertical, 1].astype(np.int64), b[vertical, 1].astype(np.int64)
    rows, which = _spans(np.minimum(ya, yb), np.maximum(ya, yb))
    down = np.sign(yb - ya).astype(np.float64)
    signed_count = np.bincount(poly[vertical], weights=down * np.abs(yb - ya) * x, minlength=n)
    per_edge = np.bincount(which, weights=row_sums[rows, x[which]], minlength=len(vertical))
    signed_sum = np.bincount(poly[vertical], weights=down * per_edge, minlength=n)
    orientation = np.sign(signed_count)
    return np.rint(signed_count * orientation).astype(np.int64), signed_sum * orientation


def _rings(cls: np.ndarray, keep: Optional[np.ndarray], origin: Affine) -> Iterator[tuple]:
    """(class ids, vertices, ring ends, polygon ends) of the 4-connected regions of `cls` (where `keep`) in
    batches of POLYGON_BATCH regions or POLYGON_BATCH_VERTICES vertices, as flat arrays for
    shapely.from_ragged_array: GDAL's polygonize (one shapely object per ring was most of the time on speckle,
    and a whole chunk's regions at once most of its memory). Vertices go straight into a flat array of
    doubles: held as rasterio's tuples until the batch was gathered, they took 110 bytes each instead of 16."""
    coords = array("d")
    ring_ends, poly_ends, values = [0], [0], []

    def gather() -> tuple:
        batch = (np.asarray(values, np.int64), np.frombuffer(coords, np.float64).reshape(-1, 2).copy(),
                 np.array(ring_ends), np.array(poly_ends))
        del coords[:], values[:], ring_ends[1:], poly_ends[1:]
        return batch

    with warnings.catch_warnings():  # the first chunk's origin is the identity, which rasterio warns about
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for geom, value in shapes(cls, mask=keep, connectivity=4, transform=origin):
            for ring in geom["coordinates"]:
                coords.extend(itertools.chain.from_iterable(ring))
                ring_ends.append(len(coords) // 2)
            poly_ends.append(len(ring_ends) - 1)
            values.append(value)
            if len(values) >= POLYGON_BATCH or len(coords) >= 2 * POLYGON_BATCH_VERTICES:
                yield gather()
    if values:
        yield gather()


def _read_chunk(cls_src, score_src, win: Window) -> Optional[_Chunk]:
    """Read one chunk and sum its scores along the rows (array work, which lets go of the GIL); None when it
    holds no class to vectorise."""
    cls = cls_src.read(1, window=win)
    skip = {0, NODATA_CLASS} | ({int(cls_src.nodata)} if cls_src.nodata is not None else set())
    found = np.flatnonzero(np.bincount(cls.ravel(), minlength=256))
    present = [int(c) for c in found if int(c) not in skip]
    if not present:
        return None
    keep = None if len(present) == len(found) else np.isin(cls, present)
    scores = score_src.read(1, window=win)
    if keep is not None:  # NaN at nodata would spread along the row sums
        scores[~keep] = 0.0
    row_sums = np.zeros((cls.shape[0], cls.shape[1] + 1))
    np.cumsum(scores, axis=1, dtype=np.float64, out=row_sums[:, 1:])
    if np.isnan(row_sums[:, -1]).any():  # a NaN score of a region (a model's NaN) stays within its own region
        np.cumsum(np.nan_to_num(scores), axis=1, dtype=np.float64, out=row_sums[:, 1:])
    return _Chunk(win, cls, keep, row_sums)


def chunk_size_for(cls_src) -> int:
    """CHUNK, or BUSY_CHUNK for a busy mask (per-pixel speckle), judged on the windows the stretch samples
    (`sample_windows`: about a million pixels spread over the raster).

    Why: GDAL's polygonize holds all of a chunk's polygons, and rasterio hands each back as Python tuples,
    so a chunk's memory grows with its vertices: a 1024² chunk of speckle (785,000 vertices) took about 100 MB
    at its peak, a quarter of that at 512². On a smooth mask smaller chunks only add seams to union (8192²:
    vectorise 4.7 s at 1024, 6.3 s at 512)."""
    changed = pairs = 0
    for win in sample_windows(Region(Window(0, 0, cls_src.width, cls_src.height))):
        cls = cls_src.read(1, window=win)
        changed += np.count_nonzero(cls[:, 1:] != cls[:, :-1]) + np.count_nonzero(cls[1:] != cls[:-1])
        pairs += cls[:, 1:].size + cls[1:].size
    return BUSY_CHUNK if pairs and changed > BUSY_CHANGES * pairs else CHUNK


def _noded_at_seams(geom: np.ndarray, chunk: int, width: int, height: int) -> np.ndarray:
    """The polygons with a vertex at every pixel corner of their edges that lie on an interior chunk seam.

    Why: pieces meet only along the seams, and a coverage union needs the edges two pieces share to have the
    same vertices. Noding every edge (shapely.segmentize) instead doubled the vertices the union had to take
    and left them in its result: the union of a region spanning a 4096² raster took 0.65 s instead of 0.3 s."""
    kind, coords, (ring_ends, poly_ends) = shapely.to_ragged_array(geom)
    a, b = coords[:-1], coords[1:]
    in_ring = np.ones(len(a), bool)
    in_ring[ring_ends[1:-1] - 1] = False  # from a ring's last vertex to the next ring's first: not an edge
    x, y = a[:, 0], a[:, 1]
    on_seam = in_ring & (((x == b[:, 0]) & (x % chunk == 0) & (x > 0) & (x < width))
                         | ((y == b[:, 1]) & (y % chunk == 0) & (y > 0) & (y < height)))
    added = np.zeros(len(coords), np.int64)  # corners added after each vertex
    added[:-1][on_seam] = np.abs(b - a).sum(axis=1)[on_seam].astype(np.int64) - 1
    source = np.repeat(np.arange(len(coords)), added + 1)
    step = np.arange(len(source)) - np.repeat(np.cumsum(added + 1) - (added + 1), added + 1)
    direction = np.zeros_like(coords)
    direction[:-1] = np.sign(b - a)
    noded = coords[source] + direction[source] * step[:, None]
    return shapely.from_ragged_array(kind, noded, (np.r_[0, np.cumsum(added + 1)][ring_ends], poly_ends))


def _merge(pieces: _Pieces, seams: tuple[int, int, int]) -> _Pieces:
    """Union the pieces of one class; each connected result carries its pieces' summed counts and sums."""
    if len(pieces) < 2:
        return pieces
    try:  # pixel polygons noded where they meet form a coverage, whose union is linear in its edges
        union = shapely.coverage_union_all(_noded_at_seams(pieces.geom, *seams))
    except shapely.errors.GEOSException:
        union = shapely.union_all(pieces.geom)
    parts = np.asarray(shapely.get_parts(union))
    parts = parts[shapely.area(parts) > 0]  # the coverage union can leave zero-area slivers along chunk seams
    # An interior point of a piece lies inside exactly one merged part.
    piece_idx, part_idx = shapely.STRtree(parts).query(shapely.point_on_surface(pieces.geom), predicate="intersects")
    counts = np.bincount(part_idx, weights=pieces.count[piece_idx], minlength=len(parts)).astype(np.int64)
    sums = np.bincount(part_idx, weights=pieces.sums[piece_idx], minlength=len(parts))
    return _Pieces(np.full(len(parts), pieces.cid[0]), parts, counts, sums)


def _merge_all(groups: list[_Pieces], seams: tuple[int, int, int]) -> list[_Pieces]:
    """Regions unioned from their pieces; `seams`: chunk size, raster width and height."""
    return [_merge(g, seams) for g in groups]


class _PolygonSink:
    """Maps pixel-coordinate polygons to the raster's CRS, measures, filters, simplifies and writes them in
    batches, all as arrays: the one place that turns pieces of the mask into features, for regions and
    instances alike."""

    def __init__(self, path: Path, crs, transform: Affine, options: VectorizeOptions,
                 class_names: Mapping[int, str], prompt: str, schema: dict):
        self.path, self.crs, self.options, self.prompt = path, crs, options, prompt
        self.multi = schema["geometry"] == "MultiPolygon"
        self.fields = list(schema["properties"])
        t = transform
        self._matrix, self._offset = np.array([[t.a, t.b], [t.d, t.e]]), np.array([t.xoff, t.yoff])
        self.class_names = dict(class_names)
        self.stats = {int(c): ClassPolygonStats(int(c), n, 0, 0.0) for c, n in class_names.items()}
        self._batch: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []  # features as WKB with their fields
        self._pending = self._pending_vertices = 0
        empty = {f: np.zeros(0, _DTYPES[kind]) for f, kind in schema["properties"].items()}
        self._write(np.empty(0, object), empty, first=True)  # the layer, with its fields, even when nothing follows

    def _name(self, cid: int) -> str:
        return self.class_names.get(cid, f"class_{cid}")

    def _placed(self, geom_px: np.ndarray) -> np.ndarray:
        return shapely.transform(geom_px, lambda xy: np.matmul(self._matrix, xy.T).T + self._offset)

    def area_m2(self, geom_px: np.ndarray) -> np.ndarray:
        """Areas of pixel-coordinate polygons on the ground: the area of their pixels."""
        return geometry_areas_m2(self._placed(geom_px), self.crs)

    def emit(self, cid: np.ndarray, geom_px: np.ndarray, score: np.ndarray,
             extra: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """Write features, leaving out those under the minimum area."""
        geom = self._placed(geom_px)
        area = geometry_areas_m2(geom, self.crs)  # unsimplified: the area of the pixels
        kept = area >= self.options.min_area_m2
        if not kept.all():
            cid, geom, score, area = cid[kept], geom[kept], score[kept], area[kept]
            extra = {k: v[kept] for k, v in (extra or {}).items()}
        if not len(cid):
            return
        if self.options.simplify_tolerance > 0:
            simple = shapely.simplify(geom, self.options.simplify_tolerance, preserve_topology=True)
            same = ~shapely.is_empty(simple) & (shapely.get_type_id(simple) == shapely.get_type_id(geom))
            geom = np.where(same, simple, geom)
        if self.multi:
            for i in np.flatnonzero(shapely.get_type_id(geom) == shapely.GeometryType.POLYGON):
                geom[i] = MultiPolygon([geom[i]])
        for c in np.unique(cid):
            st = self.stats.setdefault(int(c), ClassPolygonStats(int(c), self._name(int(c)), 0, 0.0))
            st.polygons += int((cid == c).sum())
            st.area_m2 += float(area[cid == c].sum())
        names = np.array([self._name(int(c)) for c in cid], object)
        values = {"class": names, "class_id": cid.astype(np.int64), "prompt": np.full(len(cid), self.prompt, object),
                  "score": np.asarray(score, np.float64), "area_m2": area, **dict(extra or {})}
        # held as WKB until written, not as GEOS objects: on a 16384 x 2048 speckle strip that took the
        # vectoriser's peak from 272 to 245 MB (a batch is up to 50,000 features; memray showed its GEOS copies)
        self._batch.append((shapely.to_wkb(geom), values))
        self._pending += len(cid)
        self._pending_vertices += int(shapely.get_num_coordinates(geom).sum())
        if self._pending >= _BATCH or self._pending_vertices >= _BATCH_VERTICES:
            self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        wkb = np.concatenate([w for w, _ in self._batch])
        values = {f: np.concatenate([v[f] for _, v in self._batch]) for f in self.fields}
        self._batch, self._pending, self._pending_vertices = [], 0, 0
        self._write(wkb, values)

    def _write(self, wkb: np.ndarray, values: dict[str, np.ndarray], first: bool = False) -> None:
        options = {"layer_options": {"DESCRIPTION": f"{GPKG_DESCRIPTION} of {self.prompt}"[:500]},
                   "dataset_options": {"VERSION": GPKG_VERSION}} if first else {}
        crs = _wkt(self.crs) or None
        with warnings.catch_warnings():
            if crs is None:  # a raster without a CRS gives polygons without one: pyogrio's warning says nothing new
                warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            pyogrio.raw.write(str(self.path), geometry=wkb,
                              field_data=[values[f] for f in self.fields], fields=self.fields, layer=POLYGON_LAYER,
                              driver="GPKG", geometry_type="MultiPolygon" if self.multi else "Polygon", crs=crs,
                              append=not first, nan_as_null=False, promote_to_multi=False, **options)

    def summary(self) -> list[ClassPolygonStats]:
        return sorted(self.stats.values(), key=lambda s: s.class_id)


@contextmanager
def _staged_gpkg(out_path: Path) -> Iterator[Path]:
    """A GeoPackage written under a temporary name and renamed to `out_path` only on success."""
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise OutputError(f"{out_path}: the output folder does not exist")
    # named after out_path, so a job's staged name (and identity) is kept in the temporary one
    tmp = out_path.with_name(f".{out_path.name.lstrip('.')}.{uuid.uuid4().hex[:8]}.tmp.gpkg")
    try:
        yield tmp
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
    if options.chunk_size < 0:
        raise RssegError(f"chunk_size must be a positive pixel count (0: chosen), got {options.chunk_size}")
    with open_raster(class_path) as cls_src, open_raster(score_path) as score_src:
        if (score_src.shape, score_src.transform) != (cls_src.shape, cls_src.transform):
            raise RssegError(f"{score_path}: score raster is not on the grid of {class_path}")
        crs, transform, height, width = cls_src.crs, cls_src.transform, cls_src.height, cls_src.width
        if not options.chunk_size:
            options = replace(options, chunk_size=chunk_size_for(cls_src))
    with _staged_gpkg(out_path) as tmp, _ChunkReaders(class_path, score_path) as readers:
        polygons = _PolygonSink(tmp, crs, transform, options, class_names, prompt, SCHEMA)
        _vectorize(readers, height, width, polygons, options, progress, cancel)
        polygons.flush()
    return polygons.summary()


class _ChunkReaders:
    """Chunks read (and their scores summed along the rows) on worker threads, each with its own handles on
    the two rasters, while the caller polygonises the chunk before; the same threads union complete regions.

    Why: reading, the array work and GEOS let go of the GIL, polygonising does not; a GDAL handle must not be
    shared between threads."""

    def __init__(self, class_path: Path, score_path: Path, workers: int = min(2, os.cpu_count() or 1)):
        self.paths, self._local, self._opened = (class_path, score_path), threading.local(), []
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rsseg-vectorise")
        self.workers = workers

    def read(self, win: Window) -> Optional[_Chunk]:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = tuple(open_raster(p) for p in self.paths)
            with self._lock:
                self._opened.extend(handles)
        return _read_chunk(*handles, win)

    def __enter__(self) -> "_ChunkReaders":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for handle in self._opened:
            handle.close()


class _SeamJoins:
    """Which seam-touching pieces of neighbouring chunks are one region: a union-find over piece ids, joined
    where two pixels facing each other across a seam have the same class.

    Why not union the polygons as they meet: a region spanning many chunk rows (a road network, a speckle
    cluster) was unioned again with every new row, which made time grow with the square of its height;
    here each region's pieces are unioned once, when it is complete."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.vertices: dict[int, int] = {}  # a root's vertices, summed over its waiting pieces
        self.heavy: set[int] = set()  # roots that passed MAX_JOINED_VERTICES since the caller last looked

    def weigh(self, ids: np.ndarray, vertices: np.ndarray) -> None:
        """Count the vertices of new pieces (each its own root until joined)."""
        for a, n in zip(ids.tolist(), vertices.tolist()):
            self.vertices[a] = n
            if n > MAX_JOINED_VERTICES:
                self.heavy.add(a)

    def find(self, a: int) -> int:
        root = a
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while a != root:  # path compression
            self.parent[a], a = root, self.parent.get(a, a)
        return root

    def join(self, ids_a: np.ndarray, classes_a: np.ndarray, ids_b: np.ndarray, classes_b: np.ndarray) -> None:
        """Join facing pixels (two equal-length edges of piece ids, -1 for none) of the same class."""
        same = (ids_a >= 0) & (ids_b >= 0) & (classes_a == classes_b)
        for a, b in set(zip(ids_a[same].tolist(), ids_b[same].tolist())):
            root_a, root_b = self.find(a), self.find(b)
            if root_a != root_b:
                self.parent[root_b] = root_a
                total = self.vertices.get(root_a, 0) + self.vertices.pop(root_b, 0)
                self.vertices[root_a] = total
                if total > MAX_JOINED_VERTICES:
                    self.heavy.add(root_a)


def _vectorize(readers: _ChunkReaders, height: int, width: int, polygons: _PolygonSink, options, progress,
               cancel) -> None:
    def emit(pieces: _Pieces) -> None:
        if len(pieces):
            polygons.emit(pieces.cid, pieces.geom, pieces.sums / pieces.count)

    merging: deque = deque()  # unions of complete regions running on the workers, emitted in order

    def emit_merged(wait: bool = False) -> None:
        while merging and (wait or merging[0].done()):
            for merged in merging.popleft().result():
                emit(merged)
            wait = False

    cs = options.chunk_size
    # cut lines, every `grid` pixels (a whole number of chunks): pieces are joined across chunk seams inside a
    # block of the grid only, so no region held until it is complete exceeds a block
    grid = -(-options.region_grid // cs) * cs if options.region_grid > 0 else max(height, width) + cs
    total, done = -(-height // cs) * -(-width // cs), 0
    joins, next_id, cut_roots = _SeamJoins(), 0, set()
    waiting: list[_Pieces] = []  # pieces on a seam, with their ids in `waiting_ids`
    waiting_ids: list[np.ndarray] = []
    above = (np.full(width, -1, np.int64), np.zeros(width, np.int64))  # ids and classes along the seam above
    for r0 in range(0, height, cs):
        windows = [Window(c0, r0, min(cs, width - c0), min(cs, height - r0)) for c0 in range(0, width, cs)]
        below = (np.full(width, -1, np.int64), np.zeros(width, np.int64))
        previous: Optional[tuple[np.ndarray, np.ndarray]] = None  # ids and classes along the chunk before's right
        running: deque = deque()
        while windows or running:
            while windows and len(running) < readers.workers:  # at most one chunk read ahead per worker
                if cancel is not None:
                    cancel.check()
                running.append(readers.pool.submit(readers.read, windows.pop(0)))
            chunk = running.popleft().result()
            done += 1
            if chunk is None:
                previous = None
                report(progress, "vectorise", done, total)
                continue
            c0 = int(chunk.win.col_off)
            r1, c1 = r0 + int(chunk.win.height), c0 + int(chunk.win.width)
            interior = {"top": r0 > 0, "bottom": r1 < height, "left": c0 > 0, "right": c1 < width}
            # piece ids and classes along the chunk's sides, -1 where no region
            side_ids = {"top": np.full(c1 - c0, -1, np.int64), "bottom": np.full(c1 - c0, -1, np.int64),
                        "left": np.full(r1 - r0, -1, np.int64), "right": np.full(r1 - r0, -1, np.int64)}
            side_classes = {"top": chunk.cls[0], "bottom": chunk.cls[-1], "left": chunk.cls[:, 0],
                            "right": chunk.cls[:, -1]}
            for pieces, sides, on_seam in chunk.pieces(interior):
                ids = np.arange(next_id, next_id + len(pieces))
                next_id += len(pieces)
                joins.weigh(ids[on_seam], shapely.get_num_coordinates(pieces.geom[on_seam]))
                for side, (positions, owner) in sides.items():
                    side_ids[side][positions] = ids[owner]
                positions, owner = sides["top"]
                if r0 % grid:  # not on a cut line: join with the chunk row above
                    joins.join(above[0][c0 + positions], above[1][c0 + positions], ids[owner],
                               side_classes["top"][positions])
                positions, owner = sides["left"]
                if previous is not None and c0 % grid:
                    joins.join(previous[0][positions], previous[1][positions], ids[owner],
                               side_classes["left"][positions])
                # a region already written cut (too big to union) gets its new pieces written at once, not held
                # to the end of the row: held, a chunk row of a percolating class grew with the raster's width
                cut_now = {joins.find(r) for r in cut_roots}
                if cut_now:
                    seam_roots = [joins.find(i) for i in ids[on_seam].tolist()]
                    on_seam[np.flatnonzero(on_seam)[np.isin(seam_roots, list(cut_now))]] = False
                emit(pieces.take(~on_seam))
                waiting.append(pieces.take(on_seam))
                waiting_ids.append(ids[on_seam])
                if joins.heavy:  # a region too big to union, found mid-row: its waiting pieces go out now, since
                    # held to the end of the row they grew with the raster's width (a percolating speckle class)
                    heavy = {joins.find(r) for r in joins.heavy} - cut_now
                    joins.heavy.clear()
                    cut_roots |= heavy
                    for k, held in enumerate(waiting_ids):
                        out = np.isin([joins.find(i) for i in held.tolist()], list(heavy))
                        if out.any():
                            emit(waiting[k].take(out))
                            waiting[k], waiting_ids[k] = waiting[k].take(~out), held[~out]
            previous = side_ids["right"], side_classes["right"].astype(np.int64)
            below[0][c0:c1], below[1][c0:c1] = side_ids["bottom"], side_classes["bottom"]
            report(progress, "vectorise", done, total)
        # Every chunk above this row's bottom seam is read: a region none of whose pieces reaches that seam is
        # complete, and all of them at a cut line.
        seam = r0 + cs
        pieces = _Pieces.join(waiting)
        roots = np.array([joins.find(i) for i in np.concatenate([np.zeros(0, np.int64), *waiting_ids]).tolist()],
                         np.int64)
        if seam >= height or seam % grid == 0:
            open_roots = np.zeros(0, np.int64)
        else:
            open_roots = np.unique([joins.find(i) for i in np.unique(below[0][below[0] >= 0]).tolist()])
        # a region too big to union (flagged as its pieces joined) is written as its pieces, cut at the chunk
        # seams: it would hold GEOS for minutes and gigabytes (a class percolating through per-pixel speckle)
        cut_roots = {joins.find(r) for r in cut_roots}
        cut = np.isin(roots, list(cut_roots))
        emit(pieces.take(cut))
        pieces, roots, roots_cut = pieces.take(~cut), roots[~cut], roots[cut]
        still_open = np.isin(roots, open_roots)
        complete, complete_roots = pieces.take(~still_open), roots[~still_open]
        order = np.argsort(complete_roots, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(complete_roots[order]) != 0]) if len(order) else []
        if len(order):  # unioned on a worker (GEOS lets go of the GIL) while this thread polygonises the next row
            merging.append(readers.pool.submit(_merge_all, [complete.take(g) for g in np.split(order, starts[1:])],
                                               (cs, width, height)))
        emit_merged(wait=len(merging) > readers.workers)
        for root in set(complete_roots.tolist()) | set(roots_cut.tolist()):
            joins.vertices.pop(root, None)
        waiting, waiting_ids = [pieces.take(still_open)], [roots[still_open]]
        above = below
        if seam % grid == 0:
            joins, cut_roots = _SeamJoins(), set()
    while merging:
        emit_merged(wait=True)


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
    with _staged_gpkg(out_path) as tmp:
        polygons = _PolygonSink(tmp, crs, transform, options, class_names, prompt, INSTANCE_SCHEMA)
        geom = np.array([o.geometry for o in ordered], object)
        kept = polygons.area_m2(geom) >= options.min_area_m2  # ids and ranks count the objects written
        cid = np.array([o.class_id for o in ordered], np.int64)[kept]
        ids = np.arange(1, len(cid) + 1, dtype=np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(cid)) + 1]  # where each class begins
        rank = ids - np.repeat(starts, np.diff(np.r_[starts, len(cid)]))
        polygons.emit(cid, geom[kept], np.array([o.score for o in ordered], np.float64)[kept],
                      {"instance_id": ids, "rank": rank})
        polygons.flush()
    return polygons.summary()
