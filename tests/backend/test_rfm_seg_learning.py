"""RFM-Seg must learn through its connectors what its frozen host cannot: a cue the host never saw.

The host (a tiny UNetFormer) is trained on scenes where buildings are red and water is blue. In the new
scenes water is yellow: the frozen host misses it. RFM-Seg, fused into that host and trained on the new
scenes (connectors only), must find the yellow water on a held-out scene by at least MARGIN IoU more than
the host, through the whole product path (train_layers -> bundles -> run_segment).
"""

from __future__ import annotations

from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box, mapping

from rsseg.bundles.format import read_bundle
from rsseg.eval.baselines import binary_iou
from rsseg.protocol.contracts import SegmentRequest
from rsseg.protocol.training import TrainLayersRequest
from rsseg.service.segment import run_segment
from rsseg.training.layers_run import train_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE, ORIGIN = 192, (300000.0, 5000000.0)
FIELD = (70, 140, 60)
COLOURS = {"building": (200, 60, 50), "water": (40, 60, 200)}
MARGIN = 0.3  # water IoU on a held-out scene: RFM-Seg over its frozen host


def scene(root: Path, name: str, seed: int, water: tuple[int, int, int]) -> tuple[Path, Path, np.ndarray]:
    """A field with red buildings and water squares of colour `water`; returns the raster, the labels and the
    water truth."""
    rng = np.random.default_rng(seed)
    image = np.empty((3, SIZE, SIZE), np.int16)
    image[:] = np.array(FIELD)[:, None, None]
    kinds = np.zeros((SIZE, SIZE), np.uint8)
    features = []
    for k in range(24):
        kind = ("building", "water")[k % 2]
        w, h = rng.integers(14, 30, 2)
        c, r = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
        if kinds[max(r - 2, 0):r + h + 2, max(c - 2, 0):c + w + 2].any():
            continue
        colour = water if kind == "water" else COLOURS["building"]
        image[:, r:r + h, c:c + w] = np.array(colour)[:, None, None]
        kinds[r:r + h, c:c + w] = 1 + (kind == "water")
        features.append((kind, box(ORIGIN[0] + c, ORIGIN[1] - (r + h), ORIGIN[0] + c + w, ORIGIN[1] - r)))
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    raster = root / f"{name}.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(*ORIGIN, 1.0, 1.0)) as dst:
        dst.write(image)
    labels = root / f"{name}.gpkg"
    with fiona.open(labels, "w", driver="GPKG", crs="EPSG:32633",
                    schema={"geometry": "Polygon", "properties": {"kind": "str"}}) as out:
        for kind, geometry in features:
            out.write({"geometry": mapping(geometry), "properties": {"kind": kind}})
    return raster, labels, kinds == 2


def _train(raster: Path, labels: Path, out: Path, model: str, epochs: int, host: str | None = None):
    return train_layers(TrainLayersRequest(
        raster=str(raster), labels=str(labels), field="kind", out=str(out), model=model, host=host, epochs=epochs,
        chip=64, stride=32, batch_size=8, validation="none", patience=0, device="cpu", seed=0))


def _water_iou(model: str, raster: Path, truth: np.ndarray, out: Path) -> float:
    result = run_segment(SegmentRequest(raster=str(raster), out_dir=str(out), model=model, tile=96, overlap=32,
                                        device="cpu"))
    with rasterio.open(result.mask) as src:
        mask = src.read(1)
    water = next(c.id for c in result.classes if c.name == "water")
    return binary_iou(mask == water, truth, np.ones_like(truth))


def test_rfm_seg_learns_a_cue_its_frozen_host_never_saw(tmp_path):
    yellow = (220, 210, 60)
    old = scene(tmp_path, "old", 0, COLOURS["water"])
    new = scene(tmp_path, "new", 1, yellow)
    held_out = scene(tmp_path, "held_out", 2, yellow)
    host = _train(old[0], old[1], tmp_path / "host", "unetformer-r18-tiny", epochs=20)
    assert host.classes == ["background", "building", "water"]
    fused = _train(new[0], new[1], tmp_path / "rfm", "rfm-seg-r18-rn50-tiny", epochs=15, host=host.model)
    assert fused.classes == host.classes
    info = read_bundle(fused.model)
    assert info.builder == "rfm_seg" and info.config["host_name"] == "host" and info.mean == read_bundle(
        host.model).mean  # normalised as the host was trained
    on_old = _water_iou(host.model, old[0], old[2], tmp_path / "seg-host-old")
    by_host = _water_iou(host.model, held_out[0], held_out[2], tmp_path / "seg-host")
    by_rfm = _water_iou(fused.model, held_out[0], held_out[2], tmp_path / "seg-rfm")
    print(f"water IoU: host on its own scenes {on_old:.3f}; held-out yellow water: host {by_host:.3f}, "
          f"RFM-Seg {by_rfm:.3f}")
    assert on_old > 0.5  # the host learnt its scenes
    assert by_host < 0.2  # and misses the cue it never saw
    assert by_rfm >= by_host + MARGIN
