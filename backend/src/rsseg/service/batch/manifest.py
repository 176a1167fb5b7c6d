"""The batch manifest (one row per raster, replaced atomically as each raster ends) and its summary table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...jsonfile import write_json_file
from ...protocol.batch import CANCELLED, DONE, FAILED, MANIFEST, BatchResult, BatchRow
from ...protocol.contracts import OUTPUTS, SegmentRequest


class BatchLog:
    """The rows of a running batch; `save` rewrites the manifest, so a stopped driver leaves a readable one."""

    def __init__(self, out_dir: str, requests: list[SegmentRequest], workers: int, address: str):
        self.out_dir = Path(out_dir).expanduser()
        self.path = self.out_dir / MANIFEST
        self.rows = [BatchRow(r.raster, r.out_dir, r.prompt) for r in requests]
        self.workers, self.address = workers, address
        self.started = time.monotonic()
        self.seconds: float | None = None  # set by finish
        self.cancelled = False

    def done(self, i: int, result: dict[str, Any], seconds: float, worker: str, kept: bool = False) -> None:
        row = self.rows[i]
        row.kept = kept
        keys = ("mask", "polygons", "scores")
        row.outputs = {k: result[k] for k in keys if result.get(k)}
        row.outputs["result"] = str(Path(row.out_dir) / OUTPUTS["result"])
        row.timings = dict(result.get("timings", {}))
        row.pixels = int(result.get("width", 0)) * int(result.get("height", 0))
        self._end(row, DONE, seconds, worker)

    def failed(self, i: int, error: dict[str, Any], seconds: float = 0.0, worker: str = "") -> None:
        row = self.rows[i]
        row.error = dict(error)
        self._end(row, CANCELLED if error.get("code") == "Cancelled" else FAILED, seconds, worker)

    def _end(self, row: BatchRow, status: str, seconds: float, worker: str) -> None:
        row.status, row.seconds, row.worker = status, round(seconds, 3), worker or row.worker
        self.save()

    def finish(self) -> BatchResult:
        """The batch's final record, saved as the manifest."""
        self.seconds = round(time.monotonic() - self.started, 3)
        self.save()
        return self.result()

    def result(self) -> BatchResult:
        seconds = self.seconds if self.seconds is not None else round(time.monotonic() - self.started, 3)
        return BatchResult(str(self.out_dir), str(self.path), self.workers, self.address, self.rows, seconds,
                           self.cancelled)

    def save(self) -> None:
        write_json_file(self.path, self.result().to_dict())


def summary_table(result: BatchResult) -> str:
    """What the CLI prints at the end: a line per raster, then the totals and the throughput."""
    lines = [f"{'raster':32s} {'status':9s} {'tries':>5s} {'seconds':>8s} {'Mpx/s':>6s}  worker / error"]
    for row in result.rows:
        rate = f"{row.pixels / row.seconds / 1e6:6.2f}" if row.status == DONE and row.seconds else "     -"
        note = row.error.get("message", "") if row.error else "kept from an earlier run" if row.kept else row.worker
        lines.append(f"{Path(row.raster).name[:32]:32s} {row.status:9s} {row.attempts:5d} {row.seconds:8.1f} "
                     f"{rate}  {note}")
    pixels = sum(r.pixels for r in result.rows if r.status == DONE)
    lines.append(f"{result.count(DONE)} done, {result.count(FAILED)} failed, {result.count(CANCELLED)} cancelled "
                 f"in {result.seconds:.1f} s on {result.workers} worker(s) ({result.address}); "
                 f"{pixels / max(result.seconds, 1e-9) / 1e6:.2f} Mpx/s overall; manifest {result.manifest}")
    return "\n".join(lines)
