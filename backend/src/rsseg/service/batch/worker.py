"""The batch worker: one process holding a warm model, running one raster at a time through the service's path.

It is a plain class: `rsseg.service.batch.run` makes it a Ray actor (threaded, so `progress` and `cancel` are answered
while `run` works). A user error comes back as a value, not raised: the scheduler retries only the unexpected.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Optional

from ...errors import RssegError
from ...progress import CancelToken, Progress
from ...protocol.contracts import SegmentRequest, SegmentResult
from ...raster.parts import merge_parts
from ..segment import WarmModel, run_segment


class SegmentWorker:
    def __init__(self) -> None:
        self._warm = WarmModel()
        self._cancel = CancelToken()  # one for every job: a batch's cancel is final for its workers
        self._progress: tuple[str, int, int] = ("", 0, 0)

    def where(self) -> str:
        """The node and process, for the manifest (and for a test that stops this process)."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def run(self, request: dict[str, Any], rows: Optional[tuple[int, int]] = None) -> dict[str, Any]:
        """{"result": the SegmentResult record} or {"error": code, message, fixes, subject}; with `rows`, one
        part of a split raster."""
        return self._answer(lambda cancel: run_segment(SegmentRequest.from_dict(request), self._note, cancel,
                                                       warm=self._warm, rows=rows))

    def merge(self, request: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
        """A split raster's outputs from its parts' results (raster/parts.py), answered as `run` answers."""
        return self._answer(lambda cancel: merge_parts(SegmentRequest.from_dict(request),
                                                       [SegmentResult.from_dict(p) for p in parts], self._note,
                                                       cancel))

    def _answer(self, job: Callable[[CancelToken], SegmentResult]) -> dict[str, Any]:
        self._progress = ("load model", 0, 1)
        try:
            result = job(self._cancel)
        except RssegError as exc:
            return {"error": {"code": type(exc).__name__, "message": str(exc), "fixes": list(exc.fixes),
                              "subject": exc.subject}}
        return {"result": result.to_dict()}

    def _note(self, event: Progress) -> None:
        self._progress = (event.stage, event.done, event.total)

    def progress(self) -> tuple[str, int, int]:
        """The running raster's stage, done and total (("", 0, 0) between rasters)."""
        return self._progress

    def cancel(self) -> None:
        """Stop the running job and any later one: calls to a threaded actor may run out of order, so the cancel
        can come before the job it stops has begun."""
        self._cancel.cancel()
