"""RSRefSeg (docs/rsrefseg.md) at test size: every stage, the semantics, caching, LoRA, the registry entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from rsseg.models.rsrefseg.configs import TINY, prompt_grid
from rsseg.models.rsrefseg.encoders import text_tokens, visual_tokens
from rsseg.models.rsrefseg.lora import apply_lora_config, load_trainable_state_dict, trainable_state_dict
from rsseg.models.rsrefseg.model import build_rsrefseg, parameter_counts, segmentation_loss
from rsseg.models.rsrefseg.prompter import AttnPrompter, global_logits, local_semantics

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"
SENTENCES = ["the large tree on the left", "a road"]


@pytest.fixture(scope="module")
def model():
    return build_rsrefseg(TINY).eval()


def images(b: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_every_stage_has_the_documented_shape(model):
    x, text = images(), model.tokenize(SENTENCES)
    v, embeddings = model.encode(x)
    assert v.shape == (2, 32, 14, 14)  # tiny CLIP: embed 32, 224 / 16 patches
    assert embeddings.shape == (2, 64, 16, 16)  # tiny SAM: prompt width 64, 256 / 16
    tokens, sentence = text_tokens(model.clip, text)
    assert tokens.shape == (2, 77, 32) and sentence.shape == (2, 32)
    assert torch.allclose(sentence, model.clip.encode_text(text), atol=1e-5)  # the standard pooled embedding
    prompts = model.prompts(v, text)
    assert prompts.sparse.shape == (2, 16, 64)  # 14 -> 7 -> 4
    assert prompts.dense.shape == (2, 64, 16, 16) and prompts.global_logits.shape == (2, 1, 14, 14)
    assert model.decode((v, embeddings), text).shape == (2, 1, 64, 64)  # SAM's low-res masks
    assert model(x, text).shape == (2, 1, 256, 256)
    assert model(images(1, 200), text[:1]).shape == (1, 1, 200, 200)  # any tile size: resized in, upsampled out


@torch.no_grad()
def test_visual_tokens_are_the_standard_towers_tokens(model):
    """The patch tokens come from the unmodified tower: its pooled class token matches encode_image."""
    visual = model.clip.visual
    x = torch.randn(1, 3, 224, 224)
    full = visual.ln_post(visual.transformer(visual._embeds(x))) @ visual.proj
    assert torch.allclose(full[:, 0], model.clip.encode_image(x), atol=1e-5)
    assert torch.allclose(visual_tokens(visual, x).flatten(2).transpose(1, 2), full[:, 1:], atol=1e-6)


def _reference_semantics(v, tokens, valid, sentence, s, b):
    """Written out per token and per pixel, independently of prompter.py."""
    bsz, e, h, w = v.shape
    local = torch.zeros_like(v)
    glob = torch.zeros(bsz, 1, h, w)
    for i in range(bsz):
        pix = v[i].reshape(e, -1).T  # [hw, E]
        pix_n = pix / pix.norm(dim=1, keepdim=True)
        acts = []
        for d in range(tokens.shape[1]):
            if valid[i, d]:
                t = tokens[i, d] / tokens[i, d].norm()
                acts.append(torch.sigmoid(s * (pix_n @ t) + b)[:, None] * pix)
        local[i] = (pix + torch.stack(acts).mean(0)).T.reshape(e, h, w) / 2
        glob[i, 0] = (s * (pix_n @ (sentence[i] / sentence[i].norm())) + b).reshape(h, w)
    return local, glob


def test_local_and_global_semantics_match_a_reference_computation():
    g = torch.Generator().manual_seed(1)
    v, tokens, sentence = (torch.randn(2, 8, 5, 5, generator=g), torch.randn(2, 6, 8, generator=g),
                           torch.randn(2, 8, generator=g))
    valid = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    s, b = torch.tensor(14.3), torch.tensor(-2.0)
    ref_local, ref_global = _reference_semantics(v, tokens, valid, sentence, s, b)
    assert torch.allclose(local_semantics(v, tokens, valid, s, b), ref_local, atol=1e-5)
    assert torch.allclose(global_logits(v, sentence, s, b), ref_global, atol=1e-4)


def test_padding_tokens_do_not_affect_the_local_semantics():
    g = torch.Generator().manual_seed(2)
    v, tokens = torch.randn(1, 8, 4, 4, generator=g), torch.randn(1, 3, 8, generator=g)
    s, b = torch.tensor(10.0), torch.tensor(-1.0)
    short = local_semantics(v, tokens, torch.ones(1, 3, dtype=torch.bool), s, b)
    padded = torch.cat([tokens, 100 * torch.randn(1, 5, 8, generator=g)], dim=1)
    valid = torch.tensor([[True] * 3 + [False] * 5])
    assert torch.allclose(local_semantics(v, padded, valid, s, b), short, atol=1e-6)


@pytest.mark.parametrize("grid, blocks, tokens",
                         [(27, 2, 49), (14, 2, 16), (16, 2, 16), (16, 1, 64), (27, 3, 16), (7, 0, 49)])
def test_prompter_token_count(grid, blocks, tokens):
    prompter = AttnPrompter(8, 16, down_blocks=blocks).eval()
    maps = [torch.randn(1, 8, grid, grid) for _ in range(3)]
    out = prompter(*maps, torch.zeros(16, grid, grid))
    assert out.shape == (1, tokens, 16) and prompt_grid(grid, blocks) ** 2 == tokens


def _count_calls(module: torch.nn.Module, counter: dict, key: str) -> None:
    module.register_forward_hook(lambda *_: counter.__setitem__(key, counter.get(key, 0) + 1))


def test_decode_of_encode_is_the_forward_and_a_second_sentence_runs_no_image_encoder():
    from rsseg.models.rsrefseg.tile_model import RSRefSegTileModel

    model = build_rsrefseg(TINY).eval()
    calls: dict = {}
    _count_calls(model.clip.visual.transformer, calls, "clip")
    _count_calls(model.sam.image_encoder, calls, "sam")
    x = images()
    with torch.no_grad():
        text = model.tokenize(SENTENCES)
        full = model(x, text)
        assert calls == {"clip": 1, "sam": 1}
        assert torch.equal(model.decode(model.encode(x), text, (256, 256)), full)
    first = RSRefSegTileModel(model, SENTENCES[0], "cpu", "id")
    second = RSRefSegTileModel(model, SENTENCES[1], "cpu", "id")
    batch = x.numpy()
    calls.clear()
    features = first.encode(batch)
    a, b = first.decode(features), second.decode(features)
    assert calls == {"clip": 1, "sam": 1}  # the second sentence reused the cached image features
    assert a.shape == b.shape == (2, 1, 256, 256) and a.dtype == np.float32 and not np.array_equal(a, b)
    assert np.allclose(a, first(batch), atol=1e-6)
    assert np.allclose(a[0, 0], full[0, 0].numpy(), atol=1e-5)  # the tile model is the module (image 0, sentence 0)


def test_lora_trains_only_adapters_prompter_prompt_encoder_and_mask_decoder():
    model = build_rsrefseg(TINY)
    before = parameter_counts(model)
    assert before[0] == before[1]
    apply_lora_config(model, TINY)
    trainable, total = parameter_counts(model)
    assert 0 < trainable < total and total > before[1]  # adapters added, base frozen
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    full = ("prompter.", "sam.prompt_encoder.", "sam.mask_decoder.")
    assert all("lora_" in n or n.startswith(full) for n in names), \
        [n for n in names if "lora_" not in n and not n.startswith(full)]
    adapted = {n.split(".lora_")[0] for n in names if "lora_" in n}
    assert "sam.image_encoder.blocks.0.attn.qkv" in adapted and "sam.image_encoder.blocks.1.mlp.lin2" in adapted
    assert {"sam.image_encoder.neck.0", "sam.image_encoder.neck.2", "clip.text.text_projection"} <= adapted
    assert "clip.visual.transformer.resblocks.0.attn" in adapted and "clip.text.transformer.resblocks.1.attn" in adapted
    assert not any("patch_embed" in n or "mlp.c_fc" in n for n in adapted)
    for prefix in full:  # fully trained parts: every parameter
        assert all(p.requires_grad for p in model.get_submodule(prefix[:-1]).parameters())


def test_lora_reaches_a_tinyvit_sam_encoder_attention_not_its_convs():
    """RSRefSeg with a TinyViT SAM (LiteMedSAM / MobileSAM class) gets adapters on the same roles."""
    from rsseg.models.sam.configs import LITEMEDSAM_TINY

    config = {**TINY, "sam": LITEMEDSAM_TINY}
    model = apply_lora_config(build_rsrefseg(config), config)
    adapted = {n.split(".lora_")[0] for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    sam = {n for n in adapted if n.startswith("sam.image_encoder.")}
    assert {"sam.image_encoder.layers.1.blocks.0.attn.qkv", "sam.image_encoder.layers.3.blocks.0.mlp.fc2",
            "sam.image_encoder.neck.0"} <= sam
    assert not any("conv" in n or "patch_embed" in n for n in sam)
    x = torch.rand(1, 3, 64, 64)
    assert model(x, model.tokenize(["the red square"])).shape == (1, 1, 64, 64)


def _perturb_adapters(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_adapters_save_apart_from_the_frozen_base_and_load_back(tmp_path):
    trained = apply_lora_config(build_rsrefseg(TINY), TINY)
    _perturb_adapters(trained)  # stands in for training (LoRA B starts at zero)
    trained.eval()
    state = trainable_state_dict(trained)
    assert not any(k.endswith("base_layer.weight") or k.startswith("clip.visual.conv1") for k in state)
    assert sum(v.numel() for v in state.values()) < parameter_counts(trained)[1] / 2
    torch.save(state, tmp_path / "adapters.pt")
    fresh = apply_lora_config(build_rsrefseg(TINY), TINY).eval()
    x, text = images(1), fresh.tokenize(SENTENCES[:1])
    with torch.no_grad():
        assert not torch.allclose(fresh(x, text), trained(x, text))
        load_trainable_state_dict(fresh, torch.load(tmp_path / "adapters.pt", weights_only=True))
        assert torch.equal(fresh(x, text), trained(x, text))
    with pytest.raises(ValueError):
        load_trainable_state_dict(fresh, {"nonsense": torch.zeros(1)})


def test_one_optimisation_step_lowers_the_loss():
    model = apply_lora_config(build_rsrefseg(TINY), TINY).eval()  # eval: no dropout, fixed norm statistics
    x, text = images(2, 256, seed=4), model.tokenize(SENTENCES)
    target = torch.zeros(2, 1, 256, 256)
    target[:, :, 64:192, 64:192] = 1
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = segmentation_loss(model(x, text), target, TINY["bce_weight"], TINY["dice_weight"])
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        after = segmentation_loss(model(x, text), target, TINY["bce_weight"], TINY["dice_weight"])
    assert after < loss.detach()


def test_loss_is_weighted_bce_plus_optional_dice():
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(segmentation_loss(logits, target), 5 * bce)
    assert segmentation_loss(logits, target, dice_weight=1.0) > 5 * bce


def test_the_registry_entry_segments_real_imagery_from_a_sentence(tmp_path):
    from rsseg.models import MODELS
    from rsseg.protocol.contracts import SegmentRequest
    from rsseg.service import run_segment

    spec = MODELS["rsrefseg-test"]
    assert (spec.task, spec.builder, spec.real, spec.weights) == ("sentence", "rsrefseg", False, ())
    result = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path), model="rsrefseg-test",
                                        sentence="the tall tree in the middle", tile=256, overlap=32,
                                        vectorise=False))
    with rasterio.open(result.mask) as mask, rasterio.open(NEON) as src:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)


def test_a_second_sentence_through_the_service_reuses_cached_features(tmp_path):
    from rsseg.execution.feature_cache import FeatureCache
    from rsseg.protocol.contracts import SegmentRequest
    from rsseg.service import run_segment

    cache = FeatureCache()

    def request(name: str, sentence: str) -> SegmentRequest:
        return SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / name), model="rsrefseg-test",
                              sentence=sentence, tile=224, overlap=32, vectorise=False)

    run_segment(request("first", "the tall tree"), cache=cache)
    second = run_segment(request("second", "the bare soil"), cache=cache)
    plain = run_segment(request("plain", "the bare soil"))
    assert second.run["features"] == {"encoded": 0, "reused": second.tiles}
    with rasterio.open(second.mask) as a, rasterio.open(plain.mask) as b:
        assert np.array_equal(a.read(), b.read())


# ----------------------------------------------------------------------------- the whole region at once
def test_a_sentence_sees_the_whole_region_as_one_padded_tile(tmp_path):
    """A non-square bbox (a map view) goes through the model once, padded to a square, not tiled."""
    from rsseg.models import build_model
    from rsseg.protocol.contracts import RegionSpec, SegmentRequest
    from rsseg.service import run_segment

    with rasterio.open(NEON) as src:
        left, bottom, right, top = src.bounds
        res = src.res[0]
        bbox = (left + 10 * res, bottom + 150 * res, left + 310 * res, top - 20 * res)  # 300 x ~230 px
    result = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path), model="rsrefseg-test",
                                        sentence="the tall tree", region=RegionSpec(bbox=bbox), tile=64,
                                        overlap=16, vectorise=True))
    assert result.tiles == 1 and any("whole region at once" in n for n in result.notes)
    with rasterio.open(result.mask) as mask:
        assert mask.width == 300 and abs(mask.bounds.left - bbox[0]) < res and abs(mask.bounds.top - bbox[3]) < res
    # the tile model's logits are the square model's, cropped: padding, not stretching
    tile_model = build_model("rsrefseg-test", None, "the tall tree")
    batch = np.random.default_rng(0).random((1, 3, 96, 160), dtype=np.float32)
    square = np.zeros((1, 3, 160, 160), np.float32)
    square[:, :, :96] = batch
    with torch.no_grad():
        expected = tile_model.model(torch.from_numpy(square), tile_model._text)[..., :96, :160].numpy()
    np.testing.assert_allclose(tile_model(batch), expected, atol=1e-5)


def test_a_region_too_large_for_one_look_is_refused_before_any_output(tmp_path):
    from rsseg.errors import RegionError
    from rsseg.protocol.contracts import SegmentRequest
    from rsseg.service import run_segment

    wide = tmp_path / "wide.tif"
    with rasterio.open(wide, "w", driver="GTiff", width=4200, height=32, count=3, dtype="uint8",
                       crs="EPSG:32617", transform=rasterio.transform.from_origin(400000, 3300000, 0.5, 0.5)) as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 32, 4200), dtype=np.uint8))
    with pytest.raises(RegionError, match="4200x32 px.*up to 4096 px"):
        run_segment(SegmentRequest(raster=str(wide), out_dir=str(tmp_path / "out"), model="rsrefseg-test",
                                   sentence="the road"))
    assert not (tmp_path / "out").exists()
