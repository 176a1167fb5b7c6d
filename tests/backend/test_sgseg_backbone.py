"""SGSeg's image side (models/sgseg/backbone.py, compensation.py) on tiny CLIPs with random weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsseg.errors import ModelError
from rsseg.models.clip.builder import build_vl_encoder
from rsseg.models.clip.configs import TINY_CLIP
from rsseg.models.clip.dense import embed_patches
from rsseg.models.sgseg.backbone import ConvNeXtBackbone, ViTBackbone, make_backbone
from rsseg.models.sgseg.compensation import compensation_loss, low_frequency, pod
from rsseg.models.sgseg.tiny_configs import TINY_CONVNEXT_CLIP

ATOL = 1e-5


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return build_vl_encoder({"architecture": TINY_CLIP}).visual.eval()


@pytest.fixture(scope="module")
def convnext() -> nn.Module:
    """timm initialises layer scales at 1e-6, which hides the residual branches: trained-like scales instead."""
    visual = build_vl_encoder({"architecture": TINY_CONVNEXT_CLIP}).visual.eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for stage in visual.trunk.stages:
            for block in stage.blocks:
                block.gamma.copy_(torch.rand(block.gamma.shape, generator=g) * 0.5 + 0.5)
    return visual


def images(h: int = 64, w: int = 80, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def open_clip_block(block: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """open_clip's own ResidualAttentionBlock on batch-first tokens, whatever its layout."""
    return block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)


# --- ViT --------------------------------------------------------------------------------------------------------

def test_vit_shapes_and_properties(vit):
    backbone = make_backbone(vit, {"guidance_layers": (1, 0), "dense": "last"})
    assert isinstance(backbone, ViTBackbone)
    dense, guidance = backbone(images(64, 80))
    assert dense.shape == (2, 32, 4, 5)
    assert [tuple(g.shape) for g in guidance] == [(2, 64, 4, 5)] * 2
    assert (backbone.dense_dim, backbone.stride) == (32, 16)
    assert backbone.guidance_dims == (64, 64) and backbone.guidance_strides == (16, 16)


@pytest.mark.parametrize("dense", ["last", "eva"])
def test_vit_zero_deltas_tuned_equals_teacher(vit, dense):
    backbone = ViTBackbone(vit, (0, 1), dense)
    x = images()
    (d1, g1), (d2, g2) = backbone(x, tuned=True), backbone(x, tuned=False)
    assert torch.equal(d1, d2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_vit_embed_and_blocks_match_open_clip(vit):
    backbone = ViTBackbone(vit, (0, 1))
    x = images()
    tokens, grid = embed_patches(vit, x)
    ours, our_grid = backbone.embed(x)
    assert grid == our_grid and torch.allclose(ours, tokens, atol=ATOL)
    batch_first = getattr(vit.transformer, "batch_first", True)
    for i, block in enumerate(vit.transformer.resblocks):
        with torch.no_grad():
            expected = open_clip_block(block, tokens, batch_first)
        assert torch.allclose(backbone.run_block(i, tokens), expected, atol=ATOL)
        assert torch.allclose(backbone.run_block(i, tokens, tuned=False), expected, atol=ATOL)
        tokens = expected


def test_vit_last_mode_matches_open_clip_token_stream(vit):
    """Dense "last" = open_clip's transformer (its own batch_first handling), then ln_post and proj per patch."""
    backbone = ViTBackbone(vit, (0, 1), "last")
    x = images(48, 64)
    tokens, (gh, gw) = embed_patches(vit, x)
    with torch.no_grad():
        stream = vit.transformer(tokens)
        expected = (vit.ln_post(stream) @ vit.proj)[:, 1:].transpose(1, 2).reshape(2, -1, gh, gw)
    dense, guidance = backbone(x)
    assert torch.allclose(dense, expected, atol=ATOL)
    assert torch.allclose(guidance[1], stream[:, 1:].transpose(1, 2).reshape(2, -1, gh, gw), atol=ATOL)


def test_vit_eva_is_qq_plus_kk_attention(vit):
    """The eva last block against a plain per-head reference: (softmax(qq^T) + softmax(kk^T)) v, out_proj, ls_1."""
    backbone = ViTBackbone(vit, (0,), "eva")
    x = images(32, 48)
    tokens, (gh, gw) = embed_patches(vit, x)
    block = vit.transformer.resblocks[0]
    with torch.no_grad():
        tokens = open_clip_block(block, tokens, getattr(vit.transformer, "batch_first", True))
        last = vit.transformer.resblocks[-1]
        attn = last.attn
        h = last.ln_1(tokens)
        q, k, v = (h @ w.T + b for w, b in zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)))
        hd = q.shape[-1] // attn.num_heads
        heads = []
        for n in range(attn.num_heads):
            qn, kn, vn = (t[..., n * hd:(n + 1) * hd] for t in (q, k, v))
            weights = torch.softmax(qn @ qn.transpose(1, 2) / hd ** 0.5, -1) + \
                torch.softmax(kn @ kn.transpose(1, 2) / hd ** 0.5, -1)
            heads.append(weights @ vn)
        out = last.ls_1(attn.out_proj(torch.cat(heads, -1)))
        expected = (vit.ln_post(out) @ vit.proj)[:, 1:].transpose(1, 2).reshape(2, -1, gh, gw)
    dense, _ = backbone(x)
    assert torch.allclose(dense, expected, atol=ATOL)


