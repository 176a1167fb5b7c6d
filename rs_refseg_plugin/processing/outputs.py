"""Hand a job's files (mask.tif, polygons.gpkg) to Processing's destinations, and style them on load.

The backend writes GeoTIFF and GeoPackage into its out_dir; a destination of the same format gets
the file by an atomic move (a rename, or across file systems a copy to a hidden file next to the
destination then a rename), any other format is converted with GDAL (gdal.Translate /
gdal.VectorTranslate). check_destinations refuses, before the job runs, a destination that cannot
be written. Every failure is a one-line QgsProcessingException naming the output and the file, and
leaves no partial file behind. Loaded outputs get the class palette (objects: graduated by score), a
name of the prompt, the model and the time ("water, tree — clip-vit-b-16 14:05:12 (mask)"), and the full
prompt in their metadata.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional, Sequence

from osgeo import gdal
from qgis.core import (
    QgsDataSourceUri,
    QgsMapLayer,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterFileWriter,
    QgsVectorFileWriter,
)

from ..core.result_layers import group_name, set_metadata, style_raster, style_vector
from ..protocol.contracts import POLYGON_LAYER, ClassSummary, SegmentResult

RASTER_NATIVE = (".tif", ".tiff")
VECTOR_NATIVE = (".gpkg",)
_COPY_CHUNK = 1 << 20
_LOW_SPACE = 1 << 20  # a conversion failing with less free space than this failed for want of space
_GDAL_HINT = re.compile(r"\s*\(use -\w+[^)]*\)")  # "(use -skipfailures to skip errors)": command-line advice
# "postgis:dbname=...", "memory:", "ogr:" without a file: not files (a Windows drive letter is)
_NOT_A_FILE = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:(?![\\/])")

_REASONS = {getattr(errno, name): reason for name, reason in (
    ("EROFS", "read-only file system"),
    ("ENOSPC", "no space left on the device"),
    ("EDQUOT", "disk quota exceeded"),
    ("EACCES", "permission denied"),
    ("EPERM", "permission denied"),
    ("ENOENT", "no such file or folder"),
    ("ENOTDIR", "a part of the path is a file, not a folder"),
    ("EISDIR", "it is a folder"),
    ("EEXIST", "a file of that name is in the way"),
    ("ENAMETOOLONG", "the name is too long"),
    ("EFBIG", "the file is too large for this file system"),
    ("EIO", "input/output error"),
) if hasattr(errno, name)}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def os_reason(exc: OSError) -> str:
    """What went wrong, in a few words, without the path or the exception's type."""
    return _REASONS.get(exc.errno) or _one_line(exc.strerror or exc).lower() or "unknown error"


def file_destination(destination: str) -> str:
    """A destination as "path" or "path|layername=x": the dialog's "Save to GeoPackage…" gives
    `ogr:dbname='/path/x.gpkg' table="x" (geom)`; anything else is returned as is."""
    if destination.startswith("ogr:"):
        uri = QgsDataSourceUri(destination[len("ogr:"):])
        if uri.database():
            return f"{uri.database()}|layername={uri.table()}" if uri.table() else uri.database()
    return destination


def _file_path(destination: str) -> str:
    return file_destination(destination).partition("|")[0]


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _existing_ancestor(folder: Path) -> Path:
    while not os.path.lexists(folder) and folder.parent != folder:
        folder = folder.parent
    return folder


