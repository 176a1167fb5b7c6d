"""rsseg.datasets: the chip sampler on real georeferenced rasters, and the package's import weight.

The referring readers and the semantic layouts moved here unchanged; their tests are
test_referring_data.py and test_eval.py.
"""

from __future__ import annotations

import subprocess  # nosec B404
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from rsseg.datasets.chips import Chip, chip_windows, labelled_fraction, sample_chips
from rsseg.datasets.semantic import DatasetError
from rsseg.errors import ParameterError

DATA = Path(__file__).parents[1] / "data"
PAN = DATA / "spacenet_vegas_roads_pan.tif"  # 1300 x 1300 uint16, EPSG:4326
ROADS = DATA / "spacenet_vegas_road_mask.tif"  # the same grid, 255 on roads and 0 elsewhere (3.3% road)


@pytest.fixture(scope="module")
def rasters() -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(PAN) as image, rasterio.open(ROADS) as label:
        assert (image.shape, image.transform, image.crs) == (label.shape, label.transform, label.crs)  # one grid
        return image.read(), label.read(1)


def test_windows_step_by_the_stride_and_stay_inside():
    assert [(w.col_off, w.row_off) for w in chip_windows(10, 8, 4)] == [(0, 0), (4, 0), (0, 4), (4, 4)]
    assert [(w.col_off, w.row_off) for w in chip_windows(10, 7, 4)] == [(0, 0), (4, 0)]  # 3 rows left: no chip
    overlapping = chip_windows(10, 4, 4, stride=3)
    assert [w.col_off for w in overlapping] == [0, 3, 6] and {w.row_off for w in overlapping} == {0}
    assert chip_windows(3, 3, 4) == []  # smaller than one chip
    assert len(chip_windows(1300, 1300, 256)) == 25 and len(chip_windows(1300, 1300, 256, 128)) == 81
    with pytest.raises(ParameterError, match="at least 1 pixel"):
        chip_windows(10, 10, 4, stride=0)
    assert labelled_fraction(np.array([[0, 255], [1, 255]]), 255) == 0.5
    assert labelled_fraction(np.array([[0, 255]]), None) == 1.0


def test_chips_are_the_rasters_at_their_windows_and_keep_enough_labels(rasters):
    """On the Las Vegas roads: 0 (no road) counts as unlabelled, so min_labelled keeps chips with roads."""
    image, label = rasters
    chips = list(sample_chips(PAN, ROADS, 256, ignore_index=0, min_labelled=0.05))
    expected = [w for w in chip_windows(1300, 1300, 256)
                if np.mean(label[w.row_off:w.row_off + 256, w.col_off:w.col_off + 256] == 255) >= 0.05]
    assert [c.window for c in chips] == expected and len(chips) == 11  # of 25 windows
    for chip in chips:
        assert isinstance(chip, Chip) and chip.image.shape == (1, 256, 256) and chip.image.dtype == np.uint16
        rows, cols = chip.window.toslices()
        assert np.array_equal(chip.image, image[:, rows, cols]) and np.array_equal(chip.label, label[rows, cols])
        assert np.mean(chip.label != 0) >= 0.05
    everything = list(sample_chips(PAN, ROADS, 256, stride=128, ignore_index=0))
    assert len(everything) == 81  # min_labelled 0 keeps every window, overlapping at stride 128
    # the default ignore_index (255) counts the roads as unlabelled: only the two chips over 10% road go
    kept = [c.window for c in sample_chips(PAN, ROADS, 256, min_labelled=0.9)]
    assert kept == [w for w in chip_windows(1300, 1300, 256) if np.mean(label[w.toslices()] != 255) >= 0.9]
    assert len(kept) == 23


def test_a_seed_gives_one_shuffled_order(rasters):
    def order(seed):
        return [(c.window.col_off, c.window.row_off) for c in sample_chips(PAN, ROADS, 256, ignore_index=0,
                                                                           min_labelled=0.05, seed=seed)]

    plain, shuffled = order(None), order(7)
    assert shuffled == order(7) and shuffled != plain and sorted(shuffled) == sorted(plain)
    assert order(8) != shuffled


def _copy(src: Path, dest: Path, **changes) -> Path:
    with rasterio.open(src) as ds:
        profile, data = ds.profile, ds.read()
    profile.update(changes)
    with rasterio.open(dest, "w", **profile) as out:
        out.write(data[:, :profile["height"], :profile["width"]])
    return dest


def test_rasters_off_one_grid_are_refused_before_any_chip(tmp_path):
    with rasterio.open(ROADS) as ds:
        t = ds.transform
    shifted = _copy(ROADS, tmp_path / "shifted.tif", transform=t * Affine.translation(1, 0))  # one pixel east
    with pytest.raises(DatasetError, match=r"not on the grid of the image .*transform"):
        sample_chips(PAN, shifted, 256)
    with pytest.raises(DatasetError, match=r"size 1300x1300 vs 900x900 px.*CRS EPSG:4326 vs EPSG:32616"):
        sample_chips(PAN, DATA / "spacenet_atlanta_pan.tif", 256)
    noise = _copy(ROADS, tmp_path / "noise.tif", transform=t * Affine.translation(1e-9, 0))  # writer float noise
    assert len(list(sample_chips(PAN, noise, 256, ignore_index=0, min_labelled=0.05))) == 11
    with pytest.raises(DatasetError, match="raster not found"):
        sample_chips(PAN, tmp_path / "missing.tif", 256)
    with pytest.raises(ParameterError, match="min_labelled"):
        sample_chips(PAN, ROADS, 256, min_labelled=5)
    with pytest.raises(ParameterError, match="label band 2"):
        sample_chips(PAN, ROADS, 256, label_band=2)


def test_the_datasets_package_imports_no_torch():
    """Training and eval share it; tools and tests use it without a model."""
    code = ("import sys, rsseg.datasets.chips, rsseg.datasets.semantic, rsseg.datasets.referring.synthetic; "
            "print(sorted(m for m in ('torch', 'rsseg.training', 'rsseg.eval', 'rsseg.models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # nosec B603
    assert out.stdout.strip() == "[]"
