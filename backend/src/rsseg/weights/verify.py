"""Checking weight files against the registry's size and sha256, without re-hashing on every look.

Hashing a 2.5 GB checkpoint takes seconds, so `weight_status` (called for `rsseg models`, the
doctor report and the plugin's model list) trusts a small record, `.verified.json` in the weights
dir, written after a successful verify, download or import: a file whose size and mtime still
match its record (and is the same inode) counts as verified. `verify_model` always re-hashes, and so
does `checked_paths`, the gate every model loader passes, for any file the record does not vouch for.
A file the registry has no checksum for is checked against its pin from the download that fetched it
(attest.py).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import WeightsError
from ..progress import ProgressCallback, report
from ..spec import ModelSpec, WeightFile
from .attest import pinned, read_pins
from .store import candidate_urls, read_json, weight_path, write_json

CHUNK = 1 << 20  # 1 MiB: bounded memory whatever the file size
RECORD = ".verified.json"


@dataclass(frozen=True)
class WeightState:
    """One weight file on disk. `verified`: True (hash known good), False (known bad), None (not checked)."""

    name: str
    path: Path
    present: bool
    verified: Optional[bool]
    size: Optional[int]  # bytes on disk, None when absent

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def update_hash(hasher: Any, path: Path, progress: Optional[ProgressCallback] = None, stage: str = "verify",
                total: Optional[int] = None) -> int:
    """Feed a file to `hasher` in 1 MiB chunks; returns the byte count (used to resume downloads)."""
    total = path.stat().st_size if total is None else total
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            done += len(chunk)
            report(progress, stage, done, total)
    return done


def sha256_file(path: str | Path, progress: Optional[ProgressCallback] = None) -> str:
    """Streaming sha256 of a file (hex), reporting ("verify", bytes done, bytes total)."""
    hasher = hashlib.sha256()
    update_hash(hasher, Path(path), progress)
    return hasher.hexdigest()


def replace_fixes(spec: ModelSpec) -> tuple[str, ...]:
    """The fixes (protocol.contracts.FIXES) for a missing or bad file of `spec`: a download, or an import of
    a file fetched elsewhere; only the import when a file has nowhere to be downloaded from."""
    if all(candidate_urls(w) for w in spec.weights):
        return ("download", "import")
    return ("import",)


def verify_file(path: str | Path, weight: WeightFile, progress: Optional[ProgressCallback] = None,
                model_id: str = "") -> None:
    """Raise WeightsError unless `path` has the registry's (or the pinned) size and sha256 for `weight`
    (`model_id`: the model it belongs to, which the fix names)."""
    path, weight = Path(path), pinned(weight)
    if not weight.published:
        raise WeightsError(f"{weight.name} has no published checksum and was never downloaded here, so there is "
                           "nothing to check it against", fixes=("download",), subject=model_id)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist (expected {weight.name}, {weight.size} bytes)")
    size = path.stat().st_size
    if size != weight.size:
        raise WeightsError(f"weight file {path} is {size} bytes, expected {weight.size} bytes for {weight.name} "
                           f"(sha256 {weight.sha256})")
    actual = sha256_file(path, progress)
    if actual != weight.sha256:
        raise WeightsError(f"weight file {path} failed its checksum for {weight.name}: expected sha256 "
                           f"{weight.sha256}, got {actual}")


def _read_record() -> dict[str, Any]:
    return read_json(RECORD)


def record_verified(weight: WeightFile, st: Optional[os.stat_result] = None) -> None:
    """Remember that the file at weight_path(weight) hashed to weight.sha256 (size, mtime and inode as keys:
    an edit or a replacement changes one of them). `st`: its stat from before hashing, so a change made
    while it was hashed leaves the record stale."""
    weight = pinned(weight)
    st = weight_path(weight).stat() if st is None else st
    data = _read_record()
    data[weight.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "sha256": weight.sha256}
    write_json(RECORD, data)


def forget_verified(weight: WeightFile) -> None:
    data = _read_record()
    if data.pop(weight.name, None) is not None:
        write_json(RECORD, data)


def _state(weight: WeightFile, record: dict[str, Any]) -> WeightState:
    """The state of `weight` (already resolved with `pinned`) against the verified record."""
    path = weight_path(weight)
    try:
        st = path.stat()
    except OSError:
        return WeightState(weight.name, path, False, None, None)
    if not weight.published:
        verified: Optional[bool] = None  # nothing to compare with until a download pins it
    elif st.st_size != weight.size:
        verified = False  # wrong size: known bad without hashing
    else:
        entry = record.get(weight.name)
        ok = isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == \
            st.st_mtime_ns and entry.get("ino") == st.st_ino and entry.get("sha256") == weight.sha256
        verified = True if ok else None
    return WeightState(weight.name, path, True, verified, st.st_size)


def weight_state(weight: WeightFile) -> WeightState:
    return _state(pinned(weight), _read_record())


def resolved_status(spec: ModelSpec) -> list[tuple[WeightFile, WeightState]]:
    """Each weight file, with its pinned size and sha256 filled in, and its state: stat calls and one
    read of each small JSON record, no hashing."""
    if not spec.weights:
        return []
    record, pins = _read_record(), read_pins()
    return [(w, _state(w, record)) for w in (pinned(w, pins) for w in spec.weights)]


def weight_status(spec: ModelSpec) -> list[WeightState]:
    """Cheap per-file status of a model's weights (see resolved_status)."""
    return [state for _, state in resolved_status(spec)]


