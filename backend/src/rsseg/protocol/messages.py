"""The worker protocol's records: one JSON object per line, each with an `id` and a `type`.

Standard library only, so the QGIS plugin (which never imports torch) uses the same definitions
as the worker. docs/protocol.md documents the schema; bump PROTOCOL_VERSION on any change that an
older peer could misread.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from itertools import accumulate
from typing import Any, ClassVar, Optional

PROTOCOL_VERSION = 8  # 2: segment requests carry upsample, sam_refine and checkpoint; 3: download and doctor;
# 4: error records carry fixes and subject, segment requests a nodata field; 5: train, progress detail;
# 6: segment requests carry top_k, results may hold instance polygons (docs/zero-shot.md);
# 7: train requests carry host (the trained model a fusion family such as RFM-Seg fuses into); 8: batch
MAX_LINE_BYTES = 16 * 1024 * 1024  # a request with many region polygons stays far below this
MAX_DEPTH = 64  # JSON nesting; a record with GeoJSON multipolygons needs about 10


class ProtocolError(ValueError):
    """A line that is not a valid record; the worker answers it with an `error` record."""

    def __init__(self, message: str, msg_id: str = ""):
        super().__init__(message)
        self.msg_id = msg_id


class EncodeError(ValueError):
    """A record that JSON cannot carry (NaN, infinity, a non-JSON value); `where` names the field."""

    def __init__(self, kind: str, where: str):
        super().__init__(f"cannot encode the {kind!r} record: {where}")
        self.where = where


def unencodable(value: Any, path: str) -> Optional[str]:
    """Where `value` holds something strict JSON cannot carry, e.g. "result.classes[1].area_m2 is nan"."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value} (JSON has no NaN or infinity)"
    if value is None or isinstance(value, (str, int)):
        return None
    if isinstance(value, dict):
        items = ((item, f"{path}.{key}" if path else str(key)) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((item, f"{path}[{i}]") for i, item in enumerate(value))
    else:
        return f"{path} is of type {type(value).__name__}, which JSON cannot carry"
    return next(filter(None, (unencodable(item, where) for item, where in items)), None)


@dataclass
class Message:
    id: str
    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, **{k: v for k, v in asdict(self).items() if k != "id"}}

    def encode(self) -> str:
        """One line of JSON (no embedded newline), ready to write to the pipe.

        Raises EncodeError naming the field when the record holds NaN, infinity or a non-JSON value:
        a sender must turn that into an answer (an error record, a client error), never into silence.
        """
        data = self.to_dict()
        try:
            return json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"
        except RecursionError:
            raise EncodeError(self.type, "it is nested too deeply") from None
        except (TypeError, ValueError) as exc:
            where = unencodable({k: v for k, v in data.items() if k not in ("id", "type")}, "") or str(exc)
            raise EncodeError(self.type, where) from None


# --- client -> worker -----------------------------------------------------------------------------

@dataclass
class Ping(Message):
    type: ClassVar[str] = "ping"


@dataclass
class Segment(Message):
    """Run one SegmentRequest (contracts.SegmentRequest.to_dict()); answered by progress..., result|error."""

    request: dict[str, Any] = field(default_factory=dict)
    type: ClassVar[str] = "segment"


@dataclass
class Train(Message):
    """Train from layers (training.TrainLayersRequest.to_dict()): answered by progress records (stage "train",
    epochs done and total, `detail` with the epoch's loss, validation mIoU and per-class IoU), then a result
    {"model": the bundle's model id, "bundle", "metrics", "epochs", "stopped", "seconds"} or an error."""

    request: dict[str, Any] = field(default_factory=dict)
    type: ClassVar[str] = "train"


@dataclass
class Batch(Message):
    """Segment many rasters (protocol.batch.BatchRequest.to_dict()) on Ray workers: answered by progress records
    (stage "batch", rasters ended and total, `detail` {"running": {raster name: {stage, done, total, worker}},
    "failed"}),
    then a result (BatchResult.to_dict(), a row per raster; the manifest holds the same) or an error; a cancelled
    batch ends with the error "Cancelled" (rasters that ended keep their outputs, the manifest says which)."""

    request: dict[str, Any] = field(default_factory=dict)
    type: ClassVar[str] = "batch"


@dataclass
class Cancel(Message):
    """Stop job `target` at its next batch; it ends with an error record of code "Cancelled"."""

    target: str = ""
    type: ClassVar[str] = "cancel"


@dataclass
class ListModels(Message):
    """Answered by a result record whose `result` is {"models": [rows as `rsseg models --json`]}."""

    type: ClassVar[str] = "models"


@dataclass
class Download(Message):
    """Fetch `model`'s weight files (resumable, sha256-checked): answered by progress records (stage
    "download", bytes done and total over all the files), then a result {"model", "files"} or an error."""

    model: str = ""
    type: ClassVar[str] = "download"


