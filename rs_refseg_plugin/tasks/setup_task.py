""""Set up backend" as a QgsTask: the plan of core/setup_backend.py run in a worker thread; the
log lines and the result reach the dialog in the main thread through Qt signals."""

from __future__ import annotations

from typing import Optional

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..core.setup_backend import SetupCancelled, SetupError, SetupPlan, run_plan


class SetupTask(QgsTask):
    line = pyqtSignal(str)
    done = pyqtSignal(str, str)  # (interpreter, error): one of them is empty

    def __init__(self, plan: SetupPlan):
        super().__init__("RS RefSeg: set up backend", QgsTask.Flag.CanCancel)
        self.plan = plan
        self.python: Optional[str] = None
        self.error = ""

    def run(self) -> bool:
        try:
            self.python = str(run_plan(self.plan, on_line=self.line.emit,
                                       on_progress=lambda p: self.setProgress(p.percent), cancelled=self.isCanceled))
            return True
        except SetupCancelled:
            self.error = "cancelled: the new environment was removed"
        except SetupError as exc:
            self.error = str(exc)
        return False

    def finished(self, ok: bool) -> None:
        self.done.emit(self.python or "" if ok else "", "" if ok else self.error or "cancelled")
