"""Zero-shot referring: CLIP global-local features, the whole chain on the tiny twins, the proposal cache."""

from __future__ import annotations

import fiona
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.transform import from_origin

from rsseg.errors import ModelError
from rsseg.execution.feature_cache import FeatureCache
from rsseg.execution.tile_model import InstanceTileModel
from rsseg.execution.tile_runner import TileRunner
from rsseg.models.clip.builder import load_clip
from rsseg.models.factory import build_model, warm
from rsseg.models.registry import MODELS, get_spec
from rsseg.models.zs_ref.global_local import ScoringConfig, global_features, local_features, square_boxes
from rsseg.protocol.contracts import RequestError, SegmentRequest
from rsseg.raster.engine import segment

TINY = "zs-ref-clip-b16-sam-b-tiny"


@pytest.fixture(scope="module")
def clip():
    torch.set_num_threads(1)
    return warm(get_spec("clip-vit-b-16-tiny"), "cpu", load_clip)[0]


def _view(seed: int = 0, side: int = 224) -> torch.Tensor:
    return torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_a_mask_over_everything_gives_clips_own_image_feature(clip):
    view = _view()
    every = torch.ones(1, 224, 224, dtype=torch.bool)
    feature = global_features(clip, view, every, ScoringConfig(global_size=224, mask_block=-1))
    assert torch.allclose(feature, F.normalize(clip.encode_image(view).float(), dim=-1), atol=1e-5)


@torch.no_grad()
def test_token_masking_hides_what_lies_outside_the_proposal(clip):
    """Masked from the first block on, the class token sees only the proposal's patches: pixels elsewhere
    cannot change its feature, pixels inside do."""
    config = ScoringConfig(global_size=224, mask_block=0)
    mask = torch.zeros(1, 224, 224, dtype=torch.bool)
    mask[0, 32:96, 48:112] = True  # whole 16 px patches
    view = _view(1)
    outside, inside = view.clone(), view.clone()
    outside[..., 160:, :] = 3.0
    inside[..., 40:60, 60:80] = 3.0
    base = global_features(clip, view, mask, config)
    assert torch.allclose(global_features(clip, outside, mask, config), base, atol=1e-5)
    assert not torch.allclose(global_features(clip, inside, mask, config), base, atol=1e-3)
    chunked = global_features(clip, view, mask.expand(5, -1, -1), ScoringConfig(global_size=224, mask_block=0,
                                                                                 proposals_per_pass=2))
    assert torch.allclose(chunked, base.expand(5, -1), atol=1e-5)  # passes of any size give the same features


@torch.no_grad()
def test_local_feature_is_the_masked_square_crop(clip):
    image = _view(2, 300)[0]
    mask = torch.zeros(1, 300, 300, dtype=torch.bool)
    mask[0, 100:140, 50:130] = True
    boxes = torch.tensor([[50.0, 100.0, 130.0, 140.0]])
    config = ScoringConfig(crop_margin=0.0)
    (x0, y0, x1, y1), = square_boxes(boxes, (300, 300), 0.0).tolist()
    assert (x1 - x0, y1 - y0) == (80, 80) and (x0, x1) == (50, 130)  # square around the box's centre
    crop = (image * mask)[:, y0:y1, x0:x1]
    expected = clip.encode_image(F.interpolate(crop[None], size=(224, 224), mode="bilinear", align_corners=False,
                                               antialias=True))
    assert torch.allclose(local_features(clip, image, mask, boxes, config), F.normalize(expected.float(), dim=-1),
                          atol=1e-5)


