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
"""

from __future__ import annotations

import os
import uuid
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
from shapely.geometry import Polygon, mapping, shape

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
    valid = (cls != 0) & (cls != NODATA_CLASS)
    if cls_src.nodata is not None:
        valid &= cls != cls_src.nodata
    if not valid.any():
        return
    labels = np.zeros(cls.shape, np.int32)
    label_class = [0]
    for cid in np.unique(cls[valid]):
        lab, k = ndimage.label(cls == cid)  # default structure = 4-connectivity
        inside = lab > 0
        labels[inside] = lab[inside] + (len(label_class) - 1)
        label_class += [int(cid)] * k
    n = len(label_class)
    score = score_src.read(1, window=win).astype(np.float64)
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n)
    sums = np.bincount(flat, weights=np.where(labels > 0, score, 0.0).ravel(), minlength=n)
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
    class_path, score_path, out_path = Path(class_path), Path(score_path), Path(out_path)
    if options.chunk_size < 1:
        raise RssegError(f"chunk_size must be a positive pixel count, got {options.chunk_size}")
    if not out_path.parent.is_dir():
        raise OutputError(f"{out_path}: the output folder does not exist")
    # named after out_path, so a job's staged name (and identity) is kept in the temporary one
    tmp = out_path.with_name(f".{out_path.name.lstrip('.')}.{uuid.uuid4().hex[:8]}.tmp.gpkg")
    try:
        with open_raster(class_path) as cls_src, open_raster(score_path) as score_src:
            if (score_src.shape, score_src.transform) != (cls_src.shape, cls_src.transform):
                raise RssegError(f"{score_path}: score raster is not on the grid of {class_path}")
            stats = _vectorize(cls_src, score_src, tmp, class_names, prompt, options, progress,
                               cancel)
        os.replace(tmp, out_path)
        return stats
    except BaseException:
        for leftover in (tmp, *(Path(f"{tmp}{s}") for s in ("-wal", "-shm", "-journal"))):
            leftover.unlink(missing_ok=True)
        raise


def _vectorize(cls_src, score_src, tmp, class_names, prompt, options, progress, cancel):
    crs, t, tol = cls_src.crs, cls_src.transform, options.simplify_tolerance
    stats = {int(c): ClassPolygonStats(int(c), n, 0, 0.0) for c, n in class_names.items()}
    batch: list[dict] = []

    def emit(cid: int, piece: Piece) -> None:
        geom_px, count, ssum = piece
        geom = affine_transform(geom_px, (t.a, t.b, t.d, t.e, t.xoff, t.yoff))
        area = geometry_area_m2(geom, crs)  # unsimplified: the area of the pixels
        if area < options.min_area_m2:
            return
        if tol > 0:
            simple = geom.simplify(tol, preserve_topology=True)
            geom = simple if isinstance(simple, Polygon) and not simple.is_empty else geom
        name = class_names.get(cid, f"class_{cid}")
        st = stats.setdefault(cid, ClassPolygonStats(cid, name, 0, 0.0))
        st.polygons += 1
        st.area_m2 += area
        batch.append({"geometry": mapping(geom), "properties": {
            "class": st.name, "class_id": cid, "prompt": prompt, "score": ssum / count,
            "area_m2": area}})
        if len(batch) >= _BATCH:
            sink.writerecords(batch)
            batch.clear()

    cs, height, width = options.chunk_size, cls_src.height, cls_src.width
    total, done = -(-height // cs) * -(-width // cs), 0
    pending: dict[int, list[Piece]] = {}
    crs_wkt = _wkt(crs) or ""
    with fiona.open(tmp, "w", driver="GPKG", layer=POLYGON_LAYER, schema=SCHEMA, crs_wkt=crs_wkt,
                    DESCRIPTION=f"{GPKG_DESCRIPTION} of {prompt}"[:500]) as sink:
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
        if batch:
            sink.writerecords(batch)
    return sorted(stats.values(), key=lambda s: s.class_id)
