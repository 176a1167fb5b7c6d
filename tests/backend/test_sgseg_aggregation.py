"""SGSeg's cost aggregation and decoder (models/sgseg/aggregation.py, decoder.py): shapes for any class count and map
size, class-permutation equivariance, shifted-window locality, and gradients to every parameter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsseg.models.sgseg.aggregation import AggregatorLayer, ClassAggregation, SpatialBlock
from rsseg.models.sgseg.decoder import CostDecoder, UpBlock

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIDDEN, GUIDE, TEXT, HEADS, WINDOW, MAX_CLASSES = 16, 8, 8, 2, 4, 8


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _layer() -> AggregatorLayer:
    return AggregatorLayer(HIDDEN, GUIDE, TEXT, HEADS, WINDOW, MAX_CLASSES).eval()


def _inputs(b: int, k: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(b, HIDDEN, k, h, w), torch.randn(b, GUIDE, h, w), torch.randn(b, k, TEXT)


def _decoder() -> CostDecoder:
    return CostDecoder(HIDDEN, dims=(16, 8), guidance_dims=(GUIDE, 4)).eval()


def _guidance(b: int, h: int, w: int) -> list[torch.Tensor]:
    return [torch.randn(b, GUIDE, 2 * h, 2 * w), torch.randn(b, 4, 4 * h, 4 * w)]


@pytest.mark.parametrize("k", [1, 7, 40])
@pytest.mark.parametrize("size", [(8, 8), (10, 6), (3, 3)])
@torch.no_grad()
def test_shapes_any_class_count_and_map_size(k, size):
    h, w = size
    cost, appearance, text = _inputs(2, k, h, w)
    out = _layer()(cost, appearance, text)
    assert out.shape == (2, HIDDEN, k, h, w) and torch.isfinite(out).all()
    logits = _decoder()(out, _guidance(2, h, w))
    assert logits.shape == (2, k, 4 * h, 4 * w) and torch.isfinite(logits).all()


@pytest.mark.parametrize("k", [7, 11])  # padded up to max_classes, and not padded
@torch.no_grad()
def test_permuting_classes_permutes_aggregation(k):
    layer = _layer()
    cost, appearance, text = _inputs(2, k, 6, 5)
    perm = torch.randperm(k)
    out = layer(cost, appearance, text)
    out_perm = layer(cost[:, :, perm], appearance, text[:, perm])
    torch.testing.assert_close(out_perm, out[:, :, perm], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_permuting_classes_permutes_decoder():
    decoder = _decoder()
    cost, guidance = torch.randn(2, HIDDEN, 5, 3, 4), _guidance(2, 3, 4)
    perm = torch.randperm(5)
    torch.testing.assert_close(decoder(cost[:, :, perm], guidance), decoder(cost, guidance)[:, perm],
                               rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_classes_do_not_mix_in_the_decoder_and_guidance_is_shared():
    """Each class is decoded alone with the image's guidance: decoding class k on its own gives the same logits."""
    decoder = _decoder()
    cost, guidance = torch.randn(2, HIDDEN, 3, 3, 4), _guidance(2, 3, 4)
    out = decoder(cost, guidance)
    torch.testing.assert_close(decoder(cost[:, :, 1:2], guidance), out[:, 1:2], rtol=1e-4, atol=1e-5)


def _groups(size: int, window: int, shift: int) -> torch.Tensor:
    """Which (shifted) window each position of an axis falls in: windows start at `shift`, the positions before it
    are a window of their own."""
    return torch.div(torch.arange(size) - shift, window, rounding_mode="floor")