def _raster(path, size=96):
    rng = np.random.default_rng(3)
    data = np.full((3, size, size), 40, np.uint8)
    for x0, y0, value in ((8, 30, 220), (40, 30, 180), (72, 30, 140)):  # three "buildings" in a row
        data[:, y0:y0 + 20, x0:x0 + 16] = value
    data = np.clip(data + rng.integers(0, 10, data.shape), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32617", transform=from_origin(400000, 3300000, 0.5, 0.5)) as dst:
        dst.write(data)
    return path


def test_whole_chain_on_the_tiny_twin_returns_ranked_objects(tmp_path):
    raster = _raster(tmp_path / "view.tif")
    model = build_model(TINY, None, "the leftmost of three buildings", options={"top_k": 3})
    assert isinstance(model, InstanceTileModel) and model.whole_region
    result = segment(SegmentRequest(raster=str(raster), out_dir=str(tmp_path / "out"), model=TINY,
                                    sentence="the leftmost of three buildings", top_k=3), model)
    with fiona.open(result.polygons) as layer:
        features = [dict(f["properties"]) for f in layer]
    assert 1 <= len(features) <= 3 and len({f["instance_id"] for f in features}) == len(features)
    ranked = sorted(features, key=lambda f: f["rank"])
    assert [f["rank"] for f in ranked] == list(range(1, len(ranked) + 1))
    assert all(a["score"] >= b["score"] for a, b in zip(ranked, ranked[1:]))
    assert result.classes[0].polygons == len(features) and result.classes[0].pixels > 0
    assert any("read as: target" in note and "building" in note and "left" in note for note in model.notes)


def test_a_second_sentence_on_the_same_view_reuses_the_proposals():
    view = np.random.default_rng(0).random((1, 3, 64, 80), dtype=np.float32)  # not square
    cache = FeatureCache()
    first = TileRunner(build_model(TINY, None, "the red roof"), cache=cache)
    first(view, ["view"])
    second_model = build_model(TINY, None, "the pool at the top", options={"top_k": 2})
    second = TileRunner(second_model, cache=cache)
    cached = second(view, ["view"])
    assert (first.encoded, second.encoded, second.reused) == (1, 0, 1)
    assert np.array_equal(cached, second_model(view))  # the cache changes nothing
    assert cached.shape == (1, 1, 64, 80)
    assert len(second.take_instances()[0]) <= 2


def test_options_and_prompts_it_refuses():
    with pytest.raises(ModelError, match="takes no upsample option"):
        build_model(TINY, None, "the road", options={"upsample": "jbu"})
    with pytest.raises(ModelError, match="takes sentence, not a class list"):
        build_model(TINY, ["road"], None)
    with pytest.raises(ModelError, match="top_k is for models that find objects"):
        build_model("rsrefseg-test", None, "the road", options={"top_k": 2})
    with pytest.raises(RequestError, match="top-k applies to a referring sentence"):
        SegmentRequest(raster="x.tif", out_dir="o", classes=["road"], top_k=2).validate()
    with pytest.raises(RequestError, match="between 1 and 100"):
        SegmentRequest(raster="x.tif", out_dir="o", sentence="the road", top_k=0).validate()


def test_registry_entries_are_built_from_public_parts():
    for model_id, sam in (("zs-ref-clip-b16-sam-b", "sam-vit-b"), ("zs-ref-clip-b16-litemedsam", "litemedsam")):
        spec = get_spec(model_id)
        assert spec.task == "sentence" and spec.instances and spec.real and not spec.needs_checkpoint
        assert spec.weights == MODELS["clip-vit-b-16"].weights + MODELS[sam].weights
        twin = get_spec(f"{model_id}-tiny")
        assert (twin.config["clip"], twin.config["sam"]) == ("clip-vit-b-16-tiny", f"{sam}-tiny")


def test_a_cpu_prompts_sam_with_a_coarser_grid_and_says_so():
    from rsseg.models.zs_ref.family import proposals_for

    config = get_spec("zs-ref-clip-b16-sam-b").config
    gpu, gpu_notes = proposals_for(config, "cuda:0")
    cpu, cpu_notes = proposals_for(config, "cpu")
    assert (gpu.points_per_side, gpu_notes) == (32, [])
    assert cpu.points_per_side == config["cpu_points_per_side"] < 32 and "16 x 16 point grid" in cpu_notes[0]
    tiny, notes = proposals_for(get_spec(TINY).config, "cpu")  # already coarser than the CPU grid: unchanged
    assert (tiny.points_per_side, notes) == (4, [])
