"""Exceptions for bad input and interrupted jobs.

Every message names the file (or parameter) and says what was expected, so the CLI and the QGIS
message bar can show it as one line without a traceback.
"""

from __future__ import annotations


class RssegError(Exception):
    """Base class: an error the user can act on (shown as one line, no traceback)."""


class RasterNotFoundError(RssegError):
    """The raster path does not exist."""


class NotARasterError(RssegError):
    """The file exists but GDAL cannot open it as a raster."""


class DamagedRasterError(RssegError):
    """GDAL opened the raster but a read failed: a truncated file, a corrupt block, a missing VRT source."""


class BandError(RssegError):
    """A band index is out of range or the band mapping does not fit the model."""


class RegionError(RssegError):
    """The requested region is empty, invalid or outside the raster."""


class AllNodataError(RssegError):
    """The region holds no valid pixel (all nodata or NaN)."""


class OutputError(RssegError):
    """The output location cannot be written."""


class ModelError(RssegError):
    """Unknown model id, missing weights, or a prompt the model cannot take."""


class WeightsError(ModelError):
    """A weight file is missing, failed its checksum, or could not be downloaded or imported."""


class ParameterError(RssegError):
    """A job parameter is out of range (tile size, overlap, batch size...)."""


class DeviceError(RssegError):
    """The requested compute device is not available."""


class Cancelled(RssegError):
    """The job was cancelled by the user; partial outputs were removed."""
