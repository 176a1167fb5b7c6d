"""Message-bar feedback: one line for the user, the technical part behind QGIS's "Show more" button.

Errors never show a traceback in the bar itself; the worker's log tail or the error's detail is
one click away, for bug reports.
"""

from __future__ import annotations

from qgis.core import Qgis
from qgis.gui import QgsMessageBar

TITLE = "RS RefSeg"


def push(bar: QgsMessageBar, text: str, level=Qgis.MessageLevel.Info, details: str = "", duration: int = 8) -> None:
    duration = 0 if level == Qgis.MessageLevel.Critical else duration  # errors stay until closed
    if details:
        bar.pushMessage(TITLE, text, details, level, duration)
    else:
        bar.pushMessage(TITLE, text, level, duration)