def test_vit_only_deltas_train(vit):
    backbone = ViTBackbone(vit, (0, 1))
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in backbone.named_parameters() if not n.startswith("visual.")}
    assert {id(p) for p in backbone.tuned_parameters()} == {id(p) for p in backbone.parameters() if p.requires_grad}
    assert len(backbone.tuned_parameters()) == 2 * len(vit.transformer.resblocks) + 1
    dense, guidance = backbone(images())
    (dense.square().mean() + sum(g.mean() for g in guidance)).backward()
    assert all(p.grad is None for p in vit.parameters())
    assert all(p.grad is not None for p in backbone.tuned_parameters())
    backbone.train()
    assert backbone.training and not vit.training


@pytest.mark.parametrize("delta", ["q_deltas", "v_deltas", "pos_delta"])
def test_vit_delta_changes_student_not_teacher(vit, delta):
    backbone = ViTBackbone(vit, (0, 1))
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    x = images()
    with torch.no_grad():
        teacher = backbone(x, tuned=False)[0]
        param = getattr(backbone, delta)
        (param[0] if isinstance(param, nn.ParameterList) else param).normal_(0, 0.5)
        assert not torch.allclose(backbone(x)[0], teacher, atol=1e-3)
        assert torch.equal(backbone(x, tuned=False)[0], teacher)
    assert all(torch.equal(v, before[k]) for k, v in vit.state_dict().items())


# --- ConvNeXt ---------------------------------------------------------------------------------------------------

def test_convnext_shapes_and_properties(convnext):
    backbone = make_backbone(convnext, {"guidance_stages": (2, 1), "dense": "last"})
    assert isinstance(backbone, ConvNeXtBackbone)
    dense, guidance = backbone(images(64, 96))
    assert dense.shape == (2, 32, 2, 3)
    assert [tuple(g.shape) for g in guidance] == [(2, 160, 4, 6), (2, 80, 8, 12)]
    assert (backbone.dense_dim, backbone.stride) == (32, 32)
    assert backbone.guidance_dims == (160, 80) and backbone.guidance_strides == (16, 8)
    depths = [len(s.blocks) for s in convnext.trunk.stages]
    assert len(backbone.tuned_parameters()) == sum(depths[-2:])


