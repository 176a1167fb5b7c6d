"""Small background tasks of the dock: list the backend's models, download a model's weights,
run the diagnostics report. Each reports back in the main thread through its callback."""

from __future__ import annotations

import subprocess  # nosec B404  # runs the configured backend interpreter, no shell
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsTask

from ..core.backend import Backend, backend_environ, doctor_report
from ..protocol.client import BackendError


class ModelsTask(QgsTask):
    def __init__(self, backend: Backend, on_done: Callable[[Optional[list], str], None]):
        super().__init__("RS RefSeg: list models", QgsTask.Flags())
        self.backend, self.on_done = backend, on_done
        self.rows: Optional[list] = None
        self.error = ""

    def run(self) -> bool:
        try:
            self.rows = self.backend.models()
            return True
        except BackendError as exc:
            self.error = str(exc).split("\n", 1)[0]
            return False

    def finished(self, ok: bool) -> None:
        self.on_done(self.rows, "" if ok else self.error or "cancelled")


class DownloadTask(QgsTask):
    """`rsseg models download ID` in the backend environment. Progress is the bytes on disk (the
    `.part` files the downloader resumes, then the verified files) over the registry sizes;
    the command's output lines go to `log`."""

    def __init__(self, python: str, model: str, weights: list[dict], log: Callable[[str], None],
                 on_done: Callable[[str, str], None]):
        super().__init__(f"RS RefSeg: download {model}", QgsTask.CanCancel)
        self.python, self.model, self.weights, self.log, self.on_done = python, model, weights, log, on_done
        self.lines: list[str] = []
        self.error = ""

    def _bytes_on_disk(self) -> int:
        total = 0
        for w in self.weights:
            for path in (Path(w["path"]), Path(w["path"] + ".part")):
                if path.exists():
                    total += min(path.stat().st_size, int(w["size"] or path.stat().st_size))
                    break
        return total

    def run(self) -> bool:
        cmd = [self.python, "-m", "rsseg", "models", "download", self.model]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,  # nosec B603
                                    env=backend_environ(), errors="replace")
        except OSError as exc:
            self.error = f"cannot start {self.python}: {exc}"
            return False
        reader = threading.Thread(target=lambda: self.lines.extend(line.rstrip() for line in proc.stdout), daemon=True)
        reader.start()
        size = sum(int(w["size"] or 0) for w in self.weights) or 1  # None: unpublished, not yet pinned
        while proc.poll() is None:
            if self.isCanceled():
                proc.kill()
                break
            self.setProgress(min(100.0, 100.0 * self._bytes_on_disk() / size))
            time.sleep(0.5)
        code = proc.wait()
        reader.join(timeout=5)
        if self.isCanceled():
            self.error = "cancelled (the partial file is kept and resumed next time)"
            return False
        if code != 0:
            self.error = self.lines[-1].split("\r")[-1] if self.lines else f"exit code {code}"
            return False
        return True

    def finished(self, ok: bool) -> None:
        for line in self.lines[-20:]:
            self.log(line.split("\r")[-1])  # tqdm redraws with \r: the last state of each line
        self.on_done(self.model, "" if ok else self.error)


class DoctorTask(QgsTask):
    def __init__(self, python: str, on_done: Callable[[str, str], None]):
        super().__init__("RS RefSeg: diagnostics", QgsTask.Flags())
        self.python, self.on_done = python, on_done
        self.report = ""
        self.error = ""

    def run(self) -> bool:
        try:
            self.report = doctor_report(self.python)
            return True
        except BackendError as exc:
            self.error = str(exc)
            return False

    def finished(self, ok: bool) -> None:
        self.on_done(self.report, "" if ok else self.error)
