"""Read-only, windowed, band-mapped access to any GDAL raster.

The source is opened in read mode only, so a job can never modify the user's raster. Reads return
float32 data for the mapped bands plus a validity mask, which is where the nodata rules live.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from ..errors import BandError, DamagedRasterError, NotARasterError, RasterNotFoundError

# GDAL virtual file systems the backend reads: archives of local files, read as the path says.
LOCAL_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")
# Network file systems and URL schemes: the backend reads local files only.
_NETWORK_VSI = re.compile(r"/vsi(curl|s3|gs|az|adls|oss|swift|webhdfs|hdfs)(_streaming)?/", re.IGNORECASE)
_NETWORK_URL = re.compile(r"(^|/)(https?|ftps?|s3|gs|gcs|az|azure|abfss?|oss|swift|hdfs|webhdfs)://", re.IGNORECASE)


def is_virtual(path: str | os.PathLike) -> bool:
    """A GDAL virtual path (/vsi...) or a URL, which names no plain file of this machine."""
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def check_reachable(path: str | os.PathLike) -> None:
    """Refuse, with a clear line, what the backend process cannot read: network files and another process's
    memory. Why here: GDAL would try them and fail with an unrelated message (or wait on the network)."""
    text = os.fspath(path)
    if _NETWORK_VSI.search(text) or _NETWORK_URL.search(text):
        raise NotARasterError(f"{text} is a network address; the backend reads local files only (expected e.g. a "
                              "GeoTIFF, VRT or JP2 on this computer): download the raster and choose the local file")
    for prefix, what in (("/vsimem/", "an in-memory GDAL file of another process (/vsimem/)"),
                         ("/vsistdin", "standard input (/vsistdin/), which carries the backend's protocol")):
        if prefix in text:
            raise NotARasterError(f"{text} is {what}, which the backend cannot read; it reads local files only "
                                  "(expected e.g. a GeoTIFF, VRT or JP2): save the layer to a file and choose that")


def _archive_prefix(text: str) -> Optional[str]:
    return next((p for p in LOCAL_ARCHIVES if text.startswith(p)), None)


def backing_file(path: str | os.PathLike) -> Optional[str]:
    """The local file that holds `path`'s data: the path itself, or the archive of /vsizip/, /vsitar/,
    /vsigzip/, /vsi7z/, /vsirar/ paths (also nested: /vsizip//vsigzip/...); None when there is none
    (a missing archive, another virtual file system, a URL). For the input-is-output check and the
    feature cache's key, which must not treat "/vsizip//data/a.zip/b.tif" as a file name."""
    text = os.fspath(path)
    if not is_virtual(text):
        return text
    prefix = _archive_prefix(text)
    if prefix is None:
        return None
    inner = text[len(prefix):]
    if inner.startswith("{") and "}" in inner:  # /vsizip/{/data/a.zip}/b.tif: the archive in braces
        inner = inner[1:inner.index("}")]
    if is_virtual(inner):
        return backing_file(inner)
    cuts = [m.start() for m in re.finditer(r"[/\\]", inner) if m.start() > 0] + [len(inner)]
    return next((inner[:cut] for cut in cuts if os.path.isfile(inner[:cut])), None)  # the first file on the path


def open_raster(path: str | os.PathLike) -> rasterio.DatasetReader:
    """Open a raster read-only, turning GDAL's errors into specific, readable ones.

    A local path must be a regular file or a folder (some formats are folders): GDAL would block
    forever on a FIFO. A raster inside a local archive (/vsizip/, /vsitar/, /vsigzip/, /vsi7z/, as
    QGIS names a layer read from a zip) is read as-is, its archive checked first; network paths and
    /vsimem/ are refused (check_reachable)."""
    text = os.fspath(path)  # not Path(text): it would fold the "//" of "/vsizip//data/a.zip/b.tif"
    check_reachable(text)
    prefix = _archive_prefix(text)
    if prefix is not None:
        archive = backing_file(text)
        if archive is None:
            raise RasterNotFoundError(f"raster not found: {text} (no archive file at the start of the path "
                                      f"after {prefix})")
        try:
            return rasterio.open(text, "r")
        except RasterioIOError as exc:
            hint = ""
            if prefix in ("/vsi7z/", "/vsirar/"):  # GDAL has them only when built with libarchive
                hint = (f"; {prefix} needs GDAL 3.7 or later built with libarchive, this is GDAL "
                        f"{rasterio.__gdal_version__}: else extract the raster from the archive")
            raise NotARasterError(f"{text} is not a raster GDAL can read in the archive {archive} (expected e.g. "
                                  f"a GeoTIFF, VRT or JP2 at that name inside it{hint}): {exc}") from exc
    if not is_virtual(text):
        local = Path(text)
        try:
            mode = local.stat().st_mode
        except FileNotFoundError:
            raise RasterNotFoundError(f"raster not found: {text}") from None
        except OSError as exc:
            raise NotARasterError(f"cannot read {text}: {exc.strerror or exc}") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise NotARasterError(f"{text} is not a regular file (a FIFO, socket or device); expected a raster "
                                  "file such as a GeoTIFF, VRT or JP2")
    try:
        return rasterio.open(text, "r")
    except RasterioIOError as exc:
        kind = "a directory" if os.path.isdir(text) else "not a raster GDAL can read"
        raise NotARasterError(f"{text} is {kind} (expected e.g. a GeoTIFF, VRT or JP2): {exc}") from exc


def resolve_bands(dataset: rasterio.DatasetReader, bands: Optional[Sequence[int]], n_inputs: int) -> tuple[int, ...]:
    """Map source bands (1-based) to the model's `n_inputs` channels.

    Explicit bands are checked against the band count; one band is replicated (a panchromatic
    image as RGB). Without a mapping, red/green/blue colour interpretation wins, then the first
    bands in order.
    """
    count = dataset.count
    name = dataset.name
    if bands:
        for band in bands:
            if not 1 <= int(band) <= count:
                raise BandError(f"band {band} requested but {name} has {count} band(s) (expected 1..{count})")
        bands = tuple(int(b) for b in bands)
        if len(bands) == 1:
            return bands * n_inputs
        if len(bands) != n_inputs:
            raise BandError(
                f"the model takes {n_inputs} band(s) but {len(bands)} were given ({','.join(map(str, bands))}) "
                f"for {name}: give {n_inputs} band indices, or one to replicate"
            )
        return bands
    if count == 1:
        return (1,) * n_inputs
    if n_inputs == 3:
        interp = list(dataset.colorinterp)
        wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        if all(c in interp for c in wanted):
            return tuple(interp.index(c) + 1 for c in wanted)
    if count >= n_inputs:
        return tuple(range(1, n_inputs + 1))
    raise BandError(f"{name} has {count} bands but the model takes {n_inputs}", fixes=("bands",))


class RasterSource:
    """A raster opened read-only with a fixed band mapping.

    Validity rule (documented in docs/raster-engine.md): a pixel is invalid if the raster's own
    per-dataset mask or alpha band says so; or if *all* mapped bands equal their declared nodata
    (so a declared nodata of 255 on 8-bit RGB does not blank a bright pixel whose other bands
    differ); or if any mapped band is NaN or +-inf (float rasters only). `nodata` replaces the
    declared values with one value for every band read: a scene whose black collar is 0 without a
    nodata flag would otherwise be segmented (as "water", say).
    """

    def __init__(self, path: str | os.PathLike, bands: Optional[Sequence[int]] = None, n_inputs: int = 3,
                 resolution: Optional[float] = None, nodata: Optional[float] = None):
        """`resolution` (metres per pixel) reads through a resampled view (raster/resample.py)."""
        self._file = open_raster(path)
        self.dataset = self._file
        try:
            self.bands = resolve_bands(self.dataset, bands, n_inputs)
            if resolution is not None:
                from .resample import resampled_view

                self.dataset = resampled_view(self._file, resolution, nodata)
        except Exception:
            self._file.close()
            raise
        self.path = str(path)
        self._unique = tuple(dict.fromkeys(self.bands))
        dtypes = [np.dtype(self._file.dtypes[b - 1]) for b in self._unique]
        for band, dtype in zip(self._unique, dtypes):
            if dtype.kind == "c":
                self.close()
                raise BandError(f"band {band} of {path} holds complex numbers ({dtype.name}); expected real values: "
                                "convert it first (e.g. to amplitude)")
        self._float = any(d.kind == "f" for d in dtypes) or resolution is not None
        self.infinite_seen = False  # set once a read met +-inf, which counts as nodata
        self._take = [self._unique.index(b) for b in self.bands]
        flags = self.dataset.mask_flag_enums
        self._dataset_mask = any(
            MaskFlags.per_dataset in flags[b - 1] or MaskFlags.alpha in flags[b - 1] for b in self._unique
        )
        self._nodata = [self.dataset.nodatavals[b - 1] if nodata is None else nodata for b in self._unique]

    @property
    def width(self) -> int:
        return self.dataset.width

    @property
    def height(self) -> int:
        return self.dataset.height

    @property
    def crs(self):
        return self.dataset.crs

    @property
    def transform(self):
        return self.dataset.transform

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return (data float32 [n_inputs, h, w], valid bool [h, w]) for a window inside the raster."""
        try:
            return self._read(window)
        except RasterioIOError:
            c, r, w, h = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
            raise DamagedRasterError(
                f"cannot read {self.path} at columns {c}-{c + w - 1}, rows {r}-{r + h - 1}: the file is damaged or "
                "incomplete (truncated, a corrupt block, or a file a VRT refers to is missing)") from None

    def _read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        raw = self.dataset.read(self._unique, window=window).astype(np.float32, copy=False)
        if self._float:
            finite = np.isfinite(raw)
            valid = finite.all(axis=0)
            if not self.infinite_seen and not valid.all():
                self.infinite_seen = bool(np.isinf(raw).any())
        else:
            valid = np.ones(raw.shape[1:], dtype=bool)
        declared = [(i, nd) for i, nd in enumerate(self._nodata) if nd is not None]
        if declared and len(declared) == len(self._unique):
            all_nodata = np.ones(valid.shape, dtype=bool)
            for i, nd in declared:
                all_nodata &= np.isnan(raw[i]) if np.isnan(nd) else raw[i] == np.float32(nd)
            valid &= ~all_nodata
        if self._dataset_mask:
            valid &= self.dataset.read_masks(self._unique[0], window=window) > 0
        return (raw if self._take == list(range(len(self._unique))) else raw[self._take]), valid

    def close(self) -> None:
        if self.dataset is not self._file:
            self.dataset.close()
        self._file.close()

    def __enter__(self) -> "RasterSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
