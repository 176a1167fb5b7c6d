"""Importing a weight file the user fetched elsewhere (offline machines, blocked hosts, a USB stick).

The user's file is only read: it is copied into a temporary file in the weights dir, hashed while
copying, and renamed into place only when it matches one of the model's files. A wrong file leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import WeightsError
from ..progress import ProgressCallback, report
from ..spec import ModelSpec, WeightFile
from .attest import pinned
from .store import weight_path, weights_dir
from .verify import CHUNK, record_verified


def _expected(weights: list[WeightFile] | tuple[WeightFile, ...]) -> str:
    return ", ".join(f"{w.name} ({w.size} bytes, sha256 {w.sha256})" for w in weights)


def import_weight(spec: ModelSpec, file: str | Path, progress: Optional[ProgressCallback] = None) -> Path:
    """Copy `file` into the weights dir as the model file it matches (by size, then sha256); return its path."""
    source = Path(file).expanduser()
    if not source.is_file():
        raise WeightsError(f"cannot import {source}: no such file")
    if not spec.weights:
        raise WeightsError(f"model {spec.id!r} needs no weight files; nothing to import")
    size = source.stat().st_size
    known = [pinned(w) for w in spec.weights]
    candidates = [w for w in known if w.published and w.size == size]
    if not candidates:
        unknown = [w.name for w in known if not w.published]
        unchecked = (f"; {', '.join(unknown)} cannot be imported before a download of {spec.id} has pinned their "
                     "checksums (the registry has none of its own)") if unknown else ""
        raise WeightsError(f"{source} is {size} bytes, which matches no weight file of model {spec.id!r}: expected "
                           f"{_expected([w for w in known if w.published])}{unchecked}",
                           fixes=("download",) if unknown else (), subject=spec.id)
    folder = weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".import-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        actual = _copy_hashing(source, fd, size, progress)
        match = next((w for w in candidates if w.sha256 == actual), None)
        if match is None:
            raise WeightsError(f"{source} failed its checksum for model {spec.id!r}: got sha256 {actual}, expected "
                               f"{_expected(candidates)}")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; match the other files in the dir
        weight_path(match).parent.mkdir(parents=True, exist_ok=True)  # names may hold a folder
        os.replace(tmp, weight_path(match))  # atomic: never a half-copied file under the real name
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    record_verified(match)
    return weight_path(match)


def _copy_hashing(source: Path, fd: int, size: int, progress: Optional[ProgressCallback]) -> str:
    """Copy `source` into the open temp file `fd`; the hash is of the bytes written, i.e. of the copy."""
    hasher = hashlib.sha256()
    done = 0
    with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            hasher.update(chunk)
            done += len(chunk)
            report(progress, "import", done, size)
        dst.flush()
        os.fsync(dst.fileno())
    return hasher.hexdigest()
