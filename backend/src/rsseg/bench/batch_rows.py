"""The `rsseg batch` rows of `rsseg bench`: the same rasters on one and on two local Ray workers."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..protocol.batch import DONE, BatchRequest
from ..protocol.contracts import SegmentRequest
from ..service.batch.run import import_ray, ray_session, run_batch
from .synthetic import write_synthetic

CLASSES = ["water", "tree", "grass", "building"]  # as the `test` rows of the single-raster table
WORKERS = (1, 2)


def batch_rows(work: Path, count: int, size: int, device: str, tile: int, overlap: int) -> list[dict]:
    """Wall time of the whole batch (workers started, every raster segmented and vectorised), without the
    start of Ray itself (`ray_start_s`: a local Ray on this machine, or nothing when one is running)."""
    rasters = [str(write_synthetic(work / f"batch_{size}_{i}.tif", size, seed=i)) for i in range(count)]
    settings = SegmentRequest(raster="", out_dir="", model="test", classes=CLASSES, device=device, tile=tile,
                              overlap=overlap)
    ray, rows = import_ray(), []
    for workers in WORKERS:
        out = work / f"batch_out_{workers}"
        t0 = time.perf_counter()
        with ray_session(ray, None):
            started = time.perf_counter() - t0
            result = run_batch(BatchRequest(rasters, str(out), settings, workers=workers))
        shutil.rmtree(out, ignore_errors=True)
        rows.append({"workers": workers, "rasters": f"{count} x {size}x{size}", "wall_s": round(result.seconds, 2),
                     "mpx_per_s": round(count * size * size / result.seconds / 1e6, 2),
                     "speedup": round(rows[0]["wall_s"] / result.seconds, 2) if rows else 1.0,
                     "ray_start_s": round(started, 2), "done": result.count(DONE)})
    return rows
