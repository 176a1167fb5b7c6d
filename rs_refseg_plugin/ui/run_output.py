"""The widgets under a Run button that the Segment and Train tabs share: a progress bar, a status line,
the run's summary (selectable) and a log."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QLabel, QLayout, QPlainTextEdit, QProgressBar, QWidget


@dataclass
class RunOutput:
    progress: QProgressBar
    status: QLabel
    summary: QLabel
    log: QPlainTextEdit


def add_run_output(layout: QLayout, parent: QWidget, summary_name: str, extra: tuple[QWidget, ...] = ()) -> RunOutput:
    """Add the widgets to `layout` in order (`extra` between the status line and the summary); the log
    takes the stretch."""
    progress = QProgressBar(parent)
    progress.setRange(0, 100)
    progress.setValue(0)
    status = QLabel("", parent)
    status.setWordWrap(True)
    summary = QLabel("", parent)
    summary.setObjectName(summary_name)
    summary.setWordWrap(True)
    summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    summary.setVisible(False)
    log = QPlainTextEdit(parent)
    log.setReadOnly(True)
    log.setMaximumBlockCount(2000)
    for widget in (progress, status, *extra, summary):
        layout.addWidget(widget)
    layout.addWidget(log, 1)
    return RunOutput(progress, status, summary, log)
