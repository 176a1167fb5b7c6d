"""The service behind both the worker and the in-process runner: protocol records in, records out.

One job (a segmentation, a download or the environment report) runs at a time on its own thread, so
`cancel` and `ping` are answered while it runs. Built models and the image-feature cache live as long
as the service, which keeps a worker warm between requests.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any, Callable, Optional

from .. import __version__
from ..errors import RssegError
from ..execution.feature_cache import FeatureCache
from ..progress import CancelToken, Progress, ProgressCallback
from ..protocol.contracts import SegmentRequest
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Batch,
    Cancel,
    Doctor,
    Download,
    EncodeError,
    ErrorRecord,
    ImportWeights,
    ListModels,
    Message,
    Ping,
    Pong,
    ProgressRecord,
    ResultRecord,
    Segment,
    Shutdown,
    Train,
)

Emit = Callable[[Message], None]
Work = Callable[[ProgressCallback, CancelToken], dict[str, Any]]  # a job: progress and cancel in, result out


def error_record(msg_id: str, exc: BaseException, message: str = "") -> ErrorRecord:
    """User errors keep their class name as the code, and their fixes and subject as data for the front end
    to word (the message holds no command); anything else is an InternalError with a traceback."""
    if isinstance(exc, RssegError):
        return ErrorRecord(msg_id, type(exc).__name__, str(exc), fixes=list(exc.fixes), subject=exc.subject)
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorRecord(msg_id, "InternalError", f"internal error: {message or f'{type(exc).__name__}: {exc}'}", detail)


class Service:
    def __init__(self, emit: Emit, cache: Optional[FeatureCache] = None):
        self.emit = emit
        self.cache = cache if cache is not None else FeatureCache.from_env()
        self._job: Optional[threading.Thread] = None
        self._job_id: Optional[str] = None
        self._cancel = CancelToken()
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._job is not None

    def handle(self, message: Message) -> bool:
        """Answer one record; False once the service was asked to shut down."""
        if isinstance(message, Ping):
            self.emit(Pong(message.id, PROTOCOL_VERSION, __version__, os.getpid()))
        elif isinstance(message, Segment):
            self._request_job(message, "segment", SegmentRequest.from_dict,
                              lambda request, progress, cancel: _segment(request, progress, cancel, self.cache))
        elif isinstance(message, Train):
            self._request_job(message, "train", _train_request, _train)
        elif isinstance(message, Batch):
            self._request_job(message, "batch", _batch_request, _batch)
        elif isinstance(message, Download):
            self._start(message.id, lambda progress, cancel: _download(message.model, progress, cancel))
        elif isinstance(message, ImportWeights):
            self._start(message.id, lambda progress, cancel: _import(message.model, message.file, progress))
        elif isinstance(message, Doctor):
            self._start(message.id, lambda progress, cancel: _doctor(message.worker))
        elif isinstance(message, Cancel):
            self._cancel_job(message)
        elif isinstance(message, ListModels):
            self._list_models(message)
        elif isinstance(message, Shutdown):
            self.stop()
            return False
        else:
            self.emit(ErrorRecord(message.id, "ProtocolError",
                                  f"a {message.type!r} record is sent by the worker, not to it"))
        return True

    def stop(self, timeout: Optional[float] = None) -> None:
        """Cancel the running job and wait for it to clean up its outputs."""
        job = self._job
        if job is not None:
            self._cancel.cancel()
            job.join(timeout)

    def _answer(self, record: Message) -> None:
        """Emit a job's answer; one JSON cannot carry (a NaN in a result, a non-JSON value) becomes an
        InternalError naming the field, so the client gets an answer instead of waiting for its timeout."""
        try:
            self.emit(record)
        except EncodeError as exc:
            self.emit(error_record(record.id, exc, f"the {record.type} could not be sent: {exc.where}"))

    # -- handlers ----------------------------------------------------------------------------------
    def _request_job(self, message: Segment | Train | Batch, kind: str, parse: Callable[[Any], Any],
                     work: Callable[[Any, ProgressCallback, CancelToken], dict[str, Any]]) -> None:
        """Start `work` on the request `parse` reads from the record; a request it refuses is a ProtocolError."""
        try:
            request = parse(message.request)
        except (TypeError, ValueError) as exc:
            if not self._refuse_if_busy(message.id):
                self.emit(ErrorRecord(message.id, "ProtocolError", f"invalid {kind} request: {exc}"))
            return
        self._start(message.id, lambda progress, cancel: work(request, progress, cancel))

    def _refuse_if_busy(self, msg_id: str) -> bool:
        if self.busy:
            self.emit(ErrorRecord(msg_id, "Busy", f"job {self._job_id} is still running; one job at a "
                                                  "time (cancel it or wait for its result)"))
        return self.busy

    def _start(self, msg_id: str, work: Work) -> None:
        with self._lock:
            if self._refuse_if_busy(msg_id):
                return
            self._cancel = CancelToken()
            self._job_id = msg_id
            self._job = threading.Thread(target=self._run, args=(msg_id, work, self._cancel),
                                         name=f"rsseg-job-{msg_id}", daemon=True)
            self._job.start()

    def _run(self, msg_id: str, work: Work, cancel: CancelToken) -> None:
        def progress(event: Progress) -> None:
            self.emit(ProgressRecord(msg_id, event.stage, event.done, event.total, event.detail))

        try:
            record = ResultRecord(msg_id, work(progress, cancel))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an error record
            record = error_record(msg_id, exc)
        with self._lock:  # free before answering: the caller may send its next request at once
            self._job = self._job_id = None
        self._answer(record)

    def _cancel_job(self, message: Cancel) -> None:
        if self.busy and message.target in ("", self._job_id):
            self._cancel.cancel()
        else:
            self.emit(ErrorRecord(message.id, "NoSuchJob", f"no running job {message.target!r} to cancel"))

    def _list_models(self, message: ListModels) -> None:
        try:
            from ..models.catalog import model_rows

            self._answer(ResultRecord(message.id, {"models": model_rows()}))
        except Exception as exc:  # noqa: BLE001
            self.emit(error_record(message.id, exc))


# -- the jobs (imported when first run: a worker that only pings never loads torch) ------------------
def _segment(request: SegmentRequest, progress: ProgressCallback, cancel: CancelToken,
             cache: FeatureCache) -> dict[str, Any]:
    from .segment import run_segment

    return run_segment(request, progress, cancel, cache).to_dict()


def _train_request(data: Any) -> Any:
    from ..protocol.training import TrainLayersRequest

    return TrainLayersRequest.from_dict(data)


def _batch_request(data: Any) -> Any:
    from ..protocol.batch import BatchRequest

    return BatchRequest.from_dict(data)


def _train(request: Any, progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    from ..training.layers_run import train_layers

    return train_layers(request, progress, cancel).to_dict()


def _batch(request: Any, progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    from ..errors import Cancelled
    from .batch.run import run_batch

    result = run_batch(request, progress, cancel)
    if result.cancelled:
        raise Cancelled(f"cancelled by the user: {result.count('done')} of {len(result.rows)} rasters had finished "
                        f"and keep their outputs; the others have none (manifest: {result.manifest})")
    return result.to_dict()


def _download(model_id: str, progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    from ..models import get_spec
    from ..weights import download_model

    spec = get_spec(model_id)
    return {"model": spec.id, "files": [str(p) for p in download_model(spec, progress, cancel)]}


def _import(model_id: str, file: str, progress: ProgressCallback) -> dict[str, Any]:
    from ..models import get_spec
    from ..weights import import_weight

    spec = get_spec(model_id)
    return {"model": spec.id, "files": [str(import_weight(spec, file, progress))]}


def _doctor(worker: dict[str, Any]) -> dict[str, Any]:
    from ..diagnostics import format_report, full_report

    report = full_report(worker or None)
    return {"report": report, "markdown": format_report(report, markdown=True)}
