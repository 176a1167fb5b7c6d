"""What every long backend call run as a QgsTask shares: `work()` runs in the worker thread, and any
failure becomes data (error, details, fixes, subject, was_cancelled) that `finished()` reports in the main
thread; nothing is raised into QGIS."""

from __future__ import annotations

from typing import Optional

from qgis.core import QgsTask

from ..protocol.client import BackendError, JobCancelled, WorkerCrashed


class BackendTask(QgsTask):
    """Subclasses implement `work()` (worker thread, no GUI) and `finished(ok)` (main thread)."""

    def __init__(self, description: str, flags=QgsTask.Flag.CanCancel):
        super().__init__(description, flags)
        self.error: Optional[str] = None
        self.details = ""
        self.fixes: tuple[str, ...] = ()  # what would fix the error (contracts.FIXES), and for which model
        self.subject = ""
        self.was_cancelled = False

    def work(self) -> None:
        raise NotImplementedError

    def run(self) -> bool:  # worker thread: no GUI here
        try:
            self.work()
            return True
        except JobCancelled:
            self.was_cancelled = True
        except WorkerCrashed as exc:
            self.error, self.details = str(exc).split("\n", 1)[0], getattr(exc, "stderr_tail", "")
        except BackendError as exc:
            self.error, self.details = exc.text("gui"), getattr(exc, "detail", "") or ""
            self.fixes, self.subject = tuple(getattr(exc, "fixes", None) or ()), getattr(exc, "subject", "") or ""
        except Exception as exc:  # noqa: BLE001 - reported in the dock, never raised into QGIS
            self.error, self.details = f"unexpected error: {exc}", repr(exc)
        return False

    @property
    def cancelled(self) -> bool:
        return self.was_cancelled or self.isCanceled()
