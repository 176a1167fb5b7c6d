"""What a job owns in its output folder, and how it stages, replaces and cleans up only that.

Why: the output folder is the user's. A job may replace or remove a file there only if an earlier
rsseg job wrote it (a result.json in rsseg's schema, a GeoTIFF tagged RSSEG_JOB, a GeoPackage
whose layer description says rsseg); anything else at an output's name, and above all the input
raster itself, makes the job refuse before it runs. Files being written carry the job's identity
(process id + random part) in their hidden names, so the next job in the folder can tell the
leftovers of a killed job (its process is gone) from the files of a job still running.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import rasterio

from ..errors import OutputError
from ..protocol.contracts import OUTPUTS
from .source import backing_file

JOB_TAG = "RSSEG_JOB"  # GeoTIFF metadata item naming the job that wrote the file
GPKG_DESCRIPTION = "rsseg polygons"  # prefix of the polygon layer's description in gpkg_contents
_RESULT_KEYS = {"request", "prompt", "mask", "classes", "timings"}
# Hidden names a job creates: .<stem>.rsseg-<pid>-<hex>.partial<suffix>[-wal...], .rsseg-spill-<pid>-<hex>,
# .rsseg-write-test-<pid>-<hex>
_STAGED = re.compile(r"^\.(?:.+\.rsseg|rsseg-spill|rsseg-write-test)-(?P<pid>\d+)-[0-9a-f]{8}(?:\.partial|$)")


def new_job_id() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def job_pid(job: str) -> int:
    return int(job.split("-", 1)[0])


class StagedFile:
    """A final path plus the hidden temporary path, named after the job, that is written first."""

    def __init__(self, final: Path, job: str | None = None):
        self.final = final
        self.temp = final.with_name(f".{final.stem}.rsseg-{job or new_job_id()}.partial{final.suffix}")

    def commit(self) -> None:
        os.replace(self.temp, self.final)

    def discard(self) -> None:
        for path in (self.temp, *(Path(f"{self.temp}{s}") for s in (".aux.xml", "-wal", "-shm", "-journal"))):
            path.unlink(missing_ok=True)


def commit_outputs(staged: dict[str, StagedFile], *, scores: bool, polygons: bool) -> None:
    """Rename the produced files (mask and result always; scores and polygons when made) into place; a file of an
    earlier job that this one did not produce goes, since it would no longer match the new mask."""
    produced = {"mask", "result"} | ({"scores"} if scores else set()) | ({"polygons"} if polygons else set())
    for key, item in staged.items():
        if key in produced:
            item.commit()
        else:
            item.final.unlink(missing_ok=True)


def prepare_out_dir(out_dir: str | os.PathLike, job: str | None = None) -> Path:
    """Create the output folder if needed and check it is writable (OutputError otherwise)."""
    if not str(out_dir).strip():
        raise OutputError("no output folder given (an empty path): choose a folder for the results")
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {path}: {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a folder")
    probe = path / f".rsseg-write-test-{job or new_job_id()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output folder {path} is not writable: {exc.strerror or exc}") from exc
    return path


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def written_by_rsseg(path: Path) -> bool:
    """Whether `path` (not a link) holds an earlier rsseg job's output, judged by its own content."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and _RESULT_KEYS <= set(data)
        if path.suffix == ".tif":
            with rasterio.open(path) as dataset:
                return JOB_TAG in dataset.tags()
        if path.suffix == ".gpkg":  # read-only and immutable: no lock or journal file is created
            uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1".replace("file://", "file:", 1)
            with closing(sqlite3.connect(uri, uri=True)) as db:
                rows = db.execute("SELECT description FROM gpkg_contents").fetchall()
            return any(str(d or "").startswith(GPKG_DESCRIPTION) for (d,) in rows)
    except (OSError, ValueError, sqlite3.Error, rasterio.errors.RasterioError):
        return False
    return False


def check_outputs(folder: Path, raster: str) -> None:
    """Refuse before running when an output name holds the input raster or a file rsseg did not write."""
    for name in OUTPUTS.values():
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        if _same_file(path, backing_file(raster) or raster):  # a raster in an archive: the archive
            same = "" if str(path) == str(raster) else f" ({raster})"
            raise OutputError(f"{path} is the input raster{same}: writing the results into {folder} would replace "
                              "it; choose another output folder")
        if not written_by_rsseg(path):
            raise OutputError(f"{path} exists and was not written by rsseg (a job replaces only its own earlier "
                              "outputs): move or rename it, or choose another output folder")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        try:
            import psutil
        except ImportError:
            return True
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_note(removed: list[str]) -> str:
    """The result note naming what remove_stale cleaned up (is_stale_note recognises it)."""
    return f"removed {len(removed)} {_STALE} from the output folder: " + ", ".join(removed)


def is_stale_note(note: str) -> bool:
    return note.startswith("removed ") and _STALE in note


_STALE = "leftover file(s) of interrupted rsseg jobs"


def remove_stale(folder: Path) -> list[str]:
    """Remove the staged files and spill folders of jobs whose process is gone; returns their names."""
    removed = []
    for entry in folder.iterdir():
        match = _STAGED.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # another job cleaned it first
        except OSError:
            continue  # left for a later job; never fails this one
        removed.append(entry.name)
    return sorted(removed)


def output_failure(folder: Path, exc: BaseException, printed: str = "") -> OutputError:
    """One line for a write that failed part-way: which folder, and why in words."""
    text = f"{exc} {printed}"
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "No space left" in text or "disk is full" in text:  # the last: SQLite (GeoPackage)
        why = "is full (no space left on the device)"
    elif code == errno.EFBIG or "File too large" in text:
        why = "cannot take a file this large (file size limit reached)"
    elif code == errno.EROFS or "Read-only file system" in text:
        why = "is on a read-only file system"
    elif code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        why = "is not writable (permission denied)"
    else:
        why = f"could not be written ({getattr(exc, 'strerror', None) or exc})"
    return OutputError(f"the output folder {folder} {why}: the job stopped and removed its partial files")
