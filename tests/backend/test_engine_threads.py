"""The engine's reader and writer threads (rsseg.raster.pipeline): order, errors, stopping, and real jobs that
leave no thread and no file behind, whether they finish, are cancelled or meet a damaged raster."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio

from rsseg.errors import Cancelled, DamagedRasterError
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import SegmentRequest
from rsseg.raster.pipeline import ReadAhead, WriteBehind
from rsseg.service.segment import run_segment

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"  # RGB Byte, 400x400


def engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rsseg-")]


def test_read_ahead_keeps_order_stays_ahead_and_raises_where_the_reader_failed():
    opened, closed, read = [], [], []

    def open_reader():
        opened.append(threading.current_thread().name)

        def one(tile: int) -> int:
            read.append(tile)
            if tile == 7:
                raise DamagedRasterError("tile 7 is damaged")
            return tile * 10
        return SimpleNamespace(read=one, close=lambda: closed.append(True))

    reads = ReadAhead(range(10), open_reader, depth=3)
    assert [reads.next() for _ in range(7)] == [(t, t * 10) for t in range(7)]
    with pytest.raises(DamagedRasterError, match="tile 7"):
        reads.next()
    reads.stop()
    assert opened == ["rsseg-read"] and closed == [True] and read == list(range(8))
    assert not reads.thread.is_alive()


def test_read_ahead_stops_early_without_reading_the_rest():
    read = []

    def open_reader():
        def one(tile):
            read.append(tile)
            return tile
        return SimpleNamespace(read=one, close=lambda: None)

    reads = ReadAhead(range(1000), open_reader, depth=2)
    assert reads.next() == (0, 0)
    reads.stop()
    assert not reads.thread.is_alive() and len(read) <= 5  # the queue bounds how far it ran ahead


def test_write_behind_writes_in_order_and_its_failure_reaches_the_caller():
    written = []

    def write(i: int) -> None:
        if i == 5:
            raise OSError(28, "No space left on device")
        written.append(i)

    rows = WriteBehind(write, depth=2)
    with pytest.raises(OSError, match="No space left"):
        for i in range(100):
            rows.put(i)
            time.sleep(0.001)
    rows.stop()
    assert written == [0, 1, 2, 3, 4] and not rows.thread.is_alive()


def test_write_behind_finish_waits_for_every_item_and_stop_writes_no_more():
    written = []
    rows = WriteBehind(written.append, depth=3)
    for i in range(50):
        rows.put(i)
    rows.finish()
    assert written == list(range(50))

    slow, started = [], threading.Event()

    def write(i):
        started.set()
        time.sleep(0.05)
        slow.append(i)

    rows = WriteBehind(write, depth=10)
    for i in range(10):
        rows.put(i)
    started.wait(5)
    rows.stop()
    count = len(slow)
    time.sleep(0.2)
    assert count == len(slow) < 10  # nothing is written after stop() returned


def request(raster, out_dir, **kw) -> SegmentRequest:
    return SegmentRequest(raster=str(raster), out_dir=str(out_dir), classes=["tree", "grass", "road"], tile=128,
                          overlap=32, batch_size=2, device="cpu", **kw)


def test_a_job_finishes_with_its_threads_gone_and_the_same_mask_as_a_rerun(tmp_path):
    first = run_segment(request(NEON, tmp_path / "a", write_scores=True))
    second = run_segment(request(NEON, tmp_path / "b", write_scores=True))
    assert engine_threads() == []
    with rasterio.open(first.mask) as a, rasterio.open(second.mask) as b:
        assert np.array_equal(a.read(), b.read())  # threads change the order of work, not its results
    assert first.timings["read"] > 0 and first.timings["write"] > 0


def test_a_cancelled_job_leaves_no_threads_and_no_files(tmp_path):
    token = CancelToken()

    def progress(event):
        if event.stage == "segment" and event.done >= 3:
            token.cancel()

    with pytest.raises(Cancelled):
        run_segment(request(NEON, tmp_path / "out"), progress, token)
    assert engine_threads() == [] and os.listdir(tmp_path / "out") == []


def test_a_raster_damaged_part_way_stops_the_job_cleanly(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 512, 512), np.uint8)
    raster = tmp_path / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8", tiled=True,
                       blockxsize=128, blockysize=128, compress="deflate", crs="EPSG:32617",
                       transform=rasterio.Affine(1, 0, 500000, 0, -1, 3000000)) as dst:
        dst.write(data)
    raster.write_bytes(raster.read_bytes()[: int(raster.stat().st_size * 0.7)])  # the last blocks are gone
    (tmp_path / "out").mkdir()
    with pytest.raises(DamagedRasterError, match="scene.tif at columns"):  # a tile the reader thread read
        run_segment(request(raster, tmp_path / "out", value_range=(0.0, 255.0)))
    assert engine_threads() == [] and os.listdir(tmp_path / "out") == []
