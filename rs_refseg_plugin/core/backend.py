"""The plugin's one way to the backend: a worker client on the configured backend interpreter.

The dock's task, the right-click action and the Processing algorithms all call `run_job` ("Segment many
rasters" calls `batch`, "Train from layers" `train`); the dock's model list, downloads and diagnostics are
requests to the same worker (the QuickOSM pattern: one core, several front ends). Calls run in a background
thread (QgsTask or Processing), report progress as a percentage, turn cancellation into the worker's `cancel`,
and raise BackendError subclasses whose `str()` is a message for the user.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from ..protocol.batch import BatchRequest, BatchResult
from ..protocol.client import BackendError, Stop, WorkerClient, WorkerConfig, WorkerStartError
from ..protocol.contracts import SegmentRequest, SegmentResult, from_fields
from ..protocol.launch import FOREIGN_PYTHON_ENV
from ..protocol.messages import ProgressRecord
from ..protocol.training import TrainLayersRequest, TrainLayersResult
from .settings import PluginSettings
from .train_job import read_result, train_percent

STAGE_WEIGHT = {"load model": (0, 5), "segment": (5, 90), "vectorise": (90, 100)}
Percent = Callable[[float, str], None]
TrainProgress = Callable[[float, ProgressRecord], None]  # percent, and the record with its `detail`
BatchProgress = Callable[[ProgressRecord], None]  # each record of a batch: rasters ended, the running ones in `detail`


def stage_percent(stage: str, done: int, total: int) -> float:
    """A segmentation job's progress record as a percentage of the whole job."""
    low, high = STAGE_WEIGHT.get(stage, (0, 100))
    return low + (high - low) * (done / total if total else 0.0)


class Backend:
    """One worker per QGIS session, restarted by the client after a crash; one job at a time, the others
    wait for their turn (a dock run pressed while the model list loads, Processing batch rows)."""

    def __init__(self, python: str, log: Optional[Callable[[str], None]] = None):
        if not python:
            raise WorkerStartError("no backend interpreter is set: press “Set up backend…” in the RS RefSeg "
                                   "dock, or choose the Python of an environment with rsseg installed")
        self.python = python
        self.client = WorkerClient(WorkerConfig(python, drop_env=FOREIGN_PYTHON_ENV, log=log))

    def run_job(self, request: SegmentRequest, progress: Optional[Percent] = None,
                cancelled: Optional[Stop] = None, queue: bool = False) -> SegmentResult:
        """Run one job to its result (the record the worker sent; result.json is never re-read).

        `cancelled` is polled on every progress event and every second; `queue` waits for a running
        job to end (Processing batches) instead of refusing with WorkerBusy (the dock)."""
        record = self._watched(lambda on_progress, wait: self.client.segment(request, on_progress, wait=wait),
                               progress, cancelled, queue)
        try:
            return SegmentResult.from_dict(record)
        except ValueError as exc:
            raise BackendError(f"the backend's result cannot be read by this plugin ({exc}): install a matching "
                               "backend with “Set up backend…”") from None

    def train(self, request: TrainLayersRequest, progress: Optional[TrainProgress] = None,
              cancelled: Optional[Stop] = None, queue: bool = True) -> TrainLayersResult:
        """Train from layers to the bundle's result. `progress(percent, record)` gets every progress record
        (stage "prepare", then "train" with the epoch's loss and IoU in `record.detail`); cancel as run_job."""
        last = [0.0]

        def on_record(record: ProgressRecord) -> None:
            percent = train_percent(record.stage, record.done, record.total, getattr(record, "detail", None))
            last[0] = max(last[0], percent) if percent is not None else last[0]
            if progress is not None:
                progress(last[0], record)

        record = self._watched(lambda on_progress, wait: self.client.train(request, on_progress, wait=wait),
                               None, cancelled, queue, on_record)
        try:
            return read_result(record)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"the backend's training result cannot be read by this plugin ({exc}): install a "
                               "matching backend with “Set up backend…”") from None

    def batch(self, request: BatchRequest, progress: Optional[BatchProgress] = None,
              cancelled: Optional[Stop] = None, queue: bool = True) -> BatchResult:
        """Segment many rasters on the worker's pool of model workers (Ray), to the batch's result: a row per
        raster, as the manifest holds them. `progress(record)` gets every progress record (stage "batch": rasters
        ended of the total, the running ones in `detail`); cancel as run_job. A cancelled batch raises
        JobCancelled (the rasters that ended keep their outputs, the manifest says which)."""
        record = self._watched(lambda on_progress, wait: self.client.batch(request, on_progress, wait=wait), None,
                               cancelled, queue, progress)
        try:
            return from_fields(BatchResult, record)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"the backend's batch result cannot be read by this plugin ({exc}): install a "
                               "matching backend with “Set up backend…”") from None

    def download(self, model: str, progress: Optional[Percent] = None,
                 cancelled: Optional[Stop] = None) -> list[str]:
        """A model's weight files, verified; returns their paths. A cancelled download is resumed next time."""
        record = self._watched(lambda on_progress, wait: self.client.download(model, on_progress, wait=wait),
                               progress, cancelled, True)
        return list(record.get("files", []))

    def import_weights(self, model: str, path: str, progress: Optional[Percent] = None,
                       cancelled: Optional[Stop] = None) -> list[str]:
        """Copy a weights file downloaded elsewhere into place once its size and sha256 match `model`'s entry."""
        record = self._watched(lambda on_progress, wait: self.client.import_weights(model, path, on_progress,
                                                                                    wait=wait),
                               progress, cancelled, True)
        return list(record.get("files", []))

    def doctor(self) -> str:
        """The backend's environment report as Markdown (for bug reports)."""
        return str(self.client.doctor(timeout=120, wait=lambda: False).get("markdown", ""))

    def models(self) -> list[dict[str, Any]]:
        return self.client.models(timeout=120, wait=lambda: False)  # after a running job, not refused

    def close(self) -> None:
        self.client.close()

    def _watched(self, call: Callable[[Callable[[ProgressRecord], None], Optional[Stop]], dict],
                 progress: Optional[Percent], cancelled: Optional[Stop], queue: bool,
                 on_record: Optional[Callable[[ProgressRecord], None]] = None) -> dict:
        """`call(on_progress, wait)` with progress as a percentage (or each record to `on_record`) and
        `cancelled` turned into the worker's cancel."""
        stop = threading.Event()

        def watch() -> None:  # a job that sends no progress for a while can still be cancelled
            while not stop.wait(1.0):
                if cancelled is not None and cancelled() and self.client.cancel():
                    return

        def on_progress(record: ProgressRecord) -> None:
            if progress is not None:
                progress(stage_percent(record.stage, record.done, record.total), record.stage)
            if on_record is not None:
                on_record(record)
            if cancelled is not None and cancelled():
                self.client.cancel()

        wait = (cancelled or (lambda: False)) if queue else None
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            return call(on_progress, wait)
        finally:
            stop.set()


_shared: Optional[Backend] = None
_shared_lock = threading.Lock()


def shared_backend(settings: Optional[PluginSettings] = None) -> Backend:
    """The session's Backend, remade when the configured interpreter changes."""
    global _shared
    python = (settings or PluginSettings.load()).python
    with _shared_lock:
        if _shared is None or _shared.python != python:
            if _shared is not None:
                _shared.close()
            _shared = Backend(python)
        return _shared


def close_shared_backend() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None