def check_destination(label: str, destination: str, input_raster: Optional[str] = None) -> Path:
    """Refuse (QgsProcessingException) a file destination that cannot be written; return its path.

    The destination must be a file path (not a database or memory layer), not a folder or a
    device, not the input raster; its folder must exist and be writable, or be creatable (probed
    with a uniquely named file that is removed at once; no folder is created here).
    """
    path = _file_path(destination)
    if not path or _NOT_A_FILE.match(path) or path.lower().startswith("/vsi"):
        raise QgsProcessingException(f"{label}: “{destination}” is not a file; choose a file to save to")
    dest = Path(os.path.abspath(path))
    if dest.is_dir():
        raise QgsProcessingException(f"{label}: “{dest}” is a folder; choose a file name in it")
    if os.path.lexists(dest) and not dest.is_file():
        raise QgsProcessingException(f"{label}: “{dest}” is not a regular file; choose another file")
    if input_raster and _same_file(dest, Path(input_raster)):
        raise QgsProcessingException(f"{label}: “{dest}” is the input raster; choose another file")
    folder = dest.parent
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        what = "is a file" if existing.is_file() else "is not a folder"
        raise QgsProcessingException(f"{label}: cannot create the folder “{folder}”: “{existing}” {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rsseg-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        # the folder exists: "no such file" means the file system makes no files there (/proc)
        reason = "files cannot be created there" if exc.errno == errno.ENOENT else os_reason(exc)
        if existing == folder:
            raise QgsProcessingException(f"{label}: cannot write to the folder “{folder}” ({reason})") from None
        raise QgsProcessingException(f"{label}: cannot create the folder “{folder}” in “{existing}” ({reason})") \
            from None
    if dest.is_file() and not os.access(dest, os.W_OK):
        raise QgsProcessingException(f"{label}: “{dest}” is read-only; choose another file")
    return dest


def check_destinations(destinations: Iterable[tuple[str, str]], input_raster: Optional[str] = None) -> None:
    """check_destination for each (label, destination), and no two outputs to the same file."""
    seen: list[tuple[str, Path]] = []
    for label, destination in destinations:
        dest = check_destination(label, destination, input_raster)
        for other_label, other in seen:
            if _same_file(dest, other):
                raise QgsProcessingException(f"{label}: “{dest}” is also the {other_label} file; "
                                             "choose another file")
        seen.append((label, dest))


def _make_folder(folder: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, deepest first (for _remove_folders)."""
    created = []
    missing = folder
    while not os.path.lexists(missing) and missing.parent != missing:
        created.append(missing)
        missing = missing.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        _remove_folders(created)
        raise
    return created


def _remove_folders(created: list[Path]) -> None:
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if still empty


def _write_failed(label: str, dest: Path, reason: str) -> QgsProcessingException:
    return QgsProcessingException(f"{label}: cannot write “{dest}”: {reason}")


def move_file(source: str, dest: Path, label: str) -> None:
    """Move `source` to `dest` atomically: a rename, or across file systems a copy to a hidden file in
    the destination's folder, then a rename. On failure no partial file (nor created folder) remains."""
    created: list[Path] = []
    try:
        created = _make_folder(dest.parent)
        try:
            os.replace(source, dest)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        fd, part = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
            shutil.copymode(source, part)
            os.replace(part, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        with contextlib.suppress(OSError):
            os.unlink(source)
    except OSError as exc:
        _remove_folders(created)
        raise _write_failed(label, dest, os_reason(exc)) from None


def _remove_dataset(driver: str, dest: Path) -> None:
    """Delete a partly written dataset (with its side-car files) that GDAL left behind."""
    with contextlib.suppress(Exception):
        gdal_driver = gdal.GetDriverByName(driver)
        if gdal_driver is not None and os.path.lexists(dest):
            gdal_driver.Delete(str(dest))
    with contextlib.suppress(OSError):
        dest.unlink()


def _gdal_reason(folder: Path, errors: list[str]) -> str:
    """Why a GDAL conversion failed, in one line: GDAL reports a full disk in many ways ("out of disk
    space?", a failed seek or a failed translation), so a folder without space says so itself."""
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < _LOW_SPACE:
            return "no space left on the device"
    message = errors[0] if errors else "GDAL could not write the file"
    return _GDAL_HINT.sub("", message).strip() or "GDAL could not write the file"


def _convert(label: str, dest: Path, driver: str, convert, *args, replaces_file: bool = True, **kwargs) -> None:
    """Run gdal.Translate / gdal.VectorTranslate into `dest`; a failure (GDAL's errors while writing or
    closing) is a one-line QgsProcessingException and removes what GDAL wrote (a file that existed
    before is kept when `replaces_file` is false: a layer written into an existing multi-layer file)."""
    existed = os.path.lexists(dest)
    try:
        created = _make_folder(dest.parent)
    except OSError as exc:
        raise _write_failed(label, dest, os_reason(exc)) from None
    errors: list[str] = []

    def collect(level, _number, message):
        if level >= gdal.CE_Failure:
            errors.append(_one_line(message))

    previous = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    gdal.PushErrorHandler(collect)  # per thread: Processing runs algorithms in a task's thread
    try:
        dataset = convert(str(dest), *args, **kwargs)
        written = dataset is not None
        dataset = None  # closing flushes the file (and reports a full disk)
    finally:
        gdal.PopErrorHandler()
        if previous:
            gdal.UseExceptions()
    if written and not errors:
        return
    reason = _gdal_reason(dest.parent, errors)
    if replaces_file or not existed:
        _remove_dataset(driver, dest)
    _remove_folders(created)
    raise _write_failed(label, dest, reason)


def deliver_raster(source: str, destination: str, label: str = "Mask") -> str:
    """Move (GeoTIFF) or convert the mask to `destination`, a file path."""
    dest = Path(destination)
    if dest.suffix.lower() in RASTER_NATIVE:
        move_file(source, dest, label)
    else:
        driver = QgsRasterFileWriter.driverForExtension(dest.suffix) or "GTiff"
        _convert(label, dest, driver, gdal.Translate, source, format=driver)
    return str(dest)


def discard_raster(destination: str) -> None:
    """Remove a mask deliver_raster wrote (when the polygons could not be written after it)."""
    dest = Path(destination)
    native = dest.suffix.lower() in RASTER_NATIVE
    _remove_dataset("GTiff" if native else (QgsRasterFileWriter.driverForExtension(dest.suffix) or "GTiff"), dest)


def deliver_vector(source: str, destination: str, label: str = "Polygons") -> str:
    """Move (GeoPackage) or convert the polygons to `destination` ("path", "path|layername=x" or
    "ogr:dbname='path' table=\"x\" (geom)")."""
    path, _, options = file_destination(destination).partition("|")
    dest = Path(path)
    if dest.suffix.lower() in VECTOR_NATIVE and not options:
        move_file(source, dest, label)
    else:
        driver = QgsVectorFileWriter.driverForExtension(dest.suffix) or "GPKG"
        layer = options.split("layername=", 1)[1].split("|")[0] if "layername=" in options else dest.stem
        _convert(label, dest, driver, gdal.VectorTranslate, source, format=driver, layerName=layer,
                 layers=[POLYGON_LAYER], accessMode="overwrite", replaces_file=False)
    return destination


class ResultStyler(QgsProcessingLayerPostProcessorInterface):
    """Applies the result's class palette to a loaded output (raster: paletted, vector: categorized, or
    graduated by score for one polygon per object: result_layers.style_vector, the dock's styling) and, given
    the result, its metadata (title, the full prompt in the abstract, the model, the summary)."""

    def __init__(self, classes: Sequence[ClassSummary], result: Optional[SegmentResult] = None, kind: str = "",
                 when: Optional[datetime] = None):
        super().__init__()
        self.classes = classes
        self.result, self.kind, self.when = result, kind, when

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        if layer is None or not layer.isValid():
            return
        if layer.type() == QgsMapLayer.RasterLayer:
            style_raster(layer, self.classes)
        elif layer.type() == QgsMapLayer.VectorLayer:
            style_vector(layer, self.classes)
        if self.result is not None:
            set_metadata(layer, self.result, self.kind, self.when)
        layer.triggerRepaint()


def output_name(result: SegmentResult, kind: str, when: Optional[datetime] = None) -> str:
    """A loaded output's name: "<short prompt> — <model> <HH:MM:SS> (<kind>)"."""
    return f"{group_name(result, when)} ({kind})"


# Processing keeps only a pointer to a post-processor: the Python object must outlive the run.
_KEEP_MAX = 64
_kept: list[ResultStyler] = []
_kept_lock = threading.Lock()


def keep(styler: ResultStyler) -> ResultStyler:
    with _kept_lock:
        _kept.append(styler)
        del _kept[:-_KEEP_MAX]
    return styler


def style_on_load(context, destination: str, result: SegmentResult, kind: str,
                  when: Optional[datetime] = None) -> None:
    """For an output loaded when the algorithm ends: its name (output_name; QGIS still names a file
    after itself where its "prefer file name as layer name" setting says so), palette and metadata."""
    if context.willLoadLayerOnCompletion(destination):
        details = context.layerToLoadOnCompletionDetails(destination)
        details.name = output_name(result, kind, when)
        details.setPostProcessor(keep(ResultStyler(result.classes, result, kind, when)))
