"""A batch's inputs as one segment request per raster: files, glob patterns, folders and CSV tables expanded,
each raster's output folder named after it, every request checked before a worker starts."""

from __future__ import annotations

import csv
import glob
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ...errors import BatchError, RasterNotFoundError, RssegError, check_request
from ...protocol.batch import RASTER_SUFFIXES, TABLE_SUFFIX, BatchRequest
from ...protocol.contracts import RequestError, SegmentRequest, parse_class_list

TABLE_COLUMNS = ("raster", "classes", "sentence")


def _rasters_in(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    if not found:
        raise BatchError(f"folder {folder} holds no raster (files ending in {', '.join(RASTER_SUFFIXES)})")
    return found


def _matches(pattern: str) -> list[Path]:
    found = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    found = [p for p in found if p.is_file()]
    if not found:
        raise BatchError(f"no file matches {pattern!r}")
    return found


def _table_prompt(row: dict[str, str], where: str) -> Optional[dict]:
    classes, sentence = (row.get(k, "").strip() for k in ("classes", "sentence"))
    if classes and sentence:
        raise BatchError(f"{where} gives both classes and a sentence; give one (or neither, for the batch's)")
    try:
        if classes:
            return {"classes": parse_class_list(classes), "sentence": None}
        if sentence:
            return {"classes": None, "sentence": " ".join(sentence.split())}
    except RequestError as exc:
        raise BatchError(f"{where}: {exc}") from None
    return None


def _table(path: Path) -> list[tuple[Path, Optional[dict]]]:
    """The rasters of a CSV table (relative paths from the table's folder) with each row's own prompt."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            header = [(h or "").strip().lower() for h in reader.fieldnames or ()]
            if "raster" not in header:
                raise BatchError(f"table {path} has no `raster` column (its header: {', '.join(header) or 'none'}"
                                      f"); give columns {', '.join(TABLE_COLUMNS)}")
            rows = [{(k or "").strip().lower(): (v or "") for k, v in row.items() if isinstance(v, str)}
                    for row in reader]
    except FileNotFoundError:
        raise RasterNotFoundError(f"table {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BatchError(f"table {path} cannot be read as a UTF-8 CSV file: {exc}") from None
    entries = []
    for line, row in enumerate(rows, start=2):
        where = f"table {path}, line {line}"
        raster = row.get("raster", "").strip()
        if not raster:
            raise BatchError(f"{where} names no raster")
        file = Path(raster).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise RasterNotFoundError(f"{where}: raster {file} does not exist")
        entries.append((file, _table_prompt(row, where)))
    if not entries:
        raise BatchError(f"table {path} has a header but no raster rows")
    return entries


def _entries(request: BatchRequest) -> list[tuple[Path, Optional[dict]]]:
    entries: list[tuple[Path, Optional[dict]]] = []
    for item in request.inputs:
        path = Path(item).expanduser()
        if item.lower().endswith(TABLE_SUFFIX):
            entries += _table(path)
        elif glob.has_magic(item):
            entries += [(p, None) for p in _matches(item)]
        elif path.is_dir():
            entries += [(p, None) for p in _rasters_in(path)]
        elif path.exists():
            entries.append((path, None))
        else:
            raise RasterNotFoundError(f"raster {item} does not exist")
    return entries


def plan(request: BatchRequest) -> list[SegmentRequest]:
    """One checked request per raster (a raster given twice runs once), outputs in `out_dir/<raster name>/`."""
    out = Path(request.out_dir).expanduser().absolute()
    by_name: dict[str, Path] = {}
    requests = []
    for path, prompt in _entries(request):
        path = path.absolute()  # the manifest and a cluster's workers need no working folder
        name = path.stem
        earlier = by_name.get(name)
        if earlier is not None:
            if earlier.resolve() == path.resolve():
                continue  # the same raster again (a folder and a glob naming one file)
            raise BatchError(f"rasters {earlier} and {path} would both write to {out / name}: give rasters "
                                  "with different names (or run them as two batches with two output folders)")
        by_name[name] = path
        seg = replace(request.settings, raster=str(path), out_dir=str(out / name), **(prompt or {}))
        try:
            check_request(seg)
        except RssegError as exc:  # the same error, naming the raster of the batch it is about
            raise type(exc)(f"{path}: {exc}", fixes=exc.fixes, subject=exc.subject) from None
        requests.append(seg)
    return requests
