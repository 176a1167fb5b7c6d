"""One training run as a QgsTask: the backend call in `run` (worker thread), the outcome in `finished` (main
thread). The task keeps the latest progress record (stage, epochs, the epoch's loss and IoU) for the Train
tab to show; when the run ends `TrainJob.finish` removes the temporary layers and what a failed run wrote."""

from __future__ import annotations

import threading
from typing import Callable, Optional

from ..core.backend import Backend
from ..core.train_job import TrainJob, epoch_text
from ..protocol.messages import ProgressRecord
from ..protocol.training import TrainLayersResult
from .backend_task import BackendTask


class TrainTask(BackendTask):
    """Runs `job` on `backend`; `on_done(result, message, details)` is called in the main thread (result None
    when it failed or was cancelled; `kept` then says whether its checkpoints were kept for Resume)."""

    def __init__(self, backend: Backend, job: TrainJob,
                 on_done: Callable[[Optional[TrainLayersResult], str, str], None]):
        super().__init__(f"RS RefSeg: train {job.request.name or job.request.out}")
        self.backend, self.job, self.on_done = backend, job, on_done
        self.result: Optional[TrainLayersResult] = None
        self.kept = False  # a cancelled run's checkpoints stay for Resume
        self._lock = threading.Lock()
        self.stage = ""
        self.done = self.total = 0
        self.detail: dict = {}
        self.epochs: list[str] = []  # one line per finished epoch, in order

    def snapshot(self) -> tuple[str, int, int, dict, list[str]]:
        """The latest stage, epochs done and total, detail, and the finished epochs' lines (main thread)."""
        with self._lock:
            return self.stage, self.done, self.total, dict(self.detail), list(self.epochs)

    def _record(self, percent: float, record: ProgressRecord) -> None:
        detail = dict(getattr(record, "detail", None) or {})
        with self._lock:
            if record.stage == "train" and record.done > self.done and record.done >= 1:
                self.epochs.append(epoch_text(record.done, record.total, {**detail, "epoch": record.done,
                                                                          "step": None}))
            if record.stage == "train":  # a step's running loss over the last epoch's scores
                self.detail = {**(self.detail if self.stage == "train" else {}), **detail}
            else:
                self.detail = detail
            self.stage, self.total = record.stage, record.total
            self.done = record.done if record.stage == "train" else 0
        self.setProgress(percent)

    def work(self) -> None:
        self.result = self.backend.train(self.job.request, self._record, self.isCanceled, queue=True)

    def finished(self, ok: bool) -> None:  # main thread
        if ok and self.result is not None:
            self.job.finish("done")
            self.on_done(self.result, "", "")
            return
        cancelled = self.cancelled
        self.kept = self.job.finish("cancelled" if cancelled else "failed")
        resume = "the last finished epoch is kept: press Resume to continue"
        if cancelled:
            self.on_done(None, "cancelled: " + (resume if self.kept else "nothing was saved"), "")
        else:
            self.on_done(None, (self.error or "training failed") + (f" ({resume})" if self.kept else ""),
                         self.details)
