"""Diagnostics: the backend worker's environment report (Markdown), with a copy button, for bug reports."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QApplication, QDialog, QDialogButtonBox, QPlainTextEdit, QPushButton, QVBoxLayout

from ..core.backend import Backend
from ..core.help import open_help
from ..tasks.model_tasks import DoctorTask


class DiagnosticsDialog(QDialog):
    def __init__(self, backend: Backend, parent=None):
        super().__init__(parent)
        self.setWindowTitle("RS RefSeg diagnostics")
        self.resize(700, 500)
        layout = QVBoxLayout(self)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setPlainText(f"asking the backend ({backend.python}) for its environment report …")
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Help).clicked.connect(lambda: open_help("the-backend"))
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.task = DoctorTask(backend, self._done)
        QgsApplication.taskManager().addTask(self.task)

    def _done(self, report: str, error: str) -> None:
        self.task = None
        self.text.setPlainText(report or f"Diagnostics failed: {error}")
        self.copy_button.setEnabled(bool(report))

    def copy(self) -> None:
        QApplication.clipboard().setText(self.text.toPlainText())
