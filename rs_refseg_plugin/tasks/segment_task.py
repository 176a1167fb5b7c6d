"""One segmentation job as a QgsTask: the backend call in `run` (worker thread), the layers in
`finished` (main thread), the Deepness pattern. A failed or cancelled job adds nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsProject

from ..core.backend import Backend
from ..core.result_layers import AddedResult, ResultError, add_result_layers
from ..protocol.contracts import SegmentRequest, SegmentResult
from .backend_task import BackendTask


class SegmentTask(BackendTask):
    """Runs `request` on `backend`; `on_done(added, message, details)` is called in the main thread."""

    def __init__(self, backend: Backend, request: SegmentRequest,
                 on_done: Callable[[Optional[AddedResult], str, str], None],
                 on_progress: Optional[Callable[[float, str], None]] = None,
                 project: Optional[QgsProject] = None):
        super().__init__(f"RS RefSeg: {request.prompt}")
        self.backend, self.request = backend, request
        self.on_done, self.on_progress, self.project = on_done, on_progress, project
        self.result: Optional[SegmentResult] = None
        self.stage = ""

    def work(self) -> None:
        def progress(percent: float, stage: str) -> None:
            self.stage = stage
            self.setProgress(percent)

        # queue: a run pressed while the model list or a download is on the worker waits for it
        self.result = self.backend.run_job(self.request, progress, self.isCanceled, queue=True)

    def finished(self, ok: bool) -> None:  # main thread
        if ok and not self.isCanceled() and self.result is not None:
            try:
                added = add_result_layers(self.result, self.project or QgsProject.instance())
            except ResultError as exc:
                self._discard()
                self.on_done(None, f"could not add the results: {exc}", "")
                return
            self.on_done(added, "", "")
            return
        self._discard()
        if self.cancelled:
            self.on_done(None, "cancelled: nothing was added", "")
        else:
            self.on_done(None, self.error or "the job failed", self.details)

    def _discard(self) -> None:
        """The run's own folder (run_folder.new_run_folder made it for this job) goes when the job added
        nothing; the backend has already removed its partial files."""
        shutil.rmtree(Path(self.request.out_dir), ignore_errors=True)
