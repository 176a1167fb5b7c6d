"""Progress reporting and cooperative cancellation shared by every long-running step."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress event: `stage` is a short name ("stats", "segment", "vectorise")."""

    stage: str
    done: int
    total: int
    detail: dict[str, Any] = field(default_factory=dict)  # stage-specific numbers (training: loss, IoU)


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Thread-safe flag checked between batches; `check()` raises Cancelled once set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user; partial outputs were removed")


def report(callback: Optional[ProgressCallback], stage: str, done: int, total: int,
           detail: Optional[dict[str, Any]] = None) -> None:
    if callback is not None:
        callback(Progress(stage, done, total, dict(detail or {})))
