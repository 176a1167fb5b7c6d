"""The worker protocol's records: one JSON object per line, each with an `id` and a `type`.

Standard library only, so the QGIS plugin (which never imports torch) uses the same definitions
as the worker. docs/protocol.md documents the schema; bump PROTOCOL_VERSION on any change that an
older peer could misread.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

PROTOCOL_VERSION = 2  # 2: segment requests carry upsample, sam_refine and checkpoint
MAX_LINE_BYTES = 16 * 1024 * 1024  # a request with many region polygons stays far below this


class ProtocolError(ValueError):
    """A line that is not a valid record; the worker answers it with an `error` record."""

    def __init__(self, message: str, msg_id: str = ""):
        super().__init__(message)
        self.msg_id = msg_id


@dataclass
class Message:
    id: str
    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, **{k: v for k, v in asdict(self).items() if k != "id"}}

    def encode(self) -> str:
        """One line of JSON (no embedded newline), ready to write to the pipe."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False) + "\n"


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
class Cancel(Message):
    """Stop job `target` at its next batch; it ends with an error record of code "Cancelled"."""

    target: str = ""
    type: ClassVar[str] = "cancel"


@dataclass
class ListModels(Message):
    """Answered by a result record whose `result` is {"models": [rows as `rsseg models --json`]}."""

    type: ClassVar[str] = "models"


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
    type: ClassVar[str] = "progress"


@dataclass
class ResultRecord(Message):
    result: dict[str, Any] = field(default_factory=dict)
    type: ClassVar[str] = "result"


@dataclass
class ErrorRecord(Message):
    """`code` names the error class (e.g. "BandError", "Cancelled", "Busy", "ProtocolError")."""

    code: str = ""
    message: str = ""
    detail: str = ""  # a traceback for internal errors; never shown to users by default
    type: ClassVar[str] = "error"


@dataclass
class Bye(Message):
    type: ClassVar[str] = "bye"


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls for cls in (Ping, Segment, Cancel, ListModels, Shutdown, Pong, ProgressRecord, ResultRecord,
                              ErrorRecord, Bye)
}
_FIELD_TYPES = {"int": int, "str": str, "dict[str, Any]": dict}


def decode(line: str | bytes) -> Message:
    """Parse one line into its record, or raise ProtocolError saying exactly what is wrong."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes is longer than the limit of {MAX_LINE_BYTES}")
    try:
        data = json.loads(line)
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
        values[f.name] = value
    unknown = set(data) - {f.name for f in fields(cls)} - {"type"}
    if unknown:
        raise ProtocolError(f"unknown field(s) {', '.join(sorted(unknown))} in a {kind!r} record", msg_id)
    return cls(id=msg_id, **values)
