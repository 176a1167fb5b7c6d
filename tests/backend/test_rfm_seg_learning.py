"""RFM-Seg must learn through its connectors what its frozen host cannot: a cue the host never saw.

The host (a tiny UNetFormer) is trained on scenes where buildings are red and water is blue. In the new
scenes water is yellow: the frozen host misses it. RFM-Seg, fused into that host and trained on the new
scenes (connectors only), must find the yellow water on a held-out scene by at least MARGIN IoU more than
the host, through the whole product path (train_layers -> bundles -> run_segment).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from field_scenes import COLOURS, scene

from rsseg.bundles.format import read_bundle
from rsseg.eval.baselines import binary_iou
from rsseg.protocol.contracts import SegmentRequest
from rsseg.protocol.training import TrainLayersRequest
from rsseg.service.segment import run_segment
from rsseg.training.layers_run import train_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MARGIN = 0.3  # water IoU on a held-out scene: RFM-Seg over its frozen host


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("rfm")
    yellow = (220, 210, 60)
    old = scene(root, "old", 0, COLOURS["water"])
    new = scene(root, "new", 1, yellow)
    held_out = scene(root, "held_out", 2, yellow)
    host = _train(old[0], old[1], root / "host", "unetformer-r18-tiny", epochs=20)
    fused = _train(new[0], new[1], root / "rfm", "rfm-seg-r18-rn50-tiny", epochs=15, host=host.model)
    return {"root": root, "old": old, "held_out": held_out, "host": host, "fused": fused}


def test_rfm_seg_learns_a_cue_its_frozen_host_never_saw(trained, tmp_path):
    host, fused, old, held_out = trained["host"], trained["fused"], trained["old"], trained["held_out"]
    assert host.classes == ["background", "building", "water"] and fused.classes == host.classes
    info = read_bundle(fused.model)
    assert info.builder == "rfm_seg" and info.config["host_name"] == "host"
    assert info.mean == read_bundle(host.model).mean  # normalised as the host was trained
    on_old = _water_iou(host.model, old[0], old[2], tmp_path / "seg-host-old")
    by_host = _water_iou(host.model, held_out[0], held_out[2], tmp_path / "seg-host")
    by_rfm = _water_iou(fused.model, held_out[0], held_out[2], tmp_path / "seg-rfm")
    print(f"water IoU: host on its own scenes {on_old:.3f}; held-out yellow water: host {by_host:.3f}, "
          f"RFM-Seg {by_rfm:.3f}")
    assert on_old > 0.5  # the host learnt its scenes
    assert by_host < 0.2  # and misses the cue it never saw
    assert by_rfm >= by_host + MARGIN


def test_the_bundle_holds_the_host_but_not_clip_and_segments_without_the_host_folder(trained, tmp_path, capsys):
    from safetensors.torch import load_file

    from rsseg.cli.main import main

    fused = Path(trained["fused"].model)
    keys = set(load_file(str(fused / "weights.safetensors")))
    assert any(k.startswith("host.") for k in keys) and any(k.startswith("connect.") for k in keys)
    assert not any(k.startswith("clip.") for k in keys)  # CLIP comes from its registry weights
    host = Path(trained["host"].model)
    moved = host.with_name("host-away")
    host.rename(moved)
    try:
        code = main(["segment", str(trained["held_out"][0]), "--model", str(fused), "--out", str(tmp_path / "cli"),
                     "--device", "cpu", "--json"])
    finally:
        moved.rename(host)
    assert code == 0
    assert '"mask"' in capsys.readouterr().out and any((tmp_path / "cli").glob("*.tif"))


def test_asked_for_water_alone_it_labels_water_only_where_it_is(trained, tmp_path):
    held_out = trained["held_out"]
    result = run_segment(SegmentRequest(raster=str(held_out[0]), out_dir=str(tmp_path / "water"),
                                        model=trained["fused"].model, classes=["water"], tile=96, overlap=32,
                                        device="cpu"))
    with rasterio.open(result.mask) as src:
        mask = src.read(1)
    assert [c.name for c in result.classes] == ["water"]
    assert binary_iou(mask == 1, held_out[2], np.ones_like(held_out[2])) > 0.5
    assert (mask == 0).mean() > 0.5  # the field and the buildings stay unlabelled


def test_a_class_written_with_synonyms_sets_its_vl_map_prompts_and_the_features_are_reused(trained):
    from rsseg.execution.feature_cache import FeatureCache
    from rsseg.execution.tile_runner import TileRunner
    from rsseg.models.factory import build_model

    bundle = trained["fused"].model
    first = build_model(bundle, ["background", "building", "water"], None)
    assert first.class_names == ("background", "building", "water")
    own = first.net.prompts
    second = build_model(bundle, ["water, a yellow pond, a pool", "building"], None)
    assert second.class_names == ("water", "building")
    assert second.net.prompts == [own[0], own[1], ["a yellow pond", "a pool"]]
    assert second.encoder_id == first.encoder_id  # the encoders' features do not depend on the prompts
    with rasterio.open(trained["held_out"][0]) as src:
        tiles = (src.read(window=((0, 64), (0, 64))).astype(np.float32) / 255.0)[None].repeat(2, axis=0)
    keys, cache = ["tile a", "tile b"], FeatureCache()
    TileRunner(first, "cpu", 2, cache)(tiles, keys)
    runner = TileRunner(second, "cpu", 2, cache)
    logits = runner(tiles, keys)
    assert (runner.encoded, runner.reused) == (0, 2)
    assert np.allclose(logits, second(tiles), atol=1e-5)
