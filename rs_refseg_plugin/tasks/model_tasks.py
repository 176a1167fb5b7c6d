"""Small background tasks of the dock, each one request to the backend's worker: list the models,
download or import a model's weights, build the diagnostics report. Each reports back in the main thread
through its callback."""

from __future__ import annotations

from typing import Callable, Optional

from qgis.core import QgsTask

from ..core.backend import Backend
from ..protocol.client import BackendError, JobCancelled
from .backend_task import BackendTask


class RequestTask(BackendTask):
    """Runs `call()` on the backend in the worker thread; `on_done(value, error)` in `finished`."""

    def __init__(self, title: str, flags, on_done: Callable[[object, str], None]):
        super().__init__(title, flags)
        self.on_done = on_done
        self.value: object = None

    def call(self) -> object:
        raise NotImplementedError

    def work(self) -> None:
        self.value = self.call()

    def finished(self, ok: bool) -> None:
        self.on_done(self.value if ok else None, "" if ok else self.error or "cancelled")


class ModelsTask(RequestTask):
    def __init__(self, backend: Backend, on_done: Callable[[Optional[list], str], None]):
        super().__init__("RS RefSeg: list models", QgsTask.Flag(0), on_done)
        self.backend = backend

    def call(self) -> list:
        try:
            return self.backend.models()
        except BackendError as exc:
            raise BackendError(exc.text("gui").split("\n", 1)[0]) from None  # the bar has room for one line


class DownloadTask(RequestTask):
    """The worker's `download` request: progress in bytes over the model's files; cancel keeps the
    partial file, which the next download resumes."""

    def __init__(self, backend: Backend, model: str, on_done: Callable[[Optional[list], str], None]):
        super().__init__(f"RS RefSeg: download {model}", QgsTask.Flag.CanCancel, on_done)
        self.backend, self.model = backend, model

    def call(self) -> list:
        try:
            return self.backend.download(self.model, lambda percent, _stage: self.setProgress(percent),
                                         self.isCanceled)
        except JobCancelled:
            raise BackendError("cancelled (the partial file is kept and resumed next time)") from None


class ImportTask(RequestTask):
    """The worker's `import` request: a weights file downloaded elsewhere is copied into the backend's
    weights folder once its size and sha256 match the model's registry entry (the user's file is
    never moved or changed)."""

    def __init__(self, backend: Backend, model: str, path: str, on_done: Callable[[Optional[list], str], None]):
        super().__init__(f"RS RefSeg: import weights for {model}", QgsTask.Flag(0), on_done)  # one hash: no cancel
        self.backend, self.model, self.path = backend, model, path

    def call(self) -> list:
        return self.backend.import_weights(self.model, self.path,
                                           lambda percent, _stage: self.setProgress(percent), self.isCanceled)


class DoctorTask(RequestTask):
    def __init__(self, backend: Backend, on_done: Callable[[Optional[str], str], None]):
        super().__init__("RS RefSeg: diagnostics", QgsTask.Flag(0), on_done)
        self.backend = backend

    def call(self) -> str:
        return self.backend.doctor()
