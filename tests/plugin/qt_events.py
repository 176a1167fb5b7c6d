"""Waiting in plugin tests: Qt events are processed while a condition is awaited (tasks, the worker)."""

from __future__ import annotations

import time

from qgis.core import QgsApplication


def wait_for(condition, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert condition(), "timed out"