def _same_window(h: int, w: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = _groups(h, min(WINDOW, h), shift if WINDOW < h else 0)
    cols = _groups(w, min(WINDOW, w), shift if WINDOW < w else 0)
    return rows, cols


@pytest.mark.parametrize("shift", [0, WINDOW // 2])
@pytest.mark.parametrize("size", [(8, 8), (10, 6)])
@torch.no_grad()
def test_perturbing_a_pixel_changes_only_its_window(shift, size):
    h, w = size
    block = SpatialBlock(HIDDEN, GUIDE, HEADS, WINDOW, shift).eval()
    x, g = torch.randn(3, HIDDEN, h, w), torch.randn(3, GUIDE, h, w)
    rows, cols = _same_window(h, w, shift)
    base = block(x, g)
    for y, xx in [(0, 0), (1, 2), (h - 1, w - 1), (h // 2, w // 2)]:
        bumped = x.clone()
        bumped[:, :, y, xx] += 3.0 * torch.randn(HIDDEN)  # not a constant: LayerNorm would erase it
        changed = (block(bumped, g) - base).abs().amax(dim=(0, 1)) > 1e-5
        expected = (rows[:, None] == rows[y]) & (cols[None, :] == cols[xx])
        assert torch.equal(changed, expected), (y, xx)


def _reference_block(block: SpatialBlock, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The block as global attention over all h * w pixels with an explicit same-window mask: no padding, rolling
    or partitioning, so it checks those."""
    n, c, h, w = x.shape
    heads, window = block.heads, block.window
    rows, cols = _same_window(h, w, block.shift)
    ys, xs = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    allowed = (rows[ys][:, None] == rows[ys][None, :]) & (cols[xs][:, None] == cols[xs][None, :])
    dy = (ys[:, None] - ys[None, :]).clamp(1 - window, window - 1) + window - 1
    dx = (xs[:, None] - xs[None, :]).clamp(1 - window, window - 1) + window - 1
    bias = block.position_bias[dy * (2 * window - 1) + dx].permute(2, 0, 1)
    bias = bias.masked_fill(~allowed, float("-inf"))
    tokens = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    normed = block.norm1(tokens)
    qk = block.qk(normed) + block.qk_guidance(g.permute(0, 2, 3, 1).reshape(-1, h * w, g.shape[1]))
    q, k = qk.chunk(2, dim=-1)
    q, k, v = (t.view(n, h * w, heads, c // heads).transpose(1, 2) for t in (q, k, block.v(normed)))
    attn = (q @ k.transpose(-1, -2) * (c // heads) ** -0.5 + bias).softmax(dim=-1)
    tokens = tokens + block.proj((attn @ v).transpose(1, 2).reshape(n, h * w, c))
    tokens = tokens + block.mlp(block.norm2(tokens))
    return tokens.view(n, h, w, c).permute(0, 3, 1, 2)


@pytest.mark.parametrize("shift", [0, WINDOW // 2])
@pytest.mark.parametrize("size", [(8, 8), (10, 6), (11, 5), (3, 3), (3, 9)])
@torch.no_grad()
def test_windowed_attention_matches_masked_global_attention(shift, size):
    """Padding (10 x 6, 11 x 5, 3 x 9), a window larger than the map (3 x 3: one window, no shift) and the shifted mask
    all reduce to attention within each pixel's window with Swin's relative position bias."""
    block = SpatialBlock(HIDDEN, GUIDE, HEADS, WINDOW, shift).eval()
    x, g = torch.randn(2, HIDDEN, *size), torch.randn(2, GUIDE, *size)
    torch.testing.assert_close(block(x, g), _reference_block(block, x, g), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_spatial_guidance_is_shared_across_classes():
    """Guidance with batch B serves the K classes of each image, as if repeated per class."""
    block = SpatialBlock(HIDDEN, GUIDE, HEADS, WINDOW, WINDOW // 2).eval()
    x, g = torch.randn(2 * 3, HIDDEN, 6, 6), torch.randn(2, GUIDE, 6, 6)
    torch.testing.assert_close(block(x, g), block(x, g.repeat_interleave(3, dim=0)), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_class_attention_is_linear_attention_with_pad_tokens():
    agg = ClassAggregation(HIDDEN, TEXT, HEADS, MAX_CLASSES).eval()
    b, k, h, w = 1, 3, 2, 2
    x, text = torch.randn(b, HIDDEN, k, h, w), torch.randn(b, k, TEXT)
    pad = MAX_CLASSES - k
    tokens = torch.cat([x.permute(0, 3, 4, 2, 1), agg.pad_token.expand(b, h, w, pad, HIDDEN)], dim=3)
    text_all = torch.cat([text, agg.pad_guidance.expand(b, pad, TEXT)], dim=1)
    normed = agg.norm1(tokens)
    q, kk = (agg.qk(normed) + agg.qk_guidance(text_all)[:, None, None]).chunk(2, dim=-1)
    split = [t.unflatten(-1, (HEADS, HIDDEN // HEADS)) for t in (q, kk, agg.v(normed))]
    q, kk, v = F.elu(split[0]) + 1, F.elu(split[1]) + 1, split[2]
    weights = torch.einsum("byxind,byxjnd->byxnij", q, kk)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.einsum("byxnij,byxjnd->byxind", weights, v).flatten(-2)
    expected = tokens[..., :k, :] + agg.proj(out[..., :k, :])
    expected = expected + agg.mlp(agg.norm2(expected))
    torch.testing.assert_close(agg(x, text), expected.permute(0, 4, 3, 1, 2), rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    layer, decoder = _layer().train(), _decoder().train()
    cost, appearance, text = _inputs(2, 3, 5, 6)  # 3 < max_classes: the pad tokens take part
    logits = decoder(layer(cost, appearance, text), _guidance(2, 5, 6))
    logits.square().mean().backward()
    for module in (layer, decoder):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0 and torch.isfinite(p.grad).all(), name


def test_no_pad_tokens_at_max_classes():
    agg = ClassAggregation(HIDDEN, TEXT, HEADS, MAX_CLASSES)
    agg(torch.randn(1, HIDDEN, MAX_CLASSES, 2, 2), torch.randn(1, MAX_CLASSES, TEXT)).sum().backward()
    assert agg.pad_token.grad is None and agg.pad_guidance.grad is None


def test_up_block_without_guidance():
    block = UpBlock(16, 8, 0)
    assert block(torch.randn(2, 16, 3, 5)).shape == (2, 8, 6, 10)