def all_present(status: list[tuple[WeightFile, WeightState]]) -> bool:
    """Every file exists with its expected size (an unpublished file not yet pinned has none: missing)."""
    return all(s.present and w.size is not None and s.size == w.size for w, s in status)


def weights_present(spec: ModelSpec) -> bool:
    """True when every weight file exists with the expected size (always True for weight-free models)."""
    return all_present(resolved_status(spec))


def verify_model(spec: ModelSpec, progress: Optional[ProgressCallback] = None) -> list[WeightState]:
    """Re-hash every weight file of `spec`; records the good ones and raises one WeightsError for the bad
    (a missing or bad file is fixed by a download or an import; an unpinned one by a download)."""
    problems, fixes, replace = [], set(), replace_fixes(spec)
    for weight in spec.weights:
        path = weight_path(weight)
        if not path.is_file():
            problems.append(f"{weight.name} is missing from {path.parent}")
            fixes.update(replace)
            continue
        try:
            verify_file(path, weight, progress, spec.id)
        except WeightsError as exc:
            forget_verified(weight)
            problems.append(str(exc))
            fixes.update(exc.fixes or replace)
        else:
            record_verified(weight)
    if problems:
        raise WeightsError(f"model {spec.id!r}: " + "; ".join(problems),
                           fixes=[f for f in ("download", "import") if f in fixes], subject=spec.id)
    return weight_status(spec)


def checked_paths(spec: ModelSpec) -> list[Path]:
    """The paths of `spec`'s weight files, each proven to have its registered (or pinned) size and sha256.

    The one gate before anything reads a model's weights: a missing, unpinned or wrong-size file is
    refused without being opened; a file the verified record does not vouch for (never verified, or
    its size, mtime or inode changed since) is re-hashed now, recorded when good and forgotten when bad.
    """
    fix = {"fixes": replace_fixes(spec), "subject": spec.id}
    status = resolved_status(spec)
    if not all(state.present for _, state in status):
        raise WeightsError(f"weights for {spec.id} are not installed", **fix)
    for weight, state in status:
        if not weight.published:
            raise WeightsError(f"{state.path} was not loaded: it has no checksum to be checked against (the registry "
                               "states none and no download here pinned one)", fixes=("download",), subject=spec.id)
        if state.size != weight.size:
            raise WeightsError(f"{state.path} was not loaded: it is {state.size} bytes, but {weight.name} is "
                               f"{weight.size} bytes", **fix)
        if state.verified is not True:
            try:
                before = state.path.stat()
                actual = sha256_file(state.path)
            except OSError as exc:  # unreadable (permissions, a folder in its place...): one line, not a traceback
                raise WeightsError(f"{state.path} was not loaded: it cannot be read ({exc.strerror or exc})") from None
            if actual != weight.sha256:
                forget_verified(weight)
                raise WeightsError(f"{state.path} was not loaded: it failed its checksum (sha256 {actual}, expected "
                                   f"{weight.sha256})", **fix)
            record_verified(weight, before)
    return [state.path for _, state in status]


def checked_copy(path: Path, spec: ModelSpec) -> Path:
    """`path`, a copy of `spec`'s (single) weight file kept outside the weights dir, after a full hash."""
    try:
        verify_file(path, spec.weights[0], model_id=spec.id)
    except WeightsError as exc:
        raise WeightsError(f"{exc}; it was not loaded as the weights of {spec.id}", fixes=exc.fixes,
                           subject=spec.id) from None
    return path