@dataclass
class ImportWeights(Message):
    """Copy `file`, a weights file downloaded elsewhere, into the weights folder as `model`'s file once its
    size and sha256 match (the file itself is never moved or changed): progress records (stage "verify",
    bytes hashed), then a result {"model", "files"} or an error."""

    model: str = ""
    file: str = ""
    type: ClassVar[str] = "import"


@dataclass
class Doctor(Message):
    """The environment report: answered by a result {"report": {...}, "markdown": "..."}. `worker` is what
    the client measured of the worker (start time, ping), added to the report as given."""

    worker: dict[str, Any] = field(default_factory=dict)
    type: ClassVar[str] = "doctor"


@dataclass
class Shutdown(Message):
    """Cancel any running job and exit with status 0 (answered by `bye`)."""

    type: ClassVar[str] = "shutdown"


# --- worker -> client -----------------------------------------------------------------------------

@dataclass
class Pong(Message):
    protocol: int = PROTOCOL_VERSION
    version: str = ""  # rsseg version of the worker
    pid: int = 0
    type: ClassVar[str] = "pong"


@dataclass
class ProgressRecord(Message):
    stage: str = ""
    done: int = 0
    total: int = 0
    detail: dict[str, Any] = field(default_factory=dict)  # stage-specific numbers (training: loss, IoU)
    type: ClassVar[str] = "progress"


@dataclass
class ResultRecord(Message):
    result: dict[str, Any] = field(default_factory=dict)
    type: ClassVar[str] = "result"


@dataclass
class ErrorRecord(Message):
    """`code` names the error class (e.g. "BandError", "Cancelled", "Busy", "ProtocolError")."""

    code: str = ""
    message: str = ""  # one line for the user, without commands: a front end adds `fixes` in its own words
    detail: str = ""  # a traceback for internal errors; never shown to users by default
    fixes: list[str] = field(default_factory=list)  # names of contracts.FIXES, the first the likeliest
    subject: str = ""  # what the fixes act on, usually a model id (contracts.FIXES' `{model}`)
    type: ClassVar[str] = "error"


@dataclass
class Bye(Message):
    type: ClassVar[str] = "bye"


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls for cls in (Ping, Segment, Train, Batch, Cancel, ListModels, Download, ImportWeights, Doctor,
                              Shutdown, Pong, ProgressRecord, ResultRecord, ErrorRecord, Bye)
}
_FIELD_TYPES = {"int": int, "str": str, "dict[str, Any]": dict, "list[str]": list}

# Nesting depth on the raw line, without decoding it: drop the strings, keep the brackets, sum +1/-1.
_STRINGS = {str: re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"'), bytes: re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')}
_NOT_BRACKETS = {str: re.compile(r"[^\[\]{}]+"), bytes: re.compile(rb"[^\[\]{}]+")}
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1, ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(line: str | bytes) -> int:
    """Deepest bracket nesting of a JSON line, strings skipped; linear time, no recursion.

    json.loads recurses once per level: a line of 100000 `[` would raise RecursionError (or worse)
    inside the decoder, so the depth is bounded before decoding.
    """
    kind = bytes if isinstance(line, (bytes, bytearray)) else str
    brackets = _NOT_BRACKETS[kind].sub(kind(), _STRINGS[kind].sub(kind(), line))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def decode(line: str | bytes) -> Message:
    """Parse one line into its record, or raise ProtocolError saying exactly what is wrong."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes is longer than the limit of {MAX_LINE_BYTES}")
    opening = (b"[", b"{") if isinstance(line, (bytes, bytearray)) else ("[", "{")
    if sum(map(line.count, opening)) > MAX_DEPTH and (depth := nesting_depth(line)) > MAX_DEPTH:
        raise ProtocolError(f"JSON nested {depth} levels deep; the limit is {MAX_DEPTH}")
    try:
        data = json.loads(line)
    except RecursionError:  # not reachable after the depth check; kept so no line can kill the reader
        raise ProtocolError(f"JSON nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise ProtocolError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}")
    msg_id = data.get("id")
    if not isinstance(msg_id, str) or not msg_id:
        raise ProtocolError("every record needs a non-empty string `id`")
    kind = data.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown record type {kind!r}; known types: {', '.join(MESSAGE_TYPES)}", msg_id)
    values = {}
    for f in fields(cls):
        if f.name == "id" or f.name not in data:
            continue
        expected = _FIELD_TYPES[str(f.type)]
        value = data[f.name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ProtocolError(f"field {f.name!r} of a {kind!r} record must be {expected.__name__}, "
                                f"got {type(value).__name__}", msg_id)
        if expected is list and not all(isinstance(item, str) for item in value):
            raise ProtocolError(f"field {f.name!r} of a {kind!r} record must be a list of strings", msg_id)
        values[f.name] = value
    unknown = set(data) - {f.name for f in fields(cls)} - {"type"}
    if unknown:
        raise ProtocolError(f"unknown field(s) {', '.join(sorted(unknown))} in a {kind!r} record", msg_id)
    return cls(id=msg_id, **values)
