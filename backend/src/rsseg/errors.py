"""Exceptions for bad input and interrupted jobs.

Every message names the file (or parameter) and says what was expected, so the CLI and the QGIS
message bar can show it as one line without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .protocol.contracts import FIXES, RequestError, SegmentRequest, with_fixes


class RssegError(Exception):
    """Base class: an error the user can act on (shown as one line, no traceback).

    The message says what is wrong, never which command fixes it: that is `fixes` (names of
    protocol.contracts.FIXES) and `subject` (usually the model id), which each front end words its own
    way, the CLI as commands (`text("cli")`), the QGIS plugin as the dock's buttons (the worker's error
    record carries both fields).
    """

    def __init__(self, message: str = "", *, fixes: Iterable[str] = (), subject: str = ""):
        super().__init__(message)
        self.fixes = tuple(fixes)
        unknown = [f for f in self.fixes if f not in FIXES]
        if unknown:
            raise ValueError(f"unknown fix(es) {', '.join(unknown)}; known: {', '.join(FIXES)}")
        self.subject = subject

    def text(self, front_end: str = "cli") -> str:
        """The one line `front_end` ("cli" or "gui") shows: the message and its fixes in that front end's words."""
        return with_fixes(str(self), self.fixes, self.subject, front_end)


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


class BatchError(RssegError):
    """A batch cannot run: its inputs give no raster, a table cannot be read, two rasters would share an output
    folder, Ray is missing or its cluster cannot be reached."""


class Cancelled(RssegError):
    """The job was cancelled by the user; partial outputs were removed."""


# The error each request rule (protocol.contracts.RequestError.field) has always raised here; the rest
# are ParameterErrors.
_REQUEST_ERRORS = {"prompt": ModelError, "region": RegionError, "device": DeviceError}


@contextmanager
def request_rules() -> Iterator[None]:
    """Inside, a broken request rule (a RequestError) raises the backend's error for it: the class
    names the worker's error code, and the CLI exits with 2."""
    try:
        yield
    except RequestError as exc:
        raise _REQUEST_ERRORS.get(exc.field, ParameterError)(str(exc)) from None


def check_request(request: SegmentRequest, prompt: bool = True) -> None:
    """SegmentRequest.validate(prompt), raising the backend's errors."""
    with request_rules():
        request.validate(prompt)
