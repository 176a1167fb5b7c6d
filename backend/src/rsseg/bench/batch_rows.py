"""The `rsseg batch` rows of `rsseg bench`: the same rasters on one and on two local Ray workers."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional

from ..protocol.batch import DONE, BatchRequest
from ..protocol.contracts import SegmentRequest
from ..service.batch.run import import_ray, ray_session, run_batch
from .synthetic import write_synthetic

CLASSES = ["water", "tree", "grass", "building"]  # as the `test` rows of the single-raster table


def batch_rows(work: Path, count: int, size: int, device: str, tile: int, overlap: int,
               split_size: int = 0) -> list[dict]:
    """Wall time of the whole batch (workers started, every raster segmented and vectorised), without the
    start of Ray itself (`ray_start_s`: a local Ray on this machine, or nothing when one is running); with
    `split_size`, one raster of that size whole on one worker, then split by rows across two."""
    settings = SegmentRequest(raster="", out_dir="", model="test", classes=CLASSES, device=device, tile=tile,
                              overlap=overlap)
    rasters = [str(write_synthetic(work / f"batch_{size}_{i}.tif", size, seed=i)) for i in range(count)]
    one = _row(work, rasters, size, settings, 1, f"{count} x {size}x{size}")
    rows = [one, _row(work, rasters, size, settings, 2, f"{count} x {size}x{size}", base=one)]
    if split_size:
        big = [str(write_synthetic(work / f"batch_split_{split_size}.tif", split_size))]
        whole = _row(work, big, split_size, settings, 1, f"1 x {split_size}x{split_size}")
        rows += [whole, _row(work, big, split_size, settings, 2, f"1 x {split_size}x{split_size} split", 1e-6, whole)]
    return rows


def _row(work: Path, rasters: list[str], size: int, settings: SegmentRequest, workers: int, label: str,
         split_mpx: float = 0.0, base: Optional[dict] = None) -> dict:
    """One batch run; its speed-up is against `base`."""
    ray = import_ray()
    out = work / f"batch_out_{workers}"
    t0 = time.perf_counter()
    with ray_session(ray, None):
        started = time.perf_counter() - t0
        result = run_batch(BatchRequest(rasters, str(out), settings, workers=workers, split_mpx=split_mpx))
    shutil.rmtree(out, ignore_errors=True)
    return {"workers": workers, "rasters": label, "wall_s": round(result.seconds, 2),
            "mpx_per_s": round(len(rasters) * size * size / result.seconds / 1e6, 2),
            "speedup": round(base["wall_s"] / result.seconds, 2) if base else 1.0,
            "ray_start_s": round(started, 2), "done": result.count(DONE)}