def test_convnext_zero_deltas_match_trunk(convnext):
    backbone = ConvNeXtBackbone(convnext)
    x = images(64, 64)
    trunk = convnext.trunk
    with torch.no_grad():
        y, stages = trunk.stem(x), []
        for stage in trunk.stages:
            y = stage(y)
            stages.append(y)
        final = trunk.forward_features(x)
    for tuned in (True, False):
        ours = backbone.stage_features(x, tuned)
        assert all(torch.allclose(a, b, atol=ATOL) for a, b in zip(ours, stages))
        assert torch.allclose(ours[-1], final, atol=ATOL)
    (d1, g1), (d2, g2) = backbone(x), backbone(x, tuned=False)
    assert torch.equal(d1, d2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_convnext_dense_head_is_the_towers_head(convnext):
    """On a 1 x 1 final map, pooling is the identity: the dense feature is the tower's own image embedding."""
    backbone = ConvNeXtBackbone(convnext)
    x = images(32, 32)
    with torch.no_grad():
        expected = convnext(x)
    dense, _ = backbone(x)
    assert dense.shape[-2:] == (1, 1) and torch.allclose(dense[:, :, 0, 0], expected, atol=ATOL)


def test_convnext_delta_changes_student_not_teacher(convnext):
    backbone = ConvNeXtBackbone(convnext)
    before = {k: v.clone() for k, v in convnext.state_dict().items()}
    x = images(64, 64)
    with torch.no_grad():
        t_dense, t_guide = backbone(x, tuned=False)
        backbone.gamma_deltas[0].fill_(0.5)  # first block of stage 2
        s_dense, s_guide = backbone(x)
        assert not torch.allclose(s_dense, t_dense, atol=1e-4)
        assert not torch.allclose(s_guide[0], t_guide[0], atol=1e-4)  # stage 2 is tuned
        assert torch.equal(s_guide[1], t_guide[1])  # stage 1 is not
        assert all(torch.equal(a, b) for a, b in zip(backbone(x, tuned=False)[1], t_guide))
    assert all(torch.equal(v, before[k]) for k, v in convnext.state_dict().items())
    assert not any(p.requires_grad for p in convnext.parameters())


def test_make_backbone_errors(vit, convnext):
    with pytest.raises(ModelError, match="not supported"):
        make_backbone(nn.Linear(2, 2), {})
    with pytest.raises(ModelError, match="ConvNeXt"):
        make_backbone(convnext, {"dense": "eva"})
    with pytest.raises(ModelError, match="out of range"):
        make_backbone(vit, {"guidance_layers": (5,)})
    with pytest.raises(ModelError, match="dense"):
        make_backbone(vit, {"dense": "mean"})


# --- compensation -----------------------------------------------------------------------------------------------

def test_pod_shape_and_odd_sizes():
    x = torch.rand(2, 3, 8, 12)
    expected = sum(s * s * 3 * (8 // s + 12 // s) for s in (1, 2, 4))
    assert pod(x).shape == (2, expected)
    odd = pod(torch.rand(2, 3, 7, 5))  # regions of uneven sizes, none empty
    assert odd.shape[0] == 2 and torch.isfinite(odd).all()
    assert torch.isfinite(pod(torch.rand(1, 2, 3, 3), scales=(4,))).all()  # more regions than rows


def test_compensation_loss_zero_and_growing():
    g = torch.Generator().manual_seed(0)
    teacher = [torch.rand(2, 8, 16, 16, generator=g) + 0.5, torch.rand(2, 4, 8, 8, generator=g) + 0.5]
    noise = [torch.randn(t.shape, generator=g) for t in teacher]
    for low_freq in (False, True):
        assert compensation_loss(teacher, teacher, low_freq=low_freq).item() == 0.0
        losses = [compensation_loss([t + e * n for t, n in zip(teacher, noise)], teacher, low_freq=low_freq).item()
                  for e in (0.05, 0.2, 0.8)]
        assert 0 < losses[0] < losses[1] < losses[2]


def test_compensation_gradients_reach_the_student_only():
    teacher = torch.rand(1, 4, 8, 8, requires_grad=True)
    student = (teacher.detach() + 0.3 * torch.randn(1, 4, 8, 8)).requires_grad_()
    compensation_loss([student], [teacher]).backward()
    assert student.grad is not None and teacher.grad is None
    with pytest.raises(ValueError):
        compensation_loss([student], [])


def test_low_frequency_keeps_constants_doubled():
    x = torch.full((1, 2, 5, 5), 3.0)
    assert torch.allclose(low_frequency(x), 2 * x)
