"""The training-free open-vocabulary CLIP path (tiny twins of the real models, random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rsseg.errors import ModelError
from rsseg.execution.feature_cache import FeatureCache
from rsseg.models import build_model, get_spec
from rsseg.models.clip.builder import build_clip
from rsseg.models.clip.configs import TINY_CLIP
from rsseg.models.clip.dense import dense_features, interpolate_positions, self_self_attention
from rsseg.models.clip.text import class_logits
from rsseg.models.prompts import display_name, synonyms
from rsseg.protocol.contracts import SegmentRequest
from rsseg.service import run_segment

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"
TINY = "clip-vit-b-16-tiny"


@pytest.fixture(scope="module")
def clip():
    model, _ = build_clip({"architecture": TINY_CLIP})
    return model.eval()


def reference_self_self_attention(block, x: torch.Tensor) -> torch.Tensor:
    """The modified block written out from the raw weights, one head at a time."""
    d = x.shape[-1]
    heads = block.attn.num_heads
    hd = d // heads
    y = torch.nn.functional.layer_norm(x, (d,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    w, bias = block.attn.in_proj_weight, block.attn.in_proj_bias
    q, k, v = (y @ w[i * d:(i + 1) * d].T + bias[i * d:(i + 1) * d] for i in range(3))
    outs = []
    for h in range(heads):
        qh, kh, vh = (t[..., h * hd:(h + 1) * hd] for t in (q, k, v))
        total = 0
        for t in (qh, kh, vh):
            total = total + torch.softmax(torch.einsum("bid,bjd->bij", t, t) / hd ** 0.5, dim=-1)
        outs.append(torch.einsum("bij,bjd->bid", total, vh))
    out = torch.cat(outs, dim=-1)
    return out @ block.attn.out_proj.weight.T + block.attn.out_proj.bias


def test_modified_last_block_equals_the_reference(clip):
    block = clip.visual.transformer.resblocks[-1]
    torch.manual_seed(1)
    with torch.no_grad():
        for p in block.parameters():  # non-trivial biases and norms
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, 197, 64)
        assert torch.allclose(self_self_attention(block, x), reference_self_self_attention(block, x), atol=1e-5)
        plain = block(x)  # the unmodified block differs: residual, MLP, ordinary attention
        assert not torch.allclose(self_self_attention(block, x), plain, atol=1e-2)


def test_dense_features_shapes_and_the_standard_path(clip):
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        patches, cls = dense_features(clip.visual, images)
        assert patches.shape == (2, 32, 14, 14) and cls.shape == (2, 32)
        wide, _ = dense_features(clip.visual, torch.rand(1, 3, 224, 320))
    assert wide.shape == (1, 32, 14, 20)
    pos = clip.visual.positional_embedding
    assert interpolate_positions(pos, (14, 14)) is pos
    assert interpolate_positions(pos, (14, 20)).shape == (1 + 14 * 20, 64)


def test_class_lines_and_synonym_max():
    assert synonyms(" road , parking lot,") == ["road", "parking lot"] and display_name("road, parking lot") == "road"
    sim = torch.tensor([[[1.0], [3.0], [2.0]]])  # 3 synonyms, 1 pixel
    assert class_logits(sim, torch.tensor([0, 0, 1]), 2).flatten().tolist() == [3.0, 2.0]


def tiles(seed: int = 0, size: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).random((2, 3, size, size), dtype=np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_permuting_the_class_list_permutes_the_outputs():
    classes = ["building", "road, street", "tree", "water"]
    order = [2, 0, 3, 1]
    batch = tiles()
    a = build_model(TINY, classes, None)(batch)
    b = build_model(TINY, [classes[i] for i in order], None)(batch)
    assert a.shape == (2, 4, 256, 256)
    np.testing.assert_allclose(b, a[:, order], atol=1e-4)


def test_adding_a_synonym_never_lowers_that_class_score():
    batch = tiles(1)
    before = softmax(build_model(TINY, ["building", "road", "tree"], None)(batch))
    after = softmax(build_model(TINY, ["building, roof, house", "road", "tree"], None)(batch))
    assert (after[:, 0] >= before[:, 0] - 1e-6).all() and (after[:, 0] > before[:, 0] + 1e-4).any()


def test_encode_once_decode_many_equals_a_direct_call():
    batch = tiles(2)
    model = build_model(TINY, ["building", "tree"], None)
    features = model.encode(batch)
    np.testing.assert_allclose(model.decode(features), model(batch), atol=1e-5)
    other = build_model(TINY, ["water", "road", "field"], None)
    np.testing.assert_allclose(other.decode(features), other(batch), atol=1e-5)  # same features, new prompt


def test_small_tiles_and_non_square_tiles_run():
    model = build_model(TINY, ["a", "b"], None)
    assert model(np.random.rand(1, 3, 100, 300).astype(np.float32)).shape == (1, 2, 100, 300)


def segment(tmp_path, name, cache=None, **kw):
    request = dict(raster=str(NEON), out_dir=str(tmp_path / name), model=TINY, classes=["tree", "grass, lawn", "soil"],
                   tile=256, overlap=32, vectorise=True)
    return run_segment(SegmentRequest(**{**request, **kw}), cache=cache)


def test_real_imagery_end_to_end_writes_georeferenced_outputs(tmp_path):
    result = segment(tmp_path, "a")
    with rasterio.open(result.mask) as mask, rasterio.open(NEON) as src:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)
        ids = mask.read(1)
    assert [c.name for c in result.classes] == ["tree", "grass", "soil"]
    assert set(np.unique(ids)) <= {1, 2, 3, 255}
    assert sum(c.pixels for c in result.classes) + result.nodata_pixels == ids.size
    assert Path(result.polygons).exists() and result.run["precision"] == "fp32"


def test_the_threshold_produces_unlabelled_pixels(tmp_path):
    loose = segment(tmp_path, "loose")
    strict = segment(tmp_path, "strict", threshold=0.999)
    with rasterio.open(strict.mask) as ds:
        ids = ds.read(1)
    assert (ids == 0).sum() > 0 and any("unlabelled" in note for note in strict.notes)
    assert not any("unlabelled" in note for note in loose.notes)


def test_a_second_prompt_reuses_clip_features_and_matches_an_uncached_run(tmp_path):
    cache = FeatureCache()
    segment(tmp_path, "first", cache=cache)
    second = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "second"), model=TINY,
                                        classes=["water", "building"], tile=256, overlap=32, vectorise=False),
                         cache=cache)
    plain = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "plain"), model=TINY,
                                       classes=["water", "building"], tile=256, overlap=32, vectorise=False))
    assert second.run["features"] == {"encoded": 0, "reused": second.tiles}
    with rasterio.open(second.mask) as a, rasterio.open(plain.mask) as b:
        assert np.array_equal(a.read(), b.read())


def test_tiny_twins_are_deterministic_and_real_models_need_weights(tmp_path, monkeypatch):
    from rsseg.errors import WeightsError

    batch = tiles(3, 224)
    a = build_model("remoteclip-vit-b-32-tiny", ["x"], None)(batch)
    b = build_model("clip-vit-b-16-tiny", ["x"], None)(batch)
    np.testing.assert_array_equal(a, b)  # same tiny architecture and seed
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="weights for clip-vit-b-16 are not installed") as info:
        build_model("clip-vit-b-16", ["x"], None)
    assert "run `rsseg models download clip-vit-b-16`" in info.value.text("cli")
    assert get_spec("clip-vit-b-16").config["open_clip_model"] == "ViT-B-16-quickgelu"


# ----------------------------------------------------------------------------- refinement options (docs/refinement.md)
def test_every_upsampling_reaches_pixels_and_unknown_options_are_refused():
    batch = tiles(1)
    outs = {m: build_model(TINY, ["building", "tree"], None, options={"upsample": m})(batch)
            for m in ("bilinear", "guided", "jbu")}
    assert all(o.shape == (2, 2, 256, 256) and np.isfinite(o).all() for o in outs.values())
    assert not np.allclose(outs["bilinear"], outs["jbu"], atol=1e-3)  # the image guides the edges
    assert not np.allclose(outs["bilinear"], outs["guided"], atol=1e-3)
    # JBU is a convex combination of coarse logits: it never leaves their range
    model = build_model(TINY, ["building", "tree"], None, options={"upsample": "jbu"})
    patches, cls, guide = model.encode(batch)
    coarse = build_model(TINY, ["building", "tree"], None, options={"upsample": "bilinear"})
    assert outs["jbu"].max() <= coarse.decode((patches, cls, guide)).max() + 1e-3
    with pytest.raises(ModelError, match="unknown upsampling 'nearest'"):
        build_model(TINY, ["a"], None, options={"upsample": "nearest"})
    with pytest.raises(ModelError, match="unknown SAM refinement 'always'"):
        build_model(TINY, ["a"], None, options={"sam_refine": "always"})
    with pytest.raises(ModelError, match="takes no upsample option"):
        build_model("test", ["a"], None, options={"upsample": "jbu"})


@pytest.mark.parametrize("mode, options", [
    ("peaks", {"iou_thresh": -1.0, "min_confidence": 0.0, "min_area": 400, "max_box_fraction": 1.0}),
    ("vote", {"pred_iou_thresh": -1.0, "stability_thresh": -1.0, "points_per_side": 4, "min_area": 1}),
])
def test_sam_refinement_runs_through_the_model_and_its_embedding_is_cached(mode, options):
    """The tiny twin's SAM (sam-vit-b-tiny, random weights) with every mask trusted: the logits change."""
    batch = tiles(2)
    plain = build_model(TINY, ["building", "tree", "water"], None)
    refined = build_model(TINY, ["building", "tree", "water"], None,
                          options={"sam_refine": mode, "sam_options": options})
    assert refined.encoder_id != plain.encoder_id and "sam-vit-b-tiny" in refined.encoder_id
    features = refined.encode(batch)
    assert len(features) == 4 and features[3].shape[0] == 2  # the SAM embedding rides with the CLIP features
    out = refined.decode(features)
    assert out.shape == (2, 3, 256, 256) and not np.allclose(out, plain(batch), atol=1e-3)
    np.testing.assert_allclose(refined(batch), out, atol=1e-5)


def test_cli_segments_with_a_tiny_twin_and_sam_refinement(tmp_path, capsys):
    from rsseg.cli.main import main

    out = tmp_path / "cli"
    code = main(["segment", str(NEON), "--classes", "tree; grass, lawn; soil", "--model", TINY, "--out", str(out),
                 "--tile", "256", "--overlap", "32", "--upsample", "bilinear", "--sam-refine", "peaks", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["request"]["upsample"] == "bilinear" and result["request"]["sam_refine"] == "peaks"
    with rasterio.open(result["mask"]) as mask, rasterio.open(NEON) as src:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)
    import fiona

    with fiona.open(result["polygons"]) as layer:
        assert layer.crs_wkt and len(layer) > 0
        assert {f["properties"]["class"] for f in layer} <= {"tree", "grass", "soil"}
