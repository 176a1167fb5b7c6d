"""The plugin's one way to the models: a worker client on the configured backend interpreter.

The dock's task, the right-click action and the Processing algorithms all call `run_job` (the
QuickOSM pattern: one core, several front ends). It runs in a background thread (QgsTask or
Processing), reports progress as a percentage, turns cancellation into the worker's `cancel`, and
raises BackendError subclasses whose `str()` is a message for the user.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404  # runs the configured backend interpreter, no shell
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..protocol.client import BackendError, WorkerClient, WorkerConfig, WorkerStartError
from ..protocol.contracts import SegmentRequest, SegmentResult
from .settings import PluginSettings

# QGIS (notably on Windows) exports its own Python's home and path; the backend is another Python.
CLEAN_ENV = {"PYTHONHOME": "", "PYTHONPATH": ""}  # CPython ignores empty PYTHON* variables
STAGE_WEIGHT = {"load model": (0, 5), "segment": (5, 90), "vectorise": (90, 100)}


@dataclass
class JobOutcome:
    result: SegmentResult  # the record the worker sent (result.json is never re-read)


def _percent(stage: str, done: int, total: int) -> float:
    low, high = STAGE_WEIGHT.get(stage, (0, 100))
    return low + (high - low) * (done / total if total else 0.0)


class Backend:
    """One worker per QGIS session, restarted by the client after a crash; one job at a time."""

    def __init__(self, python: str, log: Optional[Callable[[str], None]] = None):
        if not python:
            raise WorkerStartError("no backend interpreter is set: use “Set up backend” in the RS RefSeg dock, or "
                                   "set the Python of an environment with rsseg installed")
        self.python = python
        self.client = WorkerClient(WorkerConfig(python, env=dict(CLEAN_ENV), log=log))

    def run_job(self, request: SegmentRequest, progress: Optional[Callable[[float, str], None]] = None,
                cancelled: Optional[Callable[[], bool]] = None) -> JobOutcome:
        """Run one job to its result; `cancelled` is polled on every progress event and every second."""
        stop = threading.Event()

        def watch() -> None:  # a job that sends no progress for a while can still be cancelled
            while not stop.wait(1.0):
                if cancelled is not None and cancelled():
                    self.client.cancel()
                    return

        def on_progress(record) -> None:
            if progress is not None:
                progress(_percent(record.stage, record.done, record.total), record.stage)
            if cancelled is not None and cancelled():
                self.client.cancel()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            record = self.client.segment(request, on_progress)
        finally:
            stop.set()
        try:
            return JobOutcome(SegmentResult.from_dict(record))
        except ValueError as exc:
            raise BackendError(f"the backend's result cannot be read by this plugin ({exc}): install a matching "
                               "backend with “Set up backend”") from None

    def models(self) -> list[dict[str, Any]]:
        return self.client.models(timeout=120)

    def close(self) -> None:
        self.client.close()


def doctor_report(python: str, timeout: float = 120) -> str:
    """`rsseg doctor --markdown` of the backend environment (for bug reports)."""
    if not python:
        raise WorkerStartError("no backend interpreter is set")
    try:
        proc = subprocess.run([python, "-m", "rsseg", "doctor", "--markdown"], capture_output=True,  # nosec B603
                              text=True, timeout=timeout, env=backend_environ(), check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkerStartError(f"cannot run {python} -m rsseg doctor: {exc}") from None
    if proc.returncode != 0:
        raise BackendError(f"rsseg doctor failed (exit code {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def backend_environ() -> dict[str, str]:
    """This process's environment for a backend-interpreter subprocess (see CLEAN_ENV)."""
    return {**os.environ, **CLEAN_ENV}


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
