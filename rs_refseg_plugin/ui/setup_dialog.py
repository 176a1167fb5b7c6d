"""The "Set up backend" dialog: shows the plan (where the environment goes, CUDA or CPU torch as
nvidia-smi reports), runs it with progress and a log, and can be cancelled."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ..core.help import open_help
from ..core.settings import managed_venv
from ..core.setup_backend import SetupError, plan_setup
from ..tasks.setup_task import SetupTask


class SetupDialog(QDialog):
    installed = pyqtSignal(str)  # the new backend interpreter

    def __init__(self, parent=None, **plan_options):
        super().__init__(parent)
        self.setWindowTitle("Set up the RS RefSeg backend")
        self.resize(720, 480)
        layout = QVBoxLayout(self)
        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        layout.addWidget(self.progress)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        layout.addWidget(self.log, 1)
        buttons = QDialogButtonBox(self)
        self.start_button = QPushButton("Install", self)
        self.cancel_button = QPushButton("Cancel", self)
        buttons.addButton(self.start_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Help).clicked.connect(lambda: open_help("the-backend"))
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        layout.addWidget(buttons)
        self.task = None
        self.plan = None
        try:
            self.plan = plan_setup(plan_options.pop("venv", None) or managed_venv(), **plan_options)
        except SetupError as exc:
            self.summary.setText(f"Cannot set up the backend: {exc}")
            self.start_button.setEnabled(False)
            return
        torch = self.plan.torch.label if self.plan.torch else "chosen by pip"
        self.summary.setText(f"A Python environment will be created in {self.plan.venv} from {self.plan.base_python},"
                             f" with PyTorch for {torch} and the rsseg backend ({self.plan.backend}). "
                             "This downloads about 1-3 GB.")
        self.log.setPlainText("\n".join(self.plan.describe()))

    def start(self) -> None:
        if self.plan is None or self.task is not None:
            return
        self.start_button.setEnabled(False)
        self.task = SetupTask(self.plan)
        self.task.line.connect(self.log.appendPlainText)
        self.task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        self.task.done.connect(self._done)
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.log.appendPlainText("cancelling…")
            self.task.cancel()
        else:
            self.reject()

    def _done(self, python: str, error: str) -> None:
        self.task = None
        if python:
            self.progress.setValue(100)
            self.log.appendPlainText(f"done: the backend is {python}")
            self.installed.emit(python)
            self.cancel_button.setText("Close")
        else:
            self.progress.setValue(0)
            self.log.appendPlainText(f"failed: {error}")
            self.start_button.setEnabled(True)
