"""Training from layers must learn what a pixel's colour cannot tell: texture.

A 1-band scene of rough patches (uniform noise over 0..255) on a smooth field (128 +- 4): both have the
same mean value, so a colour (value) threshold fitted on the training part catches at most one tail of
the rough values. The tiny UNetFormer trained on the western three quarters must beat that threshold's
rough-class IoU on the held-out eastern quarter by at least MARGIN, through the whole product path
(train_layers -> bundle -> run_segment).
"""

from __future__ import annotations

from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box, mapping

from rsseg.eval.baselines import binary_iou, fit_threshold
from rsseg.protocol.contracts import SegmentRequest
from rsseg.protocol.training import TrainLayersRequest
from rsseg.service.segment import run_segment
from rsseg.training.layers_run import train_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE, PIXEL, ORIGIN = 256, 1.0, (300000.0, 5000000.0)
EAST = 192  # columns from here on are held out (validation and test)
MARGIN = 0.25  # rough IoU: the trained model over the fitted threshold


def _scene(root: Path) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(7)
    truth = np.zeros((SIZE, SIZE), bool)
    boxes = []
    while truth.mean() < 0.3:
        w, h = rng.integers(16, 48, 2)
        c, r = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
        truth[r:r + h, c:c + w] = True
        boxes.append((c, r, c + w, r + h))
    image = np.where(truth, rng.integers(0, 256, truth.shape), 128 + rng.integers(-4, 5, truth.shape))
    raster = root / "texture.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(*ORIGIN, PIXEL, PIXEL)) as dst:
        dst.write(image.astype(np.uint8)[None])
    labels = root / "rough.gpkg"
    with fiona.open(labels, "w", driver="GPKG", crs="EPSG:32633",
                    schema={"geometry": "Polygon", "properties": {"surface": "int"}}) as out:
        for c0, r0, c1, r1 in boxes:
            geometry = box(ORIGIN[0] + c0, ORIGIN[1] - r1, ORIGIN[0] + c1, ORIGIN[1] - r0)
            out.write({"geometry": mapping(geometry), "properties": {"surface": 1}})
    return raster, labels, truth


def test_a_trained_model_learns_texture_that_a_colour_threshold_cannot(tmp_path):
    raster, labels, truth = _scene(tmp_path)
    result = train_layers(TrainLayersRequest(
        raster=str(raster), labels=str(labels), field="surface", classes={"1": "rough"}, out=str(tmp_path / "run"),
        model="unetformer-r18-tiny", epochs=12, chip=64, stride=32, batch_size=8, validation="east",
        validation_fraction=0.25, patience=0, device="cpu", seed=0))
    assert result.classes == ["background", "rough"]
    segmented = run_segment(SegmentRequest(raster=str(raster), out_dir=str(tmp_path / "seg"), model=result.model,
                                           tile=128, overlap=32, device="cpu"))
    with rasterio.open(segmented.mask) as src:
        mask = src.read(1)
    rough_id = next(c.id for c in segmented.classes if c.name == "rough")
    with rasterio.open(raster) as src:
        image = src.read()
    west, east = np.zeros_like(truth), np.zeros_like(truth)
    west[:, :EAST], east[:, EAST:] = True, True
    threshold = fit_threshold(image, truth, west)
    baseline = binary_iou(threshold.apply(image), truth, east)
    model = binary_iou(mask == rough_id, truth, east)
    print(f"rough IoU on the held-out east: model {model:.3f}, colour threshold {baseline:.3f} "
          f"(fitted on the west: {threshold.train_iou:.3f}), validation mIoU {result.metrics['miou']:.3f}")
    assert baseline < 0.6  # the scene is what it claims: value alone cannot find the rough patches
    assert model >= baseline + MARGIN
